/*
 * kernels.cl: the OpenCL twin of every layer of layers.c (SPEC 2 and 4),
 * in the strict form: bit for bit the C reference. Its fast twins (--cl-mode
 * fast: tiled, within SPEC 8's tolerances) are in kernels_fast.cl, which the
 * host builds in the same program after this file (so they use its helpers).
 *
 * Names and arguments. A kernel is named after its C twin without the ivae_
 * prefix (C ivae_conv3d_forward <-> kernel conv3d_forward) and takes the C
 * function's arguments in the same order, a global pointer for each pointer:
 * forward: outputs, saved-for-backward, inputs, weights, sizes (work buffers
 * last); backward: gradient outputs (dinp, dweight, ...), dout, saved-for-
 * backward, the forward's inputs, weights, sizes. A C function that does
 * several things is split into kernels named <function>_<part>; a part takes
 * what it writes first, then what it reads, in that order. Every kernel:
 *
 *   C (layers.c, ivae.c)           kernels.cl
 *   ivae_conv3d_forward            conv3d_forward
 *   ivae_conv3d_forward_chunk      conv3d_forward_chunk
 *   ivae_conv3d_forward_padded     conv3d_forward_padded         (any spatial padding; IvaePad as 4 ints)
 *   ivae_cache_push                cache_push
 *   ivae_conv3d_backward           conv3d_backward_dinp          (stride 1: the flipped conv)
 *                                  conv3d_backward_dinp_strided  (strided: the same on dy spread out)
 *                                  conv3d_backward_dweight       (conv_tuned.c: conv_wgrad)
 *                                  conv3d_backward_dbias
 *   ivae_smc_weight_forward        smc_weight_forward
 *   ivae_smc_weight_backward       smc_weight_backward_dot, _dweight, _dscale, _dgain
 *   ivae_silu_forward, _backward   silu_forward, silu_backward
 *   ivae_pixelnorm_forward, _backward   pixelnorm_forward, pixelnorm_backward
 *   ivae_groupnorm_forward         groupnorm_forward_sums (twice: S, then V), _stats, _apply
 *   ivae_groupnorm_backward        groupnorm_backward_sums, _dinp, _dweight (dweight and dbias)
 *   ivae_rmsnorm_forward           rmsnorm_forward
 *   ivae_attention_forward         attention_forward
 *   ivae_attention_backward        attention_backward_dsdq, attention_backward_dkdv
 *   ivae_upsample_forward, _chunk, _backward   upsample_forward, upsample_chunk, upsample_backward
 *   ivae_sum_nested                sum_nested_channel, sum_nested_total
 *   ivae_rec_loss                  rec_loss (the elementwise part; then sum_nested_*)
 *   ivae_latent_forward            latent_forward (the elementwise part; then sum_nested_*)
 *   ivae_latent_backward           latent_backward
 *   ivae_opl_forward_backward      opl_forward_backward_stats, _dist, _hinge, _g, _dz
 *   ivae_adamw_step                adamw_step (one tensor per launch)
 *   ivae_unit_scale                unit_scale
 *   ivae_unit_sumsq                unit_sumsq
 * and the kernels with no C function of their own, by what they do in C:
 *   residual_add, residual_sub     the residual sums of ivae.c's res_/attn_forward and _backward,
 *                                  and dx - dxhat in ivae_batch_grad (residual_add: also
 *                                  wan.c's res_forward and attn_forward)
 *   nonfinite_flags                ivae_batch_grad's all_finite check of the gradients
 *   pixel_sumsq                    the per-pixel loop of ivae_activation_stats
 *   upsample_interleave            wan.c's up_forward: the time_conv's channel halves
 *                                  become frames 2t and 2t+1 (a copy)
 * kernels_fast.cl, by the C function each does fast (gemm_fast: a batched product):
 *   ivae_conv3d_forward            conv3d_forward_fast
 *   ivae_conv3d_forward_padded     conv3d_forward_padded_fast    (chunks, any spatial padding)
 *   ivae_conv3d_backward           conv3d_backward_dinp_fast, _dweight_fast, _dweight_reduce, _dbias_fast
 *   ivae_attention_forward         gemm_fast, attention_softmax_fast
 *   ivae_attention_backward        gemm_fast, attention_dsoftmax_fast
 * (GroupNorm has no fast twin: fast mode runs the strict kernels above, a
 * small share of a step beside the convolutions.)
 *
 * Bit for bit means that every output element is made by the same float
 * operations in the same order as in layers.c:
 * - one work-item per output element runs the C code's loop for that
 *   element, serially (the convolutions: several outputs per work-item, as
 *   the lanes of float4 or float8 operations, each lane its own element's
 *   chain). The C code's register tiles, padded copies and transposes
 *   change where numbers live, never which numbers are added in which
 *   order. Each kernel quotes the C lines it mirrors.
 * - fma() where layers.c writes FMA() (fmaf and OpenCL's fma are both
 *   correctly rounded), and a * b + c everywhere else, kept as two roundings
 *   by FP_CONTRACT OFF below (the C code is built with -ffp-contract=off).
 * - the order of every sum is the reference's rule, quoted from layers.c:
 *
 *   Summation order, the rule an optimized kernel must follow to give the
 *   reference's bits. (1) Every accumulator starts at +0 and adds its terms
 *   one at a time in the order below (never starting from the first term),
 *   so it is never -0. (2) conv3d forward: the input channels in blocks of
 *   B = 8 (IVAE_CONV_CHAIN: 0-7, 8-15, ...; the last block holds the rest);
 *   y = (sum over blocks b, in increasing b, of P_b) + bias, P_b = one fma
 *   chain P = fma(w, x, P) over the block's channels i in increasing i and,
 *   within each channel, its taps (a, c, d) in row-major order. (3) input
 *   gradient: the output channels in blocks of B = 8 likewise; dx = sum over
 *   blocks b, in increasing b, of Q_b, Q_b = one fma chain over the block's
 *   channels o in increasing o and, within each channel, the outputs
 *   (t', h', w') that read the input, in increasing order. (4)
 *   weight gradient: dW += sum over t' of (sum over h' of (fma chain over w'
 *   of x * dy)). (5) bias gradients and loss sums: nested plain sums: each
 *   row of W straight through, rows summed per frame, frames per channel,
 *   channels in order (sum_nested); softmax and attention sums over tokens:
 *   rows straight through, then the row sums in order (sum_rows); sums over
 *   channels run straight. (6) Zero terms: the reference visits every tap of
 *   the window, reading 0 in padding and, for strided input gradients,
 *   between outputs; by (1) adding a +-0 product never changes an
 *   accumulator, so with finite weights a kernel may skip those taps and
 *   keep the bits (the strict strided input-gradient kernel does).
 *
 *   Here the forward conv, the stride-1 input gradient and the weight
 *   gradient visit every tap, reading 0 in the padding as layers.c does; the
 *   strided input gradient skips the taps between outputs and the padding
 *   rows and frames (conv3d_backward_dinp_strided says how).
 * - exp is ivae_expf from ivae_math.h, the same source the C code uses;
 *   division and sqrt are correctly rounded (the host builds this file with
 *   -cl-fp32-correctly-rounded-divide-sqrt, after checking that the device
 *   supports it).
 * - a C function that returns a double from a float sum (sum_nested, the
 *   losses) has its float sum done here; the host converts it (and adds the
 *   outlier penalty's frames in double, as layers.c does).
 *
 * The host rounds every global size up to a multiple of the work-group size
 * (pocl has no non-uniform work-groups), so each kernel starts with
 * `if (gid >= n) return;`. Sizes are int as in layers.c; counts that layers.c
 * keeps in size_t are ulong here.
 */
#pragma OPENCL FP_CONTRACT OFF
#include "ivae_math.h"

#define IVAE_ATTN_CAUSAL 1 /* IvaeAttnMode in ivae.h (which OpenCL cannot include) */

/* output sizes (SPEC 2.1), as in layers.h */
static int conv_out_t(int T, int st) { return (T - 1) / st + 1; }
static int conv_out_s(int H, int k, int s) { return (H + 2 * (k / 2) - k) / s + 1; }

/* ========================================================================== */
/* helpers: the C code's two sum orders (layers.c)                           */
/* ========================================================================== */

/* sum_nested for one channel (T, H, W): rows straight through, rows summed
   per frame, frames summed per channel:
       ch = 0; for t { fr = 0; for h { acc = 0; for w acc += row[w]; fr += acc; } ch += fr; } */
static float channel_sum(global const float *v, int T, int H, int W) {
    float ch = 0;
    for (int t = 0; t < T; t++) {
        float fr = 0;
        for (int h = 0; h < H; h++) {
            global const float *row = v + ((size_t)t * H + h) * W;
            float acc = 0;
            for (int w = 0; w < W; w++) acc += row[w];
            fr += acc;
        }
        ch += fr;
    }
    return ch;
}

