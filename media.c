/*
 * media.c: image and video input-output, crops, metrics and pictures (media.h).
 *
 * Read it top-down:
 *
 *   1. utilities: the pixel mapping of SPEC 1, clips, errors, paths
 *   2. single images: stb_image in, stb_image_write out
 *   3. folders of numbered frames
 *   4. YUV4MPEG2 (.y4m) video, read and written natively
 *   5. media_load / media_save: dispatch on what the path is
 *   6. geometry: crop, resize, cut to 1 + k * time_factor frames
 *   7. metrics: PSNR and SSIM
 *   8. pictures: a small RGB canvas with text and anti-aliased lines, the
 *      side-by-side comparison and the line plot
 *
 * Pixels: a Clip holds floats in [-1, 1], layout (3, T, H, W), channel-major
 * (the R plane of every frame, then G, then B), W fastest. Files hold 8-bit
 * values v, mapped with x = v / 127.5 - 1 and back with
 * v = round(clamp((x + 1) * 127.5, 0, 255)) (SPEC 1: px_from_u8, px_to_u8).
 *
 * Errors: every function that can fail returns -1 and leaves one line in
 * ivae_error() (ivae.c) naming the file or the function and the problem.
 * Nothing here trusts a file: sizes are checked before anything is
 * allocated or indexed, and a truncated or malformed file is an error, never
 * a crash or a silent partial result. stb_image is the one decoder we do not
 * own; Debian 12's copy (2.27) has known faults on crafted files, which
 * image_screen() refuses before stb sees the file (section 2). (The PNG, BMP, JPEG and Y4M readers were fuzzed under ASan/UBSan
 * with some 30 000 mutated files while this was written.)
 *
 * Determinism: no threads, every sum in a fixed order, doubles for the
 * colour conversions, resampling and metrics.
 */
#include "media.h"
#include "ivae.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>

/* stb, header-only: the implementations are compiled here and nowhere else.
   Only the decoders we document (PNG, JPEG, BMP) are built: the others
   (TGA in particular, which has no signature) would "decode" random files.
   Images larger than MAX_DIM on a side are refused by stb itself. */
#define MAX_DIM 16384
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
/* stb's heap memory zeroed: a corrupt file whose decode leaves some of it
   unwritten (a JPEG scan cut short at a restart interval, coefficients no
   scan reached) then decodes to zeros, never to uninitialised memory.
   calloc's fresh pages cost nothing; the screen (section 2) refuses the
   files it can tell are broken. */
static void *stb_zalloc(size_t n) { return calloc(1, n ? n : 1); }
static void *stb_zrealloc(void *p, size_t old, size_t n) {
    unsigned char *q = realloc(p, n ? n : 1);
    if (q && n > old) memset(q + old, 0, n - old);
    return q;
}
#define STBI_MALLOC(n) stb_zalloc(n)
#define STBI_REALLOC_SIZED(p, old, n) stb_zrealloc(p, old, n)
#define STBI_FREE(p) free(p)
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#define STBI_MAX_DIMENSIONS MAX_DIM
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop

/* ========================================================================== */
/* 1. utilities                                                               */
/* ========================================================================== */

float px_from_u8(unsigned char v) { return (float)v / 127.5f - 1.0f; }

unsigned char px_to_u8(float x) {
    double v = ((double)x + 1.0) * 127.5;
    if (!(v > 0.0)) return 0;           /* also catches NaN */
    if (v >= 255.0) return 255;
    return (unsigned char)round(v);
}

void clip_free(Clip *c) {
    if (!c) return;
    free(c->px);
    c->px = NULL;
    c->T = c->H = c->W = 0;
}

/* number of floats in a (3, T, H, W) clip, or 0 if the size is not positive
   or would overflow */
static size_t clip_numel(int T, int H, int W) {
    if (T <= 0 || H <= 0 || W <= 0) return 0;
    size_t n = (size_t)T * (size_t)H;
    if (n > SIZE_MAX / (size_t)W) return 0;
    n *= (size_t)W;
    if (n > SIZE_MAX / (3 * sizeof(float))) return 0;
    return 3 * n;
}

int clip_alloc(Clip *c, int T, int H, int W) {
    c->T = c->H = c->W = 0;
    c->px = NULL;
    size_t n = clip_numel(T, H, W);
    if (n == 0) {
        ivae_set_error("cannot make a clip of 3 x %d x %d x %d (sizes must be positive and fit in memory)", T, H, W);
        return -1;
    }
    c->px = calloc(n, sizeof(float));
    if (!c->px) {
        ivae_set_error("out of memory for a clip of 3 x %d x %d x %d (%.0f MB)", T, H, W, n * 4.0 / 1e6);
        return -1;
    }
    c->T = T; c->H = H; c->W = W;
    return 0;
}

/* is c a usable clip? (name says who asks, for the message) */
static int clip_check(const Clip *c, const char *name) {
    if (!c || !c->px || clip_numel(c->T, c->H, c->W) == 0) {
        ivae_set_error("%s: empty or invalid clip (3 x %d x %d x %d)", name,
                       c ? c->T : 0, c ? c->H : 0, c ? c->W : 0);
        return -1;
    }
    return 0;
}

/* pixel (ch, t, y, x) of a clip */
static inline float *clip_at(const Clip *c, int ch, int t, int y, int x) {
    return c->px + ((((size_t)ch * c->T + t) * c->H + y) * c->W + x);
}

/* frame t of a clip as 8-bit interleaved RGB, (H, W, 3); malloc'd, NULL
   (with the error set) when out of memory */
static unsigned char *frame_to_rgb8(const Clip *c, int t) {
    size_t HW = (size_t)c->H * c->W;
    unsigned char *rgb = malloc(3 * HW);
    if (!rgb) { ivae_set_error("out of memory for a %d x %d frame", c->W, c->H); return NULL; }
    for (int ch = 0; ch < 3; ch++) {
        const float *plane = clip_at(c, ch, t, 0, 0);
        for (size_t i = 0; i < HW; i++) rgb[3 * i + ch] = px_to_u8(plane[i]);
    }
    return rgb;
}

/* the reverse: 8-bit interleaved RGB (H, W, 3) into frame t */
static void rgb8_to_frame(Clip *c, int t, const unsigned char *rgb) {
    size_t HW = (size_t)c->H * c->W;
    for (int ch = 0; ch < 3; ch++) {
        float *plane = clip_at(c, ch, t, 0, 0);
        for (size_t i = 0; i < HW; i++) plane[i] = px_from_u8(rgb[3 * i + ch]);
    }
}

/* the error message, prefixed with "path: " (for errors raised by helpers
   that do not know the file name) */
static void error_prefix(const char *path) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ivae_error());
    ivae_set_error("%s: %s", path, msg);
}

/* does the file name end in ext (".png"), ignoring case? */
static int has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), e = strlen(ext);
    return n > e && strcasecmp(path + n - e, ext) == 0;
}

/* a copy of text for an error message: at most cap - 1 characters,
   anything but printable ASCII shown as '?' */
static void text_printable(const char *text, char *buf, size_t cap) {
    size_t n = 0;
    for (; text && text[n] && n + 1 < cap; n++) {
        unsigned char ch = (unsigned char)text[n];
        buf[n] = (ch >= 32 && ch < 127) ? (char)ch : '?';
    }
    buf[n] = '\0';
}

static int is_image_name(const char *name) {
    return has_ext(name, ".png") || has_ext(name, ".jpg") || has_ext(name, ".jpeg") || has_ext(name, ".bmp");
}

