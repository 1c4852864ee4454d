/*
 * main.c: the ivae command-line tool.
 *
 *   ivae train [options]              train the VAE on a dataset (train.c; the main job)
 *   ivae eval MODEL [options]         held-out PSNR and SSIM of a model, with pictures (train.c)
 *   ivae recon MODEL INPUT OUTPUT     encode and decode an image or clip; print PSNR and SSIM
 *   ivae encode MODEL INPUT LATENT    write the latent mean of an image or clip
 *   ivae decode MODEL LATENT OUTPUT   turn a latent back into pixels
 *   ivae trace MODEL INPUT OUT        every block's output, chunk by chunk
 *   ivae init [options] OUT           write a freshly initialised model
 *   ivae grad MODEL IN OUT            the debug state of SPEC 4 for one batch
 *   ivae diff EXPECTED ACTUAL         compare two tensor files (tolerances of SPEC 8)
 *   ivae batch MODEL OUT              write a random input batch for grad
 *   ivae info FILE                    what a safetensors file holds
 *   ivae devices                      the OpenCL platforms and devices
 *   ivae compare MODEL IN             CPU vs OpenCL, layer by layer
 *
 * recon, encode, decode and trace take an ivae model or a Wan 2.1 VAE (wan.h),
 * recognised by its tensor names.
 *
 * Every error is one line on stderr and a non-zero exit status (die, util.h).
 */
#include "ivae.h"
#include "ivae_cl_model.h"
#include "layers.h" /* ivae_set_naive */
#include "media.h"
#include "train.h"
#include "util.h"
#include "wan.h"
#include "wan_cl.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- argument helpers ----------------------------------------------------- */

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

static const char *flag_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("%s needs a value (see --help)", argv[*i]);
    return argv[++*i];
}

/* the range-checked parsers of util.h, dying with the flag's name; a real
   value must fit a float (most become one) */
static double parse_double(const char *flag, const char *s) {
    double v;
    if (parse_real(s, -FLT_MAX, FLT_MAX, &v) != 0) die("%s: '%s' is not a number", flag, s);
    return v;
}

static long parse_long(const char *flag, const char *s, long lo, long hi) {
    long long v;
    if (parse_int(s, lo, hi, &v) != 0) die("%s: '%s' is not an integer in [%ld, %ld]", flag, s, lo, hi);
    return (long)v;
}

static int parse_list(const char *flag, const char *s, int *out, int max) {
    int n = parse_int_list(s, 0, 4096, out, max);
    if (n < 0) die("%s: '%s' is not a list like 1,2,4,4", flag, s);
    return n;
}

/* --- the device: --device cpu|cl, --cl-mode strict|fast -------------------- */

typedef struct {
    int cl;   /* run on the OpenCL device */
    int fast; /* its fast kernels (else the strict, bit-identical ones) */
} Device;

#define DEVICE_HELP                                                                            \
    "  --device cpu|cl  run on the CPU (default) or on the OpenCL device that\n"                 \
    "                   IVAE_CL_PLATFORM / IVAE_CL_DEVICE choose (see ivae devices)\n"         \
    "  --cl-mode strict|fast  OpenCL kernels: strict (default) gives the CPU's bits,\n"        \
    "                   fast tiled ones agree within SPEC 8's tolerances\n"

/* 1 if argv[*i] is --device or --cl-mode (its value consumed), else 0 */
static int parse_device_flag(Device *d, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (strcmp(a, "--device") == 0) {
        const char *v = flag_value(argc, argv, i);
        if (strcmp(v, "cpu") && strcmp(v, "cl")) die("--device: '%s' (expected cpu or cl)", v);
        d->cl = strcmp(v, "cl") == 0;
        return 1;
    }
    if (strcmp(a, "--cl-mode") == 0) {
        const char *v = flag_value(argc, argv, i);
        if (strcmp(v, "strict") && strcmp(v, "fast")) die("--cl-mode: '%s' (expected strict or fast)", v);
        d->fast = strcmp(v, "fast") == 0;
        return 1;
    }
    return 0;
}

/* removes --device and --cl-mode from argv */
static Device strip_device_flags(int *argc, char **argv) {
    Device d = {0, 0};
    int n = 0;
    for (int i = 0; i < *argc; i++)
        if (!parse_device_flag(&d, *argc, argv, &i)) argv[n++] = argv[i];
    *argc = n;
    return d;
}

/* the model on the OpenCL device, or a one-line error and exit 1 */
static IvaeClModel *device_open(const char *cmd, const Device *d, IvaeModel *m, IvaeCl **cl) {
    *cl = ivae_cl_new();
    if (!*cl) die("%s --device cl: %s", cmd, ivae_error());
    IvaeClModel *cm = ivae_cl_model_new(*cl, m, d->fast);
    if (!cm) die("%s --device cl: %s", cmd, ivae_error());
    fprintf(stderr, "ivae: %s on OpenCL (%s kernels), %s\n", cmd, d->fast ? "fast" : "strict", ivae_cl_describe(*cl));
    return cm;
}

/* --- ivae init ------------------------------------------------------------ */

static const char *INIT_HELP =
    "usage: ivae init [options] OUT.safetensors\n"
    "\n"
    "Writes a freshly initialised model (SPEC 6) as an F32 safetensors checkpoint.\n"
    "\n"
    "  --config NAME     ivae-s (default, 9,398,107 parameters) or ivae-xs (2,394,059)\n"
    "  --seed N          RNG seed (default 0); the same seed gives the same bits\n"
    "  --base-ch N       override C0\n"
    "  --ch-mult LIST    override the channel multipliers, e.g. 1,2,4,4\n"
    "  --n-res N         override residual blocks per stage\n"
    "  --z-ch N          override latent channels\n"
    "  --temporal LIST   override the temporal flags, e.g. 0,1,1 (one fewer than ch-mult)\n"
    "  --attn MODE       frame (default) or causal\n"
    "\n"
    "The variants of SPEC 9 (the seed's lessons; recorded in the file's metadata):\n"
    "  --block-norm N    smc (default) or groupnorm: the residual blocks' normalisation\n"
    "  --attn-norm N     pixelnorm (default), groupnorm or none: the attention input's\n"
    "  --image-mode M    causal (default: an image is a 1-frame clip) or static (5 copies)\n"
    "  --loss-norm N     ref (default: SPEC 4's reference shape), sum or mean\n";

/* --block-norm and the other SPEC 9 variant flags: 1 if argv[*i] is one */
static int parse_variant_flag(IvaeConfig *c, int argc, char **argv, int *i) {
    static const char *const flags[4] = {"--block-norm", "--attn-norm", "--image-mode", "--loss-norm"};
    static const char *const kinds[4] = {"block_norm", "attn_norm", "image_mode", "loss_norm"};
    int *fields[4] = {&c->block_norm, &c->attn_norm, &c->image_mode, &c->loss_norm};
    for (int k = 0; k < 4; k++)
        if (strcmp(argv[*i], flags[k]) == 0) {
            const char *v = flag_value(argc, argv, i);
            if ((*fields[k] = ivae_variant_parse(kinds[k], v)) < 0) die("%s: '%s' is not a variant (%s)", flags[k], v, ivae_error());
            return 1;
        }
    return 0;
}

static int cmd_init(int argc, char **argv) {
    IvaeConfig cfg;
    const char *out = NULL, *name = "ivae-s";
    uint64_t seed = 0;
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--config") == 0) name = flag_value(argc, argv, &i);
    if (ivae_config_preset(name, &cfg) != 0) die("%s", ivae_error());
    int n_temporal = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(INIT_HELP, stdout);
            return 0;
        } else if (strcmp(a, "--config") == 0) i++;
        else if (strcmp(a, "--seed") == 0) seed = (uint64_t)parse_long(a, flag_value(argc, argv, &i), 0, 0x7fffffffffffffffL);
        else if (strcmp(a, "--base-ch") == 0) cfg.base_ch = (int)parse_long(a, flag_value(argc, argv, &i), 1, 4096);
        else if (strcmp(a, "--n-res") == 0) cfg.n_res = (int)parse_long(a, flag_value(argc, argv, &i), 1, 64);
        else if (strcmp(a, "--z-ch") == 0) cfg.z_ch = (int)parse_long(a, flag_value(argc, argv, &i), 1, 4096);
        else if (strcmp(a, "--ch-mult") == 0) cfg.n_stages = parse_list(a, flag_value(argc, argv, &i), cfg.ch_mult, IVAE_MAX_STAGES);
        else if (strcmp(a, "--temporal") == 0) n_temporal = parse_list(a, flag_value(argc, argv, &i), cfg.temporal, IVAE_MAX_STAGES);
        else if (strcmp(a, "--attn") == 0) {
            const char *v = flag_value(argc, argv, &i);
            if (strcmp(v, "frame") && strcmp(v, "causal")) die("--attn: '%s' (expected frame or causal)", v);
            cfg.attn = strcmp(v, "causal") == 0 ? IVAE_ATTN_CAUSAL : IVAE_ATTN_FRAME;
        } else if (parse_variant_flag(&cfg, argc, argv, &i)) continue;
        else if (a[0] == '-') die("init: unknown option %s (see ivae init --help)", a);
        else if (!out) out = a;
        else die("init: one output file expected, got '%s' too", a);
    }
    if (!out) die("init: no output file given (usage: ivae init [--config NAME] [--seed N] OUT.safetensors)");
    if (n_temporal >= 0 && n_temporal != cfg.n_stages - 1)
        die("init: --temporal lists %d flags but %d stages need %d", n_temporal, cfg.n_stages, cfg.n_stages - 1);
    for (int s = n_temporal >= 0 ? n_temporal : 3; s < IVAE_MAX_STAGES; s++) cfg.temporal[s] = 0;
    IvaeModel *m = ivae_model_new(&cfg);
    if (!m) die("%s", ivae_error());
    ivae_init_params(m, seed);
    if (ivae_save(m, out) != 0) die("%s", ivae_error());
    printf("wrote %s: %zu parameters in %d tensors (seed %llu)\n", out, m->n_params, m->n_tensors,
           (unsigned long long)seed);
    ivae_model_free(m);
    return 0;
}