/* ivae_sum_rows(v, n, W) of layers.c: a span of n values as rows of W, each row
   straight through, then the row sums in order. The variants below sum
   products a[j] * b[j] (each rounded to float, as the C code's tmp[] holds
   them) without the C code's temporary. */
static float sum_rows(global const float *v, int n, int W) {
    float total = 0;
    for (int r0 = 0; r0 < n; r0 += W) {
        float acc = 0;
        for (int j = r0; j < r0 + W; j++) acc += v[j];
        total += acc;
    }
    return total;
}

/* sum_rows of a[j] * b[j] */
static float sum_rows_prod(global const float *a, global const float *b, int n, int W) {
    float total = 0;
    for (int r0 = 0; r0 < n; r0 += W) {
        float acc = 0;
        for (int j = r0; j < r0 + W; j++) acc += a[j] * b[j];
        total += acc;
    }
    return total;
}

/* Sum of a (C, T, H, W) tensor, layers.c's ivae_sum_nested, in two kernels: one
   work-item per channel, then the channel sums in order:
       total = 0; for c total += ch[c];   (returned as a double by C) */
kernel void sum_nested_channel(global float *part, global const float *v, int C, int T, int H, int W) {
    // part (C), v (C, T, H, W)
    size_t c = get_global_id(0);
    if (c >= (size_t)C) return;
    part[c] = channel_sum(v + c * T * H * W, T, H, W);
}

kernel void sum_nested_total(global float *total, global const float *part, int C) {
    // total (1), part (C)
    if (get_global_id(0) != 0) return;
    float s = 0;
    for (int c = 0; c < C; c++) s += part[c];
    total[0] = s;
}

/* ========================================================================== */
/* 2.1 causal conv3d                                                          */
/* ========================================================================== */

/* Lanes, independent computations: the strict conv kernels let each
   work-item compute several outputs with vector arithmetic (the forward
   kernels: eight neighbours along w, float8, for each of eight output
   channels; the input gradient: four neighbours along w, or along w sw
   apart when strided, float4; the weight gradient: four output channels).
   A vector fma is one fma per lane, each correctly rounded, so every lane
   runs exactly the scalar chain the C code runs for its output; the lanes
   only share the loads (and on a CPU the vector instructions). */

/* x[l] = row[x0 + l * step] where 0 <= x0 + l * step < n, else 0; row NULL: all 0 */
static float4 gather4(global const float *row, int x0, int step, int n) {
    if (!row) return (float4)(0.0f);
    if (x0 >= 0 && x0 + 3 * step < n) {
        if (step == 1) return vload4(0, row + x0);
        return (float4)(row[x0], row[x0 + step], row[x0 + 2 * step], row[x0 + 3 * step]);
    }
    float v[4];
    for (int l = 0; l < 4; l++) {
        int x = x0 + l * step;
        v[l] = x >= 0 && x < n ? row[x] : 0.0f;
    }
    return vload4(0, v);
}

/* The forward kernels compute a tile of FM output channels x FN neighbouring
   outputs of a row per work-item: FM float8 chains (lane l: column w + l),
   each lane its own output's chain, so the lanes and the channels share the
   input loads (a row's inputs are loaded once per tap row and reused by its
   kw taps). */
#define FM 8 /* output channels per work-item of the forward kernels */
#define CONV_CHAIN 8 /* channels per fma chain: layers.h's IVAE_CONV_CHAIN (the summation rule) */
#define FN 8 /* outputs of a row per work-item (the float8 lanes) */

/* Outputs y[o + m, t, h, w + l], m < FM, l < FN, of conv3d_forward_padded
   (conv3d_forward_chunk is it with SPEC 2.1's padding, ph = kh/2 rows on top
   and pw = kw/2 columns left; conv3d_forward the chunk with s0 = 0 and prev
   = NULL). Channels past Cout repeat channel Cout-1 and columns past Wo are
   computed from zeros; the caller stores neither. The C code's conv_segment
   and conv_chain, per output:
       acc = 0;
       for each block of CONV_CHAIN input channels {
           part = 0;
           for i in the block, for k (taps a, c, d row-major) part = FMA(w[o,i,k], xp[tap], part);
           acc += part; }
       y = bias ? acc + bias[o] : acc;
   where xp is the zero-padded input: padded frame j is clip frame
   s0 - (kt-1) + j, from prev (the kt-1 frames before the chunk; zeros when
   prev is NULL) while j < kt-1 and from inp after; ph rows above and pw
   columns left of the input are zeros (and the rows and columns below and
   right of it, which only set Ho and Wo: reads past the input are 0). Every
   tap is fma'd in, the padding's zeros included. Output t (of the chunk)
   has its first tap at padded frame first * st - s0 + t * st. */
static void conv_forward_tile(float8 y[FM], global const float *inp, global const float *prev, int s0,
                              global const float *weight, global const float *bias, int Cin, int T, int H, int W,
                              int Cout, int kt, int kh, int kw, int st, int sh, int sw, int ph, int pw, int o, int t,
                              int h, int w) {
    int tf = kt - 1, first = (s0 + st - 1) / st, K = kt * kh * kw;
    int j0 = first * st - s0 + t * st;
    size_t HW = (size_t)H * W;
    float8 acc[FM];
    for (int m = 0; m < FM; m++) acc[m] = (float8)(0.0f);
    float8 part[FM];
    for (int i = 0; i < Cin; i++) {
        global const float *wm[FM]; /* (kt, kh, kw) of channel o + m, input channel i */
        for (int m = 0; m < FM; m++) {
            if (i % CONV_CHAIN == 0) part[m] = (float8)(0.0f); /* a block's chain starts */
            wm[m] = weight + ((size_t)min(o + m, Cout - 1) * Cin + i) * K;
        }
        for (int a = 0; a < kt; a++) {
            int j = j0 + a;
            global const float *f = j >= tf ? inp + ((size_t)i * T + (j - tf)) * HW
                                  : prev   ? prev + ((size_t)i * tf + j) * HW
                                           : 0;
            for (int c = 0; c < kh; c++) {
                int y = h * sh + c - ph;
                global const float *row = f && y >= 0 && y < H ? f + (size_t)y * W : 0;
                if (sw == 1 && kw <= 9) {
                    /* the FN + kw - 1 inputs the row's taps read (0 outside), once:
                       tap d of lane l reads v[d + l] */
                    int x0 = w - pw, n = FN - 1 + kw;
                    float v[16];
                    if (!row) {
                        vstore16((float16)(0.0f), 0, v);
                    } else if (x0 >= 0 && x0 + n <= W) {
                        vstore8(vload8(0, row + x0), 0, v);
                        for (int l = FN; l < n; l++) v[l] = row[x0 + l];
                    } else {
                        for (int l = 0; l < n; l++) v[l] = x0 + l >= 0 && x0 + l < W ? row[x0 + l] : 0.0f;
                    }
                    for (int d = 0; d < kw; d++) {
                        int k = (a * kh + c) * kw + d;
                        float8 x = vload8(0, v + d);
                        for (int m = 0; m < FM; m++) part[m] = fma((float8)(wm[m][k]), x, part[m]);
                    }
                } else {
                    /* strided: lane l of tap d reads column (w + l) sw + d - pw */
                    for (int d = 0; d < kw; d++) {
                        int k = (a * kh + c) * kw + d, x0 = w * sw + d - pw;
                        float v[FN];
                        for (int l = 0; l < FN; l++) {
                            int x = x0 + l * sw;
                            v[l] = row && x >= 0 && x < W ? row[x] : 0.0f;
                        }
                        float8 x = vload8(0, v);
                        for (int m = 0; m < FM; m++) part[m] = fma((float8)(wm[m][k]), x, part[m]);
                    }
                }
            }
        }
        if (i % CONV_CHAIN == CONV_CHAIN - 1 || i == Cin - 1) /* the block's chain ends */
            for (int m = 0; m < FM; m++) acc[m] += part[m];
    }
    for (int m = 0; m < FM; m++) y[m] = bias ? acc[m] + (float8)(bias[min(o + m, Cout - 1)]) : acc[m];
}

/* one work-item's tile of a forward kernel: gid -> (channels o.., frame t, row h, columns w..),
   computed and stored (the channels < Cout, the columns < Wo) */
static void conv_forward_run(global float *out, global const float *inp, global const float *prev, int s0,
                             global const float *weight, global const float *bias, int Cin, int T, int H, int W,
                             int Cout, int kt, int kh, int kw, int st, int sh, int sw, int ph, int pw, int To, int Ho,
                             int Wo) {
    int Wn = (Wo + FN - 1) / FN;
    size_t gid = get_global_id(0);
    if (To <= 0 || gid >= (size_t)(Cout + FM - 1) / FM * To * Ho * Wn) return;
    int w = gid % Wn * FN, h = gid / Wn % Ho, t = gid / ((size_t)Wn * Ho) % To, o = gid / ((size_t)Wn * Ho * To) * FM;
    float8 y[FM];
    conv_forward_tile(y, inp, prev, s0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, ph, pw, o, t, h, w);
    for (int m = 0; m < FM && o + m < Cout; m++) {
        global float *dst = out + (((size_t)(o + m) * To + t) * Ho + h) * Wo + w;
        if (w + FN <= Wo) {
            vstore8(y[m], 0, dst);
        } else {
            float v[FN];
            vstore8(y[m], 0, v);
            for (int l = 0; w + l < Wo; l++) dst[l] = v[l];
        }
    }
}

