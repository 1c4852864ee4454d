/*
 * dist.c: dist.h over MPI (built when the Makefile finds mpicc).
 *
 * The exchange of SPEC 8.2. The batch gradient is the left fold, in sample
 * order, of the samples' gradients, so no rank can add its samples before
 * the ranks in front of it have added theirs; what can run side by side is
 * everything before the fold (every sample's forward and backward pass),
 * and the fold itself is cheap. So the ranks form a chain 0 -> 1 -> ... ->
 * N-1: rank 0 sends the fold of its block (computed in place, as one
 * process would), each next rank receives the sum so far, adds its samples'
 * gradients one after the other and passes it on, and the last rank's sum,
 * the batch's gradient, is broadcast to all. The chain runs in chunks of
 * CHUNK floats, so it is a pipeline: while rank r adds chunk c, rank r + 1
 * adds chunk c - 1. Per step each rank receives and sends the gradient about
 * once in the chain and once in the broadcast (README: scaling).
 */
#include "dist.h"
#include "util.h"

#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int rank = 0, size = 1, joined = 0;
static double t_exchange;   /* seconds in dist_exchange, waiting included */
static double bytes_chain;  /* gradient bytes this rank sent and received in the chain */
static long n_exchange;
static double cpu_last, cpu_compute; /* process CPU seconds: at the last exchange's end; between exchanges */

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* at exit: a rank that fails ends the job (the others may be waiting for it
   in an exchange); one that ends well leaves MPI */
static void on_end(int status, void *arg) {
    int done = 0;
    if (!joined) return;
    if (status != 0) MPI_Abort(MPI_COMM_WORLD, status);
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

void dist_init(void) {
    /* started by a launcher: Open MPI's mpirun, MPICH's hydra, PMIx (srun) */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK")) return;
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) die("MPI_Init failed");
    joined = 1;
    on_exit(on_end, NULL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
}

int dist_rank(void) { return rank; }
int dist_size(void) { return size; }

const char *dist_describe(void) {
    static char buf[MPI_MAX_LIBRARY_VERSION_STRING + 8];
    int len;
    if (!joined) return "MPI built in, one process (no launcher)";
    MPI_Get_library_version(buf, &len);
    buf[strcspn(buf, ",\n")] = 0; /* the first part: "Open MPI v4.1.4" */
    return buf;
}

static int *first; /* (size + 1) rank r's samples are [first[r], first[r + 1]) */

/* each cut where the cost so far comes nearest r / N of the whole, leaving
   every rank one sample at least (the same on every rank: the same costs) */
int dist_plan(const double *cost, int B) {
    if (B < size) {
        ivae_set_error("%d ranks but %d samples per batch (each rank needs one at least)", size, B);
        return -1;
    }
    double total = 0, sum = 0;
    for (int i = 0; i < B; i++) total += cost[i];
    free(first);
    first = xcalloc(size + 1, sizeof(int));
    first[size] = B;
    int i = 0; /* sum = cost of samples [0, i) */
    for (int r = 1; r < size; r++) {
        double goal = total * r / size;
        if (i < first[r - 1] + 1) sum += cost[i], i++;
        while (i < B - (size - r) && fabs(sum + cost[i] - goal) <= fabs(sum - goal)) sum += cost[i], i++;
        first[r] = i;
    }
    return 0;
}

void dist_block(int r, int *i0, int *i1) {
    *i0 = first[r];
    *i1 = first[r + 1];
}

int dist_owner(int i) {
    int r = 0;
    while (r + 1 < size && first[r + 1] <= i) r++;
    return r;
}

void dist_bcast(void *buf, size_t bytes, int root) {
    if (size == 1) return;
    for (size_t off = 0; off < bytes; off += INT_MAX / 2) {
        size_t len = bytes - off < INT_MAX / 2 ? bytes - off : INT_MAX / 2;
        MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, root, MPI_COMM_WORLD);
    }
}

enum { CHUNK = 1 << 18 }; /* floats per message of the chain (1 MiB) */

int dist_exchange(void *ctx, IvaeSplit *s, int n_g, size_t n, int B) {
    double t0 = now_s();
    if (n_exchange > 0) cpu_compute += cpu_now() - cpu_last; /* the step's own work, the first one's setup not */
    /* the loss terms: each rank's block of records, to every rank */
    int *counts = xcalloc(size, sizeof(int)), *displs = xcalloc(size, sizeof(int));
    for (int r = 0; r < size; r++) {
        int i0, i1;
        dist_block(r, &i0, &i1);
        counts[r] = (i1 - i0) * (int)sizeof(IvaeLoss), displs[r] = i0 * (int)sizeof(IvaeLoss);
    }
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, s->per, counts, displs, MPI_BYTE, MPI_COMM_WORLD);
    free(counts), free(displs);

    /* the gradient: down the chain, chunk by chunk; the sum so far starts at
       +0 on rank 0 and comes from rank - 1 elsewhere */
    size_t n_chunks = (n + CHUNK - 1) / CHUNK;
    MPI_Request *req = xcalloc(n_chunks ? n_chunks : 1, sizeof *req);
    for (size_t c = 0; c < n_chunks; c++) {
        size_t off = c * CHUNK, len = n - off < CHUNK ? n - off : CHUNK;
        real *t = s->total + off;
        if (rank == 0) memset(t, 0, len * sizeof(real));
        else MPI_Recv(t, (int)len, MPI_FLOAT, rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE), bytes_chain += len * sizeof(real);
        for (int k = 0; k < n_g; k++) {
            const real *g = s->g[k] + off;
#pragma omp parallel for schedule(static)
            for (size_t j = 0; j < len; j++) t[j] += g[j];
        }
        req[c] = MPI_REQUEST_NULL;
        if (rank + 1 < size)
            MPI_Isend(t, (int)len, MPI_FLOAT, rank + 1, 0, MPI_COMM_WORLD, &req[c]), bytes_chain += len * sizeof(real);
    }
    MPI_Waitall((int)n_chunks, req, MPI_STATUSES_IGNORE);
    free(req);
    /* the last rank's sum is the batch's gradient */
    dist_bcast(s->total, n * sizeof(real), size - 1);
    t_exchange += now_s() - t0, n_exchange++;
    cpu_last = cpu_now();
    return 0;
}

void dist_report(FILE *f, double seconds) {
    if (size == 1) return;
    /* each rank's CPU seconds per step outside the exchange: what the step
       would take on cores of its own (the wall clock counts a shared
       machine's other jobs) */
    double mine = n_exchange > 1 ? cpu_compute / (n_exchange - 1) : 0, *all = xcalloc(size, sizeof(double));
    MPI_Gather(&mine, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0 && n_exchange > 1) {
        fprintf(f, "data parallel: CPU seconds per step outside the exchange, by rank:");
        for (int r = 0; r < size; r++) fprintf(f, " %.3f", all[r]);
        fprintf(f, "\n");
    }
    free(all);
    if (rank > 0 || n_exchange == 0) return;
    fprintf(f, "data parallel: rank 0 spent %.2f s of %.2f in the exchange (%.0f%%, waiting for the other ranks "
               "included); per step it sent %.1f MB down the chain and every rank received the %.1f MB gradient "
               "once more from rank %d\n",
            t_exchange, seconds, 100 * t_exchange / seconds, bytes_chain / n_exchange / 1e6,
            bytes_chain / n_exchange / 1e6, size - 1);
}

void dist_finish(void) {
    if (joined) MPI_Finalize();
    joined = 0;
}
