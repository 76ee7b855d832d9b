#!/usr/bin/env bash
# Reproduce checkpoints/omnidrca-demo-lora-numbers: a LoRA adapter teaching the demo model doubles and squares
# (corpus ~30 s, training 500 steps ~5 min alone on a 2-core CPU, four evaluations ~15 min). Steps whose
# output exists are skipped; training resumes from its last complete checkpoint.
#   bash training/make_lora_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
[ -f data/lora-numbers/corpus_info.json ] || python -m processing.build_corpus --output data/lora-numbers \
  --train 3000 --validation 100 --test 300 --seed 1 --tasks s2t s2s \
  --facts processing/data/lora_numbers.tsv processing/data/demo_facts.tsv --workers 2
[ -f runs/lora-numbers/train_results.json ] || python -m training.train --config training/configs/lora.yaml
# Before/after on the adapter's own test split, and on a sample of the demo's test split (forgetting).
evaluate() { [ -f "$1" ] || python -m training.evaluate --model checkpoints/omnidrca-demo --no-codec-floor --no-progress --output "$@"; }
evaluate runs/eval/lora-numbers-before.json --corpus data/lora-numbers --split test
evaluate runs/eval/lora-numbers-after.json --corpus data/lora-numbers --split test --adapter runs/lora-numbers
evaluate runs/eval/lora-demo-split-before.json --corpus data/corpus --split test --per-task 16
evaluate runs/eval/lora-demo-split-after.json --corpus data/corpus --split test --per-task 16 --adapter runs/lora-numbers
python -m training.package_adapter --run runs/lora-numbers --output checkpoints/omnidrca-demo-lora-numbers \
  --before runs/eval/lora-numbers-before.json --after runs/eval/lora-numbers-after.json \
  --base-before runs/eval/lora-demo-split-before.json --base-after runs/eval/lora-demo-split-after.json
