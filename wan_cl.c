/*
 * wan_cl.c: the Wan 2.1 VAE (wan.c, SPEC 7) on an OpenCL device (wan_cl.h).
 *
 * This file is wan.c's sections 2 - 5 again, with every layer call replaced
 * by its OpenCL twin (ivae_cl.c, kernels.cl) and every chunk tensor by a
 * device buffer. The blocks and the chunk loops follow their C namesakes
 * line for line, in the same order, so that strict mode gives the CPU's bits:
 * the same kernels in the same order make the same floats. Read it next to
 * wan.c.
 *
 *   1. the device model: one buffer per parameter tensor, the graph
 *      (wan_graph) with a cache buffer per cached conv
 *   2. the chunk pool: device buffers handed out and taken back as wan.c
 *      mallocs and frees its chunk tensors
 *   3. layers with state: the cached causal conv, norm + SiLU
 *   4. blocks: residual, attention, downsample, upsample
 *   5. the encoder and the decoder; encode and decode, the chunk loops
 *
 * Fast mode differs only in the layer calls: the convolutions and attention
 * use the tiled kernels (ivae_cl_*_fast); everything else is shared.
 */
#include "wan_cl.h"
#include "ivae_cl.h"
#include "layers.h"

#include <stdlib.h>
#include <string.h>

/* ========================================================================== */
/* 1. the device model                                                        */
/* ========================================================================== */

/* a conv: its weight and bias buffers (the tensors', not owned) and, for a
   causal conv with time context (kt = 3), its cache on the device: the last
   kt-1 frames of its input (cin, kt-1, H, W) and how many frames of the
   stream it has seen (wan.c's WConv) */
typedef struct {
    WanConvDesc d;
    cl_mem w, b;
    cl_mem cache;
    size_t cache_cap;
    int seen;
} ClConv;

typedef struct {
    WanBlockDesc d;
    cl_mem norm1, norm2;                /* RES: gammas */
    ClConv conv1, conv2, shortcut;      /* RES */
    ClConv resample, time_conv;         /* DOWN, UP */
    int first_done;                     /* the stream's first chunk has passed */
} ClBlock;

/* the encoder or the decoder (wan.h's WanGraph, on the device) */
typedef struct {
    ClConv conv_in, conv_out, quant;
    int n_blocks;
    ClBlock block[WAN_MAX_BLOCKS];
    ClBlock res0, res1;                 /* the mid block's residual blocks, */
    int attn_C;
    cl_mem attn_norm;                   /* and its attention: gamma (C), */
    ClConv qkv, proj;                   /* to_qkv and proj */
    cl_mem norm_out;
} ClPart;

/* one chunk tensor: a pool buffer holding (C, T, H, W) */
typedef struct {
    cl_mem d;
    Shape s;
} Tens;

typedef struct {
    cl_mem b;
    size_t cap;                         /* floats */
    int busy;
} PoolBuf;

struct WanCl {
    IvaeCl *cl;
    WanModel *m;
    int fast;
    int n_t;
    cl_mem *tensor;                     /* (n_t) one buffer per parameter tensor */
    size_t *t_off;                      /* (n_t) its offset in wan_params(m), increasing */
    ClPart part[2];                     /* encoder, decoder */
    PoolBuf *pool;                      /* 2. the chunk pool */
    int pool_n, pool_cap;
    real *host;                         /* staging for one input or output chunk */
    size_t host_cap;
    WanTraceFn trace;                   /* wan_cl_set_trace: every block's output, read back */
    void *trace_ctx;
    int chunk;
    real *tbuf;                         /* staging for a traced tensor */
    size_t tbuf_cap;
};

#define TRY(call)                                                                                                  \
    do {                                                                                                           \
        if ((call) != 0) return -1;                                                                                \
    } while (0)

static void release(cl_mem b) {
    if (b) IVAE_CL_CHECK(clReleaseMemObject(b));
}

