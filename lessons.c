/*
 * lessons.c: `ivae lessons`, the seed's lessons as experiments a student can
 * re-run (SPEC 9; LESSONS.md reports one run of it).
 *
 * Each lesson turns one decision of the default recipe back into the one
 * Linum started from (or sweeps it): its arms differ from the default in
 * that flag only, train from the same seeds on the same data for the same
 * budget, and are evaluated on the same held-out frames. The default recipe
 * is an arm of every lesson, so it runs once per seed and is shared.
 *
 * Every run is `ivae train` in a child process (its output in the run's
 * train.log), which writes the run's metrics.csv (held-out numbers) and
 * summary.csv (steps, guards, per-modality loss); a run whose files exist
 * with the same recipe is reused, so an interrupted `ivae lessons` goes on
 * where it stopped. Then lessons.csv (one row per arm and seed),
 * lessons.md (per lesson: the arms side by side, mean and spread over the
 * seeds) and one picture grid per lesson (the same held-out frames, one
 * column per arm, then the error maps).
 *
 * The parent process never runs the model itself: OpenMP's thread pool does
 * not survive fork(), so all numerical work happens in the children.
 */
#include "ivae.h"
#include "media.h"
#include "train.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* the lessons */

typedef struct {
    const char *label; /* the arm's column heading */
    const char *flags; /* train flags that differ from the default recipe ("" = the default) */
} Arm;

typedef struct {
    const char *name, *title;
    const char *seed_says; /* what Linum reported */
    int n_arms;
    Arm arms[3];
} Lesson;

static const Lesson LESSONS[] = {
    {"loss", "Loss normalisation: sum vs mean vs reference shape",
     "summing the loss lets the large video tensors drown out the images; the mean over-amplifies small tensors; "
     "normalising by a fixed reference shape with explicit modality weights fixed it",
     3, {{"sum", "--loss-norm sum"}, {"mean", "--loss-norm mean"}, {"ref (default)", ""}}},
    {"images", "Images: 5-frame static videos vs one-frame causal clips",
     "padding images into static videos failed; with causal convolutions an image is a one-frame video",
     2, {{"static", "--image-mode static"}, {"causal (default)", ""}}},
    {"blocks", "Residual blocks: GroupNorm vs SMC",
     "GroupNorm let outlier channels take over (splotches); SMC in the residual blocks removed them",
     2, {{"groupnorm", "--block-norm groupnorm"}, {"smc (default)", ""}}},
    {"attention", "Attention input: GroupNorm vs PixelNorm vs none",
     "GroupNorm inside attention made splotches too; PixelNorm replaced it", 3,
     {{"groupnorm", "--attn-norm groupnorm"}, {"pixelnorm (default)", ""}, {"none", "--attn-norm none"}}},
    {"opl", "The outlier penalty (Movie Gen) off vs on",
     "latent outliers (positions far from their frame's mean) are what Movie Gen's penalty targets", 2,
     {{"off (default)", ""}, {"on (w_opl 1)", "--w-opl 1"}}},
    {"jpeg", "JPEG-degraded training data vs clean",
     "a VAE that reproduces JPEG noise has learned noise: better reconstruction did not mean better generation", 2,
     {{"clean (default)", ""}, {"JPEG q30", "--jpeg-quality 30"}}},
    {"beta", "The KL weight beta",
     "the latent a diffusion model is handed matters as much as the reconstruction", 3,
     {{"1e-6 (default)", ""}, {"1e-4", "--beta 1e-4"}, {"1e-2", "--beta 1e-2"}}},
};
enum { N_LESSONS = sizeof LESSONS / sizeof LESSONS[0] };

/* ------------------------------------------------------------------------ */
/* options */

typedef struct {
    const char *data, *out, *config, *only;
    double minutes;
    long steps;
    int seeds, crop, clips, images, eval_size, eval_frames, eval_jpeg, fresh;
    long warmup;
    int seed0; /* the first seed */
} LOpts;

