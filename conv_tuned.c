/*
 * conv_tuned.c: the causal 3-D convolution of SPEC 2.1 (forward, input
 * gradient, weight gradient), tuned. For kernel authors: layers.c has the
 * same convolution as plain loops (ivae_conv3d_*_naive), and this file gives
 * its bits exactly, for any thread count (test/test_conv.c checks every conv
 * shape the models use). The order of every sum is the rule at the top of
 * layers.c; what changes here is only where the numbers live.
 *
 * The convolution is where the time goes, so it is written to run near the
 * machine's limit. The ideas:
 *
 * 1. Pad once. The input is copied into a zero-padded buffer (kt-1 frames in
 *    front, floor(k/2) rows and columns around), so the inner loops have no
 *    bounds checks. For a stride-2 conv each padded row stores its even
 *    columns first, then its odd ones, so that the inputs of neighbouring
 *    outputs are neighbours in memory again.
 * 2. Tiles in registers. A forward tile is MR output channels x NR output
 *    columns of one row; per block of CB = 8 input channels (the rule's
 *    chains) it sums the block's channels' kernel taps into a fresh "part"
 *    tile with fused multiply-adds, then adds part into the output, which
 *    holds the sum of the blocks so far. Only part lives in registers:
 *    MR x NR = 12 x 32 floats is 24 of the 32 AVX-512 registers, and per tap
 *    the 24 fmas need 2 vector loads of x and 12 broadcasts of w (rows of
 *    48 columns take tiles of 12 x 16, which waste no lanes there; rows of
 *    16, tiles of two rows, one vector of each).
 *    With AVX2's 16 registers of 8 floats the tile is 6 x 16 (12 registers;
 *    the AVX-512 tile there spilled to the stack and ran at a third of the
 *    speed). The
 *    compiler vectorises the plain C loops. A task is MR channels x a
 *    segment of up to SEG columns of one row, blocks outside, tiles inside,
 *    so that a block's weights (CB x 27 x MR floats, 10 KB) stay in L1.
 * 3. One kernel, two uses. The input gradient of a stride-1 conv is itself a
 *    convolution: of dy, padded at the END in time (an input frame t reaches
 *    outputs t..t+kt-1), with the kernel flipped and its in/out channels
 *    swapped. So dinp reuses the forward tile, and its sum order is: over o,
 *    then over the outputs that read the input, in increasing order.
 * 4. Strided input gradients by phase. With stride 2, input h = 2q + r is
 *    read only by the taps c whose h + kh/2 - c is even: the phase r = h mod
 *    2 has its own sub-kernel (of a 3-tap row: the middle tap for one phase,
 *    the outer two for the other), and along q it is a stride-1 convolution
 *    of the compact dy with that sub-kernel flipped. So each phase (t mod st,
 *    h mod sh, w mod sw) is one forward-tile conv of dy (padded once for all
 *    phases) into a compact buffer; the phases are then interleaved into
 *    dinp, each of its rows written once. The taps a phase leaves out are
 *    the ones that read 0 between strided outputs, which rule 6 of layers.c
 *    lets a kernel skip and keep the bits; the rest keep their order. Multiply-adds by those zeros were 75% (2-D stride 2) and
 *    87.5% (3-D) of the work when dy was spread on the stride-1 grid. The
 *    packed kernel (ivae_conv3d_pack_dinp) holds the phases' sub-kernels one
 *    after another, each tap once, the size of the flipped kernel.
 *
 * 5. 1x1x1 convs as a matrix product (conv_flat): the positions of the clip
 *    are one long row; per task, a segment's input columns are packed into
 *    panels of 16 positions (each panel's Cin rows contiguous), and a tile of
 *    12 output channels x 16 positions runs over all Cin input channels with
 *    both the running sum of the blocks and the block's chain in registers,
 *    so the output is written once (the 3x3x3 tile adds each block into y in
 *    memory, which costs little after 216-term chains but dominated 8-term
 *    ones). The input gradient is the same product with the packed kernel
 *    transposed.
 *
 * 6. Small frames gathered: rows of up to 8 outputs fill half a narrow
 *    tile, so a frame's inputs are first copied per (input channel, tap)
 *    into one row of its Ho x Wo outputs (an im2col of one frame), and the
 *    wide tile runs along it (conv_padded_to).
 *
 * The weight gradient vectorises over output channels instead: dy is
 * transposed to (position, channel), one frame at a time, and each tile
 * keeps NO channels x up to 9 kernel taps of one input channel in
 * registers, summed along an output row, then row sums into frame sums,
 * frame sums into the clip's (small clips: all frames transposed first, and
 * each task runs every frame; 1x1x1 at stride 1: NO output x NI input
 * channels, a frame's rows in one loop, row chains and frame sums both in
 * registers: wgrad_flat_frame; 3x3x3 rows of up to SLOTROW = 64 outputs,
 * AVX2 16: NO output channels x 3 taps of two input channels, whose row
 * chains and frame sums both stay in registers: wgrad_frame_slots). With
 * fewer output channels than a tile's NO (decoder.conv_out has 3, which left
 * 29 of 32 lanes empty), or short rows, the lanes are 16 input
 * channels instead, of a channel-last padded copy of x, in the same order
 * (conv_wgrad_lanes).
 *
 * Fused multiply-add (fma) is one rounding of a*b+c, exactly specified by
 * IEEE 754, so it gives the same bits everywhere (C99 fmaf, OpenCL fma);
 * only the compiler's silent contraction is forbidden (-ffp-contract=off).
 */
#include "layers.h"

#include <stdlib.h>
#include <string.h>

/* The register budget. The tiles are sized for the vector registers that
   the compiler targets (-march=native): AVX-512 has 32 registers of 16
   floats, AVX2 (most laptops and many servers) 16 registers of 8. A tile's
   sizes say only where its outputs' sums are computed, never in what
   order, so both builds give the same bits (test/test_conv on either). */
#if defined(__AVX512F__)
#define VB 64  /* bytes per vector register */
#define MR 12  /* output channels per forward tile: 12 x 2 vectors of 32 */
#define NO 32  /* output channels per weight-gradient tile (2 vectors x NC taps: 18 of 32) */
#define CL 16  /* input channels per lane group of conv_wgrad_lanes (one vector) */
#define NOF 3  /* output channels per lanes tile: 27 accumulator vectors */
#else
#define VB 32  /* AVX2 and narrower: 16 registers */
#define MR 6   /* 6 x 2 vectors: 12 of the 16 registers, 2 for x, 1 for a broadcast */
#define NO ((int)(VB / sizeof(real))) /* one vector x NC taps: 9 of 16 */
#define CL ((int)(VB / sizeof(real)))
#define NOF 1
#endif
#define VL ((int)(VB / sizeof(real))) /* reals per vector */
#define NR (2 * VL) /* output columns per forward tile: two vectors */
#define SHORT 8 /* rows of up to SHORT outputs are gathered or run as one long row (idea 6) */
#ifndef ROWCOLS /* a forward task's short rows together have up to this many outputs */
#if defined(__AVX512F__)
#define ROWCOLS 512 /* AVX-512 with two fma units, one thread, forward GFLOP/s per core: 384 -> 384 at
                       2 x 64 x 64 113 -> 150, 32 -> 32 at 17 x 64 x 64 133-142 -> 153-158 (one row per task before) */
#else
#define ROWCOLS 128 /* AVX2, one thread: 384 -> 384 at 2 x 32 x 32 39 -> 63 GFLOP/s per core; rows of
                          16 this way 55-57 against 48-49 as long rows (128 -> 128 at 9 x 16 x 16) */
#endif
#endif
#define CB IVAE_CONV_CHAIN /* input channels per fma chain (the summation rule) */
#define SEG 128 /* output columns per forward task (a multiple of NR): one row's inputs stay in L2 */
#define NC 9  /* kernel taps per weight-gradient tile (3 rows of 3) */
#define NI 6  /* input channels per 1x1x1 weight-gradient tile */
#define TP 64 /* positions per piece of the weight gradient's transposed dy */
#ifndef WGRAD_WHOLE
#define WGRAD_WHOLE ((size_t)1 << 17) /* floats of transposed dy (512 KB, half an L2) up to which a weight gradient's
                                         tasks run all frames, each task reading all of it: AVX2, one thread, 128 ->
                                         128 at 5 x 8 x 8 21 -> 26 GFLOP/s against a loop per frame. The limit was
                                         1 << 20 (4 MB, past L2); at 1 << 17 a loop per frame takes 32 > 32 at
                                         stride 1,2,2 from 17 x 64 x 64: 157 -> 182 (AVX-512, Zen 5) */
#endif
#define GATHER ((size_t)1 << 21) /* floats of a small-frame forward's gathered frames at a time (8 MB) */

/* the geometry of a padded, phase-split copy of a (C, T, H, W) tensor */
typedef struct {
    int Tp, Hp, Wp;  /* padded sizes */
    int sw, half;    /* column stride; columns per phase */
    int Wrow;        /* floats per stored row: sw * half */
    size_t cs;       /* floats per channel */
} Padded;

/* where padded column col is stored within its row */
static int col_index(const Padded *g, int col) { return (col % g->sw) * g->half + col / g->sw; }

/* floats to allocate beyond the last channel: tiles read up to NR-1 columns
   past a row's valid outputs (those lanes are computed and thrown away) */
static size_t pad_slack(const Padded *g) { return (size_t)g->Wrow + 2 * NR + 64; }

static void pad_geometry(Padded *g, int T, int H, int W, int tfront, int tback, IvaePad p, int sw) {
    g->Tp = T + tfront + tback;
    g->Hp = H + p.top + p.bottom;
    g->Wp = W + p.left + p.right;
    g->sw = sw;
    g->half = (g->Wp + sw - 1) / sw;
    g->Wrow = g->half * sw;
    g->cs = (size_t)g->Tp * g->Hp * g->Wrow;
}