/* dir + "/" + name, malloc'd */
static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) { ivae_set_error("out of memory"); return NULL; }
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* mkdir -p: creates path and any missing parents */
static int make_dirs(const char *path) {
    char *p = strdup(path);
    if (!p) { ivae_set_error("out of memory"); return -1; }
    for (char *s = p + 1; ; s++) {
        if (*s != '/' && *s != '\0') continue;
        char keep = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            ivae_set_error("%s: cannot create folder (%s)", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = keep;
        if (keep == '\0') break;
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ivae_set_error("%s: exists and is not a folder", path);
        return -1;
    }
    return 0;
}

/* ========================================================================== */
/* 2. single images                                                           */
/* ========================================================================== */

/* --- the screen in front of stb_image ---------------------------------------
   stb_image is not written for hostile files (its authors say so), and
   Debian 12's copy (2.27) has known faults on crafted ones: a JPEG Huffman
   table with more than 256 codes writes past its arrays, 16-bit JPEG
   quantisation tables overflow int in the dequantisation, a JPEG component
   that no scan covers (or a progressive one whose first scan is not its DC
   scan, or a scan whose Huffman or quantisation table no segment defined)
   is decoded from uninitialised memory, a DC coefficient's running sum
   overflows int (see the entropy pre-pass below), a 256th Huffman code of
   9 bits or fewer trips an assert, a PNG whose first IDAT chunk
   is empty hands memcpy a null pointer, a PNG chunk's declared length is
   allocated before it is read, a BMP's palette indices past the palette
   read uninitialised colours, and a small file may declare a huge image.
   So ivae decides itself which decoder stb will pick (by the same
   signatures: the three are told apart by their first byte) and walks that
   format's structure the way stb reads it, refusing these before stb sees
   the file; and the pixel count (IVAE_MAX_PIXELS) is checked before
   anything is allocated. */

/* the largest image (width x height) ivae decodes: IVAE_MAX_PIXELS, or
   DEFAULT_MAX_PIXELS; -1 (error set) if the variable is malformed */
#define DEFAULT_MAX_PIXELS (32LL << 20) /* 33554432: an 8K UHD frame (7680 x 4320) fits */
static long long max_pixels(void) {
    const char *v = getenv("IVAE_MAX_PIXELS");
    long long x;
    if (!v || !*v) return DEFAULT_MAX_PIXELS;
    if (parse_int(v, 1, (long long)MAX_DIM * MAX_DIM, &x) != 0) {
        ivae_set_error("IVAE_MAX_PIXELS='%.40s' is not an integer in [1, %lld]", v, (long long)MAX_DIM * MAX_DIM);
        return -1;
    }
    return x;
}

static int pixels_ok(const char *path, long long w, long long h) {
    long long lim = max_pixels();
    if (lim < 0) return -1;
    if (w > 0 && h > 0 && w > lim / h) { /* w * h > lim, without the product overflowing */
        ivae_set_error("%s: image is %lld x %lld = %.0f pixels, more than the limit of %lld "
                       "(set IVAE_MAX_PIXELS to a larger number to load it)", path, w, h, (double)w * h, lim);
        return -1;
    }
    return 0;
}

static int screen_fail(const char *path, const char *what) {
    ivae_set_error("%s: cannot decode image (%s)", path, what);
    return -1;
}

/* --- the JPEG entropy pre-pass ----------------------------------------------
   stb keeps each component's DC coefficient as a running sum of the
   differences the file codes (an int, reset only at a restart marker) and
   multiplies it by the quantiser, or by 2^Al in a progressive DC scan. A
   small file whose differences keep one sign for many blocks overflows that
   int: undefined behaviour, on a picture that means nothing. No real JPEG
   has a dequantised DC coefficient outside 16 bits (an 8-bit block's is at
   most 1024 + q in magnitude), and stb stores it in a short anyway.

   So the screen decodes the DC coefficient of every block as stb will, and
   refuses the first one beyond 16 bits: the same bit reader (bytes with
   FF 00 unstuffed; zero bits once a marker is met; FF xx seen as a marker
   only when the reader reaches it), the same Huffman decoding (a 9-bit table
   for short codes, maxcode for the rest, the same errors), AC coefficients
   decoded only for the bits they take (with stb's combined table for short
   run/size codes, which skips one of its checks), the same block and MCU
   order and the same restart rule. An AC or refinement scan of a
   progressive file changes no DC sum and is not decoded. Where stb would
   stop with an error the pre-pass stops too and lets stb say it. */

#define JFAST 9                 /* stb's FAST_BITS */
#define JNONE 0xFF              /* no marker seen (stb's STBI__MARKER_none) */

typedef struct {                /* one Huffman table, as stb builds it */
    unsigned char fast[1 << JFAST];   /* index of the code in the top 9 bits, 255: longer */
    unsigned char values[256], size[257];
    uint32_t maxcode[18];       /* past the last code of each length, shifted to 16 bits */
    int delta[17];              /* index minus code, per length */
    int16_t fast_ac[1 << JFAST]; /* AC: value * 256 + run * 16 + bits of code and magnitude, 0: none */
} JHuff;

typedef struct {
    int id, h, v, tq, x, y;
    int coeff_w;                /* a progressive frame's blocks per row of the component (stb's coeff_w) */
    uint64_t *nonzero;          /* progressive: per block, which coefficients (zigzag order) are non-zero */
} JComp;

typedef struct {                /* what stb knows when a scan begins */
    int frame_ok, progressive, nc, mcux, mcuy;
    JComp comp[4];
    JHuff dc[4], ac[4];
    int q0[4];                  /* each quantisation table's DC entry */
    int restart;                /* DRI's interval, 0 for none */
} JState;

typedef struct {                /* stb's entropy bit reader */
    const unsigned char *b;
    size_t n, pos;
    uint32_t buf;
    int bits, nomore, marker;
    int overrun;                /* stb would shift by 32 or more (see jfill) */
    int eob_run;                /* a progressive AC scan's blocks still to skip */
} JBits;

/* counts: the 16 code counts per length; -1 if stb refuses the lengths */
static int jhuff_build(JHuff *h, const int *counts) {
    uint16_t code16[256];
    int k = 0, j;
    for (int i = 0; i < 16; i++)
        for (j = 0; j < counts[i]; j++) h->size[k++] = (unsigned char)(i + 1);
    h->size[k] = 0;
    uint32_t code = 0;
    k = 0;
    for (j = 1; j <= 16; j++) {
        h->delta[j] = k - (int)code;
        if (h->size[k] == j) {
            while (h->size[k] == j) code16[k++] = (uint16_t)code++;
            if (code - 1 >= (1u << j)) return -1;
        }
        h->maxcode[j] = code << (16 - j);
        code <<= 1;
    }
    h->maxcode[j] = 0xffffffffu;
    memset(h->fast, 255, sizeof h->fast);
    for (int i = 0; i < k; i++)
        if (h->size[i] <= JFAST) {
            int c = code16[i] << (JFAST - h->size[i]), m = 1 << (JFAST - h->size[i]);
            for (j = 0; j < m; j++) h->fast[c + j] = (unsigned char)i;
        }
    /* stb's table keeps an index in a byte and takes 255 for "longer than
       9 bits": a 256th code of 9 bits or fewer is then read through the
       long-code path as another symbol, and stb's assert aborts */
    if (k == 256 && h->size[255] <= JFAST) return -2;
    return 0;
}

/* stb's table of short AC codes whose magnitude bits also fit in 9 bits */
static void jhuff_fast_ac(JHuff *h) {
    for (int i = 0; i < (1 << JFAST); i++) {
        int f = h->fast[i];
        h->fast_ac[i] = 0;
        if (f == 255) continue;
        int rs = h->values[f], run = rs >> 4 & 15, mag = rs & 15, len = h->size[f];
        if (!mag || len + mag > JFAST) continue;
        int v = ((i << len) & ((1 << JFAST) - 1)) >> (JFAST - mag);
        if (v < 1 << (mag - 1)) v -= (1 << mag) - 1;
        if (v >= -128 && v <= 127) h->fast_ac[i] = (int16_t)(v * 256 + run * 16 + len + mag);
    }
}

static unsigned jbyte(JBits *r) { return r->pos < r->n ? r->b[r->pos++] : 0; } /* 0 past the end, as stb */

/* stb's refill. Past a marker it adds zero bits; a code that was longer
   than the bits left there (stb's combined AC path and its magnitude reads
   do not check) leaves the count negative, and at -8 or below stb's next
   refill shifts by 32 or more: undefined behaviour, which the pre-pass
   refuses (valid data never runs into its marker inside a code). */
static void jfill(JBits *r) {
    if (r->bits <= -8) { r->overrun = 1; r->bits = 0; }
    do {
        unsigned c = r->nomore ? 0 : jbyte(r);
        if (c == 0xFF) {
            unsigned d = jbyte(r);
            while (d == 0xFF) d = jbyte(r);         /* fill bytes */
            if (d != 0) { r->marker = (int)d; r->nomore = 1; return; }
        }
        if (c) r->buf |= c << (24 - r->bits);       /* c != 0 only before a marker, where bits >= 0 */
        r->bits += 8;
    } while (r->bits <= 24);
}

static void jreset(JBits *r) { r->buf = 0, r->bits = 0, r->nomore = 0, r->marker = JNONE, r->eob_run = 0; }

/* a Huffman symbol, or -1 where stb reports a bad code */
static int jdecode(JBits *r, const JHuff *h) {
    if (r->bits < 16) jfill(r);
    int k = h->fast[r->buf >> (32 - JFAST)];
    if (k < 255) {
        int s = h->size[k];
        if (s > r->bits) return -1;
        r->buf <<= s, r->bits -= s;
        return h->values[k];
    }
    uint32_t top = r->buf >> 16;
    for (k = JFAST + 1; top >= h->maxcode[k]; k++) {}
    if (k == 17) { r->bits -= 16; return -1; }
    if (k > r->bits) return -1;
    long idx = (long)((r->buf >> (32 - k)) & ((1u << k) - 1)) + h->delta[k];
    if (idx < 0 || idx > 255) return -1;            /* not reached: jhuff_build refuses the tables that could */
    r->buf <<= k, r->bits -= k;
    return h->values[idx];
}

/* n bits (1..15) as a signed JPEG magnitude ("receive" and "extend") */
static int jextend(JBits *r, int n) {
    if (r->bits < n) jfill(r);
    int positive = (int)(r->buf >> 31);
    int v = (int)(r->buf >> (32 - n));
    r->buf <<= n, r->bits -= n;
    return positive ? v : v - ((1 << n) - 1);
}

/* n unsigned bits (1..15), and one bit: stb's get_bits and get_bit */
static int jbits(JBits *r, int n) {
    if (r->bits < n) jfill(r);
    int v = (int)(r->buf >> (32 - n));
    r->buf <<= n, r->bits -= n;
    return v;
}
static int jbit(JBits *r) {
    if (r->bits < 1) jfill(r);
    int v = (int)(r->buf >> 31);
    r->buf <<= 1, r->bits -= 1;
    return v;
}

/* a coefficient stored as stb stores it, v * 2^shift in a short: is it non-zero? */
static int jnonzero(int v, int shift) { return ((unsigned)v << shift & 0xFFFFu) != 0; }

static void jset(uint64_t *nz, int k, int on) {   /* stb reads index k > 63 as 63 */
    uint64_t m = 1ull << (k > 63 ? 63 : k);
    *nz = on ? *nz | m : *nz & ~m;
}

/* One block of a progressive AC scan (band ss..se): its first pass, or a
   refinement of bit al. Only the bits it takes and which coefficients are
   non-zero matter here (a refinement reads a correction bit for each
   non-zero one); stb's refinements never make a non-zero coefficient zero.
   1, or 0 where stb stops with an error. */
static int jblock_ac(JBits *r, const JHuff *h, uint64_t *nz, int ss, int se, int ah, int al) {
    if (ah == 0) {                                  /* first pass */
        if (r->eob_run) { r->eob_run--; return 1; }
        int k = ss;
        do {
            if (r->bits < 16) jfill(r);
            int f = h->fast_ac[r->buf >> (32 - JFAST)];
            if (f) {                                /* combined path, as in jblock */
                k += f >> 4 & 15;
                r->buf <<= f & 15, r->bits -= f & 15;
                jset(nz, k, jnonzero(f >> 8, al));
                k++;
            } else {
                int rs = jdecode(r, h);
                if (rs < 0) return 0;
                int s = rs & 15, run = rs >> 4;
                if (s == 0) {
                    if (run < 15) {                 /* end of band, for this and the next 2^run - 1 + bits blocks */
                        r->eob_run = 1 << run;
                        if (run) r->eob_run += jbits(r, run);
                        r->eob_run--;
                        break;
                    }
                    k += 16;
                } else {
                    k += run;
                    jset(nz, k, jnonzero(jextend(r, s), al));
                    k++;
                }
            }
        } while (k <= se);
        return 1;
    }
    if (r->eob_run) {                               /* refinement inside an end-of-band run */
        r->eob_run--;
        for (int k = ss; k <= se; k++)
            if (*nz >> k & 1) jbit(r);
        return 1;
    }
    int k = ss;
    do {
        int rs = jdecode(r, h);
        if (rs < 0) return 0;
        int s = rs & 15, run = rs >> 4;
        if (s == 0) {
            if (run < 15) {
                r->eob_run = (1 << run) - 1;
                if (run) r->eob_run += jbits(r, run);
                run = 64;                           /* to the end of the band */
            }
        } else {
            if (s != 1) return 0;
            jbit(r);                                /* the sign */
        }
        while (k <= se) {
            int at = k++;
            if (*nz >> at & 1) jbit(r);             /* a correction bit */
            else {
                if (run == 0) {
                    if (s) jset(nz, at, 1);         /* a new coefficient of +-2^al */
                    break;
                }
                run--;
            }
        }
    } while (k <= se);
    return 1;
}

/* one block: 1, 0 where stb stops with an error, -1 (error set) if its DC
   coefficient leaves 16 bits */
static int jblock(const char *path, JBits *r, const JState *js, int c, int hd, int ha, int al, int *pred,
                  uint64_t *nz) {
    if (nz) *nz = 0;                                /* a progressive DC scan clears the block first */
    if (r->bits < 16) jfill(r);
    int t = jdecode(r, &js->dc[hd]);
    if (t < 0 || t > 15) return 0;
    int diff = t ? jextend(r, t) : 0;
    long long dc = (long long)*pred + diff, scale = js->progressive ? 1LL << al : js->q0[js->comp[c].tq];
    if (dc < -32767 || dc > 32767 || dc * scale < -32767 || dc * scale > 32767) {
        ivae_set_error("%s: cannot decode image (Corrupt JPEG: a DC coefficient of %lld x %lld, beyond 16 bits: "
                       "its running sum would overflow in the decoder)", path, dc, scale);
        return -1;
    }
    *pred = (int)dc;
    if (js->progressive) return 1;                  /* a DC scan holds nothing else */
    const JHuff *h = &js->ac[ha];
    int k = 1;
    do {
        if (r->bits < 16) jfill(r);
        int f = h->fast_ac[r->buf >> (32 - JFAST)];
        if (f) {                                    /* stb's combined path: no check of the bits left */
            k += f >> 4 & 15;
            r->buf <<= f & 15, r->bits -= f & 15;
            k++;
        } else {
            int rs = jdecode(r, h);
            if (rs < 0) return 0;
            int s = rs & 15;
            if (s == 0) {
                if (rs != 0xF0) break;              /* end of block */
                k += 16;
            } else {
                k += rs >> 4;
                k++;
                jextend(r, s);
            }
        }
    } while (k < 64);
    return 1;
}

static int jpeg_overrun(const char *path) {
    ivae_set_error("%s: cannot decode image (Corrupt JPEG: a code runs past the end of the scan's data, "
                   "where the decoder's bit reader would shift by 32 bits or more)", path);
    return -1;
}

/* every block of one scan whose entropy data starts at b[at], as stb
   decodes it; 0, or -1 (error set) */
static int jpeg_scan_entropy(const char *path, const unsigned char *b, size_t n, size_t at, const JState *js,
                             int ns, const int *order, const int *hd, const int *ha, int ss, int se, int ah, int al) {
    if (!js->frame_ok) return 0;                    /* stb refused the frame header */
    if (js->progressive) {
        if (ss == 0 && ah != 0) return 0;           /* DC refinement: one bit a block, nothing to check */
        if (ss == 0 && se != 0) return 0;           /* stb: "can't merge dc and ac" */
        if (ss > 0 && ns != 1) return 0;            /* stb: the same error for an interleaved AC scan */
    }
    JBits r = {b, n, at, 0, 0, 0, JNONE, 0, 0};
    int pred[4] = {0}, todo = js->restart ? js->restart : 0x7fffffff;
    int c0 = order[0], w0 = (js->comp[c0].x + 7) >> 3;
    long long units;                                /* MCUs of the scan */
    if (ns == 1) units = (long long)w0 * ((js->comp[c0].y + 7) >> 3);
    else units = (long long)js->mcux * js->mcuy;
    for (long long u = 0; u < units; u++) {
        for (int k = 0; k < ns; k++) {
            const JComp *c = &js->comp[order[k]];
            int blocks = ns == 1 ? 1 : c->h * c->v;
            for (int i = 0; i < blocks; i++) {
                uint64_t *nz = NULL;                /* the block's coefficients, in stb's coeff order */
                if (js->progressive) {
                    long long bx = ns == 1 ? u % w0 : u % js->mcux * c->h + i % c->h;
                    long long by = ns == 1 ? u / w0 : u / js->mcux * c->v + i / c->h;
                    nz = c->nonzero + bx + by * c->coeff_w;
                }
                int rc = ss > 0 ? jblock_ac(&r, &js->ac[ha[k]], nz, ss, se, ah, al)
                                : jblock(path, &r, js, order[k], hd[k], ha[k], al, &pred[order[k]], nz);
                if (r.overrun) return jpeg_overrun(path);
                if (rc <= 0) return rc < 0 ? -1 : 0;
            }
        }
        if (--todo <= 0) {                          /* the end of a restart interval */
            if (r.bits < 24) jfill(&r);
            if (r.overrun) return jpeg_overrun(path);
            if (r.marker < 0xD0 || r.marker > 0xD7) return 0;   /* stb ends the scan here */
            jreset(&r);
            pred[0] = pred[1] = pred[2] = pred[3] = 0;
            todo = js->restart ? js->restart : 0x7fffffff;
        }
    }
    return 0;
}

/* the frame header at b[p] (its length field), with every check stb makes:
   js->frame_ok stays 0 if stb refuses it (then no scan is decoded); a
   progressive frame gets its coefficient masks. 0, or -1 (error set) */
static int jpeg_frame(const char *path, JState *js, const unsigned char *b, size_t n, size_t p, size_t L,
                      int progressive) {
#define BYTE(i) ((size_t)(i) < n ? b[i] : 0)
    int hgt = BYTE(p + 3) << 8 | BYTE(p + 4), wid = BYTE(p + 5) << 8 | BYTE(p + 6), nc = BYTE(p + 7);
    int hmax = 1, vmax = 1;
    js->frame_ok = 0;
    if (L < 11 || BYTE(p + 2) != 8 || hgt == 0 || wid == 0 || hgt > MAX_DIM || wid > MAX_DIM) return 0;
    if ((nc != 1 && nc != 3 && nc != 4) || L != 8 + 3 * (size_t)nc) return 0;
    for (int c = 0; c < nc; c++) {
        JComp *k = &js->comp[c];
        k->id = BYTE(p + 8 + 3 * c), k->h = BYTE(p + 9 + 3 * c) >> 4, k->v = BYTE(p + 9 + 3 * c) & 15;
        k->tq = BYTE(p + 10 + 3 * c);
        if (k->h < 1 || k->h > 4 || k->v < 1 || k->v > 4 || k->tq > 3) return 0;
        if (k->h > hmax) hmax = k->h;
        if (k->v > vmax) vmax = k->v;
    }
    for (int c = 0; c < nc; c++) {
        JComp *k = &js->comp[c];
        if (hmax % k->h || vmax % k->v) return 0;
        k->x = (wid * k->h + hmax - 1) / hmax, k->y = (hgt * k->v + vmax - 1) / vmax;
    }
    js->nc = nc, js->progressive = progressive;
    js->mcux = (wid + 8 * hmax - 1) / (8 * hmax), js->mcuy = (hgt + 8 * vmax - 1) / (8 * vmax);
    if (progressive)
        for (int c = 0; c < nc; c++) {
            JComp *k = &js->comp[c];
            k->coeff_w = js->mcux * k->h;
            free(k->nonzero);
            k->nonzero = calloc((size_t)k->coeff_w * js->mcuy * k->v, sizeof *k->nonzero);
            if (!k->nonzero) { ivae_set_error("%s: out of memory", path); return -1; }
        }
    js->frame_ok = 1;
    return 0;
#undef BYTE
}

/* the scan header at b[p] (its length field), with stb's checks, then the
   pre-pass over its entropy data; 0, or -1 (error set) */
static int jpeg_scan(const char *path, const unsigned char *b, size_t n, size_t p, size_t L, const JState *js) {
#define BYTE(i) ((size_t)(i) < n ? b[i] : 0)
    int ns = BYTE(p + 2), order[4], hd[4], ha[4];
    if (!js->frame_ok || ns < 1 || ns > 4 || ns > js->nc || L != 6 + 2 * (size_t)ns) return 0;  /* stb refuses */
    for (int k = 0; k < ns; k++) {
        int c = 0;
        while (c < js->nc && js->comp[c].id != BYTE(p + 3 + 2 * k)) c++;
        hd[k] = BYTE(p + 4 + 2 * k) >> 4, ha[k] = BYTE(p + 4 + 2 * k) & 15, order[k] = c;
        if (c == js->nc || hd[k] > 3 || ha[k] > 3) return 0;
    }
    int ss = BYTE(p + 3 + 2 * ns), se = BYTE(p + 4 + 2 * ns), ah = BYTE(p + 5 + 2 * ns) >> 4, al = BYTE(p + 5 + 2 * ns) & 15;
    if (js->progressive ? ss > 63 || se > 63 || ss > se || ah > 13 || al > 13 : ss != 0 || ah != 0 || al != 0) return 0;
    return jpeg_scan_entropy(path, b, n, p + L, js, ns, order, hd, ha, ss, se, ah, al);
#undef BYTE
}

/* JPEG, walked segment by segment the way stb reads it. Where the walk might
   disagree with stb (a corrupt file) it looks at more places, never fewer.
   b[at] is the D8 of the start-of-image marker. header_only: stop after the
   frame header (SOF), all that stb's header reader reads (media_probe). */
static int jpeg_walk(const char *path, const unsigned char *b, size_t n, size_t at, int header_only, JState *js) {
#define BYTE(i) ((size_t)(i) < n ? b[i] : 0)              /* stb reads 0 past the end */
    size_t p = at + 1;
    int have_sof = 0, progressive = 0, nc = 0, id[4] = {0}, tq[4] = {0}, covered[4] = {0};
    int dc_def[4] = {0}, ac_def[4] = {0}, q_def[4] = {0};  /* the tables defined so far */
    while (p < n) {
        if (b[p] != 0xFF) { p++; continue; }            /* stb skips stray bytes between segments */
        while (p < n && b[p] == 0xFF) p++;              /* fill bytes */
        if (p >= n) break;
        int m = b[p++];
        if (m == 0xD9) break;                           /* EOI: stb stops here */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;   /* markers without a length */
        size_t L = ((size_t)BYTE(p) << 8) | BYTE(p + 1);
        if (m == 0xC4) {                                /* DHT: as stb parses it */
            long left = (long)L - 2;
            size_t q = p + 2;
            while (left > 0) {
                int tc = BYTE(q) >> 4, th = BYTE(q) & 15;
                if (tc > 1 || th > 3) return screen_fail(path, "Corrupt JPEG: bad Huffman table class");
                long count = 0;
                int counts[16];
                for (int i = 0; i < 16; i++) count += counts[i] = BYTE(q + 1 + i);
                if (count > 256) return screen_fail(path, "Corrupt JPEG: a Huffman table with more than 256 codes");
                JHuff *h = tc ? &js->ac[th] : &js->dc[th];
                int built = jhuff_build(h, counts);
                if (built == -1) return screen_fail(path, "Corrupt JPEG: bad Huffman code lengths");
                if (built == -2)
                    return screen_fail(path, "Corrupt JPEG: a Huffman table of 256 codes whose last is 9 bits or "
                                             "shorter (stb's decoder misreads it)");
                for (long i = 0; i < count; i++) h->values[i] = BYTE(q + 17 + i);
                if (tc) jhuff_fast_ac(h);
                (tc ? ac_def : dc_def)[th] = 1;
                q += 17 + (size_t)count;
                left -= 17 + count;
            }
            if (left < 0) return screen_fail(path, "Corrupt JPEG: a Huffman table segment whose length lies");
            p = q;
        } else if (m == 0xDB) {                         /* DQT: 8-bit tables only */
            long left = (long)L - 2;
            size_t q = p + 2;
            while (left > 0) {
                /* JPEG allows 16-bit tables only with 12-bit samples (stb
                   decodes 8-bit ones), and stb's dequantisation overflows
                   int with them */
                if (BYTE(q) >> 4) return screen_fail(path, "Corrupt JPEG: a 16-bit quantisation table in an 8-bit JPEG");
                q_def[BYTE(q) & 3] = 1;
                js->q0[BYTE(q) & 3] = BYTE(q + 1);         /* the DC entry comes first */
                q += 65;
                left -= 65;
            }
            p += L;
        } else if (m == 0xC0 || m == 0xC1 || m == 0xC2) { /* SOF: the frame stb decodes */
            if (have_sof) return screen_fail(path, "Corrupt JPEG: two frame headers");
            have_sof = 1, progressive = m == 0xC2;
            long long hgt = ((long long)BYTE(p + 3) << 8) | BYTE(p + 4), wid = ((long long)BYTE(p + 5) << 8) | BYTE(p + 6);
            nc = BYTE(p + 7);
            if (nc < 1 || nc > 4) return screen_fail(path, "Corrupt JPEG: bad component count");
            for (int c = 0; c < nc; c++) id[c] = BYTE(p + 8 + 3 * c), tq[c] = BYTE(p + 10 + 3 * c) & 3;
            if (pixels_ok(path, wid, hgt) != 0) return -1;
            if (header_only) return 0;
            if (jpeg_frame(path, js, b, n, p, L, progressive) != 0) return -1;
            p += L;
        } else if (m == 0xDA) {                         /* SOS: the components it covers */
            if (!have_sof) return screen_fail(path, "Corrupt JPEG: a scan before the frame header");
            int ns = BYTE(p + 2);
            int ss = BYTE(p + 3 + 2 * ns), ah = BYTE(p + 5 + 2 * ns) >> 4;
            for (int k = 0; k < ns && k < 4; k++)
                for (int c = 0; c < nc; c++)
                    if (id[c] == BYTE(p + 3 + 2 * k)) {
                        /* stb decodes with whatever its tables hold: one that
                           no DHT or DQT defined is uninitialised memory */
                        int td = BYTE(p + 4 + 2 * k) >> 4 & 3, ta = BYTE(p + 4 + 2 * k) & 3;
                        int uses_dc = !progressive || (ss == 0 && ah == 0), uses_ac = !progressive || ss > 0;
                        if ((uses_dc && !dc_def[td]) || (uses_ac && !ac_def[ta]))
                            return screen_fail(path, "Corrupt JPEG: a scan uses a Huffman table that was never defined");
                        if (!q_def[tq[c]])
                            return screen_fail(path, "Corrupt JPEG: a component uses a quantisation table that was never defined");
                        /* a progressive component's first scan must be its
                           DC scan: it is the one that clears the coefficients */
                        if (progressive && !covered[c] && !(ss == 0 && ah == 0))
                            return screen_fail(path, "Corrupt JPEG: a progressive scan before the component's first DC scan");
                        covered[c] = 1;
                    }
            if (jpeg_scan(path, b, n, p, L, js) != 0) return -1;
            p += L;
            /* the entropy-coded data ends at the first FF xx that is not
               stuffing (FF 00), a fill byte (FF FF) or a restart marker */
            while (p + 1 < n && !(b[p] == 0xFF && b[p + 1] != 0x00 && b[p + 1] != 0xFF && (b[p + 1] < 0xD0 || b[p + 1] > 0xD7)))
                p++;
        } else {
            if (m == 0xDD) js->restart = (int)(BYTE(p + 2) << 8 | BYTE(p + 3));   /* DRI */
            p += L;                                     /* any other segment: skip by its length */
        }
    }
    /* stb builds the image from every component's samples: one that no scan
       wrote would be uninitialised memory */
    for (int c = 0; c < nc; c++)
        if (!covered[c]) return screen_fail(path, "Corrupt JPEG: a component that no scan covers");
    return 0;
#undef BYTE
}

/* the walk, with the tables and the coefficient masks it fills for the
   entropy pre-pass (js), freed on every way out */
static int jpeg_screen(const char *path, const unsigned char *b, size_t n, size_t at, int header_only) {
    JState *js = calloc(1, sizeof *js);
    if (!js) { ivae_set_error("%s: out of memory", path); return -1; }
    int rc = jpeg_walk(path, b, n, at, header_only, js);
    for (int c = 0; c < 4; c++) free(js->comp[c].nonzero);
    free(js);
    return rc;
}

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* PNG: the chunks as stb reads them (length, type, data, CRC) */
static int png_screen(const char *path, const unsigned char *b, size_t n) {
    size_t p = 8;
    int idat_bytes = 0;
    while (p + 8 <= n) {
        uint32_t len = be32(b + p);
        const unsigned char *type = b + p + 4;
        if (len > 0x7FFFFFFFu) return screen_fail(path, "Corrupt PNG: a chunk length above 2^31");
        if (!memcmp(type, "IHDR", 4) && p + 16 <= n && pixels_ok(path, be32(b + p + 8), be32(b + p + 12)) != 0) return -1;
        if (!memcmp(type, "IDAT", 4)) {
            /* stb copies an IDAT into a buffer it allocates on the first
               non-empty one: an empty first one is memcpy to NULL */
            if (len == 0 && !idat_bytes) return screen_fail(path, "Corrupt PNG: an empty first IDAT chunk");
            idat_bytes = 1;
        }
        if (!memcmp(type, "IEND", 4)) break;
        /* stb allocates an IDAT's declared length before it reads the bytes:
           89 bytes could ask for 2 GB */
        if ((size_t)len > n - p - 8) return screen_fail(path, "Corrupt PNG: a chunk longer than the rest of the file");
        p += 12 + (size_t)len;
    }
    return 0;
}

/* the screen: 0 if stb may decode the file, else -1 with the error set */
static int image_screen(const char *path, const unsigned char *b, size_t n) {
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n >= 8 && !memcmp(b, png_sig, 8)) return png_screen(path, b, n);
    if (n >= 2 && b[0] == 0xFF) {
        /* stb's JPEG test: FF, then any number of fill bytes FF, then D8 */
        size_t p = 1;
        while (p < n && b[p] == 0xFF) p++;
        if (p < n && b[p] == 0xD8) return jpeg_screen(path, b, n, p, 0);
        return 0;                                       /* no decoder takes it: stb says so */
    }
    if (n >= 26 && b[0] == 'B' && b[1] == 'M') {       /* BMP: the size in its info header */
        uint32_t hsz = b[14] | b[15] << 8 | b[16] << 16 | (uint32_t)b[17] << 24;
        long long w, h;
        if (hsz == 12) w = b[18] | b[19] << 8, h = b[20] | b[21] << 8;
        else {
            w = (int32_t)(b[18] | b[19] << 8 | b[20] << 16 | (uint32_t)b[21] << 24);
            h = (int32_t)(b[22] | b[23] << 8 | b[24] << 16 | (uint32_t)b[25] << 24);
        }
        if (pixels_ok(path, w < 0 ? -w : w, h < 0 ? -h : h) != 0) return -1;
        /* a palette image (1, 4 or 8 bits): stb takes the palette's size from
           the pixel data's offset and fills only that many colours, so an
           index past them would be an uninitialised colour: every index in
           the rows stb reads (uncompressed, from that offset; 0 past the
           end of the file) must be inside the palette */
        /* the bit depth, with 0 for bytes past the end as stb reads them (a
           29-byte file has depth 8 for stb) */
        int bpp = hsz == 12 ? (b[24] | b[25] << 8) : (n > 28 ? b[28] : 0) | (n > 29 ? b[29] << 8 : 0);
        if (bpp == 1 || bpp == 4 || bpp == 8) {
            int32_t offset = (int32_t)(b[10] | b[11] << 8 | b[12] << 16 | (uint32_t)b[13] << 24);
            long long psize = hsz == 12 ? ((long long)offset - 14 - 24) / 3 : ((long long)offset - 14 - (long long)hsz) / 4;
            if (psize < 1) return screen_fail(path, "Corrupt BMP: a palette image without a palette");
            if (bpp == 1 && psize < 2) return screen_fail(path, "Corrupt BMP: a 1-bit image with a 1-colour palette");
            if (bpp > 1 && psize < (1LL << bpp)) {
                long long wid = w < 0 ? -w : w, hgt = h < 0 ? -h : h;
                long long row = bpp == 4 ? (wid + 1) / 2 : wid, pad = (-row) & 3;
                if (wid == 0) hgt = 0; /* stb refuses an empty image; pixels_ok bounds wid * hgt otherwise */
                for (long long y = 0; y < hgt; y++)
                    for (long long x = 0; x < wid; x++) {
                        long long at = (long long)offset + y * (row + pad) + (bpp == 4 ? x / 2 : x);
                        int v = at >= 0 && at < (long long)n ? b[at] : 0;
                        if (bpp == 4) v = x % 2 ? v & 15 : v >> 4;
                        if (v >= psize)
                            return screen_fail(path, "Corrupt BMP: a pixel indexes past the palette");
                    }
            }
        }
        return 0;
    }
    return 0;
}

