/*
 * test_wan.c: the C Wan 2.1 VAE against the project's float64 PyTorch port
 * (test/wan_ref.py golden), SPEC 8's measure: e = max|a - b| / max|b| per
 * tensor, e <= 1e-5 for mu, logvar and the raw decoder output xhat (decoded
 * from the port's mu, so the decoder is checked on its own), and for every
 * block of the trace (encoder and decoder, chunk by chunk) when a trace file
 * is given: the first block beyond the tolerance is named.
 *
 *   test/test_wan MODEL NAME.in NAME.expected [NAME.trace]
 *
 * Exit status 1 on any failure. Tolerance: float32 against float64 over a
 * few hundred chained operations lands near 1e-6 (measured in the note of
 * the Wan issue); 1e-5 is SPEC 8's bound for outputs.
 */
#include "../layers.h"
#include "../wan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

static int n_fail;
static IvaeSt *g_trace;
static double g_worst_trace;
static char g_first_bad[160];

static double rel_err(const real *a, const real *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t j = 0; j < n; j++) {
        double d = fabs((double)a[j] - b[j]);
        if (!(d <= md)) md = d; /* NaN counts as the worst */
        if (fabs((double)b[j]) > mb) mb = fabs((double)b[j]);
    }
    return mb > 0 ? md / mb : md;
}

static real *read_tensor(const IvaeSt *st, const char *name, size_t want) {
    const IvaeStTensor *t = ivae_st_find(st, name);
    if (!t || t->numel != want) {
        printf("FAIL %s: tensor '%s' missing or of the wrong size\n", st->path, name);
        exit(1);
    }
    real *v = xmalloc(want * sizeof(real));
    if (ivae_st_read(st, t, v) != 0) {
        printf("FAIL %s\n", ivae_error());
        exit(1);
    }
    return v;
}

static void check(const char *what, const real *got, const real *want, size_t n) {
    double e = rel_err(got, want, n);
    int ok = e <= TOL;
    n_fail += !ok;
    printf("%s %-8s e %.2e (tolerance %.0e)\n", ok ? "ok  " : "FAIL", what, e, TOL);
}

/* the trace callback: every block's output against the port's */
static void on_block(void *ctx, const char *name, int chunk, const real *x, int C, int T, int H, int W) {
    char key[160];
    snprintf(key, sizeof key, "%s.chunk%d", name, chunk);
    const IvaeStTensor *t = ivae_st_find(g_trace, key);
    size_t n = (size_t)C * T * H * W;
    if (!t || t->numel != n) {
        if (!g_first_bad[0]) snprintf(g_first_bad, sizeof g_first_bad, "%s (missing or wrong shape in the trace)", key);
        g_worst_trace = 1;
        return;
    }
    real *want = xmalloc(n * sizeof(real));
    ivae_st_read(g_trace, t, want);
    double e = rel_err(x, want, n);
    if (e > g_worst_trace) g_worst_trace = e;
    if (e > TOL && !g_first_bad[0]) snprintf(g_first_bad, sizeof g_first_bad, "%s (e %.2e)", key, e);
    free(want);
    (*(int *)ctx)++;
}

int main(int argc, char **argv) {
    ivae_wait_passively(argv);
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: test_wan MODEL IN EXPECTED [TRACE]\n");
        return 2;
    }
    WanModel *m = wan_load(argv[1]);
    if (!m) {
        printf("FAIL %s\n", ivae_error());
        return 1;
    }
    IvaeSt *in = ivae_st_open(argv[2]), *ex = ivae_st_open(argv[3]);
    if (!in || !ex) {
        printf("FAIL %s\n", ivae_error());
        return 1;
    }
    const IvaeStTensor *tx = ivae_st_find(in, "x");
    if (!tx || tx->ndim != 4) {
        printf("FAIL %s: no (3, T, H, W) tensor x\n", argv[2]);
        return 1;
    }
    int T = (int)tx->shape[1], H = (int)tx->shape[2], W = (int)tx->shape[3], z = wan_z(m);
    int Tz = (T - 1) / 4 + 1;
    size_t nx = (size_t)3 * T * H * W, nz = (size_t)z * Tz * (H / 8) * (W / 8);
    real *x = read_tensor(in, "x", nx), *mu_ref = read_tensor(ex, "mu", nz), *lv_ref = read_tensor(ex, "logvar", nz);
    real *xhat_ref = read_tensor(ex, "xhat", nx);
    real *mu = xmalloc(nz * sizeof(real)), *lv = xmalloc(nz * sizeof(real)), *xhat = xmalloc(nx * sizeof(real));
    int traced = 0;
    if (argc == 5 && !(g_trace = ivae_st_open(argv[4]))) {
        printf("FAIL %s\n", ivae_error());
        return 1;
    }
    printf("Wan 2.1 VAE dim %d z %d (%s layout), clip %dx%dx%d\n", wan_dim(m), z, wan_layout(m), T, H, W);
    if (wan_encode(m, x, T, H, W, mu, lv, g_trace ? on_block : NULL, &traced) != 0 ||
        wan_decode(m, mu_ref, Tz, H / 8, W / 8, xhat, g_trace ? on_block : NULL, &traced) != 0) {
        printf("FAIL %s\n", ivae_error());
        return 1;
    }
    check("mu", mu, mu_ref, nz);
    check("logvar", lv, lv_ref, nz);
    check("xhat", xhat, xhat_ref, nx);
    if (g_trace) {
        int ok = !g_first_bad[0] && traced > 0;
        n_fail += !ok;
        printf("%s trace    %d block outputs, worst e %.2e%s%s\n", ok ? "ok  " : "FAIL", traced, g_worst_trace,
               g_first_bad[0] ? "; first beyond tolerance: " : "", g_first_bad);
    }
    wan_free(m);
    return n_fail != 0;
}
