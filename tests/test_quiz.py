"""The quiz: spoken and typed text answers only, tallied per kind of question and arithmetic operation."""

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from processing.corpus import build_corpus
from training import quiz

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny-random-omnidrca"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("quiz") / "corpus"
    build_corpus(path, 0, 0, 12, seed=5, tasks=("s2t", "asr"), max_operand=20, progress=False)
    return path


def test_groups_split_arithmetic_by_operation_and_answer_size():
    row = {"template": "arithmetic/4", "answer_text": "sixteen plus five is twenty one"}
    assert quiz.groups(row) == ["all", "arithmetic", "arithmetic plus", "arithmetic, answer over 20"]
    row = {"template": "arithmetic/1", "answer_text": "twenty minus three is seventeen"}
    assert quiz.groups(row) == ["all", "arithmetic", "arithmetic minus", "arithmetic, answer 0-20"]
    assert quiz.groups({"template": "capital_of/5", "answer_text": "the capital of peru is lima"}) == [
        "all", "capital_of"]


def test_quiz_tallies_spoken_and_typed_answers(corpus, monkeypatch):
    # A stand-in model that answers every typed question right and every spoken one wrong:
    # the tallies must follow, group by group.
    def ask(model, processor, question, mode):
        assert mode == "text"
        row = next(r for r in rows if question == r["question_text"]) if isinstance(question, str) else None
        if row is not None:
            return quiz_answer(row["answer_text"])
        return quiz_answer("a cat says meow")

    class quiz_answer:
        def __init__(self, text):
            self.text = text

    rows = [r for r in load_from_disk(str(corpus))["test"] if r["task"] == "s2t"]
    monkeypatch.setattr(quiz, "ask", ask)
    results = quiz.quiz(None, None, load_from_disk(str(corpus))["test"], progress=False)
    assert results["metrics"]["questions"] == len(rows) == 6
    assert results["metrics"]["correct"] == [0, 6] and results["metrics"]["modality_gap_ratio"] == 0.0
    kinds = {r["template"].split("/")[0] for r in rows}
    assert kinds <= set(results["by_group"]) and all(results["by_group"][k]["typed_accuracy"] == 1.0 for k in kinds)
    assert [e["id"] for e in results["examples"]] == [r["id"] for r in rows]


def test_quiz_runs_the_real_model_end_to_end(corpus, tmp_path):
    out = tmp_path / "quiz.json"
    results = quiz.main(["--model", str(TINY), "--corpus", str(corpus), "--per-task", "2", "--no-progress",
                         "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["metrics"]["questions"] == 2 and len(saved["examples"]) == 2
    # Recount the saved answers independently of the tallies.
    from training.scoring import is_correct

    spoken = sum(is_correct(e["expected"], e["spoken_answer"]) for e in saved["examples"])
    assert saved["metrics"]["correct"][0] == spoken == results["metrics"]["correct"][0]
    assert out.with_suffix(".md").read_text().startswith("| questions |")


def test_a_split_without_questions_is_refused(tmp_path):
    build_corpus(tmp_path / "asr", 0, 0, 3, seed=1, tasks=("asr",), progress=False)
    with pytest.raises(ValueError, match="No question rows"):
        quiz.quiz(None, None, load_from_disk(str(tmp_path / "asr"))["test"], progress=False)


def test_speech_mode_scores_the_text_of_spoken_text_and_speech_answers(corpus, monkeypatch):
    # A stand-in that knows every answer in text mode and says a wrong one while it speaks.
    rows = [r for r in load_from_disk(str(corpus))["test"] if r["task"] == "s2t"]
    asked = []

    def ask(model, processor, question, mode):
        asked.append(("typed" if isinstance(question, str) else "spoken", mode))
        row = rows[(len(asked) - 1) // 3]  # three asks per question, one question after another
        return type("Answer", (), {"text": row["answer_text"] if mode == "text" else "two plus two is five"})

    monkeypatch.setattr(quiz, "ask", ask)
    results = quiz.quiz(None, None, load_from_disk(str(corpus))["test"], progress=False, speech_mode=True)
    assert sorted(set(asked)) == [("spoken", "audio"), ("spoken", "text"), ("typed", "text")] and len(asked) == 18
    metrics = results["metrics"]
    assert metrics["correct"] == [6, 6, 0] and metrics["speech_mode_accuracy"] == 0.0
    assert metrics["modality_gap_ratio"] == 1.0
    assert all(e["speech_mode_answer"] == "two plus two is five" for e in results["examples"])
    table = quiz.markdown(results).splitlines()
    assert table[0].endswith("spoken, text-and-speech mode |") and table[2].endswith("| 0 (0.0%) |")