/* xp = x zero-padded (tfront/tback frames, p's rows and columns), phase-split.
   When streaming, the tfront frames in front are the previous chunk's last
   frames, prev (C, tfront, H, W), instead of zeros. */
static real *pad_input(int slot, Padded *g, const real *x, int C, int T, int H, int W, const real *prev,
                       int tfront, int tback, IvaePad p, int sw) {
    pad_geometry(g, T, H, W, tfront, tback, p, sw);
    size_t n = (size_t)C * g->cs + pad_slack(g);
    real *xp = ivae_scratch(slot, n);
    const Padded G = *g;
#pragma omp parallel for schedule(static) IVAE_PAR((double)C * G.Tp * G.Hp * G.Wrow)
    for (int ct = 0; ct < C * G.Tp; ct++) {
        int c = ct / G.Tp, tp = ct % G.Tp, t = tp - tfront;
        real *f = xp + (size_t)ct * G.Hp * G.Wrow;
        if (t >= T || (t < 0 && !prev)) { /* a padding frame */
            memset(f, 0, (size_t)G.Hp * G.Wrow * sizeof(real));
            continue;
        }
        /* narrow rows (up to 64 columns): the frame cleared at once, then the rows' values, instead
           of two memsets of a column or two per row (one thread, 128 -> 128 at 5 x 8 x 8, forward
           and input gradient 102-110 -> 111-112 GFLOP/s); wider rows: each float written once, the
           padding rows, then per row its padding and its values */
        int narrow = W <= 64;
        if (narrow) memset(f, 0, (size_t)G.Hp * G.Wrow * sizeof(real));
        else {
            memset(f, 0, (size_t)p.top * G.Wrow * sizeof(real));
            memset(f + (size_t)(p.top + H) * G.Wrow, 0, (size_t)(G.Hp - p.top - H) * G.Wrow * sizeof(real));
        }
        for (int h = 0; h < H; h++) {
            const real *src = t >= 0 ? x + (((size_t)c * T + t) * H + h) * W : prev + (((size_t)c * tfront + tp) * H + h) * W;
            real *dst = f + (size_t)(h + p.top) * G.Wrow;
            if (G.sw == 1) {
                if (!narrow) memset(dst, 0, (size_t)p.left * sizeof(real));
                memcpy(dst + p.left, src, (size_t)W * sizeof(real));
                if (!narrow) memset(dst + p.left + W, 0, (size_t)(G.Wrow - p.left - W) * sizeof(real));
                continue;
            }
            if (!narrow) memset(dst, 0, (size_t)G.Wrow * sizeof(real));
            if (G.sw == 2) { /* padded column w + left at (w + left) % 2 half + (w + left) / 2: in pairs of
                                columns (w, w + 1) with w + left even, one to each phase (the general loop
                                below, a division per phase and row and a loop of 8 each, was 9% of 128 > 128's
                                weight gradient from 9 x 16 x 16) */
                real *ph0 = dst, *ph1 = dst + G.half;
                int w = p.left % 2; /* the first w with w + left even */
                if (w) ph1[p.left / 2] = src[0];
                int n = (W - w) / 2, j0 = (w + p.left) / 2;
                const real *sp = src + w;
                for (int k = 0; k < n; k++) {
                    ph0[j0 + k] = sp[2 * k];
                    ph1[j0 + k] = sp[2 * k + 1];
                }
                if (w + 2 * n < W) ph0[j0 + n] = src[W - 1];
            } else { /* phase r holds the padded columns r, r + sw, ...: input columns w = j sw + r - left */
                for (int r = 0; r < G.sw; r++) {
                    real *ph = dst + (size_t)r * G.half;
                    int j = r >= p.left ? 0 : (p.left - r + G.sw - 1) / G.sw; /* the first j with w >= 0 */
                    for (int w = j * G.sw + r - p.left; w < W; j++, w += G.sw) ph[j] = src[w];
                }
            }
        }
    }
    memset(xp + (size_t)C * g->cs, 0, pad_slack(g) * sizeof(real));
    return xp;
}

/* One block's chain for a forward tile: part[m][n] = the fma chain over input
   channels i0 .. i1-1 (in increasing order) and, for each, its K taps, for
   MR output channels and nr columns. x: the tile's first column in channel
   0; columns VL.. (the second vector) come from x + off2 (VL: the same row;
   a row's length: the next row, for tiles of two rows of VL columns);
   wpk: the tile's packed weights (Cin, K, MR). prefetch: ask for the next
   tile's input columns of each row now (rows wider than a task's segment,
   where the hardware's own prefetch fell behind: 96 channels at 256 x 256
   went from 78-84 to 94-101 GFLOP/s per core; narrower rows were 5-10%
   slower with it). */
static inline __attribute__((always_inline)) void conv_chain_rows(real part[MR][NR], const real *restrict x,
                                                                  size_t off2, size_t cs, const int *restrict toff,
                                                                  const real *restrict wpk, int i0, int i1, int K,
                                                                  int nr, int prefetch, int mr) {
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++) part[m][n] = 0;
    for (int i = i0; i < i1; i++) {
        const real *xi = x + (size_t)i * cs, *wi = wpk + (size_t)i * K * MR;
        if (prefetch)
            for (int k = 0; k < K; k += 3) /* one per row of taps and cache line: the row's next NR columns */
                for (int c = 0; c < nr; c += (int)(64 / sizeof(real))) __builtin_prefetch(xi + toff[k] + nr + c);
        for (int k = 0; k < K; k++) {
            const real *xr = xi + toff[k], *xr2 = xr + off2, *wk = wi + (size_t)k * MR;
            for (int m = 0; m < mr; m++) {
#pragma omp simd
                for (int n = 0; n < (nr < VL ? nr : VL); n++) part[m][n] = FMA(wk[m], xr[n], part[m][n]);
#pragma omp simd
                for (int n = VL; n < nr; n++) part[m][n] = FMA(wk[m], xr2[n - VL], part[m][n]);
            }
        }
    }
}

/* the chain of the tile's first n_o <= MR channels: only the rows it needs of
   a tile of MR, 2/3 MR or 1/3 MR rows (each output's chain is the same in
   any of them). The last block of 32 or 64 output channels holds 8 or 4
   (12 + 12 + 8, 5 x 12 + 4), decoder.conv_out 3: the full tile computed a
   third to two thirds of its rows for nothing, 11% of the work at 32 and 64
   channels. */
static inline __attribute__((always_inline)) void conv_chain(real part[MR][NR], const real *restrict x, size_t off2,
                                                             size_t cs, const int *restrict toff,
                                                             const real *restrict wpk, int i0, int i1, int K, int nr,
                                                             int prefetch, int n_o) {
    if (n_o > 2 * MR / 3) conv_chain_rows(part, x, off2, cs, toff, wpk, i0, i1, K, nr, prefetch, MR);
    else if (n_o > MR / 3) conv_chain_rows(part, x, off2, cs, toff, wpk, i0, i1, K, nr, prefetch, 2 * MR / 3);
    else conv_chain_rows(part, x, off2, cs, toff, wpk, i0, i1, K, nr, prefetch, MR / 3);
}

/* y[m][n] = (first ? 0 : y[m][n]) + part[m][c0 + n] (+ bias[m] if last), for
   m < n_o, n < nw: a block's chain added into the sum of the blocks so far */
static inline __attribute__((always_inline)) void tile_add(real *restrict y, size_t ystride, real part[MR][NR],
                                                           int c0, int nw, int n_o, int first, int last,
                                                           const real *bias) {
    for (int m = 0; m < n_o; m++)
#pragma omp simd
        for (int n = 0; n < nw; n++) {
            real v = (first ? 0 : y[m * ystride + n]) + part[m][c0 + n];
            y[m * ystride + n] = last && bias ? v + bias[m] : v;
        }
}

/* y[n] = (first ? 0 : y[n]) + p[n] (+ b if addb), n < nn: one channel's
   row of a full tile, unrolled by its callers so that part stays in
   registers (the generic tile_add put it on the stack) */
static inline __attribute__((always_inline)) void row_add(real *restrict y, const real *p, int nn, int first,
                                                          int addb, real b) {
#pragma omp simd
    for (int n = 0; n < nn; n++) {
        real v = (first ? 0 : y[n]) + p[n];
        y[n] = addb ? v + b : v;
    }
}

/* A forward row segment: y[m][w] for n_o <= MR output channels and n_w
   columns, of nrows rows (x's rows xrs floats apart, y's yrs). Per block of
   CB input channels, each row's tiles of nr columns run the block's chain
   in registers and add it into y, which holds the sum of the blocks so far
   (the first block: 0 + part, so never -0); the last block also adds the
   bias: y = (sum of the blocks' chains) + bias. The block's weights (CB x K
   x MR floats) stay in L1 while the segment's tiles use them. pair (rows of
   VL columns): a tile is two rows, one vector of each (an odd last row
   computes its first vector twice and keeps one). */
