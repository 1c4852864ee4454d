/*
 * wan.c: the Wan 2.1 VAE (SPEC 7) on the layers of layers.c, streamed.
 *
 * The model people deploy (Wan 2.1 and 2.2 A14B, Linum v2 and their
 * fine-tunes decode with it). Inference only: encode returns the latent mean,
 * decode the raw decoder output. It runs chunk by chunk as the official code
 * does, which is its definition: the encoder sees frames {0}, {1..4},
 * {5..8}, ..., the decoder one latent frame at a time, and every causal conv
 * keeps the last 2 frames of its input across chunks (its cache), so memory
 * does not grow with the clip.
 *
 * Read it top-down:
 *   1. parameters: the table of names and shapes (diffusers names; the
 *      official .pth names are a renaming), one allocation
 *   2. layers with state: the cached causal conv
 *   3. blocks: residual, attention, downsample, upsample
 *   4. the encoder and the decoder, as SPEC 7 lists them
 *   5. encode and decode: the chunk loops
 *   6. loading
 *
 * Where the official code has a rule that is easy to get wrong, the comment
 * says so (SPEC 7 has the list).
 */
#include "wan.h"
#include "layers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAN_STAGES 4
static const int dim_mult[WAN_STAGES] = {1, 2, 4, 4};
static const int temporal_down[WAN_STAGES - 1] = {0, 1, 1}; /* what the loader sets; the class default differs */
#define N_RES 2                                             /* per encoder stage; the decoder has N_RES + 1 */

const float wan_latent_mean[16] = {-0.7571f, -0.7089f, -0.9113f, 0.1075f,  -0.1745f, 0.9653f,  -0.1517f, 1.5508f,
                                   0.4134f,  -0.0715f, 0.5517f,  -0.3632f, -0.1922f, -0.9497f, 0.2503f,  -0.2921f};
const float wan_latent_std[16] = {2.8184f, 1.4541f, 2.3275f, 2.6558f, 1.2196f, 1.7708f, 2.6052f, 2.0743f,
                                  3.2687f, 2.1526f, 2.8652f, 1.5579f, 1.6382f, 1.1253f, 2.8251f, 1.9160f};

/* ========================================================================== */
/* 1. parameters                                                              */
/* ========================================================================== */

typedef struct {
    char name[96];     /* diffusers name */
    char official[96]; /* Wan2.1_VAE.pth name */
    int ndim, shape[5];
    size_t offset, numel;
} WanTensor;

/* A conv: offsets of weight (cout, cin, kt, kh, kw) and bias (cout) in the
   parameter buffer. Causal convs with time context (kt = 3) carry a cache:
   the last 2 frames of their input (cin, 2, H, W) and how many frames of
   the stream they have seen. */
typedef struct {
    size_t w, b;
    int cout, cin, kt, kh, kw;
    real *cache;
    size_t cache_cap;
    int seen;
} WConv;

typedef enum { W_RES, W_DOWN, W_UP } WKind;

typedef struct {
    WKind kind;
    char name[80];        /* diffusers prefix, e.g. "encoder.down_blocks.3" */
    int cin, cout;
    /* W_RES: norm1 (cin), conv1 3x3x3, norm2 (cout), conv2 3x3x3, shortcut 1x1x1 */
    size_t norm1, norm2;
    WConv conv1, conv2, shortcut;
    int has_shortcut;
    /* W_DOWN, W_UP: resample.1 (a 3x3 conv per frame) and time_conv (3x1x1) */
    WConv resample, time_conv;
    int temporal;
    int first_done;       /* the first chunk has passed (the time rules differ on it) */
} WBlock;

typedef struct {
    char name[80];
    int C;
    size_t norm;          /* (C) */
    WConv qkv, proj;      /* (3C, C, 1,1,1), (C, C, 1,1,1) */
} WAttn;

typedef struct {
    WBlock res0, res1;
    WAttn attn;
} WMid;

struct WanModel {
    int dim, z;
    const char *layout;
    int n_tensors, cap_tensors;
    WanTensor *t;
    size_t n_params;
    real *params;
    /* encoder: conv_in, 11 blocks (res res down, res res down, res res down, res res), mid, norm_out, conv_out */
    WConv enc_conv_in, enc_conv_out, quant_conv;
    WBlock enc[WAN_STAGES * (N_RES + 1)];
    int n_enc;
    WMid enc_mid;
    size_t enc_norm_out;
    /* decoder: post_quant_conv, conv_in, mid, 4 stages of 3 res + an upsampler (not the last), norm_out, conv_out */
    WConv post_quant_conv, dec_conv_in, dec_conv_out;
    WMid dec_mid;
    WBlock dec[WAN_STAGES * (N_RES + 2)];
    int n_dec;
    size_t dec_norm_out;
};

static size_t add_tensor(WanModel *m, const char *name, const char *official, int ndim, const int *shape) {
    if (m->n_tensors == m->cap_tensors) {
        m->cap_tensors = m->cap_tensors ? 2 * m->cap_tensors : 256;
        m->t = xrealloc(m->t, (size_t)m->cap_tensors, sizeof *m->t);
    }
    WanTensor *t = &m->t[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->official, sizeof t->official, "%s", official);
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d], t->numel *= (size_t)shape[d];
    t->offset = m->n_params;
    m->n_params += t->numel;
    return t->offset;
}

/* a conv named `name` (diffusers) / `official`; k2d: the file stores a 2-D
   conv's (cout, cin, kh, kw) weight, which runs as kt = 1 */
static WConv add_conv(WanModel *m, const char *name, const char *official, int cout, int cin, int kt, int kh,
                      int kw, int k2d) {
    char n1[128], n2[128];
    WConv c = {0};
    c.cout = cout, c.cin = cin, c.kt = kt, c.kh = kh, c.kw = kw;
    int shape[5] = {cout, cin, kt, kh, kw}, shape2[4] = {cout, cin, kh, kw};
    snprintf(n1, sizeof n1, "%s.weight", name), snprintf(n2, sizeof n2, "%s.weight", official);
    c.w = add_tensor(m, n1, n2, k2d ? 4 : 5, k2d ? shape2 : shape);
    snprintf(n1, sizeof n1, "%s.bias", name), snprintf(n2, sizeof n2, "%s.bias", official);
    c.b = add_tensor(m, n1, n2, 1, &cout);
    return c;
}

