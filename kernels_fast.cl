/*
 * kernels_fast.cl: the fast kernels (--cl-mode fast), within SPEC 8's
 * tolerances of the C reference, not bit for bit.
 *
 * The host builds this file in one program with kernels.cl, after it, with
 * the same flags (no fast-math, no mad; fma() is written out where it is
 * wanted), so it uses kernels.cl's helpers: conv_out_t, conv_out_s,
 * attn_span, attn_row_len and ivae_expf. Arguments come in kernels.cl's
 * order (outputs first, then inputs, weights, sizes); the host wrappers
 * (ivae_cl_*_fast) take the strict wrappers' arguments, and kernels.cl's
 * name map says which C function each kernel stands for.
 *
 * The convolutions and attention run as tiled matrix products in local
 * memory, the classic GPU form: a work-group of FG x FG work-items computes
 * an FT x FT tile of C = A B. Step by step along the reduction, the group
 * copies an FT x FK slice of A and an FK x FT slice of B into local memory,
 * waits, and each work-item multiplies them into its FR x FR = 4 x 4
 * outputs, a float4 of neighbouring columns per row (vector fma: one
 * instruction for four outputs on a CPU, and 128-bit local loads on a GPU).
 * The convolutions never build an im2col matrix: the loaders gather each
 * element of the implicit one from the input as they copy it ("implicit
 * GEMM"):
 *
 *   forward   Y (Cout, P)  = Wt (Cout, Cin K) x col(x) (Cin K, P)       + bias
 *   dinput    dX (Cin, N)  = Wt' (Cin, Cout K) x gather(dy) (Cout K, N)   any stride
 *   dweight   dW (Cout, Cin K) += dY (Cout, P) x col(x)^T (P, Cin K)      split over P
 *
 * with P = To Ho Wo output positions, N = T H W input positions, K = kt kh kw
 * taps. The weight gradient's reduction (over P, tens of thousands of
 * positions) is split into chunks that run in parallel; each chunk writes its
 * partial sums and conv3d_backward_dweight_reduce adds them in chunk order.
 *
 * Summation orders here are not the C code's (that is what fast means), but
 * every one is fixed, so a fast run is deterministic too.
 */
#define FG 16              /* the work-group is FG x FG work-items (ivae_cl.h: IVAE_CL_FAST_GROUP) */
#define FR 4               /* each work-item computes FR x FR outputs (a float4 per row) */
#define FT (FG * FR)       /* rows and columns of a work-group's tile of C: 64 */
#define FK 16              /* reduction depth of one step */
#define FL (FT + 4)        /* row length of the local tiles: float4-aligned, +4 against bank conflicts */
#define FA (FG * FG / FK)  /* rows of a tile one k-major load pass covers (16) */
#define FB (FG * FG / FT)  /* rows of a tile one n-major load pass covers (4) */

/* ========================================================================== */
/* the tile product, in pieces every tiled kernel shares                      */
/* ========================================================================== */
/*
 * A tiled kernel's loop, for reduction steps k0 = 0, FK, 2 FK, ...:
 *     load_a(...);  (its own loads of B)  tile_multiply(...);
 * then tile_store(...). Loading a tile, the two ways. k-major: a work-item
 * keeps its reduction index kk = lid % FK and copies rows lid / FK + FA q
 * (q < FR); right for a matrix whose consecutive k are consecutive in memory
 * (weights, dy rows). n-major: it keeps its column nn = lid % FT and copies
 * reduction rows lid / FT + FB q; right when consecutive columns are
 * consecutive in memory (input positions). Either way the tile is stored as
 * tile[kk][column].
 */

/* A, k-major: the work-item's reduction index kk = lid % FK of this step,
   rows m = m0 + lid / FK + FA q:  As[kk][m - m0] = col[m rs], 0 past M or
   where the step's k is past the reduction (kok = 0) */
