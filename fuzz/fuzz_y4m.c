/*
 * fuzz/fuzz_y4m.c: the Y4M reader (media_load of a .y4m file: header tags,
 * 4:2:0 and 4:4:4, frame markers, truncation). Seeds: fuzz/corpus/y4m/.
 */
#include "fuzz.h"
#include "../media.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_path("v.y4m");
    fuzz_write(path, data, n);
    Clip c;
    if (media_load(path, 0, &c) == 0) clip_free(&c);
    return 0;
}