/* an RMS norm's gamma: (C, 1, 1, 1), or (C, 1, 1) inside attention */
static size_t add_gamma(WanModel *m, const char *name, const char *official, int C, int ndim) {
    char n1[128], n2[128];
    int shape[4] = {C, 1, 1, 1};
    snprintf(n1, sizeof n1, "%s.gamma", name), snprintf(n2, sizeof n2, "%s.gamma", official);
    return add_tensor(m, n1, n2, ndim, shape);
}

static void add_res(WanModel *m, WBlock *b, const char *official, int cin, int cout) {
    char n1[128], n2[128];
    b->kind = W_RES, b->cin = cin, b->cout = cout;
    snprintf(n1, sizeof n1, "%s.norm1", b->name), snprintf(n2, sizeof n2, "%s.residual.0", official);
    b->norm1 = add_gamma(m, n1, n2, cin, 4);
    snprintf(n1, sizeof n1, "%s.conv1", b->name), snprintf(n2, sizeof n2, "%s.residual.2", official);
    b->conv1 = add_conv(m, n1, n2, cout, cin, 3, 3, 3, 0);
    snprintf(n1, sizeof n1, "%s.norm2", b->name), snprintf(n2, sizeof n2, "%s.residual.3", official);
    b->norm2 = add_gamma(m, n1, n2, cout, 4);
    snprintf(n1, sizeof n1, "%s.conv2", b->name), snprintf(n2, sizeof n2, "%s.residual.6", official);
    b->conv2 = add_conv(m, n1, n2, cout, cout, 3, 3, 3, 0);
    b->has_shortcut = cin != cout;
    if (b->has_shortcut) {
        snprintf(n1, sizeof n1, "%s.conv_shortcut", b->name), snprintf(n2, sizeof n2, "%s.shortcut", official);
        b->shortcut = add_conv(m, n1, n2, cout, cin, 1, 1, 1, 0);
    }
}

/* downsample (C -> C) or upsample (C -> C/2), with a time_conv if temporal */
static void add_resample(WanModel *m, WBlock *b, const char *official, WKind kind, int C, int temporal) {
    char n1[128], n2[128];
    b->kind = kind, b->cin = C, b->cout = kind == W_DOWN ? C : C / 2, b->temporal = temporal;
    if (kind == W_UP && temporal) { /* time_conv first, (2C, C, 3, 1, 1) */
        snprintf(n1, sizeof n1, "%s.time_conv", b->name), snprintf(n2, sizeof n2, "%s.time_conv", official);
        b->time_conv = add_conv(m, n1, n2, 2 * C, C, 3, 1, 1, 0);
    }
    snprintf(n1, sizeof n1, "%s.resample.1", b->name), snprintf(n2, sizeof n2, "%s.resample.1", official);
    b->resample = add_conv(m, n1, n2, b->cout, C, 1, 3, 3, 1);
    if (kind == W_DOWN && temporal) { /* time_conv after, (C, C, 3, 1, 1), stride 2 */
        snprintf(n1, sizeof n1, "%s.time_conv", b->name), snprintf(n2, sizeof n2, "%s.time_conv", official);
        b->time_conv = add_conv(m, n1, n2, C, C, 3, 1, 1, 0);
    }
}

static void add_mid(WanModel *m, WMid *mid, const char *part, int C) {
    char n1[128], n2[128];
    snprintf(mid->res0.name, sizeof mid->res0.name, "%s.mid_block.resnets.0", part);
    snprintf(n2, sizeof n2, "%s.middle.0", part);
    add_res(m, &mid->res0, n2, C, C);
    WAttn *a = &mid->attn;
    snprintf(a->name, sizeof a->name, "%s.mid_block.attentions.0", part);
    a->C = C;
    snprintf(n1, sizeof n1, "%s.norm", a->name), snprintf(n2, sizeof n2, "%s.middle.1.norm", part);
    a->norm = add_gamma(m, n1, n2, C, 3);
    snprintf(n1, sizeof n1, "%s.to_qkv", a->name), snprintf(n2, sizeof n2, "%s.middle.1.to_qkv", part);
    a->qkv = add_conv(m, n1, n2, 3 * C, C, 1, 1, 1, 1);
    snprintf(n1, sizeof n1, "%s.proj", a->name), snprintf(n2, sizeof n2, "%s.middle.1.proj", part);
    a->proj = add_conv(m, n1, n2, C, C, 1, 1, 1, 1);
    snprintf(mid->res1.name, sizeof mid->res1.name, "%s.mid_block.resnets.1", part);
    snprintf(n2, sizeof n2, "%s.middle.2", part);
    add_res(m, &mid->res1, n2, C, C);
}