/* --- ivae grad ------------------------------------------------------------ */

static const char *GRAD_HELP =
    "usage: ivae grad [options] MODEL.safetensors IN.safetensors OUT.safetensors\n"
    "\n"
    "Runs one forward and backward pass over a batch and writes the whole debug\n"
    "state, for checking another implementation against this one.\n"
    "\n"
    "IN holds the batch: x.0, x.1, ... (F32, shape (3,T,H,W), pixels in [-1,1],\n"
    "T = 1 for an image, 1+4k for a clip) and the noise eps.0, eps.1, ... (the\n"
    "latent's shape (z,T',H',W')). OUT receives:\n"
    "  loss, rec, kl            L of SPEC 4 and the batch means of rec_i and kl_i\n"
    "  mu.i, logvar.i, xhat.i   per sample (logvar clamped)\n"
    "  grad.x.i                 dL/dx_i\n"
    "  grad.<parameter name>    dL/dparameter, for every parameter\n"
    "\n"
    "  --w-image X      loss weight of images (default 1)\n"
    "  --w-video X      loss weight of clips (default 1)\n"
    "  --beta X         KL weight (default 1e-6)\n"
    "  --w-opl X        outlier penalty weight (default 0)\n"
    "  --ref-shape TxHxW  reference shape of the loss normalisation (default 17x64x64)\n"
    "  --loss-norm N    ref, sum or mean (SPEC 9; default: the model's metadata, else ref)\n"
    "  --image-mode M   causal or static (SPEC 9; default: the model's metadata, else\n"
    "                   causal). static: an image x.i (T = 1) runs as 5 identical frames,\n"
    "                   eps.i has that clip's latent shape (ivae batch --image-mode static\n"
    "                   writes it), xhat.i is the 5-frame clip and grad.x.i the image's\n"
    "                   gradient, summed over the copies\n"
    "  --naive          run the naive layers (SPEC's formulas as plain loops, layers.c)\n"
    "                   instead of the tuned ones: the same bytes, slower; IVAE_NAIVE=1\n"
    "                   does the same for every command\n"
    DEVICE_HELP;

static void parse_loss_flag(IvaeLossOpts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (strcmp(a, "--w-image") == 0) o->w_image = (real)parse_double(a, flag_value(argc, argv, i));
    else if (strcmp(a, "--w-video") == 0) o->w_video = (real)parse_double(a, flag_value(argc, argv, i));
    else if (strcmp(a, "--beta") == 0) o->beta = (real)parse_double(a, flag_value(argc, argv, i));
    else if (strcmp(a, "--w-opl") == 0) o->w_opl = (real)parse_double(a, flag_value(argc, argv, i));
    else if (strcmp(a, "--ref-shape") == 0) {
        const char *v = flag_value(argc, argv, i);
        int rs[3];
        if (parse_shape(v, 3, 1, 1 << 14, rs) != 0) die("--ref-shape: '%s' is not like 17x64x64", v);
        o->ref_t = rs[0], o->ref_h = rs[1], o->ref_w = rs[2];
    } else
        die("unknown option %s (see --help)", a);
}

/* reads tensor `name` from st, checking it has ndim dimensions; returns a new buffer */
static real *read_tensor(const IvaeSt *st, const char *name, int ndim, int64_t *shape) {
    const IvaeStTensor *t = ivae_st_find(st, name);
    if (!t) die("%s: tensor '%s' is missing", st->path, name);
    if (t->ndim != ndim) die("%s: tensor '%s' has %d dimensions, expected %d", st->path, name, t->ndim, ndim);
    for (int d = 0; d < ndim; d++) {
        if (t->shape[d] < 1 || t->shape[d] > 1 << 20) die("%s: tensor '%s' has an empty or absurd shape", st->path, name);
        shape[d] = t->shape[d];
    }
    real *buf = xmalloc(t->numel * sizeof(real));
    if (ivae_st_read(st, t, buf) != 0) die("%s", ivae_error());
    return buf;
}

/* room for a sample's outputs: mu and logvar (nz values), xhat and dx (nx) */
static void sample_outputs_alloc(IvaeSample *s, size_t nx, size_t nz) {
    s->mu = xmalloc(nz * sizeof(real)), s->logvar = xmalloc(nz * sizeof(real));
    s->xhat = xmalloc(nx * sizeof(real)), s->dx = xmalloc(nx * sizeof(real));
}

static void sample_outputs_free(IvaeSample *s) { free(s->mu), free(s->logvar), free(s->xhat), free(s->dx); }

/* the batch of IN (x.0, eps.0, x.1, ... until x.B is missing), with room for
   every output; zshape[i] is sample i's latent shape (z, T', H', W'). With
   static_images (SPEC 9) an image becomes a clip of 5 copies and is_image[i]
   says which samples were images. */
static IvaeSample *load_batch(const char *path, const IvaeModel *m, int static_images, int *B_out,
                              int64_t (**zshape)[4], int **is_image) {
    IvaeSt *in = ivae_st_open(path);
    if (!in) die("%s", ivae_error());
    int B = 0;
    char name[64];
    for (;; B++) {
        snprintf(name, sizeof name, "x.%d", B);
        if (!ivae_st_find(in, name)) break;
    }
    if (B == 0) die("%s: no input clips (expected tensors x.0, x.1, ...)", path);
    IvaeSample *s = xcalloc(B, sizeof *s);
    *zshape = xcalloc(B, sizeof **zshape);
    *is_image = xcalloc(B, sizeof **is_image);
    for (int i = 0; i < B; i++) {
        int64_t xs[4], es[4];
        int Tz, Hz, Wz;
        snprintf(name, sizeof name, "x.%d", i);
        real *x = read_tensor(in, name, 4, xs);
        if (xs[0] != 3) die("%s: x.%d has %lld channels (RGB clips have 3)", path, i, (long long)xs[0]);
        if (static_images && xs[1] == 1) { /* SPEC 9: the image as a static clip */
            real *clip = xmalloc((size_t)3 * IVAE_STATIC_FRAMES * xs[2] * xs[3] * sizeof(real));
            ivae_static_expand(clip, x, (int)xs[2], (int)xs[3]);
            free(x);
            x = clip, xs[1] = IVAE_STATIC_FRAMES, (*is_image)[i] = 1;
        }
        if (ivae_latent_shape(&m->cfg, (int)xs[1], (int)xs[2], (int)xs[3], &Tz, &Hz, &Wz) != 0)
            die("%s: x.%d: %s", path, i, ivae_error());
        snprintf(name, sizeof name, "eps.%d", i);
        real *eps = read_tensor(in, name, 4, es);
        if (es[0] != m->cfg.z_ch || es[1] != Tz || es[2] != Hz || es[3] != Wz)
            die("%s: eps.%d has shape (%lld,%lld,%lld,%lld) but x.%d's latent is (%d,%d,%d,%d)%s", path, i,
                (long long)es[0], (long long)es[1], (long long)es[2], (long long)es[3], i, m->cfg.z_ch, Tz, Hz, Wz,
                (*is_image)[i] ? " (the image runs as a static clip: write the batch with ivae batch --image-mode static)" : "");
        s[i] = (IvaeSample){.x = x, .T = (int)xs[1], .H = (int)xs[2], .W = (int)xs[3], .eps = eps};
        sample_outputs_alloc(&s[i], (size_t)3 * xs[1] * xs[2] * xs[3], (size_t)m->cfg.z_ch * Tz * Hz * Wz);
        (*zshape)[i][0] = m->cfg.z_ch, (*zshape)[i][1] = Tz, (*zshape)[i][2] = Hz, (*zshape)[i][3] = Wz;
    }
    ivae_st_close(in);
    *B_out = B;
    return s;
}

/* a batch of load_batch, inputs and outputs */
static void batch_free(IvaeSample *s, int B) {
    for (int i = 0; i < B; i++) free((void *)s[i].x), free((void *)s[i].eps), sample_outputs_free(&s[i]);
    free(s);
}

