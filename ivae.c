/*
 * ivae.c: the ivae image-video VAE of SPEC 3: its parameters, the encoder
 * and decoder forward and backward, the loss of a batch (SPEC 4), streaming
 * inference, AdamW, and checkpoints. The layers it is built from are in
 * layers.c (SPEC 2), the safetensors format in safetensors.c.
 *
 * Read it top-down:
 *   1. the RNG and the arena (activations of one sample)
 *   2. the config
 *   3. parameters: one allocation, SPEC 5 names, SPEC 6 initialisation
 *   4. blocks: res, attn, down/up, conv_in/conv_out, forward and backward
 *   5. the encoder and the decoder: SPEC 3 as a sequence of blocks
 *   6. the batch: forward, loss, backward
 *   7. inference, streamed chunk by chunk
 *   8. AdamW and the units of gradient clipping
 *   9. checkpoints
 *
 * Conventions (after llm.c): the argument order of layers.h; gradients carry
 * a d prefix (dx, dy); the forward line a backward pass differentiates is
 * quoted above it; every pointer of saved activations has a shape comment.
 */
#include "ivae.h"
#include "layers.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ========================================================================== */
/* 1. the RNG and the arena                                                   */
/* ========================================================================== */

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
        ArenaBlock *nb = xcalloc(1, sizeof *nb);
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

/* ========================================================================== */
/* 2. the config (SPEC 3)                                                     */
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

/* SPEC 9's variant names, in enum order */
static const char *const VARIANTS[4][4] = {
    {"block_norm", "smc", "groupnorm", NULL},
    {"attn_norm", "pixelnorm", "groupnorm", "none"},
    {"image_mode", "causal", "static", NULL},
    {"loss_norm", "ref", "sum", "mean"},
};

static const char *const *variant_names(const char *kind) {
    for (int k = 0; k < 4; k++)
        if (strcmp(VARIANTS[k][0], kind) == 0) return VARIANTS[k] + 1;
    return NULL;
}

int ivae_variant_parse(const char *kind, const char *name) {
    const char *const *v = variant_names(kind);
    if (!v) {
        ivae_set_error("unknown variant kind '%s'", kind);
        return -1;
    }
    int n = kind[0] == 'a' || kind[0] == 'l' ? 3 : 2;
    for (int j = 0; j < n; j++)
        if (strcmp(v[j], name) == 0) return j;
    ivae_set_error("%s: '%s' (expected %s%s%s%s%s)", kind, name, v[0], n == 3 ? ", " : " or ", v[1], n == 3 ? " or " : "",
                   n == 3 ? v[2] : "");
    return -1;
}

