/*
 * util.c: small helpers (util.h) and the library's error text (ivae.h).
 */
#include "util.h"
#include "ivae.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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