/* SPEC 7's network, registering every tensor in a fixed order */
static void build(WanModel *m) {
    int D = m->dim, z = m->z, Cz = D * dim_mult[WAN_STAGES - 1];
    char off[64];

    /* encoder: widths D, D*1, D*2, D*4, D*4 */
    m->enc_conv_in = add_conv(m, "encoder.conv_in", "encoder.conv1", D, 3, 3, 3, 3, 0);
    int c = D;
    for (int s = 0; s < WAN_STAGES; s++) {
        int cout = D * dim_mult[s];
        for (int j = 0; j < N_RES + (s < WAN_STAGES - 1); j++) {
            WBlock *b = &m->enc[m->n_enc];
            snprintf(b->name, sizeof b->name, "encoder.down_blocks.%d", m->n_enc);
            snprintf(off, sizeof off, "encoder.downsamples.%d", m->n_enc);
            if (j < N_RES) add_res(m, b, off, c, cout), c = cout;
            else add_resample(m, b, off, W_DOWN, c, temporal_down[s]);
            m->n_enc++;
        }
    }
    add_mid(m, &m->enc_mid, "encoder", Cz);
    m->enc_norm_out = add_gamma(m, "encoder.norm_out", "encoder.head.0", Cz, 4);
    m->enc_conv_out = add_conv(m, "encoder.conv_out", "encoder.head.2", 2 * z, Cz, 3, 3, 3, 0);
    m->quant_conv = add_conv(m, "quant_conv", "conv1", 2 * z, 2 * z, 1, 1, 1, 0);
    m->post_quant_conv = add_conv(m, "post_quant_conv", "conv2", z, z, 1, 1, 1, 0);

    /* decoder: widths D*4, D*4, D*4, D*2, D*1; each upsampler halves its
       width, so stages 1..3 start at half the previous stage's */
    m->dec_conv_in = add_conv(m, "decoder.conv_in", "decoder.conv1", Cz, z, 3, 3, 3, 0);
    add_mid(m, &m->dec_mid, "decoder", Cz);
    c = Cz;
    for (int s = 0; s < WAN_STAGES; s++) {
        int cout = D * dim_mult[WAN_STAGES - 1 - s];
        for (int j = 0; j <= N_RES; j++) {
            WBlock *b = &m->dec[m->n_dec++];
            snprintf(b->name, sizeof b->name, "decoder.up_blocks.%d.resnets.%d", s, j);
            snprintf(off, sizeof off, "decoder.upsamples.%d", s * (N_RES + 2) + j);
            add_res(m, b, off, c, cout), c = cout;
        }
        if (s < WAN_STAGES - 1) {
            WBlock *b = &m->dec[m->n_dec++];
            snprintf(b->name, sizeof b->name, "decoder.up_blocks.%d.upsamplers.0", s);
            snprintf(off, sizeof off, "decoder.upsamples.%d", s * (N_RES + 2) + N_RES + 1);
            add_resample(m, b, off, W_UP, c, temporal_down[WAN_STAGES - 2 - s]);
            c = c / 2;
        }
    }
    m->dec_norm_out = add_gamma(m, "decoder.norm_out", "decoder.head.0", D, 4);
    m->dec_conv_out = add_conv(m, "decoder.conv_out", "decoder.head.2", 3, D, 3, 3, 3, 0);
}

/* ========================================================================== */
/* 2. the cached causal conv                                                  */
/* ========================================================================== */

/* A tensor of one chunk: data (C, T, H, W), owned (freed by whoever takes it). */
typedef struct {
    real *d;
    Shape s;
} Tens;

/* The chunk pool. A chunk's tensors are allocated and freed layer by layer,
   and every chunk of a stream repeats the same sizes. Memory fresh from the
   system costs a page fault per 4 KB page when it is first written (the
   kernel zeroes the page): in a Wan 2.1 encode of 5 x 256 x 256 on a 2-core
   VM that was a fifth of the CPU time (3.8 s of 18). So a freed tensor of
   POOL_MIN bytes or more goes to a pool, and a new tensor takes the smallest
   pooled block that fits and is at most twice its size; at each chunk's
   start (pool_trim) the blocks that no tensor of the previous chunk used go
   back to the system, so what is kept is what one chunk needs, flat in the
   clip's length. wan_free empties it. A block's size is in a header of 64
   bytes in front of it. Reuse changes no value: every tensor is written
   before it is read, as with malloc's memory. One pool for the process, like
   the conv's scratch (layers.c). */
#define POOL_MIN ((size_t)1 << 20)
#define POOL_N 64
#define POOL_HEAD 64
static struct {
    unsigned char *p; /* the block, header first */
    size_t cap;       /* bytes after the header */
    int used;         /* taken or given back since the last trim */
} g_pool[POOL_N];
static int g_npool;

static real *pool_get(size_t bytes) {
    int best = -1;
    for (int i = 0; i < g_npool; i++)
        if (g_pool[i].cap >= bytes && g_pool[i].cap / 2 <= bytes && (best < 0 || g_pool[i].cap < g_pool[best].cap))
            best = i;
    unsigned char *p;
    if (best >= 0) {
        p = g_pool[best].p;
        g_pool[best] = g_pool[--g_npool];
    } else {
        p = xmalloc(bytes + POOL_HEAD);
        memcpy(p, &bytes, sizeof bytes);
    }
    return (real *)(p + POOL_HEAD);
}

static void pool_put(real *d) {
    if (!d) return;
    unsigned char *p = (unsigned char *)d - POOL_HEAD;
    size_t cap;
    memcpy(&cap, p, sizeof cap);
    if (cap < POOL_MIN || g_npool == POOL_N) {
        free(p);
        return;
    }
    g_pool[g_npool].p = p, g_pool[g_npool].cap = cap, g_pool[g_npool].used = 1;
    g_npool++;
}

static void pool_trim(void) {
    for (int i = 0; i < g_npool;)
        if (!g_pool[i].used) {
            free(g_pool[i].p);
            g_pool[i] = g_pool[--g_npool];
        } else g_pool[i++].used = 0;
}

static void pool_empty(void) {
    for (int i = 0; i < g_npool; i++) free(g_pool[i].p);
    g_npool = 0;
}

static Tens tens_new(int C, int T, int H, int W) {
    Tens t = {pool_get((size_t)C * T * H * W * sizeof(real)), {C, T, H, W}};
    return t;
}

static void tens_free(Tens t) { pool_put(t.d); }

/* y = conv(x) over one chunk. kt = 3: causal with 2 frames of context, from
   the cache (zeros before the stream's first frame), and the cache then
   holds the last 2 frames of [cache | x] (for a 1-frame chunk: the cache's
   last frame, then this one). st: time stride (2 only in the downsample's
   time_conv). pad: spatial padding. */