const char *ivae_variant_name(const char *kind, int value) {
    const char *const *v = variant_names(kind);
    int n = kind[0] == 'a' || kind[0] == 'l' ? 3 : 2;
    return v && value >= 0 && value < n ? v[value] : "?";
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
    if (c->block_norm < 0 || c->block_norm > 1 || c->attn_norm < 0 || c->attn_norm > 2 || c->image_mode < 0 ||
        c->image_mode > 1 || c->loss_norm < 0 || c->loss_norm > 2) {
        ivae_set_error("config: unknown variant (block_norm %d, attn_norm %d, image_mode %d, loss_norm %d)",
                       c->block_norm, c->attn_norm, c->image_mode, c->loss_norm);
        return -1;
    }
    if (c->block_norm == IVAE_BLOCK_GROUPNORM || c->attn_norm == IVAE_ATTN_GROUPNORM)
        for (int s = 0; s < c->n_stages; s++)
            if (c->base_ch * c->ch_mult[s] % IVAE_GN_GROUPS != 0) {
                ivae_set_error("config: GroupNorm needs channel counts that are multiples of %d (stage %d has %d)",
                               IVAE_GN_GROUPS, s, c->base_ch * c->ch_mult[s]);
                return -1;
            }
    if (c->image_mode == IVAE_IMAGE_STATIC && (IVAE_STATIC_FRAMES - 1) % ivae_time_factor(c) != 0) {
        ivae_set_error("config: static images (%d frames) need a time factor that divides %d", IVAE_STATIC_FRAMES,
                       IVAE_STATIC_FRAMES - 1);
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

/* ========================================================================== */
/* 3. parameters                                                              */
/* ========================================================================== */

/* how a tensor is initialised (SPEC 6) */
enum { INIT_CONV, INIT_SMC, INIT_ZERO, INIT_ONE };

/* A convolution: where its weight (cout, cin, kt, kh, kw) and bias (cout)
   live in the flat parameter buffers, and its geometry. */
typedef struct {
    size_t w_off, b_off;   /* offsets into params / grads (an SMC's effective weight: into eff / deff) */
    int cout, cin, kt, kh, kw, st, sh, sw;
    size_t pk_off, pkf_off; /* offsets into the packed buffer: the tuned conv's weights, and flipped for dinp */
} Conv;

/* GroupNorm's weight and bias (SPEC 9), C channels */
typedef struct {
    size_t w_off, b_off;
    int C;
} Norm;

/* SMC (SPEC 2.2): a conv whose effective weight What = g * s[i] W / n[o] is
   made once per batch into eff (at the conv's w_off) */
typedef struct {
    Conv conv;
    size_t scale_off, gain_off; /* scale (cin), gain (1) */
    real *norm;                 /* (cout) n[o] of the current effective weight */
} Smc;

typedef enum { BLK_CONV, BLK_RES, BLK_ATTN, BLK_UP, BLK_SILU_CONV } BlockKind; /* = IvaeBlockKind's order */
_Static_assert(BLK_SILU_CONV == (int)IVAE_BLK_SILU_CONV && BLK_ATTN == (int)IVAE_BLK_ATTN, "block kinds out of step");

/* One block of the encoder or decoder. Its input x is (C, T, H, W) = in, its
   output y is out. */
typedef struct {
    BlockKind kind;
    char name[80];         /* SPEC 5 prefix, e.g. "encoder.stages.1.res.0" */
    Conv conv;             /* CONV (conv_in, down), SILU_CONV (conv_out), UP: the conv */
    Conv shortcut;         /* RES with Cin != Cout: the 1x1x1 shortcut */
    int has_shortcut;
    Smc c1, c2;            /* RES: conv1 (Cin -> Cout), conv2 (Cout -> Cout); with GroupNorm
                              (SPEC 9) plain convs: c1.conv, c2.conv, no norm */
    Norm n1, n2;           /* RES with GroupNorm: norm1 (Cin), norm2 (Cout); ATTN: n1 = attn.norm */
    Conv qkv, proj;        /* ATTN: qkv (3C, C, 1,1,1), proj (C, C, 1,1,1) */
    int temporal;          /* UP: doubles time */
    /* streaming (chunked inference): the clip frame at which the next chunk
       starts, and for each conv with kt > 1 the last kt-1 frames of its
       input (cache[0]: conv or c1, cache[1]: c2) */
    int t_next;
    real *cache[2];
    size_t cache_cap[2];
    /* saved by the forward pass of the current sample */
    Shape in, out;
    const real *x;         /* (C, T, H, W) the block's input */
    real *y;               /* out: the block's output */
    real *act1;            /* RES, SILU_CONV: silu(x) (C, T, H, W) (GroupNorm: silu(g1));
                              UP: x upsampled (C, To, 2H, 2W) */
    real *h1;              /* RES: conv1(act1) (Cout, T, H, W) */
    real *act2;            /* RES: silu(h1) (Cout, T, H, W); GroupNorm: silu(g2) */
    real *xn, *xn_norm;    /* ATTN: pixelnorm(x) (C, N) and its per-position norms (N) (GroupNorm:
                              gn(x) and its stats (2, G, T); none: xn = x) */
    real *g1, *g1s;        /* RES with GroupNorm: gn1(x) (Cin, T, H, W), its stats (2, G, T) */
    real *g2, *g2s;        /* RES with GroupNorm: gn2(h1) (Cout, T, H, W), its stats */
    real *qkvs;            /* ATTN: (3C, N) */
    real *att;             /* ATTN: (N, L) attention probabilities */
    real *o;               /* ATTN: (C, N) attention output, before proj */
} Block;

struct IvaeImpl {
    Block *enc, *dec;      /* the blocks in forward order (section 5 walks them) */
    int n_enc, n_dec, cap_enc, cap_dec;
    int cap_tensors;
    int *init_kind;        /* (n_tensors) */
    int *fan_in;           /* (n_tensors) */
    real *eff, *deff;      /* (n_params) SMC effective weights and their gradients */
    real *packed;          /* (n_packed) every conv's weights packed, refreshed per call */
    size_t n_packed;
    Arena arena;
    int streaming;         /* blocks run on chunks, convs pad from their caches */
    IvaeTraceFn trace;     /* ivae_set_trace: called with every block's output */
    void *trace_ctx;
    int chunk;             /* the chunk being streamed, for the trace */
};

static size_t add_tensor(IvaeModel *m, const char *name, int init, int fan_in, int ndim, int s0, int s1, int s2,
                         int s3, int s4) {
    struct IvaeImpl *I = m->impl;
    if (m->n_tensors == I->cap_tensors) {
        I->cap_tensors = I->cap_tensors ? 2 * I->cap_tensors : 64;
        m->info = xrealloc(m->info, (size_t)I->cap_tensors, sizeof *m->info);
        I->init_kind = xrealloc(I->init_kind, (size_t)I->cap_tensors, sizeof(int));
        I->fan_in = xrealloc(I->fan_in, (size_t)I->cap_tensors, sizeof(int));
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

/* a k x k x k conv with time stride st and spatial stride ss */
static Conv add_conv(IvaeModel *m, const char *name, int init_w, int cout, int cin, int k, int st, int ss) {
    char buf[128];
    Conv c = {0, 0, cout, cin, k, k, k, st, ss, ss, 0, 0};
    c.pk_off = m->impl->n_packed;
    c.pkf_off = c.pk_off + ivae_conv3d_packed_size(cout, cin, k * k * k);
    m->impl->n_packed = c.pkf_off + ivae_conv3d_packed_size(cin, cout, k * k * k);
    int fan_in = cin * k * k * k;
    snprintf(buf, sizeof buf, "%s.weight", name);
    c.w_off = add_tensor(m, buf, init_w, fan_in, 5, cout, cin, k, k, k);
    snprintf(buf, sizeof buf, "%s.bias", name);
    c.b_off = add_tensor(m, buf, INIT_ZERO, 0, 1, cout, 0, 0, 0, 0);
    return c;
}

static Smc add_smc(IvaeModel *m, const char *name, int cout, int cin) {
    char buf[128];
    Smc s;
    s.conv = add_conv(m, name, INIT_SMC, cout, cin, 3, 1, 1);
    snprintf(buf, sizeof buf, "%s.scale", name);
    s.scale_off = add_tensor(m, buf, INIT_ONE, 0, 1, cin, 0, 0, 0, 0);
    snprintf(buf, sizeof buf, "%s.gain", name);
    s.gain_off = add_tensor(m, buf, INIT_ONE, 0, 1, 1, 0, 0, 0, 0);
    s.norm = xcalloc((size_t)cout, sizeof(real));
    return s;
}

static Block *new_block(IvaeModel *m, int dec, BlockKind kind, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static Block *new_block(IvaeModel *m, int dec, BlockKind kind, const char *fmt, ...) {
    struct IvaeImpl *I = m->impl;
    Block **arr = dec ? &I->dec : &I->enc;
    int *n = dec ? &I->n_dec : &I->n_enc, *cap = dec ? &I->cap_dec : &I->cap_enc;
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        *arr = xrealloc(*arr, (size_t)*cap, sizeof(Block));
    }
    Block *b = &(*arr)[(*n)++];
    memset(b, 0, sizeof *b);
    b->kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->name, sizeof b->name, fmt, ap);
    va_end(ap);
    return b;
}

/* the blocks of SPEC 2.5 - 2.8 and conv_in / conv_out, each registering its
   parameters under its SPEC 5 name */
static Norm add_norm(IvaeModel *m, const char *name, int C) {
    char buf[128];
    Norm n = {0, 0, C};
    snprintf(buf, sizeof buf, "%s.weight", name);
    n.w_off = add_tensor(m, buf, INIT_ONE, 0, 1, C, 0, 0, 0, 0);
    snprintf(buf, sizeof buf, "%s.bias", name);
    n.b_off = add_tensor(m, buf, INIT_ZERO, 0, 1, C, 0, 0, 0, 0);
    return n;
}

static void add_res(Block *b, IvaeModel *m, int cin, int cout) {
    char buf[128];
    if (m->cfg.block_norm == IVAE_BLOCK_GROUPNORM) { /* SPEC 9: norm1, conv1, norm2, conv2 */
        snprintf(buf, sizeof buf, "%s.norm1", b->name);
        b->n1 = add_norm(m, buf, cin);
        snprintf(buf, sizeof buf, "%s.conv1", b->name);
        b->c1.conv = add_conv(m, buf, INIT_CONV, cout, cin, 3, 1, 1);
        snprintf(buf, sizeof buf, "%s.norm2", b->name);
        b->n2 = add_norm(m, buf, cout);
        snprintf(buf, sizeof buf, "%s.conv2", b->name);
        b->c2.conv = add_conv(m, buf, INIT_CONV, cout, cout, 3, 1, 1);
    } else {
        snprintf(buf, sizeof buf, "%s.conv1", b->name);
        b->c1 = add_smc(m, buf, cout, cin);
        snprintf(buf, sizeof buf, "%s.conv2", b->name);
        b->c2 = add_smc(m, buf, cout, cout);
    }
    b->has_shortcut = cin != cout;
    if (b->has_shortcut) {
        snprintf(buf, sizeof buf, "%s.shortcut", b->name);
        b->shortcut = add_conv(m, buf, INIT_CONV, cout, cin, 1, 1, 1);
    }
}

static void add_attn(Block *b, IvaeModel *m, int C) {
    char buf[128];
    if (m->cfg.attn_norm == IVAE_ATTN_GROUPNORM) {
        snprintf(buf, sizeof buf, "%s.norm", b->name);
        b->n1 = add_norm(m, buf, C);
    }
    snprintf(buf, sizeof buf, "%s.qkv", b->name);
    b->qkv = add_conv(m, buf, INIT_CONV, 3 * C, C, 1, 1, 1);
    snprintf(buf, sizeof buf, "%s.proj", b->name);
    b->proj = add_conv(m, buf, INIT_ZERO, C, C, 1, 1, 1); /* starts as the identity */
}

/* a plain 3x3x3 conv block: conv_in, conv_out, down (strides st, ss), up */
static void add_plain(Block *b, IvaeModel *m, int cout, int cin, int st, int ss) {
    b->conv = add_conv(m, b->name, INIT_CONV, cout, cin, 3, st, ss);
}

#define ENC(kind, ...) new_block(m, 0, kind, __VA_ARGS__)
#define DEC(kind, ...) new_block(m, 1, kind, __VA_ARGS__)

/* The model of SPEC 3, block by block, registering the parameters in SPEC 5
   order. Section 5 runs the blocks in exactly this order. */
static void build_model(IvaeModel *m) {
    const IvaeConfig *c = &m->cfg;
    int S = c->n_stages, Ch[IVAE_MAX_STAGES] = {0};
    for (int s = 0; s < S; s++) Ch[s] = c->base_ch * c->ch_mult[s];
    int Cmid = Ch[S - 1];

    /* encoder: 3 -> Ch[0], stages (res blocks, then down), mid, 2z */
    add_plain(ENC(BLK_CONV, "encoder.conv_in"), m, Ch[0], 3, 1, 1);
    for (int s = 0; s < S; s++) {
        for (int j = 0; j < c->n_res; j++)
            add_res(ENC(BLK_RES, "encoder.stages.%d.res.%d", s, j), m, j > 0 ? Ch[s] : s > 0 ? Ch[s - 1] : Ch[0], Ch[s]);
        if (s < S - 1) add_plain(ENC(BLK_CONV, "encoder.stages.%d.down", s), m, Ch[s], Ch[s], c->temporal[s] ? 2 : 1, 2);
    }
    add_res(ENC(BLK_RES, "encoder.mid.res.0"), m, Cmid, Cmid);
    add_attn(ENC(BLK_ATTN, "encoder.mid.attn"), m, Cmid);
    add_res(ENC(BLK_RES, "encoder.mid.res.1"), m, Cmid, Cmid);
    add_plain(ENC(BLK_SILU_CONV, "encoder.conv_out"), m, 2 * c->z_ch, Cmid, 1, 1);

    /* decoder: z -> Cmid, mid, stages from the last (res blocks, then up), 3 */
    add_plain(DEC(BLK_CONV, "decoder.conv_in"), m, Cmid, c->z_ch, 1, 1);
    add_res(DEC(BLK_RES, "decoder.mid.res.0"), m, Cmid, Cmid);
    add_attn(DEC(BLK_ATTN, "decoder.mid.attn"), m, Cmid);
    add_res(DEC(BLK_RES, "decoder.mid.res.1"), m, Cmid, Cmid);
    for (int s = S - 1; s >= 0; s--) {
        for (int j = 0; j < c->n_res; j++)
            add_res(DEC(BLK_RES, "decoder.stages.%d.res.%d", s, j), m, j > 0 ? Ch[s] : s < S - 1 ? Ch[s + 1] : Cmid,
                    Ch[s]);
        if (s > 0) {
            Block *up = DEC(BLK_UP, "decoder.stages.%d.up", s);
            add_plain(up, m, Ch[s], Ch[s], 1, 1);
            up->temporal = c->temporal[s - 1];
        }
    }
    add_plain(DEC(BLK_SILU_CONV, "decoder.conv_out"), m, 3, Ch[0], 1, 1);
}

/* the layer graph and the parameter table, without the big buffers */
#define IVAE_MAX_PARAMS ((size_t)1 << 31)
static IvaeModel *model_graph(const IvaeConfig *cfg) {
    if (ivae_config_check(cfg) != 0) return NULL;
    IvaeModel *m = xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->impl = xcalloc(1, sizeof *m->impl);
    build_model(m);
    if (m->n_params > IVAE_MAX_PARAMS) {
        ivae_set_error("config: %zu parameters is more than this build handles (%zu)", m->n_params, IVAE_MAX_PARAMS);
        ivae_model_free(m);
        return NULL;
    }
    return m;
}

static void model_alloc(IvaeModel *m) {
    m->params = xcalloc(m->n_params, sizeof(real));
    m->grads = xcalloc(m->n_params, sizeof(real));
    m->impl->eff = xcalloc(m->n_params, sizeof(real));
    m->impl->deff = xcalloc(m->n_params, sizeof(real));
    m->impl->packed = xcalloc(m->impl->n_packed, sizeof(real));
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

/* ========================================================================== */
/* 4. blocks: forward and backward                                            */
/* ========================================================================== */

/* every block in forward order, encoder then decoder */
#define FOR_EACH_BLOCK(I, b) \
    for (Block *b = (I)->enc; b != (I)->dec + (I)->n_dec; b = b == (I)->enc + (I)->n_enc - 1 ? (I)->dec : b + 1)

/* the weights of a batch: each SMC's effective weight (SPEC 2.2), then every
   conv's weights packed for the tuned kernels (flip: also the input
   gradient's), once per batch instead of once per sample */
static void pack_conv(IvaeModel *m, const Conv *c, const real *wbase, int flip) {
    int K = c->kt * c->kh * c->kw;
    ivae_conv3d_pack(m->impl->packed + c->pk_off, wbase + c->w_off, c->cout, c->cin, K, 0);
    if (flip)
        ivae_conv3d_pack_dinp(m->impl->packed + c->pkf_off, wbase + c->w_off, c->cout, c->cin, c->kt, c->kh, c->kw,
                              c->st, c->sh, c->sw);
}

static void smc_prepare(IvaeModel *m, Smc *s) {
    const Conv *c = &s->conv;
    ivae_smc_weight_forward(m->impl->eff + c->w_off, s->norm, m->params + c->w_off, m->params + s->scale_off,
                            m->params + s->gain_off, c->cout, c->cin, c->kt * c->kh * c->kw);
    memset(m->impl->deff + c->w_off, 0, (size_t)c->cout * c->cin * c->kt * c->kh * c->kw * sizeof(real));
}

static void weights_prepare(IvaeModel *m, int flip) {
    struct IvaeImpl *I = m->impl;
    int smc = m->cfg.block_norm == IVAE_BLOCK_SMC;
    FOR_EACH_BLOCK(I, b)
        if (b->kind == BLK_RES && smc) smc_prepare(m, &b->c1), smc_prepare(m, &b->c2);
    if (ivae_naive()) return; /* the naive convs read the weights as they are */
    FOR_EACH_BLOCK(I, b) {
        if (b->kind == BLK_RES) {
            pack_conv(m, &b->c1.conv, smc ? I->eff : m->params, flip);
            pack_conv(m, &b->c2.conv, smc ? I->eff : m->params, flip);
            if (b->has_shortcut) pack_conv(m, &b->shortcut, m->params, flip);
        } else if (b->kind == BLK_ATTN) {
            pack_conv(m, &b->qkv, m->params, flip);
            pack_conv(m, &b->proj, m->params, flip);
        } else {
            pack_conv(m, &b->conv, m->params, flip);
        }
    }
}

/* after the backward pass: d(effective weight) -> dW, dscale, dgain (SPEC 2.2) */
static void smc_finish(IvaeModel *m, Smc *s) {
    const Conv *c = &s->conv;
    ivae_smc_weight_backward(m->grads + c->w_off, m->grads + s->scale_off, m->grads + s->gain_off,
                             m->impl->deff + c->w_off, s->norm, m->params + c->w_off, m->params + s->scale_off,
                             m->params + s->gain_off, c->cout, c->cin, c->kt * c->kh * c->kw);
}

static Shape conv_out_shape(const Conv *c, Shape s) {
    Shape o = {c->cout, conv_out_t(s.T, c->st), conv_out_s(s.H, c->kh, c->sh), conv_out_s(s.W, c->kw, c->sw)};
    return o;
}

/* keeps the last kt-1 frames of the sequence [cache | x] */
static void cache_update(Block *b, int slot, const real *x, Shape s, int keep) {
    size_t n = (size_t)s.C * keep * s.H * s.W;
    if (b->cache_cap[slot] < n) {
        free(b->cache[slot]);
        b->cache[slot] = xcalloc(n, sizeof(real));
        b->cache_cap[slot] = n;
    }
    ivae_cache_push(b->cache[slot], keep, b->t_next > 0, x, s.C, s.T, s.H, s.W);
}

/* y = conv(x), the weight read from wbase (params, or eff for an SMC).
   Streaming, x is a chunk starting at clip frame s0, and the kt-1 frames in
   front of it come from the conv's cache (slot) instead of zero padding. */
static real *conv_forward(IvaeModel *m, Block *b, int slot, const Conv *c, const real *wbase, const real *x, Shape s,
                          Shape *os, int s0) {
    *os = conv_out_shape(c, s);
    const real *prev = NULL;
    if (m->impl->streaming) {
        os->T = (s0 + s.T - 1) / c->st - (s0 + c->st - 1) / c->st + 1;
        prev = c->kt > 1 && b->t_next > 0 ? b->cache[slot] : NULL;
    } else {
        s0 = 0;
    }
    real *y = arena_alloc(&m->impl->arena, shape_numel(*os));
    if (ivae_naive())
        ivae_conv3d_forward_chunk_naive(y, x, prev, s0, wbase + c->w_off, m->params + c->b_off, c->cin, s.T, s.H, s.W,
                                        c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw);
    else
        ivae_conv3d_forward_chunk_tuned(y, x, prev, s0, m->impl->packed + c->pk_off, wbase + c->w_off,
                                        m->params + c->b_off, c->cin, s.T, s.H, s.W, c->cout, c->kt, c->kh, c->kw,
                                        c->st, c->sh, c->sw);
    if (m->impl->streaming && c->kt > 1) cache_update(b, slot, x, s, c->kt - 1);
    return y;
}

/* dx of y = conv(x); dW and db accumulate into dwbase and grads */
static real *conv_backward(IvaeModel *m, const Conv *c, const real *wbase, real *dwbase, const real *dy,
                           const real *x, Shape s) {
    real *dx = arena_alloc(&m->impl->arena, shape_numel(s));
    if (ivae_naive())
        ivae_conv3d_backward_naive(dx, dwbase + c->w_off, m->grads + c->b_off, dy, x, wbase + c->w_off, c->cin, s.T,
                                   s.H, s.W, c->cout, c->kt, c->kh, c->kw, c->st, c->sh, c->sw);
    else
        ivae_conv3d_backward_tuned(dx, dwbase + c->w_off, m->grads + c->b_off, dy, x, m->impl->packed + c->pkf_off,
                                   wbase + c->w_off, c->cin, s.T, s.H, s.W, c->cout, c->kt, c->kh, c->kw, c->st, c->sh,
                                   c->sw);
    return dx;
}

static real *silu(IvaeModel *m, const real *x, Shape s) {
    real *y = arena_alloc(&m->impl->arena, shape_numel(s));
    ivae_silu_forward(y, x, shape_numel(s));
    return y;
}

static real *silu_backward(IvaeModel *m, const real *dy, const real *x, Shape s) {
    real *dx = arena_alloc(&m->impl->arena, shape_numel(s));
    ivae_silu_backward(dx, dy, x, shape_numel(s));
    return dx;
}

/* Each block's forward takes x with shape *s, saves what its backward needs,
   and returns y, leaving y's shape in *s. s0: the clip frame of x's frame 0
   (streaming; 0 for a whole clip). */
static void block_begin(IvaeModel *m, Block *b, const real *x, Shape s, int *s0) {
    b->in = s;
    b->x = x;
    *s0 = m->impl->streaming ? b->t_next : 0;
}

static const real *block_end(IvaeModel *m, Block *b, Shape os, Shape *s) {
    b->out = os;
    if (m->impl->trace) m->impl->trace(m->impl->trace_ctx, b->name, m->impl->chunk, b->y, os.C, os.T, os.H, os.W);
    if (m->impl->streaming) b->t_next += b->in.T;
    *s = os;
    return b->y;
}

/* conv_in, down: y = conv(x) */
static const real *plain_forward(IvaeModel *m, Block *b, const real *x, Shape *s) {
    Shape os;
    int s0;
    block_begin(m, b, x, *s, &s0);
    b->y = conv_forward(m, b, 0, &b->conv, m->params, x, *s, &os, s0);
    return block_end(m, b, os, s);
}

static real *plain_backward(IvaeModel *m, Block *b, const real *dy) {
    return conv_backward(m, &b->conv, m->params, m->grads, dy, b->x, b->in);
}

/* conv_out: y = conv(silu(x)) */
static const real *silu_conv_forward(IvaeModel *m, Block *b, const real *x, Shape *s) {
    Shape os;
    int s0;
    block_begin(m, b, x, *s, &s0);
    b->act1 = silu(m, x, *s);
    b->y = conv_forward(m, b, 0, &b->conv, m->params, b->act1, *s, &os, s0);
    return block_end(m, b, os, s);
}

static real *silu_conv_backward(IvaeModel *m, Block *b, const real *dy) {
    real *da = conv_backward(m, &b->conv, m->params, m->grads, dy, b->act1, b->in);
    return silu_backward(m, da, b->x, b->in);
}

/* GroupNorm (SPEC 9) of x (C, T, H, W): y, and its stats (2, G, T) in *stats */
static real *groupnorm(IvaeModel *m, const Norm *n, const real *x, Shape s, real **stats) {
    real *y = arena_alloc(&m->impl->arena, shape_numel(s));
    *stats = arena_alloc(&m->impl->arena, 2 * (size_t)IVAE_GN_GROUPS * s.T);
    ivae_groupnorm_forward(y, *stats, x, m->params + n->w_off, m->params + n->b_off, s.C, s.T, s.H, s.W, IVAE_GN_GROUPS);
    return y;
}

/* dx of y = groupnorm(x); dweight and dbias accumulate into grads */
static real *groupnorm_backward(IvaeModel *m, const Norm *n, const real *dy, const real *stats, const real *x, Shape s) {
    real *dx = arena_alloc(&m->impl->arena, shape_numel(s));
    ivae_groupnorm_backward(dx, m->grads + n->w_off, m->grads + n->b_off, dy, stats, x, m->params + n->w_off, s.C, s.T,
                            s.H, s.W, IVAE_GN_GROUPS);
    return dx;
}

/* SPEC 2.5: h = smc1(silu(x)); h = smc2(silu(h)); y = shortcut(x) + h
   SPEC 9, block_norm groupnorm: h = conv1(silu(gn1(x))); h = conv2(silu(gn2(h))) */
static const real *res_forward(IvaeModel *m, Block *b, const real *x, Shape *s) {
    int gn = m->cfg.block_norm == IVAE_BLOCK_GROUPNORM;
    real *E = gn ? m->params : m->impl->eff;
    Shape hs, os;
    int s0;
    block_begin(m, b, x, *s, &s0);
    if (gn) b->g1 = groupnorm(m, &b->n1, x, *s, &b->g1s);
    b->act1 = silu(m, gn ? b->g1 : x, *s);
    b->h1 = conv_forward(m, b, 0, &b->c1.conv, E, b->act1, *s, &hs, s0);
    if (gn) b->g2 = groupnorm(m, &b->n2, b->h1, hs, &b->g2s);
    b->act2 = silu(m, gn ? b->g2 : b->h1, hs);
    b->y = conv_forward(m, b, 1, &b->c2.conv, E, b->act2, hs, &os, s0);
    const real *sc = b->has_shortcut ? conv_forward(m, b, 0, &b->shortcut, m->params, x, *s, &hs, s0) : x;
    size_t n = shape_numel(os);
    for (size_t j = 0; j < n; j++) b->y[j] = sc[j] + b->y[j];
    return block_end(m, b, os, s);
}

static real *res_backward(IvaeModel *m, Block *b, const real *dy) {
    int gn = m->cfg.block_norm == IVAE_BLOCK_GROUPNORM;
    real *E = gn ? m->params : m->impl->eff, *DE = gn ? m->grads : m->impl->deff;
    Shape s = b->in, hs = {b->c1.conv.cout, s.T, s.H, s.W};
    // in the forward pass: y = shortcut(x) + smc2(silu(smc1(silu(x))))
    //   (GroupNorm: y = shortcut(x) + conv2(silu(gn2(conv1(silu(gn1(x)))))))
    real *da2 = conv_backward(m, &b->c2.conv, E, DE, dy, b->act2, hs);
    real *dh1 = silu_backward(m, da2, gn ? b->g2 : b->h1, hs);
    if (gn) dh1 = groupnorm_backward(m, &b->n2, dh1, b->g2s, b->h1, hs);
    real *da1 = conv_backward(m, &b->c1.conv, E, DE, dh1, b->act1, s);
    real *dx = silu_backward(m, da1, gn ? b->g1 : b->x, s);
    if (gn) dx = groupnorm_backward(m, &b->n1, dx, b->g1s, b->x, s);
    const real *dsc = b->has_shortcut ? conv_backward(m, &b->shortcut, m->params, m->grads, dy, b->x, s) : dy;
    size_t n = shape_numel(s);
    for (size_t j = 0; j < n; j++) dx[j] = dx[j] + dsc[j];
    return dx;
}

/* SPEC 2.6: n = pixelnorm(x); qkv = conv(n); o = attention(qkv); y = x + proj(o)
   (SPEC 9, attn_norm: n = groupnorm(x), or n = x) */
static const real *attn_forward(IvaeModel *m, Block *b, const real *x, Shape *s) {
    Arena *A = &m->impl->arena;
    Shape qs, os;
    int s0, L = ivae_attention_row_len(m->cfg.attn, s->T, s->H * s->W);
    size_t N = (size_t)s->T * s->H * s->W, n = shape_numel(*s);
    block_begin(m, b, x, *s, &s0);
    if (m->cfg.attn_norm == IVAE_ATTN_PIXELNORM) {
        b->xn = arena_alloc(A, n);
        b->xn_norm = arena_alloc(A, N);
        ivae_pixelnorm_forward(b->xn, b->xn_norm, x, s->C, N);
    } else if (m->cfg.attn_norm == IVAE_ATTN_GROUPNORM) {
        b->xn = groupnorm(m, &b->n1, x, *s, &b->xn_norm);
    } else {
        b->xn = (real *)x; /* read only */
    }
    b->qkvs = conv_forward(m, b, 0, &b->qkv, m->params, b->xn, *s, &qs, s0);
    b->att = arena_alloc(A, N * L);
    b->o = arena_alloc(A, n);
    ivae_attention_forward(b->o, b->att, b->qkvs, s->C, s->T, s->H, s->W, m->cfg.attn);
    b->y = conv_forward(m, b, 0, &b->proj, m->params, b->o, *s, &os, s0);
    for (size_t j = 0; j < n; j++) b->y[j] = x[j] + b->y[j];
    return block_end(m, b, os, s);
}

static real *attn_backward(IvaeModel *m, Block *b, const real *dy) {
    Shape s = b->in, qs = {3 * s.C, s.T, s.H, s.W};
    size_t N = (size_t)s.T * s.H * s.W, n = shape_numel(s);
    // in the forward pass: y = x + proj(attention(qkv(pixelnorm(x)))) (or groupnorm(x), or x)
    real *dout = conv_backward(m, &b->proj, m->params, m->grads, dy, b->o, s);
    real *dqkv = arena_alloc(&m->impl->arena, shape_numel(qs));
    ivae_attention_backward(dqkv, dout, b->att, b->qkvs, s.C, s.T, s.H, s.W, m->cfg.attn);
    real *dn = conv_backward(m, &b->qkv, m->params, m->grads, dqkv, b->xn, s), *dx = dn;
    if (m->cfg.attn_norm == IVAE_ATTN_PIXELNORM) {
        dx = arena_alloc(&m->impl->arena, n);
        ivae_pixelnorm_backward(dx, dn, b->xn_norm, b->x, s.C, N);
    } else if (m->cfg.attn_norm == IVAE_ATTN_GROUPNORM) {
        dx = groupnorm_backward(m, &b->n1, dn, b->xn_norm, b->x, s);
    }
    for (size_t j = 0; j < n; j++) dx[j] = dx[j] + dy[j];
    return dx;
}

/* SPEC 2.8: y = conv(upsample(x)). Streaming, a temporal upsample keeps
   both copies of each frame after the clip's first chunk. */
static const real *up_forward(IvaeModel *m, Block *b, const real *x, Shape *s) {
    Shape os;
    int s0;
    block_begin(m, b, x, *s, &s0);
    int first = s0 == 0;
    Shape us = {s->C, ivae_upsample_frames(s->T, b->temporal, first), 2 * s->H, 2 * s->W};
    b->act1 = arena_alloc(&m->impl->arena, shape_numel(us));
    ivae_upsample_chunk(b->act1, x, s->C, s->T, s->H, s->W, b->temporal, first);
    b->y = conv_forward(m, b, 0, &b->conv, m->params, b->act1, us, &os, b->temporal && !first ? 2 * s0 - 1 : s0);
    return block_end(m, b, os, s);
}

static real *up_backward(IvaeModel *m, Block *b, const real *dy) {
    Shape s = b->in, us = {s.C, b->temporal ? 2 * s.T - 1 : s.T, 2 * s.H, 2 * s.W};
    real *da = conv_backward(m, &b->conv, m->params, m->grads, dy, b->act1, us);
    real *dx = arena_alloc(&m->impl->arena, shape_numel(s));
    ivae_upsample_backward(dx, da, s.C, s.T, s.H, s.W, b->temporal);
    return dx;
}

/* ========================================================================== */
/* 5. the encoder and the decoder (SPEC 3)                                    */
/* ========================================================================== */

/* x (3, T, H, W) -> h (2z, T', H', W'), mu = h[0:z], raw logvar = h[z:2z];
   *s holds x's shape on entry and h's on return */
static const real *encoder_forward(IvaeModel *m, const real *x, Shape *s) {
    const IvaeConfig *c = &m->cfg;
    Block *b = m->impl->enc; /* the blocks in the order build_model made them */
    x = plain_forward(m, b++, x, s); /* conv_in */
    for (int st = 0; st < c->n_stages; st++) {
        for (int j = 0; j < c->n_res; j++) x = res_forward(m, b++, x, s);
        if (st < c->n_stages - 1) x = plain_forward(m, b++, x, s); /* down */
    }
    x = res_forward(m, b++, x, s); /* mid */
    x = attn_forward(m, b++, x, s);
    x = res_forward(m, b++, x, s);
    return silu_conv_forward(m, b++, x, s); /* conv_out */
}

/* dh (2z, T', H', W') -> dx (3, T, H, W), the encoder's blocks in reverse */
static real *encoder_backward(IvaeModel *m, const real *dh) {
    const IvaeConfig *c = &m->cfg;
    Block *b = m->impl->enc + m->impl->n_enc;
    real *d = silu_conv_backward(m, --b, dh);
    d = res_backward(m, --b, d);
    d = attn_backward(m, --b, d);
    d = res_backward(m, --b, d);
    for (int st = c->n_stages - 1; st >= 0; st--) {
        if (st < c->n_stages - 1) d = plain_backward(m, --b, d);
        for (int j = 0; j < c->n_res; j++) d = res_backward(m, --b, d);
    }
    return plain_backward(m, --b, d);
}

/* z (z, T', H', W') -> xhat (3, T, H, W) */
static const real *decoder_forward(IvaeModel *m, const real *z, Shape *s) {
    const IvaeConfig *c = &m->cfg;
    Block *b = m->impl->dec;
    const real *x = plain_forward(m, b++, z, s); /* conv_in */
    x = res_forward(m, b++, x, s);               /* mid */
    x = attn_forward(m, b++, x, s);
    x = res_forward(m, b++, x, s);
    for (int st = c->n_stages - 1; st >= 0; st--) {
        for (int j = 0; j < c->n_res; j++) x = res_forward(m, b++, x, s);
        if (st > 0) x = up_forward(m, b++, x, s);
    }
    return silu_conv_forward(m, b++, x, s); /* conv_out */
}

static real *decoder_backward(IvaeModel *m, const real *dxhat) {
    const IvaeConfig *c = &m->cfg;
    Block *b = m->impl->dec + m->impl->n_dec;
    real *d = silu_conv_backward(m, --b, dxhat);
    for (int st = 0; st < c->n_stages; st++) {
        if (st > 0) d = up_backward(m, --b, d);
        for (int j = 0; j < c->n_res; j++) d = res_backward(m, --b, d);
    }
    d = res_backward(m, --b, d);
    d = attn_backward(m, --b, d);
    d = res_backward(m, --b, d);
    return plain_backward(m, --b, d);
}

/* ========================================================================== */
/* 6. the batch: forward, loss, backward                                      */
/* ========================================================================== */

static int all_finite(const real *v, size_t n) {
    int ok = 1;
    for (size_t j = 0; j < n; j++) ok &= isfinite(v[j]);
    return ok;
}

/* the first block (in forward order) whose output holds a NaN or inf */
static void find_nonfinite_activation(IvaeModel *m, int sample, char *where) {
    FOR_EACH_BLOCK(m->impl, b)
        if (!all_finite(b->y, shape_numel(b->out))) {
            snprintf(where, 128, "sample %d, activation %s", sample, b->name);
            return;
        }
    snprintf(where, 128, "sample %d, loss (activations finite)", sample);
}

void ivae_loss_defaults(IvaeLossOpts *o) {
    o->w_image = 1;
    o->w_video = 1;
    o->beta = (real)1e-6;
    o->w_opl = 0;
    o->ref_t = 17;
    o->ref_h = 64;
    o->ref_w = 64;
    o->loss_norm = IVAE_LOSS_REF;
}

int ivae_check_batch(const IvaeModel *m, const IvaeSample *samples, int B, const IvaeLossOpts *opts) {
    if (B < 1) {
        ivae_set_error("empty batch");
        return -1;
    }
    if (opts->loss_norm < 0 || opts->loss_norm > 2) {
        ivae_set_error("unknown loss normalisation %d", opts->loss_norm);
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

/* one sample: forward through encoder, latent and decoder, the loss terms
   of SPEC 4, and backward; adds the sample's terms to out */
static void sample_grad(IvaeModel *m, IvaeSample *sp, int i, int B, const IvaeLossOpts *opts, IvaeLoss *out) {
    Arena *A = &m->impl->arena;
    arena_reset(A);
    Shape xs = {3, sp->T, sp->H, sp->W}, s = xs;
    size_t nx = shape_numel(xs);
    real w_i = (sp->T == 1 ? opts->w_image : opts->w_video) / (real)B;

    /* forward: encoder, latent, decoder, loss terms */
    const real *h = encoder_forward(m, sp->x, &s); /* (2z, T', H', W') */
    Shape zs = s;
    zs.C = m->cfg.z_ch;
    size_t nz = shape_numel(zs), nscr = nz + 2 * (size_t)zs.C + 2 * (size_t)zs.H * zs.W;
    /* the divisors of rec_i and kl_i: N_ref (SPEC 4), 1 (sum) or the sample's
       own element counts (mean; SPEC 9) */
    real n_ref = (real)3 * opts->ref_t * opts->ref_h * opts->ref_w, n_rec = n_ref, n_kl = n_ref;
    if (opts->loss_norm == IVAE_LOSS_SUM) n_rec = n_kl = 1;
    if (opts->loss_norm == IVAE_LOSS_MEAN) n_rec = (real)nx, n_kl = (real)nz;
    real *logvar = arena_alloc(A, nz), *z = arena_alloc(A, nz); // (z, T', H', W')
    real *scratch = arena_alloc(A, nx > nscr ? nx : nscr);
    double kl = ivae_latent_forward(logvar, z, h, sp->eps, zs, scratch) / n_kl;
    s = zs;
    const real *xhat = decoder_forward(m, z, &s); /* (3, T, H, W) */
    real *dxhat = arena_alloc(A, nx);
    double rec = ivae_rec_loss(dxhat, xhat, sp->x, xs, w_i / n_rec, scratch) / n_rec;
    if (!out->nonfinite[0] && !(isfinite(rec) && isfinite(kl))) find_nonfinite_activation(m, i, out->nonfinite);

    /* backward: decoder, outlier penalty, latent, encoder */
    real *dz = decoder_backward(m, dxhat);
    double opl = 0;
    if (opts->w_opl != 0) opl = ivae_opl_forward_backward(dz, z, zs, w_i * opts->w_opl, scratch);
    real *dh = arena_alloc(A, 2 * nz);
    ivae_latent_backward(dh, dz, logvar, h, sp->eps, nz, w_i * opts->beta / n_kl);
    real *dx = encoder_backward(m, dh);
    /* x also enters the loss directly: rec = |xhat - x| */
    for (size_t j = 0; j < nx; j++) dx[j] = dx[j] - dxhat[j];

    sp->rec = rec, sp->kl = kl;
    out->loss += (double)w_i * (rec + (double)opts->beta * kl + (double)opts->w_opl * opl);
    out->rec += rec / B;
    out->kl += kl / B;
    out->opl += opl / B;
    if (sp->mu) memcpy(sp->mu, h, nz * sizeof(real));
    if (sp->logvar) memcpy(sp->logvar, logvar, nz * sizeof(real));
    if (sp->xhat) memcpy(sp->xhat, xhat, nx * sizeof(real));
    if (sp->dx) memcpy(sp->dx, dx, nx * sizeof(real));
}

/* once per batch, on the summed gradient: each SMC's backward (SPEC 2.2),
   then the first non-finite gradient tensor, if any, named in out */
static void batch_finish(IvaeModel *m, IvaeLoss *out) {
    FOR_EACH_BLOCK(m->impl, b)
        if (b->kind == BLK_RES && m->cfg.block_norm == IVAE_BLOCK_SMC) smc_finish(m, &b->c1), smc_finish(m, &b->c2);
    if (!out->nonfinite[0])
        for (int t = 0; t < m->n_tensors; t++) {
            const IvaeParamInfo *p = &m->info[t];
            if (!all_finite(m->grads + p->offset, p->numel)) {
                snprintf(out->nonfinite, sizeof out->nonfinite, "gradient %s", p->name);
                break;
            }
        }
}

/* The batch's gradient is the left fold of the samples' gradients in sample
   order (SPEC 8.2): each conv backward adds its one per-sample sum to the
   gradient buffer, sample after sample, so the buffer holds
   ((+0 + g_0) + g_1) + ...; the SMC backward runs once, on the sum. The loss
   terms add up the same way. ivae_batch_grad_split (below) keeps this order
   across processes. */
int ivae_batch_grad(IvaeModel *m, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeLoss *out) {
    if (ivae_check_batch(m, samples, B, opts) != 0) return -1;
    memset(out, 0, sizeof *out);
    weights_prepare(m, 1);
    for (int i = 0; i < B; i++) sample_grad(m, &samples[i], i, B, opts, out);
    batch_finish(m, out);
    return 0;
}

void ivae_static_expand(real *out, const real *img, int H, int W) {
    size_t fr = (size_t)H * W;
    for (int c = 0; c < 3; c++)
        for (int t = 0; t < IVAE_STATIC_FRAMES; t++) memcpy(out + (c * IVAE_STATIC_FRAMES + t) * fr, img + c * fr, fr * sizeof(real));
}

void ivae_static_fold(real *dimg, const real *dclip, int H, int W) {
    size_t fr = (size_t)H * W;
    for (int c = 0; c < 3; c++)
        for (size_t p = 0; p < fr; p++) {
            real acc = 0;
            for (int t = 0; t < IVAE_STATIC_FRAMES; t++) acc += dclip[(c * IVAE_STATIC_FRAMES + t) * fr + p];
            dimg[c * fr + p] = acc;
        }
}

/* --- the batch split between processes (ivae.h: IvaeSplit; SPEC 8.2) ----- */

/* the raw gradient: m->grads, but each SMC weight's slots hold deff (before
   smc_finish those slots of m->grads are still the +0 of ivae_zero_grad) */
static void raw_get(IvaeModel *m, real *R) {
    memcpy(R, m->grads, m->n_params * sizeof(real));
    FOR_EACH_BLOCK(m->impl, b)
        if (b->kind == BLK_RES && m->cfg.block_norm == IVAE_BLOCK_SMC) /* GroupNorm blocks: no deff */
            for (int k = 0; k < 2; k++) {
                const Conv *c = k ? &b->c2.conv : &b->c1.conv;
                memcpy(R + c->w_off, m->impl->deff + c->w_off, (size_t)c->cout * c->cin * c->kt * c->kh * c->kw * sizeof(real));
            }
}

/* the inverse; with R = 0 it zeroes the gradients of a sample that starts afresh */
static void raw_set(IvaeModel *m, const real *R) {
    if (R) memcpy(m->grads, R, m->n_params * sizeof(real));
    else memset(m->grads, 0, m->n_params * sizeof(real));
    FOR_EACH_BLOCK(m->impl, b)
        if (b->kind == BLK_RES && m->cfg.block_norm == IVAE_BLOCK_SMC) /* GroupNorm blocks: no deff */
            for (int k = 0; k < 2; k++) {
                const Conv *c = k ? &b->c2.conv : &b->c1.conv;
                size_t n = (size_t)c->cout * c->cin * c->kt * c->kh * c->kw;
                if (R) memcpy(m->impl->deff + c->w_off, R + c->w_off, n * sizeof(real));
                else memset(m->impl->deff + c->w_off, 0, n * sizeof(real));
                memset(m->grads + c->w_off, 0, n * sizeof(real));
            }
}

void ivae_loss_fold(const IvaeLoss *per, int B, IvaeLoss *out) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < B; i++) {
        out->loss += per[i].loss;
        out->rec += per[i].rec;
        out->kl += per[i].kl;
        out->opl += per[i].opl;
        if (!out->nonfinite[0] && per[i].nonfinite[0]) memcpy(out->nonfinite, per[i].nonfinite, sizeof out->nonfinite);
    }
}

/* ivae_batch_grad with the samples [i0, i1) here and the rest elsewhere:
   the same loop, then the exchange, then the once-per-batch steps */
int ivae_batch_grad_split(IvaeModel *m, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeSplit *sp,
                          IvaeLoss *out) {
    if (ivae_check_batch(m, samples, B, opts) != 0) return -1;
    if (sp->i0 < 0 || sp->i1 > B || sp->i0 > sp->i1) {
        ivae_set_error("batch split: samples [%d, %d) of a batch of %d", sp->i0, sp->i1, B);
        return -1;
    }
    weights_prepare(m, 1);
    int n_g = 0;
    for (int i = sp->i0; i < sp->i1; i++) {
        memset(&sp->per[i], 0, sizeof sp->per[i]);
        if (sp->i0 > 0) raw_set(m, NULL); /* a sample of its own, from +0 */
        sample_grad(m, &samples[i], i, B, opts, &sp->per[i]);
        if (sp->i0 > 0 || i + 1 == sp->i1) raw_get(m, sp->g[n_g++]);
    }
    if (sp->exchange(sp->ctx, sp, n_g, m->n_params, B) != 0) return -1;
    raw_set(m, sp->total);
    ivae_loss_fold(sp->per, B, out);
    for (int i = 0; i < B; i++) /* the other ranks' samples: rec_i and kl_i from the exchange (for the log) */
        if (i < sp->i0 || i >= sp->i1) samples[i].rec = sp->per[i].rec * B, samples[i].kl = sp->per[i].kl * B;
    batch_finish(m, out);
    return 0;
}

/* --- what other backends and the log read of the last forward pass -------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double ivae_median(double *v, size_t n) {
    if (n == 0) return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int ivae_activation_stats(IvaeModel *m, IvaeActStat *out, int max) {
    int n = 0;
    FOR_EACH_BLOCK(m->impl, b) {
        if (n == max) break;
        if (!b->y) continue;
        size_t N = (size_t)b->out.T * b->out.H * b->out.W;
        double ss = 0, mx = 0, *pix = xmalloc(N * sizeof(double));
        for (size_t p = 0; p < N; p++) {
            double pn = 0;
            for (int c = 0; c < b->out.C; c++) pn += (double)b->y[c * N + p] * b->y[c * N + p];
            ss += pn;
            pix[p] = pn;
            if (pn > mx || pn != pn) mx = pn;
        }
        out[n].name = b->name;
        out[n].rms = sqrt(ss / ((double)N * b->out.C));
        out[n].max_norm = sqrt(mx);
        out[n].median_norm = sqrt(ivae_median(pix, N));
        free(pix);
        n++;
    }
    return n;
}

static IvaeConvDesc conv_desc(const Conv *c) {
    IvaeConvDesc d = {c->w_off, c->b_off, c->cout, c->cin, c->kt, c->kh, c->kw, c->st, c->sh, c->sw};
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
        d->conv = conv_desc(b->kind == BLK_RES ? &b->shortcut : b->kind == BLK_ATTN ? &b->qkv : &b->conv);
        d->proj = conv_desc(&b->proj);
        d->c1 = conv_desc(&b->c1.conv), d->c2 = conv_desc(&b->c2.conv);
        d->c1_scale = b->c1.scale_off, d->c1_gain = b->c1.gain_off;
        d->c2_scale = b->c2.scale_off, d->c2_gain = b->c2.gain_off;
        d->shortcut = b->has_shortcut, d->temporal = b->temporal;
        d->norm1_w = b->n1.w_off, d->norm1_b = b->n1.b_off, d->norm1_c = b->n1.C;
        d->norm2_w = b->n2.w_off, d->norm2_b = b->n2.b_off, d->norm2_c = b->n2.C;
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

/* ========================================================================== */
/* 7. inference: whole clips, or streamed chunk by chunk                      */
/* ========================================================================== */

/* copies frames [t0, t0+n) of a (C, T, H, W) tensor to or from a (C, n, H, W) one */
static void copy_frames(real *dst, int dT, int dt0, const real *src, int sT, int st0, int C, int n, size_t fr) {
    for (int c = 0; c < C; c++)
        memcpy(dst + ((size_t)c * dT + dt0) * fr, src + ((size_t)c * sT + st0) * fr, (size_t)n * fr * sizeof(real));
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
        I->chunk = k;
        Shape s = {3, n, xs.H, xs.W};
        real *chunk = arena_alloc(&I->arena, shape_numel(s));
        copy_frames(chunk, n, 0, x, xs.T, t0, 3, n, fr);
        const real *h = encoder_forward(m, chunk, &s); /* (2z, 1, Hz, Wz) */
        copy_frames(mu, zs.T, k, h, s.T, 0, zs.C, 1, zfr);
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
        I->chunk = k;
        Shape s = {zs.C, 1, zs.H, zs.W};
        real *chunk = arena_alloc(&I->arena, shape_numel(s));
        copy_frames(chunk, 1, 0, z, zs.T, k, zs.C, 1, zfr);
        const real *y = decoder_forward(m, chunk, &s);
        copy_frames(xhat, xs.T, t0, y, s.T, 0, 3, s.T, fr);
        t0 += s.T;
    }
    I->streaming = 0;
}

/* Streaming needs attention within a frame; causal attention looks at every
   earlier frame, so that mode runs on the whole clip at once. */
static int encode(IvaeModel *m, const real *x, int T, int H, int W, real *mu, int stream) {
    int Tz, Hz, Wz;
    if (!x) {
        ivae_set_error("no input");
        return -1;
    }
    if (ivae_latent_shape(&m->cfg, T, H, W, &Tz, &Hz, &Wz) != 0) return -1;
    Shape xs = {3, T, H, W}, zs = {m->cfg.z_ch, Tz, Hz, Wz};
    weights_prepare(m, 0);
    if (stream && m->cfg.attn == IVAE_ATTN_FRAME) {
        encode_stream(m, x, xs, mu, zs);
    } else {
        arena_reset(&m->impl->arena);
        memcpy(mu, encoder_forward(m, x, &xs), shape_numel(zs) * sizeof(real));
    }
    return 0;
}

static int decode(IvaeModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat, int stream) {
    Shape zs = {m->cfg.z_ch, Tz, Hz, Wz};
    if (!z || Tz < 1 || Hz < 1 || Wz < 1) {
        ivae_set_error("latent shape %dx%dx%d must be positive", Tz, Hz, Wz);
        return -1;
    }
    int fs = ivae_space_factor(&m->cfg);
    Shape xs = {3, (Tz - 1) * ivae_time_factor(&m->cfg) + 1, Hz * fs, Wz * fs};
    weights_prepare(m, 0);
    if (stream && m->cfg.attn == IVAE_ATTN_FRAME) {
        decode_stream(m, z, zs, xhat, xs);
    } else {
        arena_reset(&m->impl->arena);
        memcpy(xhat, decoder_forward(m, z, &zs), shape_numel(xs) * sizeof(real));
    }
    return 0;
}

void ivae_set_trace(IvaeModel *m, IvaeTraceFn fn, void *ctx) {
    m->impl->trace = fn;
    m->impl->trace_ctx = ctx;
    m->impl->chunk = 0;
}

int ivae_encode(IvaeModel *m, const real *x, int T, int H, int W, real *mu) { return encode(m, x, T, H, W, mu, 1); }
int ivae_decode(IvaeModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat) {
    return decode(m, z, Tz, Hz, Wz, xhat, 1);
}
int ivae_encode_whole(IvaeModel *m, const real *x, int T, int H, int W, real *mu) {
    return encode(m, x, T, H, W, mu, 0);
}
int ivae_decode_whole(IvaeModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat) {
    return decode(m, z, Tz, Hz, Wz, xhat, 0);
}

/* ========================================================================== */
/* 8. AdamW (Loshchilov & Hutter) and the units of gradient clipping          */
/* ========================================================================== */

void ivae_adamw_defaults(IvaeAdamW *h) {
    h->lr = (real)1e-3;
    h->beta1 = (real)0.9;
    h->beta2 = (real)0.999;
    h->eps = (real)1e-8;
    h->weight_decay = 0;
}

void ivae_adamw_begin(IvaeModel *m, const IvaeAdamW *h, real *c1, real *c2) {
    m->step++;
    *c1 = (real)(1 - pow((double)h->beta1, (double)m->step));
    *c2 = (real)(1 - pow((double)h->beta2, (double)m->step));
}

/* m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (mhat / (sqrt(vhat) + eps) + wd p),
   mhat = m / (1 - b1^t), vhat = v / (1 - b2^t). Weight decay only on conv
   weights (5-D tensors): biases, SMC scales and gains are not pulled to 0. */
void ivae_adamw_step(IvaeModel *m, const IvaeAdamW *h) {
    if (!m->adam_m) {
        m->adam_m = xcalloc(m->n_params, sizeof(real));
        m->adam_v = xcalloc(m->n_params, sizeof(real));
    }
    real c1, c2;
    ivae_adamw_begin(m, h, &c1, &c2);
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

void ivae_unit_sumsq(double *out, const real *x, const IvaeUnit *u, int n) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int j = 0; j < n; j++) {
        const real *v = x + u[j].offset;
        double s = 0;
        for (int k = 0; k < u[j].len; k++) s += (double)v[k] * v[k];
        out[j] = s;
    }
}

void ivae_unit_scale(real *x, const IvaeUnit *u, int n, const real *f) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int j = 0; j < n; j++) {
        if (f[j] == 1) continue;
        real *v = x + u[j].offset;
        for (int k = 0; k < u[j].len; k++) v[k] *= f[j];
    }
}

