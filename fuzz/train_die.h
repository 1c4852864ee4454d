/*
 * fuzz/train_die.h: train.c compiled into a harness, its die() turned into
 * a jump back to the harness (the program's die() prints and exits, which
 * libFuzzer would report as a crash). Include once, before the harness.
 *
 *   if (setjmp(fuzz_jb) == 0) { ... train.c's static functions ... }
 *   fuzz_cleanup();
 *
 * What a dying path had opened (the program leaves it to the OS) is tracked
 * here and freed by fuzz_cleanup: the models of ivae_load and the files of
 * ivae_st_open that train.c holds when it dies. So leak detection stays on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include "../ivae.h"
#include "../safetensors.h"

static jmp_buf fuzz_jb;
static char fuzz_msg[2048];

/* the models and files train.c has open, by the wrappers below */
enum { FUZZ_OPEN = 16 };
static IvaeModel *fuzz_models[FUZZ_OPEN];
static IvaeSt *fuzz_files[FUZZ_OPEN];

static void fuzz_track(void **list, void *p, void *q) { /* replace p by q */
    for (int k = 0; k < FUZZ_OPEN; k++)
        if (list[k] == p) { list[k] = q; return; }
}
static IvaeModel *fuzz_ivae_load(const char *path) {
    IvaeModel *m = ivae_load(path);
    if (m) fuzz_track((void **)fuzz_models, NULL, m);
    return m;
}
static IvaeSt *fuzz_st_open(const char *path) {
    IvaeSt *st = ivae_st_open(path);
    if (st) fuzz_track((void **)fuzz_files, NULL, st);
    return st;
}
static void fuzz_st_close(IvaeSt *st) {
    if (st) fuzz_track((void **)fuzz_files, st, NULL);
    ivae_st_close(st);
}

#define die fuzz_die
#define ivae_load fuzz_ivae_load
#define ivae_st_open fuzz_st_open
#define ivae_st_close fuzz_st_close
#include "../train.c"
#undef die
#undef ivae_load
#undef ivae_st_open
#undef ivae_st_close

void fuzz_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fuzz_msg, sizeof fuzz_msg, fmt, ap);
    va_end(ap);
    longjmp(fuzz_jb, 1);
}

/* after a run of the harness, died or not: the --resume recipe of
   with_resume_recipe (run_free frees it in the program), the models and the
   files still open */
static void fuzz_cleanup(void) {
    if (g_recipe_argv) {
        for (int k = 0; k < g_recipe_n; k++) free(g_recipe_argv[k]);
        free(g_recipe_argv);
    }
    g_recipe = NULL, g_recipe_argv = NULL, g_recipe_n = 0;
    for (int k = 0; k < FUZZ_OPEN; k++) {
        if (fuzz_models[k]) ivae_model_free(fuzz_models[k]);
        if (fuzz_files[k]) ivae_st_close(fuzz_files[k]);
        fuzz_models[k] = NULL, fuzz_files[k] = NULL;
    }
}
