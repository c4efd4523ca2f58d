#!/usr/bin/env bash
# Cache taef2 latents of the shared training pool (../shared/data/train, 180 clips) for the inpainter
# the shipped inpainter is trained on from scratch. The split is committed in eval/splits/:
#   pool_train.txt  162 clips, trained on (33 frames from frame 0)
#   pool_val.txt     18 clips (every 10th of the sorted pool: 1 ego, 1 exo, 3 robot, 13 web),
#                   used only to choose checkpoints and thresholds (17 frames from frame 0, with frames)
#   calibration     every 4th clip of pool_train (41), 17 frames with frames: calibrates the quality target
#                   (eval/quality_target.py)
# The 14 shared DAVIS sequences and tokenbench-mini neither train nor select anything.
# PARTS picks what to cache (default val,train,calibration).
source "$(dirname "$0")/env.sh"
POOL=${POOL:-$SHARED/train}
OUT=${OUT:-data/latents/pool}
FRAMES=${FRAMES:-33}
mapfile -t train < <(sed "s#^#$POOL/#" eval/splits/pool_train.txt)
mapfile -t val < <(sed "s#^#$POOL/#" eval/splits/pool_val.txt)
PARTS=${PARTS:-val,train,calibration}
if [[ ,$PARTS, == *,val,* ]]; then
  $LATOK cache-latents --inputs "${val[@]}" --out "$OUT/val" --frames 17 --height 240 --with-video --value-step 0
fi
if [[ ,$PARTS, == *,calibration,* ]]; then
  mapfile -t calibration < <(awk 'NR % 4 == 1' eval/splits/pool_train.txt | sed "s#^#$POOL/#")
  $LATOK cache-latents --inputs "${calibration[@]}" --out "$OUT/calibration" --frames 17 --height 240 --with-video --value-step 0
fi
if [[ ,$PARTS, == *,train,* ]]; then
  $LATOK cache-latents --inputs "${train[@]}" --out "$OUT/train" --frames "$FRAMES" --height 240
fi
