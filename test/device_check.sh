#!/bin/sh
# test/device_check.sh: everything a report on an OpenCL device needs, in one go.
#
#   sh test/device_check.sh            (from anywhere; a few minutes on a GPU)
#   IVAE_CL_PLATFORM=1 IVAE_CL_DEVICE=0 sh test/device_check.sh   another device
#
#   1. an OpenCL driver is registered (an ICD file in /etc/OpenCL/vendors)
#   2. ./ivae builds with OpenCL
#   3. the machine, and `ivae devices`
#   4. ivae compare on ivae-s (3x9x32x32 clip + 3x1x32x32 image, every
#      parameter non-trivial): strict must be bit-identical, fast within SPEC 8
#   5. the three timings of `ivae grad` on ivae-s with one 3x17x64x64 clip,
#      back to back: the CPU, OpenCL strict, OpenCL fast (the strict file must
#      be the CPU's byte for byte, the fast one within SPEC 8)
#   6. 30 training steps of the default recipe: CPU, OpenCL strict (the
#      checkpoint must be the CPU's byte for byte), OpenCL fast
#   7. 30 training steps of ivae-s at 64 x 64 (one 17-frame clip and 8
#      images): OpenCL strict and fast
#   8. the Wan 2.1 VAE (random weights, dim 96) decoding a 3x17x256x256 clip:
#      the CPU, OpenCL strict (its output must be the CPU's byte for byte),
#      OpenCL fast (within SPEC 8)
#   9. the same three jobs in PyTorch, float32, on the GPU (test/device_torch.py:
#      the project's ports, TF32 off), when python3 has torch with CUDA
#  10. a summary to paste into a report, with the ratios ivae / PyTorch
#
# DC_QUICK=1 rehearses the script at small sizes (5x32x32 clips, 6 steps,
# Wan dim 16 at 5x64x64, PyTorch on the CPU when there is no CUDA): about
# 10 minutes on pocl on 2 cores, where the full sizes take far longer.
# Needs make, a C compiler, the OpenCL headers and ICD loader (Debian:
# ocl-icd-opencl-dev opencl-c-headers) and python3 (for test/nontrivial.py).
# NVIDIA: the driver's OpenCL part registers /etc/OpenCL/vendors/nvidia.icd
# (Debian: nvidia-opencl-icd; Ubuntu: libnvidia-compute-<version>).
# Exit status 0 when every check passed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-test/out/device_check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
fails=""
fail() { fails="$fails; $1"; echo "FAIL: $1"; }
section() { printf '\n=== %s\n' "$1"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
if [ "${DC_QUICK:-0}" = 1 ]; then
    CLIP=5x32x32 STEPS=6 SCROP=32 SFRAMES=5 WAN_CLIP=5x64x64 WAN_DIM=16 TORCH_RUNS=2
else
    CLIP=17x64x64 STEPS=30 SCROP=64 SFRAMES=17 WAN_CLIP=17x256x256 WAN_DIM=96 TORCH_RUNS=5
fi
fb() { sed -n 's/.*, \([0-9.]*\) s forward+backward.*/\1/p' "$1"; } # the timed part of ivae grad

section "1. OpenCL drivers (ICD files)"
icds=$(ls /etc/OpenCL/vendors/*.icd 2>/dev/null)
if [ -n "${OCL_ICD_VENDORS:-}" ]; then echo "OCL_ICD_VENDORS=$OCL_ICD_VENDORS"; fi
if [ -z "$icds" ] && [ -z "${OCL_ICD_VENDORS:-}" ]; then
    echo "no ICD file in /etc/OpenCL/vendors: no OpenCL driver is registered."
    echo "NVIDIA: install the driver's OpenCL part (Debian: nvidia-opencl-icd; Ubuntu: libnvidia-compute-<version>)."
    echo "CPU only: apt-get install pocl-opencl-icd."
    exit 1
fi
for f in $icds; do echo "$f: $(cat "$f")"; done

section "2. build"
make ivae > "$OUT/build.log" 2>&1 || { cat "$OUT/build.log"; echo "FAIL: make ivae"; exit 1; }
grep -E "OpenMP|OpenCL" "$OUT/build.log"
grep -q "✓ OpenCL found" "$OUT/build.log" || { echo "FAIL: built without OpenCL (install ocl-icd-opencl-dev opencl-c-headers)"; exit 1; }

section "3. the machine and its OpenCL devices"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
echo "host: $(uname -srm), $(nproc) CPU threads, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-(unset: all cores)}  IVAE_CL_PLATFORM=${IVAE_CL_PLATFORM:-0}  IVAE_CL_DEVICE=${IVAE_CL_DEVICE:-0}"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
./ivae devices || { echo "FAIL: ivae devices"; exit 1; }

section "4. ivae compare on ivae-s (3x9x32x32 + 3x1x32x32, every parameter non-trivial)"
./ivae init --config ivae-s --seed 1 "$OUT/s0.safetensors" > /dev/null || exit 1
if "$PYTHON" test/nontrivial.py "$OUT/s0.safetensors" "$OUT/s.safetensors" 1; then
    M=$OUT/s.safetensors
else
    echo "note: no $PYTHON: the default initialisation (attention projections 0, so attention gradients vanish)"
    M=$OUT/s0.safetensors
fi
./ivae batch "$M" "$OUT/b.safetensors" --clip 9x32x32 --clip 1x32x32 > /dev/null &&
    ./ivae batch "$M" "$OUT/b17.safetensors" --clip $CLIP > /dev/null || exit 1
for mode in strict fast; do
    t0=$(now)
    ./ivae compare --cl-mode $mode --quiet "$M" "$OUT/b.safetensors" > "$OUT/compare.$mode.log" 2>&1 || fail "compare --cl-mode $mode"
    cat "$OUT/compare.$mode.log" | grep -v "^columns\|^model\|^ivae compare\|^strict:\|^fast:"
    echo "(compare --cl-mode $mode: $(since "$t0") s in all; full output with --quiet off: ivae compare --cl-mode $mode $M $OUT/b.safetensors)"
done

section "5. ivae grad on ivae-s, one 3x$CLIP clip: CPU, OpenCL strict, OpenCL fast, back to back"
t0=$(now); ./ivae grad "$M" "$OUT/b17.safetensors" "$OUT/cpu.safetensors" > "$OUT/cpu.log" 2>&1 || fail "grad on the CPU"; w_cpu=$(since "$t0")
t0=$(now); ./ivae grad --device cl "$M" "$OUT/b17.safetensors" "$OUT/strict.safetensors" > "$OUT/strict.log" 2>&1 || fail "grad --device cl"; w_strict=$(since "$t0")
t0=$(now); ./ivae grad --device cl --cl-mode fast "$M" "$OUT/b17.safetensors" "$OUT/fast.safetensors" > "$OUT/fast.log" 2>&1 || fail "grad --cl-mode fast"; w_fast=$(since "$t0")
cat "$OUT/cpu.log" "$OUT/strict.log" "$OUT/fast.log" | grep -v "^wrote"
if cmp -s "$OUT/cpu.safetensors" "$OUT/strict.safetensors"; then strict_ok="byte-identical to the CPU's"
else strict_ok="DIFFERS from the CPU's"; fail "grad --device cl on $CLIP is not the CPU's"; fi
if ./ivae diff --quiet "$OUT/cpu.safetensors" "$OUT/fast.safetensors" > "$OUT/fastdiff.log"; then fast_ok="within SPEC 8"
else fast_ok="BEYOND SPEC 8"; fail "grad --cl-mode fast on $CLIP beyond SPEC 8"; fi
fast_e=$(tail -n 1 "$OUT/fastdiff.log" | sed 's/.*worst e: //')

section "6. ivae train: $STEPS steps of the default recipe (ivae-xs, one 17x32x32 clip + 8 images): CPU, OpenCL strict, OpenCL fast"
TR="--data data --steps $STEPS --warmup 5 --log-every 10 --eval-every 0"
for mode in cpu strict fast; do
    case $mode in cpu) dev="";; strict) dev="--device cl";; fast) dev="--device cl --cl-mode fast";; esac
    t0=$(now)
    ./ivae train $TR $dev --out "$OUT/train.$mode" > "$OUT/train.$mode.log" 2>&1 || { tail -n 3 "$OUT/train.$mode.log"; fail "train ($mode)"; }
    eval "w_train_$mode=$(since "$t0")"
    grep "^step *$STEPS/$STEPS\|^held-out" "$OUT/train.$mode.log" | sed "s/^/$mode: /"
done
if cmp -s "$OUT/train.cpu/ckpt.safetensors" "$OUT/train.strict/ckpt.safetensors"; then train_ok="checkpoint byte-identical to the CPU's"
else train_ok="checkpoint DIFFERS from the CPU's"; fail "train --device cl (strict) is not the CPU run"; fi
sps() { sed -n "s/^step *$STEPS\/$STEPS.* \([0-9.]*\) samples\/s.*/\1/p" "$OUT/train.$1.log"; }

section "7. ivae train: $STEPS steps of ivae-s at $SCROP x $SCROP (one $SFRAMES-frame clip + 8 images): OpenCL strict, OpenCL fast"
TS="--config ivae-s --crop $SCROP --clip-frames $SFRAMES --data data --steps $STEPS --warmup 5 --log-every 10 --eval-every 0"
for mode in strict fast; do
    t0=$(now)
    ./ivae train $TS --device cl --cl-mode $mode --out "$OUT/trains.$mode" > "$OUT/trains.$mode.log" 2>&1 ||
        { tail -n 3 "$OUT/trains.$mode.log"; fail "train ivae-s ($mode)"; }
    eval "w_trains_$mode=$(since "$t0")"
    grep "^step *$STEPS/$STEPS" "$OUT/trains.$mode.log" | sed "s/^/$mode: /"
done
spss() { sed -n "s/^step *$STEPS\/$STEPS.* \([0-9.]*\) samples\/s.*/\1/p" "$OUT/trains.$1.log"; }

section "8. the Wan 2.1 VAE (dim $WAN_DIM, random weights) decoding 3x$WAN_CLIP: CPU, OpenCL strict, OpenCL fast"
wan_t=$(echo "$WAN_CLIP" | cut -dx -f1) wan_h=$(echo "$WAN_CLIP" | cut -dx -f2) wan_w=$(echo "$WAN_CLIP" | cut -dx -f3)
dsec() { sed -n 's/.* in \([0-9.]*\) s (.*/\1/p' "$OUT/wan.$1.log"; }
if "$PYTHON" test/wan_ref.py init --dim "$WAN_DIM" "$OUT/wan.safetensors" > /dev/null &&
    "$PYTHON" -c "import sys; sys.path.insert(0, 'test'); import torch, ref
g = torch.Generator().manual_seed(1)
ref.save_safetensors('$OUT/wanz.safetensors', {'mu': torch.randn((16, 1 + ($wan_t - 1) // 4, $wan_h // 8, $wan_w // 8), generator=g)})"; then
    for mode in cpu strict fast; do
        case $mode in cpu) dev="";; strict) dev="--device cl";; fast) dev="--device cl --cl-mode fast";; esac
        timeout 300 ./ivae decode "$OUT/wan.safetensors" "$OUT/wanz.safetensors" "$OUT/wan.$mode.safetensors" $dev \
            > "$OUT/wan.$mode.log" 2>&1 || { tail -n 2 "$OUT/wan.$mode.log"; fail "Wan decode ($mode)"; }
        sed "s/^/$mode: /" "$OUT/wan.$mode.log"
    done
    if cmp -s "$OUT/wan.cpu.safetensors" "$OUT/wan.strict.safetensors"; then wan_strict_ok="byte-identical to the CPU's"
    else wan_strict_ok="DIFFERS from the CPU's"; fail "Wan decode --device cl is not the CPU's"; fi
    if ./ivae diff --quiet "$OUT/wan.cpu.safetensors" "$OUT/wan.fast.safetensors" > "$OUT/wanfastdiff.log"; then wan_fast_ok="within SPEC 8"
    else wan_fast_ok="BEYOND SPEC 8"; fail "Wan decode --cl-mode fast beyond SPEC 8"; fi
    wan_fast_ok="$wan_fast_ok ($(tail -n 1 "$OUT/wanfastdiff.log" | sed 's/.*worst e: //'))"
else
    fail "no Wan weights (test/wan_ref.py init needs python3 with torch and numpy)"
fi

section "9. PyTorch, float32, the same jobs (test/device_torch.py)"
tdev=cpu
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && tdev=cuda
[ $tdev = cpu ] && echo "note: no CUDA in $PYTHON's torch: PyTorch runs on the CPU here (not the GPU comparison of issue 12)"
if "$PYTHON" test/device_torch.py --device $tdev --runs $TORCH_RUNS --clip $CLIP --crop $SCROP \
    --frames $SFRAMES --wan $WAN_CLIP --dim $WAN_DIM > "$OUT/torch.log" 2>&1; then
    cat "$OUT/torch.log"
else
    tail -n 3 "$OUT/torch.log"; fail "test/device_torch.py"
fi
tf() { sed -n "s/^torch $1 .* $2=\([0-9.]*\).*/\1/p" "$OUT/torch.log"; }
t_grad=$(tf grad seconds) t_train=$(tf train samples_per_s) t_wan=$(tf wan_decode seconds)
# ivae time / PyTorch time (or PyTorch rate / ivae rate): how many times slower ivae is
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else printf "-" }'; }

section "10. summary"
echo "device: $(sed -n "s/.*on OpenCL (strict kernels), //p" "$OUT/strict.log")"
echo "compare ivae-s strict: $(tail -n 1 "$OUT/compare.strict.log")"
echo "compare ivae-s fast:   $(tail -n 1 "$OUT/compare.fast.log")"
printf '%-28s %14s %12s   %s\n' "ivae grad, 3x$CLIP" "forward+back" "whole run" "result"
printf '%-28s %12s s %10s s   %s\n' "CPU (${OMP_NUM_THREADS:-$(nproc)} threads)" "$(fb "$OUT/cpu.log")" "$w_cpu" "reference"
printf '%-28s %12s s %10s s   %s\n' "OpenCL strict" "$(fb "$OUT/strict.log")" "$w_strict" "$strict_ok"
printf '%-28s %12s s %10s s   %s\n' "OpenCL fast" "$(fb "$OUT/fast.log")" "$w_fast" "$fast_ok ($fast_e)"
echo "(forward+backward: the batch_grad call alone; whole run: the process, with loading, kernel build and upload)"
printf '%-28s %14s %12s   %s\n' "ivae train, $STEPS steps" "samples/s" "whole run" "result"
printf '%-28s %14s %10s s   %s\n' "CPU" "$(sps cpu)" "$w_train_cpu" "reference"
printf '%-28s %14s %10s s   %s\n' "OpenCL strict" "$(sps strict)" "$w_train_strict" "$train_ok"
printf '%-28s %14s %10s s   %s\n' "OpenCL fast" "$(sps fast)" "$w_train_fast" "(tiled kernels)"
echo "(samples/s: the trainer's own figure at step $STEPS; whole run: with the held-out evaluation at the end)"
printf '%-28s %14s %12s\n' "ivae train ivae-s, $SCROP px" "samples/s" "whole run"
printf '%-28s %14s %10s s\n' "OpenCL strict" "$(spss strict)" "$w_trains_strict"
printf '%-28s %14s %10s s\n' "OpenCL fast" "$(spss fast)" "$w_trains_fast"
printf '%-28s %14s   %s\n' "Wan decode, 3x$WAN_CLIP" "seconds" "result"
printf '%-28s %14s   %s\n' "CPU" "$(dsec cpu)" "reference"
printf '%-28s %14s   %s\n' "OpenCL strict" "$(dsec strict)" "${wan_strict_ok:-}"
printf '%-28s %14s   %s\n' "OpenCL fast" "$(dsec fast)" "${wan_fast_ok:-}"
echo "(the decode alone, as ivae decode prints it: with the latent's upload and the output's download)"
echo
echo "against PyTorch ($tdev, float32, TF32 off; $(sed -n 's/^torch version=\([^ ]*\).*name=\([^ ]*\).*/torch \1 on \2/p' "$OUT/torch.log")):"
echo "ivae's time / PyTorch's (issue 12's targets: fast within 2x, strict within 10x)"
printf '%-36s %10s %10s %10s %10s\n' "" "PyTorch" "strict" "fast" ""
printf '%-36s %8s s %10s %10s\n' "grad ivae-s 3x$CLIP (fwd+bwd)" "${t_grad:--}" "$(ratio "$(fb "$OUT/strict.log")" "$t_grad")" "$(ratio "$(fb "$OUT/fast.log")" "$t_grad")"
printf '%-36s %6s /s %10s %10s\n' "train ivae-s $SCROP px (samples/s)" "${t_train:--}" "$(ratio "$t_train" "$(spss strict)")" "$(ratio "$t_train" "$(spss fast)")"
printf '%-36s %8s s %10s %10s\n' "Wan decode dim $WAN_DIM 3x$WAN_CLIP" "${t_wan:--}" "$(ratio "$(dsec strict)" "$t_wan")" "$(ratio "$(dsec fast)" "$t_wan")"
echo "(PyTorch: the median of $TORCH_RUNS calls after a warm-up; ivae: one call (grad, decode) or the trainer's average over its steps, warm-up included)"
if [ -n "$fails" ]; then
    echo "FAILED${fails}"
    exit 1
fi
echo "ALL DEVICE CHECKS PASSED"
