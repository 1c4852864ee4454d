#!/bin/sh
# test/test_lessons.sh: the plumbing of `ivae lessons` and the SPEC 9
# training flags (not the lessons' conclusions: two steps per arm).
#   - every arm of every lesson trains and is evaluated; lessons.md has a
#     table per lesson with every arm, lessons.csv a row per arm, and each
#     lesson its picture grid;
#   - each run's checkpoint records its variant in the metadata;
#   - a second call reuses every run (the same recipe) and trains nothing;
#   - a resumed run keeps its architecture: --block-norm on --resume with
#     another value is refused; bad variant names are refused.
set -u
OUT=${OUT:-test/out/lessons}
rm -rf "$OUT"
mkdir -p "$OUT"
fails=0
fail() { echo "FAIL: $1"; fails=$((fails + 1)); }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
ARGS="--steps 2 --seeds 1 --crop 16 --images 2 --eval-size 16 --eval-frames 5 --out $OUT/les"

./ivae lessons $ARGS > "$OUT/lessons.log" 2>&1 || { tail -n 20 "$OUT/lessons.log"; fail "ivae lessons"; }
tail -n 1 "$OUT/lessons.log"
L=$OUT/les
# 7 lessons, 17 arms, one seed
[ "$(grep -c '^## ' "$L/lessons.md")" = 7 ] || fail "lessons.md: expected 7 lessons"
[ "$(grep -c '^| .* `' "$L/lessons.md")" = 17 ] || fail "lessons.md: expected 17 arm rows"
[ "$(tail -n +2 "$L/lessons.csv" | wc -l)" = 17 ] || fail "lessons.csv: expected 17 rows"
for n in loss images blocks attention opl jpeg beta; do
    [ -s "$L/lesson_$n.png" ] || fail "no picture grid lesson_$n.png"
done
# finite numbers in every row (the held-out PSNRs of every arm)
awk -F, 'NR > 1 && !($5 > 5 && $5 < 99 && $7 > 5 && $7 < 99) {bad = 1; print "bad row: " $0} END {exit bad}' "$L/lessons.csv" || fail "lessons.csv: a PSNR out of range"

# the variant in each run's checkpoint metadata
meta() { "$PYTHON" -c 'import json, struct, sys
d = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", d[:8])[0]
print(json.loads(d[8:8 + n]).get("__metadata__", {}).get(sys.argv[2], "-"))' "$1" "$2"; }
PYTHON=${PYTHON:-/usr/bin/python3}
[ "$(meta "$L/runs/block-norm_groupnorm/seed1/ckpt.safetensors" block_norm)" = groupnorm ] || fail "block_norm not recorded"
[ "$(meta "$L/runs/attn-norm_none/seed1/model.safetensors" attn_norm)" = none ] || fail "attn_norm not recorded"
[ "$(meta "$L/runs/loss-norm_mean/seed1/ckpt.safetensors" loss_norm)" = mean ] || fail "loss_norm not recorded"
[ "$(meta "$L/runs/image-mode_static/seed1/ckpt.safetensors" image_mode)" = static ] || fail "image_mode not recorded"
[ "$(meta "$L/runs/jpeg-quality_30/seed1/ckpt.safetensors" opt.jpeg-quality)" = 30 ] || fail "jpeg quality not in the recipe"
[ "$(meta "$L/runs/default/seed1/ckpt.safetensors" block_norm)" = - ] || fail "the default model names a variant"

# the second call reuses everything
./ivae lessons $ARGS > "$OUT/again.log" 2>&1 || fail "ivae lessons (again)"
[ "$(grep -c 'reused' "$OUT/again.log")" = 11 ] || { cat "$OUT/again.log"; fail "the second call did not reuse the 11 runs"; }
grep -q 'training \.\.\.' "$OUT/again.log" && fail "the second call trained again"

# a resumed run keeps its architecture; bad names are refused
out=$(./ivae train --resume "$L/runs/default/seed1/ckpt.safetensors" --block-norm groupnorm --steps 3 --out "$OUT/r" 2>&1) && fail "resume with another --block-norm accepted"
echo "$out" | grep -q 'keeps its architecture' || fail "resume with another --block-norm: message: $out"
out=$(./ivae train --block-norm batchnorm --steps 1 --out "$OUT/r" 2>&1) && fail "--block-norm batchnorm accepted"
echo "$out" | grep -q "expected smc or groupnorm" || fail "--block-norm batchnorm: message: $out"
out=$(./ivae init --attn-norm layernorm "$OUT/x.safetensors" 2>&1) && fail "init --attn-norm layernorm accepted"
echo "$out" | grep -q "pixelnorm, groupnorm or none" || fail "init --attn-norm layernorm: message: $out"
out=$(./ivae init --config ivae-xs --block-norm groupnorm --base-ch 12 "$OUT/x.safetensors" 2>&1) && fail "GroupNorm with 12 channels accepted"
echo "$out" | grep -q "multiples of 8" || fail "GroupNorm with 12 channels: message: $out"

[ $fails = 0 ] && echo "lessons: the plumbing of 17 arms, reuse, variant metadata, refusals: ok"
exit $((fails > 0))
