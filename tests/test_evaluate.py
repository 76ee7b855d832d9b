"""The evaluation harness: answer scoring, WER, the Whisper judge, and a 3-example run end to end."""

import json
from pathlib import Path

import numpy as np
import pytest

from processing.corpus import ASSISTANT_PITCH, ASSISTANT_RATE, ASSISTANT_VOICE, build_corpus, synthesize
from training import evaluate as harness

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny-random-omnidrca"
DEMO = ROOT / "checkpoints" / "omnidrca-demo"


@pytest.fixture(scope="module")
def judge():
    return harness.WhisperJudge()


def test_normalize_spells_digits_like_the_corpus():
    assert harness.normalize("Two times 11 is 22.") == "two times eleven is twenty two"
    assert harness.normalize("It's twenty-two!") == "it's twenty two"
    assert harness.normalize("144") == "one hundred forty four"


@pytest.mark.parametrize("reference, hypothesis, expected", [
    ("a b c", "a b c", (0, 3)),
    ("a b c", "a x c", (1, 3)),  # substitution
    ("a b c", "a c", (1, 3)),  # deletion
    ("a b c", "a b c d e", (2, 3)),  # insertions
    ("a b", "", (2, 2)),
    ("seven plus twelve", "7 plus 12", (0, 3)),  # digits normalised before scoring
])
def test_word_errors(reference, hypothesis, expected):
    assert harness.word_errors(reference, hypothesis) == expected


def test_answers_are_judged_on_their_key():
    assert harness.answer_key("two times eleven is twenty two") == "twenty two"
    assert harness.answer_key("a cat says meow") == "meow"
    assert harness.answer_key("no verb here") is None
    assert harness.is_correct("two times eleven is twenty two", "Two times 11 is 22.")
    assert not harness.is_correct("two times eleven is twenty two", "two times eleven is twenty")
    assert not harness.is_correct("the capital of france is paris", "paris")  # no statement, no key


def test_judge_transcribes_the_assistant_voice(judge):
    sentence = "the capital of france is paris"
    heard = judge(synthesize(sentence, ASSISTANT_VOICE, ASSISTANT_RATE, ASSISTANT_PITCH))
    errors, words = harness.word_errors(sentence, heard)
    assert errors <= 1, heard
    assert judge(synthesize(sentence, ASSISTANT_VOICE, ASSISTANT_RATE, ASSISTANT_PITCH)[:800]) == ""  # 0.05 s: too short


def test_harness_runs_end_to_end_on_three_examples(tmp_path):
    corpus = tmp_path / "corpus"
    build_corpus(corpus, 0, 0, 12, seed=3, tasks=("s2s", "asr", "t2s"), progress=False)
    out = tmp_path / "eval.json"
    results = harness.main(["--model", str(TINY), "--corpus", str(corpus), "--per-task", "1", "--output", str(out),
                            "--no-progress", "--judge", "tiny.en", "--second-judge", "none"])
    assert sorted(e["task"] for e in results["examples"]) == ["asr", "s2s", "t2s"]
    saved = json.loads(out.read_text())
    assert saved["metrics"] == results["metrics"]
    for name in ("s2t_accuracy", "s2s_accuracy", "generated_speech_asr_wer", "transcription_wer", "codec_asr_wer",
                 "original_answer_asr_wer", "original_question_asr_wer"):
        assert name in saved["metrics"], name
    # The tiny random model answers nonsense: it cannot be right, and the table says the targets are missed.
    assert saved["metrics"]["s2t_accuracy"] == 0.0
    assert "missed" in out.with_suffix(".md").read_text()
    # Question answers are also broken down by kind of question (the row template's relation).
    from datasets import load_from_disk

    (row,) = [r for r in load_from_disk(str(corpus))["test"] if r["task"] == "s2s"][:1]
    kind = row["template"].split("/")[0]
    assert saved["by_kind"] == {kind: {"s2t_accuracy": [0, 1], "s2s_accuracy": [0, 1]}}
    assert f"| {kind} | 0/1 (0 %) | 0/1 (0 %) |" in out.with_suffix(".md").read_text()
    # The judge hears the reference answers far better than the random codec's reconstruction of them.
    assert saved["metrics"]["original_answer_asr_wer"] < saved["metrics"]["codec_asr_wer"]


