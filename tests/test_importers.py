"""Real-corpus importers: folders (LibriSpeech layout, sidecar transcripts), `datasets` datasets, bad input,
speaker-disjoint splits, the empty-data gate and the command line.

The corpora are written here with soundfile (tones and noise at several rates, stereo, broken and empty
files); expected lengths, pitches and amplitudes are computed from what was written, not by the importer.
"""

import re
import time

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, DatasetDict, load_from_disk

from modeling_omnidrca import OmniDRCAFeatureExtractor
from processing import import_corpus
from processing.importers import (
    CorpusWarning,
    import_folder,
    import_hf_dataset,
    normalize_transcript,
    require_nonempty,
    split_dataset,
)
from processing.schema import FEATURES, SYSTEM_PROMPTS, to_float

SR = 16000


def tone(freq: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def noise(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * sr))).astype(np.float32)


def expected_length(frames: int, sr: int) -> int:
    return round(frames * SR / sr)  # the 16 kHz sample count of `frames` samples at `sr`


def peak_hz(clip: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(to_float(clip)))
    return float(np.argmax(spectrum) * SR / len(clip))


def warned(record, path) -> list[str]:
    return [str(w.message) for w in record if str(path) in str(w.message)]


# utterance id -> (audio written, its rate) for the LibriSpeech-layout corpus below
GOOD = {
    "19-198-0000": (tone(440, 1.0, 16000), 16000),
    "19-198-0001": (np.stack([tone(300, 0.7, 22050), tone(300, 0.7, 22050, amplitude=0.25)], axis=1), 22050),
    "26-495-0000": (noise(1.3, 22050, seed=1), 22050),
    "26-495-0001": (tone(1000, 0.5, 44100), 44100),
}
TEXT = {
    "19-198-0000": "HELLO WORLD",
    "19-198-0001": "THE QUICK  BROWN FOX",
    "19-198-0002": "THIS FILE IS BROKEN",
    "26-495-0000": "IT'S A TEST",
    "26-495-0001": "ANOTHER ONE",
    "26-495-0003": "THIS CLIP IS EMPTY",
    "26-495-0009": "THIS LINE HAS NO AUDIO",
}


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory):
    """dev-mini/{19/198,26/495}: 4 good clips (16/22.05/44.1 kHz, one stereo) and 3 bad files."""
    root = tmp_path_factory.mktemp("corpora") / "dev-mini"
    for chapter in ("19/198", "26/495"):
        (root / chapter).mkdir(parents=True)
        prefix = chapter.replace("/", "-")
        lines = [f"{uttid} {text}" for uttid, text in TEXT.items() if uttid.startswith(prefix)]
        (root / chapter / f"{prefix}.trans.txt").write_text("\n".join(lines) + "\n")
    for uttid, (wave, sr) in GOOD.items():
        sf.write(root / uttid.rsplit("-", 1)[0].replace("-", "/") / f"{uttid}.flac", wave, sr)
    (root / "19/198/19-198-0002.flac").write_bytes(b"definitely not a flac file " * 20)  # broken
    sf.write(root / "26/495/26-495-0002.flac", tone(200, 0.5, 16000), 16000)  # no transcript line
    sf.write(root / "26/495/26-495-0003.wav", np.zeros(0, np.float32), 16000)  # zero-length
    return root


@pytest.fixture(scope="module")
def imported(librispeech):
    with pytest.warns(CorpusWarning) as record:
        result = import_folder(librispeech)
    return result, record


# ------------------------------------------------------------------ folders


def test_librispeech_rows_follow_the_schema(imported):
    result, _ = imported
    ds = result.dataset
    assert ds.features == FEATURES
    assert ds["id"] == [f"{u[:2]}/{u[3:6]}/{u}" for u in sorted(GOOD)]  # sorted paths: deterministic order
    assert ds["voice"] == ["19", "19", "26", "26"]  # speaker = prefix of the utterance id
    assert ds["question_text"] == ["hello world", "the quick brown fox", "it's a test", "another one"]
    assert ds["answer_text"] == ds["question_text"]
    assert set(ds["task"]) == {"asr"} and set(ds["system_prompt"]) == {SYSTEM_PROMPTS["asr"]}
    assert set(ds["rate"]) == {0} and set(ds["pitch"]) == {-1} and set(ds["template"]) == {""}
    assert set(ds["source"]) == {"dev-mini"}  # default: the folder's name
    assert str(ds.data.schema.field("question_audio").type) == "list<item: int16>"  # stored as int16
    rows = ds.with_format("numpy", dtype=np.int16)  # without dtype= `datasets` hands out int64 copies
    for uttid, row in zip(sorted(GOOD), rows):
        wave, sr = GOOD[uttid]
        assert row["question_audio"].dtype == np.int16 and row["answer_audio"].shape == (0,)
        assert len(row["question_audio"]) == expected_length(len(wave), sr), uttid


