#!/usr/bin/env bash
# The shipped defaults, end to end after training (configs/taef2_lit-xs-pool.yaml, shipped as checkpoints/taef2-lit-xs):
#   STAGE=val     choose: latok eval on the pool validation split (eval/splits/pool_val.txt), fill lit (the default
#                 decode): usage curves for each of MOTIONS (default none,global,block); eval/calibrate_pool.py picks
#                 the motion; then that motion's tau grid, and eval/calibrate_pool.py picks its default tau.
#                 DAVIS and tokenbench-mini are not read.
#   STAGE=report  report: the 14 DAVIS sequences and tokenbench-mini with MOTION (default block) at tau 0, the default
#                 rate and the usages, compared with the previous defaults' runs (eval/results/rewarped_*); DAVIS's
#                 training-free fills at usage 0.5.
# INPAINTER defaults to the shipped checkpoint; no LPIPS (CPU time). What was run: STAGE=val MOTIONS=none,block,
# then STAGE=report MOTION=block (global lost to block on the same split: eval/results/motion_models_val.md).
source "$(dirname "$0")/env.sh"
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
  # the chosen motion's tau grid (its usage runs are already there; the folder resumes)
  $LATOK eval --dataset folder --root "$VAL" --taus 0,0.1,0.15,0.2,0.3,0.4,0.5 --motion "$chosen" "${COMMON[@]}" --out "eval/results/val_pool_$chosen"
  .venv/bin/python eval/calibrate_pool.py --motions "$MOTIONS"
else
  # the default decode at the default rate (the quality target of latok.vae.taesd.TAEF2) and the usage curves,
  # against the previous defaults' runs (references re-warped every frame, tau 0.15: eval/results/rewarped_{set}_block);
  # and on DAVIS the training-free motion-compensated fills at usage 0.5, which the inpainter has to beat
  MOTION=${MOTION:-block}
  for set in tokenbench davis; do
    root=$SHARED/tokenbench-mini; [ "$set" = davis ] && root=$SHARED/davis
    $LATOK eval --dataset "$set" --root "$root" --taus 0,default --motion "$MOTION" "${COMMON[@]}" \
      --compare-to "eval/results/rewarped_${set}_${MOTION}" --out "eval/results/shipped_${set}_${MOTION}"
  done
  $LATOK eval --dataset davis --root "$SHARED/davis" --taus= --motion "$MOTION" --fills hold,interp --no-lpips \
    --frames 17 --height 240 --target-usage 0.5 --out "eval/results/training_free_davis_${MOTION}"
fi
