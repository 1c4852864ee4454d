/*
 * media.h: image and video input-output, crops, metrics and pictures for ivae.
 *
 * Everything the trainer and the evaluation need around the model itself:
 *
 *   Clip c;                                   // pixels in [-1, 1], (3, T, H, W)
 *   media_load("clip.y4m", 0, &c);            // or a PNG, or a folder of frames
 *   media_probe("clip.y4m", 0, &T, &H, &W);   // its shape alone, nothing decoded
 *   Clip v;  clip_crop_resize(&c, 64, 64, &v);
 *   ... run the model on v.px, get r ...
 *   clip_psnr(&v, &r);  clip_ssim(&v, &r);
 *   save_side_by_side("cmp.png", &v, &r, 0, 4);
 *   media_save("recon.y4m", &r);
 *   clip_free(&c);  clip_free(&v);
 *
 * Conventions, as in ivae.h:
 * - functions that can fail return 0 on success and -1 on failure, with one
 *   line in ivae_error() that names the file (or the function) and the
 *   problem; the metrics return NAN on failure (check with isnan()).
 * - an output Clip is always left safe to clip_free: filled on success,
 *   zeroed ({0, 0, 0, NULL}) on failure.
 * - pixels: 8-bit value v <-> x = v / 127.5 - 1, and back
 *   v = round(clamp((x + 1) * 127.5, 0, 255))  (SPEC 1); layout (3, T, H, W),
 *   channel-major (R plane of every frame, then G, then B), W fastest.
 *
 * Dependencies: the C library, libm and stb (header-only, compiled into
 * media.c). Links against ivae.c for ivae_set_error / ivae_error.
 */
#ifndef MEDIA_H
#define MEDIA_H

/* a clip: T frames of H x W RGB pixels in [-1, 1] */
typedef struct {
    int T, H, W;
    float *px;              /* (3, T, H, W); free with clip_free */
} Clip;

void clip_free(Clip *c);
/* a new clip of the given size, pixels zeroed (x = 0, mid gray); -1 if the
   size is not positive or too large */
int clip_alloc(Clip *c, int T, int H, int W);

/* SPEC 1 pixel mapping, one value */
float px_from_u8(unsigned char v);          /* v / 127.5 - 1 */
unsigned char px_to_u8(float x);            /* round(clamp((x+1)*127.5, 0, 255)); NaN -> 0 */

/* ------------------------------------------------------------------------ */
/* reading and writing */

/* Loads path, by what it is:
   - a directory: a sequence of numbered frames. Every image file in it
     (.png .jpg .jpeg .bmp, any case) must carry a number in its name (the
     last run of digits: 0001.png, frame_12.png); frames are sorted by that
     number and must all have the same size. Other files are ignored.
   - a .y4m file (or any file that starts "YUV4MPEG2 "): read natively,
     8-bit 4:2:0 (C420jpeg, C420paldv, C420mpeg2, C420, or no C tag) or 4:4:4
     (C444); BT.601 YCbCr, limited ("TV") range unless the header says
     XCOLORRANGE=FULL; 4:2:0 chroma upsampled bilinearly from where the tag
     sites it (centred for 420jpeg and 420, left for 420mpeg2, top-left for
     420paldv), edges clamped; the RGB result is rounded to 8 bits, so a clip
     from a .y4m is on the same grid as one from PNGs.
   - otherwise an image file (PNG, JPEG, BMP, ... through stb_image): T = 1;
     gray is replicated to RGB, alpha is dropped, 16-bit is reduced to 8.
   max_frames > 0 keeps only the first max_frames frames; <= 0 keeps all. */
int media_load(const char *path, int max_frames, Clip *out);
/* The shape media_load(path, max_frames, ...) gives, T frames of H x W,
   from the headers alone, without decoding a pixel: an image's header (PNG
   IHDR, JPEG SOF, BMP info header, read as stb reads them), a .y4m's header
   and its FRAME lines (the planes are skipped), a folder's frame count and
   every frame's header (all must agree). Refuses, with media_load's one
   line naming the file, what media_load refuses at the header level (the
   pixel limit, a folder of mixed sizes, a truncated y4m frame, ...); a
   file that passes may still fail to decode later (a corrupt body). */
int media_probe(const char *path, int max_frames, int *T, int *H, int *W);

