/*
 * test/test_cl.c: every OpenCL kernel of kernels.cl against its C twin in
 * ivae.c, bit for bit (SPEC 8: "OpenCL path, strict build: bit-identical to
 * the CPU reference").
 *
 * For each layer function and a handful of shapes (odd sizes, T = 1, strides
 * (1,1,1), (1,2,2), (2,2,2), kernels 3x3x3 and 1x1x1, both attention modes,
 * temporal and plain upsampling, chunks, the loss with its clamp and hinge
 * cases) it runs the C function and the OpenCL wrapper on the same random
 * inputs and compares the outputs with memcmp. One line per kernel and case:
 *
 *   ok    conv3d_forward                 3x3x3 s(1,2,2) 4->6 3x9x11
 *   FAIL  conv3d_backward_dweight        ...: 12 of 648 differ, first at [17] (C 0.1234 CL 0.1235), max 1 ulp
 *
 * Then the fast kernels (--cl-mode fast), which only have to agree within
 * SPEC 8's tolerances (e = max|a-b| / max|b| <= 1e-5 for outputs, 1e-4 for
 * gradients), and the whole model on the device (ivae_cl_model.c) on a small
 * config with every parameter non-trivial: batch_grad bit for bit (every
 * output, every gradient, the loss), AdamW for 3 steps bit for bit (params
 * and moments), encode/decode bit for bit against the C code's streaming,
 * the activation statistics, and the same in fast mode within tolerance.
 * (test/test_cl_model.sh checks the ivae program on ivae-s.)
 *
 * Exit status 1 if any differs. Without any OpenCL platform it prints SKIP
 * and exits 0 (the CPU build does not need one).
 *
 *   test/test_cl            the tests (about 5 s on two cores with pocl)
 *   test/test_cl --bench    also times conv3d_forward, ivae-s shape 32->32 3x3x3 on 17x64x64, C vs OpenCL
 *
 * It links the library (layers.h: Shape, ivae_sum_nested) built with the same
 * flags as ./ivae.
 */
#define _GNU_SOURCE /* nftw(), to remove the private kernel cache */
#include "../layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../ivae_cl.h"
#include "../ivae_cl_model.h"

#include <ftw.h>
#include <time.h>

static IvaeCl *g_cl;
static IvaeRng g_rng = {20240917};
static int g_failed, g_checked;

/* ------------------------------------------------------------------------ */
/* host arrays, device buffers */

static float *alloc_f(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "test_cl: out of memory\n");
        exit(1);
    }
    return p;
}

static float *uniform(size_t n, float lo, float hi) {
    float *p = alloc_f(n);
    for (size_t j = 0; j < n; j++) p[j] = lo + (hi - lo) * (float)ivae_rng_uniform(&g_rng);
    return p;
}

static float *normal(size_t n, float sd) {
    float *p = alloc_f(n);
    for (size_t j = 0; j < n; j++) p[j] = sd * (float)ivae_rng_normal(&g_rng);
    return p;
}

static float *filled(size_t n, float v) {
    float *p = alloc_f(n);
    for (size_t j = 0; j < n; j++) p[j] = v;
    return p;
}

static float *copy(const float *src, size_t n) {
    float *p = alloc_f(n);
    memcpy(p, src, n * sizeof(float));
    return p;
}

static cl_mem dev(const float *host, size_t n) {
    cl_mem b = ivae_cl_buffer(g_cl, n, host);
    if (!b) exit(1); /* the failed call is printed */
    return b;
}

/* a device buffer of n floats that holds NaN: an element a kernel fails to
   write cannot pass as the C code's value */
static cl_mem dev_poisoned(size_t n) {
    float *nan = filled(n, NAN);
    cl_mem b = dev(nan, n);
    free(nan);
    return b;
}

static float *host(cl_mem b, size_t n) {
    float *p = alloc_f(n);
    if (ivae_cl_read(g_cl, p, b, n) != 0) exit(1);
    return p;
}

static void release(cl_mem b) {
    if (b) clReleaseMemObject(b);
}

/* ------------------------------------------------------------------------ */
/* comparing */

