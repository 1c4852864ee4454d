#!/bin/sh
# test/bench_busy.sh: ivae's speed on a machine that is not idle (issue 12,
# item 6). `ivae grad` of ivae-xs on one 17 x 32 x 32 clip, best of 3, with
#   - ivae's default (util.c, ivae_wait_passively: when other threads are
#     running as it starts, only the free cores, waiting passively),
#   - one thread (OMP_NUM_THREADS=1),
#   - the OpenMP runtime's own default, which ivae had before
#     (IVAE_WAIT_POLICY_SET=1 turns ivae's choice off: every core, and
#     each waiting thread spins some 300 000 rounds before it sleeps),
# on the idle machine and beside two kinds of load on one core: a shell that
# forks /bin/true in a loop (a busy process that forks often, as a fuzzer
# in fork mode) and a plain busy loop. The target: the default never slower
# than one thread, and on the idle machine no slower than before.
#
#   sh test/bench_busy.sh [--reps 3]
set -eu
cd "$(dirname "$0")/.."
reps=3
[ "${1:-}" = --reps ] && reps=$2
[ -x ./ivae ] || make -s ivae
dir=$(mktemp -d)
trap 'kill $load 2>/dev/null || true; rm -rf "$dir"' EXIT
load=
model=models/ivae-xs.safetensors
[ -f "$model" ] || { ./ivae init --config ivae-xs --seed 1 "$dir/m.safetensors" > /dev/null; model=$dir/m.safetensors; }
./ivae batch "$model" "$dir/b.safetensors" --clip 17x32x32 > /dev/null

best() { # best wall time of $reps runs of ivae grad under the environment "$@"
    b=
    for _ in $(seq "$reps"); do
        t0=$(date +%s.%N)
        env "$@" ./ivae grad "$model" "$dir/b.safetensors" "$dir/g.safetensors" > /dev/null
        b=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" -v b="$b" 'BEGIN { t = t1 - t0; print (b == "" || t < b) ? t : b }')
    done
    echo "$b"
}

echo "ivae grad, ivae-xs, 17 x 32 x 32, best of $reps, seconds ($(nproc) cores)"
printf '%-22s %10s %10s %14s %16s\n' load default "1 thread" "spin (before)" "default/1 thread"
for kind in idle fork-loop busy-loop; do
    case $kind in
    fork-loop) sh -c 'while :; do /bin/true; done' & load=$! ;;
    busy-loop) sh -c 'while :; do :; done' & load=$! ;;
    esac
    d=$(best IVAE_BENCH=1)
    one=$(best OMP_NUM_THREADS=1)
    spin=$(best IVAE_WAIT_POLICY_SET=1)
    printf '%-22s %10.3f %10.3f %14.3f %15.2fx\n' "$kind" "$d" "$one" "$spin" "$(awk -v a="$d" -v b="$one" 'BEGIN { print a / b }')"
    [ -n "$load" ] && { kill "$load"; wait "$load" 2>/dev/null || true; load=; }
done
