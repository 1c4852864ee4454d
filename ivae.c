/*
 * ivae.c: the reference implementation of the ivae image-video VAE.
 *
 * Plain C99 and float32, parallel only through `#pragma omp` over output
 * elements, so the bits never depend on the thread count. Read it top-down:
 *
 *   1. utilities: errors, the RNG, an arena for activations
 *   2. the layers of SPEC 2, each a _forward/_backward pair
 *   3. the loss of SPEC 4
 *   4. the model of SPEC 3: parameters, blocks, forward, backward
 *   5. checkpoints: safetensors (SPEC 5)
 *
 * Conventions (after llm.c):
 * - argument order: outputs, saved-for-backward, inputs, weights, sizes;
 * - dimension letters: C channels, T frames, H rows, W columns; an "o" suffix
 *   (To, Ho, Wo) is the output's size; N is a count of positions T*H*W;
 * - backward functions write the input gradient (dinp = ...) and accumulate
 *   parameter gradients (dweight += ...), so a batch sums its samples;
 * - the forward line a backward pass differentiates is quoted above it.
 *
 * Summation order. Two implementations give the same bits only if they add
 * the same numbers in the same order, so every reduction here has a fixed,
 * documented order, and long ones are nested (a fresh accumulator per row,
 * per frame, per channel) which also keeps float32 rounding error small.
 * "fma" is a fused multiply-add, one rounding (C99 fmaf, OpenCL fma):
 * - conv3d forward:   y = ( sum_i P_i ) + bias, where P_i = fma chain over
 *                      input channel i's kernel taps (a, c, d) in row-major
 *                      order, starting from 0; the sum over i starts from 0;
 *                      padded taps are included (their inputs are zeros);
 * - conv3d dinput:    dx = sum_o Q_o, Q_o = fma chain over the outputs
 *                      (t', h', w') that read the input, in increasing order
 *                      (stride 1: padded taps included; strided: in-range
 *                      taps only);
 * - conv3d dweight:   dW += sum_{t'} ( sum_{h'} ( fma chain over w' ) ),
 *                      fresh per frame and per row;
 * - dbias, loss terms, softmax, attention: plain sums nested by row, frame
 *   and channel (sum_nested_d, sum_rows); sums over channels run straight.
 * Because every sum starts from +0, a zero term never changes the bits, so
 * padded taps could as well be skipped.
 */
#include "ivae.h"
#include "ivae_math.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef IVAE_DOUBLE
#define EXP(x) exp(x)
#define SQRT(x) sqrt(x)
#else
#define EXP(x) ivae_expf(x)
#define SQRT(x) sqrtf(x)
#endif

/* ========================================================================== */
/* 1. utilities                                                               */
/* ========================================================================== */

static char g_error[1024];

const char *ivae_error(void) { return g_error; }

void ivae_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    /* one line, whatever a file's strings hold */
    for (char *c = g_error; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
}