/* the buffer of the tensor at offset off (the offsets increase with j) */
static cl_mem tensor_at(const WanCl *w, size_t off) {
    int lo = 0, hi = w->n_t - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (w->t_off[mid] == off) return w->tensor[mid];
        if (w->t_off[mid] < off) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static int conv_setup(WanCl *w, ClConv *c, WanConvDesc d) {
    memset(c, 0, sizeof *c);
    c->d = d;
    c->w = tensor_at(w, d.w), c->b = tensor_at(w, d.b);
    if (!c->w || !c->b) {
        ivae_set_error("wan_graph gave a conv at offset %zu that is no tensor's", d.w);
        return -1;
    }
    return 0;
}

static int gamma_setup(WanCl *w, cl_mem *g, size_t off) {
    if (!(*g = tensor_at(w, off))) {
        ivae_set_error("wan_graph gave a gamma at offset %zu that is no tensor's", off);
        return -1;
    }
    return 0;
}

static int block_setup(WanCl *w, ClBlock *b, const WanBlockDesc *d) {
    memset(b, 0, sizeof *b);
    b->d = *d;
    if (d->kind == WAN_BLOCK_RES) {
        TRY(gamma_setup(w, &b->norm1, d->norm1));
        TRY(gamma_setup(w, &b->norm2, d->norm2));
        TRY(conv_setup(w, &b->conv1, d->conv1));
        TRY(conv_setup(w, &b->conv2, d->conv2));
        if (d->has_shortcut) TRY(conv_setup(w, &b->shortcut, d->shortcut));
    } else {
        TRY(conv_setup(w, &b->resample, d->resample));
        if (d->temporal) TRY(conv_setup(w, &b->time_conv, d->time_conv));
    }
    return 0;
}

static int part_setup(WanCl *w, ClPart *p, int decoder) {
    WanGraph g;
    wan_graph(w->m, decoder, &g);
    TRY(conv_setup(w, &p->conv_in, g.conv_in));
    TRY(conv_setup(w, &p->conv_out, g.conv_out));
    TRY(conv_setup(w, &p->quant, g.quant));
    p->n_blocks = g.n_blocks;
    for (int j = 0; j < g.n_blocks; j++) TRY(block_setup(w, &p->block[j], &g.block[j]));
    TRY(block_setup(w, &p->res0, &g.mid_res0));
    TRY(block_setup(w, &p->res1, &g.mid_res1));
    p->attn_C = g.attn_C;
    TRY(gamma_setup(w, &p->attn_norm, g.attn_norm));
    TRY(conv_setup(w, &p->qkv, g.attn_qkv));
    TRY(conv_setup(w, &p->proj, g.attn_proj));
    return gamma_setup(w, &p->norm_out, g.norm_out);
}

/* the weights, one buffer per tensor: each must fit in one allocation, and
   all of them in the device (checked before anything is allocated) */
static int model_build(WanCl *w) {
    IvaeCl *cl = w->cl;
    const real *params = wan_params(w->m);
    w->n_t = wan_n_tensors(w->m);
    w->tensor = calloc(w->n_t, sizeof *w->tensor), w->t_off = calloc(w->n_t, sizeof *w->t_off);
    if (!w->tensor || !w->t_off) {
        ivae_set_error("out of memory");
        return -1;
    }
    size_t total = 0;
    for (int j = 0; j < w->n_t; j++) {
        size_t numel;
        const char *name = wan_tensor(w->m, j, &w->t_off[j], &numel);
        char what[200];
        snprintf(what, sizeof what, "the Wan 2.1 VAE's tensor '%s'", name);
        TRY(ivae_cl_fits(cl, numel * sizeof(float), what));
        total += numel * sizeof(float);
    }
    if (total > cl->global_mem) {
        ivae_set_error("the Wan 2.1 VAE's weights (%.1f MiB) do not fit in the %.1f MiB of %s", total / 1048576.0,
                       cl->global_mem / 1048576.0, cl->device_name);
        return -1;
    }
    for (int j = 0; j < w->n_t; j++) {
        size_t numel;
        wan_tensor(w->m, j, NULL, &numel);
        if (!(w->tensor[j] = ivae_cl_buffer(cl, numel, params + w->t_off[j]))) return -1;
    }
    TRY(part_setup(w, &w->part[0], 0));
    TRY(part_setup(w, &w->part[1], 1));
    return ivae_cl_finish(cl);
}

static void free_conv(ClConv *c) { release(c->cache); }

static void free_block(ClBlock *b) {
    free_conv(&b->conv1), free_conv(&b->conv2), free_conv(&b->shortcut), free_conv(&b->resample);
    free_conv(&b->time_conv);
}

void wan_cl_free(WanCl *w) {
    if (!w) return;
    for (int p = 0; p < 2; p++) {
        ClPart *q = &w->part[p];
        free_conv(&q->conv_in), free_conv(&q->conv_out), free_conv(&q->quant);
        free_conv(&q->qkv), free_conv(&q->proj);
        for (int j = 0; j < q->n_blocks; j++) free_block(&q->block[j]);
        free_block(&q->res0), free_block(&q->res1);
    }
    for (int k = 0; k < w->pool_n; k++) release(w->pool[k].b);
    for (int j = 0; w->tensor && j < w->n_t; j++) release(w->tensor[j]);
    free(w->pool), free(w->tensor), free(w->t_off), free(w->host), free(w->tbuf);
    free(w);
}

WanCl *wan_cl_new(IvaeCl *cl, WanModel *m, int fast) {
    if (fast && !cl->fast_ok) {
        ivae_set_error("the fast OpenCL kernels cannot run on %s: %s (the strict mode can)", cl->device_name,
                       cl->fast_why);
        return NULL;
    }
    WanCl *w = calloc(1, sizeof *w);
    if (!w) {
        ivae_set_error("out of memory");
        return NULL;
    }
    w->cl = cl, w->m = m, w->fast = fast;
    if (model_build(w) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ivae_error()); /* freeing must not hide the reason */
        wan_cl_free(w);
        ivae_set_error("%s", msg);
        return NULL;
    }
    return w;
}