/* Saves by the path's extension:
   - .png: one PNG (the clip must have T == 1);
   - .y4m: YUV4MPEG2, 4:2:0 C420jpeg (what ffmpeg writes for yuv420p), BT.601
     limited range, "F25:1 Ip A1:1" (the clip carries no frame rate);
   - anything else: a directory (created if missing) of 0001.png, 0002.png,
     ...; an existing directory must not hold other image files, so that a
     later media_load cannot pick up stale frames. */
int media_save(const char *path, const Clip *c);
/* Y4M with the chroma format chosen: chroma444 = 0 for 4:2:0 C420jpeg (each
   chroma sample the mean of its 2x2 block, centred siting), 1 for C444. */
int media_save_y4m(const char *path, const Clip *c, int chroma444);

/* ------------------------------------------------------------------------ */
/* geometry */

/* Scales so that the clip covers H x W (the side that is shorter relative
   to the target fits exactly), then centre-crops to H x W. Each axis is
   resampled separably: area-averaging when shrinking, bilinear (pixel
   centres, edges clamped) when enlarging, an exact copy at scale 1. */
int clip_crop_resize(const Clip *in, int H, int W, Clip *out);
/* the sub-clip rows y0..y0+H-1, columns x0..x0+W-1, frames t0..t0+T-1 */
int clip_crop(const Clip *in, int y0, int x0, int H, int W, int t0, int T, Clip *out);
/* keeps the first 1 + k * time_factor frames, k as large as fits */
int clip_cut_frames(const Clip *in, int time_factor, Clip *out);

/* ------------------------------------------------------------------------ */
/* metrics (NAN on failure: clips of different shapes, ...) */

/* PSNR in dB on the 8-bit values (SPEC 1 mapping), over all frames and
   channels: 10 log10(255^2 / MSE); 99 when identical (and at most 99) */
double clip_psnr(const Clip *a, const Clip *b);
/* SSIM (Wang et al. 2004) on 8-bit BT.601 luma Y = 0.299 R + 0.587 G +
   0.114 B (not rounded), Gaussian 11x11 window, sigma 1.5, K1 0.01, K2 0.03,
   L 255, over the positions where the window fits inside the frame (as the
   paper's reference code); the mean over positions, then over frames.
   Frames must be at least 11 x 11. */
double clip_ssim(const Clip *a, const Clip *b);

/* ------------------------------------------------------------------------ */
/* pictures */

/* One PNG: original | reconstruction | error x4 of one frame, each panel
   magnified by the integer factor scale (nearest; scale <= 0 picks one that
   makes panels at least 256 pixels wide), 2-pixel gaps, a label above each
   panel (shortened to "orig", "recon", "err x4" when a panel is too narrow). */
int save_side_by_side(const char *png_path, const Clip *orig, const Clip *recon, int frame, int scale);

/* An 800 x 500 line plot: white background, axes with round-valued ticks,
   grid, numeric tick labels, axis labels, title, legend. Series i has
   lens[i] points (xs[i][j], ys[i][j]); non-finite points (and y <= 0 with
   log_y) break the line. title, xlabel, ylabel and names may be NULL. */
int plot_curves(const char *png_path, const char *title, const char *xlabel, const char *ylabel,
                int n_series, const char *const *names, const double *const *xs, const double *const *ys,
                const int *lens, int log_y);

/* ------------------------------------------------------------------------ */
/* for the lessons (SPEC 9) */

/* every frame of in encoded as a baseline JPEG of the given quality (1..100,
   stb_image_write) and decoded back: the degraded training data of the JPEG
   lesson */
int clip_jpeg(const Clip *in, int quality, Clip *out);
/* an error map: each 8-bit value gain * |a - b|, at most 255 */
int clip_error_map(const Clip *a, const Clip *b, int gain, Clip *out);
/* One PNG: rows x cols cells, cell k = (r * cols + c) showing frame
   frames[k] of cells[k] (NULL: left empty), magnified by scale (<= 0: cells
   at least 128 pixels wide), 2-pixel gaps, col_labels (or NULL) above the
   columns. */
int save_grid(const char *png_path, int rows, int cols, const Clip *const *cells, const int *frames,
              const char *const *col_labels, int scale);

#endif
