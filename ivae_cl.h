/*
 * ivae_cl.h: the OpenCL twin of ivae's layers, driven from C.
 *
 * kernels.cl holds the kernels of each layer function of layers.c (SPEC 2 and
 * 4; its header maps them to the C names), computing every element with the
 * same float operations in the same order as the C reference, so the results
 * are bit for bit the CPU's (SPEC 8, "strict build"). kernels_fast.cl holds
 * the fast ones. This header opens a device and wraps each layer:
 *
 *   IvaeCl *cl = ivae_cl_new();                 // IVAE_CL_PLATFORM, IVAE_CL_DEVICE
 *   if (!cl) { fprintf(stderr, "%s\n", ivae_error()); ... use the CPU path }
 *   cl_mem x = ivae_cl_buffer(cl, n, host_x);   // n floats, copied from host_x
 *   cl_mem y = ivae_cl_buffer(cl, n, NULL);
 *   ivae_cl_silu_forward(cl, y, x, n);          // = ivae_silu_forward(y, x, n)
 *   ivae_cl_read(cl, host_y, y, n);
 *   clReleaseMemObject(x); clReleaseMemObject(y); ivae_cl_free(cl);
 *
 * Every layer wrapper takes the context, then the C function's arguments in
 * its order with a cl_mem for each pointer (NULL where the C function
 * accepts NULL), and enqueues its kernels on the context's in-order queue: a
 * read that follows sees the result. It returns 0 (conv3d_forward_chunk: the
 * number of output frames, as in C), or -1 when an OpenCL call failed; the
 * call, the error's name, file and line are then printed to stderr and kept
 * in ivae_error(). A C function that returns a double (a loss) gets a
 * `double *` output as its first argument instead.
 *
 * The whole model on the device (parameters, gradients and activations kept
 * there between calls) is ivae_cl_model.h's, built on these wrappers; the
 * Wan 2.1 VAE on the device is wan_cl.h's. Each layer that matters for
 * speed also has a fast twin (ivae_cl_*_fast, same arguments): tiled, within
 * SPEC 8's tolerances instead of bit for bit.
 *
 * Device choice: env IVAE_CL_PLATFORM and IVAE_CL_DEVICE, indices as printed
 * by ivae_cl_print_devices(), default 0 and 0. Env IVAE_CL_MAX_ALLOC=<bytes>
 * lowers the largest single buffer the code plans with below the device's
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE (to rehearse a small device on a big one).
 * Env IVAE_CL_PROFILE=1 times every kernel (each launch then waits for its
 * end) and prints the totals, kernel by kernel, when the context is freed.
 *
 * kernels.cl and kernels_fast.cl are read at run time and compiled for the
 * device as one program (kernels.cl includes ivae_math.h from its own
 * directory): kernels.cl from the file named by env IVAE_KERNELS if set, else
 * from the directory of the executable, else from the directory above it (so
 * test/test_cl finds ../kernels.cl); kernels_fast.cl from the directory of
 * that kernels.cl.
 *
 * Needs the library (util.c) for ivae_set_error().
 */
#ifndef IVAE_CL_H
#define IVAE_CL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120 /* the 1.2 API: enough, and what every driver has */
#endif
#include <CL/cl.h>
#include <stddef.h>
#include <stdio.h>

/* The kernels of kernels.cl, then of kernels_fast.cl, in file order; the
   context holds one cl_kernel each. */
