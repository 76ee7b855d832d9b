"""OmniDRCAFeatureExtractor and the resampler: Whisper parity, batching, input forms, bad input, save/load.

Expectations come from outside the code under test where possible: transformers' WhisperFeatureExtractor
(its numpy STFT path), analytic sines, and audio files written with soundfile.
"""

import re
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperFeatureExtractor

from modeling_omnidrca.audio_utils import resample
from modeling_omnidrca.feature_extraction_omnidrca import OmniDRCAFeatureExtractor
from remote_code import run_without_package

SR = 16000
HOP = 160


@pytest.fixture(scope="module")
def fe() -> OmniDRCAFeatureExtractor:
    return OmniDRCAFeatureExtractor()


def noise(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)


def features(fe: OmniDRCAFeatureExtractor, audio, **kwargs) -> np.ndarray:
    return fe(audio, return_tensors="np", **kwargs)["input_features"]


# ------------------------------------------------------------------ Whisper parity and batching


@pytest.mark.parametrize(("num_samples", "mels"), [(16000, 80), (16000 * 2 + 77, 80), (4321, 80), (16000, 128)])
def test_matches_whisper_feature_extractor(num_samples, mels):
    wave = noise(num_samples / SR, seed=num_samples)[:num_samples]
    ours = features(OmniDRCAFeatureExtractor(feature_size=mels), wave, sampling_rate=SR)
    assert ours.shape == (1, mels, num_samples // HOP) and ours.dtype == np.float32
    whisper = WhisperFeatureExtractor(feature_size=mels)  # 128 mels: Whisper-large-v3
    # Whisper's numpy path (float64 STFT, its own mel code) is an implementation independent of ours.
    reference = whisper._np_extract_fbank_features(wave[None].astype(np.float64), "cpu")
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    public = whisper(wave, sampling_rate=SR, padding="longest", return_tensors="np")["input_features"]
    np.testing.assert_allclose(ours, public, atol=1e-5, rtol=0)


def test_batch_is_padded_to_longest_and_each_clip_matches_itself_alone(fe):
    clips = [noise(1.0, seed=1), noise(2.37, seed=2), noise(0.5, seed=3)[:8011]]
    batch = fe(clips, sampling_rate=SR, return_tensors="pt")
    assert set(batch) == {"input_features", "attention_mask"}
    feats, mask = batch["input_features"], batch["attention_mask"]
    longest = max(len(c) for c in clips) // HOP
    assert feats.shape == (3, 80, longest) and feats.dtype == torch.float32
    assert mask.shape == (3, longest)
    assert mask.sum(-1).tolist() == [len(c) // HOP for c in clips]
    for i, clip in enumerate(clips):
        n = len(clip) // HOP
        assert mask[i, :n].eq(1).all() and mask[i, n:].eq(0).all()
        alone = fe(clip, sampling_rate=SR, return_tensors="pt")["input_features"][0]
        torch.testing.assert_close(feats[i, :, :n], alone, rtol=0, atol=0)
        assert feats[i, :, n:].eq(0).all()


def test_max_length_padding_and_numpy_output(fe):
    out = fe(noise(1.0), padding="max_length", return_tensors="np")
    assert isinstance(out["input_features"], np.ndarray) and out["input_features"].shape == (1, 80, 3000)
    assert out["attention_mask"].sum() == 100
    assert fe(noise(1.0), return_attention_mask=False).keys() == {"input_features"}


def test_input_forms_agree(fe):
    wave = noise(1.3)
    expected = features(fe, wave)  # sampling_rate left out: raw arrays default to 16 kHz, like Whisper
    for same in (wave.astype(np.float64), torch.from_numpy(wave), wave.tolist(), [wave], (torch.from_numpy(wave),)):
        np.testing.assert_allclose(features(fe, same, sampling_rate=SR), expected, atol=1e-6, rtol=0)
    batch = features(fe, [wave.tolist(), torch.from_numpy(wave[:8000])], sampling_rate=SR)
    assert batch.shape == (2, 80, expected.shape[-1])
    np.testing.assert_allclose(batch[:1], expected, atol=1e-6, rtol=0)


def test_load_returns_the_mono_16khz_waveform(fe, tmp_path):
    stereo = (np.random.default_rng(0).standard_normal((48000, 2)) * 3000).astype(np.int16)
    wave = fe.load(stereo, sampling_rate=48000)
    assert wave.dtype == np.float32 and wave.shape == (16000,)
    np.testing.assert_allclose(wave, resample(stereo.mean(1) / 32768, 48000, SR), atol=1e-6, rtol=0)
    sf.write(tmp_path / "a.wav", stereo, 48000, subtype="PCM_16")
    np.testing.assert_array_equal(fe.load(tmp_path / "a.wav"), wave)
    np.testing.assert_array_equal(features(fe, wave), features(fe, stereo, sampling_rate=48000))


def test_integer_pcm_is_scaled(fe):
    pcm = (np.random.default_rng(0).standard_normal(16000) * 3000).astype(np.int16)
    expected = features(fe, pcm.astype(np.float32) / 32768)
    np.testing.assert_allclose(features(fe, pcm), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(features(fe, pcm.astype(np.int32) * 65536), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(features(fe, torch.from_numpy(pcm)), expected, atol=1e-5, rtol=0)
    u8 = (pcm // 256 + 128).astype(np.uint8)
    np.testing.assert_allclose(features(fe, u8), features(fe, (pcm // 256).astype(np.float32) / 128), atol=1e-5)


def test_multichannel_is_downmixed(fe):
    left, right = noise(1.0, seed=4), noise(1.0, seed=5)
    mono = features(fe, left)
    np.testing.assert_allclose(features(fe, np.stack([left, left], axis=1)), mono, atol=1e-6, rtol=0)  # (T, C)
    np.testing.assert_allclose(features(fe, torch.stack([torch.from_numpy(left)] * 2)), mono, atol=1e-6)  # (C, T)
    surround = np.stack([noise(1.0, seed=s) for s in range(6)], axis=1)  # 5.1: (T, 6)
    np.testing.assert_allclose(features(fe, surround), features(fe, surround.mean(1)), atol=1e-6, rtol=0)
    np.testing.assert_allclose(features(fe, (left + right) / 2), features(fe, np.stack([left, right])), atol=1e-6)


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 44100, 48000])
def test_other_rates_are_resampled(fe, sr):
    seconds = 1.7
    # A band-limited signal (under 4 kHz, so every rate carries it) generated at `sr` and directly at 16 kHz:
    # resampled features must match the native ones away from the edges.
    def signal(rate: int) -> np.ndarray:
        return 0.3 * tone(440, seconds, rate) + 0.2 * tone(1250, seconds, rate) + 0.1 * tone(3100, seconds, rate)

    out = fe(signal(sr).astype(np.float32), sampling_rate=sr, return_tensors="np")
    frames = out["attention_mask"].sum()
    assert abs(frames - seconds * 100) <= 1 and out["input_features"].shape[-1] == frames
    native = features(fe, signal(SR).astype(np.float32))
    n = min(frames, native.shape[-1]) - 5  # a rate like 11025 Hz can round to one frame less
    np.testing.assert_allclose(out["input_features"][..., 5:n], native[..., 5:n], atol=5e-4, rtol=0)


# ------------------------------------------------------------------ the resampler


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 24000, 32000, 44100, 48000])
def test_resample_keeps_length_and_frequency(sr):
    x = tone(1000, 1.25, sr).astype(np.float32)
    y = resample(x, sr, SR)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert len(y) == round(len(x) * SR / sr)
    spectrum = np.abs(np.fft.rfft(y))
    assert spectrum.argmax() * SR / len(y) == pytest.approx(1000, abs=1)
    # Away from the zero-padded edges it is the analytic 16 kHz sine.
    expected = tone(1000, 1.25, SR)[: len(y)]
    np.testing.assert_allclose(y[300:-300], expected[300:-300], atol=1e-4, rtol=0)


def test_resample_rejects_what_would_alias():
    x = tone(7000, 1.0, 48000)  # above 8 kHz output's Nyquist: would fold to 1 kHz without the low-pass
    y = resample(x, 48000, 8000)
    assert len(y) == 8000
    attenuation_db = 20 * np.log10(np.sqrt(np.mean(y[200:-200] ** 2)) / np.sqrt(np.mean(x**2)))
    assert attenuation_db < -80
    passband = resample(tone(3000, 1.0, 48000), 48000, 8000)  # below Nyquist: kept
    assert np.sqrt(np.mean(passband[200:-200] ** 2)) == pytest.approx(np.sqrt(0.5), rel=1e-3)


def test_resample_tensor_in_tensor_out():
    x = torch.randn(2, 3, 4410, dtype=torch.float64)
    y = resample(x, 44100, SR)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64 and y.shape == (2, 3, 1600)
    torch.testing.assert_close(y[1, 2], resample(x[1, 2], 44100, SR))  # leading dims are independent clips
    assert torch.equal(resample(x, SR, SR), x)
    with pytest.raises(ValueError, match="floating-point"):
        resample(np.zeros(10, np.int16), 8000, SR)


# ------------------------------------------------------------------ files


def test_file_paths_equal_arrays(fe, tmp_path):
    wave = noise(1.5, seed=7)
    path = tmp_path / "clip.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    expected = features(fe, wave)
    np.testing.assert_array_equal(features(fe, path), expected)
    np.testing.assert_array_equal(features(fe, str(path)), expected)
    # The file's own rate wins over `sampling_rate`; stereo 16-bit at 44.1 kHz is read, downmixed, resampled.
    stereo = np.stack([noise(1.0, 44100, seed=8), noise(1.0, 44100, seed=9)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 44100, subtype="PCM_16")
    pcm = sf.read(tmp_path / "stereo.wav", dtype="int16")[0]
    batch = features(fe, [tmp_path / "stereo.wav", pcm], sampling_rate=44100)
    np.testing.assert_allclose(batch[0], batch[1], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(features(fe, tmp_path / "stereo.wav", sampling_rate=8000), batch[:1])


def test_unreadable_files_name_the_file(fe, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    junk = tmp_path / "junk.flac"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    for path in (text, junk):
        with pytest.raises(ValueError, match=re.escape(f"Could not decode '{path}'")):
            fe(path)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        fe(tmp_path / "missing.wav")


# ------------------------------------------------------------------ bad input


def test_silence_works(fe):
    out = features(fe, np.zeros(16000, np.float32))
    assert np.isfinite(out).all() and out.shape == (1, 80, 100)


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(0, np.float32), "empty"),
        ([], "empty batch"),
        (np.array([0.1] * 500 + [np.nan] * 3, np.float32), r"3 non-finite samples \(NaN, first at sample 500\)"),
        (np.array([0.1] * 500 + [np.inf], np.float32), r"non-finite samples \(inf"),
        (np.zeros(30 * SR + 1, np.float32), "over the 30 s .* Split it"),
        (np.zeros(200, np.float32), "shorter than one 400-sample analysis window"),
        (np.zeros((2, 3, 16000), np.float32), "3-D array"),
        (np.zeros((16, 16000), np.float32), "at most 8 channels, got shape"),
        (np.zeros(16000, np.int64), "int16/int32/uint8 PCM, got dtype int64"),
        (np.zeros(16000, np.complex64), "got dtype complex64"),
        ([0.1, "a", 0.2], "must hold numbers"),
    ],
)
def test_bad_audio_raises_value_error(fe, audio, message):
    with pytest.raises(ValueError, match=message):
        fe(audio)


def test_bad_arguments_raise(fe):
    with pytest.raises(TypeError, match="got a dict"):
        fe({"array": noise(1.0), "sampling_rate": SR})
    with pytest.raises(TypeError, match="got a dict"):
        fe([noise(1.0), {"array": noise(1.0)}])
    with pytest.raises(ValueError, match="clip 1"):  # the failing clip of a batch is named
        fe([noise(1.0), np.zeros(0, np.float32)])
    for rate in (0, -16000, 16000.5, "16000", True):
        with pytest.raises(ValueError, match="positive integer"):
            fe(noise(1.0), sampling_rate=rate)
    assert fe(noise(1.0), sampling_rate=16000.0)["attention_mask"].sum() == 100
    with pytest.raises(ValueError, match="return_tensors"):
        fe(noise(1.0), return_tensors="tf")
    with pytest.raises(ValueError, match="padding"):
        fe(noise(1.0), padding="do_not_pad")
    # the duration limit is config-driven and judged at the input's own rate
    short = OmniDRCAFeatureExtractor(max_length_seconds=1.0)
    assert short(noise(1.0, 48000), sampling_rate=48000)["attention_mask"].sum() == 100
    with pytest.raises(ValueError, match="1.00 s long, over the 1 s"):
        short(np.zeros(48001, np.float32), sampling_rate=48000)


# ------------------------------------------------------------------ save / load


def test_save_pretrained_roundtrip(tmp_path):
    fe = OmniDRCAFeatureExtractor(feature_size=128, max_length_seconds=20.0, padding_value=-1.5)
    fe.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = OmniDRCAFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == fe.to_dict()
    assert (loaded.feature_size, loaded.max_length_seconds, loaded.sampling_rate) == (128, 20.0, SR)
    assert (loaded.hop_length, loaded.n_fft, loaded.padding_value) == (HOP, 400, -1.5)
    clips = [noise(1.0), noise(0.5)]
    np.testing.assert_array_equal(features(loaded, clips), features(fe, clips))
    assert features(loaded, clips)[1, :, 50:].min() == -1.5


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from transformers import AutoFeatureExtractor

    fe = AutoFeatureExtractor.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(fe).__module__.startswith("transformers_modules."), type(fe).__module__
    wave = np.load(sys.argv[2])
    np.save(sys.argv[3], fe(wave, sampling_rate=48000, return_tensors="np")["input_features"])
    """
)


def test_trust_remote_code_loads_without_the_package(tmp_path):
    # What the package __init__ does for the other classes: save_pretrained copies the code + auto_map.
    OmniDRCAFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    fe = OmniDRCAFeatureExtractor(feature_size=128)
    saved = tmp_path / "saved extractor"
    fe.save_pretrained(saved)
    assert {"feature_extraction_omnidrca.py", "audio_utils.py"} <= {p.name for p in saved.iterdir()}
    wave = noise(1.0, 48000)
    np.save(tmp_path / "wave.npy", wave)
    run_without_package(REMOTE_SCRIPT, [saved, "wave.npy", "out.npy"], tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), features(fe, wave, sampling_rate=48000))
