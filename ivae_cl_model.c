/*
 * ivae_cl_model.c: the whole ivae model on an OpenCL device (ivae_cl_model.h).
 *
 * This file is ivae.c's model (sections 4 - 6) again, with every layer call replaced by
 * its OpenCL twin (ivae_cl.c, kernels.cl) and every pointer by a cl_mem.
 * block_forward, block_backward and ivae_cl_batch_grad follow their C
 * namesakes line for line, in the same order, so that strict mode is bit for
 * bit the CPU's: the same kernels in the same order give the same floats, and
 * the host combines the per-sample loss terms in double exactly as the C code
 * does. Read it next to ivae.c.
 *
 *   1. the device layout of the flat buffers (params, grads, AdamW moments)
 *   2. the activation pool: ivae.c's arena on the device
 *   3. building the model: the graph from ivae_graph(), buffers per conv
 *   4. the blocks: forward and backward
 *   5. ivae_cl_batch_grad, AdamW, moving the flat buffers
 *   6. inference, block outputs, activation statistics
 *
 * Fast mode differs only in the layer calls: the convolutions and attention
 * use the tiled kernels (ivae_cl_*_fast); everything else is shared.
 *
 * SPEC 9's variants follow ivae.c too: GroupNorm residual blocks (plain
 * convs on the parameters, no SMC), attention with GroupNorm or no norm, and
 * the loss normalisations (sample_grad's divisors); static images reach this
 * file already expanded to clips (main.c, train.c).
 */
#include "ivae_cl.h"
#include "ivae_cl_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* the shape of one sample's tensor, as in ivae.c */
typedef struct {
    int C, T, H, W;
} Shape;

static size_t shape_numel(Shape s) { return (size_t)s.C * s.T * s.H * s.W; }

/* a convolution's buffers: weight and bias, and where their gradients go
   (for an SMC conv, w and dw are the effective weight and its gradient).
   K = kt * kh * kw taps, the sizes in d. */
typedef struct {
    IvaeConvDesc d;
    cl_mem w, dw;       /* (Cout, Cin, kt, kh, kw) sub-buffers of params / grads; SMC: buffers of its own */
    cl_mem b, db;       /* (Cout) sub-buffers of params / grads */
} ClConv;

/* SMC: the conv on the effective weight, and the raw parameters behind it */
typedef struct {
    ClConv c;           /* c.w: What (Cout, Cin, K); c.dw: dL/dWhat, summed by the conv backward passes */
    cl_mem raw, draw;   /* W (Cout, Cin, K) and dL/dW */
    cl_mem s, ds, g, dg; /* scale (Cin), gain (1) and their gradients */
    cl_mem norm;        /* (Cout) n[o] of the current effective weight */
} ClSmc;

/* GroupNorm's weight and bias (SPEC 9): sub-buffers of params and grads */
typedef struct {
    cl_mem w, b, dw, db; /* (C) each */
    int C;
} ClNorm;

/* a block, and what its forward pass saves for the backward pass (pool
   buffers of the current sample, named as in ivae.c's Block). With the
   block's input (C, T, H, W) = in and N = T H W: */
typedef struct {
    IvaeBlockDesc d;
    ClConv conv, proj;  /* CONV, UP, SILU_CONV: conv; RES: the shortcut; ATTN: qkv and proj */
    ClSmc c1, c2;       /* RES (GroupNorm blocks, SPEC 9: plain convs c1.c, c2.c on the params) */
    ClNorm n1, n2;      /* RES with GroupNorm: norm1 (Cin), norm2 (Cout); ATTN with GroupNorm: n1 */
    Shape in, out;      /* the shapes of x and y */
    cl_mem x;           /* (in) the block's input: the previous block's y, or the sample */
    cl_mem a1;          /* SILU_CONV, RES: silu(x) (in) (GroupNorm: silu(g1)); UP: x upsampled (C, T' = 2T-1 or T, 2H, 2W) */
    cl_mem h1, a2;      /* RES: c1's output and silu of it (c1.cout, T, H, W) (GroupNorm: silu(g2)) */
    cl_mem g1, g1s;     /* RES with GroupNorm: gn1(x) (in) and its stats (2, G, T) */
    cl_mem g2, g2s;     /* RES with GroupNorm: gn2(h1) and its stats */
    cl_mem y;           /* (out) the block's output */
    cl_mem n, nrm;      /* ATTN: pixelnorm(x) (C, N) and each pixel's norm (N); GroupNorm: gn(x) and
                           its stats (2, G, T); no norm: n = x */
    cl_mem qkv, att, o; /* ATTN: (3C, N); probabilities (N, L), L = N causal or H W; attention output (C, N) */
} ClBlock;

struct IvaeClModel {
    IvaeCl *cl;
    IvaeModel *m;
    int fast;
    /* 1. the flat buffers in the device layout: tensor t at dev_off[t],
       aligned so that each tensor can be a sub-buffer of its own */
    size_t n_dev, *dev_off;     /* floats in each flat buffer; (n_tensors) offsets */
    cl_mem params, grads, adam_m, adam_v; /* (n_dev) each */
    cl_mem *tp, *tg, *tm, *tv;  /* (n_tensors) sub-buffers: tensor t of each */
    float *host;                /* (n_dev) staging for the flat buffers */
    cl_mem flags;               /* (n_flags) non-finite flags of grads, one per 4096 floats */
    size_t n_flags;
    /* 2. the activation pool: (pool_n) buffers of pool_cap[k] floats; the
       first pool_used are the current sample's */
    cl_mem *pool;
    size_t *pool_cap;
    int pool_n, pool_used;
    /* 3. the graph: encoder (0) and decoder (1), nb[dec] blocks each */
    ClBlock *blk[2];
    int nb[2];
    int ran[2];                 /* the encoder's / decoder's block outputs are the last pass's */
    /* 5. the trainer's units (ivae_units), built on first use */
    IvaeUnit *units;
    int n_units, max_len;
    cl_mem u_off, u_len, u_f, u_out; /* (n_units) device offsets (ulong), lengths (int), factors, sums (double) */
    real *hostx;                /* (n_params) without fp64: the floats the host sums */
    double *pix;                /* activation statistics: per-pixel sums, n_pix of them */
    size_t n_pix, pix_cap;
    cl_mem pix_dev;             /* (pix_cap bytes) the per-pixel sums on the device */
    real *raw;                  /* the raw gradient on the host that smc_raw_get / _set work on */
};

#define TRY(call)                                                                                                  \
    do {                                                                                                           \
        if ((call) != 0) return -1;                                                                                \
    } while (0)

int ivae_cl_built(void) { return 1; }

const char *ivae_cl_describe(const IvaeCl *cl) {
    static char buf[700];
    snprintf(buf, sizeof buf, "platform %d (%s), device %d (%s)", cl->platform_index, cl->platform_name,
             cl->device_index, cl->device_name);
    return buf;
}

int ivae_cl_model_fast(const IvaeClModel *cm) { return cm->fast; }

/* ========================================================================== */
/* 1. the device layout                                                       */
/* ========================================================================== */

static cl_mem sub_buffer(IvaeCl *cl, cl_mem parent, size_t off, size_t n) {
    cl_buffer_region r = {off * sizeof(float), (n ? n : 1) * sizeof(float)};
    cl_int err;
    cl_mem b;
    if (IVAE_CL_CHECK((b = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, &err), err)))
        return NULL;
    return b;
}

