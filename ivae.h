/*
 * ivae.h: the public API of ivae, an image-video VAE in plain C.
 *
 * The model, the loss and every number are specified in SPEC.md (the
 * contract); this header says how to drive the C reference:
 *
 *   IvaeConfig cfg;  ivae_config_preset("ivae-s", &cfg);
 *   IvaeModel *m = ivae_model_new(&cfg);        // parameters in one block
 *   ivae_init_params(m, 42);                     // SPEC 6, from a seed
 *   ... or: IvaeModel *m = ivae_load("model.safetensors");
 *   IvaeSample s = { .x = clip, .T = 17, .H = 64, .W = 64, .eps = noise };
 *   IvaeLoss L;  ivae_zero_grad(m);  ivae_batch_grad(m, &s, 1, &opts, &L);
 *   // m->grads now holds dL/dparams, laid out exactly like m->params
 *
 * Every function that can fail returns 0 on success and -1 on failure, with
 * a one-line description of the problem in ivae_error().
 *
 * Tensors are float32, layout (C, T, H, W) per sample, W fastest (SPEC 1).
 * A batch may mix shapes (images, T = 1, and clips, T = 1 + 4k), so the
 * model runs sample by sample and sums the gradients.
 */
#ifndef IVAE_H
#define IVAE_H

#include <stddef.h>
#include <stdint.h>

/* real is float. The gradient check (test/gradcheck.c) compiles ivae.c once
   more with IVAE_DOUBLE defined, to compare every backward pass with finite
   differences in double precision. Nothing else ever sets it. */
#ifdef IVAE_DOUBLE
typedef double real;
#else
typedef float real;
#include "safetensors.h" /* ivae_st_*: reading and writing tensor files */
#endif

#define IVAE_MAX_STAGES 8

/* ------------------------------------------------------------------------ */
/* configuration (SPEC 3) */

typedef enum { IVAE_ATTN_FRAME = 0, IVAE_ATTN_CAUSAL = 1 } IvaeAttnMode;

/* The variants of SPEC 9 (the seed's lessons); 0 is always the default.
   block_norm: the residual blocks' normalisation (SMC, or GroupNorm with
   plain convs); attn_norm: what normalises the attention input; image_mode:
   images as one-frame clips (causal) or as 5 identical frames (static);
   loss_norm: how a sample's loss terms are normalised (SPEC 4 / 9). */
typedef enum { IVAE_BLOCK_SMC = 0, IVAE_BLOCK_GROUPNORM = 1 } IvaeBlockNorm;
typedef enum { IVAE_ATTN_PIXELNORM = 0, IVAE_ATTN_GROUPNORM = 1, IVAE_ATTN_NONORM = 2 } IvaeAttnNorm;
typedef enum { IVAE_IMAGE_CAUSAL = 0, IVAE_IMAGE_STATIC = 1 } IvaeImageMode;
typedef enum { IVAE_LOSS_REF = 0, IVAE_LOSS_SUM = 1, IVAE_LOSS_MEAN = 2 } IvaeLossNorm;
/* the names of SPEC 9 ("smc", "groupnorm", ...) and back: the enum value, or
   -1 with a message listing the names; kind is "block_norm", "attn_norm",
   "image_mode" or "loss_norm" */
int ivae_variant_parse(const char *kind, const char *name);
const char *ivae_variant_name(const char *kind, int value);
/* GroupNorm's groups (SPEC 9) */
#define IVAE_GN_GROUPS 8
/* the frames of an image fed as a static video (SPEC 9) */
#define IVAE_STATIC_FRAMES 5

typedef struct {
    int base_ch;                        /* C0 */
    int n_stages;                       /* S */
    int ch_mult[IVAE_MAX_STAGES];       /* m[0..S-1]; C_s = C0 * m[s] */
    int n_res;                          /* residual blocks per stage */
    int z_ch;                           /* latent channels */
    int temporal[IVAE_MAX_STAGES];      /* temporal[0..S-2]: transition s halves time */
    IvaeAttnMode attn;
    /* SPEC 9: the variant a checkpoint records (metadata; absent = default) */
    int block_norm, attn_norm;          /* IvaeBlockNorm, IvaeAttnNorm: change the parameters */
    int image_mode, loss_norm;          /* IvaeImageMode, IvaeLossNorm: how it was trained */
} IvaeConfig;

