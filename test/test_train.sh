#!/bin/sh
# test/test_train.sh: the training program and the media commands, end to end.
#   1. a short run on data/ whose loss must fall
#   2. N steps straight == N/2 steps, then --resume, then N/2 (bit for bit);
#      a run stopped by SIGTERM saves its state and resumes to the same bits
#      --init starts a fresh run from a model's weights
#   3. a process killed while checkpointing leaves a loadable checkpoint
#   4. recon / encode / decode on a frame folder, an image and a .y4m
#   5. bad input to train: one-line errors, exit status 1 (also a training
#      image whose body alone is cut: decoded on demand, it stops the run)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-test/out/train}
rm -rf "$OUT" && mkdir -p "$OUT"
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
Q="--data data --eval-size 16 --log-every 1000"

# 1. learning: mean loss of the last 10 of 40 steps below 0.85 x the first 10's,
#    on a small set (2 city clips, 8 photo crops: the whole data/ mixes smooth
#    synthetic pans with city lights, and 40 steps of it are too noisy to show
#    the fall: ratio 0.97). Measured: 0.01226 -> 0.00905, ratio 0.74; a run
#    that does not learn stays near 1.
mkdir -p "$OUT/small/train/clips" "$OUT/small/train/images"
for c in $(ls data/train/clips | grep '^city_' | head -n 2); do ln -s "$PWD/data/train/clips/$c" "$OUT/small/train/clips/"; done
for f in $(ls data/train/images | grep '^fx_' | head -n 8); do ln -s "$PWD/data/train/images/$f" "$OUT/small/train/images/"; done
ln -s "$PWD/data/eval" "$OUT/small/eval"
./ivae train --data "$OUT/small" --eval-size 16 --log-every 1000 --steps 40 --warmup 10 --lr 2e-3 --clip-frames 9 --out "$OUT/learn" > "$OUT/learn.log" 2>&1 || { cat "$OUT/learn.log"; bad "training run"; }
if awk -F, 'NR>1 && $1<=10 {a+=$3; na++} NR>1 && $1>30 {b+=$3; nb++}
            END {printf "loss: first 10 steps %.5f, last 10 %.5f\n", a/na, b/nb; exit !(nb == 10 && b/nb < 0.85*a/na)}' "$OUT/learn/log.csv"; then
    ok "a 40-step run learns"
else
    bad "the loss did not fall"
fi
for f in model.safetensors ckpt.safetensors log.csv eval.csv metrics.csv summary.csv loss.png heldout_image_0.png heldout_clip_0.png contact_clip_0.png; do
    [ -s "$OUT/learn/$f" ] || bad "the run did not write $f"
done
grep -q "held-out" "$OUT/learn.log" && ok "held-out PSNR/SSIM reported: $(grep held-out "$OUT/learn.log")" || bad "no held-out PSNR/SSIM line"

# 2. resume: 40 steps straight vs 20 + resume + 20; by step 20 the guards
#    (median clipping, spike detection) are active, so their state must resume
#    too; the second half runs on 1 thread, the first on the default count
R="$Q --steps 40 --warmup 3 --ckpt-every 4 --guard-every 4 --images 2 --crop 16"
./ivae train $R --out "$OUT/straight" > /dev/null 2>&1 &&
./ivae train $R --stop-after 20 --out "$OUT/halves" > /dev/null 2>&1 &&
OMP_NUM_THREADS=1 \
./ivae train --data data --eval-size 16 --resume "$OUT/halves/ckpt.safetensors" --out "$OUT/halves" > /dev/null 2>&1 || bad "resume runs"
if cmp -s "$OUT/straight/model.safetensors" "$OUT/halves/model.safetensors" &&
   cmp -s "$OUT/straight/ckpt.safetensors" "$OUT/halves/ckpt.safetensors"; then
    ok "40 steps == 20 + resume + 20: weights and optimizer state bit-identical"
else
    bad "resume is not exact"
