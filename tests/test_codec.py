"""Speech codec: FSQ, shapes, exactness under padding, vocoder framing, training, save/load, bad inputs."""

import dataclasses
import math

import pytest
import torch
from torch import nn
from transformers import PreTrainedConfig

from modeling_omnidrca.audio_utils import stft
from modeling_omnidrca.codec_omnidrca import (
    OmniDRCAFiniteScalarQuantizer,
    OmniDRCASpeechCodec,
    OmniDRCASpeechCodecConfig,
)

SR, HOP = 16000, 640  # samples per code at 25 Hz


def tiny_config(**overrides) -> OmniDRCASpeechCodecConfig:
    kwargs = dict(fsq_levels=[5, 5, 5], encoder_hidden_size=32, decoder_hidden_size=32, encoder_layers=1,
                  decoder_layers=1, griffin_lim_iters=8)
    return OmniDRCASpeechCodecConfig(**{**kwargs, **overrides})


def tiny_codec(seed: int = 0, **overrides) -> OmniDRCASpeechCodec:
    torch.manual_seed(seed)
    return OmniDRCASpeechCodec(tiny_config(**overrides)).eval()


def harmonic(f0: float, seconds: float, noise: float = 0.01, seed: int = 0) -> torch.Tensor:
    """A voiced-like test signal: 5 harmonics under a 2 Hz envelope over a small noise floor (T,)."""
    t = torch.arange(int(round(seconds * SR))) / SR
    voiced = sum((0.3 / h) * torch.sin(2 * math.pi * f0 * h * t) for h in range(1, 6))
    envelope = 0.5 * (1 - torch.cos(2 * math.pi * 2 * t))
    return voiced * envelope + noise * torch.randn(t.shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- config


def test_default_config_is_s3_sized():
    config = OmniDRCASpeechCodecConfig()
    assert config.fsq_levels == [3] * 8 and config.codebook_size == 6561 and config.latent_dim == 8
    assert (config.samples_per_code, config.frames_per_code) == (640, 4)
    assert config.vocoder_type == "istft" and config.model_type == "omnidrca_codec"
    assert OmniDRCASpeechCodecConfig(fsq_levels=[8, 5, 5, 5]).codebook_size == 1000


def test_every_config_field_is_documented():
    own = {f.name for f in dataclasses.fields(OmniDRCASpeechCodecConfig)}
    own -= {f.name for f in dataclasses.fields(PreTrainedConfig)}
    assert own and not [n for n in sorted(own) if f"        {n} (" not in OmniDRCASpeechCodecConfig.__doc__]


def test_config_roundtrip(tmp_path):
    config = tiny_config(fsq_levels=(8, 5, 5, 5), vocoder_type="griffin_lim", stft_loss_resolutions=[(512, 128)])
    config.save_pretrained(tmp_path)
    loaded = OmniDRCASpeechCodecConfig.from_pretrained(tmp_path)
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.to_dict()) == strip(config.to_dict())
    assert loaded.fsq_levels == [8, 5, 5, 5] and loaded.codebook_size == 1000


@pytest.mark.parametrize(
    "overrides",
    [
        {"fsq_levels": [5, 1]},
        {"fsq_levels": []},
        {"frame_rate": 30},  # 16000 / 30 is not whole
        {"hop_length": 200},  # 640 samples per code is not 200 * 2^k
        {"n_fft": 200},  # < 2 * hop: nothing to overlap-add
        {"vocoder_type": "hifigan"},
        {"kernel_size": 4},
        {"stft_loss_resolutions": [[64, 128]]},
    ],
)
def test_config_rejects_bad_fields(overrides):
    with pytest.raises(ValueError):
        tiny_config(**overrides)


# ---------------------------------------------------------------------------------------------- FSQ


