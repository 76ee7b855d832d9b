#!/usr/bin/env bash
# Reproduce checkpoints/omnidrca-demo from nothing but this repository, espeak-ng and the PyPI packages
# (about 1.5 h on a 2-core CPU). Each step is skipped when its output exists, and the training steps resume
# from their last complete checkpoint, so re-running after an interruption continues where it stopped.
#   bash training/make_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
bash training/make_stage1.sh  # corpus, Whisper, codec, composition, stage 1
[ -f runs/stage2/train_results.json ] || python -m training.train --config training/configs/stage2_sft.yaml
# Package, evaluate the packaged checkpoint (float16 storage, as users get it), and put its table in the card.
python -m training.package_demo --run runs/stage2 --output checkpoints/omnidrca-demo --corpus-info data/corpus/corpus_info.json
python -m training.evaluate --model checkpoints/omnidrca-demo --corpus data/corpus --split test --output runs/eval/demo.json --no-progress
python -m training.package_demo --run runs/stage2 --output checkpoints/omnidrca-demo --eval runs/eval/demo.json \
  --corpus-info data/corpus/corpus_info.json