static Tens conv(WanModel *m, WConv *c, const real *x, Shape s, int st, int ss, IvaePad pad) {
    int Ho = ivae_conv_out_padded(s.H, c->kh, ss, pad.top, pad.bottom);
    int Wo = ivae_conv_out_padded(s.W, c->kw, ss, pad.left, pad.right);
    int s0 = c->kt > 1 ? c->seen : 0, To = (s0 + s.T - 1) / st - (s0 + st - 1) / st + 1;
    Tens y = tens_new(c->cout, To, Ho, Wo);
    const real *prev = c->kt > 1 && c->seen > 0 ? c->cache : NULL;
    ivae_conv3d_forward_padded(y.d, x, prev, s0, m->params + c->w, m->params + c->b, c->cin, s.T, s.H, s.W, c->cout,
                               c->kt, c->kh, c->kw, st, ss, ss, pad);
    if (c->kt > 1) {
        size_t n = (size_t)c->cin * (c->kt - 1) * s.H * s.W;
        if (c->cache_cap < n) {
            free(c->cache);
            c->cache = xcalloc(n, sizeof(real));
            c->cache_cap = n;
        }
        ivae_cache_push(c->cache, c->kt - 1, c->seen > 0, x, s.C, s.T, s.H, s.W);
        c->seen += s.T;
    }
    return y;
}

/* a 3x3x3 body conv or a 1x1x1 one, SPEC padding */
static Tens conv_same(WanModel *m, WConv *c, Tens x) { return conv(m, c, x.d, x.s, 1, 1, ivae_pad_same(c->kh, c->kw)); }

/* silu(rms_norm(x)) with gamma at offset g */
static Tens norm_silu(WanModel *m, size_t g, Tens x) {
    Tens y = tens_new(x.s.C, x.s.T, x.s.H, x.s.W);
    size_t N = (size_t)x.s.T * x.s.H * x.s.W;
    ivae_rmsnorm_forward(y.d, x.d, m->params + g, x.s.C, N);
    ivae_silu_forward(y.d, y.d, (size_t)x.s.C * N);
    return y;
}

static void stream_reset(WConv *c) { c->seen = 0; }

/* ========================================================================== */
/* 3. blocks                                                                  */
/* ========================================================================== */

/* h = conv1(silu(norm1(x))); h = conv2(silu(norm2(h))); y = h + shortcut(x).
   Takes x, returns y. */
static Tens res_forward(WanModel *m, WBlock *b, Tens x) {
    Tens a = norm_silu(m, b->norm1, x);
    Tens h = conv_same(m, &b->conv1, a);
    tens_free(a);
    a = norm_silu(m, b->norm2, h);
    tens_free(h);
    Tens y = conv_same(m, &b->conv2, a);
    tens_free(a);
    size_t n = shape_numel(y.s);
    if (b->has_shortcut) {
        Tens sc = conv_same(m, &b->shortcut, x);
        for (size_t j = 0; j < n; j++) y.d[j] = y.d[j] + sc.d[j];
        tens_free(sc);
    } else {
        for (size_t j = 0; j < n; j++) y.d[j] = y.d[j] + x.d[j];
    }
    tens_free(x);
    return y;
}

/* Per frame: n = rms_norm(x); [q; k; v] = to_qkv(n); o = softmax(q k^T /
   sqrt(C)) v over the frame's positions; y = x + proj(o). */
static Tens attn_forward(WanModel *m, WAttn *a, Tens x) {
    Shape s = x.s;
    size_t N = (size_t)s.T * s.H * s.W, HW = (size_t)s.H * s.W;
    Tens n = tens_new(s.C, s.T, s.H, s.W);
    ivae_rmsnorm_forward(n.d, x.d, m->params + a->norm, s.C, N);
    Tens qkv = conv_same(m, &a->qkv, n);
    tens_free(n);
    Tens o = tens_new(s.C, s.T, s.H, s.W);
    real *att = pool_get(N * HW * sizeof(real)); /* (N, HW) probabilities, not kept */
    ivae_attention_forward(o.d, att, qkv.d, s.C, s.T, s.H, s.W, IVAE_ATTN_FRAME);
    pool_put(att);
    tens_free(qkv);
    Tens y = conv_same(m, &a->proj, o);
    tens_free(o);
    for (size_t j = 0; j < shape_numel(s); j++) y.d[j] = x.d[j] + y.d[j];
    tens_free(x);
    return y;
}

/* Downsample, per frame: one zero column right and one zero row at the
   bottom only (not padding 1 all round), then the 3x3 conv with stride 2.
   downsample3d then halves time with time_conv (3x1x1, stride 2) over
   [the last frame before this chunk | this chunk] -- except on the stream's
   first chunk, which passes through untouched (no time_conv, no bias). */
static Tens down_forward(WanModel *m, WBlock *b, Tens x) {
    Tens y = conv(m, &b->resample, x.d, x.s, 1, 2, (IvaePad){0, 1, 0, 1});
    tens_free(x);
    if (!b->temporal) return y;
    WConv *tc = &b->time_conv;
    Tens out;
    if (!b->first_done) { /* the first chunk: through, but its frame is the next chunk's context */
        b->first_done = 1;
        Shape s = y.s;
        out = tens_new(s.C, s.T, s.H, s.W);
        memcpy(out.d, y.d, shape_numel(s) * sizeof(real));
        size_t n = (size_t)tc->cin * 2 * s.H * s.W;
        if (tc->cache_cap < n) {
            free(tc->cache);
            tc->cache = xcalloc(n, sizeof(real));
            tc->cache_cap = n;
        }
        ivae_cache_push(tc->cache, 2, 0, y.d, s.C, s.T, s.H, s.W);
        tc->seen = s.T;
    } else {
        /* the stream frame s0 = seen: output t' reads frames 2t'-2 .. 2t', so
           frame 1 reads [frame 0 | 1, 2]: the cache supplies frame 0 */
        out = conv(m, tc, y.d, y.s, 2, 1, IVAE_PAD_NONE);
    }
    tens_free(y);
    return out;
}

/* Upsample3d first doubles time: time_conv (C -> 2C, causal, cached) and
   frame t becomes frames 2t (channels 0..C-1) and 2t+1 (C..2C-1); the
   stream's first chunk skips it, and the time_conv's own stream starts at
   the second chunk (its context there is zeros, never the first frame).
   Then per frame: nearest x2 and a 3x3 conv C -> C/2. */
