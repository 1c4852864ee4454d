/*
 * ivae_cl_model.h: the whole ivae model on an OpenCL device.
 *
 * The twin of ivae.h's model functions, running every layer on the device
 * with the kernels of kernels.cl. The parameters are uploaded once; the
 * gradients, the AdamW moments, the SMC effective weights and each sample's
 * activations stay on the device. A training step moves only the batch in
 * and the loss out:
 *
 *   IvaeCl *cl = ivae_cl_new();                    // IVAE_CL_PLATFORM, IVAE_CL_DEVICE
 *   IvaeClModel *cm = ivae_cl_model_new(cl, m, 0); // 0: strict, 1: fast
 *   for each step:
 *       ivae_cl_zero_grad(cm);
 *       ivae_cl_batch_grad(cm, batch, B, &opts, &L); // = ivae_batch_grad
 *       ivae_cl_adamw_step(cm, &adam);               // = ivae_adamw_step (m->step++)
 *   ivae_cl_get_state(cm, m);                        // params, moments -> m, for ivae_save
 *   ivae_cl_model_free(cm); ivae_cl_free(cl);
 *
 * Strict mode (fast = 0) gives bit for bit what the C functions give on the
 * same model and batch (SPEC 8): every output, every gradient, the loss, the
 * parameters after any number of AdamW steps. Fast mode (fast = 1) runs the
 * convolutions and attention as tiled products in local memory, within
 * SPEC 8's tolerances of the C reference.
 *
 * While the model trains on the device, m->params and m->grads on the host
 * are stale until copied back. train.c's guards (gradient norm, clipping,
 * NaN and spike guards) need only small measurements, made on the device:
 *
 *       ivae_cl_batch_grad(cm, ...);                   // the loss comes out
 *       ivae_cl_activation_stats(cm, ...);              // one number per pixel
 *       ivae_cl_measure_units(cm, 1, gsq);              // one per unit (ivae_units)
 *       ... the host decides the clipping factors f ...
 *       ivae_cl_scale_grads(cm, f);
 *       ivae_cl_adamw_step(cm, &adam);
 *   checkpoint or backup: ivae_cl_get_state(cm, m), then as on the CPU;
 *   rollback or resume:   restore m on the host, then ivae_cl_set_state(cm, m);
 *   held-out evaluation:  ivae_cl_encode / ivae_cl_decode.
 *
 * In strict mode such a run gives the CPU run's bits, step for step.
 *
 * Host buffers use the host model's layout (m->info offsets, as m->params).
 * The model m must outlive cm; cm reads its config, graph and parameter
 * table, and uses m->step as the optimizer's step count. Every function
 * returns 0 on success and -1 with ivae_error() set (an OpenCL failure also
 * prints the call, file and line to stderr).
 *
 * This header needs no OpenCL headers: main.c and train.c include it in
 * every build. Built without OpenCL (make NO_OPENCL=1, or no OpenCL found),
 * ivae_cl_stub.c provides these functions; they fail with a message that
 * says so, and ivae_cl_built() returns 0.
 */
#ifndef IVAE_CL_MODEL_H
#define IVAE_CL_MODEL_H

#include "ivae.h"
#include <stdio.h>

typedef struct IvaeCl IvaeCl;           /* a device with kernels.cl built for it (ivae_cl.h) */
typedef struct IvaeClModel IvaeClModel; /* a model living on that device */

/* 1 if this program was built with OpenCL, 0 if with the stub */
int ivae_cl_built(void);

/* the device: see ivae_cl.h (the number of platforms, `ivae devices`'s
   listing, opening the device that IVAE_CL_PLATFORM / IVAE_CL_DEVICE name) */
int ivae_cl_platform_count(void);
int ivae_cl_print_devices(FILE *f);
IvaeCl *ivae_cl_new(void);
void ivae_cl_free(IvaeCl *cl);
/* "platform 0 (Portable Computing Language), device 0 (pthread-...)" */
const char *ivae_cl_describe(const IvaeCl *cl);

/* uploads m's parameters (and AdamW moments, if m has them) to the device */
IvaeClModel *ivae_cl_model_new(IvaeCl *cl, IvaeModel *m, int fast);
void ivae_cl_model_free(IvaeClModel *cm);
int ivae_cl_model_fast(const IvaeClModel *cm);

/* ------------------------------------------------------------------------ */
/* training */

int ivae_cl_zero_grad(IvaeClModel *cm);
/* ivae_batch_grad on the device: adds dL/dparams to the device gradients,
   fills the loss and each sample's optional outputs (mu, logvar, xhat, dx:
   downloaded only when not NULL) */
int ivae_cl_batch_grad(IvaeClModel *cm, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeLoss *out);
/* ivae_batch_grad_split on the device (ivae.h: IvaeSplit): the raw
   gradients come to the host for the exchange, the batch's goes back */
int ivae_cl_batch_grad_split(IvaeClModel *cm, IvaeSample *samples, int B, const IvaeLossOpts *opts, IvaeSplit *sp,
                             IvaeLoss *out);
/* the number of devices of the platform IVAE_CL_PLATFORM names (0 if none),
   for one rank per device */
int ivae_cl_device_count(void);
/* ivae_adamw_step on the device: increments cm's model's m->step, computes
   the bias corrections as the C code does, updates params and moments */
int ivae_cl_adamw_step(IvaeClModel *cm, const IvaeAdamW *h);

/* the flat buffers, n_params floats in m->params' layout */
int ivae_cl_get_params(IvaeClModel *cm, real *params);
int ivae_cl_set_params(IvaeClModel *cm, const real *params);
int ivae_cl_get_grads(IvaeClModel *cm, real *grads);
int ivae_cl_set_grads(IvaeClModel *cm, const real *grads); /* e.g. after clipping on the host */
/* the whole optimizer state for checkpoints: params -> m->params and the
   moments -> m->adam_m, m->adam_v (allocated here if NULL); set_state
   uploads them back (zero moments if m has none), e.g. after a resume */
int ivae_cl_get_state(IvaeClModel *cm, IvaeModel *m);
int ivae_cl_set_state(IvaeClModel *cm, const IvaeModel *m);

/* what train.c's clipping measures, on the device: out[u] = the squared
   norm of unit u of ivae_units(m) of the gradients (grads = 1) or the
   weights, as ivae_unit_sumsq computes it (in double on the device if it
   has cl_khr_fp64, else the floats are copied and summed on the host: the
   same bits either way); and the gradients' units scaled by f[u]
   (ivae_unit_scale) */
int ivae_cl_measure_units(IvaeClModel *cm, int grads, double *out);
int ivae_cl_scale_grads(IvaeClModel *cm, const real *f);

/* ivae_activation_stats for the device's last sample (each pixel's norm is
   computed on the device when it has double, else from copied outputs:
   the same numbers either way) */
int ivae_cl_activation_stats(IvaeClModel *cm, IvaeActStat *out, int max);
/* block j's output of the last forward pass (the last sample of a batch):
   its shape, and if out is not NULL its values; -1 if there is none */
int ivae_cl_block_output(IvaeClModel *cm, int decoder, int j, int shape[4], real *out);

/* ------------------------------------------------------------------------ */
/* inference: ivae_encode / ivae_decode, on the whole clip at once (the C
   code streams chunk by chunk; its results are bit for bit the whole
   clip's, so strict mode matches it exactly; device memory grows with the
   clip) */
int ivae_cl_encode(IvaeClModel *cm, const real *x, int T, int H, int W, real *mu);
int ivae_cl_decode(IvaeClModel *cm, const real *z, int Tz, int Hz, int Wz, real *xhat);

#endif