static void *xmalloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = 1;
    if (posix_memalign(&p, 64, n) != 0) {
        fprintf(stderr, "ivae: error: out of memory (asked for %zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static void *xcalloc(size_t n) {
    void *p = xmalloc(n);
    memset(p, 0, n);
    return p;
}

/* splitmix64 (Steele, Lea, Flood 2014): the state advances by a fixed odd
   constant and each output is a bijective mix of it. Uniforms take the top 53
   bits; normals come from Box-Muller on two uniforms. */
uint64_t ivae_rng_next(IvaeRng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double ivae_rng_uniform(IvaeRng *r) { return (double)(ivae_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

double ivae_rng_normal(IvaeRng *r) {
    double u1 = 1.0 - ivae_rng_uniform(r); /* (0, 1]: log is finite */
    double u2 = ivae_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* The arena: activations of one sample, saved by the forward pass for the
   backward pass. A list of big blocks; reset() makes them all free again
   without returning memory, so after the first sample nothing is allocated. */
typedef struct ArenaBlock {
    struct ArenaBlock *next;
    size_t cap, used;
    unsigned char *mem;
} ArenaBlock;

typedef struct {
    ArenaBlock *head, *cur;
} Arena;

static real *arena_alloc(Arena *A, size_t n) {
    size_t bytes = (n * sizeof(real) + 63) & ~(size_t)63;
    for (;;) {
        ArenaBlock *b = A->cur;
        if (b && b->cap - b->used >= bytes) {
            real *p = (real *)(b->mem + b->used);
            b->used += bytes;
            return p;
        }
        if (b && b->next) { /* a later block from an earlier sample */
            A->cur = b->next;
            A->cur->used = 0;
            if (A->cur->cap >= bytes) continue;
        }
        /* a new block, linked after the current one */
        ArenaBlock *nb = xcalloc(sizeof *nb);
        nb->cap = bytes > ((size_t)64 << 20) ? bytes : ((size_t)64 << 20);
        nb->mem = xmalloc(nb->cap);
        if (!b) {
            A->head = A->cur = nb;
        } else {
            nb->next = b->next;
            b->next = nb;
            A->cur = nb;
        }
    }
}

static void arena_reset(Arena *A) {
    for (ArenaBlock *b = A->head; b; b = b->next) b->used = 0;
    A->cur = A->head;
}

static void arena_free(Arena *A) {
    ArenaBlock *b = A->head;
    while (b) {
        ArenaBlock *n = b->next;
        free(b->mem);
        free(b);
        b = n;
    }
    A->head = A->cur = NULL;
}

/* the shape of one sample's tensor */
typedef struct {
    int C, T, H, W;
} Shape;

static size_t shape_numel(Shape s) { return (size_t)s.C * s.T * s.H * s.W; }

/* Sum of a (C, T, H, W) tensor in the nested order: each row of W straight
   through, rows summed per frame, frames per channel, channels in order. */
static double sum_nested_d(const real *v, Shape s) {
    real total = 0;
    for (int c = 0; c < s.C; c++) {
        real ch = 0;
        for (int t = 0; t < s.T; t++) {
            real fr = 0;
            for (int h = 0; h < s.H; h++) {
                const real *row = v + (((size_t)c * s.T + t) * s.H + h) * s.W;
                real acc = 0;
                for (int w = 0; w < s.W; w++) acc += row[w];
                fr += acc;
            }
            ch += fr;
        }
        total += ch;
    }
    return total;
}

/* sum of a span of n tokens laid out as rows of W: rows straight through,
   then the row sums in order (a frame is H rows; spans are whole rows) */
static real sum_rows(const real *v, int n, int W) {
    real total = 0;
    for (int r0 = 0; r0 < n; r0 += W) {
        real acc = 0;
        for (int j = r0; j < r0 + W; j++) acc += v[j];
        total += acc;
    }
    return total;
}

/* ========================================================================== */
/* 2. layers (SPEC 2)                                                         */
/* ========================================================================== */

/* --- 2.1 causal conv3d ---------------------------------------------------- */
/*
 * The convolution is where the time goes, so it is written to run near the
 * machine's limit while keeping the order of every sum fixed (see the top of
 * this file). Three ideas:
 *
 * 1. Pad once. The input is copied into a zero-padded buffer (kt-1 frames in
 *    front, floor(k/2) rows and columns around), so the inner loops have no
 *    bounds checks. For a stride-2 conv each padded row stores its even
 *    columns first, then its odd ones, so that the inputs of neighbouring
 *    outputs are neighbours in memory again.
 * 2. Tiles in registers. A forward tile is MR output channels x NR output
 *    columns of one row; per input channel it sums the kernel taps into a
 *    fresh "part" tile with fused multiply-adds, then adds part into "acc".
 *    Both tiles stay in vector registers (MR x NR = 8 x 16 floats is 8 + 8
 *    AVX-512 registers); the compiler vectorises the plain C loops.
 * 3. One kernel, two uses. The input gradient of a stride-1 conv is itself a
 *    convolution: of dy, padded at the END in time (an input frame t reaches
 *    outputs t..t+kt-1), with the kernel flipped and its in/out channels
 *    swapped. So dinp reuses the forward tile, and its sum order is: over o,
 *    then over the outputs that read the input, in increasing order.
 *
 * The weight gradient vectorises over output channels instead: dy is
 * transposed to (position, channel), and each tile keeps NO channels x up to
 * 9 kernel taps of one input channel in registers, summed along an output
 * row, then row sums into frame sums, frame sums into the clip's.
 *
 * Fused multiply-add (fma) is one rounding of a*b+c, exactly specified by
 * IEEE 754, so it gives the same bits everywhere (C99 fmaf, OpenCL fma);
 * only the compiler's silent contraction is forbidden (-ffp-contract=off).
 */
#ifdef IVAE_DOUBLE
#define FMA(a, b, c) fma(a, b, c)
#else
#define FMA(a, b, c) fmaf(a, b, c)
#endif

#define MR 8  /* output channels per forward tile */
#define NR 16 /* output columns per forward tile */
#define NO 32 /* output channels per weight-gradient tile */
#define NC 9  /* kernel taps per weight-gradient tile (3 rows of 3) */

/* output sizes (SPEC 2.1): time is padded kt-1 frames in front only */
static int conv_out_t(int T, int st) { return (T - 1) / st + 1; }
static int conv_out_s(int H, int k, int s) { return (H + 2 * (k / 2) - k) / s + 1; }

/* Scratch buffers that grow to the largest size asked for and are then
   reused: after the first step, the convolutions allocate nothing. Only
   called outside parallel regions. */
enum { SCR_PAD, SCR_WPACK, SCR_DYT, SCR_DYPAD, SCR_DIL, SCR_WGRAD, SCR_THREAD, SCR_ATT, SCR_SMALL, SCR_N };
static real *scr_buf[SCR_N];
static size_t scr_cap[SCR_N];

static real *scratch(int slot, size_t n) {
    if (n > scr_cap[slot]) {
        free(scr_buf[slot]);
        scr_buf[slot] = xmalloc(n * sizeof(real));
        scr_cap[slot] = n;
    }
    return scr_buf[slot];
}

/* per-thread scratch: n floats for each thread, from one scratch slot */
#ifdef _OPENMP
static int max_threads(void) { return omp_get_max_threads(); }
static int thread_id(void) { return omp_get_thread_num(); }
#else
static int max_threads(void) { return 1; }
static int thread_id(void) { return 0; }
#endif
#define THREAD_SCRATCH(base, n) ((base) + (size_t)thread_id() * (n))

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

static void pad_geometry(Padded *g, int T, int H, int W, int tfront, int tback, int ph, int pw, int sw) {
    g->Tp = T + tfront + tback;
    g->Hp = H + 2 * ph;
    g->Wp = W + 2 * pw;
    g->sw = sw;
    g->half = (g->Wp + sw - 1) / sw;
    g->Wrow = g->half * sw;
    g->cs = (size_t)g->Tp * g->Hp * g->Wrow;
}

/* xp = x zero-padded (tfront/tback frames, ph rows, pw columns), phase-split.
   When streaming, the tfront frames in front are the previous chunk's last
   frames, prev (C, tfront, H, W), instead of zeros. */
static real *pad_input(int slot, Padded *g, const real *x, int C, int T, int H, int W, const real *prev,
                       int tfront, int tback, int ph, int pw, int sw) {
    pad_geometry(g, T, H, W, tfront, tback, ph, pw, sw);
    size_t n = (size_t)C * g->cs + pad_slack(g);
    real *xp = scratch(slot, n);
    const Padded G = *g;
#pragma omp parallel for schedule(static)
    for (int ct = 0; ct < C * G.Tp; ct++) {
        int c = ct / G.Tp, tp = ct % G.Tp, t = tp - tfront;
        real *f = xp + (size_t)ct * G.Hp * G.Wrow;
        memset(f, 0, (size_t)G.Hp * G.Wrow * sizeof(real));
        if (t >= T || (t < 0 && !prev)) continue;
        for (int h = 0; h < H; h++) {
            const real *src = t >= 0 ? x + (((size_t)c * T + t) * H + h) * W : prev + (((size_t)c * tfront + tp) * H + h) * W;
            real *dst = f + (size_t)(h + ph) * G.Wrow;
            for (int w = 0; w < W; w++) dst[col_index(&G, w + pw)] = src[w];
        }
    }
    memset(xp + (size_t)C * g->cs, 0, pad_slack(g) * sizeof(real));
    return xp;
}

/* One forward tile: y[m][n] for MR output channels and NR columns.
   acc = sum over input channels of part, part = the channel's taps, fma'd. */
static inline void conv_tile(real *restrict y, size_t ystride, int n_o, int n_w, const real *restrict x,
                             size_t cs, const int *restrict toff, const real *restrict wpk, int Cin, int K,
                             const real *bias) {
    real acc[MR][NR];
    for (int m = 0; m < MR; m++)
        for (int n = 0; n < NR; n++) acc[m][n] = 0;
    if (K == 1) { /* a 1x1x1 conv: part = fma(w, x, 0) = w * x rounded, so acc += w * x, same bits */
        for (int i = 0; i < Cin; i++) {
            const real *xr = x + (size_t)i * cs + toff[0], *wk = wpk + (size_t)i * MR;
            for (int m = 0; m < MR; m++)
#pragma omp simd
                for (int n = 0; n < NR; n++) acc[m][n] += wk[m] * xr[n];
        }
        Cin = 0; /* done: skip the general loop */
    }
    for (int i = 0; i < Cin; i++) {
        real part[MR][NR];
        for (int m = 0; m < MR; m++)
            for (int n = 0; n < NR; n++) part[m][n] = 0;
        const real *xi = x + (size_t)i * cs;
        for (int k = 0; k < K; k++) {
            const real *xr = xi + toff[k];
            const real *wk = wpk + ((size_t)i * K + k) * MR;
            for (int m = 0; m < MR; m++)
#pragma omp simd
                for (int n = 0; n < NR; n++) part[m][n] = FMA(wk[m], xr[n], part[m][n]);
        }
        for (int m = 0; m < MR; m++)
#pragma omp simd
            for (int n = 0; n < NR; n++) acc[m][n] += part[m][n];
    }
    for (int m = 0; m < n_o; m++)
        for (int n = 0; n < n_w; n++) y[m * ystride + n] = bias ? acc[m][n] + bias[m] : acc[m][n];
}

/* out (Cout, To, Ho, Wo) from a padded input whose frame t0 + t*st is output
   frame t's first tap; wpk holds the weights packed as (Cout/MR blocks, Cin,
   K, MR), zero rows past Cout */
static void conv_padded(real *out, const real *xp, const Padded *g, const real *wpk, const real *bias, int Cin,
                        int Cout, int t0, int To, int Ho, int Wo, int kt, int kh, int kw, int st, int sh) {
    int K = kt * kh * kw, toff[K];
    for (int a = 0; a < kt; a++)
        for (int c = 0; c < kh; c++)
            for (int d = 0; d < kw; d++) toff[(a * kh + c) * kw + d] = (a * g->Hp + c) * g->Wrow + col_index(g, d);
    int nob = (Cout + MR - 1) / MR;
    size_t plane = (size_t)To * Ho * Wo;
#pragma omp parallel for schedule(static)
    for (int task = 0; task < nob * To * Ho; task++) {
        int ob = task / (To * Ho), t = task / Ho % To, h = task % Ho;
        int o0 = ob * MR, n_o = Cout - o0 < MR ? Cout - o0 : MR;
        const real *xrow = xp + ((size_t)(t0 + t * st) * g->Hp + (size_t)h * sh) * g->Wrow;
        for (int w0 = 0; w0 < Wo; w0 += NR)
            conv_tile(out + (size_t)o0 * plane + ((size_t)t * Ho + h) * Wo + w0, plane, n_o,
                      Wo - w0 < NR ? Wo - w0 : NR, xrow + w0, g->cs, toff, wpk + (size_t)ob * Cin * K * MR, Cin, K,
                      bias ? bias + o0 : NULL);
    }
}

/* floats of W (Cout, Cin, K) packed for conv_tile */
static size_t packed_size(int Cout, int Cin, int K) { return (size_t)((Cout + MR - 1) / MR) * Cin * K * MR; }

/* packs W (Cout, Cin, K) for conv_tile into wpk; flip = the input gradient's
   kernel: in and out channels swapped and the taps reversed */
static void pack_into(real *wpk, const real *weight, int Cout, int Cin, int K, int flip) {
    int rows = flip ? Cin : Cout, cols = flip ? Cout : Cin, nb = (rows + MR - 1) / MR;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++)
        for (int i = 0; i < cols; i++)
            for (int k = 0; k < K; k++)
                for (int m = 0; m < MR; m++) {
                    int r = b * MR + m;
                    real v = 0;
                    if (r < rows)
                        v = flip ? weight[((size_t)i * Cin + r) * K + (K - 1 - k)] : weight[((size_t)r * Cin + i) * K + k];
                    wpk[(((size_t)b * cols + i) * K + k) * MR + m] = v;
                }
}

static real *pack_weights(const real *weight, int Cout, int Cin, int K, int flip) {
    real *wpk = scratch(SCR_WPACK, flip ? packed_size(Cin, Cout, K) : packed_size(Cout, Cin, K));
    pack_into(wpk, weight, Cout, Cin, K, flip);
    return wpk;
}

static int conv_forward_packed(real *out, const real *inp, const real *prev, int s0, const real *wpk,
                               const real *weight, const real *bias, int Cin, int T, int H, int W, int Cout, int kt,
                               int kh, int kw, int st, int sh, int sw);
static void conv_backward_packed(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                                 const real *wpkf, const real *weight, int Cin, int T, int H, int W, int Cout, int kt,
                                 int kh, int kw, int st, int sh, int sw);

/* y[o,t',h',w'] = b[o] + sum_{i,a,c,d} W[o,i,a,c,d] * xpad[i, t'st+a, h'sh+c, w'sw+d] */
void ivae_conv3d_forward(real *out, const real *inp, const real *weight, const real *bias,
                    int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                    int st, int sh, int sw) {
    // out (Cout, To, Ho, Wo), inp (Cin, T, H, W), weight (Cout, Cin, kt, kh, kw), bias (Cout)
    ivae_conv3d_forward_chunk(out, inp, NULL, 0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
}

/* The forward pass on a chunk of a longer clip (streaming): inp holds frames
   s0 .. s0+T-1 of the clip, prev the kt-1 frames before them (NULL at the
   start: zeros, the causal padding). Computes every output frame t' whose
   last tap t'*st falls in the chunk; returns how many there are. The outputs
   are bit for bit those of the whole clip. */
int ivae_conv3d_forward_chunk(real *out, const real *inp, const real *prev, int s0, const real *weight,
                         const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                         int st, int sh, int sw) {
    return conv_forward_packed(out, inp, prev, s0, NULL, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
}

/* the same with the weights already packed (wpk; NULL: pack them here) */
static int conv_forward_packed(real *out, const real *inp, const real *prev, int s0, const real *wpk,
                               const real *weight, const real *bias, int Cin, int T, int H, int W, int Cout, int kt,
                               int kh, int kw, int st, int sh, int sw) {
    int first = (s0 + st - 1) / st, last = (s0 + T - 1) / st, To = last - first + 1, frames = To;
    if (To <= 0) return 0;
    if (kt * kh * kw == 1 && st * sh * sw == 1) { /* 1x1x1: one long row of T*H*W positions fills every lane */
        W = T * H * W, T = 1, H = 1, To = 1;
    }
    Padded g;
    const real *xp = pad_input(SCR_PAD, &g, inp, Cin, T, H, W, prev, kt - 1, 0, kh / 2, kw / 2, sw);
    if (!wpk) wpk = pack_weights(weight, Cout, Cin, kt * kh * kw, 0);
    /* padded frame j is clip frame s0 - (kt-1) + j; output t' starts at clip frame t'*st - (kt-1) */
    conv_padded(out, xp, &g, wpk, bias, Cin, Cout, first * st - s0, To, conv_out_s(H, kh, sh), conv_out_s(W, kw, sw),
                kt, kh, kw, st, sh);
    return frames;
}

/* One weight-gradient tile: NO output channels x nc taps of input channel i.
   x[k] points at tap k's input row for the current output row (column w of
   the row is x[k][w]); dyt at the row's first position, NO channels each. */
static inline __attribute__((always_inline)) void wgrad_row(real row[NC][NO], const real *const *x, const real *dyt,
                                                            size_t dys, int Wo, int nc) {
    for (int k = 0; k < nc; k++)
        for (int o = 0; o < NO; o++) row[k][o] = 0;
    for (int w = 0; w < Wo; w++) {
        const real *dy = dyt + (size_t)w * dys;
        for (int k = 0; k < nc; k++) {
            real xv = x[k][w];
#pragma omp simd
            for (int o = 0; o < NO; o++) row[k][o] = FMA(xv, dy[o], row[k][o]);
        }
    }
}

static void conv_wgrad(real *dweight, const real *dout, const real *xp, const Padded *g, int Cin, int Cout,
                       int To, int Ho, int Wo, int kt, int kh, int kw, int st, int sh, int sw) {
    int K = kt * kh * kw, Coutp = (Cout + NO - 1) / NO * NO, nob = Coutp / NO;
    size_t P = (size_t)To * Ho * Wo;
    /* dy transposed to (channel block, position, NO channels), channels padded to NO */
    real *dyt = scratch(SCR_DYT, P * Coutp);
#pragma omp parallel for schedule(static)
    for (size_t bp = 0; bp < (size_t)nob * P; bp++) {
        size_t ob = bp / P, p = bp % P;
        for (int o = 0; o < NO; o++) {
            size_t oc = ob * NO + o;
            dyt[bp * NO + o] = oc < (size_t)Cout ? dout[oc * P + p] : 0;
        }
    }
    /* taps in groups: 3x3x3 kernels in groups of 3 (a, c) rows of 3 d (9 taps),
       any other kernel one tap at a time */
    int per = kw == 3 && K % 9 == 0 ? NC : 1, ngroup = K / per, ntask = nob * Cin * ngroup;
    /* the clip sums of every task, filled frame by frame: one frame of dy
       (Ho x Wo x NO floats per block) stays in cache while every task uses it */
    real *clip = scratch(SCR_WGRAD, (size_t)ntask * NC * NO);
    memset(clip, 0, (size_t)ntask * NC * NO * sizeof(real));
    for (int t = 0; t < To; t++) {
#pragma omp parallel for schedule(static)
        for (int task = 0; task < ntask; task++) {
            int ob = task / (Cin * ngroup), i = task / ngroup % Cin, grp = task % ngroup;
            real frame[NC][NO] = {{0}};
            for (int h = 0; h < Ho; h++) {
                const real *x[NC];
                for (int k = 0; k < per; k++) {
                    int tap = grp * per + k, a = tap / (kh * kw), c = tap / kw % kh, d = tap % kw;
                    x[k] = xp + (size_t)i * g->cs + ((size_t)(t * st + a) * g->Hp + h * sh + c) * g->Wrow + col_index(g, d);
                }
                real row[NC][NO];
                const real *dyrow = dyt + ((size_t)ob * P + ((size_t)t * Ho + h) * Wo) * NO;
                if (per == NC) wgrad_row(row, x, dyrow, NO, Wo, NC); /* constant nc: fully unrolled */
                else wgrad_row(row, x, dyrow, NO, Wo, 1);
                for (int k = 0; k < per; k++)
                    for (int o = 0; o < NO; o++) frame[k][o] += row[k][o];
            }
            real *c = clip + (size_t)task * NC * NO;
            for (int k = 0; k < per; k++)
                for (int o = 0; o < NO; o++) c[k * NO + o] += frame[k][o];
        }
    }
#pragma omp parallel for schedule(static)
    for (int task = 0; task < ntask; task++) {
        int ob = task / (Cin * ngroup), i = task / ngroup % Cin, grp = task % ngroup;
        const real *c = clip + (size_t)task * NC * NO;
        for (int k = 0; k < per; k++)
            for (int o = 0; o < NO && ob * NO + o < Cout; o++)
                dweight[((size_t)(ob * NO + o) * Cin + i) * K + grp * per + k] += c[k * NO + o];
    }
}

void ivae_conv3d_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                     const real *weight, int Cin, int T, int H, int W, int Cout, int kt, int kh,
                     int kw, int st, int sh, int sw) {
    conv_backward_packed(dinp, dweight, dbias, dout, inp, NULL, weight, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
}

/* the same with the flipped kernel already packed (wpkf; NULL: pack it here) */
static void conv_backward_packed(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                                 const real *wpkf, const real *weight, int Cin, int T, int H, int W, int Cout, int kt,
                                 int kh, int kw, int st, int sh, int sw) {
    // dinp (Cin, T, H, W) written; dweight, dbias accumulated; dout (Cout, To, Ho, Wo)
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw), K = kt * kh * kw;

    // in the forward pass: y[o,t',h',w'] += W[o,i,a,c,d] * x[i, t'st+a-(kt-1), h'sh+c-ph, w'sw+d-pw]
    // so dx[i,t,h,w] = sum_o sum_{a,c,d} W[o,i,a,c,d] * dy[o, t+(kt-1)-a, h+ph-c, w+pw-d]:
    // for stride 1, a convolution of dy (padded kt-1 frames at the end) with the flipped kernel
    // A strided conv is a stride-1 conv whose outputs are kept only at multiples
    // of the stride; so spread dy out to the stride-1 output grid, zeros between
    // (a zero adds nothing to a sum that starts from +0, so the bits are those of
    // visiting only the taps that hit a real output, as kernels.cl's strided
    // kernel may).
    if (dinp) {
        const real *dy = dout;
        int T1 = conv_out_t(T, 1), H1 = conv_out_s(H, kh, 1), W1 = conv_out_s(W, kw, 1);
        if (st * sh * sw != 1) {
            real *dil = scratch(SCR_DIL, (size_t)Cout * T1 * H1 * W1);
            memset(dil, 0, (size_t)Cout * T1 * H1 * W1 * sizeof(real));
#pragma omp parallel for schedule(static)
            for (int ot = 0; ot < Cout * To; ot++) {
                int o = ot / To, t = ot % To;
                for (int h = 0; h < Ho; h++)
                    for (int w = 0; w < Wo; w++)
                        dil[(((size_t)o * T1 + t * st) * H1 + h * sh) * W1 + w * sw] = dout[((size_t)ot * Ho + h) * Wo + w];
            }
            dy = dil;
        }
        int flat = K == 1; /* 1x1x1: one long row, as in the forward pass */
        Padded g;
        int qh = kh - 1 - kh / 2, qw = kw - 1 - kw / 2;
        const real *dyp = flat ? pad_input(SCR_DYPAD, &g, dy, Cout, 1, 1, T1 * H1 * W1, NULL, 0, 0, 0, 0, 1)
                               : pad_input(SCR_DYPAD, &g, dy, Cout, T1, H1, W1, NULL, 0, kt - 1, qh, qw, 1);
        if (!wpkf) wpkf = pack_weights(weight, Cout, Cin, K, 1);
        if (flat) conv_padded(dinp, dyp, &g, wpkf, NULL, Cout, Cin, 0, 1, 1, T * H * W, 1, 1, 1, 1, 1);
        else conv_padded(dinp, dyp, &g, wpkf, NULL, Cout, Cin, 0, T, H, W, kt, kh, kw, 1, 1);
    }

    // dW[o,i,a,c,d] += sum_{t',h',w'} dy[o,t',h',w'] * xpad[i, t'st+a, h'sh+c, w'sw+d]
    if (dweight) {
        Padded g;
        const real *xp = pad_input(SCR_PAD, &g, inp, Cin, T, H, W, NULL, kt - 1, 0, kh / 2, kw / 2, sw);
        conv_wgrad(dweight, dout, xp, &g, Cin, Cout, To, Ho, Wo, kt, kh, kw, st, sh, sw);
    }

    // y = ... + b[o], so db[o] += sum of dy over the whole output plane stack
    if (dbias) {
        for (int o = 0; o < Cout; o++) {
            Shape s = {1, To, Ho, Wo};
            dbias[o] += (real)sum_nested_d(dout + (size_t)o * To * Ho * Wo, s);
        }
    }
}

/* --- 2.2 SMC: the reparameterised weight ---------------------------------- */

/* What[o,i,k] = g * s[i]*W[o,i,k] / n[o],  n[o] = sqrt( sum_{i,k} (s[i]*W[o,i,k])^2 + 1e-8 ) */
void ivae_smc_weight_forward(real *what, real *norm, const real *weight, const real *scale,
                        const real *gain, int Cout, int Cin, int K) {
    // what (Cout, Cin, K), norm (Cout), weight (Cout, Cin, K), scale (Cin), gain (1)
#pragma omp parallel for schedule(static)
    for (int o = 0; o < Cout; o++) {
        const real *w = weight + (size_t)o * Cin * K;
        real sum = 0;
        for (int i = 0; i < Cin; i++) {
            real part = 0;
            for (int k = 0; k < K; k++) {
                real u = scale[i] * w[i * K + k];
                part += u * u;
            }
            sum += part;
        }
        real n = SQRT(sum + (real)1e-8);
        norm[o] = n;
        for (int i = 0; i < Cin; i++)
            for (int k = 0; k < K; k++) what[(size_t)o * Cin * K + i * K + k] = gain[0] * (scale[i] * w[i * K + k]) / n;
    }
}

void ivae_smc_weight_backward(real *dweight, real *dscale, real *dgain, const real *dwhat,
                         const real *norm, const real *weight, const real *scale,
                         const real *gain, int Cout, int Cin, int K) {
    // in the forward pass: what = g * u / n, u = s[i] * W, n = sqrt(sum u^2 + eps)
    // d what_j / d u_m = g (delta_jm / n - u_j u_m / n^3), so with dot = sum_j dwhat_j u_j:
    //   du = (g / n) * (dwhat - u * dot / n^2),  dW = s[i] * du,  ds[i] = sum_{o,k} W * du,
    //   dg = sum dwhat * u / n = sum_o dot[o] / n[o]
    real *dot = scratch(SCR_SMALL, Cout);
#pragma omp parallel for schedule(static)
    for (int o = 0; o < Cout; o++) {
        const real *w = weight + (size_t)o * Cin * K, *dwh = dwhat + (size_t)o * Cin * K;
        real sum = 0;
        for (int i = 0; i < Cin; i++) {
            real part = 0;
            for (int k = 0; k < K; k++) part += dwh[i * K + k] * (scale[i] * w[i * K + k]);
            sum += part;
        }
        dot[o] = sum;
    }
#define SMC_DU(o, i, k)                                                                           \
    ((gain[0] / norm[o]) * (dwhat[((size_t)(o) * Cin + (i)) * K + (k)] -                          \
                            (scale[i] * weight[((size_t)(o) * Cin + (i)) * K + (k)]) * dot[o] /   \
                                (norm[o] * norm[o])))
#pragma omp parallel for schedule(static)
    for (int o = 0; o < Cout; o++)
        for (int i = 0; i < Cin; i++)
            for (int k = 0; k < K; k++) dweight[((size_t)o * Cin + i) * K + k] += scale[i] * SMC_DU(o, i, k);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < Cin; i++) {
        real sum = 0;
        for (int o = 0; o < Cout; o++) {
            real part = 0;
            for (int k = 0; k < K; k++) part += weight[((size_t)o * Cin + i) * K + k] * SMC_DU(o, i, k);
            sum += part;
        }
        dscale[i] += sum;
    }
#undef SMC_DU
    real g = 0;
    for (int o = 0; o < Cout; o++) g += dot[o] / norm[o];
    dgain[0] += g;
}

/* --- 2.3 SiLU ------------------------------------------------------------- */

void ivae_silu_forward(real *out, const real *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < n; j++) out[j] = inp[j] / (1 + EXP(-inp[j]));
}

void ivae_silu_backward(real *dinp, const real *dout, const real *inp, size_t n) {
    // in the forward pass: y = x * sig(x), so dy/dx = sig * (1 + x * (1 - sig))
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < n; j++) {
        real x = inp[j];
        real sig = 1 / (1 + EXP(-x));
        dinp[j] = dout[j] * (sig * (1 + x * (1 - sig)));
    }
}

/* --- 2.4 PixelNorm -------------------------------------------------------- */

/* y[c,p] = x[c,p] / n[p],  n[p] = sqrt( (1/C) sum_c x[c,p]^2 + 1e-8 ) */
void ivae_pixelnorm_forward(real *out, real *norm, const real *inp, int C, size_t N) {
    // out (C, N), norm (N), inp (C, N)
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < N; p++) {
        real ss = 0;
        for (int c = 0; c < C; c++) ss += inp[c * N + p] * inp[c * N + p];
        real n = SQRT(ss / (real)C + (real)1e-8);
        norm[p] = n;
        for (int c = 0; c < C; c++) out[c * N + p] = inp[c * N + p] / n;
    }
}

void ivae_pixelnorm_backward(real *dinp, const real *dout, const real *norm, const real *inp, int C, size_t N) {
    // in the forward pass: y_c = x_c / n, n = sqrt(mean_c x^2 + eps), dn/dx_c = x_c / (C n)
    // so dx_c = dy_c / n - x_c * (sum_j dy_j x_j) / (C n^3) = (dy_c - x_c * dot / (C n^2)) / n
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < N; p++) {
        real dot = 0;
        for (int c = 0; c < C; c++) dot += dout[c * N + p] * inp[c * N + p];
        real n = norm[p];
        for (int c = 0; c < C; c++)
            dinp[c * N + p] = (dout[c * N + p] - inp[c * N + p] * dot / ((real)C * n * n)) / n;
    }
}

