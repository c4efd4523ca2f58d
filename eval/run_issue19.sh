#!/usr/bin/env bash
# Issue 19, end to end after training (configs/taef2_lit-xs-pool.yaml):
#   STAGE=val     choose: latok eval on the pool validation split (eval/splits/pool_val.txt), fill lit (the default
#                 decode): usage curves for each of MOTIONS (default none,global,block), eval/calibrate_pool.py picks
#                 the motion, then tau grids for none and that motion, and eval/calibrate_pool.py picks each one's
#                 default tau. DAVIS and tokenbench-mini are not read.
#   STAGE=report  report: the 14 DAVIS sequences and tokenbench-mini, motion none and the chosen motion, at tau 0,
#                 the default tau and usages 0.3-0.9, with the Bjøntegaard-style comparison of the two curves.
# INPAINTER defaults to the shipped checkpoint; no LPIPS (CPU time).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
export LATOK_WEIGHTS_DIR=${LATOK_WEIGHTS_DIR:-../shared/weights}
LATOK=${LATOK:-.venv/bin/latok}
INPAINTER=${INPAINTER:-checkpoints/taef2-lit-xs}
COMMON=(--fills lit --inpainter "$INPAINTER" --no-lpips --frames 17 --height 240 --target-usage 0.3,0.5,0.7,0.9)
if [ "${STAGE:-val}" = val ]; then
  VAL=data/pool_val_clips
  mkdir -p "$VAL"
  while read -r clip; do ln -sf "$(realpath "$SHARED/train/$clip")" "$VAL/$(basename "$clip")"; done < eval/splits/pool_val.txt
  MOTIONS=${MOTIONS:-none,global,block}
  for motion in ${MOTIONS//,/ }; do  # the usage curves of every motion
    extra=()
    [ "$motion" = none ] || extra=(--compare-to eval/results/val_pool_none)
    $LATOK eval --dataset folder --root "$VAL" --taus= --motion "$motion" "${COMMON[@]}" "${extra[@]}" --out "eval/results/val_pool_$motion"
  done
  chosen=$(.venv/bin/python eval/calibrate_pool.py --motions "$MOTIONS" --motion-only)
  # the tau grids of no motion and of the chosen motion (their usage runs are already there; the folders resume)
  for motion in $(printf '%s\n' none "$chosen" | sort -u); do
    $LATOK eval --dataset folder --root "$VAL" --taus 0,0.2,0.3,0.4,0.5 --motion "$motion" "${COMMON[@]}" --out "eval/results/val_pool_$motion"
  done
  .venv/bin/python eval/calibrate_pool.py --motions "$MOTIONS"
else
  MOTION=${MOTION:?the motion eval/calibrate_pool.py chose}
  for set in tokenbench davis; do
    root=$SHARED/tokenbench-mini; [ "$set" = davis ] && root=$SHARED/davis
    $LATOK eval --dataset "$set" --root "$root" --taus 0,default --motion none "${COMMON[@]}" --out "eval/results/report19_${set}_none"
    $LATOK eval --dataset "$set" --root "$root" --taus 0,default --motion "$MOTION" "${COMMON[@]}" \
      --compare-to "eval/results/report19_${set}_none" --out "eval/results/report19_${set}_${MOTION}"
  done
fi