#define IVAE_CL_KERNELS(X)                                                                              \
    X(sum_nested_channel) X(sum_nested_total)                                                           \
    X(conv3d_forward) X(conv3d_forward_chunk) X(conv3d_forward_padded) X(cache_push)                    \
    X(conv3d_backward_dinp) X(conv3d_backward_dinp_strided)                                             \
    X(conv3d_backward_dweight) X(conv3d_backward_dbias)                                                 \
    X(smc_weight_forward) X(smc_weight_backward_dot) X(smc_weight_backward_dweight)                     \
    X(smc_weight_backward_dscale) X(smc_weight_backward_dgain)                                          \
    X(silu_forward) X(silu_backward) X(pixelnorm_forward) X(pixelnorm_backward)                         \
    X(groupnorm_forward_sums) X(groupnorm_forward_stats) X(groupnorm_forward_apply)                     \
    X(groupnorm_backward_sums) X(groupnorm_backward_dinp) X(groupnorm_backward_dweight)                 \
    X(rmsnorm_forward)                                                                                  \
    X(attention_forward) X(attention_backward_dsdq) X(attention_backward_dkdv)                          \
    X(upsample_forward) X(upsample_chunk) X(upsample_backward) X(upsample_interleave)                   \
    X(rec_loss) X(latent_forward) X(latent_backward)                                                    \
    X(opl_forward_backward_stats) X(opl_forward_backward_dist) X(opl_forward_backward_hinge)            \
    X(opl_forward_backward_g) X(opl_forward_backward_dz)                                               \
    X(residual_add) X(residual_sub) X(adamw_step) X(nonfinite_flags)                                    \
    X(unit_scale) X(unit_sumsq) X(pixel_sumsq)                                                          \
    X(conv3d_forward_fast) X(conv3d_forward_padded_fast) X(conv3d_backward_dinp_fast)                   \
    X(conv3d_backward_dweight_fast)                                                                     \
    X(conv3d_backward_dweight_reduce) X(conv3d_backward_dbias_fast) X(gemm_fast)                        \
    X(attention_softmax_fast) X(attention_dsoftmax_fast)

#define IVAE_CL_ENUM(name) IVAE_K_##name,
enum { IVAE_CL_KERNELS(IVAE_CL_ENUM) IVAE_K_COUNT };
#undef IVAE_CL_ENUM

/* scratch buffers the wrappers need between their kernels (cf. layers.c's
   scratch()): grown on demand, reused after */
enum { IVAE_CLS_SUM, IVAE_CLS_TOTAL, IVAE_CLS_DOT, IVAE_CLS_ATT, IVAE_CLS_PART, IVAE_CLS_GN, IVAE_CLS_N };

/* the work-group of the fast tiled kernels (kernels_fast.cl, FG x FG) */
#define IVAE_CL_FAST_GROUP 16

typedef struct IvaeCl {
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    cl_program program;
    cl_kernel kernel[IVAE_K_COUNT];
    size_t local[IVAE_K_COUNT];     /* work-group size used for each kernel */
    cl_mem scratch[IVAE_CLS_N];
    size_t scratch_bytes[IVAE_CLS_N];
    int platform_index, device_index;
    char platform_name[256], device_name[256];
    char kernels_path[1024];        /* the kernels.cl that was built */
    char kernels_fast_path[1024];   /* and the kernels_fast.cl beside it */
    int fast_ok;                    /* the fast kernels can run here (work-groups of 256) */
    int fp64;                       /* cl_khr_fp64: unit_sumsq and pixel_sumsq exist (env IVAE_CL_NO_FP64=1: off) */
    char fast_why[256];             /* if not, why */
    size_t base_align;              /* sub-buffer origins must be multiples of this (bytes) */
    /* the largest buffer this code plans with (bytes): the device's
       CL_DEVICE_MAX_MEM_ALLOC_SIZE (a quarter of its memory on many devices),
       or less when env IVAE_CL_MAX_ALLOC=<bytes> says so (max_alloc_env = 1):
       ivae_cl_buffer refuses anything larger with one clear line */
    size_t max_alloc;
    int max_alloc_env;
    size_t global_mem;              /* CL_DEVICE_GLOBAL_MEM_SIZE (bytes) */
    /* env IVAE_CL_PROFILE=1: every launch waits for its kernel, and the time
       per kernel is printed to stderr by ivae_cl_free */
    int profile;
    double prof_s[IVAE_K_COUNT];
    long prof_n[IVAE_K_COUNT];
} IvaeCl;

