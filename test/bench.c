/*
 * bench.c: how fast is ivae, next to the machine's peak and to PyTorch?
 *
 *   make bench                        # builds test/bench, runs it, writes bench.csv
 *   test/bench --quick                # smoke test: 1 run per row, 64x64 instead of 256x256
 *   test/bench --help                 # the other flags
 *
 * Rows, for one config (default ivae-s):
 *   peak   the machine's FP32 rate: independent fmaf()s on many accumulators
 *          (vfmadd, 512- and 256-bit), and the same as a multiply then an add;
 *          every GF/s below is also given as a fraction of the best fma rate
 *   conv   each DISTINCT conv3d shape of one training step on a 3x17x64x64 clip
 *          (walked from SPEC 3 by walk_model), timed three ways: forward,
 *          input gradient, weight gradient (+ bias gradient); "uses" counts
 *          the shape's occurrences in the model
 *   train  forward + backward + AdamW: one 17x64x64 clip, and four 1x64x64 images
 *   infer  encode and decode of a 3x17x256x256 clip
 *   mem    peak resident memory of a training step and of a decode, at 17 and
 *          33 frames
 * FLOPs are 2 * Cout * Cin * kt*kh*kw * output positions per conv (the same
 * for the three passes); a model row's GF/s counts its convs only (attention
 * and the elementwise layers are not counted, but their time is).
 *
 * Side by side with PyTorch: when torch imports, test/bench_torch.py runs as a
 * server (a child process on two pipes) and, right after ivae has timed a row,
 * times the same row and sends back one line, so that the two sides of each
 * ratio are measured seconds apart on this shared, noisy machine. The ratio is
 * PyTorch's time / ivae's time: > 1 means ivae is faster.
 *
 * Timing: one warm-up call, then timed calls (at most --runs, and no more once
 * the next would take the row past --budget seconds; conv rows get a fifth of
 * it), and the median. A warm-up that took --long seconds or more is kept as
 * the one sample: so slow a row's one-off costs are noise next to it, and
 * repeating it would blow the time of `make bench`.
 *
 * Every ivae measurement runs in a forked child process: its peak resident
 * memory (wait4's ru_maxrss) is its own, and the parent never starts OpenMP,
 * whose thread pool does not survive a fork. The parent only orchestrates.
 *
 * Only the public API of ivae.h is used; ivae.c is compiled with the same
 * CFLAGS as ./ivae. Nothing is asserted about times: this prints, it does not
 * judge.
 */
#include "../ivae.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef BENCH_CFLAGS
#define BENCH_CFLAGS "(not recorded)"
#endif

#define MAX_RUNS 64
#define MAX_SHAPES 256

/* ========================================================================== */
/* options                                                                    */
/* ========================================================================== */

typedef struct {
    const char *config;
    const char *csv;
    const char *python;
    char script[1024];
    int runs;          /* most timed calls per row and side */
    double budget;     /* seconds of timed calls per model row (conv rows: a fifth) */
    double long_s;     /* a warm-up this slow is kept as the one sample */
    int quick;         /* 1 call per row, no warm-up, 64x64 for the 256x256 rows */
    int torch;         /* 0: --no-torch */
    char only[128];    /* comma list of sections, "" = all */
    uint64_t seed;
} Options;

static Options opt = {
    .config = "ivae-s", .csv = "bench.csv", .python = "/usr/bin/python3",
    .runs = 5, .budget = 20.0, .long_s = 10.0, .quick = 0, .torch = 1, .seed = 1,
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: test/bench [options]\n"
            "  --quick          smoke test: 1 call per row, no warm-up, 64x64 instead of 256x256\n"
            "  --runs N         at most N timed calls per row and side (default %d)\n"
            "  --budget S       stop adding calls once a model row's would pass S seconds\n"
            "                   (conv rows: S/5; default %g)\n"
            "  --long S         a warm-up of S seconds or more is kept as the one sample (default %g)\n"
            "  --csv PATH       where the table goes as CSV (default %s)\n"
            "  --only LIST      sections to run, comma-separated: peak,conv,train,infer,mem\n"
            "  --config NAME    ivae-s or ivae-xs (default %s)\n"
            "  --seed N         parameters and inputs (default %llu)\n"
            "  --no-torch       ivae only\n"
            "  --python PATH    the python with torch (default %s)\n"
            "  --torch-script P the PyTorch server (default: bench_torch.py next to this binary)\n",
            opt.runs, opt.budget, opt.long_s, opt.csv, opt.config, (unsigned long long)opt.seed,
            opt.python);
}