/* the index of the tensor at host offset off (an offset from ivae_graph) */
static int tensor_at(const IvaeModel *m, size_t off) {
    for (int t = 0; t < m->n_tensors; t++)
        if (m->info[t].offset == off) return t;
    return -1;
}

/* host layout <-> device layout */
static void pack(const IvaeClModel *cm, float *dev, const real *host) {
    memset(dev, 0, cm->n_dev * sizeof(float));
    for (int t = 0; t < cm->m->n_tensors; t++)
        memcpy(dev + cm->dev_off[t], host + cm->m->info[t].offset, cm->m->info[t].numel * sizeof(float));
}

static void unpack(const IvaeClModel *cm, real *host, const float *dev) {
    for (int t = 0; t < cm->m->n_tensors; t++)
        memcpy(host + cm->m->info[t].offset, dev + cm->dev_off[t], cm->m->info[t].numel * sizeof(float));
}

static int upload_flat(IvaeClModel *cm, cl_mem dst, const real *src) {
    if (src) pack(cm, cm->host, src);
    else memset(cm->host, 0, cm->n_dev * sizeof(float));
    return ivae_cl_write(cm->cl, dst, cm->host, cm->n_dev);
}

static int download_flat(IvaeClModel *cm, real *dst, cl_mem src) {
    TRY(ivae_cl_read(cm->cl, cm->host, src, cm->n_dev));
    unpack(cm, dst, cm->host);
    return 0;
}

/* ========================================================================== */
/* 2. the activation pool                                                     */
/* ========================================================================== */
/* ivae.c's arena on the device: the buffers a sample's passes ask for, in
   the order they ask. pool_reset() starts the next sample at the first
   buffer again; a buffer is replaced only when a sample needs it bigger, so
   after the largest sample nothing is allocated. */

static void release(cl_mem b) {
    if (b) IVAE_CL_CHECK(clReleaseMemObject(b));
}

static void pool_reset(IvaeClModel *cm) { cm->pool_used = 0, cm->ran[0] = cm->ran[1] = 0; }

static cl_mem pool_get(IvaeClModel *cm, size_t n) {
    if (n == 0) n = 1;
    if (cm->pool_used == cm->pool_n) {
        int cap = cm->pool_n ? 2 * cm->pool_n : 64;
        cl_mem *p = realloc(cm->pool, cap * sizeof *p);
        size_t *c = p ? realloc(cm->pool_cap, cap * sizeof *c) : NULL;
        if (!p || !c) {
            if (p) cm->pool = p;
            ivae_set_error("out of memory");
            return NULL;
        }
        cm->pool = p, cm->pool_cap = c;
        for (int k = cm->pool_n; k < cap; k++) cm->pool[k] = NULL, cm->pool_cap[k] = 0;
        cm->pool_n = cap;
    }
    int k = cm->pool_used++;
    if (cm->pool_cap[k] < n) {
        release(cm->pool[k]);
        cm->pool_cap[k] = 0;
        if (!(cm->pool[k] = ivae_cl_buffer(cm->cl, n, NULL))) return NULL;
        cm->pool_cap[k] = n;
    }
    return cm->pool[k];
}

/* a pool buffer holding n floats from the host */
static cl_mem pool_upload(IvaeClModel *cm, const real *src, size_t n) {
    cl_mem b = pool_get(cm, n);
    if (!b || ivae_cl_write(cm->cl, b, src, n) != 0) return NULL;
    return b;
}

/* ========================================================================== */
/* 3. building the model                                                      */
/* ========================================================================== */

/* the sub-buffers of a conv's parameter tensors (offsets from ivae_graph) */
static int conv_setup(IvaeClModel *cm, ClConv *c, IvaeConvDesc d) {
    int tw = tensor_at(cm->m, d.w), tb = tensor_at(cm->m, d.b);
    if (tw < 0 || tb < 0) {
        ivae_set_error("ivae_graph gave a conv at offset %zu that is no tensor's", d.w);
        return -1;
    }
    c->d = d;
    c->w = cm->tp[tw], c->dw = cm->tg[tw];
    c->b = cm->tp[tb], c->db = cm->tg[tb];
    return 0;
}

/* SMC: the raw tensors, and buffers of their own for What, dWhat and n */
static int smc_setup(IvaeClModel *cm, ClSmc *s, IvaeConvDesc d, size_t scale, size_t gain) {
    TRY(conv_setup(cm, &s->c, d));
    int ts = tensor_at(cm->m, scale), tg = tensor_at(cm->m, gain);
    if (ts < 0 || tg < 0) {
        ivae_set_error("ivae_graph gave an SMC scale or gain that is no tensor");
        return -1;
    }
    s->raw = s->c.w, s->draw = s->c.dw;
    s->s = cm->tp[ts], s->ds = cm->tg[ts], s->g = cm->tp[tg], s->dg = cm->tg[tg];
    size_t n = (size_t)d.cout * d.cin * d.kt * d.kh * d.kw;
    if (!(s->c.w = ivae_cl_buffer(cm->cl, n, NULL)) || !(s->c.dw = ivae_cl_buffer(cm->cl, n, NULL)) ||
        !(s->norm = ivae_cl_buffer(cm->cl, d.cout, NULL)))
        return -1;
    return 0;
}

/* GroupNorm's weight and bias (SPEC 9) */
static int norm_setup(IvaeClModel *cm, ClNorm *n, size_t w, size_t b, int C) {
    int tw = tensor_at(cm->m, w), tb = tensor_at(cm->m, b);
    if (tw < 0 || tb < 0 || C < 1) {
        ivae_set_error("ivae_graph gave a GroupNorm at offset %zu that is no tensor's", w);
        return -1;
    }
    n->w = cm->tp[tw], n->dw = cm->tg[tw], n->b = cm->tp[tb], n->db = cm->tg[tb], n->C = C;
    return 0;
}