/* stores the lanes l < n of v at y[l * step] */
static void store4(global float *y, float4 v, int step, int n) {
    if (step == 1 && n >= 4) {
        vstore4(v, 0, y);
        return;
    }
    float tmp[4];
    vstore4(v, 0, tmp);
    for (int l = 0; l < n && l < 4; l++) y[l * step] = tmp[l];
}

/* y[o,t',h',w'] = b[o] + sum_{i,a,c,d} W[o,i,a,c,d] * xpad[i, t'st+a, h'sh+c, w'sw+d];
   one work-item per FM channels x FN neighbouring outputs of a row */
kernel void conv3d_forward(global float *out, global const float *inp, global const float *weight,
                           global const float *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh,
                           int kw, int st, int sh, int sw) {
    // out (Cout, To, Ho, Wo), inp (Cin, T, H, W), weight (Cout, Cin, kt, kh, kw), bias (Cout) or NULL
    conv_forward_run(out, inp, 0, 0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, kh / 2, kw / 2,
                     conv_out_t(T, st), conv_out_s(H, kh, sh), conv_out_s(W, kw, sw));
}

/* the output frames t' of the clip whose last tap t'*st falls in the chunk
   (frames s0 .. s0+T-1): first = ceil(s0 / st) .. last = (s0+T-1) / st */
kernel void conv3d_forward_chunk(global float *out, global const float *inp, global const float *prev, int s0,
                                 global const float *weight, global const float *bias, int Cin, int T, int H,
                                 int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw) {
    // out (Cout, To, Ho, Wo), inp (Cin, T, H, W), prev (Cin, kt-1, H, W) or NULL
    int first = (s0 + st - 1) / st, last = (s0 + T - 1) / st;
    conv_forward_run(out, inp, prev, s0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, kh / 2, kw / 2,
                     last - first + 1, conv_out_s(H, kh, sh), conv_out_s(W, kw, sw));
}

/* conv3d_forward_chunk with any spatial zero padding (layers.c's
   ivae_conv3d_forward_padded; IvaePad's four fields as four ints, in its
   order): Ho = (H + top + bottom - kh) / sh + 1, Wo likewise. Wan 2.1's
   downsample pads one row at the bottom and one column on the right only. */
kernel void conv3d_forward_padded(global float *out, global const float *inp, global const float *prev, int s0,
                                  global const float *weight, global const float *bias, int Cin, int T, int H,
                                  int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw, int top,
                                  int bottom, int left, int right) {
    // out (Cout, To, Ho, Wo), inp (Cin, T, H, W), prev (Cin, kt-1, H, W) or NULL
    int first = (s0 + st - 1) / st, last = (s0 + T - 1) / st;
    conv_forward_run(out, inp, prev, s0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, top, left,
                     last - first + 1, (H + top + bottom - kh) / sh + 1, (W + left + right - kw) / sw + 1);
}

/* Streaming (layers.c's ivae_cache_push): cache (C, keep, H, W) := the last
   keep frames of [cache | x], x (C, T, H, W); had = 0 on the clip's first
   chunk (the cache then counts as zeros). One work-item per channel and
   pixel runs the C loop over j, in place, as C does:
       for j ascending { q = T + j;   // index in [cache | x]
                         cache[j] = q >= keep ? x[q - keep] : had ? cache[q] : 0; }
   (ascending j reads q > j, not yet overwritten) */
kernel void cache_push(global float *cache, int keep, int had, global const float *x, int C, int T, int H, int W) {
    size_t HW = (size_t)H * W, gid = get_global_id(0);
    if (gid >= (size_t)C * HW) return;
    size_t c = gid / HW, p = gid % HW;
    for (int j = 0; j < keep; j++) {
        int q = T + j;
        global float *dst = cache + (c * keep + j) * HW + p;
        if (q >= keep) *dst = x[(c * T + q - keep) * HW + p];
        else *dst = had ? cache[(c * keep + q) * HW + p] : 0.0f;
    }
}

/* conv3d_backward, input gradient. conv_tuned.c spreads dy out to the stride-1
   output grid (T1 x H1 x W1, dy[o,t',h',w'] at (t'st, h'sh, w'sw), zeros
   between; for stride 1 the grid is dy itself), then runs the forward tile
   on it padded kt-1 frames at the END in time and qh = kh-1-kh/2 rows, qw
   columns around, with the flipped kernel (taps reversed, in and out
   channels swapped) and no bias:
       acc = 0;
       for each block of CONV_CHAIN output channels {
           part = 0;
           for o in the block, for k (a, c, d row-major) part = FMA(W[o,i,K-1-k], dypad[o, t+a, h+c, w+d], part);
           acc += part; }
       dx[i,t,h,w] = acc;
   with dypad[o, t, y, x] = grid[o, t, y-qh, x-qw], zero outside. */

/* stride (1, 1, 1): dy is the grid, and every tap is fma'd in, the padding's
   zeros included. Lanes l < 4: the outputs w + l. */
static float4 conv_dinp_point4(global const float *dout, global const float *weight, int Cin, int T, int H, int W,
                               int Cout, int kt, int kh, int kw, int i, int t, int h, int w) {
    int Ho = conv_out_s(H, kh, 1), Wo = conv_out_s(W, kw, 1), K = kt * kh * kw;
    int qh = kh - 1 - kh / 2, qw = kw - 1 - kw / 2;
    float4 acc = (float4)(0.0f);
    float4 part = (float4)(0.0f);
    for (int o = 0; o < Cout; o++) {
        if (o % CONV_CHAIN == 0) part = (float4)(0.0f); /* a block's chain starts */
        global const float *wo = weight + ((size_t)o * Cin + i) * K;
        global const float *dyo = dout + (size_t)o * T * Ho * Wo;
        for (int a = 0; a < kt; a++)
            for (int c = 0; c < kh; c++) {
                int tt = t + a, y = h + c - qh;
                global const float *row = tt < T && y >= 0 && y < Ho ? dyo + ((size_t)tt * Ho + y) * Wo : 0;
                for (int d = 0; d < kw; d++) {
                    int k = (a * kh + c) * kw + d;
                    part = fma((float4)(wo[K - 1 - k]), gather4(row, w + d - qw, 1, Wo), part);
                }
            }
        if (o % CONV_CHAIN == CONV_CHAIN - 1 || o == Cout - 1) acc += part; /* the block's chain ends */
    }
    return acc;
}

/* any stride: lanes l < 4 are the outputs w + l sw, so that every tap reads
   the grid at the same phase in all four. A tap that falls between grid
   points, or in a padding frame or row, reads 0 in the C code for every lane and
   is skipped here (rule (6): with finite weights, the same bits); a padding
   column that only some lanes reach reads 0 in those, as in the C code. */
static float4 conv_dinp_strided_point4(global const float *dout, global const float *weight, int Cin, int T, int H,
                                       int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw, int i, int t,
                                       int h, int w) {
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw), K = kt * kh * kw;
    int qh = kh - 1 - kh / 2, qw = kw - 1 - kw / 2;
    float4 acc = (float4)(0.0f);
    float4 part = (float4)(0.0f);
    for (int o = 0; o < Cout; o++) {
        if (o % CONV_CHAIN == 0) part = (float4)(0.0f); /* a block's chain starts */
        global const float *wo = weight + ((size_t)o * Cin + i) * K;
        global const float *dyo = dout + (size_t)o * To * Ho * Wo;
        for (int a = 0; a < kt; a++) {
            int tt = t + a; /* on the grid: output frame tt / st */
            if (tt % st != 0 || tt / st >= To) continue;
            for (int c = 0; c < kh; c++) {
                int y = h + c - qh;
                if (y < 0 || y % sh != 0 || y / sh >= Ho) continue;
                global const float *row = dyo + ((size_t)(tt / st) * Ho + y / sh) * Wo;
                for (int d = 0; d < kw; d++) {
                    int k = (a * kh + c) * kw + d, x0 = w + d - qw; /* lane l: grid column x0 + l sw */
                    if (x0 % sw != 0) continue;
                    part = fma((float4)(wo[K - 1 - k]), gather4(row, x0 / sw, 1, Wo), part);
                }
            }
        }
        if (o % CONV_CHAIN == CONV_CHAIN - 1 || o == Cout - 1) acc += part; /* the block's chain ends */
    }
    return acc;
}