static int section_on(const char *name) {
    if (!opt.only[0]) return 1;
    size_t n = strlen(name);
    for (const char *p = opt.only; (p = strstr(p, name)); p += n)
        if ((p == opt.only || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void *xalloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) die("out of memory (asked for %zu bytes)", n);
    return p;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ========================================================================== */
/* timing: warm-up, timed calls, median                                       */
/* ========================================================================== */

typedef struct {
    int n;              /* timed calls; 0: not measured */
    int warm_kept;      /* the warm-up was slow and is the sample */
    double t[MAX_RUNS]; /* seconds per call */
    double aux;         /* a number the child found out (the peak loop's iterations) */
} Samples;

typedef struct {
    int warmup;         /* one untimed call first */
    int runs;           /* at most this many timed calls */
    double budget;      /* no new call once sum + last would pass it */
} Plan;

static double median(const Samples *s) {
    double v[MAX_RUNS];
    int n = s->n;
    if (n <= 0) return NAN;
    memcpy(v, s->t, n * sizeof(double));
    for (int i = 1; i < n; i++) /* insertion sort: n <= 64 */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The rule both sides follow (bench_torch.py's timed() is its twin). call
   returns 0 on success. */
static int time_calls(int (*call)(void *), void *ctx, Plan p, Samples *s) {
    memset(s, 0, sizeof *s);
    if (p.runs > MAX_RUNS) p.runs = MAX_RUNS;
    if (p.runs < 1) p.runs = 1;
    if (p.warmup) {
        double t0 = now();
        if (call(ctx) != 0) return -1;
        double t = now() - t0;
        if (t >= opt.long_s) {
            s->t[s->n++] = t;
            s->warm_kept = 1;
        }
    }
    double sum = s->n ? s->t[0] : 0;
    while (s->n < p.runs) {
        if (s->n > 0 && sum + s->t[s->n - 1] > p.budget) break;
        double t0 = now();
        if (call(ctx) != 0) return -1;
        s->t[s->n] = now() - t0;
        sum += s->t[s->n++];
    }
    return 0;
}

static Plan plan_for(double budget) {
    Plan p = {1, opt.runs, budget};
    if (opt.quick) p = (Plan){0, 1, 0};
    return p;
}

/* ========================================================================== */
/* child processes                                                            */
/* ========================================================================== */

/* Runs body(arg, s) in a forked child and brings back its samples and its
   peak resident memory in MB. -1 if the child failed (it has said why). */
static int in_child(int (*body)(void *, Samples *), void *arg, Samples *s, double *maxrss_mb) {
    int fd[2];
    memset(s, 0, sizeof *s);
    if (pipe(fd) != 0) die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fd[0]);
        Samples r;
        memset(&r, 0, sizeof r);
        int rc = body(arg, &r);
        if (rc == 0 && write(fd[1], &r, sizeof r) != (ssize_t)sizeof r) rc = -1;
        fflush(stdout);
        fflush(stderr);
        _exit(rc == 0 ? 0 : 1);
    }
    close(fd[1]);
    size_t got = 0;
    while (got < sizeof *s) {
        ssize_t k = read(fd[0], (char *)s + got, sizeof *s - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd[0]);
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR) die("wait4: %s", strerror(errno));
    *maxrss_mb = ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != sizeof *s) {
        if (WIFSIGNALED(status))
            fprintf(stderr, "bench: error: the measuring child died of signal %d (%s)\n", WTERMSIG(status),
                    strsignal(WTERMSIG(status)));
        memset(s, 0, sizeof *s);
        return -1;
    }
    return 0;
}

/* in a child: random U(-1, 1) floats */
static float *random_buf(size_t n, IvaeRng *rng) {
    float *p = xalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)(2 * ivae_rng_uniform(rng) - 1);
    return p;
}

static float *normal_buf(size_t n, IvaeRng *rng) {
    float *p = xalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)ivae_rng_normal(rng);
    return p;
}

/* ========================================================================== */
/* peak FP32 rate                                                             */
/* ========================================================================== */

/* NACC independent accumulators, each updated once per iteration: the
   compiler vectorises the j loop and, at -O3, keeps the whole array in
   registers, so every iteration is NACC/lanes independent vfmadd's (12 of
   them: enough to cover 4 cycles of latency on two fma ports). The target
   attributes give the instructions whatever CFLAGS say; -O3 is what keeps the
   accumulators out of memory. fmaf is an explicit fma, which
   -ffp-contract=off allows; the mul-add twin is two roundings, as the
   reference's a*b+c is. */
#define PEAK_FN(name, attrs, NACC, EXPR)                                   \
    __attribute__((attrs, noinline)) static float name(long iters, float a, float b) { \
        float acc[NACC];                                                   \
        for (int j = 0; j < NACC; j++) acc[j] = (float)j;                  \
        for (long it = 0; it < iters; it++)                                \
            for (int j = 0; j < NACC; j++) acc[j] = EXPR;                  \
        float s = 0;                                                       \
        for (int j = 0; j < NACC; j++) s += acc[j];                        \
        return s;                                                          \
    }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_X86_PEAK 1
PEAK_FN(fma512, target("avx512f,fma,prefer-vector-width=512"), optimize("O3"), 192, fmaf(acc[j], a, b))
PEAK_FN(fma256, target("avx2,fma"), optimize("O3"), 96, fmaf(acc[j], a, b))
PEAK_FN(muladd512, target("avx512f,prefer-vector-width=512"), optimize("O3", "fp-contract=off"), 192, acc[j] * a + b)
PEAK_FN(muladd256, target("avx2"), optimize("O3", "fp-contract=off"), 96, acc[j] * a + b)
#else
PEAK_FN(fma_generic, optimize("O3"), 96, fmaf(acc[j], a, b))
PEAK_FN(muladd_generic, optimize("O3", "fp-contract=off"), 96, acc[j] * a + b)
#endif

typedef struct {
    const char *name;
    float (*fn)(long, float, float);
    int nacc;
    int fused;
    int ok;      /* the CPU has the instructions */
    long iters;  /* per thread per call, set by calibration */
} PeakKind;

static PeakKind peak_kinds[] = {
#ifdef HAVE_X86_PEAK
    {"fma 512-bit", fma512, 192, 1, 0, 0},
    {"fma 256-bit", fma256, 96, 1, 0, 0},
    {"mul+add 512-bit", muladd512, 192, 0, 0, 0},
    {"mul+add 256-bit", muladd256, 96, 0, 0, 0},
#else
    {"fma", fma_generic, 96, 1, 1, 0},
    {"mul+add", muladd_generic, 96, 0, 1, 0},
#endif
};
#define N_PEAK ((int)(sizeof peak_kinds / sizeof peak_kinds[0]))

static volatile float peak_sink;

static int peak_call(void *ctx) {
    PeakKind *k = ctx;
    float sum = 0;
#pragma omp parallel reduction(+ : sum)
    sum += k->fn(k->iters, 0.999f, 0.001f);
    peak_sink = sum;
    return 0;
}

static int nthreads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int peak_body(void *arg, Samples *s) {
    PeakKind *k = arg;
    /* calibrate: about 0.2 s per call */
    k->iters = 1 << 16;
    for (;;) {
        double t0 = now();
        peak_call(k);
        double t = now() - t0;
        if (t > 0.02 || k->iters > (1L << 40)) {
            k->iters = (long)(k->iters * (0.2 / (t > 1e-9 ? t : 1e-9)));
            if (k->iters < 1) k->iters = 1;
            break;
        }
        k->iters *= 4;
    }
    Plan p = opt.quick ? (Plan){0, 1, 0} : (Plan){1, opt.runs, 1e9};
    if (time_calls(peak_call, k, p, s) != 0) return -1;
    s->aux = (double)k->iters; /* the parent needs it for the FLOP count */
    return 0;
}

/* ========================================================================== */
/* the conv shapes of the model (SPEC 3)                                      */
/* ========================================================================== */

