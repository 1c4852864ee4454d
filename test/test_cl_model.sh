#!/bin/sh
# test/test_cl_model.sh: the ivae program on the OpenCL device, end to end
# (test/run.sh step 7; test/test_cl checks the kernels and the C API).
#
#   1. grad --device cl (strict) == grad on the CPU, byte for byte (cmp), for
#      ivae-s on a 3x9x32x32 clip + a 3x1x32x32 image, for a small
#      causal-attention config with the outlier penalty on three shapes, and
#      for two of SPEC 9's variants of ivae-xs on a 9x16x16 clip + a 16x16
#      image: GroupNorm blocks + GroupNorm attention + loss_norm mean, and
#      GroupNorm blocks + no attention norm + loss_norm sum + static images
#   2. grad --cl-mode fast within SPEC 8's tolerances (ivae diff) on all four
#   3. ivae compare exits 0, strict and fast (small config; and the first
#      variant)
#   4. encode / decode / recon --device cl: the same files as on the CPU
#   5. train --device cl: strict == the CPU run, bit for bit (guards acting,
#      with and without double on the device, and resumed from a CPU run; a
#      device failure mid-run, IVAE_CL_FAIL_AFTER: one line, the checkpoint
#      intact, --device cpu --resume continues bit for bit); fast within tolerance
#   6. errors: no OpenCL platform (OCL_ICD_VENDORS = an empty directory): one
#      clear line and exit 1, and the CPU path still works; IVAE_CL_DEVICE out
#      of range, or a kernels.cl (IVAE_KERNELS) without kernels_fast.cl
#      beside it: one clear line, exit 1
#
# Every model has all parameters non-trivial (test/nontrivial.py, SPEC 8).
# Prints a line per check and the time of the ivae-s runs; exit status 1 if
# any check failed. Skips (exit 0) when there is no OpenCL platform.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-test/out/cl_model}
PYTHON=${PYTHON:-/usr/bin/python3}
rm -rf "$OUT" && mkdir -p "$OUT/empty"
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
# clear_error WHAT PATTERN LOG COMMAND...: COMMAND must exit non-zero with
# one line on stderr (kept in LOG) that matches PATTERN (grep)
clear_error() {
    what=$1 pattern=$2 log=$3
    shift 3
    "$@" > /dev/null 2> "$log"
    rc=$?
    if [ $rc -eq 0 ]; then
        bad "$what: exited 0"
    elif [ "$(wc -l < "$log")" -eq 1 ] && grep -q "$pattern" "$log"; then
        ok "$what: exit $rc, \"$(cut -c1-110 "$log")\""
    else
        bad "$what: not one clear line:"; cat "$log"
    fi
}

. test/common.sh
require_device
grep -E "^platform|device [0-9]+:" "$OUT/devices.log"

# one kernel cache for this run (pocl compiles each kernel at its first use):
# fresh, so that a stale binary of an older kernels.cl or kernels_fast.cl can
# never be tested
POCL_CACHE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ivae_cl_model.XXXXXX")
export POCL_CACHE_DIR
trap 'rm -rf "$POCL_CACHE_DIR"' EXIT INT TERM