/* --- 2.6 attention (the part between the qkv and proj convolutions) ------ */

/* Token p (in frame t = p / HW) attends to the contiguous span [r0, r1):
   its own frame in `frame` mode, frames 0..t in `causal` mode. */
static void attn_span(int mode, int p, int HW, int *r0, int *r1) {
    int t = p / HW;
    *r0 = mode == IVAE_ATTN_CAUSAL ? 0 : t * HW;
    *r1 = (t + 1) * HW;
}

/* the row stride of the saved attention matrix */
static int attn_row_len(int mode, int T, int HW) { return mode == IVAE_ATTN_CAUSAL ? T * HW : HW; }

/* o_p = sum_r softmax_r(q_p . k_r / sqrt(C)) v_r over the allowed r */
void ivae_attention_forward(real *out, real *att, const real *qkv, int C, int T, int H, int W, int mode) {
    // out (C, N), att (N, L) probabilities, qkv (3C, N): q rows 0..C-1, k C..2C-1, v 2C..3C-1
    int HW = H * W, N = T * HW, L = attn_row_len(mode, T, HW);
    const real *q = qkv, *k = qkv + (size_t)C * N, *v = qkv + (size_t)2 * C * N;
    real scale = 1 / SQRT((real)C);
    real *tmps = scratch(SCR_THREAD, (size_t)L * max_threads());
#pragma omp parallel
    {
        real *tmp = THREAD_SCRATCH(tmps, L);
#pragma omp for schedule(static)
        for (int p = 0; p < N; p++) {
            int r0, r1;
            attn_span(mode, p, HW, &r0, &r1);
            real *a = att + (size_t)p * L;
            real mx = -INFINITY;
            for (int r = r0; r < r1; r++) {
                real dot = 0;
                for (int c = 0; c < C; c++) dot += q[(size_t)c * N + p] * k[(size_t)c * N + r];
                a[r - r0] = dot * scale;
                if (a[r - r0] > mx) mx = a[r - r0];
            }
            for (int r = r0; r < r1; r++) a[r - r0] = EXP(a[r - r0] - mx);
            real sum = sum_rows(a, r1 - r0, W);
            for (int r = r0; r < r1; r++) a[r - r0] = a[r - r0] / sum;
            for (int c = 0; c < C; c++) {
                for (int r = r0; r < r1; r++) tmp[r - r0] = a[r - r0] * v[(size_t)c * N + r];
                out[(size_t)c * N + p] = sum_rows(tmp, r1 - r0, W);
            }
        }
    }
}

void ivae_attention_backward(real *dqkv, const real *dout, const real *att, const real *qkv, int C,
                        int T, int H, int W, int mode) {
    // in the forward pass: s_pr = q_p.k_r * scale, a = softmax_r(s), o_p = sum_r a_pr v_r, so
    //   dv_r = sum_p a_pr do_p,  da_pr = do_p . v_r,  ds_pr = a_pr (da_pr - sum_r' a_pr' da_pr'),
    //   dq_p = scale * sum_r ds_pr k_r,  dk_r = scale * sum_p ds_pr q_p
    int HW = H * W, N = T * HW, L = attn_row_len(mode, T, HW);
    const real *q = qkv, *k = qkv + (size_t)C * N, *v = qkv + (size_t)2 * C * N;
    real *dq = dqkv, *dk = dqkv + (size_t)C * N, *dv = dqkv + (size_t)2 * C * N;
    real scale = 1 / SQRT((real)C);
    real *ds = scratch(SCR_ATT, (size_t)N * L), *tmps = scratch(SCR_THREAD, (size_t)N * max_threads());
#pragma omp parallel
    {
        real *tmp = THREAD_SCRATCH(tmps, N);
        /* ds, and dq, one token p per iteration */
#pragma omp for schedule(static)
        for (int p = 0; p < N; p++) {
            int r0, r1;
            attn_span(mode, p, HW, &r0, &r1);
            const real *a = att + (size_t)p * L;
            real *dsp = ds + (size_t)p * L;
            for (int r = r0; r < r1; r++) {
                real da = 0;
                for (int c = 0; c < C; c++) da += dout[(size_t)c * N + p] * v[(size_t)c * N + r];
                dsp[r - r0] = da; /* da for now */
                tmp[r - r0] = a[r - r0] * da;
            }
            real adot = sum_rows(tmp, r1 - r0, W);
            for (int r = r0; r < r1; r++) dsp[r - r0] = a[r - r0] * (dsp[r - r0] - adot);
            for (int c = 0; c < C; c++) {
                for (int r = r0; r < r1; r++) tmp[r - r0] = dsp[r - r0] * k[(size_t)c * N + r];
                dq[(size_t)c * N + p] = sum_rows(tmp, r1 - r0, W) * scale;
            }
        }
        /* dk and dv, one key token r per iteration: the queries that saw r
           form the span [p0, p1) */
#pragma omp for schedule(static)
        for (int r = 0; r < N; r++) {
            int t = r / HW;
            int p0 = t * HW, p1 = mode == IVAE_ATTN_CAUSAL ? N : (t + 1) * HW;
            for (int c = 0; c < C; c++) {
                for (int p = p0; p < p1; p++) {
                    int q0, q1;
                    attn_span(mode, p, HW, &q0, &q1);
                    tmp[p - p0] = ds[(size_t)p * L + r - q0] * q[(size_t)c * N + p];
                }
                dk[(size_t)c * N + r] = sum_rows(tmp, p1 - p0, W) * scale;
                for (int p = p0; p < p1; p++) {
                    int q0, q1;
                    attn_span(mode, p, HW, &q0, &q1);
                    tmp[p - p0] = att[(size_t)p * L + r - q0] * dout[(size_t)c * N + p];
                }
                dv[(size_t)c * N + r] = sum_rows(tmp, p1 - p0, W);
            }
        }
    }
}

/* --- 2.8 nearest-neighbour upsampling ------------------------------------- */

/* output frame j comes from input frame (j+1)/2 when temporal (T -> 2T-1:
   repeat each frame, drop the first), from frame j otherwise. A chunk that
   does not start the clip (first = 0) keeps both copies: T -> 2T, j from j/2. */
static int up_src_frame(int j, int temporal, int first) { return temporal ? (first ? (j + 1) / 2 : j / 2) : j; }
static int up_frames(int T, int temporal, int first) { return temporal ? (first ? 2 * T - 1 : 2 * T) : T; }

void ivae_upsample_forward(real *out, const real *inp, int C, int T, int H, int W, int temporal) {
    ivae_upsample_chunk(out, inp, C, T, H, W, temporal, 1);
}

void ivae_upsample_chunk(real *out, const real *inp, int C, int T, int H, int W, int temporal, int first) {
    // out (C, To, 2H, 2W), inp (C, T, H, W)
    int To = up_frames(T, temporal, first), Ho = 2 * H, Wo = 2 * W;
#pragma omp parallel for schedule(static)
    for (int cj = 0; cj < C * To; cj++) {
        int c = cj / To, j = cj % To;
        const real *xf = inp + ((size_t)c * T + up_src_frame(j, temporal, first)) * H * W;
        real *yf = out + (size_t)cj * Ho * Wo;
        for (int h = 0; h < Ho; h++)
            for (int w = 0; w < Wo; w++) yf[h * Wo + w] = xf[(h / 2) * W + w / 2];
    }
}

void ivae_upsample_backward(real *dinp, const real *dout, int C, int T, int H, int W, int temporal) {
    // each input pixel was copied to a 2x2 block of 1 or 2 output frames: sum them,
    // frames in increasing order, then the block in row-major order
    int To = temporal ? 2 * T - 1 : T, Ho = 2 * H, Wo = 2 * W;
#pragma omp parallel for schedule(static)
    for (int ct = 0; ct < C * T; ct++) {
        int c = ct / T, t = ct % T;
        real *dx = dinp + (size_t)ct * H * W;
        for (int p = 0; p < H * W; p++) dx[p] = 0;
        for (int j = 0; j < To; j++) {
            if (up_src_frame(j, temporal, 1) != t) continue;
            const real *dyf = dout + ((size_t)c * To + j) * Ho * Wo;
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    const real *b = dyf + (size_t)(2 * h) * Wo + 2 * w;
                    real s = b[0];
                    s += b[1];
                    s += b[Wo];
                    s += b[Wo + 1];
                    dx[h * W + w] += s;
                }
        }
    }
}

/* ========================================================================== */
/* 3. loss (SPEC 4)                                                           */
/* ========================================================================== */

/* rec = (1/N_ref) sum |xhat - x|; writes dxhat = coef * sign(xhat - x) where
   coef = w_i / (B * N_ref) is the weight this sample's loss term carries */
double ivae_rec_loss(real *dxhat, const real *xhat, const real *x, Shape s, real coef, real *scratch) {
    size_t n = shape_numel(s);
    for (size_t j = 0; j < n; j++) {
        real d = xhat[j] - x[j];
        scratch[j] = fabs(d);
        if (dxhat) dxhat[j] = d > 0 ? coef : d < 0 ? -coef : 0; /* |.|'(0) = 0, as PyTorch */
    }
    return sum_nested_d(scratch, s);
}

/* The latent (SPEC 3, 4): h holds 2z channels from the encoder;
   mu = h[0:z], logvar = clamp(h[z:2z], -30, 20), z = mu + exp(logvar/2) * eps.
   Returns the unnormalised KL sum, 0.5 * sum (mu^2 + exp(logvar) - 1 - logvar). */