typedef struct {
    int cin, cout, kt, kh, kw, st, sh, sw, T, H, W;
    int uses;
    char first[96];     /* SPEC 5 name of the first occurrence */
} ConvShape;

typedef struct {
    ConvShape s[MAX_SHAPES];
    int n;              /* distinct shapes */
    int total;          /* convs walked */
    double flop;        /* forward FLOPs of all convs walked */
} ShapeList;

static int out_t(int T, int st) { return (T - 1) / st + 1; }
static int out_s(int H, int k, int s) { return (H + 2 * (k / 2) - k) / s + 1; }

static double conv_flop(const ConvShape *c) {
    return 2.0 * c->cout * c->cin * c->kt * c->kh * c->kw * out_t(c->T, c->st) *
           out_s(c->H, c->kh, c->sh) * out_s(c->W, c->kw, c->sw);
}

static void add_conv(ShapeList *L, const char *name, int cin, int cout, int k, int st, int ss, int T,
                     int H, int W) {
    ConvShape c = {cin, cout, k, k, k, st, ss, ss, T, H, W, 1, ""};
    snprintf(c.first, sizeof c.first, "%s", name);
    L->total++;
    L->flop += conv_flop(&c);
    for (int i = 0; i < L->n; i++) {
        ConvShape *d = &L->s[i];
        if (d->cin == cin && d->cout == cout && d->kt == k && d->st == st && d->sh == ss && d->T == T &&
            d->H == H && d->W == W) {
            d->uses++;
            return;
        }
    }
    if (L->n == MAX_SHAPES) die("more than %d distinct conv shapes", MAX_SHAPES);
    L->s[L->n++] = c;
}

/* SPEC 2.5: smc1 Cin -> Cout (3,3,3), smc2 Cout -> Cout, shortcut (1,1,1) if Cin != Cout */
static void walk_res(ShapeList *L, const char *p, int cin, int cout, int T, int H, int W) {
    char b[96];
    snprintf(b, sizeof b, "%s.conv1", p);
    add_conv(L, b, cin, cout, 3, 1, 1, T, H, W);
    snprintf(b, sizeof b, "%s.conv2", p);
    add_conv(L, b, cout, cout, 3, 1, 1, T, H, W);
    if (cin != cout) {
        snprintf(b, sizeof b, "%s.shortcut", p);
        add_conv(L, b, cin, cout, 1, 1, 1, T, H, W);
    }
}

/* SPEC 3 mid: res(C), attn(C) (qkv C -> 3C and proj C -> C, both (1,1,1)), res(C) */
static void walk_mid(ShapeList *L, const char *p, int C, int T, int H, int W) {
    char b[96];
    snprintf(b, sizeof b, "%s.res.0", p);
    walk_res(L, b, C, C, T, H, W);
    snprintf(b, sizeof b, "%s.attn.qkv", p);
    add_conv(L, b, C, 3 * C, 1, 1, 1, T, H, W);
    snprintf(b, sizeof b, "%s.attn.proj", p);
    add_conv(L, b, C, C, 1, 1, 1, T, H, W);
    snprintf(b, sizeof b, "%s.res.1", p);
    walk_res(L, b, C, C, T, H, W);
}

/* Every conv of the encoder (on a 3 x T x H x W input) and/or the decoder (on
   the latent the encoder would give), with its input shape, by SPEC 3. */
static void walk_model(ShapeList *L, const IvaeConfig *cfg, int T, int H, int W, int enc, int dec) {
    int S = cfg->n_stages, C[IVAE_MAX_STAGES];
    char b[96];
    for (int s = 0; s < S; s++) C[s] = cfg->base_ch * cfg->ch_mult[s];
    memset(L, 0, sizeof *L);
    /* encoder */
    if (enc) add_conv(L, "encoder.conv_in", 3, C[0], 3, 1, 1, T, H, W);
    for (int s = 0; s < S; s++) {
        for (int j = 0; j < cfg->n_res; j++) {
            int cin = j > 0 ? C[s] : s > 0 ? C[s - 1] : C[0];
            snprintf(b, sizeof b, "encoder.stages.%d.res.%d", s, j);
            if (enc) walk_res(L, b, cin, C[s], T, H, W);
        }
        if (s < S - 1) { /* down: stride (2 if temporal else 1, 2, 2) */
            int st = cfg->temporal[s] ? 2 : 1;
            snprintf(b, sizeof b, "encoder.stages.%d.down", s);
            if (enc) add_conv(L, b, C[s], C[s], 3, st, 2, T, H, W);
            T = out_t(T, st);
            H = out_s(H, 3, 2);
            W = out_s(W, 3, 2);
        }
    }
    if (enc) {
        walk_mid(L, "encoder.mid", C[S - 1], T, H, W);
        add_conv(L, "encoder.conv_out", C[S - 1], 2 * cfg->z_ch, 3, 1, 1, T, H, W);
    }
    if (!dec) return;
    /* decoder, on the latent z x T x H x W */
    add_conv(L, "decoder.conv_in", cfg->z_ch, C[S - 1], 3, 1, 1, T, H, W);
    walk_mid(L, "decoder.mid", C[S - 1], T, H, W);
    for (int s = S - 1; s >= 0; s--) {
        for (int j = 0; j < cfg->n_res; j++) {
            int cin = j > 0 ? C[s] : s + 1 < S ? C[s + 1] : C[S - 1];
            snprintf(b, sizeof b, "decoder.stages.%d.res.%d", s, j);
            walk_res(L, b, cin, C[s], T, H, W);
        }
        if (s > 0) { /* up: nearest 2x2 (and T -> 2T-1 if temporal), then conv on the result */
            if (cfg->temporal[s - 1]) T = 2 * T - 1;
            H *= 2;
            W *= 2;
            snprintf(b, sizeof b, "decoder.stages.%d.up", s);
            add_conv(L, b, C[s], C[s], 3, 1, 1, T, H, W);
        }
    }
    add_conv(L, "decoder.conv_out", C[0], 3, 3, 1, 1, T, H, W);
}

/* ========================================================================== */
/* ivae rows (each body runs in a child)                                      */
/* ========================================================================== */

enum { PASS_FWD, PASS_DINP, PASS_DW };
static const char *pass_name[] = {"fwd", "dinp", "dw"};

