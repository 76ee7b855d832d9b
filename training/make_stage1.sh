#!/usr/bin/env bash
# The steps both demo models share, up to stage 1: corpus, Whisper tiny.en conversion, codec, composition,
# stage 1 alignment (runs/stage1). Each step is skipped when its output exists; training resumes.
# Called by make_demo.sh and make_demo_diffusion.sh.
#   bash training/make_stage1.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
[ -f data/corpus/corpus_info.json ] || \
  python -m processing.build_corpus --output data/corpus --train 12000 --validation 200 --test 200 --seed 0 --workers 2
[ -f runs/whisper-tiny.en/model.safetensors ] || python -m modeling_omnidrca.convert_ct2_whisper --output runs/whisper-tiny.en
[ -f runs/codec/reconstruction.json ] || python -m training.train_codec --config training/configs/codec.yaml
[ -f runs/omnidrca-init/model.safetensors ] || python -m training.init_model --corpus data/corpus \
  --whisper runs/whisper-tiny.en --codec runs/codec --output runs/omnidrca-init
[ -f runs/stage1/train_results.json ] || python -m training.train --config training/configs/stage1_alignment.yaml