static int cmd_grad(int argc, char **argv) {
    IvaeLossOpts opts;
    ivae_loss_defaults(&opts);
    Device dev = {0, 0};
    const char *files[3];
    int nf = 0;
    IvaeConfig variant = {.block_norm = -1, .attn_norm = -1, .image_mode = -1, .loss_norm = -1};
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(GRAD_HELP, stdout);
            return 0;
        }
        if (parse_device_flag(&dev, argc, argv, &i)) continue;
        if (!strcmp(argv[i], "--block-norm") || !strcmp(argv[i], "--attn-norm"))
            die("grad: %s is part of the model (ivae init %s writes one)", argv[i], argv[i]);
        if (parse_variant_flag(&variant, argc, argv, &i)) continue;
        if (strcmp(argv[i], "--naive") == 0) ivae_set_naive(1);
        else if (argv[i][0] == '-' && argv[i][1]) parse_loss_flag(&opts, argc, argv, &i);
        else if (nf < 3) files[nf++] = argv[i];
        else die("grad: too many arguments (usage: ivae grad MODEL IN OUT)");
    }
    if (nf != 3) die("grad: expected MODEL IN OUT (see ivae grad --help)");
    IvaeModel *m = ivae_load(files[0]);
    if (!m) die("%s", ivae_error());
    opts.loss_norm = variant.loss_norm >= 0 ? variant.loss_norm : m->cfg.loss_norm;
    int static_images = (variant.image_mode >= 0 ? variant.image_mode : m->cfg.image_mode) == IVAE_IMAGE_STATIC;
    int B, *is_image;
    int64_t (*zshape)[4];
    IvaeSample *s = load_batch(files[1], m, static_images, &B, &zshape, &is_image);

    IvaeLoss L;
    IvaeCl *cl = NULL;
    IvaeClModel *cm = dev.cl ? device_open("grad", &dev, m, &cl) : NULL;
    double t0 = now_s();
    if (cm) { /* the same step on the device; the gradients come back for the file */
        if (ivae_cl_zero_grad(cm) != 0 || ivae_cl_batch_grad(cm, s, B, &opts, &L) != 0) die("%s", ivae_error());
    } else {
        ivae_zero_grad(m);
        if (ivae_batch_grad(m, s, B, &opts, &L) != 0) die("%s", ivae_error());
    }
    double dt = now_s() - t0;
    if (cm && ivae_cl_get_grads(cm, m->grads) != 0) die("%s", ivae_error());
    ivae_cl_model_free(cm);
    ivae_cl_free(cl);
    for (int i = 0; i < B; i++) /* a static clip's gradient back to its image */
        if (is_image[i]) ivae_static_fold(s[i].dx, s[i].dx, s[i].H, s[i].W);

    /* the debug state */
    int n = 3 + 4 * B + m->n_tensors;
    IvaeStEntry *e = xcalloc(n, sizeof *e);
    char (*names)[128] = xcalloc(n, sizeof *names);
    real scal[3] = {(real)L.loss, (real)L.rec, (real)L.kl};
    int k = 0;
    const char *scal_names[3] = {"loss", "rec", "kl"};
    for (int j = 0; j < 3; j++, k++) e[k] = (IvaeStEntry){.name = scal_names[j], .ndim = 0, .data = &scal[j]};
    for (int i = 0; i < B; i++) {
        const char *what[4] = {"mu", "logvar", "xhat", "grad.x"};
        real *data[4] = {s[i].mu, s[i].logvar, s[i].xhat, s[i].dx};
        for (int j = 0; j < 4; j++, k++) {
            snprintf(names[k], sizeof names[k], "%s.%d", what[j], i);
            e[k].name = names[k];
            e[k].ndim = 4;
            for (int d = 0; d < 4; d++) e[k].shape[d] = j < 2 ? zshape[i][d] : (d == 0 ? 3 : (int64_t[]){0, s[i].T, s[i].H, s[i].W}[d]);
            if (j == 3 && is_image[i]) e[k].shape[1] = 1;
            e[k].data = data[j];
        }
    }
    for (int j = 0; j < m->n_tensors; j++, k++) {
        const IvaeParamInfo *p = &m->info[j];
        snprintf(names[k], sizeof names[k], "grad.%s", p->name);
        e[k].name = names[k];
        e[k].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) e[k].shape[d] = p->shape[d];
        e[k].data = m->grads + p->offset;
    }
    if (ivae_st_write(files[2], e, k, NULL, 0) != 0) die("%s", ivae_error());
    printf("loss %.9g  rec %.9g  kl %.9g  (batch of %d, %.2f s forward+backward)\n", L.loss, L.rec, L.kl, B, dt);
    printf("wrote %s: %d tensors\n", files[2], k);

    batch_free(s, B);
    free(zshape), free(is_image), free(e), free(names);
    ivae_model_free(m);
    return 0;
}

/* --- ivae diff ------------------------------------------------------------ */

static const char *DIFF_HELP =
    "usage: ivae diff [options] EXPECTED.safetensors ACTUAL.safetensors\n"
    "\n"
    "Compares every tensor of EXPECTED with the tensor of the same name in ACTUAL\n"
    "and prints one line per tensor: e = max|a-b| / max|b| (b = expected), the\n"
    "largest absolute difference and the largest distance in float32 ulps.\n"
    "Tensors named grad.* must reach --grad-tol, all others --out-tol (SPEC 8).\n"
    "Exit status 0 when every tensor passes, 1 otherwise.\n"
    "\n"
    "  --out-tol E    tolerance for outputs (default 1e-5)\n"
    "  --grad-tol E   tolerance for gradients (default 1e-4)\n"
    "  --exact        require identical bits (tolerances 0, every ulp counts)\n"
    "  --quiet        print only failures and the verdict\n";

/* distance between two floats in units in the last place */
static int64_t ulp_dist(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    int64_t la = ia < 0 ? (int64_t)INT32_MIN - ia : ia, lb = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return la > lb ? la - lb : lb - la;
}

static int cmd_diff(int argc, char **argv) {
    double out_tol = 1e-5, grad_tol = 1e-4;
    int exact = 0, quiet = 0;
    const char *files[2];
    int nf = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(DIFF_HELP, stdout);
            return 0;
        } else if (strcmp(a, "--out-tol") == 0) out_tol = parse_double(a, flag_value(argc, argv, &i));
        else if (strcmp(a, "--grad-tol") == 0) grad_tol = parse_double(a, flag_value(argc, argv, &i));
        else if (strcmp(a, "--exact") == 0) exact = 1;
        else if (strcmp(a, "--quiet") == 0) quiet = 1;
        else if (a[0] == '-') die("diff: unknown option %s (see ivae diff --help)", a);
        else if (nf < 2) files[nf++] = a;
        else die("diff: expected two files");
    }
    if (nf != 2) die("diff: expected EXPECTED ACTUAL (see ivae diff --help)");
    IvaeSt *ea = ivae_st_open(files[0]);
    if (!ea) die("%s", ivae_error());
    IvaeSt *eb = ivae_st_open(files[1]);
    if (!eb) die("%s", ivae_error());
    int fails = 0;
    double worst_out = 0, worst_grad = 0;
    for (int k = 0; k < ea->n; k++) {
        const IvaeStTensor *te = &ea->t[k], *ta = ivae_st_find(eb, te->name);
        int same_shape = ta && ta->ndim == te->ndim;
        for (int d = 0; same_shape && d < te->ndim; d++) same_shape = ta->shape[d] == te->shape[d];
        if (!same_shape) {
            printf("FAIL %-56s %s\n", te->name, ta ? "shape differs" : "missing in ACTUAL");
            fails++;
            continue;
        }
        real *b = xmalloc(te->numel * sizeof(real)), *a = xmalloc(te->numel * sizeof(real));
        if (ivae_st_read(ea, te, b) != 0 || ivae_st_read(eb, ta, a) != 0) {
            printf("FAIL %-56s %s\n", te->name, ivae_error());
            fails++;
            free(a), free(b);
            continue;
        }
        double maxb = 0, maxd = 0;
        int64_t maxu = 0;
        for (size_t j = 0; j < te->numel; j++) {
            double d = fabs((double)a[j] - (double)b[j]);
            if (fabs((double)b[j]) > maxb) maxb = fabs((double)b[j]);
            if (d > maxd) maxd = d;
            int64_t u = ulp_dist((float)a[j], (float)b[j]);
            if (u > maxu) maxu = u;
        }
        double e = maxb > 0 ? maxd / maxb : maxd;
        int is_grad = strncmp(te->name, "grad.", 5) == 0;
        double tol = exact ? 0 : is_grad ? grad_tol : out_tol;
        int ok = exact ? maxu == 0 : e <= tol;
        if (is_grad && e > worst_grad) worst_grad = e;
        if (!is_grad && e > worst_out) worst_out = e;
        fails += !ok;
        if (!ok || !quiet)
            printf("%s %-56s e %.3e  max|diff| %.3e  max|expected| %.3e  ulp %lld\n", ok ? "ok  " : "FAIL", te->name, e,
                   maxd, maxb, (long long)maxu);
        free(a), free(b);
    }
    printf("%s: %d of %d tensors %s; worst e: outputs %.3e, gradients %.3e\n", fails ? "FAIL" : "PASS",
           fails ? fails : ea->n, ea->n, fails ? "failed" : "agree", worst_out, worst_grad);
    ivae_st_close(ea);
    ivae_st_close(eb);
    return fails ? 1 : 0;
}

/* --- ivae batch ----------------------------------------------------------- */

static const char *BATCH_HELP =
    "usage: ivae batch [options] MODEL.safetensors OUT.safetensors\n"
    "\n"
    "Writes a random input batch for ivae grad: x.i uniform in [-1, 1] and eps.i\n"
    "standard normal, with the latent shapes of MODEL's config. For timing and for\n"
    "checking another implementation on shapes of your choice.\n"
    "\n"
    "  --clip TxHxW   add a sample of this shape (repeatable; default 17x64x64)\n"
    "  --seed N       RNG seed (default 1)\n"
    "  --image-mode M causal or static (SPEC 9; default: MODEL's metadata): static gives\n"
    "                 each image (T = 1) the noise of its 5-frame static clip\n";

static int cmd_batch(int argc, char **argv) {
    const char *files[2];
    int nf = 0, B = 0, shapes[64][3];
    uint64_t seed = 1;
    IvaeConfig variant = {.image_mode = -1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(BATCH_HELP, stdout);
            return 0;
        } else if (strcmp(a, "--image-mode") == 0) {
            parse_variant_flag(&variant, argc, argv, &i);
        } else if (strcmp(a, "--clip") == 0) {
            const char *v = flag_value(argc, argv, &i);
            if (B == 64) die("batch: at most 64 samples");
            if (parse_shape(v, 3, 1, 1 << 14, shapes[B]) != 0) die("--clip: '%s' is not like 17x64x64", v);
            B++;
        } else if (strcmp(a, "--seed") == 0) seed = (uint64_t)parse_long(a, flag_value(argc, argv, &i), 0, 0x7fffffffffffffffL);
        else if (a[0] == '-') die("batch: unknown option %s (see ivae batch --help)", a);
        else if (nf < 2) files[nf++] = a;
        else die("batch: expected MODEL OUT");
    }
    if (nf != 2) die("batch: expected MODEL OUT (see ivae batch --help)");
    if (B == 0) shapes[B][0] = 17, shapes[B][1] = 64, shapes[B][2] = 64, B = 1;
    IvaeModel *m = ivae_load(files[0]);
    if (!m) die("%s", ivae_error());
    IvaeStEntry e[128];
    char names[128][16];
    IvaeRng rng = {seed};
    for (int i = 0; i < B; i++) {
        int T = shapes[i][0], H = shapes[i][1], W = shapes[i][2], Tz, Hz, Wz;
        if (ivae_latent_shape(&m->cfg, T, H, W, &Tz, &Hz, &Wz) != 0) die("--clip %dx%dx%d: %s", T, H, W, ivae_error());
        if (T == 1 && (variant.image_mode >= 0 ? variant.image_mode : m->cfg.image_mode) == IVAE_IMAGE_STATIC)
            if (ivae_latent_shape(&m->cfg, IVAE_STATIC_FRAMES, H, W, &Tz, &Hz, &Wz) != 0) /* the static clip's noise */
                die("--image-mode static: %s", ivae_error());
        size_t nx = (size_t)3 * T * H * W, nz = (size_t)m->cfg.z_ch * Tz * Hz * Wz;
        real *x = xmalloc(nx * sizeof(real)), *eps = xmalloc(nz * sizeof(real));
        for (size_t j = 0; j < nx; j++) x[j] = (real)(2 * ivae_rng_uniform(&rng) - 1);
        for (size_t j = 0; j < nz; j++) eps[j] = (real)ivae_rng_normal(&rng);
        snprintf(names[2 * i], 16, "x.%d", i);
        snprintf(names[2 * i + 1], 16, "eps.%d", i);
        e[2 * i] = (IvaeStEntry){.name = names[2 * i], .ndim = 4, .shape = {3, T, H, W}, .data = x};
        e[2 * i + 1] = (IvaeStEntry){.name = names[2 * i + 1], .ndim = 4, .shape = {m->cfg.z_ch, Tz, Hz, Wz}, .data = eps};
    }
    if (ivae_st_write(files[1], e, 2 * B, NULL, 0) != 0) die("%s", ivae_error());
    printf("wrote %s: %d sample%s\n", files[1], B, B > 1 ? "s" : "");
    for (int k = 0; k < 2 * B; k++) free((void *)e[k].data);
    ivae_model_free(m);
    return 0;
}