double ivae_latent_forward(real *logvar, real *zs, const real *h, const real *eps, Shape zsh, real *scratch) {
    size_t n = shape_numel(zsh);
    const real *mu = h, *raw = h + n;
    for (size_t j = 0; j < n; j++) {
        real lv = raw[j] < -30 ? -30 : raw[j] > 20 ? 20 : raw[j];
        if (raw[j] != raw[j]) lv = raw[j]; /* NaN stays NaN: the guard must see it */
        logvar[j] = lv;
        zs[j] = mu[j] + EXP((real)0.5 * lv) * eps[j];
        scratch[j] = (real)0.5 * (mu[j] * mu[j] + EXP(lv) - 1 - lv);
    }
    return sum_nested_d(scratch, zsh);
}

void ivae_latent_backward(real *dh, const real *dz, const real *logvar, const real *h, const real *eps,
                     size_t n, real ckl) {
    // in the forward pass: z = mu + exp(lv/2) eps and kl = 0.5 (mu^2 + exp(lv) - 1 - lv), scaled by ckl,
    // so dmu = dz + ckl * mu,  dlv = dz * eps * exp(lv/2) / 2 + ckl * (exp(lv) - 1) / 2,
    // and the clamp passes dlv only where -30 <= raw <= 20
    const real *mu = h, *raw = h + n;
    for (size_t j = 0; j < n; j++) {
        real lv = logvar[j];
        dh[j] = dz[j] + ckl * mu[j];
        real dlv = dz[j] * eps[j] * (real)0.5 * EXP((real)0.5 * lv) + ckl * (real)0.5 * (EXP(lv) - 1);
        dh[n + j] = (raw[j] >= -30 && raw[j] <= 20) ? dlv : 0;
    }
}

/* Outlier penalty (SPEC 4, Movie Gen) on the sampled latent z (C, T, H, W):
   per frame, m[c], sd[c] = mean and population sd over (h, w), S = ||sd||,
   d_p = ||z[:,p] - m||;  opl_t = (1/HW) sum_p max(d_p - 3 S, 0);  returns the
   mean over t. With coef != 0 it also adds coef * d(opl)/dz to dz. */
double ivae_opl_forward_backward(real *dz, const real *z, Shape s, real coef, real *scratch) {
    int C = s.C, HW = s.H * s.W;
    size_t N = (size_t)s.T * HW;
    double total = 0;
    real *m = scratch, *dist = scratch + C, *g = scratch + C + HW;
    for (int t = 0; t < s.T; t++) {
        const real *zt = z + (size_t)t * HW; /* channel c at zt[c*N + p] */
        real var_sum = 0;
        for (int c = 0; c < C; c++) {
            m[c] = sum_rows(zt + c * N, HW, s.W) / (real)HW;
            for (int p = 0; p < HW; p++) dist[p] = (zt[c * N + p] - m[c]) * (zt[c * N + p] - m[c]);
            var_sum += sum_rows(dist, HW, s.W) / (real)HW; /* sd[c]^2 */
        }
        real S = SQRT(var_sum);
        int n_act = 0;
        for (int p = 0; p < HW; p++) {
            real ss = 0;
            for (int c = 0; c < C; c++) ss += (zt[c * N + p] - m[c]) * (zt[c * N + p] - m[c]);
            dist[p] = SQRT(ss);
        }
        real *hinge = g + C; /* HW values */
        for (int p = 0; p < HW; p++) {
            real e = dist[p] - 3 * S;
            hinge[p] = e > 0 ? e : 0;
            n_act += e > 0;
        }
        total += sum_rows(hinge, HW, s.W) / (real)HW;
        if (coef == 0 || !dz) continue;
        // with a_p = [d_p > 3S] and u = z - m:
        //   d opl_t / dz[c,j] = (1/HW) ( a_j u[c,j] / d_j - G_c / HW - 3 n_act u[c,j] / (HW S) ),
        //   G_c = sum_p a_p u[c,p] / d_p   (the mean m couples every position of the frame)
        for (int c = 0; c < C; c++) {
            for (int p = 0; p < HW; p++)
                hinge[p] = dist[p] - 3 * S > 0 ? (zt[c * N + p] - m[c]) / dist[p] : 0;
            g[c] = sum_rows(hinge, HW, s.W);
        }
        real k = coef / (real)s.T / (real)HW;
        for (int c = 0; c < C; c++)
            for (int p = 0; p < HW; p++) {
                real u = zt[c * N + p] - m[c];
                real v = (dist[p] - 3 * S > 0 ? u / dist[p] : 0) - g[c] / (real)HW;
                if (S > 0) v -= 3 * (real)n_act * u / ((real)HW * S);
                dz[(size_t)c * N + (size_t)t * HW + p] += k * v;
            }
    }
    return total / s.T;
}

/* ========================================================================== */
/* 4. the model (SPEC 3)                                                      */
/* ========================================================================== */

int ivae_config_preset(const char *name, IvaeConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    int base;
    if (strcmp(name, "ivae-s") == 0) base = 32;
    else if (strcmp(name, "ivae-xs") == 0) base = 16;
    else {
        ivae_set_error("unknown config '%s' (known: ivae-s, ivae-xs)", name);
        return -1;
    }
    cfg->base_ch = base;
    cfg->n_stages = 4;
    int mult[4] = {1, 2, 4, 4}, temporal[3] = {0, 1, 1};
    memcpy(cfg->ch_mult, mult, sizeof mult);
    memcpy(cfg->temporal, temporal, sizeof temporal);
    cfg->n_res = 1;
    cfg->z_ch = 16;
    cfg->attn = IVAE_ATTN_FRAME;
    return 0;
}

int ivae_config_check(const IvaeConfig *c) {
    if (c->n_stages < 1 || c->n_stages > IVAE_MAX_STAGES) {
        ivae_set_error("config: %d stages (must be 1..%d)", c->n_stages, IVAE_MAX_STAGES);
        return -1;
    }
    if (c->base_ch < 1 || c->base_ch > 4096 || c->z_ch < 1 || c->z_ch > 4096 || c->n_res < 1 || c->n_res > 64) {
        ivae_set_error("config: base_ch %d, z_ch %d, n_res %d out of range", c->base_ch, c->z_ch, c->n_res);
        return -1;
    }
    for (int s = 0; s < c->n_stages; s++)
        if (c->ch_mult[s] < 1 || c->ch_mult[s] > 64) {
            ivae_set_error("config: ch_mult[%d] = %d out of range 1..64", s, c->ch_mult[s]);
            return -1;
        }
    for (int s = 0; s + 1 < c->n_stages; s++)
        if (c->temporal[s] != 0 && c->temporal[s] != 1) {
            ivae_set_error("config: temporal[%d] = %d (must be 0 or 1)", s, c->temporal[s]);
            return -1;
        }
    if (c->attn != IVAE_ATTN_FRAME && c->attn != IVAE_ATTN_CAUSAL) {
        ivae_set_error("config: unknown attention mode %d", (int)c->attn);
        return -1;
    }
    return 0;
}

int ivae_time_factor(const IvaeConfig *c) {
    int f = 1;
    for (int s = 0; s + 1 < c->n_stages; s++) f *= c->temporal[s] ? 2 : 1;
    return f;
}

int ivae_space_factor(const IvaeConfig *c) { return 1 << (c->n_stages - 1); }

int ivae_latent_shape(const IvaeConfig *c, int T, int H, int W, int *Tz, int *Hz, int *Wz) {
    int ft = ivae_time_factor(c), fs = ivae_space_factor(c);
    if (T < 1 || (T - 1) % ft != 0) {
        ivae_set_error("%d frames: a clip must have 1 + %d*k frames (an image has 1)", T, ft);
        return -1;
    }
    if (H < 1 || W < 1 || H % fs != 0 || W % fs != 0) {
        ivae_set_error("%dx%d pixels: height and width must be positive multiples of %d", H, W, fs);
        return -1;
    }
    *Tz = (T - 1) / ft + 1;
    *Hz = H / fs;
    *Wz = W / fs;
    return 0;
}

/* --- parameters and blocks ------------------------------------------------ */

/* how a tensor is initialised (SPEC 6) */
enum { INIT_CONV, INIT_SMC, INIT_ZERO, INIT_ONE };

/* a convolution's parameters: offsets of weight and bias in the flat buffers */
typedef struct {
    size_t w, b;
    int cout, cin, kt, kh, kw, st, sh, sw;
    size_t pk, pkf; /* the weights packed for conv_tile, and flipped for dinp, in the model's packed buffer */
} Conv;

/* SMC: a conv whose weight is reparameterised with scale and gain. The
   effective weight What lives at offset w of the model's eff buffer. */
typedef struct {
    Conv c;
    size_t s, g;
    real *norm; /* (cout) n[o] of the current effective weight */
} Smc;

typedef enum { BLK_CONV, BLK_RES, BLK_ATTN, BLK_UP, BLK_SILU_CONV } BlockKind; /* = IvaeBlockKind's order */
_Static_assert(BLK_SILU_CONV == (int)IVAE_BLK_SILU_CONV && BLK_ATTN == (int)IVAE_BLK_ATTN, "block kinds out of step");

typedef struct {
    BlockKind kind;
    char name[80];
    Conv conv;       /* CONV, UP, SILU_CONV: the conv; RES: the shortcut; ATTN: qkv */
    Conv proj;       /* ATTN */
    Smc c1, c2;      /* RES */
    int shortcut;    /* RES: Cin != Cout */
    int temporal;    /* UP */
    /* streaming (chunked inference): the clip frame at which the next chunk
       starts, and for each conv with kt > 1 the last kt-1 frames of its input */
    int t_next;
    real *cache[2];
    size_t cache_cap[2];
    /* saved by the forward pass of the current sample */
    Shape in, out;
    const real *x;   /* the block's input */
    real *a1, *h1, *a2, *y;
    real *n, *nrm, *qkv, *att, *o;
} Block;

struct IvaeImpl {
    Block *enc, *dec;
    int n_enc, n_dec, cap_enc, cap_dec;
    int cap_tensors;
    int *init_kind;   /* (n_tensors) */
    int *fan_in;      /* (n_tensors) */
    real *eff, *deff; /* (n_params) SMC effective weights and their gradients */
    real *packed;     /* (n_packed) every conv's weights packed, refreshed per call */
    size_t n_packed;
    Arena arena;
    int streaming;    /* blocks run on chunks, convs pad from their caches */
};

static size_t add_tensor(IvaeModel *m, const char *name, int init, int fan_in, int ndim, int s0,
                         int s1, int s2, int s3, int s4) {
    struct IvaeImpl *I = m->impl;
    if (m->n_tensors == I->cap_tensors) {
        I->cap_tensors = I->cap_tensors ? 2 * I->cap_tensors : 64;
        m->info = realloc(m->info, I->cap_tensors * sizeof *m->info);
        I->init_kind = realloc(I->init_kind, I->cap_tensors * sizeof(int));
        I->fan_in = realloc(I->fan_in, I->cap_tensors * sizeof(int));
        if (!m->info || !I->init_kind || !I->fan_in) {
            fprintf(stderr, "ivae: out of memory\n");
            exit(1);
        }
    }
    IvaeParamInfo *p = &m->info[m->n_tensors];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    int shape[5] = {s0, s1, s2, s3, s4};
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < ndim; d++) {
        p->shape[d] = shape[d];
        p->numel *= (size_t)shape[d];
    }
    p->offset = m->n_params;
    I->init_kind[m->n_tensors] = init;
    I->fan_in[m->n_tensors] = fan_in;
    m->n_tensors++;
    m->n_params += p->numel;
    return p->offset;
}

static Conv add_conv(IvaeModel *m, const char *name, int init_w, int cout, int cin, int k, int st, int ss) {
    char buf[128];
    Conv c = {0, 0, cout, cin, k, k, k, st, ss, ss, 0, 0};
    c.pk = m->impl->n_packed;
    c.pkf = c.pk + packed_size(cout, cin, k * k * k);
    m->impl->n_packed = c.pkf + packed_size(cin, cout, k * k * k);
    int fan_in = cin * k * k * k;
    snprintf(buf, sizeof buf, "%s.weight", name);
    c.w = add_tensor(m, buf, init_w, fan_in, 5, cout, cin, k, k, k);
    snprintf(buf, sizeof buf, "%s.bias", name);
    c.b = add_tensor(m, buf, INIT_ZERO, 0, 1, cout, 0, 0, 0, 0);
    return c;
}

static Smc add_smc(IvaeModel *m, const char *name, int cout, int cin) {
    char buf[128];
    Smc s;
    s.c = add_conv(m, name, INIT_SMC, cout, cin, 3, 1, 1);
    snprintf(buf, sizeof buf, "%s.scale", name);
    s.s = add_tensor(m, buf, INIT_ONE, 0, 1, cin, 0, 0, 0, 0);
    snprintf(buf, sizeof buf, "%s.gain", name);
    s.g = add_tensor(m, buf, INIT_ONE, 0, 1, 1, 0, 0, 0, 0);
    s.norm = xcalloc((size_t)cout * sizeof(real));
    return s;
}

static Block *new_block(IvaeModel *m, int dec, BlockKind kind, const char *name) {
    struct IvaeImpl *I = m->impl;
    Block **arr = dec ? &I->dec : &I->enc;
    int *n = dec ? &I->n_dec : &I->n_enc, *cap = dec ? &I->cap_dec : &I->cap_enc;
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        *arr = realloc(*arr, *cap * sizeof(Block));
        if (!*arr) {
            fprintf(stderr, "ivae: out of memory\n");
            exit(1);
        }
    }
    Block *b = &(*arr)[(*n)++];
    memset(b, 0, sizeof *b);
    b->kind = kind;
    snprintf(b->name, sizeof b->name, "%s", name);
    return b;
}

static void add_res(IvaeModel *m, int dec, const char *name, int cin, int cout) {
    char buf[128];
    Block *b = new_block(m, dec, BLK_RES, name);
    snprintf(buf, sizeof buf, "%s.conv1", name);
    b->c1 = add_smc(m, buf, cout, cin);
    snprintf(buf, sizeof buf, "%s.conv2", name);
    b->c2 = add_smc(m, buf, cout, cout);
    b->shortcut = cin != cout;
    if (b->shortcut) {
        snprintf(buf, sizeof buf, "%s.shortcut", name);
        b->conv = add_conv(m, buf, INIT_CONV, cout, cin, 1, 1, 1);
    }
}