/* ========================================================================== */
/* 2. the chunk pool                                                          */
/* ========================================================================== */
/* wan.c mallocs each chunk tensor and frees it as soon as it is used; here
   tens_new takes the smallest free pool buffer that is big enough (a new
   one if none is) and tens_free gives it back. The chunks repeat their
   shapes, so after the first two chunks nothing is allocated, and at most
   the few tensors a block holds at once are in use, as in C. */

static void pool_reset(WanCl *w) {
    for (int k = 0; k < w->pool_n; k++) w->pool[k].busy = 0;
}

static cl_mem pool_get(WanCl *w, size_t n) {
    if (n == 0) n = 1;
    int best = -1;
    for (int k = 0; k < w->pool_n; k++)
        if (!w->pool[k].busy && w->pool[k].cap >= n && (best < 0 || w->pool[k].cap < w->pool[best].cap)) best = k;
    if (best < 0) {
        if (w->pool_n == w->pool_cap) {
            int cap = w->pool_cap ? 2 * w->pool_cap : 32;
            PoolBuf *p = realloc(w->pool, cap * sizeof *p);
            if (!p) {
                ivae_set_error("out of memory");
                return NULL;
            }
            w->pool = p, w->pool_cap = cap;
        }
        cl_mem b = ivae_cl_buffer(w->cl, n, NULL);
        if (!b) return NULL;
        best = w->pool_n++;
        w->pool[best] = (PoolBuf){b, n, 0};
    }
    w->pool[best].busy = 1;
    return w->pool[best].b;
}

/* a pool buffer of n floats for `what`, or NULL with the reason (one line) */
static cl_mem pool_get_for(WanCl *w, size_t n, const char *what) {
    if (ivae_cl_fits(w->cl, n * sizeof(float), what) != 0) return NULL;
    return pool_get(w, n);
}

static int tens_new(WanCl *w, Tens *t, int C, int T, int H, int W) {
    char what[128];
    snprintf(what, sizeof what, "a (%d, %d, %d, %d) activation of the Wan 2.1 VAE", C, T, H, W);
    t->s = (Shape){C, T, H, W};
    t->d = pool_get_for(w, shape_numel(t->s), what);
    return t->d ? 0 : -1;
}

static void tens_free(WanCl *w, Tens *t) {
    for (int k = 0; k < w->pool_n && t->d; k++)
        if (w->pool[k].b == t->d) w->pool[k].busy = 0;
    t->d = NULL;
}

/* ========================================================================== */
/* 3. layers with state                                                       */
/* ========================================================================== */

/* the cache := the last kt-1 frames of [cache | x] (zeros before the stream's
   first frame), on the device; wan.c's conv after its convolution */
