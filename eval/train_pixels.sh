#!/usr/bin/env bash
# The loss through the frozen decoder (configs/taef2_lit-xs-pool-pixels.yaml): the shipped export's step-0 validation on
# pool_val (once), then the fine-tune on the 41 calibration clips of pool_train, resuming from its last checkpoint when
# interrupted. It starts from checkpoints/taef2-lit-xs, the export of the chain's first cycle, configs/taef2_lit-xs-pool.yaml
# (eval/train_shipped.sh replays it). Curve: python eval/training_curve.py --chain pixels. DAVIS and tokenbench-mini are not read.
source "$(dirname "$0")/env.sh"
CONFIG=configs/taef2_lit-xs-pool-pixels.yaml
PARTS=val,calibration eval/prepare_pool_data.sh  # resumable: cached clips are skipped
[ -d eval/results/train/taef2_lit-xs-pool-pixels/version_0 ] || $LATOK train validate --config "$CONFIG"
last=data/train_checkpoints/taef2_lit-xs-pool-pixels/last.ckpt
if [ -f "$last" ]; then $LATOK train fit --config "$CONFIG" --ckpt_path "$last"; else $LATOK train fit --config "$CONFIG"; fi