static void add_attn(IvaeModel *m, int dec, const char *name, int C) {
    char buf[128];
    Block *b = new_block(m, dec, BLK_ATTN, name);
    snprintf(buf, sizeof buf, "%s.qkv", name);
    b->conv = add_conv(m, buf, INIT_CONV, 3 * C, C, 1, 1, 1);
    snprintf(buf, sizeof buf, "%s.proj", name);
    b->proj = add_conv(m, buf, INIT_ZERO, C, C, 1, 1, 1); /* starts as the identity */
}

static void add_plain(IvaeModel *m, int dec, BlockKind kind, const char *name, int cout, int cin, int st) {
    Block *b = new_block(m, dec, kind, name);
    b->conv = add_conv(m, name, INIT_CONV, cout, cin, 3, st, kind == BLK_CONV && st > 0 && strstr(name, ".down") ? 2 : 1);
}

static void add_mid(IvaeModel *m, int dec, const char *prefix, int C) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s.mid.res.0", prefix);
    add_res(m, dec, buf, C, C);
    snprintf(buf, sizeof buf, "%s.mid.attn", prefix);
    add_attn(m, dec, buf, C);
    snprintf(buf, sizeof buf, "%s.mid.res.1", prefix);
    add_res(m, dec, buf, C, C);
}

/* the layer graph of SPEC 3, registering parameters in SPEC 5 order */
static void build_graph(IvaeModel *m) {
    const IvaeConfig *c = &m->cfg;
    int S = c->n_stages, Ch[IVAE_MAX_STAGES] = {0};
    for (int s = 0; s < S; s++) Ch[s] = c->base_ch * c->ch_mult[s];
    char buf[128];

    /* encoder */
    add_plain(m, 0, BLK_CONV, "encoder.conv_in", Ch[0], 3, 1);
    for (int s = 0; s < S; s++) {
        for (int j = 0; j < c->n_res; j++) {
            snprintf(buf, sizeof buf, "encoder.stages.%d.res.%d", s, j);
            add_res(m, 0, buf, j == 0 ? (s == 0 ? Ch[0] : Ch[s - 1]) : Ch[s], Ch[s]);
        }
        if (s < S - 1) {
            snprintf(buf, sizeof buf, "encoder.stages.%d.down", s);
            add_plain(m, 0, BLK_CONV, buf, Ch[s], Ch[s], c->temporal[s] ? 2 : 1);
        }
    }
    add_mid(m, 0, "encoder", Ch[S - 1]);
    add_plain(m, 0, BLK_SILU_CONV, "encoder.conv_out", 2 * c->z_ch, Ch[S - 1], 1);

    /* decoder */
    add_plain(m, 1, BLK_CONV, "decoder.conv_in", Ch[S - 1], c->z_ch, 1);
    add_mid(m, 1, "decoder", Ch[S - 1]);
    for (int s = S - 1; s >= 0; s--) {
        for (int j = 0; j < c->n_res; j++) {
            snprintf(buf, sizeof buf, "decoder.stages.%d.res.%d", s, j);
            add_res(m, 1, buf, j == 0 ? (s == S - 1 ? Ch[S - 1] : Ch[s + 1]) : Ch[s], Ch[s]);
        }
        if (s > 0) {
            snprintf(buf, sizeof buf, "decoder.stages.%d.up", s);
            add_plain(m, 1, BLK_UP, buf, Ch[s], Ch[s], 1);
            struct IvaeImpl *I = m->impl;
            I->dec[I->n_dec - 1].temporal = c->temporal[s - 1];
        }
    }
    add_plain(m, 1, BLK_SILU_CONV, "decoder.conv_out", 3, Ch[0], 1);
}

/* the layer graph and the parameter table, without the big buffers */
#define IVAE_MAX_PARAMS ((size_t)1 << 31)
static IvaeModel *model_graph(const IvaeConfig *cfg) {
    if (ivae_config_check(cfg) != 0) return NULL;
    IvaeModel *m = xcalloc(sizeof *m);
    m->cfg = *cfg;
    m->impl = xcalloc(sizeof *m->impl);
    build_graph(m);
    if (m->n_params > IVAE_MAX_PARAMS) {
        ivae_set_error("config: %zu parameters is more than this build handles (%zu)", m->n_params, IVAE_MAX_PARAMS);
        ivae_model_free(m);
        return NULL;
    }
    return m;
}

static void model_alloc(IvaeModel *m) {
    m->params = xcalloc(m->n_params * sizeof(real));
    m->grads = xcalloc(m->n_params * sizeof(real));
    m->impl->eff = xcalloc(m->n_params * sizeof(real));
    m->impl->deff = xcalloc(m->n_params * sizeof(real));
    m->impl->packed = xcalloc(m->impl->n_packed * sizeof(real));
}

IvaeModel *ivae_model_new(const IvaeConfig *cfg) {
    IvaeModel *m = model_graph(cfg);
    if (m) model_alloc(m);
    return m;
}

static void free_blocks(Block *b, int n) {
    for (int j = 0; j < n; j++) {
        if (b[j].kind == BLK_RES) {
            free(b[j].c1.norm);
            free(b[j].c2.norm);
        }
        free(b[j].cache[0]);
        free(b[j].cache[1]);
    }
    free(b);
}

void ivae_model_free(IvaeModel *m) {
    if (!m) return;
    struct IvaeImpl *I = m->impl;
    free_blocks(I->enc, I->n_enc);
    free_blocks(I->dec, I->n_dec);
    free(I->init_kind);
    free(I->fan_in);
    free(I->eff);
    free(I->deff);
    free(I->packed);
    arena_free(&I->arena);
    free(I);
    free(m->info);
    free(m->params);
    free(m->grads);
    free(m->adam_m);
    free(m->adam_v);
    free(m);
}

const IvaeParamInfo *ivae_find_param(const IvaeModel *m, const char *name) {
    for (int j = 0; j < m->n_tensors; j++)
        if (strcmp(m->info[j].name, name) == 0) return &m->info[j];
    return NULL;
}

/* SPEC 6: tensors in SPEC 5 order, each entry from one splitmix64 stream:
   plain conv weights U(-sqrt(3/fan_in), sqrt(3/fan_in)), SMC weights
   U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases and attention proj 0, SMC
   scale and gain 1. A uniform u in [0,1) maps to (2u - 1) * bound. */
void ivae_init_params(IvaeModel *m, uint64_t seed) {
    IvaeRng rng = {seed};
    for (int j = 0; j < m->n_tensors; j++) {
        const IvaeParamInfo *p = &m->info[j];
        real *v = m->params + p->offset;
        int kind = m->impl->init_kind[j];
        double bound = kind == INIT_CONV ? sqrt(3.0 / m->impl->fan_in[j])
                       : kind == INIT_SMC ? 1.0 / sqrt((double)m->impl->fan_in[j])
                                          : 0;
        for (size_t e = 0; e < p->numel; e++)
            v[e] = kind == INIT_ONE ? 1 : kind == INIT_ZERO ? 0 : (real)((2 * ivae_rng_uniform(&rng) - 1) * bound);
    }
}

void ivae_zero_grad(IvaeModel *m) { memset(m->grads, 0, m->n_params * sizeof(real)); }

/* --- the optimizer: AdamW (Loshchilov & Hutter) --------------------------- */

void ivae_adamw_defaults(IvaeAdamW *h) {
    h->lr = (real)1e-3;
    h->beta1 = (real)0.9;
    h->beta2 = (real)0.999;
    h->eps = (real)1e-8;
    h->weight_decay = 0;
}

/* m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (mhat / (sqrt(vhat) + eps) + wd p),
   mhat = m / (1 - b1^t), vhat = v / (1 - b2^t). Weight decay only on conv
   weights (5-D tensors): biases, SMC scales and gains are not pulled to 0. */
void ivae_adamw_step(IvaeModel *m, const IvaeAdamW *h) {
    if (!m->adam_m) {
        m->adam_m = xcalloc(m->n_params * sizeof(real));
        m->adam_v = xcalloc(m->n_params * sizeof(real));
    }
    m->step++;
    real c1 = (real)(1 - pow((double)h->beta1, (double)m->step));
    real c2 = (real)(1 - pow((double)h->beta2, (double)m->step));
    for (int t = 0; t < m->n_tensors; t++) {
        const IvaeParamInfo *p = &m->info[t];
        real wd = p->ndim == 5 ? h->weight_decay : 0;
        real *w = m->params + p->offset, *g = m->grads + p->offset;
        real *mm = m->adam_m + p->offset, *vv = m->adam_v + p->offset;
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < p->numel; j++) {
            mm[j] = h->beta1 * mm[j] + (1 - h->beta1) * g[j];
            vv[j] = h->beta2 * vv[j] + (1 - h->beta2) * (g[j] * g[j]);
            real mhat = mm[j] / c1, vhat = vv[j] / c2;
            w[j] = w[j] - h->lr * (mhat / (SQRT(vhat) + h->eps) + wd * w[j]);
        }
    }
}

/* --- units: what gradient clipping measures (ivae.h) ---------------------- */

int ivae_units(const IvaeModel *m, IvaeUnit *out) {
    int n = 0;
    for (int t = 0; t < m->n_tensors; t++) {
        const IvaeParamInfo *p = &m->info[t];
        int rows = p->ndim == 5 ? p->shape[0] : 1;
        for (int o = 0; o < rows; o++, n++)
            if (out) {
                out[n].len = (int)(p->numel / rows);
                out[n].offset = p->offset + (size_t)o * out[n].len;
                out[n].tensor = t, out[n].conv = p->ndim == 5;
            }
    }
    return n;
}

void ivae_unit_sumsq(const IvaeUnit *u, int n, const real *x, double *out) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int j = 0; j < n; j++) {
        const real *v = x + u[j].offset;
        double s = 0;
        for (int k = 0; k < u[j].len; k++) s += (double)v[k] * v[k];
        out[j] = s;
    }
}

void ivae_unit_scale(const IvaeUnit *u, int n, real *x, const real *f) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int j = 0; j < n; j++) {
        if (f[j] == 1) continue;
        real *v = x + u[j].offset;
        for (int k = 0; k < u[j].len; k++) v[k] *= f[j];
    }
}

/* --- running the layer graph ---------------------------------------------- */

static void for_each_smc(IvaeModel *m, void (*fn)(IvaeModel *, Smc *)) {
    struct IvaeImpl *I = m->impl;
    for (int j = 0; j < I->n_enc; j++)
        if (I->enc[j].kind == BLK_RES) fn(m, &I->enc[j].c1), fn(m, &I->enc[j].c2);
    for (int j = 0; j < I->n_dec; j++)
        if (I->dec[j].kind == BLK_RES) fn(m, &I->dec[j].c1), fn(m, &I->dec[j].c2);
}

/* packs every conv's weights (SMC convs: the effective weights) for conv_tile,
   once per batch instead of once per sample; flip: also the dinp kernels */
static void pack_conv(IvaeModel *m, const Conv *c, const real *wbase, int flip) {
    int K = c->kt * c->kh * c->kw;
    pack_into(m->impl->packed + c->pk, wbase + c->w, c->cout, c->cin, K, 0);
    if (flip) pack_into(m->impl->packed + c->pkf, wbase + c->w, c->cout, c->cin, K, 1);
}

static void pack_all(IvaeModel *m, int flip) {
    struct IvaeImpl *I = m->impl;
    for (int j = 0; j < I->n_enc + I->n_dec; j++) {
        Block *b = j < I->n_enc ? &I->enc[j] : &I->dec[j - I->n_enc];
        if (b->kind == BLK_RES) {
            pack_conv(m, &b->c1.c, I->eff, flip);
            pack_conv(m, &b->c2.c, I->eff, flip);
            if (b->shortcut) pack_conv(m, &b->conv, m->params, flip);
        } else {
            pack_conv(m, &b->conv, m->params, flip);
            if (b->kind == BLK_ATTN) pack_conv(m, &b->proj, m->params, flip);
        }
    }
}

static void smc_prepare(IvaeModel *m, Smc *s) {
    const Conv *c = &s->c;
    ivae_smc_weight_forward(m->impl->eff + c->w, s->norm, m->params + c->w, m->params + s->s,
                       m->params + s->g, c->cout, c->cin, c->kt * c->kh * c->kw);
    memset(m->impl->deff + c->w, 0, (size_t)c->cout * c->cin * c->kt * c->kh * c->kw * sizeof(real));
}

static void smc_finish(IvaeModel *m, Smc *s) {
    const Conv *c = &s->c;
    ivae_smc_weight_backward(m->grads + c->w, m->grads + s->s, m->grads + s->g, m->impl->deff + c->w,
                        s->norm, m->params + c->w, m->params + s->s, m->params + s->g, c->cout,
                        c->cin, c->kt * c->kh * c->kw);
}

static Shape conv_out_shape(const Conv *c, Shape s) {
    Shape o = {c->cout, conv_out_t(s.T, c->st), conv_out_s(s.H, c->kh, c->sh), conv_out_s(s.W, c->kw, c->sw)};
    return o;
}

/* keeps the last kt-1 frames of the sequence [prev | x] (prev NULL: zeros) */
static void cache_update(Block *b, int slot, const real *x, Shape s, int keep) {
    size_t fr = (size_t)s.H * s.W, n = (size_t)s.C * keep * fr;
    if (b->cache_cap[slot] < n) {
        free(b->cache[slot]);
        b->cache[slot] = xcalloc(n * sizeof(real));
        b->cache_cap[slot] = n;
    }
    real *cache = b->cache[slot];
    int had = b->t_next > 0; /* before the first chunk the cache holds zeros */
    for (int c = 0; c < s.C; c++)
        for (int j = 0; j < keep; j++) { /* ascending j: reads q > j, not yet overwritten */
            int q = s.T + j;             /* index in [prev (keep frames) | x] */
            real *dst = cache + ((size_t)c * keep + j) * fr;
            if (q >= keep) memcpy(dst, x + ((size_t)c * s.T + q - keep) * fr, fr * sizeof(real));
            else if (had) memmove(dst, cache + ((size_t)c * keep + q) * fr, fr * sizeof(real));
            else memset(dst, 0, fr * sizeof(real));
        }
}

/* y = conv(x) with the weight read from wbase (params, or eff for an SMC).
   Streaming, x is a chunk starting at clip frame s0, and the frames in front
   of it come from the conv's cache (slot) instead of zero padding. */