# the models and batches
./ivae init --config ivae-s --seed 1 "$OUT/s0.safetensors" > /dev/null &&
    "$PYTHON" test/nontrivial.py "$OUT/s0.safetensors" "$OUT/s.safetensors" 1 &&
    ./ivae batch "$OUT/s.safetensors" "$OUT/s.in.safetensors" --clip 9x32x32 --clip 1x32x32 > /dev/null &&
    ./ivae init --base-ch 8 --ch-mult 1,2,2 --n-res 2 --z-ch 4 --temporal 1,0 --attn causal --seed 3 \
        "$OUT/c0.safetensors" > /dev/null &&
    "$PYTHON" test/nontrivial.py "$OUT/c0.safetensors" "$OUT/c.safetensors" 2 &&
    ./ivae batch "$OUT/c.safetensors" "$OUT/c.in.safetensors" --clip 5x16x16 --clip 1x8x8 --clip 3x8x16 > /dev/null &&
    ./ivae init --base-ch 8 --ch-mult 1,2,2 --n-res 1 --z-ch 4 --temporal 1,0 --seed 4 "$OUT/f0.safetensors" > /dev/null &&
    "$PYTHON" test/nontrivial.py "$OUT/f0.safetensors" "$OUT/f.safetensors" 3 &&
    ./ivae init --config ivae-xs --block-norm groupnorm --attn-norm groupnorm --loss-norm mean --seed 3 \
        "$OUT/g0.safetensors" > /dev/null &&
    "$PYTHON" test/nontrivial.py "$OUT/g0.safetensors" "$OUT/g.safetensors" 5 &&
    ./ivae batch "$OUT/g.safetensors" "$OUT/g.in.safetensors" --clip 9x16x16 --clip 1x16x16 > /dev/null &&
    ./ivae init --config ivae-xs --block-norm groupnorm --attn-norm none --loss-norm sum --image-mode static \
        --seed 4 "$OUT/n0.safetensors" > /dev/null &&
    "$PYTHON" test/nontrivial.py "$OUT/n0.safetensors" "$OUT/n.safetensors" 6 &&
    ./ivae batch "$OUT/n.safetensors" "$OUT/n.in.safetensors" --clip 9x16x16 --clip 1x16x16 --image-mode static > /dev/null ||
    { bad "making the test models"; exit 1; }
CF="--w-image 0.7 --w-video 1.3 --beta 0.01 --w-opl 0.1 --ref-shape 5x16x16"
# The CPU reference runs on one thread: its bits do not depend on the thread
# count (step 4 checks that), and on a busy machine OpenMP's barriers make
# two threads many times slower than one.
CPU1="env OMP_NUM_THREADS=1"

# 1, 2: grad, strict and fast, for ivae-s, the causal config and the variants
# (their loss_norm and image_mode come from the models' metadata)
for m in s c g n; do
    case $m in
    s) fl=""; what="ivae-s, 3x9x32x32 + 3x1x32x32" ;;
    c) fl=$CF; what="causal attention, w_opl 0.1, 3 shapes" ;;
    g) fl=""; what="ivae-xs, GroupNorm blocks and attention, loss mean, 3x9x16x16 + 3x1x16x16" ;;
    n) fl=""; what="ivae-xs, GroupNorm blocks, no attention norm, loss sum, static images, 3x9x16x16 + 3x1x16x16" ;;
    esac
    t0=$(now)
    $CPU1 ./ivae grad $fl "$OUT/$m.safetensors" "$OUT/$m.in.safetensors" "$OUT/$m.cpu.safetensors" > "$OUT/$m.cpu.log" 2>&1 || { cat "$OUT/$m.cpu.log"; bad "grad on the CPU ($what)"; }
    t_cpu=$(since "$t0")
    t0=$(now)
    ./ivae grad $fl --device cl "$OUT/$m.safetensors" "$OUT/$m.in.safetensors" "$OUT/$m.strict.safetensors" > "$OUT/$m.strict.log" 2>&1 || { cat "$OUT/$m.strict.log"; bad "grad --device cl ($what)"; }
    t_strict=$(since "$t0")
    if cmp -s "$OUT/$m.cpu.safetensors" "$OUT/$m.strict.safetensors"; then
        ok "grad --device cl (strict) == CPU, every byte of $(grep -o '[0-9]* tensors' "$OUT/$m.strict.log") ($what; CPU on 1 thread $t_cpu, OpenCL strict $t_strict)"
    else
        bad "grad --device cl (strict) differs from the CPU ($what):"
        ./ivae diff --exact --quiet "$OUT/$m.cpu.safetensors" "$OUT/$m.strict.safetensors" | head -5
    fi
    t0=$(now)
    ./ivae grad $fl --device cl --cl-mode fast "$OUT/$m.safetensors" "$OUT/$m.in.safetensors" "$OUT/$m.fast.safetensors" > "$OUT/$m.fast.log" 2>&1 || { cat "$OUT/$m.fast.log"; bad "grad --cl-mode fast ($what)"; }
    t_fast=$(since "$t0")
    if ./ivae diff --quiet "$OUT/$m.cpu.safetensors" "$OUT/$m.fast.safetensors" > "$OUT/$m.fastdiff.log"; then
        ok "grad --cl-mode fast within SPEC 8 ($what; $(tail -n 1 "$OUT/$m.fastdiff.log" | sed 's/.*worst/worst/'); $t_fast)"
    else
        bad "grad --cl-mode fast beyond SPEC 8's tolerances ($what):"
        cat "$OUT/$m.fastdiff.log"
    fi
