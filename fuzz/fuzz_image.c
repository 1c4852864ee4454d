/*
 * fuzz/fuzz_image.c: the image loader (media_load of one file: ivae's screen,
 * then stb_image's PNG, JPEG and BMP decoders), and media_probe against it
 * (a loaded file has the probed shape). Seeds: fuzz/corpus/image/.
 * The same harness is built under MemorySanitizer (make fuzz_msan) where
 * clang supports it: stb is header-only, so everything is instrumented.
 */
#include "fuzz_media.h" /* fuzz.h, media.h, probe_agrees */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_path("i.img");
    fuzz_write(path, data, n);
    Clip c;
    int T, H, W, prc = media_probe(path, 0, &T, &H, &W);
    if (media_load(path, 0, &c) == 0) {
        probe_agrees(prc, T, H, W, &c);
        /* touch every pixel: uninitialised ones would show under MSan */
        double sum = 0;
        for (size_t k = 0; k < (size_t)3 * c.T * c.H * c.W; k++) sum += c.px[k];
        if (sum != sum) abort();
        clip_free(&c);
    }
    return 0;
}