static int model_build(IvaeClModel *cm) {
    IvaeModel *m = cm->m;
    IvaeCl *cl = cm->cl;
    /* SPEC 9's variants that change the blocks: each one below, or a clear refusal */
    if (m->cfg.block_norm != IVAE_BLOCK_SMC && m->cfg.block_norm != IVAE_BLOCK_GROUPNORM) {
        ivae_set_error("the OpenCL model has no residual blocks of block_norm %d", m->cfg.block_norm);
        return -1;
    }
    if (m->cfg.attn_norm != IVAE_ATTN_PIXELNORM && m->cfg.attn_norm != IVAE_ATTN_GROUPNORM &&
        m->cfg.attn_norm != IVAE_ATTN_NONORM) {
        ivae_set_error("the OpenCL model has no attention of attn_norm %d", m->cfg.attn_norm);
        return -1;
    }
    /* the device layout: each tensor at a multiple of the sub-buffer alignment */
    size_t align = cl->base_align / sizeof(float);
    cm->dev_off = calloc(m->n_tensors, sizeof *cm->dev_off);
    cm->tp = calloc(m->n_tensors, sizeof(cl_mem)), cm->tg = calloc(m->n_tensors, sizeof(cl_mem));
    cm->tm = calloc(m->n_tensors, sizeof(cl_mem)), cm->tv = calloc(m->n_tensors, sizeof(cl_mem));
    if (!cm->dev_off || !cm->tp || !cm->tg || !cm->tm || !cm->tv) {
        ivae_set_error("out of memory");
        return -1;
    }
    for (int t = 0; t < m->n_tensors; t++) {
        cm->dev_off[t] = cm->n_dev;
        cm->n_dev += (m->info[t].numel + align - 1) / align * align;
    }
    if (!(cm->host = malloc(cm->n_dev * sizeof(float)))) {
        ivae_set_error("out of memory (%zu floats for the parameters)", cm->n_dev);
        return -1;
    }
    cl_mem *flat[4] = {&cm->params, &cm->grads, &cm->adam_m, &cm->adam_v};
    cl_mem *sub[4] = {cm->tp, cm->tg, cm->tm, cm->tv};
    for (int k = 0; k < 4; k++) {
        if (!(*flat[k] = ivae_cl_buffer(cl, cm->n_dev, NULL))) return -1;
        for (int t = 0; t < m->n_tensors; t++)
            if (!(sub[k][t] = sub_buffer(cl, *flat[k], cm->dev_off[t], m->info[t].numel))) return -1;
    }
    cm->n_flags = (cm->n_dev + 4095) / 4096;
    if (!(cm->flags = ivae_cl_buffer(cl, cm->n_flags, NULL))) return -1;

    /* the graph */
    for (int dec = 0; dec < 2; dec++) {
        int n = 0;
        for (int cap = 16;; cap *= 2) { /* ivae_graph gives at most cap blocks: grow until they all fit */
            IvaeBlockDesc *d = calloc(cap, sizeof *d);
            if (!d) {
                ivae_set_error("out of memory");
                return -1;
            }
            n = ivae_graph(m, dec, d, cap);
            if (n < cap) {
                cm->blk[dec] = calloc(n ? n : 1, sizeof(ClBlock));
                if (!cm->blk[dec]) {
                    free(d);
                    ivae_set_error("out of memory");
                    return -1;
                }
                for (int j = 0; j < n; j++) cm->blk[dec][j].d = d[j];
                free(d);
                break;
            }
            free(d);
        }
        cm->nb[dec] = n;
        for (int j = 0; j < n; j++) {
            ClBlock *b = &cm->blk[dec][j];
            const IvaeBlockDesc *d = &b->d;
            switch (d->kind) {
            case IVAE_BLK_RES:
                if (m->cfg.block_norm == IVAE_BLOCK_GROUPNORM) { /* SPEC 9: plain convs, two norms */
                    TRY(conv_setup(cm, &b->c1.c, d->c1));
                    TRY(conv_setup(cm, &b->c2.c, d->c2));
                    TRY(norm_setup(cm, &b->n1, d->norm1_w, d->norm1_b, d->norm1_c));
                    TRY(norm_setup(cm, &b->n2, d->norm2_w, d->norm2_b, d->norm2_c));
                } else {
                    TRY(smc_setup(cm, &b->c1, d->c1, d->c1_scale, d->c1_gain));
                    TRY(smc_setup(cm, &b->c2, d->c2, d->c2_scale, d->c2_gain));
                }
                if (d->shortcut) TRY(conv_setup(cm, &b->conv, d->conv));
                break;
            case IVAE_BLK_ATTN:
                if (m->cfg.attn_norm == IVAE_ATTN_GROUPNORM) TRY(norm_setup(cm, &b->n1, d->norm1_w, d->norm1_b, d->norm1_c));
                TRY(conv_setup(cm, &b->conv, d->conv));
                TRY(conv_setup(cm, &b->proj, d->proj));
                break;
            default:
                TRY(conv_setup(cm, &b->conv, d->conv));
            }
        }
    }
    /* the parameters once; zero gradients; the moments if the model has them */
    TRY(upload_flat(cm, cm->params, m->params));
    TRY(ivae_cl_zero(cl, cm->grads, cm->n_dev));
    TRY(upload_flat(cm, cm->adam_m, m->adam_m));
    TRY(upload_flat(cm, cm->adam_v, m->adam_v));
    return ivae_cl_finish(cl);
}

void ivae_cl_model_free(IvaeClModel *cm) {
    if (!cm) return;
    for (int dec = 0; dec < 2; dec++) {
        for (int j = 0; j < cm->nb[dec] && cm->blk[dec]; j++) {
            ClBlock *b = &cm->blk[dec][j];
            if (b->d.kind != IVAE_BLK_RES || !b->c1.raw) continue; /* GroupNorm blocks: sub-buffers only */
            ClSmc *s[2] = {&b->c1, &b->c2};
            for (int k = 0; k < 2; k++) release(s[k]->c.w), release(s[k]->c.dw), release(s[k]->norm);
        }
        free(cm->blk[dec]);
    }
    for (int k = 0; k < cm->pool_n; k++) release(cm->pool[k]);
    free(cm->pool), free(cm->pool_cap);
    cl_mem *sub[4] = {cm->tp, cm->tg, cm->tm, cm->tv};
    for (int k = 0; k < 4; k++) {
        for (int t = 0; sub[k] && t < cm->m->n_tensors; t++) release(sub[k][t]);
        free(sub[k]);
    }
    release(cm->params), release(cm->grads), release(cm->adam_m), release(cm->adam_v), release(cm->flags);
    release(cm->u_off), release(cm->u_len), release(cm->u_f), release(cm->u_out), release(cm->pix_dev);
    free(cm->units), free(cm->hostx), free(cm->pix);
    free(cm->dev_off), free(cm->host);
    free(cm);
}

IvaeClModel *ivae_cl_model_new(IvaeCl *cl, IvaeModel *m, int fast) {
    if (fast && !cl->fast_ok) {
        ivae_set_error("the fast OpenCL kernels cannot run on %s: %s (the strict mode can)", cl->device_name,
                       cl->fast_why);
        return NULL;
    }
    IvaeClModel *cm = calloc(1, sizeof *cm);
    if (!cm) {
        ivae_set_error("out of memory");
        return NULL;
    }
    cm->cl = cl, cm->m = m, cm->fast = fast;
    if (model_build(cm) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ivae_error());
        ivae_cl_model_free(cm);
        ivae_set_error("%s", msg);
        return NULL;
    }
    return cm;
}

/* ========================================================================== */
/* 4. the blocks                                                              */
/* ========================================================================== */

/* the layers, strict or fast: the fast wrappers take the strict ones' arguments */
static int conv_forward(IvaeClModel *cm, cl_mem y, const ClConv *c, cl_mem x, Shape s) {
    const IvaeConvDesc *d = &c->d;
    return (cm->fast ? ivae_cl_conv3d_forward_fast : ivae_cl_conv3d_forward)(
        cm->cl, y, x, c->w, c->b, d->cin, s.T, s.H, s.W, d->cout, d->kt, d->kh, d->kw, d->st, d->sh, d->sw);
}

