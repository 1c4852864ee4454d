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
#endif