static real *conv_fwd(IvaeModel *m, Block *b, int slot, const Conv *c, const real *wbase, const real *x, Shape s,
                      Shape *os, int s0) {
    *os = conv_out_shape(c, s);
    if (!m->impl->streaming) {
        real *y = arena_alloc(&m->impl->arena, shape_numel(*os));
        conv_forward_packed(y, x, NULL, 0, m->impl->packed + c->pk, wbase + c->w, m->params + c->b, c->cin, s.T, s.H,
                            s.W, c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw);
        return y;
    }
    os->T = (s0 + s.T - 1) / c->st - (s0 + c->st - 1) / c->st + 1;
    real *y = arena_alloc(&m->impl->arena, shape_numel(*os));
    const real *prev = c->kt > 1 && b->t_next > 0 ? b->cache[slot] : NULL;
    conv_forward_packed(y, x, prev, s0, m->impl->packed + c->pk, wbase + c->w, m->params + c->b, c->cin, s.T, s.H,
                        s.W, c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw);
    if (c->kt > 1) cache_update(b, slot, x, s, c->kt - 1);
    return y;
}

static real *conv_bwd(IvaeModel *m, const Conv *c, const real *wbase, real *dwbase, const real *dy,
                      const real *x, Shape s) {
    real *dx = arena_alloc(&m->impl->arena, shape_numel(s));
    conv_backward_packed(dx, dwbase + c->w, m->grads + c->b, dy, x, m->impl->packed + c->pkf, wbase + c->w, c->cin,
                         s.T, s.H, s.W, c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw);
    return dx;
}

static real *silu_fwd(IvaeModel *m, const real *x, Shape s) {
    real *y = arena_alloc(&m->impl->arena, shape_numel(s));
    ivae_silu_forward(y, x, shape_numel(s));
    return y;
}

/* runs block b on x (the whole clip, or in streaming mode the next chunk) */
static const real *block_forward(IvaeModel *m, Block *b, const real *x, Shape s) {
    real *P = m->params, *E = m->impl->eff;
    Arena *A = &m->impl->arena;
    Shape os = s, tmp;
    int s0 = m->impl->streaming ? b->t_next : 0; /* clip frame of x's frame 0 */
    b->in = s;
    b->x = x;
    switch (b->kind) {
    case BLK_CONV:
        b->y = conv_fwd(m, b, 0, &b->conv, P, x, s, &os, s0);
        break;
    case BLK_SILU_CONV:
        b->a1 = silu_fwd(m, x, s);
        b->y = conv_fwd(m, b, 0, &b->conv, P, b->a1, s, &os, s0);
        break;
    case BLK_UP: {
        int first = s0 == 0;
        Shape us = {s.C, up_frames(s.T, b->temporal, first), 2 * s.H, 2 * s.W};
        b->a1 = arena_alloc(A, shape_numel(us));
        ivae_upsample_chunk(b->a1, x, s.C, s.T, s.H, s.W, b->temporal, first);
        b->y = conv_fwd(m, b, 0, &b->conv, P, b->a1, us, &os, b->temporal && !first ? 2 * s0 - 1 : s0);
        break;
    }
    case BLK_RES: {
        // h = smc1(silu(x)); h = smc2(silu(h)); out = shortcut(x) + h
        b->a1 = silu_fwd(m, x, s);
        b->h1 = conv_fwd(m, b, 0, &b->c1.c, E, b->a1, s, &tmp, s0);
        b->a2 = silu_fwd(m, b->h1, tmp);
        b->y = conv_fwd(m, b, 1, &b->c2.c, E, b->a2, tmp, &os, s0);
        const real *sc = b->shortcut ? conv_fwd(m, b, 0, &b->conv, P, x, s, &tmp, s0) : x;
        size_t n = shape_numel(os);
        for (size_t j = 0; j < n; j++) b->y[j] = sc[j] + b->y[j];
        break;
    }
    case BLK_ATTN: {
        // n = pixelnorm(x); qkv = conv(n); o = attention(qkv); out = x + proj(o)
        size_t N = (size_t)s.T * s.H * s.W;
        int L = attn_row_len(m->cfg.attn, s.T, s.H * s.W);
        b->n = arena_alloc(A, shape_numel(s));
        b->nrm = arena_alloc(A, N);
        ivae_pixelnorm_forward(b->n, b->nrm, x, s.C, N);
        b->qkv = conv_fwd(m, b, 0, &b->conv, P, b->n, s, &tmp, s0);
        b->att = arena_alloc(A, N * L);
        b->o = arena_alloc(A, shape_numel(s));
        ivae_attention_forward(b->o, b->att, b->qkv, s.C, s.T, s.H, s.W, m->cfg.attn);
        b->y = conv_fwd(m, b, 0, &b->proj, P, b->o, s, &os, s0);
        for (size_t j = 0; j < shape_numel(s); j++) b->y[j] = x[j] + b->y[j];
        break;
    }
    }
    b->out = os;
    if (m->impl->streaming) b->t_next += s.T;
    return b->y;
}

/* returns dL/d(block input), given dL/d(block output) */
static real *block_backward(IvaeModel *m, Block *b, const real *dy) {
    real *P = m->params, *G = m->grads, *E = m->impl->eff, *DE = m->impl->deff;
    Arena *A = &m->impl->arena;
    Shape s = b->in;
    size_t n = shape_numel(s);
    real *dx = NULL;
    switch (b->kind) {
    case BLK_CONV:
        dx = conv_bwd(m, &b->conv, P, G, dy, b->x, s);
        break;
    case BLK_SILU_CONV: {
        real *da = conv_bwd(m, &b->conv, P, G, dy, b->a1, s);
        dx = arena_alloc(A, n);
        ivae_silu_backward(dx, da, b->x, n);
        break;
    }
    case BLK_UP: {
        Shape us = {s.C, b->temporal ? 2 * s.T - 1 : s.T, 2 * s.H, 2 * s.W};
        real *da = conv_bwd(m, &b->conv, P, G, dy, b->a1, us);
        dx = arena_alloc(A, n);
        ivae_upsample_backward(dx, da, s.C, s.T, s.H, s.W, b->temporal);
        break;
    }
    case BLK_RES: {
        // out = shortcut(x) + smc2(silu(smc1(silu(x))))
        Shape hs = {b->c1.c.cout, s.T, s.H, s.W};
        size_t nh = shape_numel(hs);
        real *da2 = conv_bwd(m, &b->c2.c, E, DE, dy, b->a2, hs);
        real *dh1 = arena_alloc(A, nh);
        ivae_silu_backward(dh1, da2, b->h1, nh);
        real *da1 = conv_bwd(m, &b->c1.c, E, DE, dh1, b->a1, s);
        dx = arena_alloc(A, n);
        ivae_silu_backward(dx, da1, b->x, n);
        const real *dsc = b->shortcut ? conv_bwd(m, &b->conv, P, G, dy, b->x, s) : dy;
        for (size_t j = 0; j < n; j++) dx[j] = dx[j] + dsc[j];
        break;
    }
    case BLK_ATTN: {
        // out = x + proj(attention(qkv(pixelnorm(x))))
        size_t N = (size_t)s.T * s.H * s.W;
        real *dout = conv_bwd(m, &b->proj, P, G, dy, b->o, s);
        Shape qs = {3 * s.C, s.T, s.H, s.W};
        real *dqkv = arena_alloc(A, shape_numel(qs));
        ivae_attention_backward(dqkv, dout, b->att, b->qkv, s.C, s.T, s.H, s.W, m->cfg.attn);
        real *dn = conv_bwd(m, &b->conv, P, G, dqkv, b->n, s);
        dx = arena_alloc(A, n);
        ivae_pixelnorm_backward(dx, dn, b->nrm, b->x, s.C, N);
        for (size_t j = 0; j < n; j++) dx[j] = dx[j] + dy[j];
        break;
    }
    }
    return dx;
}

static const real *run_forward(IvaeModel *m, Block *blocks, int nb, const real *x, Shape s, Shape *os) {
    for (int j = 0; j < nb; j++) {
        x = block_forward(m, &blocks[j], x, s);
        s = blocks[j].out;
    }
    *os = s;
    return x;
}

static real *run_backward(IvaeModel *m, Block *blocks, int nb, const real *dy) {
    for (int j = nb - 1; j >= 0; j--) dy = block_backward(m, &blocks[j], dy);
    return (real *)dy;
}

static int check_input(IvaeModel *m, const real *x, int T, int H, int W, Shape *zs) {
    int Tz, Hz, Wz;
    if (!x) {
        ivae_set_error("no input");
        return -1;
    }
    if (ivae_latent_shape(&m->cfg, T, H, W, &Tz, &Hz, &Wz) != 0) return -1;
    zs->C = m->cfg.z_ch;
    zs->T = Tz;
    zs->H = Hz;
    zs->W = Wz;
    return 0;
}

static int all_finite(const real *v, size_t n) {
    int ok = 1;
    for (size_t j = 0; j < n; j++) ok &= isfinite(v[j]);
    return ok;
}

/* the first block (in forward order) whose output holds a NaN or inf */
static void find_nonfinite_activation(IvaeModel *m, int sample, char *where) {
    struct IvaeImpl *I = m->impl;
    Block *lists[2] = {I->enc, I->dec};
    int counts[2] = {I->n_enc, I->n_dec};
    for (int l = 0; l < 2; l++)
        for (int j = 0; j < counts[l]; j++) {
            const Block *b = &lists[l][j];
            if (!all_finite(b->y, shape_numel(b->out))) {
                snprintf(where, 128, "sample %d, activation %s", sample, b->name);
                return;
            }
        }
    snprintf(where, 128, "sample %d, loss (activations finite)", sample);
}

int ivae_activation_stats(IvaeModel *m, IvaeActStat *out, int max) {
    struct IvaeImpl *I = m->impl;
    int n = 0;
    for (int j = 0; j < I->n_enc + I->n_dec && n < max; j++) {
        const Block *b = j < I->n_enc ? &I->enc[j] : &I->dec[j - I->n_enc];
        if (!b->y) continue;
        size_t N = (size_t)b->out.T * b->out.H * b->out.W;
        double ss = 0, mx = 0;
        for (size_t p = 0; p < N; p++) {
            double pn = 0;
            for (int c = 0; c < b->out.C; c++) pn += (double)b->y[c * N + p] * b->y[c * N + p];
            ss += pn;
            if (pn > mx || pn != pn) mx = pn;
        }
        out[n].name = b->name;
        out[n].rms = sqrt(ss / ((double)N * b->out.C));
        out[n].max_norm = sqrt(mx);
        n++;
    }
    return n;
}

static IvaeConvDesc conv_desc(const Conv *c) {
    IvaeConvDesc d = {c->w, c->b, c->cout, c->cin, c->kt, c->kh, c->kw, c->st, c->sh, c->sw};
    return d;
}

int ivae_graph(const IvaeModel *m, int decoder, IvaeBlockDesc *out, int max) {
    const struct IvaeImpl *I = m->impl;
    const Block *bl = decoder ? I->dec : I->enc;
    int n = decoder ? I->n_dec : I->n_enc;
    for (int j = 0; j < n && j < max; j++) {
        const Block *b = &bl[j];
        IvaeBlockDesc *d = &out[j];
        memset(d, 0, sizeof *d);
        d->kind = (IvaeBlockKind)b->kind; /* the enums list the kinds in the same order */
        d->name = b->name;
        d->conv = conv_desc(&b->conv), d->proj = conv_desc(&b->proj);
        d->c1 = conv_desc(&b->c1.c), d->c2 = conv_desc(&b->c2.c);
        d->c1_scale = b->c1.s, d->c1_gain = b->c1.g, d->c2_scale = b->c2.s, d->c2_gain = b->c2.g;
        d->shortcut = b->shortcut, d->temporal = b->temporal;
    }
    return n < max ? n : max;
}

const real *ivae_block_output(const IvaeModel *m, int decoder, int j, int shape[4]) {
    const struct IvaeImpl *I = m->impl;
    int n = decoder ? I->n_dec : I->n_enc;
    if (j < 0 || j >= n) return NULL;
    const Block *b = decoder ? &I->dec[j] : &I->enc[j];
    shape[0] = b->out.C, shape[1] = b->out.T, shape[2] = b->out.H, shape[3] = b->out.W;
    return b->y;
}

void ivae_loss_defaults(IvaeLossOpts *o) {
    o->w_image = 1;
    o->w_video = 1;
    o->beta = (real)1e-6;
    o->w_opl = 0;
    o->ref_t = 17;
    o->ref_h = 64;
    o->ref_w = 64;
}

int ivae_check_batch(const IvaeModel *m, const IvaeSample *samples, int B, const IvaeLossOpts *opts) {
    if (B < 1) {
        ivae_set_error("empty batch");
        return -1;
    }
    if (opts->ref_t < 1 || opts->ref_h < 1 || opts->ref_w < 1) {
        ivae_set_error("reference shape %dx%dx%d must be positive", opts->ref_t, opts->ref_h, opts->ref_w);
        return -1;
    }
    for (int i = 0; i < B; i++) {
        int Tz, Hz, Wz;
        if (!samples[i].x) {
            ivae_set_error("sample %d: no input", i);
            return -1;
        }
        if (ivae_latent_shape(&m->cfg, samples[i].T, samples[i].H, samples[i].W, &Tz, &Hz, &Wz) != 0) {
            char msg[1024];
            snprintf(msg, sizeof msg, "sample %d: %s", i, ivae_error());
            ivae_set_error("%s", msg);
            return -1;
        }
        if (!samples[i].eps) {
            ivae_set_error("sample %d: no noise eps", i);
            return -1;
        }
    }
    return 0;
}

