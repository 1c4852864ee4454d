#!/bin/sh
# test/test_mpi.sh: data-parallel `ivae train` over MPI on localhost (dist.c,
# SPEC 8.2: the same bits for any number of ranks).
#   1. 8 steps with mpirun -np 1, 2 and 4 == the same 8 steps by one process
#      without MPI: the checkpoint (weights, moments, guard history, RNG)
#      byte for byte. The batch is 5 samples (1 clip of 5 frames, 4 images),
#      cut by pixels into blocks of 1 + 4 and 1 + 1 + 1 + 2 samples.
#   2. -np 2 for 4 steps, --resume with -np 1 for 4 more == 8 straight; and
#      one process for 4, -np 4 for the rest; SIGTERM to rank 0 stops every
#      rank at a good state, and that resumes to the same bits
#   3. --device cl (strict) with -np 2 == the CPU run, when there is a device
#   4. a rank that fails ends the whole job, with its one-line message and a
#      non-zero exit, within a time limit (no hang): bad data on rank 1 at
#      setup; a checkpoint rank 0 cannot write, mid-run, while rank 1 goes on;
#      ranks that start from different states (another --seed); a file whose
#      header is good and body corrupt, decoded on demand mid-run
#   5. each rank decodes only the files its samples come from (train.c reads
#      the training split on demand): 2 steps of 1 clip + 1 image touch at
#      most 2 of the training files per rank, and rank 1 never reads the held-out
#      split (its copy of it is broken); the checkpoint still == one process;
#      a cache of 1 MB (--data-cache-mb: files dropped and decoded again)
#      changes no bit
# SKIPs (exit 0) when mpirun is missing or ./ivae was built without MPI.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-test/out/mpi}
rm -rf "$OUT" && mkdir -p "$OUT"
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
# Open MPI refuses root without these (CI runs as root); oversubscribe: more
# ranks than the 2 cores; one OpenMP thread per rank
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none # containers forbid the cross-process copy (CMA)
MPIRUN="timeout 120 mpirun --oversubscribe"

if ! command -v mpirun > /dev/null; then
    echo "SKIP: no mpirun (apt-get install openmpi-bin libopenmpi-dev, then rebuild)"
    exit 0
fi
if ! $MPIRUN -np 2 ./ivae train --help > "$OUT/probe.log" 2>&1; then
    if grep -q "built without MPI" "$OUT/probe.log"; then
        echo "SKIP: ./ivae was built without MPI (make NO_MPI=1, or make found no mpicc: apt-get install openmpi-bin libopenmpi-dev, then rebuild)"
        exit 0
    fi
    cat "$OUT/probe.log"
    bad "mpirun -np 2 ./ivae train --help"
    exit 1
fi

Q="--data data --eval-size 16 --eval-every 0 --log-every 1000 --warmup 2 --guard-every 4 --ckpt-every 4 --clips 1 --clip-frames 5 --images 4 --crop 16"

# 1. -np 1, 2, 4 against one process without MPI
./ivae train $Q --steps 8 --out "$OUT/single" > "$OUT/single.log" 2>&1 || { cat "$OUT/single.log"; bad "the single-process run"; }
for n in 1 2 4; do
    if ! $MPIRUN -np $n ./ivae train $Q --steps 8 --out "$OUT/np$n" > "$OUT/np$n.log" 2>&1; then
        cat "$OUT/np$n.log"
        bad "mpirun -np $n"
    elif cmp -s "$OUT/single/ckpt.safetensors" "$OUT/np$n/ckpt.safetensors" &&
         cmp -s "$OUT/single/model.safetensors" "$OUT/np$n/model.safetensors"; then
        ok "8 steps with -np $n == one process without MPI: checkpoint and weights byte for byte"
    else
        bad "-np $n differs from one process:"
        ./ivae diff --exact --quiet "$OUT/single/ckpt.safetensors" "$OUT/np$n/ckpt.safetensors" | head -5
    fi
