/*
 * layers.c: the layers of SPEC 2 and the loss terms of SPEC 4, each a
 * _forward/_backward pair written as SPEC's formula in plain loops. Every
 * model family (ivae.c) is built from these; conv_tuned.c is the fast
 * convolution, which gives the same bits as the naive one here.
 *
 * Plain C and float32 (real is double only in test/gradcheck.c), parallel
 * only through `#pragma omp` over output elements: no sum is ever split
 * between threads, so the bits never depend on the thread count.
 *
 * Summation order: the rule an optimized kernel must follow to give the
 * reference's bits (kernels.cl and SPEC 8 quote it):
 *  1. Every accumulator starts at +0 and adds its terms one at a time in the
 *     order below (never starting from the first term), so it is never -0.
 *  2. conv3d forward: the input channels in blocks of B = 8 (IVAE_CONV_CHAIN:
 *     0-7, 8-15, ...; the last block holds the rest); y = (sum over blocks b,
 *     in increasing b, of P_b) + bias, P_b = one fma chain P = fma(w, x, P)
 *     over the block's channels i in increasing i and, within each channel,
 *     its taps (a, c, d) in row-major order.
 *  3. input gradient: the output channels in blocks of B = 8 likewise;
 *     dx = sum over blocks b, in increasing b, of Q_b, Q_b = one fma chain
 *     over the block's channels o in increasing o and, within each channel,
 *     the outputs (t', h', w') that read the input, in increasing order.
 *  4. weight gradient: dW += sum over t' of (sum over h' of (fma chain over
 *     w' of x * dy)).
 *  5. bias gradients and loss sums: nested plain sums: each row of W
 *     straight through, rows summed per frame, frames per channel, channels
 *     in order (ivae_sum_nested); softmax and attention sums over tokens:
 *     rows straight through, then the row sums in order (ivae_sum_rows);
 *     sums over channels run straight.
 *  6. Zero terms: the reference visits every tap of the window, reading 0 in
 *     padding and, for strided input gradients, between outputs; by (1)
 *     adding a +-0 product never changes an accumulator, so with finite
 *     weights a kernel may skip those taps and keep the bits (the strict
 *     OpenCL strided input-gradient kernel does).
 * "fma" is a fused multiply-add, one rounding (C99 fmaf, OpenCL fma), exactly
 * specified by IEEE 754; the compiler's own contraction of a*b+c is off
 * (-ffp-contract=off), so every other a*b+c is two roundings everywhere.
 *
 * Contents: scratch and the two sum orders; 2.1 conv3d (naive, and the
 * dispatch to conv_tuned.c); 2.2 SMC; 2.3 SiLU; 2.4 PixelNorm; GroupNorm
 * (SPEC 9); 2.6 attention; 2.8 upsampling; SPEC 4 loss terms.
 */
#include "layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================== */
/* scratch and sums                                                           */
/* ========================================================================== */

static real *scr_buf[SCR_N];
static size_t scr_cap[SCR_N];

real *ivae_scratch(int slot, size_t n) {
    if (n > scr_cap[slot]) {
        free(scr_buf[slot]);
        scr_buf[slot] = xmalloc(n * sizeof(real));
        scr_cap[slot] = n;
    }
    return scr_buf[slot];
}

/* Sum of a (C, T, H, W) tensor in the nested order: each row of W straight
   through, rows summed per frame, frames per channel, channels in order. */