typedef struct {
    const ConvShape *c;
    int pass;
    Plan plan;
    float *inp, *weight, *bias, *out, *dout, *dinp, *dweight, *dbias;
} ConvJob;

static int conv_call(void *ctx) {
    ConvJob *j = ctx;
    const ConvShape *c = j->c;
    if (j->pass == PASS_FWD)
        conv3d_forward(j->out, j->inp, j->weight, j->bias, c->cin, c->T, c->H, c->W, c->cout, c->kt,
                       c->kh, c->kw, c->st, c->sh, c->sw);
    else if (j->pass == PASS_DINP)
        conv3d_backward(j->dinp, NULL, NULL, j->dout, j->inp, j->weight, c->cin, c->T, c->H, c->W,
                        c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw);
    else
        conv3d_backward(NULL, j->dweight, j->dbias, j->dout, j->inp, j->weight, c->cin, c->T, c->H,
                        c->W, c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw);
    return 0; /* the layer functions cannot fail */
}

static int conv_body(void *arg, Samples *s) {
    ConvJob *j = arg;
    const ConvShape *c = j->c;
    IvaeRng rng = {opt.seed * 7919 + 17};
    size_t nin = (size_t)c->cin * c->T * c->H * c->W;
    size_t nout = (size_t)c->cout * out_t(c->T, c->st) * out_s(c->H, c->kh, c->sh) * out_s(c->W, c->kw, c->sw);
    size_t nw = (size_t)c->cout * c->cin * c->kt * c->kh * c->kw;
    float a = 1.0f / sqrtf((float)(c->cin * c->kt * c->kh * c->kw));
    j->inp = random_buf(nin, &rng);
    j->weight = random_buf(nw, &rng);
    for (size_t i = 0; i < nw; i++) j->weight[i] *= a;
    j->bias = random_buf(c->cout, &rng);
    j->dout = random_buf(nout, &rng);
    j->out = xalloc(nout * sizeof(float));
    j->dinp = xalloc(nin * sizeof(float));
    j->dweight = calloc(nw, sizeof(float));
    j->dbias = calloc(c->cout, sizeof(float));
    if (!j->dweight || !j->dbias) die("out of memory");
    return time_calls(conv_call, j, j->plan, s);
}

typedef struct {
    int kind;            /* TRAIN, ENCODE, DECODE, MODEL_ONLY */
    int B, T, H, W;      /* input (per sample) */
    Plan plan;
    IvaeModel *m;
    IvaeSample *samples;
    IvaeLossOpts lo;
    IvaeAdamW ad;
    float *x, *z, *out;
    int Tz, Hz, Wz;
} ModelJob;

enum { JOB_TRAIN, JOB_ENCODE, JOB_DECODE, JOB_MODEL_ONLY };

static int model_call(void *ctx) {
    ModelJob *j = ctx;
    if (j->kind == JOB_TRAIN) {
        IvaeLoss L;
        ivae_zero_grad(j->m);
        if (ivae_batch_grad(j->m, j->samples, j->B, &j->lo, &L) != 0) {
            fprintf(stderr, "bench: error: ivae_batch_grad: %s\n", ivae_error());
            return -1;
        }
        if (!isfinite(L.loss)) {
            fprintf(stderr, "bench: error: ivae_batch_grad: loss is %g\n", L.loss);
            return -1;
        }
        ivae_adamw_step(j->m, &j->ad);
    } else if (j->kind == JOB_ENCODE) {
        if (ivae_encode(j->m, j->x, j->T, j->H, j->W, j->out) != 0) {
            fprintf(stderr, "bench: error: ivae_encode: %s\n", ivae_error());
            return -1;
        }
    } else if (j->kind == JOB_DECODE) {
        if (ivae_decode(j->m, j->z, j->Tz, j->Hz, j->Wz, j->out) != 0) {
            fprintf(stderr, "bench: error: ivae_decode: %s\n", ivae_error());
            return -1;
        }
    }
    return 0;
}

static int model_body(void *arg, Samples *s) {
    ModelJob *j = arg;
    IvaeConfig cfg;
    IvaeRng rng = {opt.seed * 104729 + 3};
    if (ivae_config_preset(opt.config, &cfg) != 0) {
        fprintf(stderr, "bench: error: config %s: %s\n", opt.config, ivae_error());
        return -1;
    }
    if (ivae_latent_shape(&cfg, j->T, j->H, j->W, &j->Tz, &j->Hz, &j->Wz) != 0) {
        fprintf(stderr, "bench: error: input %dx%dx%d: %s\n", j->T, j->H, j->W, ivae_error());
        return -1;
    }
    j->m = ivae_model_new(&cfg);
    if (!j->m) {
        fprintf(stderr, "bench: error: ivae_model_new: %s\n", ivae_error());
        return -1;
    }
    ivae_init_params(j->m, opt.seed);
    if (j->kind == JOB_MODEL_ONLY) return time_calls(model_call, j, (Plan){0, 1, 0}, s);
    size_t nx = (size_t)3 * j->T * j->H * j->W;
    size_t nz = (size_t)cfg.z_ch * j->Tz * j->Hz * j->Wz;
    ivae_loss_defaults(&j->lo);
    ivae_adamw_defaults(&j->ad);
    if (j->kind == JOB_TRAIN) {
        j->samples = calloc(j->B, sizeof *j->samples);
        if (!j->samples) die("out of memory");
        for (int b = 0; b < j->B; b++) {
            IvaeSample *sp = &j->samples[b];
            sp->x = random_buf(nx, &rng);
            sp->eps = normal_buf(nz, &rng);
            sp->T = j->T;
            sp->H = j->H;
            sp->W = j->W;
        }
    } else if (j->kind == JOB_ENCODE) {
        j->x = random_buf(nx, &rng);
        j->out = xalloc(nz * sizeof(float));
    } else {
        j->z = normal_buf(nz, &rng);
        j->out = xalloc(nx * sizeof(float));
    }
    return time_calls(model_call, j, j->plan, s);
}

/* ========================================================================== */
/* the PyTorch server                                                         */
/* ========================================================================== */

typedef struct {
    int up;
    pid_t pid;
    FILE *to, *from;
    char version[64], threads[16], blas[256], openblas[16], conv[64];
} Torch;

