/*
 * bench_wan.c: time and peak memory of the C Wan 2.1 VAE, in the format of
 * test/wan_ref.py bench (one line per measurement), for test/bench_wan.sh.
 *
 *   test/bench_wan encode|decode [--dim 96] [--z 16] [--frames 17] [--size 256x256]
 *
 * Random non-trivial weights of the released width; one process per
 * operation, so peak RSS is that operation's.
 */
#include "../layers.h"
#include "../wan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

int main(int argc, char **argv) {
    ivae_wait_passively(argv);
    int dim = 96, z = 16, T = 17, H = 256, W = 256;
    if (argc < 2 || (strcmp(argv[1], "encode") && strcmp(argv[1], "decode"))) {
        fprintf(stderr, "usage: bench_wan encode|decode [--dim D] [--z Z] [--frames T] [--size HxW]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dim")) dim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--z")) z = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--frames")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size") && sscanf(argv[i + 1], "%dx%d", &H, &W) == 2) continue;
        else {
            fprintf(stderr, "bench_wan: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    WanModel *m = wan_new_random(dim, z, 1);
    double rss_w = peak_rss_mb();
    int Tz = (T - 1) / 4 + 1;
    size_t nx = (size_t)3 * T * H * W, nz = (size_t)z * Tz * (H / 8) * (W / 8);
    IvaeRng r = {7};
    double t0, dt;
    if (!strcmp(argv[1], "encode")) {
        real *x = xmalloc(nx * sizeof(real)), *mu = xmalloc(nz * sizeof(real));
        for (size_t j = 0; j < nx; j++) x[j] = (real)(2 * ivae_rng_uniform(&r) - 1);
        t0 = now();
        if (wan_encode(m, x, T, H, W, mu, NULL, NULL, NULL) != 0) return fprintf(stderr, "%s\n", ivae_error()), 1;
        dt = now() - t0;
    } else {
        real *zl = xmalloc(nz * sizeof(real)), *xh = xmalloc(nx * sizeof(real));
        for (size_t j = 0; j < nz; j++) zl[j] = (real)ivae_rng_normal(&r);
        t0 = now();
        if (wan_decode(m, zl, Tz, H / 8, W / 8, xh, NULL, NULL) != 0) return fprintf(stderr, "%s\n", ivae_error()), 1;
        dt = now() - t0;
    }
    const char *thr = getenv("OMP_NUM_THREADS");
    printf("bench impl=ivae dtype=float32 op=%s dim=%d z=%d frames=%d size=%dx%d threads=%s seconds=%.3f fps=%.4f "
           "peak_rss_mb=%.0f weights_rss_mb=%.0f\n",
           argv[1], dim, z, T, H, W, thr ? thr : "default", dt, T / dt, peak_rss_mb(), rss_w);
    wan_free(m);
    return 0;
}