real ivae_sum_nested(const real *v, Shape s) {
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
real ivae_sum_rows(const real *v, int n, int W) {
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

/* pixel (t, h, w) of input channel i of a chunk that starts at clip frame
   s0: t < 0 reads the kt-1 frames before the chunk (prev, or zeros at the
   clip's start: the causal padding), and outside the frame is zero padding */
static real conv_input(const real *inp, const real *prev, int i, int t, int h, int w, int T, int H, int W, int kt) {
    if (h < 0 || h >= H || w < 0 || w >= W || t >= T) return 0;
    if (t >= 0) return inp[(((size_t)i * T + t) * H + h) * W + w];
    if (!prev) return 0;
    return prev[(((size_t)i * (kt - 1) + (kt - 1 + t)) * H + h) * W + w];
}

/* y[o,t',h',w'] = b[o] + sum_{i,a,c,d} W[o,i,a,c,d] * xpad[i, t'st+a, h'sh+c, w'sw+d]
   where xpad has kt-1 frames in front, kh/2 rows and kw/2 columns around */
int ivae_conv3d_forward_chunk_naive(real *out, const real *inp, const real *prev, int s0, const real *weight,
                                    const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                    int st, int sh, int sw) {
    return ivae_conv3d_forward_padded_naive(out, inp, prev, s0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh,
                                            sw, ivae_pad_same(kh, kw));
}

/* the same with pad.top rows above and pad.left columns left of the input
   (and pad.bottom, pad.right below and right of it) */
int ivae_conv3d_forward_padded_naive(real *out, const real *inp, const real *prev, int s0, const real *weight,
                                     const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                     int st, int sh, int sw, IvaePad pad) {
    // out (Cout, To, Ho, Wo): the output frames t' = first .. last of the clip
    int first = (s0 + st - 1) / st, last = (s0 + T - 1) / st, To = last - first + 1;
    int Ho = ivae_conv_out_padded(H, kh, sh, pad.top, pad.bottom), Wo = ivae_conv_out_padded(W, kw, sw, pad.left, pad.right);
    int K = kt * kh * kw;
    if (To <= 0) return 0;
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * To * Ho * Wo * Cin * K)
    for (int oj = 0; oj < Cout * To; oj++) {
        int o = oj / To, j = oj % To;
        int t0 = (first + j) * st - (kt - 1) - s0; /* the chunk frame of tap a = 0 */
        real *y = out + (size_t)oj * Ho * Wo;      // (Ho, Wo)
        for (int h = 0; h < Ho; h++)
            for (int w = 0; w < Wo; w++) {
                real acc = 0;
                for (int i0 = 0; i0 < Cin; i0 += IVAE_CONV_CHAIN) { /* a block of input channels: one chain */
                    real part = 0;
                    for (int i = i0; i < i0 + IVAE_CONV_CHAIN && i < Cin; i++) {
                        const real *wi = weight + ((size_t)o * Cin + i) * K; // (kt, kh, kw)
                        for (int a = 0; a < kt; a++)
                            for (int c = 0; c < kh; c++)
                                for (int d = 0; d < kw; d++) {
                                    real x = conv_input(inp, prev, i, t0 + a, h * sh + c - pad.top,
                                                        w * sw + d - pad.left, T, H, W, kt);
                                    part = FMA(wi[(a * kh + c) * kw + d], x, part);
                                }
                    }
                    acc += part;
                }
                y[h * Wo + w] = bias ? acc + bias[o] : acc;
            }
    }
    return To;
}

void ivae_conv3d_backward_naive(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                                const real *weight, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                int st, int sh, int sw) {
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw), K = kt * kh * kw;
    int ph = kh / 2, pw = kw / 2;

    // in the forward pass: y[o,t',h',w'] += W[o,i,a,c,d] * x[i, t'st+a-(kt-1), h'sh+c-ph, w'sw+d-pw]
    // so dx[i,t,h,w] = sum_o sum_{a,c,d} W[o,i,a,c,d] * dy[o, t', h', w'] over the outputs with
    //   t'st = t+(kt-1)-a, h'sh = h+ph-c, w'sw = w+pw-d; taps in decreasing (a, c, d) visit
    //   those outputs in increasing order (rule 3). A tap that meets no output reads 0 (rule 6).
    if (dinp) {
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cin * T * H * W * Cout * K)
        for (int it = 0; it < Cin * T; it++) {
            int i = it / T, t = it % T;
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    real acc = 0;
                    for (int o0 = 0; o0 < Cout; o0 += IVAE_CONV_CHAIN) { /* a block of output channels: one chain */
                        real part = 0;
                        for (int o = o0; o < o0 + IVAE_CONV_CHAIN && o < Cout; o++) {
                            const real *wo = weight + ((size_t)o * Cin + i) * K; // (kt, kh, kw)
                            for (int a = kt - 1; a >= 0; a--)
                                for (int c = kh - 1; c >= 0; c--)
                                    for (int d = kw - 1; d >= 0; d--) {
                                        int t1 = t + (kt - 1) - a, h1 = h + ph - c, w1 = w + pw - d; /* stride-1 grid */
                                        real g = 0;
                                        if (t1 % st == 0 && h1 >= 0 && h1 % sh == 0 && w1 >= 0 && w1 % sw == 0 &&
                                            t1 / st < To && h1 / sh < Ho && w1 / sw < Wo)
                                            g = dout[(((size_t)o * To + t1 / st) * Ho + h1 / sh) * Wo + w1 / sw];
                                        part = FMA(wo[(a * kh + c) * kw + d], g, part);
                                    }
                        }
                        acc += part;
                    }
                    dinp[(((size_t)i * T + t) * H + h) * W + w] = acc;
                }
        }
    }

    // dW[o,i,a,c,d] += sum_{t'} ( sum_{h'} ( fma chain over w' of xpad[i, t'st+a, h'sh+c, w'sw+d] * dy[o,t',h',w'] ) )
    if (dweight) {
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * Cin * K * T * H * W)
        for (int oi = 0; oi < Cout * Cin; oi++) {
            int o = oi / Cin, i = oi % Cin;
            const real *dy = dout + (size_t)o * To * Ho * Wo; // (To, Ho, Wo)
            for (int a = 0; a < kt; a++)
                for (int c = 0; c < kh; c++)
                    for (int d = 0; d < kw; d++) {
                        real clip = 0;
                        for (int t = 0; t < To; t++) {
                            real frame = 0;
                            for (int h = 0; h < Ho; h++) {
                                real row = 0;
                                for (int w = 0; w < Wo; w++) {
                                    real x = conv_input(inp, NULL, i, t * st + a - (kt - 1), h * sh + c - ph,
                                                        w * sw + d - pw, T, H, W, kt);
                                    row = FMA(x, dy[((size_t)t * Ho + h) * Wo + w], row);
                                }
                                frame += row;
                            }
                            clip += frame;
                        }
                        dweight[(size_t)oi * K + (a * kh + c) * kw + d] += clip;
                    }
        }
    }

    // y = ... + b[o], so db[o] += sum of dy over the whole output plane stack
    if (dbias) {
        Shape s = {1, To, Ho, Wo};
        for (int o = 0; o < Cout; o++) dbias[o] += ivae_sum_nested(dout + (size_t)o * To * Ho * Wo, s);
    }
}

