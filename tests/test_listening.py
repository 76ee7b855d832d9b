"""The human-recording listening report: clip collection from the packages' layouts, audio loading, WER table."""

import numpy as np
import pytest
import soundfile as sf

from training import listening

ROOT = listening.Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "omnidrca-demo"


def write_wav(path, seconds, sampling_rate=16000, channels=1):
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    wave = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, sampling_rate)


@pytest.fixture
def fake_packages(tmp_path):
    """pocketsphinx-testdata's, alsa-utils' and ktuberling-data's layouts, with a few tiny clips."""
    sphinx = tmp_path / "pocketsphinx" / "test" / "data"
    (sphinx / "librivox").mkdir(parents=True)
    (sphinx / "cards").mkdir()
    (sphinx / "tidigits").mkdir()
    (sphinx / "librivox" / "transcription").write_text(
        "<s> he was not an ill disposed young man </s> (austen-0880)\n"
        "<s> he might even have been made amiable himself </s> (austen-0930)\n"
        "<s> no audio for this one </s> (austen-9999)\n")
    write_wav(sphinx / "librivox" / "austen-0880.wav", 0.5)
    write_wav(sphinx / "librivox" / "austen-0930.wav", 0.5)
    (sphinx / "cards" / "cards.transcription").write_text("<s> ten of clubs  </s> (001)\n\n")
    (sphinx / "cards" / "cards.hyp").write_text("ten of clubs (001 -3466)\n")  # a decoder's output: not a reference
    np.full(1600, 1000, dtype="<i2").tofile(sphinx / "cards" / "001.raw")
    (sphinx / "tidigits" / "tidigits.lsn").write_text("one one one (man.ah.111a)\n")  # features only: no clip
    (sphinx / "tidigits" / "man.ah.111a.mfc").write_bytes(b"\0" * 16)
    alsa = tmp_path / "alsa"
    alsa.mkdir()
    write_wav(alsa / "Front_Center.wav", 0.25, 48000, channels=2)
    write_wav(alsa / "Noise.wav", 0.25, 48000)
    ktuberling = tmp_path / "ktuberling" / "en"
    ktuberling.mkdir(parents=True)
    sf.write(ktuberling / "pizzeria_broccolli.ogg", np.zeros(4410, dtype=np.float32), 44100)
    sf.write(ktuberling / "ball.ogg", np.zeros(4410, dtype=np.float32), 44100)
    return sphinx, alsa, ktuberling


def test_sphinx_transcripts_parse():
    text = ("<s> ten of clubs  </s> (001)\none one one (man.ah.111a)\nten of clubs (001 -3466)\n"
            "garbage line\n<s> </s> (empty)\n")
    assert listening.parse_sphinx_transcription_text(text) == {"001": "ten of clubs", "man.ah.111a": "one one one"}


def test_clips_are_collected_from_the_package_layouts(fake_packages):
    sphinx, alsa, ktuberling = fake_packages
    clips = listening.collect_clips(sphinx, alsa, ktuberling)
    found = {(c.source, c.path.name, c.text) for c in clips}
    assert found == {
        ("pocketsphinx/librivox", "austen-0880.wav", "he was not an ill disposed young man"),
        ("pocketsphinx/librivox", "austen-0930.wav", "he might even have been made amiable himself"),
        ("pocketsphinx/cards", "001.raw", "ten of clubs"),
        ("alsa", "Front_Center.wav", "front center"),  # Noise.wav is not speech
        ("ktuberling", "pizzeria_broccolli.ogg", "broccoli"),  # theme prefix dropped, spelling fixed
        ("ktuberling", "ball.ogg", "ball"),
    }
    assert listening.collect_clips(sphinx / "missing", alsa / "missing", ktuberling / "missing") == []
    raw = listening.load_audio(sphinx / "cards" / "001.raw")  # headerless 16 kHz int16
    assert raw.dtype == np.float32 and raw.shape == (1600,) and np.allclose(raw, 1000 / 32768)
    stereo = listening.load_audio(alsa / "Front_Center.wav")  # 48 kHz stereo -> 16 kHz mono
    assert stereo.ndim == 1 and abs(len(stereo) - 4000) <= 2


def test_wer_table_math():
    rows = [
        {"source": "a", "seconds": 1800.0, "model": (2, 10), "whisper": (1, 10)},
        {"source": "a", "seconds": 1800.0, "model": (4, 10), "whisper": (1, 10)},
        {"source": "b", "seconds": 360.0, "model": (1, 5), "whisper": (0, 5)},
    ]
    a, b, total = listening.wer_table(rows)
    assert a == {"source": "a", "clips": 2, "hours": 1.0, "model_wer": 0.3, "whisper_wer": 0.1,
                 "ratio": pytest.approx(3.0)}
    assert b["whisper_wer"] == 0.0 and b["ratio"] is None  # Whisper made no error: no ratio
    assert total["source"] == "all" and total["clips"] == 3 and total["hours"] == pytest.approx(1.1)
    assert total["model_wer"] == pytest.approx(7 / 25) and total["ratio"] == pytest.approx(7 / 2)
    table = listening.markdown([a, b, total], skipped=1)
    assert "| a | 2 | 1.0000 | 30.0 % | 10.0 % | 3.00x |" in table
    assert "| b | 1 | 0.1000 | 20.0 % | 0.0 % | n/a |" in table
    assert "| **all** | 3 |" in table and "longer than 30 s): 1" in table


def test_listening_report_end_to_end(tmp_path, monkeypatch):
    """Two short clips through the demo model and Whisper tiny.en, one 31 s clip skipped (the encoder's window)."""
    from processing.corpus import synthesize

    folder = tmp_path / "speech"
    folder.mkdir()
    sentences = {"u1": "the capital of france is paris", "u2": "a cow says moo"}
    (folder / "transcription").write_text("".join(f"<s> {t} </s> ({u})\n" for u, t in sentences.items())
                                          + "<s> far too long </s> (long)\n")
    for utterance, text in sentences.items():
        sf.write(folder / f"{utterance}.wav", synthesize(text, "en-us", 150, 50), 16000)
    write_wav(folder / "long.wav", 31.0)
    none = tmp_path / "none"
    monkeypatch.setattr(listening, "POCKETSPHINX_ROOT", none)
    monkeypatch.setattr(listening, "ALSA_ROOT", none)
    monkeypatch.setattr(listening, "KTUBERLING_ROOT", none)
    out = tmp_path / "listening.json"
    results = listening.main(["--model", str(DEMO), "--root", str(folder), "--output", str(out), "--no-progress"])
    assert results["skipped"] == 1 and len(results["clips"]) == 2
    (source, total) = results["table"]
    assert source["source"] == "speech" and total["source"] == "all"
    assert total["clips"] == 2 and total["hours"] == pytest.approx(sum(r["seconds"] for r in results["clips"]) / 3600)
    assert total["whisper_wer"] <= 0.2  # Whisper hears the espeak sentences
    assert all(isinstance(r["model_text"], str) for r in results["clips"])
    assert "| **all** | 2 |" in out.with_suffix(".md").read_text()