/* decodes an image file to 8-bit RGB (stb converts gray and drops alpha) */
/* the whole of an image file (f open, at its start; closed here): NULL
   (error set) if it cannot be read or is above stb's 2 GB */
static unsigned char *read_whole(const char *path, FILE *f, size_t *n_out) {
    struct stat st;
    if (fstat(fileno(f), &st) != 0) { ivae_set_error("%s: cannot stat (%s)", path, strerror(errno)); fclose(f); return NULL; }
    if (st.st_size > INT_MAX) { ivae_set_error("%s: image file too large (%lld bytes)", path, (long long)st.st_size); fclose(f); return NULL; }
    size_t n = (size_t)st.st_size;
    unsigned char *bytes = malloc(n ? n : 1);
    if (!bytes) { ivae_set_error("%s: out of memory", path); fclose(f); return NULL; }
    size_t got = fread(bytes, 1, n, f);
    fclose(f);
    if (got != n) { ivae_set_error("%s: read error (%zu of %zu bytes)", path, got, n); free(bytes); return NULL; }
    *n_out = n;
    return bytes;
}

static unsigned char *read_rgb8(const char *path, int *w, int *h) {
    /* the whole file into memory: stb decodes from there, and a JPEG's
       tables can be checked first */
    FILE *f = fopen(path, "rb");
    if (!f) { ivae_set_error("%s: cannot open (%s)", path, strerror(errno)); return NULL; }
    size_t n;
    unsigned char *bytes = read_whole(path, f, &n);
    if (!bytes) return NULL;
    if (image_screen(path, bytes, n) != 0) {
        free(bytes);
        return NULL;
    }
    int n_in_file;
    unsigned char *rgb = stbi_load_from_memory(bytes, (int)n, w, h, &n_in_file, 3);
    free(bytes);
    if (!rgb) {
        const char *why = stbi_failure_reason();
        ivae_set_error("%s: cannot decode image (%s)", path, why ? why : "unknown error");
    }
    return rgb;
}

static int load_image(const char *path, Clip *out) {
    int w, h;
    unsigned char *rgb = read_rgb8(path, &w, &h);
    if (!rgb) return -1;
    if (clip_alloc(out, 1, h, w) != 0) { stbi_image_free(rgb); error_prefix(path); return -1; }
    rgb8_to_frame(out, 0, rgb);
    stbi_image_free(rgb);
    return 0;
}

/* The size read_rgb8 would decode, from the header alone, nothing decoded:
   first the screen's checks of the header (a PNG's first chunk and a BMP's
   info header, read from the file's first 30 bytes, against the pixel
   limit; a JPEG, read whole, walked by jpeg_screen up to its frame header,
   so that stb's header reader, which parses the tables before it, never
   sees one the screen refuses), then stb's own header reader for the format
   stb's decoder picks (its tests, in its order): it refuses what the
   decoder refuses before the pixel data, with the same reason, and gives
   the size the decoder gives. */
