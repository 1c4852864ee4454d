#!/bin/sh
# test/device_check.sh: everything a report on an OpenCL device needs, in one go.
#
#   sh test/device_check.sh            (from anywhere; about 1 minute on a GPU)
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
#   7. a summary to paste into a report
#
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
    ./ivae batch "$M" "$OUT/b17.safetensors" --clip 17x64x64 > /dev/null || exit 1
for mode in strict fast; do
    t0=$(now)
    ./ivae compare --cl-mode $mode --quiet "$M" "$OUT/b.safetensors" > "$OUT/compare.$mode.log" 2>&1 || fail "compare --cl-mode $mode"
    cat "$OUT/compare.$mode.log" | grep -v "^columns\|^model\|^ivae compare\|^strict:\|^fast:"
    echo "(compare --cl-mode $mode: $(since "$t0") s in all; full output with --quiet off: ivae compare --cl-mode $mode $M $OUT/b.safetensors)"
done

section "5. ivae grad on ivae-s, one 3x17x64x64 clip: CPU, OpenCL strict, OpenCL fast, back to back"
t0=$(now); ./ivae grad "$M" "$OUT/b17.safetensors" "$OUT/cpu.safetensors" > "$OUT/cpu.log" 2>&1 || fail "grad on the CPU"; w_cpu=$(since "$t0")
t0=$(now); ./ivae grad --device cl "$M" "$OUT/b17.safetensors" "$OUT/strict.safetensors" > "$OUT/strict.log" 2>&1 || fail "grad --device cl"; w_strict=$(since "$t0")
t0=$(now); ./ivae grad --device cl --cl-mode fast "$M" "$OUT/b17.safetensors" "$OUT/fast.safetensors" > "$OUT/fast.log" 2>&1 || fail "grad --cl-mode fast"; w_fast=$(since "$t0")
cat "$OUT/cpu.log" "$OUT/strict.log" "$OUT/fast.log" | grep -v "^wrote"
if cmp -s "$OUT/cpu.safetensors" "$OUT/strict.safetensors"; then strict_ok="byte-identical to the CPU's"
else strict_ok="DIFFERS from the CPU's"; fail "grad --device cl on 17x64x64 is not the CPU's"; fi
if ./ivae diff --quiet "$OUT/cpu.safetensors" "$OUT/fast.safetensors" > "$OUT/fastdiff.log"; then fast_ok="within SPEC 8"
else fast_ok="BEYOND SPEC 8"; fail "grad --cl-mode fast on 17x64x64 beyond SPEC 8"; fi
fast_e=$(tail -n 1 "$OUT/fastdiff.log" | sed 's/.*worst e: //')

section "6. ivae train: 30 steps of the default recipe (ivae-xs, one 17x32x32 clip + 8 images): CPU, OpenCL strict, OpenCL fast"
TR="--data data --steps 30 --warmup 5 --log-every 10 --eval-every 0"
for mode in cpu strict fast; do
    case $mode in cpu) dev="";; strict) dev="--device cl";; fast) dev="--device cl --cl-mode fast";; esac
    t0=$(now)
    ./ivae train $TR $dev --out "$OUT/train.$mode" > "$OUT/train.$mode.log" 2>&1 || { tail -n 3 "$OUT/train.$mode.log"; fail "train ($mode)"; }
    eval "w_train_$mode=$(since "$t0")"
    grep "^step *30/30\|^held-out" "$OUT/train.$mode.log" | sed "s/^/$mode: /"
done
if cmp -s "$OUT/train.cpu/ckpt.safetensors" "$OUT/train.strict/ckpt.safetensors"; then train_ok="checkpoint byte-identical to the CPU's"
else train_ok="checkpoint DIFFERS from the CPU's"; fail "train --device cl (strict) is not the CPU run"; fi
sps() { sed -n 's/^step *30\/30.* \([0-9.]*\) samples\/s.*/\1/p' "$OUT/train.$1.log"; }

section "7. summary"
echo "device: $(sed -n "s/.*on OpenCL (strict kernels), //p" "$OUT/strict.log")"
echo "compare ivae-s strict: $(tail -n 1 "$OUT/compare.strict.log")"
echo "compare ivae-s fast:   $(tail -n 1 "$OUT/compare.fast.log")"
printf '%-28s %14s %12s   %s\n' "ivae grad, 3x17x64x64" "forward+back" "whole run" "result"
printf '%-28s %12s s %10s s   %s\n' "CPU (${OMP_NUM_THREADS:-$(nproc)} threads)" "$(fb "$OUT/cpu.log")" "$w_cpu" "reference"
printf '%-28s %12s s %10s s   %s\n' "OpenCL strict" "$(fb "$OUT/strict.log")" "$w_strict" "$strict_ok"
printf '%-28s %12s s %10s s   %s\n' "OpenCL fast" "$(fb "$OUT/fast.log")" "$w_fast" "$fast_ok ($fast_e)"
echo "(forward+backward: the batch_grad call alone; whole run: the process, with loading, kernel build and upload)"
printf '%-28s %14s %12s   %s\n' "ivae train, 30 steps" "samples/s" "whole run" "result"
printf '%-28s %14s %10s s   %s\n' "CPU" "$(sps cpu)" "$w_train_cpu" "reference"
printf '%-28s %14s %10s s   %s\n' "OpenCL strict" "$(sps strict)" "$w_train_strict" "$train_ok"
printf '%-28s %14s %10s s   %s\n' "OpenCL fast" "$(sps fast)" "$w_train_fast" "(tiled kernels)"
echo "(samples/s: the trainer's own figure at step 30; whole run: with the held-out evaluation at the end)"
if [ -n "$fails" ]; then
    echo "FAILED${fails}"
    exit 1
fi
echo "ALL DEVICE CHECKS PASSED"