static Tens up_forward(WanModel *m, WBlock *b, Tens x) {
    if (b->temporal) {
        if (!b->first_done) {
            b->first_done = 1;
        } else {
            Tens t2 = conv_same(m, &b->time_conv, x); /* (2C, n, H, W) */
            tens_free(x);
            Shape s = t2.s;
            int C = s.C / 2;
            size_t fr = (size_t)s.H * s.W;
            x = tens_new(C, 2 * s.T, s.H, s.W);
            for (int c = 0; c < C; c++)
                for (int t = 0; t < s.T; t++)
                    for (int half = 0; half < 2; half++)
                        memcpy(x.d + ((size_t)c * 2 * s.T + 2 * t + half) * fr,
                               t2.d + ((size_t)(half * C + c) * s.T + t) * fr, fr * sizeof(real));
            tens_free(t2);
        }
    }
    Shape s = x.s;
    Tens u = tens_new(s.C, s.T, 2 * s.H, 2 * s.W);
    ivae_upsample_chunk(u.d, x.d, s.C, s.T, s.H, s.W, 0, 1);
    tens_free(x);
    Tens y = conv_same(m, &b->resample, u);
    tens_free(u);
    return y;
}

static Tens block_forward(WanModel *m, WBlock *b, Tens x) {
    return b->kind == W_RES ? res_forward(m, b, x) : b->kind == W_DOWN ? down_forward(m, b, x) : up_forward(m, b, x);
}

/* ========================================================================== */
/* 4. the encoder and the decoder (SPEC 7)                                    */
/* ========================================================================== */

typedef struct {
    WanTraceFn fn;
    void *ctx;
    int chunk;
} Trace;

static void trace(Trace *tr, const char *name, Tens x) {
    if (tr && tr->fn) tr->fn(tr->ctx, name, tr->chunk, x.d, x.s.C, x.s.T, x.s.H, x.s.W);
}

static Tens mid_forward(WanModel *m, WMid *mid, Tens x) {
    x = res_forward(m, &mid->res0, x);
    x = attn_forward(m, &mid->attn, x);
    return res_forward(m, &mid->res1, x);
}

/* one chunk (3, t, H, W) -> (2z, t', H/8, W/8) after quant_conv */
static Tens encoder_forward(WanModel *m, Tens x, Trace *tr) {
    Tens h = conv_same(m, &m->enc_conv_in, x);
    tens_free(x);
    trace(tr, "encoder.conv_in", h);
    for (int j = 0; j < m->n_enc; j++) { /* res res down, res res down3d, res res down3d, res res */
        h = block_forward(m, &m->enc[j], h);
        trace(tr, m->enc[j].name, h);
    }
    h = mid_forward(m, &m->enc_mid, h);
    trace(tr, "encoder.mid_block", h);
    Tens a = norm_silu(m, m->enc_norm_out, h);
    tens_free(h);
    h = conv_same(m, &m->enc_conv_out, a);
    tens_free(a);
    trace(tr, "encoder.conv_out", h);
    Tens q = conv_same(m, &m->quant_conv, h);
    tens_free(h);
    trace(tr, "quant_conv", q);
    return q;
}

/* one latent frame (z, 1, h, w) -> (3, 1 or 4, 8h, 8w) */
static Tens decoder_forward(WanModel *m, Tens z, Trace *tr) {
    Tens x = conv_same(m, &m->post_quant_conv, z);
    tens_free(z);
    trace(tr, "post_quant_conv", x);
    Tens h = conv_same(m, &m->dec_conv_in, x);
    tens_free(x);
    trace(tr, "decoder.conv_in", h);
    h = mid_forward(m, &m->dec_mid, h);
    trace(tr, "decoder.mid_block", h);
    for (int j = 0, s = 0; j < m->n_dec; j++) { /* per stage: 3 res, then the upsampler (not in the last stage) */
        h = block_forward(m, &m->dec[j], h);
        int stage_end = m->dec[j].kind == W_UP || j == m->n_dec - 1;
        if (stage_end) {
            char name[64];
            snprintf(name, sizeof name, "decoder.up_blocks.%d", s++);
            trace(tr, name, h);
        }
    }
    Tens a = norm_silu(m, m->dec_norm_out, h);
    tens_free(h);
    h = conv_same(m, &m->dec_conv_out, a);
    tens_free(a);
    trace(tr, "decoder.conv_out", h);
    return h;
}

/* ========================================================================== */
/* 5. encode and decode                                                       */
/* ========================================================================== */

static void reset_block(WBlock *b) {
    stream_reset(&b->conv1), stream_reset(&b->conv2), stream_reset(&b->time_conv);
    b->first_done = 0;
}

static void reset_mid(WMid *mid) { reset_block(&mid->res0), reset_block(&mid->res1); }

/* copies frames [t0, t0+n) of a (C, T, H, W) tensor to or from a (C, n, H, W) one */
static void copy_frames(real *dst, int dT, int dt0, const real *src, int sT, int st0, int C, int n, size_t fr) {
    for (int c = 0; c < C; c++)
        memcpy(dst + ((size_t)c * dT + dt0) * fr, src + ((size_t)c * sT + st0) * fr, (size_t)n * fr * sizeof(real));
}

static int check_shape(int T, int H, int W) {
    if (T < 1 || (T - 1) % 4 != 0) {
        ivae_set_error("%d frames: the Wan VAE takes 1 + 4k frames (1, 5, 9, ...; the official code would drop the "
                       "extra ones silently; cut with --frames)",
                       T);
        return -1;
    }
    if (H < 8 || W < 8 || H % 8 || W % 8) {
        ivae_set_error("%dx%d pixels: the Wan VAE needs height and width that are multiples of 8", H, W);
        return -1;
    }
    return 0;
}