static Torch py;

static void kv(const char *line, const char *key, char *dst, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(line, pat);
    dst[0] = 0;
    if (!p) return;
    p += strlen(pat);
    size_t n = strcspn(p, " \n");
    if (n >= cap) n = cap - 1;
    memcpy(dst, p, n);
    dst[n] = 0;
}

static void torch_stop(void) {
    if (!py.pid) return;
    if (py.to) {
        fprintf(py.to, "quit\n");
        fclose(py.to);
    }
    if (py.from) fclose(py.from);
    int status;
    waitpid(py.pid, &status, 0);
    py.pid = 0;
    py.to = py.from = NULL;
    py.up = 0;
}

/* starts bench_torch.py --serve; prints what it says about itself */
static void torch_start(void) {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        char th[16];
        snprintf(th, sizeof th, "%d", nthreads());
        execl(opt.python, opt.python, opt.script, "--serve", "--threads", th, (char *)NULL);
        printf("notorch cannot run %s: %s\n", opt.python, strerror(errno));
        fflush(stdout);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    py.pid = pid;
    py.to = fdopen(in[1], "w");
    py.from = fdopen(out[0], "r");
    if (!py.to || !py.from) die("fdopen: %s", strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (getline(&line, &cap, py.from) < 0) {
            printf("PyTorch: not installed (apt-get install python3-torch python3-numpy): %s %s ended "
                   "without a word\n", opt.python, opt.script);
            break;
        }
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "note ", 5)) {
            printf("%s\n", line + 5);
            continue;
        }
        if (!strncmp(line, "notorch", 7)) {
            printf("PyTorch: not installed (apt-get install python3-torch python3-numpy)%s%s\n",
                   line[7] ? ":" : "", line + 7);
            break;
        }
        if (!strncmp(line, "ready", 5)) {
            kv(line, "torch", py.version, sizeof py.version);
            kv(line, "threads", py.threads, sizeof py.threads);
            kv(line, "blas", py.blas, sizeof py.blas);
            kv(line, "openblas_pthread", py.openblas, sizeof py.openblas);
            kv(line, "conv", py.conv, sizeof py.conv);
            py.up = 1;
            break;
        }
        printf("bench_torch.py: %s\n", line);
    }
    free(line);
    if (!py.up) torch_stop();
}

/* Sends one request (the Plan's warm-up, runs and budget appended) and reads
   the one-line answer: "ok MEDIAN N WARMKEPT T1,T2,..." or "err MESSAGE". */
