"""Package a trained run as the embedded demo checkpoint (Hub-style folder, at most 60 MB).

    python -m training.package_demo --run runs/stage2 --output checkpoints/omnidrca-demo \
        --eval runs/eval/demo.json --corpus-info data/corpus/corpus_info.json

Weights are stored in float16 (half the bytes; every weight of the demo is well inside float16's range)
while `config.dtype` stays float32, so `from_pretrained` loads and computes in float32 on a CPU. The
folder gets the code (`auto_map`, trust_remote_code), processor, tokenizer and codec, a model card with
the evaluation table, and a few question wavs in held-out voices under `examples/`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from modeling_omnidrca import OmniDRCAForConditionalGeneration, OmniDRCAProcessor
from processing.corpus import HELD_OUT_VOICES

from .examples import write_examples
from .scoring import markdown_table

MAX_MB = 60
HEADS = {  # speech_head_type -> how the card describes it, and the script that rebuilds the checkpoint
    "srh": dict(head_sentence="backbone, ungrouped by the Speech Refined Head).", head_part="the SRH",
                script="training/make_demo.sh"),
    "diffusion": dict(
        head_sentence="backbone; each 5 Hz state is turned into the next group's 5 continuous codec latents by a\n"
                      "small diffusion transformer, flow matching, instead of the SRH's discrete codes).",
        head_part="the diffusion head (a {head} DiT + stop head)", script="training/make_demo_diffusion.sh"),
}
EXAMPLES = {  # file stem -> (question, voice, rate, pitch): held-out voices, phrasings the model can answer
    "seven_plus_twelve": ("what is seven plus twelve", HELD_OUT_VOICES[2], 155, 45),
    "capital_of_france": ("what is the capital of france", HELD_OUT_VOICES[0], 155, 50),
    "opposite_of_hot": ("what is the opposite of hot", HELD_OUT_VOICES[1], 155, 50),
}

CARD = """---
library_name: transformers
pipeline_tag: any-to-any
license: apache-2.0
language: [en]
tags: [omnidrca, speech-to-speech, spoken-language-model, demo]
---

# {name}

A small OmniDRCA model trained on a 2-core CPU: it hears a spoken question and answers in text and speech
together, in one autoregressive pass (dual-resolution speech: 25 Hz codec codes grouped 5 -> 5 Hz into the
{head_sentence} {params} parameters: Whisper tiny.en encoder (pretrained,
frozen), a {backbone} text backbone trained from scratch, {head_part} and a 1000-code 25 Hz speech codec.

## Intended use

A demonstration of the architecture that runs offline on a laptop CPU. It knows a closed domain only:
spoken arithmetic on small numbers (`what is seven plus twelve`), the facts in
`processing/data/demo_facts.tsv` (capitals, colours, animal sounds, opposites), transcription and
repeat-after-me. It is not a general assistant.

```python
from transformers import AutoModel, AutoProcessor
processor = AutoProcessor.from_pretrained("{folder}", trust_remote_code=True)
model = AutoModel.from_pretrained("{folder}", trust_remote_code=True)
conversation = [{{"role": "user", "content": [{{"type": "audio", "audio": "{folder}/examples/seven_plus_twelve.wav"}}]}}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
out = model.generate(**inputs, generation_mode="audio", max_new_tokens=60)
text = processor.post_process_multimodal_output(out, generation_mode="text")[0]
wave = processor.post_process_multimodal_output(out, generation_mode="audio")[0]  # 16 kHz float32
```

## Training data and recipe

Synthetic English speech from espeak-ng (`processing.build_corpus`): {corpus}. Validation and test use
voices, speaking rates, pitches and phrasings never seen in training. The assistant's answers are spoken in
one fixed voice (espeak-ng en-us, 150 words per minute). Reproduce everything with `bash {script}`
(corpus, Whisper conversion, codec, stage 1 alignment, stage 2 multi-task SFT, packaging, evaluation).

## Evaluation (test split: held-out voices, rates and phrasings)

The judge of speech is OpenAI Whisper tiny.en through faster-whisper (`python -m training.evaluate`).
Targets: S2T accuracy >= 90 %, S2S accuracy (judged on speech) >= 80 %, ASR-WER of generated speech
<= 15 %, transcription WER <= 10 %.

{table}

`original_*_asr_wer` is the judge on the reference audio itself: the floor of any speech metric here.
Stage 2 training curves: `training_curves.png`.

## Limitations

Synthetic voices only: it has never heard a human, noise or a real microphone (the frozen Whisper encoder
helps, but expect errors). Closed domain; arithmetic outside the trained operand ranges fails. The speech
is the espeak voice through a 250 bit/s codec. English only.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained OmniDRCA folder (training.train output)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--eval", help="evaluation JSON of this model (training.evaluate --output)")
    parser.add_argument("--corpus-info", help="corpus_info.json of the training corpus")
    args = parser.parse_args(argv)

    model = OmniDRCAForConditionalGeneration.from_pretrained(args.run, dtype=torch.float32)
    processor = OmniDRCAProcessor.from_pretrained(args.run)
    out = Path(args.output)
    model.half().save_pretrained(out)
    config_file = out / "config.json"
    config = json.loads(config_file.read_text())
    config["dtype"] = "float32"  # stored in float16, computed in float32
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    processor.save_pretrained(out)

    write_examples(out / "examples", EXAMPLES)

    curves = Path(args.run) / "training_curves.png"
    if curves.exists():
        (out / "training_curves.png").write_bytes(curves.read_bytes())
    table = "(not evaluated yet)"
    if args.eval:
        table = markdown_table(json.loads(Path(args.eval).read_text()))
    corpus = "see corpus_info.json"
    if args.corpus_info:
        info = json.loads(Path(args.corpus_info).read_text())
        corpus = ", ".join(f"{split} {v['rows']} rows ({v['audio_hours']:.1f} h of audio)" for split, v in info["splits"].items())
    params = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.model.language_model.parameters())
    head = {k: v.format(head=f"{sum(p.numel() for p in model.speech_head.parameters()) / 1e6:.1f} M")
            for k, v in HEADS[model.config.speech_head_type].items()}
    (out / "README.md").write_text(CARD.format(params=f"{params / 1e6:.1f} M", backbone=f"{backbone / 1e6:.1f} M",
                                               folder=out.as_posix(), corpus=corpus, table=table, name=out.name,
                                               **head))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB)")
    if size > MAX_MB:
        raise SystemExit(f"{out} is {size:.1f} MiB, over the {MAX_MB} MB limit for checkpoints in this repository.")


if __name__ == "__main__":
    main()