int wan_encode(WanModel *m, const real *x, int T, int H, int W, real *mu, real *logvar, WanTraceFn fn, void *ctx) {
    if (!x || check_shape(T, H, W) != 0) {
        if (!x) ivae_set_error("no input");
        return -1;
    }
    stream_reset(&m->enc_conv_in), stream_reset(&m->enc_conv_out);
    for (int j = 0; j < m->n_enc; j++) reset_block(&m->enc[j]);
    reset_mid(&m->enc_mid);
    Trace tr = {fn, ctx, 0};
    int Tz = (T - 1) / 4 + 1, z = m->z;
    size_t fr = (size_t)H * W, zfr = (size_t)(H / 8) * (W / 8);
    for (int k = 0, t0 = 0; k < Tz; k++) { /* chunks of frames {0}, {1..4}, {5..8}, ... */
        int n = k == 0 ? 1 : 4;
        pool_trim();
        Tens c = tens_new(3, n, H, W);
        copy_frames(c.d, n, 0, x, T, t0, 3, n, fr);
        tr.chunk = k;
        Tens h = encoder_forward(m, c, &tr); /* (2z, 1, H/8, W/8) */
        copy_frames(mu, Tz, k, h.d, 1, 0, z, 1, zfr);
        if (logvar) copy_frames(logvar, Tz, k, h.d + (size_t)z * zfr, 1, 0, z, 1, zfr);
        tens_free(h);
        t0 += n;
    }
    return 0;
}

int wan_decode(WanModel *m, const real *zl, int Tz, int Hz, int Wz, real *xhat, WanTraceFn fn, void *ctx) {
    if (!zl || Tz < 1 || Hz < 1 || Wz < 1) {
        ivae_set_error("latent shape %dx%dx%d must be positive", Tz, Hz, Wz);
        return -1;
    }
    stream_reset(&m->dec_conv_in), stream_reset(&m->dec_conv_out);
    reset_mid(&m->dec_mid);
    for (int j = 0; j < m->n_dec; j++) reset_block(&m->dec[j]);
    Trace tr = {fn, ctx, 0};
    int T = 1 + 4 * (Tz - 1), H = 8 * Hz, W = 8 * Wz;
    size_t fr = (size_t)H * W, zfr = (size_t)Hz * Wz;
    for (int k = 0, t0 = 0; k < Tz; k++) { /* one latent frame at a time */
        pool_trim();
        Tens c = tens_new(m->z, 1, Hz, Wz);
        copy_frames(c.d, 1, 0, zl, Tz, k, m->z, 1, zfr);
        tr.chunk = k;
        Tens y = decoder_forward(m, c, &tr); /* (3, 1 then 4, H, W) */
        copy_frames(xhat, T, t0, y.d, y.s.T, 0, 3, y.s.T, fr);
        t0 += y.s.T;
        tens_free(y);
    }
    return 0;
}

/* --- spatial tiling, for frames that do not fit ------------------------------
   The frame is cut into tiles of `tile` pixels that overlap by `overlap`
   (diffusers' defaults: 256 and 64, a stride of 192); each tile runs the
   whole clip through the model on its own (its own caches: never tiled in
   time, which is what makes other ports flicker). In raster order, each
   result tile is blended linearly with its already blended upper and left
   neighbours over the overlap, then its stride x stride top-left corner is
   kept. Sizes in the tile's own units: pixels for encode's input and
   decode's output, pixels / 8 in the latent. */

typedef struct {
    int C, T, h, w; /* one tile result (C, T, h, w) */
    real *d;
} Tile;

/* b's first `blend` rows (vertical) or columns := a's last ones faded into b's */
static void blend_edge(Tile *b, const Tile *a, int blend, int vertical) {
    int n = vertical ? (blend < a->h && blend < b->h ? blend : (a->h < b->h ? a->h : b->h))
                     : (blend < a->w && blend < b->w ? blend : (a->w < b->w ? a->w : b->w));
    for (int c = 0; c < b->C; c++)
        for (int t = 0; t < b->T; t++) {
            real *bf = b->d + ((size_t)c * b->T + t) * b->h * b->w;
            const real *af = a->d + ((size_t)c * a->T + t) * a->h * a->w;
            for (int k = 0; k < n; k++) {
                real wb = (real)k / (real)blend, wa = 1 - wb;
                if (vertical)
                    for (int x = 0; x < b->w && x < a->w; x++)
                        bf[(size_t)k * b->w + x] = af[(size_t)(a->h - blend + k) * a->w + x] * wa + bf[(size_t)k * b->w + x] * wb;
                else
                    for (int y = 0; y < b->h && y < a->h; y++)
                        bf[(size_t)y * b->w + k] = af[(size_t)y * a->w + a->w - blend + k] * wa + bf[(size_t)y * b->w + k] * wb;
            }
        }
}

/* run(m, in tile (Cin, Tin, ih, iw)) -> result tile; `f` = result pixels
   per input pixel (1/8 for encode, 8 for decode), as num/den */
typedef int (*TileFn)(WanModel *m, const real *in, int Tin, int ih, int iw, Tile *out);

static int tile_encode(WanModel *m, const real *in, int T, int ih, int iw, Tile *out) {
    *out = (Tile){m->z, (T - 1) / 4 + 1, ih / 8, iw / 8, NULL};
    out->d = xmalloc((size_t)out->C * out->T * out->h * out->w * sizeof(real));
    return wan_encode(m, in, T, ih, iw, out->d, NULL, NULL, NULL);
}

static int tile_decode(WanModel *m, const real *in, int Tz, int ih, int iw, Tile *out) {
    *out = (Tile){3, 1 + 4 * (Tz - 1), ih * 8, iw * 8, NULL};
    out->d = xmalloc((size_t)out->C * out->T * out->h * out->w * sizeof(real));
    return wan_decode(m, in, Tz, ih, iw, out->d, NULL, NULL);
}

/* in (Cin, T, H, W) tiled by tile/overlap (in its units), each tile run by
   fn; out (C, To, H * num / den, W * num / den) */
