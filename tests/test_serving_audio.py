"""The server's audio in and out: what clients send is checked with messages that say what was expected, answers
are encoded in every offered format, and streamed pcm16 joins without seams."""

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from modeling_omnidrca.audio_utils import resample
from serving.audio import (
    OUTPUT_FORMATS,
    AudioError,
    Pcm16Stream,
    StreamingResampler,
    decode_base64,
    encode_audio,
    read_audio,
)


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def wav_bytes(wave: np.ndarray, rate: int = 16000, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize("orig, target", [(16000, 24000), (24000, 16000), (22050, 24000), (16000, 16000)])
def test_a_stream_resampled_in_chunks_equals_the_whole_resampled_at_once(orig, target):
    rng = np.random.default_rng(orig + target)
    wave = (0.3 * rng.standard_normal(20011)).astype(np.float32)
    stream, parts, i = StreamingResampler(orig, target), [], 0
    while i < len(wave):
        n = int(rng.integers(1, 3000))
        parts.append(stream.push(wave[i : i + n]))
        i += n
    parts.append(stream.flush())
    whole = resample(wave, orig, target) if orig != target else wave
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=2e-6)
    assert len(stream.buffer) <= 2 * (stream.margin + stream.down)  # the filter's reach, not the whole stream


def test_pcm16_stream_and_one_shot_encoding():
    wave = tone(1.0)
    stream = Pcm16Stream(16000)
    raw = b"".join([stream.push(wave[:5000]), stream.push(wave[5000:]), stream.flush()])
    assert len(raw) == 2 * 24000
    np.testing.assert_allclose(np.frombuffer(raw, "<i2"), np.round(resample(wave, 16000, 24000) * 32767), atol=1)
    for fmt in OUTPUT_FORMATS:
        data = encode_audio(wave, 16000, fmt)
        if fmt == "pcm16":
            assert data == encode_audio(wave, 16000, "pcm") and len(data) == 48000
            continue
        decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert rate == 16000 and abs(len(decoded) - len(wave)) <= (1200 if fmt in ("mp3", "opus") else 0)
    with pytest.raises(AudioError, match="expected one of"):
        encode_audio(wave, 16000, "aac")


def test_clients_audio_is_decoded_or_refused_with_a_reason():
    wave, rate = read_audio(wav_bytes(tone(1.5, 22050), 22050), "wav", 30.0)
    assert rate == 22050 and len(wave) == int(1.5 * 22050)
    stereo = np.stack([tone(1.0), tone(1.0)], axis=1)
    assert read_audio(wav_bytes(stereo, 16000, "FLAC"), "flac", 30.0)[0].ndim == 1  # mono for the model
    mp3, _ = read_audio(encode_audio(tone(1.0), 16000, "mp3"), "mp3", 30.0)
    assert abs(len(mp3) - 16000) <= 1200 and np.abs(mp3).max() > 0.2  # an mp3 from a browser or a phone
    pcm = (tone(0.5, 24000) * 32767).astype("<i2").tobytes()
    assert read_audio(pcm, "pcm16", 30.0)[1] == 24000
    problems = [
        (lambda: decode_base64("not base64!"), "not valid base64"),
        (lambda: decode_base64(""), "non-empty base64"),
        (lambda: read_audio(b"this is text, not audio", "wav", 30.0), "Could not decode"),
        (lambda: read_audio(wav_bytes(tone(2.0)), "wav", 1.0), "at most 1 s"),
        (lambda: read_audio(wav_bytes(tone(0.01)), "wav", 30.0), "at least 0.1 s"),
        (lambda: read_audio(b"\x00\x01\x02", "pcm16", 30.0), "whole 16-bit samples"),
        (lambda: read_audio(b"", "aiff", 30.0), "Unsupported audio format"),
        (lambda: read_audio(wav_bytes(np.full(16000, np.nan, np.float32), subtype="FLOAT"), "wav", 30.0), "NaN"),
    ]
    for call, message in problems:
        with pytest.raises(AudioError, match=message):
            call()
    assert decode_base64(base64.b64encode(b"abc").decode()) == b"abc"
