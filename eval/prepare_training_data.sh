#!/usr/bin/env bash
# Cache taef2 latents of the shared data for inpainter training and validation.
# Validation: DAVIS soapbox, libby, goat (17 frames from frame 0, with frames for pixel PSNR).
# Training: the other 11 DAVIS sequences (64 frames from 0); tokenbench-mini and the classic clips
# from frame 33 on (48 frames), so no frame of the 33-frame evaluation windows is trained on.
source "$(dirname "$0")/env.sh"
OUT=${OUT:-data/latents/taef2}
DAVIS=$SHARED/davis/JPEGImages/480p
VAL="soapbox libby goat"
train_davis=()
for seq in "$DAVIS"/*/; do
  name=$(basename "$seq")
  [[ " $VAL " == *" $name "* ]] || train_davis+=("$seq")
done
$LATOK cache-latents --inputs "${train_davis[@]}" --out "$OUT/train" --frames 64 --height 240
# Clips shorter than 34 frames have nothing outside the evaluation window: they are reported and skipped.
$LATOK cache-latents --inputs "$SHARED"/tokenbench-mini/*.mp4 "$SHARED"/clips/* --out "$OUT/train" --start 33 --frames 48 --height 240 || true
$LATOK cache-latents --inputs $(for s in $VAL; do echo "$DAVIS/$s"; done) --out "$OUT/val" --frames 17 --height 240 --with-video