static int run_tiled(WanModel *m, TileFn fn, const real *in, int Cin, int T, int H, int W, int tile, int overlap,
                     int num, int den, real *out) {
    int stride = tile - overlap, ny = (H - overlap + stride - 1) / stride, nx = (W - overlap + stride - 1) / stride;
    if (ny < 1) ny = 1;
    if (nx < 1) nx = 1;
    int ostride = stride * num / den, blend = overlap * num / den, OH = H * num / den, OW = W * num / den;
    Tile *above = xcalloc((size_t)nx, sizeof(Tile)), *row = xcalloc((size_t)nx, sizeof(Tile));
    int rc = 0;
    for (int ty = 0; ty < ny && rc == 0; ty++) {
        for (int tx = 0; tx < nx && rc == 0; tx++) {
            int y0 = ty * stride, x0 = tx * stride;
            int th = H - y0 < tile ? H - y0 : tile, tw = W - x0 < tile ? W - x0 : tile;
            real *sub = xmalloc((size_t)Cin * T * th * tw * sizeof(real));
            for (int c = 0; c < Cin; c++)
                for (int t = 0; t < T; t++)
                    for (int y = 0; y < th; y++)
                        memcpy(sub + (((size_t)c * T + t) * th + y) * tw, in + (((size_t)c * T + t) * H + y0 + y) * W + x0,
                               tw * sizeof(real));
            Tile r;
            rc = fn(m, sub, T, th, tw, &r);
            free(sub);
            if (rc != 0) {
                free(r.d);
                break;
            }
            if (ty > 0) blend_edge(&r, &above[tx], blend, 1);
            if (tx > 0) blend_edge(&r, &row[tx - 1], blend, 0);
            /* keep the top-left ostride x ostride corner (all of it at the frame's edge) */
            int oy = ty * ostride, ox = tx * ostride;
            int kh = ty == ny - 1 ? OH - oy : ostride, kw = tx == nx - 1 ? OW - ox : ostride;
            for (int c = 0; c < r.C; c++)
                for (int t = 0; t < r.T; t++)
                    for (int y = 0; y < kh && y < r.h; y++)
                        memcpy(out + (((size_t)c * r.T + t) * OH + oy + y) * OW + ox,
                               r.d + (((size_t)c * r.T + t) * r.h + y) * r.w, (size_t)(kw < r.w ? kw : r.w) * sizeof(real));
            row[tx] = r;
        }
        for (int tx = 0; tx < nx; tx++) free(above[tx].d), above[tx] = row[tx], row[tx] = (Tile){0};
    }
    for (int tx = 0; tx < nx; tx++) free(above[tx].d), free(row[tx].d);
    free(above), free(row);
    return rc;
}

static int check_tiling(int tile, int overlap) {
    if (tile < 16 || tile % 8 || overlap < 0 || overlap % 8 || overlap >= tile) {
        ivae_set_error("tiles of %d pixels overlapping by %d: the tile must be a multiple of 8 of at least 16, the "
                       "overlap a multiple of 8 below it",
                       tile, overlap);
        return -1;
    }
    return 0;
}

int wan_encode_tiled(WanModel *m, const real *x, int T, int H, int W, real *mu, int tile, int overlap) {
    if (check_tiling(tile, overlap) != 0 || check_shape(T, H, W) != 0) return -1;
    if (H <= tile && W <= tile) return wan_encode(m, x, T, H, W, mu, NULL, NULL, NULL);
    return run_tiled(m, tile_encode, x, 3, T, H, W, tile, overlap, 1, 8, mu);
}

int wan_decode_tiled(WanModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat, int tile, int overlap) {
    if (check_tiling(tile, overlap) != 0) return -1;
    if (Hz * 8 <= tile && Wz * 8 <= tile) return wan_decode(m, z, Tz, Hz, Wz, xhat, NULL, NULL);
    return run_tiled(m, tile_decode, z, m->z, Tz, Hz, Wz, tile / 8, overlap / 8, 8, 1, xhat);
}

/* ========================================================================== */
/* 6. loading                                                                 */
/* ========================================================================== */

int wan_detect(const IvaeSt *st) {
    return (ivae_st_find(st, "encoder.conv_in.weight") && ivae_st_find(st, "post_quant_conv.weight") &&
            ivae_st_find(st, "decoder.up_blocks.0.resnets.0.conv1.weight")) ||
           (ivae_st_find(st, "encoder.conv1.weight") && ivae_st_find(st, "conv2.weight") &&
            ivae_st_find(st, "decoder.upsamples.0.residual.2.weight"));
}

static void free_conv(WConv *c) { free(c->cache); }

static void free_block(WBlock *b) {
    free_conv(&b->conv1), free_conv(&b->conv2), free_conv(&b->shortcut), free_conv(&b->time_conv);
    free_conv(&b->resample);
}

void wan_free(WanModel *m) {
    if (!m) return;
    free_conv(&m->enc_conv_in), free_conv(&m->enc_conv_out), free_conv(&m->dec_conv_in), free_conv(&m->dec_conv_out);
    for (int j = 0; j < m->n_enc; j++) free_block(&m->enc[j]);
    for (int j = 0; j < m->n_dec; j++) free_block(&m->dec[j]);
    free_block(&m->enc_mid.res0), free_block(&m->enc_mid.res1);
    free_block(&m->dec_mid.res0), free_block(&m->dec_mid.res1);
    free(m->t);
    free(m->params);
    free(m);
    pool_empty();
}

int wan_dim(const WanModel *m) { return m->dim; }
int wan_z(const WanModel *m) { return m->z; }
size_t wan_n_params(const WanModel *m) { return m->n_params; }
const char *wan_layout(const WanModel *m) { return m->layout; }