/* ========================================================================== */
/* 9. checkpoints (SPEC 5)                                                    */
/* ========================================================================== */


static int meta_int(const IvaeSt *st, const char *key, int *v) {
    const char *s = ivae_st_meta(st, key);
    if (!s || parse_int_list(s, 0, 1 << 20, v, 1) != 1) {
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
    c->n_stages = mult ? parse_int_list(mult, 0, 1 << 20, c->ch_mult, IVAE_MAX_STAGES) : -1;
    if (c->n_stages < 1) {
        ivae_set_error("%s: metadata 'ch_mult' is missing or malformed", st->path);
        return -1;
    }
    int nt = temporal ? parse_int_list(temporal, 0, 1 << 20, c->temporal, IVAE_MAX_STAGES) : -1;
    if (nt != c->n_stages - 1 && !(nt == 0 && c->n_stages == 1)) {
        ivae_set_error("%s: metadata 'temporal' must list %d flags", st->path, c->n_stages - 1);
        return -1;
    }
    if (!attn || (strcmp(attn, "frame") && strcmp(attn, "causal"))) {
        ivae_set_error("%s: metadata 'attn' must be \"frame\" or \"causal\"", st->path);
        return -1;
    }
    c->attn = strcmp(attn, "causal") == 0 ? IVAE_ATTN_CAUSAL : IVAE_ATTN_FRAME;
    /* SPEC 9: the variant, absent keys meaning the defaults */
    static const char *const kinds[4] = {"block_norm", "attn_norm", "image_mode", "loss_norm"};
    int *fields[4] = {&c->block_norm, &c->attn_norm, &c->image_mode, &c->loss_norm};
    for (int k = 0; k < 4; k++) {
        const char *v = ivae_st_meta(st, kinds[k]);
        if (!v) continue;
        if ((*fields[k] = ivae_variant_parse(kinds[k], v)) < 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s: metadata %s", st->path, ivae_error());
            ivae_set_error("%s", msg);
            return -1;
        }
    }
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

int ivae_config_meta(const IvaeConfig *c, IvaeMetaBuf *buf, const char **meta) {
    snprintf(buf->s[0], sizeof buf->s[0], "%d", c->base_ch);
    snprintf(buf->s[1], sizeof buf->s[1], "%d", c->n_res);
    snprintf(buf->s[2], sizeof buf->s[2], "%d", c->z_ch);
    char *mult = buf->s[3], *temporal = buf->s[4];
    mult[0] = temporal[0] = 0;
    for (int s = 0; s < c->n_stages; s++)
        snprintf(mult + strlen(mult), sizeof buf->s[3] - strlen(mult), "%s%d", s ? "," : "", c->ch_mult[s]);
    for (int s = 0; s + 1 < c->n_stages; s++)
        snprintf(temporal + strlen(temporal), sizeof buf->s[4] - strlen(temporal), "%s%d", s ? "," : "", c->temporal[s]);
    const char *pairs[14] = {"format", "ivae", "base_ch", buf->s[0], "ch_mult", mult, "n_res", buf->s[1], "z_ch", buf->s[2],
                             "temporal", temporal, "attn", c->attn == IVAE_ATTN_CAUSAL ? "causal" : "frame"};
    memcpy(meta, pairs, sizeof pairs);
    int n = 7;
    /* SPEC 9: a variant other than the default is named (absent = default) */
    static const char *const kinds[4] = {"block_norm", "attn_norm", "image_mode", "loss_norm"};
    const int values[4] = {c->block_norm, c->attn_norm, c->image_mode, c->loss_norm};
    for (int k = 0; k < 4; k++)
        if (values[k] != 0) meta[2 * n] = kinds[k], meta[2 * n + 1] = ivae_variant_name(kinds[k], values[k]), n++;
    return n;
}

int ivae_save(const IvaeModel *m, const char *path) {
    IvaeMetaBuf mb;
    const char *meta[2 * IVAE_CONFIG_META];
    int n_meta = ivae_config_meta(&m->cfg, &mb, meta);
    IvaeStEntry *e = xcalloc((size_t)m->n_tensors, sizeof *e);
    for (int j = 0; j < m->n_tensors; j++) {
        e[j].name = m->info[j].name;
        e[j].ndim = m->info[j].ndim;
        for (int d = 0; d < e[j].ndim; d++) e[j].shape[d] = m->info[j].shape[d];
        e[j].data = m->params + m->info[j].offset;
    }
    int rc = ivae_st_write(path, e, m->n_tensors, meta, n_meta);
    free(e);
    return rc;
}