/* Streaming: a causal conv run chunk by chunk needs the kt-1 frames before
   each chunk. The cache (C, keep, H, W) holds the last keep frames of the
   conv's input so far; this appends the chunk x (C, T, H, W). had = 0
   before the clip's first chunk (the cache then counts as zeros: the causal
   padding). */
void ivae_cache_push(real *cache, int keep, int had, const real *x, int C, int T, int H, int W) {
    size_t fr = (size_t)H * W;
    for (int c = 0; c < C; c++)
        for (int j = 0; j < keep; j++) { /* ascending j: reads q > j, not yet overwritten */
            int q = T + j;               /* index in [cache (keep frames) | x] */
            real *dst = cache + ((size_t)c * keep + j) * fr;
            if (q >= keep) memcpy(dst, x + ((size_t)c * T + q - keep) * fr, fr * sizeof(real));
            else if (had) memmove(dst, cache + ((size_t)c * keep + q) * fr, fr * sizeof(real));
            else memset(dst, 0, fr * sizeof(real));
        }
}

/* naive or tuned: IVAE_NAIVE=1 in the environment, or ivae_set_naive() */
static int g_naive = -1;

void ivae_set_naive(int on) { g_naive = on != 0; }

int ivae_naive(void) {
    if (g_naive < 0) {
        const char *e = getenv("IVAE_NAIVE");
        g_naive = e && strcmp(e, "1") == 0;
    }
    return g_naive;
}