int ivae_batch_grad(IvaeModel *m, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeLoss *out) {
    struct IvaeImpl *I = m->impl;
    if (ivae_check_batch(m, samples, B, opts) != 0) return -1;
    real n_ref = (real)3 * opts->ref_t * opts->ref_h * opts->ref_w;
    memset(out, 0, sizeof *out);
    for_each_smc(m, smc_prepare);
    pack_all(m, 1);
    for (int i = 0; i < B; i++) {
        IvaeSample *sp = &samples[i];
        arena_reset(&I->arena);
        Shape xs = {3, sp->T, sp->H, sp->W}, hs, zs, os;
        size_t nx = shape_numel(xs);
        real w_i = (sp->T == 1 ? opts->w_image : opts->w_video) / (real)B;

        /* forward: encoder, latent, decoder, loss terms */
        const real *h = run_forward(m, I->enc, I->n_enc, sp->x, xs, &hs);
        zs = hs;
        zs.C = m->cfg.z_ch;
        size_t nz = shape_numel(zs);
        real *logvar = arena_alloc(&I->arena, nz), *z = arena_alloc(&I->arena, nz);
        real *scratch = arena_alloc(&I->arena, nx > nz + 2 * (size_t)zs.C + 2 * (size_t)zs.H * zs.W ? nx : nz + 2 * (size_t)zs.C + 2 * (size_t)zs.H * zs.W);
        double kl = ivae_latent_forward(logvar, z, h, sp->eps, zs, scratch) / n_ref;
        const real *xhat = run_forward(m, I->dec, I->n_dec, z, zs, &os);
        real *dxhat = arena_alloc(&I->arena, nx);
        real c_rec = w_i / n_ref;
        double rec = ivae_rec_loss(dxhat, xhat, sp->x, xs, c_rec, scratch) / n_ref;
        if (!out->nonfinite[0] && !(isfinite(rec) && isfinite(kl))) find_nonfinite_activation(m, i, out->nonfinite);

        /* backward: decoder, outlier penalty, latent, encoder */
        real *dz = run_backward(m, I->dec, I->n_dec, dxhat);
        double opl = 0;
        if (opts->w_opl != 0) opl = ivae_opl_forward_backward(dz, z, zs, w_i * opts->w_opl, scratch);
        real *dh = arena_alloc(&I->arena, 2 * nz);
        ivae_latent_backward(dh, dz, logvar, h, sp->eps, nz, w_i * opts->beta / n_ref);
        real *dx = run_backward(m, I->enc, I->n_enc, dh);
        /* x also enters the loss directly: rec = |xhat - x| */
        for (size_t j = 0; j < nx; j++) dx[j] = dx[j] - dxhat[j];

        out->loss += (double)w_i * (rec + (double)opts->beta * kl + (double)opts->w_opl * opl);
        out->rec += rec / B;
        out->kl += kl / B;
        out->opl += opl / B;
        if (sp->mu) memcpy(sp->mu, h, nz * sizeof(real));
        if (sp->logvar) memcpy(sp->logvar, logvar, nz * sizeof(real));
        if (sp->xhat) memcpy(sp->xhat, xhat, nx * sizeof(real));
        if (sp->dx) memcpy(sp->dx, dx, nx * sizeof(real));
    }
    for_each_smc(m, smc_finish);
    if (!out->nonfinite[0])
        for (int t = 0; t < m->n_tensors; t++) {
            const IvaeParamInfo *p = &m->info[t];
            if (!all_finite(m->grads + p->offset, p->numel)) {
                snprintf(out->nonfinite, sizeof out->nonfinite, "gradient %s", p->name);
                break;
            }
        }
    return 0;
}

/* --- inference: whole clips, or streamed chunk by chunk ------------------- */

/* copies frames [t0, t0+n) of a (C, T, H, W) tensor to or from a (C, n, H, W) one */
static void copy_frames(real *dst, int dT, int dt0, const real *src, int sT, int st0, int C, int n, size_t fr) {
    for (int c = 0; c < C; c++)
        memcpy(dst + ((size_t)c * dT + dt0) * fr, src + ((size_t)c * sT + st0) * fr, (size_t)n * fr * sizeof(real));
}

static void encode_whole(IvaeModel *m, const real *x, Shape xs, real *mu, Shape zs) {
    Shape hs;
    arena_reset(&m->impl->arena);
    const real *h = run_forward(m, m->impl->enc, m->impl->n_enc, x, xs, &hs);
    memcpy(mu, h, shape_numel(zs) * sizeof(real));
}

static void decode_whole(IvaeModel *m, const real *z, Shape zs, real *xhat) {
    Shape os;
    arena_reset(&m->impl->arena);
    const real *y = run_forward(m, m->impl->dec, m->impl->n_dec, z, zs, &os);
    memcpy(xhat, y, shape_numel(os) * sizeof(real));
}

static void stream_begin(IvaeModel *m, Block *blocks, int nb) {
    m->impl->streaming = 1;
    for (int j = 0; j < nb; j++) blocks[j].t_next = 0;
}

/* The encoder streamed: chunks of 1, then time_factor frames, each giving one
   latent frame; every causal conv keeps the last kt-1 frames of its input
   between chunks, so memory does not grow with the clip and every output is
   bit for bit the whole clip's. */
static void encode_stream(IvaeModel *m, const real *x, Shape xs, real *mu, Shape zs) {
    struct IvaeImpl *I = m->impl;
    size_t fr = (size_t)xs.H * xs.W, zfr = (size_t)zs.H * zs.W;
    int ft = ivae_time_factor(&m->cfg);
    stream_begin(m, I->enc, I->n_enc);
    for (int t0 = 0, k = 0; t0 < xs.T; k++) {
        int n = t0 == 0 ? 1 : ft;
        arena_reset(&I->arena);
        Shape cs = {3, n, xs.H, xs.W}, hs;
        real *chunk = arena_alloc(&I->arena, shape_numel(cs));
        copy_frames(chunk, n, 0, x, xs.T, t0, 3, n, fr);
        const real *h = run_forward(m, I->enc, I->n_enc, chunk, cs, &hs); /* (2z, 1, Hz, Wz) */
        copy_frames(mu, zs.T, k, h, hs.T, 0, zs.C, 1, zfr);
        t0 += n;
    }
    I->streaming = 0;
}

/* the decoder streamed one latent frame at a time */
static void decode_stream(IvaeModel *m, const real *z, Shape zs, real *xhat, Shape xs) {
    struct IvaeImpl *I = m->impl;
    size_t fr = (size_t)xs.H * xs.W, zfr = (size_t)zs.H * zs.W;
    stream_begin(m, I->dec, I->n_dec);
    for (int k = 0, t0 = 0; k < zs.T; k++) {
        arena_reset(&I->arena);
        Shape cs = {zs.C, 1, zs.H, zs.W}, os;
        real *chunk = arena_alloc(&I->arena, shape_numel(cs));
        copy_frames(chunk, 1, 0, z, zs.T, k, zs.C, 1, zfr);
        const real *y = run_forward(m, I->dec, I->n_dec, chunk, cs, &os);
        copy_frames(xhat, xs.T, t0, y, os.T, 0, 3, os.T, fr);
        t0 += os.T;
    }
    I->streaming = 0;
}

/* Streaming needs attention within a frame; causal attention looks at every
   earlier frame, so that mode runs on the whole clip at once. */
int ivae_encode(IvaeModel *m, const real *x, int T, int H, int W, real *mu) {
    Shape zs, xs = {3, T, H, W};
    if (check_input(m, x, T, H, W, &zs) != 0) return -1;
    for_each_smc(m, smc_prepare);
    pack_all(m, 0);
    if (m->cfg.attn == IVAE_ATTN_FRAME) encode_stream(m, x, xs, mu, zs);
    else encode_whole(m, x, xs, mu, zs);
    return 0;
}

int ivae_decode(IvaeModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat) {
    Shape zs = {m->cfg.z_ch, Tz, Hz, Wz};
    if (!z || Tz < 1 || Hz < 1 || Wz < 1) {
        ivae_set_error("latent shape %dx%dx%d must be positive", Tz, Hz, Wz);
        return -1;
    }
    int fs = ivae_space_factor(&m->cfg);
    Shape xs = {3, (Tz - 1) * ivae_time_factor(&m->cfg) + 1, Hz * fs, Wz * fs};
    for_each_smc(m, smc_prepare);
    pack_all(m, 0);
    if (m->cfg.attn == IVAE_ATTN_FRAME) decode_stream(m, z, zs, xhat, xs);
    else decode_whole(m, z, zs, xhat);
    return 0;
}

/* ========================================================================== */
/* 5. checkpoints: safetensors (SPEC 5)                                       */
/* ========================================================================== */
/* A file is: u64 little-endian header length n, n bytes of JSON, raw data.
   The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
   end]} (offsets relative to the data section) and "__metadata__" to a map
   of strings. The reader trusts nothing: every offset, size and shape is
   checked against the file before any byte is read. */

#define ST_MAX_HEADER (100u << 20)

static size_t dtype_size(IvaeDtype d) { return d == IVAE_F64 ? 8 : d == IVAE_F32 ? 4 : 2; }

/* a tiny JSON reader, just enough for a safetensors header */
typedef struct {
    const char *s, *end;
    const char *path;
    const char *start;
} Json;

static void js_ws(Json *j) {
    while (j->s < j->end && (*j->s == ' ' || *j->s == '\n' || *j->s == '\r' || *j->s == '\t')) j->s++;
}

static int js_fail(Json *j, const char *what) {
    ivae_set_error("%s: corrupt safetensors header: %s at byte %ld of the header", j->path, what, (long)(j->s - j->start));
    return -1;
}

static int js_expect(Json *j, char c) {
    js_ws(j);
    if (j->s >= j->end || *j->s != c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        return js_fail(j, what);
    }
    j->s++;
    return 0;
}

static int js_string(Json *j, char *out, size_t cap) {
    size_t n = 0;
    if (js_expect(j, '"') != 0) return -1;
    while (j->s < j->end && *j->s != '"') {
        char c = *j->s++;
        if ((unsigned char)c < 0x20) return js_fail(j, "control character in string");
        if (c == '\\') {
            if (j->s >= j->end) break;
            c = *j->s++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': /* keep \uXXXX as '?' : names in ivae files are ASCII */
                if (j->end - j->s < 4) return js_fail(j, "bad \\u escape");
                j->s += 4;
                c = '?';
                break;
            case '"': case '\\': case '/': break;
            default: return js_fail(j, "bad escape");
            }
        }
        if (n + 1 >= cap) return js_fail(j, "string too long");
        out[n++] = c;
    }
    if (j->s >= j->end) return js_fail(j, "unterminated string");
    j->s++;
    out[n] = 0;
    return 0;
}

static int js_int(Json *j, int64_t *v) {
    js_ws(j);
    const char *st = j->s;
    int64_t x = 0;
    while (j->s < j->end && *j->s >= '0' && *j->s <= '9') {
        if (x > (INT64_MAX - 9) / 10) return js_fail(j, "integer too large");
        x = 10 * x + (*j->s++ - '0');
    }
    if (j->s == st) return js_fail(j, "expected a non-negative integer");
    *v = x;
    return 0;
}

/* skips any JSON value (for keys ivae does not use) */
static int js_skip(Json *j, int depth) {
    js_ws(j);
    if (j->s >= j->end) return js_fail(j, "unexpected end");
    if (depth > 32) return js_fail(j, "nesting too deep");
    char c = *j->s;
    if (c == '"') {
        char tmp[4096];
        return js_string(j, tmp, sizeof tmp);
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->s++;
        js_ws(j);
        if (j->s < j->end && *j->s == close) {
            j->s++;
            return 0;
        }
        for (;;) {
            if (c == '{') {
                char tmp[4096];
                if (js_string(j, tmp, sizeof tmp) != 0 || js_expect(j, ':') != 0) return -1;
            }
            if (js_skip(j, depth + 1) != 0) return -1;
            js_ws(j);
            if (j->s < j->end && *j->s == ',') {
                j->s++;
                continue;
            }
            return js_expect(j, close);
        }
    }
    while (j->s < j->end && (strchr("+-.eE", *j->s) || (*j->s >= '0' && *j->s <= '9') || (*j->s >= 'a' && *j->s <= 'z'))) j->s++;
    return 0;
}

static int js_next(Json *j, char close) {
    /* after a member: ',' (returns 1: more) or the closing bracket (returns 0) */
    js_ws(j);
    if (j->s < j->end && *j->s == ',') {
        j->s++;
        return 1;
    }
    if (js_expect(j, close) != 0) return -1;
    return 0;
}

static int st_parse_tensor(Json *j, IvaeStTensor *t) {
    char key[64], val[64];
    int have_dtype = 0, have_shape = 0, have_off = 0;
    if (js_expect(j, '{') != 0) return -1;
    js_ws(j);
    if (j->s < j->end && *j->s == '}') return js_fail(j, "empty tensor entry");
    for (;;) {
        if (js_string(j, key, sizeof key) != 0 || js_expect(j, ':') != 0) return -1;
        if (strcmp(key, "dtype") == 0) {
            if (js_string(j, val, sizeof val) != 0) return -1;
            if (strcmp(val, "F32") == 0) t->dtype = IVAE_F32;
            else if (strcmp(val, "F16") == 0) t->dtype = IVAE_F16;
            else if (strcmp(val, "BF16") == 0) t->dtype = IVAE_BF16;
            else if (strcmp(val, "F64") == 0) t->dtype = IVAE_F64;
            else {
                ivae_set_error("%s: tensor '%s' has dtype %s (ivae reads F32, F16, BF16, F64)", j->path, t->name, val);
                return -1;
            }
            have_dtype = 1;
        } else if (strcmp(key, "shape") == 0 || strcmp(key, "data_offsets") == 0) {
            int is_shape = key[0] == 's', n = 0;
            int64_t v[8];
            if (js_expect(j, '[') != 0) return -1;
            js_ws(j);
            if (j->s < j->end && *j->s == ']') j->s++;
            else
                for (;;) {
                    if (n == 8) return js_fail(j, "more than 8 entries in a shape");
                    if (js_int(j, &v[n++]) != 0) return -1;
                    int more = js_next(j, ']');
                    if (more < 0) return -1;
                    if (!more) break;
                }
            if (is_shape) {
                t->ndim = n;
                memcpy(t->shape, v, n * sizeof(int64_t));
                have_shape = 1;
            } else {
                if (n != 2) return js_fail(j, "data_offsets must hold 2 numbers");
                t->begin = (size_t)v[0];
                t->end = (size_t)v[1];
                have_off = 1;
            }
        } else if (js_skip(j, 0) != 0)
            return -1;
        int more = js_next(j, '}');
        if (more < 0) return -1;
        if (!more) break;
    }
    if (!have_dtype || !have_shape || !have_off) {
        ivae_set_error("%s: tensor '%s' lacks %s", j->path, t->name, !have_dtype ? "a dtype" : !have_shape ? "a shape" : "data_offsets");
        return -1;
    }
    return 0;
}

static int st_parse_meta(Json *j, IvaeSt *st) {
    if (js_expect(j, '{') != 0) return -1;
    js_ws(j);
    if (j->s < j->end && *j->s == '}') {
        j->s++;
        return 0;
    }
    for (;;) {
        char key[64], val[256];
        if (js_string(j, key, sizeof key) != 0 || js_expect(j, ':') != 0 || js_string(j, val, sizeof val) != 0) return -1;
        st->meta_key = realloc(st->meta_key, (st->n_meta + 1) * sizeof *st->meta_key);
        st->meta_val = realloc(st->meta_val, (st->n_meta + 1) * sizeof *st->meta_val);
        if (!st->meta_key || !st->meta_val) return js_fail(j, "out of memory");
        memcpy(st->meta_key[st->n_meta], key, sizeof key);
        memcpy(st->meta_val[st->n_meta], val, sizeof val);
        st->n_meta++;
        int more = js_next(j, '}');
        if (more < 0) return -1;
        if (!more) return 0;
    }
}

