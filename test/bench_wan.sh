#!/bin/sh
# test/bench_wan.sh: the Wan 2.1 VAE's encode and decode, ivae (wan.c) side by
# side with the project's PyTorch port in float32 (test/wan_ref.py bench), in
# one run: frames/s, peak RSS, and the ratio ivae / PyTorch.
#
#   sh test/bench_wan.sh [--frames 17] [--size 256x256] [--threads 2] [--dim 96] [--no-torch]
#
# Random non-trivial weights of the given width (the timing does not depend
# on their values); one process per measurement, so peak RSS is that
# operation's alone. `make bench` runs it with the defaults; the 480p record
# of the Wan issue is --frames 81 --size 480x832 --no-torch.
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
frames=17 size=256x256 threads=2 dim=96 torch=yes
while [ $# -gt 0 ]; do
    case $1 in
    --frames) frames=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --dim) dim=$2; shift 2 ;;
    --no-torch) torch=no; shift ;;
    *) echo "bench_wan.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x test/bench_wan ] || make -s test/bench_wan
if [ $torch = yes ] && ! "$PYTHON" -c 'import torch' 2>/dev/null; then
    echo "bench_wan.sh: no python3-torch: ivae rows only" >&2
    torch=no
fi
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

echo "Wan 2.1 VAE, dim $dim, ${frames} x ${size}, $threads threads (float32)"
printf '%-8s %12s %12s %10s %12s %12s %8s\n' op "ivae fps" "torch fps" ratio "ivae MB" "torch MB" "ivae s"
for op in encode decode; do
    r=$(OMP_NUM_THREADS=$threads ./test/bench_wan $op --dim "$dim" --frames "$frames" --size "$size")
    fi=$(field "$r" fps); mi=$(field "$r" peak_rss_mb); si=$(field "$r" seconds)
    ft=- mt=- ratio=-
    if [ $torch = yes ]; then
        t=$(OMP_NUM_THREADS=$threads "$PYTHON" test/wan_ref.py bench --what $op --dim "$dim" --frames "$frames" \
            --size "$size" --threads "$threads")
        ft=$(field "$t" fps); mt=$(field "$t" peak_rss_mb)
        ratio=$(awk -v a="$fi" -v b="$ft" 'BEGIN { printf "%.2fx", a / b }')
        ratios="${ratios:-} $(awk -v a="$fi" -v b="$ft" 'BEGIN { print a / b }')"
    fi
    printf '%-8s %12s %12s %10s %12s %12s %8s\n' $op "$fi" "$ft" "$ratio" "$mi" "$mt" "$si"
done
[ -n "${ratios:-}" ] && echo "$ratios" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += log($i)
    printf "summary wan: geometric mean of the ratios ivae fps / PyTorch fps %.2fx over %d rows\n", exp(s / NF), NF }'
exit 0