kernel void conv3d_backward_dinp(global float *dinp, global const float *dout, global const float *weight,
                                 int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st, int sh,
                                 int sw) {
    // dinp (Cin, T, H, W) written; dout (Cout, To, Ho, Wo); weight (Cout, Cin, kt, kh, kw); stride (1, 1, 1)
    int W4 = (W + 3) / 4;
    size_t gid = get_global_id(0);
    if (gid >= (size_t)Cin * T * H * W4) return;
    int w = gid % W4 * 4, h = gid / W4 % H, t = gid / ((size_t)W4 * H) % T, i = gid / ((size_t)W4 * H * T);
    float4 dx = conv_dinp_point4(dout, weight, Cin, T, H, W, Cout, kt, kh, kw, i, t, h, w);
    store4(dinp + (((size_t)i * T + t) * H + h) * W + w, dx, 1, W - w);
}

/* a row of W outputs is Wg = ceil(W / (4 sw)) groups of 4 sw columns, and a
   group is sw work-items, one per phase p: outputs g 4 sw + p + l sw */
kernel void conv3d_backward_dinp_strided(global float *dinp, global const float *dout,
                                         global const float *weight, int Cin, int T, int H, int W, int Cout,
                                         int kt, int kh, int kw, int st, int sh, int sw) {
    int Wq = (W + 4 * sw - 1) / (4 * sw) * sw; /* work-items per row */
    size_t gid = get_global_id(0);
    if (gid >= (size_t)Cin * T * H * Wq) return;
    int q = gid % Wq, h = gid / Wq % H, t = gid / ((size_t)Wq * H) % T, i = gid / ((size_t)Wq * H * T);
    int w = q / sw * 4 * sw + q % sw;
    if (w >= W) return;
    float4 dx = conv_dinp_strided_point4(dout, weight, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, i, t, h, w);
    store4(dinp + (((size_t)i * T + t) * H + h) * W + w, dx, sw, (W - w + sw - 1) / sw);
}

/* conv3d_backward, weight gradient: conv_tuned.c's conv_wgrad (the same order as layers.c's naive loops), per (o, i, tap):
       clip = 0;
       for t' { frame = 0;
                for h' { row = 0; for w' row = FMA(xpad[i, t'st+a, h'sh+c, w'sw+d], dy[o,t',h',w'], row);
                         frame += row; }
                clip += frame; }
       dW[o,i,a,c,d] += clip;
   xpad is the forward's zero-padded input; padded taps are fma'd in. A
   work-item runs four output channels o4 .. o4+3 as four lanes (channels
   past Cout see dy = 0 and are not stored). */
kernel void conv3d_backward_dweight(global float *dweight, global const float *dout, global const float *inp,
                                    int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                                    int sh, int sw) {
    // dweight (Cout, Cin, kt, kh, kw) accumulated; dout (Cout, To, Ho, Wo); inp (Cin, T, H, W)
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw), K = kt * kh * kw;
    int ph = kh / 2, pw = kw / 2, Cout4 = (Cout + 3) / 4;
    size_t gid = get_global_id(0), P = (size_t)To * Ho * Wo;
    if (gid >= (size_t)Cout4 * Cin * K) return;
    int k = gid % K, i = gid / K % Cin, o4 = gid / ((size_t)K * Cin) * 4, no = min(4, Cout - o4);
    int a = k / (kh * kw), c = k / kw % kh, d = k % kw;
    global const float *xi = inp + (size_t)i * T * H * W;
    global const float *dyo = dout + (size_t)o4 * P;
    float4 clip = (float4)(0.0f);
    for (int t = 0; t < To; t++) {
        float4 frame = (float4)(0.0f);
        int j = t * st + a - (kt - 1); /* the input frame, < 0: front padding */
        for (int h = 0; h < Ho; h++) {
            int y = h * sh + c - ph;
            int inside = j >= 0 && y >= 0 && y < H;
            size_t p0 = ((size_t)t * Ho + h) * Wo;
            float4 row = (float4)(0.0f);
            for (int w = 0; w < Wo; w++) {
                int x = w * sw + d - pw;
                float xv = (inside && x >= 0 && x < W) ? xi[((size_t)j * H + y) * W + x] : 0.0f;
                size_t p = p0 + w;
                float4 dy = (float4)(dyo[p], no > 1 ? dyo[P + p] : 0.0f, no > 2 ? dyo[2 * P + p] : 0.0f,
                                     no > 3 ? dyo[3 * P + p] : 0.0f);
                row = fma((float4)(xv), dy, row);
            }
            frame += row;
        }
        clip += frame;
    }
    float v[4];
    vstore4(clip, 0, v);
    for (int l = 0; l < no; l++) dweight[((size_t)(o4 + l) * Cin + i) * K + k] += v[l];
}

/* conv3d_backward, bias gradient: y = ... + b[o], so
       db[o] += (real)sum_nested(dy[o], {1, To, Ho, Wo});   i.e. total = 0; total += ch; db += total */
kernel void conv3d_backward_dbias(global float *dbias, global const float *dout, int Cin, int T, int H, int W,
                                  int Cout, int kt, int kh, int kw, int st, int sh, int sw) {
    // dbias (Cout) accumulated; dout (Cout, To, Ho, Wo)
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw);
    size_t o = get_global_id(0);
    if (o >= (size_t)Cout) return;
    float total = 0;
    total += channel_sum(dout + o * To * Ho * Wo, To, Ho, Wo);
    dbias[o] += total;
}

/* ========================================================================== */
/* 2.2 SMC: the reparameterised weight                                        */
/* ========================================================================== */

/* What[o,i,k] = g * s[i]*W[o,i,k] / n[o],  n[o] = sqrt( sum_{i,k} (s[i]*W[o,i,k])^2 + 1e-8 );
   one work-item per output channel o, as the C loop:
       sum = 0; for i { part = 0; for k { u = s[i] * w; part += u * u; } sum += part; }
       n = sqrt(sum + 1e-8);  what = g * (s[i] * w) / n */
kernel void smc_weight_forward(global float *what, global float *norm, global const float *weight,
                               global const float *scale, global const float *gain, int Cout, int Cin, int K) {
    // what (Cout, Cin, K), norm (Cout), weight (Cout, Cin, K), scale (Cin), gain (1)
    size_t o = get_global_id(0);
    if (o >= (size_t)Cout) return;
    global const float *w = weight + o * Cin * K;
    float sum = 0;
    for (int i = 0; i < Cin; i++) {
        float part = 0;
        for (int k = 0; k < K; k++) {
            float u = scale[i] * w[i * K + k];
            part += u * u;
        }
        sum += part;
    }
    float n = sqrt(sum + 1e-8f);
    norm[o] = n;
    for (int i = 0; i < Cin; i++)
        for (int k = 0; k < K; k++) what[o * Cin * K + i * K + k] = gain[0] * (scale[i] * w[i * K + k]) / n;
}

/* smc_weight_backward in four kernels, run in this order:
   in the forward pass: what = g * u / n, u = s[i] * W, n = sqrt(sum u^2 + eps), so with
   dot[o] = sum_j dwhat_j u_j:  du = (g / n) * (dwhat - u * dot / n^2),
   dW = s[i] * du,  ds[i] = sum_{o,k} W * du,  dg = sum_o dot[o] / n[o] */

/* dot[o]: sum = 0; for i { part = 0; for k part += dwhat * (s[i] * w); sum += part; } */
kernel void smc_weight_backward_dot(global float *dot, global const float *dwhat, global const float *weight,
                                    global const float *scale, int Cout, int Cin, int K) {
    // dot (Cout) scratch; dwhat, weight (Cout, Cin, K); scale (Cin)
    size_t o = get_global_id(0);
    if (o >= (size_t)Cout) return;
    global const float *w = weight + o * Cin * K, *dwh = dwhat + o * Cin * K;
    float sum = 0;
    for (int i = 0; i < Cin; i++) {
        float part = 0;
        for (int k = 0; k < K; k++) part += dwh[i * K + k] * (scale[i] * w[i * K + k]);
        sum += part;
    }
    dot[o] = sum;
}

/* layers.c's SMC_DU(o, i, k): (g / n[o]) * (dwhat - (s[i] * W) * dot[o] / (n[o] * n[o])) */
static float smc_du(global const float *dwhat, global const float *norm, global const float *dot,
                    global const float *weight, global const float *scale, global const float *gain, int Cin,
                    int K, int o, int i, int k) {
    size_t j = ((size_t)o * Cin + i) * K + k;
    return (gain[0] / norm[o]) * (dwhat[j] - (scale[i] * weight[j]) * dot[o] / (norm[o] * norm[o]));
}

/* dW[o,i,k] += s[i] * du */
kernel void smc_weight_backward_dweight(global float *dweight, global const float *dwhat, global const float *norm,
                                        global const float *dot, global const float *weight,
                                        global const float *scale, global const float *gain, int Cout, int Cin,
                                        int K) {
    size_t gid = get_global_id(0);
    if (gid >= (size_t)Cout * Cin * K) return;
    int k = gid % K, i = gid / K % Cin, o = gid / ((size_t)K * Cin);
    dweight[gid] += scale[i] * smc_du(dwhat, norm, dot, weight, scale, gain, Cin, K, o, i, k);
}

