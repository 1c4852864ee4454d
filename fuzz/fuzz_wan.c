/*
 * fuzz/fuzz_wan.c: the Wan 2.1 VAE weight loader (wan_load: both name layouts,
 * every shape, F32/F16/BF16 conversion). Seeds: fuzz/corpus/wan/ (a Wan
 * VAE of width 2, made by fuzz/make_seeds.py).
 */
#include "fuzz.h"
#include "../wan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_path("w.safetensors");
    fuzz_write(path, data, n);
    WanModel *m = wan_load(path);
    if (m) wan_free(m);
    return 0;
}