static int conv_backward(IvaeClModel *cm, cl_mem dx, const ClConv *c, cl_mem dy, cl_mem x, Shape s) {
    const IvaeConvDesc *d = &c->d;
    return (cm->fast ? ivae_cl_conv3d_backward_fast : ivae_cl_conv3d_backward)(
        cm->cl, dx, c->dw, c->db, dy, x, c->w, d->cin, s.T, s.H, s.W, d->cout, d->kt, d->kh, d->kw, d->st, d->sh,
        d->sw);
}

static int attention_forward(IvaeClModel *cm, cl_mem o, cl_mem att, cl_mem qkv, Shape s) {
    return (cm->fast ? ivae_cl_attention_forward_fast : ivae_cl_attention_forward)(cm->cl, o, att, qkv, s.C, s.T, s.H,
                                                                                    s.W, cm->m->cfg.attn);
}

static int attention_backward(IvaeClModel *cm, cl_mem dqkv, cl_mem dout, cl_mem att, cl_mem qkv, Shape s) {
    return (cm->fast ? ivae_cl_attention_backward_fast : ivae_cl_attention_backward)(cm->cl, dqkv, dout, att, qkv,
                                                                                      s.C, s.T, s.H, s.W,
                                                                                      cm->m->cfg.attn);
}

static Shape conv_out_shape(const ClConv *c, Shape s) {
    const IvaeConvDesc *d = &c->d;
    Shape o = {d->cout, (s.T - 1) / d->st + 1, (s.H + 2 * (d->kh / 2) - d->kh) / d->sh + 1,
               (s.W + 2 * (d->kw / 2) - d->kw) / d->sw + 1};
    return o;
}

/* ivae.c's conv_forward, conv_backward and silu: a pool buffer for the result */
static cl_mem conv_fwd(IvaeClModel *cm, const ClConv *c, cl_mem x, Shape s, Shape *os) {
    *os = conv_out_shape(c, s);
    cl_mem y = pool_get(cm, shape_numel(*os));
    if (!y || conv_forward(cm, y, c, x, s) != 0) return NULL;
    return y;
}

static cl_mem conv_bwd(IvaeClModel *cm, const ClConv *c, cl_mem dy, cl_mem x, Shape s) {
    cl_mem dx = pool_get(cm, shape_numel(s));
    if (!dx || conv_backward(cm, dx, c, dy, x, s) != 0) return NULL;
    return dx;
}

static cl_mem silu_fwd(IvaeClModel *cm, cl_mem x, Shape s) {
    cl_mem y = pool_get(cm, shape_numel(s));
    if (!y || ivae_cl_silu_forward(cm->cl, y, x, shape_numel(s)) != 0) return NULL;
    return y;
}

/* ivae.c's groupnorm and groupnorm_backward (SPEC 9): y and its stats (2, G, T)
   in pool buffers; dx, with dweight and dbias added to the gradients. Both
   modes run the strict kernels (GroupNorm has no fast twin). */
static cl_mem gn_fwd(IvaeClModel *cm, const ClNorm *n, cl_mem x, Shape s, cl_mem *stats) {
    cl_mem y = pool_get(cm, shape_numel(s));
    if (!y || !(*stats = pool_get(cm, 2 * (size_t)IVAE_GN_GROUPS * s.T)) ||
        ivae_cl_groupnorm_forward(cm->cl, y, *stats, x, n->w, n->b, s.C, s.T, s.H, s.W, IVAE_GN_GROUPS) != 0)
        return NULL;
    return y;
}

static cl_mem gn_bwd(IvaeClModel *cm, const ClNorm *n, cl_mem dy, cl_mem stats, cl_mem x, Shape s) {
    cl_mem dx = pool_get(cm, shape_numel(s));
    if (!dx || ivae_cl_groupnorm_backward(cm->cl, dx, n->dw, n->db, dy, stats, x, n->w, s.C, s.T, s.H, s.W,
                                          IVAE_GN_GROUPS) != 0)
        return NULL;
    return dx;
}

#define NEED(b)                                                                                                    \
    do {                                                                                                           \
        if (!(b)) return NULL;                                                                                     \
    } while (0)

/* ivae.c's block forward functions (res_forward, attn_forward, ...; whole clips: no streaming) */
static cl_mem block_forward(IvaeClModel *cm, ClBlock *b, cl_mem x, Shape s) {
    IvaeCl *cl = cm->cl;
    Shape os = s, tmp;
    b->in = s;
    b->x = x;
    switch (b->d.kind) {
    case IVAE_BLK_CONV:
        NEED(b->y = conv_fwd(cm, &b->conv, x, s, &os));
        break;
    case IVAE_BLK_SILU_CONV:
        NEED(b->a1 = silu_fwd(cm, x, s));
        NEED(b->y = conv_fwd(cm, &b->conv, b->a1, s, &os));
        break;
    case IVAE_BLK_UP: {
        Shape us = {s.C, b->d.temporal ? 2 * s.T - 1 : s.T, 2 * s.H, 2 * s.W};
        NEED(b->a1 = pool_get(cm, shape_numel(us)));
        NEED(ivae_cl_upsample_forward(cl, b->a1, x, s.C, s.T, s.H, s.W, b->d.temporal) == 0);
        NEED(b->y = conv_fwd(cm, &b->conv, b->a1, us, &os));
        break;
    }
    case IVAE_BLK_RES: {
        // h = smc1(silu(x)); h = smc2(silu(h)); out = shortcut(x) + h
        // (SPEC 9, GroupNorm: h = conv1(silu(gn1(x))); h = conv2(silu(gn2(h))), plain convs)
        int gn = cm->m->cfg.block_norm == IVAE_BLOCK_GROUPNORM;
        if (gn) NEED(b->g1 = gn_fwd(cm, &b->n1, x, s, &b->g1s));
        NEED(b->a1 = silu_fwd(cm, gn ? b->g1 : x, s));
        NEED(b->h1 = conv_fwd(cm, &b->c1.c, b->a1, s, &tmp));
        if (gn) NEED(b->g2 = gn_fwd(cm, &b->n2, b->h1, tmp, &b->g2s));
        NEED(b->a2 = silu_fwd(cm, gn ? b->g2 : b->h1, tmp));
        NEED(b->y = conv_fwd(cm, &b->c2.c, b->a2, tmp, &os));
        cl_mem sc = x;
        if (b->d.shortcut) NEED(sc = conv_fwd(cm, &b->conv, x, s, &tmp));
        NEED(ivae_cl_residual_add(cl, b->y, sc, shape_numel(os)) == 0);
        break;
    }
    case IVAE_BLK_ATTN: {
        // n = pixelnorm(x); qkv = conv(n); o = attention(qkv); out = x + proj(o)
        // (SPEC 9, attn_norm: n = groupnorm(x), or n = x)
        size_t N = (size_t)s.T * s.H * s.W;
        size_t L = cm->m->cfg.attn == IVAE_ATTN_CAUSAL ? N : (size_t)s.H * s.W;
        if (cm->m->cfg.attn_norm == IVAE_ATTN_PIXELNORM) {
            NEED(b->n = pool_get(cm, shape_numel(s)));
            NEED(b->nrm = pool_get(cm, N));
            NEED(ivae_cl_pixelnorm_forward(cl, b->n, b->nrm, x, s.C, N) == 0);
        } else if (cm->m->cfg.attn_norm == IVAE_ATTN_GROUPNORM) {
            NEED(b->n = gn_fwd(cm, &b->n1, x, s, &b->nrm));
        } else {
            b->n = x, b->nrm = NULL; /* read only */
        }
        NEED(b->qkv = conv_fwd(cm, &b->conv, b->n, s, &tmp));
        NEED(b->att = pool_get(cm, N * L));
        NEED(b->o = pool_get(cm, shape_numel(s)));
        NEED(attention_forward(cm, b->o, b->att, b->qkv, s) == 0);
        NEED(b->y = conv_fwd(cm, &b->proj, b->o, s, &os));
        NEED(ivae_cl_residual_add(cl, b->y, x, shape_numel(s)) == 0);
        break;
    }
    }
    b->out = os;
    return b->y;
}

