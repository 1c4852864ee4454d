/*
 * bench.c: how fast is ivae, next to the machine's peak and to PyTorch?
 *
 *   make bench                        # builds test/bench, runs it, writes bench.csv
 *   test/bench --quick                # smoke test: 1 call per row, 64x64 instead of 256x256
 *   test/bench --help                 # the other flags
 *
 * Rows, for one config (default ivae-s):
 *   peak   the machine's FP32 rate: independent fmaf()s on many accumulators
 *          (vfmadd, 512- and 256-bit), the same as a multiply then an add, and
 *          fma on one thread; the fastest of several calls. Every GF/s below
 *          is also a percentage of max(all-thread fma, threads x 1-thread
 *          fma): a neighbour holding a core halves the first, not the second
 *   conv   each DISTINCT conv3d shape of one training step on a 3x17x64x64 clip
 *          (walked from SPEC 3 by walk_model), timed three ways: forward,
 *          input gradient, weight gradient (+ bias gradient); "uses" counts
 *          the shape's occurrences in the model
 *   train  forward + backward + AdamW: one 17x64x64 clip, and four 1x64x64 images;
 *          every timed step starts from the same state (the parameters of
 *          SPEC 6's init copied back, the AdamW moments and step count reset,
 *          inside the timing; PyTorch the same), so each call times the same
 *          step: stepping on from one random clip at lr 1e-3 diverges within
 *          five steps (loss 0.57 -> 4.7, and 106 in PyTorch), and the exploded
 *          activations put subnormal floats into the decoder's gradients
 *          (63 000 of 100 million values), which an Intel core handles by
 *          microcode assist: a step went from 1.2 s to 3.2 s, in both programs
 *   infer  encode and decode of a 3x17x256x256 clip
 *   mem    peak resident memory of a training step and of a decode, at 17 and
 *          33 frames
 * FLOPs are 2 * Cout * Cin * kt*kh*kw * output positions per conv (the same
 * for the three passes), taps on the zero padding included; a model row's
 * GF/s counts its convs only (attention and the elementwise layers are not
 * counted, but their time is). So GF/s are nominal where padding is a large
 * part: for a 1-frame image 2 of every 3 temporal taps read the causal
 * padding, which ivae skips and PyTorch computes.
 *
 * Side by side with PyTorch: when torch imports, test/bench_torch.py runs as a
 * server (a child process on two pipes) and, right after ivae has timed a row,
 * times the same row and sends back one line, so that the two sides of each
 * ratio are measured seconds apart on this shared, noisy machine. The ratio is
 * PyTorch's time / ivae's time: > 1 means ivae is faster.
 *
 * Timing: one warm-up call, then --runs timed calls (more, up to 64, while
 * they add up to less than --min seconds; none started once it would take
 * the row past --budget seconds, a fifth of that for conv rows), and the
 * median. A warm-up that took --long seconds or more is kept as the one
 * sample: so slow a row's one-off costs are noise next to it, and repeating
 * it would blow the time of `make bench`. Conv rows go in --rounds turns
 * (default 3): ivae's child, then PyTorch, then a fresh child, and so on,
 * each turn with a warm-up and its share of the calls, and the median is
 * over all of a side's calls. Measured in one turn, the same row's ratio
 * swung from 0.81x to 0.54x between two runs of the bench (a slow spell of
 * this VM that fell on one side only).
 *
 * "others" is how many CPUs other processes kept busy while the row ran
 * (/proc/stat's busy time less the CPU time of the bench, its children and
 * the server): on this shared 2-core machine a row with others near 1 had one
 * core taken from it, and OpenMP's barriers then wait for the scheduler,
 * which hurts the rows made of many small layers most.
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
#include "../layers.h"

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
    double min_s;      /* fast rows: more calls, until they add up to this */
    int rounds;        /* conv rows: ivae and PyTorch take turns this many times */
    int quick;         /* 1 call per row, no warm-up, 64x64 for the 256x256 rows */
    int torch;         /* 0: --no-torch */
    char only[128];    /* comma list of sections, "" = all */
    uint64_t seed;
} Options;