/* --- ivae recon / encode / decode / trace ------------------------------------ */

/* 1 (and help printed) if any argument is --help or -h */
static int wants_help(int argc, char **argv, const char *help) {
    for (int i = 0; i < argc; i++)
        if (is_help(argv[i])) return fputs(help, stdout), 1;
    return 0;
}

#define INPUT_HELP                                                                              \
    "INPUT is an image, a folder of numbered frames, a .y4m clip, or a .safetensors\n"          \
    "file with tensor x (3, T, H, W) of pixels in [-1, 1] (F32, used exactly as given).\n"

#define FAMILY_HELP                                                                             \
    "MODEL is an ivae checkpoint or a Wan 2.1 VAE (diffusers' AutoencoderKLWan\n"               \
    "safetensors, or Wan2.1_VAE.pth converted to safetensors: see README); the\n"               \
    "family is recognised by the tensor names.\n"

#define CODER_HELP                                                                              \
    "  --frames N       use the first N frames (a clip needs 1 + 4k)\n"                         \
    "  --latent-norm    Wan: latents normalised for a diffusion model, (mu - mean) / std\n"     \
    "                   with the 16 published values (default: raw mu)\n"                       \
    "  --tile N         Wan: spatial tiles of N pixels for frames that do not fit (0 = off,\n"  \
    "                   the default; diffusers uses 256), each with its own caches\n"           \
    "  --tile-overlap M Wan: tiles overlap by M pixels, blended linearly (default 64)\n"        \
    DEVICE_HELP

static const char *RECON_HELP =
    "usage: ivae recon MODEL INPUT OUTPUT [options]\n"
    "\n"
    "Encodes INPUT to its latent mean and decodes it back; writes OUTPUT (a .png for\n"
    "an image, a .y4m, a .safetensors with the raw output xhat, or else a folder of\n"
    "numbered PNG frames) and prints PSNR and SSIM. " INPUT_HELP
    "Pictures are cut to the model's frame count (ivae: 1 + 4k; Wan: an error\n"
    "unless --frames cuts it) and centre-cropped to a multiple of 8.\n" FAMILY_HELP
    "\n" CODER_HELP;

#define TIME_HELP \
    "The time it prints is the model's work alone: not loading the model or reading\n" \
    "and writing files (on a device: with the input's upload and the output's download).\n"

static const char *ENCODE_HELP =
    "usage: ivae encode MODEL INPUT LATENT.safetensors [options]\n"
    "\n"
    "Writes the latent mean mu (z, T', H', W') of INPUT as tensor \"mu\", with the\n"
    "input's shape in the metadata (Wan: also the raw logvar). " INPUT_HELP FAMILY_HELP
    TIME_HELP "\n" CODER_HELP;

static const char *DECODE_HELP =
    "usage: ivae decode MODEL LATENT.safetensors OUTPUT [options]\n"
    "\n"
    "Decodes tensor \"mu\" of LATENT (as written by ivae encode) and writes OUTPUT:\n"
    "a .png for a single frame, a .y4m, a .safetensors with the raw, unclamped\n"
    "decoder output as tensor \"xhat\" (3, T, H, W), or else a folder of PNG frames.\n"
    FAMILY_HELP TIME_HELP "\n" CODER_HELP;

static const char *TRACE_HELP =
    "usage: ivae trace MODEL INPUT OUT.safetensors [--frames N]\n"
    "\n"
    "Encodes INPUT and decodes its latent mean, streamed chunk by chunk, and writes\n"
    "the output of every block for every chunk, named after the model's\n"
    "parameters with the chunk (e.g. encoder.down_blocks.3.chunk1 for a Wan model,\n"
    "encoder.stages.1.res.0.chunk2 for an ivae model), plus mu and xhat: find the\n"
    "first block where another implementation departs. " INPUT_HELP FAMILY_HELP;

/* The model of recon, encode, decode and trace: an ivae model (on the CPU or
   the OpenCL device) or a Wan 2.1 VAE, and the options they share. */
typedef struct {
    IvaeModel *m;
    WanModel *wan;
    IvaeCl *cl;
    IvaeClModel *cm; /* NULL: the CPU */
    WanCl *wcl;      /* the Wan model on the device; NULL: the CPU */
    int frames, latent_norm, tile, overlap;
    Device dev;
} Coder;

/* removes the shared options from argv */
static Coder coder_options(const char *cmd, int *argc, char **argv) {
    Coder c = {0};
    c.overlap = 64;
    c.dev = strip_device_flags(argc, argv);
    int n = 0;
    for (int i = 0; i < *argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--frames") == 0) c.frames = (int)parse_long(a, flag_value(*argc, argv, &i), 1, 1 << 20);
        else if (strcmp(a, "--latent-norm") == 0) c.latent_norm = 1;
        else if (strcmp(a, "--tile") == 0) c.tile = (int)parse_long(a, flag_value(*argc, argv, &i), 0, 1 << 16);
        else if (strcmp(a, "--tile-overlap") == 0) c.overlap = (int)parse_long(a, flag_value(*argc, argv, &i), 0, 1 << 16);
        else if (a[0] == '-' && a[1] == '-') die("%s: unknown option %s (see ivae %s --help)", cmd, a, cmd);
        else argv[n++] = argv[i];
    }
    *argc = n;
    return c;
}

static void coder_open(Coder *c, const char *cmd, const char *model) {
    IvaeSt *st = ivae_st_open(model);
    if (!st) die("%s", ivae_error());
    int wan = wan_detect(st);
    if (wan) c->wan = wan_load_st(st);
    ivae_st_close(st);
    if (wan && !c->wan) die("%s", ivae_error());
    if (!wan && !(c->m = ivae_load(model))) die("%s", ivae_error());
    if (c->wan) {
        if (c->dev.cl && c->tile)
            die("%s --device cl --tile %d: spatial tiling runs on the CPU only; drop --tile (the device runs whole "
                "frames) or --device cl",
                cmd, c->tile);
        if (c->tile && (c->tile < 16 || c->tile % 8 || c->overlap % 8 || c->overlap >= c->tile))
            die("--tile %d --tile-overlap %d: the tile must be a multiple of 8 of at least 16, the overlap a multiple "
                "of 8 below it",
                c->tile, c->overlap);
    } else if (c->latent_norm || c->tile) {
        die("%s: --latent-norm and --tile are for Wan 2.1 models; %s is an ivae model", cmd, model);
    }
    if (c->wan && c->latent_norm && wan_z(c->wan) != 16)
        die("--latent-norm: the published statistics are for 16 latent channels; this model has %d", wan_z(c->wan));
    if (c->dev.cl && c->wan) {
        if (!(c->cl = ivae_cl_new())) die("%s --device cl: %s", cmd, ivae_error());
        if (!(c->wcl = wan_cl_new(c->cl, c->wan, c->dev.fast))) die("%s --device cl: %s", cmd, ivae_error());
        fprintf(stderr, "ivae: %s on OpenCL (%s kernels), %s\n", cmd, c->dev.fast ? "fast" : "strict",
                ivae_cl_describe(c->cl));
    } else if (c->dev.cl) {
        c->cm = device_open(cmd, &c->dev, c->m, &c->cl);
    }
}

/* the device is let go as soon as its work is done; the model stays */
static void coder_close_device(Coder *c) {
    ivae_cl_model_free(c->cm), wan_cl_free(c->wcl), ivae_cl_free(c->cl);
    c->cm = NULL, c->wcl = NULL, c->cl = NULL;
}

static void coder_close(Coder *c) {
    coder_close_device(c);
    ivae_model_free(c->m), wan_free(c->wan);
}

static int time_factor(const Coder *c) { return c->wan ? 4 : ivae_time_factor(&c->m->cfg); }
static int space_factor(const Coder *c) { return c->wan ? 8 : ivae_space_factor(&c->m->cfg); }
static int z_channels(const Coder *c) { return c->wan ? wan_z(c->wan) : c->m->cfg.z_ch; }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* INPUT as the model takes it, and its latent's shape (z, T', H', W'). A
   .safetensors tensor is taken exactly (a wrong shape is an error); pictures
   are centre-cropped to the model's block and cut to its frame count (a Wan
   clip of another length is an error unless --frames cuts it). */
