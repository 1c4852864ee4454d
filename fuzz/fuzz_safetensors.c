/*
 * fuzz/fuzz_safetensors.c: the safetensors reader (ivae_st_open, ivae_st_read of
 * every tensor) and the model loader (ivae_load: metadata, config, every
 * parameter) on one file. Seeds: fuzz/corpus/safetensors/.
 */
#include "fuzz.h"
#include "../ivae.h"
#include "../safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_path("f.safetensors");
    fuzz_write(path, data, n);
    IvaeSt *st = ivae_st_open(path);
    if (st) {
        for (int k = 0; k < st->n; k++) {
            const IvaeStTensor *t = &st->t[k];
            if (t->numel > ((size_t)1 << 24)) continue; /* tile-checked already: the file holds them */
            real *buf = malloc((t->numel ? t->numel : 1) * sizeof(real));
            ivae_st_read(st, t, buf);
            free(buf);
        }
        ivae_st_meta(st, "format");
        ivae_st_close(st);
    }
    IvaeModel *m = ivae_load(path);
    if (m) ivae_model_free(m);
    return 0;
}
