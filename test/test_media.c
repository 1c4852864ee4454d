/*
 * test_media.c: the image and video I/O, geometry, metrics and pictures of
 * media.c. Usage: test/test_media SCRATCH_DIR (created if missing; the
 * files written there are left for inspection, the pictures included).
 *
 * Prints one line per check, "ok" or "FAIL", and exits 1 if any failed.
 *
 * 1. pixel mapping: 8-bit -> [-1, 1] -> 8-bit is the identity for all 256 values
 * 2. PNG and frame-folder round trips: exact on 8-bit values; gray and
 *    RGBA PNG, BMP, JPEG load as RGB
 * 3. Y4M: our writer and reader, 4:4:4 and 4:2:0, within a stated PSNR;
 *    known YCbCr values decode to the right RGB (limited and full range)
 * 4. ffmpeg, when installed: PNGs -> ffmpeg -> .y4m -> media_load, and our
 *    .y4m -> ffmpeg -> PNGs, both within a stated PSNR
 * 5. PSNR and SSIM: identical clips, known perturbations, noise
 * 6. geometry: crop, crop_resize (sizes and known values), cut_frames
 * 7. pictures: side_by_side and plot_curves write PNGs of the expected size
 * 8. bad input: every case gives -1 (or NAN) and a message naming the
 *    problem, never a crash (run the ASan/UBSan build to be sure)
 * 9. media_probe: the shape media_load gives, from the headers alone, on
 *    every kind of input written above (and fuzz/corpus/image, data/ when
 *    the test runs from the repository); refusing what media_load refuses
 *    at the header level; passing a file whose body alone is corrupt
 */
#include "../ivae.h"
#include "../media.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

/* stb's encoders, compiled into media.c (declarations only here), to write
   test images in other formats */
#include <stb/stb_image_write.h>

static int n_fail = 0;
static const char *dir;                 /* the scratch directory */

static void report(int ok, const char *what, const char *fmt, ...) {
    char detail[512] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what, detail[0] ? ": " : "", detail);
    fflush(stdout);
    n_fail += !ok;
}

/* a path inside the scratch directory (one of a few rotating buffers) */
static const char *P(const char *name) {
    static char buf[8][1024];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)size + 1);
    *n = fread(b, 1, (size_t)size, f);
    fclose(f);
    return b;
}

static void rm_rf(const char *path) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) { fprintf(stderr, "cannot remove %s\n", path); exit(2); }
}

static float *px(const Clip *c, int ch, int t, int y, int x) {
    return c->px + ((((size_t)ch * c->T + t) * c->H + y) * c->W + x);
}

/* A synthetic clip on the 8-bit grid: gradients, a rectangle and a disc that
   move with t, and (in channel 0) a ramp that passes through every value. */
static Clip sharp_clip(int T, int H, int W) {
    Clip c;
    if (clip_alloc(&c, T, H, W) != 0) { fprintf(stderr, "%s\n", ivae_error()); exit(2); }
    for (int t = 0; t < T; t++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int v[3];
                v[0] = (y * W + x + 7 * t) % 256;
                v[1] = 255 * x / (W > 1 ? W - 1 : 1);
                v[2] = 255 * y / (H > 1 ? H - 1 : 1);
                if (x >= W / 4 + t && x < W / 2 + t && y >= H / 4 && y < H / 2) { v[0] = 230; v[1] = 40; v[2] = 30; }
                int dx = x - 2 * W / 3, dy = y - 2 * H / 3 + t;
                if (dx * dx + dy * dy < (H * H) / 25) { v[0] = 20; v[1] = 60; v[2] = 220; }
                for (int ch = 0; ch < 3; ch++) *px(&c, ch, t, y, x) = px_from_u8((unsigned char)v[ch]);
            }
    return c;
}

/* A smooth clip (no edges): what 4:2:0 chroma subsampling is made for */
static Clip smooth_clip(int T, int H, int W) {
    Clip c;
    if (clip_alloc(&c, T, H, W) != 0) { fprintf(stderr, "%s\n", ivae_error()); exit(2); }
    for (int t = 0; t < T; t++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double u = (double)x / W, w = (double)y / H;
                double v[3] = { 128 + 100 * sin(2 * M_PI * (u + 0.1 * t)),
                                128 + 90 * cos(2 * M_PI * (w * 0.8 + u * 0.3)),
                                60 + 150 * u * w };
                for (int ch = 0; ch < 3; ch++) *px(&c, ch, t, y, x) = px_from_u8((unsigned char)lround(v[ch]));
            }
    return c;
}

static int clips_equal(const Clip *a, const Clip *b) {
    return a->T == b->T && a->H == b->H && a->W == b->W &&
           memcmp(a->px, b->px, 3 * (size_t)a->T * a->H * a->W * sizeof(float)) == 0;
}

/* a failing call: returned -1 and the message holds every needle */
static void expect_fail(int rc, const char *what, const char *needle1, const char *needle2) {
    const char *e = ivae_error();
    int ok = rc == -1 && strstr(e, needle1) && (!needle2 || strstr(e, needle2));
    report(ok, what, "rc %d, \"%s\"", rc, e);
}

/* ------------------------------------------------------------------------ */

static void test_mapping(void) {
    int bad = 0;
    for (int v = 0; v < 256; v++) bad += px_to_u8(px_from_u8((unsigned char)v)) != v;
    int ends = px_from_u8(0) == -1.0f && px_from_u8(255) == 1.0f && px_to_u8(-3.0f) == 0 && px_to_u8(2.0f) == 255 &&
               px_to_u8(NAN) == 0 && px_to_u8(0.0f) == 128;   /* 127.5 rounds half up */
    report(bad == 0 && ends, "pixel mapping (SPEC 1)", "%d of 256 values change in a round trip; -1 <-> 0, 1 <-> 255, clamping", bad);
}

static void test_png_and_folder(void) {
    Clip a = sharp_clip(1, 48, 64), b = {0};
    int rc = media_save(P("img.png"), &a);
    rc |= media_load(P("img.png"), 0, &b);
    report(rc == 0 && clips_equal(&a, &b), "PNG round trip", "48x64, all 256 values, bit-exact floats");
    clip_free(&b);
    clip_free(&a);

    Clip v = sharp_clip(5, 24, 40), w = {0}, w3 = {0}, first3 = {0};
    rm_rf(P("frames"));
    rc = media_save(P("frames"), &v);
    rc |= media_load(P("frames"), 0, &w);
    report(rc == 0 && clips_equal(&v, &w), "frame folder round trip", "5 frames 24x40 as 0001.png..0005.png, exact");
    rc = media_load(P("frames"), 3, &w3);
    rc |= clip_crop(&v, 0, 0, 24, 40, 0, 3, &first3);
    report(rc == 0 && clips_equal(&w3, &first3), "frame folder, max_frames 3", "T = %d", w3.T);
    /* saving again into the same folder (same frames) is allowed */
    rc = media_save(P("frames"), &v);
    report(rc == 0, "frame folder, saved twice", "%s", rc ? ivae_error() : "overwrites its own frames");
    /* frames numbered without padding sort by number, not by name */
    rm_rf(P("unpadded"));
    mkdir(P("unpadded"), 0777);
    int order[3] = { 2, 10, 1 };    /* written out of order: 2.png, 10.png, 1.png */
    for (int i = 0; i < 3; i++) {
        Clip f = {0};
        clip_crop(&v, 0, 0, 24, 40, order[i] == 1 ? 0 : order[i] == 2 ? 1 : 2, 1, &f);
        char name[64];
        snprintf(name, sizeof name, "unpadded/frame_%d.png", order[i]);
        media_save(P(name), &f);
        clip_free(&f);
    }
    Clip u = {0};
    rc = media_load(P("unpadded"), 0, &u);
    report(rc == 0 && u.T == 3 && clips_equal(&u, &w3), "frame folder sorted by number", "frame_1, frame_2, frame_10");
    clip_free(&u);
    clip_free(&v); clip_free(&w); clip_free(&w3); clip_free(&first3);
}