static void load_input(const Coder *c, const char *path, Clip *in, int zs[4]) {
    int tf = time_factor(c), fs = space_factor(c);
    if (ends_with(path, ".safetensors")) {
        IvaeSt *st = ivae_st_open(path);
        if (!st) die("%s", ivae_error());
        int64_t shape[4];
        real *x = read_tensor(st, "x", 4, shape);
        ivae_st_close(st);
        if (shape[0] != 3) die("%s: x has %lld channels, expected 3 (RGB)", path, (long long)shape[0]);
        int T = (int)shape[1];
        if (c->frames && c->frames < T) { /* the first N frames */
            size_t fr = (size_t)shape[2] * shape[3];
            for (int ch = 1; ch < 3; ch++) memmove(x + (size_t)ch * c->frames * fr, x + (size_t)ch * T * fr, c->frames * fr * sizeof(real));
            T = c->frames;
        }
        *in = (Clip){T, (int)shape[2], (int)shape[3], x};
    } else {
        Clip raw;
        if (media_load(path, c->frames, &raw) != 0) die("%s", ivae_error());
        int H = raw.H / fs * fs, W = raw.W / fs * fs, T = raw.T;
        if (H == 0 || W == 0) die("%s: %dx%d pixels is smaller than the model's %dx%d block", path, raw.H, raw.W, fs, fs);
        if (!c->wan) T = (raw.T - 1) / tf * tf + 1;
        if (clip_crop(&raw, (raw.H - H) / 2, (raw.W - W) / 2, H, W, 0, T, in) != 0) die("%s", ivae_error());
        if (T != raw.T || H != raw.H || W != raw.W)
            fprintf(stderr, "ivae: note: %s: using %d of %d frames, %dx%d of %dx%d pixels\n", path, T, raw.T, H, W, raw.H, raw.W);
        clip_free(&raw);
    }
    if ((in->T - 1) % tf != 0)
        die("%s: %d frames: a clip must have 1 + %d*k frames (an image has 1); --frames %d uses the first %d", path,
            in->T, tf, (in->T - 1) / tf * tf + 1, (in->T - 1) / tf * tf + 1);
    zs[0] = z_channels(c), zs[1] = (in->T - 1) / tf + 1;
    if (in->H % fs || in->W % fs) die("%s: %dx%d pixels: height and width must be multiples of %d", path, in->H, in->W, fs);
    zs[2] = in->H / fs, zs[3] = in->W / fs;
}

/* the published latent statistics, applied per channel */
static void latent_norm(real *mu, const int zs[4], int inverse) {
    size_t n = (size_t)zs[1] * zs[2] * zs[3];
    for (int ch = 0; ch < zs[0]; ch++)
        for (size_t j = 0; j < n; j++) {
            real *v = mu + ch * n + j;
            *v = inverse ? *v * wan_latent_std[ch] + wan_latent_mean[ch] : (*v - wan_latent_mean[ch]) / wan_latent_std[ch];
        }
}

/* the latent mean of in (and, for Wan, its raw logvar when wanted), new (zs) arrays */
static real *coder_encode(Coder *c, const Clip *in, const int zs[4], real **logvar) {
    size_t nz = (size_t)zs[0] * zs[1] * zs[2] * zs[3];
    real *mu = xmalloc(nz * sizeof(real));
    if (logvar) *logvar = c->wan ? xmalloc(nz * sizeof(real)) : NULL;
    int rc;
    if (c->wan)
        rc = c->tile  ? wan_encode_tiled(c->wan, in->px, in->T, in->H, in->W, mu, c->tile, c->overlap)
             : c->wcl ? wan_cl_encode(c->wcl, in->px, in->T, in->H, in->W, mu, logvar ? *logvar : NULL)
                      : wan_encode(c->wan, in->px, in->T, in->H, in->W, mu, logvar ? *logvar : NULL, NULL, NULL);
    else
        rc = c->cm ? ivae_cl_encode(c->cm, in->px, in->T, in->H, in->W, mu) : ivae_encode(c->m, in->px, in->T, in->H, in->W, mu);
    if (rc != 0) die("%s", ivae_error());
    if (c->tile && logvar) free(*logvar), *logvar = NULL; /* tiled: mu only */
    return mu;
}

/* the latent mu of shape zs decoded into out->px */
static void coder_decode(Coder *c, const real *mu, const int zs[4], Clip *out) {
    int rc;
    if (c->wan)
        rc = c->tile  ? wan_decode_tiled(c->wan, mu, zs[1], zs[2], zs[3], out->px, c->tile, c->overlap)
             : c->wcl ? wan_cl_decode(c->wcl, mu, zs[1], zs[2], zs[3], out->px)
                      : wan_decode(c->wan, mu, zs[1], zs[2], zs[3], out->px, NULL, NULL);
    else
        rc = c->cm ? ivae_cl_decode(c->cm, mu, zs[1], zs[2], zs[3], out->px) : ivae_decode(c->m, mu, zs[1], zs[2], zs[3], out->px);
    if (rc != 0) die("%s", ivae_error());
}

/* OUTPUT: a .safetensors gets the raw decoder output as xhat; anything else
   is pictures (clamped to [-1, 1] and rounded to 8 bits by media_save) */
static void save_output(const char *path, const Clip *out) {
    if (ends_with(path, ".safetensors")) {
        IvaeStEntry e = {.name = "xhat", .ndim = 4, .shape = {3, out->T, out->H, out->W}, .data = out->px};
        if (ivae_st_write(path, &e, 1, NULL, 0) != 0) die("%s", ivae_error());
    } else if (media_save(path, out) != 0) {
        die("%s", ivae_error());
    }
}

static Clip new_clip(int T, int H, int W) {
    Clip c = {T, H, W, xmalloc((size_t)3 * T * H * W * sizeof(float))};
    return c;
}

static int cmd_recon(int argc, char **argv) {
    if (wants_help(argc, argv, RECON_HELP)) return 0;
    Coder c = coder_options("recon", &argc, argv);
    if (argc != 3) die("recon: expected MODEL INPUT OUTPUT (see ivae recon --help)");
    coder_open(&c, "recon", argv[0]);
    Clip in;
    int zs[4];
    load_input(&c, argv[1], &in, zs);
    Clip rec = new_clip(in.T, in.H, in.W);
    double t0 = now_s();
    real *mu = coder_encode(&c, &in, zs, NULL);
    coder_decode(&c, mu, zs, &rec);
    double dt = now_s() - t0;
    coder_close_device(&c);
    save_output(argv[2], &rec);
    printf("%s: %d frame%s of %dx%d, latent %dx%dx%dx%d; PSNR %.2f dB, SSIM %.4f (%.2f s)\n", argv[1], in.T,
           in.T > 1 ? "s" : "", in.H, in.W, zs[0], zs[1], zs[2], zs[3], clip_psnr(&in, &rec), clip_ssim(&in, &rec), dt);
    printf("wrote %s\n", argv[2]);
    free(mu), clip_free(&in), clip_free(&rec);
    coder_close(&c);
    return 0;
}

static int cmd_encode(int argc, char **argv) {
    if (wants_help(argc, argv, ENCODE_HELP)) return 0;
    Coder c = coder_options("encode", &argc, argv);
    if (argc != 3) die("encode: expected MODEL INPUT LATENT (see ivae encode --help)");
    coder_open(&c, "encode", argv[0]);
    Clip in;
    int zs[4];
    load_input(&c, argv[1], &in, zs);
    double t0 = now_s();
    real *logvar = NULL, *mu = coder_encode(&c, &in, zs, &logvar);
    double dt = now_s() - t0;
    coder_close_device(&c);
    if (c.latent_norm) latent_norm(mu, zs, 0);
    char T[16], H[16], W[16];
    snprintf(T, sizeof T, "%d", in.T), snprintf(H, sizeof H, "%d", in.H), snprintf(W, sizeof W, "%d", in.W);
    const char *meta[] = {"input_frames", T, "input_height", H, "input_width", W, "latent", c.latent_norm ? "normalised" : "raw"};
    IvaeStEntry e[2] = {{.name = "mu", .ndim = 4, .shape = {zs[0], zs[1], zs[2], zs[3]}, .data = mu},
                        {.name = "logvar", .ndim = 4, .shape = {zs[0], zs[1], zs[2], zs[3]}, .data = logvar}};
    if (ivae_st_write(argv[2], e, logvar ? 2 : 1, meta, 4) != 0) die("%s", ivae_error());
    printf("%s: %dx%dx%d -> latent mu (%d,%d,%d,%d)%s in %.2f s (%.3f frames/s); wrote %s\n", argv[1], in.T, in.H,
           in.W, zs[0], zs[1], zs[2], zs[3], c.latent_norm ? ", normalised" : "", dt, in.T / dt, argv[2]);
    free(mu), free(logvar), clip_free(&in);
    coder_close(&c);
    return 0;
}

static int cmd_decode(int argc, char **argv) {
    if (wants_help(argc, argv, DECODE_HELP)) return 0;
    Coder c = coder_options("decode", &argc, argv);
    if (argc != 3) die("decode: expected MODEL LATENT OUTPUT (see ivae decode --help)");
    coder_open(&c, "decode", argv[0]);
    IvaeSt *st = ivae_st_open(argv[1]);
    if (!st) die("%s", ivae_error());
    int64_t shape[4];
    real *mu = read_tensor(st, "mu", 4, shape);
    ivae_st_close(st);
    if (shape[0] != z_channels(&c))
        die("%s: mu has %lld channels, the model's latent has %d", argv[1], (long long)shape[0], z_channels(&c));
    int zs[4] = {(int)shape[0], (int)shape[1], (int)shape[2], (int)shape[3]};
    if (c.latent_norm) latent_norm(mu, zs, 1);
    int fs = space_factor(&c);
    Clip out = new_clip((zs[1] - 1) * time_factor(&c) + 1, zs[2] * fs, zs[3] * fs);
    double t0 = now_s();
    coder_decode(&c, mu, zs, &out);
    double dt = now_s() - t0;
    coder_close_device(&c);
    save_output(argv[2], &out);
    printf("%s: latent (%d,%d,%d,%d) -> %dx%dx%d in %.2f s (%.3f frames/s); wrote %s\n", argv[1], zs[0], zs[1], zs[2],
           zs[3], out.T, out.H, out.W, dt, out.T / dt, argv[2]);
    free(mu), clip_free(&out);
    coder_close(&c);
    return 0;
}

