#!/usr/bin/env bash
# The pooled-loss fine-tune (not shipped; the experiment behind eval/README.md, "How much does the inpainter
# add"): the shipped recipe's cycle (configs/taef2_lit-xs-pool.yaml, eval/train_shipped.sh), its export
# copied to data/train_out/taef2-lit-xs-pool, then configs/taef2_lit-xs-pool-pooled.yaml: its step-0 validation,
# and 600 steps on the 41 calibration clips of pool_train with the pooled loss ratio, chosen on pool_val.
# The shipped export equals the first cycle's, so `cp -r checkpoints/taef2-lit-xs data/train_out/taef2-lit-xs-pool`
# replaces the first cycle when only the fine-tune is replayed (what was run).
source "$(dirname "$0")/env.sh"
[ -d data/train_out/taef2-lit-xs-pool ] || { mkdir -p data/train_out && cp -r checkpoints/taef2-lit-xs data/train_out/taef2-lit-xs-pool; }
PARTS=val,calibration eval/prepare_pool_data.sh
$LATOK train validate --config configs/taef2_lit-xs-pool-pooled.yaml
$LATOK train fit --config configs/taef2_lit-xs-pool-pooled.yaml
