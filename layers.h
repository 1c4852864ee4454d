/*
 * layers.h: the layers of SPEC 2 and the loss terms of SPEC 4, shared by
 * every model family (ivae.c's ivae model, and later others). layers.c holds
 * each layer as a _forward/_backward pair in plain loops; conv_tuned.c holds
 * the fast convolution that gives the same bits.
 *
 * Argument order, everywhere (C and kernels.cl):
 *   forward:  outputs, saved-for-backward, inputs, weights, sizes (work buffers last)
 *   backward: gradients out (dinp, dweight, ...), dout, saved-for-backward,
 *             the forward's inputs, weights, sizes
 * Backward functions write dinp (dinp = ...) and accumulate parameter
 * gradients (dweight += ...); any gradient pointer may be NULL to skip it.
 *
 * Dimension letters: C channels, T frames, H rows, W columns of one sample's
 * (C, T, H, W) tensor, W fastest; To, Ho, Wo the output's; N = T*H*W the
 * number of positions; K = kt*kh*kw the taps of a kernel.
 */
#ifndef IVAE_LAYERS_H
#define IVAE_LAYERS_H
#include "ivae.h"
#include "ivae_math.h"
#include "util.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Parallel regions only where the work pays for one. A region costs a few
   microseconds on an idle machine, and up to a scheduler tick when other
   programs hold the cores and the sleeping thread must be woken; so a loop
   with less than IVAE_PAR_MIN units of work (about a multiply-add each)
   runs on one thread: `#pragma omp parallel for IVAE_PAR(work)`. The tasks
   and every sum are the same either way, so the bits do not change. */
#define IVAE_PAR_MIN 1e5
#define IVAE_PAR(work) if ((work) >= IVAE_PAR_MIN)

#ifdef IVAE_DOUBLE
#define EXP(x) exp(x)
#define SQRT(x) sqrt(x)
#define FMA(a, b, c) fma(a, b, c)
#else
#define EXP(x) ivae_expf(x)
#define SQRT(x) sqrtf(x)
#define FMA(a, b, c) fmaf(a, b, c) /* one rounding, exactly specified by IEEE 754 */
#endif

/* the shape of one sample's tensor */
typedef struct {
    int C, T, H, W;
} Shape;

static inline size_t shape_numel(Shape s) { return (size_t)s.C * s.T * s.H * s.W; }

/* output sizes (SPEC 2.1): time is padded kt-1 frames in front only */
static inline int conv_out_t(int T, int st) { return (T - 1) / st + 1; }
static inline int conv_out_s(int H, int k, int s) { return (H + 2 * (k / 2) - k) / s + 1; }

/* spatial zero padding: rows on top and bottom, columns left and right.
   SPEC 2.1 pads kh/2 and kw/2 on every side; other model families pad
   otherwise (Wan 2.1's downsample: right and bottom only). */
typedef struct {
    int top, bottom, left, right;
} IvaePad;
#define IVAE_PAD_NONE ((IvaePad){0, 0, 0, 0})
static inline IvaePad ivae_pad_same(int kh, int kw) { return (IvaePad){kh / 2, kh / 2, kw / 2, kw / 2}; }
static inline int ivae_conv_out_padded(int H, int k, int s, int p0, int p1) { return (H + p0 + p1 - k) / s + 1; }

/* threads: work is split over output elements only, so no sum depends on them */
#ifdef _OPENMP
static inline int max_threads(void) { return omp_get_max_threads(); }
static inline int thread_id(void) { return omp_get_thread_num(); }
#else
static inline int max_threads(void) { return 1; }
static inline int thread_id(void) { return 0; }
#endif

/* Scratch buffers that grow to the largest size asked for and are then
   reused: after the first step, the layers allocate nothing. Only called
   outside parallel regions. */
enum { SCR_PAD, SCR_WPACK, SCR_DYT, SCR_DYPAD, SCR_PHASE, SCR_WGRAD, SCR_THREAD, SCR_ATT, SCR_SMALL, SCR_COL, SCR_N };
real *ivae_scratch(int slot, size_t n);
/* per-thread scratch: n floats for each thread, from one scratch slot */
#define THREAD_SCRATCH(base, n) ((base) + (size_t)thread_id() * (n))