/* stb's encoders write through a callback: into a FILE here */
static void to_file(void *f, void *data, int size) { fwrite(data, 1, (size_t)size, f); }

static void test_formats(void) {
    /* a gray PNG is replicated to RGB, an RGBA PNG loses its alpha, a BMP
       is exact, a JPEG (quality 95) is close */
    enum { H = 24, W = 32 };
    unsigned char gray[H * W], rgba[H * W * 4], rgb[H * W * 3];
    for (int i = 0; i < H * W; i++) {
        gray[i] = (unsigned char)(i * 7);
        for (int ch = 0; ch < 3; ch++) rgb[3 * i + ch] = rgba[4 * i + ch] = (unsigned char)(i * (ch + 3) + 40 * ch);
        rgba[4 * i + 3] = (unsigned char)(i % 2 ? 0 : 255);      /* half transparent: must be ignored */
    }
    FILE *f = fopen(P("gray.png"), "wb");
    stbi_write_png_to_func(to_file, f, W, H, 1, gray, W);
    fclose(f);
    Clip c = {0};
    int rc = media_load(P("gray.png"), 0, &c), ok = rc == 0 && c.H == H && c.W == W;
    for (int i = 0; ok && i < H * W; i++)
        for (int ch = 0; ch < 3; ch++) ok &= px_to_u8(c.px[ch * H * W + i]) == gray[i];
    report(ok, "gray PNG", "loaded as RGB with R = G = B = the gray value");
    clip_free(&c);
    f = fopen(P("rgba.png"), "wb");
    stbi_write_png_to_func(to_file, f, W, H, 4, rgba, 4 * W);
    fclose(f);
    rc = media_load(P("rgba.png"), 0, &c);
    ok = rc == 0 && c.H == H && c.W == W;
    for (int i = 0; ok && i < H * W; i++)
        for (int ch = 0; ch < 3; ch++) ok &= px_to_u8(c.px[ch * H * W + i]) == rgb[3 * i + ch];
    report(ok, "RGBA PNG", "alpha dropped, RGB exact");
    clip_free(&c);
    f = fopen(P("img.bmp"), "wb");
    stbi_write_bmp_to_func(to_file, f, W, H, 3, rgb);
    fclose(f);
    rc = media_load(P("img.bmp"), 0, &c);
    ok = rc == 0 && c.H == H && c.W == W;
    for (int i = 0; ok && i < H * W; i++)
        for (int ch = 0; ch < 3; ch++) ok &= px_to_u8(c.px[ch * H * W + i]) == rgb[3 * i + ch];
    report(ok, "BMP", "exact");
    clip_free(&c);
    /* JPEG, written by ffmpeg when it is installed (stb's JPEG writer has
       signed-shift overflows that UBSan stops on) */
    Clip s = smooth_clip(1, 48, 64), j = {0};
    if (system("ffmpeg -version > /dev/null 2>&1") == 0) {
        media_save(P("smooth.png"), &s);
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s' -q:v 2 '%s' > /dev/null 2>&1", P("smooth.png"), P("img.jpg"));
        rc = system(cmd);
        rc = rc ? rc : media_load(P("img.jpg"), 0, &j);
        double p = rc == 0 ? clip_psnr(&s, &j) : 0;
        report(rc == 0 && j.H == 48 && j.W == 64 && p > 30, "JPEG (ffmpeg -q:v 2, smooth)", "%.2f dB (> 30)", p);
        clip_free(&j);
    } else {
        printf("skip JPEG decoding check: ffmpeg is not installed\n");
    }
    clip_free(&s);
    /* A JPEG whose Huffman table claims more than 256 codes: Debian's stb
       2.27 would write past its arrays (ASan catches it); media.c refuses
       the file first. The smallest such file: SOI, one DHT segment, EOI. */
    unsigned char bad[64] = { 0xFF, 0xD8, 0xFF, 0xC4, 0x00, 19, 0x00 };
    for (int i = 0; i < 16; i++) bad[7 + i] = 200;          /* 16 counts: 3200 codes */
    bad[23] = 0xFF, bad[24] = 0xD9;
    write_bytes(P("bad_huffman.jpg"), bad, 25);
    expect_fail(media_load(P("bad_huffman.jpg"), 0, &c), "JPEG with a Huffman table of 3200 codes", "bad_huffman.jpg", "Huffman");
}

