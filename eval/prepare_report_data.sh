#!/usr/bin/env bash
# Cache taef2 latents (exact fp16, with frames) of the report sets for eval/value_coding.py --stage report:
# the 14 shared DAVIS sequences, tokenbench-mini and the surveillance clip, 240p, 17 frames from frame 0.
# The pool validation split (for --stage val) comes from eval/prepare_pool_data.sh.
source "$(dirname "$0")/env.sh"
DATA=$SHARED
OUT=${OUT:-data/latents/report}
mapfile -t davis < <(sed "s#^#$DATA/davis/JPEGImages/480p/#" "$DATA/davis/ImageSets/2016/val.txt")
$LATOK cache-latents --inputs "$DATA"/tokenbench-mini/*.mp4 --out "$OUT/tokenbench" --frames 17 --height 240 --with-video --value-step 0
$LATOK cache-latents --inputs "$DATA/clips/surveillance_vtest.avi" --out "$OUT/clips" --frames 17 --height 240 --with-video --value-step 0
$LATOK cache-latents --inputs "${davis[@]}" --out "$OUT/davis" --frames 17 --height 240 --with-video --value-step 0