/* ivae.c's block backward functions: dL/d(block input) from dL/d(block output) */
static cl_mem block_backward(IvaeClModel *cm, ClBlock *b, cl_mem dy) {
    IvaeCl *cl = cm->cl;
    Shape s = b->in;
    size_t n = shape_numel(s);
    cl_mem dx = NULL;
    switch (b->d.kind) {
    case IVAE_BLK_CONV:
        NEED(dx = conv_bwd(cm, &b->conv, dy, b->x, s));
        break;
    case IVAE_BLK_SILU_CONV: {
        cl_mem da;
        NEED(da = conv_bwd(cm, &b->conv, dy, b->a1, s));
        NEED(dx = pool_get(cm, n));
        NEED(ivae_cl_silu_backward(cl, dx, da, b->x, n) == 0);
        break;
    }
    case IVAE_BLK_UP: {
        Shape us = {s.C, b->d.temporal ? 2 * s.T - 1 : s.T, 2 * s.H, 2 * s.W};
        cl_mem da;
        NEED(da = conv_bwd(cm, &b->conv, dy, b->a1, us));
        NEED(dx = pool_get(cm, n));
        NEED(ivae_cl_upsample_backward(cl, dx, da, s.C, s.T, s.H, s.W, b->d.temporal) == 0);
        break;
    }
    case IVAE_BLK_RES: {
        // out = shortcut(x) + smc2(silu(smc1(silu(x))))
        //   (GroupNorm: out = shortcut(x) + conv2(silu(gn2(conv1(silu(gn1(x)))))))
        int gn = cm->m->cfg.block_norm == IVAE_BLOCK_GROUPNORM;
        Shape hs = {b->d.c1.cout, s.T, s.H, s.W};
        size_t nh = shape_numel(hs);
        cl_mem da2, dh1, da1, dsc = dy;
        NEED(da2 = conv_bwd(cm, &b->c2.c, dy, b->a2, hs));
        NEED(dh1 = pool_get(cm, nh));
        NEED(ivae_cl_silu_backward(cl, dh1, da2, gn ? b->g2 : b->h1, nh) == 0);
        if (gn) NEED(dh1 = gn_bwd(cm, &b->n2, dh1, b->g2s, b->h1, hs));
        NEED(da1 = conv_bwd(cm, &b->c1.c, dh1, b->a1, s));
        NEED(dx = pool_get(cm, n));
        NEED(ivae_cl_silu_backward(cl, dx, da1, gn ? b->g1 : b->x, n) == 0);
        if (gn) NEED(dx = gn_bwd(cm, &b->n1, dx, b->g1s, b->x, s));
        if (b->d.shortcut) NEED(dsc = conv_bwd(cm, &b->conv, dy, b->x, s));
        NEED(ivae_cl_residual_add(cl, dx, dsc, n) == 0);
        break;
    }
    case IVAE_BLK_ATTN: {
        // out = x + proj(attention(qkv(pixelnorm(x)))) (or groupnorm(x), or x)
        size_t N = (size_t)s.T * s.H * s.W;
        Shape qs = {3 * s.C, s.T, s.H, s.W};
        cl_mem dout, dqkv, dn;
        NEED(dout = conv_bwd(cm, &b->proj, dy, b->o, s));
        NEED(dqkv = pool_get(cm, shape_numel(qs)));
        NEED(attention_backward(cm, dqkv, dout, b->att, b->qkv, s) == 0);
        NEED(dn = conv_bwd(cm, &b->conv, dqkv, b->n, s));
        dx = dn;
        if (cm->m->cfg.attn_norm == IVAE_ATTN_PIXELNORM) {
            NEED(dx = pool_get(cm, n));
            NEED(ivae_cl_pixelnorm_backward(cl, dx, dn, b->nrm, b->x, s.C, N) == 0);
        } else if (cm->m->cfg.attn_norm == IVAE_ATTN_GROUPNORM) {
            NEED(dx = gn_bwd(cm, &b->n1, dn, b->nrm, b->x, s));
        }
        NEED(ivae_cl_residual_add(cl, dx, dy, n) == 0);
        break;
    }
    }
    return dx;
}

static cl_mem run_forward(IvaeClModel *cm, int dec, cl_mem x, Shape s, Shape *os) {
    for (int j = 0; j < cm->nb[dec]; j++) {
        NEED(x = block_forward(cm, &cm->blk[dec][j], x, s));
        s = cm->blk[dec][j].out;
    }
    *os = s;
    cm->ran[dec] = 1;
    return x;
}

static cl_mem run_backward(IvaeClModel *cm, int dec, cl_mem dy) {
    for (int j = cm->nb[dec] - 1; j >= 0; j--) NEED(dy = block_backward(cm, &cm->blk[dec][j], dy));
    return dy;
}

/* ivae.c's smc_prepare and smc_finish, for every SMC conv */
static int smc_prepare(IvaeClModel *cm, ClSmc *s) {
    const IvaeConvDesc *d = &s->c.d;
    int K = d->kt * d->kh * d->kw;
    TRY(ivae_cl_smc_weight_forward(cm->cl, s->c.w, s->norm, s->raw, s->s, s->g, d->cout, d->cin, K));
    return ivae_cl_zero(cm->cl, s->c.dw, (size_t)d->cout * d->cin * K);
}

static int smc_finish(IvaeClModel *cm, ClSmc *s) {
    const IvaeConvDesc *d = &s->c.d;
    return ivae_cl_smc_weight_backward(cm->cl, s->draw, s->ds, s->dg, s->c.dw, s->norm, s->raw, s->s, s->g, d->cout,
                                       d->cin, d->kt * d->kh * d->kw);
}

static int for_each_smc(IvaeClModel *cm, int (*fn)(IvaeClModel *, ClSmc *)) {
    if (cm->m->cfg.block_norm != IVAE_BLOCK_SMC) return 0; /* SPEC 9's GroupNorm blocks: plain convs */
    for (int dec = 0; dec < 2; dec++)
        for (int j = 0; j < cm->nb[dec]; j++) {
            ClBlock *b = &cm->blk[dec][j];
            if (b->d.kind != IVAE_BLK_RES) continue;
            TRY(fn(cm, &b->c1));
            TRY(fn(cm, &b->c2));
        }
    return 0;
}

/* ========================================================================== */
/* 5. the training step                                                       */
/* ========================================================================== */

static int all_finite(const real *v, size_t n) {
    int ok = 1;
    for (size_t j = 0; j < n; j++) ok &= isfinite(v[j]);
    return ok;
}

/* the first block (in forward order) whose output holds a NaN or inf; the
   outputs are copied back only on this rare path */
