"""Package a LoRA run as a PEFT adapter folder next to the demo checkpoint, with a card and example wavs.

    python -m training.package_adapter --run runs/lora-numbers --output checkpoints/omnidrca-demo-lora-numbers \
        --before runs/eval/lora-numbers-before.json --after runs/eval/lora-numbers-after.json \
        --base-before runs/eval/lora-demo-split-before.json --base-after runs/eval/lora-demo-split-after.json

Only the adapter goes in (`adapter_config.json`, `adapter_model.safetensors`): the base model, its code and
processor stay in `checkpoints/omnidrca-demo/`, which the adapter config names as its base. Load it with
`PeftModel.from_pretrained(AutoModel.from_pretrained(base, trust_remote_code=True), folder)`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from processing.corpus import HELD_OUT_VOICES

from .examples import write_examples
from .scoring import markdown_table

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
EXAMPLES = {  # held-out voices and phrasings of the two new relations
    "double_seven": ("can you double seven", HELD_OUT_VOICES[2], 155, 45),
    "six_squared": ("what do you get if you square six", HELD_OUT_VOICES[0], 155, 50),
}
CAPITALS_EXAMPLES = {  # held-out voices and phrasings, capitals from processing/data/lora_capitals.tsv
    "capital_of_romania": ("what is the capital of romania", HELD_OUT_VOICES[2], 155, 45),
    "capital_of_croatia": ("what is the capital of croatia", HELD_OUT_VOICES[0], 155, 50),
}

CARD = """---
library_name: peft
base_model: {base}
pipeline_tag: any-to-any
license: apache-2.0
language: [en]
tags: [omnidrca, lora, peft, speech-to-speech, demo]
---

# omnidrca-demo-lora-numbers

A LoRA adapter (PEFT, rank {r}, {params} trainable parameters, {size:.1f} MiB) that teaches the demo model
`{base}` two spoken questions it was never trained on: **doubles** (`what is double seven` -> `seven plus
seven is fourteen`, 0 to 12) and **squares** (`what is six squared` -> `six times six is thirty six`, 0 to 10).
The answers restate the sum or product, so every word of them is one the frozen speech head already says;
only the backbone's attention and MLP projections are adapted.

```python
from peft import PeftModel
from transformers import AutoModel, AutoProcessor
base = AutoModel.from_pretrained("{base}", trust_remote_code=True)
model = PeftModel.from_pretrained(base, "{folder}").merge_and_unload()
processor = AutoProcessor.from_pretrained("{base}", trust_remote_code=True)
conversation = [{{"role": "user", "content": [{{"type": "audio", "audio": "{folder}/examples/double_seven.wav"}}]}}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
out = model.generate(**inputs, generation_mode="audio", max_new_tokens=60)
print(processor.post_process_multimodal_output(out, generation_mode="text")[0])
```

## Training

{train}

```bash
python -m processing.build_corpus --output data/lora-numbers --train 3000 --validation 100 --test 300 --seed 1 \\
  --tasks s2t s2s --facts processing/data/lora_numbers.tsv processing/data/demo_facts.tsv --workers 2
python -m training.train --config training/configs/lora.yaml
```

(or `bash training/make_lora_demo.sh`, which also evaluates and packages). Half of the questions are the
demo's arithmetic, half are facts spread evenly over the two new relations and the demo's four: the old
ones are replay, so that "seven plus seven" and "double seven" stay apart and the facts are not forgotten
(trained on the new relations and arithmetic only, the demo's facts fell from 13/14 to 6/14 correct).
The test split uses held-out voices, rates and phrasings.

## Before / after (`python -m training.evaluate`, Whisper tiny.en judge)

On the adapter's test split (the new relations, arithmetic and the demo's facts), before:

{before}

after:

{after}

{phrasings}

{forgetting}

## Limitations

Those of the base model. The adapter knows these two relations on the base model's operand ranges only,
and it generalises to a new phrasing only when the phrasing is close to a trained one: see the
per-phrasing table (`what do you get if you ...` is the farthest from the four trained phrasings).
"""


CAPITALS_CARD = """---
library_name: peft
base_model: {base}
pipeline_tag: any-to-any
license: apache-2.0
language: [en]
tags: [omnidrca, lora, peft, speech-to-speech, demo]
---

# {name}

A LoRA adapter (PEFT, rank {r}, {params} trainable parameters, {size:.1f} MiB) on the SmolLM2 demo model
`{base}`: the capitals of 24 countries it was never trained on (`processing/data/lora_capitals.tsv`,
`what is the capital of romania` -> `the capital of romania is bucharest`). SmolLM2-135M-Instruct already
knows some of them; the "before" table measures which the base model answers from its own knowledge.
Only the backbone's attention and MLP projections adapt; the speech side is the base model's.