static int cache_push(WanCl *w, ClConv *c, const Tens *x) {
    int keep = c->d.kt - 1;
    size_t n = (size_t)c->d.cin * keep * x->s.H * x->s.W;
    if (c->cache_cap < n) {
        char what[128];
        snprintf(what, sizeof what, "a (%d, %d, %d, %d) conv cache of the Wan 2.1 VAE", c->d.cin, keep, x->s.H,
                 x->s.W);
        release(c->cache);
        c->cache = NULL, c->cache_cap = 0;
        if (ivae_cl_fits(w->cl, n * sizeof(float), what) != 0 || !(c->cache = ivae_cl_buffer(w->cl, n, NULL)))
            return -1;
        c->cache_cap = n;
    }
    TRY(ivae_cl_cache_push(w->cl, c->cache, keep, c->seen > 0, x->d, x->s.C, x->s.T, x->s.H, x->s.W));
    c->seen += x->s.T;
    return 0;
}

/* y = conv(x) over one chunk (wan.c's conv): kt = 3 is causal with 2 frames
   of context from the cache, which then holds the last 2 frames of
   [cache | x]. st: time stride; ss: spatial stride; pad: spatial padding. */
static int conv(WanCl *w, ClConv *c, const Tens *x, int st, int ss, IvaePad pad, Tens *y) {
    const WanConvDesc *d = &c->d;
    Shape s = x->s;
    int Ho = ivae_conv_out_padded(s.H, d->kh, ss, pad.top, pad.bottom);
    int Wo = ivae_conv_out_padded(s.W, d->kw, ss, pad.left, pad.right);
    int s0 = d->kt > 1 ? c->seen : 0, To = (s0 + s.T - 1) / st - (s0 + st - 1) / st + 1;
    TRY(tens_new(w, y, d->cout, To, Ho, Wo));
    cl_mem prev = d->kt > 1 && c->seen > 0 ? c->cache : NULL;
    int rc = (w->fast ? ivae_cl_conv3d_forward_padded_fast : ivae_cl_conv3d_forward_padded)(
        w->cl, y->d, x->d, prev, s0, c->w, c->b, d->cin, s.T, s.H, s.W, d->cout, d->kt, d->kh, d->kw, st, ss, ss,
        pad.top, pad.bottom, pad.left, pad.right);
    if (rc < 0) return -1;
    return d->kt > 1 ? cache_push(w, c, x) : 0;
}

/* a 3x3x3 body conv or a 1x1x1 one, SPEC padding */
static int conv_same(WanCl *w, ClConv *c, const Tens *x, Tens *y) {
    return conv(w, c, x, 1, 1, ivae_pad_same(c->d.kh, c->d.kw), y);
}

/* y = silu(rms_norm(x)) with gamma g; x is kept */
static int norm_silu(WanCl *w, cl_mem g, const Tens *x, Tens *y) {
    Shape s = x->s;
    size_t N = (size_t)s.T * s.H * s.W;
    Tens n;
    TRY(tens_new(w, &n, s.C, s.T, s.H, s.W));
    TRY(ivae_cl_rmsnorm_forward(w->cl, n.d, x->d, g, s.C, N));
    TRY(tens_new(w, y, s.C, s.T, s.H, s.W));
    TRY(ivae_cl_silu_forward(w->cl, y->d, n.d, (size_t)s.C * N));
    tens_free(w, &n);
    return 0;
}

static void reset_conv(ClConv *c) { c->seen = 0; }

static void reset_block(ClBlock *b) {
    reset_conv(&b->conv1), reset_conv(&b->conv2), reset_conv(&b->time_conv);
    b->first_done = 0;
}

static void reset_part(ClPart *p) {
    reset_conv(&p->conv_in), reset_conv(&p->conv_out);
    for (int j = 0; j < p->n_blocks; j++) reset_block(&p->block[j]);
    reset_block(&p->res0), reset_block(&p->res1);
}

/* the block output x read back and handed to the trace (wan.c's names) */
static int trace(WanCl *w, const char *name, const Tens *x) {
    if (!w->trace) return 0;
    size_t n = shape_numel(x->s);
    if (n > w->tbuf_cap) {
        free(w->tbuf);
        w->tbuf_cap = 0;
        if (!(w->tbuf = malloc(n * sizeof(real)))) {
            ivae_set_error("out of memory (%zu floats for the trace)", n);
            return -1;
        }
        w->tbuf_cap = n;
    }
    TRY(ivae_cl_read(w->cl, w->tbuf, x->d, n));
    w->trace(w->trace_ctx, name, w->chunk, w->tbuf, x->s.C, x->s.T, x->s.H, x->s.W);
    return 0;
}

