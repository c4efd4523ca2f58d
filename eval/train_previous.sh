#!/usr/bin/env bash
# The recipe behind the inpainter latok shipped before the pool-trained one (trained on 11 DAVIS sequences and tokenbench-mini
# frames 33-80, so it was replaced by eval/train_shipped.sh), replayed from scratch: seven stages, each a config,
# each starting from the previous stage's export. Exports go to data/train_out/<stage>/ and logs to
# eval/results/train/<stage>/; nothing here writes checkpoints/. Shipping is a deliberate copy after
# eval/inpainter_eval.py --checkpoint data/train_out/taef2-lit-xs-decoder-5 says it is better:
#   cp data/train_out/taef2-lit-xs-decoder-5/{config.json,model.safetensors} checkpoints/taef2-lit-xs/
# Data first: eval/prepare_training_data.sh. About 13,000 CPU steps in all (2 cores: about a day).
# START=N resumes at stage N (its predecessor's export must exist).
source "$(dirname "$0")/env.sh"
STAGES=(
  configs/taef2_lit-xs.yaml
  configs/history/taef2_lit-xs-continued.yaml
  configs/history/taef2_lit-xs-decoder.yaml
  configs/history/taef2_lit-xs-decoder-2.yaml
  configs/history/taef2_lit-xs-decoder-3.yaml
  configs/history/taef2_lit-xs-decoder-4.yaml
  configs/history/taef2_lit-xs-decoder-5.yaml
)
for index in "${!STAGES[@]}"; do
  stage=$((index + 1))
  [ "$stage" -ge "${START:-1}" ] || continue
  echo "== stage $stage/${#STAGES[@]}: ${STAGES[$index]}"
  $LATOK train fit --config "${STAGES[$index]}"
done