static int find_nonfinite_activation(IvaeClModel *cm, int sample, char *where) {
    for (int dec = 0; dec < 2; dec++)
        for (int j = 0; j < cm->nb[dec]; j++) {
            const ClBlock *b = &cm->blk[dec][j];
            size_t n = shape_numel(b->out);
            real *y = malloc(n * sizeof(real));
            if (!y) {
                ivae_set_error("out of memory");
                return -1;
            }
            int ok = ivae_cl_read(cm->cl, y, b->y, n) == 0;
            int fin = ok && all_finite(y, n);
            free(y);
            if (!ok) return -1;
            if (!fin) {
                snprintf(where, 128, "sample %d, activation %s", sample, b->d.name);
                return 0;
            }
        }
    snprintf(where, 128, "sample %d, loss (activations finite)", sample);
    return 0;
}

/* the first gradient tensor (in SPEC 5 order) with a NaN or inf: a flag per
   block of 4096 floats on the device, then a look at the flagged ones */
static int find_nonfinite_gradient(IvaeClModel *cm, char *where) {
    float *flags = malloc(cm->n_flags * sizeof(float));
    if (!flags) {
        ivae_set_error("out of memory");
        return -1;
    }
    if (ivae_cl_nonfinite_flags(cm->cl, cm->flags, cm->grads, cm->n_dev, 4096) != 0 ||
        ivae_cl_read(cm->cl, flags, cm->flags, cm->n_flags) != 0) {
        free(flags);
        return -1;
    }
    int any = 0;
    for (size_t b = 0; b < cm->n_flags; b++) any |= flags[b] != 0;
    free(flags);
    if (!any) return 0;
    TRY(ivae_cl_read(cm->cl, cm->host, cm->grads, cm->n_dev));
    for (int t = 0; t < cm->m->n_tensors; t++)
        if (!all_finite(cm->host + cm->dev_off[t], cm->m->info[t].numel)) {
            snprintf(where, 128, "gradient %s", cm->m->info[t].name);
            break;
        }
    return 0;
}

int ivae_cl_zero_grad(IvaeClModel *cm) { return ivae_cl_zero(cm->cl, cm->grads, cm->n_dev); }

/* one sample of ivae_batch_grad: forward, loss, backward; the loss terms
   (floats summed on the device, divided in double here) come back in
   rec, kl, opl */
static int sample_grad(IvaeClModel *cm, IvaeSample *sp, int i, int B, const IvaeLossOpts *opts, real n_ref,
                       IvaeLoss *out) {
    IvaeCl *cl = cm->cl;
    const IvaeConfig *cfg = &cm->m->cfg;
    pool_reset(cm);
    Shape xs = {3, sp->T, sp->H, sp->W}, hs, zs, os;
    size_t nx = shape_numel(xs);
    real w_i = (sp->T == 1 ? opts->w_image : opts->w_video) / (real)B;
    int Tz, Hz, Wz;
    TRY(ivae_latent_shape(cfg, sp->T, sp->H, sp->W, &Tz, &Hz, &Wz));
    size_t nz = (size_t)cfg->z_ch * Tz * Hz * Wz;
    /* the divisors of rec_i and kl_i, as ivae.c's sample_grad: N_ref (SPEC 4),
       1 (sum) or the sample's own element counts (mean; SPEC 9) */
    real n_rec = n_ref, n_kl = n_ref;
    if (opts->loss_norm == IVAE_LOSS_SUM) n_rec = n_kl = 1;
    if (opts->loss_norm == IVAE_LOSS_MEAN) n_rec = (real)nx, n_kl = (real)nz;
    /* x, xhat, dxhat, dx (3, T, H, W); eps, logvar, z, dz (z_ch, Tz, Hz, Wz) = nz values; h, dh (2 nz):
       mu, then the raw logvar; scratch: the loss terms, max(nx, nz) */
    cl_mem x, eps, h, logvar, z, scratch, xhat, dxhat, dz, dh, dx;
    if (!(x = pool_upload(cm, sp->x, nx)) || !(eps = pool_upload(cm, sp->eps, nz))) return -1;

    /* forward: encoder, latent, decoder, loss terms */
    if (!(h = run_forward(cm, 0, x, xs, &hs))) return -1;
    zs = hs;
    zs.C = cfg->z_ch;
    if (!(logvar = pool_get(cm, nz)) || !(z = pool_get(cm, nz)) || !(scratch = pool_get(cm, nx > nz ? nx : nz)))
        return -1;
    double kl_sum, rec_sum;
    TRY(ivae_cl_latent_forward(cl, &kl_sum, logvar, z, h, eps, zs.C, zs.T, zs.H, zs.W, scratch));
    double kl = kl_sum / n_kl;
    if (!(xhat = run_forward(cm, 1, z, zs, &os)) || !(dxhat = pool_get(cm, nx))) return -1;
    real c_rec = w_i / n_rec;
    TRY(ivae_cl_rec_loss(cl, &rec_sum, dxhat, xhat, x, xs.C, xs.T, xs.H, xs.W, c_rec, scratch));
    double rec = rec_sum / n_rec;
    if (!out->nonfinite[0] && !(isfinite(rec) && isfinite(kl))) TRY(find_nonfinite_activation(cm, i, out->nonfinite));

    /* backward: decoder, outlier penalty, latent, encoder */
    if (!(dz = run_backward(cm, 1, dxhat))) return -1;
    double opl = 0;
    if (opts->w_opl != 0) {
        cl_mem opl_stats = pool_get(cm, ivae_cl_opl_scratch(zs.C, zs.T, zs.H, zs.W));
        if (!opl_stats) return -1;
        TRY(ivae_cl_opl_forward_backward(cl, &opl, dz, z, zs.C, zs.T, zs.H, zs.W, w_i * opts->w_opl, opl_stats));
    }
    if (!(dh = pool_get(cm, 2 * nz))) return -1;
    TRY(ivae_cl_latent_backward(cl, dh, dz, logvar, h, eps, nz, w_i * opts->beta / n_kl));
    if (!(dx = run_backward(cm, 0, dh))) return -1;
    /* x also enters the loss directly: rec = |xhat - x| */
    TRY(ivae_cl_residual_sub(cl, dx, dxhat, nx));

    sp->rec = rec, sp->kl = kl;
    out->loss += (double)w_i * (rec + (double)opts->beta * kl + (double)opts->w_opl * opl);
    out->rec += rec / B;
    out->kl += kl / B;
    out->opl += opl / B;
    if (sp->mu) TRY(ivae_cl_read(cl, sp->mu, h, nz));
    if (sp->logvar) TRY(ivae_cl_read(cl, sp->logvar, logvar, nz));
    if (sp->xhat) TRY(ivae_cl_read(cl, sp->xhat, xhat, nx));
    if (sp->dx) TRY(ivae_cl_read(cl, sp->dx, dx, nx));
    return 0;
}

