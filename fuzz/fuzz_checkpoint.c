/*
 * fuzz/fuzz_checkpoint.c: the resume path of `ivae train --resume CKPT`
 * on a fuzzed checkpoint: the recipe in its metadata read back as options
 * (with_resume_recipe, parse_opts), then load_checkpoint (the model, the
 * step, schedule, RNG, rate scale and history counts, the optimizer moments
 * and guard histories). Everything train_main does before its first step
 * that reads the file. Seeds: fuzz/corpus/checkpoint/ (a tiny checkpoint).
 */
#include "fuzz.h"
#include "train_die.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_path("ckpt.safetensors");
    fuzz_write(path, data, n);
    char *args[] = {"--resume", (char *)path, "--steps", "3"};
    int argc = 4;
    if (setjmp(fuzz_jb) == 0) {
        IvaeModel *m = NULL;
        char **argv = with_resume_recipe(&argc, args);
        Opts o;
        parse_opts(&o, argc, argv);
        TrainState s;
        memset(&s, 0, sizeof s);
        load_checkpoint(path, &m, &s);
        /* what the first steps do with the numbers read back */
        hist_push(&s, 1.0, 1.0, 1.0);
        (void)median(s.loss_hist, s.n_hist);
        (void)lr_at(&o, &s);
        (void)m; /* freed by fuzz_cleanup, as on a path that died */
    }
    fuzz_cleanup();
    return 0;
}
