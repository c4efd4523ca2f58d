#!/usr/bin/env bash
# The recipe behind checkpoints/taef2-lit-xs, replayed from scratch: the training pool's latents, then
# one run of configs/taef2_lit-xs-pool.yaml (2,400 CPU steps, about 50 minutes on 2 cores). It trains on
# eval/splits/pool_train.txt and exports the weights that validate best on eval/splits/pool_val.txt to
# data/train_out/taef2-lit-xs-pool/; nothing here writes checkpoints/. Shipping is a deliberate copy:
#   cp data/train_out/taef2-lit-xs-pool/{config.json,model.safetensors} checkpoints/taef2-lit-xs/
# The shared DAVIS sequences and tokenbench-mini are never read. The earlier recipe: eval/train_previous.sh.
source "$(dirname "$0")/env.sh"
PATH="$(dirname "$LATOK"):$PATH" eval/prepare_pool_data.sh
$LATOK train fit --config configs/taef2_lit-xs-pool.yaml
