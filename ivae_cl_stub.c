/*
 * ivae_cl_stub.c: ivae_cl_model.h and wan_cl.h for a build without OpenCL
 * (make NO_OPENCL=1, or a machine without OpenCL headers). Every function
 * fails with a message that says how to get the OpenCL path; ivae_cl_built()
 * returns 0 and ivae_cl_platform_count() 0, so the CPU path is untouched.
 */
#include "ivae_cl_model.h"
#include "wan_cl.h"

static const char *why = "this ivae was built without OpenCL (make found no OpenCL headers and library, or "
                         "NO_OPENCL=1 was given): install ocl-icd-opencl-dev opencl-c-headers and a driver "
                         "(e.g. pocl-opencl-icd), then rebuild; --device cpu works";

static int fail(void) {
    ivae_set_error("%s", why);
    return -1;
}

int ivae_cl_built(void) { return 0; }
int ivae_cl_platform_count(void) { return 0; }
int ivae_cl_print_devices(FILE *f) { return fail(); }
IvaeCl *ivae_cl_new(void) { return fail(), NULL; }
void ivae_cl_free(IvaeCl *cl) {}
const char *ivae_cl_describe(const IvaeCl *cl) { return "(no OpenCL)"; }
IvaeClModel *ivae_cl_model_new(IvaeCl *cl, IvaeModel *m, int fast) { return fail(), NULL; }
void ivae_cl_model_free(IvaeClModel *cm) {}
int ivae_cl_model_fast(const IvaeClModel *cm) { return 0; }
int ivae_cl_zero_grad(IvaeClModel *cm) { return fail(); }
int ivae_cl_batch_grad(IvaeClModel *cm, IvaeSample *s, int B, const IvaeLossOpts *o, IvaeLoss *out) { return fail(); }
int ivae_cl_batch_grad_split(IvaeClModel *cm, IvaeSample *s, int B, const IvaeLossOpts *o, IvaeSplit *sp, IvaeLoss *out) {
    return fail();
}
int ivae_cl_device_count(void) { return 0; }
int ivae_cl_adamw_step(IvaeClModel *cm, const IvaeAdamW *h) { return fail(); }
int ivae_cl_get_params(IvaeClModel *cm, real *params) { return fail(); }
int ivae_cl_set_params(IvaeClModel *cm, const real *params) { return fail(); }
int ivae_cl_get_grads(IvaeClModel *cm, real *grads) { return fail(); }
int ivae_cl_set_grads(IvaeClModel *cm, const real *grads) { return fail(); }
int ivae_cl_get_state(IvaeClModel *cm, IvaeModel *m) { return fail(); }
int ivae_cl_set_state(IvaeClModel *cm, const IvaeModel *m) { return fail(); }
int ivae_cl_measure_units(IvaeClModel *cm, int grads, double *out) { return fail(); }
int ivae_cl_scale_grads(IvaeClModel *cm, const real *f) { return fail(); }
int ivae_cl_activation_stats(IvaeClModel *cm, IvaeActStat *out, int max) { return fail(); }
int ivae_cl_block_output(IvaeClModel *cm, int decoder, int j, int shape[4], real *out) { return fail(); }
int ivae_cl_encode(IvaeClModel *cm, const real *x, int T, int H, int W, real *mu) { return fail(); }
int ivae_cl_decode(IvaeClModel *cm, const real *z, int Tz, int Hz, int Wz, real *xhat) { return fail(); }
WanCl *wan_cl_new(IvaeCl *cl, WanModel *m, int fast) { return fail(), NULL; }
void wan_cl_free(WanCl *w) {}
int wan_cl_encode(WanCl *w, const real *x, int T, int H, int W, real *mu, real *logvar) { return fail(); }
int wan_cl_decode(WanCl *w, const real *z, int Tz, int Hz, int Wz, real *xhat) { return fail(); }
void wan_cl_set_trace(WanCl *w, WanTraceFn fn, void *ctx) {}
