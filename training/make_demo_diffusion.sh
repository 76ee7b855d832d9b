#!/usr/bin/env bash
# Build checkpoints/omnidrca-demo-diffusion: the discrete demo's recipe with the diffusion speech head.
# Runs make_demo.sh's steps up to stage 1 (corpus, Whisper, codec, init, stage 1 alignment) when their outputs
# are missing, then replaces the stage-1 SRH by a fresh diffusion head (latent statistics from the training
# answers), runs the stage 2 recipe unchanged (same tasks, 3000 steps x 16 rows, lr 1e-3), packages and
# evaluates with the same harness. Each step is skipped when its output exists; training resumes.
#   bash training/make_demo_diffusion.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash training/make_stage1.sh  # the discrete demo's shared steps, on their own thread setting
# One thread: the diffusion head's many small DiT calls lose more to thread hand-offs than they gain, and the
# demo machine is shared (two threads under contention were 4x slower here).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
[ -f runs/diffusion-init/model.safetensors ] || python -m training.init_model --from-model runs/stage1 \
  --speech-head-type diffusion --corpus data/corpus --output runs/diffusion-init
[ -f runs/diffusion-stage2/train_results.json ] || python -m training.train --config training/configs/stage2_sft_diffusion.yaml
python -m training.package_demo --run runs/diffusion-stage2 --output checkpoints/omnidrca-demo-diffusion \
  --corpus-info data/corpus/corpus_info.json
python -m training.evaluate --model checkpoints/omnidrca-demo-diffusion --corpus data/corpus --split test \
  --output runs/eval/diffusion.json --no-progress
python -m training.package_demo --run runs/diffusion-stage2 --output checkpoints/omnidrca-demo-diffusion \
  --eval runs/eval/diffusion.json --corpus-info data/corpus/corpus_info.json