static int probe_image(const char *path, int *w, int *h) {
    FILE *f = fopen(path, "rb");
    if (!f) { ivae_set_error("%s: cannot open (%s)", path, strerror(errno)); return -1; }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) { ivae_set_error("%s: cannot stat (%s)", path, strerror(errno)); fclose(f); return -1; }
    if (st.st_size > INT_MAX) { ivae_set_error("%s: image file too large (%lld bytes)", path, (long long)st.st_size); fclose(f); return -1; }
    unsigned char b[30] = {0}, *bytes = NULL;
    size_t n = fread(b, 1, sizeof b, f);
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    int rc = 0;
    if (n >= 8 && !memcmp(b, png_sig, 8)) {           /* png_screen's first chunk */
        if (n >= 16 && be32(b + 8) > 0x7FFFFFFFu) rc = screen_fail(path, "Corrupt PNG: a chunk length above 2^31");
        else if (n >= 24 && !memcmp(b + 12, "IHDR", 4)) rc = pixels_ok(path, be32(b + 16), be32(b + 20));
    } else if (n >= 2 && b[0] == 0xFF) {
        /* a JPEG: the screen's walk up to the frame header (stb's header
           reader parses the tables before it: a bad one must not reach it) */
        size_t len;
        rewind(f);
        bytes = read_whole(path, f, &len);
        f = NULL;
        if (!bytes) return -1;
        size_t p = 1;
        while (p < len && bytes[p] == 0xFF) p++;
        if (p < len && bytes[p] == 0xD8) rc = jpeg_screen(path, bytes, len, p, 1);
        n = len;
    } else if (n >= 26 && b[0] == 'B' && b[1] == 'M') { /* image_screen's BMP size */
        uint32_t hsz = b[14] | b[15] << 8 | b[16] << 16 | (uint32_t)b[17] << 24;
        long long bw, bh;
        if (hsz == 12) bw = b[18] | b[19] << 8, bh = b[20] | b[21] << 8;
        else {
            bw = (int32_t)(b[18] | b[19] << 8 | b[20] << 16 | (uint32_t)b[21] << 24);
            bh = (int32_t)(b[22] | b[23] << 8 | b[24] << 16 | (uint32_t)b[25] << 24);
        }
        rc = pixels_ok(path, bw < 0 ? -bw : bw, bh < 0 ? -bh : bh);
    }
    if (rc != 0) {
        if (f) fclose(f);
        free(bytes);
        return -1;
    }
    stbi__context s;
    if (bytes) stbi__start_mem(&s, bytes, (int)n);
    else {
        rewind(f);
        stbi__start_file(&s, f);
    }
    int comp, ok, bmp = 0;
    if (stbi__jpeg_test(&s)) ok = stbi__jpeg_info(&s, w, h, &comp);
    else if (stbi__png_test(&s)) ok = stbi__png_info(&s, w, h, &comp);
    else if (stbi__bmp_test(&s)) ok = stbi__bmp_info(&s, w, h, &comp), bmp = 1;
    else ok = stbi__err("unknown image type", "Image not of any known type, or corrupt");
    if (f) fclose(f);
    free(bytes);
    if (!ok) {
        const char *why = stbi_failure_reason();
        ivae_set_error("%s: cannot decode image (%s)", path, why ? why : "unknown error");
        return -1;
    }
    if (bmp && *h < 0) *h = -*h;                        /* a top-down BMP: stb's header reader keeps the sign */
    return pixels_ok(path, *w, *h);
}

/* stb_image_write hands us the PNG bytes through this callback, so that a
   failed write (disk full) is noticed rather than ignored */
typedef struct { FILE *f; int failed; } PngSink;

static void png_sink_write(void *ctx, void *data, int size) {
    PngSink *s = ctx;
    if (size > 0 && fwrite(data, 1, (size_t)size, s->f) != (size_t)size) s->failed = 1;
}

static int write_png_rgb8(const char *path, const unsigned char *rgb, int w, int h) {
    FILE *f = fopen(path, "wb");
    if (!f) { ivae_set_error("%s: cannot create (%s)", path, strerror(errno)); return -1; }
    PngSink sink = { f, 0 };
    int ok = stbi_write_png_to_func(png_sink_write, &sink, w, h, 3, rgb, 3 * w);
    if (fclose(f) != 0) sink.failed = 1;
    if (!ok || sink.failed) {
        ivae_set_error("%s: cannot write PNG (%s)", path, ok ? strerror(errno) : "encoder failed");
        remove(path);
        return -1;
    }
    return 0;
}

static int save_png_frame(const char *path, const Clip *c, int t) {
    unsigned char *rgb = frame_to_rgb8(c, t);
    if (!rgb) { error_prefix(path); return -1; }
    int r = write_png_rgb8(path, rgb, c->W, c->H);
    free(rgb);
    return r;
}

/* ========================================================================== */
/* 3. folders of numbered frames                                              */
/* ========================================================================== */

typedef struct {
    char *name;         /* file name inside the folder */
    long long num;      /* the frame number in it */
} FrameFile;

static void frames_free(FrameFile *f, int n) {
    for (int i = 0; i < n; i++) free(f[i].name);
    free(f);
}

/* the number in a frame's file name: the last run of digits before the
   extension ("0007.png" -> 7, "clip2_frame_12.png" -> 12); -1 if none */
static long long frame_number(const char *name) {
    const char *dot = strrchr(name, '.');
    const char *end = dot ? dot : name + strlen(name);
    const char *p = end;
    while (p > name && !isdigit((unsigned char)p[-1])) p--;     /* skip to the last digit */
    if (p == name) return -1;
    const char *last = p;
    while (p > name && isdigit((unsigned char)p[-1])) p--;      /* back to the run's start */
    long long v = 0;
    for (; p < last; p++) {
        if (v > (LLONG_MAX - 9) / 10) return -1;                 /* absurdly long: no number */
        v = v * 10 + (*p - '0');
    }
    return v;
}

static int cmp_frames(const void *a, const void *b) {
    const FrameFile *x = a, *y = b;
    return (x->num > y->num) - (x->num < y->num);
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(((const FrameFile *)a)->name, ((const FrameFile *)b)->name);
}

/* the image files of a folder (regular files named *.png, *.jpg, *.jpeg,
   *.bmp; others and hidden files ignored). numbered = 1: each must carry a
   number, sorted by it, no number twice; numbered = 0: sorted by name. */
static int scan_folder(const char *dir, int numbered, FrameFile **out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) { ivae_set_error("%s: cannot open folder (%s)", dir, strerror(errno)); return -1; }
    FrameFile *f = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !is_image_name(e->d_name)) continue;
        char *full = path_join(dir, e->d_name);
        if (!full) goto fail;
        struct stat st;
        int regular = stat(full, &st) == 0 && S_ISREG(st.st_mode);
        free(full);
        if (!regular) continue;
        long long num = frame_number(e->d_name);
        if (numbered && num < 0) {
            ivae_set_error("%s/%s: an image with no frame number in its name (expected e.g. 0001.png)", dir, e->d_name);
            goto fail;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            FrameFile *g = realloc(f, (size_t)cap * sizeof *f);
            if (!g) { ivae_set_error("out of memory listing %s", dir); goto fail; }
            f = g;
        }
        f[n].name = strdup(e->d_name);
        if (!f[n].name) { ivae_set_error("out of memory listing %s", dir); goto fail; }
        f[n].num = num;
        n++;
    }
    closedir(d);
    d = NULL;
    if (!numbered && n > 0) qsort(f, (size_t)n, sizeof *f, cmp_names);
    if (numbered) {
        if (n > 0) qsort(f, (size_t)n, sizeof *f, cmp_frames);
        for (int i = 1; i < n; i++)
            if (f[i].num == f[i - 1].num) {
                ivae_set_error("%s: %s and %s carry the same frame number %lld", dir, f[i - 1].name, f[i].name, f[i].num);
                goto fail;
            }
    }
    *out = f;
    *n_out = n;
    return 0;
fail:
    if (d) closedir(d);
    frames_free(f, n);
    return -1;
}

/* a folder's numbered frames, at least one; -1 (error set) otherwise */
static int scan_frames(const char *dir, FrameFile **files, int *n) {
    if (scan_folder(dir, 1, files, n) != 0) return -1;
    if (*n == 0) {
        ivae_set_error("%s: folder holds no image frames (.png .jpg .jpeg .bmp)", dir);
        free(*files);
        return -1;
    }
    return 0;
}

static int load_folder(const char *dir, int max_frames, Clip *out) {
    FrameFile *files;
    int n;
    if (scan_frames(dir, &files, &n) != 0) return -1;
    int T = (max_frames > 0 && max_frames < n) ? max_frames : n;
    unsigned char *rgb = NULL;
    char *path = NULL;
    int w0 = 0, h0 = 0;
    for (int t = 0; t < T; t++) {
        path = path_join(dir, files[t].name);
        if (!path) goto fail;
        int w, h;
        rgb = read_rgb8(path, &w, &h);
        if (!rgb) goto fail;
        if (t == 0) {
            w0 = w; h0 = h;
            if (clip_alloc(out, T, h, w) != 0) { error_prefix(dir); goto fail; }
        } else if (w != w0 || h != h0) {
            ivae_set_error("%s: frame is %dx%d, but the first frame %s is %dx%d (all frames must have one size)",
                           path, w, h, files[0].name, w0, h0);
            goto fail;
        }
        rgb8_to_frame(out, t, rgb);
        stbi_image_free(rgb);
        rgb = NULL;
        free(path);
        path = NULL;
    }
    frames_free(files, n);
    return 0;
fail:
    stbi_image_free(rgb);
    free(path);
    frames_free(files, n);
    clip_free(out);
    return -1;
}

/* the shape load_folder gives: the frames' count, every frame's header */
static int probe_folder(const char *dir, int max_frames, int *T, int *H, int *W) {
    FrameFile *files;
    int n;
    if (scan_frames(dir, &files, &n) != 0) return -1;
    int nt = (max_frames > 0 && max_frames < n) ? max_frames : n, w0 = 0, h0 = 0, rc = 0;
    for (int t = 0; t < nt && rc == 0; t++) {
        char *path = path_join(dir, files[t].name);
        int w, h;
        if (!path || probe_image(path, &w, &h) != 0) rc = -1;
        else if (t == 0) {
            w0 = w, h0 = h;
            if (clip_numel(nt, h, w) == 0) {
                ivae_set_error("%s: cannot make a clip of 3 x %d x %d x %d (sizes must be positive and fit in memory)", dir, nt, h, w);
                rc = -1;
            }
        } else if (w != w0 || h != h0) {
            ivae_set_error("%s: frame is %dx%d, but the first frame %s is %dx%d (all frames must have one size)",
                           path, w, h, files[0].name, w0, h0);
            rc = -1;
        }
        free(path);
    }
    frames_free(files, n);
    if (rc == 0) *T = nt, *H = h0, *W = w0;
    return rc;
}

static int save_folder(const char *dir, const Clip *c) {
    if (make_dirs(dir) != 0) return -1;
    /* refuse a folder that holds images other than the ones we are about to
       (over)write: media_load would mix them into the clip */
    FrameFile *files;
    int n;
    if (scan_folder(dir, 0, &files, &n) != 0) return -1;
    for (int i = 0; i < n; i++) {
        long long num = frame_number(files[i].name);
        char expect[32];
        snprintf(expect, sizeof expect, "%04lld.png", num);
        if (num < 1 || num > c->T || strcmp(files[i].name, expect) != 0) {
            ivae_set_error("%s: folder already holds %s, which is not one of this clip's frames 0001.png..%04d.png; "
                           "use a new or empty folder", dir, files[i].name, c->T);
            frames_free(files, n);
            return -1;
        }
    }
    frames_free(files, n);
    for (int t = 0; t < c->T; t++) {
        char name[32];
        snprintf(name, sizeof name, "%04d.png", t + 1);
        char *path = path_join(dir, name);
        if (!path) return -1;
        int r = save_png_frame(path, c, t);
        free(path);
        if (r != 0) return -1;
    }
    return 0;
}

/* ========================================================================== */
/* 4. YUV4MPEG2 video                                                         */
/* ========================================================================== */
/*
 * The format: one text line "YUV4MPEG2 W<width> H<height> F<n>:<d> A<n>:<d>
 * I<p|t|b|m> C<colorspace> X<anything>", then per frame a line "FRAME"
 * (maybe followed by parameters) and the raw planes Y, Cb, Cr, 8 bits each.
 * 4:2:0 chroma planes are ceil(W/2) x ceil(H/2); 4:4:4 ones are W x H.
 *
 * Colours: BT.601 (Kr = 0.299, Kb = 0.114). With R, G, B in [0, 1]:
 *   Y' = Kr R + Kg G + Kb B,  Pb = (B - Y') / (2 (1 - Kb)),  Pr = (R - Y') / (2 (1 - Kr))
 * limited ("TV") range, what ffmpeg writes by default:
 *   Y = 16 + 219 Y',  Cb = 128 + 224 Pb,  Cr = 128 + 224 Pr
 * full ("PC", JPEG) range, only when the header says XCOLORRANGE=FULL:
 *   Y = 255 Y',  Cb = 128 + 255 Pb,  Cr = 128 + 255 Pr
 * 4:2:0 chroma is upsampled bilinearly, from where the tag says each chroma
 * sample sits, in luma pixel coordinates (pixel centres at integers):
 *   420jpeg, 420 (as ffmpeg reads it): centred, (2 cx + 0.5, 2 cy + 0.5)
 *   420mpeg2:                          left,    (2 cx,       2 cy + 0.5)
 *   420paldv:                          top-left (2 cx,       2 cy)
 * (PAL DV really sites Cb and Cr on alternate lines; top-left is ffmpeg's
 * approximation too.) Edges are clamped. Writing averages each 2x2 block,
 * i.e. centred siting, and says C420jpeg.
 * Interlacing (I) and frame rate (F) are read and ignored.
 */

#define KR 0.299
#define KB 0.114
#define KG (1.0 - KR - KB)
#define Y4M_LINE 4096           /* longest header or FRAME line we accept */

typedef struct {
    int W, H;
    int c444;                   /* 1: 4:4:4, 0: 4:2:0 */
    double site_x, site_y;      /* 4:2:0 chroma sample (0, 0) sits at luma (site_x, site_y) */
    int full_range;             /* XCOLORRANGE=FULL */
} Y4mInfo;

static unsigned char clamp_round_u8(double v) {
    if (!(v > 0.0)) return 0;
    if (v >= 255.0) return 255;
    return (unsigned char)round(v);
}

/* one YCbCr sample to 8-bit RGB (Cb, Cr may lie between integers: they
   come from bilinear upsampling) */
static void ycbcr_to_rgb8(int Y, double Cb, double Cr, int full_range, unsigned char rgb[3]) {
    double y, pb, pr;
    if (full_range) { y = Y / 255.0;          pb = (Cb - 128) / 255.0; pr = (Cr - 128) / 255.0; }
    else            { y = (Y - 16) / 219.0;   pb = (Cb - 128) / 224.0; pr = (Cr - 128) / 224.0; }
    double r = y + 2.0 * (1.0 - KR) * pr;
    double b = y + 2.0 * (1.0 - KB) * pb;
    double g = (y - KR * r - KB * b) / KG;
    rgb[0] = clamp_round_u8(255.0 * r);
    rgb[1] = clamp_round_u8(255.0 * g);
    rgb[2] = clamp_round_u8(255.0 * b);
}

/* one 8-bit RGB pixel to limited-range Y, Cb, Cr, not yet rounded (4:2:0
   averages chroma before rounding) */
