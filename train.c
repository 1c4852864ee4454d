/*
 * train.c: `ivae train`, the main job: train the VAE on real images and clips.
 *
 *   ./ivae train [--data data] [--minutes M | --steps N] [--out runs/NAME] [--resume CKPT] ...
 *
 * Each step draws a batch that mixes images (T = 1) and clips (T = 1 + 4k),
 * random crops of the training data, and takes one AdamW step on the loss of
 * SPEC 4. Around that step sit the guards that keep a long run alive:
 *
 * - warmup, then cosine decay of the learning rate;
 * - adaptive gradient clipping per output unit (NFNets): a conv weight row's
 *   gradient may not exceed agc * its weight norm, so no unit can jump;
 * - global clipping against the recent median gradient norm, so a clip
 *   threshold means something whatever the loss scale;
 * - a NaN guard: a non-finite loss or gradient skips the step and names the
 *   first layer where the NaN or inf appeared;
 * - a spike guard: a recent good state is kept in memory; when the loss or an
 *   activation norm jumps far above its recent median the run rolls back to
 *   it, lowers the learning rate and says so.
 *
 * Everything that steers the run (parameters, moments, step, RNG state,
 * learning-rate scale, guard history) is in the checkpoint, so a resumed run
 * continues bit for bit as if it had never stopped.
 *
 * The training split is read on demand: setup probes each file's shape
 * (media_probe: headers only), and a file is decoded when this process first
 * crops from it, kept in a cache bounded by --data-cache-mb. Under mpirun
 * each rank decodes only the files of its own samples (SPEC 8.2); rank 0
 * alone decodes the held-out split.
 *
 * train_main, at the end, is the whole run: run_setup (options, data, model,
 * resume), then train_step until it says STEP_STOPPED, with log_step, the
 * held-out numbers and a checkpoint after each step taken, then run_finish
 * (the last checkpoint, the weights, the held-out pictures, the curve).
 */
#include "dist.h"
#include "ivae.h"
#include "ivae_cl_model.h"
#include "media.h"
#include "train.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HIST 64 /* steps of history the guards look at */
#define MAX_SIDE 16384 /* the largest crop side or frame count an option may ask for */
#define MAX_BATCH 4096 /* the most clips or images per batch */

/* ------------------------------------------------------------------------ */
/* options */

typedef struct {
    const char *data, *out, *resume, *config, *init;
    double minutes;
    long steps, stop_after;
    int crop, clip_frames, n_clips, n_images, eval_size, eval_frames;
    double lr, min_lr_frac, weight_decay, agc, clip_factor, spike_factor;
    long warmup;
    IvaeLossOpts loss;
    int log_every, log_norms, eval_every, ckpt_every, guard_every;
    uint64_t seed;
    int cl, cl_fast; /* --device cl, --cl-mode fast */
    int variant[4];  /* SPEC 9: block_norm, attn_norm, image_mode, loss_norm; -1: the config's */
    int jpeg_quality; /* > 0: the training data re-encoded as JPEG of this quality */
    int eval_jpeg;    /* > 0: held-out PSNR also against JPEG versions of this quality (default jpeg_quality) */
    long cache_mb;    /* the decoded training files kept in memory, at most (0: no limit) */
} Opts;

static const char *const VARIANT_FLAG[4] = {"--block-norm", "--attn-norm", "--image-mode", "--loss-norm"};
static const char *const VARIANT_KIND[4] = {"block_norm", "attn_norm", "image_mode", "loss_norm"};

static const char *TRAIN_HELP =
    "usage: ivae train [options]\n"
    "\n"
    "Trains the VAE on DATA/train (clips: folders of numbered PNG frames under\n"
    "clips/, or .y4m files; images under images/) and evaluates on DATA/eval.\n"
    "Writes to OUT: model.safetensors (weights), ckpt.safetensors (weights and\n"
    "optimizer state, for --resume), log.csv, loss.png, eval.csv and side-by-side\n"
    "PNGs of held-out frames.\n"
    "\n"
    "  --data DIR          dataset folder (default data)\n"
    "  --out DIR           output folder (default runs/latest)\n"
    "  --minutes M         train for M minutes of wall time (default 5): the first 5 steps'\n"
    "                      speed sets the schedule, which then ends the run (at most 20% late)\n"
    "  --steps N           train for exactly N steps (overrides --minutes)\n"
    "  --resume CKPT       continue a run from its ckpt.safetensors, bit for bit\n"
    "  --config NAME       ivae-xs (default) or ivae-s, for a fresh run\n"
    "  --init MODEL        a fresh run (step 0, new optimizer state and schedule) that\n"
    "                      starts from MODEL's weights instead of a random initialisation\n"
    "  --seed N            RNG seed of the initialisation and the batches (default 1)\n"
    "  --crop N            training crop size (default 32)\n"
    "  --clips N           clips per batch (default 1)\n"
    "  --clip-frames T     frames per clip, 1 + 4k (default 17, as held-out clips)\n"
    "  --images N          images per batch (default 8)\n"
    "  --lr X              peak learning rate (default 5e-4)\n"
    "  --warmup N          warmup steps (default 200)\n"
    "  --min-lr-frac X     final learning rate as a fraction of the peak (default 0.1)\n"
    "  --weight-decay X    AdamW decay of conv weights (default 0)\n"
    "  --agc X             adaptive clipping: |g_row| <= X |w_row| (default 0.05; 0 = off)\n"
    "  --clip-factor X     clip the global gradient norm at X times its recent median (default 2; 0 = off)\n"
    "  --spike-factor X    roll back when the loss exceeds X times its recent median (default 3; 0 = off)\n"
    "  --guard-every N     refresh the in-memory good state every N steps (default 50)\n"
    "  --w-image X, --w-video X, --beta X, --w-opl X, --ref-shape TxHxW   the loss (SPEC 4)\n"
    "  the variants of SPEC 9 (the seed's lessons; a fresh run's model records them):\n"
    "  --block-norm N      smc (default) or groupnorm residual blocks\n"
    "  --attn-norm N       pixelnorm (default), groupnorm or none before attention\n"
    "  --image-mode M      causal (default: an image is a 1-frame clip) or static (5 copies)\n"
    "  --loss-norm N       ref (default: SPEC 4's reference shape), sum or mean\n"
    "  --jpeg-quality Q    re-encode every training image and frame as JPEG of quality Q\n"
    "                      (1..100) before training (default 0: the data as it is)\n"
    "  --eval-jpeg Q       held-out PSNR also against JPEG versions of quality Q (default:\n"
    "                      --jpeg-quality's); --eval-frames N: held-out clips' frames (17)\n"
    "  --data-cache-mb N   decoded training files kept in memory, at most N MB (default\n"
    "                      4096; 0: no limit); beyond it the least recently used is\n"
    "                      dropped and decoded again when next drawn (the same bits)\n"
    "  --log-every N       a status line every N steps (default 10)\n"
    "  --log-norms N       every N steps, each layer's activation RMS and largest per-pixel norm\n"
    "  --eval-every N      held-out PSNR/SSIM every N steps (default 500; 0 = only at the end)\n"
    "  --eval-size N       held-out crop size (default 64)\n"
    "  --ckpt-every N      checkpoint every N steps (default 500; a multiple of --guard-every)\n"
    "  --stop-after N      stop after step N, keeping the schedule of --steps (for tests)\n"
    "  --device cpu|cl     train on the CPU (default) or on the OpenCL device that\n"
    "                      IVAE_CL_PLATFORM / IVAE_CL_DEVICE choose; the weights, moments,\n"
    "                      gradients and activations stay there between steps\n"
    "  --cl-mode strict|fast  strict (default): the CPU run's bits, step for step;\n"
    "                      fast: tiled kernels within SPEC 8's tolerances\n";

/* --resume puts the checkpoint's recipe in front of the command line
   (with_resume_recipe): its first g_recipe_n arguments came from g_recipe,
   and an error in one of them says so */
static const char *g_recipe;
static int g_recipe_n;
static char **g_recipe_argv;
static const char *from_recipe(int i) {
    static char buf[600];
    if (!g_recipe || i >= g_recipe_n) return "";
    snprintf(buf, sizeof buf, "%s: checkpoint metadata for ", g_recipe);
    return buf;
}

static void parse_opts(Opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->data = "data", o->out = "runs/latest", o->config = "ivae-xs";
    o->minutes = 5, o->crop = 32, o->clip_frames = 17, o->n_clips = 1, o->n_images = 8;
    o->eval_size = 64, o->eval_frames = 17, o->cache_mb = 4096;
    o->lr = 5e-4, o->warmup = 200, o->min_lr_frac = 0.1, o->agc = 0.05, o->clip_factor = 2, o->spike_factor = 3;
    o->log_every = 10, o->eval_every = 500, o->ckpt_every = 500, o->guard_every = 50, o->seed = 1;
    for (int k = 0; k < 4; k++) o->variant[k] = -1;
    ivae_loss_defaults(&o->loss);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (die("%s needs a value (see ivae train --help)", a), ""))
/* every real-valued option is a finite number >= 0 */
#define NUM(v) (parse_real(NEXT(), 0, FLT_MAX, &dv) != 0 ? \
                die("%s%s: '%s' is not a finite number >= 0", from_recipe(i), a, argv[i]) : (void)(v = dv))
/* every integer option is range-checked (util.h parse_int), so that no
   value wraps when it is narrowed to the int it is stored in */
#define INT_IN(v, lo, hi) (parse_int(NEXT(), lo, hi, &lv) != 0 ? \
                die("%s%s: '%s' must be an integer in [%lld, %lld]", from_recipe(i), a, argv[i], (long long)(lo), (long long)(hi)) : (void)(v = lv))
#define INT(v, lo) INT_IN(v, lo, INT_MAX)
        double d, dv;
        long long lv;
        long l;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(TRAIN_HELP, stdout);
            exit(0);
        } else if (!strcmp(a, "--data")) o->data = NEXT();
        else if (!strcmp(a, "--data-cache-mb")) INT_IN(o->cache_mb, 0, 1LL << 40);
        else if (!strcmp(a, "--out")) o->out = NEXT();
        else if (!strcmp(a, "--resume")) o->resume = NEXT();
        else if (!strcmp(a, "--config")) o->config = NEXT();
        else if (!strcmp(a, "--init")) o->init = NEXT();
        else if (!strcmp(a, "--minutes")) {
            NUM(o->minutes);
            if (o->minutes == 0) die("--minutes: 0 (expected a positive number of minutes)");
        }
        else if (!strcmp(a, "--steps")) INT(o->steps, 1);
        else if (!strcmp(a, "--stop-after")) INT(o->stop_after, 1);
        else if (!strcmp(a, "--seed")) { INT_IN(l, 0, LONG_MAX); o->seed = (uint64_t)l; }
        else if (!strcmp(a, "--crop")) { INT_IN(l, 8, MAX_SIDE); o->crop = (int)l; }
        else if (!strcmp(a, "--clips")) { INT_IN(l, 0, MAX_BATCH); o->n_clips = (int)l; }
        else if (!strcmp(a, "--clip-frames")) { INT_IN(l, 1, MAX_SIDE); o->clip_frames = (int)l; }
        else if (!strcmp(a, "--images")) { INT_IN(l, 0, MAX_BATCH); o->n_images = (int)l; }
        else if (!strcmp(a, "--lr")) {
            NUM(o->lr);
            if (o->lr == 0) die("--lr: 0 would not train (expected a rate like 5e-4)");
        }
        else if (!strcmp(a, "--warmup")) INT(o->warmup, 0);
        else if (!strcmp(a, "--min-lr-frac")) {
            NUM(o->min_lr_frac);
            if (o->min_lr_frac > 1) die("--min-lr-frac: %g is above 1 (the final rate is a fraction of the peak)", o->min_lr_frac);
        }
        else if (!strcmp(a, "--weight-decay")) NUM(o->weight_decay);
        else if (!strcmp(a, "--agc")) NUM(o->agc);
        else if (!strcmp(a, "--clip-factor")) NUM(o->clip_factor);
        else if (!strcmp(a, "--spike-factor")) {
            NUM(o->spike_factor);
            if (o->spike_factor != 0 && !(o->spike_factor > 1))
                die("--spike-factor %g: expected 0 (off) or more than 1 (it multiplies the recent median loss)", o->spike_factor);
        }
        else if (!strcmp(a, "--guard-every")) { INT(l, 1); o->guard_every = (int)l; }
        else if (!strcmp(a, "--w-image")) { NUM(d); o->loss.w_image = (real)d; }
        else if (!strcmp(a, "--w-video")) { NUM(d); o->loss.w_video = (real)d; }
        else if (!strcmp(a, "--beta")) { NUM(d); o->loss.beta = (real)d; }
        else if (!strcmp(a, "--w-opl")) { NUM(d); o->loss.w_opl = (real)d; }
        else if (!strcmp(a, "--eval-frames")) { INT(l, 1); o->eval_frames = (int)l; }
        else if (!strcmp(a, "--eval-jpeg")) {
            INT(l, 0);
            if (l > 100) die("--eval-jpeg: '%s' must be 0 (off) or a quality 1..100", argv[i]);
            o->eval_jpeg = (int)l;
        } else if (!strcmp(a, "--jpeg-quality")) {
            INT(l, 0);
            if (l > 100) die("--jpeg-quality: '%s' must be 0 (off) or a quality 1..100", argv[i]);
            o->jpeg_quality = (int)l;
        } else if (!strcmp(a, "--block-norm") || !strcmp(a, "--attn-norm") || !strcmp(a, "--image-mode") ||
                   !strcmp(a, "--loss-norm")) {
            int k = 0;
            while (strcmp(a, VARIANT_FLAG[k])) k++;
            const char *v = NEXT();
            if ((o->variant[k] = ivae_variant_parse(VARIANT_KIND[k], v)) < 0) die("%s: %s", a, ivae_error());
        }
        else if (!strcmp(a, "--ref-shape")) {
            const char *v = NEXT();
            int rs[3];
            if (parse_shape(v, 3, 1, MAX_SIDE, rs) != 0) die("--ref-shape: '%s' is not like 17x64x64", v);
            o->loss.ref_t = rs[0], o->loss.ref_h = rs[1], o->loss.ref_w = rs[2];
        } else if (!strcmp(a, "--log-every")) { INT(l, 1); o->log_every = (int)l; }
        else if (!strcmp(a, "--log-norms")) { INT(l, 0); o->log_norms = (int)l; }
        else if (!strcmp(a, "--eval-every")) { INT(l, 0); o->eval_every = (int)l; }
        else if (!strcmp(a, "--eval-size")) { INT_IN(l, 8, MAX_SIDE); o->eval_size = (int)l; }
        else if (!strcmp(a, "--ckpt-every")) { INT(l, 1); o->ckpt_every = (int)l; }
        else if (!strcmp(a, "--device")) {
            const char *v = NEXT();
            if (strcmp(v, "cpu") && strcmp(v, "cl")) die("--device: '%s' (expected cpu or cl)", v);
            o->cl = !strcmp(v, "cl");
        } else if (!strcmp(a, "--cl-mode")) {
            const char *v = NEXT();
            if (strcmp(v, "strict") && strcmp(v, "fast")) die("--cl-mode: '%s' (expected strict or fast)", v);
            o->cl_fast = !strcmp(v, "fast");
        }
        else die("train: unknown option '%s' (see ivae train --help)", a);
