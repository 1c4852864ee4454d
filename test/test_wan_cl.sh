#!/bin/sh
# test/test_wan_cl.sh: the Wan 2.1 VAE on the OpenCL device (wan_cl.c), end
# to end through the program (test/run.sh step 7).
#
#   1. encode / decode --device cl (strict) write the CPU's files byte for
#      byte (cmp): mu and the raw logvar, and the raw decoder output, at
#      T = 1, 5 and 9 frames (every first-chunk rule: one chunk; a second
#      chunk with 1 frame of context; a third with 2), for a reduced-width
#      model (dim 16, diffusers names) at 64x64 and the released width (dim
#      96, official names) at 32x32; 13 frames of 40x24 (dim 16); recon
#      --device cl too (dim 16); ivae compare, strict (every block's output
#      bit for bit) and fast
#   2. --cl-mode fast within SPEC 8 (ivae diff: e <= 1e-5) of the CPU's files
#      (dim 16 at T = 9, dim 96 at T = 1)
#   3. a small device, rehearsed (IVAE_CL_MAX_ALLOC): dim 96 still runs, the
#      CPU's bytes, with a cap below its weights' 508 MB; a cap below its
#      largest tensor, and a bad cap, give one clear line and exit 1;
#      --tile with --device cl is refused with one clear line
#
# Random non-trivial weights from test/wan_ref.py init (gammas U(0.5, 1.5),
# biases U(-0.1, 0.1), non-zero attention projections); inputs uniform in
# [-1, 1]. The CPU runs on one thread (its bits do not depend on the thread
# count), the device is pocl in CI. Prints a line per check with the times;
# exit status 1 if any check failed. Skips (exit 0) without an OpenCL
# platform or without python3-torch (wan_ref.py makes the weights).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-test/out/wan_cl}
PYTHON=${PYTHON:-/usr/bin/python3}
rm -rf "$OUT" && mkdir -p "$OUT"
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
T_ALL=$(now)
# clear_error WHAT PATTERN LOG COMMAND...: COMMAND must exit 1 with one line
# on stderr (kept in LOG) that matches PATTERN (grep)
clear_error() {
    what=$1 pattern=$2 log=$3
    shift 3
    "$@" > /dev/null 2> "$log"
    rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l < "$log")" -eq 1 ] && grep -q "$pattern" "$log"; then
        ok "$what: exit 1, \"$(cut -c1-150 "$log")\""
    else
        bad "$what: exit $rc, not one clear line:"; cat "$log"
    fi
}

. test/common.sh
require_device
if ! "$PYTHON" -c 'import torch, numpy' 2>/dev/null; then
    echo "SKIP: the Wan device tests make their weights with test/wan_ref.py, which needs python3-torch and python3-numpy"
    exit 0
fi

# a fresh kernel cache for this run (pocl compiles each kernel at its first
# use), so that no binary of an older kernels.cl can be tested
POCL_CACHE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ivae_wan_cl.XXXXXX")
export POCL_CACHE_DIR
trap 'rm -rf "$POCL_CACHE_DIR"' EXIT INT TERM
CPU1="env OMP_NUM_THREADS=1"

REF="$PYTHON test/wan_ref.py"
$REF init --dim 16 --z 16 --seed 1 "$OUT/d16.safetensors" > /dev/null &&
    $REF init --dim 96 --z 16 --seed 3 --layout official "$OUT/d96.safetensors" > /dev/null &&
    "$PYTHON" - "$OUT" <<'PY' || { bad "making the test models and inputs"; exit 1; }