void wan_cl_set_trace(WanCl *w, WanTraceFn fn, void *ctx) {
    w->trace = fn;
    w->trace_ctx = ctx;
}

/* ========================================================================== */
/* 4. blocks: each takes its input *x and replaces it with its output         */
/* ========================================================================== */

/* h = conv1(silu(norm1(x))); h = conv2(silu(norm2(h))); y = h + shortcut(x) */
static int res_forward(WanCl *w, ClBlock *b, Tens *x) {
    Tens a, h, y, sc;
    TRY(norm_silu(w, b->norm1, x, &a));
    TRY(conv_same(w, &b->conv1, &a, &h));
    tens_free(w, &a);
    TRY(norm_silu(w, b->norm2, &h, &a));
    tens_free(w, &h);
    TRY(conv_same(w, &b->conv2, &a, &y));
    tens_free(w, &a);
    size_t n = shape_numel(y.s);
    if (b->d.has_shortcut) { /* y.d[j] = y.d[j] + sc.d[j] */
        TRY(conv_same(w, &b->shortcut, x, &sc));
        TRY(ivae_cl_residual_add(w->cl, y.d, sc.d, n));
        tens_free(w, &sc);
    } else { /* y.d[j] = y.d[j] + x.d[j] */
        TRY(ivae_cl_residual_add(w->cl, y.d, x->d, n));
    }
    tens_free(w, x);
    *x = y;
    return 0;
}

/* per frame: n = rms_norm(x); [q; k; v] = to_qkv(n); o = softmax(q k^T /
   sqrt(C)) v over the frame's positions; y = x + proj(o) */
static int attn_forward(WanCl *w, ClPart *p, Tens *x) {
    Shape s = x->s;
    size_t N = (size_t)s.T * s.H * s.W, HW = (size_t)s.H * s.W;
    Tens n, qkv, o, y;
    TRY(tens_new(w, &n, s.C, s.T, s.H, s.W));
    TRY(ivae_cl_rmsnorm_forward(w->cl, n.d, x->d, p->attn_norm, s.C, N));
    TRY(conv_same(w, &p->qkv, &n, &qkv));
    tens_free(w, &n);
    TRY(tens_new(w, &o, s.C, s.T, s.H, s.W));
    cl_mem att = pool_get_for(w, N * HW, "the Wan 2.1 VAE's attention matrix (each frame's positions squared)");
    if (!att) return -1;
    /* att (N, HW): the probabilities, not kept */
    TRY((w->fast ? ivae_cl_attention_forward_fast : ivae_cl_attention_forward)(w->cl, o.d, att, qkv.d, s.C, s.T, s.H,
                                                                                s.W, IVAE_ATTN_FRAME));
    tens_free(w, &(Tens){att, {0}});
    tens_free(w, &qkv);
    TRY(conv_same(w, &p->proj, &o, &y));
    tens_free(w, &o);
    TRY(ivae_cl_residual_add(w->cl, y.d, x->d, shape_numel(s))); /* y.d[j] = x.d[j] + y.d[j] */
    tens_free(w, x);
    *x = y;
    return 0;
}

/* Downsample, per frame: one zero column right and one zero row at the
   bottom, then the 3x3 conv with stride 2; downsample3d then halves time
   with time_conv (3x1x1, stride 2) over [the last frame before this chunk |
   this chunk], except on the stream's first chunk, which passes (no
   time_conv, no bias) and becomes the next chunk's context. */
static int down_forward(WanCl *w, ClBlock *b, Tens *x) {
    Tens y, out;
    TRY(conv(w, &b->resample, x, 1, 2, (IvaePad){0, 1, 0, 1}, &y));
    tens_free(w, x);
    if (!b->d.temporal) {
        *x = y;
        return 0;
    }
    ClConv *tc = &b->time_conv;
    if (!b->first_done) { /* wan.c copies y to out; the same floats without the copy */
        b->first_done = 1;
        TRY(cache_push(w, tc, &y)); /* seen = 0: the cache becomes [0, y_0], seen = 1 */
        *x = y;
        return 0;
    }
    TRY(conv(w, tc, &y, 2, 1, IVAE_PAD_NONE, &out));
    tens_free(w, &y);
    *x = out;
    return 0;
}

