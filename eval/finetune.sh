#!/usr/bin/env bash
# A fine-tune of the shipped inpainter, resumable: `bash eval/finetune.sh NAME` runs configs/NAME.yaml's step-0 validation
# on pool_val (once, logged as version_0), then its fit on the 41 calibration clips of pool_train, resuming from its last
# checkpoint when interrupted. Used for configs/taef2_lit-xs-pool-pixels.yaml (the loss through the frozen decoder) and
# configs/taef2_lit-xs-pool-matched.yaml (crops masked as the encoder masks). Both start from checkpoints/taef2-lit-xs, the export of
# configs/taef2_lit-xs-pool.yaml (eval/train_shipped.sh replays it). Curves: python eval/training_curve.py --chain NAME's
# chain. DAVIS and tokenbench-mini are not read.
source "$(dirname "$0")/env.sh"
NAME=${1:?usage: eval/finetune.sh CONFIG_NAME (configs/CONFIG_NAME.yaml)}
CONFIG=configs/$NAME.yaml
PARTS=val,calibration eval/prepare_pool_data.sh  # resumable: cached clips are skipped
[ -d "eval/results/train/$NAME/version_0" ] || $LATOK train validate --config "$CONFIG"
last=data/train_checkpoints/$NAME/last.ckpt
if [ -f "$last" ]; then $LATOK train fit --config "$CONFIG" --ckpt_path "$last"; else $LATOK train fit --config "$CONFIG"; fi