static const char *LESSONS_HELP =
    "usage: ivae lessons [options]\n"
    "\n"
    "Runs the seed's lessons as paired experiments (SPEC 9, LESSONS.md): for each\n"
    "lesson, arms that differ from the default recipe in one decision, trained from\n"
    "the same seeds on the same data for the same budget and evaluated on the same\n"
    "held-out frames. Writes OUT/lessons.md, OUT/lessons.csv and OUT/lesson_NAME.png\n"
    "(the held-out frames, one column per arm, then the error maps); each run's\n"
    "files are under OUT/runs/. The lessons: loss (sum, mean, ref), images (static,\n"
    "causal), blocks (groupnorm, smc), attention (groupnorm, pixelnorm, none), opl\n"
    "(off, on), jpeg (clean, q30), beta (1e-6, 1e-4, 1e-2). The default recipe is an\n"
    "arm of every lesson and runs once per seed: 11 runs per seed.\n"
    "\n"
    "  --data DIR        dataset (default data)\n"
    "  --out DIR         output folder (default runs/lessons)\n"
    "  --minutes M       training time per run (default 2.5: two seeds of every\n"
    "                    lesson in about an hour on two cores)\n"
    "  --steps N         train for exactly N steps instead (for tests)\n"
    "  --seeds N         seeds per arm (default 2): tables give the mean and the spread\n"
    "  --seed-from K     seeds K .. K+N-1 (default 1): two processes may share OUT, each\n"
    "                    with its own seeds; a last call with all seeds writes the report\n"
    "  --only LIST       only these lessons, e.g. loss,blocks\n"
    "  --config NAME     ivae-xs (default) or ivae-s\n"
    "  --crop N, --clips N, --images N   the batch (default 32, 1, 8: ivae train's)\n"
    "  --warmup N        learning-rate warmup steps (default 20: runs are short)\n"
    "  --eval-size N     held-out crop (default 64), --eval-frames N (default 17)\n"
    "  --eval-jpeg Q     the JPEG quality the held-out PSNR is also measured against\n"
    "                    (default 30, the jpeg lesson's)\n"
    "  --fresh           rerun every run (default: reuse a run whose results exist with\n"
    "                    the same recipe, so an interrupted run goes on)\n";

/* the shared range-checked parsers of util.h */
static long lparse_long(const char *flag, const char *v, long lo, long hi) {
    long long x;
    if (parse_int(v, lo, hi, &x) != 0) die("%s: '%s' must be an integer in %ld..%ld", flag, v, lo, hi);
    return (long)x;
}

static void lparse(LOpts *o, int argc, char **argv) {
    *o = (LOpts){"data", "runs/lessons", "ivae-xs", NULL, 2.5, 0, 2, 32, 1, 8, 64, 17, 30, 0, 20, 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(LESSONS_HELP, stdout);
            exit(0);
        }
        if (!strcmp(a, "--fresh")) {
            o->fresh = 1;
            continue;
        }
        if (i + 1 >= argc) die("lessons: %s needs a value (see ivae lessons --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--data")) o->data = v;
        else if (!strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--config")) o->config = v;
        else if (!strcmp(a, "--only")) o->only = v;
        else if (!strcmp(a, "--minutes")) {
            if (parse_real(v, 1e-3, 1e6, &o->minutes) != 0) die("--minutes: '%s' must be a number in 0.001..1e6", v);
        } else if (!strcmp(a, "--steps")) o->steps = lparse_long(a, v, 1, 100000000);
        else if (!strcmp(a, "--seeds")) o->seeds = (int)lparse_long(a, v, 1, 100);
        else if (!strcmp(a, "--seed-from")) o->seed0 = (int)lparse_long(a, v, 1, 1000000);
        else if (!strcmp(a, "--crop")) o->crop = (int)lparse_long(a, v, 8, 4096);
        else if (!strcmp(a, "--clips")) o->clips = (int)lparse_long(a, v, 0, 1024);
        else if (!strcmp(a, "--images")) o->images = (int)lparse_long(a, v, 0, 1024);
        else if (!strcmp(a, "--eval-size")) o->eval_size = (int)lparse_long(a, v, 8, 4096);
        else if (!strcmp(a, "--eval-frames")) o->eval_frames = (int)lparse_long(a, v, 1, 4096);
        else if (!strcmp(a, "--eval-jpeg")) o->eval_jpeg = (int)lparse_long(a, v, 1, 100);
        else if (!strcmp(a, "--warmup")) o->warmup = lparse_long(a, v, 0, 100000000);
        else die("lessons: unknown option '%s' (see ivae lessons --help)", a);
    }
    if (o->only) { /* every name must be a lesson */
        char buf[256];
        snprintf(buf, sizeof buf, "%s", o->only);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
            int k = 0;
            while (k < N_LESSONS && strcmp(LESSONS[k].name, tok)) k++;
            if (k == N_LESSONS) die("--only: no lesson '%s' (loss, images, blocks, attention, opl, jpeg, beta)", tok);
        }
    }
}