static inline __attribute__((always_inline)) void conv_segment(real *restrict y, size_t ystride, int n_o, int n_w,
                                                               const real *restrict x, size_t cs,
                                                               const int *restrict toff, const real *restrict wpk,
                                                               int Cin, int K, const real *bias, int nr, int prefetch,
                                                               int pair, int nrows, size_t xrs, size_t yrs) {
    for (int i0 = 0; i0 < Cin; i0 += CB) {
        int i1 = i0 + CB < Cin ? i0 + CB : Cin, first = i0 == 0, last = i1 == Cin;
        for (int r = 0; r < nrows; r += pair ? 2 : 1)
        for (int w0 = 0; w0 < n_w; w0 += nr) {
            real part[MR][NR];
            real *yt = y + r * yrs + w0;
            if (pair) {
                int two = r + 1 < nrows;
                conv_chain(part, x + r * xrs, two ? xrs : 0, cs, toff, wpk, i0, i1, K, NR, 0, n_o);
                if (n_o == MR && two) {
                    for (int m = 0; m < MR; m++) {
                        real *ym = yt + m * ystride, b = last && bias ? bias[m] : 0;
                        row_add(ym, part[m], VL, first, last && bias, b);
                        row_add(ym + yrs, part[m] + VL, VL, first, last && bias, b);
                    }
                    continue;
                }
                tile_add(yt, ystride, part, 0, VL, n_o, first, last, bias);
                if (two) tile_add(yt + yrs, ystride, part, VL, VL, n_o, first, last, bias);
                continue;
            }
            conv_chain(part, x + r * xrs + w0, VL, cs, toff, wpk, i0, i1, K, nr, prefetch, n_o);
            if (n_o == MR && n_w - w0 >= nr) {
                for (int m = 0; m < MR; m++)
                    row_add(yt + m * ystride, part[m], nr, first, last && bias, last && bias ? bias[m] : 0);
            } else tile_add(yt, ystride, part, 0, n_w - w0 < nr ? n_w - w0 : nr, n_o, first, last, bias);
        }
    }
}

/* the segment with tiles of NR columns (prefetching for long rows), of
   NR/2 for narrow rows (a row of 48 columns would leave a third of the
   wide tiles' lanes unused), and of two rows for rows of NR/2 (the narrow
   tile's single vector of x per broadcast weight made those rows 20% slower
   than rows of 32: 128 -> 128 at 9 x 16 x 16, one thread, forward 138
   against 174 GFLOP/s per core at 9 x 32 x 32) */
typedef void SegmentFn(real *restrict y, size_t ystride, int n_o, int n_w, const real *restrict x, size_t cs,
                       const int *restrict toff, const real *restrict wpk, int Cin, int K, const real *bias,
                       int nrows, size_t xrs, size_t yrs);
static void conv_segment_wide(real *restrict y, size_t ystride, int n_o, int n_w, const real *restrict x, size_t cs,
                              const int *restrict toff, const real *restrict wpk, int Cin, int K, const real *bias,
                              int nrows, size_t xrs, size_t yrs) {
    conv_segment(y, ystride, n_o, n_w, x, cs, toff, wpk, Cin, K, bias, NR, 0, 0, nrows, xrs, yrs);
}
static void conv_segment_long(real *restrict y, size_t ystride, int n_o, int n_w, const real *restrict x, size_t cs,
                              const int *restrict toff, const real *restrict wpk, int Cin, int K, const real *bias,
                              int nrows, size_t xrs, size_t yrs) {
    conv_segment(y, ystride, n_o, n_w, x, cs, toff, wpk, Cin, K, bias, NR, 1, 0, nrows, xrs, yrs);
}
static void conv_segment_narrow(real *restrict y, size_t ystride, int n_o, int n_w, const real *restrict x, size_t cs,
                                const int *restrict toff, const real *restrict wpk, int Cin, int K, const real *bias,
                                int nrows, size_t xrs, size_t yrs) {
    conv_segment(y, ystride, n_o, n_w, x, cs, toff, wpk, Cin, K, bias, NR / 2, 0, 0, nrows, xrs, yrs);
}
static void conv_segment_pair(real *restrict y, size_t ystride, int n_o, int n_w, const real *restrict x, size_t cs,
                              const int *restrict toff, const real *restrict wpk, int Cin, int K, const real *bias,
                              int nrows, size_t xrs, size_t yrs) {
    conv_segment(y, ystride, n_o, n_w, x, cs, toff, wpk, Cin, K, bias, NR, 0, 1, nrows, xrs, yrs);
}

/* out (Cout, To, Ho, Wo) from a padded input whose frame t0 + t*st is output
   frame t's first tap; wpk holds the weights packed as (Cout/MR blocks, Cin,
   K, MR), zero rows past Cout. A task is MR channels x one segment of up to
   SEG columns of one output row. */
static void conv_padded_to(real *out, size_t plane, const real *xp, const Padded *g, const real *wpk,
                           const real *bias, int Cin, int Cout, int t0, int To, int Ho, int Wo, int kt, int kh,
                           int kw, int st, int sh) {
    int K = kt * kh * kw, toff[K];
    for (int a = 0; a < kt; a++)
        for (int c = 0; c < kh; c++)
            for (int d = 0; d < kw; d++) toff[(a * kh + c) * kw + d] = (a * g->Hp + c) * g->Wrow + col_index(g, d);
    int nob = (Cout + MR - 1) / MR, nseg = (Wo + SEG - 1) / SEG;
    /* Small frames, gathered: with rows of up to 8 outputs (any stride) and
       at least 32 output channels, each frame's inputs are first copied per
       (input channel, tap) into one row of the frame's Ho x Wo outputs (an
       im2col of one frame, Cin x K rows of Q floats), and the wide tile runs
       along it with tap offsets k Q: every lane is an output (a row of 8
       fills half a narrow tile), and each output's chain is the one it has
       in a row of its own, so the bits do not change. One thread,
       test/bench_conv, GFLOP/s per core before / after: 128 -> 128 at
       5 x 8 x 8 forward 62 / 71, input gradient 59 / 65; stride 2,2,2 from
       9 x 16 x 16 forward 40 / 60; 16 -> 128 forward 62 / 77. Slower where
       the copy is shared by fewer outputs (128 -> 16: 41 / 30) and on rows of
       16 (128 -> 128 at 9 x 16 x 16: 91 / 70, the gathered frame no longer
       in L2). Frames go in groups of at most GATHER floats of copies. */
    size_t Q = ((size_t)Ho * Wo + NR - 1) / NR * NR, fs = (size_t)Cin * K * Q; /* floats per gathered frame */
    if (Wo <= SHORT && Q <= 1024 && Cout >= 32) {
        int fg = GATHER / fs > 1 ? (int)(GATHER / fs) : 1; /* frames per group */
        if (fg > To) fg = To;
        real *col = ivae_scratch(SCR_COL, fs * fg);
        int qoff[K];
        for (int k = 0; k < K; k++) qoff[k] = k * (int)Q;
        const Padded G = *g;
        for (int tg = 0; tg < To; tg += fg) {
            int nt = To - tg < fg ? To - tg : fg;
#pragma omp parallel for schedule(static) IVAE_PAR((double)nt * Cin * K * Q)
            for (int ti = 0; ti < nt * Cin; ti++) {
                int t = ti / Cin, i = ti % Cin;
                const real *xf = xp + (size_t)i * G.cs + (size_t)(t0 + (tg + t) * st) * G.Hp * G.Wrow;
                real *dst = col + (size_t)t * fs + (size_t)i * K * Q;
                for (int k = 0; k < K; k++, dst += Q) {
                    const real *src = xf + toff[k];
                    if (Wo == SHORT) /* rows of 8: one vector move each (a memcpy call per 32 bytes was 9% of
                                        128 > 128's input gradient at stride 2,2,2 from 9 x 16 x 16) */
                        for (int h = 0; h < Ho; h++)
                            for (int w = 0; w < SHORT; w++) dst[h * SHORT + w] = src[(size_t)h * sh * G.Wrow + w];
                    else
                        for (int h = 0; h < Ho; h++)
                            memcpy(dst + (size_t)h * Wo, src + (size_t)h * sh * G.Wrow, (size_t)Wo * sizeof(real));
                    if (Q > (size_t)Ho * Wo) memset(dst + (size_t)Ho * Wo, 0, (Q - (size_t)Ho * Wo) * sizeof(real));
                }
            }
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * nt * Ho * Wo * Cin * K)
            for (int task = 0; task < nob * nt; task++) {
                int ob = task % nob, t = task / nob, o0 = ob * MR, n_o = Cout - o0 < MR ? Cout - o0 : MR;
                real frame[MR * 1024], b[MR] = {0};
                for (int m = 0; bias && m < n_o; m++) b[m] = bias[o0 + m];
                conv_segment_wide(frame, Q, MR, (int)Q, col + (size_t)t * fs, (size_t)K * Q, qoff,
                                  wpk + (size_t)ob * Cin * K * MR, Cin, K, bias ? b : NULL, 1, 0, 0);
                for (int m = 0; m < n_o; m++)
                    memcpy(out + (size_t)(o0 + m) * plane + (size_t)(tg + t) * Ho * Wo, frame + m * Q,
                           (size_t)Ho * Wo * sizeof(real));
            }
        }
        return;
    }
    /* Short rows (up to 8 outputs: the latent-sized frames of 8 x 8) with
       fewer than 32 output channels (the others are gathered, above) as one
       long row: at stride 1 in h and w, output (h, w) reads the padded
       input at q + toff[k], q = h * Wrow + w, so a frame's outputs are a row
       of Ho x Wrow positions whose columns w >= Wo are thrown away. Its tiles
       fill (8 x 8: 67% of the lanes used instead of 50%) and take the wide
       tile's two vectors of x per weight broadcast. Each kept output's chain
       is the one it has in a row of its own, so the bits do not change.
       128 -> 128 channels at 5 x 8 x 8, one thread: forward 49 -> 66,
       input gradient 46 -> 63 GFLOP/s (at 16 x 16 rows of 16 were faster:
       102 against 89-93). */
    size_t lq = ((size_t)Ho * g->Wrow + NR - 1) / NR * NR;
    if (sh == 1 && g->sw == 1 && Wo <= SHORT && lq <= 1024) {
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * To * Ho * Wo * Cin * K)
        for (int task = 0; task < nob * To; task++) {
            int ob = task % nob, t = task / nob, o0 = ob * MR, n_o = Cout - o0 < MR ? Cout - o0 : MR;
            real frame[MR * 1024], b[MR] = {0}; /* all MR rows (the packed weights are 0 past Cout) */
            for (int m = 0; bias && m < n_o; m++) b[m] = bias[o0 + m];
            conv_segment_wide(frame, lq, MR, (int)lq, xp + (size_t)(t0 + t * st) * g->Hp * g->Wrow, g->cs, toff,
                              wpk + (size_t)ob * Cin * K * MR, Cin, K, bias ? b : NULL, 1, 0, 0);
            for (int m = 0; m < n_o; m++)
                for (int h = 0; h < Ho; h++)
                    memcpy(out + (size_t)(o0 + m) * plane + ((size_t)t * Ho + h) * Wo, frame + m * lq + (size_t)h * g->Wrow,
                           (size_t)Wo * sizeof(real));
        }
        return;
    }
    /* narrow tiles where they waste fewer lanes (48 columns; a row of 32 or 64 is the same either way), rows of
       one vector (16 columns) in tiles of two rows */
    int narrow = (Wo + NR / 2 - 1) / (NR / 2) * (NR / 2) < (Wo + NR - 1) / NR * NR;
    SegmentFn *segment = Wo == VL ? conv_segment_pair : narrow ? conv_segment_narrow
                         : nseg > 1 ? conv_segment_long : conv_segment_wide;
    /* rows shorter than ROWCOLS outputs go RG to a task, so that a block's
       weights, once in L1, serve RG rows (AVX2's 16-column tiles used each
       only once on a row of 16; AVX-512's two tiles of a 64-column row) */
    int RG = Wo < ROWCOLS ? ROWCOLS / Wo : 1, nrg = (Ho + RG - 1) / RG;
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * To * Ho * Wo * Cin * K)
    for (int task = 0; task < nob * To * nrg * nseg; task++) {
        /* ob fastest: neighbouring tasks read the same input rows */
        int ob = task % nob, s = task / nob % nseg, hg = task / nob / nseg % nrg, t = task / nob / nseg / nrg;
        int o0 = ob * MR, n_o = Cout - o0 < MR ? Cout - o0 : MR, w0 = s * SEG, h = hg * RG;
        const real *xrow = xp + ((size_t)(t0 + t * st) * g->Hp + (size_t)h * sh) * g->Wrow;
        segment(
            out + (size_t)o0 * plane + ((size_t)t * Ho + h) * Wo + w0, plane, n_o, Wo - w0 < SEG ? Wo - w0 : SEG,
            xrow + w0, g->cs, toff, wpk + (size_t)ob * Cin * K * MR, Cin, K, bias ? bias + o0 : NULL,
            Ho - h < RG ? Ho - h : RG, (size_t)sh * g->Wrow, (size_t)Wo);
    }
}

