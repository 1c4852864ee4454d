/*
 * wan_cl.h: the Wan 2.1 VAE (wan.h, SPEC 7) on an OpenCL device.
 *
 *   IvaeCl *cl = ivae_cl_new();                  // IVAE_CL_PLATFORM, IVAE_CL_DEVICE
 *   WanCl *w = wan_cl_new(cl, m, 0);             // 0: strict, 1: fast
 *   wan_cl_encode(w, x, T, H, W, mu, logvar);    // = wan_encode(m, x, T, H, W, mu, logvar, NULL, NULL)
 *   wan_cl_decode(w, mu, Tz, Hz, Wz, xhat);      // = wan_decode(m, mu, Tz, Hz, Wz, xhat, NULL, NULL)
 *   wan_cl_free(w); ivae_cl_free(cl);
 *
 * The same chunk loops as wan.c (encoder chunks of 1, 4, 4, ... frames,
 * decoder one latent frame at a time). The weights are uploaded once, one
 * buffer per tensor (so no buffer comes near the device's largest allocation,
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE); every cached conv keeps its 2 frames of
 * context on the device between chunks; a chunk's activations live in a pool
 * of device buffers that is reused chunk after chunk; the host sends each
 * input chunk and reads each output chunk, nothing else.
 *
 * Strict mode gives wan_encode's and wan_decode's bits exactly (the kernels
 * of kernels.cl, in the C code's order); fast mode runs the convolutions and
 * attention as tiled products (kernels_fast.cl), within SPEC 8's e <= 1e-5.
 *
 * m must outlive w. Every function returns 0 on success, or -1 (NULL) with
 * one line in ivae_error(): a tensor or an activation larger than the device
 * allows in one buffer is named. Needs no OpenCL headers; a build without
 * OpenCL gets ivae_cl_stub.c's versions, which say so.
 */
#ifndef IVAE_WAN_CL_H
#define IVAE_WAN_CL_H
#include "wan.h"

typedef struct IvaeCl IvaeCl; /* a device with kernels.cl built for it (ivae_cl.h) */
typedef struct WanCl WanCl;   /* a Wan 2.1 VAE living on that device */

WanCl *wan_cl_new(IvaeCl *cl, WanModel *m, int fast);
void wan_cl_free(WanCl *w);
/* x (3, T, H, W), T = 1 + 4k, H and W multiples of 8; mu, logvar (z, 1 + k,
   H/8, W/8), logvar raw and optional (NULL) */
int wan_cl_encode(WanCl *w, const real *x, int T, int H, int W, real *mu, real *logvar);
/* xhat (3, 1 + 4 (Tz - 1), 8 Hz, 8 Wz): the raw decoder output */
int wan_cl_decode(WanCl *w, const real *z, int Tz, int Hz, int Wz, real *xhat);
/* every block's output read back and handed to fn during encode and decode,
   with wan.c's names and chunk numbers (for ivae compare); NULL: off */
void wan_cl_set_trace(WanCl *w, WanTraceFn fn, void *ctx);
#endif