void ivae_conv3d_forward(real *out, const real *inp, const real *weight, const real *bias, int Cin, int T, int H,
                         int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw) {
    ivae_conv3d_forward_chunk(out, inp, NULL, 0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
}

int ivae_conv3d_forward_chunk(real *out, const real *inp, const real *prev, int s0, const real *weight,
                              const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                              int sh, int sw) {
    if (ivae_naive())
        return ivae_conv3d_forward_chunk_naive(out, inp, prev, s0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st,
                                               sh, sw);
    return ivae_conv3d_forward_chunk_tuned(out, inp, prev, s0, NULL, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st,
                                           sh, sw);
}

int ivae_conv3d_forward_padded(real *out, const real *inp, const real *prev, int s0, const real *weight,
                               const real *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                               int sh, int sw, IvaePad pad) {
    if (ivae_naive())
        return ivae_conv3d_forward_padded_naive(out, inp, prev, s0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st,
                                                sh, sw, pad);
    return ivae_conv3d_forward_padded_tuned(out, inp, prev, s0, NULL, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st,
                                            sh, sw, pad);
}

void ivae_conv3d_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *inp,
                          const real *weight, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                          int sh, int sw) {
    if (ivae_naive())
        ivae_conv3d_backward_naive(dinp, dweight, dbias, dout, inp, weight, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw);
    else
        ivae_conv3d_backward_tuned(dinp, dweight, dbias, dout, inp, NULL, weight, Cin, T, H, W, Cout, kt, kh, kw, st,
                                   sh, sw);
}

/* --- 2.2 SMC: the reparameterised weight ---------------------------------- */

/* What[o,i,k] = g * s[i]*W[o,i,k] / n[o],  n[o] = sqrt( sum_{i,k} (s[i]*W[o,i,k])^2 + 1e-8 ) */
void ivae_smc_weight_forward(real *what, real *norm, const real *weight, const real *scale,
                        const real *gain, int Cout, int Cin, int K) {
    // what (Cout, Cin, K), norm (Cout), weight (Cout, Cin, K), scale (Cin), gain (1)
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * Cin * K)
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
    real *dot = ivae_scratch(SCR_SMALL, Cout);
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * Cin * K)
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
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * Cin * K)
    for (int o = 0; o < Cout; o++)
        for (int i = 0; i < Cin; i++)
            for (int k = 0; k < K; k++) dweight[((size_t)o * Cin + i) * K + k] += scale[i] * SMC_DU(o, i, k);
#pragma omp parallel for schedule(static) IVAE_PAR((double)Cout * Cin * K)
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
#pragma omp parallel for schedule(static) IVAE_PAR(16.0 * n)
    for (size_t j = 0; j < n; j++) out[j] = inp[j] / (1 + EXP(-inp[j]));
}

void ivae_silu_backward(real *dinp, const real *dout, const real *inp, size_t n) {
    // in the forward pass: y = x * sig(x), so dy/dx = sig * (1 + x * (1 - sig))
#pragma omp parallel for schedule(static) IVAE_PAR(16.0 * n)
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
#pragma omp parallel for schedule(static) IVAE_PAR((double)N * C)
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
#pragma omp parallel for schedule(static) IVAE_PAR((double)N * C)
    for (size_t p = 0; p < N; p++) {
        real dot = 0;
        for (int c = 0; c < C; c++) dot += dout[c * N + p] * inp[c * N + p];
        real n = norm[p];
        for (int c = 0; c < C; c++)
            dinp[c * N + p] = (dout[c * N + p] - inp[c * N + p] * dot / ((real)C * n * n)) / n;
    }
}