static inline void load_a(local float *As, global const float *col, size_t rs, int M, int kok, int m0, int lid) {
    for (int q = 0; q < FR; q++) {
        int kk = lid % FK, mm = lid / FK + FA * q, m = m0 + mm;
        As[kk * FL + mm] = m < M && kok ? col[(size_t)m * rs] : 0.0f;
    }
}

/* waits for the step's tiles, multiplies them into the work-item's rows
   ly FR + r and columns lx FR .. lx FR + 3 (one float4; fma on vectors is
   elementwise), and waits until every work-item is done with them:
       acc[r] += sum_kk As[kk][ly FR + r] * Bs[kk][lx FR ..] */
static inline void tile_multiply(local const float *As, local const float *Bs, float4 acc[FR], int lx, int ly) {
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int kk = 0; kk < FK; kk++) {
        float4 a = vload4(0, As + kk * FL + ly * FR), b = vload4(0, Bs + kk * FL + lx * FR);
        acc[0] = fma((float4)(a.s0), b, acc[0]);
        acc[1] = fma((float4)(a.s1), b, acc[1]);
        acc[2] = fma((float4)(a.s2), b, acc[2]);
        acc[3] = fma((float4)(a.s3), b, acc[3]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* the work-item's FR x FR outputs: C[m rs + n cs] = acc (+ bias[m] if bias),
   for m < M, n < N */
static inline void tile_store(global float *C, size_t rs, size_t cs, int M, int N, const float4 acc[FR],
                              global const float *bias, int m0, int n0, int lx, int ly) {
    float res[FR][FR];
    for (int r = 0; r < FR; r++) vstore4(acc[r], 0, res[r]);
    for (int r = 0; r < FR; r++)
        for (int c = 0; c < FR; c++) {
            int m = m0 + ly * FR + r, n = n0 + lx * FR + c;
            if (m < M && n < N) C[(size_t)m * rs + (size_t)n * cs] = bias ? res[r][c] + bias[m] : res[r][c];
        }
}

/* The reduction index k = j K + tap (a channel, a kernel tap) of a load,
   carried from one step to the next (k += FK) without a division */
static inline void next_k(int *j, int *tap, int K) {
    *tap += FK;
    while (*tap >= K) *tap -= K, (*j)++;
}

/* tap -> (a, c, d) for a kt x kh x kw kernel in row-major order (3x3: constant divisors) */
static inline void tap_split(int tap, int kh, int kw, int *a, int *c, int *d) {
    if (kh == 3 && kw == 3) {
        *a = tap / 9, *c = tap / 3 % 3, *d = tap % 3;
    } else {
        *a = tap / (kh * kw), *c = tap / kw % kh, *d = tap % kw;
    }
}

/* ========================================================================== */
/* the convolutions                                                           */
/* ========================================================================== */

/* B(k, n) of the two conv products, k = (channel j, tap (a, c, d)), for the
   column n whose tap origin is (b0, b1, b2):
     forward (dinp = 0):  x[j, b0 + a, b1 + c, b2 + d], 0 in the padding; a frame
                          before the chunk (b0 + a < 0) from prev (Cin, kt-1, H, W),
                          the frames before it when streaming, or 0 if prev is NULL;
     dinput (dinp = 1):   dy[j, t', h', w'] with (t' st, h' sh, w' sw) = (b0 - a, b1 - c, b2 - d),
                          0 where no output is (between outputs, past the ends) */
static inline float conv_b(int dinp, global const float *src, global const float *prev, int j, int a, int c, int d,
                           int b0, int b1, int b2, int T, int H, int W, int To, int Ho, int Wo, int kt, int st, int sh,
                           int sw) {
    if (!dinp) {
        int tt = b0 + a, y = b1 + c, x = b2 + d;
        if (y < 0 || y >= H || x < 0 || x >= W) return 0.0f;
        if (tt >= 0) return src[(((size_t)j * T + tt) * H + y) * W + x];
        return prev ? prev[(((size_t)j * (kt - 1) + (kt - 1 + tt)) * H + y) * W + x] : 0.0f;
    }
    int num = b0 - a, hh = b1 - c, ww = b2 - d;
    if (st == 1 && sh == 1 && sw == 1)
        return num < To && hh >= 0 && hh < Ho && ww >= 0 && ww < Wo ? src[(((size_t)j * To + num) * Ho + hh) * Wo + ww]
                                                                     : 0.0f;
    if (num % st == 0 && num / st < To && hh >= 0 && hh % sh == 0 && hh / sh < Ho && ww >= 0 && ww % sw == 0 &&
        ww / sw < Wo)
        return src[(((size_t)j * To + num / st) * Ho + hh / sh) * Wo + ww / sw];
    return 0.0f;
}

/* The tile loop of conv3d_forward_fast, conv3d_forward_padded_fast (dinp = 0)
   and conv3d_backward_dinp_fast (dinp = 1), written once. C (M, N) = A (M, KR) x B (KR, N), KR = Jn K:
     forward: C = y (Cout, P),    A(m, (j, tap)) = W[m, j, tap],  B = col(x), j < Cin
     dinput:  C = dx (Cin, N),    A(m, (j, tap)) = W[j, m, tap],  B = gather(dy), j < Cout
   so A(m, (j, tap)) = weight[j ja + m am + tap]. A is loaded k-major, B n-major.
   The forward runs on a chunk (frames s0 .. s0+T-1 of a clip, prev the kt-1
   frames before it or NULL: its output frames are those whose last tap is in
   the chunk, as conv3d_forward_chunk's) with pt rows on top, pl columns on the
   left (and pb, pr at the bottom and right); the input gradient is of the
   whole clip (s0 = 0) with SPEC 2.1's padding, pt = pb = kh/2, pl = pr = kw/2. */
static inline void conv_product(int dinp, local float *As, local float *Bs, global float *C, global const float *src,
                                global const float *prev, int s0, global const float *weight,
                                global const float *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh,
                                int kw, int st, int sh, int sw, int pt, int pb, int pl, int pr) {
    int first = (s0 + st - 1) / st, To = (s0 + T - 1) / st - first + 1, K = kt * kh * kw;
    int Ho = (H + pt + pb - kh) / sh + 1, Wo = (W + pl + pr - kw) / sw + 1;
    int M = dinp ? Cin : Cout, KR = (dinp ? Cout : Cin) * K;
    int Tn = dinp ? T : To, Hn = dinp ? H : Ho, Wn = dinp ? W : Wo, N = Tn * Hn * Wn; /* the columns' grid */
    size_t ja = dinp ? (size_t)Cin * K : (size_t)K, am = dinp ? (size_t)K : (size_t)Cin * K;
    int lx = get_local_id(0), ly = get_local_id(1), lid = ly * FG + lx;
    int n0 = get_group_id(0) * FT, m0 = get_group_id(1) * FT;
    /* this work-item's column of B: position n = (t, h, w) and its tap origin */
    int nn = lid % FT, n = n0 + nn;
    int t = n / (Hn * Wn), h = n / Wn % Hn, w = n % Wn;
    int b0 = dinp ? t + (kt - 1) : first * st - s0 + t * st - (kt - 1), b1 = dinp ? h + kh / 2 : h * sh - pt;
    int b2 = dinp ? w + kw / 2 : w * sw - pl;
    /* k = j K + tap of this work-item's column of A, and of each of its FR rows of B */
    int aj = (lid % FK) / K, atap = lid % FK - aj * K, bj[FR], btap[FR];
    for (int q = 0; q < FR; q++) {
        int k = lid / FT + FB * q;
        bj[q] = k / K, btap[q] = k - bj[q] * K;
    }
    float4 acc[FR] = {(float4)(0.0f), (float4)(0.0f), (float4)(0.0f), (float4)(0.0f)};
    for (int k0 = 0; k0 < KR; k0 += FK) {
        load_a(As, weight + aj * ja + atap, am, M, k0 + lid % FK < KR, m0, lid);
        next_k(&aj, &atap, K);
        for (int q = 0; q < FR; q++) { /* B, n-major */
            int kk = lid / FT + FB * q, k = k0 + kk;
            float v = 0.0f;
            if (n < N && k < KR) {
                int a, c, d;
                tap_split(btap[q], kh, kw, &a, &c, &d);
                v = conv_b(dinp, src, prev, bj[q], a, c, d, b0, b1, b2, T, H, W, To, Ho, Wo, kt, st, sh, sw);
            }
            Bs[kk * FL + nn] = v;
            next_k(&bj[q], &btap[q], K);
        }
        tile_multiply(As, Bs, acc, lx, ly);
    }
    tile_store(C, N, 1, M, N, acc, bias, m0, n0, lx, ly);
}

/* y = conv(x) + bias, any stride */
kernel __attribute__((reqd_work_group_size(FG, FG, 1)))
void conv3d_forward_fast(global float *out, global const float *inp, global const float *weight,
                         global const float *bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                         int st, int sh, int sw) {
    // out (Cout, To, Ho, Wo), inp (Cin, T, H, W), weight (Cout, Cin, kt, kh, kw), bias (Cout) or NULL
    local float As[FK * FL], Bs[FK * FL];
    conv_product(0, As, Bs, out, inp, 0, 0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, kh / 2, kh / 2,
                 kw / 2, kw / 2);
}

/* the same on a chunk of a clip with any spatial padding (conv3d_forward_padded's arguments) */
kernel __attribute__((reqd_work_group_size(FG, FG, 1)))
void conv3d_forward_padded_fast(global float *out, global const float *inp, global const float *prev, int s0,
                                global const float *weight, global const float *bias, int Cin, int T, int H, int W,
                                int Cout, int kt, int kh, int kw, int st, int sh, int sw, int top, int bottom,
                                int left, int right) {
    // out (Cout, To, Ho, Wo), inp (Cin, T, H, W), prev (Cin, kt-1, H, W) or NULL
    local float As[FK * FL], Bs[FK * FL];
    conv_product(0, As, Bs, out, inp, prev, s0, weight, bias, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, top, bottom,
                 left, right);
}

/* dx = the gather of conv3d_backward, any stride:
       dx[i,t,h,w] = sum_{o,a,c,d} W[o,i,a,c,d] * dy[o,t',h',w']  where t'st + a - (kt-1) = t,
                     h'sh + c - ph = h, w'sw + d - pw = w */
kernel __attribute__((reqd_work_group_size(FG, FG, 1)))
void conv3d_backward_dinp_fast(global float *dinp, global const float *dout, global const float *weight, int Cin,
                               int T, int H, int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw) {
    // dinp (Cin, T, H, W) written; dout (Cout, To, Ho, Wo)
    local float As[FK * FL], Bs[FK * FL];
    conv_product(1, As, Bs, dinp, dout, 0, 0, weight, 0, Cin, T, H, W, Cout, kt, kh, kw, st, sh, sw, kh / 2, kh / 2,
                 kw / 2, kw / 2);
}

/* the weight gradient over one chunk of output positions (work-group z = the
   chunk): part[z] (Cout, Cin K) = dY[:, chunk] x col(x)[:, chunk]^T.
   A(o, p) = dy[o, p] and B(p, j) = col(x)[j, p], both k-major (consecutive p) */
kernel __attribute__((reqd_work_group_size(FG, FG, 1)))
void conv3d_backward_dweight_fast(global float *part, global const float *dout, global const float *inp, int Cin,
                                  int T, int H, int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw,
                                  int chunk) {
    // part (chunks, Cout, Cin K) written; dout (Cout, To, Ho, Wo); inp (Cin, T, H, W)
    local float As[FK * FL], Bs[FK * FL];
    int To = conv_out_t(T, st), Ho = conv_out_s(H, kh, sh), Wo = conv_out_s(W, kw, sw);
    int K = kt * kh * kw, NJ = Cin * K, P = To * Ho * Wo;
    int lx = get_local_id(0), ly = get_local_id(1), lid = ly * FG + lx;
    int n0 = get_group_id(0) * FT, m0 = get_group_id(1) * FT, z = get_group_id(2);
    int p0 = z * chunk, p1 = min(P, p0 + chunk);
    /* the FR columns j of B this work-item copies: input channel and tap offsets */
    int kk = lid % FK;
    size_t ibase[FR];
    int ta[FR], yc[FR], xd[FR], jok[FR];
    for (int q = 0; q < FR; q++) {
        int j = n0 + lid / FK + FA * q, i = j / K, a, c, d;
        tap_split(j - i * K, kh, kw, &a, &c, &d);
        jok[q] = j < NJ;
        ibase[q] = (size_t)i * T * H * W;
        ta[q] = a - (kt - 1), yc[q] = c - kh / 2, xd[q] = d - kw / 2;
    }
    /* the output position (t, h, w) of this work-item's row p = k0 + kk of A and B */
    int pstart = p0 + kk, t = pstart / (Ho * Wo), h = pstart / Wo % Ho, w = pstart % Wo;
    float4 acc[FR] = {(float4)(0.0f), (float4)(0.0f), (float4)(0.0f), (float4)(0.0f)};
    for (int k0 = p0; k0 < p1; k0 += FK) {
        int p = k0 + kk, pok = p < p1;
        load_a(As, dout + p, P, Cout, pok, m0, lid); /* dy rows */
        for (int q = 0; q < FR; q++) { /* B: x at tap j of position p, 0 in the padding */
            int tt = t * st + ta[q], y = h * sh + yc[q], x = w * sw + xd[q];
            float v = 0.0f;
            if (pok && jok[q] && tt >= 0 && y >= 0 && y < H && x >= 0 && x < W)
                v = inp[ibase[q] + ((size_t)tt * H + y) * W + x];
            Bs[kk * FL + lid / FK + FA * q] = v;
        }
        for (w += FK; w >= Wo; w -= Wo) /* p += FK */
            if (++h == Ho) h = 0, t++;
        tile_multiply(As, Bs, acc, lx, ly);
    }
    tile_store(part + (size_t)z * Cout * NJ, NJ, 1, Cout, NJ, acc, 0, m0, n0, lx, ly);
}

/* dW[j] += the chunks' partial sums, in chunk order */
kernel void conv3d_backward_dweight_reduce(global float *dweight, global const float *part, ulong n, int chunks) {
    // dweight (n) accumulated, part (chunks, n)
    size_t j = get_global_id(0);
    if (j >= n) return;
    float s = 0;
    for (int z = 0; z < chunks; z++) s += part[z * n + j];
    dweight[j] += s;
}

/* db[o] += sum of dy[o] over all P positions: one work-group of FG*FG per channel,
   strided partial sums, then a tree in local memory */
kernel __attribute__((reqd_work_group_size(FG * FG, 1, 1)))
void conv3d_backward_dbias_fast(global float *dbias, global const float *dout, int P) {
    // dbias (Cout) accumulated, dout (Cout, P)
    local float red[FG * FG];
    int o = get_group_id(0), lid = get_local_id(0);
    global const float *dy = dout + (size_t)o * P;
    float s = 0;
    for (int p = lid; p < P; p += FG * FG) s += dy[p];
    red[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = FG * FG / 2; span > 0; span /= 2) {
        if (lid < span) red[lid] += red[lid + span];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) dbias[o] += red[0];
}

/* ========================================================================== */
/* attention                                                                  */
/* ========================================================================== */

/* A batch of dense products with any strides, for attention (work-group z = the
   batch entry b):  C[b](m, n) = alpha * sum_k A[b](m, k) B[b](k, n), where
   X[b](i, j) = X[xoff + b * xbs + i * xi + j * xj]. A is loaded k-major, B n-major. */
kernel __attribute__((reqd_work_group_size(FG, FG, 1)))
void gemm_fast(global float *Cm, ulong coff, ulong cbs, int cm, int cn, global const float *A, ulong aoff, ulong abs_,
               int am, int ak, global const float *B, ulong boff, ulong bbs, int bk, int bn, int M, int N, int K,
               float alpha) {
    local float As[FK * FL], Bs[FK * FL];
    int lx = get_local_id(0), ly = get_local_id(1), lid = ly * FG + lx;
    int n0 = get_group_id(0) * FT, m0 = get_group_id(1) * FT, b = get_group_id(2);
    global const float *Ab = A + aoff + b * abs_, *Bb = B + boff + b * bbs;
    global float *Cb = Cm + coff + b * cbs;
    float4 acc[FR] = {(float4)(0.0f), (float4)(0.0f), (float4)(0.0f), (float4)(0.0f)};
    for (int k0 = 0; k0 < K; k0 += FK) {
        int ka = k0 + lid % FK; /* A's column in this step */
        load_a(As, Ab + (size_t)ka * ak, am, M, ka < K, m0, lid);
        for (int q = 0; q < FR; q++) { /* B, n-major */
            int kk = lid / FT + FB * q, nn = lid % FT, n = n0 + nn, k = k0 + kk;
            Bs[kk * FL + nn] = n < N && k < K ? Bb[(size_t)k * bk + (size_t)n * bn] : 0.0f;
        }
        tile_multiply(As, Bs, acc, lx, ly);
    }
    for (int r = 0; r < FR; r++) acc[r] = alpha * acc[r];
    tile_store(Cb, cm, cn, M, N, acc, 0, m0, n0, lx, ly);
}

/* Attention's row operations between the products. att is (N, L): row p holds
   the scores (then probabilities) of token p against the L tokens of its
   frame (frame mode, L = HW) or of the clip (causal, L = N); in causal mode
   only r < (t+1) HW is allowed, the rest is set to 0 so that the dense
   products that follow can run over whole rows. */

/* the number of tokens token p attends to */
static int span_len(int mode, int p, int HW) {
    int r0, r1;
    attn_span(mode, p, HW, &r0, &r1);
    return r1 - r0;
}

kernel void attention_softmax_fast(global float *att, int T, int H, int W, int mode) {
    // att (N, L): the scores on entry, the probabilities on exit
    int HW = H * W, N = T * HW, L = attn_row_len(mode, T, HW);
    size_t p = get_global_id(0);
    if (p >= (size_t)N) return;
    int n = span_len(mode, p, HW);
    global float *a = att + p * L;
    float mx = -INFINITY, sum = 0;
    for (int r = 0; r < n; r++) mx = fmax(mx, a[r]);
    for (int r = 0; r < n; r++) sum += (a[r] = ivae_expf(a[r] - mx));
    for (int r = 0; r < n; r++) a[r] /= sum;
    for (int r = n; r < L; r++) a[r] = 0;
}

/* ds = a * (da - sum_r a da), row by row (ds holds da on entry) */
kernel void attention_dsoftmax_fast(global float *ds, global const float *att, int T, int H, int W, int mode) {
    // ds (N, L) in place, att (N, L)
    int HW = H * W, N = T * HW, L = attn_row_len(mode, T, HW);
    size_t p = get_global_id(0);
    if (p >= (size_t)N) return;
    int n = span_len(mode, p, HW);
    global const float *a = att + p * L;
    global float *d = ds + p * L;
    float adot = 0;
    for (int r = 0; r < n; r++) adot = fma(a[r], d[r], adot);
    for (int r = 0; r < n; r++) d[r] = a[r] * (d[r] - adot);
    for (int r = n; r < L; r++) d[r] = 0;
}