/* ds[i] += sum, sum = 0; for o { part = 0; for k part += W * du; sum += part; } */
kernel void smc_weight_backward_dscale(global float *dscale, global const float *dwhat, global const float *norm,
                                       global const float *dot, global const float *weight,
                                       global const float *scale, global const float *gain, int Cout, int Cin,
                                       int K) {
    size_t i = get_global_id(0);
    if (i >= (size_t)Cin) return;
    float sum = 0;
    for (int o = 0; o < Cout; o++) {
        float part = 0;
        for (int k = 0; k < K; k++)
            part += weight[((size_t)o * Cin + i) * K + k] * smc_du(dwhat, norm, dot, weight, scale, gain, Cin, K, o, i, k);
        sum += part;
    }
    dscale[i] += sum;
}

/* dg += g, g = 0; for o g += dot[o] / n[o] */
kernel void smc_weight_backward_dgain(global float *dgain, global const float *norm, global const float *dot,
                                      int Cout) {
    if (get_global_id(0) != 0) return;
    float g = 0;
    for (int o = 0; o < Cout; o++) g += dot[o] / norm[o];
    dgain[0] += g;
}

/* ========================================================================== */
/* 2.3 SiLU                                                                   */
/* ========================================================================== */

kernel void silu_forward(global float *out, global const float *inp, ulong n) {
    size_t j = get_global_id(0);
    if (j >= n) return;
    out[j] = inp[j] / (1 + ivae_expf(-inp[j]));
}

/* in the forward pass: y = x * sig(x), so dy/dx = sig * (1 + x * (1 - sig)) */
kernel void silu_backward(global float *dinp, global const float *dout, global const float *inp, ulong n) {
    size_t j = get_global_id(0);
    if (j >= n) return;
    float x = inp[j];
    float sig = 1 / (1 + ivae_expf(-x));
    dinp[j] = dout[j] * (sig * (1 + x * (1 - sig)));
}

/* ========================================================================== */
/* 2.4 PixelNorm                                                              */
/* ========================================================================== */

/* y[c,p] = x[c,p] / n[p],  n[p] = sqrt( (1/C) sum_c x[c,p]^2 + 1e-8 ); channels straight through */
kernel void pixelnorm_forward(global float *out, global float *norm, global const float *inp, int C, ulong N) {
    // out (C, N), norm (N), inp (C, N)
    size_t p = get_global_id(0);
    if (p >= N) return;
    float ss = 0;
    for (int c = 0; c < C; c++) ss += inp[c * N + p] * inp[c * N + p];
    float n = sqrt(ss / (float)C + 1e-8f);
    norm[p] = n;
    for (int c = 0; c < C; c++) out[c * N + p] = inp[c * N + p] / n;
}

/* dx_c = (dy_c - x_c * dot / (C n^2)) / n, dot = sum_c dy_c x_c */
kernel void pixelnorm_backward(global float *dinp, global const float *dout, global const float *norm,
                               global const float *inp, int C, ulong N) {
    // dinp (C, N) written, dout (C, N), norm (N) saved by the forward pass, inp (C, N)
    size_t p = get_global_id(0);
    if (p >= N) return;
    float dot = 0;
    for (int c = 0; c < C; c++) dot += dout[c * N + p] * inp[c * N + p];
    float n = norm[p];
    for (int c = 0; c < C; c++) dinp[c * N + p] = (dout[c * N + p] - inp[c * N + p] * dot / ((float)C * n * n)) / n;
}

/* ========================================================================== */
/* GroupNorm (SPEC 9: the variant blocks of the lessons)                      */
/* ========================================================================== */
/* layers.c's ivae_groupnorm_forward and _backward. G groups of Cg = C / G
   channels, statistics per group g and frame t over n = Cg H W values:
       mean = S / n,  sd = sqrt(V / n + 1e-6),  y = (x - mean) / sd * weight[c] + bias[c]
   S and V in rule 5's order (gn_group_sum): each row straight through, the
   rows of a channel's frame summed, then the group's channels in increasing
   order. The kernels keep that order with one work-item per channel and
   frame for the first two levels (its share, in a part buffer (C, T)) and
   one per group and frame (or per element, re-adding the Cg shares in the
   same order) for the last. The C code needs no work buffer; the shares
   live in the context's scratch (ivae_cl.c, IVAE_CLS_GN). */

/* one channel's frame fr (H W values, rows of W): the rows straight through,
   the row sums in order, of v (sq = 0) or (v - m)^2 (sq = 1), as gn_group_sum's
   inner loops:  ch = 0; for r0 { acc = 0; for j acc += f(fr[j]); ch += acc; } */
static float gn_frame_sum(global const float *fr, int HW, int W, int sq, float m) {
    float ch = 0;
    for (int r0 = 0; r0 < HW; r0 += W) {
        float acc = 0;
        if (sq)
            for (int j = r0; j < r0 + W; j++) acc += (fr[j] - m) * (fr[j] - m);
        else
            for (int j = r0; j < r0 + W; j++) acc += fr[j];
        ch += acc;
    }
    return ch;
}

/* ivae_groupnorm_forward, part 1 (run twice): part[c T + t] = channel c's share
   of S (sq = 0) or of V (sq = 1, about mean = stats[g T + t], written by
   part 2 between the two runs) */
kernel void groupnorm_forward_sums(global float *part, global const float *stats, global const float *inp, int C,
                                   int T, int H, int W, int G, int sq) {
    // part (C, T), stats (2, G, T), inp (C, T, H, W)
    size_t ct = get_global_id(0);
    if (ct >= (size_t)C * T) return;
    int c = (int)(ct / T), t = (int)(ct % T), Cg = C / G, HW = H * W;
    float m = sq ? stats[(size_t)(c / Cg) * T + t] : 0;
    part[ct] = gn_frame_sum(inp + ct * HW, HW, W, sq, m);
}

/* part 2: the group's shares in channel order, then (sd = 0) mean = S / n or
   (sd = 1) sd = sqrt(V / n + 1e-6), into stats (2, G, T):
       total = 0; for c in the group total += part[c T + t];  m = total / n  (n = (float)Cg * HW) */
kernel void groupnorm_forward_stats(global float *stats, global const float *part, int C, int T, int H, int W, int G,
                                    int sd) {
    size_t gt = get_global_id(0);
    if (gt >= (size_t)G * T) return;
    int g = (int)(gt / T), t = (int)(gt % T), Cg = C / G, HW = H * W;
    float n = (float)Cg * HW, total = 0;
    for (int c = g * Cg; c < (g + 1) * Cg; c++) total += part[(size_t)c * T + t];
    if (sd) stats[(size_t)G * T + gt] = sqrt(total / n + 1e-6f);
    else stats[gt] = total / n;
}

/* part 3, one work-item per element:  y = (x - m) / d * weight[c] + bias[c] (four roundings) */
kernel void groupnorm_forward_apply(global float *out, global const float *stats, global const float *inp,
                                    global const float *weight, global const float *bias, int C, int T, int H, int W,
                                    int G) {
    size_t j = get_global_id(0), HW = (size_t)H * W;
    if (j >= (size_t)C * T * HW) return;
    size_t ct = j / HW;
    int c = (int)(ct / T), t = (int)(ct % T);
    size_t gt = (size_t)(c / (C / G)) * T + t;
    float m = stats[gt], d = stats[(size_t)G * T + gt];
    out[j] = (inp[j] - m) / d * weight[c] + bias[c];
}

/* ivae_groupnorm_backward, part 1: one work-item per channel c and frame t,
   rows straight through and the row sums in order (the C loops' ra, rb and
   rw, rb), of g = dy * weight[c] and g * xh (dinp's A and B, channel c's
   share), and of dy * xh and dy (dweight's and dbias's frame sums), xh =
   (x - mean) / sd:  part (4, C, T) */
kernel void groupnorm_backward_sums(global float *part, global const float *dout, global const float *stats,
                                    global const float *inp, global const float *weight, int C, int T, int H, int W,
                                    int G) {
    size_t ct = get_global_id(0), CT = (size_t)C * T;
    if (ct >= CT) return;
    int c = (int)(ct / T), t = (int)(ct % T), HW = H * W;
    size_t gt = (size_t)(c / (C / G)) * T + t;
    float m = stats[gt], d = stats[(size_t)G * T + gt], wc = weight[c];
    global const float *x = inp + ct * HW, *dy = dout + ct * HW;
    float ca = 0, cb = 0, fw = 0, fb = 0;
    for (int r0 = 0; r0 < HW; r0 += W) {
        float ra = 0, rb = 0, rw = 0, rd = 0;
        for (int j = r0; j < r0 + W; j++) {
            float xh = (x[j] - m) / d, gj = dy[j] * wc;
            ra += gj;
            rb += gj * xh;
            rw += dy[j] * xh;
            rd += dy[j];
        }
        ca += ra, cb += rb, fw += rw, fb += rd;
    }
    part[ct] = ca, part[CT + ct] = cb, part[2 * CT + ct] = fw, part[3 * CT + ct] = fb;
}