/* --- GroupNorm (SPEC 9: the variant blocks of the lessons) ---------------

   G groups of C/G consecutive channels; statistics per frame t, over the
   group's channels and the frame's H*W positions (n = (C/G) H W values), so
   the layer stays causal and streams frame by frame:
     mean = S / n,  var = V / n (population),  sd = sqrt(var + 1e-6)
     y[c,t,h,w] = (x - mean) / sd * weight[c] + bias[c]
   S and V (V sums (x - mean)^2) follow rule 5: each row of W straight
   through, the rows of a channel's frame summed, the group's channels in
   increasing order (gn_group_sum). */

/* sum over the group's channels c0..c0+Cg-1 at frame t of f(v[c,t,h,w]),
   f = v (sq = 0) or (v - m)^2 (sq = 1), in rule 5's order */
static real gn_group_sum(const real *v, int c0, int Cg, int t, int T, int HW, int W, int sq, real m) {
    real total = 0;
    for (int c = c0; c < c0 + Cg; c++) {
        const real *fr = v + ((size_t)c * T + t) * HW;
        real ch = 0;
        for (int r0 = 0; r0 < HW; r0 += W) {
            real acc = 0;
            if (sq)
                for (int j = r0; j < r0 + W; j++) acc += (fr[j] - m) * (fr[j] - m);
            else
                for (int j = r0; j < r0 + W; j++) acc += fr[j];
            ch += acc;
        }
        total += ch;
    }
    return total;
}

void ivae_groupnorm_forward(real *out, real *stats, const real *inp, const real *weight, const real *bias, int C,
                            int T, int H, int W, int G) {
    // out, inp (C, T, H, W); stats (2, G, T): mean, then sd; weight, bias (C)
    int Cg = C / G, HW = H * W;
    real n = (real)Cg * HW;
    real *mean = stats, *sd = stats + (size_t)G * T;
#pragma omp parallel for schedule(static) IVAE_PAR((double)C * T * H * W)
    for (int gt = 0; gt < G * T; gt++) {
        int g = gt / T, t = gt % T;
        real m = gn_group_sum(inp, g * Cg, Cg, t, T, HW, W, 0, 0) / n;
        real v = gn_group_sum(inp, g * Cg, Cg, t, T, HW, W, 1, m) / n;
        real d = SQRT(v + (real)1e-6);
        mean[gt] = m, sd[gt] = d;
        for (int c = g * Cg; c < (g + 1) * Cg; c++) {
            const real *x = inp + ((size_t)c * T + t) * HW;
            real *y = out + ((size_t)c * T + t) * HW;
            for (int j = 0; j < HW; j++) y[j] = (x[j] - m) / d * weight[c] + bias[c];
        }
    }
}