/* out's channels are To x Ho x Wo apart (the common case) */
static void conv_padded(real *out, const real *xp, const Padded *g, const real *wpk, const real *bias, int Cin,
                        int Cout, int t0, int To, int Ho, int Wo, int kt, int kh, int kw, int st, int sh) {
    conv_padded_to(out, (size_t)To * Ho * Wo, xp, g, wpk, bias, Cin, Cout, t0, To, Ho, Wo, kt, kh, kw, st, sh);
}

/* A 1x1x1 conv of x (Cin, N) into out (Cout, N) is a matrix product,
   blocked for the registers and the caches:
   - x is packed into panels of FN positions (Cin x FN floats each), the
     last panel zero-padded. A panel's Cin rows of FN floats are then
     contiguous (in x itself they are N floats apart: with N a multiple of
     1024, as at 64 x 64, every row fell into the same L1 set).
   - A tile is one packed block of MR output channels x the FN positions of
     one panel, for all Cin input channels: the sum of the blocks so far
     (acc) and the block's chain (part) both stay in registers (2 x 12
     vectors of 16 floats), so y is written once, with the bias, instead of
     read and written once per block of CB channels. Per input channel the
     tile's 12 fmas need one vector load of x and 12 broadcasts of w.
     The block's end is a test inside the one loop over the channels: with
     a loop per block gcc kept acc and part on the stack, 3 stores and 3
     loads per 8 fmas (66 -> 91-99 GFLOP/s per core in L2 with the test).
   - A task is a segment of up to FPANEL / (Cin x FN) panels (64 KB, in L2)
     x every block of output channels: it packs the segment's panels once
     (reading x straight from memory, panel by panel), then runs the tiles
     block by block, so that a block's weights (Cin x MR floats) stay in L1
     while they sweep the panels. (Packing all of x first, in its own pass,
     cost a second trip through memory: slower at 64 -> 32 channels.)
   The order is the rule's: per block of CB channels a fresh chain over its
   channels in increasing order, added to acc in increasing block order
   (the first block: 0 + part), then the bias. */
#define FN VL /* positions per 1x1 tile: one vector */
#define FPANEL 16384 /* floats of packed panels per 1x1 task (64 KB): in L2 */

static inline __attribute__((always_inline)) void flat_tile(real *restrict y, size_t ys, int n_o, int nw,
                                                            const real *restrict xt, const real *restrict wpk,
                                                            int Cin, const real *bias) {
    real acc[MR][FN], part[MR][FN];
    for (int m = 0; m < MR; m++)
        for (int n = 0; n < FN; n++) acc[m][n] = part[m][n] = 0;
    /* one loop over the channels, the block's end inside it: so that the compiler keeps
       both acc and part in registers for the whole loop */
    for (int i = 0; i < Cin; i++) {
        const real *xi = xt + (size_t)i * FN, *wi = wpk + (size_t)i * MR;
        for (int m = 0; m < MR; m++)
#pragma omp simd
            for (int n = 0; n < FN; n++) part[m][n] = FMA(wi[m], xi[n], part[m][n]);
        if (i % CB == CB - 1 || i == Cin - 1)
            for (int m = 0; m < MR; m++)
#pragma omp simd
                for (int n = 0; n < FN; n++) {
                    acc[m][n] = acc[m][n] + part[m][n];
                    part[m][n] = 0;
                }
    }
    if (bias)
        for (int m = 0; m < MR; m++) {
            real b = m < n_o ? bias[m] : 0;
#pragma omp simd
            for (int n = 0; n < FN; n++) acc[m][n] = acc[m][n] + b;
        }
    if (n_o == MR && nw == FN)
        for (int m = 0; m < MR; m++)
#pragma omp simd
            for (int n = 0; n < FN; n++) y[m * ys + n] = acc[m][n];
    else { /* through a copy, so that acc itself is only ever indexed by constants (and stays in registers) */
        real tmp[MR][FN];
        for (int m = 0; m < MR; m++)
#pragma omp simd
            for (int n = 0; n < FN; n++) tmp[m][n] = acc[m][n];
        for (int m = 0; m < n_o; m++)
            if (nw == FN) memcpy(y + m * ys, tmp[m], sizeof tmp[m]);
            else memcpy(y + m * ys, tmp[m], (size_t)nw * sizeof(real));
    }
}

static void conv_flat(real *out, const real *x, const real *wpk, const real *bias, int Cin, int Cout, size_t N) {
    size_t np = (N + FN - 1) / FN;
    int fseg = FPANEL / (Cin * FN) > 1 ? FPANEL / (Cin * FN) : 1, nob = (Cout + MR - 1) / MR;
    size_t nseg = (np + fseg - 1) / fseg, per = (size_t)fseg * Cin * FN;
    real *panels = ivae_scratch(SCR_PAD, per * max_threads());
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * Cin * N)
    for (size_t s = 0; s < nseg; s++) {
        size_t p0 = s * fseg, p1 = p0 + fseg < np ? p0 + fseg : np;
        real *xpk = panels + per * thread_id();
        for (size_t p = p0; p < p1; p++) /* pack the segment's panels */
            for (int i = 0; i < Cin; i++) {
                size_t n0 = p * FN, nw = N - n0 < FN ? N - n0 : FN;
                real *dst = xpk + ((p - p0) * Cin + i) * FN;
                const real *src = x + (size_t)i * N + n0;
                if (nw == FN)
#pragma omp simd
                    for (int n = 0; n < FN; n++) dst[n] = src[n];
                else
                    for (size_t n = 0; n < FN; n++) dst[n] = n < nw ? src[n] : 0;
            }
        for (int ob = 0; ob < nob; ob++) {
            int o0 = ob * MR, n_o = Cout - o0 < MR ? Cout - o0 : MR;
            const real *w = wpk + (size_t)ob * Cin * MR, *b = bias ? bias + o0 : NULL;
            for (size_t p = p0; p < p1; p++) {
                size_t n0 = p * FN;
                int nw = N - n0 < FN ? (int)(N - n0) : FN;
                flat_tile(out + (size_t)o0 * N + n0, N, n_o, nw, xpk + (p - p0) * Cin * FN, w, Cin, b);
            }
        }
    }
}

/* floats of W (Cout, Cin, K) packed for conv_tile */
size_t ivae_conv3d_packed_size(int Cout, int Cin, int K) { return (size_t)((Cout + MR - 1) / MR) * Cin * K * MR; }

/* packs nph kernels of W (Cout, Cin, K) for conv_tile, one after another in
   wpk, each (Cout/MR blocks, Cin, nk[p], MR); kernel p's taps are
   src[o_p .. o_p + nk[p] - 1], o_p = nk[0] + ... + nk[p-1]. flip = input
   gradient kernels: in and out channels swapped (src already in the flipped
   order). One pass over W: each of its (o, i) kernels is read once for all
   nph (the phases of a strided input gradient each reading all of W, in L3,
   were 15% of 128 -> 128 at 9 x 16 x 16). */