static Options opt = {
    .config = "ivae-s", .csv = "bench.csv", .python = "/usr/bin/python3",
    .runs = 5, .rounds = 3, .budget = 20.0, .long_s = 10.0, .min_s = 0.25, .quick = 0, .torch = 1, .seed = 1,
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: test/bench [options]\n"
            "  --quick          smoke test: 1 call per row, no warm-up, 64x64 instead of 256x256\n"
            "  --runs N         N timed calls per row and side (default %d); rows faster than\n"
            "                   --min S / N get more, up to %d, until they add up to S (default %g)\n"
            "  --budget S       stop adding calls once a model row's would pass S seconds\n"
            "                   (conv rows: S/5; default %g)\n"
            "  --rounds N       conv rows: ivae and PyTorch take turns N times, each a fresh warm-up\n"
            "                   and its share of the calls; the median is over all (default %d)\n"
            "  --long S         a warm-up of S seconds or more is kept as the one sample (default %g)\n"
            "  --csv PATH       where the table goes as CSV (default %s)\n"
            "  --only LIST      sections to run, comma-separated: peak,conv,train,infer,mem\n"
            "  --config NAME    ivae-s or ivae-xs (default %s)\n"
            "  --seed N         parameters and inputs (default %llu)\n"
            "  --no-torch       ivae only\n"
            "  --python PATH    the python with torch (default %s)\n"
            "  --torch-script P the PyTorch server (default: bench_torch.py next to this binary)\n",
            opt.runs, MAX_RUNS, opt.min_s, opt.budget, opt.rounds, opt.long_s, opt.csv, opt.config, (unsigned long long)opt.seed,
            opt.python);
}

static int section_on(const char *name) {
    if (!opt.only[0]) return 1;
    size_t n = strlen(name);
    for (const char *p = opt.only; (p = strstr(p, name)); p += n)
        if ((p == opt.only || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

static void __attribute__((format(printf, 1, 2), noreturn)) bench_die(const char *fmt, ...) {
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
    if (posix_memalign(&p, 64, n ? n : 1) != 0) bench_die("out of memory (asked for %zu bytes)", n);
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
    int runs;           /* this many timed calls ... */
    double min_s;       /* ... or more, up to MAX_RUNS, until they add up to min_s */
    double budget;      /* no new call once sum + last would pass it */
} Plan;

static double fastest(const Samples *s) {
    double v = NAN;
    for (int i = 0; i < s->n; i++)
        if (!(s->t[i] >= v)) v = s->t[i];
    return v;
}

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
   returns 0 on success. Fast rows get more calls (min_s): on this machine a
   call now and then loses a few ms to the scheduler, and the median of many
   is steadier. */
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
    while (s->n < MAX_RUNS) {
        if (s->n > 0 && sum + s->t[s->n - 1] > p.budget) break;
        if (s->n >= p.runs && sum >= p.min_s) break;
        double t0 = now();
        if (call(ctx) != 0) return -1;
        s->t[s->n] = now() - t0;
        sum += s->t[s->n++];
    }
    return 0;
}

/* s += the first max of one round's samples, so that each of the rounds has
   its share of the MAX_RUNS */
static void samples_add(Samples *s, const Samples *a, int max) {
    for (int i = 0; i < a->n && i < max && s->n < MAX_RUNS; i++) s->t[s->n++] = a->t[i];
    s->warm_kept |= a->warm_kept;
}

static Plan plan_for(double budget) {
    Plan p = {1, opt.runs, opt.min_s, budget};
    if (opt.quick) p = (Plan){0, 1, 0, 0};
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
    if (pipe(fd) != 0) bench_die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) bench_die("fork: %s", strerror(errno));
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
        if (errno != EINTR) bench_die("wait4: %s", strerror(errno));
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

/* ========================================================================== */
/* how busy the machine was with other work                                   */
/* ========================================================================== */

static pid_t g_server_pid; /* the PyTorch server, whose CPU time is ours too */

/* CPU seconds the whole machine has been busy, summed over CPUs (/proc/stat:
   user nice system irq softirq steal; steal is the hypervisor's doing) */
static double machine_busy(void) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (!f) return NAN;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]);
    fclose(f);
    if (n < 8) return NAN;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / sysconf(_SC_CLK_TCK);
}

/* CPU seconds used by this process, its waited-for children and the server */
static double our_cpu(void) {
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    double t = a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec +
               1e-6 * (a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec);
    if (g_server_pid > 0) {
        char path[64], buf[1024];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)g_server_pid);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t k = fread(buf, 1, sizeof buf - 1, f);
            buf[k] = 0;
            fclose(f);
            char *p = strrchr(buf, ')'); /* fields after the command name: state is field 3 */
            unsigned long long ut, st;
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
                t += (double)(ut + st) / sysconf(_SC_CLK_TCK);
        }
    }
    return t;
}

typedef struct { double wall, busy, ours; } Probe;

static Probe probe(void) { return (Probe){now(), machine_busy(), our_cpu()}; }