done

# 3: compare, strict and fast (and strict on the first variant)
for mode in strict fast; do
    if ./ivae compare $CF --cl-mode $mode "$OUT/c.safetensors" "$OUT/c.in.safetensors" > "$OUT/compare.$mode.log" 2>&1; then
        ok "compare --cl-mode $mode exits 0: $(tail -n 1 "$OUT/compare.$mode.log")"
    else
        bad "compare --cl-mode $mode:"
        grep -v "^ok" "$OUT/compare.$mode.log" | head -20
    fi
done
if ./ivae compare --cl-mode strict "$OUT/g.safetensors" "$OUT/g.in.safetensors" > "$OUT/compare.g.log" 2>&1; then
    ok "compare --cl-mode strict exits 0 on the GroupNorm variant: $(tail -n 1 "$OUT/compare.g.log")"
else
    bad "compare --cl-mode strict on the GroupNorm variant:"
    grep -v "^ok" "$OUT/compare.g.log" | head -20
fi
if grep -q "^DIFF\|^FAIL" "$OUT/compare.strict.log"; then bad "compare printed a divergence but exited 0"; fi

# 4: inference on the device (frame attention: the CPU streams, the device runs the clip whole)
CLIP=data/eval/clips/$(ls data/eval/clips | head -n 1)
$CPU1 ./ivae encode "$OUT/f.safetensors" "$CLIP" "$OUT/lat.cpu.safetensors" --frames 5 > /dev/null 2>&1 &&
    ./ivae encode --device cl "$OUT/f.safetensors" "$CLIP" "$OUT/lat.cl.safetensors" --frames 5 > /dev/null 2>&1 &&
    cmp -s "$OUT/lat.cpu.safetensors" "$OUT/lat.cl.safetensors" &&
    $CPU1 ./ivae decode "$OUT/f.safetensors" "$OUT/lat.cpu.safetensors" "$OUT/dec.cpu.y4m" > /dev/null 2>&1 &&
    ./ivae decode --device cl "$OUT/f.safetensors" "$OUT/lat.cpu.safetensors" "$OUT/dec.cl.y4m" > /dev/null 2>&1 &&
    cmp -s "$OUT/dec.cpu.y4m" "$OUT/dec.cl.y4m" &&
    ./ivae recon --device cl --cl-mode fast "$OUT/f.safetensors" "$CLIP" "$OUT/rec.cl.y4m" --frames 5 > "$OUT/recon.log" 2>&1 &&
    ok "encode, decode --device cl: the CPU's files byte for byte (5 frames of $(basename "$CLIP")); recon --cl-mode fast runs" ||
    bad "encode / decode / recon --device cl"

# 5: training on the device. Strict: the CPU run's bytes (checkpoint with
#    optimizer state, weights, the log without its time column), with every
#    guard acting (a low clip factor and spike factor make global clipping,
#    spike skips and rollbacks happen in 24 steps); the same without double on
#    the device (the host sums the floats); a run switched from the CPU to the
#    device by --resume; fast mode within tolerance of the CPU at step 1.
TR="--data data --eval-size 16 --log-every 1000 --steps 24 --warmup 3 --images 2 --crop 16 --clip-frames 5 --guard-every 2 --ckpt-every 4 --clip-factor 1 --spike-factor 1.05"
same_run() { # dir1 dir2
    cmp -s "$1/ckpt.safetensors" "$2/ckpt.safetensors" && cmp -s "$1/model.safetensors" "$2/model.safetensors" &&
        [ "$(cut -d, -f2 --complement "$1/log.csv")" = "$(cut -d, -f2 --complement "$2/log.csv")" ]
}
t0=$(now)
$CPU1 ./ivae train $TR --out "$OUT/tr.cpu" > "$OUT/tr.cpu.log" 2>&1 || { cat "$OUT/tr.cpu.log"; bad "train on the CPU"; }
t_cpu=$(since "$t0")
t0=$(now)
./ivae train $TR --device cl --out "$OUT/tr.cl" > "$OUT/tr.cl.log" 2>&1 || { cat "$OUT/tr.cl.log"; bad "train --device cl"; }
t_cl=$(since "$t0")
ev=$(awk -F, 'NR > 1 && $12 != "" {n[$12]++} END {for (k in n) printf "%s %d, ", k, n[k]}' "$OUT/tr.cpu/log.csv")
case "$ev" in *clipped*rollback*|*rollback*clipped*) ;; *) bad "the training test did not exercise the guards (events: $ev)";; esac
if same_run "$OUT/tr.cpu" "$OUT/tr.cl"; then
    ok "train --device cl (strict) == CPU: 24 steps, checkpoint, weights and log identical (events: ${ev%, }; CPU $t_cpu, OpenCL $t_cl)"