fi
# a run stopped by a signal (Ctrl-C or SIGTERM) writes its checkpoint and
# weights at the step it reached; --resume from there gives the same bits
./ivae train $R --log-every 1 --out "$OUT/intr" > "$OUT/intr.log" 2>&1 &
pid=$!
for i in $(seq 100); do [ "$(cat "$OUT/intr/log.csv" 2>/dev/null | wc -l)" -gt 3 ] && break; sleep 0.1; done
kill -TERM $pid; wait $pid; rc=$?
step=$(sed -n 's/^interrupted: stopping at step \([0-9]*\).*/\1/p' "$OUT/intr.log")
if [ $rc -eq 0 ] && [ -z "$step" ] && grep -q "^done: 40 steps" "$OUT/intr.log"; then
    echo "SKIP the SIGTERM test: the run finished before the signal came (a fast machine)"
elif [ $rc -eq 0 ] && [ -n "$step" ] && [ "$step" -lt 40 ] && [ $((step % 4)) -eq 0 ] && [ -s "$OUT/intr/model.safetensors" ] &&
   ./ivae train --data data --eval-size 16 --resume "$OUT/intr/ckpt.safetensors" --out "$OUT/intr" > /dev/null 2>&1 &&
   cmp -s "$OUT/straight/ckpt.safetensors" "$OUT/intr/ckpt.safetensors"; then
    ok "SIGTERM: stopped at step $step (a good-state refresh), checkpoint and weights written, exit 0; resumed to 40 == 40 straight"
else
    bad "a run stopped by a signal (exit $rc, step '$step')"; tail -n 3 "$OUT/intr.log"
fi

# --init: a fresh run from a model's weights. At --lr 1e-30 AdamW moves a
# weight by about 1e-30, so the run's model must match the one it started
# from at SPEC 8's tolerances (ivae diff); a random start differs everywhere
./ivae train $Q --init "$OUT/straight/model.safetensors" --steps 2 --lr 1e-30 --warmup 1 --images 1 --crop 16 --clip-frames 5 \
    --out "$OUT/init" > "$OUT/init.log" 2>&1 || bad "train --init run"
if grep -q "^ivae train: $OUT/straight/model.safetensors" "$OUT/init.log" &&
   ./ivae diff "$OUT/straight/model.safetensors" "$OUT/init/model.safetensors" > "$OUT/init.diff" 2>&1; then
    ok "--init starts from the model's weights (2 steps at lr 1e-30: every tensor within SPEC 8)"
else
    bad "--init: $(tail -n 2 "$OUT/init.diff" 2>/dev/null)"
fi

# 3. atomic checkpoints: kill -9 during training that checkpoints every step
./ivae train $Q --steps 4 --ckpt-every 1 --guard-every 1 --out "$OUT/kill" > /dev/null 2>&1 || bad "kill test setup"
survived=0
for i in 1 2 3 4 5 6; do
    ./ivae train $Q --steps 100000 --ckpt-every 1 --guard-every 1 --resume "$OUT/kill/ckpt.safetensors" --out "$OUT/kill" > /dev/null 2>&1 &
    pid=$!
    sleep "0.$((3 + i))"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    ./ivae info "$OUT/kill/ckpt.safetensors" > /dev/null 2>&1 && survived=$((survived + 1))
done
[ $survived -eq 6 ] && ok "6 kill -9 during checkpointing: the checkpoint stayed loadable every time" || bad "checkpoint lost after kill ($survived of 6 loadable)"