/* the two sum orders of the summation rule (layers.c, rule 5) */
real ivae_sum_nested(const real *v, Shape s); /* rows, then frames, then channels */
real ivae_sum_rows(const real *v, int n, int W); /* rows of W, then the row sums */

/* input channels per fma chain of the conv's forward pass (output channels
   of its input gradient): the summation rule at the top of layers.c */
#define IVAE_CONV_CHAIN 8

/* --- 2.1 causal conv3d ------------------------------------------------------
   out (Cout, To, Ho, Wo), inp (Cin, T, H, W), weight (Cout, Cin, kt, kh, kw),
   bias (Cout) or NULL. The _chunk form runs on frames s0 .. s0+T-1 of a
   longer clip, with prev (Cin, kt-1, H, W) the frames before them (NULL:
   zeros, the causal padding); it computes every output frame whose last tap
   falls in the chunk and returns how many. These dispatch to the naive loops
   (IVAE_NAIVE=1 or ivae_set_naive(1)) or to the tuned kernels: same bits. */
void ivae_conv3d_forward(real *out, const real *inp, const real *weight, const real *bias, int Cin, int T, int H,
                         int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw);
int ivae_conv3d_forward_chunk(real *out, const real *inp, const real *prev, int s0, const real *weight,
                              const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                              int sh, int sw);
/* dinp (Cin, T, H, W) written; dweight, dbias accumulated; dout (Cout, To, Ho, Wo) */
void ivae_conv3d_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                          const real *weight, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                          int sh, int sw);
/* the forward pass with any spatial padding (the others are this with
   ivae_pad_same): out (Cout, To, Ho, Wo), Ho = (H + top + bottom - kh)/sh + 1 */
int ivae_conv3d_forward_padded(real *out, const real *inp, const real *prev, int s0, const real *weight,
                               const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                               int sh, int sw, IvaePad pad);
/* the naive forms: SPEC 2.1's formula as plain loops, in the rule's order */
int ivae_conv3d_forward_padded_naive(real *out, const real *inp, const real *prev, int s0, const real *weight,
                                     const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                     int st, int sh, int sw, IvaePad pad);
int ivae_conv3d_forward_chunk_naive(real *out, const real *inp, const real *prev, int s0, const real *weight,
                                    const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                    int st, int sh, int sw);
void ivae_conv3d_backward_naive(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                                const real *weight, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                int st, int sh, int sw);
/* the tuned forms (conv_tuned.c). wpk: the weights packed by
   ivae_conv3d_pack (flip = 0) for the forward pass, by
   ivae_conv3d_pack_dinp for the input gradient, or NULL to pack them here. */
int ivae_conv3d_forward_chunk_tuned(real *out, const real *inp, const real *prev, int s0, const real *wpk,
                                    const real *weight, const real *bias, int Cin, int T, int H, int W, int Cout,
                                    int kt, int kh, int kw, int st, int sh, int sw);
int ivae_conv3d_forward_padded_tuned(real *out, const real *inp, const real *prev, int s0, const real *wpk,
                                     const real *weight, const real *bias, int Cin, int T, int H, int W, int Cout,
                                     int kt, int kh, int kw, int st, int sh, int sw, IvaePad pad);
void ivae_conv3d_backward_tuned(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                                const real *wpk_flipped, const real *weight, int Cin, int T, int H, int W, int Cout,
                                int kt, int kh, int kw, int st, int sh, int sw);
size_t ivae_conv3d_packed_size(int Cout, int Cin, int K);
void ivae_conv3d_pack(real *wpk, const real *weight, int Cout, int Cin, int K, int flip);
/* the input gradient's kernel: per phase of the input (t mod st, h mod sh,
   w mod sw), its taps flipped; ivae_conv3d_packed_size(Cin, Cout, K) floats */
void ivae_conv3d_pack_dinp(real *wpk, const real *weight, int Cout, int Cin, int kt, int kh, int kw, int st, int sh,
                           int sw);
/* streaming: cache (C, keep, H, W) := the last keep frames of [cache | x],
   x (C, T, H, W); had = 0 on the clip's first chunk (the cache is zeros) */