#undef NEXT
#undef NUM
#undef INT
#undef INT_IN
    }
    if (o->n_clips + o->n_images < 1) die("train: the batch is empty (--clips 0 --images 0)");
    if (o->init && o->resume) die("train: --init starts a fresh run from a model's weights, --resume continues one: give one of them");
    if (o->ckpt_every % o->guard_every != 0) die("train: --ckpt-every must be a multiple of --guard-every");
    if (!(o->minutes > 0) && o->steps == 0) die("train: give --minutes M > 0 or --steps N");
    if (!o->eval_jpeg) o->eval_jpeg = o->jpeg_quality;
}

/* The options that make up the training recipe: a checkpoint stores them as
   metadata "opt.<flag>", and --resume reads them back as if given first on
   the command line (flags given after --resume still win). */
enum { OPT_KEYS = 19 };
static const char *OPT_META[OPT_KEYS] = {"opt.lr", "opt.warmup", "opt.min-lr-frac", "opt.weight-decay", "opt.agc",
                                         "opt.clip-factor", "opt.spike-factor", "opt.guard-every", "opt.crop", "opt.clips",
                                         "opt.clip-frames", "opt.images", "opt.w-image", "opt.w-video", "opt.beta",
                                         "opt.w-opl", "opt.ref-shape", "opt.seed", "opt.jpeg-quality"};

static void opt_value(const Opts *o, int k, char *v, size_t n) {
    switch (k) {
    case 0: snprintf(v, n, "%.17g", o->lr); break;
    case 1: snprintf(v, n, "%ld", o->warmup); break;
    case 2: snprintf(v, n, "%.17g", o->min_lr_frac); break;
    case 3: snprintf(v, n, "%.17g", o->weight_decay); break;
    case 4: snprintf(v, n, "%.17g", o->agc); break;
    case 5: snprintf(v, n, "%.17g", o->clip_factor); break;
    case 6: snprintf(v, n, "%.17g", o->spike_factor); break;
    case 7: snprintf(v, n, "%d", o->guard_every); break;
    case 8: snprintf(v, n, "%d", o->crop); break;
    case 9: snprintf(v, n, "%d", o->n_clips); break;
    case 10: snprintf(v, n, "%d", o->clip_frames); break;
    case 11: snprintf(v, n, "%d", o->n_images); break;
    case 12: snprintf(v, n, "%.9g", (double)o->loss.w_image); break;
    case 13: snprintf(v, n, "%.9g", (double)o->loss.w_video); break;
    case 14: snprintf(v, n, "%.9g", (double)o->loss.beta); break;
    case 15: snprintf(v, n, "%.9g", (double)o->loss.w_opl); break;
    case 16: snprintf(v, n, "%dx%dx%d", o->loss.ref_t, o->loss.ref_h, o->loss.ref_w); break;
    case 17: snprintf(v, n, "%llu", (unsigned long long)o->seed); break;
    case 18: snprintf(v, n, "%d", o->jpeg_quality); break;
    }
}

/* argv with the recipe of the checkpoint named by --resume in front */
static char **with_resume_recipe(int *argc, char **argv) {
    const char *ckpt = NULL;
    for (int i = 0; i + 1 < *argc; i++)
        if (!strcmp(argv[i], "--resume")) ckpt = argv[i + 1];
    if (!ckpt) return argv;
    IvaeSt *st = ivae_st_open(ckpt);
    if (!st) die("%s", ivae_error());
    char **out = xcalloc(2 * OPT_KEYS + *argc + 1, sizeof(char *));
    int n = 0;
    for (int k = 0; k < OPT_KEYS; k++) {
        const char *v = ivae_st_meta(st, OPT_META[k]);
        if (!v) continue;
        size_t len = strlen(OPT_META[k]) + 2;
        out[n] = xcalloc(len, 1);
        snprintf(out[n++], len, "--%s", OPT_META[k] + 4);
        out[n++] = strcpy(xmalloc(strlen(v) + 1), v);
    }
    ivae_st_close(st);
    /* the recipe lives as long as the run (an option may keep a pointer to
       its strings); run_free frees it */
    g_recipe = ckpt, g_recipe_n = n, g_recipe_argv = out;
    for (int i = 0; i < *argc; i++) out[n++] = argv[i];
    *argc = n;
    return out;
}

/* ------------------------------------------------------------------------ */
/* the data */

typedef struct {
    Clip *clips, *images;
    int n_clips, n_images;
    char **clip_names; /* the clips' file or folder names (for frames.csv) */
} Dataset;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* the entries of dir (not starting with '.'), sorted; NULL if dir is missing */
static char **list_dir(const char *dir, int *n) {
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) return NULL;
    char **names = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (*n == cap) cap = cap ? 2 * cap : 64, names = xrealloc(names, cap, sizeof *names);
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        names[*n] = xmalloc(len);
        snprintf(names[(*n)++], len, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, *n, sizeof *names, cmp_str);
    return names;
}

/* a split decoded whole: the held-out data (rank 0 alone evaluates) */
static void load_split(Dataset *ds, const char *root, const char *split, int min_frames) {
    char dir[1024];
    int n;
    memset(ds, 0, sizeof *ds);
    snprintf(dir, sizeof dir, "%s/%s/clips", root, split);
    char **names = list_dir(dir, &n);
    ds->clips = xcalloc(n, sizeof(Clip));
    ds->clip_names = xcalloc(n ? n : 1, sizeof(char *));
    for (int j = 0; j < n; j++) {
        Clip c;
        if (media_load(names[j], 0, &c) != 0) die("%s", ivae_error());
        if (c.T < min_frames) {
            fprintf(stderr, "ivae: note: skipping %s: %d frames, fewer than %d\n", names[j], c.T, min_frames);
            clip_free(&c);
            free(names[j]);
        } else { /* kept with its name alone, for frames.csv and the messages */
            char *slash = strrchr(names[j], '/');
            if (slash) memmove(names[j], slash + 1, strlen(slash + 1) + 1);
            ds->clip_names[ds->n_clips] = names[j], ds->clips[ds->n_clips++] = c;
        }
    }
    free(names);
    snprintf(dir, sizeof dir, "%s/%s/images", root, split);
    names = list_dir(dir, &n);
    ds->images = xcalloc(n, sizeof(Clip));
    for (int j = 0; j < n; j++) {
        if (media_load(names[j], 1, &ds->images[j]) != 0) die("%s", ivae_error());
        ds->n_images++;
        free(names[j]);
    }
    free(names);
}

static void free_split(Dataset *ds) {
    for (int j = 0; j < ds->n_clips; j++) clip_free(&ds->clips[j]), free(ds->clip_names[j]);
    free(ds->clip_names);
    for (int j = 0; j < ds->n_images; j++) clip_free(&ds->images[j]);
    free(ds->clips), free(ds->images);
}

/* The training split, read on demand. At setup every file is only probed
   (media_probe: its shape from the headers, which is all the batch draws
   need: SPEC 8.2's sample order comes from the RNG and the shapes); a
   file's pixels are decoded the first time this rank crops from it, so
   under mpirun each rank decodes only the files its own samples come from.
   Decoded files stay in a cache of at most --data-cache-mb, the least
   recently used dropped first; decoding is deterministic, so a file decoded
   again gives the same pixels and the same bits. */
typedef struct {
    char *path;
    int max_frames;     /* media_load's: 0 for a clip, 1 for an image */
    int T, H, W;        /* the shape media_load gives (probed) */
    Clip c;             /* the pixels (3, T, H, W); c.px NULL until decoded, or once evicted */
    long last_use;      /* TrainSet.uses at the last crop, for the eviction */
    int decodes;        /* times this rank decoded it */
} Entry;

typedef struct {
    Entry *clips, *images;
    int n_clips, n_images;
    int jpeg_quality;   /* > 0: each file re-encoded as JPEG of this quality once decoded (--jpeg-quality) */
    double bytes, limit; /* the cache: bytes held; at most (0: no limit) */
    long uses;
} TrainSet;

static void probe_entries(Entry **out, int *n_out, const char *dir, int max_frames, int min_frames) {
    int n;
    char **names = list_dir(dir, &n);
    Entry *e = xcalloc(n, sizeof(Entry));
    *n_out = 0;
    for (int j = 0; j < n; j++) {
        Entry *x = &e[*n_out];
        if (media_probe(names[j], max_frames, &x->T, &x->H, &x->W) != 0) die("%s", ivae_error());
        if (x->T < min_frames) {
            fprintf(stderr, "ivae: note: skipping %s: %d frames, fewer than %d\n", names[j], x->T, min_frames);
            free(names[j]);
            continue;
        }
        x->path = names[j], x->max_frames = max_frames;
        ++*n_out;
    }
    free(names);
    *out = e;
}

static void probe_train(TrainSet *ts, const char *root, int min_frames) {
    char dir[1024];
    memset(ts, 0, sizeof *ts);
    snprintf(dir, sizeof dir, "%s/train/clips", root);
    probe_entries(&ts->clips, &ts->n_clips, dir, 0, min_frames);
    snprintf(dir, sizeof dir, "%s/train/images", root);
    probe_entries(&ts->images, &ts->n_images, dir, 1, 0);
}

static void free_train(TrainSet *ts) {
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < (k ? ts->n_images : ts->n_clips); j++) {
            Entry *e = k ? &ts->images[j] : &ts->clips[j];
            clip_free(&e->c), free(e->path);
        }
    free(ts->clips), free(ts->images);
}

/* (files decoded at least once, decodes in all) by this rank */
static void train_decoded(const TrainSet *ts, int *files, int *decodes) {
    *files = *decodes = 0;
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < (k ? ts->n_images : ts->n_clips); j++) {
            const Entry *e = k ? &ts->images[j] : &ts->clips[j];
            *files += e->decodes > 0, *decodes += e->decodes;
        }
}

static char g_last_ckpt[1300]; /* the checkpoint a run can continue from (set by save_run and --resume) */

/* e's pixels, decoded now if this rank has not got them. A file that fails
   to decode (a corrupt body behind a good header) stops the run: this rank
   exits, and under mpirun that ends the job (dist.h), never a hang. */