import json, struct, sys
import numpy as np
out = sys.argv[1]
for name, T, H, W, seed in [("d16", T, 64, 64, 10 + T) for T in (1, 5, 9)] + [("d16", 13, 40, 24, 30)] + \
        [("d96", T, 32, 32, 20 + T) for T in (1, 5, 9)]:
    x = np.random.default_rng(seed).uniform(-1, 1, size=(3, T, H, W)).astype("<f4")
    h = json.dumps({"x": {"dtype": "F32", "shape": list(x.shape), "data_offsets": [0, x.nbytes]}}).encode()
    h += b" " * (-len(h) % 8)
    open(f"{out}/{name}.x{T}.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + x.tobytes())
PY

# 1, 2: every T, both widths; strict == CPU bytes, fast within tolerance
# (fast at T = 9 for dim 16, which passes every chunk rule on its way, and
# at T = 1 for dim 96: the fast kernels are tiled for GPUs and slow on a CPU
# device); and 13 frames of 40x24 (odd sizes inside: 5x3 latents)
while read -r m T size fast; do
    x="$OUT/$m.x$T.safetensors" p="$OUT/$m.$T"
    what="dim ${m#d}, $T frame$([ $T -gt 1 ] && echo s) of $size"
    t0=$(now)
    $CPU1 ./ivae encode "$OUT/$m.safetensors" "$x" "$p.lat.cpu.safetensors" > /dev/null 2> "$p.log" &&
        $CPU1 ./ivae decode "$OUT/$m.safetensors" "$p.lat.cpu.safetensors" "$p.dec.cpu.safetensors" > /dev/null 2>> "$p.log" ||
        { cat "$p.log"; bad "encode / decode on the CPU ($what)"; continue; }
    t_cpu=$(since "$t0")
    t0=$(now)
    ./ivae encode --device cl "$OUT/$m.safetensors" "$x" "$p.lat.cl.safetensors" > /dev/null 2>> "$p.log" &&
        ./ivae decode --device cl "$OUT/$m.safetensors" "$p.lat.cpu.safetensors" "$p.dec.cl.safetensors" > /dev/null 2>> "$p.log" ||
        { cat "$p.log"; bad "encode / decode --device cl ($what)"; continue; }
    t_cl=$(since "$t0")
    if cmp -s "$p.lat.cpu.safetensors" "$p.lat.cl.safetensors" && cmp -s "$p.dec.cpu.safetensors" "$p.dec.cl.safetensors"; then
        ok "encode, decode --device cl (strict) == CPU, every byte of mu, logvar and xhat ($what; CPU $t_cpu, OpenCL $t_cl)"
    else
        bad "encode / decode --device cl (strict) differ from the CPU ($what):"
        ./ivae diff --exact "$p.lat.cpu.safetensors" "$p.lat.cl.safetensors" | tail -3
        ./ivae diff --exact "$p.dec.cpu.safetensors" "$p.dec.cl.safetensors" | tail -2
    fi
    [ "$fast" = fast ] || continue
    t0=$(now)
    ./ivae encode --device cl --cl-mode fast "$OUT/$m.safetensors" "$x" "$p.lat.fast.safetensors" > /dev/null 2>> "$p.log" &&
        ./ivae decode --device cl --cl-mode fast "$OUT/$m.safetensors" "$p.lat.cpu.safetensors" "$p.dec.fast.safetensors" > /dev/null 2>> "$p.log" ||
        { cat "$p.log"; bad "encode / decode --cl-mode fast ($what)"; continue; }
    t_fast=$(since "$t0")
    if ./ivae diff "$p.lat.cpu.safetensors" "$p.lat.fast.safetensors" > "$p.fastdiff.log" &&
        ./ivae diff "$p.dec.cpu.safetensors" "$p.dec.fast.safetensors" >> "$p.fastdiff.log"; then
        ok "encode, decode --cl-mode fast within SPEC 8 ($what; worst e: $(grep -o 'e [0-9.e+-]*' "$p.fastdiff.log" | sort -k2 -g | tail -n 1 | cut -c3-); $t_fast)"
    else
        bad "encode / decode --cl-mode fast beyond SPEC 8 ($what):"
        grep -v "^ok" "$p.fastdiff.log"
    fi
done <<EOF
d16 1 64x64 -
d16 5 64x64 -
d16 9 64x64 fast
d16 13 40x24 -
d96 1 32x32 fast
d96 5 32x32 -
d96 9 32x32 -
EOF

# recon: the same program path, both halves on the device
if $CPU1 ./ivae recon "$OUT/d16.safetensors" "$OUT/d16.x5.safetensors" "$OUT/rec.cpu.safetensors" > /dev/null 2>&1 &&
    ./ivae recon --device cl "$OUT/d16.safetensors" "$OUT/d16.x5.safetensors" "$OUT/rec.cl.safetensors" > "$OUT/rec.log" 2>&1 &&
    cmp -s "$OUT/rec.cpu.safetensors" "$OUT/rec.cl.safetensors"; then
    ok "recon --device cl == CPU, byte for byte (dim 16, 5 frames)"
else
    bad "recon --device cl"; cat "$OUT/rec.log"
fi

# compare: every block's output, chunk by chunk, CPU against the device
for mode in strict fast; do
    if ./ivae compare --cl-mode $mode "$OUT/d16.safetensors" "$OUT/d16.x5.safetensors" > "$OUT/compare.$mode.log" 2>&1; then
        ok "compare --cl-mode $mode (dim 16, 5 frames): $(tail -n 1 "$OUT/compare.$mode.log")"
    else
        bad "compare --cl-mode $mode: $(tail -n 1 "$OUT/compare.$mode.log")"
    fi
done

# 3: a small device. The cap (32 MiB) is below the weights (508 MB) and above
#    every tensor (the largest, a 384 -> 384 3x3x3 conv, is 15.19 MiB)
t0=$(now)
if IVAE_CL_MAX_ALLOC=33554432 ./ivae decode --device cl "$OUT/d96.safetensors" "$OUT/d96.1.lat.cpu.safetensors" \
        "$OUT/cap.dec.safetensors" > /dev/null 2> "$OUT/cap.log" &&
    cmp -s "$OUT/d96.1.dec.cpu.safetensors" "$OUT/cap.dec.safetensors"; then
    ok "IVAE_CL_MAX_ALLOC=32 MiB (below the 508 MB of weights): dim 96 decodes on the device, the CPU's bytes ($(since "$t0"))"
else
    bad "IVAE_CL_MAX_ALLOC=32 MiB: dim 96 did not decode to the CPU's bytes"; cat "$OUT/cap.log"
fi
clear_error "IVAE_CL_MAX_ALLOC=8 MiB (below the largest tensor)" "tensor '.*': 15.19 MiB in one buffer, more than .* allows (8 MiB, IVAE_CL_MAX_ALLOC)" \
    "$OUT/cap8.log" env IVAE_CL_MAX_ALLOC=8388608 ./ivae decode --device cl "$OUT/d96.safetensors" "$OUT/d96.1.lat.cpu.safetensors" "$OUT/x.safetensors"
clear_error "IVAE_CL_MAX_ALLOC=lots" "IVAE_CL_MAX_ALLOC=lots is not a size in bytes" "$OUT/capbad.log" \
    env IVAE_CL_MAX_ALLOC=lots ./ivae encode --device cl "$OUT/d16.safetensors" "$OUT/d16.x1.safetensors" "$OUT/x.safetensors"
clear_error "--tile with --device cl" "tiling runs on the CPU only" "$OUT/tile.log" \
    ./ivae decode --device cl --tile 32 "$OUT/d16.safetensors" "$OUT/d16.1.lat.cpu.safetensors" "$OUT/x.safetensors"

echo "($(since "$T_ALL") in all)"
[ $fails -eq 0 ] && echo "all Wan 2.1 OpenCL checks passed" || echo "$fails Wan 2.1 OpenCL check(s) failed"
[ $fails -eq 0 ]