static void rgb8_to_ycbcr(const unsigned char rgb[3], double *Y, double *Cb, double *Cr) {
    double r = rgb[0] / 255.0, g = rgb[1] / 255.0, b = rgb[2] / 255.0;
    double y = KR * r + KG * g + KB * b;
    *Y = 16.0 + 219.0 * y;
    *Cb = 128.0 + 224.0 * (b - y) / (2.0 * (1.0 - KB));
    *Cr = 128.0 + 224.0 * (r - y) / (2.0 * (1.0 - KR));
}

/* reads a line ending in '\n' into buf (without the '\n', NUL-terminated).
   Returns its length, or -1 at end of file before any byte, -2 when the file
   ends inside the line, -3 when the line is longer than cap - 1 bytes. */
static int read_line(FILE *f, char *buf, int cap) {
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) {
        if (ch == '\n') { buf[n] = '\0'; return n; }
        if (n == cap - 1) { buf[n] = '\0'; return -3; }
        buf[n++] = (char)ch;
    }
    buf[n] = '\0';
    return n == 0 ? -1 : -2;
}

/* a positive integer tag value ("640" of "W640"), 1..MAX_DIM */
static int parse_dim(const char *s, int *v) {
    if (!isdigit((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end != '\0' || x < 1 || x > MAX_DIM) return -1;
    *v = (int)x;
    return 0;
}

/* Bilinear upsampling of one 4:2:0 chroma axis: luma index i reads chroma
   samples i0 and i0 + 1 with weights 1 - f and f. Chroma sample c sits at
   luma coordinate 2 c + site, so luma i is at chroma coordinate
   (i - site) / 2, clamped to the plane. */
typedef struct { int i0, i1; double f; } Tap;

static void chroma_taps(Tap *tap, int n_luma, int n_chroma, double site) {
    for (int i = 0; i < n_luma; i++) {
        double u = (i - site) / 2.0;
        if (u < 0) u = 0;
        if (u > n_chroma - 1) u = n_chroma - 1;
        int i0 = (int)floor(u);
        tap[i].i0 = i0;
        tap[i].i1 = i0 + 1 < n_chroma ? i0 + 1 : i0;
        tap[i].f = u - i0;
    }
}

static double chroma_at(const unsigned char *plane, int cw, Tap tx, Tap ty) {
    const unsigned char *r0 = plane + (size_t)ty.i0 * cw, *r1 = plane + (size_t)ty.i1 * cw;
    double top = (1 - tx.f) * r0[tx.i0] + tx.f * r0[tx.i1];
    double bot = (1 - tx.f) * r1[tx.i0] + tx.f * r1[tx.i1];
    return (1 - ty.f) * top + ty.f * bot;
}

static int y4m_parse_header(const char *path, char *line, Y4mInfo *info) {
    memset(info, 0, sizeof *info);
    info->site_x = info->site_y = 0.5;      /* no C tag: 4:2:0, centred */
    int have_w = 0, have_h = 0;
    char *save = NULL;      /* line starts "YUV4MPEG2": the caller checked */
    for (char *tok = strtok_r(line + 9, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        switch (tok[0]) {
        case 'W':
            if (parse_dim(tok + 1, &info->W) != 0) {
                ivae_set_error("%s: bad width tag '%.32s' in the Y4M header (expected W1..W%d)", path, tok, MAX_DIM);
                return -1;
            }
            have_w = 1;
            break;
        case 'H':
            if (parse_dim(tok + 1, &info->H) != 0) {
                ivae_set_error("%s: bad height tag '%.32s' in the Y4M header (expected H1..H%d)", path, tok, MAX_DIM);
                return -1;
            }
            have_h = 1;
            break;
        case 'C': {
            const char *cs = tok + 1;
            if (!strcmp(cs, "420jpeg") || !strcmp(cs, "420"))
                info->c444 = 0, info->site_x = 0.5, info->site_y = 0.5;
            else if (!strcmp(cs, "420mpeg2"))
                info->c444 = 0, info->site_x = 0.0, info->site_y = 0.5;
            else if (!strcmp(cs, "420paldv"))
                info->c444 = 0, info->site_x = 0.0, info->site_y = 0.0;
            else if (!strcmp(cs, "444"))
                info->c444 = 1;
            else {
                ivae_set_error("%s: unsupported Y4M colorspace '%.32s' (supported: 8-bit C420jpeg, C420paldv, "
                               "C420mpeg2, C420, C444)", path, tok);
                return -1;
            }
            break;
        }
        case 'X':
            if (!strcmp(tok, "XCOLORRANGE=FULL")) info->full_range = 1;
            else if (!strcmp(tok, "XCOLORRANGE=LIMITED")) info->full_range = 0;
            break;              /* other extensions are ignored */
        default:
            break;              /* F (rate), A (aspect), I (interlacing): not needed */
        }
    }
    if (!have_w || !have_h) {
        ivae_set_error("%s: the Y4M header has no %s tag", path, !have_w ? "W (width)" : "H (height)");
        return -1;
    }
    return 0;
}

/* Opens a .y4m file and reads its header, leaving the file at the first
   FRAME line: *frame_bytes is one frame's planes, *n_max the most frames the
   file can hold (each takes "FRAME\n" and the planes at least; >= 1), *size
   the file's size. NULL (error set) where media_load refuses the header.
   line: Y4M_LINE bytes of scratch. */
static FILE *y4m_open(const char *path, char *line, Y4mInfo *info, size_t *frame_bytes, long long *n_max, long long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) { ivae_set_error("%s: cannot open (%s)", path, strerror(errno)); return NULL; }
    int len = read_line(f, line, Y4M_LINE);
    if (len == -1) { ivae_set_error("%s: empty file, not a YUV4MPEG2 video", path); goto fail; }
    if (strncmp(line, "YUV4MPEG2", 9) != 0 || (line[9] != ' ' && line[9] != '\0')) {
        ivae_set_error("%s: not a YUV4MPEG2 file (the first line must start with \"YUV4MPEG2 \")", path);
        goto fail;
    }
    if (len < 0) {
        ivae_set_error("%s: %s", path, len == -3 ? "Y4M header line is too long" : "truncated Y4M header (no end of line)");
        goto fail;
    }
    if (y4m_parse_header(path, line, info) != 0) goto fail;
    const int W = info->W, H = info->H;
    const int cw = info->c444 ? W : (W + 1) / 2, chh = info->c444 ? H : (H + 1) / 2;   /* chroma plane size */
    *frame_bytes = (size_t)W * H + 2 * (size_t)cw * chh;

    /* how many frames can the file hold at most? This bounds the
       allocation by the file's real size, whatever the header claims. */
    struct stat st;
    long pos = ftell(f);
    if (fstat(fileno(f), &st) != 0 || pos < 0) { ivae_set_error("%s: cannot stat (%s)", path, strerror(errno)); goto fail; }
    long long remaining = (long long)st.st_size - pos;
    if (remaining <= 0) { ivae_set_error("%s: the Y4M file holds no frames", path); goto fail; }
    *n_max = remaining / (long long)(*frame_bytes + 6);
    *size = (long long)st.st_size;
    if (*n_max == 0) {
        ivae_set_error("%s: frame 1 is truncated (%lld bytes after the header, a %dx%d %s frame needs %zu)",
                       path, remaining, W, H, info->c444 ? "4:4:4" : "4:2:0", *frame_bytes + 6);
        goto fail;
    }
    return f;
fail:
    fclose(f);
    return NULL;
}

/* reads frame n's (0-based) FRAME line: 1 if a frame follows, 0 at a clean
   end of file, -1 (error set) if the line is not a FRAME line */
static int y4m_frame_line(FILE *f, const char *path, char *line, int n) {
    int len = read_line(f, line, Y4M_LINE);
    if (len == -1) return 0;
    if (len == -2 || len == -3 || strncmp(line, "FRAME", 5) != 0 || (line[5] != '\0' && line[5] != ' ')) {
        if (len == -2 && strncmp(line, "FRAME", strlen(line)) == 0)
            ivae_set_error("%s: frame %d is truncated (the file ends inside its FRAME line)", path, n + 1);
        else {
            char shown[17];
            text_printable(line, shown, sizeof shown);
            ivae_set_error("%s: frame %d does not start with a FRAME line (found '%s')", path, n + 1, shown);
        }
        return -1;
    }
    return 1;
}

/* the shape load_y4m gives, from the header and the FRAME lines (the
   planes are skipped, never read) */
static int probe_y4m(const char *path, int max_frames, int *T, int *H, int *W) {
    char *line = malloc(Y4M_LINE);
    if (!line) { ivae_set_error("out of memory"); return -1; }
    Y4mInfo info;
    size_t frame_bytes;
    long long n_max, size;
    FILE *f = y4m_open(path, line, &info, &frame_bytes, &n_max, &size);
    if (!f) { free(line); return -1; }
    int n = 0, rc = 0;
    for (;;) {
        if (max_frames > 0 && n == max_frames) break;
        int got = y4m_frame_line(f, path, line, n);
        if (got == 0) break;
        if (got < 0) { rc = -1; break; }
        long pos = ftell(f);
        long long left = pos < 0 ? 0 : size - pos;
        if (left < (long long)frame_bytes) {
            ivae_set_error("%s: frame %d is truncated (%zu of %zu bytes)", path, n + 1, (size_t)(left > 0 ? left : 0), frame_bytes);
            rc = -1;
            break;
        }
        if (fseek(f, (long)frame_bytes, SEEK_CUR) != 0) { ivae_set_error("%s: cannot seek (%s)", path, strerror(errno)); rc = -1; break; }
        n++;
    }
    if (rc == 0 && n == 0) { ivae_set_error("%s: the Y4M file holds no frames", path); rc = -1; }
    if (rc == 0 && clip_numel(n, info.H, info.W) == 0) {
        ivae_set_error("%s: cannot make a clip of 3 x %d x %d x %d (sizes must be positive and fit in memory)", path, n, info.H, info.W);
        rc = -1;
    }
    fclose(f);
    free(line);
    if (rc == 0) *T = n, *H = info.H, *W = info.W;
    return rc;
}

static int load_y4m(const char *path, int max_frames, Clip *out) {
    char *line = malloc(Y4M_LINE);
    unsigned char *buf = NULL;
    Tap *up = NULL;
    FILE *f = NULL;
    if (!line) { ivae_set_error("out of memory"); goto fail; }

    /* the header */
    Y4mInfo info;
    size_t frame_bytes;
    long long n_max, size;
    f = y4m_open(path, line, &info, &frame_bytes, &n_max, &size);
    if (!f) goto fail;
    const int W = info.W, H = info.H;
    const int cw = info.c444 ? W : (W + 1) / 2, chh = info.c444 ? H : (H + 1) / 2;   /* chroma plane size */
    const size_t luma = (size_t)W * H, chroma = (size_t)cw * chh;
    if (max_frames > 0 && n_max > max_frames) n_max = max_frames;
    if (n_max > INT32_MAX) n_max = INT32_MAX;
    int T_cap = (int)n_max;
    if (clip_alloc(out, T_cap, H, W) != 0) { error_prefix(path); goto fail; }
    buf = malloc(frame_bytes);
    up = malloc((size_t)(W + H) * sizeof(Tap));
    if (!buf || !up) { ivae_set_error("%s: out of memory for a frame", path); goto fail; }
    /* 4:2:0: where each luma column and row reads its chroma */
    Tap *upx = up, *upy = up + W;
    if (!info.c444) {
        chroma_taps(upx, W, cw, info.site_x);
        chroma_taps(upy, H, chh, info.site_y);
    }

    /* the frames */
    int n = 0;
    for (;;) {
        if (max_frames > 0 && n == max_frames) break;
        int more = y4m_frame_line(f, path, line, n);
        if (more == 0) break;                           /* clean end of file */
        if (more < 0) goto fail;
        size_t got = fread(buf, 1, frame_bytes, f);
        if (got < frame_bytes) {
            ivae_set_error("%s: frame %d is truncated (%zu of %zu bytes)", path, n + 1, got, frame_bytes);
            goto fail;
        }
        if (n >= T_cap) {       /* cannot happen unless the file grew while we read it */
            ivae_set_error("%s: more frames than the file size allows (was it modified while read?)", path);
            goto fail;
        }
        /* YCbCr -> 8-bit RGB -> [-1, 1], pixel by pixel */
        const unsigned char *Yp = buf, *Cbp = buf + luma, *Crp = buf + luma + chroma;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                double cb, cr;
                if (info.c444) {
                    cb = Cbp[(size_t)y * W + x];
                    cr = Crp[(size_t)y * W + x];
                } else {
                    cb = chroma_at(Cbp, cw, upx[x], upy[y]);
                    cr = chroma_at(Crp, cw, upx[x], upy[y]);
                }
                unsigned char rgb[3];
                ycbcr_to_rgb8(Yp[(size_t)y * W + x], cb, cr, info.full_range, rgb);
                for (int ch = 0; ch < 3; ch++) *clip_at(out, ch, n, y, x) = px_from_u8(rgb[ch]);
            }
        n++;
    }
    if (n == 0) { ivae_set_error("%s: the Y4M file holds no frames", path); goto fail; }
    if (n < T_cap) {
        /* fewer frames than room was made for (FRAME lines with parameters):
           move the G and B planes down so the layout is (3, n, H, W) */
        size_t plane = (size_t)n * luma;
        for (int ch = 1; ch < 3; ch++)
            memmove(out->px + ch * plane, out->px + (size_t)ch * T_cap * luma, plane * sizeof(float));
        out->T = n;
        float *shrunk = realloc(out->px, 3 * plane * sizeof(float));
        if (shrunk) out->px = shrunk;
    }
    free(buf);
    free(up);
    free(line);
    fclose(f);
    return 0;
fail:
    free(buf);
    free(up);
    free(line);
    if (f) fclose(f);
    clip_free(out);
    return -1;
}

int media_save_y4m(const char *path, const Clip *c, int chroma444) {
    if (!path) { ivae_set_error("media_save_y4m: no path"); return -1; }
    if (clip_check(c, path) != 0) return -1;
    const int W = c->W, H = c->H;
    const int cw = chroma444 ? W : (W + 1) / 2, chh = chroma444 ? H : (H + 1) / 2;
    const size_t luma = (size_t)W * H, chroma = (size_t)cw * chh;
    unsigned char *planes = malloc(luma + 2 * chroma);
    double *cb = malloc(luma * sizeof(double)), *cr = malloc(luma * sizeof(double));
    unsigned char *rgb = NULL;
    FILE *f = NULL;
    if (!planes || !cb || !cr) { ivae_set_error("%s: out of memory", path); goto fail; }
    f = fopen(path, "wb");
    if (!f) { ivae_set_error("%s: cannot create (%s)", path, strerror(errno)); goto fail; }
    /* the tags ffmpeg writes for yuv420p / yuv444p, plus the colour range */
    fprintf(f, "YUV4MPEG2 W%d H%d F25:1 Ip A1:1 %s XCOLORRANGE=LIMITED\n", W, H,
            chroma444 ? "C444 XYSCSS=444" : "C420jpeg XYSCSS=420JPEG");
    for (int t = 0; t < c->T; t++) {
        rgb = frame_to_rgb8(c, t);
        if (!rgb) { error_prefix(path); goto fail; }
        unsigned char *Yp = planes, *Cbp = planes + luma, *Crp = planes + luma + chroma;
        for (size_t i = 0; i < luma; i++) {
            double Y;
            rgb8_to_ycbcr(rgb + 3 * i, &Y, &cb[i], &cr[i]);
            Yp[i] = clamp_round_u8(Y);
        }
        if (chroma444) {
            for (size_t i = 0; i < luma; i++) { Cbp[i] = clamp_round_u8(cb[i]); Crp[i] = clamp_round_u8(cr[i]); }
        } else {
            /* each chroma sample: the mean over its 2x2 block (fewer at an
               odd edge), i.e. centred siting, as C420jpeg says */
            for (int cy = 0; cy < chh; cy++)
                for (int cx = 0; cx < cw; cx++) {
                    double sb = 0, sr = 0;
                    int k = 0;
                    for (int y = 2 * cy; y < 2 * cy + 2 && y < H; y++)
                        for (int x = 2 * cx; x < 2 * cx + 2 && x < W; x++) {
                            sb += cb[(size_t)y * W + x];
                            sr += cr[(size_t)y * W + x];
                            k++;
                        }
                    Cbp[(size_t)cy * cw + cx] = clamp_round_u8(sb / k);
                    Crp[(size_t)cy * cw + cx] = clamp_round_u8(sr / k);
                }
        }
        free(rgb);
        rgb = NULL;
        if (fputs("FRAME\n", f) == EOF || fwrite(planes, 1, luma + 2 * chroma, f) != luma + 2 * chroma) {
            ivae_set_error("%s: write failed (%s)", path, strerror(errno));
            goto fail;
        }
    }
    if (fclose(f) != 0) { f = NULL; ivae_set_error("%s: write failed (%s)", path, strerror(errno)); remove(path); goto fail; }
    free(planes); free(cb); free(cr);
    return 0;
fail:
    if (f) { fclose(f); remove(path); }
    free(rgb); free(planes); free(cb); free(cr);
    return -1;
}

/* ========================================================================== */
/* 5. load and save: dispatch on what the path is                             */
/* ========================================================================== */

/* does the file start with the Y4M signature? */
static int starts_like_y4m(const char *path) {
    char head[10] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return n == sizeof head && memcmp(head, "YUV4MPEG2 ", 10) == 0;
}

int media_load(const char *path, int max_frames, Clip *out) {
    if (!out) { ivae_set_error("media_load: no output clip"); return -1; }
    out->T = out->H = out->W = 0;
    out->px = NULL;
    if (!path || !*path) { ivae_set_error("media_load: empty path"); return -1; }
    struct stat st;
    if (stat(path, &st) != 0) { ivae_set_error("%s: %s", path, strerror(errno)); return -1; }
    if (S_ISDIR(st.st_mode)) return load_folder(path, max_frames, out);
    if (!S_ISREG(st.st_mode)) { ivae_set_error("%s: not a regular file or a folder", path); return -1; }
    if (has_ext(path, ".y4m") || starts_like_y4m(path)) return load_y4m(path, max_frames, out);
    return load_image(path, out);
}

int media_probe(const char *path, int max_frames, int *T, int *H, int *W) {
    if (!T || !H || !W) { ivae_set_error("media_probe: no output"); return -1; }
    *T = *H = *W = 0;
    if (!path || !*path) { ivae_set_error("media_probe: empty path"); return -1; }
    struct stat st;
    if (stat(path, &st) != 0) { ivae_set_error("%s: %s", path, strerror(errno)); return -1; }
    if (S_ISDIR(st.st_mode)) return probe_folder(path, max_frames, T, H, W);
    if (!S_ISREG(st.st_mode)) { ivae_set_error("%s: not a regular file or a folder", path); return -1; }
    if (has_ext(path, ".y4m") || starts_like_y4m(path)) return probe_y4m(path, max_frames, T, H, W);
    if (probe_image(path, W, H) != 0) return -1;
    *T = 1;
    return 0;
}

int media_save(const char *path, const Clip *c) {
    if (!path || !*path) { ivae_set_error("media_save: empty path"); return -1; }
    if (clip_check(c, path) != 0) return -1;
    if (has_ext(path, ".png")) {
        if (c->T != 1) {
            ivae_set_error("%s: a PNG holds one frame, the clip has %d (save to a folder or a .y4m)", path, c->T);
            return -1;
        }
        return save_png_frame(path, c, 0);
    }
    if (has_ext(path, ".y4m")) return media_save_y4m(path, c, 0);
    if (has_ext(path, ".jpg") || has_ext(path, ".jpeg") || has_ext(path, ".bmp") || has_ext(path, ".gif")) {
        ivae_set_error("%s: unsupported output format (write .png, .y4m or a folder)", path);
        return -1;
    }
    return save_folder(path, c);
}

/* ========================================================================== */
/* 6. geometry                                                                */
/* ========================================================================== */

/* Resampling weights along one axis. The input (n_in samples) is thought of
   as scaled to n_scaled samples, of which the outputs are samples
   off .. off + n_out - 1 (a centre crop). Output o is
       sum_{k < count[o]} w[o * max_taps + k] * in[first[o] + k].
   Shrinking (n_scaled < n_in): the mean of the input samples that output's
   footprint [a, b) covers, each weighted by its overlap (area averaging).
   Enlarging or same size: bilinear between the two nearest input centres
   (pixel centres at i + 0.5, clamped at the edges); at scale 1 the weights
   are exactly 1 and 0, a copy. */
static void axis_weights(int n_in, int n_scaled, int off, int n_out, int max_taps,
                         int *first, int *count, double *w) {
    for (int o = 0; o < n_out; o++) {
        double *wo = w + (size_t)o * max_taps;
        int so = o + off;                               /* index on the scaled axis */
        if (n_scaled >= n_in) {
            double src = (so + 0.5) * n_in / (double)n_scaled - 0.5;   /* input coordinate */
            if (src < 0) src = 0;
            if (src > n_in - 1) src = n_in - 1;
            int i0 = (int)floor(src);
            if (n_in == 1) { first[o] = 0; count[o] = 1; wo[0] = 1.0; continue; }
            if (i0 > n_in - 2) i0 = n_in - 2;
            double frac = src - i0;
            first[o] = i0; count[o] = 2;
            wo[0] = 1.0 - frac; wo[1] = frac;
        } else {
            double a = (double)so * n_in / n_scaled, b = (double)(so + 1) * n_in / n_scaled;
            int i0 = (int)floor(a), i1 = (int)ceil(b) - 1;
            if (i1 > n_in - 1) i1 = n_in - 1;
            if (i1 - i0 + 1 > max_taps) i1 = i0 + max_taps - 1;   /* cannot happen; keeps us in bounds */
            first[o] = i0; count[o] = i1 - i0 + 1;
            for (int i = i0; i <= i1; i++) {
                double lo = a > i ? a : i, hi = b < i + 1 ? b : i + 1;
                wo[i - i0] = (hi - lo) / (b - a);
            }
        }
    }
}

int clip_crop_resize(const Clip *in, int H, int W, Clip *out) {
    if (out) { out->T = out->H = out->W = 0; out->px = NULL; }
    if (!out || clip_check(in, "clip_crop_resize") != 0) return -1;
    if (H <= 0 || W <= 0 || H > MAX_DIM || W > MAX_DIM) {
        ivae_set_error("clip_crop_resize: target %dx%d out of range 1..%d", W, H, MAX_DIM);
        return -1;
    }
    const int h = in->H, w = in->W;
    /* scaled size: the side that is shorter relative to the target fits it
       exactly, the other keeps the aspect ratio (rounded, at least the target) */
    long long hs, ws;
    if ((long long)H * w >= (long long)W * h) {         /* H / h >= W / w: the height fits */
        hs = H;
        ws = ((long long)w * H * 2 + h) / (2LL * h);    /* round(w * H / h) */
        if (ws < W) ws = W;
    } else {
        ws = W;
        hs = ((long long)h * W * 2 + w) / (2LL * w);
        if (hs < H) hs = H;
    }
    if (hs > INT_MAX || ws > INT_MAX) {
        ivae_set_error("clip_crop_resize: a %dx%d clip scaled to cover %dx%d would be %lldx%lld", w, h, W, H, ws, hs);
        return -1;
    }
    const int oy = (int)((hs - H) / 2), ox = (int)((ws - W) / 2);   /* centre crop offsets */
    const int ty = (hs < h ? (int)(h / hs) : 0) + 3, tx = (ws < w ? (int)(w / ws) : 0) + 3;   /* taps bound */

    int *fy = malloc(H * sizeof(int)), *ny = malloc(H * sizeof(int));
    int *fx = malloc(W * sizeof(int)), *nx = malloc(W * sizeof(int));
    double *wy = malloc((size_t)H * ty * sizeof(double)), *wx = malloc((size_t)W * tx * sizeof(double));
    const int P = 3 * in->T;                            /* planes: channel x frame */
    float *tmp = malloc((size_t)P * H * w * sizeof(float));     /* after the vertical pass */
    if (!fy || !ny || !fx || !nx || !wy || !wx || !tmp || clip_alloc(out, in->T, H, W) != 0) {
        ivae_set_error("clip_crop_resize: out of memory");
        clip_free(out);
        free(fy); free(ny); free(fx); free(nx); free(wy); free(wx); free(tmp);
        return -1;
    }
    axis_weights(h, (int)hs, oy, H, ty, fy, ny, wy);
    axis_weights(w, (int)ws, ox, W, tx, fx, nx, wx);

    /* vertical pass: (P, h, w) -> (P, H, w) */
    for (int p = 0; p < P; p++)
        for (int o = 0; o < H; o++)
            for (int x = 0; x < w; x++) {
                double s = 0;
                for (int k = 0; k < ny[o]; k++)
                    s += wy[(size_t)o * ty + k] * in->px[((size_t)p * h + fy[o] + k) * w + x];
                tmp[((size_t)p * H + o) * w + x] = (float)s;
            }
    /* horizontal pass: (P, H, w) -> (P, H, W) */
    for (int p = 0; p < P; p++)
        for (int y = 0; y < H; y++)
            for (int o = 0; o < W; o++) {
                double s = 0;
                for (int k = 0; k < nx[o]; k++)
                    s += wx[(size_t)o * tx + k] * tmp[((size_t)p * H + y) * w + fx[o] + k];
                out->px[((size_t)p * H + y) * W + o] = (float)s;
            }
    free(fy); free(ny); free(fx); free(nx); free(wy); free(wx); free(tmp);
    return 0;
}

int clip_crop(const Clip *in, int y0, int x0, int H, int W, int t0, int T, Clip *out) {
    if (out) { out->T = out->H = out->W = 0; out->px = NULL; }
    if (!out || clip_check(in, "clip_crop") != 0) return -1;
    /* each range [start, start + size) must lie inside [0, extent); written
       with subtraction so that huge values cannot overflow */
    const char *what[3] = { "frames", "rows", "columns" };
    const int start[3] = { t0, y0, x0 }, size[3] = { T, H, W }, extent[3] = { in->T, in->H, in->W };
    for (int d = 0; d < 3; d++)
        if (size[d] <= 0 || start[d] < 0 || start[d] > extent[d] - size[d]) {
            ivae_set_error("clip_crop: %s %d..%lld are not inside the clip's %d %s", what[d], start[d],
                           (long long)start[d] + size[d] - 1, extent[d], what[d]);
            return -1;
        }
    if (clip_alloc(out, T, H, W) != 0) return -1;
    for (int ch = 0; ch < 3; ch++)
        for (int t = 0; t < T; t++)
            for (int y = 0; y < H; y++)
                memcpy(clip_at(out, ch, t, y, 0), clip_at(in, ch, t0 + t, y0 + y, x0), (size_t)W * sizeof(float));
    return 0;
}

int clip_cut_frames(const Clip *in, int time_factor, Clip *out) {
    if (out) { out->T = out->H = out->W = 0; out->px = NULL; }
    if (!out || clip_check(in, "clip_cut_frames") != 0) return -1;
    if (time_factor < 1) { ivae_set_error("clip_cut_frames: time factor %d (must be >= 1)", time_factor); return -1; }
    int k = (in->T - 1) / time_factor;
    return clip_crop(in, 0, 0, in->H, in->W, 0, 1 + k * time_factor, out);
}

/* ========================================================================== */
/* 7. metrics                                                                 */
/* ========================================================================== */

static int same_shape(const Clip *a, const Clip *b, const char *name) {
    if (clip_check(a, name) != 0 || clip_check(b, name) != 0) return -1;
    if (a->T != b->T || a->H != b->H || a->W != b->W) {
        ivae_set_error("%s: clips differ in shape (3x%dx%dx%d vs 3x%dx%dx%d)", name, a->T, a->H, a->W, b->T, b->H, b->W);
        return -1;
    }
    return 0;
}

double clip_psnr(const Clip *a, const Clip *b) {
    if (same_shape(a, b, "clip_psnr") != 0) return NAN;
    size_t n = clip_numel(a->T, a->H, a->W);
    uint64_t sse = 0;                                   /* exact: integers */
    for (size_t i = 0; i < n; i++) {
        int d = (int)px_to_u8(a->px[i]) - (int)px_to_u8(b->px[i]);
        sse += (uint64_t)(d * d);
    }
    if (sse == 0) return 99.0;
    double psnr = 10.0 * log10(255.0 * 255.0 / ((double)sse / (double)n));
    return psnr < 99.0 ? psnr : 99.0;
}

/* frame t's 8-bit BT.601 luma, (H, W), not rounded */
static void frame_luma(const Clip *c, int t, double *Y) {
    size_t HW = (size_t)c->H * c->W;
    const float *r = clip_at(c, 0, t, 0, 0), *g = clip_at(c, 1, t, 0, 0), *b = clip_at(c, 2, t, 0, 0);
    for (size_t i = 0; i < HW; i++)
        Y[i] = KR * px_to_u8(r[i]) + KG * px_to_u8(g[i]) + KB * px_to_u8(b[i]);
}

#define SSIM_WIN 11

double clip_ssim(const Clip *a, const Clip *b) {
    if (same_shape(a, b, "clip_ssim") != 0) return NAN;
    const int H = a->H, W = a->W, Ho = H - SSIM_WIN + 1, Wo = W - SSIM_WIN + 1;
    if (Ho < 1 || Wo < 1) {
        ivae_set_error("clip_ssim: frames of %dx%d are smaller than the %dx%d window", W, H, SSIM_WIN, SSIM_WIN);
        return NAN;
    }
    /* the Gaussian window, sigma 1.5, normalised; the 2-D window is the outer
       product of this with itself, so filtering is separable */
    double g[SSIM_WIN], gs = 0;
    for (int i = 0; i < SSIM_WIN; i++) {
        double d = i - (SSIM_WIN - 1) / 2;
        g[i] = exp(-d * d / (2.0 * 1.5 * 1.5));
        gs += g[i];
    }
    for (int i = 0; i < SSIM_WIN; i++) g[i] /= gs;
    const double C1 = (0.01 * 255) * (0.01 * 255), C2 = (0.03 * 255) * (0.03 * 255);

    size_t HW = (size_t)H * W;
    double *ya = malloc(HW * sizeof(double)), *yb = malloc(HW * sizeof(double));
    double *rows = malloc(5 * (size_t)H * Wo * sizeof(double));     /* horizontally filtered */
    if (!ya || !yb || !rows) {
        free(ya); free(yb); free(rows);
        ivae_set_error("clip_ssim: out of memory");
        return NAN;
    }
    double total = 0;
    for (int t = 0; t < a->T; t++) {
        frame_luma(a, t, ya);
        frame_luma(b, t, yb);
        /* horizontal pass of the five local statistics: a, b, a^2, b^2, ab */
        for (int y = 0; y < H; y++)
            for (int x = 0; x < Wo; x++) {
                double s[5] = {0, 0, 0, 0, 0};
                for (int k = 0; k < SSIM_WIN; k++) {
                    double p = ya[(size_t)y * W + x + k], q = yb[(size_t)y * W + x + k];
                    s[0] += g[k] * p;     s[1] += g[k] * q;
                    s[2] += g[k] * p * p; s[3] += g[k] * q * q; s[4] += g[k] * p * q;
                }
                for (int m = 0; m < 5; m++) rows[((size_t)m * H + y) * Wo + x] = s[m];
            }
        /* vertical pass, then the SSIM formula at each position */
        double frame_sum = 0;
        for (int y = 0; y < Ho; y++) {
            double row_sum = 0;
            for (int x = 0; x < Wo; x++) {
                double s[5] = {0, 0, 0, 0, 0};
                for (int m = 0; m < 5; m++)
                    for (int k = 0; k < SSIM_WIN; k++) s[m] += g[k] * rows[((size_t)m * H + y + k) * Wo + x];
                double mu_a = s[0], mu_b = s[1];
                double var_a = s[2] - mu_a * mu_a, var_b = s[3] - mu_b * mu_b, cov = s[4] - mu_a * mu_b;
                row_sum += ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) /
                           ((mu_a * mu_a + mu_b * mu_b + C1) * (var_a + var_b + C2));
            }
            frame_sum += row_sum;
        }
        total += frame_sum / ((double)Ho * Wo);
    }
    free(ya); free(yb); free(rows);
    return total / a->T;
}