static void pack_kernels(real *wpk, const real *weight, int Cout, int Cin, int K, int nph, const int *nk,
                         const int *src, int flip) {
    int rows = flip ? Cin : Cout, cols = flip ? Cout : Cin, nb = (rows + MR - 1) / MR, ntap = 0;
    size_t off[nph + 1];
    off[0] = 0;
    for (int p = 0; p < nph; p++) off[p + 1] = off[p] + (size_t)nb * cols * nk[p] * MR, ntap += nk[p];
    /* tasks (b, i) in the order W holds their kernels (flipped: block b's MR kernels are
       contiguous in W for each i) */
#pragma omp parallel for schedule(static) IVAE_PAR((double)rows * cols * ntap)
    for (int task = 0; task < nb * cols; task++) {
        int b = flip ? task % nb : task / cols, i = flip ? task / nb : task % cols;
        const real *w[MR]; /* the block's MR kernels of W (NULL: past the last row, packed as 0) */
        for (int m = 0; m < MR; m++) {
            int r = b * MR + m;
            w[m] = r >= rows ? NULL : flip ? weight + ((size_t)i * Cin + r) * K : weight + ((size_t)r * Cin + i) * K;
        }
        for (int p = 0, j = 0; p < nph; p++) {
            real *dst = wpk + off[p] + ((size_t)b * cols + i) * nk[p] * MR;
            for (int k = 0; k < nk[p]; k++, j++)
                for (int m = 0; m < MR; m++) dst[k * MR + m] = w[m] ? w[m][src[j]] : 0;
        }
    }
}

/* packs W (Cout, Cin, K) for conv_tile into wpk; flip = the input gradient's
   kernel: in and out channels swapped and the taps reversed */
void ivae_conv3d_pack(real *wpk, const real *weight, int Cout, int Cin, int K, int flip) {
    int tap[K];
    for (int k = 0; k < K; k++) tap[k] = flip ? K - 1 - k : k;
    pack_kernels(wpk, weight, Cout, Cin, K, 1, &K, tap, flip);
}

static real *pack_weights(const real *weight, int Cout, int Cin, int K) {
    real *wpk = ivae_scratch(SCR_WPACK, ivae_conv3d_packed_size(Cout, Cin, K));
    ivae_conv3d_pack(wpk, weight, Cout, Cin, K, 0);
    return wpk;
}

/* One phase of one dimension of the input gradient (idea 4). Along a
   dimension of D inputs, kernel k, stride s and `lead` = the taps before the
   centre (kt-1 in time, k/2 in space), input x = s*q + r reads output
   (x + lead - c)/s through tap c, when that is a whole number in [0, Do).
   So phase r is read by the taps c = c0 + s*j (j < nk) only, through the
   outputs q + e - j. */
typedef struct {
    int n;      /* inputs in the phase: x = s*q + r, q < n */
    int c0, nk; /* its taps: c0, c0 + s, ..., nk of them (0: none, its gradient is 0) */
    int e;      /* tap c0 reads output q + e */
} Phase;

static Phase phase_of(int D, int k, int s, int lead, int r) {
    Phase p;
    p.n = r < D ? (D - r + s - 1) / s : 0;
    p.c0 = (r + lead) % s;
    p.nk = p.c0 < k ? (k - p.c0 + s - 1) / s : 0;
    p.e = (r + lead) / s;
    return p;
}

/* the phases of a conv's three dimensions, in the order its packed input
   gradient kernel holds them: rt, then rh, then rw */
static void phases_of(Phase *pt, Phase *ph, Phase *pw, int T, int H, int W, int kt, int kh, int kw, int st, int sh,
                      int sw) {
    for (int r = 0; r < st; r++) pt[r] = phase_of(T, kt, st, kt - 1, r);
    for (int r = 0; r < sh; r++) ph[r] = phase_of(H, kh, sh, kh / 2, r);
    for (int r = 0; r < sw; r++) pw[r] = phase_of(W, kw, sw, kw / 2, r);
}

/* packs the input gradient's kernel of W (Cout, Cin, kt, kh, kw) into wpk:
   per phase (rt, rh, rw) in row-major order, its taps (a, c, d) flipped
   (stride 1: one phase, the whole kernel flipped, as ivae_conv3d_pack);
   ivae_conv3d_packed_size(Cin, Cout, kt * kh * kw) floats in all */
void ivae_conv3d_pack_dinp(real *wpk, const real *weight, int Cout, int Cin, int kt, int kh, int kw, int st, int sh,
                           int sw) {
    Phase pt[st], ph[sh], pw[sw];
    phases_of(pt, ph, pw, 1, 1, 1, kt, kh, kw, st, sh, sw);
    int K = kt * kh * kw, src[K], nk[st * sh * sw], nph = 0, ntap = 0;
    for (int rt = 0; rt < st; rt++)
        for (int rh = 0; rh < sh; rh++)
            for (int rw = 0; rw < sw; rw++) {
                Phase a = pt[rt], c = ph[rh], d = pw[rw];
                int n = a.nk * c.nk * d.nk, j = 0; /* the phase's taps, the last first (flipped) */
                if (!n) continue;
                for (int ja = 0; ja < a.nk; ja++)
                    for (int jc = 0; jc < c.nk; jc++)
                        for (int jd = 0; jd < d.nk; jd++, j++)
                            src[ntap + n - 1 - j] = ((a.c0 + st * ja) * kh + c.c0 + sh * jc) * kw + d.c0 + sw * jd;
                nk[nph++] = n, ntap += n;
            }
    pack_kernels(wpk, weight, Cout, Cin, K, nph, nk, src, 1);
}

/* wpk: the packed weights (NULL: pack them here) */
int ivae_conv3d_forward_chunk_tuned(real *out, const real *inp, const real *prev, int s0, const real *wpk,
                                    const real *weight, const real *bias, int Cin, int T, int H, int W, int Cout,
                                    int kt, int kh, int kw, int st, int sh, int sw) {
    return ivae_conv3d_forward_padded_tuned(out, inp, prev, s0, wpk, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st,
                                            sh, sw, ivae_pad_same(kh, kw));
}

int ivae_conv3d_forward_padded_tuned(real *out, const real *inp, const real *prev, int s0, const real *wpk,
                                     const real *weight, const real *bias, int Cin, int T, int H, int W, int Cout,
                                     int kt, int kh, int kw, int st, int sh, int sw, IvaePad pad) {
    int first = (s0 + st - 1) / st, last = (s0 + T - 1) / st, To = last - first + 1;
    if (To <= 0) return 0;
    if (!wpk) wpk = pack_weights(weight, Cout, Cin, kt * kh * kw);
    Padded g;
    if (kt * kh * kw == 1 && st * sh * sw == 1 && !pad.top && !pad.bottom && !pad.left && !pad.right) {
        conv_flat(out, inp, wpk, bias, Cin, Cout, (size_t)T * H * W);
        return To;
    }
    const real *xp = pad_input(SCR_PAD, &g, inp, Cin, T, H, W, prev, kt - 1, 0, pad, sw);
    /* padded frame j is clip frame s0 - (kt-1) + j; output t' starts at clip frame t'*st - (kt-1) */
    conv_padded(out, xp, &g, wpk, bias, Cin, Cout, first * st - s0, To, ivae_conv_out_padded(H, kh, sh, pad.top, pad.bottom),
                ivae_conv_out_padded(W, kw, sw, pad.left, pad.right), kt, kh, kw, st, sh);
    return To;
}

/* One output row of a weight-gradient tile: NO output channels x nc taps of
   input channel i, a fresh fma chain along the row (from +0: the first
   position's fma adds its product to 0), added into the frame's sums
   (first: the frame's first row, 0 + the row's chain). x[k] points at tap
   k's input row (column w of the row is x[k][w]); dyt at the row's first
   position, NO channels each. The chains stay in registers and are added
   into frame straight from them: with the chains' zeroing and the frame's
   sum in arrays of their own, gcc cleared both with memset and moved the
   chains through the stack once per row (a third of the time on rows of 16). */
static inline __attribute__((always_inline)) void wgrad_row(real *restrict frame, int first, const real *const *x,
                                                            const real *dyt, size_t dys, int Wo, int nc) {
    real row[NC][NO];
    for (int k = 0; k < nc; k++) {
        real xv = x[k][0];
#pragma omp simd
        for (int o = 0; o < NO; o++) row[k][o] = FMA(xv, dyt[o], (real)0);
    }
    for (int w = 1; w < Wo; w++) {
        const real *dy = dyt + (size_t)w * dys;
        for (int k = 0; k < nc; k++) {
            real xv = x[k][w];
#pragma omp simd
            for (int o = 0; o < NO; o++) row[k][o] = FMA(xv, dy[o], row[k][o]);
        }
    }
    for (int k = 0; k < nc; k++)
#pragma omp simd
        for (int o = 0; o < NO; o++) frame[k * NO + o] = (first ? (real)0 : frame[k * NO + o]) + row[k][o];
}

/* One frame of a weight-gradient tile: the rows' chains (wgrad_row) summed
   into frame (nc x NO floats) in increasing h. x0[k]: slot k's input row
   for output row 0, the next output row's rs floats on; dyf: the frame's
   transposed dy. */
static inline __attribute__((always_inline)) void wgrad_frame(real *restrict frame, const real *const *x0, size_t rs,
                                                              const real *dyf, int Ho, int Wo, int nc) {
    for (int h = 0; h < Ho; h++) {
        const real *x[NC];
        for (int k = 0; k < nc; k++) x[k] = x0[k] + (size_t)h * rs;
        wgrad_row(frame, h == 0, x, dyf + (size_t)h * Wo * NO, NO, Wo, nc);
    }
}

