/*
 * test_model.c: properties of the float32 reference that need no oracle.
 *
 * 1. ivae_expf: within 2 ulp of the true exp over the whole float range
 *    (so the shared exp costs no accuracy; measured against libm's double exp,
 *    which is far more accurate than 1 float ulp).
 * 2. causality (SPEC 2.1, 3): the latent of an image equals latent frame 0 of
 *    a clip that starts with that image, bit for bit; the later frames of the
 *    clip do not touch latent frame 0; the decoder is causal the same way.
 * 3. checkpoints: save then load gives the same bits.
 * 4. streaming: encode and decode chunk by chunk (with the causal caches)
 *    give the bits of the whole-clip pass (SPEC 8 allows 1e-6 relative; the
 *    same operations in the same order give 0).
 */
#include "../layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail = 0;

static void report(int ok, const char *what, const char *detail) {
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what, detail[0] ? ": " : "", detail);
    n_fail += !ok;
}

static void test_exp(void) {
    int64_t worst = 0;
    float worst_x = 0;
    /* every 61st float in [-104, 89]: walk the bit patterns of each sign */
    for (int sign = 0; sign < 2; sign++) {
        uint32_t top = sign ? 0xC2D00000u /* -104 */ : 0x42B20000u /* 89 */;
        for (uint32_t bits = sign ? 0x80000000u : 0; bits <= top; bits += 61) {
            float x, got, want;
            memcpy(&x, &bits, 4);
            got = ivae_expf(x), want = (float)exp((double)x);
            int32_t a, b;
            memcpy(&a, &got, 4), memcpy(&b, &want, 4);
            int64_t u = a > b ? (int64_t)a - b : (int64_t)b - a;
            if (u > worst) worst = u, worst_x = x;
        }
    }
    int ok = worst <= 2 && ivae_expf(0.0f) == 1.0f && isinf(ivae_expf(89.0f)) && ivae_expf(-104.0f) == 0.0f &&
             isnan(ivae_expf(NAN));
    char d[128];
    snprintf(d, sizeof d, "worst %lld ulp (at x = %.9g); exp(0) = 1, overflow to inf, underflow to 0, NaN kept",
             (long long)worst, worst_x);
    report(ok, "ivae_expf accuracy", d);
}

static IvaeModel *random_model(const char *preset, uint64_t seed) {
    IvaeConfig cfg;
    ivae_config_preset(preset, &cfg);
    IvaeModel *m = ivae_model_new(&cfg);
    ivae_init_params(m, seed);
    IvaeRng r = {seed + 1};
    /* non-trivial: attention projections and biases away from zero */
    for (size_t j = 0; j < m->n_params; j++) m->params[j] += (real)(0.02 * (2 * ivae_rng_uniform(&r) - 1));
    return m;
}

static void test_causality(void) {
    IvaeModel *m = random_model("ivae-s", 3);
    int T = 9, H = 32, W = 32, Tz = 3, Hz = 4, Wz = 4, z = m->cfg.z_ch;
    size_t frame = (size_t)H * W, nz = (size_t)z * Tz * Hz * Wz, zf = (size_t)Hz * Wz;
    IvaeRng r = {99};
    real *clip = xmalloc((size_t)3 * T * frame * sizeof(real)), *img = xmalloc(3 * frame * sizeof(real));
    for (size_t j = 0; j < (size_t)3 * T * frame; j++) clip[j] = (real)(2 * ivae_rng_uniform(&r) - 1);
    for (int c = 0; c < 3; c++) memcpy(img + c * frame, clip + (size_t)c * T * frame, frame * sizeof(real));

    real *mu_clip = xmalloc(nz * sizeof(real)), *mu_img = xmalloc((size_t)z * zf * sizeof(real));
    ivae_encode(m, clip, T, H, W, mu_clip);
    ivae_encode(m, img, 1, H, W, mu_img);
    int same = 1;
    for (int c = 0; c < z; c++) same &= memcmp(mu_img + c * zf, mu_clip + (size_t)c * Tz * zf, zf * sizeof(real)) == 0;
    report(same, "causal encoder", "image latent == latent frame 0 of a clip starting with it (memcmp)");

    /* later frames must not reach latent frame 0 */
    for (int c = 0; c < 3; c++)
        for (size_t j = frame; j < (size_t)T * frame; j++) clip[(size_t)c * T * frame + j] *= -1;
    real *mu2 = xmalloc(nz * sizeof(real));
    ivae_encode(m, clip, T, H, W, mu2);
    same = 1;
    int later_differ = 0;
    for (int c = 0; c < z; c++) {
        same &= memcmp(mu2 + (size_t)c * Tz * zf, mu_clip + (size_t)c * Tz * zf, zf * sizeof(real)) == 0;
        later_differ |= memcmp(mu2 + (size_t)c * Tz * zf + zf, mu_clip + (size_t)c * Tz * zf + zf, zf * sizeof(real)) != 0;
    }
    report(same && later_differ, "causal encoder", "changing frames 1..8 leaves latent frame 0 unchanged (and changes the rest)");

    /* the decoder: one latent frame decodes to the first frame of the clip's decoding */
    real *xh_clip = xmalloc((size_t)3 * T * frame * sizeof(real)), *xh_img = xmalloc(3 * frame * sizeof(real));
    real *z0 = xmalloc((size_t)z * zf * sizeof(real));
    for (int c = 0; c < z; c++) memcpy(z0 + c * zf, mu_clip + (size_t)c * Tz * zf, zf * sizeof(real));
    ivae_decode(m, mu_clip, Tz, Hz, Wz, xh_clip);
    ivae_decode(m, z0, 1, Hz, Wz, xh_img);
    same = 1;
    for (int c = 0; c < 3; c++) same &= memcmp(xh_img + c * frame, xh_clip + (size_t)c * T * frame, frame * sizeof(real)) == 0;
    report(same, "causal decoder", "decoding latent frame 0 alone == frame 0 of the clip's decoding (memcmp)");

    free(clip), free(img), free(mu_clip), free(mu_img), free(mu2), free(xh_clip), free(xh_img), free(z0);
    ivae_model_free(m);
}