static const Clip *entry_pixels(TrainSet *ts, Entry *e) {
    e->last_use = ++ts->uses;
    if (e->c.px) return &e->c;
    double need = 12.0 * e->T * e->H * e->W; /* 3 channels of 4-byte floats */
    while (ts->limit > 0 && ts->bytes + need > ts->limit) { /* room: drop the least recently used */
        Entry *lru = NULL;
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < (k ? ts->n_images : ts->n_clips); j++) {
                Entry *x = k ? &ts->images[j] : &ts->clips[j];
                if (x->c.px && (!lru || x->last_use < lru->last_use)) lru = x;
            }
        if (!lru) break; /* nothing left to drop: e alone is above the limit, and is kept while it is used */
        ts->bytes -= 12.0 * lru->T * lru->H * lru->W;
        clip_free(&lru->c);
    }
    char why[1200];
    Clip c;
    if (media_load(e->path, e->max_frames, &c) != 0) snprintf(why, sizeof why, "%s", ivae_error());
    else if (c.T != e->T || c.H != e->H || c.W != e->W) {
        snprintf(why, sizeof why, "%s: decodes to %dx%dx%d, but its header said %dx%dx%d at the start (was it changed "
                 "while training?)", e->path, c.T, c.H, c.W, e->T, e->H, e->W);
        clip_free(&c);
    } else if (ts->jpeg_quality) { /* the JPEG lesson: the model only ever sees the degraded data */
        Clip q;
        if (clip_jpeg(&c, ts->jpeg_quality, &q) != 0) die("--jpeg-quality: %s", ivae_error());
        clip_free(&c);
        c = q;
        why[0] = 0;
    } else
        why[0] = 0;
    if (why[0]) {
        char who[32] = "";
        if (dist_size() > 1) snprintf(who, sizeof who, " (rank %d)", dist_rank());
        if (g_last_ckpt[0])
            die("train: %s%s; the last checkpoint %s is intact: fix or remove the file and continue with --resume it",
                why, who, g_last_ckpt);
        die("train: %s%s; no checkpoint was written yet", why, who);
    }
    e->c = c;
    e->decodes++;
    ts->bytes += need;
    return &e->c;
}

static int rand_int(IvaeRng *r, int n) { return (int)(ivae_rng_uniform(r) * n); }

/* a random T x crop x crop window of e, mirrored left-right half the time
   (dst NULL: only the draws, which need e's shape alone, for a sample
   another rank crops; nothing is decoded) */
static void random_crop(real *dst, TrainSet *ts, Entry *e, int T, int crop, IvaeRng *r) {
    int t0 = rand_int(r, e->T - T + 1), y0 = rand_int(r, e->H - crop + 1), x0 = rand_int(r, e->W - crop + 1);
    int flip = rand_int(r, 2);
    if (!dst) return;
    const Clip *src = entry_pixels(ts, e);
    for (int c = 0; c < 3; c++)
        for (int t = 0; t < T; t++)
            for (int y = 0; y < crop; y++) {
                const float *row = src->px + (((size_t)c * src->T + t0 + t) * src->H + y0 + y) * src->W + x0;
                real *out = dst + (((size_t)c * T + t) * crop + y) * crop;
                for (int x = 0; x < crop; x++) out[x] = row[flip ? crop - 1 - x : x];
            }
}

/* ------------------------------------------------------------------------ */
/* the training state: everything a checkpoint must hold */

typedef struct {
    long step, total_steps;     /* steps done; the schedule's length */
    IvaeRng rng;                /* batches and noise */
    double lr_scale;            /* lowered by the spike guard */
    double loss_hist[HIST], gnorm_hist[HIST], act_hist[HIST];
    int n_hist;
} TrainState;

/* median of the n most recent entries of a ring buffer */
static double median(const double *h, int n) {
    double v[HIST];
    int k = n < HIST ? n : HIST;
    if (k == 0) return 0;
    memcpy(v, h, k * sizeof(double));
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
}

/* The history is kept at float precision, as the checkpoint stores it: the
   clipping threshold derives from it, so a resumed run must see the very
   same values (with doubles here, a resume diverged in the last bits). */
static void hist_push(TrainState *s, double loss, double gnorm, double act) {
    int j = s->n_hist % HIST;
    s->loss_hist[j] = (real)loss, s->gnorm_hist[j] = (real)gnorm, s->act_hist[j] = (real)act;
    s->n_hist++;
}

/* the learning rate of step s (0-based): linear warmup, then cosine decay to min_frac */
static double lr_at(const Opts *o, const TrainState *s) {
    double lr = o->lr * s->lr_scale;
    if (s->step < o->warmup) return lr * (double)(s->step + 1) / o->warmup;
    double span = (double)(s->total_steps - o->warmup), p = span > 0 ? (s->step - o->warmup) / span : 1;
    if (p > 1) p = 1;
    return lr * (o->min_lr_frac + (1 - o->min_lr_frac) * 0.5 * (1 + cos(M_PI * p)));
}

/* the good state the spike guard rolls back to */
typedef struct {
    real *params, *m, *v;
    TrainState st;
    int valid;
} Backup;

static void backup_take(Backup *b, const IvaeModel *m, const TrainState *s) {
    size_t n = m->n_params * sizeof(real);
    if (!b->params) b->params = xcalloc(1, n), b->m = xcalloc(1, n), b->v = xcalloc(1, n);
    memcpy(b->params, m->params, n);
    if (m->adam_m) memcpy(b->m, m->adam_m, n), memcpy(b->v, m->adam_v, n);
    else memset(b->m, 0, n), memset(b->v, 0, n);
    b->st = *s;
    b->valid = 1;
}

static void backup_restore(const Backup *b, IvaeModel *m, TrainState *s) {
    size_t n = m->n_params * sizeof(real);
    memcpy(m->params, b->params, n);
    if (m->adam_m) memcpy(m->adam_m, b->m, n), memcpy(m->adam_v, b->v, n);
    double scale = s->lr_scale;
    IvaeRng rng = s->rng;
    *s = b->st;
    s->lr_scale = scale; /* the lowered rate survives the rollback, */
    s->rng = rng;        /* and the batches after it are new ones    */
    m->step = s->step;
}

/* Ctrl-C (or SIGTERM) ends a run cleanly: training goes on to the next
   refresh of the good state (at most --guard-every steps), where the state is
   exactly what a checkpoint can hold; then the checkpoint, the weights, the
   held-out numbers and the curve are written as at a normal end, and --resume
   continues bit for bit. A second Ctrl-C kills at once (the last checkpoint on
   disk stays good). */
static volatile sig_atomic_t interrupted = 0; /* 1: signalled, 2: and said so */
static void on_signal(int sig) {
    interrupted = 1;
    signal(sig, SIG_DFL);
}

/* ------------------------------------------------------------------------ */
/* checkpoints: the model's tensors, optim.m.* and optim.v.*, and the state */

static void save_checkpoint(const char *path, IvaeModel *m, const TrainState *s, const Opts *o) {
    int n = m->n_tensors;
    IvaeStEntry *e = xcalloc(3 * n + 3, sizeof *e);
    char (*names)[128] = xcalloc(2 * n, sizeof *names);
    for (int j = 0; j < n; j++) {
        const IvaeParamInfo *p = &m->info[j];
        for (int k = 0; k < 3; k++) {
            IvaeStEntry *x = &e[k * n + j];
            if (k) snprintf(names[(k - 1) * n + j], 128, "optim.%s.%s", k == 1 ? "m" : "v", p->name);
            x->name = k ? names[(k - 1) * n + j] : p->name;
            x->ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) x->shape[d] = p->shape[d];
            x->data = (k == 0 ? m->params : k == 1 ? m->adam_m : m->adam_v) + p->offset;
        }
    }
    real hist[3][HIST];
    for (int j = 0; j < HIST; j++)
        hist[0][j] = (real)s->loss_hist[j], hist[1][j] = (real)s->gnorm_hist[j], hist[2][j] = (real)s->act_hist[j];
    const char *hn[3] = {"optim.hist.loss", "optim.hist.gnorm", "optim.hist.act"};
    for (int k = 0; k < 3; k++) e[3 * n + k] = (IvaeStEntry){.name = hn[k], .ndim = 1, .shape = {HIST}, .data = hist[k]};
    /* metadata: the config (as ivae_save writes it) plus the state */
    char step[32], total[32], rng[32], scale[40], nh[16];
    snprintf(step, sizeof step, "%ld", s->step), snprintf(total, sizeof total, "%ld", s->total_steps);
    snprintf(rng, sizeof rng, "%llu", (unsigned long long)s->rng.s), snprintf(scale, sizeof scale, "%.17g", s->lr_scale);
    snprintf(nh, sizeof nh, "%d", s->n_hist);
    IvaeMetaBuf mb;
    const char *meta[2 * (IVAE_CONFIG_META + 5 + OPT_KEYS)];
    int nm = ivae_config_meta(&m->cfg, &mb, meta);
    const char *state[10] = {"step", step, "total_steps", total, "rng", rng, "lr_scale", scale, "n_hist", nh};
    memcpy(meta + 2 * nm, state, sizeof state);
    nm += 5;
    /* the recipe, so that --resume continues with the same one */
    char vals[OPT_KEYS][48];
    for (int k = 0; k < OPT_KEYS; k++) {
        opt_value(o, k, vals[k], sizeof vals[k]);
        meta[2 * nm] = OPT_META[k], meta[2 * nm + 1] = vals[k], nm++;
    }
    if (ivae_st_write(path, e, 3 * n + 3, meta, nm) != 0) die("%s", ivae_error());
    free(e), free(names);
}

/* a count in the checkpoint's metadata, in [0, hi] (util.h parse_int) */
static long meta_long(const IvaeSt *st, const char *key, long hi) {
    const char *v = ivae_st_meta(st, key);
    long long x;
    if (!v) die("%s: not a training checkpoint (no '%s' in its metadata)", st->path, key);
    if (parse_int(v, 0, hi, &x) != 0) die("%s: metadata '%s' = '%s' is not a count in [0, %ld]", st->path, key, v, hi);
    return (long)x;
}

static void load_checkpoint(const char *path, IvaeModel **pm, TrainState *s) {
    IvaeModel *m = ivae_load(path);
    if (!m) die("%s", ivae_error());
    IvaeSt *st = ivae_st_open(path);
    if (!st) die("%s", ivae_error());
    /* every number range-checked: a step or history count that does not fit
       the schedule, or a rate scale that is not a number in (0, 1], is a
       corrupt checkpoint, not something to train on */
    s->step = meta_long(st, "step", INT_MAX / 2);
    s->total_steps = meta_long(st, "total_steps", INT_MAX / 2);
    s->n_hist = (int)meta_long(st, "n_hist", INT_MAX / 2);
    if (s->total_steps && s->step > s->total_steps)
        die("%s: metadata 'step' = %ld is past 'total_steps' = %ld (corrupt checkpoint)", path, s->step, s->total_steps);
    const char *rng = ivae_st_meta(st, "rng"), *scale = ivae_st_meta(st, "lr_scale");
    if (!rng || !scale) die("%s: not a training checkpoint (no rng or lr_scale)", path);
    unsigned long long r64;
    if (parse_u64(rng, &r64) != 0) die("%s: metadata 'rng' = '%s' is not a 64-bit RNG state", path, rng);
    s->rng.s = r64;
    if (parse_real(scale, DBL_MIN, 1, &s->lr_scale) != 0)
        die("%s: metadata 'lr_scale' = '%s' is not a learning-rate scale in (0, 1]", path, scale);
    m->adam_m = xcalloc(m->n_params, sizeof(real));
    m->adam_v = xcalloc(m->n_params, sizeof(real));
    m->step = s->step;
    for (int j = 0; j < m->n_tensors; j++) {
        const IvaeParamInfo *p = &m->info[j];
        char name[160];
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "optim.%s.%s", k ? "v" : "m", p->name);
            const IvaeStTensor *t = ivae_st_find(st, name);
            if (!t || t->numel != p->numel) die("%s: optimizer state '%s' is missing or has the wrong size", path, name);
            if (ivae_st_read(st, t, (k ? m->adam_v : m->adam_m) + p->offset) != 0) die("%s", ivae_error());
        }
    }
    const char *hn[3] = {"optim.hist.loss", "optim.hist.gnorm", "optim.hist.act"};
    double *hd[3] = {s->loss_hist, s->gnorm_hist, s->act_hist};
    for (int k = 0; k < 3; k++) {
        const IvaeStTensor *t = ivae_st_find(st, hn[k]);
        real tmp[HIST];
        if (!t || t->numel != HIST || ivae_st_read(st, t, tmp) != 0) die("%s: guard history '%s' is missing or bad", path, hn[k]);
        for (int j = 0; j < HIST; j++) hd[k][j] = tmp[j];
    }
    ivae_st_close(st);
    *pm = m;
}