/* ========================================================================== */
/* 8. pictures                                                                */
/* ========================================================================== */

/* An 8-bit RGB image we draw on, (h, w, 3). */
typedef struct {
    int w, h;
    unsigned char *rgb;
} Canvas;

#define CANVAS_MAX 8192         /* largest picture side we draw */

static int canvas_new(Canvas *c, int w, int h, const unsigned char bg[3], const char *path) {
    c->rgb = NULL;
    if (w < 1 || h < 1 || w > CANVAS_MAX || h > CANVAS_MAX) {
        ivae_set_error("%s: picture of %dx%d is out of range 1..%d", path, w, h, CANVAS_MAX);
        return -1;
    }
    c->w = w; c->h = h;
    c->rgb = malloc((size_t)w * h * 3);
    if (!c->rgb) { ivae_set_error("%s: out of memory for a %dx%d picture", path, w, h); return -1; }
    for (size_t i = 0; i < (size_t)w * h; i++) memcpy(c->rgb + 3 * i, bg, 3);
    return 0;
}

/* fills [x0, x1) x [y0, y1), clipped to the canvas */
static void canvas_rect(Canvas *c, int x0, int y0, int x1, int y1, const unsigned char col[3]) {
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > c->w) x1 = c->w;
    if (y1 > c->h) y1 = c->h;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) memcpy(c->rgb + 3 * ((size_t)y * c->w + x), col, 3);
}

