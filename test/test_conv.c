/*
 * test_conv.c: the tuned convolution (conv_tuned.c) against the naive one
 * (layers.c), bit for bit: forward, input gradient, weight gradient and bias
 * gradient, on
 *   1. every distinct conv shape of the ivae-s and ivae-xs models (channels,
 *      kernel, strides), at a small clip size,
 *   2. odd sizes, strides 1 and 2 in time and space, kt = 1, 1x1x1, T = 1,
 *   3. the forward pass with other spatial padding (right and bottom only),
 *   4. chunked forward calls (chunks of 1, 4, 4 with the previous frames
 *      passed in), which must give the whole clip's bits.
 * Any differing bit fails the test (exit status 1): both forms follow the
 * summation rule at the top of layers.c, so there is no tolerance.
 */
#include "../layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail, n_ok;
static IvaeRng rng = {777};

static real *rnd(size_t n) {
    real *v = xmalloc((n ? n : 1) * sizeof(real));
    for (size_t j = 0; j < n; j++) v[j] = (real)(2 * ivae_rng_uniform(&rng) - 1);
    return v;
}

static void same(const char *what, const char *cas, const real *a, const real *b, size_t n) {
    size_t bad = n;
    for (size_t j = 0; j < n && bad == n; j++)
        if (memcmp(&a[j], &b[j], sizeof(real)) != 0) bad = j;
    if (bad == n) {
        n_ok++;
        return;
    }
    n_fail++;
    printf("FAIL %s %s: element %zu of %zu differs (naive %.9g, tuned %.9g)\n", what, cas, bad, n, (double)a[bad],
           (double)b[bad]);
}