/* "ivae-s" or "ivae-xs"; returns -1 for an unknown name */
int ivae_config_preset(const char *name, IvaeConfig *cfg);
/* checks a config for sense (channel counts > 0, S in range, ...) */
int ivae_config_check(const IvaeConfig *cfg);
/* time and space downsampling factors: 2^(temporal downsamples), 2^(S-1) */
int ivae_time_factor(const IvaeConfig *cfg);
int ivae_space_factor(const IvaeConfig *cfg);
/* checks that (T, H, W) is a valid input shape (SPEC 1) and gives the latent
   shape; -1 with a message naming the problem otherwise */
int ivae_latent_shape(const IvaeConfig *cfg, int T, int H, int W, int *Tz, int *Hz, int *Wz);

/* ------------------------------------------------------------------------ */
/* the model: parameters, gradients and the layer graph */

typedef struct {
    char name[96];          /* SPEC 5, e.g. "encoder.stages.0.res.0.conv1.scale" */
    int ndim;
    int shape[5];
    size_t offset;          /* into params / grads / any mirrored buffer */
    size_t numel;
} IvaeParamInfo;

typedef struct IvaeModel IvaeModel;
struct IvaeModel {
    IvaeConfig cfg;
    int n_tensors;
    IvaeParamInfo *info;    /* (n_tensors) in SPEC 5 order */
    size_t n_params;
    real *params;           /* (n_params) one allocation, all tensors */
    real *grads;            /* (n_params) same layout */
    real *adam_m, *adam_v;  /* (n_params) AdamW moments, NULL until the first step */
    long step;              /* optimizer steps taken */
    struct IvaeImpl *impl;  /* layer graph, scratch, saved activations */
};

IvaeModel *ivae_model_new(const IvaeConfig *cfg);
void ivae_model_free(IvaeModel *m);
const IvaeParamInfo *ivae_find_param(const IvaeModel *m, const char *name);
/* SPEC 6 initialisation from a seed (the RNG is described in ivae.c) */
void ivae_init_params(IvaeModel *m, uint64_t seed);
void ivae_zero_grad(IvaeModel *m);

/* ------------------------------------------------------------------------ */
/* forward and backward */

typedef struct {
    real w_image, w_video;      /* per-modality weights (SPEC 4), default 1, 1 */
    real beta;                  /* KL weight, default 1e-6 */
    real w_opl;                 /* outlier penalty weight, default 0 */
    int ref_t, ref_h, ref_w;    /* reference shape, default 17 x 64 x 64 */
    int loss_norm;              /* IvaeLossNorm (SPEC 9): ref (default), sum or mean */
} IvaeLossOpts;

void ivae_loss_defaults(IvaeLossOpts *o);

typedef struct {
    /* inputs */
    const real *x;          /* (3, T, H, W) pixels in [-1, 1] */
    int T, H, W;
    const real *eps;        /* (z, Tz, Hz, Wz) standard normal noise */
    /* optional outputs: NULL to skip, else caller-allocated */
    real *mu, *logvar;      /* (z, Tz, Hz, Wz), logvar clamped */
    real *xhat;             /* (3, T, H, W) */
    real *dx;               /* (3, T, H, W) dL/dx */
    double rec, kl;         /* written by every batch pass: the sample's rec_i and kl_i */
} IvaeSample;

typedef struct {
    double loss;            /* L of SPEC 4 */
    double rec, kl, opl;    /* unweighted batch means (1/B) sum_i */
    char nonfinite[128];    /* "" if all is finite; else where a NaN or inf first
                               appeared: "sample 2, activation encoder.mid.attn"
                               or "gradient decoder.conv_out.weight" */
} IvaeLoss;

/* Forward and backward over a batch: adds dL/dparams to m->grads (call
   ivae_zero_grad first), fills the loss and each sample's optional outputs. */
int ivae_batch_grad(IvaeModel *m, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeLoss *out);
/* the checks ivae_batch_grad makes before it runs (B >= 1, a positive
   reference shape, every sample's x and eps present and its shape valid),
   with its messages; for other backends that run the same batch */
int ivae_check_batch(const IvaeModel *m, const IvaeSample *samples, int B, const IvaeLossOpts *opts);