static int wanted(const LOpts *o, const char *name) {
    if (!o->only) return 1;
    size_t n = strlen(name);
    for (const char *p = o->only; (p = strstr(p, name)); p += n)
        if ((p == o->only || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* runs: the distinct flag sets, each trained once per seed */

enum { MAX_RUNS = 16, MAX_TOK = 32 };

typedef struct {
    const char *flags;
    char dir[64]; /* e.g. "default", "loss-norm_sum" */
} Run1;

/* the run's folder name from its flags: "--loss-norm sum" -> "loss-norm_sum" */
static void run_dir_name(const char *flags, char *out, size_t n) {
    if (!*flags) {
        snprintf(out, n, "default");
        return;
    }
    size_t k = 0;
    for (const char *p = flags; *p && k + 1 < n; p++) {
        if (*p == '-' && (p == flags || p[-1] == ' ')) {
            while (*p == '-') p++;
            p--;
            continue;
        }
        out[k++] = *p == ' ' ? '_' : *p;
    }
    out[k] = 0;
}

static int add_run(Run1 *runs, int *n, const char *flags) {
    for (int j = 0; j < *n; j++)
        if (!strcmp(runs[j].flags, flags)) return j;
    runs[*n].flags = flags;
    run_dir_name(flags, runs[*n].dir, sizeof runs[*n].dir);
    return (*n)++;
}

/* the recipe of one run as the argv of `ivae train` (argv[0] = "train") */
static int train_argv(const LOpts *o, const Run1 *r, int seed, const char *dir, char **av, char store[][64]) {
    int n = 0, k = 0;
#define ARG(...) (snprintf(store[k], 64, __VA_ARGS__), av[n++] = store[k++])
    av[n++] = "train";
    av[n++] = "--data", av[n++] = (char *)o->data;
    av[n++] = "--out", av[n++] = (char *)dir;
    av[n++] = "--config", av[n++] = (char *)o->config;
    av[n++] = "--seed", ARG("%d", seed);
    if (o->steps) av[n++] = "--steps", ARG("%ld", o->steps);
    else av[n++] = "--minutes", ARG("%g", o->minutes);
    av[n++] = "--crop", ARG("%d", o->crop);
    av[n++] = "--clips", ARG("%d", o->clips);
    av[n++] = "--images", ARG("%d", o->images);
    av[n++] = "--eval-every", av[n++] = "0";
    av[n++] = "--warmup", ARG("%ld", o->warmup);
    av[n++] = "--eval-size", ARG("%d", o->eval_size);
    av[n++] = "--eval-frames", ARG("%d", o->eval_frames);
    av[n++] = "--eval-jpeg", ARG("%d", o->eval_jpeg);
    /* the arm's own flags, split at spaces */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", r->flags);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) ARG("%s", tok);
#undef ARG
    av[n] = NULL;
    return n;
}

/* the whole recipe as one line (what recipe.txt holds, to decide reuse) */
static void recipe_line(char *const *av, int n, char *out, size_t cap) {
    out[0] = 0;
    for (int j = 0; j < n; j++) snprintf(out + strlen(out), cap - strlen(out), "%s%s", j ? " " : "", av[j]);
}

/* a recipe without its "--out DIR": the same run, wherever its folder is
   (runs copied into another output folder are still reused) */
static void recipe_key(const char *recipe, char *out, size_t cap) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", recipe);
    out[0] = 0;
    int skip = 0;
    for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
        if (skip) { skip = 0; continue; }
        if (!strcmp(tok, "--out")) { skip = 1; continue; }
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? " " : "", tok);
    }
}