void ivae_groupnorm_backward(real *dinp, real *dweight, real *dbias, const real *dout, const real *stats,
                             const real *inp, const real *weight, int C, int T, int H, int W, int G) {
    // in the forward pass: xh = (x - mean) / sd, y = xh * weight[c] + bias[c]; with
    // g = dy * weight[c] and the group-frame sums A = sum g, B = sum g * xh (rule 5's order):
    //   dx = (g - A / n - xh * (B / n)) / sd
    //   dweight[c] += sum over (t, h, w) of dy * xh,  dbias[c] += sum of dy (nested: rows, frames)
    int Cg = C / G, HW = H * W;
    real n = (real)Cg * HW;
    const real *mean = stats, *sd = stats + (size_t)G * T;
    if (dinp) {
#pragma omp parallel for schedule(static) IVAE_PAR((double)C * T * H * W)
        for (int gt = 0; gt < G * T; gt++) {
            int g = gt / T, t = gt % T;
            real m = mean[gt], d = sd[gt], A = 0, B = 0;
            for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                const real *x = inp + ((size_t)c * T + t) * HW, *dy = dout + ((size_t)c * T + t) * HW;
                real ca = 0, cb = 0;
                for (int r0 = 0; r0 < HW; r0 += W) {
                    real ra = 0, rb = 0;
                    for (int j = r0; j < r0 + W; j++) {
                        real gj = dy[j] * weight[c];
                        ra += gj;
                        rb += gj * ((x[j] - m) / d);
                    }
                    ca += ra, cb += rb;
                }
                A += ca, B += cb;
            }
            real an = A / n, bn = B / n;
            for (int c = g * Cg; c < (g + 1) * Cg; c++) {
                const real *x = inp + ((size_t)c * T + t) * HW, *dy = dout + ((size_t)c * T + t) * HW;
                real *dx = dinp + ((size_t)c * T + t) * HW;
                for (int j = 0; j < HW; j++) dx[j] = (dy[j] * weight[c] - an - (x[j] - m) / d * bn) / d;
            }
        }
    }
    if (dweight || dbias) {
#pragma omp parallel for schedule(static) IVAE_PAR((double)C * T * H * W)
        for (int c = 0; c < C; c++) {
            int g = c / Cg;
            real cw = 0, cb = 0;
            for (int t = 0; t < T; t++) {
                real m = mean[g * T + t], d = sd[g * T + t], fw = 0, fb = 0;
                const real *x = inp + ((size_t)c * T + t) * HW, *dy = dout + ((size_t)c * T + t) * HW;
                for (int r0 = 0; r0 < HW; r0 += W) {
                    real rw = 0, rb = 0;
                    for (int j = r0; j < r0 + W; j++) {
                        rw += dy[j] * ((x[j] - m) / d);
                        rb += dy[j];
                    }
                    fw += rw, fb += rb;
                }
                cw += fw, cb += fb;
            }
            if (dweight) dweight[c] += cw;
            if (dbias) dbias[c] += cb;
        }
    }
}

/* --- RMS norm (SPEC 7, Wan 2.1's RMS_norm) ------------------------------- */