/* part 2, one work-item per element: A and B of its group and frame (the
   shares in channel order, from +0), then
       dx = (dy * weight[c] - A / n - (x - mean) / sd * (B / n)) / sd */
kernel void groupnorm_backward_dinp(global float *dinp, global const float *part, global const float *dout,
                                    global const float *stats, global const float *inp, global const float *weight,
                                    int C, int T, int H, int W, int G) {
    size_t j = get_global_id(0), HW = (size_t)H * W, CT = (size_t)C * T;
    if (j >= CT * HW) return;
    size_t ct = j / HW;
    int c = (int)(ct / T), t = (int)(ct % T), Cg = C / G, g = c / Cg;
    size_t gt = (size_t)g * T + t;
    float m = stats[gt], d = stats[(size_t)G * T + gt], n = (float)Cg * (int)HW, A = 0, B = 0;
    for (int cc = g * Cg; cc < (g + 1) * Cg; cc++) A += part[(size_t)cc * T + t], B += part[CT + (size_t)cc * T + t];
    float an = A / n, bn = B / n;
    dinp[j] = (dout[j] * weight[c] - an - (inp[j] - m) / d * bn) / d;
}

/* part 3, one work-item per channel: the frame sums in order, added to
   dweight[c] and dbias[c] (each only if its flag is set):
       cw = 0; for t cw += fw[c, t];  dweight[c] += cw   (and dbias from fb) */
kernel void groupnorm_backward_dweight(global float *dweight, global float *dbias, global const float *part, int C,
                                       int T, int has_dweight, int has_dbias) {
    size_t c = get_global_id(0), CT = (size_t)C * T;
    if (c >= (size_t)C) return;
    float cw = 0, cb = 0;
    for (int t = 0; t < T; t++) cw += part[2 * CT + c * T + t], cb += part[3 * CT + c * T + t];
    if (has_dweight) dweight[c] += cw;
    if (has_dbias) dbias[c] += cb;
}

/* ========================================================================== */
/* RMS norm (SPEC 7, Wan 2.1's RMS_norm)                                      */
/* ========================================================================== */

/* y[c,p] = x[c,p] / max(n[p], 1e-12) * sqrt(C) * gamma[c],  n[p] = sqrt( sum_c x[c,p]^2 );
   one work-item per position, as the C loop:
       ss = 0; for c ss += x * x;  n = sqrt(ss);  if (!(n >= 1e-12)) n = n != n ? n : 1e-12;
       for c out = x / n * root_c * gamma[c]     (root_c = sqrt((float)C)) */
kernel void rmsnorm_forward(global float *out, global const float *inp, global const float *gamma, int C, ulong N) {
    // out, inp (C, N); gamma (C)
    size_t p = get_global_id(0);
    if (p >= N) return;
    float root_c = sqrt((float)C);
    float ss = 0;
    for (int c = 0; c < C; c++) ss += inp[c * N + p] * inp[c * N + p];
    float n = sqrt(ss);
    if (!(n >= 1e-12f)) n = n != n ? n : 1e-12f; /* the floor of F.normalize; NaN stays NaN */
    for (int c = 0; c < C; c++) out[c * N + p] = inp[c * N + p] / n * root_c * gamma[c];
}

/* ========================================================================== */
/* 2.6 attention (the part between the qkv and proj convolutions)             */
/* ========================================================================== */

/* token p (frame t = p / HW) attends to [r0, r1): its frame, or frames 0..t when causal */
static void attn_span(int mode, int p, int HW, int *r0, int *r1) {
    int t = p / HW;
    *r0 = mode == IVAE_ATTN_CAUSAL ? 0 : t * HW;
    *r1 = (t + 1) * HW;
}

static int attn_row_len(int mode, int T, int HW) { return mode == IVAE_ATTN_CAUSAL ? T * HW : HW; }

/* o_p = sum_r softmax_r(q_p . k_r / sqrt(C)) v_r over the allowed r; one work-item per token p:
       a[r] = (sum_c q * k) * scale, mx = max; a[r] = exp(a[r] - mx); sum = sum_rows(a); a[r] /= sum;
       out[c,p] = sum_rows(a[r] * v[c,r]) */
kernel void attention_forward(global float *out, global float *att, global const float *qkv, int C, int T, int H,
                              int W, int mode) {
    // out (C, N), att (N, L) probabilities, qkv (3C, N): q rows 0..C-1, k C..2C-1, v 2C..3C-1
    int HW = H * W, N = T * HW, L = attn_row_len(mode, T, HW);
    size_t gid = get_global_id(0);
    if (gid >= (size_t)N) return;
    int p = gid, r0, r1;
    global const float *q = qkv, *k = qkv + (size_t)C * N, *v = qkv + (size_t)2 * C * N;
    float scale = 1 / sqrt((float)C);
    attn_span(mode, p, HW, &r0, &r1);
    global float *a = att + (size_t)p * L;
    float mx = -INFINITY;
    for (int r = r0; r < r1; r++) {
        float dot = 0;
        for (int c = 0; c < C; c++) dot += q[(size_t)c * N + p] * k[(size_t)c * N + r];
        a[r - r0] = dot * scale;
        if (a[r - r0] > mx) mx = a[r - r0];
    }
    for (int r = r0; r < r1; r++) a[r - r0] = ivae_expf(a[r - r0] - mx);
    float sum = sum_rows(a, r1 - r0, W);
    for (int r = r0; r < r1; r++) a[r - r0] = a[r - r0] / sum;
    for (int c = 0; c < C; c++) out[(size_t)c * N + p] = sum_rows_prod(a, v + (size_t)c * N + r0, r1 - r0, W);
}

/* attention_backward in two kernels. In the forward pass: s_pr = q_p.k_r * scale, a = softmax_r(s),
   o_p = sum_r a_pr v_r, so dv_r = sum_p a_pr do_p, da_pr = do_p . v_r,
   ds_pr = a_pr (da_pr - sum_r' a_pr' da_pr'), dq_p = scale * sum_r ds_pr k_r, dk_r = scale * sum_p ds_pr q_p.
   First ds (N, L) and dq, one token p per work-item:
       da[r] = sum_c do[c,p] * v[c,r];  adot = sum_rows(a * da);  ds[r] = a * (da - adot);
       dq[c,p] = sum_rows(ds * k[c]) * scale */
kernel void attention_backward_dsdq(global float *dqkv, global float *ds, global const float *dout,
                                    global const float *att, global const float *qkv, int C, int T, int H, int W,
                                    int mode) {
    // dqkv (3C, N), ds (N, L) scratch, dout (C, N), att (N, L), qkv (3C, N)
    int HW = H * W, N = T * HW, L = attn_row_len(mode, T, HW);
    size_t gid = get_global_id(0);
    if (gid >= (size_t)N) return;
    int p = gid, r0, r1;
    global const float *k = qkv + (size_t)C * N, *v = qkv + (size_t)2 * C * N;
    global float *dq = dqkv;
    float scale = 1 / sqrt((float)C);
    attn_span(mode, p, HW, &r0, &r1);
    global const float *a = att + (size_t)p * L;
    global float *dsp = ds + (size_t)p * L;
    for (int r = r0; r < r1; r++) {
        float da = 0;
        for (int c = 0; c < C; c++) da += dout[(size_t)c * N + p] * v[(size_t)c * N + r];
        dsp[r - r0] = da; /* da for now */
    }
    float adot = sum_rows_prod(a, dsp, r1 - r0, W);
    for (int r = r0; r < r1; r++) dsp[r - r0] = a[r - r0] * (dsp[r - r0] - adot);
    for (int c = 0; c < C; c++) dq[(size_t)c * N + p] = sum_rows_prod(dsp, k + (size_t)c * N + r0, r1 - r0, W) * scale;
}

/* sum_rows over the queries p in [p0, p1) of m[p, r] * b[p], m (N, L) in att's
   layout (row p holds p's span only), as layers.c sums its tmp[p - p0] */
static float sum_rows_col_prod(global const float *m, global const float *b, int r, int p0, int p1, int W, int HW,
                               int L, int mode) {
    float total = 0;
    for (int j0 = p0; j0 < p1; j0 += W) {
        float acc = 0;
        for (int p = j0; p < j0 + W; p++) {
            int q0, q1;
            attn_span(mode, p, HW, &q0, &q1);
            acc += m[(size_t)p * L + r - q0] * b[p];
        }
        total += acc;
    }
    return total;
}

/* then dk and dv, one key token r per work-item; the queries that saw r form [p0, p1):
       dk[c,r] = sum_rows_p(ds[p, r] * q[c,p]) * scale;  dv[c,r] = sum_rows_p(a[p, r] * do[c,p]) */
