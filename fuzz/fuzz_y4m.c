/*
 * fuzz/fuzz_y4m.c: the Y4M reader (media_load of a .y4m file: header tags,
 * 4:2:0 and 4:4:4, frame markers, truncation), and media_probe against it (a
 * loaded file has the probed shape). Seeds: fuzz/corpus/y4m/.
 */
#include "fuzz_media.h" /* fuzz.h, media.h, probe_agrees */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_path("v.y4m");
    fuzz_write(path, data, n);
    Clip c;
    int T, H, W, prc = media_probe(path, 0, &T, &H, &W);
    if (media_load(path, 0, &c) == 0) {
        probe_agrees(prc, T, H, W, &c);
        clip_free(&c);
    }
    return 0;
}