/* how many CPUs other processes kept busy, on average, since p */
static double others_since(Probe p) {
    Probe q = probe();
    double o = ((q.busy - p.busy) - (q.ours - p.ours)) / (q.wall - p.wall);
    return isfinite(o) ? (o > 0 ? o : 0) : NAN;
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
   -ffp-contract=off allows; the mul-add twin is two roundings, the rate
   for code that may not fuse. */
#define PEAK_FN(name, NACC, EXPR, ...)                                     \
    __attribute__((__VA_ARGS__, noinline)) static float name(long iters, float a, float b) { \
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
PEAK_FN(fma512, 192, fmaf(acc[j], a, b), target("avx512f,fma,prefer-vector-width=512"), optimize("O3"))
PEAK_FN(fma256, 96, fmaf(acc[j], a, b), target("avx2,fma"), optimize("O3"))
PEAK_FN(muladd512, 192, acc[j] * a + b, target("avx512f,prefer-vector-width=512"), optimize("O3", "fp-contract=off"))
PEAK_FN(muladd256, 96, acc[j] * a + b, target("avx2"), optimize("O3", "fp-contract=off"))
#else
PEAK_FN(fma_generic, 96, fmaf(acc[j], a, b), optimize("O3"))
PEAK_FN(muladd_generic, 96, acc[j] * a + b, optimize("O3", "fp-contract=off"))
#endif

typedef struct {
    const char *name;
    float (*fn)(long, float, float);
    int nacc;
    int fused;
    int one;     /* on 1 thread (to see how the 2nd scales), not all of them */
    int ok;      /* the CPU has the instructions */
    long iters;  /* per thread per call, set by calibration */
} PeakKind;

static PeakKind peak_kinds[] = {
#ifdef HAVE_X86_PEAK
    {"fma 512-bit", fma512, 192, 1, 0, 0, 0},
    {"fma 256-bit", fma256, 96, 1, 0, 0, 0},
    {"mul+add 512-bit", muladd512, 192, 0, 0, 0, 0},
    {"mul+add 256-bit", muladd256, 96, 0, 0, 0, 0},
    {"fma 512-bit", fma512, 192, 1, 1, 0, 0},
#else
    {"fma", fma_generic, 96, 1, 0, 1, 0},
    {"mul+add", muladd_generic, 96, 0, 0, 1, 0},
    {"fma", fma_generic, 96, 1, 1, 1, 0},
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
#ifdef _OPENMP
    if (k->one) omp_set_num_threads(1); /* in this child only */
#endif
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
    /* the best of several 0.2 s calls: the peak is what the machine can do,
       and a neighbour's load only ever makes a call slower */
    Plan p = opt.quick ? (Plan){0, 1, 0, 0} : (Plan){1, opt.runs > 7 ? opt.runs : 7, 0, 1e9};
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
    if (L->n == MAX_SHAPES) bench_die("more than %d distinct conv shapes", MAX_SHAPES);
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
    int S = cfg->n_stages, C[IVAE_MAX_STAGES] = {0};
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
        ivae_conv3d_forward(j->out, j->inp, j->weight, j->bias, c->cin, c->T, c->H, c->W, c->cout, c->kt,
                       c->kh, c->kw, c->st, c->sh, c->sw);
    else if (j->pass == PASS_DINP)
        ivae_conv3d_backward(j->dinp, NULL, NULL, j->dout, j->inp, j->weight, c->cin, c->T, c->H, c->W,
                        c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw);
    else
        ivae_conv3d_backward(NULL, j->dweight, j->dbias, j->dout, j->inp, j->weight, c->cin, c->T, c->H,
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
    if (!j->dweight || !j->dbias) bench_die("out of memory");
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
    float *p0; /* TRAIN: the initial parameters, copied back before each step */
    int Tz, Hz, Wz;
} ModelJob;

enum { JOB_TRAIN, JOB_ENCODE, JOB_DECODE, JOB_MODEL_ONLY };

static int model_call(void *ctx) {
    ModelJob *j = ctx;
    if (j->kind == JOB_TRAIN) {
        IvaeLoss L;
        IvaeModel *m = j->m; /* every step from the same state (the header: train) */
        memcpy(m->params, j->p0, m->n_params * sizeof(float));
        if (m->adam_m) {
            memset(m->adam_m, 0, m->n_params * sizeof(float));
            memset(m->adam_v, 0, m->n_params * sizeof(float));
        }
        m->step = 0;
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
    if (j->kind == JOB_MODEL_ONLY) return 0; /* only the memory is wanted */
    size_t nx = (size_t)3 * j->T * j->H * j->W;
    size_t nz = (size_t)cfg.z_ch * j->Tz * j->Hz * j->Wz;
    ivae_loss_defaults(&j->lo);
    ivae_adamw_defaults(&j->ad);
    if (j->kind == JOB_TRAIN) {
        j->p0 = xalloc(j->m->n_params * sizeof(float));
        memcpy(j->p0, j->m->params, j->m->n_params * sizeof(float));
        j->samples = calloc(j->B, sizeof *j->samples);
        if (!j->samples) bench_die("out of memory");
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
    char version[64], threads[16], blas[512], openblas[16];
} Torch;

static Torch py;
static char g_pt_kernel[32]; /* the conv kernel PyTorch picked for the last conv request */

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
    g_server_pid = 0;
    py.to = py.from = NULL;
    py.up = 0;
}

/* starts bench_torch.py --serve; prints what it says about itself */
static void torch_start(void) {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) bench_die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) bench_die("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        char th[16], lg[32], seed[32];
        snprintf(th, sizeof th, "%d", nthreads());
        snprintf(lg, sizeof lg, "%.17g", opt.long_s);
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)opt.seed);
        execl(opt.python, opt.python, opt.script, "--serve", "--threads", th, "--long", lg, "--config",
              opt.config, "--seed", seed, (char *)NULL);
        printf("notorch cannot run %s: %s\n", opt.python, strerror(errno));
        fflush(stdout);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    py.pid = pid;
    g_server_pid = pid;
    py.to = fdopen(in[1], "w");
    py.from = fdopen(out[0], "r");
    if (!py.to || !py.from) bench_die("fdopen: %s", strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (getline(&line, &cap, py.from) < 0) {
            printf("PyTorch: not installed (apt-get install python3-torch python3-numpy): %s %s ended "
                   "without a word\n", opt.python, opt.script);
            break;
        }
        line[strcspn(line, "\n")] = 0;
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
    if (fprintf(py.to, "%s %d %d %.17g %.17g\n", req, p.warmup, p.runs, p.min_s, p.budget) < 0 ||
        fflush(py.to) != 0) {
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
    g_pt_kernel[0] = 0;
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
            kv(q, "kernel", g_pt_kernel, sizeof g_pt_kernel);
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
    char pt_kernel[32]; /* conv rows: onednn or im2col+blas */
    double flop;        /* per call; 0 if not counted */
    int fastest;        /* rate from the fastest call, not the median (peak rows) */
    double items;       /* clips or frames per call; 0 if no rate */
    const char *unit;
    Samples iv, th;
    double rss_mb;      /* the ivae child's peak resident memory */
    double others;      /* CPUs other processes kept busy meanwhile */
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
    printf("\n%-9s %-34s %4s | %9s %7s %6s %14s %3s | %9s %7s %14s %3s | %7s %6s  %-11s %s\n", "row", "shape",
           "uses", "ivae", "GF/s", "%peak", "rate", "n", "PyTorch", "GF/s", "rate", "n", "ivae/pt", "others",
           "pt kernel", "first use");
}

static void csv_header(void) {
    fprintf(g_csv, "section,row,shape,uses,first_use,gflop,ivae_s,ivae_n,ivae_gflops,ivae_pct_peak,"
                   "ivae_rate,rate_unit,torch_s,torch_n,torch_gflops,torch_rate,ratio_ivae_over_torch,"
                   "ivae_maxrss_mb,others_cpus,torch_kernel\n");
}

/* what a row's samples say */
typedef struct {
    double ti, tt;      /* median seconds, ivae and PyTorch (NAN if none) */
    double gi, gt;      /* GFLOP/s */
    double ri, rt;      /* clips or frames per second */
    double pct;         /* ivae's GF/s as a percentage of the fma peak */
    double ratio;       /* tt / ti: > 1 means ivae is faster */
} Rates;

static Rates rates(const Row *r) {
    Rates q;
    q.ti = r->fastest ? fastest(&r->iv) : median(&r->iv);
    q.tt = r->fastest ? fastest(&r->th) : median(&r->th);
    q.gi = r->flop > 0 ? r->flop / q.ti / 1e9 : NAN;
    q.gt = r->flop > 0 ? r->flop / q.tt / 1e9 : NAN;
    q.ri = r->items > 0 ? r->items / q.ti : NAN;
    q.rt = r->items > 0 ? r->items / q.tt : NAN;
    q.pct = g_peak > 0 ? 100 * q.gi / g_peak : NAN;
    q.ratio = q.tt / q.ti;
    return q;
}

static void csv_num(double v, const char *f) {
    if (isfinite(v) && v > 0) fprintf(g_csv, f, v);
    fputc(',', g_csv);
}

/* a text field, quoted if it holds a comma or a quote (RFC 4180) */
static void csv_str(const char *v) {
    if (!strpbrk(v, ",\"\n")) {
        fprintf(g_csv, "%s,", v);
        return;
    }
    fputc('"', g_csv);
    for (; *v; v++) {
        if (*v == '"') fputc('"', g_csv);
        fputc(*v, g_csv);
    }
    fputs("\",", g_csv);
}

static void csv_row(const Row *r) {
    Rates q = rates(r);
    if (!g_csv) return;
    csv_str(r->section);
    csv_str(r->name);
    csv_str(r->shape);
    fprintf(g_csv, "%d,", r->uses);
    csv_str(r->first);
    csv_num(r->flop / 1e9, "%.6g");
    csv_num(q.ti, "%.6g");
    fprintf(g_csv, "%d,", r->iv.n);
    csv_num(q.gi, "%.4g");
    csv_num(q.pct, "%.3g");
    csv_num(q.ri, "%.5g");
    fprintf(g_csv, "%s,", r->items > 0 ? r->unit : "");
    csv_num(q.tt, "%.6g");
    fprintf(g_csv, "%d,", r->th.n);
    csv_num(q.gt, "%.4g");
    csv_num(q.rt, "%.5g");
    csv_num(q.ratio, "%.4g");
    csv_num(r->rss_mb, "%.1f");
    if (isfinite(r->others) && (r->iv.n || r->th.n)) fprintf(g_csv, "%.2f", r->others);
    fprintf(g_csv, ",%s\n", r->pt_kernel);
    fflush(g_csv);
}

static const char *fmt_rate(char *b, size_t n, double v, const char *unit) {
    if (!isfinite(v) || v <= 0) snprintf(b, n, "-");
    else snprintf(b, n, "%.3g %s", v, unit);
    return b;
}

/* each section's ratios, for its summary line: the geometric mean says at a
   glance whether a change helped, the lowest ratio where to look next */
static struct {
    double log_sum, min;
    int n;
    char min_row[96];
} g_ratios;

static void note_ratio(const Row *r, double ratio) {
    if (!(isfinite(ratio) && ratio > 0)) return;
    g_ratios.log_sum += log(ratio);
    if (g_ratios.n++ == 0 || ratio < g_ratios.min) {
        g_ratios.min = ratio;
        snprintf(g_ratios.min_row, sizeof g_ratios.min_row, "%s %s", r->name, r->shape);
    }
}

static void section_summary(const char *section) {
    if (g_ratios.n)
        printf("summary %s: geometric mean of the ratios PyTorch time / ivae time %.2fx over %d rows "
               "(lowest %.2fx: %s)\n", section, exp(g_ratios.log_sum / g_ratios.n), g_ratios.n, g_ratios.min,
               g_ratios.min_row);
    memset(&g_ratios, 0, sizeof g_ratios);
}

static void print_row(const Row *r) {
    Rates q = rates(r);
    note_ratio(r, q.ratio);
    char a[32], b[32], c[32], d[32], g[32], h[32], o[32], ni[8], nt[8], uses[8], ri[48], rt[48];
    snprintf(ni, sizeof ni, "%d%s", r->iv.n, r->iv.warm_kept ? "*" : "");
    snprintf(nt, sizeof nt, "%d%s", r->th.n, r->th.warm_kept ? "*" : "");
    snprintf(uses, sizeof uses, r->uses ? "%d" : "", r->uses);
    fmt_rate(ri, sizeof ri, q.ri, r->unit);
    fmt_rate(rt, sizeof rt, q.rt, r->unit);
    if (!(r->items > 0)) ri[0] = rt[0] = 0;
    snprintf(o, sizeof o, isfinite(r->others) ? "%.2f" : "-", r->others);
    printf("%-9s %-34s %4s | %9s %7s %6s %14s %3s | %9s %7s %14s %3s | %7s %6s  %-11s %s\n", r->name, r->shape,
           uses, fmt_time(a, sizeof a, q.ti), fmt_num(b, sizeof b, q.gi, "%.1f"),
           fmt_num(c, sizeof c, q.pct, "%.1f%%"), ri, r->iv.n ? ni : "-", fmt_time(d, sizeof d, q.tt),
           fmt_num(g, sizeof g, q.gt, "%.1f"), rt, r->th.n ? nt : "-", fmt_num(h, sizeof h, q.ratio, "%.2f"), o,
           r->pt_kernel, r->first);
    fflush(stdout);
    csv_row(r);
}

/* ========================================================================== */
/* sections                                                                   */
/* ========================================================================== */

static void run_peak(void) {
    double all_threads = 0, one_thread = 0;
    printf("\nPeak FP32 rate (independent fmaf or mul+add on register accumulators, OpenMP):\n");
    for (int k = 0; k < N_PEAK; k++) {
        PeakKind *p = &peak_kinds[k];
        if (p->one && nthreads() == 1) continue; /* the row above already is */
#ifdef HAVE_X86_PEAK
        __builtin_cpu_init();
        int has512 = __builtin_cpu_supports("avx512f"), has256 = __builtin_cpu_supports("avx2");
        int hasfma = __builtin_cpu_supports("fma");
        p->ok = strstr(p->name, "512") ? has512 && (hasfma || !p->fused) : has256 && (hasfma || !p->fused);
#endif
        Row r = {.section = "peak", .fastest = 1};
        int threads = p->one ? 1 : nthreads();
        snprintf(r.name, sizeof r.name, "peak");
        snprintf(r.shape, sizeof r.shape, "%s x %d thread%s", p->name, threads, threads > 1 ? "s" : "");
        if (!p->ok) {
            printf("  %-34s not supported by this CPU\n", r.shape);
            continue;
        }
        Probe pr = probe();
        int rc = in_child(peak_body, p, &r.iv, &r.rss_mb);
        r.others = others_since(pr);
        if (rc != 0) {
            printf("  %-34s failed\n", r.shape);
            continue;
        }
        long iters = (long)r.iv.aux;
        r.flop = 2.0 * p->nacc * iters * threads;
        double gf = rates(&r).gi;
        if (p->fused && !p->one && gf > all_threads) all_threads = gf;
        if (p->fused && p->one && gf > one_thread) one_thread = gf;
        printf("  %-34s %8.1f GFLOP/s   others %.2f%s\n", r.shape, gf, r.others,
               p->fused ? "" : "  (a*b+c, two roundings)");
        csv_row(&r);
    }
    /* A neighbour holding a core caps the all-thread rate at about one core's,
       while the one-thread rate is safe from it: take the larger of the
       measured all-thread rate and threads x the one-thread rate. */
    g_peak = all_threads > nthreads() * one_thread ? all_threads : nthreads() * one_thread;
    if (g_peak > 0)
        printf("  (each the fastest of its calls) %%peak below is GF/s over %.1f GFLOP/s = max(%d-thread fma, "
               "%d x 1-thread fma)\n", g_peak, nthreads(), nthreads());
    if (nthreads() > 1 && one_thread > 0 && all_threads < 0.75 * nthreads() * one_thread)
        printf("  NOTE: %d threads reached only %.2fx one thread's fma rate: other processes held a core, or the "
               "%d CPUs are hyperthreads of fewer cores (then %%peak is understated up to %dx)\n",
               nthreads(), all_threads / one_thread, nthreads(), nthreads());
    if (py.up) {
        int n = 2048;
        Row r = {.section = "peak", .flop = 2.0 * n * n * n, .fastest = 1};
        snprintf(r.name, sizeof r.name, "peak");
        snprintf(r.shape, sizeof r.shape, "PyTorch sgemm %dx%dx%d", n, n, n);
        Probe pr = probe();
        if (torch_time(&r.th, plan_for(opt.budget / 5), "gemm %d", n) == 0) {
            r.others = others_since(pr);
            printf("  %-34s %8.1f GFLOP/s   others %.2f  (torch.mm on %s threads: what its BLAS reaches)\n",
                   r.shape, rates(&r).gt, r.others, py.threads);
            csv_row(&r);
        }
    }
}

static void shape_str(char *b, size_t n, const ConvShape *c) {
    snprintf(b, n, "%d>%d k%d%d%d s%d%d%d %dx%dx%d", c->cin, c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw,
             c->T, c->H, c->W);
}

static void run_conv(const IvaeConfig *cfg) {
    ShapeList *L = calloc(1, sizeof *L);
    if (!L) bench_die("out of memory");
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
            /* the two sides take turns (rounds), each with its share of the calls, so that a slow
               spell of this shared machine (a tenth of a second to seconds, often) falls on both
               sides' samples rather than on one side's whole row */
            int R = opt.quick ? 1 : opt.rounds;
            Plan pl = plan_for(opt.budget / 5 / R);
            pl.runs = (pl.runs + R - 1) / R;
            pl.min_s /= R;
            ConvJob j = {.c = c, .pass = pass, .plan = pl};
            Probe pr = probe();
            int ok_i = 1, ok_t = 1;
            for (int round = 0; round < R; round++) {
                Samples si, st;
                double rss = 0;
                if (ok_i && in_child(conv_body, &j, &si, &rss) != 0) ok_i = 0;
                if (ok_i) {
                    samples_add(&r.iv, &si, MAX_RUNS / R);
                    if (rss > r.rss_mb) r.rss_mb = rss;
                }
                if (ok_t && torch_time(&st, pl, "conv %d %d %d %d %d %d %d %d %d %d %d %s", c->cin, c->cout,
                                       c->kt, c->kh, c->kw, c->st, c->sh, c->sw, c->T, c->H, c->W,
                                       pass_name[pass]) != 0)
                    ok_t = 0;
                if (ok_t) {
                    samples_add(&r.th, &st, MAX_RUNS / R);
                    snprintf(r.pt_kernel, sizeof r.pt_kernel, "%s", g_pt_kernel);
                }
            }
            if (!ok_i) {
                printf("(ivae failed on this row)\n");
                memset(&r.iv, 0, sizeof r.iv);
            }
            if (!ok_t) memset(&r.th, 0, sizeof r.th);
            r.others = others_since(pr);
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
    if (!L) bench_die("out of memory");
    snprintf(r.name, sizeof r.name, "%s", name);
    int Tz, Hz, Wz;
    if (ivae_latent_shape(cfg, T, H, W, &Tz, &Hz, &Wz) != 0) bench_die("%s", ivae_error());
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
    Probe pr = probe();
    if (in_child(model_body, &j, &r.iv, &r.rss_mb) != 0) printf("(ivae failed on this row)\n");
    if (with_torch) {
        if (kind == JOB_TRAIN) torch_time(&r.th, plan, "train %d %d %d %d", B, T, H, W);
        else if (kind == JOB_ENCODE) torch_time(&r.th, plan, "encode %d %d %d", T, H, W);
        else torch_time(&r.th, plan, "decode %d %d %d", Tz, Hz, Wz);
    }
    r.others = others_since(pr);
    print_row(&r);
    return r.iv.n ? r.rss_mb : NAN;
}

static double g_rss_train17 = NAN, g_rss_decode17 = NAN;

static void run_train(const IvaeConfig *cfg) {
    printf("\nTraining step: ivae_zero_grad + ivae_batch_grad + ivae_adamw_step; PyTorch: forward_loss of "
           "test/ref.py, backward (x.requires_grad, as ivae always computes dL/dx), torch.optim.AdamW; "
           "GF/s are nominal (every kernel tap, padding included: an image's are 1/3 real)\n");
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

/* one line of the memory table, and its CSV row */
static void mem_line(const char *what, const char *name, const char *shape17, const char *shape33, double m17,
                     double m33) {
    printf("%-36s %10.1f %10.1f %10.1f %7.2f\n", what, m17, m33, m33 - m17, m33 / m17);
    Row r = {.section = "mem"};
    snprintf(r.name, sizeof r.name, "%s", name);
    snprintf(r.shape, sizeof r.shape, "%s", shape17);
    r.rss_mb = m17;
    csv_row(&r);
    snprintf(r.shape, sizeof r.shape, "%s", shape33);
    r.rss_mb = m33;
    csv_row(&r);
}

static void run_mem(const IvaeConfig *cfg) {
    int S = infer_size();
    Plan once = {0, 1, 0, 0};
    printf("\nPeak resident memory (ru_maxrss of a child that builds the model and does the work); "
           "the 33-frame rows, one call each, no PyTorch:\n");
    print_header();
    /* the 17-frame peaks come from the timed rows' children when they ran */
    if (!isfinite(g_rss_train17))
        g_rss_train17 = model_row(cfg, "mem", "train", JOB_TRAIN, 1, 17, 64, 64, once, 0);
    double t33 = model_row(cfg, "mem", "train", JOB_TRAIN, 1, 33, 64, 64, once, 0);
    if (!isfinite(g_rss_decode17))
        g_rss_decode17 = model_row(cfg, "mem", "decode", JOB_DECODE, 1, 17, S, S, once, 0);
    double d33 = model_row(cfg, "mem", "decode", JOB_DECODE, 1, 33, S, S, once, 0);
    Row base = {.section = "mem"};
    ModelJob jb = {.kind = JOB_MODEL_ONLY, .T = 1, .H = 64, .W = 64};
    if (in_child(model_body, &jb, &base.iv, &base.rss_mb) != 0) base.rss_mb = NAN;
    snprintf(base.name, sizeof base.name, "peak rss model only");
    csv_row(&base);

    char s17[48], s33[48];
    printf("\n%-36s %10s %10s %10s %7s\n", "peak RSS, MB", "17 frames", "33 frames", "growth", "ratio");
    printf("%-36s %10.1f\n", "the model alone (ivae_model_new)", base.rss_mb);
    mem_line("training step, 3xTx64x64", "peak rss train", "3x17x64x64", "3x33x64x64", g_rss_train17, t33);
    snprintf(s17, sizeof s17, "3x17x%dx%d", S, S);
    snprintf(s33, sizeof s33, "3x33x%dx%d", S, S);
    char what[64];
    snprintf(what, sizeof what, "decode, latent 5|9 -> 3xTx%dx%d", S, S);
    mem_line(what, "peak rss decode", s17, s33, g_rss_decode17, d33);
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
    if (*i + 1 >= argc) bench_die("%s needs a value", argv[*i]);
    char *end;
    double v = strtod(argv[++*i], &end);
    if (*end || !(v >= 0)) bench_die("%s %s: not a number >= 0", argv[*i - 1], argv[*i]);
    return v;
}

static const char *arg_str(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) bench_die("%s needs a value", argv[*i]);
    return argv[++*i];
}

int main(int argc, char **argv) {
    ivae_wait_passively(argv);
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
            if (opt.runs < 1 || opt.runs > MAX_RUNS) bench_die("--runs must be 1..%d", MAX_RUNS);
        } else if (!strcmp(a, "--rounds")) {
            opt.rounds = (int)arg_num(argc, argv, &i);
            if (opt.rounds < 1 || opt.rounds > 8) bench_die("--rounds must be 1..8");
        } else if (!strcmp(a, "--budget")) opt.budget = arg_num(argc, argv, &i);
        else if (!strcmp(a, "--long")) opt.long_s = arg_num(argc, argv, &i);
        else if (!strcmp(a, "--min")) opt.min_s = arg_num(argc, argv, &i);
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
            if (!ok) bench_die("--only: unknown section %s (have peak,conv,train,infer,mem)", t);
        }
    }
    IvaeConfig cfg;
    if (ivae_config_preset(opt.config, &cfg) != 0) bench_die("--config %s: %s", opt.config, ivae_error());
    signal(SIGPIPE, SIG_IGN); /* a dead server is an error from write, not a kill */
    g_csv = fopen(opt.csv, "w");
    if (!g_csv) bench_die("cannot write %s: %s", opt.csv, strerror(errno));
    csv_header();

    double t_start = now();
    Probe whole = probe();
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    time_t wall = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", localtime(&wall));
    printf("ivae bench, %s, config %s, seed %llu%s\n", date, opt.config, (unsigned long long)opt.seed,
           opt.quick ? ", --quick" : "");
    printf("CPU: %s, %ld online; ivae threads (OpenMP): %d; CFLAGS: %s\n", cpu, sysconf(_SC_NPROCESSORS_ONLN),
           nthreads(), BENCH_CFLAGS);
    double load = NAN;
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fscanf(lf, "%lf", &load) != 1) load = NAN;
        fclose(lf);
    }
    printf("load average before the bench: %.2f%s\n", load,
           load > 0.5 ? " -- other work is running: small rows will be noisy; compare ratios, not times" : "");
    printf("others = CPUs that other processes kept busy while a row ran (/proc/stat less our own CPU time); "
           "rows with others > 0.3 were contended\n");
    if (opt.quick)
        printf("timing: --quick: one call per row and no warm-up, so first-call costs are in every number: "
               "a smoke test, not a measurement\n");
    else
        printf("timing: median of %d calls after 1 warm-up (more, up to %d, for rows under %g s in all; none "
               "started past %g s a row, %g s a conv row; n* = the warm-up took >= %g s and is the sample); "
               "conv rows: ivae and PyTorch take %d turns, each a warm-up and its share of the calls\n",
               opt.runs, MAX_RUNS, opt.min_s, opt.budget, opt.budget / 5, opt.long_s, opt.rounds);

    if (opt.torch) {
        torch_start();
        if (py.up) {
            printf("PyTorch %s, %s threads, BLAS %s\n", py.version, py.threads, py.blas[0] ? py.blas : "(none loaded)");
            if (strcmp(py.openblas, "yes") != 0)
                printf("WARNING: libopenblas0-pthread is not installed: PyTorch's BLAS may be single-threaded "
                       "and unfairly slow (apt-get install libopenblas0-pthread)\n");
            if (atoi(py.threads) != nthreads())
                printf("WARNING: PyTorch uses %s threads, ivae %d\n", py.threads, nthreads());
        }
    } else {
        printf("PyTorch: off (--no-torch)\n");
    }

    if (section_on("peak")) run_peak(), section_summary("peak");
    if (section_on("conv")) run_conv(&cfg), section_summary("conv");
    if (section_on("train")) run_train(&cfg), section_summary("train");
    if (section_on("infer")) run_infer(&cfg), section_summary("infer");
    if (section_on("mem")) run_mem(&cfg), section_summary("mem");

    torch_stop();
    if (fclose(g_csv) != 0) bench_die("writing %s: %s", opt.csv, strerror(errno));
    printf("\nwrote %s; %.0f s in all; other processes kept %.2f CPUs busy on average meanwhile\n", opt.csv,
           now() - t_start, others_since(whole));
    return 0;
}