def test_audio_is_resampled_downmixed_and_accepted_by_the_feature_extractor(imported):
    rows = imported[0].dataset.with_format("numpy")
    original = rows[0]["question_audio"]  # 16 kHz 16-bit FLAC: kept sample for sample (to 1 LSB of scaling)
    written = np.round(GOOD["19-198-0000"][0] * 32768)
    assert np.abs(original.astype(np.int32) - written).max() <= 1
    stereo = rows[1]["question_audio"]  # 300 Hz at 22.05 kHz, channels at 0.5 and 0.25: mean amplitude 0.375
    assert abs(peak_hz(stereo) - 300) < 3
    assert np.abs(to_float(stereo)).max() == pytest.approx(0.375, abs=0.01)
    assert abs(peak_hz(rows[3]["question_audio"]) - 1000) < 5  # from 44.1 kHz
    fe = OmniDRCAFeatureExtractor()
    for row in rows:  # what the importer keeps, training can featurise
        assert fe.load(to_float(row["question_audio"])).shape == row["question_audio"].shape


def test_bad_files_are_skipped_with_a_warning_naming_each_and_counted(imported, librispeech):
    result, record = imported
    reasons = {
        "19/198/19-198-0002.flac": "broken audio",
        "26/495/26-495-0002.flac": "no transcript",
        "26/495/26-495-0003.wav": "empty audio",
    }
    assert result.num_found == 7 and result.num_imported == 4 and result.num_skipped == 3
    kinds = [(path, reason.partition(":")[0]) for path, reason in result.skipped]
    assert kinds == [(str(librispeech / path), kind) for path, kind in reasons.items()]
    for path, reason in reasons.items():
        messages = warned(record, librispeech / path)
        assert len(messages) == 1 and reason in messages[0], (path, messages)
    summary = [str(w.message) for w in record if "skipped 3" in str(w.message)]
    assert summary == [
        f"imported 4 of 7 files from {librispeech}; skipped 3 (broken audio: 1, no transcript: 1, empty audio: 1)"
    ]
    orphan = [str(w.message) for w in record if "have no audio file" in str(w.message)]
    assert len(orphan) == 1 and "26-495-0009" in orphan[0]


def test_flat_folder_with_txt_and_lab_transcripts(tmp_path):
    (tmp_path / "spk1").mkdir()
    sf.write(tmp_path / "a.wav", tone(500, 0.8, 16000), 16000, subtype="PCM_16")
    (tmp_path / "a.txt").write_text("Hello there, it's me.\n")  # cased: kept as is
    sf.write(tmp_path / "spk1" / "b.flac", noise(0.6, 48000), 48000)
    (tmp_path / "spk1" / "b.lab").write_text("GOOD\nMORNING")  # all caps, two lines: lowered, joined
    sf.write(tmp_path / "c.wav", tone(500, 0.8, 16000), 16000)  # no transcript
    nan = tone(500, 0.8, 16000)
    nan[100] = np.nan
    sf.write(tmp_path / "d.wav", nan, 16000, subtype="FLOAT")
    (tmp_path / "d.txt").write_text("not a number")
    sf.write(tmp_path / "e.wav", tone(500, 2.0, 16000), 16000)
    (tmp_path / "e.txt").write_text("too long for max seconds")
    sf.write(tmp_path / "f.wav", tone(500, 0.01, 16000), 16000)  # 160 samples < one 400-sample window
    (tmp_path / "f.txt").write_text("too short")

    with pytest.warns(CorpusWarning) as record:
        result = import_folder(tmp_path, source="flat", max_seconds=1.5)
    ds = result.dataset
    assert ds["id"] == ["a", "spk1/b"] and ds["voice"] == ["", "spk1"] and set(ds["source"]) == {"flat"}
    assert ds["question_text"] == ["Hello there, it's me.", "good morning"]
    assert [len(a) for a in ds.with_format("numpy")["question_audio"]] == [12800, expected_length(28800, 48000)]
    expected = {"c.wav": "no transcript", "d.wav": "non-finite audio", "e.wav": "too long", "f.wav": "too short"}
    assert result.skip_counts() == {reason: 1 for reason in expected.values()}
    for name, reason in expected.items():
        assert any(reason in m for m in warned(record, tmp_path / name)), name