/* the trace: every block's output, chunk by chunk, copied as it is made */
typedef struct {
    IvaeStEntry *e;
    int n, cap;
} TraceSet;

static void trace_add(void *ctx, const char *name, int chunk, const real *x, int C, int T, int H, int W) {
    TraceSet *ts = ctx;
    if (ts->n == ts->cap) {
        ts->cap = ts->cap ? 2 * ts->cap : 64;
        ts->e = xrealloc(ts->e, (size_t)ts->cap, sizeof *ts->e);
    }
    char key[160];
    snprintf(key, sizeof key, "%s.chunk%d", name, chunk);
    for (int k = 0; k < ts->n; k++)
        if (strcmp(ts->e[k].name, key) == 0) die("trace: two blocks named %s", key);
    size_t n = (size_t)C * T * H * W;
    real *copy = xmalloc(n * sizeof(real));
    memcpy(copy, x, n * sizeof(real));
    char *nm = xmalloc(strlen(key) + 1);
    strcpy(nm, key);
    ts->e[ts->n++] = (IvaeStEntry){.name = nm, .ndim = 4, .shape = {C, T, H, W}, .data = copy};
}

static int cmd_trace(int argc, char **argv) {
    if (wants_help(argc, argv, TRACE_HELP)) return 0;
    Coder c = coder_options("trace", &argc, argv);
    if (argc != 3) die("trace: expected MODEL INPUT OUT.safetensors (see ivae trace --help)");
    if (c.dev.cl || c.tile) die("trace: runs on the CPU, untiled");
    coder_open(&c, "trace", argv[0]);
    Clip in;
    int zs[4];
    load_input(&c, argv[1], &in, zs);
    size_t nz = (size_t)zs[0] * zs[1] * zs[2] * zs[3];
    real *mu = xmalloc(nz * sizeof(real));
    Clip out = new_clip(in.T, in.H, in.W);
    TraceSet ts = {0};
    int rc;
    if (c.wan) {
        rc = wan_encode(c.wan, in.px, in.T, in.H, in.W, mu, NULL, trace_add, &ts);
        if (rc == 0) rc = wan_decode(c.wan, mu, zs[1], zs[2], zs[3], out.px, trace_add, &ts);
    } else {
        ivae_set_trace(c.m, trace_add, &ts);
        rc = ivae_encode(c.m, in.px, in.T, in.H, in.W, mu);
        if (rc == 0) rc = ivae_decode(c.m, mu, zs[1], zs[2], zs[3], out.px);
        ivae_set_trace(c.m, NULL, NULL);
    }
    if (rc != 0) die("%s", ivae_error());
    trace_add(&ts, "mu", 0, mu, zs[0], zs[1], zs[2], zs[3]);
    trace_add(&ts, "xhat", 0, out.px, 3, out.T, out.H, out.W);
    ts.e[ts.n - 2].name = "mu", ts.e[ts.n - 1].name = "xhat";
    if (ivae_st_write(argv[2], ts.e, ts.n, NULL, 0) != 0) die("%s", ivae_error());
    printf("%s: %d block outputs over %d encoder and %d decoder chunks, mu and xhat; wrote %s\n", argv[1], ts.n - 2,
           c.wan ? zs[1] : zs[1], zs[1], argv[2]);
    free(mu), clip_free(&in), clip_free(&out);
    coder_close(&c);
    return 0;
}

/* --- ivae devices ----------------------------------------------------------- */

static const char *DEVICES_HELP =
    "usage: ivae devices\n"
    "\n"
    "Lists the OpenCL platforms and devices (name, version, compute units,\n"
    "memory, whether float divide and sqrt are correctly rounded, which the\n"
    "strict mode needs), then opens the one IVAE_CL_PLATFORM / IVAE_CL_DEVICE\n"
    "choose (default 0 and 0) and builds kernels.cl for it.\n"
    "Exit status 1 if there is no OpenCL platform or the chosen device fails.\n";

static int cmd_devices(int argc, char **argv) {
    if (argc > 0 && is_help(argv[0])) return fputs(DEVICES_HELP, stdout), 0;
    if (argc > 0) die("devices: no arguments expected (see ivae devices --help)");
    if (ivae_cl_print_devices(stdout) != 0) die("devices: %s", ivae_error());
    fflush(stdout);
    double t0 = now_s();
    IvaeCl *cl = ivae_cl_new();
    if (!cl) die("devices: %s", ivae_error());
    printf("chosen (IVAE_CL_PLATFORM, IVAE_CL_DEVICE): %s; kernels.cl built in %.1f s\n", ivae_cl_describe(cl),
           now_s() - t0);
    ivae_cl_free(cl);
    return 0;
}

/* --- ivae compare ----------------------------------------------------------- */

static const char *COMPARE_HELP =
    "usage: ivae compare [options] MODEL.safetensors IN.safetensors\n"
    "\n"
    "Runs the forward and backward pass of ivae grad on the batch IN on the CPU\n"
    "and on the OpenCL device, side by side, and compares them tensor by tensor:\n"
    "first in forward order (every block's output for each sample, with mu, logvar\n"
    "and xhat), then the loss, then in backward order (every parameter gradient,\n"
    "block by block as the backward pass visits them, then dL/dx of each sample).\n"
    "Each line: the largest absolute difference, the relative error\n"
    "e = max|a-b| / max|b| of SPEC 8 (b = CPU), the largest distance in float32 ulps.\n"
    "The verdict names the first tensor that diverges: in strict mode any bit that\n"
    "differs, in fast mode e above 1e-5 (outputs) or 1e-4 (gradients).\n"
    "Exit status 0 when everything agrees, 1 otherwise or without an OpenCL device.\n"
    "\n"
    "  --cl-mode strict|fast   the OpenCL kernels to check (default strict)\n"
    "  --quiet                 print only the tensors that diverge, and the verdict\n"
    "  --w-image, --w-video, --beta, --w-opl, --ref-shape   the loss, as ivae grad\n"
    "\n"
    "With a Wan 2.1 VAE as MODEL, IN is an input as ivae encode takes it (an\n"
    "image, frames, a .y4m, or a .safetensors x): both sides encode it and decode\n"
    "the CPU's mu, and every block's output is compared chunk by chunk (the names\n"
    "of ivae trace), then mu, logvar and xhat.\n";

typedef struct {
    int strict, quiet;
    int rows, bad;
    char first[200];
    double worst_out, worst_grad;
    char heading[200]; /* the table's next heading, printed before its first line */
} Compare;

/* a heading of the table (with --quiet only if a line follows it) */
static void compare_heading(Compare *c, const char *title, int columns) {
    if (columns)
        snprintf(c->heading, sizeof c->heading, "\n%-4s %-50s %-15s %10s %10s %9s\n", "", title, "shape", "max|a-b|", "e",
                 "ulp");
    else
        snprintf(c->heading, sizeof c->heading, "\n%-4s %s\n", "", title);
}

/* one line of the table, and the verdict's bookkeeping */
static void compare_report(Compare *c, const char *name, const char *shape, double maxd, double e, int64_t maxu,
                           size_t ndiff, size_t n, int nan, int is_grad) {
    double tol = is_grad ? 1e-4 : 1e-5;
    int ok = c->strict ? ndiff == 0 : !nan && e <= tol;
    if (is_grad && e > c->worst_grad) c->worst_grad = e;
    if (!is_grad && e > c->worst_out) c->worst_out = e;
    c->rows++;
    if (!ok) {
        c->bad++;
        if (!c->first[0])
            snprintf(c->first, sizeof c->first, "%s (%zu of %zu values differ, e %.3g, %lld ulp%s)", name, ndiff, n, e,
                     (long long)maxu, nan ? ", NaN on one side" : "");
    }
    if (ok && c->quiet) return;
    fputs(c->heading, stdout);
    c->heading[0] = 0;
    printf("%-4s %-50s %-15s %10.3e %10.3e %9lld", ok ? "ok" : c->strict ? "DIFF" : "FAIL", name, shape, maxd, e,
           (long long)maxu);
    if (ndiff && (c->strict || !ok)) printf("  %zu of %zu differ%s", ndiff, n, nan ? " (NaN)" : "");
    printf("\n");
}

/* one tensor: the CPU's values b and the device's a, n floats */
static void compare_row(Compare *c, const char *name, const int *shape, int ndim, const real *b, const real *a, size_t n,
                        int is_grad) {
    double maxd = 0, maxb = 0;
    int64_t maxu = 0;
    size_t ndiff = 0;
    int nan = 0;
    for (size_t j = 0; j < n; j++) {
        if (fabs((double)b[j]) > maxb) maxb = fabs((double)b[j]);
        if (memcmp(&a[j], &b[j], sizeof(real)) == 0) continue;
        ndiff++;
        if (a[j] != a[j] || b[j] != b[j]) {
            nan = 1;
            continue;
        }
        double d = fabs((double)a[j] - (double)b[j]);
        if (d > maxd) maxd = d;
        int64_t u = ulp_dist((float)a[j], (float)b[j]);
        if (u > maxu) maxu = u;
    }
    char sh[64] = "";
    for (int d = 0; d < ndim; d++) snprintf(sh + strlen(sh), sizeof sh - strlen(sh), "%s%d", d ? "x" : "", shape[d]);
    compare_report(c, name, sh, nan ? INFINITY : maxd, nan ? INFINITY : maxb > 0 ? maxd / maxb : maxd, maxu, ndiff, n,
                   nan, is_grad);
}

/* a double the C code returns (loss, rec, kl): its bits, its relative error */
static void compare_scalar(Compare *c, const char *name, double b, double a) {
    int differ = memcmp(&a, &b, sizeof a) != 0, nan = differ && (a != a || b != b);
    double d = fabs(a - b);
    compare_report(c, name, "(double)", d, b != 0 ? d / fabs(b) : d, ulp_dist((float)a, (float)b), differ, 1, nan, 0);
}

