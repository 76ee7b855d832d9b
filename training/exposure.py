"""Why a text-and-speech answer is wrong where the text-mode answer is right: the answer's text forced three ways.

    python -m training.exposure --model checkpoints/omnidrca-smollm2 --corpus data/corpus-smollm2-qa --kind arithmetic \
        --output runs/eval/exposure.json

In text-and-speech mode the text stream leads the speech by `speech_delay` groups and reads, at every step, the
speech the model has made so far; training only ever shows it reference speech. For each spoken question this
forces the right answer's text (teacher forcing) and asks whether every text token of it is the model's first
choice (greedy would write it), under:

- `text_mode`: the S2T system prompt, no speech stream;
- `s2s_prompt_no_speech`: the S2S system prompt, the text-only stream of a text answer (no speech read);
- `reference_speech`: the S2S system prompt, the assistant voice saying the right answer as the speech stream;
- `own_speech`: the S2S system prompt, the model's own speech (its free-running text-and-speech answer to the
  question, re-encoded by its codec) as the speech stream;

beside `free_running`, that answer's text scored by `training.scoring.is_correct`. `text_mode` above
`reference_speech` says the S2S task answers worse, and `s2s_prompt_no_speech` splits that between the prompt and
the speech stream the backbone reads; `reference_speech` above `own_speech` says the model's
own speech misleads its text (exposure bias), and `own_speech_changes` counts the questions each way.
`--noised-reference 0.2 0.5` adds the reference speech with that share of its codes swapped for random ones
(seeded): how far the text stream leans on the speech it reads (what `speech_input_noise` aims to lower).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm.auto import tqdm

from modeling_omnidrca.speech_head_srh import swap_random_codes
from processing.schema import SYSTEM_PROMPTS, to_float
from processing.synthesis import ASSISTANT_VOICES, assistant_voice, synthesize_all

from .evaluate import QA_TASKS, add_model_arguments, ask, question_kind, run_on_corpus, select
from .scoring import is_correct
from .sft import OmniDRCACollator

CONDITIONS = ("text_mode", "s2s_prompt_no_speech", "reference_speech", "own_speech", "free_running")


def codec_codes(model, wave: np.ndarray) -> list[int]:
    """A 16 kHz float clip -> the model codec's 25 Hz codes."""
    audio = torch.from_numpy(np.asarray(wave, dtype=np.float32))[None].to(model.device)  # (1, T)
    mask = torch.ones_like(audio, dtype=torch.long)
    with torch.no_grad():
        codes = model.speech_codec.encode(audio, mask)  # (1, T25)
    return codes[0, : int(model.speech_codec.code_lengths(mask)[0])].tolist()


def forced_right(model, collator: OmniDRCACollator, row: dict, task: str, codes: list[int] | None,
                 prompt: str | None = None) -> bool:
    """Is every text label token of `row`'s answer the argmax under teacher forcing, asked as `task` (under the
    system prompt of `prompt`, default `task`) with `codes` as the speech stream?"""
    system_prompt = SYSTEM_PROMPTS[prompt or task]
    batch = collator([{**row, "task": task, "system_prompt": system_prompt, "answer_codes": codes}])
    labels = batch.pop("labels")[0, 1:]  # (L-1,) next-token targets
    inputs = {name: value.to(model.device) if torch.is_tensor(value) else value for name, value in batch.items()}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[0, :-1]  # (L-1, Vt)
    keep = labels != -100
    return bool((logits.argmax(-1).cpu()[keep] == labels[keep]).all())


