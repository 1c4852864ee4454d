#!/bin/sh
# run.sh [MINUTES]: the main job, in at most MINUTES (default 10) minutes.
#   1. the shipped model (models/ivae-xs.safetensors) on the held-out clips and
#      images of data/eval: PSNR, SSIM and side-by-side pictures in runs/shipped
#   2. a fresh model trained on data/train for the rest of the time, with
#      progress lines, its held-out PSNR/SSIM and pictures in runs/fresh
set -eu
cd "$(dirname "$0")"
MINUTES=${1:-10}
start=$(date +%s)
[ -x ./ivae ] || make ivae
SHIPPED=models/ivae-xs.safetensors
if [ -f "$SHIPPED" ]; then
    echo "== 1. the shipped model ($SHIPPED) on the held-out data"
    ./ivae eval "$SHIPPED" --data data --out runs/shipped
else
    echo "== 1. no shipped model at $SHIPPED: skipping its evaluation"
fi
used=$(( $(date +%s) - start ))
# what is left, less a minute for the final evaluation and pictures
left=$(awk -v m="$MINUTES" -v u="$used" 'BEGIN { l = m - u / 60 - 1.0; printf "%.2f", l < 0.5 ? 0.5 : l }')
echo
echo "== 2. training a fresh ivae-xs on data/train for $left minutes (runs/fresh)"
./ivae train --data data --minutes "$left" --out runs/fresh --log-every 50 --eval-every 0
echo
echo "pictures: runs/shipped/heldout_*.png (shipped model), runs/fresh/heldout_*.png and runs/fresh/loss.png (fresh model)"