/* Upsample3d first doubles time: time_conv (C -> 2C, causal, cached; its
   stream starts at the second chunk) and frame t becomes frames 2t
   (channels 0..C-1) and 2t+1 (C..2C-1); the stream's first chunk skips it.
   Then per frame: nearest x2 and a 3x3 conv C -> C/2. */
static int up_forward(WanCl *w, ClBlock *b, Tens *x) {
    if (b->d.temporal) {
        if (!b->first_done) {
            b->first_done = 1;
        } else {
            Tens t2, il;
            TRY(conv_same(w, &b->time_conv, x, &t2)); /* (2C, n, H, W) */
            tens_free(w, x);
            Shape s = t2.s;
            TRY(tens_new(w, &il, s.C / 2, 2 * s.T, s.H, s.W));
            TRY(ivae_cl_upsample_interleave(w->cl, il.d, t2.d, s.C / 2, s.T, s.H, s.W));
            tens_free(w, &t2);
            *x = il;
        }
    }
    Shape s = x->s;
    Tens u, y;
    TRY(tens_new(w, &u, s.C, s.T, 2 * s.H, 2 * s.W));
    TRY(ivae_cl_upsample_chunk(w->cl, u.d, x->d, s.C, s.T, s.H, s.W, 0, 1));
    tens_free(w, x);
    TRY(conv_same(w, &b->resample, &u, &y));
    tens_free(w, &u);
    *x = y;
    return 0;
}

static int block_forward(WanCl *w, ClBlock *b, Tens *x) {
    return b->d.kind == WAN_BLOCK_RES ? res_forward(w, b, x)
           : b->d.kind == WAN_BLOCK_DOWN ? down_forward(w, b, x)
                                         : up_forward(w, b, x);
}

/* ========================================================================== */
/* 5. the encoder and the decoder; encode and decode                          */
/* ========================================================================== */

static int mid_forward(WanCl *w, ClPart *p, Tens *x) {
    TRY(res_forward(w, &p->res0, x));
    TRY(attn_forward(w, p, x));
    return res_forward(w, &p->res1, x);
}

/* one chunk (3, t, H, W) -> (2z, t', H/8, W/8) after quant_conv */
static int encoder_forward(WanCl *w, Tens *x) {
    ClPart *p = &w->part[0];
    Tens h, a;
    TRY(conv_same(w, &p->conv_in, x, &h));
    tens_free(w, x);
    TRY(trace(w, "encoder.conv_in", &h));
    for (int j = 0; j < p->n_blocks; j++) {
        TRY(block_forward(w, &p->block[j], &h));
        TRY(trace(w, p->block[j].d.name, &h));
    }
    TRY(mid_forward(w, p, &h));
    TRY(trace(w, "encoder.mid_block", &h));
    TRY(norm_silu(w, p->norm_out, &h, &a));
    tens_free(w, &h);
    TRY(conv_same(w, &p->conv_out, &a, &h));
    tens_free(w, &a);
    TRY(trace(w, "encoder.conv_out", &h));
    TRY(conv_same(w, &p->quant, &h, x));
    tens_free(w, &h);
    return trace(w, "quant_conv", x);
}

/* one latent frame (z, 1, h, w) -> (3, 1 or 4, 8h, 8w) */
static int decoder_forward(WanCl *w, Tens *z) {
    ClPart *p = &w->part[1];
    Tens x, h, a;
    TRY(conv_same(w, &p->quant, z, &x)); /* post_quant_conv */
    tens_free(w, z);
    TRY(trace(w, "post_quant_conv", &x));
    TRY(conv_same(w, &p->conv_in, &x, &h));
    tens_free(w, &x);
    TRY(trace(w, "decoder.conv_in", &h));
    TRY(mid_forward(w, p, &h));
    TRY(trace(w, "decoder.mid_block", &h));
    for (int j = 0, stage = 0; j < p->n_blocks; j++) {
        TRY(block_forward(w, &p->block[j], &h));
        if (p->block[j].d.kind == WAN_BLOCK_UP || j == p->n_blocks - 1) { /* a stage ends (wan.c's names) */
            char name[64];
            snprintf(name, sizeof name, "decoder.up_blocks.%d", stage++);
            TRY(trace(w, name, &h));
        }
    }
    TRY(norm_silu(w, p->norm_out, &h, &a));
    tens_free(w, &h);
    TRY(conv_same(w, &p->conv_out, &a, z));
    tens_free(w, &a);
    return trace(w, "decoder.conv_out", z);
}

