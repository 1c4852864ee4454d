/*
 * fuzz/train_die.h: train.c compiled into a harness, its die() turned into
 * a jump back to the harness (the program's die() prints and exits, which
 * libFuzzer would report as a crash). Include once, before the harness.
 *
 *   if (setjmp(fuzz_jb) == 0) { ... train.c's static functions ... }
 *
 * Memory that a dying path had allocated is not freed (the program leaves
 * it to the OS too): these harnesses run with leak detection off.
 */
#include <setjmp.h>
#include <stdarg.h>

static jmp_buf fuzz_jb;
static char fuzz_msg[2048];

#define die fuzz_die
#include "../train.c"
#undef die

void fuzz_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fuzz_msg, sizeof fuzz_msg, fmt, ap);
    va_end(ap);
    longjmp(fuzz_jb, 1);
}

/* the --resume recipe of with_resume_recipe, freed (run_free does it in the program) */
static void fuzz_free_recipe(void) {
    if (g_recipe_argv) {
        for (int k = 0; k < g_recipe_n; k++) free(g_recipe_argv[k]);
        free(g_recipe_argv);
    }
    g_recipe = NULL, g_recipe_argv = NULL, g_recipe_n = 0;
}