/* mixes col into pixel (x, y) with opacity a in [0, 1] */
static void canvas_blend(Canvas *c, int x, int y, const unsigned char col[3], double a) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h || !(a > 0)) return;
    if (a > 1) a = 1;
    unsigned char *p = c->rgb + 3 * ((size_t)y * c->w + x);
    for (int k = 0; k < 3; k++) p[k] = clamp_round_u8(p[k] * (1 - a) + col[k] * a);
}

/* Text with stb_easy_font, which describes each glyph as axis-aligned quads
   (4 vertices of x, y, z floats and 4 colour bytes, 16 bytes each) in font
   pixels: capitals 7 high, descenders to 9, about 6 wide. We fill each quad
   as a scale x scale block per font pixel. (x, y) is the top-left corner of
   the text; with up = 1 the text runs upwards (for a y-axis label) and
   (x, y) is its bottom-left corner. Characters outside printable ASCII
   become '?' (the font only has those). */
#define FONT_H 9                /* font pixels from the top of a line to the lowest descender */

static int text_width(const char *text, int scale) {
    char buf[256];
    text_printable(text, buf, sizeof buf);
    return stb_easy_font_width(buf) * scale;
}

static void canvas_text(Canvas *c, int x, int y, const char *text, int scale, const unsigned char col[3], int up) {
    char buf[256];
    text_printable(text, buf, sizeof buf);
    size_t len = strlen(buf);
    if (len == 0) return;
    int cap = (int)(len * 1024 + 64);                   /* bytes; ~270 per character are typical */
    float *v = malloc((size_t)cap);
    if (!v) return;                                     /* no text rather than a crash */
    int quads = stb_easy_font_print(0, 0, buf, NULL, v, cap);
    for (int q = 0; q < quads; q++) {
        /* vertices 0 and 2 of a quad are opposite corners; 4 floats per vertex */
        int fx0 = (int)v[16 * q + 0], fy0 = (int)v[16 * q + 1];
        int fx1 = (int)v[16 * q + 8], fy1 = (int)v[16 * q + 9];
        if (!up)
            canvas_rect(c, x + fx0 * scale, y + fy0 * scale, x + fx1 * scale, y + fy1 * scale, col);
        else    /* rotated a quarter turn anticlockwise: font x goes up, font y goes right */
            canvas_rect(c, x + fy0 * scale, y - fx1 * scale, x + fy1 * scale, y - fx0 * scale, col);
    }
    free(v);
}

/* An anti-aliased line segment of width lw, drawn into a coverage mask
   (w x h floats in [0, 1], max over everything drawn) limited to the
   rectangle [cx0, cx1) x [cy0, cy1). Each pixel's coverage comes from the
   distance d of its centre to the segment: 1 inside lw / 2 - 0.5, fading
   linearly to 0 at lw / 2 + 0.5. Taking the max (not the sum) keeps joints
   between segments from darkening. We walk along the segment's longer axis
   and test a short band of pixels across it. */
typedef struct { int w, h, cx0, cy0, cx1, cy1; float *m; } Mask;

static void mask_line(Mask *mk, double x0, double y0, double x1, double y1, double lw) {
    const double r = lw / 2, dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    const int steep = fabs(dy) > fabs(dx);
    /* along: the coordinate we step in; across: the other */
    double a0 = steep ? y0 : x0, a1 = steep ? y1 : x1;
    if (a0 > a1) { double t = a0; a0 = a1; a1 = t; }
    const int band = (int)ceil(r * 1.5) + 2;
    for (int ia = (int)floor(a0 - r - 1); ia <= (int)ceil(a1 + r + 1); ia++) {
        /* where the line crosses the middle of this row/column */
        double pa = ia + 0.5, t;
        if (steep) t = fabs(dy) > 0 ? (pa - y0) / dy : 0;
        else       t = fabs(dx) > 0 ? (pa - x0) / dx : 0;
        if (t < 0) t = 0;
        if (t > 1) t = 1;
        double across = steep ? x0 + t * dx : y0 + t * dy;
        for (int ib = (int)floor(across) - band; ib <= (int)floor(across) + band; ib++) {
            int px = steep ? ib : ia, py = steep ? ia : ib;
            if (px < mk->cx0 || py < mk->cy0 || px >= mk->cx1 || py >= mk->cy1) continue;
            /* distance from the pixel centre to the segment */
            double qx = px + 0.5 - x0, qy = py + 0.5 - y0;
            double u = len2 > 0 ? (qx * dx + qy * dy) / len2 : 0;
            if (u < 0) u = 0;
            if (u > 1) u = 1;
            double ex = qx - u * dx, ey = qy - u * dy, d = sqrt(ex * ex + ey * ey);
            double cov = r + 0.5 - d;
            if (cov <= 0) continue;
            if (cov > 1) cov = 1;
            float *m = &mk->m[(size_t)py * mk->w + px];
            if (cov > *m) *m = (float)cov;
        }
    }
}

/* paints the mask onto the canvas in one colour, then clears it */
static void mask_paint(Mask *mk, Canvas *c, const unsigned char col[3]) {
    for (int y = mk->cy0; y < mk->cy1; y++)
        for (int x = mk->cx0; x < mk->cx1; x++) {
            float *m = &mk->m[(size_t)y * mk->w + x];
            if (*m > 0) { canvas_blend(c, x, y, col, *m); *m = 0; }
        }
}

static int canvas_save(Canvas *c, const char *path) {
    int r = write_png_rgb8(path, c->rgb, c->w, c->h);
    free(c->rgb);
    c->rgb = NULL;
    return r;
}

/* ---- the side-by-side comparison ---- */

int save_side_by_side(const char *png_path, const Clip *orig, const Clip *recon, int frame, int scale) {
    if (!png_path || !*png_path) { ivae_set_error("save_side_by_side: empty path"); return -1; }
    if (same_shape(orig, recon, png_path) != 0) return -1;
    if (frame < 0 || frame >= orig->T) {
        ivae_set_error("%s: frame %d is not in the clip's 0..%d", png_path, frame, orig->T - 1);
        return -1;
    }
    const int H = orig->H, W = orig->W, gap = 2, pad = 4;
    if (scale <= 0) scale = (256 + W - 1) / W;          /* panels at least 256 wide */
    if (scale > CANVAS_MAX / W || scale > CANVAS_MAX / H) {
        ivae_set_error("%s: a %dx%d frame magnified %d times is too large (at most %d pixels a side)",
                       png_path, W, H, scale, CANVAS_MAX);
        return -1;
    }
    const int pw = W * scale, ph = H * scale;           /* panel size */
    /* labels: twice the font size when they fit, short ones when even the
       plain size does not */
    const char *full[3] = { "original", "reconstruction", "error x4" };
    const char *brief[3] = { "orig", "recon", "err x4" };
    const char *const *label = full;
    int ts = 2;
    if (text_width(full[1], 2) + 2 * pad > pw) ts = 1;
    if (text_width(full[1], 1) + 2 * pad > pw) label = brief;
    const int top = FONT_H * ts + 2 * pad;              /* height of the label strip */

    const unsigned char bg[3] = { 32, 32, 32 }, fg[3] = { 235, 235, 235 };
    Canvas cv;
    if (canvas_new(&cv, 3 * pw + 2 * gap, top + ph, bg, png_path) != 0) return -1;
    for (int p = 0; p < 3; p++) {
        int x0 = p * (pw + gap);
        canvas_text(&cv, x0 + (pw - text_width(label[p], ts)) / 2, pad, label[p], ts, fg, 0);   /* centred */
        for (int y = 0; y < ph; y++)
            for (int x = 0; x < pw; x++) {
                int sy = y / scale, sx = x / scale;     /* nearest: each pixel a scale x scale block */
                unsigned char *dst = cv.rgb + 3 * ((size_t)(top + y) * cv.w + x0 + x);
                for (int ch = 0; ch < 3; ch++) {
                    int a = px_to_u8(*clip_at(orig, ch, frame, sy, sx));
                    int b = px_to_u8(*clip_at(recon, ch, frame, sy, sx));
                    int v = p == 0 ? a : p == 1 ? b : 4 * abs(a - b);
                    dst[ch] = (unsigned char)(v > 255 ? 255 : v);
                }
            }
    }
    return canvas_save(&cv, png_path);
}

/* ---- the line plot ---- */

/* a "nice" tick step near x (after Heckbert): 1, 2 or 5 times a power of ten */
static double nice_step(double x) {
    double e = floor(log10(x)), f = x / pow(10.0, e);
    double nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return nf * pow(10.0, e);
}

/* a linear axis covering lo..hi with about n ticks at round values; the
   axis limits are extended to whole ticks */
static void nice_axis(double lo, double hi, int n, double *amin, double *amax, double *step) {
    *step = nice_step((hi - lo) / (n - 1));
    *amin = floor(lo / *step) * *step;
    *amax = ceil(hi / *step) * *step;
}

/* a tick label: as many decimals as the step needs, %g for extreme values */
static void tick_label(char *buf, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;                   /* no "-0" or "1e-17" */
    double av = fabs(v);
    if (av >= 1e6 || (av > 0 && av < 1e-4) || step < 1e-4) { snprintf(buf, cap, "%g", v); return; }
    int dec = (int)(-floor(log10(step) + 1e-9));
    if (dec < 0) dec = 0;
    snprintf(buf, cap, "%.*f", dec, v);
}

#define MAX_TICKS 64