static void test_y4m(void) {
    /* Our own writer and reader. 4:4:4: only rounding is lost: Y has 220
       levels (16..235) for 256, chroma 225, and the RGB result is rounded
       again, so a value moves by about a level: ~52 dB; we ask 40.
       4:2:0: chroma is averaged over 2x2 blocks and upsampled bilinearly.
       On the smooth clip that loses little (~47 dB; we ask 40). The sharp
       clip's R channel is a sawtooth that jumps by 255 between neighbouring
       pixels: colour detail at the pixel scale, which 4:2:0 cannot hold, so
       only ~21 dB survive (ffmpeg's own PNG -> yuv420p -> PNG gets 20.6 dB
       on it; the ffmpeg section compares the two); we ask 19. */
    Clip a = sharp_clip(5, 32, 48), s = smooth_clip(5, 32, 48), b = {0};
    int rc = media_save_y4m(P("c444.y4m"), &a, 1) | media_load(P("c444.y4m"), 0, &b);
    double p = rc == 0 ? clip_psnr(&a, &b) : 0;
    report(rc == 0 && b.T == 5 && b.H == 32 && b.W == 48 && p > 40, "Y4M 4:4:4 round trip (sharp clip)", "%.2f dB (> 40)", p);
    clip_free(&b);
    rc = media_save_y4m(P("c420.y4m"), &a, 0) | media_load(P("c420.y4m"), 0, &b);
    p = rc == 0 ? clip_psnr(&a, &b) : 0;
    report(rc == 0 && b.T == 5 && p > 19, "Y4M 4:2:0 round trip (sharp clip)", "%.2f dB (> 19: pixel-scale colour detail is lost)", p);
    clip_free(&b);
    rc = media_save(P("s420.y4m"), &s) | media_load(P("s420.y4m"), 0, &b);   /* media_save picks 4:2:0 */
    p = rc == 0 ? clip_psnr(&s, &b) : 0;
    report(rc == 0 && p > 40, "Y4M 4:2:0 round trip (smooth clip)", "%.2f dB (> 40)", p);
    clip_free(&b);
    rc = media_load(P("s420.y4m"), 2, &b);
    report(rc == 0 && b.T == 2, "Y4M max_frames 2", "T = %d", b.T);
    clip_free(&b);
    /* odd sizes: 4:2:0 chroma planes are ceil(W/2) x ceil(H/2) */
    Clip o = smooth_clip(2, 17, 33);
    rc = media_save_y4m(P("odd.y4m"), &o, 0) | media_load(P("odd.y4m"), 0, &b);
    p = rc == 0 ? clip_psnr(&o, &b) : 0;
    report(rc == 0 && b.H == 17 && b.W == 33 && p > 35, "Y4M 4:2:0 odd size 17x33 (smooth)", "%.2f dB (> 35)", p);
    clip_free(&b); clip_free(&o);

    /* known values: a 2x2 4:4:4 frame, limited range. Y 235 = white, Y 16 =
       black, (81, 90, 240) = pure red, (145, 54, 34) = pure green (the
       BT.601 values, rounded) */
    unsigned char frame444[] = {
        'F', 'R', 'A', 'M', 'E', '\n',
        235, 16, 81, 145,           /* Y  */
        128, 128, 90, 54,           /* Cb */
        128, 128, 240, 34,          /* Cr */
    };
    const char *hdr = "YUV4MPEG2 W2 H2 F25:1 Ip A1:1 C444\n";
    unsigned char file[256];
    size_t n = strlen(hdr);
    memcpy(file, hdr, n);
    memcpy(file + n, frame444, sizeof frame444);
    write_bytes(P("known.y4m"), file, n + sizeof frame444);
    rc = media_load(P("known.y4m"), 0, &b);
    int want[4][3] = { { 255, 255, 255 }, { 0, 0, 0 }, { 255, 0, 0 }, { 0, 255, 0 } }, worst = 0;
    for (int i = 0; rc == 0 && i < 4; i++)
        for (int ch = 0; ch < 3; ch++) {
            int d = abs(px_to_u8(b.px[ch * 4 + i]) - want[i][ch]);
            if (d > worst) worst = d;
        }
    report(rc == 0 && worst <= 1, "Y4M known colours, limited range", "white, black, red, green within %d level(s) (<= 1)", worst);
    clip_free(&b);
    /* full range, as the header may say: Y 255 = white, Y 0 = black */
    const char *hdr_full = "YUV4MPEG2 W2 H2 C444 XCOLORRANGE=FULL\n";
    unsigned char frame_full[] = { 'F', 'R', 'A', 'M', 'E', '\n', 255, 0, 128, 128, 128, 128, 128, 128, 128, 128, 128, 128 };
    n = strlen(hdr_full);
    memcpy(file, hdr_full, n);
    memcpy(file + n, frame_full, sizeof frame_full);
    write_bytes(P("full.y4m"), file, n + sizeof frame_full);
    rc = media_load(P("full.y4m"), 0, &b);
    int okf = rc == 0 && px_to_u8(b.px[0]) == 255 && px_to_u8(b.px[1]) == 0 && px_to_u8(b.px[2]) == 128 &&
              px_to_u8(b.px[4 * 1 + 2]) == 128 && px_to_u8(b.px[4 * 2 + 2]) == 128;
    report(okf, "Y4M full range (XCOLORRANGE=FULL)", "Y 255 -> 255, Y 0 -> 0, Y 128 -> gray 128");
    clip_free(&b);
    /* a FRAME line with parameters and no C tag (4:2:0) */
    const char *hdr420 = "YUV4MPEG2 W2 H2 F30000:1001\n";
    unsigned char frame420[] = { 'F', 'R', 'A', 'M', 'E', ' ', 'X', 'a', '=', '1', '\n', 235, 235, 235, 235, 128, 128 };
    n = strlen(hdr420);
    memcpy(file, hdr420, n);
    memcpy(file + n, frame420, sizeof frame420);
    write_bytes(P("params.y4m"), file, n + sizeof frame420);
    rc = media_load(P("params.y4m"), 0, &b);
    report(rc == 0 && b.T == 1 && px_to_u8(b.px[5]) == 255, "Y4M without C tag, FRAME with parameters", "%s", rc ? ivae_error() : "read as 4:2:0");
    clip_free(&b);
    clip_free(&a); clip_free(&s);
}

/* ffmpeg, if installed: a check against an independent implementation */
static int run(const char *cmd) {
    char full[2048];
    snprintf(full, sizeof full, "%s > '%s' 2>&1", cmd, P("ffmpeg.log"));
    return system(full);
}

static void test_ffmpeg(void) {
    if (system("ffmpeg -version > /dev/null 2>&1") != 0) {
        printf("skip ffmpeg checks: ffmpeg is not installed (apt-get install ffmpeg)\n");
        return;
    }
    /* smooth content, 9 frames 48x64, as PNGs */
    Clip s = smooth_clip(9, 48, 64), b = {0};
    rm_rf(P("ff_png"));
    if (media_save(P("ff_png"), &s) != 0) { report(0, "ffmpeg: write PNGs", "%s", ivae_error()); clip_free(&s); return; }
    char cmd[1500];
    /* direction 1: ffmpeg encodes, we decode. Thresholds: 4:4:4 loses only
       ffmpeg's rounding (> 35 dB); 4:2:0 also its chroma filter (> 28 dB on
       smooth content). */
    const char *fmt[2] = { "yuv444p", "yuv420p" };
    const double min_db[2] = { 35, 28 };
    for (int k = 0; k < 2; k++) {
        char out[64];
        snprintf(out, sizeof out, "ff_%s.y4m", fmt[k]);
        snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s/%%04d.png' -pix_fmt %s '%s'", P("ff_png"), fmt[k], P(out));
        int rc = run(cmd);
        if (rc != 0) { report(0, "ffmpeg -> y4m", "ffmpeg failed (see %s)", P("ffmpeg.log")); continue; }
        rc = media_load(P(out), 0, &b);
        double p = rc == 0 ? clip_psnr(&s, &b) : 0;
        char what[96];
        snprintf(what, sizeof what, "PNG -> ffmpeg %s -> media_load", fmt[k]);
        report(rc == 0 && b.T == 9 && p > min_db[k], what, "%s%.2f dB (> %.0f)", rc ? ivae_error() : "", p, min_db[k]);
        clip_free(&b);
    }
    /* direction 2: we encode, ffmpeg decodes to PNGs */
    for (int k = 0; k < 2; k++) {
        char y4m[64], pngdir[64];
        snprintf(y4m, sizeof y4m, "ours_%s.y4m", fmt[k]);
        snprintf(pngdir, sizeof pngdir, "ours_%s_png", fmt[k]);
        rm_rf(P(pngdir));
        mkdir(P(pngdir), 0777);
        int rc = media_save_y4m(P(y4m), &s, k == 0);
        snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s' '%s/%%04d.png'", P(y4m), P(pngdir));
        rc = rc != 0 ? rc : run(cmd);
        if (rc != 0) { report(0, "y4m -> ffmpeg", "failed (see %s): %s", P("ffmpeg.log"), ivae_error()); continue; }
        rc = media_load(P(pngdir), 0, &b);
        double p = rc == 0 ? clip_psnr(&s, &b) : 0;
        char what[96];
        snprintf(what, sizeof what, "media_save_y4m %s -> ffmpeg -> PNG", fmt[k]);
        report(rc == 0 && b.T == 9 && p > min_db[k], what, "%.2f dB (> %.0f)", p, min_db[k]);
        clip_free(&b);
    }
    clip_free(&s);
    /* the sharp clip through 4:2:0: our writer and reader should lose no
       more than ffmpeg does (PNG -> yuv420p -> PNG), within 1.5 dB */
    Clip a = sharp_clip(5, 32, 48);
    rm_rf(P("ff_sharp"));
    rm_rf(P("ff_sharp_back"));
    mkdir(P("ff_sharp_back"), 0777);
    int rc = media_save(P("ff_sharp"), &a);
    snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s/%%04d.png' -pix_fmt yuv420p '%s' && "
             "ffmpeg -nostdin -v error -y -i '%s' '%s/%%04d.png'", P("ff_sharp"), P("ff_sharp.y4m"), P("ff_sharp.y4m"), P("ff_sharp_back"));
    rc = rc ? rc : run(cmd);
    rc = rc ? rc : media_load(P("ff_sharp_back"), 0, &b);
    double p_ff = rc == 0 ? clip_psnr(&a, &b) : 0;
    clip_free(&b);
    rc = rc ? rc : media_save_y4m(P("ours_sharp.y4m"), &a, 0);
    rc = rc ? rc : media_load(P("ours_sharp.y4m"), 0, &b);
    double p_us = rc == 0 ? clip_psnr(&a, &b) : 0;
    report(rc == 0 && p_us > p_ff - 1.5, "4:2:0 sharp clip, ours vs ffmpeg", "%.2f dB vs ffmpeg's %.2f dB", p_us, p_ff);
    clip_free(&b);
    clip_free(&a);
}

