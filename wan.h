/*
 * wan.h: the Wan 2.1 VAE (SPEC 7), inference: encode a clip to its latent
 * mean and decode a latent to pixels, streamed chunk by chunk exactly as the
 * official code does (encoder chunks of 1, 4, 4, ... frames, decoder one
 * latent frame at a time, every causal conv keeping 2 frames of context).
 *
 *   WanModel *m = wan_load("diffusion_pytorch_model.safetensors");
 *   wan_encode(m, x, T, H, W, mu, NULL, NULL);     // x (3, T, H, W) in [-1, 1]
 *   wan_decode(m, mu, Tz, Hz, Wz, xhat, NULL);     // xhat raw, (3, T, H, W)
 *
 * Weights load from the diffusers layout (AutoencoderKLWan names) or the
 * official one (Wan2.1_VAE.pth names), F32, F16 or BF16; the width (dim) and
 * the latent channels (z) come from the weights' shapes.
 */
#ifndef IVAE_WAN_H
#define IVAE_WAN_H
#include "ivae.h"

typedef struct WanModel WanModel;

/* 1 if the file's tensors are a Wan 2.1 VAE's (either layout), else 0 */
int wan_detect(const IvaeSt *st);
/* every expected tensor present with its shape, nothing else, all finite;
   NULL with the problem (naming the tensor) in ivae_error() */
WanModel *wan_load(const char *path);
WanModel *wan_load_st(const IvaeSt *st);
void wan_free(WanModel *m);
/* a model of width dim with random non-trivial weights (gammas U(0.5, 1.5),
   biases U(-0.1, 0.1), conv weights U(+-sqrt(3/fan_in)) / 2), for benchmarks */
WanModel *wan_new_random(int dim, int z, uint64_t seed);
int wan_dim(const WanModel *m);
int wan_z(const WanModel *m);
size_t wan_n_params(const WanModel *m);
const char *wan_layout(const WanModel *m); /* "diffusers" or "official" */

/* a block's output, chunk by chunk, for `ivae trace` (names in SPEC 7, e.g.
   "encoder.down_blocks.3"; x (C, T, H, W)) */
typedef void (*WanTraceFn)(void *ctx, const char *name, int chunk, const real *x, int C, int T, int H, int W);

/* T = 1 + 4k frames, H and W multiples of 8; mu and logvar (z, 1 + k, H/8,
   W/8), logvar raw (unclamped) and optional (NULL) */
int wan_encode(WanModel *m, const real *x, int T, int H, int W, real *mu, real *logvar, WanTraceFn trace,
               void *trace_ctx);
/* xhat (3, 1 + 4 (Tz - 1), 8 Hz, 8 Wz): the raw decoder output */
int wan_decode(WanModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat, WanTraceFn trace, void *trace_ctx);

/* The same, spatially tiled for frames that do not fit: tiles of `tile`
   pixels overlapping by `overlap` (multiples of 8; diffusers' defaults 256
   and 64), blended linearly over the overlap, each tile with its own caches
   (never tiled in time). Frames no larger than a tile run untiled. */
int wan_encode_tiled(WanModel *m, const real *x, int T, int H, int W, real *mu, int tile, int overlap);
int wan_decode_tiled(WanModel *m, const real *z, int Tz, int Hz, int Wz, real *xhat, int tile, int overlap);

/* the 16 published per-channel latent statistics: a diffusion model is
   handed (mu - mean) / std */
extern const float wan_latent_mean[16], wan_latent_std[16];

/* --- the network as data, for other back ends (wan_cl.c runs it on OpenCL) --
   Offsets count floats into wan_params(m). A conv's weight is (cout, cin, kt,
   kh, kw) (the file's 2-D convs run as kt = 1), its bias (cout). Blocks are
   listed in the order wan.c runs them; the rules that go with each kind
   (padding, strides, the caches and first-chunk rules) are wan.c's. */
typedef struct {
    size_t w, b;
    int cout, cin, kt, kh, kw;
} WanConvDesc;

enum { WAN_BLOCK_RES, WAN_BLOCK_DOWN, WAN_BLOCK_UP };
#define WAN_MAX_BLOCKS 16 /* the encoder has 11, the decoder 15 */

typedef struct {
    int kind;                           /* WAN_BLOCK_* */
    const char *name;                   /* diffusers prefix, e.g. "encoder.down_blocks.3" */
    int cin, cout;
    size_t norm1, norm2;                /* RES: the RMS norms' gammas (cin), (cout) */
    WanConvDesc conv1, conv2, shortcut; /* RES: 3x3x3, 3x3x3, 1x1x1 (only if has_shortcut) */
    int has_shortcut;
    WanConvDesc resample, time_conv;    /* DOWN, UP: the 3x3 conv; the 3x1x1 time_conv (only if temporal) */
    int temporal;
} WanBlockDesc;

typedef struct {
    /* encoder: conv_in, block[], mid, norm_out + SiLU, conv_out, quant (= quant_conv);
       decoder: quant (= post_quant_conv), conv_in, mid, block[], norm_out + SiLU, conv_out */
    WanConvDesc conv_in, conv_out, quant;
    int n_blocks;
    WanBlockDesc block[WAN_MAX_BLOCKS];
    WanBlockDesc mid_res0, mid_res1;    /* the mid block: res, attention, res */
    int attn_C;
    size_t attn_norm;                   /* gamma (attn_C) */
    WanConvDesc attn_qkv, attn_proj;    /* (3C, C, 1, 1, 1), (C, C, 1, 1, 1) */
    size_t norm_out;                    /* the head's gamma */
} WanGraph;

/* the encoder's (decoder = 0) or the decoder's graph */
void wan_graph(const WanModel *m, int decoder, WanGraph *g);
/* the parameters (wan_n_params floats) and the tensors in them: tensor j's
   diffusers name, offset and number of floats */
const real *wan_params(const WanModel *m);
int wan_n_tensors(const WanModel *m);
const char *wan_tensor(const WanModel *m, int j, size_t *offset, size_t *numel);
/* wan_encode's check of a clip's shape: 0, or -1 with ivae_error() set */
int wan_check_shape(int T, int H, int W);
#endif