/* ------------------------------------------------------------------------ */
/* device, program, buffers */

/* The one way every OpenCL call is checked: on failure prints the call, the
   error's name, file and line to stderr, keeps that line in ivae_error()
   and returns 1:  if (IVAE_CL_CHECK(clFinish(q))) return -1; */
int ivae_cl_failed(cl_int err, const char *call, const char *file, int line);
#define IVAE_CL_CHECK(call) ivae_cl_failed((call), #call, __FILE__, __LINE__)

/* the number of OpenCL platforms; 0 when there is none (no driver, or no
   ICD loader configured), which is not an error: the CPU path works */
int ivae_cl_platform_count(void);
/* the devices of the platform IVAE_CL_PLATFORM names (0 if none or on error) */
int ivae_cl_device_count(void);
/* prints every platform and device with its indices, for `ivae devices`;
   -1 on failure (nothing printed but the error) */
int ivae_cl_print_devices(FILE *f);
/* opens the device chosen by IVAE_CL_PLATFORM / IVAE_CL_DEVICE, checks that
   it can run the strict build, and builds kernels.cl with kernels_fast.cl
   (the build log is printed on failure); NULL with ivae_error() set
   otherwise */
IvaeCl *ivae_cl_new(void);
void ivae_cl_free(IvaeCl *cl);

/* a buffer of n floats, copied from host if not NULL; NULL on failure, with
   one line in ivae_error() (nothing printed) when it is larger than
   cl->max_alloc or the device cannot allocate it */
cl_mem ivae_cl_buffer(IvaeCl *cl, size_t n, const float *host);
/* 0 if one buffer of `bytes` is within cl->max_alloc; else -1 with ivae_error()
   = "<what>: <size> in one buffer, more than <device> allows ..." */
int ivae_cl_fits(IvaeCl *cl, size_t bytes, const char *what);
/* blocking copies of n floats */
int ivae_cl_write(IvaeCl *cl, cl_mem dst, const float *src, size_t n);
int ivae_cl_read(IvaeCl *cl, float *dst, cl_mem src, size_t n);
int ivae_cl_finish(IvaeCl *cl);

/* ------------------------------------------------------------------------ */
/* the layers (layers.c, SPEC 2); sizes as there. Backward wrappers write
   dinp and accumulate dweight, dbias (each may be NULL to skip it). */

int ivae_cl_conv3d_forward(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem weight, cl_mem bias, int Cin, int T, int H,
                           int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw);
/* returns the number of output frames written (as the C function), -1 on failure */
int ivae_cl_conv3d_forward_chunk(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem prev, int s0, cl_mem weight,
                                 cl_mem bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                                 int sh, int sw);
/* ivae_conv3d_forward_padded: the chunk with any spatial padding, layers.h's
   IvaePad pad passed as its four fields (top, bottom, left, right); returns
   the number of output frames */
int ivae_cl_conv3d_forward_padded(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem prev, int s0, cl_mem weight,
                                  cl_mem bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                                  int sh, int sw, int top, int bottom, int left, int right);
/* ivae_cache_push: cache (C, keep, H, W) := the last keep frames of [cache | x] */
int ivae_cl_cache_push(IvaeCl *cl, cl_mem cache, int keep, int had, cl_mem x, int C, int T, int H, int W);
int ivae_cl_conv3d_backward(IvaeCl *cl, cl_mem dinp, cl_mem dweight, cl_mem dbias, cl_mem dout, cl_mem inp,
                            cl_mem weight, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                            int sh, int sw);

int ivae_cl_smc_weight_forward(IvaeCl *cl, cl_mem what, cl_mem norm, cl_mem weight, cl_mem scale, cl_mem gain,
                               int Cout, int Cin, int K);
int ivae_cl_smc_weight_backward(IvaeCl *cl, cl_mem dweight, cl_mem dscale, cl_mem dgain, cl_mem dwhat, cl_mem norm,
                                cl_mem weight, cl_mem scale, cl_mem gain, int Cout, int Cin, int K);