/* ------------------------------------------------------------------------ */
/* gradient clipping */

/* The step runs on the CPU (t->cm == NULL) or on the OpenCL device, where
   the weights, moments, gradients and activations stay; only the batch goes
   in, and the loss, the per-unit squared norms and per-pixel activation norms
   come out (ivae_cl_model.h). The CPU computes the very same numbers, so in
   strict mode both runs are the same, bit for bit. */
typedef struct {
    IvaeModel *m;
    IvaeCl *cl;
    IvaeClModel *cm;
    IvaeUnit *units;  /* what the clipping measures (ivae.h) */
    int n_units;
    double *gsq, *wsq;
    real *fac;
    IvaeSplit split;  /* with N > 1 ranks: this rank's samples and the exchange (dist.h) */
} Trainer;

static void t_check(Trainer *t, int rc) {
    if (rc == 0) return;
    if (!t->cm) die("train: %s", ivae_error());
    /* the device failed mid-run: its state is lost, the checkpoint on disk
       (written before, through a rename) is not */
    if (g_last_ckpt[0])
        die("train --device cl: %s; the last checkpoint %s is intact: continue with --resume it "
            "(add --device cpu to train on the CPU)", ivae_error(), g_last_ckpt);
    die("train --device cl: %s; no checkpoint was written yet", ivae_error());
}

/* With N > 1 ranks each computes its block of the batch and the exchange
   gives every rank the batch's gradient and loss (SPEC 8.2): the bits of
   one process. */
static void t_grad(Trainer *t, IvaeSample *batch, int B, const IvaeLossOpts *opts, IvaeLoss *L) {
    IvaeSplit *sp = dist_size() > 1 ? &t->split : NULL;
    if (!t->cm) {
        ivae_zero_grad(t->m);
        t_check(t, sp ? ivae_batch_grad_split(t->m, batch, B, opts, sp, L) : ivae_batch_grad(t->m, batch, B, opts, L));
    } else {
        t_check(t, ivae_cl_zero_grad(t->cm));
        t_check(t, sp ? ivae_cl_batch_grad_split(t->cm, batch, B, opts, sp, L) : ivae_cl_batch_grad(t->cm, batch, B, opts, L));
    }
}

/* the statistics of the batch's last sample, from the rank that ran it */
static int t_stats(Trainer *t, IvaeActStat *st, int max, int B) {
    int n = t->cm ? ivae_cl_activation_stats(t->cm, st, max) : ivae_activation_stats(t->m, st, max);
    if (n < 0) t_check(t, -1);
    if (dist_size() > 1) {
        double v[3 * 256];
        for (int j = 0; j < n && j < 256; j++) v[3 * j] = st[j].rms, v[3 * j + 1] = st[j].max_norm, v[3 * j + 2] = st[j].median_norm;
        dist_bcast(v, sizeof v, dist_owner(B - 1));
        for (int j = 0; j < n && j < 256; j++) st[j].rms = v[3 * j], st[j].max_norm = v[3 * j + 1], st[j].median_norm = v[3 * j + 2];
    }
    return n;
}

/* squared norm of each unit of the gradients (grads = 1) or the weights */
static void t_sumsq(Trainer *t, int grads, double *out) {
    if (t->cm) t_check(t, ivae_cl_measure_units(t->cm, grads, out));
    else ivae_unit_sumsq(out, grads ? t->m->grads : t->m->params, t->units, t->n_units);
}

static void t_scale(Trainer *t) {
    if (t->cm) t_check(t, ivae_cl_scale_grads(t->cm, t->fac));
    else ivae_unit_scale(t->m->grads, t->units, t->n_units, t->fac);
}

static void t_adamw(Trainer *t, const IvaeAdamW *h) {
    if (t->cm) t_check(t, ivae_cl_adamw_step(t->cm, h));
    else ivae_adamw_step(t->m, h);
}

/* device -> host (weights and moments into t->m), before a backup or a checkpoint */
static void t_pull(Trainer *t) {
    if (t->cm) t_check(t, ivae_cl_get_state(t->cm, t->m));
}

/* host -> device, after a rollback */
static void t_push(Trainer *t) {
    if (t->cm) t_check(t, ivae_cl_set_state(t->cm, t->m));
}

/* the global norm of the gradient: the units' squared norms added in order */
static double norm_of(const Trainer *t) {
    double s = 0;
    for (int u = 0; u < t->n_units; u++) s += t->gsq[u];
    return sqrt(s);
}

/* adaptive clipping (NFNets): for each output unit o of a conv weight,
   |g_o| <= agc * max(|w_o|, 1e-3). Expects t->gsq of the current gradient;
   returns how many units were clipped (and then refreshes t->gsq). */
static int clip_adaptive(Trainer *t, double agc) {
    int clipped = 0;
    t_sumsq(t, 0, t->wsq);
    for (int u = 0; u < t->n_units; u++) {
        t->fac[u] = 1;
        if (!t->units[u].conv) continue;
        double wn = sqrt(t->wsq[u]) > 1e-3 ? sqrt(t->wsq[u]) : 1e-3, gn = sqrt(t->gsq[u]);
        if (gn > agc * wn) t->fac[u] = (real)(agc * wn / gn), clipped++;
    }
    if (clipped) t_scale(t), t_sumsq(t, 1, t->gsq);
    return clipped;
}

/* the whole gradient times f */
static void clip_global(Trainer *t, real f) {
    for (int u = 0; u < t->n_units; u++) t->fac[u] = f;
    t_scale(t);
}

/* ------------------------------------------------------------------------ */
/* evaluation on the held-out split */

/* the held-out numbers: PSNR and SSIM of images and of clips; with a JPEG
   quality, PSNR against the held-out frames' JPEG versions too (the JPEG
   lesson: did the model learn the picture or the artefacts?); the latent's
   statistics (what a diffusion model would be handed) and the splotch ratio */
typedef struct {
    double psnr_img, ssim_img, psnr_vid, ssim_vid;
    double psnr_img_jpeg, psnr_vid_jpeg;   /* NaN without --jpeg-quality */
    double z_std_mean, z_std_min, z_std_max; /* per-channel std of mu over every held-out latent */
    double z_hf;          /* share of mu's energy (each frame and channel, its mean removed) above half the
                             Nyquist frequency: max(|fy|, |fx|) > 1/4 cycle per latent pixel */
    double z_outliers;    /* share of latent positions with ||mu - m|| > 3 ||sd|| (SPEC 4's outlier test) */
    double splotch;       /* max over blocks of (largest / median per-pixel output norm), one held-out sample */
    const char *splotch_block;
    double frame_min;     /* the lowest PSNR of any held-out clip frame, */
    int frame_min_clip, frame_min_t; /* in that clip, at that frame (0-based) */
} Eval;

/* center crop of size x size, the first 1 + 4k frames up to max_frames */
static void eval_crop(const Clip *src, int size, int max_frames, int ft, Clip *out) {
    Clip tmp;
    int T = src->T < max_frames ? src->T : max_frames;
    T = (T - 1) / ft * ft + 1;
    int s = size < src->H ? size : src->H;
    if (s > src->W) s = src->W;
    s = s / 8 * 8;
    if (clip_crop(src, (src->H - s) / 2, (src->W - s) / 2, s, s, 0, T, &tmp) != 0) die("%s", ivae_error());
    *out = tmp;
}

/* the latent statistics, summed over the held-out samples */
typedef struct {
    double *sum, *sumsq;  /* (z) per channel */
    double n;             /* positions per channel */
    double e_hf, e_all;   /* energies above half Nyquist, and in all */
    double outliers, positions;
} LatStats;

/* adds mu (z, T, H, W) to the statistics */
static void latent_stats_add(LatStats *ls, const real *mu, int Z, int T, int H, int W) {
    size_t HW = (size_t)H * W;
    double *sd = xcalloc((size_t)Z, sizeof(double)), *m = xcalloc((size_t)Z, sizeof(double));
    for (int t = 0; t < T; t++) {
        for (int c = 0; c < Z; c++) {
            const real *f = mu + ((size_t)c * T + t) * HW;
            double s = 0, s2 = 0;
            for (size_t p = 0; p < HW; p++) s += f[p], s2 += (double)f[p] * f[p];
            ls->sum[c] += s, ls->sumsq[c] += s2;
            m[c] = s / HW, sd[c] = sqrt(fmax(s2 / HW - m[c] * m[c], 0));
            /* the 2-D DFT of the frame minus its mean, by its definition */
            for (int ky = 0; ky < H; ky++)
                for (int kx = 0; kx < W; kx++) {
                    double re = 0, im = 0;
                    for (int y = 0; y < H; y++)
                        for (int x = 0; x < W; x++) {
                            double a = -6.283185307179586 * ((double)ky * y / H + (double)kx * x / W);
                            re += (f[y * W + x] - m[c]) * cos(a), im += (f[y * W + x] - m[c]) * sin(a);
                        }
                    double e = re * re + im * im, fy = (double)(ky < H - ky ? ky : H - ky) / H,
                           fx = (double)(kx < W - kx ? kx : W - kx) / W;
                    ls->e_all += e;
                    if (fy > 0.25 || fx > 0.25) ls->e_hf += e;
                }
        }
        double sdn = 0;
        for (int c = 0; c < Z; c++) sdn += sd[c] * sd[c];
        sdn = sqrt(sdn);
        for (size_t p = 0; p < HW; p++) {
            double d = 0;
            for (int c = 0; c < Z; c++) {
                double v = mu[((size_t)c * T + t) * HW + p] - m[c];
                d += v * v;
            }
            ls->outliers += sqrt(d) > 3 * sdn;
        }
        ls->positions += HW;
    }
    ls->n += (double)T * HW;
    free(sd), free(m);
}

/* in (3, T, H, W) through the model; SPEC 9 static images as 5 copies, of
   which the reconstruction keeps frame 0. mu is added to ls. */
static void reconstruct(IvaeModel *m, IvaeClModel *cm, const Clip *in, Clip *out, LatStats *ls) {
    int Tz, Hz, Wz;
    Clip feed = *in;
    if (in->T == 1 && m->cfg.image_mode == IVAE_IMAGE_STATIC) {
        if (clip_alloc(&feed, IVAE_STATIC_FRAMES, in->H, in->W) != 0) die("%s", ivae_error());
        ivae_static_expand(feed.px, in->px, in->H, in->W);
    }
    if (ivae_latent_shape(&m->cfg, feed.T, feed.H, feed.W, &Tz, &Hz, &Wz) != 0) die("%s", ivae_error());
    real *mu = xcalloc((size_t)m->cfg.z_ch * Tz * Hz * Wz, sizeof(real));
    Clip rec;
    if (clip_alloc(&rec, feed.T, feed.H, feed.W) != 0) die("%s", ivae_error());
    int rc = cm ? ivae_cl_encode(cm, feed.px, feed.T, feed.H, feed.W, mu) || ivae_cl_decode(cm, mu, Tz, Hz, Wz, rec.px)
                : ivae_encode(m, feed.px, feed.T, feed.H, feed.W, mu) || ivae_decode(m, mu, Tz, Hz, Wz, rec.px);
    if (rc) die("%s", ivae_error());
    if (ls) latent_stats_add(ls, mu, m->cfg.z_ch, Tz, Hz, Wz);
    free(mu);
    if (feed.px != in->px) { /* frame 0 of the static clip */
        if (clip_crop(&rec, 0, 0, in->H, in->W, 0, 1, out) != 0) die("%s", ivae_error());
        clip_free(&rec), clip_free(&feed);
    } else {
        *out = rec;
    }
}

/* the splotch ratio of one held-out sample: its forward pass (z = mu) block
   by block, the largest per-pixel channel norm over the median */
