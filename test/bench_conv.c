/*
 * bench_conv.c: one convolution shape, timed: the tuned forward pass
 * (conv_tuned.c) on a (Cin, T, H, H) input, after a warm-up, 3 repetitions,
 * in GFLOP/s counting every tap (the zero padding included). For a kernel
 * author looking at one shape; `make bench` times them all beside PyTorch.
 *
 *   test/bench_conv CIN COUT T H KT K      e.g. test/bench_conv 96 96 4 256 3 3
 */
#include "../layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: bench_conv CIN COUT T H KT K\n");
        return 2;
    }
    int Cin = atoi(argv[1]), Cout = atoi(argv[2]), T = atoi(argv[3]), H = atoi(argv[4]), kt = atoi(argv[5]);
    int k = atoi(argv[6]), W = H;
    if (Cin < 1 || Cout < 1 || T < 1 || H < 1 || kt < 1 || k < 1) {
        fprintf(stderr, "bench_conv: every size must be a positive integer\n");
        return 2;
    }
    size_t nx = (size_t)Cin * T * H * W, ny = (size_t)Cout * T * H * W, nw = (size_t)Cout * Cin * kt * k * k;
    real *x = xcalloc(nx, sizeof(real)), *y = xcalloc(ny, sizeof(real)), *w = xcalloc(nw, sizeof(real));
    real *b = xcalloc((size_t)Cout, sizeof(real));
    for (size_t i = 0; i < nx; i++) x[i] = 0.01f * (float)(i % 7);
    for (size_t i = 0; i < nw; i++) w[i] = 0.01f * (float)(i % 5);
    ivae_conv3d_forward_chunk_tuned(y, x, NULL, 0, NULL, w, b, Cin, T, H, W, Cout, kt, k, k, 1, 1, 1); /* warm-up */
    int reps = 3;
    double t0 = now();
    for (int r = 0; r < reps; r++)
        ivae_conv3d_forward_chunk_tuned(y, x, NULL, 0, NULL, w, b, Cin, T, H, W, Cout, kt, k, k, 1, 1, 1);
    double dt = (now() - t0) / reps, flop = 2.0 * Cout * Cin * kt * k * k * (double)T * H * W;
    printf("conv %d -> %d, kernel %dx%dx%d, %d x %d x %d: %.3f s, %.1f GFLOP/s (all taps)\n", Cin, Cout, kt, k, k, T,
           H, W, dt, flop / dt / 1e9);
    free(x), free(y), free(w), free(b);
    return 0;
}