/* SSIM the slow, obvious way (Wang et al. 2004, their reference code): for
   every position where the 11x11 window fits, weighted means, variances
   and covariance of the luma under a 2-D Gaussian (sigma 1.5), the SSIM
   formula, then the mean; then the mean over frames. */
static double ssim_direct(const Clip *a, const Clip *b) {
    double w[11][11], ws = 0;
    for (int i = 0; i < 11; i++)
        for (int j = 0; j < 11; j++) ws += w[i][j] = exp(-((i - 5) * (i - 5) + (j - 5) * (j - 5)) / (2 * 1.5 * 1.5));
    const double C1 = 2.55 * 2.55, C2 = 7.65 * 7.65;
    double total = 0;
    for (int t = 0; t < a->T; t++) {
        double sum = 0;
        for (int y = 0; y + 11 <= a->H; y++)
            for (int x = 0; x + 11 <= a->W; x++) {
                double ma = 0, mb = 0, aa = 0, bb = 0, ab = 0;
                for (int i = 0; i < 11; i++)
                    for (int j = 0; j < 11; j++) {
                        double la = 0, lb = 0, k[3] = { 0.299, 0.587, 0.114 };
                        for (int ch = 0; ch < 3; ch++) {
                            la += k[ch] * px_to_u8(*px(a, ch, t, y + i, x + j));
                            lb += k[ch] * px_to_u8(*px(b, ch, t, y + i, x + j));
                        }
                        double g = w[i][j] / ws;
                        ma += g * la; mb += g * lb; aa += g * la * la; bb += g * lb * lb; ab += g * la * lb;
                    }
                double va = aa - ma * ma, vb = bb - mb * mb, cov = ab - ma * mb;
                sum += (2 * ma * mb + C1) * (2 * cov + C2) / ((ma * ma + mb * mb + C1) * (va + vb + C2));
            }
        total += sum / ((a->H - 10) * (a->W - 10));
    }
    return total / a->T;
}

static void test_metrics(void) {
    Clip a = sharp_clip(3, 32, 32), b = {0};
    double p = clip_psnr(&a, &a);
    report(p == 99.0, "PSNR of identical clips", "%.1f", p);
    /* every 8-bit value moved by +2 (values capped at 253 first): MSE = 4 */
    for (size_t i = 0; i < 3 * 3 * 32 * 32; i++)
        if (px_to_u8(a.px[i]) > 253) a.px[i] = px_from_u8(253);
    clip_crop(&a, 0, 0, 32, 32, 0, 3, &b);
    for (size_t i = 0; i < 3 * 3 * 32 * 32; i++) b.px[i] = px_from_u8((unsigned char)(px_to_u8(b.px[i]) + 2));
    p = clip_psnr(&a, &b);
    double want = 10 * log10(255.0 * 255.0 / 4.0);
    report(fabs(p - want) < 1e-9, "PSNR of a +2 shift", "%.6f dB, formula 10 log10(255^2/4) = %.6f", p, want);
    /* one value off by 10 in N = 9216 values: MSE = 100 / N */
    clip_free(&b);
    clip_crop(&a, 0, 0, 32, 32, 0, 3, &b);
    b.px[1234] = px_from_u8((unsigned char)(px_to_u8(b.px[1234]) >= 128 ? px_to_u8(b.px[1234]) - 10 : px_to_u8(b.px[1234]) + 10));
    p = clip_psnr(&a, &b);
    want = 10 * log10(255.0 * 255.0 / (100.0 / 9216.0));
    report(fabs(p - want) < 1e-9, "PSNR of one value off by 10", "%.6f dB, formula %.6f", p, want);
    clip_free(&b);

    double s = clip_ssim(&a, &a);
    report(fabs(s - 1) < 1e-12, "SSIM of identical clips", "%.15f", s);
    /* SSIM falls as noise grows */
    double prev = 1.0;
    int falls = 1;
    char line[256] = "";
    IvaeRng r = { 42 };
    for (int k = 0; k < 3; k++) {
        double sigma = (double[]){ 3, 10, 30 }[k];
        clip_crop(&a, 0, 0, 32, 32, 0, 3, &b);
        for (size_t i = 0; i < 3 * 3 * 32 * 32; i++) {
            double v = px_to_u8(b.px[i]) + sigma * ivae_rng_normal(&r);
            b.px[i] = px_from_u8((unsigned char)(v < 0 ? 0 : v > 255 ? 255 : lround(v)));
        }
        s = clip_ssim(&a, &b);
        falls &= s < prev && s > 0;
        prev = s;
        snprintf(line + strlen(line), sizeof line - strlen(line), "%snoise %.0f: %.4f", k ? ", " : "", sigma, s);
        clip_free(&b);
    }
    report(falls, "SSIM falls with noise", "%s", line);
    /* against the direct 2-D computation, on a noisy pair */
    clip_crop(&a, 0, 0, 32, 32, 0, 3, &b);
    for (size_t i = 0; i < 3 * 3 * 32 * 32; i++) {
        int v = px_to_u8(b.px[i]) + (int)((i * 37) % 21) - 10;          /* a deterministic +-10 pattern */
        b.px[i] = px_from_u8((unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v));
    }
    s = clip_ssim(&a, &b);
    double sd = ssim_direct(&a, &b);
    report(fabs(s - sd) < 1e-9, "SSIM equals the direct 2-D window sum", "%.12f vs %.12f", s, sd);
    clip_free(&b);
    /* known value: constant frames of gray c1 and c2 have no variance, so
       SSIM = (2 c1 c2 + C1) / (c1^2 + c2^2 + C1), C1 = (0.01 * 255)^2 */
    Clip g1 = {0}, g2 = {0};
    clip_alloc(&g1, 2, 16, 20);
    clip_alloc(&g2, 2, 16, 20);
    for (size_t i = 0; i < 3 * 2 * 16 * 20; i++) { g1.px[i] = px_from_u8(100); g2.px[i] = px_from_u8(140); }
    double C1 = 2.55 * 2.55;
    want = (2.0 * 100 * 140 + C1) / (100.0 * 100 + 140.0 * 140 + C1);
    s = clip_ssim(&g1, &g2);
    report(fabs(s - want) < 1e-9, "SSIM of two flat grays (100, 140)", "%.9f, formula %.9f", s, want);
    clip_free(&g1); clip_free(&g2);
    clip_free(&a);
}