done
[ "$(grep -c '^step' "$OUT/np2/log.csv" 2>/dev/null)" -eq 1 ] && [ "$(wc -l < "$OUT/np2/log.csv")" -eq 9 ] &&
    grep -q "^data parallel: 2 ranks .*per rank: 1 4$" "$OUT/np2.log" && grep -q "per rank: 1 1 1 2$" "$OUT/np4.log" && [ "$(grep -c '^done:' "$OUT/np2.log")" -eq 1 ] &&
    ok "rank 0 alone logs: one header and 8 rows in log.csv, one 'done' line; blocks of 1 + 4 and 1 + 1 + 1 + 2 samples" || bad "the log of -np 2 (more than rank 0 wrote?) or the blocks"

# 2. resume with another number of ranks
$MPIRUN -np 2 ./ivae train $Q --steps 8 --stop-after 4 --out "$OUT/r21" > "$OUT/r21a.log" 2>&1 &&
./ivae train --data data --eval-size 16 --resume "$OUT/r21/ckpt.safetensors" --out "$OUT/r21" > "$OUT/r21b.log" 2>&1 ||
    { cat "$OUT/r21a.log" "$OUT/r21b.log"; bad "-np 2 then --resume with one process"; }
cmp -s "$OUT/single/ckpt.safetensors" "$OUT/r21/ckpt.safetensors" &&
    ok "-np 2 for 4 steps + --resume with -np 1 for 4 == 8 straight" || bad "-np 2 + resume -np 1 is not exact"
./ivae train $Q --steps 8 --stop-after 4 --out "$OUT/r14" > "$OUT/r14a.log" 2>&1 &&
$MPIRUN -np 4 ./ivae train --data data --eval-size 16 --resume "$OUT/r14/ckpt.safetensors" --out "$OUT/r14" > "$OUT/r14b.log" 2>&1 ||
    { cat "$OUT/r14a.log" "$OUT/r14b.log"; bad "one process then --resume with -np 4"; }
cmp -s "$OUT/single/ckpt.safetensors" "$OUT/r14/ckpt.safetensors" &&
    ok "one process for 4 steps + --resume with -np 4 for 4 == 8 straight" || bad "1 + resume -np 4 is not exact"

#    a run stopped by SIGTERM to rank 0 (mpirun itself kills the job on a
#    signal): every rank stops at the next good state, rank 0 writes the
#    checkpoint, exit 0; resuming it with -np 2 gives the 8 steps straight
$MPIRUN -np 2 sh -c 'echo $$ > "$0.$OMPI_COMM_WORLD_RANK"; exec ./ivae train "$@"' "$OUT/intr.pid" $Q --steps 8 \
    --log-every 1 --out "$OUT/intr" > "$OUT/intr.log" 2>&1 &
job=$!
for i in $(seq 300); do [ "$(cat "$OUT/intr/log.csv" 2>/dev/null | wc -l)" -gt 2 ] && break; sleep 0.1; done
kill -TERM "$(cat "$OUT/intr.pid.0")"
wait $job
rc=$?
step=$(sed -n 's/^interrupted: stopping at step \([0-9]*\).*/\1/p' "$OUT/intr.log")
if [ $rc -eq 0 ] && { [ -z "$step" ] || [ "$step" = 8 ]; } && grep -q "^done: 8 steps" "$OUT/intr.log"; then
    echo "SKIP the SIGTERM test: the run finished before the signal came (a fast machine)"
elif [ $rc -eq 0 ] && [ "$step" = 4 ] &&
     $MPIRUN -np 2 ./ivae train --data data --eval-size 16 --resume "$OUT/intr/ckpt.safetensors" --out "$OUT/intr" > "$OUT/intr2.log" 2>&1 &&
     cmp -s "$OUT/single/ckpt.safetensors" "$OUT/intr/ckpt.safetensors"; then
    ok "SIGTERM to rank 0: all ranks stopped at step 4 (a good state), exit 0; resumed with -np 2 == 8 straight"
else
    cat "$OUT/intr.log"
    bad "SIGTERM to rank 0 (exit $rc, stopped at step '$step')"
fi

# 3. the strict OpenCL path, one device shared by both ranks
if ./ivae devices > "$OUT/devices.log" 2>&1; then
    if $MPIRUN -np 2 ./ivae train $Q --steps 8 --device cl --out "$OUT/cl2" > "$OUT/cl2.log" 2>&1 &&
       cmp -s "$OUT/single/ckpt.safetensors" "$OUT/cl2/ckpt.safetensors"; then
        ok "--device cl (strict) with -np 2 == one process on the CPU, byte for byte"
    else
        cat "$OUT/cl2.log"
        bad "--device cl -np 2 differs from the CPU run"
    fi