int ivae_cl_batch_grad(IvaeClModel *cm, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeLoss *out) {
    TRY(ivae_check_batch(cm->m, samples, B, opts)); /* ivae_batch_grad's checks and messages */
    real n_ref = (real)3 * opts->ref_t * opts->ref_h * opts->ref_w;
    memset(out, 0, sizeof *out);
    TRY(for_each_smc(cm, smc_prepare));
    for (int i = 0; i < B; i++) TRY(sample_grad(cm, &samples[i], i, B, opts, n_ref, out));
    TRY(for_each_smc(cm, smc_finish));
    if (!out->nonfinite[0]) TRY(find_nonfinite_gradient(cm, out->nonfinite));
    return ivae_cl_finish(cm->cl);
}

/* --- the batch split between processes (ivae.h: IvaeSplit; SPEC 8.2) ----- */

/* the raw gradient on the host (ivae.c's raw_get): the gradients in m's
   layout, each SMC weight's slots holding its dWhat */
static int smc_raw_get(IvaeClModel *cm, ClSmc *s) {
    const IvaeConvDesc *d = &s->c.d;
    return ivae_cl_read(cm->cl, cm->raw + d->w, s->c.dw, (size_t)d->cout * d->cin * d->kt * d->kh * d->kw);
}

/* the inverse (raw_set): dWhat from those slots, and the raw dW back to +0 */
static int smc_raw_set(IvaeClModel *cm, ClSmc *s) {
    const IvaeConvDesc *d = &s->c.d;
    size_t n = (size_t)d->cout * d->cin * d->kt * d->kh * d->kw;
    TRY(ivae_cl_write(cm->cl, s->c.dw, cm->raw + d->w, n));
    return ivae_cl_zero(cm->cl, s->draw, n);
}

static int smc_zero(IvaeClModel *cm, ClSmc *s) {
    const IvaeConvDesc *d = &s->c.d;
    return ivae_cl_zero(cm->cl, s->c.dw, (size_t)d->cout * d->cin * d->kt * d->kh * d->kw);
}

static int raw_get(IvaeClModel *cm, real *R) {
    TRY(download_flat(cm, R, cm->grads));
    cm->raw = R;
    return for_each_smc(cm, smc_raw_get);
}

int ivae_cl_batch_grad_split(IvaeClModel *cm, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeSplit *sp,
                             IvaeLoss *out) {
    TRY(ivae_check_batch(cm->m, samples, B, opts));
    if (sp->i0 < 0 || sp->i1 > B || sp->i0 > sp->i1) {
        ivae_set_error("batch split: samples [%d, %d) of a batch of %d", sp->i0, sp->i1, B);
        return -1;
    }
    real n_ref = (real)3 * opts->ref_t * opts->ref_h * opts->ref_w;
    TRY(for_each_smc(cm, smc_prepare));
    int n_g = 0;
    for (int i = sp->i0; i < sp->i1; i++) {
        memset(&sp->per[i], 0, sizeof sp->per[i]);
        if (sp->i0 > 0) { /* a sample of its own, from +0 */
            TRY(ivae_cl_zero_grad(cm));
            TRY(for_each_smc(cm, smc_zero));
        }
        TRY(sample_grad(cm, &samples[i], i, B, opts, n_ref, &sp->per[i]));
        if (sp->i0 > 0 || i + 1 == sp->i1) TRY(raw_get(cm, sp->g[n_g++]));
    }
    if (sp->exchange(sp->ctx, sp, n_g, cm->m->n_params, B) != 0) return -1;
    TRY(upload_flat(cm, cm->grads, sp->total));
    cm->raw = sp->total;
    TRY(for_each_smc(cm, smc_raw_set));
    ivae_loss_fold(sp->per, B, out);
    for (int i = 0; i < B; i++) /* the other ranks' samples: rec_i and kl_i from the exchange (for the log) */
        if (i < sp->i0 || i >= sp->i1) samples[i].rec = sp->per[i].rec * B, samples[i].kl = sp->per[i].kl * B;
    TRY(for_each_smc(cm, smc_finish));
    if (!out->nonfinite[0]) TRY(find_nonfinite_gradient(cm, out->nonfinite));
    return ivae_cl_finish(cm->cl);
}

/* ivae_adamw_step on the device: the same bias corrections (ivae_adamw_begin) */
int ivae_cl_adamw_step(IvaeClModel *cm, const IvaeAdamW *h) {
    IvaeModel *m = cm->m;
    real c1, c2;
    ivae_adamw_begin(m, h, &c1, &c2);
    for (int t = 0; t < m->n_tensors; t++) {
        const IvaeParamInfo *p = &m->info[t];
        real wd = p->ndim == 5 ? h->weight_decay : 0;
        TRY(ivae_cl_adamw_tensor(cm->cl, cm->tp[t], cm->tg[t], cm->tm[t], cm->tv[t], p->numel, h->lr, h->beta1,
                                 h->beta2, h->eps, wd, c1, c2));
    }
    return ivae_cl_finish(cm->cl);
}

int ivae_cl_get_params(IvaeClModel *cm, real *params) { return download_flat(cm, params, cm->params); }
int ivae_cl_set_params(IvaeClModel *cm, const real *params) { return upload_flat(cm, cm->params, params); }
int ivae_cl_get_grads(IvaeClModel *cm, real *grads) { return download_flat(cm, grads, cm->grads); }
int ivae_cl_set_grads(IvaeClModel *cm, const real *grads) { return upload_flat(cm, cm->grads, grads); }

/* the unit table on the device: offsets in the device layout */
static int units_ready(IvaeClModel *cm) {
    if (cm->units) return 0;
    IvaeModel *m = cm->m;
    int n = ivae_units(m, NULL);
    IvaeUnit *u = calloc(n, sizeof *u);
    cl_ulong *off = calloc(n, sizeof *off);
    cl_int *len = calloc(n, sizeof *len);
    int rc = -1;
    if (!u || !off || !len) {
        ivae_set_error("out of memory");
        goto done;
    }
    ivae_units(m, u);
    cm->max_len = 1;
    for (int j = 0; j < n; j++) {
        off[j] = cm->dev_off[u[j].tensor] + (u[j].offset - m->info[u[j].tensor].offset);
        len[j] = u[j].len;
        if (len[j] > cm->max_len) cm->max_len = len[j];
    }
    if (!(cm->u_off = ivae_cl_buffer_bytes(cm->cl, n * sizeof *off, off)) ||
        !(cm->u_len = ivae_cl_buffer_bytes(cm->cl, n * sizeof *len, len)) ||
        !(cm->u_f = ivae_cl_buffer(cm->cl, n, NULL)) || !(cm->u_out = ivae_cl_buffer_bytes(cm->cl, n * sizeof(double), NULL)))
        goto done;
    cm->units = u, cm->n_units = n, u = NULL;
    rc = 0;
done:
    if (rc) { /* a later call starts again from nothing */
        cl_mem *made[] = {&cm->u_off, &cm->u_len, &cm->u_f, &cm->u_out};
        for (int k = 0; k < 4; k++)
            release(*made[k]), *made[k] = NULL;
    }
    free(u), free(off), free(len);
    return rc;
}