int plot_curves(const char *png_path, const char *title, const char *xlabel, const char *ylabel,
                int n_series, const char *const *names, const double *const *xs, const double *const *ys,
                const int *lens, int log_y) {
    if (!png_path || !*png_path) { ivae_set_error("plot_curves: empty path"); return -1; }
    if (n_series < 0 || (n_series > 0 && (!xs || !ys || !lens))) {
        ivae_set_error("%s: plot_curves needs xs, ys and lens for its %d series", png_path, n_series);
        return -1;
    }
    for (int s = 0; s < n_series; s++)
        if (lens[s] < 0 || (lens[s] > 0 && (!xs[s] || !ys[s]))) {
            ivae_set_error("%s: series %d has length %d or no data", png_path, s, lens[s]);
            return -1;
        }

    /* ---- the data range, over the points that can be drawn ---- */
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < lens[s]; i++) {
            double x = xs[s][i], y = ys[s][i];
            if (!isfinite(x) || !isfinite(y) || (log_y && y <= 0)) continue;
            if (x < xmin) xmin = x;
            if (x > xmax) xmax = x;
            double yv = log_y ? log10(y) : y;
            if (yv < ymin) ymin = yv;
            if (yv > ymax) ymax = yv;
        }
    if ((xmin <= xmax && !isfinite(xmax - xmin)) || (ymin <= ymax && !isfinite(ymax - ymin))) {
        ivae_set_error("%s: the data's range is too large to plot", png_path);
        return -1;
    }
    if (!(xmin <= xmax)) { xmin = 0; xmax = 1; }        /* nothing to draw: a unit box */
    if (!(ymin <= ymax)) { ymin = 0; ymax = 1; }
    if (xmax - xmin < 1e-12 * (fabs(xmin) + 1)) { xmin -= 1; xmax += 1; }
    if (!log_y && ymax - ymin < 1e-12 * (fabs(ymin) + 1)) { ymin -= 1; ymax += 1; }

    /* ---- ticks ---- */
    double xa0, xa1, xstep;
    nice_axis(xmin, xmax, 7, &xa0, &xa1, &xstep);
    double yt[MAX_TICKS];                               /* y ticks, in axis units (log10 y if log_y) */
    char ylab[MAX_TICKS][32];
    int nyt = 0;
    double ya0, ya1;
    if (!log_y) {
        double ystep;
        nice_axis(ymin, ymax, 6, &ya0, &ya1, &ystep);
        for (int i = 0; nyt < MAX_TICKS; i++) {
            double v = ya0 + i * ystep;
            if (v > ya1 + ystep * 1e-6) break;
            yt[nyt] = v;
            tick_label(ylab[nyt], sizeof ylab[0], v, ystep);
            nyt++;
        }
    } else {
        /* whole decades; with few decades also 2x and 5x in between */
        ya0 = floor(ymin);
        ya1 = ceil(ymax);
        if (ya1 <= ya0) ya1 = ya0 + 1;
        int ndec = (int)(ya1 - ya0);
        int every = ndec > 8 ? (ndec + 7) / 8 : 1;      /* label at most ~8 decades */
        for (int d = 0; d <= ndec && nyt < MAX_TICKS; d++) {
            static const double mult[3] = { 1, 2, 5 };
            for (int m = 0; m < (ndec <= 3 ? 3 : 1) && nyt < MAX_TICKS; m++) {
                if (m == 0 && d % every) continue;
                double e = ya0 + d, v = mult[m] * pow(10.0, e);
                if (log10(v) > ya1 + 1e-9) break;
                yt[nyt] = log10(v);
                if (e >= -4 && e <= 5) snprintf(ylab[nyt], sizeof ylab[0], "%g", v);
                else snprintf(ylab[nyt], sizeof ylab[0], "%ge%d", mult[m], (int)e);
                nyt++;
            }
        }
    }

    /* ---- layout ---- */
    const int Wc = 800, Hc = 500, ts = 2;               /* canvas, text scale */
    const int th = FONT_H * ts;                         /* text height in pixels */
    int ylab_w = 0;
    for (int i = 0; i < nyt; i++) {
        int w = text_width(ylab[i], ts);
        if (w > ylab_w) ylab_w = w;
    }
    const int left = 12 + (ylabel && *ylabel ? th + 12 : 0) + ylab_w + 10;
    const int right = Wc - 40, top = title && *title ? 16 + th + 14 : 24, bottom = Hc - (12 + th + 12 + th + 14);
    const unsigned char white[3] = { 255, 255, 255 }, black[3] = { 0, 0, 0 };
    const unsigned char grid[3] = { 225, 225, 225 }, axis[3] = { 60, 60, 60 };
    static const unsigned char palette[10][3] = {
        { 31, 119, 180 }, { 255, 127, 14 }, { 44, 160, 44 }, { 214, 39, 40 }, { 148, 103, 189 },
        { 140, 86, 75 }, { 227, 119, 194 }, { 127, 127, 127 }, { 188, 189, 34 }, { 23, 190, 207 } };

    Canvas cv;
    if (canvas_new(&cv, Wc, Hc, white, png_path) != 0) return -1;
    Mask mk = { Wc, Hc, left, top, right + 1, bottom + 1, calloc((size_t)Wc * Hc, sizeof(float)) };
    if (!mk.m) { free(cv.rgb); ivae_set_error("%s: out of memory", png_path); return -1; }
    /* data -> pixel coordinates */
#define PX(x) (left + ((x) - xa0) / (xa1 - xa0) * (right - left))
#define PY(v) (bottom - ((v) - ya0) / (ya1 - ya0) * (bottom - top))

    /* grid lines and ticks with their labels */
    char buf[64];
    /* x labels: every tick's, or every other (third...) one's when long
       labels would touch; each kept inside the picture */
    int nxt = 0, xlab_w = 0;
    for (int i = 0; i < MAX_TICKS && xa0 + i * xstep <= xa1 + xstep * 1e-6; i++, nxt++) {
        tick_label(buf, sizeof buf, xa0 + i * xstep, xstep);
        if (text_width(buf, ts) > xlab_w) xlab_w = text_width(buf, ts);
    }
    double spacing = nxt > 1 ? (double)(right - left) / (nxt - 1) : right - left;
    int every = 1;
    while (every < nxt && xlab_w + 12 > spacing * every) every++;
    for (int i = 0; i < nxt; i++) {
        double v = xa0 + i * xstep;
        int x = (int)lround(PX(v));
        canvas_rect(&cv, x, top, x + 1, bottom, grid);
        canvas_rect(&cv, x, bottom, x + 1, bottom + 6, axis);
        if (i % every) continue;
        tick_label(buf, sizeof buf, v, xstep);
        int tx = x - text_width(buf, ts) / 2;
        if (tx > Wc - 2 - text_width(buf, ts)) tx = Wc - 2 - text_width(buf, ts);
        if (tx < 2) tx = 2;
        canvas_text(&cv, tx, bottom + 10, buf, ts, black, 0);
    }
    for (int i = 0; i < nyt; i++) {
        int y = (int)lround(PY(yt[i]));
        canvas_rect(&cv, left, y, right, y + 1, grid);
        canvas_rect(&cv, left - 6, y, left, y + 1, axis);
        canvas_text(&cv, left - 10 - text_width(ylab[i], ts), y - 7 * ts / 2, ylab[i], ts, black, 0);
    }
    if (log_y)  /* unlabelled minor ticks at 2..9 times each decade */
        for (double e = ya0; e < ya1; e += 1)
            for (int m = 2; m <= 9; m++) {
                int y = (int)lround(PY(e + log10((double)m)));
                canvas_rect(&cv, left - 3, y, left, y + 1, axis);
            }
    /* the frame around the plot area */
    canvas_rect(&cv, left, top, right + 1, top + 1, axis);
    canvas_rect(&cv, left, bottom, right + 1, bottom + 1, axis);
    canvas_rect(&cv, left, top, left + 1, bottom + 1, axis);
    canvas_rect(&cv, right, top, right + 1, bottom + 1, axis);

    /* the curves: each series' segments into the mask, then painted once */
    for (int s = 0; s < n_series; s++) {
        int have_prev = 0;
        double px0 = 0, py0 = 0;
        for (int i = 0; i < lens[s]; i++) {
            double x = xs[s][i], y = ys[s][i];
            if (!isfinite(x) || !isfinite(y) || (log_y && y <= 0)) { have_prev = 0; continue; }
            double px = PX(x), py = PY(log_y ? log10(y) : y);
            if (have_prev) mask_line(&mk, px0, py0, px, py, 2.0);
            else if (i + 1 >= lens[s] || !isfinite(ys[s][i + 1]) || !isfinite(xs[s][i + 1]))
                mask_line(&mk, px, py, px, py, 6.0);    /* a lone point: a dot */
            px0 = px; py0 = py; have_prev = 1;
        }
        mask_paint(&mk, &cv, palette[s % 10]);
    }

    /* the legend, in the corner of the plot area with the fewest points */
    if (n_series > 0 && names) {
        int lw = 0;
        for (int s = 0; s < n_series; s++) {
            int w = text_width(names[s] ? names[s] : "", ts);
            if (w > lw) lw = w;
        }
        const int row = th + 8, bw = 10 + 28 + 8 + lw + 10, bh = 8 + n_series * row;
        int best = 0;
        long best_count = -1;
        for (int corner = 0; corner < 4; corner++) {    /* top-right, top-left, bottom-right, bottom-left */
            int bx = corner % 2 == 0 ? right - 10 - bw : left + 10, by = corner < 2 ? top + 10 : bottom - 10 - bh;
            long count = 0;
            for (int s = 0; s < n_series; s++)
                for (int i = 0; i < lens[s]; i++) {
                    double x = xs[s][i], y = ys[s][i];
                    if (!isfinite(x) || !isfinite(y) || (log_y && y <= 0)) continue;
                    double px = PX(x), py = PY(log_y ? log10(y) : y);
                    if (px >= bx && px <= bx + bw && py >= by && py <= by + bh) count++;
                }
            if (best_count < 0 || count < best_count) { best_count = count; best = corner; }
        }
        int bx = best % 2 == 0 ? right - 10 - bw : left + 10, by = best < 2 ? top + 10 : bottom - 10 - bh;
        canvas_rect(&cv, bx, by, bx + bw, by + bh, axis);
        canvas_rect(&cv, bx + 1, by + 1, bx + bw - 1, by + bh - 1, white);
        for (int s = 0; s < n_series; s++) {
            int ry = by + 8 + s * row, cy = ry + 7 * ts / 2;
            Mask lm = mk;                               /* the legend may lie outside the plot area */
            lm.cx0 = 0; lm.cy0 = 0; lm.cx1 = Wc; lm.cy1 = Hc;
            mask_line(&lm, bx + 10, cy + 0.5, bx + 38, cy + 0.5, 3.0);
            mask_paint(&lm, &cv, palette[s % 10]);
            canvas_text(&cv, bx + 46, ry, names[s] ? names[s] : "", ts, black, 0);
        }
    }
#undef PX
#undef PY

    /* title, axis labels */
    if (title && *title) {
        int ts_t = text_width(title, 3) <= Wc - 20 ? 3 : 2;
        canvas_text(&cv, (Wc - text_width(title, ts_t)) / 2, 12, title, ts_t, black, 0);
    }
    if (xlabel && *xlabel)
        canvas_text(&cv, (left + right - text_width(xlabel, ts)) / 2, Hc - 12 - th, xlabel, ts, black, 0);
    if (ylabel && *ylabel)
        canvas_text(&cv, 12, (top + bottom + text_width(ylabel, ts)) / 2, ylabel, ts, black, 1);

    free(mk.m);
    return canvas_save(&cv, png_path);
}

/* ========================================================================== */
/* 9. for the lessons (SPEC 9): JPEG degradation, error maps, picture grids   */
/* ========================================================================== */

/* stb_image_write hands the JPEG bytes to this callback: a growing buffer */
typedef struct { unsigned char *b; size_t n, cap; int failed; } MemSink;

static void mem_sink_write(void *ctx, void *data, int size) {
    MemSink *s = ctx;
    if (size <= 0 || s->failed) return;
    if (s->n + (size_t)size > s->cap) {
        size_t cap = 2 * (s->n + (size_t)size);
        unsigned char *b = realloc(s->b, cap);
        if (!b) { s->failed = 1; return; }
        s->b = b, s->cap = cap;
    }
    memcpy(s->b + s->n, data, (size_t)size);
    s->n += (size_t)size;
}

int clip_jpeg(const Clip *in, int quality, Clip *out) {
    memset(out, 0, sizeof *out);
    if (clip_check(in, "clip_jpeg") != 0) return -1;
    if (quality < 1 || quality > 100) { ivae_set_error("JPEG quality %d is not in 1..100", quality); return -1; }
    if (clip_alloc(out, in->T, in->H, in->W) != 0) return -1;
    for (int t = 0; t < in->T; t++) {
        unsigned char *rgb = frame_to_rgb8(in, t);
        MemSink sink = { NULL, 0, 0, 0 };
        int ok = rgb && stbi_write_jpg_to_func(mem_sink_write, &sink, in->W, in->H, 3, rgb, quality) && !sink.failed;
        free(rgb);
        int w = 0, h = 0, comp;
        /* our own encoder's baseline output, decoded at once: stb reads
           every JPEG its writer makes */
        unsigned char *back = ok ? stbi_load_from_memory(sink.b, (int)sink.n, &w, &h, &comp, 3) : NULL;
        free(sink.b);
        if (!back || w != in->W || h != in->H) {
            if (back) stbi_image_free(back);
            clip_free(out);
            ivae_set_error("clip_jpeg: cannot encode and decode frame %d at quality %d", t, quality);
            return -1;
        }
        rgb8_to_frame(out, t, back);
        stbi_image_free(back);
    }
    return 0;
}

int clip_error_map(const Clip *a, const Clip *b, int gain, Clip *out) {
    memset(out, 0, sizeof *out);
    if (same_shape(a, b, "clip_error_map") != 0 || clip_alloc(out, a->T, a->H, a->W) != 0) return -1;
    size_t n = clip_numel(a->T, a->H, a->W);
    for (size_t i = 0; i < n; i++) {
        int d = gain * abs((int)px_to_u8(a->px[i]) - (int)px_to_u8(b->px[i]));
        out->px[i] = px_from_u8((unsigned char)(d > 255 ? 255 : d));
    }
    return 0;
}

int save_grid(const char *png_path, int rows, int cols, const Clip *const *cells, const int *frames,
              const char *const *col_labels, int scale) {
    if (!png_path || !*png_path) { ivae_set_error("save_grid: empty path"); return -1; }
    if (rows < 1 || cols < 1) { ivae_set_error("%s: a grid of %d x %d cells", png_path, rows, cols); return -1; }
    int ch = 0, cw = 0; /* the cell size: the largest frame of a column / a row */
    for (int k = 0; k < rows * cols; k++) {
        if (!cells[k]) continue;
        if (clip_check(cells[k], png_path) != 0) return -1;
        if (frames[k] < 0 || frames[k] >= cells[k]->T) {
            ivae_set_error("%s: cell %d: frame %d is not in the clip's 0..%d", png_path, k, frames[k], cells[k]->T - 1);
            return -1;
        }
        if (cells[k]->H > ch) ch = cells[k]->H;
        if (cells[k]->W > cw) cw = cells[k]->W;
    }
    if (ch == 0) { ivae_set_error("%s: the grid is empty", png_path); return -1; }
    if (scale <= 0) scale = (128 + cw - 1) / cw;
    if (scale > CANVAS_MAX / (cw * cols + 2 * cols) || scale > CANVAS_MAX / (ch * rows + 2 * rows)) {
        ivae_set_error("%s: a %d x %d grid of %dx%d cells magnified %d times is too large", png_path, rows, cols, cw, ch, scale);
        return -1;
    }
    const int gap = 2, pad = 4, pw = cw * scale, ph = ch * scale;
    int ts = 1, top = 0;
    if (col_labels) {
        for (int c = 0; c < cols; c++)
            if (col_labels[c] && text_width(col_labels[c], 2) + 2 * pad > pw) ts = 0;
        ts = ts ? 2 : 1;
        top = FONT_H * ts + 2 * pad;
    }
    const unsigned char bg[3] = { 32, 32, 32 }, fg[3] = { 235, 235, 235 };
    Canvas cv;
    if (canvas_new(&cv, cols * pw + (cols - 1) * gap, top + rows * ph + (rows - 1) * gap, bg, png_path) != 0) return -1;
    for (int c = 0; c < cols; c++)
        if (col_labels && col_labels[c])
            canvas_text(&cv, c * (pw + gap) + (pw - text_width(col_labels[c], ts)) / 2, pad, col_labels[c], ts, fg, 0);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const Clip *k = cells[r * cols + c];
            if (!k) continue;
            int t = frames[r * cols + c], x0 = c * (pw + gap), y0 = top + r * (ph + gap);
            for (int y = 0; y < k->H * scale; y++)
                for (int x = 0; x < k->W * scale; x++) {
                    unsigned char *dst = cv.rgb + 3 * ((size_t)(y0 + y) * cv.w + x0 + x);
                    for (int q = 0; q < 3; q++) dst[q] = px_to_u8(*clip_at(k, q, t, y / scale, x / scale));
                }
        }
    return canvas_save(&cv, png_path);
}