kernel void attention_backward_dkdv(global float *dqkv, global const float *ds, global const float *dout,
                                    global const float *att, global const float *qkv, int C, int T, int H, int W,
                                    int mode) {
    int HW = H * W, N = T * HW, L = attn_row_len(mode, T, HW);
    size_t gid = get_global_id(0);
    if (gid >= (size_t)N) return;
    int r = gid, t = r / HW;
    int p0 = t * HW, p1 = mode == IVAE_ATTN_CAUSAL ? N : (t + 1) * HW;
    global const float *q = qkv;
    global float *dk = dqkv + (size_t)C * N, *dv = dqkv + (size_t)2 * C * N;
    float scale = 1 / sqrt((float)C);
    for (int c = 0; c < C; c++) {
        dk[(size_t)c * N + r] = sum_rows_col_prod(ds, q + (size_t)c * N, r, p0, p1, W, HW, L, mode) * scale;
        dv[(size_t)c * N + r] = sum_rows_col_prod(att, dout + (size_t)c * N, r, p0, p1, W, HW, L, mode);
    }
}

/* ========================================================================== */
/* 2.8 nearest-neighbour upsampling                                           */
/* ========================================================================== */

/* output frame j comes from input frame (j+1)/2 when temporal (T -> 2T-1), j/2 in a chunk that
   does not start the clip (first = 0, T -> 2T), j otherwise */
static int up_src_frame(int j, int temporal, int first) { return temporal ? (first ? (j + 1) / 2 : j / 2) : j; }
static int up_frames(int T, int temporal, int first) { return temporal ? (first ? 2 * T - 1 : 2 * T) : T; }

static void upsample_point(global float *out, global const float *inp, int C, int T, int H, int W, int temporal,
                           int first, size_t gid) {
    int To = up_frames(T, temporal, first), Ho = 2 * H, Wo = 2 * W;
    if (gid >= (size_t)C * To * Ho * Wo) return;
    int w = gid % Wo, h = gid / Wo % Ho, j = gid / ((size_t)Wo * Ho) % To, c = gid / ((size_t)Wo * Ho * To);
    out[gid] = inp[(((size_t)c * T + up_src_frame(j, temporal, first)) * H + h / 2) * W + w / 2];
}

kernel void upsample_forward(global float *out, global const float *inp, int C, int T, int H, int W, int temporal) {
    // out (C, To, 2H, 2W), inp (C, T, H, W)
    upsample_point(out, inp, C, T, H, W, temporal, 1, get_global_id(0));
}

kernel void upsample_chunk(global float *out, global const float *inp, int C, int T, int H, int W, int temporal,
                           int first) {
    upsample_point(out, inp, C, T, H, W, temporal, first, get_global_id(0));
}

/* each input pixel was copied to a 2x2 block of 1 or 2 output frames:
       dx = 0; for j (frames in increasing order, from t) { s = 0; s += b[0]; s += b[1]; s += b[Wo]; s += b[Wo+1]; dx += s; } */
kernel void upsample_backward(global float *dinp, global const float *dout, int C, int T, int H, int W,
                              int temporal) {
    // dinp (C, T, H, W) written, dout (C, To, 2H, 2W)
    int To = temporal ? 2 * T - 1 : T, Ho = 2 * H, Wo = 2 * W;
    size_t gid = get_global_id(0);
    if (gid >= (size_t)C * T * H * W) return;
    int w = gid % W, h = gid / W % H, t = gid / ((size_t)W * H) % T, c = gid / ((size_t)W * H * T);
    float dx = 0;
    for (int j = 0; j < To; j++) {
        if (up_src_frame(j, temporal, 1) != t) continue;
        global const float *b = dout + (((size_t)c * To + j) * Ho + 2 * h) * Wo + 2 * w;
        float s = 0;
        s += b[0];
        s += b[1];
        s += b[Wo];
        s += b[Wo + 1];
        dx += s;
    }
    dinp[gid] = dx;
}

/* Wan 2.1's upsample3d (wan.c, up_forward): the time_conv's output t2 (2C,
   T, H, W) becomes 2T frames of C channels, frame 2t = channels [0, C) of
   frame t, frame 2t+1 = channels [C, 2C); a copy:
       out[c, 2t + hh] = inp[hh C + c, t]   (hh = 0, 1: the half) */
kernel void upsample_interleave(global float *out, global const float *inp, int C, int T, int H, int W) {
    // out (C, 2T, H, W), inp (2C, T, H, W)
    size_t HW = (size_t)H * W, gid = get_global_id(0);
    if (gid >= (size_t)C * 2 * T * HW) return;
    size_t p = gid % HW;
    int j = gid / HW % (2 * T), c = gid / (HW * 2 * T), t = j / 2, hh = j % 2;
    out[gid] = inp[(((size_t)hh * C + c) * T + t) * HW + p];
}

/* ========================================================================== */
/* 3. loss (SPEC 4)                                                           */
/* ========================================================================== */

/* rec = sum |xhat - x| (then sum_nested over scratch); dxhat = coef * sign(xhat - x), or NULL */
kernel void rec_loss(global float *dxhat, global const float *xhat, global const float *x, int C, int T, int H,
                     int W, float coef, global float *scratch) {
    // dxhat (C, T, H, W) or NULL, xhat, x (C, T, H, W), scratch (C, T, H, W): the terms |xhat - x|
    size_t j = get_global_id(0);
    if (j >= (size_t)C * T * H * W) return;
    float d = xhat[j] - x[j];
    scratch[j] = fabs(d);
    if (dxhat) dxhat[j] = d > 0 ? coef : d < 0 ? -coef : 0; /* |.|'(0) = 0, as PyTorch */
}

/* mu = h[0:n], logvar = clamp(h[n:2n], -30, 20), z = mu + exp(logvar/2) * eps;
   scratch = 0.5 * (mu^2 + exp(logvar) - 1 - logvar), summed by sum_nested after */
kernel void latent_forward(global float *logvar, global float *zs, global const float *h, global const float *eps,
                           int C, int T, int H, int W, global float *scratch) {
    // logvar, zs, eps, scratch (C, T, H, W) = n values; h (2C, T, H, W): mu, then the raw logvar
    size_t n = (size_t)C * T * H * W, j = get_global_id(0);
    if (j >= n) return;
    global const float *mu = h, *raw = h + n;
    float lv = raw[j] < -30 ? -30 : raw[j] > 20 ? 20 : raw[j];
    if (raw[j] != raw[j]) lv = raw[j]; /* NaN stays NaN */
    logvar[j] = lv;
    zs[j] = mu[j] + ivae_expf(0.5f * lv) * eps[j];
    scratch[j] = 0.5f * (mu[j] * mu[j] + ivae_expf(lv) - 1 - lv);
}

/* dmu = dz + ckl * mu,  dlv = dz * eps * exp(lv/2) / 2 + ckl * (exp(lv) - 1) / 2,
   passed where -30 <= raw <= 20 */
kernel void latent_backward(global float *dh, global const float *dz, global const float *logvar,
                            global const float *h, global const float *eps, ulong n, float ckl) {
    // dh (2n) written, dz (n), logvar (n) saved by the forward pass, h (2n), eps (n)
    size_t j = get_global_id(0);
    if (j >= n) return;
    global const float *mu = h, *raw = h + n;
    float lv = logvar[j];
    dh[j] = dz[j] + ckl * mu[j];
    float dlv = dz[j] * eps[j] * 0.5f * ivae_expf(0.5f * lv) + ckl * 0.5f * (ivae_expf(lv) - 1);
    dh[n + j] = (raw[j] >= -30 && raw[j] <= 20) ? dlv : 0;
}

/* Outlier penalty (SPEC 4) on z (C, T, H, W), ivae_opl_forward_backward in
   five kernels, with N = T*H*W and HW = H*W. Where the C code reuses one
   frame's scratch, the kernels keep every frame's statistics (the frames run
   in parallel) in the buffer stats, laid out by frame; the host reads oplt
   and adds the frames in double, as the C code does (total += oplt[t];
   return total / T):
     m (T, C)  S (T)  dist (T, HW)  nact (T)  oplt (T)  G (T, C)
   Each kernel takes stats first: the first four write it, the last reads it
   (as saved-for-backward, after the gradient dz it adds to). */
#define OPL_M(s, C, T, HW) (s)
#define OPL_S(s, C, T, HW) ((s) + (size_t)(T) * (C))
#define OPL_DIST(s, C, T, HW) ((s) + (size_t)(T) * (C) + (T))
#define OPL_NACT(s, C, T, HW) ((s) + (size_t)(T) * (C) + (T) + (size_t)(T) * (HW))
#define OPL_OPLT(s, C, T, HW) ((s) + (size_t)(T) * (C) + 2 * (T) + (size_t)(T) * (HW))
#define OPL_G(s, C, T, HW) ((s) + (size_t)(T) * (C) + 3 * (T) + (size_t)(T) * (HW))

/* m and S, per frame t:
       var_sum = 0; for c { m[c] = sum_rows(z[c,t]) / HW; var_sum += sum_rows((z - m)(z - m)) / HW; }
       S = sqrt(var_sum) */