WanModel *wan_load_st(const IvaeSt *st) {
    int official = ivae_st_find(st, "encoder.conv_in.weight") == NULL;
    const IvaeStTensor *win = ivae_st_find(st, official ? "encoder.conv1.weight" : "encoder.conv_in.weight");
    const IvaeStTensor *wpq = ivae_st_find(st, official ? "conv2.weight" : "post_quant_conv.weight");
    if (!win || !wpq || win->ndim != 5 || wpq->ndim != 5) {
        ivae_set_error("%s: not a Wan 2.1 VAE (no %s)", st->path,
                       official ? "encoder.conv1.weight / conv2.weight" : "encoder.conv_in.weight / post_quant_conv.weight");
        return NULL;
    }
    int dim = (int)win->shape[0], z = (int)wpq->shape[0];
    if (dim < 1 || dim > 4096 || dim % 2 || z < 1 || z > 4096) {
        ivae_set_error("%s: Wan 2.1 VAE of width %d and %d latent channels: out of range", st->path, dim, z);
        return NULL;
    }
    WanModel *m = xcalloc(1, sizeof *m);
    m->dim = dim, m->z = z, m->layout = official ? "official" : "diffusers";
    build(m);
    /* every tensor present with its shape before anything big is allocated */
    for (int j = 0; j < m->n_tensors; j++) {
        const WanTensor *t = &m->t[j];
        const char *name = official ? t->official : t->name;
        const IvaeStTensor *f = ivae_st_find(st, name);
        if (!f) {
            ivae_set_error("%s: Wan 2.1 VAE (%s layout, dim %d, z %d): tensor '%s' is missing", st->path, m->layout,
                           dim, z, name);
            goto fail;
        }
        int same = f->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = f->shape[d] == t->shape[d];
        if (!same) {
            char want[64] = "", got[64] = "";
            for (int d = 0; d < t->ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", d ? ", " : "", t->shape[d]);
            for (int d = 0; d < f->ndim; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)f->shape[d]);
            ivae_set_error("%s: tensor '%s' has shape (%s), expected (%s) for dim %d, z %d", st->path, name, got,
                           want, dim, z);
            goto fail;
        }
    }
    for (int k = 0; k < st->n; k++) {
        int known = 0;
        for (int j = 0; j < m->n_tensors && !known; j++)
            known = strcmp(st->t[k].name, official ? m->t[j].official : m->t[j].name) == 0;
        if (!known) {
            ivae_set_error("%s: tensor '%s' is not part of a Wan 2.1 VAE (%s layout)", st->path, st->t[k].name,
                           m->layout);
            goto fail;
        }
    }
    m->params = xmalloc(m->n_params * sizeof(real));
    for (int j = 0; j < m->n_tensors; j++)
        if (ivae_st_read(st, ivae_st_find(st, official ? m->t[j].official : m->t[j].name), m->params + m->t[j].offset) != 0)
            goto fail;
    return m;
fail:
    wan_free(m);
    return NULL;
}

WanModel *wan_new_random(int dim, int z, uint64_t seed) {
    WanModel *m = xcalloc(1, sizeof *m);
    m->dim = dim, m->z = z, m->layout = "diffusers";
    build(m);
    m->params = xmalloc(m->n_params * sizeof(real));
    IvaeRng rng = {seed};
    for (int j = 0; j < m->n_tensors; j++) {
        const WanTensor *t = &m->t[j];
        size_t fan_in = t->ndim > 1 ? t->numel / (size_t)t->shape[0] : 1;
        int gamma = strstr(t->name, ".gamma") != NULL, bias = t->ndim == 1;
        double a = sqrt(3.0 / (double)fan_in) * 0.5;
        for (size_t e = 0; e < t->numel; e++) {
            double u = ivae_rng_uniform(&rng);
            m->params[t->offset + e] = (real)(gamma ? 0.5 + u : bias ? 0.2 * u - 0.1 : (2 * u - 1) * a);
        }
    }
    return m;
}

WanModel *wan_load(const char *path) {
    IvaeSt *st = ivae_st_open(path);
    if (!st) return NULL;
    WanModel *m = wan_load_st(st);
    ivae_st_close(st);
    return m;
}

/* ========================================================================== */
/* 7. the network as data (wan.h: WanGraph), for other back ends              */
/* ========================================================================== */

static WanConvDesc conv_desc(const WConv *c) { return (WanConvDesc){c->w, c->b, c->cout, c->cin, c->kt, c->kh, c->kw}; }

static WanBlockDesc block_desc(const WBlock *b) {
    WanBlockDesc d = {0};
    d.kind = b->kind == W_RES ? WAN_BLOCK_RES : b->kind == W_DOWN ? WAN_BLOCK_DOWN : WAN_BLOCK_UP;
    d.name = b->name, d.cin = b->cin, d.cout = b->cout;
    d.norm1 = b->norm1, d.norm2 = b->norm2;
    d.conv1 = conv_desc(&b->conv1), d.conv2 = conv_desc(&b->conv2), d.shortcut = conv_desc(&b->shortcut);
    d.has_shortcut = b->has_shortcut;
    d.resample = conv_desc(&b->resample), d.time_conv = conv_desc(&b->time_conv);
    d.temporal = b->temporal;
    return d;
}

void wan_graph(const WanModel *m, int decoder, WanGraph *g) {
    memset(g, 0, sizeof *g);
    const WMid *mid = decoder ? &m->dec_mid : &m->enc_mid;
    g->conv_in = conv_desc(decoder ? &m->dec_conv_in : &m->enc_conv_in);
    g->conv_out = conv_desc(decoder ? &m->dec_conv_out : &m->enc_conv_out);
    g->quant = conv_desc(decoder ? &m->post_quant_conv : &m->quant_conv);
    g->n_blocks = decoder ? m->n_dec : m->n_enc;
    for (int j = 0; j < g->n_blocks && j < WAN_MAX_BLOCKS; j++) g->block[j] = block_desc(decoder ? &m->dec[j] : &m->enc[j]);
    g->mid_res0 = block_desc(&mid->res0), g->mid_res1 = block_desc(&mid->res1);
    g->attn_C = mid->attn.C, g->attn_norm = mid->attn.norm;
    g->attn_qkv = conv_desc(&mid->attn.qkv), g->attn_proj = conv_desc(&mid->attn.proj);
    g->norm_out = decoder ? m->dec_norm_out : m->enc_norm_out;
}

const real *wan_params(const WanModel *m) { return m->params; }
int wan_n_tensors(const WanModel *m) { return m->n_tensors; }

const char *wan_tensor(const WanModel *m, int j, size_t *offset, size_t *numel) {
    if (j < 0 || j >= m->n_tensors) return NULL;
    if (offset) *offset = m->t[j].offset;
    if (numel) *numel = m->t[j].numel;
    return m->t[j].name;
}

int wan_check_shape(int T, int H, int W) { return check_shape(T, H, W); }