int ivae_cl_measure_units(IvaeClModel *cm, int grads, double *out) {
    TRY(units_ready(cm));
    cl_mem x = grads ? cm->grads : cm->params;
    if (cm->cl->fp64) {
        TRY(ivae_cl_unit_sumsq(cm->cl, cm->u_out, x, cm->u_off, cm->u_len, cm->n_units));
        return ivae_cl_read_bytes(cm->cl, out, cm->u_out, cm->n_units * sizeof(double));
    }
    /* no double on the device: the floats come to the host, summed there */
    if (!cm->hostx && !(cm->hostx = malloc(cm->m->n_params * sizeof(real)))) {
        ivae_set_error("out of memory");
        return -1;
    }
    TRY(download_flat(cm, cm->hostx, x));
    ivae_unit_sumsq(out, cm->hostx, cm->units, cm->n_units);
    return 0;
}

int ivae_cl_scale_grads(IvaeClModel *cm, const real *f) {
    TRY(units_ready(cm));
    TRY(ivae_cl_write(cm->cl, cm->u_f, f, cm->n_units));
    TRY(ivae_cl_unit_scale(cm->cl, cm->grads, cm->u_off, cm->u_len, cm->u_f, cm->n_units, cm->max_len));
    return ivae_cl_finish(cm->cl);
}

int ivae_cl_get_state(IvaeClModel *cm, IvaeModel *m) {
    if (m->n_params != cm->m->n_params) {
        ivae_set_error("ivae_cl_get_state: the model has %zu parameters, the device's %zu", m->n_params,
                       cm->m->n_params);
        return -1;
    }
    if (!m->adam_m) m->adam_m = calloc(m->n_params, sizeof(real));
    if (!m->adam_v) m->adam_v = calloc(m->n_params, sizeof(real));
    if (!m->adam_m || !m->adam_v) {
        ivae_set_error("out of memory");
        return -1;
    }
    TRY(download_flat(cm, m->params, cm->params));
    TRY(download_flat(cm, m->adam_m, cm->adam_m));
    return download_flat(cm, m->adam_v, cm->adam_v);
}

int ivae_cl_set_state(IvaeClModel *cm, const IvaeModel *m) {
    if (m->n_params != cm->m->n_params) {
        ivae_set_error("ivae_cl_set_state: the model has %zu parameters, the device's %zu", m->n_params,
                       cm->m->n_params);
        return -1;
    }
    TRY(upload_flat(cm, cm->params, m->params));
    TRY(upload_flat(cm, cm->adam_m, m->adam_m));
    return upload_flat(cm, cm->adam_v, m->adam_v);
}

/* ========================================================================== */
/* 6. inference, block outputs, statistics                                    */
/* ========================================================================== */

int ivae_cl_encode(IvaeClModel *cm, const real *x, int T, int H, int W, real *mu) {
    int Tz, Hz, Wz;
    if (!x) {
        ivae_set_error("no input");
        return -1;
    }
    TRY(ivae_latent_shape(&cm->m->cfg, T, H, W, &Tz, &Hz, &Wz));
    TRY(for_each_smc(cm, smc_prepare));
    pool_reset(cm);
    Shape xs = {3, T, H, W}, hs;
    cl_mem xb = pool_upload(cm, x, shape_numel(xs)), h;
    if (!xb || !(h = run_forward(cm, 0, xb, xs, &hs))) return -1;
    return ivae_cl_read(cm->cl, mu, h, (size_t)cm->m->cfg.z_ch * Tz * Hz * Wz);
}

int ivae_cl_decode(IvaeClModel *cm, const real *z, int Tz, int Hz, int Wz, real *xhat) {
    if (!z || Tz < 1 || Hz < 1 || Wz < 1) {
        ivae_set_error("latent shape %dx%dx%d must be positive", Tz, Hz, Wz);
        return -1;
    }
    TRY(for_each_smc(cm, smc_prepare));
    pool_reset(cm);
    Shape zs = {cm->m->cfg.z_ch, Tz, Hz, Wz}, os;
    cl_mem zb = pool_upload(cm, z, shape_numel(zs)), y;
    if (!zb || !(y = run_forward(cm, 1, zb, zs, &os))) return -1;
    return ivae_cl_read(cm->cl, xhat, y, shape_numel(os));
}

int ivae_cl_block_output(IvaeClModel *cm, int decoder, int j, int shape[4], real *out) {
    int dec = decoder != 0;
    if (!cm->ran[dec] || j < 0 || j >= cm->nb[dec]) {
        ivae_set_error("no output of %s block %d (%s)", dec ? "decoder" : "encoder", j,
                       cm->ran[dec] ? "no such block" : "the last pass did not run it");
        return -1;
    }
    const ClBlock *b = &cm->blk[dec][j];
    shape[0] = b->out.C, shape[1] = b->out.T, shape[2] = b->out.H, shape[3] = b->out.W;
    return out ? ivae_cl_read(cm->cl, out, b->y, shape_numel(b->out)) : 0;
}

/* ivae_activation_stats: each pixel's squared channel norm, on the device
   when it has double (else from the copied outputs), then the same loop
   over the pixels as ivae.c's */
static int pixel_sums(IvaeClModel *cm, const ClBlock *b, double *pn) {
    size_t N = (size_t)b->out.T * b->out.H * b->out.W;
    if (cm->cl->fp64) {
        if (N > cm->pix_cap / sizeof(double)) {
            release(cm->pix_dev);
            cm->pix_cap = 0;
            if (!(cm->pix_dev = ivae_cl_buffer_bytes(cm->cl, N * sizeof(double), NULL))) return -1;
            cm->pix_cap = N * sizeof(double);
        }
        TRY(ivae_cl_pixel_sumsq(cm->cl, cm->pix_dev, b->y, b->out.C, N));
        return ivae_cl_read_bytes(cm->cl, pn, cm->pix_dev, N * sizeof(double));
    }
    real *y = malloc(shape_numel(b->out) * sizeof(real));
    if (!y) {
        ivae_set_error("out of memory");
        return -1;
    }
    if (ivae_cl_read(cm->cl, y, b->y, shape_numel(b->out)) != 0) {
        free(y);
        return -1;
    }
    for (size_t p = 0; p < N; p++) {
        double s = 0;
        for (int c = 0; c < b->out.C; c++) s += (double)y[c * N + p] * y[c * N + p];
        pn[p] = s;
    }
    free(y);
    return 0;
}

int ivae_cl_activation_stats(IvaeClModel *cm, IvaeActStat *out, int max) {
    int n = 0;
    for (int dec = 0; dec < 2; dec++)
        for (int j = 0; j < cm->nb[dec] && cm->ran[dec] && n < max; j++) {
            const ClBlock *b = &cm->blk[dec][j];
            size_t N = (size_t)b->out.T * b->out.H * b->out.W;
            if (N > cm->n_pix) {
                free(cm->pix);
                cm->n_pix = 0;
                if (!(cm->pix = malloc(N * sizeof(double)))) {
                    ivae_set_error("out of memory");
                    return -1;
                }
                cm->n_pix = N;
            }
            TRY(pixel_sums(cm, b, cm->pix));
            double ss = 0, mx = 0;
            for (size_t p = 0; p < N; p++) {
                double pn = cm->pix[p];
                ss += pn;
                if (pn > mx || pn != pn) mx = pn;
            }
            out[n].name = b->d.name;
            out[n].rms = sqrt(ss / ((double)N * b->out.C));
            out[n].max_norm = sqrt(mx);
            out[n].median_norm = sqrt(ivae_median(cm->pix, N)); /* sorts pix: after the sums above */
            n++;
        }
    return n;
}
