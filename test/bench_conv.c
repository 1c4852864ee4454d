/*
 * bench_conv.c: one convolution shape, timed: the tuned forward pass, input
 * gradient and weight gradient (conv_tuned.c) on a (Cin, T, H, H) input,
 * stride 1 unless given, after a warm-up, the best of 5 repetitions each
 * (BENCH_CONV_REPS=N: of N, for perf record; the machine may be shared: the
 * fastest run is the least disturbed), in GFLOP/s counting
 * every tap (the zero padding included). Also per core: the flops over the
 * process's CPU time (all threads), which a busy machine disturbs less than
 * the wall clock. For a kernel author looking at one shape; `make bench`
 * times them all beside PyTorch.
 *
 *   test/bench_conv CIN COUT T H KT K [PASSES [ST SS]]   e.g. test/bench_conv 96 96 4 256 3 3
 *
 * PASSES is any of the letters f (forward), x (input gradient), w (weight
 * gradient); default fxw. ST and SS: the stride in time and in space
 * (default 1 1; an encoder's downsample is 2 2 or 1 2).
 */
#include "../layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    ivae_wait_passively(argv);
    if (argc != 7 && argc != 8 && argc != 10) {
        fprintf(stderr, "usage: bench_conv CIN COUT T H KT K [PASSES: any of f x w [ST SS]]\n");
        return 2;
    }
    int Cin = atoi(argv[1]), Cout = atoi(argv[2]), T = atoi(argv[3]), H = atoi(argv[4]), kt = atoi(argv[5]);
    int k = atoi(argv[6]), W = H;
    const char *passes = argc >= 8 ? argv[7] : "fxw";
    int st = argc == 10 ? atoi(argv[8]) : 1, ss = argc == 10 ? atoi(argv[9]) : 1;
    if (Cin < 1 || Cout < 1 || T < 1 || H < 1 || kt < 1 || k < 1 || st < 1 || ss < 1) {
        fprintf(stderr, "bench_conv: every size must be a positive integer\n");
        return 2;
    }
    if (!*passes || strspn(passes, "fxw") != strlen(passes)) {
        fprintf(stderr, "bench_conv: PASSES must be letters among f, x, w (got '%s')\n", passes);
        return 2;
    }
    int To = conv_out_t(T, st), Ho = conv_out_s(H, k, ss), Wo = conv_out_s(W, k, ss);
    size_t nx = (size_t)Cin * T * H * W, ny = (size_t)Cout * To * Ho * Wo, nw = (size_t)Cout * Cin * kt * k * k;
    real *x = xcalloc(nx, sizeof(real)), *y = xcalloc(ny, sizeof(real)), *w = xcalloc(nw, sizeof(real));
    real *dx = xcalloc(nx, sizeof(real)), *dw = xcalloc(nw, sizeof(real));
    real *b = xcalloc((size_t)Cout, sizeof(real));
    for (size_t i = 0; i < nx; i++) x[i] = 0.01f * (float)(i % 7);
    for (size_t i = 0; i < nw; i++) w[i] = 0.01f * (float)(i % 5);
    for (size_t i = 0; i < ny; i++) y[i] = 0.01f * (float)(i % 3);
    double flop = 2.0 * Cout * Cin * kt * k * k * (double)To * Ho * Wo;
    const char *reps_env = getenv("BENCH_CONV_REPS"); /* more calls, for perf record (default 5) */
    int reps = reps_env && atoi(reps_env) > 0 ? atoi(reps_env) : 5;
    for (const char *p = passes; *p; p++) {
        double dt = 1e30, dc = 1e30;
        for (int r = -1; r < reps; r++) { /* r = -1: the warm-up */
            double t0 = now(), c0 = cpu_now();
            if (*p == 'f') ivae_conv3d_forward_chunk_tuned(y, x, NULL, 0, NULL, w, b, Cin, T, H, W, Cout, kt, k, k, st, ss, ss);
            if (*p == 'x') ivae_conv3d_backward_tuned(dx, NULL, NULL, y, x, NULL, w, Cin, T, H, W, Cout, kt, k, k, st, ss, ss);
            if (*p == 'w') ivae_conv3d_backward_tuned(NULL, dw, NULL, y, x, NULL, w, Cin, T, H, W, Cout, kt, k, k, st, ss, ss);
            double t1 = now(), c1 = cpu_now();
            if (r >= 0 && t1 - t0 < dt) dt = t1 - t0;
            if (r >= 0 && c1 - c0 < dc) dc = c1 - c0;
        }
        printf("conv %d -> %d, kernel %dx%dx%d, stride %d,%d,%d, %d x %d x %d, %s: %.3f s, %.1f GFLOP/s (all taps), %.1f per core\n",
               Cin, Cout, kt, k, k, st, ss, ss, T, H, W, *p == 'f' ? "forward" : *p == 'x' ? "input gradient" : "weight gradient", dt,
               flop / dt / 1e9, flop / dc / 1e9);
    }
    free(x), free(y), free(w), free(dx), free(dw), free(b);
    return 0;
}
