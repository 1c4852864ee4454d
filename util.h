/*
 * util.h: small helpers shared by the library and the command-line tool:
 * allocation that never returns NULL, and one-line error text.
 */
#ifndef IVAE_UTIL_H
#define IVAE_UTIL_H
#include <stddef.h>

/* 64-byte aligned (free() releases it); on failure prints
   "ivae: error: out of memory (asked for N bytes)" and exits 1 */
void *xmalloc(size_t bytes);
/* count * size bytes, zeroed, the product checked for overflow */
void *xcalloc(size_t count, size_t size);
/* replaces control characters by '?', so a message stays one line
   whatever a file's strings held */
void one_line(char *s);
#endif