```python
from peft import PeftModel
from transformers import AutoModel, AutoProcessor
base = AutoModel.from_pretrained("{base}", trust_remote_code=True)
model = PeftModel.from_pretrained(base, "{folder}").merge_and_unload()
processor = AutoProcessor.from_pretrained("{base}", trust_remote_code=True)
conversation = [{{"role": "user", "content": [{{"type": "audio", "audio": "{folder}/examples/capital_of_romania.wav"}}]}}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
out = model.generate(**inputs, generation_mode="audio", max_new_tokens=80)
print(processor.post_process_multimodal_output(out, generation_mode="text")[0])
```

## Training

{train} Recipe: `bash training/make_smollm2_lora.sh` (corpus with the demo's facts as replay,
`training/configs/smollm2_lora_capitals.yaml`, four evaluations, packaging).

## Before / after (`python -m training.evaluate`, Whisper base judge)

On a test corpus of the new capitals and arithmetic (held-out voices and phrasings), before:

{before}

after:

{after}

{forgetting}

## Limitations

Those of the base model (see its card). The adapter knows these 24 capitals; other facts come from SmolLM2.
"""

PRESETS = {"numbers": (CARD, EXAMPLES), "capitals": (CAPITALS_CARD, CAPITALS_EXAMPLES)}


def phrasing_table(results: dict, kinds: tuple[str, ...] = ("double_of", "square_of")) -> str:
    """S2T accuracy per question phrasing (template) of the new relations: all test phrasings are held out, and
    how far each is from the trained ones decides most of the score."""
    from processing.corpus import ALL_TEMPLATES

    from .scoring import is_correct

    scores: dict[str, list[int]] = {}
    for e in results["examples"]:
        template = e.get("template", "")
        if template.split("/")[0] in kinds and "text_answer" in e:
            ok_n = scores.setdefault(template, [0, 0])
            ok_n[0] += int(is_correct(e["expected"], e["text_answer"]))
            ok_n[1] += 1
    if not scores:
        return ""
    lines = ["By held-out phrasing of the new relations (S2T, after):", "",
             "| phrasing | correct |", "|---|---:|"]
    for template, (ok, n) in sorted(scores.items()):
        lines.append(f"| `{ALL_TEMPLATES[template].text}` | {ok}/{n} ({100 * ok / n:.0f} %) |")
    return "\n".join(lines)


def _table(path: str | None) -> str:
    return markdown_table(json.loads(Path(path).read_text())) if path else "(not evaluated)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a LoRA output folder of training.train (use_peft)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--before", help="evaluation JSON of the base model on the adapter's test split")
    parser.add_argument("--after", help="evaluation JSON of base + adapter on the same split")
    parser.add_argument("--base-before", help="evaluation JSON of the base model on its own test split")
    parser.add_argument("--base-after", help="evaluation JSON of base + adapter on the base model's test split")
    parser.add_argument("--train-note", help="a sentence about the training run for the card (e.g. the machine's load)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="numbers",
                        help="which adapter's card and example questions (numbers: the demo's; capitals: SmolLM2's)")
    args = parser.parse_args(argv)

    run, out = Path(args.run), Path(args.output)
    missing = [f for f in ADAPTER_FILES if not (run / f).exists()]
    if missing:
        raise ValueError(f"{run} has no {missing}: expected the output folder of a LoRA run "
                         "(python -m training.train --config training/configs/lora.yaml).")
    out.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copyfile(run / name, out / name)
    config = json.loads((run / "adapter_config.json").read_text())
    if config.get("modules_to_save"):
        print(f"note: the adapter also carries full copies of {config['modules_to_save']}")

    card, examples = PRESETS[args.preset]
    write_examples(out / "examples", examples)

    train = "(training log not found)"
    results = run / "train_results.json"
    if results.exists():
        r = json.loads(results.read_text())
        minutes = r.get("train_runtime", 0) / 60
        train = (f"{args_steps(run)} steps, {minutes:.1f} min wall-clock on this project's 2-core CPU, final train loss "
                 f"{r.get('train_loss', float('nan')):.3f}.")
        if args.train_note:
            train += " " + args.train_note
    forgetting = ""
    if args.base_before and args.base_after:
        forgetting = ("On a sample of the base model's own test split (what the adapter must not break), before:\n\n"
                      f"{_table(args.base_before)}\n\nafter:\n\n{_table(args.base_after)}")
    from safetensors import safe_open

    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    (out / "README.md").write_text(card.format(
        name=out.name, base=config["base_model_name_or_path"], folder=out.as_posix(), r=config["r"], params=f"{params / 1e6:.2f} M",
        size=size, train=train, before=_table(args.before), after=_table(args.after), forgetting=forgetting,
        phrasings=phrasing_table(json.loads(Path(args.after).read_text())) if args.after and args.preset == "numbers" else ""))
    print(f"wrote {out} ({size:.1f} MiB)")


def args_steps(run: Path) -> str:
    """The run's optimizer steps, from its newest trainer state."""
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda f: int(f.parent.name.split("-")[1]))
    return str(json.loads(states[-1].read_text())["global_step"]) if states else "?"


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