/* One frame of a 1x1x1 (stride 1) weight-gradient tile: NO output channels
   x NI input channels, the frame's positions in one loop (rows of Wo, one
   after another: x and dy are both contiguous over the frame), the end of
   each row inside it: the row's chains (row) and the frame's sums (frame)
   then both stay in registers, 2 x 12 vectors, and the frame's sums are
   added to the clip's (clip) once. The order is the rule's: per row a fresh
   fma chain over w', added to the frame's sum in increasing h', the frame's
   sum to the clip's in increasing t'. x[k]: input channel k's frame; dyt:
   the frame's transposed dy (F positions, NO channels each). */
static inline __attribute__((always_inline)) void wgrad_flat_frame(real *restrict clip, const real *const *x,
                                                                   const real *restrict dyt, size_t F, int Wo) {
    real row[NI][NO], frame[NI][NO];
    for (int k = 0; k < NI; k++)
        for (int o = 0; o < NO; o++) row[k][o] = frame[k][o] = 0;
    for (size_t p = 0, w = 0; p < F; p++) {
        const real *dy = dyt + p * NO;
        for (int k = 0; k < NI; k++) {
            real xv = x[k][p];
#pragma omp simd
            for (int o = 0; o < NO; o++) row[k][o] = FMA(xv, dy[o], row[k][o]);
        }
        if (++w == (size_t)Wo) { /* the row's end */
            w = 0;
            for (int k = 0; k < NI; k++)
#pragma omp simd
                for (int o = 0; o < NO; o++) {
                    frame[k][o] = frame[k][o] + row[k][o];
                    row[k][o] = 0;
                }
        }
    }
    for (int k = 0; k < NI; k++)
#pragma omp simd
        for (int o = 0; o < NO; o++) clip[k * NO + o] = clip[k * NO + o] + frame[k][o];
}

/* One task of conv_wgrad on frame t: NO output channels x its NC slots,
   each slot one (input channel, tap) pair; the frame's sums (wgrad_frame)
   added to the task's clip sums, which frame 0 starts from +0 (a memset of
   every task's sums first was 17% of 128 -> 128 channels at 5 x 8 x 8).
   dyf: frame t's transposed dy. */
static inline __attribute__((always_inline)) void wgrad_task_frame(real *clip, int task, int t, const real *xp,
                                                                   const Padded *g, const size_t *tap_off,
                                                                   const real *dyf, size_t F, size_t rs, int Cin,
                                                                   int nchg, int ngroup, int by_taps, int Ho, int Wo,
                                                                   int st) {
    int ob = task / (nchg * ngroup), cg = task / ngroup % nchg, grp = task % ngroup;
    int nslot = by_taps ? NC : Cin - cg * NC < NC ? Cin - cg * NC : NC;
    const real *x0[NC]; /* each slot's input row for output row 0 */
    for (int k = 0; k < nslot; k++) {
        int i = by_taps ? cg : cg * NC + k, tap = by_taps ? grp * NC + k : grp;
        x0[k] = xp + (size_t)i * g->cs + (size_t)t * st * g->Hp * g->Wrow + tap_off[tap];
    }
    real frame[NC * NO];
    dyf += (size_t)ob * F * NO;
    if (nslot == NC) wgrad_frame(frame, x0, rs, dyf, Ho, Wo, NC); /* constant nc: fully unrolled */
    else wgrad_frame(frame, x0, rs, dyf, Ho, Wo, nslot);
    real *c = clip + (size_t)task * NC * NO;
    for (int k = 0; k < nslot; k++)
        for (int o = 0; o < NO; o++) c[k * NO + o] = (t ? c[k * NO + o] : (real)0) + frame[k * NO + o];
}

/* Rows of up to SLOTROW outputs: a weight-gradient tile of NO output
   channels x NS = 6 slots, the 3 taps d of one tap row (a, c) of two input
   channels. With wgrad_row's NO x 9 tile on such rows, the 18 row chains and
   the frame's 18 sums do not both fit in the registers, and each row's end
   (chains through the stack, sums in memory) took 40% of the time on rows
   of 16 (less on longer rows, but still more than these tiles); here the
   12 chains and the 12 sums (AVX-512) stay in registers for the whole
   frame, and a position's dy (2 vectors) serves all 6 slots. The order is
   wgrad_row's: per output row a fresh fma chain along it, rows added into
   the frame's sums in increasing h (from +0), the frame's sums into the
   clip's (clip; first_t: frame 0, which starts them from +0). x0[k]: slot
   k's input row for output row 0, rs floats to the next; dyf: the frame's
   transposed dy of the tile's channel block. */
#define NS 6
#ifndef SLOTROW /* rows of up to this many outputs take these tiles (measured, one thread, GFLOP/s per core) */
#if defined(__AVX512F__)
#define SLOTROW 64 /* 128 > 128: 9 x 16 x 16 193 -> 239, 17 x 32 x 32 228 -> 249; 32 > 32 at 17 x 64 x 64 229 -> 237;
                      rows of 128 slower (245 -> 238) */
#else
#define SLOTROW 16 /* AVX2: 128 > 128 at 9 x 16 x 16 82 -> 93; rows of 32 the same, of 64 slower (112 -> 96) */
#endif
#endif
static inline __attribute__((always_inline)) void wgrad_frame_slots(real *restrict clip, int first_t,
                                                                    const real *const *x0, size_t rs,
                                                                    const real *restrict dyf, int Ho, int Wo) {
    real frame[NS][NO] = {{0}};
    for (int h = 0; h < Ho; h++) {
        const real *x[NS];
        for (int k = 0; k < NS; k++) x[k] = x0[k] + (size_t)h * rs;
        const real *dy = dyf + (size_t)h * Wo * NO;
        real row[NS][NO];
        for (int k = 0; k < NS; k++) {
            real xv = x[k][0];
#pragma omp simd
            for (int o = 0; o < NO; o++) row[k][o] = FMA(xv, dy[o], (real)0);
        }
        for (int w = 1; w < Wo; w++)
            for (int k = 0; k < NS; k++) {
                real xv = x[k][w];
#pragma omp simd
                for (int o = 0; o < NO; o++) row[k][o] = FMA(xv, dy[(size_t)w * NO + o], row[k][o]);
            }
        for (int k = 0; k < NS; k++)
#pragma omp simd
            for (int o = 0; o < NO; o++) frame[k][o] = frame[k][o] + row[k][o];
    }
    for (int k = 0; k < NS; k++)
#pragma omp simd
        for (int o = 0; o < NO; o++) clip[k * NO + o] = (first_t ? (real)0 : clip[k * NO + o]) + frame[k][o];
}

/* slot k of a slots task: input channel 2 ip + k / 3 (past Cin: the last
   one again, thrown away), tap grp 3 + k % 3 */
static int slot_channel(int ip, int k, int Cin) { return 2 * ip + k / 3 < Cin ? 2 * ip + k / 3 : Cin - 1; }

/* One slots task on frame t: output channels ob NO.., input channels 2 ip,
   2 ip + 1, tap row grp (nip pairs, ngs = K / 3 tap rows); its clip sums at
   clip + task NS NO */
static inline __attribute__((always_inline)) void wgrad_task_slots(real *clip, int task, int t, const real *xp,
                                                                   const Padded *g, const size_t *tap_off,
                                                                   const real *dyf, size_t F, size_t rs, int Cin,
                                                                   int nip, int ngs, int Ho, int Wo, int st) {
    int ob = task / (nip * ngs), ip = task / ngs % nip, grp = task % ngs;
    const real *x0[NS];
    for (int k = 0; k < NS; k++)
        x0[k] = xp + (size_t)slot_channel(ip, k, Cin) * g->cs + (size_t)t * st * g->Hp * g->Wrow +
                tap_off[grp * 3 + k % 3];
    wgrad_frame_slots(clip + (size_t)task * NS * NO, t == 0, x0, rs, dyf + (size_t)ob * F * NO, Ho, Wo);
}