static int file_equals(const char *path, const char *recipe) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[2048], a[2048], b[2048];
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    recipe_key(buf, a, sizeof a), recipe_key(recipe, b, sizeof b);
    return strcmp(a, b) == 0;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* one training run in a child process, its output to DIR/train.log; 0 on success */
static int run_child(char **av, int n, const char *dir) {
    char log[1200];
    snprintf(log, sizeof log, "%s/train.log", dir);
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) die("lessons: fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            fprintf(stderr, "ivae: %s: cannot write: %s\n", log, strerror(errno));
            _exit(1);
        }
        dup2(fd, 1), dup2(fd, 2), close(fd);
        int rc = train_main(n - 1, av + 1);
        fflush(stdout);
        _exit(rc);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) die("lessons: waitpid: %s", strerror(errno));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* the last line of a file that starts with "ivae:" (the error of a failed run) */
static void last_error(const char *path, char *out, size_t n) {
    FILE *f = fopen(path, "r");
    snprintf(out, n, "(see %s)", path);
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "ivae:", 5)) {
            line[strcspn(line, "\n")] = 0;
            snprintf(out, n, "%s", line);
        }
    fclose(f);
}

/* ------------------------------------------------------------------------ */
/* results: the columns of metrics.csv and summary.csv */

enum { N_COLS = 20 };
static const char *const COLS[N_COLS] = {"psnr_image", "ssim_image", "psnr_video", "ssim_video", "psnr_image_vs_jpeg",
                                         "psnr_video_vs_jpeg", "z_std_mean", "z_std_min", "z_std_max", "z_hf_share",
                                         "z_outlier_share", "splotch", "steps", "steps_per_s", "rollbacks",
                                         "spike_skips", "nonfinite_skips", "rec_image", "rec_video", "splotch_train"};

typedef struct {
    double v[N_COLS];
    char splotch_block[96];
    int ok;
} Result;

/* the values of a header + one-row CSV into r, by column name */
static int read_csv_row(const char *path, Result *r) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char head[2048], row[2048];
    int ok = fgets(head, sizeof head, f) && fgets(row, sizeof row, f);
    fclose(f);
    if (!ok) return -1;
    head[strcspn(head, "\n")] = 0, row[strcspn(row, "\n")] = 0;
    char *hs, *rs, *h = strtok_r(head, ",", &hs), *v = strtok_r(row, ",", &rs);
    for (; h && v; h = strtok_r(NULL, ",", &hs), v = strtok_r(NULL, ",", &rs)) {
        if (!strcmp(h, "splotch_block")) snprintf(r->splotch_block, sizeof r->splotch_block, "%s", v);
        for (int c = 0; c < N_COLS; c++)
            if (!strcmp(h, COLS[c])) r->v[c] = strtod(v, NULL);
    }
    return 0;
}