# 4. media commands with the trained model
M=$OUT/learn/model.safetensors
clip=$(ls -d data/eval/clips/* | head -n 1)
img=$(ls data/eval/images/* | head -n 1)
./ivae recon "$M" "$clip" "$OUT/recon_clip" > "$OUT/r1.log" 2>&1 && [ -f "$OUT/recon_clip/0001.png" ] && ok "recon of a frame folder: $(head -n 1 "$OUT/r1.log")" || bad "recon of $clip"
./ivae recon "$M" "$img" "$OUT/recon_img.png" > "$OUT/r2.log" 2>&1 && [ -f "$OUT/recon_img.png" ] && ok "recon of an image: $(head -n 1 "$OUT/r2.log")" || bad "recon of $img"
./ivae recon "$M" "$clip" "$OUT/recon.y4m" > /dev/null 2>&1 && ./ivae recon "$M" "$OUT/recon.y4m" "$OUT/recon2.y4m" > "$OUT/r3.log" 2>&1 && ok "recon of a .y4m: $(head -n 1 "$OUT/r3.log")" || bad "recon through .y4m"
./ivae encode "$M" "$clip" "$OUT/z.safetensors" > /dev/null 2>&1 && ./ivae decode "$M" "$OUT/z.safetensors" "$OUT/dec" > /dev/null 2>&1 &&
  ./ivae recon "$M" "$clip" "$OUT/recon_clip2" > /dev/null 2>&1 && cmp -s "$OUT/dec/0005.png" "$OUT/recon_clip2/0005.png" &&
  ok "encode + decode == recon (frame 5 identical)" || bad "encode + decode"

# 5. bad input to train and the media commands
expect_error() { # name, command...
    name=$1; shift
    "$@" > /dev/null 2> "$OUT/err.txt"; rc=$?
    lines=$(wc -l < "$OUT/err.txt")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -q '^ivae: error:' "$OUT/err.txt"; then ok "$name: $(cat "$OUT/err.txt")"
    else bad "$name (exit $rc, $lines lines: $(head -c 200 "$OUT/err.txt"))"; fi
}
mkdir -p "$OUT/empty"
printf 'not a png' > "$OUT/bad.png"
expect_error "train without data" ./ivae train --data "$OUT/nodata" --steps 1 --out "$OUT/x"
expect_error "train --clip-frames 8" ./ivae train --data data --clip-frames 8 --steps 1 --out "$OUT/x"
# a training image with a good header and a cut body: the start probes
# headers only, so the run starts; the image fails when first decoded
mkdir -p "$OUT/cut/train/images"
ln -s "$PWD/data/train/clips" "$OUT/cut/train/clips"
f=$(ls data/train/images/*.png | head -n 1)
head -c $(($(wc -c < "$f") / 2)) "$f" > "$OUT/cut/train/images/cut.png"
expect_error "train on an image whose body is cut (decoded on demand)" ./ivae train --data "$OUT/cut" --images 1 --clips 0 \
    --crop 16 --eval-size 16 --steps 1 --out "$OUT/x"
grep -q "cut.png: cannot decode image.*no checkpoint was written yet" "$OUT/err.txt" || bad "the cut image's message names the file and the checkpoint"
expect_error "train --resume of a corrupt file" ./ivae train --data data --resume "$OUT/bad.png" --out "$OUT/x"
expect_error "train --resume of a weights-only file" ./ivae train --data data --resume "$M" --out "$OUT/x"
expect_error "train --lr abc" ./ivae train --lr abc
expect_error "train --init of a missing model" ./ivae train --data data --init "$OUT/nomodel.safetensors" --steps 1 --out "$OUT/x"
expect_error "train --init of a corrupt file" ./ivae train --data data --init "$OUT/bad.png" --steps 1 --out "$OUT/x"
expect_error "train --spike-factor 0.8 (would flag half the steps)" ./ivae train --spike-factor 0.8
expect_error "a run that cannot recover stops after 5 rollbacks" ./ivae train $Q --steps 300 --warmup 1 --images 2 --crop 16 \
    --clip-frames 5 --guard-every 2 --lr 1e30 --agc 0 --clip-factor 0 --spike-factor 0 --out "$OUT/stuck"
grep -q "rolled back 5 times" "$OUT/err.txt" || bad "the stuck run did not stop for the rollback limit: $(cat "$OUT/err.txt")"
expect_error "recon of a corrupt PNG" ./ivae recon "$M" "$OUT/bad.png" "$OUT/x.png"
expect_error "recon of an empty folder" ./ivae recon "$M" "$OUT/empty" "$OUT/x"
expect_error "decode of a file without mu" ./ivae decode "$M" "$M" "$OUT/x"

[ $fails -eq 0 ] && echo "PASS: test_train" || echo "FAIL: test_train ($fails failed)"
[ $fails -eq 0 ]