static void conv_wgrad(real *dweight, const real *dout, const real *xp, const Padded *g, int Cin, int Cout,
                       int To, int Ho, int Wo, int kt, int kh, int kw, int st, int sh, int sw) {
    int K = kt * kh * kw, Coutp = (Cout + NO - 1) / NO * NO, nob = Coutp / NO;
    size_t P = (size_t)To * Ho * Wo;
    /* A task is NO output channels x NC slots, each slot one (input channel,
       tap) pair with its own chain. 3x3x3 kernels: one channel, its taps in
       groups of 3 (a, c) rows of 3 d; other kernels (1x1x1, 3x1x1): one tap
       of NC channels, so that these too keep NC independent chains in the
       tile (one chain per tile was bound by the fma latency). */
    int by_taps = kw == 3 && K % NC == 0;
    int ngroup = by_taps ? K / NC : K, nchg = by_taps ? Cin : (Cin + NC - 1) / NC, ntask = nob * nchg * ngroup;
    /* rows of up to SLOTROW: tiles of two input channels' tap rows (wgrad_frame_slots) */
    int slots = by_taps && Wo <= SLOTROW, nip = (Cin + 1) / 2, ngs = K / 3;
    if (slots) ntask = nob * nip * ngs;
    /* the clip sums of every task, filled frame by frame: one frame of dy
       (Ho x Wo x NO floats per block) stays in cache while every task uses it */
    /* 1x1x1 at stride 1: tasks of NO output channels x NI input channels instead (wgrad_flat_frame) */
    int flat = K == 1 && st * sh * sw == 1, nig = (Cin + NI - 1) / NI;
    size_t nclip = flat ? (size_t)nob * nig * NI * NO : (size_t)ntask * (slots ? NS : NC) * NO;
    real *clip = ivae_scratch(SCR_WGRAD, nclip);
    /* where tap (a, c, d) reads in the padded input, from output (0, 0, 0): once per call, not per
       task and row (the divisions there were a third of the time at 32 x 32, more on smaller rows) */
    size_t tap_off[K];
    if (!flat)
        for (int tap = 0; tap < K; tap++) {
            int a = tap / (kh * kw), c = tap / kw % kh, d = tap % kw;
            tap_off[tap] = ((size_t)a * g->Hp + c) * g->Wrow + col_index(g, d);
        }
    if (flat) memset(clip, 0, nclip * sizeof(real)); /* the other tasks start their sums at frame 0 (below) */
    /* dy transposed to (channel block, position, NO channels), channels padded to NO, one frame at a
       time (so that it stays in cache for the frame's tasks), in pieces of TP positions: each
       channel's TP values read straight through, written NO floats apart (the piece, TP x NO
       floats, stays in L1). Reading the NO channels position by position instead, for the whole
       clip at once, was most of a 1x1x1 conv's weight gradient: the channels are To x Ho x Wo
       floats apart, a multiple of 4 KB at 64 x 64, so all NO of them fell into one L1 set. */
    size_t F = (size_t)Ho * Wo, npc = (F + TP - 1) / TP;
    /* small clips (the latent-sized frames): every frame transposed first, then
       one parallel loop whose tasks run all the frames (a loop per frame was
       mostly the tasks' setup there); the frames' sums in the same order */
    int whole = !flat && (size_t)To * F * Coutp <= WGRAD_WHOLE;
    real *dyt = ivae_scratch(SCR_DYT, (whole ? To : 1) * F * Coutp);
    size_t rs = (size_t)sh * g->Wrow;
    for (int t = 0; t < To; t++) {
        real *dytt = dyt + (whole ? (size_t)t : 0) * F * Coutp;
#pragma omp parallel for schedule(static) IVAE_PAR((double)nob * F * NO)
        for (size_t bq = 0; bq < (size_t)nob * npc; bq++) {
            size_t ob = bq / npc, p0 = bq % npc * TP, np = F - p0 < TP ? F - p0 : TP;
            real *dst = dytt + (ob * F + p0) * NO;
            for (int o = 0; o < NO; o++) {
                size_t oc = ob * NO + o;
                const real *src = dout + oc * P + t * F + p0;
                if (oc < (size_t)Cout)
                    for (size_t j = 0; j < np; j++) dst[j * NO + o] = src[j];
                else
                    for (size_t j = 0; j < np; j++) dst[j * NO + o] = 0;
            }
        }
        if (flat) {
#pragma omp parallel for schedule(static) IVAE_PAR((double)nob * nig * NI * NO * F)
            for (int task = 0; task < nob * nig; task++) {
                int ob = task / nig, ig = task % nig;
                const real *x[NI]; /* channels past Cin repeat the last one; thrown away */
                for (int k = 0; k < NI; k++)
                    x[k] = xp + (size_t)(ig * NI + k < Cin ? ig * NI + k : Cin - 1) * g->cs + t * F;
                wgrad_flat_frame(clip + (size_t)task * NI * NO, x, dytt + (size_t)ob * F * NO, F, Wo);
            }
            continue;
        }
        if (whole) continue;
#pragma omp parallel for schedule(static) IVAE_PAR((double)ntask * NC * NO * Ho * Wo)
        for (int task = 0; task < ntask; task++) {
            if (slots) wgrad_task_slots(clip, task, t, xp, g, tap_off, dytt, F, rs, Cin, nip, ngs, Ho, Wo, st);
            else wgrad_task_frame(clip, task, t, xp, g, tap_off, dytt, F, rs, Cin, nchg, ngroup, by_taps, Ho, Wo, st);
        }
    }
    if (whole) {
#pragma omp parallel for schedule(static) IVAE_PAR((double)ntask * NC * NO * To * Ho * Wo)
        for (int task = 0; task < ntask; task++)
            for (int t = 0; t < To; t++) {
                const real *dyf = dyt + (size_t)t * F * Coutp;
                if (slots) wgrad_task_slots(clip, task, t, xp, g, tap_off, dyf, F, rs, Cin, nip, ngs, Ho, Wo, st);
                else wgrad_task_frame(clip, task, t, xp, g, tap_off, dyf, F, rs, Cin, nchg, ngroup, by_taps, Ho, Wo,
                                      st);
            }
    }
    if (flat) {
        for (int task = 0; task < nob * nig; task++) {
            int ob = task / nig, ig = task % nig;
            const real *c = clip + (size_t)task * NI * NO;
            for (int k = 0; k < NI && ig * NI + k < Cin; k++)
                for (int o = 0; o < NO && ob * NO + o < Cout; o++)
                    dweight[(size_t)(ob * NO + o) * Cin + ig * NI + k] += c[k * NO + o];
        }
        return;
    }
    if (slots) {
#pragma omp parallel for schedule(static) IVAE_PAR((double)ntask * NS * NO)
        for (int task = 0; task < ntask; task++) {
            int ob = task / (nip * ngs), ip = task / ngs % nip, grp = task % ngs;
            const real *c = clip + (size_t)task * NS * NO;
            for (int k = 0; k < NS && 2 * ip + k / 3 < Cin; k++)
                for (int o = 0; o < NO && ob * NO + o < Cout; o++)
                    dweight[((size_t)(ob * NO + o) * Cin + 2 * ip + k / 3) * K + grp * 3 + k % 3] += c[k * NO + o];
        }
        return;
    }
#pragma omp parallel for schedule(static) IVAE_PAR((double)ntask * NC * NO)
    for (int task = 0; task < ntask; task++) {
        int ob = task / (nchg * ngroup), cg = task / ngroup % nchg, grp = task % ngroup;
        int nslot = by_taps ? NC : Cin - cg * NC < NC ? Cin - cg * NC : NC;
        const real *c = clip + (size_t)task * NC * NO;
        for (int k = 0; k < nslot; k++) {
            int i = by_taps ? cg : cg * NC + k, tap = by_taps ? grp * NC + k : grp;
            for (int o = 0; o < NO && ob * NO + o < Cout; o++)
                dweight[((size_t)(ob * NO + o) * Cin + i) * K + tap] += c[k * NO + o];
        }
    }
}

/* The weight gradient of a conv with few output channels (decoder.conv_out:
   3), where a tile over NO output channels would leave most lanes empty:
   the lanes are CL input channels instead, of a channel-last padded copy of
   x (Cin/CL blocks, Tp, Hp, Wp, CL). A tile is NOF output channels x the 9
   taps (c, d) of one frame tap a x CL input channels, each lane its own
   (o, i, a, c, d) chain, so the order is the rule's as in conv_wgrad: along
   an output row an fma chain over w', rows summed into the frame's sum,
   frames into the clip's. 3x3 spatial kernels only. */
/* CL input channels per lane group (one vector), NOF output channels per tile: at the top */

static inline __attribute__((always_inline)) void wgrad_row_lanes(real row[NOF][NC][CL], const real *restrict x,
                                                                  size_t hs, int sw, const real *const *dy, int Wo) {
    for (int o = 0; o < NOF; o++)
        for (int k = 0; k < NC; k++)
            for (int l = 0; l < CL; l++) row[o][k][l] = 0;
    for (int w = 0; w < Wo; w++)
        for (int o = 0; o < NOF; o++) {
            real g = dy[o][w];
            for (int c = 0; c < 3; c++)
                for (int d = 0; d < 3; d++) {
                    const real *xv = x + c * hs + (size_t)(w * sw + d) * CL;
#pragma omp simd
                    for (int l = 0; l < CL; l++) row[o][c * 3 + d][l] = FMA(xv[l], g, row[o][c * 3 + d][l]);
                }
        }
}

/* where conv_wgrad_lanes is the faster (one thread, test/bench_conv, 3x3x3
   kernels): fewer output channels than a tile of NO (32 -> 3 at 17 x 64 x 64:
   8 -> 66 GFLOP/s; 16 -> 16: 41 -> 77). Up to 2 NO output channels on rows
   of 16 or fewer went here too until conv_wgrad stopped dividing per row;
   since then conv_wgrad is ahead on them (128 -> 64 at 5 x 8 x 8: 55 against
   48; 64 -> 64, stride 2,2,2 at 17 x 32 x 32: 60 against 53). With input
   channels that fill less than one lane group (3 -> 32) conv_wgrad is ahead
   too (40 against 16). */
static int wgrad_by_lanes(int Cin, int Cout, int kh, int kw) {
    return kh == 3 && kw == 3 && Cin >= CL && Cout < NO;
}