/* y[c,p] = x[c,p] / max(n[p], 1e-12) * sqrt(C) * gamma[c],  n[p] = sqrt( sum_c x[c,p]^2 ) */
void ivae_rmsnorm_forward(real *out, const real *inp, const real *gamma, int C, size_t N) {
    // out, inp (C, N); gamma (C)
    real root_c = SQRT((real)C);
    /* positions in blocks of PB, the channels swept over each block in order:
       each position's sum still adds its channels one by one in increasing c */
    enum { PB = 512 };
    size_t nb = (N + PB - 1) / PB;
#pragma omp parallel for schedule(static) IVAE_PAR((double)N * C)
    for (size_t blk = 0; blk < nb; blk++) {
        size_t p0 = blk * PB, np = N - p0 < PB ? N - p0 : PB;
        real n[PB];
        for (size_t j = 0; j < np; j++) n[j] = 0;
        for (int c = 0; c < C; c++) {
            const real *x = inp + (size_t)c * N + p0;
#pragma omp simd
            for (size_t j = 0; j < np; j++) n[j] += x[j] * x[j];
        }
        for (size_t j = 0; j < np; j++) {
            n[j] = SQRT(n[j]);
            if (!(n[j] >= (real)1e-12)) n[j] = n[j] != n[j] ? n[j] : (real)1e-12; /* F.normalize's floor; NaN stays NaN */
        }
        for (int c = 0; c < C; c++) {
            const real *x = inp + (size_t)c * N + p0;
            real *y = out + (size_t)c * N + p0;
#pragma omp simd
            for (size_t j = 0; j < np; j++) y[j] = x[j] / n[j] * root_c * gamma[c];
        }
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
int ivae_attention_row_len(int mode, int T, int HW) { return mode == IVAE_ATTN_CAUSAL ? T * HW : HW; }

/* o_p = sum_r softmax_r(q_p . k_r / sqrt(C)) v_r over the allowed r */
void ivae_attention_forward(real *out, real *att, const real *qkv, int C, int T, int H, int W, int mode) {
    // out (C, N), att (N, L) probabilities, qkv (3C, N): q rows 0..C-1, k C..2C-1, v 2C..3C-1
    int HW = H * W, N = T * HW, L = ivae_attention_row_len(mode, T, HW);
    const real *q = qkv, *k = qkv + (size_t)C * N, *v = qkv + (size_t)2 * C * N;
    real scale = 1 / SQRT((real)C);
    real *tmps = ivae_scratch(SCR_THREAD, (size_t)L * max_threads());
#pragma omp parallel IVAE_PAR(2.0 * N * L * C)
    {
        real *tmp = THREAD_SCRATCH(tmps, L);
#pragma omp for schedule(static)
        for (int p = 0; p < N; p++) {
            int r0, r1;
            attn_span(mode, p, HW, &r0, &r1);
            real *a = att + (size_t)p * L;
            real mx = -INFINITY;
            /* dot_r = sum over c, in increasing c, of q[c,p] k[c,r]: one
               accumulator per key r, the keys side by side (contiguous) */
            for (int r = r0; r < r1; r++) a[r - r0] = 0;
            for (int c = 0; c < C; c++) {
                real qc = q[(size_t)c * N + p];
                const real *kc = k + (size_t)c * N;
#pragma omp simd
                for (int r = r0; r < r1; r++) a[r - r0] += qc * kc[r];
            }
            for (int r = r0; r < r1; r++) {
                a[r - r0] = a[r - r0] * scale;
                if (a[r - r0] > mx) mx = a[r - r0];
            }
            for (int r = r0; r < r1; r++) a[r - r0] = EXP(a[r - r0] - mx);
            real sum = ivae_sum_rows(a, r1 - r0, W);
            for (int r = r0; r < r1; r++) a[r - r0] = a[r - r0] / sum;
            for (int c = 0; c < C; c++) {
                for (int r = r0; r < r1; r++) tmp[r - r0] = a[r - r0] * v[(size_t)c * N + r];
                out[(size_t)c * N + p] = ivae_sum_rows(tmp, r1 - r0, W);
            }
        }
    }
}

void ivae_attention_backward(real *dqkv, const real *dout, const real *att, const real *qkv, int C,
                        int T, int H, int W, int mode) {
    // in the forward pass: s_pr = q_p.k_r * scale, a = softmax_r(s), o_p = sum_r a_pr v_r, so
    //   dv_r = sum_p a_pr do_p,  da_pr = do_p . v_r,  ds_pr = a_pr (da_pr - sum_r' a_pr' da_pr'),
    //   dq_p = scale * sum_r ds_pr k_r,  dk_r = scale * sum_p ds_pr q_p
    int HW = H * W, N = T * HW, L = ivae_attention_row_len(mode, T, HW);
    const real *q = qkv, *k = qkv + (size_t)C * N, *v = qkv + (size_t)2 * C * N;
    real *dq = dqkv, *dk = dqkv + (size_t)C * N, *dv = dqkv + (size_t)2 * C * N;
    real scale = 1 / SQRT((real)C);
    real *ds = ivae_scratch(SCR_ATT, (size_t)N * L), *tmps = ivae_scratch(SCR_THREAD, (size_t)N * max_threads());
#pragma omp parallel IVAE_PAR(4.0 * N * L * C)
    {
        real *tmp = THREAD_SCRATCH(tmps, N);
        /* ds, and dq, one token p per iteration */
#pragma omp for schedule(static)
        for (int p = 0; p < N; p++) {
            int r0, r1;
            attn_span(mode, p, HW, &r0, &r1);
            const real *a = att + (size_t)p * L;
            real *dsp = ds + (size_t)p * L;
            /* da_r = sum over c, in increasing c, of do[c,p] v[c,r] (one accumulator per r) */
            for (int r = r0; r < r1; r++) dsp[r - r0] = 0;
            for (int c = 0; c < C; c++) {
                real dc = dout[(size_t)c * N + p];
                const real *vc = v + (size_t)c * N;
#pragma omp simd
                for (int r = r0; r < r1; r++) dsp[r - r0] += dc * vc[r];
            }
            for (int r = r0; r < r1; r++) tmp[r - r0] = a[r - r0] * dsp[r - r0]; /* dsp holds da for now */
            real adot = ivae_sum_rows(tmp, r1 - r0, W);
            for (int r = r0; r < r1; r++) dsp[r - r0] = a[r - r0] * (dsp[r - r0] - adot);
            for (int c = 0; c < C; c++) {
                for (int r = r0; r < r1; r++) tmp[r - r0] = dsp[r - r0] * k[(size_t)c * N + r];
                dq[(size_t)c * N + p] = ivae_sum_rows(tmp, r1 - r0, W) * scale;
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
                dk[(size_t)c * N + r] = ivae_sum_rows(tmp, p1 - p0, W) * scale;
                for (int p = p0; p < p1; p++) {
                    int q0, q1;
                    attn_span(mode, p, HW, &q0, &q1);
                    tmp[p - p0] = att[(size_t)p * L + r - q0] * dout[(size_t)c * N + p];
                }
                dv[(size_t)c * N + r] = ivae_sum_rows(tmp, p1 - p0, W);
            }
        }
    }
}

/* --- 2.8 nearest-neighbour upsampling ------------------------------------- */

/* output frame j comes from input frame (j+1)/2 when temporal (T -> 2T-1:
   repeat each frame, drop the first), from frame j otherwise. A chunk that
   does not start the clip (first = 0) keeps both copies: T -> 2T, j from j/2. */
static int up_src_frame(int j, int temporal, int first) { return temporal ? (first ? (j + 1) / 2 : j / 2) : j; }
int ivae_upsample_frames(int T, int temporal, int first) { return temporal ? (first ? 2 * T - 1 : 2 * T) : T; }

void ivae_upsample_forward(real *out, const real *inp, int C, int T, int H, int W, int temporal) {
    ivae_upsample_chunk(out, inp, C, T, H, W, temporal, 1);
}

void ivae_upsample_chunk(real *out, const real *inp, int C, int T, int H, int W, int temporal, int first) {
    // out (C, To, 2H, 2W), inp (C, T, H, W)
    int To = ivae_upsample_frames(T, temporal, first), Ho = 2 * H, Wo = 2 * W;
#pragma omp parallel for schedule(static) IVAE_PAR((double)C * To * Ho * Wo)
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
#pragma omp parallel for schedule(static) IVAE_PAR((double)C * To * Ho * Wo)
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
                    real s = 0; /* rule 1: from +0 */
                    s += b[0];
                    s += b[1];
                    s += b[Wo];
                    s += b[Wo + 1];
                    dx[h * W + w] += s;
                }
        }
    }
}

