"""The evaluation harness: answer scoring, WER, the Whisper judge, and a 3-example run end to end."""

import json
from pathlib import Path

import pytest

from processing.corpus import ASSISTANT_PITCH, ASSISTANT_RATE, ASSISTANT_VOICE, build_corpus, synthesize
from training import evaluate as harness

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny-random-omnidrca"


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
                            "--no-progress"])
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
