/*
 * util.h: small helpers shared by the library and the command-line tool:
 * fail, tell the time, allocate, make folders, and the library's error text
 * (ivae_error / ivae_set_error, declared in ivae.h).
 *
 * The tool fails in one way: die() prints one line on stderr,
 *   ivae: error: <message>
 * and exits with status 1. The allocators never return NULL: running out of
 * memory is such a line too (the one way the library exits). Otherwise the
 * library (ivae.h) and media.h report errors through ivae_error() and leave
 * the exit to their caller.
 */
#ifndef IVAE_UTIL_H
#define IVAE_UTIL_H

#include <stddef.h>

/* "ivae: error: <printf of fmt>" on stderr (control characters shown as
   '?', see one_line), then exit(1) */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* s made one line in place: every byte below 0x20 (newline, tab, carriage
   return, escape, ...) becomes '?'; returns s */
char *one_line(char *s);

/* seconds on the monotonic clock */
double now_s(void);

/* bytes of memory aligned to 64 bytes (a cache line, a 512-bit vector); never
   NULL (0 bytes gives a valid block); free with free() */
void *xmalloc(size_t bytes);
/* count * size bytes as xmalloc, zeroed; the product is checked for overflow */
void *xcalloc(size_t count, size_t size);
/* p (from this family, or NULL) resized to count * size bytes, overflow-checked,
   for arrays that grow; the new block has malloc's alignment, not 64 */
void *xrealloc(void *p, size_t count, size_t size);

/* mkdir -p: path and its missing parents (mode 0755); dies if path cannot be
   created (an existing path is fine) */
void mkdir_p(const char *path);

#endif