static void test_geometry(void) {
    Clip a = sharp_clip(2, 48, 64), b = {0};
    int rc = clip_crop_resize(&a, 32, 32, &b);
    report(rc == 0 && b.T == 2 && b.H == 32 && b.W == 32, "crop_resize 48x64 -> 32x32", "3 x %d x %d x %d", b.T, b.H, b.W);
    clip_free(&b);
    rc = clip_crop_resize(&a, 48, 64, &b);
    report(rc == 0 && clips_equal(&a, &b), "crop_resize to the same size is a copy", "bit-exact");
    clip_free(&b);
    /* scale 1 on the short side: a pure centre crop, 48x64 -> 48x48 = columns 8..55 */
    Clip c = {0};
    rc = clip_crop_resize(&a, 48, 48, &b) | clip_crop(&a, 0, 8, 48, 48, 0, 2, &c);
    report(rc == 0 && clips_equal(&b, &c), "crop_resize 48x64 -> 48x48 is a centre crop", "equals clip_crop columns 8..55");
    clip_free(&b); clip_free(&c);
    rc = clip_crop_resize(&a, 96, 96, &b);
    report(rc == 0 && b.H == 96 && b.W == 96, "crop_resize 48x64 -> 96x96 (enlarge)", "3 x %d x %d x %d", b.T, b.H, b.W);
    clip_free(&b);
    clip_free(&a);

    /* known values, shrinking (area average). A horizontal ramp, value =
       x / 100, 50 x 100 (H x W) -> 25 x 25: scaled to 25 x 50, centre
       columns 12..36; output column o is the mean of input columns 2 (o + 12)
       and 2 (o + 12) + 1, i.e. (2 o + 24.5) / 100. */
    clip_alloc(&a, 1, 50, 100);
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 50; y++)
            for (int x = 0; x < 100; x++) *px(&a, ch, 0, y, x) = x / 100.0f;
    rc = clip_crop_resize(&a, 25, 25, &b);
    double worst = 0;
    for (int ch = 0; rc == 0 && ch < 3; ch++)
        for (int y = 0; y < 25; y++)
            for (int o = 0; o < 25; o++) worst = fmax(worst, fabs(*px(&b, ch, 0, y, o) - (2 * o + 24.5) / 100));
    report(rc == 0 && worst < 1e-6, "crop_resize known values (area, 2:1)", "ramp 50x100 -> 25x25, max error %.2g", worst);
    clip_free(&a); clip_free(&b);
    /* 3 -> 2: output 0 covers input [0, 1.5), output 1 [1.5, 3), so a row
       [p, q, r] becomes [(p + q / 2) / 1.5, (q / 2 + r) / 1.5] */
    clip_alloc(&a, 1, 3, 3);
    float row[3] = { -0.9f, 0.3f, 0.6f };
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 3; x++) *px(&a, ch, 0, y, x) = row[x];
    rc = clip_crop_resize(&a, 2, 2, &b);
    double w0 = (row[0] + row[1] / 2.0) / 1.5, w1 = (row[1] / 2.0 + row[2]) / 1.5;
    worst = 0;
    for (int y = 0; rc == 0 && y < 2; y++)
        worst = fmax(worst, fmax(fabs(*px(&b, 0, 0, y, 0) - w0), fabs(*px(&b, 0, 0, y, 1) - w1)));
    report(rc == 0 && worst < 1e-6, "crop_resize known values (area, 3:2)", "[p, q, r] -> [(p + q/2)/1.5, (q/2 + r)/1.5], max error %.2g", worst);
    clip_free(&a); clip_free(&b);
    /* enlarge: a 1 x 2 row [a, b] to 1 x 4 is bilinear between pixel
       centres: [a, 0.75 a + 0.25 b, 0.25 a + 0.75 b, b] */
    clip_alloc(&a, 1, 1, 2);
    for (int ch = 0; ch < 3; ch++) { *px(&a, ch, 0, 0, 0) = -0.5f; *px(&a, ch, 0, 0, 1) = 0.5f; }
    rc = clip_crop_resize(&a, 2, 4, &b);
    float e[4] = { -0.5f, -0.25f, 0.25f, 0.5f };
    int ok = rc == 0 && b.H == 2 && b.W == 4;
    for (int x = 0; ok && x < 4; x++) ok = *px(&b, 1, 0, 1, x) == e[x];
    report(ok, "crop_resize known values (bilinear)", "[-0.5, 0.5] -> [-0.5, -0.25, 0.25, 0.5]");
    clip_free(&a); clip_free(&b);

    /* crop: a known pixel */
    a = sharp_clip(3, 20, 30);
    rc = clip_crop(&a, 5, 7, 10, 12, 1, 2, &b);
    report(rc == 0 && b.T == 2 && b.H == 10 && b.W == 12 && *px(&b, 2, 1, 3, 4) == *px(&a, 2, 2, 8, 11),
           "clip_crop", "3 x 2 x 10 x 12, pixel (2, 1, 3, 4) = source (2, 2, 8, 11)");
    clip_free(&b);
    clip_free(&a);

    /* cut_frames, factor 4 */
    int Ts[6] = { 1, 4, 7, 9, 16, 17 }, want[6] = { 1, 1, 5, 9, 13, 17 };
    char line[128] = "";
    ok = 1;
    for (int i = 0; i < 6; i++) {
        a = sharp_clip(Ts[i], 8, 8);
        rc = clip_cut_frames(&a, 4, &b);
        ok &= rc == 0 && b.T == want[i] && memcmp(b.px, a.px, 64 * sizeof(float)) == 0 &&
              *px(&b, 2, b.T - 1, 7, 7) == *px(&a, 2, b.T - 1, 7, 7);
        snprintf(line + strlen(line), sizeof line - strlen(line), "%s%d -> %d", i ? ", " : "", Ts[i], b.T);
        clip_free(&a); clip_free(&b);
    }
    report(ok, "clip_cut_frames (factor 4)", "%s", line);
}

