/* util.c: see util.h */
#include "util.h"
#include "ivae.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *xmalloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 1;
    if (posix_memalign(&p, 64, bytes) != 0) {
        fprintf(stderr, "ivae: error: out of memory (asked for %zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

void *xcalloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) {
        fprintf(stderr, "ivae: error: out of memory (asked for %zu x %zu bytes)\n", count, size);
        exit(1);
    }
    void *p = xmalloc(count * size);
    memset(p, 0, count * size);
    return p;
}

void one_line(char *s) {
    for (char *c = s; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
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
