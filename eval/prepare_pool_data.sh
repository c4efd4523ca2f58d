#!/usr/bin/env bash
# Cache taef2 latents of the shared training pool (../shared/data/train, 180 clips) for the inpainter
# the shipped inpainter is trained on from scratch. The split is committed in eval/splits/:
#   pool_train.txt  162 clips, trained on (33 frames from frame 0)
#   pool_val.txt     18 clips (every 10th of the sorted pool: 1 ego, 1 exo, 3 robot, 13 web),
#                   used only to choose checkpoints and thresholds (17 frames from frame 0, with frames)
# The 14 shared DAVIS sequences and tokenbench-mini neither train nor select anything.
source "$(dirname "$0")/env.sh"
POOL=${POOL:-$SHARED/train}
OUT=${OUT:-data/latents/pool}
FRAMES=${FRAMES:-33}
mapfile -t train < <(sed "s#^#$POOL/#" eval/splits/pool_train.txt)
mapfile -t val < <(sed "s#^#$POOL/#" eval/splits/pool_val.txt)
latok cache-latents --inputs "${val[@]}" --out "$OUT/val" --frames 17 --height 240 --with-video --value-step 0
latok cache-latents --inputs "${train[@]}" --out "$OUT/train" --frames "$FRAMES" --height 240
