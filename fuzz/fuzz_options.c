/*
 * fuzz/fuzz_options.c: the option parsers. The input is split at NUL bytes
 * into arguments (at most 64), given to `ivae train`'s parse_opts (the
 * numeric options and their ranges, the shape and device flags, the checks
 * between options), and each argument to util.h's parse_int, parse_real,
 * parse_u64, parse_shape and parse_int_list. Seeds: fuzz/corpus/options/.
 */
#include "fuzz.h"
#include "train_die.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    char *buf = malloc(n + 1);
    memcpy(buf, data, n);
    buf[n] = 0;
    char *argv[65];
    int argc = 0;
    for (size_t at = 0; at <= n && argc < 64;) {
        argv[argc++] = buf + at;
        at += strlen(buf + at) + 1;
    }
    for (int i = 0; i < argc; i++) {
        long long v;
        unsigned long long u;
        double d;
        int sh[8];
        parse_int(argv[i], LLONG_MIN, LLONG_MAX, &v);
        parse_int(argv[i], 1, 4096, &v);
        parse_u64(argv[i], &u);
        parse_real(argv[i], -DBL_MAX, DBL_MAX, &d);
        parse_shape(argv[i], 3, 1, 1 << 14, sh);
        parse_int_list(argv[i], 0, 4096, sh, 8);
        /* --help prints and exits: the one option not fuzzed */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) argv[i] = "";
    }
    argv[argc] = NULL;
    if (setjmp(fuzz_jb) == 0) {
        Opts o;
        parse_opts(&o, argc, argv);
    }
    fuzz_cleanup();
    free(buf);
    return 0;
}