/* ========================================================================== */
/* SPEC 4: the loss terms of one sample                                       */
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
    return ivae_sum_nested(scratch, s);
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
    return ivae_sum_nested(scratch, zsh);
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
            m[c] = ivae_sum_rows(zt + c * N, HW, s.W) / (real)HW;
            for (int p = 0; p < HW; p++) dist[p] = (zt[c * N + p] - m[c]) * (zt[c * N + p] - m[c]);
            var_sum += ivae_sum_rows(dist, HW, s.W) / (real)HW; /* sd[c]^2 */
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
        total += ivae_sum_rows(hinge, HW, s.W) / (real)HW;
        if (coef == 0 || !dz) continue;
        // with a_p = [d_p > 3S] and u = z - m:
        //   d opl_t / dz[c,j] = (1/HW) ( a_j u[c,j] / d_j - G_c / HW - 3 n_act u[c,j] / (HW S) ),
        //   G_c = sum_p a_p u[c,p] / d_p   (the mean m couples every position of the frame)
        for (int c = 0; c < C; c++) {
            for (int p = 0; p < HW; p++)
                hinge[p] = dist[p] - 3 * S > 0 ? (zt[c * N + p] - m[c]) / dist[p] : 0;
            g[c] = ivae_sum_rows(hinge, HW, s.W);
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

