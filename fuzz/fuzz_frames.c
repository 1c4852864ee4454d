/*
 * fuzz/fuzz_frames.c: a folder of numbered frames (media_load of a directory:
 * scanning, number order, one size for all, each frame through the image
 * loader), and media_probe against it (a loaded folder has the probed shape).
 * The input is split at each "\n--FRAME--\n" into up to 4 files,
 * 0001.png, 0002.jpg, 0003.bmp, 0004.png. Seeds: fuzz/corpus/frames/.
 */
#include "fuzz_media.h" /* fuzz.h, media.h, probe_agrees */

static const char SEP[] = "\n--FRAME--\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    static const char *names[4] = {"0001.png", "0002.jpg", "0003.bmp", "0004.png"};
    const char *dir = fuzz_path("frames");
    char path[600];
    mkdir(dir, 0700);
    for (int k = 0; k < 4; k++) snprintf(path, sizeof path, "%s/%s", dir, names[k]), unlink(path);
    size_t at = 0, sl = sizeof SEP - 1;
    for (int k = 0; k < 4 && at <= n; k++) {
        size_t end = at;
        while (end + sl <= n && memcmp(data + end, SEP, sl)) end++;
        if (end + sl > n) end = n;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        fuzz_write(path, data + at, end - at);
        at = end + sl;
    }
    Clip c;
    int T, H, W, prc = media_probe(dir, 0, &T, &H, &W);
    if (media_load(dir, 0, &c) == 0) {
        probe_agrees(prc, T, H, W, &c);
        clip_free(&c);
    }
    return 0;
}