/* one conv geometry on a (Cin, T, H, W) input: every pass, naive vs tuned */
static void check_conv(int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw) {
    char cas[160];
    snprintf(cas, sizeof cas, "[%d->%d, k %dx%dx%d, stride %d,%d,%d, in %dx%dx%d]", Cin, Cout, kt, kh, kw, st, sh, sw,
             T, H, W);
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw), K = kt * kh * kw;
    size_t nx = (size_t)Cin * T * H * W, ny = (size_t)Cout * To * Ho * Wo, nw = (size_t)Cout * Cin * K;
    real *x = rnd(nx), *w = rnd(nw), *b = rnd(Cout), *dy = rnd(ny);
    real *y1 = rnd(ny), *y2 = rnd(ny), *dx1 = rnd(nx), *dx2 = rnd(nx);
    real *dw1 = rnd(nw), *dw2 = xmalloc(nw * sizeof(real)), *db1 = rnd(Cout), *db2 = xmalloc(Cout * sizeof(real));
    memcpy(dw2, dw1, nw * sizeof(real)); /* the gradients accumulate: start both from the same values */
    memcpy(db2, db1, Cout * sizeof(real));

    ivae_conv3d_forward_chunk_naive(y1, x, NULL, 0, w, b, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
    ivae_conv3d_forward_chunk_tuned(y2, x, NULL, 0, NULL, w, b, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
    same("forward", cas, y1, y2, ny);
    ivae_conv3d_backward_naive(dx1, dw1, db1, dy, x, w, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
    ivae_conv3d_backward_tuned(dx2, dw2, db2, dy, x, NULL, w, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
    same("dinp", cas, dx1, dx2, nx);
    same("dweight", cas, dw1, dw2, nw);
    same("dbias", cas, db1, db2, Cout);
    free(x), free(w), free(b), free(dy), free(y1), free(y2), free(dx1), free(dx2), free(dw1), free(dw2), free(db1),
        free(db2);
}

/* the forward pass with other spatial padding (Wan 2.1's downsample pads
   right and bottom only), naive vs tuned */
static void check_padded(int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw,
                         IvaePad pad) {
    char cas[160];
    snprintf(cas, sizeof cas, "[%d->%d, k %dx%dx%d, stride %d,%d,%d, pad t%d b%d l%d r%d, in %dx%dx%d]", Cin, Cout, kt,
             kh, kw, st, sh, sw, pad.top, pad.bottom, pad.left, pad.right, T, H, W);
    int To = conv_out_t(T, st), Ho = ivae_conv_out_padded(H, kh, sh, pad.top, pad.bottom);
    int Wo = ivae_conv_out_padded(W, kw, sw, pad.left, pad.right);
    size_t nx = (size_t)Cin * T * H * W, ny = (size_t)Cout * To * Ho * Wo, nw = (size_t)Cout * Cin * kt * kh * kw;
    real *x = rnd(nx), *w = rnd(nw), *b = rnd(Cout), *y1 = rnd(ny), *y2 = rnd(ny);
    ivae_conv3d_forward_padded_naive(y1, x, NULL, 0, w, b, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, pad);
    ivae_conv3d_forward_padded_tuned(y2, x, NULL, 0, NULL, w, b, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, pad);
    same("forward (padded)", cas, y1, y2, ny);
    free(x), free(w), free(b), free(y1), free(y2);
}

/* the forward pass in chunks of 1, 4, 4, ... input frames, each given the
   kt-1 frames before it, against the whole clip: naive and tuned alike */
static void check_chunks(int naive, int Cin, int T, int H, int W, int Cout, int k, int st) {
    char cas[160];
    snprintf(cas, sizeof cas, "[%s, %d->%d, k %d, stride %d, %d frames in chunks 1,4,4..]", naive ? "naive" : "tuned",
             Cin, Cout, k, st, T);
    int To = conv_out_t(T, st), Ho = conv_out_s(H, k, 1), Wo = conv_out_s(W, k, 1), p = k - 1;
    size_t fr = (size_t)H * W, nx = (size_t)Cin * T * fr, ny = (size_t)Cout * To * Ho * Wo, fo = (size_t)Ho * Wo;
    real *x = rnd(nx), *w = rnd((size_t)Cout * Cin * k * k * k), *b = rnd(Cout), *y = rnd(ny), *yc = rnd(ny);
    real *chunk = xmalloc(nx * sizeof(real)), *prev = xcalloc((size_t)Cin * (p ? p : 1) * fr, sizeof(real));
    real *part = xmalloc(ny * sizeof(real));
    ivae_conv3d_forward_chunk_naive(y, x, NULL, 0, w, b, Cin, T, H, W, Cout, k, k, k, st, 1, 1);
    int done = 0; /* output frames written so far */
    for (int t0 = 0; t0 < T;) {
        int n = t0 == 0 ? 1 : (T - t0 < 4 ? T - t0 : 4);
        for (int c = 0; c < Cin; c++) {
            memcpy(chunk + (size_t)c * n * fr, x + ((size_t)c * T + t0) * fr, n * fr * sizeof(real));
            for (int j = 0; j < p; j++) /* the p frames before t0, zeros before the clip */
                if (t0 - p + j >= 0) memcpy(prev + ((size_t)c * p + j) * fr, x + ((size_t)c * T + t0 - p + j) * fr, fr * sizeof(real));
        }
        const real *pv = t0 > 0 && p > 0 ? prev : NULL;
        int got = naive ? ivae_conv3d_forward_chunk_naive(part, chunk, pv, t0, w, b, Cin, n, H, W, Cout, k, k, k, st, 1, 1)
                        : ivae_conv3d_forward_chunk_tuned(part, chunk, pv, t0, NULL, w, b, Cin, n, H, W, Cout, k, k, k,
                                                          st, 1, 1);
        for (int o = 0; o < Cout; o++)
            memcpy(yc + ((size_t)o * To + done) * fo, part + (size_t)o * got * fo, got * fo * sizeof(real));
        done += got;
        t0 += n;
    }
    if (done != To) {
        n_fail++;
        printf("FAIL chunks %s: %d output frames, expected %d\n", cas, done, To);
    } else {
        same("chunked forward", cas, y, yc, ny);
    }
    free(x), free(w), free(b), free(y), free(yc), free(chunk), free(prev), free(part);
}

/* every distinct conv of a model, at T = 5 frames of 8 x 8 (shape before the conv) */
static void check_model_convs(const char *preset) {
    IvaeConfig cfg;
    ivae_config_preset(preset, &cfg);
    IvaeModel *m = ivae_model_new(&cfg);
    IvaeBlockDesc d[128];
    int seen[64][6], n_seen = 0, before = n_ok + n_fail;
    for (int dec = 0; dec < 2; dec++) {
        int n = ivae_graph(m, dec, d, 128);
        for (int j = 0; j < n; j++) {
            IvaeConvDesc cs[4] = {d[j].conv, d[j].proj, d[j].c1, d[j].c2};
            for (int q = 0; q < 4; q++) {
                IvaeConvDesc c = cs[q];
                if (c.cout == 0) continue;
                int key[6] = {c.cin, c.cout, c.kt, c.st, c.sh, c.kh}, dup = 0;
                for (int s = 0; s < n_seen && !dup; s++) dup = !memcmp(seen[s], key, sizeof key);
                if (dup || n_seen == 64) continue;
                memcpy(seen[n_seen++], key, sizeof key);
                check_conv(c.cin, 5, 8, 8, c.cout, c.kt, c.kh, c.kw, c.st, c.sh, c.sw);
            }
        }
    }
    printf("%s: %d distinct conv shapes, %d checks\n", preset, n_seen, n_ok + n_fail - before);
    ivae_model_free(m);
}

int main(int argc, char **argv) {
    (void)argc;
    ivae_wait_passively(argv);
    check_model_convs("ivae-xs");
    check_model_convs("ivae-s");
    int odd[][11] = {
        /* Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw */
        {3, 3, 7, 5, 5, 3, 3, 3, 1, 1, 1},   {3, 3, 7, 5, 5, 3, 3, 3, 2, 2, 2},  {4, 5, 9, 7, 3, 3, 3, 3, 1, 2, 2},
        {4, 5, 9, 7, 3, 3, 3, 3, 2, 1, 1},   {5, 1, 7, 9, 6, 3, 3, 3, 1, 1, 1},  {5, 1, 7, 9, 6, 3, 3, 3, 2, 2, 2},
        {6, 4, 5, 5, 7, 1, 3, 3, 1, 1, 1},   {6, 4, 5, 5, 7, 1, 3, 3, 1, 2, 2},  {7, 3, 5, 6, 9, 1, 1, 1, 1, 1, 1},
        {7, 3, 5, 6, 9, 1, 1, 1, 2, 2, 2},   {9, 2, 3, 17, 17, 3, 3, 3, 1, 1, 1}, {33, 2, 4, 4, 35, 3, 3, 3, 1, 1, 1},
        {2, 6, 11, 13, 3, 3, 1, 1, 2, 1, 1},
        /* rows wider than a task's segment of columns, ragged channel blocks of the chains */
        {10, 2, 3, 300, 13, 3, 3, 3, 1, 1, 1}, {10, 3, 6, 70, 20, 3, 3, 3, 2, 2, 2}, {17, 3, 5, 70, 9, 1, 1, 1, 1, 1, 1},
        {6, 2, 3, 48, 14, 3, 3, 3, 1, 1, 1}, /* narrow tiles: 48 columns are 3 of 16 */
        /* weight gradients by input-channel lanes: a ragged last group of 16 channels, output channels not a multiple of 3 */
        {20, 3, 6, 7, 5, 3, 3, 3, 2, 2, 2}, {37, 4, 5, 9, 7, 3, 3, 3, 1, 1, 1}, {24, 2, 9, 9, 40, 1, 3, 3, 1, 2, 2},
        /* 1x1x1 as a matrix product: ragged tiles of output channels (45 = 3 x 12 + 9 = 32 + 13), of input
           channels (13: chains of 8 + 5, tiles of 6), of positions (66 = 4 x 16 + 2); one position; more
           input channels than a task's panels hold (one panel per task) */
        {13, 2, 3, 11, 45, 1, 1, 1, 1, 1, 1}, {5, 1, 1, 1, 7, 1, 1, 1, 1, 1, 1}, {1100, 1, 2, 9, 14, 1, 1, 1, 1, 1, 1},
        /* small frames gathered (rows of up to 8, 32 or more output channels): ragged tiles of output
           channels and positions (5 x 7 = 35 of 64), stride 2; more frames than one group of copies holds */
        {9, 3, 5, 7, 37, 3, 3, 3, 1, 1, 1}, {9, 5, 10, 13, 33, 3, 3, 3, 2, 2, 2}, {300, 20, 4, 8, 32, 3, 3, 3, 1, 1, 1},
        /* forward tiles of two rows (rows of one vector: 16 columns, AVX2 8): an odd last row, odd rows in a
           second task's group, strided (and the input gradient's phases of 16 columns); last blocks of 1, 5,
           10 output channels (tiles of 4 and 8 rows of 12) */
        {11, 3, 7, 16, 13, 3, 3, 3, 1, 1, 1}, {4, 1, 35, 16, 5, 3, 3, 3, 1, 1, 1}, {6, 3, 9, 32, 10, 3, 3, 3, 2, 2, 2},
        {5, 2, 9, 16, 9, 3, 3, 3, 1, 2, 2},
    };
    for (size_t j = 0; j < sizeof odd / sizeof odd[0]; j++) {
        int *c = odd[j];
        check_conv(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]);
    }
    check_padded(8, 3, 8, 8, 8, 1, 3, 3, 1, 2, 2, (IvaePad){0, 1, 0, 1});
    check_padded(5, 2, 9, 7, 6, 1, 3, 3, 1, 2, 2, (IvaePad){0, 1, 0, 1});
    check_padded(4, 3, 6, 10, 3, 3, 3, 3, 2, 1, 1, (IvaePad){2, 0, 1, 0});
    check_padded(3, 1, 5, 5, 17, 1, 1, 1, 1, 1, 1, (IvaePad){1, 1, 0, 2});
    for (int naive = 0; naive < 2; naive++) {
        check_chunks(naive, 3, 9, 7, 5, 4, 3, 1);
        check_chunks(naive, 3, 9, 7, 5, 4, 3, 2);
        check_chunks(naive, 4, 13, 6, 6, 5, 1, 1);
    }
    printf("%s: %d checks, %d failed (naive vs tuned conv, bit for bit)\n", n_fail ? "FAIL" : "ok", n_ok + n_fail,
           n_fail);
    return n_fail != 0;
}