static int torch_time(Samples *s, Plan p, const char *fmt, ...) {
    char req[512];
    va_list ap;
    memset(s, 0, sizeof *s);
    if (!py.up) return -1;
    va_start(ap, fmt);
    vsnprintf(req, sizeof req, fmt, ap);
    va_end(ap);
    if (fprintf(py.to, "%s %d %d %.17g\n", req, p.warmup, p.runs, p.budget) < 0 || fflush(py.to) != 0) {
        printf("PyTorch: the server is gone (%s); no more PyTorch columns\n", strerror(errno));
        torch_stop();
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int rc = -1;
    if (getline(&line, &cap, py.from) < 0) {
        printf("PyTorch: the server ended during \"%s\"; no more PyTorch columns\n", req);
        free(line);
        torch_stop();
        return -1;
    }
    line[strcspn(line, "\n")] = 0;
    if (!strncmp(line, "ok ", 3)) {
        double med;
        int n, warm, off = 0;
        if (sscanf(line + 3, "%lf %d %d %n", &med, &n, &warm, &off) == 3 && n >= 1 && n <= MAX_RUNS) {
            char *q = line + 3 + off;
            s->warm_kept = warm;
            for (s->n = 0; s->n < n; s->n++) {
                s->t[s->n] = strtod(q, &q);
                if (*q == ',') q++;
            }
            rc = 0;
        }
    }
    if (rc != 0) printf("PyTorch: \"%s\" -> %s\n", req, line);
    free(line);
    return rc;
}

/* ========================================================================== */
/* the table                                                                  */
/* ========================================================================== */

typedef struct {
    const char *section;
    char name[24];
    char shape[48];
    int uses;           /* 0: not a conv row */
    char first[96];
    double flop;        /* per call; 0 if not counted */
    double items;       /* clips or frames per call; 0 if no rate */
    const char *unit;
    Samples iv, th;
    double rss_mb;      /* the ivae child's peak resident memory */
} Row;

static double g_peak;   /* best fma GFLOP/s, 0 until measured */
static FILE *g_csv;

static const char *fmt_time(char *b, size_t n, double t) {
    if (!(t > 0)) snprintf(b, n, "-");
    else if (t < 1e-3) snprintf(b, n, "%.1f us", t * 1e6);
    else if (t < 1) snprintf(b, n, "%.2f ms", t * 1e3);
    else snprintf(b, n, "%.2f s", t);
    return b;
}

static const char *fmt_num(char *b, size_t n, double v, const char *f) {
    if (!isfinite(v) || v <= 0) snprintf(b, n, "-");
    else snprintf(b, n, f, v);
    return b;
}

static void print_header(void) {
    printf("\n%-9s %-34s %4s | %9s %7s %6s %12s %4s | %9s %7s %12s %4s | %7s\n", "row", "shape", "uses",
           "ivae", "GF/s", "%peak", "rate", "n", "PyTorch", "GF/s", "rate", "n", "ivae/pt");
}

static void csv_header(void) {
    fprintf(g_csv, "section,row,shape,uses,first_use,gflop,ivae_s,ivae_n,ivae_gflops,ivae_pct_peak,"
                   "ivae_rate,rate_unit,torch_s,torch_n,torch_gflops,torch_rate,ratio_ivae_over_torch,"
                   "ivae_maxrss_mb\n");
}

static void print_row(const Row *r) {
    double ti = median(&r->iv), tt = median(&r->th);
    double gi = r->flop > 0 ? r->flop / ti / 1e9 : NAN, gt = r->flop > 0 ? r->flop / tt / 1e9 : NAN;
    double ri = r->items > 0 ? r->items / ti : NAN, rt = r->items > 0 ? r->items / tt : NAN;
    double pct = g_peak > 0 ? 100 * gi / g_peak : NAN;
    double ratio = tt / ti;
    char a[32], b[32], c[32], d[32], e[32], f[32], g[32], h[32], ni[8], nt[8], uses[8], ru[48], rtt[48];
    snprintf(ni, sizeof ni, "%d%s", r->iv.n, r->iv.warm_kept ? "*" : "");
    snprintf(nt, sizeof nt, "%d%s", r->th.n, r->th.warm_kept ? "*" : "");
    snprintf(uses, sizeof uses, r->uses ? "%d" : "", r->uses);
    snprintf(ru, sizeof ru, "%s%s%s", fmt_num(e, sizeof e, ri, "%.3g"), isfinite(ri) ? " " : "", isfinite(ri) ? r->unit : "");
    snprintf(rtt, sizeof rtt, "%s%s%s", fmt_num(f, sizeof f, rt, "%.3g"), isfinite(rt) ? " " : "", isfinite(rt) ? r->unit : "");
    if (!(r->items > 0)) ru[0] = rtt[0] = 0;
    printf("%-9s %-34s %4s | %9s %7s %6s %12s %4s | %9s %7s %12s %4s | %7s%s%s\n", r->name, r->shape, uses,
           fmt_time(a, sizeof a, ti), fmt_num(b, sizeof b, gi, "%.1f"), fmt_num(c, sizeof c, pct, "%.1f%%"), ru,
           r->iv.n ? ni : "-", fmt_time(d, sizeof d, tt), fmt_num(g, sizeof g, gt, "%.1f"), rtt,
           r->th.n ? nt : "-", fmt_num(h, sizeof h, ratio, "%.2f"), r->first[0] ? "  " : "", r->first);
    fflush(stdout);
    if (!g_csv) return;
    fprintf(g_csv, "%s,%s,%s,%d,%s,", r->section, r->name, r->shape, r->uses, r->first);
#define CSVNUM(v, f) (isfinite(v) && (v) > 0 ? fprintf(g_csv, f ",", v) : fprintf(g_csv, ","))
    CSVNUM(r->flop / 1e9, "%.6g");
    CSVNUM(ti, "%.6g");
    fprintf(g_csv, "%d,", r->iv.n);
    CSVNUM(gi, "%.4g");
    CSVNUM(pct, "%.3g");
    CSVNUM(ri, "%.5g");
    fprintf(g_csv, "%s,", r->items > 0 ? r->unit : "");
    CSVNUM(tt, "%.6g");
    fprintf(g_csv, "%d,", r->th.n);
    CSVNUM(gt, "%.4g");
    CSVNUM(rt, "%.5g");
    CSVNUM(ratio, "%.4g");
    if (r->rss_mb > 0) fprintf(g_csv, "%.1f", r->rss_mb);
    fprintf(g_csv, "\n");
    fflush(g_csv);
}

/* ========================================================================== */
/* sections                                                                   */
/* ========================================================================== */

static void run_peak(void) {
    printf("\nPeak FP32 rate on %d threads (independent fmaf/mul+add on register accumulators):\n", nthreads());
    for (int k = 0; k < N_PEAK; k++) {
        PeakKind *p = &peak_kinds[k];
#ifdef HAVE_X86_PEAK
        __builtin_cpu_init();
        int has512 = __builtin_cpu_supports("avx512f"), has256 = __builtin_cpu_supports("avx2");
        int hasfma = __builtin_cpu_supports("fma");
        p->ok = strstr(p->name, "512") ? has512 && (hasfma || !p->fused) : has256 && (hasfma || !p->fused);
#endif
        Row r = {.section = "peak"};
        snprintf(r.name, sizeof r.name, "peak");
        snprintf(r.shape, sizeof r.shape, "%s x %d threads", p->name, nthreads());
        if (!p->ok) {
            printf("  %-34s not supported by this CPU\n", r.shape);
            continue;
        }
        if (in_child(peak_body, p, &r.iv, &r.rss_mb) != 0) {
            printf("  %-34s failed\n", r.shape);
            continue;
        }
        long iters = (long)r.iv.aux;
        r.flop = 2.0 * p->nacc * iters * nthreads();
        double gf = r.flop / median(&r.iv) / 1e9;
        if (p->fused && gf > g_peak) g_peak = gf;
        printf("  %-34s %8.1f GFLOP/s%s\n", r.shape, gf, p->fused ? "" : "  (not fused: what -ffp-contract=off code can reach)");
        if (g_csv) {
            fprintf(g_csv, "peak,peak,%s,0,,%.6g,%.6g,%d,%.4g,,,,,,,,,\n", r.shape, r.flop / 1e9, median(&r.iv),
                    r.iv.n, gf);
        }
    }
    if (g_peak > 0) printf("  %%peak below is GF/s over %.1f GFLOP/s, the best fma rate\n", g_peak);
    if (py.up) {
        Samples s;
        int n = 2048;
        if (torch_time(&s, plan_for(opt.budget / 5), "gemm %d", n) == 0) {
            double gf = 2.0 * n * n * n / median(&s) / 1e9;
            printf("  %-34s %8.1f GFLOP/s  (torch.mm %dx%d, %s threads: what its BLAS reaches)\n", "PyTorch sgemm",
                   gf, n, n, py.threads);
            if (g_csv) fprintf(g_csv, "peak,torch sgemm,%dx%dx%d,0,,%.6g,,,,,,,%.6g,%d,%.4g,,,\n", n, n, n,
                               2.0 * n * n * n / 1e9, median(&s), s.n, gf);
        }
    }
}

static void shape_str(char *b, size_t n, const ConvShape *c) {
    snprintf(b, n, "%d>%d k%d%d%d s%d%d%d %dx%dx%d", c->cin, c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw,
             c->T, c->H, c->W);
}

static void run_conv(const IvaeConfig *cfg) {
    ShapeList *L = calloc(1, sizeof *L);
    if (!L) die("out of memory");
    walk_model(L, cfg, 17, 64, 64, 1, 1);
    printf("\nconv3d: %d distinct shapes of the %d convs in a training step on 3x17x64x64 "
           "(%.1f GFLOP forward, x3 with both gradients); shape = Cin>Cout kernel stride input TxHxW\n",
           L->n, L->total, L->flop / 1e9);
    print_header();
    for (int i = 0; i < L->n; i++) {
        const ConvShape *c = &L->s[i];
        for (int pass = 0; pass < 3; pass++) {
            Row r = {.section = "conv", .uses = c->uses, .flop = conv_flop(c)};
            snprintf(r.name, sizeof r.name, "conv %s", pass_name[pass]);
            shape_str(r.shape, sizeof r.shape, c);
            snprintf(r.first, sizeof r.first, "%s", c->first);
            ConvJob j = {.c = c, .pass = pass, .plan = plan_for(opt.budget / 5)};
            if (in_child(conv_body, &j, &r.iv, &r.rss_mb) != 0) printf("(ivae failed on this row)\n");
            torch_time(&r.th, j.plan, "conv %d %d %d %d %d %d %d %d %d %d %d %s", c->cin, c->cout, c->kt, c->kh,
                       c->kw, c->st, c->sh, c->sw, c->T, c->H, c->W, pass_name[pass]);
            print_row(&r);
        }
    }
    free(L);
}

/* one model row: ivae in a child, then PyTorch; returns the child's peak RSS */
static double model_row(const IvaeConfig *cfg, const char *section, const char *name, int kind, int B, int T,
                        int H, int W, Plan plan, int with_torch) {
    Row r = {.section = section};
    ModelJob j = {.kind = kind, .B = B, .T = T, .H = H, .W = W, .plan = plan};
    ShapeList *L = calloc(1, sizeof *L);
    if (!L) die("out of memory");
    snprintf(r.name, sizeof r.name, "%s", name);
    int Tz, Hz, Wz;
    if (ivae_latent_shape(cfg, T, H, W, &Tz, &Hz, &Wz) != 0) die("%s", ivae_error());
    if (kind == JOB_TRAIN) {
        walk_model(L, cfg, T, H, W, 1, 1);
        r.flop = 3 * L->flop * B;
        r.items = B;
        r.unit = "clip/s";
        snprintf(r.shape, sizeof r.shape, "%d x 3x%dx%dx%d", B, T, H, W);
    } else if (kind == JOB_ENCODE) {
        walk_model(L, cfg, T, H, W, 1, 0);
        r.flop = L->flop;
        r.items = T;
        r.unit = "frame/s";
        snprintf(r.shape, sizeof r.shape, "3x%dx%dx%d -> %dx%dx%dx%d", T, H, W, cfg->z_ch, Tz, Hz, Wz);
    } else {
        walk_model(L, cfg, T, H, W, 0, 1);
        r.flop = L->flop;
        r.items = T;
        r.unit = "frame/s";
        snprintf(r.shape, sizeof r.shape, "%dx%dx%dx%d -> 3x%dx%dx%d", cfg->z_ch, Tz, Hz, Wz, T, H, W);
    }
    free(L);
    if (in_child(model_body, &j, &r.iv, &r.rss_mb) != 0) printf("(ivae failed on this row)\n");
    if (with_torch) {
        if (kind == JOB_TRAIN) torch_time(&r.th, plan, "train %d %d %d %d", B, T, H, W);
        else if (kind == JOB_ENCODE) torch_time(&r.th, plan, "encode %d %d %d", T, H, W);
        else torch_time(&r.th, plan, "decode %d %d %d", Tz, Hz, Wz);
    }
    print_row(&r);
    return r.iv.n ? r.rss_mb : NAN;
}

static double g_rss_train17 = NAN, g_rss_decode17 = NAN;

static void run_train(const IvaeConfig *cfg) {
    printf("\nTraining step: ivae_zero_grad + ivae_batch_grad + ivae_adamw_step; PyTorch: forward_loss of "
           "test/ref.py, backward (x.requires_grad, as ivae always computes dL/dx), torch.optim.AdamW\n");
    print_header();
    g_rss_train17 = model_row(cfg, "train", "train", JOB_TRAIN, 1, 17, 64, 64, plan_for(opt.budget), 1);
    model_row(cfg, "train", "train", JOB_TRAIN, 4, 1, 64, 64, plan_for(opt.budget), 1);
}

static int infer_size(void) { return opt.quick ? 64 : 256; }

static void run_infer(const IvaeConfig *cfg) {
    int S = infer_size();
    printf("\nInference: ivae_encode, ivae_decode; PyTorch: model.encode / model.decode under torch.no_grad()%s\n",
           opt.quick ? " (--quick: 64x64, not 256x256)" : "");
    print_header();
    model_row(cfg, "infer", "encode", JOB_ENCODE, 1, 17, S, S, plan_for(opt.budget), 1);
    g_rss_decode17 = model_row(cfg, "infer", "decode", JOB_DECODE, 1, 17, S, S, plan_for(opt.budget), 1);
}

static void run_mem(const IvaeConfig *cfg) {
    int S = infer_size();
    Plan once = {0, 1, 0};
    printf("\nPeak resident memory (MB, ru_maxrss of a child that builds the model and does the work):\n");
    Row base = {0};
    ModelJob jb = {.kind = JOB_MODEL_ONLY, .T = 1, .H = 64, .W = 64};
    if (in_child(model_body, &jb, &base.iv, &base.rss_mb) != 0) base.rss_mb = NAN;
    /* the 17-frame peaks come from the timed rows' children when they ran */
    printf("  (measuring the 33-frame rows: one call each, no PyTorch)\n");
    print_header();
    if (!isfinite(g_rss_train17))
        g_rss_train17 = model_row(cfg, "mem", "train", JOB_TRAIN, 1, 17, 64, 64, once, 0);
    double t33 = model_row(cfg, "mem", "train", JOB_TRAIN, 1, 33, 64, 64, once, 0);
    if (!isfinite(g_rss_decode17))
        g_rss_decode17 = model_row(cfg, "mem", "decode", JOB_DECODE, 1, 17, S, S, once, 0);
    double d33 = model_row(cfg, "mem", "decode", JOB_DECODE, 1, 33, S, S, once, 0);
    printf("\n%-34s %10s %10s %10s %9s\n", "", "17 frames", "33 frames", "growth", "x");
    printf("%-34s %10.1f\n", "model only (params, grads)", base.rss_mb);
    char n1[64], n2[64];
    snprintf(n1, sizeof n1, "training step 3xTx64x64");
    snprintf(n2, sizeof n2, "decode 3xTx%dx%d (latent 5 -> 9)", S, S);
    printf("%-34s %10.1f %10.1f %10.1f %9.2f\n", n1, g_rss_train17, t33, t33 - g_rss_train17, t33 / g_rss_train17);
    printf("%-34s %10.1f %10.1f %10.1f %9.2f\n", n2, g_rss_decode17, d33, d33 - g_rss_decode17, d33 / g_rss_decode17);
    if (g_csv) {
        fprintf(g_csv, "mem,model only,,0,,,,,,,,,,,,,,%.1f\n", base.rss_mb);
        fprintf(g_csv, "mem,train 17,3x17x64x64,0,,,,,,,,,,,,,,%.1f\n", g_rss_train17);
        fprintf(g_csv, "mem,train 33,3x33x64x64,0,,,,,,,,,,,,,,%.1f\n", t33);
        fprintf(g_csv, "mem,decode 17,3x17x%dx%d,0,,,,,,,,,,,,,,%.1f\n", S, S, g_rss_decode17);
        fprintf(g_csv, "mem,decode 33,3x33x%dx%d,0,,,,,,,,,,,,,,%.1f\n", S, S, d33);
    }
}

/* ========================================================================== */
/* main                                                                       */
/* ========================================================================== */

static void cpu_name(char *b, size_t n) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(b, n, "unknown CPU");
    if (!f) return;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            char *p = strchr(line, ':') + 1;
            while (*p == ' ') p++;
            p[strcspn(p, "\n")] = 0;
            snprintf(b, n, "%s", p);
            break;
        }
    fclose(f);
}