void ivae_cache_push(real *cache, int keep, int had, const real *x, int C, int T, int H, int W);
/* which convolution runs: 1 = naive (the environment's IVAE_NAIVE=1 sets it) */
void ivae_set_naive(int on);
int ivae_naive(void);

/* --- 2.2 SMC: the effective weight ------------------------------------------
   what, weight, dweight, dwhat (Cout, Cin, K); norm (Cout); scale (Cin); gain (1) */
void ivae_smc_weight_forward(real *what, real *norm, const real *weight, const real *scale, const real *gain,
                             int Cout, int Cin, int K);
void ivae_smc_weight_backward(real *dweight, real *dscale, real *dgain, const real *dwhat, const real *norm,
                              const real *weight, const real *scale, const real *gain, int Cout, int Cin, int K);

/* --- 2.3 SiLU, 2.4 PixelNorm: out, inp (C, N); norm (N) ------------------ */
void ivae_silu_forward(real *out, const real *inp, size_t n);
void ivae_silu_backward(real *dinp, const real *dout, const real *inp, size_t n);
void ivae_pixelnorm_forward(real *out, real *norm, const real *inp, int C, size_t N);
void ivae_pixelnorm_backward(real *dinp, const real *dout, const real *norm, const real *inp, int C, size_t N);

/* --- GroupNorm (SPEC 9): out, inp (C, T, H, W); stats (2, G, T) the mean and
   sd of each group and frame; weight, bias (C); C a multiple of G */
void ivae_groupnorm_forward(real *out, real *stats, const real *inp, const real *weight, const real *bias, int C,
                            int T, int H, int W, int G);
void ivae_groupnorm_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *stats,
                             const real *inp, const real *weight, int C, int T, int H, int W, int G);

/* --- RMS norm (SPEC 7): out, inp (C, N), gamma (C); forward only (inference) */
void ivae_rmsnorm_forward(real *out, const real *inp, const real *gamma, int C, size_t N);

/* --- 2.6 attention between the qkv and proj convs --------------------------
   out (C, N); att (N, L) the probabilities, L = H*W (frame) or N (causal);
   qkv (3C, N): q = rows 0..C-1, k = C..2C-1, v = 2C..3C-1 */
void ivae_attention_forward(real *out, real *att, const real *qkv, int C, int T, int H, int W, int mode);
void ivae_attention_backward(real *dqkv, const real *dout, const real *att, const real *qkv, int C, int T, int H,
                             int W, int mode);
int ivae_attention_row_len(int mode, int T, int HW);

/* --- 2.8 nearest-neighbour upsampling: out (C, To, 2H, 2W), inp (C, T, H, W)
   To = 2T - 1 when temporal on the clip's first chunk (first = 1), 2T on a
   later chunk, T otherwise */
void ivae_upsample_forward(real *out, const real *inp, int C, int T, int H, int W, int temporal);
void ivae_upsample_chunk(real *out, const real *inp, int C, int T, int H, int W, int temporal, int first);
void ivae_upsample_backward(real *dinp, const real *dout, int C, int T, int H, int W, int temporal);
int ivae_upsample_frames(int T, int temporal, int first);

/* --- SPEC 4: the loss terms of one sample ----------------------------------
   rec: returns sum |xhat - x| and writes dxhat = coef * sign(xhat - x);
   latent: h (2z, ...) = [mu; raw logvar] -> logvar (clamped), z = mu +
   exp(logvar/2) eps, returns the KL sum; opl: the outlier penalty on z,
   adding coef * d(opl)/dz to dz. scratch: work buffers of the sizes in
   layers.c. */
double ivae_rec_loss(real *dxhat, const real *xhat, const real *x, Shape s, real coef, real *scratch);
double ivae_latent_forward(real *logvar, real *zs, const real *h, const real *eps, Shape zsh, real *scratch);
void ivae_latent_backward(real *dh, const real *dz, const real *logvar, const real *h, const real *eps, size_t n,
                          real ckl);
double ivae_opl_forward_backward(real *dz, const real *z, Shape s, real coef, real *scratch);
#endif