static void test_pictures(void) {
    /* a 64x64 original and a "reconstruction": blurred a little and with a
       stripe of errors, so that each panel shows something */
    Clip a = sharp_clip(2, 64, 64), r = {0}, back = {0};
    clip_crop(&a, 0, 0, 64, 64, 0, 2, &r);
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 64; y++)
            for (int x = 1; x < 64; x++) *px(&r, ch, 1, y, x) = 0.5f * (*px(&a, ch, 1, y, x) + *px(&a, ch, 1, y, x - 1));
    for (int x = 0; x < 64; x++) *px(&r, 0, 1, 40, x) = px_from_u8((unsigned char)(px_to_u8(*px(&a, 0, 1, 40, x)) ^ 16));
    int rc = save_side_by_side(P("side_by_side.png"), &a, &r, 1, 4);
    rc = rc ? rc : media_load(P("side_by_side.png"), 0, &back);
    /* 3 panels of 256 + 2 gaps of 2; a label strip of 2 x 9 + 2 x 4 = 26 rows */
    int ok = rc == 0 && back.W == 3 * 256 + 4 && back.H == 26 + 256;
    /* the error panel at row 40: |a - r| x 4 = 64 in red */
    if (ok) ok = px_to_u8(*px(&back, 0, 0, 26 + 40 * 4 + 1, 2 * 258 + 4 * 4 + 1)) == 64;
    report(ok, "save_side_by_side", "%s: %dx%d (want 772x282), error panel = 4 x |difference|", P("side_by_side.png"), back.W, back.H);
    clip_free(&back);
    rc = save_side_by_side(P("side_by_side_auto.png"), &a, &r, 0, 0);
    rc = rc ? rc : media_load(P("side_by_side_auto.png"), 0, &back);
    report(rc == 0 && back.W == 3 * 256 + 4, "save_side_by_side, scale 0 picks 4 for 64 wide", "%dx%d", back.W, back.H);
    clip_free(&back);
    /* small panels: short labels */
    Clip sa = {0}, sr = {0};
    clip_crop(&a, 0, 0, 16, 24, 0, 1, &sa);
    clip_crop(&r, 0, 0, 16, 24, 0, 1, &sr);
    rc = save_side_by_side(P("side_by_side_small.png"), &sa, &sr, 0, 2);
    rc = rc ? rc : media_load(P("side_by_side_small.png"), 0, &back);
    report(rc == 0 && back.W == 3 * 48 + 4, "save_side_by_side, small panels", "%dx%d", back.W, back.H);
    clip_free(&back); clip_free(&sa); clip_free(&sr);
    clip_free(&a); clip_free(&r);

    /* training-like curves: two losses on a log axis, with a NaN gap */
    enum { N = 300 };
    static double x[N], y1[N], y2[N], y3[N];
    for (int i = 0; i < N; i++) {
        x[i] = i * 10;
        y1[i] = 0.2 * exp(-i / 60.0) + 0.004 + 0.002 * sin(i * 0.7);
        y2[i] = 0.15 * exp(-i / 90.0) + 0.008;
        y3[i] = 25 + 10 * (1 - exp(-i / 80.0)) + 0.3 * sin(i * 0.3);
    }
    y2[150] = NAN;
    const double *xs[2] = { x, x }, *ys[2] = { y1, y2 };
    const char *names[2] = { "train rec loss", "eval rec loss" };
    int lens[2] = { N, N };
    rc = plot_curves(P("plot_log.png"), "ivae-s: reconstruction loss", "step", "loss (log)", 2, names, xs, ys, lens, 1);
    rc = rc ? rc : media_load(P("plot_log.png"), 0, &back);
    report(rc == 0 && back.W == 800 && back.H == 500, "plot_curves, log y", "%s: %dx%d", P("plot_log.png"), back.W, back.H);
    clip_free(&back);
    const double *xs1[1] = { x }, *ys1[1] = { y3 };
    const char *names1[1] = { "eval PSNR" };
    int lens1[1] = { N };
    rc = plot_curves(P("plot_lin.png"), "PSNR on held-out clips", "step", "PSNR (dB)", 1, names1, xs1, ys1, lens1, 0);
    rc = rc ? rc : media_load(P("plot_lin.png"), 0, &back);
    report(rc == 0 && back.W == 800 && back.H == 500, "plot_curves, linear y", "%s: %dx%d", P("plot_lin.png"), back.W, back.H);
    clip_free(&back);
    /* degenerate data: no series, one point, all NaN: a plot, no crash */
    double one = 3, nan_ = NAN;
    const double *xo[2] = { &one, &nan_ }, *yo[2] = { &one, &nan_ };
    int lo[2] = { 1, 1 };
    rc = plot_curves(P("plot_empty.png"), NULL, NULL, NULL, 0, NULL, NULL, NULL, NULL, 0);
    rc |= plot_curves(P("plot_point.png"), "one point", "x", "y", 2, NULL, xo, yo, lo, 1);
    report(rc == 0, "plot_curves, degenerate data", "%s", rc ? ivae_error() : "no series; one point and an all-NaN series");
}

