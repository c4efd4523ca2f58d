#!/usr/bin/env bash
# The rate-distortion grids of eval/run_eval.sh with the motion-compensated rule (--motion global),
# at the default tau and at usage 0.5, fills hold / interp / lit (lit and its guard follow the motion; the shipped
# inpainter was trained without it). No LPIPS (CPU time). Compare with eval/results/eval_{davis,tokenbench}/.
source "$(dirname "$0")/env.sh"
COMMON=(--tau default --target-usage 0.5 --fills hold,interp,lit --motion global --no-lpips --frames 17 --height 240)
$LATOK eval --dataset tokenbench --root "$SHARED/tokenbench-mini" "${COMMON[@]}" --out eval/results/eval_tokenbench_motion
$LATOK eval --dataset davis --root "$SHARED/davis" "${COMMON[@]}" --out eval/results/eval_davis_motion