static void eval_splotch(IvaeModel *m, IvaeClModel *cm, const Clip *in, Eval *e) {
    Clip feed = *in;
    if (in->T == 1 && m->cfg.image_mode == IVAE_IMAGE_STATIC) {
        if (clip_alloc(&feed, IVAE_STATIC_FRAMES, in->H, in->W) != 0) die("%s", ivae_error());
        ivae_static_expand(feed.px, in->px, in->H, in->W);
    }
    int Tz, Hz, Wz;
    if (ivae_latent_shape(&m->cfg, feed.T, feed.H, feed.W, &Tz, &Hz, &Wz) != 0) die("%s", ivae_error());
    real *eps = xcalloc((size_t)m->cfg.z_ch * Tz * Hz * Wz, sizeof(real));
    IvaeSample s = {.x = feed.px, .T = feed.T, .H = feed.H, .W = feed.W, .eps = eps};
    IvaeLossOpts lo;
    ivae_loss_defaults(&lo);
    lo.loss_norm = m->cfg.loss_norm;
    IvaeLoss L;
    static IvaeActStat st[256];
    int n, rc = cm ? ivae_cl_zero_grad(cm) || ivae_cl_batch_grad(cm, &s, 1, &lo, &L) : (ivae_zero_grad(m), ivae_batch_grad(m, &s, 1, &lo, &L));
    if (rc || (n = cm ? ivae_cl_activation_stats(cm, st, 256) : ivae_activation_stats(m, st, 256)) < 0) die("%s", ivae_error());
    e->splotch = 0, e->splotch_block = "";
    for (int j = 0; j < n; j++) {
        double ratio = st[j].max_norm / st[j].median_norm;
        if (ratio > e->splotch || ratio != ratio) e->splotch = ratio, e->splotch_block = st[j].name;
    }
    free(eps);
    if (feed.px != in->px) clip_free(&feed);
}

/* held-out PSNR and SSIM, the latent's statistics, the splotch ratio; on the
   device if cm is not NULL; pictures of the first few to png_dir */
static Eval evaluate(IvaeModel *m, IvaeClModel *cm, const Dataset *ev, const Opts *o, const char *png_dir) {
    Eval e = {0};
    int ft = ivae_time_factor(&m->cfg), Z = m->cfg.z_ch;
    LatStats ls = {xcalloc((size_t)Z, sizeof(double)), xcalloc((size_t)Z, sizeof(double)), 0, 0, 0, 0, 0};
    e.frame_min = INFINITY, e.frame_min_clip = e.frame_min_t = -1;
    FILE *fcsv = NULL; /* png_dir/frames.csv: every held-out clip frame's PSNR */
    char path[1200];
    if (png_dir) {
        snprintf(path, sizeof path, "%s/frames.csv", png_dir);
        if (!(fcsv = fopen(path, "w"))) die("%s: cannot write: %s", path, strerror(errno));
        fputs("clip,frame,psnr\n", fcsv);
    }
    for (int kind = 0; kind < 2; kind++) {
        int n = kind ? ev->n_clips : ev->n_images;
        double ps = 0, ss = 0, pj = 0;
        for (int j = 0; j < n; j++) {
            Clip in, rec;
            eval_crop(kind ? &ev->clips[j] : &ev->images[j], o->eval_size, o->eval_frames, ft, &in);
            reconstruct(m, cm, &in, &rec, &ls);
            ps += clip_psnr(&in, &rec), ss += clip_ssim(&in, &rec);
            for (int t = 0; kind && t < in.T; t++) { /* frame by frame: the causal model's later frames */
                Clip a, b;
                if (clip_crop(&in, 0, 0, in.H, in.W, t, 1, &a) != 0 || clip_crop(&rec, 0, 0, in.H, in.W, t, 1, &b) != 0)
                    die("%s", ivae_error());
                double p = clip_psnr(&a, &b);
                if (p < e.frame_min) e.frame_min = p, e.frame_min_clip = j, e.frame_min_t = t;
                if (fcsv) fprintf(fcsv, "%s,%d,%.4f\n", ev->clip_names[j], t + 1, p);
                clip_free(&a), clip_free(&b);
            }
            if (o->eval_jpeg) {
                Clip jq;
                if (clip_jpeg(&in, o->eval_jpeg, &jq) != 0) die("%s", ivae_error());
                pj += clip_psnr(&jq, &rec);
                clip_free(&jq);
            }
            if (png_dir && j < 4) {
                snprintf(path, sizeof path, "%s/heldout_%s_%d.png", png_dir, kind ? "clip" : "image", j);
                if (save_side_by_side(path, &in, &rec, in.T / 2, 4) != 0) die("%s", ivae_error());
                if (kind) { /* a contact sheet: every frame, the original above the reconstruction */
                    const Clip *cells[2 * 64];
                    int fr[2 * 64], T = in.T < 64 ? in.T : 64;
                    for (int t = 0; t < T; t++) cells[t] = &in, cells[T + t] = &rec, fr[t] = fr[T + t] = t;
                    snprintf(path, sizeof path, "%s/contact_clip_%d.png", png_dir, j);
                    if (save_grid(path, 2, T, cells, fr, NULL, 1) != 0) die("%s", ivae_error());
                }
                /* the shown frame alone, original and reconstruction (for `ivae lessons`' grids) */
                for (int w = 0; w < 2; w++) {
                    Clip f;
                    snprintf(path, sizeof path, "%s/heldout_%s_%d.%s.png", png_dir, kind ? "clip" : "image", j, w ? "recon" : "orig");
                    if (clip_crop(w ? &rec : &in, 0, 0, in.H, in.W, in.T / 2, 1, &f) != 0 || media_save(path, &f) != 0)
                        die("%s", ivae_error());
                    clip_free(&f);
                }
            }
            clip_free(&in), clip_free(&rec);
        }
        double pjm = n && o->eval_jpeg ? pj / n : NAN;
        if (kind) e.psnr_vid = n ? ps / n : NAN, e.ssim_vid = n ? ss / n : NAN, e.psnr_vid_jpeg = pjm;
        else e.psnr_img = n ? ps / n : NAN, e.ssim_img = n ? ss / n : NAN, e.psnr_img_jpeg = pjm;
    }
    if (fcsv && fclose(fcsv) != 0) die("%s: cannot write: %s", path, strerror(errno));
    e.z_std_min = INFINITY, e.z_std_max = 0, e.z_std_mean = 0;
    for (int c = 0; c < Z; c++) {
        double mean = ls.sum[c] / ls.n, sd = sqrt(fmax(ls.sumsq[c] / ls.n - mean * mean, 0));
        e.z_std_mean += sd / Z;
        if (sd < e.z_std_min) e.z_std_min = sd;
        if (sd > e.z_std_max) e.z_std_max = sd;
    }
    e.z_hf = ls.e_all > 0 ? ls.e_hf / ls.e_all : NAN;
    e.z_outliers = ls.positions > 0 ? ls.outliers / ls.positions : NAN;
    free(ls.sum), free(ls.sumsq);
    if (ev->n_clips || ev->n_images) {
        Clip in;
        eval_crop(ev->n_clips ? &ev->clips[0] : &ev->images[0], o->eval_size, o->eval_frames, ft, &in);
        eval_splotch(m, cm, &in, &e);
        clip_free(&in);
    }
    return e;
}

/* OUT/metrics.csv: the held-out numbers as one header line and one row */
static void write_metrics(const char *out_dir, const Eval *e) {
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.csv", out_dir);
    FILE *f = fopen(path, "w");
    if (!f) die("%s: cannot write: %s", path, strerror(errno));
    fprintf(f, "psnr_image,ssim_image,psnr_video,ssim_video,psnr_image_vs_jpeg,psnr_video_vs_jpeg,z_std_mean,z_std_min,"
               "z_std_max,z_hf_share,z_outlier_share,splotch,splotch_block,psnr_frame_min\n");
    fprintf(f, "%.4f,%.5f,%.4f,%.5f,%.4f,%.4f,%.5g,%.5g,%.5g,%.5g,%.5g,%.5g,%s,%.4f\n", e->psnr_img, e->ssim_img, e->psnr_vid,
            e->ssim_vid, e->psnr_img_jpeg, e->psnr_vid_jpeg, e->z_std_mean, e->z_std_min, e->z_std_max, e->z_hf,
            e->z_outliers, e->splotch, e->splotch_block, e->frame_min);
    if (fclose(f) != 0) die("%s: cannot write: %s", path, strerror(errno));
}

/* ------------------------------------------------------------------------ */
/* the run: setup, one step, its log, teardown */

static void fmt_time(char *buf, size_t n, double s) {
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

/* the loss and rec of every step taken, for loss.png */
typedef struct {
    double *step, *loss, *rec;
    int n, cap;
} Curve;

static void curve_push(Curve *c, double step, double loss, double rec) {
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->step = xrealloc(c->step, c->cap, sizeof(double)), c->loss = xrealloc(c->loss, c->cap, sizeof(double));
        c->rec = xrealloc(c->rec, c->cap, sizeof(double));
    }
    c->step[c->n] = step, c->loss[c->n] = loss, c->rec[c->n] = rec, c->n++;
}

static void plot_loss(const char *out_dir, const Curve *c) {
    if (c->n < 2) return;
    char path[1200];
    snprintf(path, sizeof path, "%s/loss.png", out_dir);
    const char *names[2] = {"loss L", "rec (L1)"};
    const double *xs[2] = {c->step, c->step}, *ys[2] = {c->loss, c->rec};
    int lens[2] = {c->n, c->n};
    if (plot_curves(path, "training loss", "step", "loss (log scale)", 2, names, xs, ys, lens, 1) != 0)
        fprintf(stderr, "ivae: warning: %s\n", ivae_error());
}

/* everything a training run works on, from setup to teardown */
typedef struct {
    Opts o;
    IvaeModel *m;
    TrainState s;       /* what the checkpoint holds besides the model */
    Trainer t;          /* the step, on the CPU or on the device */
    IvaeAdamW adam;
    Backup backup;      /* the good state the guards roll back to */
    TrainSet tr;        /* the training split: shapes, pixels decoded on demand */
    Dataset ev;         /* the held-out split, decoded (rank 0's alone) */
    IvaeSample *batch;  /* B samples: o.n_clips clips, then o.n_images images */
    int B;
    FILE *csv, *ecsv;   /* log.csv, eval.csv */
    Curve curve;
    double t_start, t_loop, budget; /* when the run and its loop began; --minutes in seconds */
    long step0;                     /* s.step when this process began */
    long skipped, rollbacks, spike_skips;
    int nan_run; /* consecutive non-finite steps */
    int spikes;  /* consecutive spikes */
    int stuck;   /* rollbacks since the good state was last refreshed */
    int stepped; /* the last iteration took a step (not a skip or a rollback) */
    char why[512]; /* why the run cannot recover, when it cannot */
    /* the last batch, for the log */
    IvaeLoss L;
    double gnorm, max_act; /* |g| before clipping; the largest per-pixel activation norm */
    double lr;             /* the step's learning rate (0: no step) */
    int agc_clipped, global_clipped;
    const char *event; /* the last column of log.csv */
    IvaeActStat stats[256];
    int n_stats;
    double rec_img, rec_vid, splotch; /* the batch's mean rec_i of images and of clips; max over blocks of
                                         (largest / median per-pixel activation norm) */
    int static_images;               /* SPEC 9 image_mode static */
    real *img;                       /* (3, crop, crop): an image crop before it becomes a static clip */
} Run;

/* --- setup --- */

/* a loaded model (from the file src: --resume or --init) keeps its
   architecture (the block and attention norms); the image mode and the loss
   normalisation may change, with a note */
static void keep_variants(Run *r, const char *src) {
    const Opts *o = &r->o;
    int *have[4] = {&r->m->cfg.block_norm, &r->m->cfg.attn_norm, &r->m->cfg.image_mode, &r->m->cfg.loss_norm};
    for (int k = 0; k < 4; k++) {
        if (o->variant[k] < 0 || o->variant[k] == *have[k]) continue;
        if (k < 2) die("%s %s: %s's model has %s %s (a run from it keeps its architecture)", VARIANT_FLAG[k],
                       ivae_variant_name(VARIANT_KIND[k], o->variant[k]), src, VARIANT_KIND[k],
                       ivae_variant_name(VARIANT_KIND[k], *have[k]));
        fprintf(stderr, "ivae: note: %s %s replaces %s's %s\n", VARIANT_FLAG[k],
                ivae_variant_name(VARIANT_KIND[k], o->variant[k]), src, ivae_variant_name(VARIANT_KIND[k], *have[k]));
        *have[k] = o->variant[k];
    }
}

