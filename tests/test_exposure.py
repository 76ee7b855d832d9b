"""The exposure diagnostic: teacher-forced answers under three speech streams, checked against greedy decoding."""

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from processing.corpus import build_corpus
from processing.schema import SYSTEM_PROMPTS, to_float
from training import exposure
from training.evaluate import ask, load_for_evaluation, question_kind
from training.scoring import is_correct
from training.sft import OmniDRCACollator

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "omnidrca-demo"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("exposure") / "corpus"
    build_corpus(path, 0, 0, 4, seed=5, tasks=("s2t",), progress=False)
    return path


@pytest.fixture(scope="module")
def demo():
    return load_for_evaluation(str(DEMO))


def test_forcing_greedy_text_agrees_with_greedy_decoding(corpus, demo):
    # Greedy decoding writes each token as the argmax: forcing its own answer must find every token the first
    # choice, and forcing the reference answer only where greedy wrote exactly that answer.
    model, processor = demo
    collator = OmniDRCACollator(processor)
    rows = list(load_from_disk(str(corpus))["test"])
    agree = 0
    for row in rows:
        greedy = ask(model, processor, to_float(row["question_audio"]), "text").text
        assert exposure.forced_right(model, collator, {**row, "answer_text": greedy}, "s2t", None)
        same = greedy == row["answer_text"]
        assert exposure.forced_right(model, collator, row, "s2t", None) == same
        assert not exposure.forced_right(model, collator, {**row, "answer_text": greedy + " and more"}, "s2t", None)
        agree += same
        # The same holds under another system prompt: greedy under the S2S prompt, forced under it.
        under_s2s = ask(model, processor, to_float(row["question_audio"]), "text", system_prompt=SYSTEM_PROMPTS["s2s"])
        assert exposure.forced_right(model, collator, {**row, "answer_text": under_s2s.text}, "s2t", None, prompt="s2s")
    assert 0 < agree < len(rows)  # both branches ran (the demo answers some of these four right, not all)
    # ... and the prompt is what changed: the S2S prompt's words are in the forced input, not the S2T one's.
    prompted = collator([{**rows[0], "task": "s2t", "system_prompt": SYSTEM_PROMPTS["s2s"], "answer_codes": None}])
    text = processor.tokenizer.decode(prompted["input_ids"][0])
    assert SYSTEM_PROMPTS["s2s"] in text and SYSTEM_PROMPTS["s2t"] not in text


def test_the_entry_point_tallies_its_records(corpus, tmp_path):
    out = tmp_path / "exposure.json"
    results = exposure.main(["--model", str(DEMO), "--corpus", str(corpus), "--assistant-voice", "espeak",
                             "--noised-reference", "0", "1", "--no-progress", "--output", str(out)])
    saved = json.loads(out.read_text())
    metrics, records = saved["metrics"], saved["examples"]
    assert metrics["questions"] == len(records) == 4 and results["metrics"] == metrics
    for name in exposure.CONDITIONS:
        assert metrics[name] == sum(r[name] for r in records)
    assert all(r["free_running"] == is_correct(r["expected"], r["free_running_answer"]) for r in records)
    lost = sum(r["reference_speech"] and not r["own_speech"] for r in records)
    assert metrics["own_speech_changes"]["lost"] == lost
    # Rate 0 is the reference speech itself; rate 1 replaces every code, so it is counted on its own.
    assert all(r["reference_speech_noised"]["0.0"] == r["reference_speech"] for r in records)
    assert metrics["reference_speech_noised"] == {rate: sum(r["reference_speech_noised"][rate] for r in records)
                                                  for rate in ("0.0", "1.0")}
    table = out.with_suffix(".md").read_text()
    assert table.startswith("| answer text forced, speech stream |") and "with 100% of its codes random" in table


def test_a_kind_without_questions_is_refused_naming_the_kinds(corpus, demo):
    model, processor = demo
    dataset = load_from_disk(str(corpus))["test"]
    kinds = sorted({question_kind(r) for r in dataset})
    with pytest.raises(ValueError, match="No spoken question rows") as error:
        exposure.exposure(model, processor, dataset, kind="capitol_of", progress=False)  # a typo of capital_of
    assert str(kinds) in str(error.value)