def test_normalize_transcript():
    assert normalize_transcript("  HE SAID  \n HELLO ") == "he said hello"
    assert normalize_transcript("I'M O'BRIEN") == "i'm o'brien"
    assert normalize_transcript("Keep Mixed case. OK?") == "Keep Mixed case. OK?"
    assert normalize_transcript(" \n ") == ""


# ------------------------------------------------------------------ the empty-data gate


def test_a_corpus_where_everything_is_broken_fails_clearly(tmp_path):
    (tmp_path / "x.flac").write_bytes(b"garbage")
    (tmp_path / "x.txt").write_text("hello")
    sf.write(tmp_path / "y.wav", tone(300, 0.5, 16000), 16000)  # no transcript
    with pytest.warns(CorpusWarning) as record:
        result = import_folder(tmp_path)
    assert len(record) == 3 and "imported 0 of 2 files" in str(record[-1].message)
    assert len(result.dataset) == 0 and result.dataset.features == FEATURES
    message = r"No usable examples in the corpus: all 2 files .* skipped \(broken audio: 1, no transcript: 1\)"
    with pytest.raises(ValueError, match=message) as error:
        require_nonempty(result, "the corpus")
    assert "x.flac" in str(error.value) and "y.wav" in str(error.value)
    with pytest.raises(ValueError, match="No usable examples in rows: rows empty"):
        require_nonempty(result.dataset, "rows")


def test_an_empty_or_missing_folder_fails_clearly(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=r"found no files in .*point it at the corpus folder"):
        require_nonempty(import_folder(tmp_path), "the corpus")
    with pytest.raises(FileNotFoundError, match="Corpus folder not found"):
        import_folder(tmp_path / "missing")


def test_require_nonempty_checks_every_split(imported):
    ds = imported[0].dataset
    require_nonempty(DatasetDict(train=ds, validation=ds))
    with pytest.raises(ValueError, match="validation empty"):
        require_nonempty(DatasetDict(train=ds, validation=ds.select([])), "the splits")


# ------------------------------------------------------------------ datasets datasets


def test_import_hf_dataset_with_array_columns():
    clips = [tone(440, 1.0, 22050), noise(0.5, 16000), np.zeros(0, np.float32), tone(440, 1.0, 16000)]
    rates = [22050, 16000, 16000, 16000]
    ds = Dataset.from_dict(
        {
            "audio": [{"array": c, "sampling_rate": r} for c, r in zip(clips, rates)],
            "sentence": ["HELLO", "Bonjour.", "empty clip", "   "],
            "speaker": [7, 8, 7, 9],
        }
    )
    with pytest.warns(CorpusWarning) as record:
        result = import_hf_dataset(ds, text_column="sentence", speaker_column="speaker", source="mini")
    out = result.dataset
    assert out.features == FEATURES and out["id"] == ["mini-0", "mini-1"] and out["voice"] == ["7", "8"]
    assert out["question_text"] == ["hello", "Bonjour."]
    assert [len(a) for a in out["question_audio"]] == [16000, 8000]
    assert abs(peak_hz(out.with_format("numpy")[0]["question_audio"]) - 440) < 3
    assert result.skip_counts() == {"empty audio": 1, "empty transcript": 1}
    assert warned(record, "mini row 2") and warned(record, "mini row 3")

    plain = Dataset.from_dict({"audio": [tone(440, 1.0, 8000)], "text": ["x y"]})
    assert len(import_hf_dataset(plain, sampling_rate=8000).dataset[0]["question_audio"]) == 16000
    with pytest.raises(ValueError, match=r"plain sample arrays together with `sampling_rate=`"):
        import_hf_dataset(plain)
    with pytest.raises(ValueError, match=r"no column\(s\) \['transcript'\]; its columns are \['audio', 'text'\]"):
        import_hf_dataset(plain, text_column="transcript", sampling_rate=8000)