def exposure(model, processor, dataset, kind: str | None = None, per_task: int | None = None,
             assistant: str = "festival-slt", progress: bool = True, noise_rates: tuple[float, ...] = ()) -> dict:
    """The five conditions for every spoken question row (of `kind`, when given), and the reference speech
    noised at each of `noise_rates`: tallies and one record each."""
    if any(not 0 <= rate <= 1 for rate in noise_rates):
        raise ValueError(f"Noise rates are shares of the codes swapped, in [0, 1]; got {list(noise_rates)}.")
    rows = [r for r in select(dataset, QA_TASKS, per_task)
            if len(r["question_audio"]) and (kind is None or question_kind(r) == kind)]
    if not rows:
        raise ValueError(f"No spoken question rows (tasks {QA_TASKS}{f', kind {kind!r}' if kind else ''}) in the "
                         f"split; its kinds are {sorted({question_kind(r) for r in dataset})}.")
    voice = assistant_voice(assistant)
    jobs = [(r["answer_text"], voice.job_voice, voice.rate, voice.pitch) for r in rows]
    clips = synthesize_all(list(dict.fromkeys(jobs)), progress=False)
    reference = {job: codec_codes(model, to_float(clip)) for job, clip in clips.items()}  # once per distinct answer
    collator, records = OmniDRCACollator(processor), []
    generator, num_codes = torch.Generator().manual_seed(0), model.config.speech_vocab_size
    for row, job in tqdm(list(zip(rows, jobs)), desc="exposure", disable=not progress):
        answer = ask(model, processor, to_float(row["question_audio"]), "audio")
        own = codec_codes(model, answer.wave) if answer.wave is not None and len(answer.wave) else []
        records.append({
            "id": row["id"], "expected": row["answer_text"], "free_running_answer": answer.text,
            "text_mode": forced_right(model, collator, row, "s2t", None),
            "s2s_prompt_no_speech": forced_right(model, collator, row, "s2t", None, prompt="s2s"),
            "reference_speech": forced_right(model, collator, row, "s2s", reference[job]),
            "own_speech": bool(own) and forced_right(model, collator, row, "s2s", own),
            "free_running": is_correct(row["answer_text"], answer.text),
            "reference_speech_noised": {str(rate): forced_right(model, collator, row, "s2s", swap_random_codes(
                torch.tensor(reference[job]), rate, num_codes, generator).tolist()) for rate in noise_rates}})
    metrics = {c: sum(r[c] for r in records) for c in CONDITIONS}
    lost = sum(r["reference_speech"] and not r["own_speech"] for r in records)
    gained = sum(r["own_speech"] and not r["reference_speech"] for r in records)
    metrics.update(questions=len(records), own_speech_changes={"lost": lost, "gained": gained},
                   reference_speech_noised={str(rate): sum(r["reference_speech_noised"][str(rate)] for r in records)
                                            for rate in noise_rates})
    return {"metrics": metrics, "kind": kind, "assistant": assistant, "examples": records}


def markdown(results: dict) -> str:
    m = results["metrics"]
    lines = ["| answer text forced, speech stream | right (every token the first choice) |", "|---|---:|"]
    names = {"text_mode": "text mode (S2T prompt), none", "s2s_prompt_no_speech": "S2S prompt, none",
             "reference_speech": "S2S prompt, reference speech",
             "own_speech": "S2S prompt, the model's own speech", "free_running": "free-running text-and-speech answer"}
    rows = [(names[c], m[c]) for c in CONDITIONS]
    rows[3:3] = [(f"S2S prompt, reference speech with {float(rate):.0%} of its codes random", right)
                 for rate, right in m.get("reference_speech_noised", {}).items()]
    lines += [f"| {name} | {right} / {m['questions']} ({right / m['questions']:.1%}) |" for name, right in rows]
    changes = m["own_speech_changes"]
    lines.append(f"\nOwn speech against reference speech: {changes['lost']} lost, {changes['gained']} gained.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--kind", help="only questions of this kind (arithmetic, capital_of, ...; default: all)")
    parser.add_argument("--assistant-voice", choices=sorted(ASSISTANT_VOICES), default="festival-slt",
                        help="the voice of the reference speech (the assistant voice the model was trained on)")
    parser.add_argument("--noised-reference", type=float, nargs="*", default=[], metavar="RATE",
                        help="also force the answer beside the reference speech with this share of its codes random")
    args = parser.parse_args(argv)
    return run_on_corpus(args, lambda model, processor, dataset: exposure(
        model, processor, dataset, args.kind, args.per_task, args.assistant_voice, not args.no_progress,
        tuple(args.noised_reference)), markdown)


if __name__ == "__main__":
    main()