/* Data parallelism (train.c over MPI; SPEC 8.2): ivae_batch_grad's result,
   bit for bit, from processes that each compute a block of the batch.
   The batch gradient is the left fold, in sample order, of the samples'
   gradients, each computed from +0 (what ivae_batch_grad computes, in place:
   every weight and bias gradient adds one per-sample sum per sample); the
   loss terms fold the same way. This process computes samples [i0, i1):
   g[0] = the fold of its samples if i0 == 0, else g[k] = sample i0 + k's
   gradient alone; exchange() (dist.c) must then leave in total the fold of
   every process's g in order, and in per[0..B-1] every sample's loss terms
   (this process fills per[i0..i1-1]). The gradients are "raw": laid out as
   m->params, but an SMC weight's slots hold d(effective weight), which
   ivae_batch_grad turns into dW, dscale, dgain only once for the batch
   (smc_finish). Then m->grads = that batch's gradient: m->grads must be
   zero before (ivae_zero_grad). Samples outside [i0, i1) are checked as
   ivae_batch_grad checks them, but their x and eps are not read. */
typedef struct IvaeSplit IvaeSplit;
struct IvaeSplit {
    int i0, i1;
    real **g;           /* n_params floats each: 1 buffer if i0 == 0, else i1 - i0 */
    real *total;        /* n_params floats */
    IvaeLoss *per;      /* B records */
    int (*exchange)(void *ctx, IvaeSplit *s, int n_g, size_t n, int B);
    void *ctx;
};
int ivae_batch_grad_split(IvaeModel *m, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeSplit *sp,
                          IvaeLoss *out);
/* the batch's loss from every sample's terms: their left fold in sample
   order, and the first sample's non-finite message */
void ivae_loss_fold(const IvaeLoss *per, int B, IvaeLoss *out);

/* Activation statistics of the last sample's forward pass, block by block
   (encoder, then decoder): the RMS and the largest per-pixel channel norm
   ||y[:, t, h, w]||, the numbers that find a layer that makes splotches or
   blows up. Returns the number of blocks written (at most max). */
typedef struct {
    const char *name;       /* e.g. "encoder.stages.1.res.0" */
    double rms, max_norm;
    double median_norm;     /* the median per-pixel norm: max_norm / median_norm
                               is the splotch ratio (a pixel that dwarfs the rest) */
} IvaeActStat;
int ivae_activation_stats(IvaeModel *m, IvaeActStat *out, int max);
/* the median of v (sorted in place); NaN for n = 0 */
double ivae_median(double *v, size_t n);

/* The layer graph, read-only, for other backends (the OpenCL path) that run
   the same model: the blocks of the encoder (decoder = 0) or the decoder in
   forward order, with their parameters' offsets into m->params. */
typedef enum { IVAE_BLK_CONV, IVAE_BLK_RES, IVAE_BLK_ATTN, IVAE_BLK_UP, IVAE_BLK_SILU_CONV } IvaeBlockKind;
typedef struct {
    size_t w, b;                        /* weight and bias offsets */
    int cout, cin, kt, kh, kw, st, sh, sw;
} IvaeConvDesc;
typedef struct {
    IvaeBlockKind kind;
    const char *name;                   /* e.g. "decoder.stages.2.up" */
    IvaeConvDesc conv;                  /* CONV, UP, SILU_CONV: the conv; RES: shortcut; ATTN: qkv */
    IvaeConvDesc proj;                  /* ATTN */
    IvaeConvDesc c1, c2;                /* RES: the two SMC convs (plain with GroupNorm) */
    size_t c1_scale, c1_gain, c2_scale, c2_gain;
    /* GroupNorm (SPEC 9): RES with block_norm groupnorm: norm1 before c1,
       norm2 before c2; ATTN with attn_norm groupnorm: norm1 (attn.norm) */
    size_t norm1_w, norm1_b, norm2_w, norm2_b;
    int norm1_c, norm2_c;               /* their channel counts */
    int shortcut;                       /* RES: has a shortcut conv */
    int temporal;                       /* UP: doubles time */
} IvaeBlockDesc;
int ivae_graph(const IvaeModel *m, int decoder, IvaeBlockDesc *out, int max);
/* the output of block j of the last forward pass (the last sample of a
   batch), with its shape; NULL if there is none */
const real *ivae_block_output(const IvaeModel *m, int decoder, int j, int shape[4]);

/* Inference: encode returns mu (z, Tz, Hz, Wz); decode maps a latent to
   pixels (3, T, H, W) with T = (Tz - 1) * time_factor + 1. Both stream the
   clip through the causal convolutions chunk by chunk (frame attention), so
   their memory does not grow with the number of frames. */