/* block outputs of the last pass on both sides, then the latent and xhat */
static void compare_forward(Compare *c, IvaeModel *m, IvaeClModel *cm, int i, const IvaeSample *sc, const IvaeSample *sd,
                            const int64_t *zs) {
    char name[160];
    for (int dec = 0; dec < 2; dec++) {
        IvaeBlockDesc d[256];
        int nb = ivae_graph(m, dec, d, 256);
        for (int j = 0; j < nb; j++) {
            int shape[4], dshape[4];
            const real *b = ivae_block_output(m, dec, j, shape);
            if (!b || ivae_cl_block_output(cm, dec, j, dshape, NULL) != 0) die("compare: %s: no output", d[j].name);
            if (memcmp(shape, dshape, sizeof shape)) die("compare: %s: the device's output has another shape", d[j].name);
            size_t n = (size_t)shape[0] * shape[1] * shape[2] * shape[3];
            real *a = xmalloc(n * sizeof(real));
            if (ivae_cl_block_output(cm, dec, j, dshape, a) != 0) die("%s", ivae_error());
            snprintf(name, sizeof name, "sample %d  %s", i, d[j].name);
            compare_row(c, name, shape, 4, b, a, n, 0);
            free(a);
        }
        if (dec == 0) {
            int shape[4] = {(int)zs[0], (int)zs[1], (int)zs[2], (int)zs[3]};
            size_t nz = (size_t)shape[0] * shape[1] * shape[2] * shape[3];
            snprintf(name, sizeof name, "sample %d  mu", i);
            compare_row(c, name, shape, 4, sc->mu, sd->mu, nz, 0);
            snprintf(name, sizeof name, "sample %d  logvar", i);
            compare_row(c, name, shape, 4, sc->logvar, sd->logvar, nz, 0);
        }
    }
    int xs[4] = {3, sc->T, sc->H, sc->W};
    snprintf(name, sizeof name, "sample %d  xhat", i);
    compare_row(c, name, xs, 4, sc->xhat, sd->xhat, (size_t)3 * sc->T * sc->H * sc->W, 0);
}

/* one parameter's gradient row, found by its offset */
static void compare_param(Compare *c, const IvaeModel *m, const real *dgrads, size_t offset, int *seen) {
    for (int t = 0; t < m->n_tensors; t++) {
        const IvaeParamInfo *p = &m->info[t];
        if (p->offset != offset) continue;
        char name[160];
        snprintf(name, sizeof name, "grad.%s", p->name);
        compare_row(c, name, p->shape, p->ndim, m->grads + p->offset, dgrads + p->offset, p->numel, 1);
        seen[t] = 1;
        return;
    }
}

static void compare_conv(Compare *c, const IvaeModel *m, const real *dgrads, const IvaeConvDesc *d, int *seen) {
    compare_param(c, m, dgrads, d->w, seen);
    compare_param(c, m, dgrads, d->b, seen);
}

/* the parameter gradients block by block, decoder then encoder, each from its
   last block back, in the order block_backward reaches the convs */
static void compare_backward(Compare *c, IvaeModel *m, const real *dgrads) {
    int *seen = xcalloc(m->n_tensors, sizeof(int));
    for (int dec = 1; dec >= 0; dec--) {
        IvaeBlockDesc d[256];
        int nb = ivae_graph(m, dec, d, 256);
        for (int j = nb - 1; j >= 0; j--) {
            switch (d[j].kind) {
            case IVAE_BLK_RES:
                compare_conv(c, m, dgrads, &d[j].c2, seen);
                compare_param(c, m, dgrads, d[j].c2_scale, seen);
                compare_param(c, m, dgrads, d[j].c2_gain, seen);
                compare_conv(c, m, dgrads, &d[j].c1, seen);
                compare_param(c, m, dgrads, d[j].c1_scale, seen);
                compare_param(c, m, dgrads, d[j].c1_gain, seen);
                if (d[j].shortcut) compare_conv(c, m, dgrads, &d[j].conv, seen);
                break;
            case IVAE_BLK_ATTN:
                compare_conv(c, m, dgrads, &d[j].proj, seen);
                compare_conv(c, m, dgrads, &d[j].conv, seen);
                break;
            default:
                compare_conv(c, m, dgrads, &d[j].conv, seen);
            }
        }
    }
    for (int t = 0; t < m->n_tensors; t++) /* none should be left; if one is, it is still compared */
        if (!seen[t]) compare_param(c, m, dgrads, m->info[t].offset, seen);
    free(seen);
}

/* a trace's tensor by name, or NULL */
static const IvaeStEntry *trace_find(const TraceSet *ts, const char *name) {
    for (int k = 0; k < ts->n; k++)
        if (strcmp(ts->e[k].name, name) == 0) return &ts->e[k];
    return NULL;
}

/* ivae compare for a Wan 2.1 VAE: the CPU's trace against the device's */
static int compare_wan(Compare *c, const Device *dev, const char *model, const char *input) {
    Coder cd = {0};
    cd.dev = *dev;
    coder_open(&cd, "compare", model); /* the model and the device */
    Clip in;
    int zs[4];
    load_input(&cd, input, &in, zs);
    size_t nz = (size_t)zs[0] * zs[1] * zs[2] * zs[3], nx = (size_t)3 * in.T * in.H * in.W;
    real *mu = xmalloc(nz * sizeof(real)), *lv = xmalloc(nz * sizeof(real)), *xh = xmalloc(nx * sizeof(real));
    real *mu_d = xmalloc(nz * sizeof(real)), *lv_d = xmalloc(nz * sizeof(real)), *xh_d = xmalloc(nx * sizeof(real));
    TraceSet tc = {0}, td = {0};
    printf("ivae compare: the CPU reference vs OpenCL %s kernels on %s\n", dev->fast ? "fast" : "strict",
           ivae_cl_describe(cd.cl));
    printf("Wan 2.1 VAE %s (dim %d, z %d), input %s: %dx%dx%d\n%s\n", model, wan_dim(cd.wan), wan_z(cd.wan), input,
           in.T, in.H, in.W,
           c->strict ? "strict: every bit must agree (DIFF: some bits differ)" : "fast: e <= 1e-5 (SPEC 8)");
    double t0 = now_s();
    if (wan_encode(cd.wan, in.px, in.T, in.H, in.W, mu, lv, trace_add, &tc) != 0 ||
        wan_decode(cd.wan, mu, zs[1], zs[2], zs[3], xh, trace_add, &tc) != 0)
        die("%s", ivae_error());
    double t1 = now_s();
    wan_cl_set_trace(cd.wcl, trace_add, &td);
    if (wan_cl_encode(cd.wcl, in.px, in.T, in.H, in.W, mu_d, lv_d) != 0 ||
        wan_cl_decode(cd.wcl, mu, zs[1], zs[2], zs[3], xh_d) != 0) /* the CPU's mu: the decoder on its own */
        die("%s", ivae_error());
    double t2 = now_s();
    compare_heading(c, "every block's output, chunk by chunk (encoder, then the decoder of the CPU's mu)", 1);
    for (int k = 0; k < tc.n; k++) {
        const IvaeStEntry *a = trace_find(&td, tc.e[k].name);
        int shape[4] = {(int)tc.e[k].shape[0], (int)tc.e[k].shape[1], (int)tc.e[k].shape[2], (int)tc.e[k].shape[3]};
        size_t n = (size_t)shape[0] * shape[1] * shape[2] * shape[3];
        if (!a || a->shape[0] != shape[0] || a->shape[1] != shape[1] || a->shape[2] != shape[2] || a->shape[3] != shape[3]) {
            compare_report(c, tc.e[k].name, "missing", INFINITY, INFINITY, 0, n, n, 1, 0);
            continue;
        }
        compare_row(c, tc.e[k].name, shape, 4, tc.e[k].data, a->data, n, 0);
    }
    compare_heading(c, "outputs", 1);
    compare_row(c, "mu", zs, 4, mu, mu_d, nz, 0);
    compare_row(c, "logvar", zs, 4, lv, lv_d, nz, 0);
    int xs[4] = {3, in.T, in.H, in.W};
    compare_row(c, "xhat", xs, 4, xh, xh_d, nx, 0);
    printf("\ntime for encode + decode: CPU %.2f s, OpenCL %s %.2f s\n", t1 - t0, dev->fast ? "fast" : "strict", t2 - t1);
    if (c->bad)
        printf("FAIL: %d of %d tensors diverge; the first, in the order above: %s\n", c->bad, c->rows, c->first);
    else if (c->strict)
        printf("PASS: all %d tensors bit-identical (strict)\n", c->rows);
    else
        printf("PASS: all %d tensors within SPEC 8 (fast); worst e %.3e\n", c->rows, c->worst_out);
    coder_close(&cd);
    free(mu), free(lv), free(xh), free(mu_d), free(lv_d), free(xh_d), clip_free(&in);
    return c->bad ? 1 : 0;
}