static void test_bad_input(void) {
    Clip c = {0};
    /* files that are not what they claim */
    expect_fail(media_load(P("missing.png"), 0, &c), "missing file", "missing.png", "No such file");
    expect_fail(media_load("", 0, &c), "empty path", "empty path", NULL);
    Clip a = sharp_clip(1, 32, 32);
    media_save(P("whole.png"), &a);
    size_t n;
    unsigned char *png = read_bytes(P("whole.png"), &n);
    write_bytes(P("truncated.png"), png, n / 2);
    expect_fail(media_load(P("truncated.png"), 0, &c), "truncated PNG", "truncated.png", "cannot decode");
    free(png);
    write_bytes(P("notes.txt"), "hello, this is text\n", 20);
    expect_fail(media_load(P("notes.txt"), 0, &c), "non-image file", "notes.txt", "cannot decode");
    write_bytes(P("fake.png"), "hello, this is text\n", 20);
    expect_fail(media_load(P("fake.png"), 0, &c), "text named .png", "fake.png", "cannot decode");
    write_bytes(P("empty.png"), "", 0);
    expect_fail(media_load(P("empty.png"), 0, &c), "empty file", "empty.png", NULL);

    /* Y4M headers and frames */
    static unsigned char big[8192];
    struct { const char *name, *header; size_t data; const char *needle; } y[] = {
        { "not_y4m.y4m",   "RIFF1234 W8 H8\n",                      0,   "not a YUV4MPEG2" },
        { "no_w.y4m",      "YUV4MPEG2 H8 F25:1 C420jpeg\n",         102, "no W" },
        { "no_h.y4m",      "YUV4MPEG2 W8 F25:1\n",                  102, "no H" },
        { "zero_w.y4m",    "YUV4MPEG2 W0 H8\n",                     102, "bad width" },
        { "neg_h.y4m",     "YUV4MPEG2 W8 H-8\n",                    102, "bad height" },
        { "text_w.y4m",    "YUV4MPEG2 Wide H8\n",                   102, "bad width" },
        { "huge_w.y4m",    "YUV4MPEG2 W99999999999 H8\n",           102, "bad width" },
        { "c422.y4m",      "YUV4MPEG2 W8 H8 C422\n",                134, "unsupported Y4M colorspace 'C422'" },
        { "c420p10.y4m",   "YUV4MPEG2 W8 H8 C420p10\n",             198, "unsupported Y4M colorspace 'C420p10'" },
        { "mono.y4m",      "YUV4MPEG2 W8 H8 Cmono\n",               70,  "unsupported" },
        { "no_newline.y4m", "YUV4MPEG2 W8 H8",                      0,   "truncated Y4M header" },
        { "header_only.y4m", "YUV4MPEG2 W8 H8 C420\n",              0,   "no frames" },
        { "trunc1.y4m",    "YUV4MPEG2 W8 H8 C420\n",                6 + 50, "frame 1 is truncated" },
        { "trunc2.y4m",    "YUV4MPEG2 W8 H8 C420\n",                2 * 102 + 6 + 60, "frame 3 is truncated" },
        { "trunc2b.y4m",   "YUV4MPEG2 W8 H8 C420\n",                2 * 102 + 3, "frame 3 is truncated" },
        { "badframe.y4m",  "YUV4MPEG2 W8 H8 C420\n",                102, "does not start with a FRAME" },
        { "hugeframe.y4m", "YUV4MPEG2 W16384 H16384 C444\n",        102, "frame 1 is truncated" },
    };
    for (size_t i = 0; i < sizeof y / sizeof y[0]; i++) {
        size_t h = strlen(y[i].header);
        memcpy(big, y[i].header, h);
        /* frames of 8x8 4:2:0 are "FRAME\n" + 96 bytes = 102 */
        for (size_t k = 0; k < y[i].data; k++) big[h + k] = (unsigned char)(k % 102 < 6 ? "FRAME\n"[k % 102] : 128);
        if (!strcmp(y[i].name, "badframe.y4m")) memcpy(big + h, "FRAMX\n", 6);
        write_bytes(P(y[i].name), big, h + y[i].data);
        char what[96];
        snprintf(what, sizeof what, "Y4M %s", y[i].name);
        expect_fail(media_load(P(y[i].name), 0, &c), what, y[i].name, y[i].needle);
    }
    /* a FRAME line that never ends */
    size_t h = strlen("YUV4MPEG2 W8 H8 C420\n");
    memcpy(big, "YUV4MPEG2 W8 H8 C420\n", h);
    memset(big + h, 'F', sizeof big - h);
    write_bytes(P("longline.y4m"), big, sizeof big);
    expect_fail(media_load(P("longline.y4m"), 0, &c), "Y4M endless FRAME line", "longline.y4m", "FRAME");

    /* folders */
    rm_rf(P("empty_dir"));
    mkdir(P("empty_dir"), 0777);
    write_bytes(P("empty_dir/readme.txt"), "not a frame", 11);
    expect_fail(media_load(P("empty_dir"), 0, &c), "folder without frames", "empty_dir", "no image frames");
    rm_rf(P("mixed_dir"));
    mkdir(P("mixed_dir"), 0777);
    Clip small = {0};
    clip_crop(&a, 0, 0, 16, 16, 0, 1, &small);
    media_save(P("mixed_dir/0001.png"), &a);
    media_save(P("mixed_dir/0002.png"), &a);
    media_save(P("mixed_dir/0003.png"), &small);
    media_save(P("mixed_dir/0004.png"), &small);
    expect_fail(media_load(P("mixed_dir"), 0, &c), "frames of two sizes", "mixed_dir/0003.png", "16x16");
    rm_rf(P("dup_dir"));
    mkdir(P("dup_dir"), 0777);
    media_save(P("dup_dir/1.png"), &a);
    media_save(P("dup_dir/0001.png"), &a);
    expect_fail(media_load(P("dup_dir"), 0, &c), "two frames with one number", "dup_dir", "same frame number 1");
    rm_rf(P("nonum_dir"));
    mkdir(P("nonum_dir"), 0777);
    media_save(P("nonum_dir/cover.png"), &a);
    expect_fail(media_load(P("nonum_dir"), 0, &c), "frame without a number", "nonum_dir/cover.png", "no frame number");
    rm_rf(P("badframe_dir"));
    mkdir(P("badframe_dir"), 0777);
    media_save(P("badframe_dir/0001.png"), &a);
    write_bytes(P("badframe_dir/0002.png"), "junk", 4);
    expect_fail(media_load(P("badframe_dir"), 0, &c), "corrupt frame in a folder", "badframe_dir/0002.png", "cannot decode");
    /* saving */
    Clip three = sharp_clip(3, 8, 8), one = {0};
    expect_fail(media_save(P("three.png"), &three), "save 3 frames as .png", "three.png", "one frame");
    expect_fail(media_save(P("out.jpg"), &a), "save as .jpg", "out.jpg", "unsupported output format");
    expect_fail(media_save(P("whole.png/x.png"), &a), "save under a file", "whole.png/x.png", "cannot create");
    expect_fail(media_save(P("whole.png/sub"), &three), "save a folder under a file", "whole.png", "cannot create folder");
    rm_rf(P("stale"));
    media_save(P("stale"), &three);
    clip_crop(&three, 0, 0, 8, 8, 0, 1, &one);
    expect_fail(media_save(P("stale"), &one), "save over more frames", "stale", "0002.png");
    expect_fail(media_save(P("x.png"), &c), "save an empty clip", "x.png", "empty or invalid clip");

    /* geometry and metrics */
    expect_fail(clip_crop(&a, 20, 0, 16, 8, 0, 1, &c), "crop past the bottom", "clip_crop", "rows 20..35");
    expect_fail(clip_crop(&a, 0, 0, 8, 8, 0, 2, &c), "crop past the last frame", "clip_crop", "frames 0..1");
    expect_fail(clip_crop(&a, -1, 0, 8, 8, 0, 1, &c), "crop at -1", "clip_crop", "rows -1..6");
    expect_fail(clip_crop(&a, 0, 0, 8, 2147483647, 0, 1, &c), "crop of INT_MAX columns", "clip_crop", "columns");
    expect_fail(clip_crop_resize(&a, 0, 8, &c), "resize to 0 rows", "clip_crop_resize", "out of range");
    expect_fail(clip_cut_frames(&a, 0, &c), "cut_frames factor 0", "clip_cut_frames", "time factor 0");
    double p = clip_psnr(&a, &three);
    report(isnan(p) && strstr(ivae_error(), "differ in shape"), "PSNR of clips of two shapes", "%g, \"%s\"", p, ivae_error());
    p = clip_ssim(&three, &three);
    report(isnan(p) && strstr(ivae_error(), "smaller than"), "SSIM of 8x8 frames", "%g, \"%s\"", p, ivae_error());
    expect_fail(save_side_by_side(P("sbs.png"), &a, &a, 1, 2), "side_by_side frame 1 of 1", "sbs.png", "frame 1");
    expect_fail(save_side_by_side(P("sbs.png"), &a, &a, 0, 1000), "side_by_side scale 1000", "sbs.png", "too large");
    expect_fail(save_side_by_side(P("sbs.png"), &a, &three, 0, 2), "side_by_side of two shapes", "sbs.png", "differ in shape");
    int len1 = 5;
    expect_fail(plot_curves(P("plot_bad.png"), "t", "x", "y", 1, NULL, NULL, NULL, &len1, 0), "plot without data", "plot_bad.png", "needs xs");
    double big_range[2] = { -1e308, 1e308 };
    const double *bx[1] = { big_range }, *by[1] = { big_range };
    int l2 = 2;
    expect_fail(plot_curves(P("plot_bad.png"), "t", "x", "y", 1, NULL, bx, by, &l2, 0), "plot of +-1e308", "plot_bad.png", "too large");
    expect_fail(plot_curves("/nonexistent-dir/plot.png", "t", "x", "y", 0, NULL, NULL, NULL, NULL, 0), "plot to a missing folder",
                "/nonexistent-dir/plot.png", "cannot create");
    clip_free(&a); clip_free(&small); clip_free(&three); clip_free(&one);
}


/* ------------------------------------------------------------------------ */
/* 9. media_probe against media_load */

static int probe_n = 0, probe_bad = 0;