int ivae_encode(IvaeModel *m, const real *x, int T, int H, int W, real *mu);
int ivae_decode(IvaeModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat);
/* Calls fn for every block's output during ivae_encode and ivae_decode, with
   the block's name (SPEC 5 prefix) and the chunk's index, for `ivae trace`;
   fn NULL turns it off. x (C, T, H, W) is valid during the call only. */
typedef void (*IvaeTraceFn)(void *ctx, const char *name, int chunk, const real *x, int C, int T, int H, int W);
void ivae_set_trace(IvaeModel *m, IvaeTraceFn fn, void *ctx);
/* the same on the whole clip at once, without streaming (the tests check
   that streaming gives these bits) */
int ivae_encode_whole(IvaeModel *m, const real *x, int T, int H, int W, real *mu);
int ivae_decode_whole(IvaeModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat);

/* SPEC 9, image_mode static: an image (3, 1, H, W) becomes a clip of
   IVAE_STATIC_FRAMES copies (out (3, 5, H, W)); the gradient of the clip
   folds back to the image by a plain sum over the copies in frame order */
void ivae_static_expand(real *out, const real *img, int H, int W);
void ivae_static_fold(real *dimg, const real *dclip, int H, int W);

/* ------------------------------------------------------------------------ */
/* the optimizer */

typedef struct {
    real lr;                /* learning rate of this step */
    real beta1, beta2, eps; /* AdamW moments, defaults 0.9, 0.999, 1e-8 */
    real weight_decay;      /* decoupled; applied to conv weights only */
} IvaeAdamW;

void ivae_adamw_defaults(IvaeAdamW *h);
/* one AdamW step on m->params from m->grads; the moments m->adam_m and
   m->adam_v (allocated on first use) and m->step live in the model */
void ivae_adamw_step(IvaeModel *m, const IvaeAdamW *h);
/* the first part of a step, for other backends: m->step advanced and the
   bias corrections c1 = 1 - beta1^step, c2 = 1 - beta2^step (in double,
   rounded to real) */
void ivae_adamw_begin(IvaeModel *m, const IvaeAdamW *h, real *c1, real *c2);

/* The units that gradient clipping works on: each output channel of a conv
   weight (a 5-D tensor; conv = 1) is one unit, every other tensor (biases,
   SMC scales and gains) is one unit of its own (conv = 0), in SPEC 5 order.
   Norms are squared sums in double, in index order within a unit; a norm of
   the whole buffer is the units' sums added in unit order. The OpenCL path
   (ivae_cl_unit_sumsq) sums the same units the same way. */
typedef struct {
    size_t offset;          /* into params / grads */
    int len, tensor, conv;
} IvaeUnit;

/* the units of m (out may be NULL); returns their number */
int ivae_units(const IvaeModel *m, IvaeUnit *out);
/* out[u] = sum over unit u of (double)x[k] * x[k], for x = params or grads */
void ivae_unit_sumsq(double *out, const real *x, const IvaeUnit *u, int n);
/* x[k] *= f[u] over each unit u whose f[u] != 1 */
void ivae_unit_scale(real *x, const IvaeUnit *u, int n, const real *f);

/* ------------------------------------------------------------------------ */
/* The layers themselves (SPEC 2) are declared in layers.h. */
/* ------------------------------------------------------------------------ */
/* checkpoints (SPEC 5); the safetensors reader and writer are in safetensors.h */
/* a model from a checkpoint: the config from __metadata__, every parameter
   present with the right shape, all finite */
IvaeModel *ivae_load(const char *path);
int ivae_save(const IvaeModel *m, const char *path);
/* the config as __metadata__ pairs (meta[2k] = key, meta[2k+1] = value,
   values kept in buf): SPEC 5's keys and SPEC 9's non-default variants;
   returns the number of pairs, at most IVAE_CONFIG_META */
#define IVAE_CONFIG_META 11
typedef struct {
    char s[5][128];
} IvaeMetaBuf;
int ivae_config_meta(const IvaeConfig *c, IvaeMetaBuf *buf, const char **meta);

/* ------------------------------------------------------------------------ */
/* utilities */

const char *ivae_error(void);
void ivae_set_error(const char *fmt, ...);

/* the RNG of initialisation and of the tests: splitmix64 */
typedef struct { uint64_t s; } IvaeRng;
uint64_t ivae_rng_next(IvaeRng *r);
double ivae_rng_uniform(IvaeRng *r);        /* [0, 1), 53 bits */
double ivae_rng_normal(IvaeRng *r);         /* Box-Muller */

#include "safetensors.h" /* ivae_st_*: reading and writing tensor files */
#endif
