"""OmniDRCA speech codec: the tokenizer and detokenizer of the assistant's speech.

    wave 16 kHz -> log-mel (100 Hz) -> ConvNeXt encoder with two stride-2 stages (25 Hz) -> `latent_dim`
    bounded latents -> finite scalar quantisation (FSQ) -> one code per 25 Hz frame (3^8 = 6561 codes by
    default, the size of CosyVoice S3 tokens) -> ConvNeXt decoder with two x2 upsamplings (100 Hz) ->
    vocoder head -> wave of exactly `num_codes * samples_per_code` samples.

Two vocoder heads: "istft" (Vocos-style: log-magnitude and phase per 100 Hz frame, then an inverse STFT) and
"griffin_lim" (log-magnitude only; Griffin-Lim recovers a phase, nothing about phase is learned).
Training uses reconstruction losses only (log-mel L1 + multi-resolution STFT), no GAN.

Shape legend:
    B   batch                  T    samples at `sampling_rate` (padded to a multiple of `samples_per_code`)
    T25 codes (25 Hz), ceil(T / samples_per_code)
    F   spectral frames (100 Hz), T25 * frames_per_code      M  mel bins
    C   hidden width           d    latent_dim (one dim per FSQ level)
    K   frequency bins (n_fft // 2 + 1)                    Fr  frames of one STFT-loss resolution
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput

from .audio_utils import istft, log_mel, mel_filters, stft
from .configuration_codec_omnidrca import OmniDRCASpeechCodecConfig


@dataclass
class OmniDRCASpeechCodecOutput(ModelOutput):
    loss: torch.FloatTensor | None = None  # () mel_loss_weight * mel_loss + stft_loss_weight * stft_loss
    mel_loss: torch.FloatTensor | None = None  # () log-mel L1 on the real frames
    stft_loss: torch.FloatTensor | None = None  # () spectral convergence + log-magnitude L1, mean over resolutions
    waveform: torch.FloatTensor | None = None  # (B, T25 * samples_per_code) reconstruction, float32
    codes: torch.LongTensor | None = None  # (B, T25) in [0, codebook_size)
    latents: torch.FloatTensor | None = None  # (B, T25, d) bounded pre-quantisation latents, in [-1, 1]


class OmniDRCAFiniteScalarQuantizer(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023, "FSQ: VQ-VAE made simple").

    Each latent dim is squashed into a range that rounds to exactly L_i values; the code is the mixed-radix
    number of the rounded digits. No codebook to learn or collapse. Latents are kept normalised: the grid of
    a dim is {-(L//2), ..., (L-1)//2} / (L//2), within [-1, 1].
    """

    def __init__(self, levels: Sequence[int]):
        super().__init__()
        # Plain tuples, not buffers: tensors are built on the input's device, nothing to save or re-init.
        self.levels = tuple(int(level) for level in levels)
        self.basis = tuple(math.prod(self.levels[:i]) for i in range(len(self.levels)))  # mixed radix, dim 0 fastest
        self.codebook_size = math.prod(self.levels)

    def _consts(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = torch.tensor(self.levels, device=ref.device)
        return levels, levels // 2  # (d,), (d,) half widths

    def bound(self, z: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """(..., d) unbounded -> (..., d) normalised latents in (-1, 1) whose rounding hits exactly L_i levels."""
        levels, half_width = self._consts(z)
        levels, half_width = levels.to(z.dtype), half_width.to(z.dtype)
        half_l = (levels - 1) * (1 - eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0).to(z.dtype)  # even L: grid is asymmetric around 0
        # Shift so that z = 0 maps to 0; L = 2 cannot reach 0 (its range is (-1, 0)), so its shift is clamped finite.
        shift = torch.atanh((offset / half_l).clamp(max=1 - eps))
        return (torch.tanh(z + shift) * half_l - offset) / half_width

    def latents_to_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        """(..., d) normalised latents (bounded or quantised) -> (...) codes in [0, codebook_size)."""
        levels, half_width = self._consts(latents)
        digits = torch.round(latents * half_width).long() + half_width  # (..., d) in [0, L_i)
        digits = torch.minimum(digits.clamp(min=0), levels - 1)  # guards against out-of-range latents
        basis = torch.tensor(self.basis, device=latents.device)
        return (digits * basis).sum(-1)

    def codes_to_latents(self, codes: torch.LongTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(...) codes -> (..., d) quantised normalised latents (the exact inverse of `latents_to_codes`)."""
        levels, half_width = self._consts(codes)
        basis = torch.tensor(self.basis, device=codes.device)
        digits = torch.div(codes[..., None], basis, rounding_mode="floor") % levels  # (..., d)
        return ((digits - half_width).to(dtype)) / half_width.to(dtype)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        """Quantise bounded latents with a straight-through estimator.

        Args:
            latents: (..., d) normalised bounded latents (the output of `bound`).
        Returns:
            (..., d) quantised latents (gradient passes straight through to `latents`) and (...) codes.
        """
        _, half_width = self._consts(latents)
        half_width = half_width.to(latents.dtype)
        rounded = torch.round(latents * half_width) / half_width
        quantised = latents + (rounded - latents).detach()
        return quantised, self.latents_to_codes(latents)


class OmniDRCAConvNeXtBlock(nn.Module):
    """ConvNeXt block over time (as in Vocos): depthwise conv, LayerNorm, pointwise MLP, layer scale."""

    def __init__(self, dim: int, kernel_size: int, layer_scale_init: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 3 * dim)
        self.pwconv2 = nn.Linear(3 * dim, dim)
        self.layer_scale_init = layer_scale_init
        self.layer_scale = nn.Parameter(torch.full((dim,), layer_scale_init))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, F); mask: (B, 1, F), zeroes padding before the only op that mixes frames."""
        h = self.dwconv(x if mask is None else x * mask).transpose(1, 2)  # (B, F, C)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.layer_scale * h).transpose(1, 2)


def _code_mask(num_codes: torch.LongTensor, frames: int, t25: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, frames) mask of the frames of each row's first `num_codes` codes (frames / t25 frames per code)."""
    return (torch.arange(frames, device=num_codes.device) < num_codes[:, None] * (frames // t25))[:, None].to(dtype)


class OmniDRCACodecEncoder(nn.Module):
    """log-mel (100 Hz) -> unbounded latents (25 Hz): ConvNeXt blocks, a stride-2 conv between rates."""

    def __init__(self, config: OmniDRCASpeechCodecConfig):
        super().__init__()
        dim, k, n = config.encoder_hidden_size, config.kernel_size, config.encoder_layers
        num_down = int(math.log2(config.frames_per_code))
        scale = 1.0 / max(1, n * (num_down + 1))
        self.conv_in = nn.Conv1d(config.num_mel_bins, dim, k, padding=k // 2)
        self.stages = nn.ModuleList(
            nn.ModuleList(OmniDRCAConvNeXtBlock(dim, k, scale) for _ in range(n)) for _ in range(num_down + 1)
        )
        # kernel 4, stride 2, padding 1: exactly half the frames, each output reads 4 inputs centred on its pair.
        self.downsample = nn.ModuleList(nn.Conv1d(dim, dim, 4, stride=2, padding=1) for _ in range(num_down))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, config.latent_dim)

    def forward(self, features: torch.Tensor, num_codes: torch.LongTensor) -> torch.Tensor:
        """features: (B, M, F); num_codes: (B,) real codes per clip. Returns (B, T25, d) unbounded latents.

        Frames past a clip's codes are zeroed before every convolution, so a clip encodes exactly the same
        alone or in a padded batch.
        """
        frames = features.shape[-1]
        t25 = frames // (2 ** len(self.downsample))
        x = self.conv_in(features * _code_mask(num_codes, frames, t25, features.dtype))  # (B, C, F)
        for i, blocks in enumerate(self.stages):
            m = _code_mask(num_codes, x.shape[-1], t25, x.dtype)  # (B, 1, F_i)
            for block in blocks:
                x = block(x, m)
            if i < len(self.downsample):
                x = self.downsample[i](x * m)  # (B, C, F_i / 2)
        return self.proj(self.norm(x.transpose(1, 2)))  # (B, T25, d)


class OmniDRCACodecDecoder(nn.Module):
    """Latents (25 Hz) -> hidden frames (100 Hz): ConvNeXt blocks, a x2 transposed conv between rates."""

    def __init__(self, config: OmniDRCASpeechCodecConfig):
        super().__init__()
        dim, k, n = config.decoder_hidden_size, config.kernel_size, config.decoder_layers
        num_up = int(math.log2(config.frames_per_code))
        scale = 1.0 / max(1, n * (num_up + 1))
        self.conv_in = nn.Conv1d(config.latent_dim, dim, k, padding=k // 2)
        self.stages = nn.ModuleList(
            nn.ModuleList(OmniDRCAConvNeXtBlock(dim, k, scale) for _ in range(n)) for _ in range(num_up + 1)
        )
        # kernel 4, stride 2, padding 1: exactly twice the frames.
        self.upsample = nn.ModuleList(nn.ConvTranspose1d(dim, dim, 4, stride=2, padding=1) for _ in range(num_up))
        self.norm = nn.LayerNorm(dim)

    def forward(self, latents: torch.Tensor, num_codes: torch.LongTensor | None = None) -> torch.Tensor:
        """latents: (B, T25, d) -> (B, F, C) with F = T25 * frames_per_code.

        With `num_codes` (B,), frames past each clip's codes are zeroed before every convolution (as in the
        encoder), so the padding of a batch does not leak into a clip's frames.
        """
        t25 = latents.shape[1]
        mask = lambda f: None if num_codes is None else _code_mask(num_codes, f, t25, latents.dtype)  # noqa: E731
        x = latents.transpose(1, 2)  # (B, d, T25)
        x = self.conv_in(x if num_codes is None else x * mask(t25))  # (B, C, T25)
        for i, blocks in enumerate(self.stages):
            m = mask(x.shape[-1])  # (B, 1, F_i) or None
            for block in blocks:
                x = block(x, m)
            if i < len(self.upsample):
                x = self.upsample[i](x if m is None else x * m)  # (B, C, 2 * F_i)
        return self.norm(x.transpose(1, 2))  # (B, F, C)


def _frame_mask(lengths: torch.LongTensor, frames: int, hop_length: int) -> torch.Tensor:
    """(B, frames) float mask of the frames whose hop block starts inside each clip's real samples."""
    starts = torch.arange(frames, device=lengths.device) * hop_length
    return (starts[None] < lengths[:, None]).float()


def _spectral_distance(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Spectral convergence + natural-log magnitude L1 between (B, K, Fr) magnitudes on the (B, Fr) mask."""
    mask = mask[:, None, :]  # (B, 1, Fr)
    # Over the whole batch (as Parallel WaveGAN does), so a silent clip cannot blow up the ratio.
    sc = torch.sqrt(((target - pred) ** 2 * mask).sum() + 1e-12) / torch.sqrt((target**2 * mask).sum() + 1e-12)
    log_diff = (torch.log(target.clamp(min=1e-5)) - torch.log(pred.clamp(min=1e-5))).abs()
    return sc + (log_diff * mask).sum() / (mask.sum() * target.shape[1]).clamp(min=1.0)


class OmniDRCASpeechCodec(PreTrainedModel):
    """Speech codec: `encode` a 16 kHz wave into 25 Hz codes, `decode` codes back into a wave.

    `encode_continuous` / `decode_continuous` expose the bounded latents before quantisation, for a
    continuous (diffusion) speech head. `forward` returns the training losses.
    """

    config: OmniDRCASpeechCodecConfig
    config_class = OmniDRCASpeechCodecConfig
    main_input_name = "input_values"
    input_modalities = ("audio",)
    # The codec has no attention layers, so every attention implementation a user picks for the composite model
    # (`attn_implementation=...`, `set_attn_implementation`) is trivially supported here.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: OmniDRCASpeechCodecConfig):
        super().__init__(config)
        self.encoder = OmniDRCACodecEncoder(config)
        self.quantizer = OmniDRCAFiniteScalarQuantizer(config.fsq_levels)
        self.decoder = OmniDRCACodecDecoder(config)
        bins = config.n_fft // 2 + 1
        # istft: log-magnitude and phase per bin; griffin_lim: log-magnitude only.
        self.head = nn.Linear(config.decoder_hidden_size, (2 if config.vocoder_type == "istft" else 1) * bins)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # normal(0, initializer_range) convs/linears, zero biases, unit LayerNorms
        if isinstance(module, OmniDRCAConvNeXtBlock):
            # Vocos: residual branches start at 1 / (number of blocks), so the fresh stack is near identity.
            init.constant_(module.layer_scale, module.layer_scale_init)
        elif module is self.encoder.proj:
            # Unit-variance latents (its input is LayerNormed): a fresh encoder already spreads over the FSQ grid.
            # With std 0.02 every latent would round to the centre code and the decoder would see a constant.
            init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)

    # ----------------------------------------------------------------------------------------- inputs

    def _prepare_wave(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.LongTensor, torch.LongTensor]:
        """Validate and pad. Returns (B, T25 * samples_per_code) float32 wave zeroed past each clip,
        (B,) real sample counts and (B,) real code counts."""
        wave = torch.as_tensor(input_values)
        if wave.dim() == 1:
            wave = wave[None]
            attention_mask = None if attention_mask is None else torch.as_tensor(attention_mask)[None]
        if wave.dim() != 2:
            raise ValueError(
                f"`input_values` must be a mono waveform of shape (batch, samples) or (samples,), got shape "
                f"{tuple(wave.shape)}. Mix multi-channel audio down to mono first."
            )
        if not wave.is_floating_point():
            raise ValueError(
                f"`input_values` must be a float waveform in [-1, 1] at {self.config.sampling_rate} Hz, got dtype "
                f"{wave.dtype}. Convert int16 PCM with `wave / 32768`."
            )
        if wave.shape[-1] == 0:
            raise ValueError("`input_values` is empty (0 samples); pass at least one sample of audio.")
        device = self.device
        batch, samples = wave.shape
        if attention_mask is None:
            lengths = torch.full((batch,), samples, dtype=torch.long, device=device)
        else:
            if tuple(attention_mask.shape) != (batch, samples):
                raise ValueError(
                    f"`attention_mask` must have the shape of `input_values` {(batch, samples)} (1 on real samples, "
                    f"right padding), got {tuple(attention_mask.shape)}."
                )
            lengths = torch.as_tensor(attention_mask, device=device).long().sum(-1)
        spc = self.config.samples_per_code
        t25 = math.ceil(samples / spc)
        wave = F.pad(wave.to(device=device, dtype=torch.float32), (0, t25 * spc - samples))  # (B, T)
        wave = wave * (torch.arange(wave.shape[-1], device=device) < lengths[:, None])
        num_codes = torch.div(lengths + spc - 1, spc, rounding_mode="floor")
        return wave, lengths, num_codes

    def _mask_lengths(self, attention_mask: torch.Tensor | None, shape: torch.Size) -> torch.LongTensor | None:
        """(B, T25) code mask (1 on real codes, right padding) -> (B,) real codes per row, or None."""
        if attention_mask is None:
            return None
        attention_mask = torch.as_tensor(attention_mask)
        if attention_mask.dim() == 1 and shape[0] == 1:  # an unbatched row
            attention_mask = attention_mask[None]
        if tuple(attention_mask.shape) != tuple(shape):
            raise ValueError(
                f"The code `attention_mask` must have shape (batch, num_codes) = {tuple(shape)}, got "
                f"{tuple(attention_mask.shape)}."
            )
        return torch.as_tensor(attention_mask, device=self.device).long().sum(-1)

    def _check_codes(
        self, codes: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.LongTensor, torch.LongTensor | None]:
        """Validate codes. Returns (B, T25) long codes (padding replaced by 0) and (B,) lengths or None."""
        codes = torch.as_tensor(codes)
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(
                f"`codes` must be an integer tensor (torch.long) of codec codes, got dtype {codes.dtype}. "
                "Pass the output of `encode` or the speech ids of the model."
            )
        if codes.dim() == 1:
            codes = codes[None]
        if codes.dim() != 2 or codes.shape[-1] == 0:
            raise ValueError(
                f"`codes` must have shape (batch, num_codes) with num_codes >= 1, got {tuple(codes.shape)}."
            )
        codes = codes.to(device=self.device, dtype=torch.long)
        lengths = self._mask_lengths(attention_mask, codes.shape)
        if lengths is not None:  # padding may hold anything (e.g. the speech pad id): it is never decoded
            codes = codes * (torch.arange(codes.shape[-1], device=codes.device) < lengths[:, None])
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.config.codebook_size:
            raise ValueError(
                f"`codes` must lie in [0, {self.config.codebook_size}) (the codebook), got values in [{low}, {high}]. "
                "Strip the speech stream's special tokens (bos/eos/pad) before decoding, or mark padding with "
                "`attention_mask`."
            )
        return codes, lengths

    # ----------------------------------------------------------------------------------------- features

    def _features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) float32 -> (B, M, F) log-mel, F = T // hop_length."""
        cfg = self.config
        spec = stft(wave, cfg.n_fft, cfg.hop_length)  # (B, K, F)
        filters = mel_filters(cfg.num_mel_bins, cfg.n_fft, cfg.sampling_rate).to(wave.device, wave.dtype)
        return log_mel(spec.abs() ** 2, filters)

    def _encode(self, wave: torch.Tensor, num_codes: torch.LongTensor) -> torch.Tensor:
        """(B, T) float32 padded wave -> (B, T25, d) bounded latents."""
        dtype = self.encoder.conv_in.weight.dtype
        return self.quantizer.bound(self.encoder(self._features(wave).to(dtype), num_codes))

    # ----------------------------------------------------------------------------------------- vocoder

    def _synthesise(
        self, latents: torch.Tensor, num_codes: torch.LongTensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T25, d) latents -> (B, T25 * samples_per_code) float32 wave and (B, K, F) predicted magnitude.

        With `num_codes` (B,), padding codes are masked in the decoder and the vocoder, and the wave is
        silent past each row's codes: a row decodes exactly as it would alone (Griffin-Lim aside: its random
        initial phase depends on the batch shape).
        """
        cfg = self.config
        hidden = self.decoder(latents.to(self.decoder.conv_in.weight.dtype), num_codes)  # (B, F, C)
        if num_codes is None:
            return self._vocode(hidden)
        frame_mask = torch.arange(hidden.shape[1], device=hidden.device) < num_codes[:, None] * cfg.frames_per_code
        wave, magnitude = self._vocode(hidden, frame_mask)  # (B, T), (B, K, F)
        samples = torch.arange(wave.shape[-1], device=wave.device)
        return wave * (samples < num_codes[:, None] * cfg.samples_per_code), magnitude

    def _vocode(
        self, hidden: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, C) decoder frames -> (B, F * hop_length) float32 wave and (B, K, F) predicted magnitude.
        `frame_mask` (B, F): synthesise only these frames (see `audio_utils.istft`)."""
        cfg = self.config
        bins = cfg.n_fft // 2 + 1
        out = self.head(hidden).float().transpose(1, 2)  # (B, 2K or K, F), spectra in float32 whatever the dtype
        # Clamp as Vocos does: exp of an untrained head must not overflow.
        magnitude = torch.exp(out[:, :bins]).clamp(max=1e2)  # (B, K, F)
        if cfg.vocoder_type == "istft":
            wave = istft(torch.polar(magnitude, out[:, bins:]), cfg.n_fft, cfg.hop_length, frame_mask)
        else:
            with torch.no_grad():
                wave = self._griffin_lim(magnitude.detach(), frame_mask)
        return wave, magnitude

    def _griffin_lim(self, magnitude: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99 as in torchaudio): (B, K, F) -> (B, F * hop)."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        # A fixed seed keeps decode() deterministic (same codes, same wave) on any device.
        generator = torch.Generator(device=magnitude.device).manual_seed(0)
        phase = torch.rand(magnitude.shape, generator=generator, device=magnitude.device) * (2 * math.pi)
        angles = torch.polar(torch.ones_like(magnitude), phase)  # (B, K, F) unit complex
        previous, momentum = torch.zeros_like(angles), 0.99
        for _ in range(self.config.griffin_lim_iters):
            rebuilt = stft(istft(magnitude * angles, n_fft, hop, frame_mask), n_fft, hop)  # consistent spectrogram
            angles = rebuilt - previous * (momentum / (1 + momentum))
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        return istft(magnitude * angles, n_fft, hop, frame_mask)

    # ----------------------------------------------------------------------------------------- public API

    def encode_continuous(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        """Wave -> bounded latents before quantisation (targets for a continuous speech head).

        Args:
            input_values: (B, T) or (T,) float wave at `config.sampling_rate`, zero-padded to a multiple of
                `samples_per_code` internally.
            attention_mask: (B, T), 1 on real samples (right padding). Frames past a clip's
                ceil(length / samples_per_code) codes are computed from nothing and should be dropped
                (`code_lengths`).
        Returns:
            (B, T25, latent_dim) latents in [-1, 1], T25 = ceil(T / samples_per_code).
        """
        wave, _, num_codes = self._prepare_wave(input_values, attention_mask)
        return self._encode(wave, num_codes)

    def encode(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.LongTensor:
        """Wave -> codes. Same arguments as `encode_continuous`. Returns (B, T25) long in [0, codebook_size)."""
        return self.quantizer.latents_to_codes(self.encode_continuous(input_values, attention_mask))

    def decode_continuous(
        self, latents: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        """Latents (quantised or not) -> wave.

        Args:
            latents: (B, T25, latent_dim) or (T25, latent_dim), normalised to [-1, 1].
            attention_mask: (B, T25), 1 on real frames (right padding): each row decodes as it would alone and
                is silent past its frames. `None`: every frame is real.
        Returns:
            (B, T25 * samples_per_code) float32 wave.
        """
        latents = torch.as_tensor(latents)
        if latents.dim() == 2:
            latents = latents[None]
        d = self.config.latent_dim
        if latents.dim() != 3 or latents.shape[-1] != d or latents.shape[1] == 0 or not latents.is_floating_point():
            raise ValueError(
                f"`latents` must be a float tensor of shape (batch, num_codes >= 1, latent_dim={d}), got "
                f"{tuple(latents.shape)} {latents.dtype}. Use `encode_continuous` or `codes_to_latents`."
            )
        lengths = self._mask_lengths(attention_mask, latents.shape[:2])
        return self._synthesise(latents.to(self.device), lengths)[0]

    def decode(self, codes: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.FloatTensor:
        """Codes -> wave.

        Args:
            codes: (B, T25) or (T25,) integers in [0, codebook_size).
            attention_mask: (B, T25), 1 on real codes (right padding); padding codes may hold any value.
        Returns:
            (B, T25 * samples_per_code) float32 wave, silent past each row's real codes.
        """
        codes, lengths = self._check_codes(codes, attention_mask)
        return self._synthesise(self.quantizer.codes_to_latents(codes), lengths)[0]

    def codes_to_latents(self, codes: torch.LongTensor) -> torch.FloatTensor:
        """(B, T25) codes -> (B, T25, latent_dim) quantised latents, the inverse of the quantiser."""
        return self.quantizer.codes_to_latents(self._check_codes(codes)[0])

    def code_lengths(self, attention_mask: torch.Tensor) -> torch.LongTensor:
        """(B, T) sample mask -> (B,) real codes per clip, ceil(length / samples_per_code)."""
        spc = self.config.samples_per_code
        return torch.div(attention_mask.long().sum(-1) + spc - 1, spc, rounding_mode="floor")

    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> OmniDRCASpeechCodecOutput:
        """Encode, quantise (straight-through), decode and score the reconstruction.

        Args:
            input_values: (B, T) float wave; (T,) is a batch of one.
            attention_mask: (B, T), 1 on real samples (right padding). Encoder, decoder and vocoder mask the
                padding, and the losses only count spectral frames whose hop block starts on a real sample, so a
                clip scores the same alone or in a padded batch.
        """
        cfg = self.config
        wave, lengths, num_codes = self._prepare_wave(input_values, attention_mask)  # (B, T)
        latents = self._encode(wave, num_codes)  # (B, T25, d)
        quantised, codes = self.quantizer(latents)
        recon, magnitude = self._synthesise(quantised, num_codes)  # (B, T), (B, K, F)

        target = stft(wave, cfg.n_fft, cfg.hop_length).abs()  # (B, K, F)
        frames = target.shape[-1]
        mask = _frame_mask(lengths, frames, cfg.hop_length)  # (B, F)
        if cfg.vocoder_type == "istft":
            recon_scored = recon * (torch.arange(recon.shape[-1], device=recon.device) < lengths[:, None])
            predicted = stft(recon_scored, cfg.n_fft, cfg.hop_length).abs()
        else:
            # No learned phase: compare the predicted magnitudes directly (the wave is Griffin-Lim's, no gradient).
            predicted = magnitude

        filters = mel_filters(cfg.num_mel_bins, cfg.n_fft, cfg.sampling_rate).to(wave.device)
        mel_l1 = (log_mel(target**2, filters) - log_mel(predicted**2, filters)).abs() * mask[:, None, :]
        mel_loss = mel_l1.sum() / (mask.sum() * cfg.num_mel_bins).clamp(min=1.0)

        if cfg.vocoder_type == "istft":
            terms = []
            for n_fft, hop in cfg.stft_loss_resolutions:
                s = stft(wave, n_fft, hop).abs()  # (B, K_r, Fr)
                s_hat = stft(recon_scored, n_fft, hop).abs()
                terms.append(_spectral_distance(s, s_hat, _frame_mask(lengths, s.shape[-1], hop)))
            stft_loss = torch.stack(terms).mean()
        else:
            stft_loss = _spectral_distance(target, predicted, mask)

        loss = cfg.mel_loss_weight * mel_loss + cfg.stft_loss_weight * stft_loss
        return OmniDRCASpeechCodecOutput(
            loss=loss, mel_loss=mel_loss, stft_loss=stft_loss, waveform=recon, codes=codes, latents=latents
        )


__all__ = [
    "OmniDRCAFiniteScalarQuantizer",
    "OmniDRCASpeechCodec",
    "OmniDRCASpeechCodecConfig",
    "OmniDRCASpeechCodecOutput",
]