static int cmd_compare(int argc, char **argv) {
    IvaeLossOpts opts;
    ivae_loss_defaults(&opts);
    Device dev = {1, 0};
    Compare c;
    memset(&c, 0, sizeof c);
    const char *files[2];
    int nf = 0;
    for (int i = 0; i < argc; i++) {
        if (is_help(argv[i])) return fputs(COMPARE_HELP, stdout), 0;
        if (parse_device_flag(&dev, argc, argv, &i)) {
            if (!dev.cl) die("compare: --device cpu makes no sense here (it always runs both)");
        } else if (strcmp(argv[i], "--quiet") == 0) c.quiet = 1;
        else if (argv[i][0] == '-' && argv[i][1]) parse_loss_flag(&opts, argc, argv, &i);
        else if (nf < 2) files[nf++] = argv[i];
        else die("compare: too many arguments (usage: ivae compare MODEL IN)");
    }
    if (nf != 2) die("compare: expected MODEL IN (see ivae compare --help)");
    c.strict = !dev.fast;
    IvaeSt *st = ivae_st_open(files[0]);
    if (!st) die("%s", ivae_error());
    int wan = wan_detect(st);
    ivae_st_close(st);
    if (wan) return compare_wan(&c, &dev, files[0], files[1]);
    IvaeModel *m = ivae_load(files[0]);
    if (!m) die("%s", ivae_error());
    int B, *is_image;
    int64_t (*zshape)[4];
    opts.loss_norm = m->cfg.loss_norm;
    IvaeSample *s = load_batch(files[1], m, m->cfg.image_mode == IVAE_IMAGE_STATIC, &B, &zshape, &is_image);
    IvaeSample *sd = xcalloc(B, sizeof *sd);
    free(is_image);
    real *dgrads = xmalloc(m->n_params * sizeof(real));
    for (int i = 0; i < B; i++) { /* the device's outputs go to arrays of their own */
        sd[i] = s[i];
        sample_outputs_alloc(&sd[i], (size_t)3 * s[i].T * s[i].H * s[i].W,
                             (size_t)zshape[i][0] * zshape[i][1] * zshape[i][2] * zshape[i][3]);
    }
    IvaeCl *cl = ivae_cl_new();
    if (!cl) die("compare: %s", ivae_error());
    IvaeClModel *cm = ivae_cl_model_new(cl, m, dev.fast);
    if (!cm) die("compare: %s", ivae_error());

    printf("ivae compare: the CPU reference vs OpenCL %s kernels on %s\n", dev.fast ? "fast" : "strict",
           ivae_cl_describe(cl));
    printf("model %s (%zu parameters), batch %s:", files[0], m->n_params, files[1]);
    for (int i = 0; i < B; i++) printf("%s3x%dx%dx%d", i ? ", " : " ", s[i].T, s[i].H, s[i].W);
    printf("\n%s\n", c.strict ? "strict: every bit must agree (DIFF: some bits differ)"
                              : "fast: e <= 1e-5 for outputs, 1e-4 for gradients (SPEC 8)");
    printf("columns: max|a-b|, e = max|a-b| / max|b| (b = CPU), the largest distance in float32 ulps\n");
    fflush(stdout);

    /* Forward, sample by sample. Block outputs exist for the last sample of a
       pass only, so samples 0 .. B-2 first run alone on both sides (the
       forward pass does not depend on the rest of the batch); the whole
       batch then gives the last sample's outputs, the loss and the gradients. */
    double t_cpu = 0, t_cl = 0;
    IvaeLoss Lc, Ld;
    compare_heading(&c, "forward: block outputs", 1);
    for (int i = 0; i < B; i++) {
        int whole = i == B - 1;
        IvaeSample *bc = whole ? s : &s[i], *bd = whole ? sd : &sd[i];
        int n = whole ? B : 1;
        double t0 = now_s();
        ivae_zero_grad(m);
        if (ivae_batch_grad(m, bc, n, &opts, &Lc) != 0) die("%s", ivae_error());
        double t1 = now_s();
        if (ivae_cl_zero_grad(cm) != 0 || ivae_cl_batch_grad(cm, bd, n, &opts, &Ld) != 0) die("%s", ivae_error());
        double t2 = now_s();
        if (whole) t_cpu = t1 - t0, t_cl = t2 - t1;
        compare_forward(&c, m, cm, i, &s[i], &sd[i], zshape[i]);
        fflush(stdout);
    }
    compare_heading(&c, "loss (the whole batch)", 0);
    compare_scalar(&c, "loss", Lc.loss, Ld.loss);
    compare_scalar(&c, "rec", Lc.rec, Ld.rec);
    compare_scalar(&c, "kl", Lc.kl, Ld.kl);
    if (opts.w_opl != 0) compare_scalar(&c, "opl", Lc.opl, Ld.opl);

    compare_heading(&c, "backward: gradients", 1);
    if (ivae_cl_get_grads(cm, dgrads) != 0) die("%s", ivae_error());
    compare_backward(&c, m, dgrads);
    for (int i = 0; i < B; i++) {
        char name[64];
        int xs[4] = {3, s[i].T, s[i].H, s[i].W};
        snprintf(name, sizeof name, "grad.x.%d", i);
        compare_row(&c, name, xs, 4, s[i].dx, sd[i].dx, (size_t)3 * s[i].T * s[i].H * s[i].W, 1);
    }

    printf("\ntime for the batch's forward+backward: CPU %.2f s, OpenCL %s %.2f s\n", t_cpu, dev.fast ? "fast" : "strict",
           t_cl);
    if (c.bad)
        printf("FAIL: %d of %d tensors diverge; the first, in the order above: %s\n", c.bad, c.rows, c.first);
    else if (c.strict)
        printf("PASS: all %d tensors bit-identical (strict)\n", c.rows);
    else
        printf("PASS: all %d tensors within SPEC 8 (fast); worst e: outputs %.3e, gradients %.3e\n", c.rows, c.worst_out,
               c.worst_grad);

    ivae_cl_model_free(cm);
    ivae_cl_free(cl);
    for (int i = 0; i < B; i++) sample_outputs_free(&sd[i]);
    batch_free(s, B);
    free(sd), free(zshape), free(dgrads);
    ivae_model_free(m);
    return c.bad ? 1 : 0;
}

/* --- ivae info ------------------------------------------------------------ */

static int cmd_info(int argc, char **argv) {
    if (argc != 1 || is_help(argv[0])) {
        puts("usage: ivae info FILE.safetensors\n\nLists the metadata and tensors of a safetensors file and, for a\ncheckpoint, loads it as a model (which checks every tensor).");
        return argc == 1 ? 0 : 1;
    }
    IvaeSt *st = ivae_st_open(argv[0]);
    if (!st) die("%s", ivae_error());
    for (int k = 0; k < st->n_meta; k++) printf("meta %s = %s\n", st->meta_key[k], st->meta_val[k]);
    size_t total = 0;
    for (int k = 0; k < st->n; k++) {
        const IvaeStTensor *t = &st->t[k];
        static const char *dt[] = {"F32", "F16", "BF16", "F64"};
        printf("%-60s %-4s (", t->name, dt[t->dtype]);
        for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? "," : "", (long long)t->shape[d]);
        printf(")\n");
        total += t->numel;
    }
    printf("%d tensors, %zu values\n", st->n, total);
    int is_model = ivae_st_meta(st, "format") != NULL, is_wan = wan_detect(st);
    if (is_wan) {
        WanModel *w = wan_load_st(st);
        if (!w) die("%s", ivae_error());
        printf("loads as a Wan 2.1 VAE (%s layout): dim %d, z %d, %zu parameters, time x space compression 4 x 8 x 8\n",
               wan_layout(w), wan_dim(w), wan_z(w), wan_n_params(w));
        wan_free(w);
    }
    ivae_st_close(st);
    if (is_model) {
        IvaeModel *m = ivae_load(argv[0]);
        if (!m) die("%s", ivae_error());
        printf("loads as an ivae model: %zu parameters, time x space compression %d x %d x %d\n", m->n_params,
               ivae_time_factor(&m->cfg), ivae_space_factor(&m->cfg), ivae_space_factor(&m->cfg));
        ivae_model_free(m);
    }
    return 0;
}

/* --- main ----------------------------------------------------------------- */

static const char *HELP =
    "ivae: an image-video VAE in plain C (the reference implementation)\n"
    "\n"
    "usage: ivae COMMAND [options] ...\n"
    "\n"
    "  train   train the VAE on a dataset (the main job)\n"
    "  eval    held-out PSNR and SSIM of a trained model, with pictures\n"
    "  lessons the seed's lessons as paired experiments (LESSONS.md): lessons.md, pictures\n"
    "  recon   encode and decode an image or clip; print PSNR and SSIM\n"
    "  encode  write the latent of an image or clip\n"
    "  decode  turn a latent back into pixels\n"
    "  trace   every block's output, chunk by chunk (ivae and Wan 2.1 models)\n"
    "  init    write a freshly initialised model\n"
    "  grad    forward + backward on a batch; write loss, outputs and every gradient\n"
    "  batch   write a random input batch for grad\n"
    "  diff    compare two tensor files within SPEC 8's tolerances (or bit for bit)\n"
    "  info    list what a safetensors file holds\n"
    "  devices list the OpenCL platforms and devices\n"
    "  compare run grad on the CPU and on OpenCL; compare layer by layer\n"
    "\n"
    "Run 'ivae COMMAND --help' for the options of each.\n";

int main(int argc, char **argv) {
    ivae_wait_passively(argv); /* util.h: before anything else, it may start ivae again */
    if (argc < 2 || is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        fputs(HELP, stdout);
        return argc < 2 ? 1 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "train") == 0) return train_main(argc - 2, argv + 2);
    if (strcmp(cmd, "eval") == 0) return eval_main(argc - 2, argv + 2);
    if (strcmp(cmd, "lessons") == 0) return lessons_main(argc - 2, argv + 2);
    if (strcmp(cmd, "recon") == 0) return cmd_recon(argc - 2, argv + 2);
    if (strcmp(cmd, "encode") == 0) return cmd_encode(argc - 2, argv + 2);
    if (strcmp(cmd, "decode") == 0) return cmd_decode(argc - 2, argv + 2);
    if (strcmp(cmd, "trace") == 0) return cmd_trace(argc - 2, argv + 2);
    if (strcmp(cmd, "init") == 0) return cmd_init(argc - 2, argv + 2);
    if (strcmp(cmd, "grad") == 0) return cmd_grad(argc - 2, argv + 2);
    if (strcmp(cmd, "diff") == 0) return cmd_diff(argc - 2, argv + 2);
    if (strcmp(cmd, "batch") == 0) return cmd_batch(argc - 2, argv + 2);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(cmd, "devices") == 0) return cmd_devices(argc - 2, argv + 2);
    if (strcmp(cmd, "compare") == 0) return cmd_compare(argc - 2, argv + 2);
    die("unknown command '%s' (run ivae --help)", cmd);
    return 1;
}