/* mean and spread (max - min) of column c over the seeds that ran */
static void stat_of(const Result *rs, int n, int c, double *mean, double *spread) {
    double s = 0, lo = INFINITY, hi = -INFINITY;
    int k = 0;
    for (int j = 0; j < n; j++) {
        if (!rs[j].ok) continue;
        double x = rs[j].v[c];
        s += x, k++;
        if (x < lo) lo = x;
        if (x > hi) hi = x;
    }
    *mean = k ? s / k : NAN;
    *spread = k > 1 ? hi - lo : NAN;
}

static void cell(FILE *f, const Result *rs, int n, int c, const char *fmt) {
    double m, sp;
    stat_of(rs, n, c, &m, &sp);
    fprintf(f, " ");
    if (m != m) fprintf(f, "-");
    else fprintf(f, fmt, m);
    if (sp == sp) {
        fprintf(f, " ± ");
        fprintf(f, fmt, sp / 2);
    }
    fprintf(f, " |");
}

/* ------------------------------------------------------------------------ */
/* the picture grid of one lesson: rows = held-out frames, columns = the
   original, each arm's reconstruction, each arm's error x4 (seed 1) */

static void lesson_grid(const LOpts *o, const Lesson *L, const Run1 *runs, const int *arm_run, const char *png) {
    const char *names[4] = {"image_0", "image_1", "clip_0", "clip_1"};
    int cols = 1 + 2 * L->n_arms, rows = 0;
    Clip clips[4][7];
    const Clip *cells[4 * 7];
    int frames[4 * 7] = {0};
    const char *labels[7];
    char lab[7][48];
    memset(clips, 0, sizeof clips);
    labels[0] = "original";
    for (int a = 0; a < L->n_arms; a++) {
        snprintf(lab[1 + a], 48, "%s", L->arms[a].label);
        snprintf(lab[1 + L->n_arms + a], 48, "error x4");
        labels[1 + a] = lab[1 + a], labels[1 + L->n_arms + a] = lab[1 + L->n_arms + a];
    }
    for (int q = 0; q < 4; q++) {
        char path[1400];
        snprintf(path, sizeof path, "%s/runs/%s/seed%d/heldout_%s.orig.png", o->out, runs[arm_run[0]].dir, o->seed0, names[q]);
        if (!exists(path)) continue;
        Clip *row = clips[rows];
        if (media_load(path, 0, &row[0]) != 0) die("%s", ivae_error());
        for (int a = 0; a < L->n_arms; a++) {
            snprintf(path, sizeof path, "%s/runs/%s/seed%d/heldout_%s.recon.png", o->out, runs[arm_run[a]].dir, o->seed0, names[q]);
            if (media_load(path, 0, &row[1 + a]) != 0) die("%s", ivae_error());
            if (clip_error_map(&row[0], &row[1 + a], 4, &row[1 + L->n_arms + a]) != 0) die("%s", ivae_error());
        }
        for (int c = 0; c < cols; c++) cells[rows * cols + c] = &row[c];
        rows++;
    }
    if (rows && save_grid(png, rows, cols, cells, frames, labels, 2) != 0) die("%s", ivae_error());
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 7; c++) clip_free(&clips[r][c]);
}

/* ------------------------------------------------------------------------ */

