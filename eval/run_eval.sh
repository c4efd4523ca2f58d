#!/usr/bin/env bash
# The committed rate-distortion reports: taef2, 240p, 17 frames from frame 0,
# tau in {0, default (0.15)} plus --target-usage 0.5, fills zero / hold / lit, LPIPS on.
#   DAVIS (14 shared sequences) -> eval/results/eval_davis/
#   tokenbench-mini (12 clips)  -> eval/results/eval_tokenbench/
# Resumable: rerunning skips finished clips. Note: the shipped lit checkpoint was trained on
# frames 0-63 of 11 of the 14 DAVIS sequences (not soapbox, libby, goat) and on tokenbench-mini
# frames 33+, so tokenbench-mini (frames 0-16) and the three DAVIS validation sequences are unseen.
#
# Timing run (one tau, one fill, all 14 DAVIS sequences, from scratch): TIMING=1 eval/run_eval.sh
# Lit with the pixel guard on tokenbench-mini (default tau and usage 0.5): PIXEL=1 eval/run_eval.sh
source "$(dirname "$0")/env.sh"
COMMON=(--taus 0,default --target-usage 0.5 --fills zero,hold,lit --frames 17 --height 240)
if [[ "${TIMING:-0}" == 1 ]]; then
  rm -rf /tmp/latok_eval_timing
  $LATOK eval --dataset davis --root "$SHARED/davis" --taus default --fills hold --out /tmp/latok_eval_timing
  mkdir -p eval/results/eval_davis_timing
  cp /tmp/latok_eval_timing/results.json /tmp/latok_eval_timing/report.md eval/results/eval_davis_timing/
  exit 0
fi
if [[ "${PIXEL:-0}" == 1 ]]; then  # lit with the pixel guard (latok encode --pixel-guard), against hold
  $LATOK eval --dataset tokenbench --root "$SHARED/tokenbench-mini" --taus default --target-usage 0.5 --fills hold,lit \
    --pixel-guard --frames 17 --height 240 --out eval/results/eval_tokenbench_pixel_guard
  exit 0
fi
$LATOK eval --dataset davis --root "$SHARED/davis" "${COMMON[@]}" --out eval/results/eval_davis
$LATOK eval --dataset tokenbench --root "$SHARED/tokenbench-mini" "${COMMON[@]}" --out eval/results/eval_tokenbench