@pytest.mark.parametrize("levels", [[3] * 8, [8, 5, 5, 5], [2, 3, 4]])
def test_fsq_index_latent_index_is_exact_for_every_code(levels):
    fsq = OmniDRCAFiniteScalarQuantizer(levels)
    codes = torch.arange(math.prod(levels))
    latents = fsq.codes_to_latents(codes)  # (N, d)
    assert torch.equal(fsq.latents_to_codes(latents), codes)
    # Independent expectation: mixed-radix digits (dim 0 fastest), centred and scaled by L // 2.
    digits, rest = [], codes.clone()
    for level in levels:
        digits.append(rest % level)
        rest = rest // level
    expected = torch.stack([(d - lv // 2) / (lv // 2) for d, lv in zip(digits, levels)], -1).float()
    assert torch.equal(latents, expected)
    assert latents.abs().max() <= 1 and len(torch.unique(latents, dim=0)) == len(codes)


@pytest.mark.parametrize("levels", [[3] * 8, [8, 5, 5, 5], [2, 3, 4]])
def test_fsq_bound_reaches_every_level_and_nothing_else(levels):
    fsq = OmniDRCAFiniteScalarQuantizer(levels)
    z = torch.linspace(-12, 12, 20001)[:, None].expand(-1, len(levels))  # (N, d)
    bounded = fsq.bound(z)
    quantised, codes = fsq(bounded)
    assert bounded.abs().max() < 1
    assert torch.equal(fsq(fsq.bound(torch.zeros(1, len(levels))))[0], torch.zeros(1, len(levels)))  # 0 stays centred
    for i, level in enumerate(levels):
        grid = (torch.arange(level) - level // 2) / (level // 2)
        assert torch.equal(torch.unique(quantised[:, i]), grid)
    assert int(codes.min()) == 0 and int(codes.max()) == math.prod(levels) - 1


def test_fsq_straight_through_gradient_and_it_reaches_the_encoder():
    fsq = OmniDRCAFiniteScalarQuantizer([5, 5, 5])
    latents = torch.rand(4, 3, requires_grad=True)
    quantised, _ = fsq(latents)
    (quantised * torch.arange(1.0, 4.0)).sum().backward()
    assert torch.equal(latents.grad, torch.arange(1.0, 4.0).expand(4, 3))

    codec = tiny_codec().train()
    codec(harmonic(200, 0.3)).loss.backward()
    for param in (codec.encoder.conv_in.weight, codec.encoder.proj.weight, codec.decoder.conv_in.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- API


@pytest.mark.parametrize("seconds", [1.0, 1.3, 0.37])
def test_roundtrip_shapes(seconds):
    codec = tiny_codec()
    wave = harmonic(180, seconds)
    samples, t25 = wave.shape[-1], math.ceil(wave.shape[-1] / HOP)
    with torch.no_grad():
        codes = codec.encode(wave)
        decoded = codec.decode(codes)
        batch_codes = codec.encode(torch.stack([wave, -wave]))
    assert codes.shape == (1, t25) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < codec.config.codebook_size
    assert batch_codes.shape == (2, t25) and torch.equal(batch_codes[0], codes[0])
    assert decoded.shape == (1, t25 * HOP) and decoded.dtype == torch.float32
    assert abs(decoded.shape[-1] - samples) < HOP


def test_continuous_path_matches_the_discrete_one():
    codec = tiny_codec()
    wave = harmonic(150, 0.7)
    with torch.no_grad():
        latents = codec.encode_continuous(wave)
        codes = codec.encode(wave)
        quantised, fsq_codes = codec.quantizer(latents)
        assert latents.shape == (1, codes.shape[1], 3) and latents.abs().max() <= 1
        assert torch.equal(fsq_codes, codes)
        assert torch.equal(codec.codes_to_latents(codes), quantised)
        assert torch.equal(codec.decode_continuous(codec.codes_to_latents(codes)), codec.decode(codes))
        # Un-quantised latents decode too, to a different (but same-length) wave.
        unquantised = codec.decode_continuous(latents)
    assert unquantised.shape == (1, codes.shape[1] * HOP)


def test_clip_alone_equals_clip_in_padded_batch():
    codec = tiny_codec()
    long, short = harmonic(150, 1.0), harmonic(230, 0.37, seed=1)  # 25 codes; 5920 samples -> 10 codes
    batch = torch.zeros(2, long.shape[0])
    batch[0], batch[1, : short.shape[0]] = long, short
    mask = torch.zeros(2, long.shape[0], dtype=torch.long)
    mask[0], mask[1, : short.shape[0]] = 1, 1
    with torch.no_grad():
        batched = codec.encode_continuous(batch, mask)
        assert torch.allclose(batched[0], codec.encode_continuous(long)[0], atol=1e-5)
        assert torch.allclose(batched[1, :10], codec.encode_continuous(short)[0], atol=1e-5)
        assert torch.equal(codec.encode(batch, mask)[1, :10], codec.encode(short)[0])
        assert torch.equal(codec.code_lengths(mask), torch.tensor([25, 10]))

        # Decoding a padded batch of codes: each row as alone, silent after its codes, padding never read.
        codes = codec.encode(batch, mask)
        code_mask = (torch.arange(25) < torch.tensor([[25], [10]])).long()
        codes[1, 10:] = 10_000  # e.g. a speech pad id: out of the codebook, but masked
        waves = codec.decode(codes, code_mask)
        assert torch.allclose(waves[1, : 10 * HOP], codec.decode(codes[1:, :10])[0], atol=1e-5)
        assert waves[1, 10 * HOP :].abs().max() == 0

        # Training losses are masked: a clip scores the same alone and zero-padded.
        alone = codec(short)
        padded = codec(batch[1:], mask[1:])
    assert torch.allclose(alone.loss, padded.loss, rtol=1e-5)
    assert torch.allclose(alone.waveform, padded.waveform[:, : alone.waveform.shape[1]], atol=1e-5)


def test_vocoder_framing_inverts_the_analysis_stft():
    """With the head bypassed, the exact log-magnitude and phase of a wave must give the wave back: the
    vocoder's frames are the analysis frames (same centres, exactly F * hop samples)."""
    codec = tiny_codec()
    codec.head = nn.Identity()
    wave = 0.2 * harmonic(200, 0.5)[None]  # (1, 8000), quiet enough for the magnitude clamp (1e2)
    spec = stft(wave, 640, 160)  # (1, 321, 50)
    assert spec.shape[-1] == wave.shape[-1] // 160
    hidden = torch.cat([spec.abs().clamp(min=1e-12).log(), spec.angle()], 1).transpose(1, 2)  # (1, 50, 642)
    rebuilt, _ = codec._vocode(hidden)
    assert rebuilt.shape == wave.shape and (rebuilt - wave).abs().max() < 1e-5


def test_griffin_lim_vocoder():
    codec = tiny_codec(vocoder_type="griffin_lim", griffin_lim_iters=32)
    wave = harmonic(170, 0.5)
    out = codec.train()(wave)
    out.loss.backward()
    assert torch.isfinite(out.loss) and codec.head.weight.grad.abs().sum() > 0
    assert out.waveform.shape == (1, 13 * HOP)
    with torch.no_grad():
        codes = codec.encode(wave)
        first, second = codec.decode(codes), codec.decode(codes)
    assert first.shape == (1, codes.shape[1] * HOP) and torch.equal(first, second)  # seeded phase: deterministic
    # Independent of training: from the true magnitudes, Griffin-Lim finds a wave with nearly those magnitudes.
    codec.head = nn.Identity()
    target = stft(0.2 * wave[None], 640, 160).abs()
    with torch.no_grad():
        rebuilt, _ = codec._vocode(target.clamp(min=1e-12).log().transpose(1, 2))
    convergence = (stft(rebuilt, 640, 160).abs() - target).norm() / target.norm()
    assert convergence < 0.25


def test_a_few_adam_steps_reduce_the_loss():
    codec = tiny_codec().train()
    batch = torch.stack([harmonic(150, 0.5), harmonic(220, 0.5, seed=1)])
    optimizer = torch.optim.Adam(codec.parameters(), lr=5e-3)
    losses = []
    for _ in range(40):
        out = codec(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert out.mel_loss is not None and out.stft_loss is not None
    assert losses[-1] < 0.7 * losses[0], losses


def test_save_and_load_decode_identically(tmp_path):
    codec = tiny_codec(seed=3)
    codec.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = OmniDRCASpeechCodec.from_pretrained(tmp_path).eval()
    codes = torch.randint(0, 125, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.decode(codes), codec.decode(codes))
        wave = harmonic(190, 0.4)
        assert torch.equal(loaded.encode(wave), codec.encode(wave))
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert type(loaded.config) is OmniDRCASpeechCodecConfig
    assert strip(loaded.config.to_dict()) == strip(codec.config.to_dict())


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "codes",
    [
        torch.tensor([[0, 5, -1]]),  # negative
        torch.tensor([[0, 125]]),  # == codebook_size
        torch.tensor([[0.0, 3.0]]),  # float
        torch.zeros(1, 2, 3, dtype=torch.long),  # 3-D
        torch.zeros(1, 0, dtype=torch.long),  # empty
    ],
)
def test_decode_rejects_bad_codes(codes):
    with pytest.raises(ValueError):
        tiny_codec().decode(codes)


@pytest.mark.parametrize(
    "wave",
    [
        torch.zeros(1, 0),  # empty
        torch.zeros(0),  # empty, unbatched
        torch.zeros(1, 2, 1600),  # 3-D (multi-channel)
        torch.zeros(1, 1600, dtype=torch.int16),  # PCM, not float
    ],
)
def test_encode_rejects_bad_waves(wave):
    with pytest.raises(ValueError):
        tiny_codec().encode(wave)


def test_mismatched_masks_and_latents_are_rejected():
    codec = tiny_codec()
    with pytest.raises(ValueError):
        codec.encode(torch.zeros(2, 1600), attention_mask=torch.ones(2, 1500))
    with pytest.raises(ValueError):
        codec.decode(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError):
        codec.decode_continuous(torch.zeros(1, 5, 4))  # latent_dim is 3
