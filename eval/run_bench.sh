#!/usr/bin/env bash
# Allocator benchmark: latok vs ElasticTok-style search, InfoTok-style router, RLT and fixed rate,
# same frozen taef2, same fill, same clips (14 shared DAVIS sequences, 240p, 17 frames from frame 0).
#   eval/results/bench_davis_<device>/          default rates (each allocator's own threshold / rate)
#   eval/results/bench_davis_<device>_matched/  --matched-usage: infotok, rlt, fixed get latok's usage
# Each run is resumable (bench_progress.json): rerunning the script continues where it stopped.
# MATCHED_ONLY=1 runs only the matched run.
source "$(dirname "$0")/env.sh"
DEVICE=${DEVICE:-cpu}
FILL=${FILL:-hold}
ARGS=(--dataset davis --root "$SHARED/davis" --fill "$FILL" --device "$DEVICE" ${EXTRA:-})
[ -n "${MATCHED_ONLY:-}" ] || $LATOK bench "${ARGS[@]}" --out "eval/results/bench_davis_${DEVICE}"
# ElasticTok sets its own rate (its MSE threshold), so the matched run leaves it out; LPIPS is
# in the default-rate table (it costs more CPU than the pipelines themselves here).
$LATOK bench "${ARGS[@]}" --allocators latok,infotok,rlt,fixed --matched-usage --no-lpips --out "eval/results/bench_davis_${DEVICE}_matched"