def test_import_hf_dataset_with_an_audio_feature(tmp_path):
    # `datasets` decodes Audio with torchcodec (not a dependency): the importer reads the files itself.
    sf.write(tmp_path / "a.flac", tone(440, 1.0, 22050), 22050)
    sf.write(tmp_path / "b.wav", tone(440, 0.5, 16000), 16000)
    (tmp_path / "c.wav").write_bytes(b"RIFF broken")
    audio = [
        {"bytes": None, "path": str(tmp_path / "a.flac")},
        {"bytes": (tmp_path / "b.wav").read_bytes(), "path": None},  # embedded bytes, as in Hub parquet files
        {"bytes": None, "path": str(tmp_path / "c.wav")},
    ]
    ds = Dataset.from_dict({"audio": audio, "text": ["ONE", "TWO", "THREE"], "key": ["a", "b", "c"]})
    ds = ds.cast_column("audio", Audio())
    with pytest.warns(CorpusWarning) as record:
        result = import_hf_dataset(ds, id_column="key")
    assert warned(record, "skipping hf row 2 (id c): broken audio")
    assert result.dataset["id"] == ["a", "b"] and result.dataset["question_text"] == ["one", "two"]
    assert [len(a) for a in result.dataset["question_audio"]] == [16000, 8000]


# ------------------------------------------------------------------ splits


def speakers_dataset(sizes: list[int]) -> Dataset:
    rows = [(f"s{s:02d}", f"s{s:02d}-{i}") for s, n in enumerate(sizes) for i in range(n)]
    return Dataset.from_dict({"voice": [v for v, _ in rows], "id": [i for _, i in rows]})


def test_split_holds_out_whole_speakers_deterministically():
    ds = speakers_dataset([5] * 10)  # 50 rows; 20% = 10 rows = two speakers per held-out split
    splits = split_dataset(ds, validation_fraction=0.2, test_fraction=0.2, seed=3)
    assert list(splits) == ["train", "validation", "test"]
    assert [len(splits[s]) for s in splits] == [30, 10, 10]
    voices = {name: set(split["voice"]) for name, split in splits.items()}
    assert not voices["train"] & voices["validation"] and not voices["train"] & voices["test"]
    assert not voices["validation"] & voices["test"]
    assert sorted(i for split in splits.values() for i in split["id"]) == sorted(ds["id"])  # a partition
    again = split_dataset(ds.shuffle(seed=0), validation_fraction=0.2, test_fraction=0.2, seed=3)
    assert {name: set(split["voice"]) for name, split in again.items()} == voices  # row order does not matter
    other = split_dataset(ds, validation_fraction=0.2, test_fraction=0.2, seed=4)
    assert {name: set(split["voice"]) for name, split in other.items()} != voices
    assert list(split_dataset(ds, validation_fraction=0.1, test_fraction=0.0)) == ["train", "validation"]


def test_split_falls_back_to_rows_when_no_speaker_is_small_enough():
    ds = speakers_dataset([20, 20])  # 5% of 40 = 2 rows, each speaker has 20
    with pytest.warns(CorpusWarning, match="Cannot hold out whole 'voice' groups"):
        splits = split_dataset(ds, 0.05, 0.05)
    assert [len(splits[s]) for s in splits] == [36, 2, 2]
    unknown = Dataset.from_dict({"voice": [""] * 20, "id": [str(i) for i in range(20)]})  # each row its own
    assert [len(s) for s in split_dataset(unknown, 0.1, 0.1).values()] == [16, 2, 2]
    with pytest.raises(ValueError, match=r"Cannot split 2 row\(s\) .* training would get no rows"):
        split_dataset(speakers_dataset([1, 1]), 0.05, 0.05)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\) with a sum below 1"):
        split_dataset(ds, 0.5, 0.5)


# ------------------------------------------------------------------ command line


def test_command_line_saves_a_split_dataset(librispeech, tmp_path, capsys):
    start = time.perf_counter()
    args = ["--folder", str(librispeech), "--output", str(tmp_path / "out"), "--validation", "0.5", "--test", "0"]
    import_corpus.main(args)
    seconds = time.perf_counter() - start
    saved = load_from_disk(str(tmp_path / "out"))
    assert list(saved) == ["train", "validation"] and [len(s) for s in saved.values()] == [2, 2]
    assert saved["train"].features == FEATURES
    out, err = capsys.readouterr()
    assert "imported 4 of 7 files" in out and "validation: 2 rows, 1 speakers" in out
    assert re.search(r"warning: skipping .*19-198-0002.flac: broken audio", err)
    print(f"imported 7 files in {seconds:.2f} s: {7 / seconds:.1f} files/s")


def test_command_line_exits_with_a_clear_error_when_nothing_is_usable(tmp_path):
    (tmp_path / "x.flac").write_bytes(b"garbage")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(SystemExit, match=r"error: No usable examples in --folder .*broken audio: 1"):
        import_corpus.main(["--folder", str(tmp_path), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