def test_judge_floor_and_typed_questions_on_the_demo_model(tmp_path, judge):
    """3 rows (s2t, s2s, asr) through the demo model: the typed-vs-spoken gap, the judge's floor (here spoken by
    espeak, so that the test needs no festival; the CLI uses festival's HTS voice), and metrics kept per judge."""
    from datasets import load_from_disk
    from transformers import AutoModel, AutoProcessor

    corpus = tmp_path / "corpus"
    build_corpus(corpus, 0, 0, 12, seed=5, tasks=("s2t", "s2s", "asr"), progress=False)
    processor = AutoProcessor.from_pretrained(DEMO, trust_remote_code=True)
    model = AutoModel.from_pretrained(DEMO, trust_remote_code=True).eval()
    spoken = []

    def voice(text):
        spoken.append(text)
        return synthesize(text, ASSISTANT_VOICE, ASSISTANT_RATE, ASSISTANT_PITCH) if text.strip() else np.zeros(0, np.float32)

    deaf = lambda wave, sampling_rate=16000: ""  # noqa: E731  (a second judge that hears nothing)
    results = harness.evaluate(model, processor, load_from_disk(str(corpus))["test"], {"tiny.en": judge, "deaf": deaf},
                               per_task=1, progress=False, codec_floor=False, judge_floor=True, typed=True,
                               floor_voice=voice)
    metrics, examples = results["metrics"], results["examples"]
    qa = [e for e in examples if e["task"] in ("s2t", "s2s")]
    assert len(qa) == 2 and results["judge"] == "tiny.en"
    # The floor speaks exactly the model's own text answers (the audio-mode text stream).
    assert spoken == [e["audio_text"] for e in qa]
    assert all("floor_transcript" in e and "typed_answer" in e for e in qa)
    # Typed vs spoken: the spoken score is S2T's; the ratio is spoken / typed (None when nothing typed was right).
    assert metrics["spoken_accuracy"] == metrics["s2t_accuracy"]
    typed_ok = [harness.is_correct(e["expected"], e["typed_answer"]) for e in qa]
    assert metrics["typed_accuracy"] == sum(typed_ok) / 2 and results["counts"]["typed_accuracy"] == 2
    expected_gap = metrics["spoken_accuracy"] / metrics["typed_accuracy"] if any(typed_ok) else None
    assert metrics["modality_gap_ratio"] == expected_gap
    kind = results["by_kind"][harness.question_kind({"template": qa[0]["template"]})]
    assert {"typed_accuracy", "spoken_accuracy", "modality_gap_ratio"} <= set(kind)
    # The floor: judged per judge; the primary judge's figures are also the top-level metrics.
    floor_ok = [harness.is_correct(e["expected"], e["floor_transcript"]) for e in qa]
    assert metrics["judge_floor_s2s_accuracy"] == sum(floor_ok) / 2
    tiny, deaf_metrics = results["by_judge"]["tiny.en"]["metrics"], results["by_judge"]["deaf"]["metrics"]
    assert tiny["s2s_accuracy"] == metrics["s2s_accuracy"]
    assert tiny["s2s_floor_ratio"] == (metrics["s2s_accuracy"] / sum(floor_ok) * 2 if any(floor_ok) else None)
    assert deaf_metrics["s2s_accuracy"] == deaf_metrics["judge_floor_s2s_accuracy"] == 0.0
    assert deaf_metrics["s2s_floor_ratio"] is None  # nothing heard at all: no ratio
    assert deaf_metrics["original_question_asr_wer"] == 1.0  # every word deleted
    table = harness.markdown_table(json.loads(json.dumps(results)))
    assert "| judged metric | Whisper tiny.en | Whisper deaf |" in table
    assert "| s2s_floor_ratio |" in table and "spoken / typed |" in table