int ivae_cl_silu_forward(IvaeCl *cl, cl_mem out, cl_mem inp, size_t n);
int ivae_cl_silu_backward(IvaeCl *cl, cl_mem dinp, cl_mem dout, cl_mem inp, size_t n);

int ivae_cl_pixelnorm_forward(IvaeCl *cl, cl_mem out, cl_mem norm, cl_mem inp, int C, size_t N);
int ivae_cl_pixelnorm_backward(IvaeCl *cl, cl_mem dinp, cl_mem dout, cl_mem norm, cl_mem inp, int C, size_t N);
/* GroupNorm (SPEC 9), layers.h's: out, inp (C, T, H, W), stats (2, G, T) the
   mean and sd of each group and frame, weight, bias (C), C a multiple of G.
   The backward pass writes dinp (NULL: skipped) and adds to dweight and
   dbias (either NULL: skipped). Both modes run these (no fast twin). */
int ivae_cl_groupnorm_forward(IvaeCl *cl, cl_mem out, cl_mem stats, cl_mem inp, cl_mem weight, cl_mem bias, int C,
                              int T, int H, int W, int G);
int ivae_cl_groupnorm_backward(IvaeCl *cl, cl_mem dinp, cl_mem dweight, cl_mem dbias, cl_mem dout, cl_mem stats,
                               cl_mem inp, cl_mem weight, int C, int T, int H, int W, int G);
/* Wan 2.1's RMS norm (SPEC 7): out, inp (C, N), gamma (C) */
int ivae_cl_rmsnorm_forward(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem gamma, int C, size_t N);

int ivae_cl_attention_forward(IvaeCl *cl, cl_mem out, cl_mem att, cl_mem qkv, int C, int T, int H, int W, int mode);
int ivae_cl_attention_backward(IvaeCl *cl, cl_mem dqkv, cl_mem dout, cl_mem att, cl_mem qkv, int C, int T, int H,
                               int W, int mode);

int ivae_cl_upsample_forward(IvaeCl *cl, cl_mem out, cl_mem inp, int C, int T, int H, int W, int temporal);
int ivae_cl_upsample_chunk(IvaeCl *cl, cl_mem out, cl_mem inp, int C, int T, int H, int W, int temporal, int first);
int ivae_cl_upsample_backward(IvaeCl *cl, cl_mem dinp, cl_mem dout, int C, int T, int H, int W, int temporal);
/* wan.c's upsample3d interleave: out (C, 2T, H, W) frame 2t = inp (2C, T, H, W)
   channels [0, C) of frame t, frame 2t+1 = channels [C, 2C) */
int ivae_cl_upsample_interleave(IvaeCl *cl, cl_mem out, cl_mem inp, int C, int T, int H, int W);

/* ------------------------------------------------------------------------ */
/* the loss (layers.c, SPEC 4). layers.h's Shape s is passed as C, T, H, W.
   The double result of the C function comes first. */

/* layers.c's ivae_sum_nested of a (C, T, H, W) tensor */
int ivae_cl_sum_nested(IvaeCl *cl, double *sum, cl_mem v, int C, int T, int H, int W);
/* scratch: C*T*H*W floats, as in C */
int ivae_cl_rec_loss(IvaeCl *cl, double *rec, cl_mem dxhat, cl_mem xhat, cl_mem x, int C, int T, int H, int W,
                     float coef, cl_mem scratch);
/* scratch: C*T*H*W floats, as in C */
int ivae_cl_latent_forward(IvaeCl *cl, double *kl, cl_mem logvar, cl_mem zs, cl_mem h, cl_mem eps, int C, int T,
                           int H, int W, cl_mem scratch);
int ivae_cl_latent_backward(IvaeCl *cl, cl_mem dh, cl_mem dz, cl_mem logvar, cl_mem h, cl_mem eps, size_t n,
                            float ckl);
