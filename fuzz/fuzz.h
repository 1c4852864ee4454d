/*
 * fuzz/fuzz.h: what the libFuzzer harnesses of fuzz/ share (see fuzz/README
 * in the top README's "Hardening and fuzzing" part).
 *
 * ivae's readers take paths, so each input is written to a scratch file
 * first (under $TMPDIR, /dev/shm when there is one: it is memory) and read
 * back from there by the very function the program calls.
 */
#ifndef IVAE_FUZZ_H
#define IVAE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* a scratch path ending in name, private to this process */
static const char *fuzz_path(const char *name) {
    static char buf[16][512];
    static int next;
    static char dir[400];
    if (!dir[0]) {
        struct stat sb;
        const char *t = getenv("TMPDIR");
        if (!t || !*t) t = stat("/dev/shm", &sb) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof dir, "%s/ivae_fuzz.%ld", t, (long)getpid());
        mkdir(dir, 0700);
    }
    char *p = buf[next++ % 16];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void fuzz_write(const char *path, const uint8_t *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); abort(); }
    if (n && fwrite(data, 1, n, f) != n) { perror(path); abort(); }
    fclose(f);
}

#endif