else
    bad "train --device cl (strict) differs from the CPU run"
    diff "$OUT/tr.cpu/log.csv" "$OUT/tr.cl/log.csv" | head -6
fi
grep -q "^device: OpenCL (strict kernels)" "$OUT/tr.cl.log" || bad "train --device cl did not say which device it used"
# a SPEC 9 variant trained on the device: the CPU run's bytes
TV="--data data --eval-size 16 --log-every 1000 --steps 3 --warmup 1 --images 2 --crop 16 --clip-frames 5 --block-norm groupnorm --attn-norm none --image-mode static --loss-norm sum"
$CPU1 ./ivae train $TV --out "$OUT/tv.cpu" > "$OUT/tv.cpu.log" 2>&1 &&
    ./ivae train $TV --device cl --out "$OUT/tv.cl" > "$OUT/tv.cl.log" 2>&1 && same_run "$OUT/tv.cpu" "$OUT/tv.cl" &&
    ok "train --device cl (strict) == CPU on a variant (GroupNorm blocks, no attention norm, static images, loss sum): 3 steps" ||
    bad "train --device cl on a variant differs from the CPU run (or failed: $OUT/tv.cl.log)"
IVAE_CL_NO_FP64=1 ./ivae train $TR --steps 8 --device cl --out "$OUT/tr.nofp64" > "$OUT/tr.nofp64.log" 2>&1 &&
    $CPU1 ./ivae train $TR --steps 8 --out "$OUT/tr.cpu8" > /dev/null 2>&1 && same_run "$OUT/tr.cpu8" "$OUT/tr.nofp64" &&
    ok "train --device cl without double on the device (IVAE_CL_NO_FP64=1) == CPU, 8 steps" ||
    bad "train --device cl without double on the device differs from the CPU run"
$CPU1 ./ivae train $TR --stop-after 12 --out "$OUT/tr.half" > /dev/null 2>&1 &&
    ./ivae train --data data --eval-size 16 --device cl --resume "$OUT/tr.half/ckpt.safetensors" --out "$OUT/tr.half" > "$OUT/tr.half.log" 2>&1 &&
    same_run "$OUT/tr.cpu" "$OUT/tr.half" &&
    ok "12 steps on the CPU + --resume on the device for 12 == 24 on the CPU, bit for bit" ||
    bad "a run resumed on the device differs from the CPU run"
# a device that fails mid-run (IVAE_CL_FAIL_AFTER: every launch after the
# first 5000 fails, as a lost or exhausted device would): exit 1 with one
# line that names the last checkpoint, which is intact; --device cpu
# --resume from it then gives the uninterrupted CPU run's bytes
IVAE_CL_FAIL_AFTER=5000 ./ivae train $TR --device cl --out "$OUT/tr.fail" > /dev/null 2> "$OUT/tr.fail.log"
rc=$?
if [ $rc -eq 1 ] && [ "$(wc -l < "$OUT/tr.fail.log")" -eq 1 ] && grep -q "IVAE_CL_FAIL_AFTER.*last checkpoint .*ckpt.safetensors (step [0-9]*) is intact" "$OUT/tr.fail.log"; then
    ok "a device failure mid-run: exit 1, \"$(sed 's/.*; the last/the last/' "$OUT/tr.fail.log" | cut -c1-90)...\""
else
    bad "a device failure mid-run (exit $rc):"; cat "$OUT/tr.fail.log"
