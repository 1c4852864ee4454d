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

/* Range-checked number parsing, shared by the command-line options and the
   metadata of checkpoints (nothing else in ivae calls strtol/strtod on
   text from outside). The whole string must be the number: an optional '-'
   then decimal digits (parse_int), or a decimal or exponent number
   (parse_real); no leading or trailing blanks, no hex, no "nan"/"inf".
   Returns 0 and sets *v when s is such a number within [lo, hi]; returns -1
   (and leaves *v alone) when it is empty, malformed, overflows, or lies
   outside the range. */
int parse_int(const char *s, long long lo, long long hi, long long *v);
/* an unsigned 64-bit integer (the RNG state of a checkpoint): digits only */
int parse_u64(const char *s, unsigned long long *v);
/* a finite number in [lo, hi] (NaN is never in range) */
int parse_real(const char *s, double lo, double hi, double *v);
/* a comma-separated list ("1,2,4,4") of at most max integers in [lo, hi]
   into out: returns how many (0 for ""), or -1 */
int parse_int_list(const char *s, int lo, int hi, int *out, int max);
/* n integers in [lo, hi] joined by 'x' ("17x64x64" for n = 3) into out */
int parse_shape(const char *s, int n, int lo, int hi, int *out);

/* OpenMP on a busy machine: when other programs are running as this one
   starts, only the cores they leave free, and threads that wait sleep
   instead of spinning, unless the user chose (util.c says why); may start
   the program again with argv */
void ivae_wait_passively(char **argv);

#endif