/* the model: a fresh one of --config, or the one of --resume with its state */
static void setup_model(Run *r) {
    const Opts *o = &r->o;
    TrainState *s = &r->s;
    if (o->resume) {
        load_checkpoint(o->resume, &r->m, s);
        snprintf(g_last_ckpt, sizeof g_last_ckpt, "%s (step %ld)", o->resume, s->step);
        if (o->steps && o->steps != s->total_steps)
            fprintf(stderr, "ivae: note: --steps %ld replaces the checkpoint's schedule of %ld steps\n", o->steps, s->total_steps);
        if (o->steps) s->total_steps = o->steps;
        keep_variants(r, o->resume);
    } else if (o->init) { /* a fine-tune: the weights of a model, everything else fresh (below) */
        if (!(r->m = ivae_load(o->init))) die("train --init: %s", ivae_error());
        keep_variants(r, o->init);
    } else {
        IvaeConfig cfg;
        if (ivae_config_preset(o->config, &cfg) != 0) die("%s", ivae_error());
        int *want[4] = {&cfg.block_norm, &cfg.attn_norm, &cfg.image_mode, &cfg.loss_norm};
        for (int k = 0; k < 4; k++)
            if (o->variant[k] >= 0) *want[k] = o->variant[k];
        r->m = ivae_model_new(&cfg);
        if (!r->m) die("train: %s", ivae_error());
        ivae_init_params(r->m, o->seed);
    }
    if (!o->resume) { /* a fresh run's state: step 0, the batches' RNG, the full rate */
        s->rng.s = o->seed * 0x9E3779B97F4A7C15ull + 1;
        s->lr_scale = 1;
        s->total_steps = o->steps; /* 0: set from the time budget after a few steps */
    }
    r->o.loss.loss_norm = r->m->cfg.loss_norm; /* SPEC 9: recorded in the model */
    int ft = ivae_time_factor(&r->m->cfg), fs = ivae_space_factor(&r->m->cfg);
    if ((o->clip_frames - 1) % ft) die("--clip-frames %d: clips need 1 + %d*k frames", o->clip_frames, ft);
    if (o->crop % fs) die("--crop %d: must be a multiple of %d", o->crop, fs);
}

/* the training and held-out splits, checked against the batch's shapes */
static void setup_data(Run *r) {
    const Opts *o = &r->o;
    TrainSet *tr = &r->tr;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/train", o->data);
    struct stat sb;
    if (stat(dir, &sb) != 0) die("%s: no training data (expected %s/train/clips and %s/train/images)", o->data, o->data, o->data);
    probe_train(tr, o->data, o->clip_frames);
    tr->limit = o->cache_mb * 1048576.0, tr->jpeg_quality = o->jpeg_quality;
    if (dist_rank() == 0) load_split(&r->ev, o->data, "eval", 1); /* rank 0 alone evaluates */
    else memset(&r->ev, 0, sizeof r->ev);
    if (o->n_clips && !tr->n_clips) die("%s: no training clip has %d frames (use --clips 0 or fewer --clip-frames)", dir, o->clip_frames);
    if (o->n_images && !tr->n_images) die("%s/images: no training images (use --images 0)", dir);
    for (int j = 0; j < tr->n_clips; j++)
        if (tr->clips[j].H < o->crop || tr->clips[j].W < o->crop) die("training clip %d is smaller than --crop %d", j, o->crop);
    for (int j = 0; j < tr->n_images; j++)
        if (tr->images[j].H < o->crop || tr->images[j].W < o->crop) die("training image %d is smaller than --crop %d", j, o->crop);
    if (o->jpeg_quality) printf("training data re-encoded as JPEG, quality %d\n", o->jpeg_quality); /* as each file is decoded */
}

/* FNV-1a over n bytes, continuing from h */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    for (size_t j = 0; j < n; j++) h = (h ^ ((const unsigned char *)p)[j]) * 0x100000001b3ull;
    return h;
}

/* With N > 1 ranks, every rank must start from the same state: the same
   parameters and moments, RNG, recipe and training data (the data's shapes
   steer the RNG's draws). A rank that differs (another --resume file, other
   flags, another copy of the data) stops the job instead of drifting apart. */
static void check_ranks_agree(Run *r) {
    if (dist_size() == 1) return;
    const IvaeModel *m = r->m;
    uint64_t h[2] = {0xcbf29ce484222325ull, 0xcbf29ce484222325ull}; /* the state; the data */
    h[0] = fnv(h[0], m->params, m->n_params * sizeof(real));
    if (m->adam_m) h[0] = fnv(fnv(h[0], m->adam_m, m->n_params * sizeof(real)), m->adam_v, m->n_params * sizeof(real));
    h[0] = fnv(fnv(fnv(h[0], &r->s.rng, sizeof r->s.rng), &r->s.step, sizeof r->s.step), &r->s.total_steps, sizeof r->s.total_steps);
    for (int k = 0; k < OPT_KEYS; k++) {
        char v[48];
        opt_value(&r->o, k, v, sizeof v);
        h[0] = fnv(h[0], v, strlen(v) + 1);
    }
    for (int kind = 0; kind < 2; kind++) {
        int n = kind ? r->tr.n_images : r->tr.n_clips;
        const Entry *c = kind ? r->tr.images : r->tr.clips;
        h[1] = fnv(h[1], &n, sizeof n);
        for (int j = 0; j < n; j++) h[1] = fnv(fnv(fnv(h[1], &c[j].T, sizeof(int)), &c[j].H, sizeof(int)), &c[j].W, sizeof(int));
    }
    uint64_t h0[2] = {h[0], h[1]};
    dist_bcast(h0, sizeof h0, 0);
    if (h0[0] != h[0])
        die("train: rank %d does not start where rank 0 does (other parameters, optimizer state or options: every rank "
            "needs the same command line and --resume file)", dist_rank());
    if (h0[1] != h[1])
        die("train: rank %d's training data (%s/train: %d clips, %d images) is not rank 0's (every rank needs the same "
            "files)", dist_rank(), r->o.data, r->tr.n_clips, r->tr.n_images);
}

/* the batch buffers (allocated once), AdamW, the trainer (on the device with
   --device cl) and the first good state */
static void setup_trainer(Run *r) {
    const Opts *o = &r->o;
    IvaeModel *m = r->m;
    r->B = o->n_clips + o->n_images;
    r->batch = xcalloc(r->B, sizeof *r->batch);
    r->static_images = m->cfg.image_mode == IVAE_IMAGE_STATIC;
    r->img = xcalloc((size_t)3 * o->crop * o->crop, sizeof(real));
    for (int i = 0; i < r->B; i++) {
        int T = i < o->n_clips ? o->clip_frames : r->static_images ? IVAE_STATIC_FRAMES : 1, Tz, Hz, Wz;
        ivae_latent_shape(&m->cfg, T, o->crop, o->crop, &Tz, &Hz, &Wz);
        r->batch[i].T = T, r->batch[i].H = o->crop, r->batch[i].W = o->crop;
        r->batch[i].x = xcalloc((size_t)3 * T * o->crop * o->crop, sizeof(real));
        r->batch[i].eps = xcalloc((size_t)m->cfg.z_ch * Tz * Hz * Wz, sizeof(real));
    }
    ivae_adamw_defaults(&r->adam);
    r->adam.weight_decay = (real)o->weight_decay;
    Trainer *t = &r->t;
    t->m = m;
    t->n_units = ivae_units(m, NULL);
    t->units = xcalloc(t->n_units, sizeof *t->units);
    ivae_units(m, t->units);
    t->gsq = xcalloc(t->n_units, sizeof(double)), t->wsq = xcalloc(t->n_units, sizeof(double));
    t->fac = xcalloc(t->n_units, sizeof(real));
    double *cost = xcalloc(r->B, sizeof(double)); /* a sample's pixels: what its passes cost, roughly */
    for (int i = 0; i < r->B; i++) cost[i] = (double)r->batch[i].T * r->batch[i].H * r->batch[i].W;
    if (dist_plan(cost, r->B) != 0) die("train: %s", ivae_error());
    free(cost);
    if (dist_size() > 1) {
        IvaeSplit *sp = &t->split;
        dist_block(dist_rank(), &sp->i0, &sp->i1);
        int n_g = sp->i0 == 0 ? 1 : sp->i1 - sp->i0; /* rank 0 folds its block in place */
        sp->g = xcalloc(n_g, sizeof(real *));
        for (int k = 0; k < n_g; k++) sp->g[k] = xcalloc(m->n_params, sizeof(real));
        sp->total = xcalloc(m->n_params, sizeof(real));
        sp->per = xcalloc(r->B, sizeof(IvaeLoss));
        sp->exchange = dist_exchange;
        printf("data parallel: %d ranks (%s); samples of the batch per rank:", dist_size(), dist_describe());
        for (int k = 0; k < dist_size(); k++) {
            int i0, i1;
            dist_block(k, &i0, &i1);
            printf(" %d", i1 - i0);
        }
        printf("\n");
        /* one rank per device, unless IVAE_CL_DEVICE names one */
        int nd;
        if (o->cl && !getenv("IVAE_CL_DEVICE") && (nd = ivae_cl_device_count()) > 1) {
            char v[16];
            snprintf(v, sizeof v, "%d", dist_rank() % nd);
            setenv("IVAE_CL_DEVICE", v, 1);
        }
    }
    if (o->cl) {
        if (!(t->cl = ivae_cl_new())) die("train --device cl: %s", ivae_error());
        if (!(t->cm = ivae_cl_model_new(t->cl, m, o->cl_fast))) die("train --device cl: %s", ivae_error());
        printf("device: OpenCL (%s kernels), %s\n", o->cl_fast ? "fast" : "strict", ivae_cl_describe(t->cl));
    }
    check_ranks_agree(r);
    backup_take(&r->backup, m, &r->s);
}

/* On --resume, a log may run ahead of the checkpoint: the run that wrote it
   was killed (or its disk filled) after steps it logged but did not
   checkpoint, and the resumed run takes those steps again. The log is cut
   back to its header and the rows of steps <= step (a partial last line
   goes too), through a temporary file and a rename, so that no step is
   logged twice. */