fi
$CPU1 ./ivae train --data data --eval-size 16 --device cpu --resume "$OUT/tr.fail/ckpt.safetensors" --out "$OUT/tr.fail" > "$OUT/tr.fail.resume.log" 2>&1 &&
    same_run "$OUT/tr.cpu" "$OUT/tr.fail" &&
    ok "after the device failure, --device cpu --resume == the 24 CPU steps, bit for bit (log rows past the checkpoint dropped)" ||
    { bad "the run resumed on the CPU after a device failure differs from the CPU run"; tail -3 "$OUT/tr.fail.resume.log"; }
./ivae train $TR --steps 4 --device cl --cl-mode fast --out "$OUT/tr.fast" > "$OUT/tr.fast.log" 2>&1 &&
    awk -F, 'FNR == 2 {v[NR > FNR] = $3} END {e = v[0] - v[1]; e = e < 0 ? -e : e; printf "step 1 loss: CPU %.9g, fast %.9g\n", v[0], v[1]; exit !(e <= 1e-4 * v[0])}' \
        "$OUT/tr.cpu/log.csv" "$OUT/tr.fast/log.csv" > "$OUT/tr.fast.cmp" &&
    ok "train --cl-mode fast: 4 steps; $(cat "$OUT/tr.fast.cmp") (within 1e-4 relative)" ||
    { bad "train --cl-mode fast"; cat "$OUT/tr.fast.log" "$OUT/tr.fast.cmp" 2>/dev/null | tail -3; }

# 6: errors
# (OCL_ICD_VENDORS = an empty folder hides every platform from Debian's ICD
# loader; another loader ignored it on a CUDA machine, where the test skips)
if OCL_ICD_VENDORS="$PWD/$OUT/empty" ./ivae devices 2>/dev/null | grep -q "^platform 0:"; then
    echo "SKIP the no-platform checks: this ICD loader ignores OCL_ICD_VENDORS (an empty vendor folder still lists platforms)"
else
    clear_error "no OpenCL platform" "no OpenCL platform found" "$OUT/noplat.log" \
        env OCL_ICD_VENDORS="$PWD/$OUT/empty" ./ivae grad --device cl "$OUT/c.safetensors" "$OUT/c.in.safetensors" "$OUT/x.safetensors"
    for cmd in devices compare; do
        if [ $cmd = devices ]; then args=""; else args="$OUT/c.safetensors $OUT/c.in.safetensors"; fi
        OCL_ICD_VENDORS="$PWD/$OUT/empty" ./ivae $cmd $args > /dev/null 2> "$OUT/noplat.$cmd.log"
        rc=$?
        if [ $rc -eq 1 ] && grep -q "no OpenCL platform found" "$OUT/noplat.$cmd.log"; then ok "no OpenCL platform: ivae $cmd exits 1 with the message"
        else bad "no OpenCL platform: ivae $cmd (exit $rc)"; cat "$OUT/noplat.$cmd.log"; fi
    done
    if OCL_ICD_VENDORS="$PWD/$OUT/empty" $CPU1 ./ivae grad $CF "$OUT/c.safetensors" "$OUT/c.in.safetensors" "$OUT/noplat.cpu.safetensors" > /dev/null 2>&1 &&
        cmp -s "$OUT/c.cpu.safetensors" "$OUT/noplat.cpu.safetensors"; then
        ok "no OpenCL platform: grad on the CPU still works (the same bytes)"
    else
        bad "no OpenCL platform: grad on the CPU failed"
    fi
fi
clear_error "IVAE_CL_DEVICE out of range" "IVAE_CL_DEVICE=99 but platform ${IVAE_CL_PLATFORM:-0} (.*) has [0-9]* device" \
    "$OUT/baddev.log" env IVAE_CL_DEVICE=99 ./ivae grad --device cl "$OUT/c.safetensors" "$OUT/c.in.safetensors" "$OUT/x.safetensors"
mkdir -p "$OUT/lone" && cp kernels.cl ivae_math.h "$OUT/lone/" && lone=$(cd "$OUT/lone" && pwd)
clear_error "kernels.cl without kernels_fast.cl" "lone/kernels_fast.cl: cannot read it" "$OUT/nofast.log" \
    env IVAE_KERNELS="$lone/kernels.cl" ./ivae grad --device cl "$OUT/c.safetensors" "$OUT/c.in.safetensors" "$OUT/x.safetensors"

[ $fails -eq 0 ] && echo "all OpenCL program checks passed" || echo "$fails OpenCL program check(s) failed"
[ $fails -eq 0 ]