/* copies frames [t0, t0+n) of a (C, T, H, W) tensor to or from a (C, n, H, W) one */
static void copy_frames(real *dst, int dT, int dt0, const real *src, int sT, int st0, int C, int n, size_t fr) {
    for (int c = 0; c < C; c++)
        memcpy(dst + ((size_t)c * dT + dt0) * fr, src + ((size_t)c * sT + st0) * fr, (size_t)n * fr * sizeof(real));
}

static int host_reserve(WanCl *w, size_t n) {
    if (n <= w->host_cap) return 0;
    free(w->host);
    w->host_cap = 0;
    if (!(w->host = malloc(n * sizeof(real)))) {
        ivae_set_error("out of memory (%zu floats for one chunk)", n);
        return -1;
    }
    w->host_cap = n;
    return 0;
}

int wan_cl_encode(WanCl *w, const real *x, int T, int H, int W, real *mu, real *logvar) {
    if (!x) {
        ivae_set_error("no input");
        return -1;
    }
    TRY(wan_check_shape(T, H, W));
    reset_part(&w->part[0]);
    pool_reset(w);
    int Tz = (T - 1) / 4 + 1, z = wan_z(w->m);
    size_t fr = (size_t)H * W, zfr = (size_t)(H / 8) * (W / 8);
    TRY(host_reserve(w, 3 * 4 * fr > 2 * z * zfr ? 3 * 4 * fr : 2 * z * zfr));
    for (int k = 0, t0 = 0; k < Tz; k++) { /* chunks of frames {0}, {1..4}, {5..8}, ... */
        int n = k == 0 ? 1 : 4;
        Tens c;
        w->chunk = k;
        copy_frames(w->host, n, 0, x, T, t0, 3, n, fr);
        TRY(tens_new(w, &c, 3, n, H, W));
        TRY(ivae_cl_write(w->cl, c.d, w->host, shape_numel(c.s)));
        TRY(encoder_forward(w, &c)); /* (2z, 1, H/8, W/8) */
        TRY(ivae_cl_read(w->cl, w->host, c.d, shape_numel(c.s)));
        copy_frames(mu, Tz, k, w->host, 1, 0, z, 1, zfr);
        if (logvar) copy_frames(logvar, Tz, k, w->host + (size_t)z * zfr, 1, 0, z, 1, zfr);
        tens_free(w, &c);
        t0 += n;
    }
    return 0;
}

int wan_cl_decode(WanCl *w, const real *zl, int Tz, int Hz, int Wz, real *xhat) {
    if (!zl || Tz < 1 || Hz < 1 || Wz < 1) {
        ivae_set_error("latent shape %dx%dx%d must be positive", Tz, Hz, Wz);
        return -1;
    }
    reset_part(&w->part[1]);
    pool_reset(w);
    int T = 1 + 4 * (Tz - 1), H = 8 * Hz, W = 8 * Wz, z = wan_z(w->m);
    size_t fr = (size_t)H * W, zfr = (size_t)Hz * Wz;
    TRY(host_reserve(w, 3 * 4 * fr > z * zfr ? 3 * 4 * fr : z * zfr));
    for (int k = 0, t0 = 0; k < Tz; k++) { /* one latent frame at a time */
        Tens c;
        w->chunk = k;
        copy_frames(w->host, 1, 0, zl, Tz, k, z, 1, zfr);
        TRY(tens_new(w, &c, z, 1, Hz, Wz));
        TRY(ivae_cl_write(w->cl, c.d, w->host, shape_numel(c.s)));
        TRY(decoder_forward(w, &c)); /* (3, 1 then 4, H, W) */
        TRY(ivae_cl_read(w->cl, w->host, c.d, shape_numel(c.s)));
        copy_frames(xhat, T, t0, w->host, c.s.T, 0, 3, c.s.T, fr);
        t0 += c.s.T;
        tens_free(w, &c);
    }
    return 0;
}