static int st_check_tensor(const IvaeSt *st, IvaeStTensor *t) {
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || t->shape[d] > ((int64_t)1 << 40) ||
            (t->shape[d] > 0 && numel > ((size_t)1 << 40) / (size_t)t->shape[d])) {
            ivae_set_error("%s: tensor '%s' has an impossible shape", st->path, t->name);
            return -1;
        }
        numel *= (size_t)t->shape[d];
    }
    t->numel = numel;
    if (t->begin > t->end || t->end > st->data_len) {
        ivae_set_error("%s: tensor '%s' has data_offsets [%zu, %zu] outside the %zu data bytes (truncated or corrupt file)",
                       st->path, t->name, t->begin, t->end, st->data_len);
        return -1;
    }
    if (t->end - t->begin != numel * dtype_size(t->dtype)) {
        ivae_set_error("%s: tensor '%s' holds %zu bytes but its shape and dtype need %zu", st->path, t->name,
                       t->end - t->begin, numel * dtype_size(t->dtype));
        return -1;
    }
    return 0;
}

void ivae_st_close(IvaeSt *st) {
    if (!st) return;
    free(st->data);
    free(st->t);
    free(st->meta_key);
    free(st->meta_val);
    free(st);
}

IvaeSt *ivae_st_open(const char *path) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {
        ivae_set_error("this build reads safetensors only on little-endian machines");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        ivae_set_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    IvaeSt *st = xcalloc(sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    unsigned char len8[8];
    char *hdr = NULL;
    long fsize = -1;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        ivae_set_error("%s: not a regular file", path);
        goto fail;
    }
    if (fseek(f, 0, SEEK_END) == 0) fsize = ftell(f);
    if (fsize < 0 || fseek(f, 0, SEEK_SET) != 0) {
        ivae_set_error("%s: cannot read (not a regular file?)", path);
        goto fail;
    }
    if (fsize < 8 || fread(len8, 1, 8, f) != 8) {
        ivae_set_error("%s: too short to be a safetensors file (%ld bytes)", path, fsize);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = (hlen << 8) | len8[b];
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > (uint64_t)fsize - 8) {
        ivae_set_error("%s: header length %llu does not fit the %ld-byte file (truncated or not safetensors)",
                       path, (unsigned long long)hlen, fsize);
        goto fail;
    }
    hdr = xmalloc(hlen + 1);
    st->data_len = (size_t)fsize - 8 - hlen;
    st->data = xmalloc(st->data_len);
    if (fread(hdr, 1, hlen, f) != hlen || fread(st->data, 1, st->data_len, f) != st->data_len) {
        ivae_set_error("%s: read error", path);
        goto fail;
    }
    hdr[hlen] = 0;
    fclose(f);
    f = NULL;

    Json j = {hdr, hdr + hlen, path, hdr};
    int cap = 0;
    if (js_expect(&j, '{') != 0) goto fail;
    js_ws(&j);
    if (j.s < j.end && *j.s == '}') j.s++;
    else
        for (;;) {
            char name[128];
            if (js_string(&j, name, sizeof name) != 0 || js_expect(&j, ':') != 0) goto fail;
            if (strcmp(name, "__metadata__") == 0) {
                if (st_parse_meta(&j, st) != 0) goto fail;
            } else {
                if (ivae_st_find(st, name)) {
                    ivae_set_error("%s: tensor '%s' appears twice in the header", path, name);
                    goto fail;
                }
                if (st->n == cap) {
                    cap = cap ? 2 * cap : 64;
                    st->t = realloc(st->t, cap * sizeof *st->t);
                    if (!st->t) goto fail;
                }
                IvaeStTensor *t = &st->t[st->n];
                memset(t, 0, sizeof *t);
                snprintf(t->name, sizeof t->name, "%s", name);
                if (st_parse_tensor(&j, t) != 0 || st_check_tensor(st, t) != 0) goto fail;
                st->n++;
            }
            int more = js_next(&j, '}');
            if (more < 0) goto fail;
            if (!more) break;
        }
    js_ws(&j);
    if (j.s != j.end) {
        js_fail(&j, "trailing bytes after the header object");
        goto fail;
    }
    free(hdr);
    return st;
fail:
    if (f) fclose(f);
    free(hdr);
    ivae_st_close(st);
    return NULL;
}

const IvaeStTensor *ivae_st_find(const IvaeSt *st, const char *name) {
    for (int k = 0; k < st->n; k++)
        if (strcmp(st->t[k].name, name) == 0) return &st->t[k];
    return NULL;
}

const char *ivae_st_meta(const IvaeSt *st, const char *key) {
    for (int k = 0; k < st->n_meta; k++)
        if (strcmp(st->meta_key[k], key) == 0) return st->meta_val[k];
    return NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 31) bits = sign | 0x7f800000u | (man << 13); /* inf, NaN */
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0) bits = sign; /* zero */
    else { /* subnormal: renormalise */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 1024));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 1023) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int ivae_st_read(const IvaeSt *st, const IvaeStTensor *t, real *dst) {
    const unsigned char *src = st->data + t->begin;
    for (size_t k = 0; k < t->numel; k++) {
        double v;
        if (t->dtype == IVAE_F32) {
            float f;
            memcpy(&f, src + 4 * k, 4);
            v = f;
        } else if (t->dtype == IVAE_F64) {
            memcpy(&v, src + 8 * k, 8);
        } else {
            uint16_t h;
            memcpy(&h, src + 2 * k, 2);
            if (t->dtype == IVAE_F16) v = half_to_float(h);
            else {
                uint32_t bits = (uint32_t)h << 16;
                float f;
                memcpy(&f, &bits, 4);
                v = f;
            }
        }
        if (!isfinite(v)) {
            ivae_set_error("%s: tensor '%s' holds %s at index %zu", st->path, t->name, isnan(v) ? "NaN" : "inf", k);
            return -1;
        }
        dst[k] = (real)v;
    }
    return 0;
}

/* a JSON string literal's body: quotes, backslashes and control characters escaped */
static size_t json_escape(char *out, size_t cap, const char *s) {
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') out[n++] = '\\', out[n++] = (char)c;
        else if (c < 0x20) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    out[n] = 0;
    return n;
}

int ivae_st_write(const char *path, const IvaeStEntry *e, int n, const char *const *meta_kv, int n_meta) {
    char k1[1200], v1[1200];
    /* the header: metadata first, then the tensors in the given order */
    size_t cap = 4096 + (size_t)n * 256 + (size_t)n_meta * 600, len = 0, off = 0;
    char *h = xmalloc(cap);
#define EMIT(...) len += (size_t)snprintf(h + len, cap - len, __VA_ARGS__)
    EMIT("{");
    if (n_meta > 0) {
        EMIT("\"__metadata__\":{");
        for (int k = 0; k < n_meta; k++) {
            json_escape(k1, sizeof k1, meta_kv[2 * k]), json_escape(v1, sizeof v1, meta_kv[2 * k + 1]);
            EMIT("%s\"%s\":\"%s\"", k ? "," : "", k1, v1);
        }
        EMIT("}");
    }
    for (int k = 0; k < n; k++) {
        size_t numel = 1;
        json_escape(k1, sizeof k1, e[k].name);
        EMIT("%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", (k || n_meta) ? "," : "", k1);
        for (int d = 0; d < e[k].ndim; d++) {
            EMIT("%s%lld", d ? "," : "", (long long)e[k].shape[d]);
            numel *= (size_t)e[k].shape[d];
        }
        EMIT("],\"data_offsets\":[%zu,%zu]}", off, off + 4 * numel);
        off += 4 * numel;
    }
    EMIT("}");
#undef EMIT
    if (len + 8 >= cap) {
        free(h);
        ivae_set_error("%s: header too large", path);
        return -1;
    }
    while (len % 8) h[len++] = ' '; /* pad so the data starts 8-byte aligned */

    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(h);
        ivae_set_error("%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)len >> (8 * b));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, len, f) == len;
    free(h);
    float buf[4096];
    for (int k = 0; k < n && ok; k++) {
        size_t numel = 1;
        for (int d = 0; d < e[k].ndim; d++) numel *= (size_t)e[k].shape[d];
        for (size_t s = 0; s < numel && ok; s += 4096) {
            size_t c = numel - s < 4096 ? numel - s : 4096;
            for (size_t q = 0; q < c; q++) buf[q] = (float)e[k].data[s + q];
            ok = fwrite(buf, 4, c, f) == c;
        }
    }
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        ivae_set_error("%s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}

/* --- checkpoints ---------------------------------------------------------- */

static int parse_int_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || n == max || v < 0 || v > 1 << 20) return -1;
        out[n++] = (int)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return n;
}

static int meta_int(const IvaeSt *st, const char *key, int *v) {
    const char *s = ivae_st_meta(st, key);
    if (!s || parse_int_list(s, v, 1) != 1) {
        ivae_set_error("%s: metadata '%s' is missing or not a number", st->path, key);
        return -1;
    }
    return 0;
}

static int config_from_meta(const IvaeSt *st, IvaeConfig *c) {
    memset(c, 0, sizeof *c);
    const char *fmt = ivae_st_meta(st, "format");
    if (!fmt || strcmp(fmt, "ivae") != 0) {
        ivae_set_error("%s: not an ivae checkpoint (metadata \"format\" is %s%s%s)", st->path,
                       fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "");
        return -1;
    }
    if (meta_int(st, "base_ch", &c->base_ch) || meta_int(st, "n_res", &c->n_res) || meta_int(st, "z_ch", &c->z_ch))
        return -1;
    const char *mult = ivae_st_meta(st, "ch_mult"), *temporal = ivae_st_meta(st, "temporal"),
               *attn = ivae_st_meta(st, "attn");
    c->n_stages = mult ? parse_int_list(mult, c->ch_mult, IVAE_MAX_STAGES) : -1;
    if (c->n_stages < 1) {
        ivae_set_error("%s: metadata 'ch_mult' is missing or malformed", st->path);
        return -1;
    }
    int nt = temporal ? parse_int_list(temporal, c->temporal, IVAE_MAX_STAGES) : -1;
    if (nt != c->n_stages - 1 && !(nt == 0 && c->n_stages == 1)) {
        ivae_set_error("%s: metadata 'temporal' must list %d flags", st->path, c->n_stages - 1);
        return -1;
    }
    if (!attn || (strcmp(attn, "frame") && strcmp(attn, "causal"))) {
        ivae_set_error("%s: metadata 'attn' must be \"frame\" or \"causal\"", st->path);
        return -1;
    }
    c->attn = strcmp(attn, "causal") == 0 ? IVAE_ATTN_CAUSAL : IVAE_ATTN_FRAME;
    if (ivae_config_check(c) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s: %s", st->path, ivae_error());
        ivae_set_error("%s", msg);
        return -1;
    }
    return 0;
}

IvaeModel *ivae_load(const char *path) {
    IvaeSt *st = ivae_st_open(path);
    if (!st) return NULL;
    IvaeConfig cfg;
    IvaeModel *m = NULL;
    if (config_from_meta(st, &cfg) != 0) goto fail;
    m = model_graph(&cfg);
    if (!m) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s: %s", path, ivae_error());
        ivae_set_error("%s", msg);
        goto fail;
    }
    /* every tensor present with its shape before anything is allocated: the
       file then holds at least 2 bytes per parameter, so a tiny file with an
       absurd config in its metadata cannot ask for gigabytes */
    for (int j = 0; j < m->n_tensors; j++) {
        const IvaeParamInfo *p = &m->info[j];
        const IvaeStTensor *t = ivae_st_find(st, p->name);
        if (!t) {
            ivae_set_error("%s: tensor '%s' is missing", path, p->name);
            goto fail;
        }
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            ivae_set_error("%s: tensor '%s' has the wrong shape for this config", path, p->name);
            goto fail;
        }
    }
    model_alloc(m);
    for (int j = 0; j < m->n_tensors; j++)
        if (ivae_st_read(st, ivae_st_find(st, m->info[j].name), m->params + m->info[j].offset) != 0) goto fail;
    for (int k = 0; k < st->n; k++)
        if (strncmp(st->t[k].name, "optim.", 6) != 0 && !ivae_find_param(m, st->t[k].name)) {
            ivae_set_error("%s: tensor '%s' is not a parameter of this config", path, st->t[k].name);
            goto fail;
        }
    ivae_st_close(st);
    return m;
fail:
    ivae_model_free(m);
    ivae_st_close(st);
    return NULL;
}

int ivae_save(const IvaeModel *m, const char *path) {
    const IvaeConfig *c = &m->cfg;
    char base[16], nres[16], z[16], mult[128] = "", temporal[128] = "";
    snprintf(base, sizeof base, "%d", c->base_ch);
    snprintf(nres, sizeof nres, "%d", c->n_res);
    snprintf(z, sizeof z, "%d", c->z_ch);
    for (int s = 0; s < c->n_stages; s++)
        snprintf(mult + strlen(mult), sizeof mult - strlen(mult), "%s%d", s ? "," : "", c->ch_mult[s]);
    for (int s = 0; s + 1 < c->n_stages; s++)
        snprintf(temporal + strlen(temporal), sizeof temporal - strlen(temporal), "%s%d", s ? "," : "", c->temporal[s]);
    const char *meta[] = {"format", "ivae", "base_ch", base, "ch_mult", mult, "n_res", nres, "z_ch", z,
                          "temporal", temporal, "attn", c->attn == IVAE_ATTN_CAUSAL ? "causal" : "frame"};
    IvaeStEntry *e = xcalloc((size_t)m->n_tensors * sizeof *e);
    for (int j = 0; j < m->n_tensors; j++) {
        e[j].name = m->info[j].name;
        e[j].ndim = m->info[j].ndim;
        for (int d = 0; d < e[j].ndim; d++) e[j].shape[d] = m->info[j].shape[d];
        e[j].data = m->params + m->info[j].offset;
    }
    int rc = ivae_st_write(path, e, m->n_tensors, meta, 7);
    free(e);
    return rc;
}