static void csv_cut(const char *path, long step) {
    FILE *f = fopen(path, "rb");
    if (!f) return; /* a new log */
    char tmp[1300], line[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *g = fopen(tmp, "wb");
    if (!g) die("%s: cannot write: %s", tmp, strerror(errno));
    long dropped = 0;
    for (int first = 1; fgets(line, sizeof line, f); first = 0) {
        size_t len = strlen(line);
        char num[32];
        size_t nd = strcspn(line, ",\n");
        long long v = -1;
        if (nd < sizeof num) memcpy(num, line, nd), num[nd] = 0, parse_int(num, 0, LLONG_MAX, &v);
        int whole = len > 0 && line[len - 1] == '\n';
        if (whole && ((first && v < 0) || (v >= 0 && v <= step))) fputs(line, g);
        else dropped++;
    }
    fclose(f);
    if (fclose(g) != 0 || rename(tmp, path) != 0) {
        remove(tmp);
        die("%s: cannot rewrite: %s", path, strerror(errno));
    }
    if (dropped) printf("%s: dropped %ld row%s past the checkpoint's step %ld\n", path, dropped, dropped == 1 ? "" : "s", step);
}

/* OUT/name, opened to write (to append on --resume, cut back to the
   checkpoint's step) with its header line if new; /dev/null on ranks other
   than 0 */
static FILE *open_csv(const Opts *o, const char *name, const char *header, long step) {
    char path[1200];
    if (dist_rank() > 0) return fopen("/dev/null", "w");
    snprintf(path, sizeof path, "%s/%s", o->out, name);
    if (o->resume) csv_cut(path, step);
    FILE *f = fopen(path, o->resume ? "a" : "w");
    if (!f) die("%s: cannot write: %s", path, strerror(errno));
    if (!o->resume || ftell(f) == 0) fputs(header, f);
    return f;
}

static void run_setup(Run *r, int argc, char **argv) {
    memset(r, 0, sizeof *r);
    argv = with_resume_recipe(&argc, argv);
    parse_opts(&r->o, argc, argv);
    const Opts *o = &r->o;
    if (o->n_clips + o->n_images < dist_size())
        die("train: %d ranks but %d samples per batch (each rank needs one at least: more --images or --clips, or fewer ranks)",
            dist_size(), o->n_clips + o->n_images);
    setup_model(r);
    setup_data(r);
    if (dist_rank() == 0) mkdir_p(o->out);
    printf("ivae train: %s (%zu parameters), %d clips + %d images for training, %d + %d held out; out %s\n",
           o->resume ? o->resume : o->init ? o->init : o->config, r->m->n_params, r->tr.n_clips, r->tr.n_images, r->ev.n_clips, r->ev.n_images,
           o->out);
    printf("batch: %d clip%s of %dx%dx%d + %d image%s of %dx%d; lr %.2g, warmup %ld, agc %g, clip %gx median, spike guard %gx\n",
           o->n_clips, o->n_clips == 1 ? "" : "s", o->clip_frames, o->crop, o->crop, o->n_images, o->n_images == 1 ? "" : "s",
           o->crop, o->crop, o->lr, o->warmup, o->agc, o->clip_factor, o->spike_factor);
    setup_trainer(r);
    r->csv = open_csv(o, "log.csv", "step,seconds,loss,rec,kl,opl,grad_norm,lr,agc_clipped,global_clipped,max_act_norm,event,"
                                    "rec_image,rec_video,splotch\n", r->s.step);
    r->ecsv = open_csv(o, "eval.csv", "step,psnr_image,ssim_image,psnr_video,ssim_video,psnr_image_vs_jpeg,psnr_video_vs_jpeg,"
                                      "z_std_mean,z_hf_share,z_outlier_share,splotch\n", r->s.step);
    r->t_start = now_s(), r->budget = o->minutes * 60, r->t_loop = now_s();
    r->step0 = r->s.step;
    r->stepped = 1;
    if (signal(SIGINT, on_signal) == SIG_IGN) signal(SIGINT, SIG_IGN); /* a background job keeps ignoring it */
    signal(SIGTERM, on_signal);
}

/* --- one step --- */

/* what one pass of the loop did */
typedef enum {
    STEP_OK,          /* a step was taken */
    STEP_SKIPPED,     /* a loss spike or a non-finite value: the batch is dropped */
    STEP_ROLLED_BACK, /* back to the good state, at half the learning rate */
    STEP_STOPPED,     /* no step, the loop ends: the schedule is done, a signal came
                         (and this is a good state), or the run cannot recover (r->why) */
} StepResult;

/* the loop ends before this step: after a signal at the next good state
   (where the checkpoint holds everything), or at the end of the schedule */
static int stop_here(Run *r) {
    const Opts *o = &r->o;
    const TrainState *s = &r->s;
    if (interrupted == 1) {
        printf("interrupted: finishing to the next good state (a multiple of --guard-every %d); Ctrl-C again kills\n",
               o->guard_every);
        fflush(stdout);
        interrupted = 2;
    }
    if (interrupted && r->stepped && s->step % o->guard_every == 0) {
        printf("interrupted: stopping at step %ld, writing the checkpoint and the model (--resume continues the schedule)\n",
               s->step);
        return 1;
    }
    if (s->total_steps && s->step >= s->total_steps) return 1;
    if (o->stop_after && s->step >= o->stop_after) return 1;
    if (o->steps || o->resume) return 0;
    /* a time budget: once fix_schedule has turned it into steps, the schedule
       ends the run, and the clock only 20% past the budget (steps that got
       slower than the first five: a busier machine, files decoded late) */
    double limit = s->total_steps ? 1.2 * r->budget : r->budget;
    if (now_s() - r->t_start <= limit) return 0;
    if (s->total_steps)
        printf("time budget: stopping at step %ld of the schedule's %ld, 20%% past --minutes %g (the steps got slower)\n",
               s->step, s->total_steps, o->minutes);
    return 1;
}

/* every rank stops where rank 0 does (its clock and its signals decide) */
static int stop_all(Run *r) {
    int stop = stop_here(r);
    dist_bcast(&stop, sizeof stop, 0);
    return stop;
}

/* a fresh batch: random crops of the training clips and images, and the noise */
static void draw_batch(Run *r) {
    const Opts *o = &r->o;
    const IvaeConfig *cfg = &r->m->cfg;
    IvaeRng *rng = &r->s.rng;
    int i0, i1; /* this rank's samples: it crops those, and only draws the others' numbers */
    dist_block(dist_rank(), &i0, &i1);
    for (int i = 0; i < r->B; i++) {
        IvaeSample *b = &r->batch[i];
        real *x = i >= i0 && i < i1 ? (real *)b->x : NULL;
        TrainSet *ts = &r->tr;
        if (i < o->n_clips) random_crop(x, ts, &ts->clips[rand_int(rng, ts->n_clips)], o->clip_frames, o->crop, rng);
        else if (!r->static_images) random_crop(x, ts, &ts->images[rand_int(rng, ts->n_images)], 1, o->crop, rng);
        else { /* SPEC 9: the image fed as a clip of 5 copies */
            random_crop(x ? r->img : NULL, ts, &ts->images[rand_int(rng, ts->n_images)], 1, o->crop, rng);
            if (x) ivae_static_expand(x, r->img, o->crop, o->crop);
        }
        int Tz, Hz, Wz;
        ivae_latent_shape(cfg, b->T, b->H, b->W, &Tz, &Hz, &Wz);
        size_t nz = (size_t)cfg->z_ch * Tz * Hz * Wz;
        for (size_t j = 0; j < nz; j++) ((real *)b->eps)[j] = (real)ivae_rng_normal(rng);
    }
}

/* one row of log.csv: the last batch's numbers under the step's number */
static void log_row(Run *r, long step) {
    const IvaeLoss *L = &r->L;
    fprintf(r->csv, "%ld,%.3f,%.9g,%.9g,%.9g,%.9g,%.9g,%.6g,%d,%d,%.6g,%s,%.9g,%.9g,%.4g\n", step, now_s() - r->t_start, L->loss,
            L->rec, L->kl, L->opl, r->gnorm, r->lr, r->agc_clipped, r->global_clipped, r->max_act, r->event, r->rec_img,
            r->rec_vid, r->splotch);
}

/* A run that keeps failing from the same good state cannot recover: each
   rollback halves the rate, and after the fifth (rate x1/32) going on would
   only loop. Then the run stops with the reason; the last checkpoint on disk
   stays good. */
enum { MAX_ROLLBACKS = 5 };

/* back to the good state at half the rate; -1 (and r->why) if that was the
   MAX_ROLLBACKS-th time since the good state was last refreshed */
static int rollback(Run *r, const char *why) {
    TrainState *s = &r->s;
    backup_restore(&r->backup, r->m, s);
    t_push(&r->t);
    s->lr_scale *= 0.5;
    r->rollbacks++;
    if (++r->stuck < MAX_ROLLBACKS) return 0;
    snprintf(r->why, sizeof r->why,
             "train: %s: rolled back %d times to step %ld without getting %d steps past it (learning rates down to x%.3g "
             "tried): the run cannot recover; lower --lr%s",
             why, r->stuck, s->step, r->o.guard_every, 2 * s->lr_scale, strcmp(why, "loss spikes") ? "" : " or raise --spike-factor");
    return -1;
}

/* the NaN guard: a non-finite loss or gradient skips the step and names
   where the NaN or inf appeared; more than 20 in a row roll back */
static StepResult skip_nonfinite(Run *r) {
    TrainState *s = &r->s;
    printf("step %ld: non-finite value at %s: step skipped\n", s->step + 1, r->L.nonfinite[0] ? r->L.nonfinite : "the loss");
    r->lr = 0, r->agc_clipped = 0, r->global_clipped = 0, r->event = "nan_skip";
    log_row(r, s->step + 1);
    r->skipped++;
    if (++r->nan_run <= 20 || !r->backup.valid) return STEP_SKIPPED;
    if (rollback(r, "non-finite steps") != 0) return STEP_STOPPED;
    printf("step %ld: too many non-finite steps: rolled back to step %ld, learning rate x%.3g\n", s->step, s->step, s->lr_scale);
    r->nan_run = 0;
    return STEP_ROLLED_BACK;
}

/* The spike guard: loss or activations far above their recent medians.
   One hard batch is normal: its step is skipped. Three in a row is a run
   going bad: roll back to the good state and halve the rate. */
static StepResult skip_spike(Run *r, double med_loss, double med_act) {
    TrainState *s = &r->s;
    long from = s->step + 1;
    StepResult what = STEP_SKIPPED;
    if (++r->spikes >= 3) {
        if (rollback(r, "loss spikes") != 0) return STEP_STOPPED;
        r->spikes = 0;
        what = STEP_ROLLED_BACK;
        printf("step %ld: 3 spikes in a row (loss %.4g vs median %.4g, max activation norm %.4g vs %.4g): rolled back to step %ld, learning rate x%.3g\n",
               from, r->L.loss, med_loss, r->max_act, med_act, s->step, s->lr_scale);
    } else {
        r->spike_skips++;
        printf("step %ld: spike (loss %.4g vs median %.4g, max activation norm %.4g vs %.4g): step skipped\n", from, r->L.loss,
               med_loss, r->max_act, med_act);
    }
    r->lr = 0, r->agc_clipped = 0, r->global_clipped = 0, r->event = what == STEP_ROLLED_BACK ? "rollback" : "spike_skip";
    log_row(r, from);
    return what;
}

/* clipping (adaptive per unit, then global against the recent median), then AdamW */
static void take_step(Run *r) {
    const Opts *o = &r->o;
    TrainState *s = &r->s;
    r->agc_clipped = o->agc > 0 ? clip_adaptive(&r->t, o->agc) : 0, r->global_clipped = 0, r->event = "";
    double gn2 = norm_of(&r->t), med_g = median(s->gnorm_hist, s->n_hist);
    if (o->clip_factor > 0 && s->n_hist >= 16 && gn2 > o->clip_factor * med_g) {
        clip_global(&r->t, (real)(o->clip_factor * med_g / gn2));
        r->global_clipped = 1, r->event = "clipped";
    }
    r->lr = lr_at(o, s);
    r->adam.lr = (real)r->lr;
    t_adamw(&r->t, &r->adam);
    s->step++;
    r->stepped = 1;
    hist_push(s, r->L.loss, gn2, r->max_act);
    if (s->step % o->guard_every == 0) t_pull(&r->t), backup_take(&r->backup, r->m, s), r->stuck = 0; /* ckpt_every is a multiple */
}

/* a time budget becomes a step count after a few steps, so the schedule is fixed */
static void fix_schedule(Run *r) {
    TrainState *s = &r->s;
    if (s->total_steps || s->step - r->step0 != 5) return;
    double per = (now_s() - r->t_loop) / 5;
    s->total_steps = s->step + (long)((r->budget - (now_s() - r->t_start)) / per);
    if (s->total_steps < s->step + 1) s->total_steps = s->step + 1;
    dist_bcast(&s->total_steps, sizeof s->total_steps, 0); /* rank 0's clock */
    printf("time budget %.1f min: %.2f s/step, schedule set to %ld steps\n", r->o.minutes, per, s->total_steps);
}

/* One pass of the loop: a batch, its loss and gradient, the guards, the step. */
static StepResult train_step(Run *r) {
    const Opts *o = &r->o;
    const TrainState *s = &r->s;
    if (stop_all(r)) return STEP_STOPPED;
    r->stepped = 0;
    draw_batch(r);
    t_grad(&r->t, r->batch, r->B, &o->loss, &r->L);
    r->n_stats = t_stats(&r->t, r->stats, 256, r->B);
    r->max_act = 0, r->splotch = 0;
    for (int j = 0; j < r->n_stats; j++) {
        if (r->stats[j].max_norm > r->max_act || r->stats[j].max_norm != r->stats[j].max_norm) r->max_act = r->stats[j].max_norm;
        double ratio = r->stats[j].max_norm / r->stats[j].median_norm;
        if (ratio > r->splotch || ratio != ratio) r->splotch = ratio;
    }
    /* the loss of each modality (a static image counts as an image here) */
    double sum[2] = {0, 0};
    for (int i = 0; i < r->B; i++) sum[i >= o->n_clips] += r->batch[i].rec;
    r->rec_vid = o->n_clips ? sum[0] / o->n_clips : NAN, r->rec_img = o->n_images ? sum[1] / o->n_images : NAN;
    t_sumsq(&r->t, 1, r->t.gsq);
    r->gnorm = norm_of(&r->t);
    if (r->L.nonfinite[0] || !isfinite(r->L.loss) || !isfinite(r->gnorm)) return skip_nonfinite(r);
    int warm = s->n_hist >= 16 && o->spike_factor > 0;
    double med_loss = median(s->loss_hist, s->n_hist), med_act = median(s->act_hist, s->n_hist);
    if (warm && (r->L.loss > o->spike_factor * med_loss || r->max_act > 4 * o->spike_factor * med_act))
        return skip_spike(r, med_loss, med_act);
    r->spikes = 0, r->nan_run = 0;
    take_step(r);
    fix_schedule(r);
    return STEP_OK;
}

/* --- the log --- */

/* a step taken: its row of log.csv and its point of the curve; a status line
   every --log-every steps, the activation norms every --log-norms */
static void log_step(Run *r) {
    const Opts *o = &r->o;
    const TrainState *s = &r->s;
    log_row(r, s->step);
    curve_push(&r->curve, (double)s->step, r->L.loss, r->L.rec);
    if (s->step % o->log_every == 0 || s->step == s->total_steps) {
        double el = now_s() - r->t_loop, rate = (s->step - r->step0) * r->B / el;
        char eta[32], elapsed[32];
        fmt_time(elapsed, sizeof elapsed, now_s() - r->t_start);
        fmt_time(eta, sizeof eta, s->total_steps ? (s->total_steps - s->step) * el / (s->step - r->step0) : 0);
        printf("step %6ld/%ld  loss %.5f  rec %.5f  kl %.4g  |g| %.3g  lr %.2e  %.2f samples/s  %s elapsed, %s left\n", s->step,
               s->total_steps, r->L.loss, r->L.rec, r->L.kl, r->gnorm, r->lr, rate, elapsed, eta);
        fflush(stdout);
        fflush(r->csv);
    }
    if (o->log_norms && s->step % o->log_norms == 0) {
        printf("activation norms at step %ld (last sample of the batch): layer, RMS, max per-pixel norm\n", s->step);
        for (int j = 0; j < r->n_stats; j++) printf("  %-28s %10.4g %10.4g\n", r->stats[j].name, r->stats[j].rms, r->stats[j].max_norm);
    }
}

/* held-out PSNR and SSIM (and pictures, to png_dir if not NULL); a row of eval.csv */
static Eval eval_row(Run *r, const char *png_dir) {
    Eval e = evaluate(r->m, r->t.cm, &r->ev, &r->o, png_dir);
    fprintf(r->ecsv, "%ld,%.4f,%.5f,%.4f,%.5f,%.4f,%.4f,%.5g,%.5g,%.5g,%.5g\n", r->s.step, e.psnr_img, e.ssim_img, e.psnr_vid,
            e.ssim_vid, e.psnr_img_jpeg, e.psnr_vid_jpeg, e.z_std_mean, e.z_hf, e.z_outliers, e.splotch);
    fflush(r->ecsv);
    return e;
}

/* the held-out numbers during the run (those of the end come with its pictures) */
static void log_eval(Run *r) {
    Eval e = eval_row(r, NULL);
    printf("eval at step %ld: images PSNR %.2f dB SSIM %.4f | clips PSNR %.2f dB SSIM %.4f | latent std %.3g, splotch %.3g\n",
           r->s.step, e.psnr_img, e.ssim_img, e.psnr_vid, e.ssim_vid, e.z_std_mean, e.splotch);
}

/* OUT/ckpt.safetensors: the weights and moments on the host (t_pull) and the state */
static void save_run(Run *r) {
    char path[1200];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", r->o.out);
    save_checkpoint(path, r->m, &r->s, &r->o);
    snprintf(g_last_ckpt, sizeof g_last_ckpt, "%s (step %ld)", path, r->s.step);
}

/* --- teardown --- */

/* the end: checkpoint, weights, held-out numbers and pictures, the curve */
static void run_finish(Run *r) {
    const Opts *o = &r->o;
    if (dist_rank() > 0) return; /* rank 0 writes and evaluates */
    t_pull(&r->t);
    save_run(r);
    char path[1200];
    snprintf(path, sizeof path, "%s/model.safetensors", o->out);
    if (ivae_save(r->m, path) != 0) die("%s", ivae_error());
    Eval e = eval_row(r, o->out);
    write_metrics(o->out, &e);
    plot_loss(o->out, &r->curve);
    /* OUT/summary.csv: how the run went (for `ivae lessons`) */
    snprintf(path, sizeof path, "%s/summary.csv", o->out);
    FILE *f = fopen(path, "w");
    if (!f) die("%s: cannot write: %s", path, strerror(errno));
    double secs = now_s() - r->t_loop;
    fprintf(f, "steps,seconds,steps_per_s,rollbacks,spike_skips,nonfinite_skips,loss,rec_image,rec_video,splotch_train\n");
    fprintf(f, "%ld,%.1f,%.4g,%ld,%ld,%ld,%.6g,%.6g,%.6g,%.4g\n", r->s.step, secs, (r->s.step - r->step0) / secs, r->rollbacks,
            r->spike_skips, r->skipped, r->L.loss, r->rec_img, r->rec_vid, r->splotch);
    if (fclose(f) != 0) die("%s: cannot write: %s", path, strerror(errno));
    char elapsed[32];
    fmt_time(elapsed, sizeof elapsed, now_s() - r->t_start);
    printf("done: %ld steps in %s (%ld rollbacks, %ld spike steps skipped, %ld non-finite steps skipped)\n", r->s.step, elapsed,
           r->rollbacks, r->spike_skips, r->skipped);
    printf("held-out (%dx%d crops): images PSNR %.2f dB SSIM %.4f | clips PSNR %.2f dB SSIM %.4f\n", o->eval_size, o->eval_size,
           e.psnr_img, e.ssim_img, e.psnr_vid, e.ssim_vid);
    printf("latent: per-channel std %.3g (%.3g .. %.3g), %.3g of its energy above half Nyquist, %.3g of positions outliers; "
           "splotch ratio %.3g (%s)\n", e.z_std_mean, e.z_std_min, e.z_std_max, e.z_hf, e.z_outliers, e.splotch, e.splotch_block);
    printf("wrote %s/model.safetensors, ckpt.safetensors, log.csv, eval.csv, metrics.csv, summary.csv, loss.png, heldout_*.png, contact_clip_*.png\n", o->out);
}

static void run_free(Run *r) {
    fclose(r->csv), fclose(r->ecsv);
    for (int i = 0; i < r->B; i++) free((void *)r->batch[i].x), free((void *)r->batch[i].eps);
    free(r->batch), free(r->img), free(r->curve.step), free(r->curve.loss), free(r->curve.rec);
    free(r->backup.params), free(r->backup.m), free(r->backup.v);
    free(r->t.units), free(r->t.gsq), free(r->t.wsq), free(r->t.fac);
    if (r->t.cm) ivae_cl_model_free(r->t.cm), ivae_cl_free(r->t.cl);
    if (r->t.split.g)
        for (int k = 0; k < (r->t.split.i0 == 0 ? 1 : r->t.split.i1 - r->t.split.i0); k++) free(r->t.split.g[k]);
    free(r->t.split.g), free(r->t.split.total), free(r->t.split.per);
    free_train(&r->tr), free_split(&r->ev);
    ivae_model_free(r->m);
    if (g_recipe_argv) { /* the --resume recipe (with_resume_recipe) */
        for (int k = 0; k < g_recipe_n; k++) free(g_recipe_argv[k]);
        free(g_recipe_argv);
        g_recipe = NULL, g_recipe_argv = NULL, g_recipe_n = 0;
    }
}

/* how many training files each rank decoded (every rank calls it; rank 0
   prints): under mpirun each decodes only those its samples came from */
static void report_decoded(Run *r) {
    int n = r->tr.n_clips + r->tr.n_images, mine[2], got[2], again = 0;
    train_decoded(&r->tr, &mine[0], &mine[1]);
    printf("data:");
    for (int k = 0; k < dist_size(); k++) {
        memcpy(got, mine, sizeof got);
        dist_bcast(got, sizeof got, k);
        if (dist_size() == 1) printf(" decoded %d of %d training files", got[0], n);
        else printf("%s rank %d decoded %d of %d training files", k ? "," : "", k, got[0], n);
        if (got[1] > got[0]) printf(" (%d decodes)", got[1]), again = 1;
    }
    if (again) printf("; the cache (--data-cache-mb %ld) dropped files that were drawn again", r->o.cache_mb);
    printf("\n");
}

int train_main(int argc, char **argv) {
    Run r;
    dist_init(); /* under mpirun: one of N ranks (dist.h); rank 0 alone prints and writes */
    if (dist_rank() > 0 && !freopen("/dev/null", "w", stdout)) die("cannot silence rank %d's output", dist_rank());
    run_setup(&r, argc, argv);
    for (;;) {
        StepResult what = train_step(&r);
        if (what == STEP_STOPPED) break;
        if (what != STEP_OK) continue; /* a skip or a rollback: said and logged where it happened */
        log_step(&r);
        if (dist_rank() > 0) continue; /* rank 0 evaluates and writes */
        if (r.o.eval_every && r.s.step % r.o.eval_every == 0 && r.s.step != r.s.total_steps) log_eval(&r);
        if (r.s.step % r.o.ckpt_every == 0) save_run(&r);
    }
    dist_report(stdout, now_s() - r.t_loop);
    report_decoded(&r);
    if (r.why[0]) { /* the run cannot recover: stop with the reason */
        fflush(r.csv), fflush(stdout);
        die("%s", r.why);
    }
    run_finish(&r);
    run_free(&r);
    dist_finish();
    return 0;
}

/* ------------------------------------------------------------------------ */
/* ivae eval: a trained model on the held-out split */

static const char *EVAL_HELP =
    "usage: ivae eval MODEL [--data DIR] [--out DIR] [--size N] [--frames N]\n"
    "\n"
    "Reconstructs the held-out images and clips of DIR/eval (centre crops of\n"
    "N x N, clips cut to at most --frames frames, 1 + 4k) and prints PSNR and\n"
    "SSIM, separately for images and clips; writes side-by-side PNGs\n"
    "(original | reconstruction | error) of the first few to OUT.\n"
    "\n"
    "  --data DIR     dataset folder (default data)\n"
    "  --out DIR      where the pictures go (default runs/eval)\n"
    "  --size N       crop size (default 64)\n"
    "  --frames N     most frames per clip (default 17)\n"
    "  --jpeg-quality Q  also the PSNR against the held-out frames re-encoded as JPEG of\n"
    "                 quality Q (the JPEG lesson: the picture, or its artefacts?)\n"
    "Writes OUT/metrics.csv: the numbers above, the latent's statistics (per-channel\n"
    "std, the share of its energy above half the Nyquist frequency, the share of\n"
    "outlier positions), the splotch ratio (largest over median per-pixel norm) and the\n"
    "lowest PSNR of any clip frame; OUT/frames.csv: every held-out clip frame's PSNR.\n";

int eval_main(int argc, char **argv) {
    Opts o;
    const char *model = NULL;
    parse_opts(&o, 0, NULL);
    o.out = "runs/eval";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(EVAL_HELP, stdout);
            return 0;
        } else if (!strcmp(a, "--data") && i + 1 < argc) o.data = argv[++i];
        else if (!strcmp(a, "--out") && i + 1 < argc) o.out = argv[++i];
        else if ((!strcmp(a, "--size") || !strcmp(a, "--frames")) && i + 1 < argc) {
            long long v;
            i++;
            if (parse_int(argv[i], 1, MAX_SIDE, &v) != 0) die("%s: '%s' is not an integer in [1, %d]", a, argv[i], MAX_SIDE);
            if (a[2] == 's') o.eval_size = (int)v;
            else o.eval_frames = (int)v;
        } else if (!strcmp(a, "--jpeg-quality") && i + 1 < argc) {
            long long v;
            i++;
            if (parse_int(argv[i], 1, 100, &v) != 0) die("%s: '%s' is not a quality 1..100", a, argv[i]);
            o.eval_jpeg = (int)v;
        } else if (a[0] == '-') die("eval: unknown option or missing value: %s (see ivae eval --help)", a);
        else if (!model) model = a;
        else die("eval: one model expected, got '%s' too", a);
    }
    if (!model) die("eval: no model given (usage: ivae eval MODEL [--data DIR] [--out DIR])");
    IvaeModel *m = ivae_load(model);
    if (!m) die("%s", ivae_error());
    Dataset ev;
    load_split(&ev, o.data, "eval", 1);
    if (ev.n_clips + ev.n_images == 0) die("%s/eval: no held-out clips or images", o.data);
    mkdir_p(o.out);
    double t0 = now_s();
    Eval e = evaluate(m, NULL, &ev, &o, o.out);
    printf("%s on %s/eval (%d clips, %d images, %dx%d crops, %.1f s):\n", model, o.data, ev.n_clips, ev.n_images,
           o.eval_size, o.eval_size, now_s() - t0);
    printf("  images PSNR %.2f dB  SSIM %.4f\n  clips  PSNR %.2f dB  SSIM %.4f\n", e.psnr_img, e.ssim_img, e.psnr_vid,
           e.ssim_vid);
    if (o.eval_jpeg)
        printf("  against the JPEG (quality %d) versions: images PSNR %.2f dB, clips %.2f dB\n", o.eval_jpeg,
               e.psnr_img_jpeg, e.psnr_vid_jpeg);
    printf("  latent: per-channel std %.3g (%.3g .. %.3g), energy above half Nyquist %.3g, outlier positions %.3g\n",
           e.z_std_mean, e.z_std_min, e.z_std_max, e.z_hf, e.z_outliers);
    if (ev.n_clips)
        printf("  clip frames: the lowest PSNR %.2f dB (%s, frame %d); every frame's: %s/frames.csv\n", e.frame_min,
               ev.clip_names[e.frame_min_clip], e.frame_min_t + 1, o.out);
    printf("  splotch ratio (largest / median per-pixel norm, worst block) %.3g at %s\n", e.splotch, e.splotch_block);
    write_metrics(o.out, &e);
    printf("side-by-side pictures (original | reconstruction | error): %s/heldout_*.png; every frame of a clip: contact_clip_*.png\n", o.out);
    free_split(&ev);
    ivae_model_free(m);
    return 0;
}