int lessons_main(int argc, char **argv) {
    LOpts o;
    lparse(&o, argc, argv);
    Run1 runs[MAX_RUNS];
    int n_runs = 0, arm_run[N_LESSONS][3];
    for (int k = 0; k < N_LESSONS; k++)
        if (wanted(&o, LESSONS[k].name))
            for (int a = 0; a < LESSONS[k].n_arms; a++) arm_run[k][a] = add_run(runs, &n_runs, LESSONS[k].arms[a].flags);
    char path[1400];
    snprintf(path, sizeof path, "%s/runs", o.out);
    mkdir_p(path);
    int total = n_runs * o.seeds;
    printf("ivae lessons: %d runs (%d flag sets x %d seeds), %s each, on %s; results in %s\n", total, n_runs, o.seeds,
           o.steps ? "a fixed number of steps" : "a time budget", o.data, o.out);
    if (!o.steps)
        printf("expected time: about %.0f minutes (%.1f min of training per run, plus its evaluation)\n",
               total * (o.minutes + 0.4), o.minutes);
    fflush(stdout);

    /* train (or reuse) every run */
    Result (*res)[100] = xcalloc(MAX_RUNS, sizeof *res);
    double t0 = now_s();
    int done = 0, failed = 0;
    for (int seed = o.seed0; seed < o.seed0 + o.seeds; seed++)
        for (int j = 0; j < n_runs; j++) {
            char dir[1200], *av[64], store[40][64], recipe[2048], rpath[1300], mpath[1300], spath[1300];
            snprintf(dir, sizeof dir, "%s/runs/%s/seed%d", o.out, runs[j].dir, seed);
            int n = train_argv(&o, &runs[j], seed, dir, av, store);
            recipe_line(av, n, recipe, sizeof recipe);
            snprintf(rpath, sizeof rpath, "%s/recipe.txt", dir);
            snprintf(mpath, sizeof mpath, "%s/metrics.csv", dir);
            snprintf(spath, sizeof spath, "%s/summary.csv", dir);
            done++;
            Result *r = &res[j][seed - o.seed0];
            if (!o.fresh && file_equals(rpath, recipe) && exists(mpath) && exists(spath)) {
                printf("[%2d/%d] %-22s seed %d: reused", done, total, runs[j].dir, seed);
            } else {
                mkdir_p(dir);
                remove(mpath), remove(spath);
                printf("[%2d/%d] %-22s seed %d: training ... ", done, total, runs[j].dir, seed);
                fflush(stdout);
                double ts = now_s();
                int rc = run_child(av, n, dir);
                if (rc != 0) {
                    char why[1100], log[1300];
                    snprintf(log, sizeof log, "%s/train.log", dir);
                    last_error(log, why, sizeof why);
                    printf("FAILED (exit %d): %s\n", rc, why);
                    failed++;
                    continue;
                }
                FILE *f = fopen(rpath, "w");
                if (!f || fputs(recipe, f) < 0 || fclose(f) != 0) die("%s: cannot write: %s", rpath, strerror(errno));
                printf("%.1f min", (now_s() - ts) / 60);
            }
            if (read_csv_row(mpath, r) != 0 || read_csv_row(spath, r) != 0) {
                printf(" FAILED: %s or summary.csv is missing or unreadable\n", mpath);
                failed++;
                continue;
            }
            r->ok = 1;
            printf(" images %.2f dB, clips %.2f dB, %g steps\n", r->v[0], r->v[2], r->v[12]);
            fflush(stdout);
        }

    /* lessons.csv: every arm of every lesson, one row per seed */
    snprintf(path, sizeof path, "%s/lessons.csv", o.out);
    FILE *csv = fopen(path, "w");
    if (!csv) die("%s: cannot write: %s", path, strerror(errno));
    fprintf(csv, "lesson,arm,flags,seed");
    for (int c = 0; c < N_COLS; c++) fprintf(csv, ",%s", COLS[c]);
    fprintf(csv, ",splotch_block\n");
    for (int k = 0; k < N_LESSONS; k++)
        if (wanted(&o, LESSONS[k].name))
            for (int a = 0; a < LESSONS[k].n_arms; a++)
                for (int s = 0; s < o.seeds; s++) {
                    const Result *r = &res[arm_run[k][a]][s];
                    if (!r->ok) continue;
                    fprintf(csv, "%s,%s,%s,%d", LESSONS[k].name, LESSONS[k].arms[a].label, LESSONS[k].arms[a].flags, s + o.seed0);
                    for (int c = 0; c < N_COLS; c++) fprintf(csv, ",%.6g", r->v[c]);
                    fprintf(csv, ",%s\n", r->splotch_block);
                }
    if (fclose(csv) != 0) die("%s: cannot write: %s", path, strerror(errno));

    /* lessons.md: per lesson, the arms side by side, and its picture grid */
    snprintf(path, sizeof path, "%s/lessons.md", o.out);
    FILE *md = fopen(path, "w");
    if (!md) die("%s: cannot write: %s", path, strerror(errno));
    fprintf(md, "# ivae lessons: one run\n\n");
    fprintf(md, "Data `%s`, model `%s`, batch %d clip%s of 17 frames + %d images, %dx%d crops, ", o.data, o.config, o.clips,
            o.clips == 1 ? "" : "s", o.images, o.crop, o.crop);
    if (o.steps) fprintf(md, "%ld steps per run", o.steps);
    else fprintf(md, "%g minutes of training per run", o.minutes);
    fprintf(md, ", %d seed%s per arm (mean ± half the spread between seeds). Held out: %dx%d centre crops, clips of %d "
                "frames. %.0f minutes in all.\n\n",
            o.seeds, o.seeds == 1 ? "" : "s", o.eval_size, o.eval_size, o.eval_frames, (now_s() - t0) / 60);
    fprintf(md, "Columns: held-out PSNR (dB) and SSIM of images and clips; PSNR against the held-out frames' JPEG "
                "(q%d) versions; the latent's mean per-channel std, its energy share above half Nyquist and its share "
                "of outlier positions (||mu - m|| > 3 ||sd||); the splotch ratio (largest over median per-pixel block "
                "output norm, worst block, one held-out clip); guard events (rollbacks + skipped steps); steps/s.\n\n",
            o.eval_jpeg);
    for (int k = 0; k < N_LESSONS; k++) {
        const Lesson *L = &LESSONS[k];
        if (!wanted(&o, L->name)) continue;
        fprintf(md, "## %s\n\nThe seed: %s.\n\n", L->title, L->seed_says);
        fprintf(md, "| arm | img PSNR | img SSIM | clip PSNR | clip SSIM | img vs JPEG | clip vs JPEG | z std | z HF | "
                    "z outliers | splotch | guard events | steps/s |\n");
        fprintf(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (int a = 0; a < L->n_arms; a++) {
            Result *rs = res[arm_run[k][a]];
            Result ev[100];
            for (int s = 0; s < o.seeds; s++) { /* guard events = rollbacks + skips */
                ev[s] = rs[s];
                ev[s].v[14] = rs[s].v[14] + rs[s].v[15] + rs[s].v[16];
            }
            fprintf(md, "| %s `%s` |", L->arms[a].label, *L->arms[a].flags ? L->arms[a].flags : "default");
            cell(md, rs, o.seeds, 0, "%.2f"), cell(md, rs, o.seeds, 1, "%.3f"), cell(md, rs, o.seeds, 2, "%.2f");
            cell(md, rs, o.seeds, 3, "%.3f"), cell(md, rs, o.seeds, 4, "%.2f"), cell(md, rs, o.seeds, 5, "%.2f");
            cell(md, rs, o.seeds, 6, "%.3g"), cell(md, rs, o.seeds, 9, "%.3f"), cell(md, rs, o.seeds, 10, "%.2g");
            cell(md, rs, o.seeds, 11, "%.3g"), cell(md, ev, o.seeds, 14, "%.0f"), cell(md, rs, o.seeds, 13, "%.2f");
            fprintf(md, "\n");
        }
        char png[1400];
        snprintf(png, sizeof png, "%s/lesson_%s.png", o.out, L->name);
        lesson_grid(&o, L, runs, arm_run[k], png);
        fprintf(md, "\n![%s](lesson_%s.png)\n\n", L->name, L->name);
    }
    if (fclose(md) != 0) die("%s: cannot write: %s", path, strerror(errno));
    printf("wrote %s/lessons.md, lessons.csv and lesson_*.png (%d of %d runs ok, %.1f min)\n", o.out, total - failed, total,
           (now_s() - t0) / 60);
    free(res);
    return failed ? 1 : 0;
}