/* path probed and loaded with max_frames: the same shape, or both refuse */
static void probe_vs_load(const char *path, int max_frames) {
    int T = -1, H = -1, W = -1;
    Clip c = {0};
    int rp = media_probe(path, max_frames, &T, &H, &W);
    char perr[1024];
    snprintf(perr, sizeof perr, "%s", ivae_error());
    int rl = media_load(path, max_frames, &c);
    int ok = rl == 0 ? rp == 0 && T == c.T && H == c.H && W == c.W : 1; /* a load failure: checked by the callers */
    if (rl != 0 && rp != 0) ok = strstr(perr, path) != NULL;             /* both refuse: the probe names the file */
    probe_n++;
    if (!ok) {
        probe_bad++;
        report(0, "media_probe == media_load", "%s max %d: probe %d %dx%dx%d (%s), load %d %dx%dx%d", path, max_frames, rp, T,
               H, W, rp ? perr : "", rl, c.T, c.H, c.W);
    }
    clip_free(&c);
}

static void probe_folder_entries(const char *folder) {
    DIR *d = opendir(folder);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", folder, e->d_name);
        probe_vs_load(path, 0);
        probe_vs_load(path, 1);
    }
    closedir(d);
}

/* the probe must refuse it, naming the file and the problem (as media_load) */
static void probe_refuses(const char *name, const char *needle) {
    int T, H, W;
    Clip c = {0};
    int rp = media_probe(P(name), 0, &T, &H, &W);
    char perr[1024];
    snprintf(perr, sizeof perr, "%s", ivae_error());
    int rl = media_load(P(name), 0, &c);
    clip_free(&c);
    char what[128];
    snprintf(what, sizeof what, "media_probe refuses %s, as media_load does", name);
    report(rp == -1 && rl == -1 && strstr(perr, name) && strstr(perr, needle) && !strchr(perr, '\n'), what, "\"%s\"", perr);
}

static void put_le32(unsigned char *p, uint32_t v) { p[0] = v & 255, p[1] = v >> 8 & 255, p[2] = v >> 16 & 255, p[3] = v >> 24; }

static void test_probe(void) {
    /* more kinds than the sections above wrote: odd sizes, a top-down BMP,
       ffmpeg's 16-bit, gray and palette PNGs and 4:2:0 y4m of odd size */
    Clip o = sharp_clip(1, 17, 33);
    media_save(P("odd.png"), &o);
    clip_free(&o);
    size_t n;
    unsigned char *bmp = read_bytes(P("img.bmp"), &n);
    int32_t h = (int32_t)(bmp[22] | bmp[23] << 8 | bmp[24] << 16 | (uint32_t)bmp[25] << 24);
    put_le32(bmp + 22, (uint32_t)-h);                   /* top-down: the rows stored first to last */
    write_bytes(P("topdown.bmp"), bmp, n);
    free(bmp);
    if (system("ffmpeg -version > /dev/null 2>&1") == 0) {
        const char *fmts[4] = { "rgb48be", "gray", "pal8", "ya8" };
        for (int k = 0; k < 4; k++) {
            char cmd[1500], out[64];
            snprintf(out, sizeof out, "ff_%s.png", fmts[k]);
            snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s' -pix_fmt %s '%s'", P("odd.png"), fmts[k], P(out));
            if (run(cmd) == 0) probe_vs_load(P(out), 0);
            else report(0, "ffmpeg writes a PNG for the probe", "%s", cmd);
        }
        char cmd[1500];
        snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -y -i '%s/%%04d.png' -vf scale=47:29 -pix_fmt yuv420p '%s'",
                 P("ff_png"), P("ff_odd420.y4m"));
        if (run(cmd) == 0) probe_vs_load(P("ff_odd420.y4m"), 0), probe_vs_load(P("ff_odd420.y4m"), 4);
        else report(0, "ffmpeg writes an odd-size y4m for the probe", "%s", cmd);
    }
    /* every file the other sections wrote (good ones: the same shape; bad
       ones: both refuse, the probe naming the file) */
    probe_folder_entries(dir);
    probe_vs_load(P("frames"), 3);
    probe_vs_load(P("s420.y4m"), 2);
    probe_vs_load(P("trunc2.y4m"), 2);                  /* the third frame, truncated, is never reached */
    probe_folder_entries("fuzz/corpus/image");           /* baseline, progressive, 4:2:0, gray JPEGs; BMP; PNG */
    probe_folder_entries("data/train/clips");
    probe_folder_entries("data/train/images");
    probe_folder_entries("data/eval/clips");
    probe_folder_entries("data/eval/images");
    report(probe_bad == 0, "media_probe gives media_load's shape on every input", "%d of %d (file, max_frames) pairs agree",
           probe_n - probe_bad, probe_n);
    int T, H, W;
    int rc = media_probe(P("topdown.bmp"), 0, &T, &H, &W);
    report(rc == 0 && T == 1 && H == 24 && W == 32, "media_probe of a top-down BMP", "%dx%dx%d (stb's header reader keeps "
           "the height's sign)", T, H, W);
    rc = media_probe(P("c420.y4m"), 0, &T, &H, &W);
    report(rc == 0 && T == 5 && H == 32 && W == 48, "media_probe of a y4m counts its frames", "%dx%dx%d", T, H, W);

    /* header-level refusals: the same as media_load's */
    probe_refuses("notes.txt", "cannot decode");
    probe_refuses("empty.png", "cannot decode");
    probe_refuses("bad_huffman.jpg", "Huffman");        /* stb's header reader must never see this table */
    probe_refuses("trunc2.y4m", "frame 3 is truncated");
    probe_refuses("badframe.y4m", "does not start with a FRAME");
    probe_refuses("c422.y4m", "unsupported Y4M colorspace");
    probe_refuses("mixed_dir", "16x16");
    probe_refuses("dup_dir", "same frame number");
    probe_refuses("empty_dir", "no image frames");
    setenv("IVAE_MAX_PIXELS", "500", 1);                /* the pixel limit, from each format's header */
    probe_refuses("img.png", "more than the limit");
    probe_refuses("img.bmp", "more than the limit");
    if (system("ffmpeg -version > /dev/null 2>&1") == 0) probe_refuses("img.jpg", "more than the limit");
    unsetenv("IVAE_MAX_PIXELS");
    /* a corrupt body behind a good header: the probe passes it (that is
       the point: nothing is decoded), media_load refuses it */
    Clip c = {0};
    rc = media_probe(P("truncated.png"), 0, &T, &H, &W);
    int rl = media_load(P("truncated.png"), 0, &c);
    report(rc == 0 && T == 1 && H == 32 && W == 32 && rl == -1, "truncated PNG: the probe reads its header (32x32), the "
           "load refuses its body", "probe %d, load %d", rc, rl);
    clip_free(&c);
    rc = media_probe(P("badframe_dir"), 0, &T, &H, &W);
    report(rc == -1 && strstr(ivae_error(), "badframe_dir/0002.png"), "a folder with a junk frame: refused by its header",
           "\"%s\"", ivae_error());
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    mkdir(dir, 0777);
    clock_t t0 = clock();
    test_mapping();
    test_png_and_folder();
    test_formats();
    test_y4m();
    test_ffmpeg();
    test_metrics();
    test_geometry();
    test_pictures();
    test_bad_input();
    test_probe();
    printf("%s: %d failure%s (%.1f s CPU)\n", n_fail ? "FAIL" : "ALL MEDIA TESTS PASSED", n_fail, n_fail == 1 ? "" : "s",
           (double)(clock() - t0) / CLOCKS_PER_SEC);
    return n_fail ? 1 : 0;
}