/* scratch: ivae_cl_opl_scratch(C, T, H, W) floats (more than the C function's:
   the frames run in parallel) */
size_t ivae_cl_opl_scratch(int C, int T, int H, int W);
int ivae_cl_opl_forward_backward(IvaeCl *cl, double *opl, cl_mem dz, cl_mem z, int C, int T, int H, int W,
                                 float coef, cl_mem scratch);

/* ------------------------------------------------------------------------ */
/* what ivae.c's model does between the layers (ivae_batch_grad, ivae_adamw_step) */

/* y = a + y and y = y - a, elementwise (the residual sums; dx - dxhat) */
int ivae_cl_residual_add(IvaeCl *cl, cl_mem y, cl_mem a, size_t n);
int ivae_cl_residual_sub(IvaeCl *cl, cl_mem y, cl_mem a, size_t n);
/* one AdamW step on one tensor of n values; c1, c2 the bias corrections */
int ivae_cl_adamw_tensor(IvaeCl *cl, cl_mem w, cl_mem g, cl_mem m, cl_mem v, size_t n, float lr, float beta1,
                         float beta2, float eps, float wd, float c1, float c2);
/* flags[b] = 1.0f if v[b*block ..] holds a NaN or inf: ceil(n / block) flags */
int ivae_cl_nonfinite_flags(IvaeCl *cl, cl_mem flags, cl_mem v, size_t n, int block);
/* sets n floats of b to 0 */
int ivae_cl_zero(IvaeCl *cl, cl_mem b, size_t n);
/* the trainer's measurements (kernels.cl): x[off[u] .. + len[u]) *= f[u] for
   each of n units (max_len: the longest); squared sums in double of each
   unit, and of each pixel's channels (C x N), which need cl->fp64 */
int ivae_cl_unit_scale(IvaeCl *cl, cl_mem x, cl_mem off, cl_mem len, cl_mem f, int n, int max_len);
int ivae_cl_unit_sumsq(IvaeCl *cl, cl_mem out, cl_mem x, cl_mem off, cl_mem len, int n);
int ivae_cl_pixel_sumsq(IvaeCl *cl, cl_mem out, cl_mem y, int C, size_t N);
/* a buffer of n bytes, copied from host if not NULL; blocking byte copies */
cl_mem ivae_cl_buffer_bytes(IvaeCl *cl, size_t n, const void *host);
int ivae_cl_write_bytes(IvaeCl *cl, cl_mem dst, const void *src, size_t n);
int ivae_cl_read_bytes(IvaeCl *cl, void *dst, cl_mem src, size_t n);

/* ------------------------------------------------------------------------ */
/* the fast kernels (--cl-mode fast): the same contract as the strict
   wrappers above (same arguments, same outputs), tiled products in local
   memory, within SPEC 8's tolerances of the C reference but not bit for bit.
   They need work-groups of 256 (cl->fast_ok). */

int ivae_cl_conv3d_forward_fast(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem weight, cl_mem bias, int Cin, int T,
                                int H, int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw);
int ivae_cl_conv3d_forward_padded_fast(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem prev, int s0, cl_mem weight,
                                       cl_mem bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                       int st, int sh, int sw, int top, int bottom, int left, int right);
int ivae_cl_conv3d_backward_fast(IvaeCl *cl, cl_mem dinp, cl_mem dweight, cl_mem dbias, cl_mem dout, cl_mem inp,
                                 cl_mem weight, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                 int st, int sh, int sw);
/* att (N, L) as in the strict kernels; in causal mode the entries past a
   row's span are written 0 (the strict kernels leave them alone) */
int ivae_cl_attention_forward_fast(IvaeCl *cl, cl_mem out, cl_mem att, cl_mem qkv, int C, int T, int H, int W,
                                   int mode);
int ivae_cl_attention_backward_fast(IvaeCl *cl, cl_mem dqkv, cl_mem dout, cl_mem att, cl_mem qkv, int C, int T,
                                    int H, int W, int mode);

#endif