static double arg_num(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
    char *end;
    double v = strtod(argv[++*i], &end);
    if (*end || !(v >= 0)) die("%s %s: not a number >= 0", argv[*i - 1], argv[*i]);
    return v;
}

static const char *arg_str(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
    return argv[++*i];
}

int main(int argc, char **argv) {
    const char *slash = strrchr(argv[0], '/');
    snprintf(opt.script, sizeof opt.script, "%.*sbench_torch.py", slash ? (int)(slash - argv[0] + 1) : 0, argv[0]);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quick")) opt.quick = 1;
        else if (!strcmp(a, "--no-torch")) opt.torch = 0;
        else if (!strcmp(a, "--runs")) {
            opt.runs = (int)arg_num(argc, argv, &i);
            if (opt.runs < 1 || opt.runs > MAX_RUNS) die("--runs must be 1..%d", MAX_RUNS);
        } else if (!strcmp(a, "--budget")) opt.budget = arg_num(argc, argv, &i);
        else if (!strcmp(a, "--long")) opt.long_s = arg_num(argc, argv, &i);
        else if (!strcmp(a, "--csv")) opt.csv = arg_str(argc, argv, &i);
        else if (!strcmp(a, "--only")) snprintf(opt.only, sizeof opt.only, "%s", arg_str(argc, argv, &i));
        else if (!strcmp(a, "--config")) opt.config = arg_str(argc, argv, &i);
        else if (!strcmp(a, "--seed")) opt.seed = (uint64_t)arg_num(argc, argv, &i);
        else if (!strcmp(a, "--python")) opt.python = arg_str(argc, argv, &i);
        else if (!strcmp(a, "--torch-script")) snprintf(opt.script, sizeof opt.script, "%s", arg_str(argc, argv, &i));
        else {
            fprintf(stderr, "bench: error: unknown argument %s\n", a);
            usage(stderr);
            return 1;
        }
    }
    const char *sections[] = {"peak", "conv", "train", "infer", "mem"};
    if (opt.only[0]) {
        char tmp[128], *save = NULL;
        snprintf(tmp, sizeof tmp, "%s", opt.only);
        for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            int ok = 0;
            for (int k = 0; k < 5; k++) ok |= !strcmp(t, sections[k]);
            if (!ok) die("--only: unknown section %s (have peak,conv,train,infer,mem)", t);
        }
    }
    IvaeConfig cfg;
    if (ivae_config_preset(opt.config, &cfg) != 0) die("--config %s: %s", opt.config, ivae_error());
    signal(SIGPIPE, SIG_IGN); /* a dead server is an error from write, not a kill */

    double t_start = now();
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    time_t wall = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", localtime(&wall));
    printf("ivae bench, %s, config %s, seed %llu%s\n", date, opt.config, (unsigned long long)opt.seed,
           opt.quick ? ", --quick" : "");
    printf("CPU: %s; ivae threads (OpenMP): %d; CFLAGS: %s\n", cpu, nthreads(), BENCH_CFLAGS);
    printf("timing: median of up to %d calls after 1 warm-up (a row stops adding calls at %g s, conv rows at "
           "%g s; n* = the warm-up took >= %g s and is the sample)\n",
           opt.quick ? 1 : opt.runs, opt.budget, opt.budget / 5, opt.long_s);

    if (opt.torch) {
        torch_start();
        if (py.up) {
            printf("PyTorch %s, %s threads, conv3d backend %s, BLAS %s\n", py.version, py.threads, py.conv,
                   py.blas[0] ? py.blas : "(none loaded)");
            if (strcmp(py.openblas, "yes") != 0)
                printf("WARNING: libopenblas0-pthread is not installed: PyTorch's BLAS may be single-threaded "
                       "and unfairly slow (apt-get install libopenblas0-pthread)\n");
            if (atoi(py.threads) != nthreads())
                printf("WARNING: PyTorch uses %s threads, ivae %d\n", py.threads, nthreads());
        }
    } else {
        printf("PyTorch: off (--no-torch)\n");
    }

    g_csv = fopen(opt.csv, "w");
    if (!g_csv) die("cannot write %s: %s", opt.csv, strerror(errno));
    csv_header();

    if (section_on("peak")) run_peak();
    if (section_on("conv")) run_conv(&cfg);
    if (section_on("train")) run_train(&cfg);
    if (section_on("infer")) run_infer(&cfg);
    if (section_on("mem")) run_mem(&cfg);

    torch_stop();
    if (fclose(g_csv) != 0) die("writing %s: %s", opt.csv, strerror(errno));
    printf("\nwrote %s; %.0f s in all\n", opt.csv, now() - t_start);
    return 0;
}
