/*
 * dist.h: the processes of a data-parallel `ivae train` (MPI), SPEC 8.2.
 *
 *   mpirun -np N ./ivae train ...
 *
 * Each of the N processes (ranks) computes the gradients of a contiguous
 * block of the batch's samples; dist_exchange folds them into the batch's
 * gradient in the one order SPEC 8.2 fixes, so every rank holds the same
 * bits, the bits a single process computes, and takes the same AdamW step.
 *
 * dist.c is the MPI version (built when the Makefile finds mpicc);
 * dist_stub.c is one process without MPI, so train.c reads the same either
 * way. A process started without mpirun (no launcher in its environment) is
 * one process in both builds and never calls MPI.
 *
 * Failure: a rank that dies (any exit with a non-zero status, e.g. die()
 * after its one-line message) takes the whole job down with it
 * (MPI_Abort), so no rank waits forever for it.
 */
#ifndef IVAE_DIST_H
#define IVAE_DIST_H

#include "ivae.h"

#include <stddef.h>
#include <stdio.h>

/* joins the job when started by an MPI launcher */
void dist_init(void);
int dist_rank(void);
int dist_size(void);
/* "MPI (Open MPI v4.1.4)" or "no MPI" */
const char *dist_describe(void);
/* The blocks: for a batch of B samples with the given costs (train.c: their
   pixels, T H W), rank r computes samples [i0, i1), contiguous blocks in
   sample order cut where the cost comes nearest r / N of the whole; -1 if
   B < N. The blocks never change the bits (SPEC 8.2), only the balance. */
int dist_plan(const double *cost, int B);
void dist_block(int r, int *i0, int *i1);
/* the rank that computes sample i */
int dist_owner(int i);

/* IvaeSplit's exchange (ctx unused): total = the fold, in sample order, of
   every rank's g; per[] = every sample's loss terms */
int dist_exchange(void *ctx, IvaeSplit *s, int n_g, size_t n, int B);
/* bytes from root's buf to every rank's */
void dist_bcast(void *buf, size_t bytes, int root);
/* each rank's CPU time per step, rank 0's time in the exchange and its
   bytes: lines for the end of a run (every rank calls it; rank 0 prints) */
void dist_report(FILE *f, double seconds);
/* the end of a run that went well */
void dist_finish(void);

#endif
