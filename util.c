/*
 * util.c: small helpers (util.h) and the library's error text (ivae.h).
 */
#include "util.h"
#include "ivae.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void die(const char *fmt, ...) {
    va_list ap;
    char msg[2048];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ivae: error: %s\n", one_line(msg)); /* one line, whatever the input held */
    exit(1);
}

char *one_line(char *s) {
    for (char *c = s; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
    return s;
}

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void *xmalloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) die("out of memory (asked for %zu bytes)", bytes);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) die("out of memory (asked for %zu x %zu bytes)", count, size);
    void *p = xmalloc(count * size);
    memset(p, 0, count * size);
    return p;
}

void *xrealloc(void *p, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) die("out of memory (asked for %zu x %zu bytes)", count, size);
    size_t bytes = count * size;
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) die("out of memory (asked for %zu bytes)", bytes);
    return q;
}

void mkdir_p(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) die("%s: cannot create: %s", path, strerror(errno));
}

/* digits only, no sign or blank first: strtoll/strtoull would take " 12",
   "+12" and (strtoull) "-1" as 2^64 - 1 */
static int plain_digits(const char *s) {
    if (*s == '-') s++;
    return *s >= '0' && *s <= '9';
}

int parse_int(const char *s, long long lo, long long hi, long long *v) {
    if (!s || !plain_digits(s)) return -1;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || *end || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

int parse_u64(const char *s, unsigned long long *v) {
    if (!s || *s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *v = x;
    return 0;
}

int parse_real(const char *s, double lo, double hi, double *v) {
    /* a decimal number: sign, digits, '.', exponent; this refuses "nan",
       "inf", "0x1p3" and blanks before strtod sees them */
    if (!s || !*s || strspn(s, "+-0123456789.eE") != strlen(s)) return -1;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(x) || !(x >= lo && x <= hi)) return -1;
    *v = x;
    return 0;
}

int parse_int_list(const char *s, int lo, int hi, int *out, int max) {
    int n = 0;
    while (*s) {
        char item[32];
        size_t len = strcspn(s, ",");
        long long v;
        if (n == max || len >= sizeof item) return -1;
        memcpy(item, s, len), item[len] = 0;
        if (parse_int(item, lo, hi, &v) != 0) return -1;
        out[n++] = (int)v;
        s += len;
        if (*s == ',' && !*++s) return -1; /* a trailing comma */
    }
    return n;
}

int parse_shape(const char *s, int n, int lo, int hi, int *out) {
    char buf[64];
    if (!s || strlen(s) >= sizeof buf) return -1;
    snprintf(buf, sizeof buf, "%s", s);
    char *p = buf;
    int v[8];
    if (n < 1 || n > 8) return -1;
    for (int k = 0; k < n; k++) {
        char *x = k + 1 < n ? strchr(p, 'x') : NULL;
        if (k + 1 < n && !x) return -1;
        if (x) *x = 0;
        long long t;
        if (parse_int(p, lo, hi, &t) != 0) return -1;
        v[k] = (int)t;
        if (x) p = x + 1;
    }
    memcpy(out, v, n * sizeof *out);
    return 0;
}

/* the library's errors (ivae.h): the last failure, as one line */
static char g_error[1024];

const char *ivae_error(void) { return g_error; }

void ivae_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    one_line(g_error);
}

/* The OpenMP wait policy. At the end of every parallel region (a grad on
   ivae-xs runs about a thousand) a thread that is done waits for the
   others, and by default it spins for a while first (libgomp: some 300 000
   rounds). On a machine where another program holds a core, the thread it
   waits for is descheduled and the spinning keeps the core from it: a grad
   that takes 0.3 s on an idle machine and 0.42 s on one thread took 3 to
   8 s on two (README, "Busy machines"). Sleeping instead (the passive
   policy) costs a wake-up per region, about 15% on an idle machine. So ivae
   looks at the machine as it starts. Idle: the runtime's defaults (every
   core, spinning). Other threads running: only the cores they leave free
   (OMP_NUM_THREADS, unless the user set it), and with more than one of
   those, passive waiting. The user's own OMP_WAIT_POLICY, GOMP_SPINCOUNT or
   KMP_BLOCKTIME keeps the policy theirs. The runtime reads the policy once,
   before main, so ivae sets it and starts itself again;
   IVAE_WAIT_POLICY_SET marks the second start (and a system without
   /proc/self/exe keeps the spinning). The thread count never changes the
   bits. Every program of the project (ivae, the tests, the benchmarks)
   calls this first in main. */

/* threads running on the machine besides this one: procs_running of
   /proc/stat (which counts this one), the median of five looks 1 ms apart;
   0 where /proc/stat cannot be read. The median, not the most: a program
   started in a pipeline (ivae grad ... | tee log) finds its partners in
   the first look, still starting (2 others, then 0, 0, ...), where a
   forking shell or a busy loop on the other core shows in every look. */
static int others_running(void) {
    enum { LOOKS = 5 };
    int seen[LOOKS];
    for (int k = 0; k < LOOKS; k++) {
        FILE *f = fopen("/proc/stat", "r");
        if (!f) return 0;
        char line[256];
        int n = 1;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "procs_running %d", &n) == 1) break;
        fclose(f);
        seen[k] = n - 1 > 0 ? n - 1 : 0;
        for (int j = k; j > 0 && seen[j] < seen[j - 1]; j--) { /* insertion: seen stays sorted */
            int v = seen[j];
            seen[j] = seen[j - 1];
            seen[j - 1] = v;
        }
        if (k < LOOKS - 1) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return seen[LOOKS / 2];
}

void ivae_wait_passively(char **argv) {
#ifdef _OPENMP
    if (getenv("IVAE_WAIT_POLICY_SET")) return;
    int others = others_running();
    if (others == 0) return; /* an idle machine */
    int free_cores = omp_get_num_procs() - others, threads = free_cores > 1 ? free_cores : 1;
    const char *user = getenv("OMP_NUM_THREADS");
    if (!user || !*user) {
        omp_set_num_threads(threads);
        char v[16];
        snprintf(v, sizeof v, "%d", threads);
        setenv("OMP_NUM_THREADS", v, 1); /* for the second start, and for programs ivae starts */
    } else threads = 2;                  /* the user's count: assume it runs more than one thread */
    if (threads == 1 || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || getenv("KMP_BLOCKTIME")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("IVAE_WAIT_POLICY_SET", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("OMP_WAIT_POLICY"); /* exec failed: on with the runtime's default */
#else
    (void)argv;
#endif
}
