"""Configuration of the OmniDRCA speech codec (the assistant speech's tokenizer/detokenizer, codec_omnidrca.py)."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

VOCODER_TYPES = ("istft", "griffin_lim")


@strict
class OmniDRCASpeechCodecConfig(PreTrainedConfig):
    r"""
    Configuration of [`OmniDRCASpeechCodec`], the tokenizer/detokenizer of the assistant's speech.

    Args:
        sampling_rate (`int`, *optional*, defaults to 16000):
            Sampling rate (Hz) of the waveforms the codec reads and writes.
        frame_rate (`int`, *optional*, defaults to 25):
            Codes per second. `samples_per_code = sampling_rate // frame_rate` (640 at 16 kHz / 25 Hz) must
            be a power-of-two multiple of `hop_length`: the encoder halves the spectral frame rate that many
            times.
        fsq_levels (`list[int]`, *optional*, defaults to `[3, 3, 3, 3, 3, 3, 3, 3]`):
            Levels of each finite-scalar-quantiser dimension (each >= 2). The codebook is their product
            (`codebook_size`, 3^8 = 6561 by default) and there is one latent dimension per level (`latent_dim`).
        num_mel_bins (`int`, *optional*, defaults to 80):
            Mel bands of the encoder's input features and of the mel loss.
        n_fft (`int`, *optional*, defaults to 640):
            FFT size (and Hann window length) of the encoder's features and of the vocoder.
        hop_length (`int`, *optional*, defaults to 160):
            Samples between spectral frames (160 = 100 Hz at 16 kHz, so 4 frames per code). At most `n_fft // 2`
            so that overlapping windows can be inverted.
        encoder_hidden_size (`int`, *optional*, defaults to 256):
            Channel width of the encoder.
        encoder_layers (`int`, *optional*, defaults to 2):
            ConvNeXt blocks at each rate of the encoder (100 Hz, each downsampled rate, 25 Hz).
        decoder_hidden_size (`int`, *optional*, defaults to 256):
            Channel width of the decoder and vocoder backbone.
        decoder_layers (`int`, *optional*, defaults to 2):
            ConvNeXt blocks at each rate of the decoder (25 Hz, each upsampled rate, 100 Hz).
        kernel_size (`int`, *optional*, defaults to 7):
            Odd width of the depthwise convolutions of the ConvNeXt blocks and of the input convolutions.
        vocoder_type (`str`, *optional*, defaults to `"istft"`):
            `"istft"`: predict log-magnitude and phase per frame, inverse STFT (trained end to end on the wave).
            `"griffin_lim"`: predict log-magnitude only; Griffin-Lim reconstructs a phase (losses are then on
            magnitudes at the vocoder's own resolution).
        griffin_lim_iters (`int`, *optional*, defaults to 32):
            Iterations of (fast, momentum 0.99) Griffin-Lim when `vocoder_type="griffin_lim"`.
        mel_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the log-mel L1 loss (in the encoder's feature units: log10 power / 4).
        stft_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the multi-resolution STFT loss (spectral convergence + natural-log magnitude L1,
            averaged over resolutions).
        stft_loss_resolutions (`list[list[int]]`, *optional*, defaults to `[[256, 64], [512, 128], [1024, 256]]`):
            `[n_fft, hop_length]` of each STFT-loss resolution.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal init of linear and convolution weights.

    Example:

    ```python
    >>> import torch
    >>> from modeling_omnidrca.codec_omnidrca import OmniDRCASpeechCodec, OmniDRCASpeechCodecConfig
    >>> config = OmniDRCASpeechCodecConfig(fsq_levels=[5, 5, 5], encoder_hidden_size=32, decoder_hidden_size=32)
    >>> codec = OmniDRCASpeechCodec(config)
    >>> codes = codec.encode(torch.randn(1, 16000) * 0.1)  # (1, 25), in [0, 125)
    >>> wave = codec.decode(codes)  # (1, 16000)
    ```
    """

    model_type = "omnidrca_codec"

    sampling_rate: int = 16000
    frame_rate: int = 25
    fsq_levels: list[int] | tuple[int, ...] | None = None
    num_mel_bins: int = 80
    n_fft: int = 640
    hop_length: int = 160
    encoder_hidden_size: int = 256
    encoder_layers: int = 2
    decoder_hidden_size: int = 256
    decoder_layers: int = 2
    kernel_size: int = 7
    vocoder_type: str = "istft"
    griffin_lim_iters: int = 32
    mel_loss_weight: float | int = 1.0
    stft_loss_weight: float | int = 1.0
    stft_loss_resolutions: list[list[int]] | list[tuple[int, int]] | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # Lists, not tuples, so the config is equal to itself after a JSON round trip.
        self.fsq_levels = [3] * 8 if self.fsq_levels is None else [int(level) for level in self.fsq_levels]
        if self.stft_loss_resolutions is None:
            self.stft_loss_resolutions = [[256, 64], [512, 128], [1024, 256]]
        self.stft_loss_resolutions = [[int(v) for v in res] for res in self.stft_loss_resolutions]
        super().__post_init__(**kwargs)
        self.validate_codec()

    def validate_codec(self) -> None:
        """Raise a `ValueError` naming the field, the value received and what is expected."""
        if len(self.fsq_levels) == 0 or any(level < 2 for level in self.fsq_levels):
            raise ValueError(
                f"`fsq_levels` must be a non-empty list of ints >= 2 (one per latent dim), got {self.fsq_levels}. "
                "Use e.g. [3] * 8 (6561 codes) or [8, 5, 5, 5] (1000 codes)."
            )
        for name in ("sampling_rate", "frame_rate", "num_mel_bins", "n_fft", "hop_length", "encoder_hidden_size",
                     "decoder_hidden_size", "griffin_lim_iters", "kernel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive int, got {getattr(self, name)}.")
        for name in ("encoder_layers", "decoder_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be an int >= 0, got {getattr(self, name)}.")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd (same-length convolutions), got {self.kernel_size}.")
        if self.sampling_rate % self.frame_rate:
            raise ValueError(
                f"`sampling_rate` ({self.sampling_rate}) must be a multiple of `frame_rate` ({self.frame_rate}) so "
                "every code covers a whole number of samples. Use e.g. 16000 and 25."
            )
        if self.samples_per_code % self.hop_length or not _is_power_of_two(self.samples_per_code // self.hop_length):
            raise ValueError(
                f"samples_per_code = sampling_rate // frame_rate = {self.samples_per_code} must be hop_length "
                f"({self.hop_length}) times a power of two (the encoder downsamples by 2 per stage). Use e.g. "
                f"hop_length={self.samples_per_code // 4}."
            )
        if not 2 * self.hop_length <= self.n_fft:
            raise ValueError(
                f"`n_fft` ({self.n_fft}) must be >= 2 * hop_length ({2 * self.hop_length}) so the inverse STFT has "
                "overlapping windows to invert. Use e.g. n_fft = 4 * hop_length."
            )
        if self.vocoder_type not in VOCODER_TYPES:
            raise ValueError(f"Unknown `vocoder_type` {self.vocoder_type!r}: expected one of {VOCODER_TYPES}.")
        for res in self.stft_loss_resolutions:
            if len(res) != 2 or not 1 <= res[1] <= min(res[0], self.samples_per_code):
                raise ValueError(
                    f"Each of `stft_loss_resolutions` must be [n_fft, hop_length] with 1 <= hop_length <= n_fft and "
                    f"hop_length <= samples_per_code ({self.samples_per_code}), got {res} in "
                    f"{self.stft_loss_resolutions}."
                )

    @property
    def codebook_size(self) -> int:
        """Number of codes: the product of the FSQ levels."""
        return math.prod(self.fsq_levels)

    @property
    def latent_dim(self) -> int:
        """Dimension of the continuous latents: one per FSQ level."""
        return len(self.fsq_levels)

    @property
    def samples_per_code(self) -> int:
        """Waveform samples covered by one code (640 at 16 kHz, 25 Hz)."""
        return self.sampling_rate // self.frame_rate

    @property
    def frames_per_code(self) -> int:
        """Spectral (vocoder) frames per code (4 at hop 160)."""
        return self.samples_per_code // self.hop_length


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


__all__ = ["VOCODER_TYPES", "OmniDRCASpeechCodecConfig"]
