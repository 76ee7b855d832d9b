#!/usr/bin/env bash
# Reproduce checkpoints/omnidrca-smollm2-lora-capitals: a LoRA adapter teaching the SmolLM2 demo 24 capitals
# (corpora ~2 min, training 200 steps ~10 min on a 2-core CPU, four evaluations). Steps whose output exists
# are skipped; training resumes from its last complete checkpoint.
#   bash training/make_smollm2_lora.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
common=(--max-operand 20 --assistant-voice festival-slt --user-voices all --tasks s2t s2s --workers 2)
[ -f data/lora-capitals/corpus_info.json ] || python -m processing.build_corpus --output data/lora-capitals \
  --train 1200 --validation 20 --test 10 --seed 1 --augment-fraction 0.5 "${common[@]}" \
  --facts processing/data/lora_capitals.tsv processing/data/demo_facts.tsv
# The measuring corpus holds only the new capitals (and arithmetic), in held-out voices and phrasings.
[ -f data/lora-capitals-eval/corpus_info.json ] || python -m processing.build_corpus --output data/lora-capitals-eval \
  --train 0 --validation 0 --test 120 --seed 2 "${common[@]}" --facts processing/data/lora_capitals.tsv
[ -f runs/smollm2-lora-capitals/train_results.json ] || python -m training.train --config training/configs/smollm2_lora_capitals.yaml
evaluate() { [ -f "$1" ] || python -m training.evaluate --model checkpoints/omnidrca-smollm2 --no-codec-floor --no-progress --output "$@"; }
evaluate runs/eval/smollm2-capitals-before.json --corpus data/lora-capitals-eval --split test
evaluate runs/eval/smollm2-capitals-after.json --corpus data/lora-capitals-eval --split test --adapter runs/smollm2-lora-capitals
evaluate runs/eval/smollm2-split-before.json --corpus data/corpus-smollm2 --split test --per-task 10
evaluate runs/eval/smollm2-split-after.json --corpus data/corpus-smollm2 --split test --per-task 10 --adapter runs/smollm2-lora-capitals
python -m training.package_adapter --preset capitals --run runs/smollm2-lora-capitals \
  --output checkpoints/omnidrca-smollm2-lora-capitals \
  --before runs/eval/smollm2-capitals-before.json --after runs/eval/smollm2-capitals-after.json \
  --base-before runs/eval/smollm2-split-before.json --base-after runs/eval/smollm2-split-after.json