static void test_checkpoint(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/roundtrip.safetensors", dir);
    IvaeModel *m = random_model("ivae-xs", 5);
    int ok = ivae_save(m, path) == 0;
    IvaeModel *m2 = ok ? ivae_load(path) : NULL;
    ok = m2 && m2->n_params == m->n_params && memcmp(m2->params, m->params, m->n_params * sizeof(real)) == 0 &&
         memcmp(&m2->cfg, &m->cfg, sizeof m->cfg) == 0;
    char d[256];
    snprintf(d, sizeof d, "ivae-xs, %zu parameters: save + load is bit-exact%s%s", m->n_params, m2 ? "" : ": ",
             m2 ? "" : ivae_error());
    report(ok, "checkpoint round trip", d);
    report(m->n_params == 2394059, "parameter count", "ivae-xs has 2,394,059 parameters (SPEC 3)");
    ivae_model_free(m);
    ivae_model_free(m2);
    IvaeConfig cfg;
    ivae_config_preset("ivae-s", &cfg);
    m = ivae_model_new(&cfg);
    report(m->n_params == 9398107, "parameter count", "ivae-s has 9,398,107 parameters (SPEC 3)");
    ivae_model_free(m);
}

/* max |a - b| / max |b| */
static double rel_err(const real *a, const real *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t j = 0; j < n; j++) {
        if (fabs((double)a[j] - b[j]) > md) md = fabs((double)a[j] - b[j]);
        if (fabs((double)b[j]) > mb) mb = fabs((double)b[j]);
    }
    return mb > 0 ? md / mb : md;
}

static void test_streaming(const char *preset, int T, int H, int W) {
    IvaeModel *m = random_model(preset, 11);
    int Tz, Hz, Wz;
    ivae_latent_shape(&m->cfg, T, H, W, &Tz, &Hz, &Wz);
    Shape xs = {3, T, H, W}, zs = {m->cfg.z_ch, Tz, Hz, Wz};
    size_t nx = shape_numel(xs), nz = shape_numel(zs);
    IvaeRng r = {5};
    real *x = xmalloc(nx * sizeof(real)), *mu_s = xmalloc(nz * sizeof(real)), *mu_w = xmalloc(nz * sizeof(real));
    real *y_s = xmalloc(nx * sizeof(real)), *y_w = xmalloc(nx * sizeof(real));
    for (size_t j = 0; j < nx; j++) x[j] = (real)(2 * ivae_rng_uniform(&r) - 1);
    ivae_encode_whole(m, x, T, H, W, mu_w);
    ivae_encode(m, x, T, H, W, mu_s);
    ivae_decode_whole(m, mu_w, Tz, Hz, Wz, y_w);
    ivae_decode(m, mu_w, Tz, Hz, Wz, y_s);
    double e_enc = rel_err(mu_s, mu_w, nz), e_dec = rel_err(y_s, y_w, nx);
    char d[256];
    snprintf(d, sizeof d, "%s, %dx%dx%d: encode e %.1e, decode e %.1e (%s)", preset, T, H, W, e_enc, e_dec,
             memcmp(mu_s, mu_w, nz * sizeof(real)) || memcmp(y_s, y_w, nx * sizeof(real)) ? "not bit-identical" : "bit-identical");
    report(e_enc <= 1e-6 && e_dec <= 1e-6, "streamed vs whole clip", d);
    free(x), free(mu_s), free(mu_w), free(y_s), free(y_w);
    ivae_model_free(m);
}

int main(int argc, char **argv) {
    ivae_wait_passively(argv);
    test_exp();
    test_causality();
    test_checkpoint(argc > 1 ? argv[1] : ".");
    test_streaming("ivae-s", 17, 32, 32);
    test_streaming("ivae-xs", 9, 16, 24);
    test_streaming("ivae-xs", 1, 16, 16);
    printf("%s: test_model\n", n_fail ? "FAIL" : "PASS");
    return n_fail ? 1 : 0;
}