static void conv_wgrad_lanes(real *dweight, const real *dout, const real *inp, int Cin, int T, int H, int W, int Cout,
                             int To, int Ho, int Wo, int kt, int st, int sh, int sw) {
    int Tp = T + kt - 1, Hp = H + 2, Wp = W + 2, ncb = (Cin + CL - 1) / CL, K = kt * NC;
    size_t hs = (size_t)Wp * CL; /* floats per padded row of a block */
    real *xcl = ivae_scratch(SCR_PAD, (size_t)ncb * Tp * Hp * hs);
#pragma omp parallel for schedule(static) IVAE_PAR((double)ncb * Tp * Hp * hs)
    for (int r = 0; r < ncb * Tp * Hp; r++) {
        int cb = r / (Tp * Hp), t = r / Hp % Tp - (kt - 1), h = r % Hp - 1;
        real *dst = xcl + (size_t)r * hs;
        memset(dst, 0, hs * sizeof(real));
        if (t < 0 || h < 0 || h >= H) continue; /* a padding row */
        for (int l = 0; l < CL && cb * CL + l < Cin; l++) { /* each channel's row read straight through */
            const real *src = inp + (((size_t)(cb * CL + l) * T + t) * H + h) * W;
            for (int w = 0; w < W; w++) dst[(size_t)(w + 1) * CL + l] = src[w];
        }
    }
    int nog = (Cout + NOF - 1) / NOF, ntask = nog * ncb * kt;
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * Cin * K * To * Ho * Wo)
    for (int task = 0; task < ntask; task++) {
        int og = task / (ncb * kt), cb = task / kt % ncb, a = task % kt;
        real clip[NOF][NC][CL] = {{{0}}};
        for (int t = 0; t < To; t++) {
            real frame[NOF][NC][CL] = {{{0}}};
            for (int h = 0; h < Ho; h++) {
                const real *dy[NOF]; /* output channels past Cout repeat the last one; thrown away */
                for (int o = 0; o < NOF; o++) {
                    int oc = og * NOF + o < Cout ? og * NOF + o : Cout - 1;
                    dy[o] = dout + (((size_t)oc * To + t) * Ho + h) * Wo;
                }
                real row[NOF][NC][CL];
                wgrad_row_lanes(row, xcl + (((size_t)cb * Tp + t * st + a) * Hp + (size_t)h * sh) * hs, hs, sw, dy, Wo);
                for (int o = 0; o < NOF; o++)
                    for (int k = 0; k < NC; k++)
                        for (int l = 0; l < CL; l++) frame[o][k][l] += row[o][k][l];
            }
            for (int o = 0; o < NOF; o++)
                for (int k = 0; k < NC; k++)
                    for (int l = 0; l < CL; l++) clip[o][k][l] += frame[o][k][l];
        }
        for (int o = 0; o < NOF && og * NOF + o < Cout; o++)
            for (int l = 0; l < CL && cb * CL + l < Cin; l++)
                for (int k = 0; k < NC; k++)
                    dweight[((size_t)(og * NOF + o) * Cin + cb * CL + l) * K + a * NC + k] += clip[o][k][l];
    }
}

/* The input gradient, phase by phase (idea 4): dinp (Cin, T, H, W) from dy
   (Cout, To, Ho, Wo) and wpkf, packed by ivae_conv3d_pack_dinp. dy is
   padded once, enough for every phase; phase (rt, rh, rw) is the forward
   tile's stride-1 conv of dy from its first output on, with its sub-kernel,
   into a compact (Cin, nt, nh, nw) buffer (stride 1: straight into dinp);
   the phases are then interleaved into dinp. */
static void conv_dinp_phases(real *dinp, const real *dout, const real *wpkf, int Cin, int T, int H, int W, int Cout,
                             int To, int Ho, int Wo, int kt, int kh, int kw, int st, int sh, int sw) {
    Phase pt[st], ph[sh], pw[sw];
    phases_of(pt, ph, pw, T, H, W, kt, kh, kw, st, sh, sw);
    /* phase q's first tap (in flipped order) reads output q + e - (nk-1) =: q + lo: pad dy by
       front = max(-lo) and back = max(n-1 + e - (Do-1)) over the phases, so every read is in the buffer */
    int front[3] = {0, 0, 0}, back[3] = {0, 0, 0}, D[3] = {To, Ho, Wo}, S[3] = {st, sh, sw};
    Phase *P[3] = {pt, ph, pw};
    for (int dim = 0; dim < 3; dim++)
        for (int r = 0; r < S[dim]; r++) {
            Phase p = P[dim][r];
            if (!p.n || !p.nk) continue;
            int lo = p.e - (p.nk - 1), hi = p.n - 1 + p.e;
            if (-lo > front[dim]) front[dim] = -lo;
            if (hi - (D[dim] - 1) > back[dim]) back[dim] = hi - (D[dim] - 1);
        }
    Padded g;
    const real *dyp = pad_input(SCR_DYPAD, &g, dout, Cout, To, Ho, Wo, NULL, front[0], back[0],
                                (IvaePad){front[1], back[1], front[2], back[2]}, 1);
    /* the phases one after another in buf (stride 1: buf is dinp) */
    int whole = st * sh * sw == 1;
    real *buf = whole ? dinp : ivae_scratch(SCR_PHASE, (size_t)Cin * T * H * W);
    size_t at[st][sh][sw], used = 0;
    for (int rt = 0; rt < st; rt++)
        for (int rh = 0; rh < sh; rh++)
            for (int rw = 0; rw < sw; rw++) {
                Phase a = pt[rt], c = ph[rh], d = pw[rw];
                int nk = a.nk * c.nk * d.nk;
                const real *wpk = wpkf;
                wpkf += ivae_conv3d_packed_size(Cin, Cout, nk);
                at[rt][rh][rw] = used;
                size_t plane = (size_t)a.n * c.n * d.n;
                used += (size_t)Cin * plane;
                if (!plane) continue; /* no inputs in this phase (T = 1 and st = 2, say) */
                real *out = buf + at[rt][rh][rw];
                if (!nk) memset(out, 0, (size_t)Cin * plane * sizeof(real)); /* no tap reads it: +0 (rule 6) */
                else {
                    const real *x = dyp + ((size_t)(a.e - (a.nk - 1) + front[0]) * g.Hp + (c.e - (c.nk - 1) + front[1])) * g.Wrow +
                                    (d.e - (d.nk - 1) + front[2]);
                    conv_padded(out, x, &g, wpk, NULL, Cout, Cin, 0, a.n, c.n, d.n, a.nk, c.nk, d.nk, 1, 1);
                }
            }
    if (whole) return;
    /* interleave the phases into dinp, each row of dinp written once; a task is one plane (i, t), its
       rows' sources found from each phase's first row (a row's index math cost more than its copy) */
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cin * T * H * W)
    for (int pl = 0; pl < Cin * T; pl++) {
        int i = pl / T, t = pl % T;
        Phase a = pt[t % st];
        const real *src[sh][sw]; /* phase (rh, rw)'s row 0 of this plane */
        for (int rh = 0; rh < sh; rh++)
            for (int rw = 0; rw < sw; rw++)
                src[rh][rw] = buf + at[t % st][rh][rw] + ((size_t)i * a.n + t / st) * ph[rh].n * pw[rw].n;
        real *dst = dinp + (size_t)pl * H * W;
        for (int h = 0; h < H; h++, dst += W) {
            int rh = h % sh;
            size_t q = (size_t)(h / sh);
            if (sw == 2 && W % 2 == 0) { /* the two phases' columns in turn, in one pass (vectorised) */
                const real *s0 = src[rh][0] + q * pw[0].n, *s1 = src[rh][1] + q * pw[1].n;
                for (int v = 0; v < W / 2; v++) {
                    dst[2 * v] = s0[v];
                    dst[2 * v + 1] = s1[v];
                }
                continue;
            }
            for (int rw = 0; rw < sw && rw < W; rw++) {
                const real *sr = src[rh][rw] + q * pw[rw].n;
                for (int v = 0; v < pw[rw].n; v++) dst[(size_t)sw * v + rw] = sr[v];
            }
        }
    }
}

/* the same with the input gradient's kernel already packed by ivae_conv3d_pack_dinp (wpkf; NULL: pack it here) */
void ivae_conv3d_backward_tuned(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                                const real *wpkf, const real *weight, int Cin, int T, int H, int W, int Cout, int kt,
                                int kh, int kw, int st, int sh, int sw) {
    // dinp (Cin, T, H, W) written; dweight, dbias accumulated; dout (Cout, To, Ho, Wo)
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw), K = kt * kh * kw;

    // in the forward pass: y[o,t',h',w'] += W[o,i,a,c,d] * x[i, t'st+a-(kt-1), h'sh+c-ph, w'sw+d-pw]
    // so dx[i,t,h,w] = sum_o sum_{a,c,d} W[o,i,a,c,d] * dy[o, t', h', w'] over the outputs with
    //   t'st = t+(kt-1)-a, h'sh = h+ph-c, w'sw = w+pw-d: per phase of (t, h, w) a stride-1
    //   convolution of dy with the phase's taps flipped (idea 4)
    if (dinp) {
        if (!wpkf) {
            wpkf = ivae_scratch(SCR_WPACK, ivae_conv3d_packed_size(Cin, Cout, K));
            ivae_conv3d_pack_dinp((real *)wpkf, weight, Cout, Cin, kt, kh, kw, st, sh, sw);
        }
        if (K == 1 && st * sh * sw == 1) conv_flat(dinp, dout, wpkf, NULL, Cout, Cin, (size_t)T * H * W); /* as the forward */
        else conv_dinp_phases(dinp, dout, wpkf, Cin, T, H, W, Cout, To, Ho, Wo, kt, kh, kw, st, sh, sw);
    }

    // dW[o,i,a,c,d] += sum_{t',h',w'} dy[o,t',h',w'] * xpad[i, t'st+a, h'sh+c, w'sw+d]
    if (dweight && wgrad_by_lanes(Cin, Cout, kh, kw))
        conv_wgrad_lanes(dweight, dout, inp, Cin, T, H, W, Cout, To, Ho, Wo, kt, st, sh, sw);
    else if (dweight) {
        Padded g;
        const real *xp;
        if (K == 1 && sw == 1) /* nothing to pad: the input as it is */
            xp = inp, g = (Padded){.Tp = T, .Hp = H, .Wp = W, .sw = 1, .half = W, .Wrow = W, .cs = (size_t)T * H * W};
        else xp = pad_input(SCR_PAD, &g, inp, Cin, T, H, W, NULL, kt - 1, 0, ivae_pad_same(kh, kw), sw);
        conv_wgrad(dweight, dout, xp, &g, Cin, Cout, To, Ho, Wo, kt, kh, kw, st, sh, sw);
    }

    // y = ... + b[o], so db[o] += sum of dy over the whole output plane stack
    if (dbias) {
        for (int o = 0; o < Cout; o++) {
            Shape s = {1, To, Ho, Wo};
            dbias[o] += ivae_sum_nested(dout + (size_t)o * To * Ho * Wo, s);
        }
    }
}