kernel void opl_forward_backward_stats(global float *stats, global const float *z, int C, int T, int H, int W) {
    int HW = H * W;
    size_t N = (size_t)T * HW, t = get_global_id(0);
    if (t >= (size_t)T) return;
    global const float *zt = z + t * HW; /* channel c at zt[c*N + p] */
    global float *m = OPL_M(stats, C, T, HW) + t * C;
    float var_sum = 0;
    for (int c = 0; c < C; c++) {
        global const float *zc = zt + c * N;
        m[c] = sum_rows(zc, HW, W) / (float)HW;
        float total = 0;
        for (int r0 = 0; r0 < HW; r0 += W) {
            float acc = 0;
            for (int p = r0; p < r0 + W; p++) acc += (zc[p] - m[c]) * (zc[p] - m[c]);
            total += acc;
        }
        var_sum += total / (float)HW; /* sd[c]^2 */
    }
    OPL_S(stats, C, T, HW)[t] = sqrt(var_sum);
}

/* dist, per position (t, p): dist = sqrt(sum_c (z - m)(z - m)) */
kernel void opl_forward_backward_dist(global float *stats, global const float *z, int C, int T, int H, int W) {
    int HW = H * W;
    size_t N = (size_t)T * HW, gid = get_global_id(0);
    if (gid >= N) return;
    int t = gid / HW, p = gid % HW;
    global const float *m = OPL_M(stats, C, T, HW) + (size_t)t * C;
    float ss = 0;
    for (int c = 0; c < C; c++) {
        float zv = z[c * N + (size_t)t * HW + p];
        ss += (zv - m[c]) * (zv - m[c]);
    }
    OPL_DIST(stats, C, T, HW)[gid] = sqrt(ss);
}

/* nact and oplt, per frame t: hinge = max(dist - 3 S, 0), n_act = how many are > 0,
   oplt = sum_rows(hinge) / HW */
kernel void opl_forward_backward_hinge(global float *stats, int C, int T, int H, int W) {
    int HW = H * W;
    size_t t = get_global_id(0);
    if (t >= (size_t)T) return;
    global const float *dist = OPL_DIST(stats, C, T, HW) + t * HW;
    float S = OPL_S(stats, C, T, HW)[t];
    int n_act = 0;
    float total = 0;
    for (int r0 = 0; r0 < HW; r0 += W) {
        float acc = 0;
        for (int p = r0; p < r0 + W; p++) {
            float e = dist[p] - 3 * S;
            acc += e > 0 ? e : 0;
            n_act += e > 0;
        }
        total += acc;
    }
    OPL_NACT(stats, C, T, HW)[t] = (float)n_act; /* exact: n_act <= HW < 2^24 */
    OPL_OPLT(stats, C, T, HW)[t] = total / (float)HW;
}

/* G, per (t, c): G_c = sum_rows_p( d_p > 3S ? (z[c,p] - m[c]) / d_p : 0 ) */
kernel void opl_forward_backward_g(global float *stats, global const float *z, int C, int T, int H, int W) {
    int HW = H * W;
    size_t N = (size_t)T * HW, gid = get_global_id(0);
    if (gid >= (size_t)T * C) return;
    int t = gid / C, c = gid % C;
    global const float *zc = z + c * N + (size_t)t * HW, *dist = OPL_DIST(stats, C, T, HW) + (size_t)t * HW;
    float S = OPL_S(stats, C, T, HW)[t], m = OPL_M(stats, C, T, HW)[gid];
    float total = 0;
    for (int r0 = 0; r0 < HW; r0 += W) {
        float acc = 0;
        for (int p = r0; p < r0 + W; p++) acc += dist[p] - 3 * S > 0 ? (zc[p] - m) / dist[p] : 0;
        total += acc;
    }
    OPL_G(stats, C, T, HW)[gid] = total;
}

/* dz[c,t,p] += k * v,  k = coef / T / HW, u = z - m,
   v = (d_p > 3S ? u / d_p : 0) - G_c / HW  - (S > 0 ? 3 n_act u / (HW S) : 0) */
kernel void opl_forward_backward_dz(global float *dz, global const float *stats, global const float *z, int C, int T,
                                    int H, int W, float coef) {
    int HW = H * W;
    size_t N = (size_t)T * HW, gid = get_global_id(0);
    if (gid >= (size_t)C * N) return;
    int c = gid / N, t = gid % N / HW, p = gid % HW;
    float m = OPL_M(stats, C, T, HW)[(size_t)t * C + c], S = OPL_S(stats, C, T, HW)[t];
    float dist = OPL_DIST(stats, C, T, HW)[(size_t)t * HW + p], n_act = OPL_NACT(stats, C, T, HW)[t];
    float g = OPL_G(stats, C, T, HW)[(size_t)t * C + c];
    float k = coef / (float)T / (float)HW;
    float u = z[gid] - m;
    float v = (dist - 3 * S > 0 ? u / dist : 0) - g / (float)HW;
    if (S > 0) v -= 3 * n_act * u / ((float)HW * S);
    dz[gid] += k * v;
}

/* ========================================================================== */
/* 4. the model (ivae.c sections 6, 8): what ivae_batch_grad, ivae_adamw_step */
/*    do between the layers                                                   */
/* ========================================================================== */

/* the residual sums of block_forward and block_backward:
       b->y[j] = sc[j] + b->y[j];   b->y[j] = x[j] + b->y[j];   dx[j] = dx[j] + dsc[j]
   (float addition is commutative, bit for bit, so one kernel serves all three) */
kernel void residual_add(global float *y, global const float *a, ulong n) {
    size_t j = get_global_id(0);
    if (j >= n) return;
    y[j] = a[j] + y[j];
}

/* ivae_batch_grad: x also enters the loss directly, dx[j] = dx[j] - dxhat[j] */
kernel void residual_sub(global float *y, global const float *a, ulong n) {
    size_t j = get_global_id(0);
    if (j >= n) return;
    y[j] = y[j] - a[j];
}

/* ivae_adamw_step on one tensor; c1, c2 are the bias corrections the host
   computed as the C code does, (real)(1 - pow(beta, step)) in double:
       mm = b1 mm + (1-b1) g;  vv = b2 vv + (1-b2) (g g);  mhat = mm / c1, vhat = vv / c2;
       w = w - lr (mhat / (sqrt(vhat) + eps) + wd w) */
kernel void adamw_step(global float *w, global const float *g, global float *mm, global float *vv, ulong n,
                       float lr, float beta1, float beta2, float eps, float wd, float c1, float c2) {
    size_t j = get_global_id(0);
    if (j >= n) return;
    mm[j] = beta1 * mm[j] + (1 - beta1) * g[j];
    vv[j] = beta2 * vv[j] + (1 - beta2) * (g[j] * g[j]);
    float mhat = mm[j] / c1, vhat = vv[j] / c2;
    w[j] = w[j] - lr * (mhat / (sqrt(vhat) + eps) + wd * w[j]);
}

/* flags[b] = 1 if v[b*block .. (b+1)*block) holds a NaN or an inf, else 0 (the
   finiteness check of ivae_batch_grad, without copying the gradients back) */
kernel void nonfinite_flags(global float *flags, global const float *v, ulong n, int block) {
    size_t b = get_global_id(0), j0 = b * block;
    if (j0 >= n) return;
    size_t j1 = j0 + block < n ? j0 + block : n;
    int bad = 0;
    for (size_t j = j0; j < j1; j++) bad |= isinf(v[j]) || isnan(v[j]);
    flags[b] = bad;
}

/* --- the trainer's measurements (train.c, ivae.h's units) ------------------
   unit_scale: x[k] *= f[u] over each unit u with f[u] != 1 (ivae_unit_scale),
   one work-item per element of a unit, range (longest unit) x (units).
   unit_sumsq and pixel_sumsq sum squares in double, as ivae_unit_sumsq and
   ivae_activation_stats do; a device without cl_khr_fp64 lacks them, and
   the host then downloads the floats and sums them itself (the same bits). */
kernel void unit_scale(global float *x, global const ulong *off, global const int *len, global const float *f,
                       int n) {
    int k = get_global_id(0), u = get_global_id(1);
    if (u >= n || k >= len[u] || f[u] == 1.0f) return;
    x[off[u] + k] *= f[u];
}

#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
/* out[u] = sum over unit u of (double)x[k] * x[k], k in order */
kernel void unit_sumsq(global double *out, global const float *x, global const ulong *off, global const int *len,
                       int n) {
    int u = get_global_id(0);
    if (u >= n) return;
    global const float *v = x + off[u];
    double s = 0;
    for (int k = 0; k < len[u]; k++) s += (double)v[k] * v[k];
    out[u] = s;
}

/* out[p] = sum over c of (double)y[c N + p]^2, c in order: a pixel's squared
   channel norm (ivae_activation_stats) */
kernel void pixel_sumsq(global double *out, global const float *y, int C, ulong N) {
    size_t p = get_global_id(0);
    if (p >= N) return;
    double s = 0;
    for (int c = 0; c < C; c++) s += (double)y[c * N + p] * y[c * N + p];
    out[p] = s;
}
#endif