/* floats as integers in the order of their values: the ulp distance is the difference */
static int64_t ordered(float f) {
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i < 0 ? (int64_t)INT32_MIN - i : i;
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void report(int ok, const char *kernel, const char *cas, const char *detail) {
    g_checked++;
    if (!ok) g_failed++;
    printf("%-5s %-30s %s%s\n", ok ? "ok" : "FAIL", kernel, cas, detail);
    fflush(stdout);
}

/* the C result c and the OpenCL result g, n floats, must have the same bytes */
static void check(const char *kernel, const char *cas, const float *c, const float *g, size_t n) {
    if (memcmp(c, g, n * sizeof(float)) == 0) {
        report(1, kernel, cas, "");
        return;
    }
    size_t first = n, ndiff = 0;
    int64_t maxulp = 0;
    for (size_t j = 0; j < n; j++) {
        if (bits(c[j]) == bits(g[j])) continue;
        if (first == n) first = j;
        ndiff++;
        int64_t d = ordered(c[j]) - ordered(g[j]);
        if (d < 0) d = -d;
        if (c[j] != c[j] || g[j] != g[j]) d = INT64_MAX; /* NaN on one side: not a distance */
        if (d > maxulp) maxulp = d;
    }
    char detail[256];
    snprintf(detail, sizeof detail, ": %zu of %zu differ, first at [%zu] (C %.9g 0x%08x, CL %.9g 0x%08x), max %s%lld ulp",
             ndiff, n, first, c[first], bits(c[first]), g[first], bits(g[first]),
             maxulp == INT64_MAX ? "(NaN) " : "", maxulp == INT64_MAX ? -1LL : (long long)maxulp);
    report(0, kernel, cas, detail);
}

static void check_buf(const char *kernel, const char *cas, const float *c, cl_mem g, size_t n) {
    float *h = host(g, n);
    check(kernel, cas, c, h, n);
    free(h);
}

/* a double that the C code made from a float sum */
static void check_double(const char *kernel, const char *cas, double c, double g) {
    if (memcmp(&c, &g, sizeof c) == 0) {
        report(1, kernel, cas, "");
        return;
    }
    char detail[128];
    snprintf(detail, sizeof detail, ": C %.17g, CL %.17g", c, g);
    report(0, kernel, cas, detail);
}

/* the fast kernels: e = max|c - g| / max|c| within tol (SPEC 8's measure) */
static void check_close(const char *kernel, const char *cas, const float *c, const float *g, size_t n, double tol) {
    double maxd = 0, maxc = 0;
    int nan = 0;
    for (size_t j = 0; j < n; j++) {
        if (fabs(c[j]) > maxc) maxc = fabs(c[j]);
        if (g[j] != g[j] || c[j] != c[j]) nan |= (g[j] != g[j]) != (c[j] != c[j]);
        else if (fabs((double)c[j] - g[j]) > maxd) maxd = fabs((double)c[j] - g[j]);
    }
    double e = maxc > 0 ? maxd / maxc : maxd;
    char detail[128];
    snprintf(detail, sizeof detail, "%s: e %.2e (tolerance %.0e)", nan ? " NaN on one side" : "", e, tol);
    report(!nan && e <= tol, kernel, cas, detail);
}

static void check_close_buf(const char *kernel, const char *cas, const float *c, cl_mem g, size_t n, double tol) {
    float *h = host(g, n);
    check_close(kernel, cas, c, h, n, tol);
    free(h);
}

/* a wrapper returned -1: the failed call is printed already */
static void cl_ok(int rc, const char *what) {
    if (rc < 0) {
        fprintf(stderr, "test_cl: %s failed\n", what);
        exit(1);
    }
}

/* ------------------------------------------------------------------------ */
/* 2.1 conv3d: forward, the three parts of backward, the chunked forward */

static void test_conv(int Cin, int Cout, int T, int H, int W, int kt, int kh, int kw, int st, int sh, int sw,
                      int with_bias) {
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw), K = kt * kh * kw;
    size_t nx = (size_t)Cin * T * H * W, ny = (size_t)Cout * To * Ho * Wo, nw = (size_t)Cout * Cin * K;
    char cas[128];
    snprintf(cas, sizeof cas, "%dx%dx%d s(%d,%d,%d) %d->%d %dx%dx%d%s", kt, kh, kw, st, sh, sw, Cin, Cout, T, H, W,
             with_bias ? "" : " no bias");
    float a = 1 / sqrtf((float)(Cin * K));
    float *x = normal(nx, 1), *w = uniform(nw, -a, a), *b = normal(Cout, 0.5f);
    float *dy = normal(ny, 1), *dw0 = normal(nw, 0.1f), *db0 = normal(Cout, 0.1f);
    cl_mem gx = dev(x, nx), gw = dev(w, nw), gb = with_bias ? dev(b, Cout) : NULL, gdy = dev(dy, ny);

    float *y = alloc_f(ny);
    ivae_conv3d_forward(y, x, w, with_bias ? b : NULL, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
    cl_mem gy = dev_poisoned(ny);
    cl_ok(ivae_cl_conv3d_forward(g_cl, gy, gx, gw, gb, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw), "conv3d_forward");
    check_buf("conv3d_forward", cas, y, gy, ny);

    float *dx = alloc_f(nx), *dw = copy(dw0, nw), *db = copy(db0, Cout);
    ivae_conv3d_backward(dx, dw, db, dy, x, w, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
    cl_mem gdx = dev_poisoned(nx), gdw = dev(dw0, nw), gdb = dev(db0, Cout);
    cl_ok(ivae_cl_conv3d_backward(g_cl, gdx, gdw, gdb, gdy, gx, gw, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw),
          "conv3d_backward");
    int stride1 = st == 1 && sh == 1 && sw == 1;
    check_buf(stride1 ? "conv3d_backward_dinp" : "conv3d_backward_dinp_strided", cas, dx, gdx, nx);
    check_buf("conv3d_backward_dweight", cas, dw, gdw, nw);
    check_buf("conv3d_backward_dbias", cas, db, gdb, Cout);

    /* the fast kernels on the same inputs, against the same C results */
    cl_mem fy = dev_poisoned(ny), fdx = dev_poisoned(nx), fdw = dev(dw0, nw), fdb = dev(db0, Cout);
    cl_ok(ivae_cl_conv3d_forward_fast(g_cl, fy, gx, gw, gb, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw),
          "conv3d_forward_fast");
    cl_ok(ivae_cl_conv3d_backward_fast(g_cl, fdx, fdw, fdb, gdy, gx, gw, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw),
          "conv3d_backward_fast");
    check_close_buf("conv3d_forward_fast", cas, y, fy, ny, 1e-5);
    check_close_buf("conv3d_backward_dinp_fast", cas, dx, fdx, nx, 1e-5);
    check_close_buf("conv3d_backward_dweight_fast", cas, dw, fdw, nw, 1e-5);
    check_close_buf("conv3d_backward_dbias_fast", cas, db, fdb, Cout, 1e-5);
    release(fy), release(fdx), release(fdw), release(fdb);

    free(x), free(w), free(b), free(dy), free(dw0), free(db0), free(y), free(dx), free(dw), free(db);
    release(gx), release(gw), release(gb), release(gdy), release(gy), release(gdx), release(gdw), release(gdb);
}

/* a chunk of a longer clip: frames s0 .. s0+T-1, with the kt-1 frames before it in prev (or NULL) */
static void test_conv_chunk(int Cin, int Cout, int T, int H, int W, int k, int st, int ss, int s0, int with_prev) {
    int Ho = conv_out_s(H, k, ss), Wo = conv_out_s(W, k, ss), K = k * k * k;
    size_t nx = (size_t)Cin * T * H * W, np = (size_t)Cin * (k - 1) * H * W, nw = (size_t)Cout * Cin * K;
    char cas[128];
    snprintf(cas, sizeof cas, "%dx%dx%d s(%d,%d,%d) %d->%d %dx%dx%d from frame %d%s", k, k, k, st, ss, ss, Cin, Cout,
             T, H, W, s0, with_prev ? " with prev" : ", prev NULL");
    float *x = normal(nx, 1), *prev = normal(np, 1), *w = uniform(nw, -0.3f, 0.3f), *b = normal(Cout, 0.5f);
    size_t ny = (size_t)Cout * T * Ho * Wo; /* at least To */
    float *y = filled(ny, 0);
    int To = ivae_conv3d_forward_chunk(y, x, with_prev ? prev : NULL, s0, w, b, Cin, T, H, W, Cout, k, k, k, st, ss, ss);
    cl_mem gx = dev(x, nx), gp = with_prev ? dev(prev, np) : NULL, gw = dev(w, nw), gb = dev(b, Cout);
    cl_mem gy = dev(y, ny); /* ... so that frames past To compare equal */
    float *nan = filled((size_t)Cout * To * Ho * Wo, NAN);
    cl_ok(ivae_cl_write(g_cl, gy, nan, (size_t)Cout * To * Ho * Wo), "write");
    int Tg = ivae_cl_conv3d_forward_chunk(g_cl, gy, gx, gp, s0, gw, gb, Cin, T, H, W, Cout, k, k, k, st, ss, ss);
    cl_ok(Tg, "conv3d_forward_chunk");
    if (Tg != To) {
        char d[64];
        snprintf(d, sizeof d, ": %d output frames, C has %d", Tg, To);
        report(0, "conv3d_forward_chunk", cas, d);
    } else {
        check_buf("conv3d_forward_chunk", cas, y, gy, ny);
    }
    free(x), free(prev), free(w), free(b), free(y), free(nan);
    release(gx), release(gp), release(gw), release(gb), release(gy);
}

/* ------------------------------------------------------------------------ */
/* 2.2 SMC */

static void test_smc(int Cout, int Cin, int K) {
    size_t nw = (size_t)Cout * Cin * K;
    char cas[64];
    snprintf(cas, sizeof cas, "%d x %d x %d", Cout, Cin, K);
    float *w = uniform(nw, -0.2f, 0.2f), *s = uniform(Cin, 0.5f, 1.5f), *g = uniform(1, 0.5f, 2);
    float *what = alloc_f(nw), *norm = alloc_f(Cout);
    ivae_smc_weight_forward(what, norm, w, s, g, Cout, Cin, K);
    cl_mem gw = dev(w, nw), gs = dev(s, Cin), gg = dev(g, 1), gwhat = dev_poisoned(nw), gnorm = dev_poisoned(Cout);
    cl_ok(ivae_cl_smc_weight_forward(g_cl, gwhat, gnorm, gw, gs, gg, Cout, Cin, K), "smc_weight_forward");
    check_buf("smc_weight_forward (what)", cas, what, gwhat, nw);
    check_buf("smc_weight_forward (norm)", cas, norm, gnorm, Cout);

    float *dwhat = normal(nw, 1), *dw0 = normal(nw, 0.1f), *ds0 = normal(Cin, 0.1f), *dg0 = normal(1, 0.1f);
    float *dw = copy(dw0, nw), *ds = copy(ds0, Cin), *dg = copy(dg0, 1);
    ivae_smc_weight_backward(dw, ds, dg, dwhat, norm, w, s, g, Cout, Cin, K);
    cl_mem gdwhat = dev(dwhat, nw), gdw = dev(dw0, nw), gds = dev(ds0, Cin), gdg = dev(dg0, 1);
    cl_ok(ivae_cl_smc_weight_backward(g_cl, gdw, gds, gdg, gdwhat, gnorm, gw, gs, gg, Cout, Cin, K),
          "smc_weight_backward");
    check_buf("smc_weight_backward_dweight", cas, dw, gdw, nw);
    check_buf("smc_weight_backward_dscale", cas, ds, gds, Cin);
    check_buf("smc_weight_backward_dgain", cas, dg, gdg, 1);

    free(w), free(s), free(g), free(what), free(norm), free(dwhat), free(dw0), free(ds0), free(dg0), free(dw),
        free(ds), free(dg);
    release(gw), release(gs), release(gg), release(gwhat), release(gnorm), release(gdwhat), release(gdw),
        release(gds), release(gdg);
}

/* ------------------------------------------------------------------------ */
/* 2.3 SiLU, 2.4 PixelNorm */

static void test_silu(const char *cas, float *x, size_t n) {
    float *y = alloc_f(n), *dy = normal(n, 1), *dx = alloc_f(n);
    ivae_silu_forward(y, x, n);
    ivae_silu_backward(dx, dy, x, n);
    cl_mem gx = dev(x, n), gy = dev_poisoned(n), gdy = dev(dy, n), gdx = dev_poisoned(n);
    cl_ok(ivae_cl_silu_forward(g_cl, gy, gx, n), "silu_forward");
    cl_ok(ivae_cl_silu_backward(g_cl, gdx, gdy, gx, n), "silu_backward");
    check_buf("silu_forward", cas, y, gy, n);
    check_buf("silu_backward", cas, dx, gdx, n);
    free(x), free(y), free(dy), free(dx);
    release(gx), release(gy), release(gdy), release(gdx);
}

static void test_pixelnorm(int C, size_t N) {
    size_t n = (size_t)C * N;
    char cas[64];
    snprintf(cas, sizeof cas, "C %d, N %zu", C, N);
    float *x = normal(n, 2), *y = alloc_f(n), *norm = alloc_f(N), *dy = normal(n, 1), *dx = alloc_f(n);
    ivae_pixelnorm_forward(y, norm, x, C, N);
    ivae_pixelnorm_backward(dx, dy, norm, x, C, N);
    cl_mem gx = dev(x, n), gy = dev_poisoned(n), gnorm = dev_poisoned(N), gdy = dev(dy, n), gdx = dev_poisoned(n);
    cl_ok(ivae_cl_pixelnorm_forward(g_cl, gy, gnorm, gx, C, N), "pixelnorm_forward");
    cl_ok(ivae_cl_pixelnorm_backward(g_cl, gdx, gdy, gnorm, gx, C, N), "pixelnorm_backward");
    check_buf("pixelnorm_forward (out)", cas, y, gy, n);
    check_buf("pixelnorm_forward (norm)", cas, norm, gnorm, N);
    check_buf("pixelnorm_backward", cas, dx, gdx, n);
    free(x), free(y), free(norm), free(dy), free(dx);
    release(gx), release(gy), release(gnorm), release(gdy), release(gdx);
}

/* ------------------------------------------------------------------------ */
/* GroupNorm (SPEC 9): forward (out and stats), backward (dinp; dweight and
   dbias added to non-zero values, as the gradients of a second sample are) */

static void test_groupnorm(int C, int G, int T, int H, int W) {
    size_t n = (size_t)C * T * H * W, ns = 2 * (size_t)G * T;
    char cas[96];
    snprintf(cas, sizeof cas, "C %d, G %d (%d per group), %dx%dx%d", C, G, C / G, T, H, W);
    /* a generator of its own: the later tests' inputs stay what they were */
    IvaeRng saved = g_rng;
    g_rng = (IvaeRng){(uint64_t)(1000003 * C + 1009 * T + 31 * H + W)};
    float *x = uniform(n, -1, 3), *w = uniform(C, 0.5f, 1.5f), *b = uniform(C, -0.1f, 0.1f), *y = alloc_f(n);
    float *st = alloc_f(ns), *dy = normal(n, 1), *dx = alloc_f(n), *dw = normal(C, 1), *db = normal(C, 1);
    g_rng = saved;
    cl_mem gx = dev(x, n), gw = dev(w, C), gb = dev(b, C), gy = dev_poisoned(n), gst = dev_poisoned(ns);
    cl_mem gdy = dev(dy, n), gdx = dev_poisoned(n), gdw = dev(dw, C), gdb = dev(db, C);
    ivae_groupnorm_forward(y, st, x, w, b, C, T, H, W, G);
    ivae_groupnorm_backward(dx, dw, db, dy, st, x, w, C, T, H, W, G);
    cl_ok(ivae_cl_groupnorm_forward(g_cl, gy, gst, gx, gw, gb, C, T, H, W, G), "groupnorm_forward");
    cl_ok(ivae_cl_groupnorm_backward(g_cl, gdx, gdw, gdb, gdy, gst, gx, gw, C, T, H, W, G), "groupnorm_backward");
    check_buf("groupnorm_forward (out)", cas, y, gy, n);
    check_buf("groupnorm_forward (stats)", cas, st, gst, ns);
    check_buf("groupnorm_backward (dinp)", cas, dx, gdx, n);
    check_buf("groupnorm_backward (dweight)", cas, dw, gdw, C);
    check_buf("groupnorm_backward (dbias)", cas, db, gdb, C);
    free(x), free(w), free(b), free(y), free(st), free(dy), free(dx), free(dw), free(db);
    release(gx), release(gw), release(gb), release(gy), release(gst), release(gdy), release(gdx), release(gdw);
    release(gdb);
}

/* ------------------------------------------------------------------------ */
/* 2.6 attention */

static void test_attention(int C, int T, int H, int W, int mode) {
    int HW = H * W, N = T * HW, L = ivae_attention_row_len(mode, T, HW);
    size_t nqkv = (size_t)3 * C * N, no = (size_t)C * N, na = (size_t)N * L;
    char cas[64];
    snprintf(cas, sizeof cas, "%s, C %d, %dx%dx%d", mode == IVAE_ATTN_CAUSAL ? "causal" : "frame", C, T, H, W);
    float *qkv = normal(nqkv, 1.5f), *out = alloc_f(no), *att = filled(na, 0); /* causal rows are not all written */
    ivae_attention_forward(out, att, qkv, C, T, H, W, mode);
    cl_mem gqkv = dev(qkv, nqkv), gout = dev_poisoned(no), gatt = dev(att, na);
    float *zero = filled(na, 0);
    cl_ok(ivae_cl_write(g_cl, gatt, zero, na), "write");
    cl_ok(ivae_cl_attention_forward(g_cl, gout, gatt, gqkv, C, T, H, W, mode), "attention_forward");
    check_buf("attention_forward (out)", cas, out, gout, no);
    check_buf("attention_forward (att)", cas, att, gatt, na);

    float *dout = normal(no, 1), *dqkv = alloc_f(nqkv);
    ivae_attention_backward(dqkv, dout, att, qkv, C, T, H, W, mode);
    cl_mem gdout = dev(dout, no), gdqkv = dev_poisoned(nqkv);
    cl_ok(ivae_cl_attention_backward(g_cl, gdqkv, gdout, gatt, gqkv, C, T, H, W, mode), "attention_backward");
    float *h = host(gdqkv, nqkv);
    check("attention_backward_dsdq (dq)", cas, dqkv, h, no);
    check("attention_backward_dkdv (dk)", cas, dqkv + no, h + no, no);
    check("attention_backward_dkdv (dv)", cas, dqkv + 2 * no, h + 2 * no, no);

    /* the fast kernels: att in causal mode has zeros past each row's span (as att here) */
    cl_mem fout = dev_poisoned(no), fatt = dev_poisoned(na), fdqkv = dev_poisoned(nqkv);
    cl_ok(ivae_cl_attention_forward_fast(g_cl, fout, fatt, gqkv, C, T, H, W, mode), "attention_forward_fast");
    cl_ok(ivae_cl_attention_backward_fast(g_cl, fdqkv, gdout, fatt, gqkv, C, T, H, W, mode), "attention_backward_fast");
    check_close_buf("attention_forward_fast (out)", cas, out, fout, no, 1e-5);
    check_close_buf("attention_forward_fast (att)", cas, att, fatt, na, 1e-5);
    check_close_buf("attention_backward_fast (dqkv)", cas, dqkv, fdqkv, nqkv, 1e-5);
    release(fout), release(fatt), release(fdqkv);
    free(qkv), free(out), free(att), free(zero), free(dout), free(dqkv), free(h);
    release(gqkv), release(gout), release(gatt), release(gdout), release(gdqkv);
}

/* ------------------------------------------------------------------------ */
/* 2.8 upsampling */

static void test_upsample(int C, int T, int H, int W, int temporal) {
    int To = temporal ? 2 * T - 1 : T;
    size_t nx = (size_t)C * T * H * W, ny = (size_t)C * To * 4 * H * W;
    char cas[64];
    snprintf(cas, sizeof cas, "%s, C %d, %dx%dx%d", temporal ? "temporal" : "spatial", C, T, H, W);
    float *x = normal(nx, 1), *y = alloc_f(ny), *dy = normal(ny, 1), *dx = alloc_f(nx);
    ivae_upsample_forward(y, x, C, T, H, W, temporal);
    ivae_upsample_backward(dx, dy, C, T, H, W, temporal);
    cl_mem gx = dev(x, nx), gy = dev_poisoned(ny), gdy = dev(dy, ny), gdx = dev_poisoned(nx);
    cl_ok(ivae_cl_upsample_forward(g_cl, gy, gx, C, T, H, W, temporal), "upsample_forward");
    cl_ok(ivae_cl_upsample_backward(g_cl, gdx, gdy, C, T, H, W, temporal), "upsample_backward");
    check_buf("upsample_forward", cas, y, gy, ny);
    check_buf("upsample_backward", cas, dx, gdx, nx);
    free(x), free(y), free(dy), free(dx);
    release(gx), release(gy), release(gdy), release(gdx);
}

static void test_upsample_chunk(int C, int T, int H, int W, int temporal, int first) {
    int To = ivae_upsample_frames(T, temporal, first);
    size_t nx = (size_t)C * T * H * W, ny = (size_t)C * To * 4 * H * W;
    char cas[64];
    snprintf(cas, sizeof cas, "%s, %s chunk, C %d, %dx%dx%d", temporal ? "temporal" : "spatial",
             first ? "first" : "later", C, T, H, W);
    float *x = normal(nx, 1), *y = alloc_f(ny);
    ivae_upsample_chunk(y, x, C, T, H, W, temporal, first);
    cl_mem gx = dev(x, nx), gy = dev_poisoned(ny);
    cl_ok(ivae_cl_upsample_chunk(g_cl, gy, gx, C, T, H, W, temporal, first), "upsample_chunk");
    check_buf("upsample_chunk", cas, y, gy, ny);
    free(x), free(y);
    release(gx), release(gy);
}

/* ------------------------------------------------------------------------ */
/* 3. loss */

static void test_rec_loss(int C, int T, int H, int W, int with_grad) {
    Shape s = {C, T, H, W};
    size_t n = shape_numel(s);
    char cas[64];
    snprintf(cas, sizeof cas, "%dx%dx%dx%d%s", C, T, H, W, with_grad ? "" : ", dxhat NULL");
    float *x = uniform(n, -1, 1), *xhat = uniform(n, -1.2f, 1.2f), *scr = alloc_f(n), *dxhat = alloc_f(n);
    for (size_t j = 0; j < n; j += 7) xhat[j] = x[j]; /* |.|'(0) = 0 */
    float coef = 0.013f;
    double rec = ivae_rec_loss(with_grad ? dxhat : NULL, xhat, x, s, coef, scr), grec = 0;
    cl_mem gx = dev(x, n), gxhat = dev(xhat, n), gscr = dev_poisoned(n), gdxhat = with_grad ? dev_poisoned(n) : NULL;
    cl_ok(ivae_cl_rec_loss(g_cl, &grec, gdxhat, gxhat, gx, C, T, H, W, coef, gscr), "rec_loss");
    check_double("rec_loss (sum)", cas, rec, grec);
    if (with_grad) check_buf("rec_loss (dxhat)", cas, dxhat, gdxhat, n);
    free(x), free(xhat), free(scr), free(dxhat);
    release(gx), release(gxhat), release(gscr), release(gdxhat);
}

static void test_latent(int C, int T, int H, int W) {
    Shape s = {C, T, H, W};
    size_t n = shape_numel(s);
    char cas[64];
    snprintf(cas, sizeof cas, "%dx%dx%dx%d, logvar from -40 to 30", C, T, H, W);
    float *h = normal(2 * n, 1), *eps = normal(n, 1);
    for (size_t j = 0; j < n; j++) h[n + j] = -40 + 70 * (float)ivae_rng_uniform(&g_rng);
    /* the clamp's edges: exactly at them (gradient passes) and just past (blocked) */
    const float edges[] = {-30, 20, nextafterf(-30, -31), nextafterf(20, 21), -30.5f, 20.5f};
    for (int e = 0; e < 6 && (size_t)e * 5 < n; e++) h[n + e * 5] = edges[e];
    float *lv = alloc_f(n), *zs = alloc_f(n), *scr = alloc_f(n);
    double kl = ivae_latent_forward(lv, zs, h, eps, s, scr), gkl = 0;
    cl_mem gh = dev(h, 2 * n), geps = dev(eps, n), glv = dev_poisoned(n), gzs = dev_poisoned(n), gscr = dev_poisoned(n);
    cl_ok(ivae_cl_latent_forward(g_cl, &gkl, glv, gzs, gh, geps, C, T, H, W, gscr), "latent_forward");
    check_double("latent_forward (kl sum)", cas, kl, gkl);
    check_buf("latent_forward (logvar)", cas, lv, glv, n);
    check_buf("latent_forward (z)", cas, zs, gzs, n);

    float *dz = normal(n, 1), *dh = alloc_f(2 * n), ckl = 0.37f;
    ivae_latent_backward(dh, dz, lv, h, eps, n, ckl);
    cl_mem gdz = dev(dz, n), gdh = dev_poisoned(2 * n);
    cl_ok(ivae_cl_latent_backward(g_cl, gdh, gdz, glv, gh, geps, n, ckl), "latent_backward");
    check_buf("latent_backward", cas, dh, gdh, 2 * n);
    free(h), free(eps), free(lv), free(zs), free(scr), free(dz), free(dh);
    release(gh), release(geps), release(glv), release(gzs), release(gscr), release(gdz), release(gdh);
}

/* kind 0: normal with outliers, 1: one frame constant (S = 0), 2: coef = 0 (no gradient) */
static void test_opl(int C, int T, int H, int W, int kind) {
    Shape s = {C, T, H, W};
    size_t n = shape_numel(s), HW = (size_t)H * W;
    char cas[96];
    snprintf(cas, sizeof cas, "%dx%dx%dx%d, %s", C, T, H, W,
             kind == 0 ? "outliers" : kind == 1 ? "a constant frame (S = 0)" : "coef 0, no gradient");
    float *z = normal(n, 1);
    for (size_t j = 3; j < n; j += 11) z[j] *= 8; /* some positions past 3 ||sd|| */
    if (kind == 1)
        for (int c = 0; c < C; c++)
            for (size_t p = 0; p < HW; p++) z[(size_t)c * T * HW + p] = 0.25f * c; /* frame 0 */
    float coef = kind == 2 ? 0 : 0.1f;
    float *dz0 = normal(n, 0.1f), *dz = copy(dz0, n), *scr = alloc_f(2 * (size_t)C + 2 * HW);
    double opl = ivae_opl_forward_backward(dz, z, s, coef, scr), gopl = 0;
    cl_mem gz = dev(z, n), gdz = dev(dz0, n), gscr = dev_poisoned(ivae_cl_opl_scratch(C, T, H, W));
    cl_ok(ivae_cl_opl_forward_backward(g_cl, &gopl, gdz, gz, C, T, H, W, coef, gscr), "opl_forward_backward");
    check_double("opl_forward_backward (opl)", cas, opl, gopl);
    check_buf("opl_forward_backward (dz)", cas, dz, gdz, n);
    free(z), free(dz0), free(dz), free(scr);
    release(gz), release(gdz), release(gscr);
}

static void test_sum_nested(int C, int T, int H, int W) {
    Shape s = {C, T, H, W};
    size_t n = shape_numel(s);
    char cas[64];
    snprintf(cas, sizeof cas, "%dx%dx%dx%d", C, T, H, W);
    float *v = normal(n, 1);
    double sum = ivae_sum_nested(v, s), gsum = 0;
    cl_mem gv = dev(v, n);
    cl_ok(ivae_cl_sum_nested(g_cl, &gsum, gv, C, T, H, W), "sum_nested");
    check_double("sum_nested", cas, sum, gsum);
    free(v);
    release(gv);
}

/* ------------------------------------------------------------------------ */
/* the whole model on the device (ivae_cl_model.c) */

/* SPEC 8: every parameter non-trivial, as test/nontrivial.py does to a file */
static void make_nontrivial(IvaeModel *m) {
    for (int t = 0; t < m->n_tensors; t++) {
        const IvaeParamInfo *p = &m->info[t];
        real *v = m->params + p->offset;
        size_t n = strlen(p->name);
        int bias = n > 5 && strcmp(p->name + n - 5, ".bias") == 0;
        int sg = (n > 6 && strcmp(p->name + n - 6, ".scale") == 0) || (n > 5 && strcmp(p->name + n - 5, ".gain") == 0);
        int proj = strstr(p->name, ".attn.proj.weight") != NULL;
        int gn = p->ndim == 1 && n > 7 && strcmp(p->name + n - 7, ".weight") == 0; /* GroupNorm (SPEC 9) */
        float a = proj ? sqrtf(3.0f / (float)(p->numel / p->shape[0])) : 0;
        for (size_t j = 0; j < p->numel; j++) {
            if (bias) v[j] = (float)(0.2 * ivae_rng_uniform(&g_rng) - 0.1);
            else if (sg || gn) v[j] = (float)(0.5 + ivae_rng_uniform(&g_rng));
            else if (proj) v[j] = 0.5f * a * (float)(2 * ivae_rng_uniform(&g_rng) - 1);
        }
    }
}

/* a small model of every block kind: 3 stages, temporal downsampling once,
   2 res blocks per stage, 4 latent channels, 8 x mult0 and 16 channels
   (GroupNorm's 8 groups of 1 or 2); block_norm, attn_norm: SPEC 9's variants */
static IvaeModel *small_model_variant(IvaeAttnMode attn, int block_norm, int attn_norm, int mult0) {
    IvaeConfig cfg;
    ivae_config_preset("ivae-xs", &cfg);
    int mult[3] = {mult0, 2, 2}, temporal[3] = {1, 0, 0};
    cfg.base_ch = 8, cfg.n_stages = 3, cfg.n_res = 2, cfg.z_ch = 4, cfg.attn = attn;
    cfg.block_norm = block_norm, cfg.attn_norm = attn_norm;
    memcpy(cfg.ch_mult, mult, sizeof mult);
    memcpy(cfg.temporal, temporal, sizeof temporal);
    IvaeModel *m = ivae_model_new(&cfg);
    if (!m) {
        fprintf(stderr, "test_cl: %s\n", ivae_error());
        exit(1);
    }
    ivae_init_params(m, 7);
    make_nontrivial(m);
    return m;
}

static IvaeModel *small_model(IvaeAttnMode attn) {
    return small_model_variant(attn, IVAE_BLOCK_SMC, IVAE_ATTN_PIXELNORM, 1);
}

/* a batch of a clip, an image and another clip, with every output asked for */
#define NB 3
static const int batch_shape[NB][3] = {{5, 16, 16}, {1, 8, 8}, {3, 16, 8}};

static void make_batch(const IvaeModel *m, IvaeSample *s, int outputs) {
    for (int i = 0; i < NB; i++) {
        int T = batch_shape[i][0], H = batch_shape[i][1], W = batch_shape[i][2], Tz, Hz, Wz;
        ivae_latent_shape(&m->cfg, T, H, W, &Tz, &Hz, &Wz);
        size_t nx = (size_t)3 * T * H * W, nz = (size_t)m->cfg.z_ch * Tz * Hz * Wz;
        s[i] = (IvaeSample){.x = uniform(nx, -1, 1), .T = T, .H = H, .W = W, .eps = normal(nz, 1)};
        if (outputs) s[i].mu = alloc_f(nz), s[i].logvar = alloc_f(nz), s[i].xhat = alloc_f(nx), s[i].dx = alloc_f(nx);
    }
}

/* the same inputs, outputs of its own */
static void copy_batch(const IvaeModel *m, IvaeSample *d, const IvaeSample *s) {
    for (int i = 0; i < NB; i++) {
        int Tz, Hz, Wz;
        ivae_latent_shape(&m->cfg, s[i].T, s[i].H, s[i].W, &Tz, &Hz, &Wz);
        size_t nx = (size_t)3 * s[i].T * s[i].H * s[i].W, nz = (size_t)m->cfg.z_ch * Tz * Hz * Wz;
        d[i] = s[i];
        d[i].mu = alloc_f(nz), d[i].logvar = alloc_f(nz), d[i].xhat = alloc_f(nx), d[i].dx = alloc_f(nx);
    }
}

static void free_batch(IvaeSample *s, int inputs) {
    for (int i = 0; i < NB; i++) {
        if (inputs) free((void *)s[i].x), free((void *)s[i].eps);
        free(s[i].mu), free(s[i].logvar), free(s[i].xhat), free(s[i].dx);
    }
}

static IvaeClModel *cl_model(IvaeModel *m, int fast) {
    IvaeClModel *cm = ivae_cl_model_new(g_cl, m, fast);
    if (!cm) {
        fprintf(stderr, "test_cl: %s\n", ivae_error());
        exit(1);
    }
    return cm;
}

/* strict: the same bytes; fast: within SPEC 8 (tol) */
static void check_mode(int fast, const char *what, const char *cas, const float *c, const float *g, size_t n,
                       double tol) {
    if (fast) check_close(what, cas, c, g, n, tol);
    else check(what, cas, c, g, n);
}

static void check_loss(int fast, const char *what, const char *cas, double c, double g) {
    if (!fast) {
        check_double(what, cas, c, g);
        return;
    }
    char d[96];
    double e = c != 0 ? fabs(c - g) / fabs(c) : fabs(g);
    snprintf(d, sizeof d, ": e %.2e (tolerance 1e-05)", e);
    report(e <= 1e-5, what, cas, d);
}

/* ivae_batch_grad vs ivae_cl_batch_grad: loss, outputs, gradients, statistics;
   then ivae_encode / ivae_decode vs ivae_cl_encode / ivae_cl_decode; for the
   default model or one of SPEC 9's variants (block_norm, attn_norm, loss_norm) */
static void test_model_grad_variant(IvaeAttnMode attn, int fast, int block_norm, int attn_norm, int loss_norm) {
    char cas[192], what[96], var[96] = "";
    if (block_norm || attn_norm || loss_norm)
        snprintf(var, sizeof var, ", block_norm %s, attn_norm %s, loss_norm %s",
                 ivae_variant_name("block_norm", block_norm), ivae_variant_name("attn_norm", attn_norm),
                 ivae_variant_name("loss_norm", loss_norm));
    snprintf(cas, sizeof cas, "%s, %s attention, batch 3x5x16x16 + 3x1x8x8 + 3x3x16x8%s%s%s", fast ? "fast" : "strict",
             attn == IVAE_ATTN_CAUSAL ? "causal" : "frame", attn == IVAE_ATTN_CAUSAL ? ", w_opl 0.1" : "", var,
             fast && block_norm == IVAE_BLOCK_GROUPNORM ? ", 16 channels in stage 0" : "");
    /* fast mode with GroupNorm blocks: 16 channels in the first stage. With
       one channel per group, a conv bias just before a GroupNorm has a zero
       gradient (the norm subtracts it again), and e would compare two
       roundings of zero; strict mode keeps the 8 channels (bit for bit
       covers that case too) */
    int mult0 = fast && block_norm == IVAE_BLOCK_GROUPNORM ? 2 : 1;
    IvaeModel *m = small_model_variant(attn, block_norm, attn_norm, mult0);
    IvaeSample sc[NB], sd[NB];
    make_batch(m, sc, 1);
    copy_batch(m, sd, sc);
    IvaeLossOpts opts;
    ivae_loss_defaults(&opts);
    opts.w_image = 0.7f, opts.w_video = 1.3f, opts.beta = 0.01f, opts.ref_t = 5, opts.ref_h = opts.ref_w = 16;
    if (attn == IVAE_ATTN_CAUSAL) opts.w_opl = 0.1f;
    opts.loss_norm = loss_norm;

    IvaeLoss Lc, Ld;
    ivae_zero_grad(m);
    if (ivae_batch_grad(m, sc, NB, &opts, &Lc) != 0) exit(1);
    IvaeActStat stc[64], std_[64];
    int nsc = ivae_activation_stats(m, stc, 64);
    IvaeClModel *cm = cl_model(m, fast);
    cl_ok(ivae_cl_zero_grad(cm), "zero_grad");
    cl_ok(ivae_cl_batch_grad(cm, sd, NB, &opts, &Ld), "ivae_cl_batch_grad");
    float *g = alloc_f(m->n_params);
    cl_ok(ivae_cl_get_grads(cm, g), "get_grads");

    check_loss(fast, "batch_grad (loss)", cas, Lc.loss, Ld.loss);
    check_loss(fast, "batch_grad (rec)", cas, Lc.rec, Ld.rec);
    check_loss(fast, "batch_grad (kl)", cas, Lc.kl, Ld.kl);
    if (opts.w_opl != 0) check_loss(fast, "batch_grad (opl)", cas, Lc.opl, Ld.opl);
    for (int i = 0; i < NB; i++) {
        int Tz, Hz, Wz;
        ivae_latent_shape(&m->cfg, sc[i].T, sc[i].H, sc[i].W, &Tz, &Hz, &Wz);
        size_t nx = (size_t)3 * sc[i].T * sc[i].H * sc[i].W, nz = (size_t)m->cfg.z_ch * Tz * Hz * Wz;
        snprintf(what, sizeof what, "batch_grad (mu.%d)", i), check_mode(fast, what, cas, sc[i].mu, sd[i].mu, nz, 1e-5);
        snprintf(what, sizeof what, "batch_grad (logvar.%d)", i);
        check_mode(fast, what, cas, sc[i].logvar, sd[i].logvar, nz, 1e-5);
        snprintf(what, sizeof what, "batch_grad (xhat.%d)", i);
        check_mode(fast, what, cas, sc[i].xhat, sd[i].xhat, nx, 1e-5);
        snprintf(what, sizeof what, "batch_grad (grad.x.%d)", i), check_mode(fast, what, cas, sc[i].dx, sd[i].dx, nx, 1e-4);
    }
    if (!fast) {
        check("batch_grad (every gradient)", cas, m->grads, g, m->n_params);
    } else { /* SPEC 8 is per tensor */
        int worst = 0;
        double we = -1;
        for (int t = 0; t < m->n_tensors; t++) {
            const IvaeParamInfo *p = &m->info[t];
            double maxd = 0, maxc = 0;
            for (size_t j = 0; j < p->numel; j++) {
                maxc = fmax(maxc, fabs(m->grads[p->offset + j]));
                maxd = fmax(maxd, fabs((double)m->grads[p->offset + j] - g[p->offset + j]));
            }
            double e = maxc > 0 ? maxd / maxc : maxd;
            if (!(e <= we)) we = e, worst = t;
        }
        snprintf(what, sizeof what, ": worst e %.2e (tolerance 1e-04) at grad.%s", we, m->info[worst].name);
        report(we <= 1e-4, "batch_grad (every gradient)", cas, what);
    }
    int nsd = ivae_cl_activation_stats(cm, std_, 64), same = nsc == nsd;
    for (int j = 0; same && j < nsc; j++)
        same = strcmp(stc[j].name, std_[j].name) == 0 &&
               (fast ? fabs(stc[j].rms - std_[j].rms) <= 1e-5 * stc[j].rms &&
                           fabs(stc[j].max_norm - std_[j].max_norm) <= 1e-5 * stc[j].max_norm &&
                           fabs(stc[j].median_norm - std_[j].median_norm) <= 1e-5 * stc[j].median_norm
                     : stc[j].rms == std_[j].rms && stc[j].max_norm == std_[j].max_norm &&
                           stc[j].median_norm == std_[j].median_norm);
    report(same, "activation_stats", cas, "");

    /* inference: the C code streams the clip (frame attention), the device runs it whole */
    const IvaeSample *c0 = &sc[0];
    int Tz, Hz, Wz;
    ivae_latent_shape(&m->cfg, c0->T, c0->H, c0->W, &Tz, &Hz, &Wz);
    size_t nx = (size_t)3 * c0->T * c0->H * c0->W, nz = (size_t)m->cfg.z_ch * Tz * Hz * Wz;
    float *mu = alloc_f(nz), *gmu = alloc_f(nz), *xh = alloc_f(nx), *gxh = alloc_f(nx);
    if (ivae_encode(m, c0->x, c0->T, c0->H, c0->W, mu) != 0 || ivae_decode(m, mu, Tz, Hz, Wz, xh) != 0) exit(1);
    cl_ok(ivae_cl_encode(cm, c0->x, c0->T, c0->H, c0->W, gmu), "ivae_cl_encode");
    cl_ok(ivae_cl_decode(cm, mu, Tz, Hz, Wz, gxh), "ivae_cl_decode");
    check_mode(fast, "encode", cas, mu, gmu, nz, 1e-5);
    check_mode(fast, "decode", cas, xh, gxh, nx, 1e-5);

    ivae_cl_model_free(cm);
    free_batch(sc, 1), free_batch(sd, 0);
    free(g), free(mu), free(gmu), free(xh), free(gxh);
    ivae_model_free(m);
}

static void test_model_grad(IvaeAttnMode attn, int fast) {
    test_model_grad_variant(attn, fast, IVAE_BLOCK_SMC, IVAE_ATTN_PIXELNORM, IVAE_LOSS_REF);
}

/* three training steps: batch_grad and AdamW (weight decay on), bit for bit */
static void test_model_adamw(void) {
    const char *cas = "3 steps, lr 1e-2, weight decay 0.05, small model";
    IvaeModel *m = small_model(IVAE_ATTN_FRAME), *md = small_model(IVAE_ATTN_FRAME);
    memcpy(md->params, m->params, m->n_params * sizeof(real));
    IvaeSample s[NB];
    make_batch(m, s, 0);
    IvaeLossOpts opts;
    ivae_loss_defaults(&opts);
    IvaeAdamW h;
    ivae_adamw_defaults(&h);
    h.lr = 1e-2f, h.weight_decay = 0.05f;
    IvaeClModel *cm = cl_model(md, 0);
    for (int step = 0; step < 3; step++) {
        IvaeLoss L;
        ivae_zero_grad(m);
        if (ivae_batch_grad(m, s, NB, &opts, &L) != 0) exit(1);
        ivae_adamw_step(m, &h);
        cl_ok(ivae_cl_zero_grad(cm), "zero_grad");
        cl_ok(ivae_cl_batch_grad(cm, s, NB, &opts, &L), "batch_grad");
        cl_ok(ivae_cl_adamw_step(cm, &h), "ivae_cl_adamw_step");
    }
    float *p = alloc_f(m->n_params);
    cl_ok(ivae_cl_get_params(cm, p), "get_params");
    check("adamw_step (params)", cas, m->params, p, m->n_params);
    cl_ok(ivae_cl_get_state(cm, md), "get_state");
    check("adamw_step (moment m)", cas, m->adam_m, md->adam_m, m->n_params);
    check("adamw_step (moment v)", cas, m->adam_v, md->adam_v, m->n_params);
    report(m->step == md->step && m->step == 3, "adamw_step (step count)", cas, "");
    /* the state goes back up unchanged: set, then get, gives the same bytes */
    for (size_t j = 0; j < m->n_params; j++) p[j] = -p[j];
    cl_ok(ivae_cl_set_params(cm, p), "set_params");
    cl_ok(ivae_cl_set_state(cm, m), "set_state");
    cl_ok(ivae_cl_get_params(cm, p), "get_params");
    check("set_state, get_params", "round trip", m->params, p, m->n_params);
    ivae_cl_model_free(cm);
    free_batch(s, 1);
    free(p);
    ivae_model_free(m), ivae_model_free(md);
}

/* ------------------------------------------------------------------------ */
/* the device choice: out-of-range indices give the promised one-line errors */

static void test_env_errors(void) {
    char cas[160], name[256] = "";
    cl_platform_id ps[16], p = NULL;
    cl_uint np = 0, nd = 0, ip = 0;
    const char *env = getenv("IVAE_CL_PLATFORM"); /* the platform the tests run on */
    if (env) ip = (cl_uint)atoi(env);
    if (clGetPlatformIDs(16, ps, &np) == CL_SUCCESS && ip < np) p = ps[ip];
    if (p) clGetPlatformInfo(p, CL_PLATFORM_NAME, sizeof name, name, NULL);
    if (!p || clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS) nd = 0;
    char want[512];
    snprintf(want, sizeof want, "IVAE_CL_DEVICE=%u but platform %u (%s) has %u device%s", nd + 4, ip, name, nd,
             nd == 1 ? "" : "s");
    char val[16];
    snprintf(val, sizeof val, "%u", nd + 4);
    setenv("IVAE_CL_DEVICE", val, 1);
    IvaeCl *bad = ivae_cl_new();
    unsetenv("IVAE_CL_DEVICE");
    snprintf(cas, sizeof cas, "IVAE_CL_DEVICE=%s -> \"%s\"", val, bad ? "(opened!)" : ivae_error());
    report(!bad && strcmp(ivae_error(), want) == 0, "device choice", cas, "");
    ivae_cl_free(bad);

    setenv("IVAE_CL_PLATFORM", "x1", 1);
    bad = ivae_cl_new();
    unsetenv("IVAE_CL_PLATFORM");
    snprintf(cas, sizeof cas, "IVAE_CL_PLATFORM=x1 -> \"%s\"", bad ? "(opened!)" : ivae_error());
    report(!bad && strstr(ivae_error(), "IVAE_CL_PLATFORM=x1 is not an index") != NULL, "device choice", cas, "");
    ivae_cl_free(bad);
}

/* ------------------------------------------------------------------------ */
/* timing: the strict conv3d_forward on an ivae-s shape, C vs OpenCL */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void bench_conv(void) {
    int Cin = 32, Cout = 32, T = 17, H = 64, W = 64, k = 3;
    size_t nx = (size_t)Cin * T * H * W, ny = (size_t)Cout * T * H * W, nw = (size_t)Cout * Cin * k * k * k;
    float *x = normal(nx, 1), *w = uniform(nw, -0.1f, 0.1f), *b = normal(Cout, 0.1f), *y = alloc_f(ny);
    cl_mem gx = dev(x, nx), gw = dev(w, nw), gb = dev(b, Cout), gy = dev(y, ny);
    ivae_conv3d_forward(y, x, w, b, Cin, T, H, W, Cout, k, k, k, 1, 1, 1); /* warm-up: scratch, pages */
    int reps = 5;
    double t0 = now();
    for (int r = 0; r < reps; r++) ivae_conv3d_forward(y, x, w, b, Cin, T, H, W, Cout, k, k, k, 1, 1, 1);
    double tc = (now() - t0) / reps;
    cl_ok(ivae_cl_conv3d_forward(g_cl, gy, gx, gw, gb, Cin, T, H, W, Cout, k, k, k, 1, 1, 1), "conv"); /* warm-up */
    cl_ok(ivae_cl_finish(g_cl), "finish");
    double t1 = now();
    cl_ok(ivae_cl_conv3d_forward(g_cl, gy, gx, gw, gb, Cin, T, H, W, Cout, k, k, k, 1, 1, 1), "conv");
    cl_ok(ivae_cl_finish(g_cl), "finish");
    double tg = now() - t1;
    double gflop = 2.0 * ny * Cin * k * k * k * 1e-9;
    printf("bench conv3d_forward 32->32 3x3x3 on 17x64x64 (%.2f GFLOP): C %.3f s (%.1f GFLOP/s, %d threads), "
           "OpenCL strict %.3f s (%.1f GFLOP/s), ratio %.0fx\n",
           gflop, tc, gflop / tc, max_threads(), tg, gflop / tg, tg / tc);
    check_buf("conv3d_forward", "bench shape 3x3x3 s(1,1,1) 32->32 17x64x64", y, gy, ny);
    free(x), free(w), free(b), free(y);
    release(gx), release(gw), release(gb), release(gy);
}

/* ------------------------------------------------------------------------ */

/* the private pocl cache, removed at any exit */
static char g_cache[] = "/tmp/ivae_test_cl.XXXXXX";
static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) { return remove(path); }
static void remove_cache(void) { nftw(g_cache, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

int main(int argc, char **argv) {
    ivae_wait_passively(argv);
    int bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    if (argc > 1 && !bench) {
        fprintf(stderr, "usage: test/test_cl [--bench]\n");
        return 2;
    }
    if (ivae_cl_platform_count() == 0) {
        printf("SKIP test_cl: no OpenCL platform on this machine (no OpenCL driver installed; on Debian, "
               "apt-get install pocl-opencl-icd); the CPU path does not need one\n");
        return 0;
    }
    /* pocl caches compiled kernels; a private cache per run means a stale
       binary (of an older kernels.cl or ivae_math.h) can never be tested */
    if (!mkdtemp(g_cache)) {
        perror("test_cl: mkdtemp");
        return 1;
    }
    atexit(remove_cache);
    setenv("POCL_CACHE_DIR", g_cache, 1);

#ifdef _OPENMP
    /* The C references run on one thread: their bits do not depend on the
       thread count (test/run.sh step 4 checks that), and on a busy machine
       OpenMP's barriers make two threads many times slower than one. The
       benchmark keeps them all. */
    if (!bench) omp_set_num_threads(1);
#endif
    double t0 = now();
    g_cl = ivae_cl_new();
    if (!g_cl) {
        fprintf(stderr, "test_cl: %s\n", ivae_error());
        return 1;
    }
    printf("OpenCL platform %d (%s), device %d (%s)\nkernels %s, built in %.1f s\n", g_cl->platform_index,
           g_cl->platform_name, g_cl->device_index, g_cl->device_name, g_cl->kernels_path, now() - t0);

    test_env_errors();

    /* 2.1 conv3d: shapes, strides, kernels; W past one 16-column tile, Cout
       past the 8-channel forward tile and the 32-channel weight-gradient tile */
    test_conv(3, 5, 5, 7, 9, 3, 3, 3, 1, 1, 1, 1);
    test_conv(4, 6, 3, 9, 11, 3, 3, 3, 1, 2, 2, 1);
    test_conv(3, 4, 5, 9, 7, 3, 3, 3, 2, 2, 2, 1);
    test_conv(3, 4, 6, 8, 10, 3, 3, 3, 2, 2, 2, 1);
    test_conv(5, 3, 1, 7, 5, 3, 3, 3, 1, 1, 1, 1);
    test_conv(3, 5, 1, 9, 9, 3, 3, 3, 1, 2, 2, 1);
    test_conv(4, 4, 1, 8, 8, 3, 3, 3, 2, 2, 2, 1);
    test_conv(5, 7, 3, 5, 6, 1, 1, 1, 1, 1, 1, 1);
    test_conv(6, 3, 2, 3, 5, 1, 1, 1, 1, 1, 1, 0);
    test_conv(9, 35, 3, 5, 37, 3, 3, 3, 1, 1, 1, 1);
    test_conv(16, 16, 5, 16, 16, 3, 3, 3, 1, 1, 1, 0);
    test_conv(16, 16, 5, 16, 16, 3, 3, 3, 2, 2, 2, 1);
    test_conv_chunk(3, 5, 4, 7, 9, 3, 1, 1, 5, 1);
    test_conv_chunk(3, 5, 4, 7, 9, 3, 2, 2, 5, 1);
    test_conv_chunk(3, 5, 1, 7, 9, 3, 1, 1, 0, 0);
    test_conv_chunk(4, 3, 4, 6, 5, 3, 2, 2, 1, 1);

    /* 2.2 SMC */
    test_smc(5, 7, 27);
    test_smc(3, 4, 1);
    test_smc(64, 64, 27);

    /* 2.3 SiLU: ordinary values, then the whole range of exp (inf, denormal sigmoids) */
    test_silu("n 1037, normal(0, 4)", normal(1037, 4), 1037);
    test_silu("n 4099, uniform(-110, 110)", uniform(4099, -110, 110), 4099);
    test_silu("n 1000, subnormal inputs", uniform(1000, -1e-38f, 1e-38f), 1000);

    /* 2.4 PixelNorm */
    test_pixelnorm(7, 105);
    test_pixelnorm(64, 37);

    /* GroupNorm (SPEC 9): 1, 2 and 4 channels per group, T = 1 and T > 1,
       W no multiple of anything; frames of 1184 values (rows summed in order) */
    test_groupnorm(8, 8, 1, 5, 7);
    test_groupnorm(16, 8, 3, 4, 13);
    test_groupnorm(32, 8, 2, 6, 11);
    test_groupnorm(12, 3, 5, 3, 9);
    test_groupnorm(16, 8, 2, 32, 37);

    /* 2.6 attention */
    test_attention(6, 3, 4, 5, IVAE_ATTN_FRAME);
    test_attention(6, 3, 4, 5, IVAE_ATTN_CAUSAL);
    test_attention(5, 1, 3, 7, IVAE_ATTN_CAUSAL);
    test_attention(16, 2, 6, 6, IVAE_ATTN_FRAME);

    /* 2.8 upsampling */
    test_upsample(3, 3, 5, 7, 0);
    test_upsample(3, 3, 5, 7, 1);
    test_upsample(2, 1, 4, 3, 1);
    test_upsample_chunk(3, 3, 5, 7, 1, 1);
    test_upsample_chunk(3, 3, 5, 7, 1, 0);
    test_upsample_chunk(3, 3, 5, 7, 0, 0);

    /* 3. loss */
    test_sum_nested(3, 5, 7, 9);
    test_rec_loss(3, 5, 6, 7, 1);
    test_rec_loss(3, 1, 8, 8, 0);
    test_latent(4, 3, 5, 6);
    test_latent(16, 1, 2, 2);
    test_opl(4, 3, 5, 6, 0);
    test_opl(4, 3, 5, 6, 1);
    test_opl(4, 2, 4, 4, 2);
    test_opl(16, 5, 8, 8, 0);

    /* the fast kernels past one tile: Cout and Cin over 64, P over 2048 (the
       weight gradient in chunks) */
    test_conv(8, 70, 5, 24, 24, 3, 3, 3, 1, 1, 1, 1);
    test_conv(70, 8, 3, 12, 12, 3, 3, 3, 2, 2, 2, 1);

    /* 4. the model on the device */
    test_model_grad(IVAE_ATTN_FRAME, 0);
    test_model_grad(IVAE_ATTN_CAUSAL, 0);
    test_model_adamw();
    test_model_grad(IVAE_ATTN_FRAME, 1);
    test_model_grad(IVAE_ATTN_CAUSAL, 1);
    /* SPEC 9's variants: GroupNorm blocks, attention with GroupNorm or no
       norm, each loss normalisation (after the tests above: their inputs stay) */
    test_model_grad_variant(IVAE_ATTN_FRAME, 0, IVAE_BLOCK_GROUPNORM, IVAE_ATTN_GROUPNORM, IVAE_LOSS_MEAN);
    test_model_grad_variant(IVAE_ATTN_CAUSAL, 0, IVAE_BLOCK_GROUPNORM, IVAE_ATTN_NONORM, IVAE_LOSS_SUM);
    test_model_grad_variant(IVAE_ATTN_FRAME, 0, IVAE_BLOCK_SMC, IVAE_ATTN_GROUPNORM, IVAE_LOSS_REF);
    test_model_grad_variant(IVAE_ATTN_FRAME, 1, IVAE_BLOCK_GROUPNORM, IVAE_ATTN_GROUPNORM, IVAE_LOSS_MEAN);
    test_model_grad_variant(IVAE_ATTN_CAUSAL, 1, IVAE_BLOCK_GROUPNORM, IVAE_ATTN_NONORM, IVAE_LOSS_SUM);

    if (bench) bench_conv();

    ivae_cl_free(g_cl);
    printf("%s: %d of %d checks pass (strict: bit-identical; fast: within SPEC 8) (%.1f s)\n", g_failed ? "FAIL" : "OK",
           g_checked - g_failed, g_checked, now() - t0);
    return g_failed ? 1 : 0;
}
