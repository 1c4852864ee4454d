/*
 * dist_stub.c: dist.h for a build without MPI (make NO_MPI=1, or no mpicc):
 * one process, which holds the whole batch. dist_exchange still computes
 * the fold of SPEC 8.2, so the split path gives ivae_batch_grad's bits here
 * too.
 */
#include "dist.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* started by mpirun as one of several processes: each would train alone and
   all would write the same files, so refuse */
void dist_init(void) {
    const char *n = getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
    if (n && atoi(n) > 1)
        die("this ivae was built without MPI but started as one of %s processes (mpirun): install openmpi-bin "
            "libopenmpi-dev and rebuild (make says '✓ MPI found'), or run one process",
            n);
}
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
const char *dist_describe(void) { return "built without MPI"; }

static int batch;

int dist_plan(const double *cost, int B) {
    batch = B;
    return 0;
}

void dist_block(int r, int *i0, int *i1) {
    *i0 = 0;
    *i1 = batch;
}

int dist_owner(int i) { return 0; }
void dist_bcast(void *buf, size_t bytes, int root) {}

int dist_exchange(void *ctx, IvaeSplit *s, int n_g, size_t n, int B) {
    memset(s->total, 0, n * sizeof(real));
    for (int k = 0; k < n_g; k++)
        for (size_t j = 0; j < n; j++) s->total[j] += s->g[k][j];
    return 0;
}

void dist_report(FILE *f, double seconds) {}
void dist_finish(void) {}
