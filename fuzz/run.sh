#!/bin/sh
# fuzz/run.sh SECONDS TARGET...: runs each libFuzzer harness fuzz/bin/TARGET
# for SECONDS on one core, from its seeds fuzz/corpus/TARGET plus the corpus
# it grew before (fuzz/out/corpus/TARGET), and prints one line per target:
# executions, corpus size, findings (crash/leak/timeout/oom files, kept in
# fuzz/out/TARGET/). Exits non-zero when any target has a finding.
# Leak detection is on for every target (fuzz/train_die.h frees what a
# dying path of train.c held).
# FUZZ_RUNS=N also stops each target after N executions (the 10^6 of the
# hardening issue: FUZZ_RUNS=1000000 with a generous SECONDS).
set -u
cd "$(dirname "$0")/.."
secs=$1
shift
bad=0
printf '%-12s %12s %10s %8s\n' target executions exec/s findings
for t in "$@"; do
    out=fuzz/out/$t
    mkdir -p "$out" "fuzz/out/corpus/$t"
    leaks=1
    case $t in *_msan) leaks=0 ;; esac
    # images of at most 2^20 pixels: the fuzzer explores structure, not
    # allocations of hundreds of MB (the limit itself is bad_input.py's)
    IVAE_MAX_PIXELS=${IVAE_MAX_PIXELS:-1048576} \
    ASAN_OPTIONS="detect_leaks=$leaks:allocator_may_return_null=1" UBSAN_OPTIONS=print_stacktrace=1 \
        "fuzz/bin/$t" -max_total_time="$secs" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -print_final_stats=1 -rss_limit_mb=2560 -malloc_limit_mb=2048 \
        -timeout=20 -artifact_prefix="$out/" "fuzz/out/corpus/$t" "fuzz/corpus/${t%_msan}" > "$out/log.txt" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log.txt" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log.txt" | tail -n 1)
    found=$(ls "$out" | grep -c -E '^(crash|leak|timeout|oom)-')
    [ "$rc" -ne 0 ] && [ "$found" -eq 0 ] && found="rc=$rc"
    printf '%-12s %12s %10s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$found"
    if [ "$found" != 0 ]; then
        bad=1
        grep -m 3 -E 'ERROR|runtime error|SUMMARY' "$out/log.txt" | sed 's/^/    /'
    fi
done
exit $bad