else
    echo "SKIP --device cl with -np 2: $(tail -n 1 "$OUT/devices.log")"
fi

# 4. failures end the job
#    a. rank 1 sees a broken image in its copy of the data (node-local data)
mkdir -p "$OUT/bad/train/images"
ln -s "$PWD/data/train/clips" "$OUT/bad/train/clips"
for f in data/train/images/*; do ln -s "$PWD/$f" "$OUT/bad/train/images/"; done
printf 'not a png' > "$OUT/bad/train/images/zz_broken.png"
$MPIRUN -np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then d=$0; else d=data; fi; exec ./ivae train "$@" --data "$d"' \
    "$OUT/bad" $Q --steps 8 --out "$OUT/fail1" > "$OUT/fail1.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "^ivae: error: .*zz_broken.png: cannot decode image" "$OUT/fail1.log"; then
    ok "bad data on rank 1: the job ends (exit $rc) with '$(grep '^ivae: error' "$OUT/fail1.log")'"
else
    cat "$OUT/fail1.log"
    bad "bad data on rank 1 did not end the job cleanly (exit $rc; 124 = hung until the timeout)"
fi
#    b. rank 0 cannot write its checkpoint at step 4 (a folder is in the
#       way); rank 1 is already waiting for step 5
mkdir -p "$OUT/fail2/ckpt.safetensors/x"
$MPIRUN -np 2 ./ivae train $Q --steps 8 --out "$OUT/fail2" > "$OUT/fail2.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "^ivae: error: .*ckpt.safetensors" "$OUT/fail2.log"; then
    ok "rank 0 fails mid-run: the job ends (exit $rc) with '$(grep '^ivae: error' "$OUT/fail2.log" | head -n 1)'"
else
    cat "$OUT/fail2.log"
    bad "a failure of rank 0 mid-run did not end the job cleanly (exit $rc; 124 = hung until the timeout)"
fi
#    c. ranks that do not start from the same state (another --seed on rank 1)
$MPIRUN -np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then s=2; else s=1; fi; exec ./ivae train "$@" --seed $s' sh $Q --steps 1 \
    --out "$OUT/fail4" > "$OUT/fail4.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "^ivae: error: train: rank 1 does not start where rank 0 does" "$OUT/fail4.log"; then
    ok "rank 1 with another --seed: the job ends (exit $rc) with '$(grep '^ivae: error' "$OUT/fail4.log" | head -n 1)'"
else
    cat "$OUT/fail4.log"
    bad "ranks that disagree were not stopped (exit $rc)"
fi
#    d. more ranks than samples
if $MPIRUN -np 6 ./ivae train $Q --steps 1 --out "$OUT/fail3" > "$OUT/fail3.log" 2>&1; then
    bad "-np 6 with a batch of 5 ran"
elif grep -q "^ivae: error: train: 6 ranks but 5 samples per batch" "$OUT/fail3.log"; then
    ok "-np 6 with a batch of 5: '$(grep '^ivae: error' "$OUT/fail3.log" | head -n 1)'"
else
    cat "$OUT/fail3.log"
    bad "-np 6 with a batch of 5: no clear message"
fi

#    e. a training image whose header is good and whose body is cut (half of
#       a PNG: the IDAT runs past the end): setup only probes headers, so the
#       job starts; the image is decoded when rank 1 first crops from it,
#       mid-run, which ends the job naming the file; the last checkpoint
#       (written at step 2 from good data) is intact
C="--eval-size 16 --eval-every 0 --log-every 1000 --warmup 2 --guard-every 1 --ckpt-every 1 --clips 1 --clip-frames 5 --images 1 --crop 16"
mkdir -p "$OUT/cut/train/images"
ln -s "$PWD/data/train/clips" "$OUT/cut/train/clips"
for f in data/train/images/*; do
    head -c $(($(wc -c < "$f") / 2)) "$f" > "$OUT/cut/train/images/$(basename "$f")"
done
$MPIRUN -np 2 ./ivae train --data data $C --steps 4 --stop-after 2 --out "$OUT/cut_run" > "$OUT/cut_a.log" 2>&1 ||
    { cat "$OUT/cut_a.log"; bad "2 steps on good data (setup of the corrupt-body test)"; }
cp "$OUT/cut_run/ckpt.safetensors" "$OUT/cut_ckpt_step2"
start=$(date +%s)
$MPIRUN -np 2 ./ivae train --data "$OUT/cut" --eval-size 16 --resume "$OUT/cut_run/ckpt.safetensors" --out "$OUT/cut_run" \
    > "$OUT/cut_b.log" 2>&1
rc=$?
line=$(grep '^ivae: error' "$OUT/cut_b.log" | head -n 1)
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$(grep -c '^ivae: error' "$OUT/cut_b.log")" -eq 1 ] &&
   echo "$line" | grep -q "cut/train/images/.*\.png: cannot decode image .*(rank 1); the last checkpoint .*cut_run/ckpt.safetensors (step 2) is intact" &&
   cmp -s "$OUT/cut_ckpt_step2" "$OUT/cut_run/ckpt.safetensors"; then
    ok "a corrupt body, decoded on demand mid-run: the job ends (exit $rc, $(($(date +%s) - start)) s) with '$line'; the checkpoint is unchanged"
else
    cat "$OUT/cut_b.log"
    bad "a corrupt body decoded mid-run did not end the job cleanly (exit $rc; 124 = hung until the timeout)"
fi

# 5. each rank decodes only what its own samples need; rank 0 alone reads
#    the held-out split (rank 1's copy of it is broken and never opened)
mkdir -p "$OUT/noeval/eval/images"
ln -s "$PWD/data/train" "$OUT/noeval/train"
printf 'not a png' > "$OUT/noeval/eval/images/broken.png"
./ivae train --data data $C --steps 2 --out "$OUT/lazy1" > "$OUT/lazy1.log" 2>&1 || { cat "$OUT/lazy1.log"; bad "the one-process run of 2 steps"; }
$MPIRUN -np 2 sh -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then d=$0; else d=data; fi; exec ./ivae train "$@" --data "$d"' \
    "$OUT/noeval" $C --steps 2 --out "$OUT/lazy2" > "$OUT/lazy2.log" 2>&1 || { cat "$OUT/lazy2.log"; bad "-np 2, rank 1 without the held-out split"; }
total=$(($(ls data/train/clips | wc -l) + $(ls data/train/images | wc -l)))
counts=$(sed -n "s/^data: rank 0 decoded \([0-9]*\) of $total training files, rank 1 decoded \([0-9]*\) of $total training files$/\1 \2/p" "$OUT/lazy2.log")
set -- $counts
if [ $# -eq 2 ] && [ "$1" -ge 1 ] && [ "$1" -le 2 ] && [ "$2" -ge 1 ] && [ "$2" -le 2 ] &&
   cmp -s "$OUT/lazy1/ckpt.safetensors" "$OUT/lazy2/ckpt.safetensors"; then
    ok "2 steps of 1 clip + 1 image with -np 2: rank 0 decoded $1 and rank 1 $2 of the $total training files, rank 1 never read the held-out split; checkpoint == one process"
else
    grep '^data' "$OUT/lazy2.log"
    bad "-np 2 decoded more than its samples need ('$counts' of $total), or differs from one process"
fi
#    the cache bounded to 1 MB: a 17-frame clip alone is 3.3 MB, so files
#    are dropped and decoded again; decoding is deterministic: the same bits
$MPIRUN -np 2 ./ivae train $Q --steps 8 --data-cache-mb 1 --out "$OUT/cache1" > "$OUT/cache1.log" 2>&1 || { cat "$OUT/cache1.log"; bad "-np 2 --data-cache-mb 1"; }
if grep -q "^data: rank 0 .*decodes.*; the cache (--data-cache-mb 1) dropped files" "$OUT/cache1.log" &&
   cmp -s "$OUT/single/ckpt.safetensors" "$OUT/cache1/ckpt.safetensors"; then
    ok "-np 2 with --data-cache-mb 1 ($(sed -n 's/^data: //p' "$OUT/cache1.log")) == one process, byte for byte"
else
    grep '^data' "$OUT/cache1.log"
    bad "--data-cache-mb 1 dropped nothing, or changed the bits"
fi

[ $fails -eq 0 ] || { echo "$fails MPI check(s) failed"; exit 1; }
