/*
 * ivae_cl.c: the host side of the OpenCL twin of ivae's layers (kernels.cl,
 * kernels_fast.cl).
 *
 * Read it top-down:
 *   1. CL_CHECK, the one way every OpenCL call is checked, and its name table
 *   2. platforms and devices: the count, the listing, the choice by env
 *   3. the context: device checks, building kernels.cl and kernels_fast.cl,
 *      buffers, scratch
 *   4. the layer wrappers, in layers.c's order, each a few kernel launches
 *
 * The strict kernels run the C code's loop for each output element (the
 * convolutions four elements at a time, as float4 lanes), so the results are
 * bit for bit the CPU's; the fast ones (section 4, last part) are tiled
 * products in local memory, within SPEC 8's tolerances. ivae_cl_model.c
 * runs the whole model with these wrappers.
 */
#include "ivae_cl.h"
#include "util.h"
#include "ivae.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ========================================================================== */
/* 1. checking OpenCL calls                                                   */
/* ========================================================================== */

static const char *cl_error_name(cl_int e) {
    switch (e) {
#define NAME(x) case x: return #x;
    NAME(CL_SUCCESS) NAME(CL_DEVICE_NOT_FOUND) NAME(CL_DEVICE_NOT_AVAILABLE) NAME(CL_COMPILER_NOT_AVAILABLE)
    NAME(CL_MEM_OBJECT_ALLOCATION_FAILURE) NAME(CL_OUT_OF_RESOURCES) NAME(CL_OUT_OF_HOST_MEMORY)
    NAME(CL_PROFILING_INFO_NOT_AVAILABLE) NAME(CL_MEM_COPY_OVERLAP) NAME(CL_IMAGE_FORMAT_MISMATCH)
    NAME(CL_IMAGE_FORMAT_NOT_SUPPORTED) NAME(CL_BUILD_PROGRAM_FAILURE) NAME(CL_MAP_FAILURE)
    NAME(CL_MISALIGNED_SUB_BUFFER_OFFSET) NAME(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
    NAME(CL_COMPILE_PROGRAM_FAILURE) NAME(CL_LINKER_NOT_AVAILABLE) NAME(CL_LINK_PROGRAM_FAILURE)
    NAME(CL_DEVICE_PARTITION_FAILED) NAME(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
    NAME(CL_INVALID_VALUE) NAME(CL_INVALID_DEVICE_TYPE) NAME(CL_INVALID_PLATFORM) NAME(CL_INVALID_DEVICE)
    NAME(CL_INVALID_CONTEXT) NAME(CL_INVALID_QUEUE_PROPERTIES) NAME(CL_INVALID_COMMAND_QUEUE)
    NAME(CL_INVALID_HOST_PTR) NAME(CL_INVALID_MEM_OBJECT) NAME(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)
    NAME(CL_INVALID_IMAGE_SIZE) NAME(CL_INVALID_SAMPLER) NAME(CL_INVALID_BINARY) NAME(CL_INVALID_BUILD_OPTIONS)
    NAME(CL_INVALID_PROGRAM) NAME(CL_INVALID_PROGRAM_EXECUTABLE) NAME(CL_INVALID_KERNEL_NAME)
    NAME(CL_INVALID_KERNEL_DEFINITION) NAME(CL_INVALID_KERNEL) NAME(CL_INVALID_ARG_INDEX)
    NAME(CL_INVALID_ARG_VALUE) NAME(CL_INVALID_ARG_SIZE) NAME(CL_INVALID_KERNEL_ARGS)
    NAME(CL_INVALID_WORK_DIMENSION) NAME(CL_INVALID_WORK_GROUP_SIZE) NAME(CL_INVALID_WORK_ITEM_SIZE)
    NAME(CL_INVALID_GLOBAL_OFFSET) NAME(CL_INVALID_EVENT_WAIT_LIST) NAME(CL_INVALID_EVENT)
    NAME(CL_INVALID_OPERATION) NAME(CL_INVALID_GL_OBJECT) NAME(CL_INVALID_BUFFER_SIZE)
    NAME(CL_INVALID_MIP_LEVEL) NAME(CL_INVALID_GLOBAL_WORK_SIZE) NAME(CL_INVALID_PROPERTY)
    NAME(CL_INVALID_IMAGE_DESCRIPTOR) NAME(CL_INVALID_COMPILER_OPTIONS) NAME(CL_INVALID_LINKER_OPTIONS)
    NAME(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef NAME
    /* OpenCL 2.x codes and the ICD loader's, which the 1.2 headers do not name */
    case -69: return "CL_INVALID_PIPE_SIZE";
    case -70: return "CL_INVALID_DEVICE_QUEUE";
    case -71: return "CL_INVALID_SPEC_ID";
    case -72: return "CL_MAX_SIZE_RESTRICTION_EXCEEDED";
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "an unknown OpenCL error";
    }
}

/* On failure: prints the call, the error's name, file and line to stderr,
   keeps the same line in ivae_error(), and returns 1. Used through CL_CHECK:
       if (CL_CHECK(clFinish(cl->queue))) return -1;
   A call that returns its error through a pointer is checked with the comma
   operator, so that the message still shows the call:
       if (CL_CHECK((b = clCreateBuffer(..., &err), err))) return NULL; */
int ivae_cl_failed(cl_int err, const char *call, const char *file, int line) {
    if (err == CL_SUCCESS) return 0;
    ivae_set_error("OpenCL error %s (%d) from %s at %s:%d", cl_error_name(err), (int)err, call, file, line);
    fprintf(stderr, "ivae: %s\n", ivae_error());
    return 1;
}
#define CL_CHECK(call) IVAE_CL_CHECK(call)

/* ========================================================================== */
/* 2. platforms and devices                                                   */
/* ========================================================================== */

int ivae_cl_platform_count(void) {
    cl_uint n = 0;
    /* Not under CL_CHECK (nor are get_devices' CL_DEVICE_NOT_FOUND and
       cl_open's fp64 query, answers rather than failures): with no driver
       installed the ICD loader answers CL_PLATFORM_NOT_FOUND_KHR, which
       means "none", not "broken". */
    if (clGetPlatformIDs(0, NULL, &n) != CL_SUCCESS) return 0;
    return (int)n;
}

static const char *no_platform =
    "no OpenCL platform found (no OpenCL driver is installed, or none is registered in /etc/OpenCL/vendors "
    "or $OCL_ICD_VENDORS; on Debian, apt-get install pocl-opencl-icd gives the CPU one); the CPU path works "
    "without one";

/* the platforms (malloc'd); -1 with a message if there is none */
static int get_platforms(cl_platform_id **ids, cl_uint *n) {
    *ids = NULL;
    *n = (cl_uint)ivae_cl_platform_count();
    if (*n == 0) {
        ivae_set_error("%s", no_platform);
        return -1;
    }
    *ids = malloc(*n * sizeof **ids);
    if (!*ids || CL_CHECK(clGetPlatformIDs(*n, *ids, NULL))) {
        free(*ids);
        *ids = NULL;
        return -1;
    }
    return 0;
}

/* a platform's devices (malloc'd), possibly none */
static int get_devices(cl_platform_id p, cl_device_id **ids, cl_uint *n) {
    *ids = NULL;
    *n = 0;
    cl_int err = clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, NULL, n);
    if (err == CL_DEVICE_NOT_FOUND) { /* an answer: no devices */
        *n = 0;
        return 0;
    }
    if (ivae_cl_failed(err, "clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, NULL, n)", __FILE__, __LINE__)) return -1;
    *ids = malloc(*n * sizeof **ids);
    if (!*ids || CL_CHECK(clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, *n, *ids, NULL))) {
        free(*ids);
        *ids = NULL;
        return -1;
    }
    return 0;
}

static int platform_str(cl_platform_id p, cl_platform_info what, char *buf, size_t cap) {
    buf[0] = 0;
    if (CL_CHECK(clGetPlatformInfo(p, what, cap, buf, NULL))) return -1;
    buf[cap - 1] = 0;
    return 0;
}

static int device_str(cl_device_id d, cl_device_info what, char *buf, size_t cap) {
    buf[0] = 0;
    if (CL_CHECK(clGetDeviceInfo(d, what, cap, buf, NULL))) return -1;
    buf[cap - 1] = 0;
    return 0;
}

/* does the device give correctly rounded float / and sqrt, as the strict build needs? */
static int device_strict_ok(cl_device_id d, int *ok, int *denorms) {
    cl_device_fp_config fp = 0;
    if (CL_CHECK(clGetDeviceInfo(d, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL))) return -1;
    *ok = (fp & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
    *denorms = (fp & CL_FP_DENORM) != 0;
    return 0;
}

/* prints every platform and device, with what decides whether ivae can use it:
   correctly rounded divide and sqrt (the strict mode needs them), denormals
   (a device that flushes them differs from the CPU where results pass
   through one), work-group size and local memory (the fast kernels use
   groups of 256 and 8.5 KiB of local memory) */
int ivae_cl_print_devices(FILE *f) {
    cl_platform_id *plats;
    cl_uint np;
    if (get_platforms(&plats, &np) != 0) return -1;
    for (cl_uint ip = 0; ip < np; ip++) {
        char name[256], version[256];
        if (platform_str(plats[ip], CL_PLATFORM_NAME, name, sizeof name) ||
            platform_str(plats[ip], CL_PLATFORM_VERSION, version, sizeof version))
            goto fail;
        fprintf(f, "platform %u: %s (%s)\n", ip, name, version);
        cl_device_id *devs;
        cl_uint nd;
        if (get_devices(plats[ip], &devs, &nd) != 0) goto fail;
        if (nd == 0) fprintf(f, "  (no devices)\n");
        for (cl_uint id = 0; id < nd; id++) {
            char dname[256], dversion[256], driver[256];
            cl_device_type type = 0;
            cl_uint units = 0;
            cl_ulong mem = 0, local = 0, most = 0;
            size_t group = 0;
            int strict, denorms;
            if (device_str(devs[id], CL_DEVICE_NAME, dname, sizeof dname) ||
                device_str(devs[id], CL_DEVICE_VERSION, dversion, sizeof dversion) ||
                device_str(devs[id], CL_DRIVER_VERSION, driver, sizeof driver) ||
                CL_CHECK(clGetDeviceInfo(devs[id], CL_DEVICE_TYPE, sizeof type, &type, NULL)) ||
                CL_CHECK(clGetDeviceInfo(devs[id], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL)) ||
                CL_CHECK(clGetDeviceInfo(devs[id], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL)) ||
                CL_CHECK(clGetDeviceInfo(devs[id], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof most, &most, NULL)) ||
                CL_CHECK(clGetDeviceInfo(devs[id], CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL)) ||
                CL_CHECK(clGetDeviceInfo(devs[id], CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof group, &group, NULL)) ||
                device_strict_ok(devs[id], &strict, &denorms)) {
                free(devs);
                goto fail;
            }
            fprintf(f, "  device %u: %s\n", id, dname);
            fprintf(f, "    %s, %s, driver %s\n",
                    type & CL_DEVICE_TYPE_GPU   ? "GPU"
                    : type & CL_DEVICE_TYPE_CPU ? "CPU"
                                                : "other",
                    dversion, driver);
            fprintf(f, "    %u compute units, %.1f GiB global memory (%.1f GiB in one buffer), %.0f KiB local memory, "
                       "work-groups up to %zu\n",
                    units, (double)mem / (1 << 30), (double)most / (1 << 30), (double)local / 1024, group);
            fprintf(f, "    correctly rounded divide/sqrt: %s; denormals: %s\n",
                    strict ? "yes (the strict mode can run)" : "NO (the strict mode cannot run)",
                    denorms ? "yes" : "flushed to zero (results through a denormal differ from the CPU's)");
        }
        free(devs);
    }
    free(plats);
    return 0;
fail:
    free(plats);
    return -1;
}

/* a non-negative index from the environment, default 0 */
static int env_index(const char *var, int *out) {
    const char *s = getenv(var);
    *out = 0;
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < 0 || v > INT_MAX) {
        ivae_set_error("%s=%s is not an index (0, 1, ...; `ivae devices` lists them)", var, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int ivae_cl_device_count(void) {
    int pi;
    cl_platform_id *plats;
    cl_device_id *devs;
    cl_uint np, nd;
    if (env_index("IVAE_CL_PLATFORM", &pi) || get_platforms(&plats, &np) != 0) return 0;
    int ok = (cl_uint)pi < np && get_devices(plats[pi], &devs, &nd) == 0;
    free(plats);
    if (!ok) return 0;
    free(devs);
    return (int)nd;
}

/* the platform and device named by IVAE_CL_PLATFORM and IVAE_CL_DEVICE */
static int choose_device(IvaeCl *cl) {
    if (env_index("IVAE_CL_PLATFORM", &cl->platform_index) || env_index("IVAE_CL_DEVICE", &cl->device_index))
        return -1;
    cl_platform_id *plats;
    cl_uint np;
    if (get_platforms(&plats, &np) != 0) return -1;
    if ((cl_uint)cl->platform_index >= np) {
        char name[256] = "";
        platform_str(plats[0], CL_PLATFORM_NAME, name, sizeof name);
        ivae_set_error("IVAE_CL_PLATFORM=%d but there %s %u OpenCL platform%s (0: %s%s)", cl->platform_index,
                       np == 1 ? "is" : "are", np, np == 1 ? "" : "s", name, np > 1 ? ", ..." : "");
        free(plats);
        return -1;
    }
    cl->platform = plats[cl->platform_index];
    free(plats);
    if (platform_str(cl->platform, CL_PLATFORM_NAME, cl->platform_name, sizeof cl->platform_name)) return -1;

    cl_device_id *devs;
    cl_uint nd;
    if (get_devices(cl->platform, &devs, &nd) != 0) return -1;
    if ((cl_uint)cl->device_index >= nd) {
        ivae_set_error("IVAE_CL_DEVICE=%d but platform %d (%s) has %u device%s", cl->device_index,
                       cl->platform_index, cl->platform_name, nd, nd == 1 ? "" : "s");
        free(devs);
        return -1;
    }
    cl->device = devs[cl->device_index];
    free(devs);
    return device_str(cl->device, CL_DEVICE_NAME, cl->device_name, sizeof cl->device_name);
}

/* ========================================================================== */
/* 3. the context: device checks, the program, buffers                        */
/* ========================================================================== */

static const char *kernel_names[IVAE_K_COUNT] = {
#define IVAE_CL_NAME(name) #name,
    IVAE_CL_KERNELS(IVAE_CL_NAME)
#undef IVAE_CL_NAME
};

/* the fast kernels that run in fixed work-groups of FG x FG = 256 (kernels_fast.cl) */
static int is_tiled(int k) {
    return k == IVAE_K_conv3d_forward_fast || k == IVAE_K_conv3d_forward_padded_fast ||
           k == IVAE_K_conv3d_backward_dinp_fast ||
           k == IVAE_K_conv3d_backward_dweight_fast || k == IVAE_K_conv3d_backward_dbias_fast ||
           k == IVAE_K_gemm_fast;
}

static int readable(const char *path) { return access(path, R_OK) == 0; }

/* kernels.cl: $IVAE_KERNELS, else next to the executable, else one directory
   up; kernels_fast.cl: next to that kernels.cl */
static int find_kernels(char *path, char *fast_path, size_t cap) {
    const char *env = getenv("IVAE_KERNELS");
    if (env && *env) {
        if (!readable(env)) {
            ivae_set_error("IVAE_KERNELS=%s: cannot read that file", env);
            return -1;
        }
        snprintf(path, cap, "%s", env);
    } else {
        char exe[1024];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0) {
            ivae_set_error("cannot find kernels.cl (the executable's directory is unknown): set IVAE_KERNELS to its "
                           "path");
            return -1;
        }
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(path, cap, "%s/kernels.cl", exe);
        if (!readable(path)) snprintf(path, cap, "%s/../kernels.cl", exe);
        if (!readable(path)) {
            ivae_set_error("kernels.cl is neither in %s nor in %s/..: set IVAE_KERNELS to its path", exe, exe);
            return -1;
        }
    }
    const char *slash = strrchr(path, '/');
    int dir = slash ? (int)(slash - path) + 1 : 0; /* the directory, with its '/' */
    snprintf(fast_path, cap, "%.*skernels_fast.cl", dir, path);
    if (!readable(fast_path)) {
        ivae_set_error("%s: cannot read it (kernels_fast.cl must be beside %s: the two are built together)",
                       fast_path, path);
        return -1;
    }
    return 0;
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ivae_set_error("%s: cannot open it", path);
        return NULL;
    }
    char *s = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (s = malloc((size_t)n + 1)) && fread(s, 1, (size_t)n, f) == (size_t)n) {
        s[n] = 0;
    } else {
        free(s);
        s = NULL;
        ivae_set_error("%s: cannot read it", path);
    }
    fclose(f);
    return s;
}

/* pocl puts -I. before the caller's -I, so an ivae_math.h in the working
   directory would silently replace the one next to kernels.cl: refuse to
   build if there is one and it differs */
static int check_cwd_header(const char *dir) {
    char theirs[1100], here[PATH_MAX], there[PATH_MAX];
    snprintf(theirs, sizeof theirs, "%s/ivae_math.h", dir);
    if (!readable("ivae_math.h") || !realpath("ivae_math.h", here) || !realpath(theirs, there) ||
        strcmp(here, there) == 0)
        return 0;
    char *a = read_text("ivae_math.h"), *b = read_text(theirs);
    int same = a && b && strcmp(a, b) == 0;
    free(a);
    free(b);
    if (!same) {
        ivae_set_error("./ivae_math.h differs from %s, and some OpenCL compilers (pocl) take the working "
                       "directory's first: run from another directory",
                       theirs);
        return -1;
    }
    return 0;
}

/* builds kernels.cl and kernels_fast.cl, in this order, as one program in
   strict mode: correctly rounded / and sqrt, no fast-math or mad flags,
   FP_CONTRACT OFF inside kernels.cl; -I its directory for ivae_math.h. On
   failure prints the build log (its lines name the file they are in). */
static int build_program(IvaeCl *cl) {
    if (find_kernels(cl->kernels_path, cl->kernels_fast_path, sizeof cl->kernels_path) != 0) return -1;
    char dir[1024], options[1200], line[1100];
    snprintf(dir, sizeof dir, "%s", cl->kernels_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    if (strchr(dir, ' ') || strchr(dir, '"')) {
        ivae_set_error("%s: the directory of kernels.cl must not contain spaces or quotes (it goes into -I)", dir);
        return -1;
    }
    snprintf(options, sizeof options, "-cl-fp32-correctly-rounded-divide-sqrt -I %s", dir);
    if (check_cwd_header(dir) != 0) return -1;
    char *strict = read_text(cl->kernels_path), *fast = strict ? read_text(cl->kernels_fast_path) : NULL;
    if (!fast) {
        free(strict);
        return -1;
    }
    /* the compiler sees one source: the #line makes its messages about the
       second part name kernels_fast.cl */
    snprintf(line, sizeof line, "\n#line 1 \"%s\"\n", cl->kernels_fast_path);
    cl_int err;
    const char *srcs[3] = {strict, line, fast};
    int failed = CL_CHECK((cl->program = clCreateProgramWithSource(cl->context, 3, srcs, NULL, &err), err));
    free(strict);
    free(fast);
    if (failed) return -1;
    err = clBuildProgram(cl->program, 1, &cl->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t n = 0;
        char *log = NULL;
        if (!CL_CHECK(clGetProgramBuildInfo(cl->program, cl->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n)) &&
            (log = malloc(n + 1)) &&
            !CL_CHECK(clGetProgramBuildInfo(cl->program, cl->device, CL_PROGRAM_BUILD_LOG, n, log, NULL))) {
            log[n] = 0;
            fprintf(stderr, "ivae: building %s and %s (%s) failed; the build log:\n%s\n", cl->kernels_path,
                    cl->kernels_fast_path, options, log);
        }
        free(log);
        ivae_cl_failed(err, "clBuildProgram(cl->program, 1, &cl->device, options, NULL, NULL)", __FILE__, __LINE__);
        return -1;
    }
    for (int k = 0; k < IVAE_K_COUNT; k++) {
        if ((k == IVAE_K_unit_sumsq || k == IVAE_K_pixel_sumsq) && !cl->fp64) continue; /* #ifdef cl_khr_fp64 */
        if (CL_CHECK((cl->kernel[k] = clCreateKernel(cl->program, kernel_names[k], &err), err))) {
            fprintf(stderr, "ivae: (kernel %s of %s or %s)\n", kernel_names[k], cl->kernels_path,
                    cl->kernels_fast_path);
            return -1;
        }
        /* work-groups of 64, or fewer if the kernel cannot have that many */
        size_t most = 0;
        if (CL_CHECK(clGetKernelWorkGroupInfo(cl->kernel[k], cl->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof most,
                                              &most, NULL)))
            return -1;
        cl->local[k] = most < 64 ? most : 64;
        if (is_tiled(k) && most < IVAE_CL_FAST_GROUP * IVAE_CL_FAST_GROUP && cl->fast_ok) {
            cl->fast_ok = 0;
            snprintf(cl->fast_why, sizeof cl->fast_why, "kernel %s runs in work-groups of at most %zu here, the fast "
                     "kernels need %d", kernel_names[k], most, IVAE_CL_FAST_GROUP * IVAE_CL_FAST_GROUP);
        }
    }
    return 0;
}

static int cl_open(IvaeCl *cl) {
    if (choose_device(cl) != 0) return -1;
    int strict, denorms;
    if (device_strict_ok(cl->device, &strict, &denorms) != 0) return -1;
    if (!strict) {
        ivae_set_error("device %d of platform %d (%s) has no correctly rounded float divide and sqrt "
                       "(CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT): the strict OpenCL build cannot match the CPU on it",
                       cl->device_index, cl->platform_index, cl->device_name);
        return -1;
    }
    if (!denorms)
        fprintf(stderr, "ivae: warning: %s flushes float denormals to zero; results that pass through a denormal "
                        "will differ from the CPU's\n", cl->device_name);
    cl_uint align_bits = 0;
    if (CL_CHECK(clGetDeviceInfo(cl->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL)))
        return -1;
    cl->base_align = align_bits / 8 > 64 ? align_bits / 8 : 64;
    cl_ulong most = 0, mem = 0;
    if (CL_CHECK(clGetDeviceInfo(cl->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof most, &most, NULL)) ||
        CL_CHECK(clGetDeviceInfo(cl->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL)))
        return -1;
    cl->max_alloc = (size_t)most, cl->global_mem = (size_t)mem;
    const char *cap = getenv("IVAE_CL_MAX_ALLOC");
    if (cap && *cap) { /* a smaller device, rehearsed */
        char *end;
        unsigned long long v = strtoull(cap, &end, 10);
        if (*end || v == 0 || cap[0] == '-') {
            ivae_set_error("IVAE_CL_MAX_ALLOC=%s is not a size in bytes (a positive integer)", cap);
            return -1;
        }
        if (v < cl->max_alloc) cl->max_alloc = (size_t)v, cl->max_alloc_env = 1;
    }
    cl->fast_ok = 1;
    cl_device_fp_config fp64 = 0;
    /* (drivers without cl_khr_fp64 may refuse the query itself: no double then) */
    if (clGetDeviceInfo(cl->device, CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp64, &fp64, NULL) != CL_SUCCESS) fp64 = 0;
    cl->fp64 = fp64 != 0 && !(getenv("IVAE_CL_NO_FP64") && strcmp(getenv("IVAE_CL_NO_FP64"), "0") != 0);
    cl->profile = getenv("IVAE_CL_PROFILE") && strcmp(getenv("IVAE_CL_PROFILE"), "0") != 0;
    cl_int err;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)cl->platform, 0};
    if (CL_CHECK((cl->context = clCreateContext(props, 1, &cl->device, NULL, NULL, &err), err))) return -1;
    if (CL_CHECK((cl->queue = clCreateCommandQueue(cl->context, cl->device, 0, &err), err))) return -1;
    return build_program(cl);
}

IvaeCl *ivae_cl_new(void) {
    IvaeCl *cl = calloc(1, sizeof *cl);
    if (!cl) {
        ivae_set_error("out of memory");
        return NULL;
    }
    if (cl_open(cl) != 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ivae_error()); /* freeing must not hide the reason */
        ivae_cl_free(cl);
        ivae_set_error("%s", msg);
        return NULL;
    }
    return cl;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* IVAE_CL_PROFILE: the kernels that ran, the slowest first */
static void print_profile(const IvaeCl *cl) {
    int order[IVAE_K_COUNT], n = 0;
    double total = 0;
    for (int k = 0; k < IVAE_K_COUNT; k++)
        if (cl->prof_n[k]) order[n++] = k, total += cl->prof_s[k];
    for (int a = 1; a < n; a++) /* insertion sort by time */
        for (int b = a; b > 0 && cl->prof_s[order[b]] > cl->prof_s[order[b - 1]]; b--) {
            int t = order[b];
            order[b] = order[b - 1], order[b - 1] = t;
        }
    fprintf(stderr, "ivae: OpenCL kernel times (IVAE_CL_PROFILE), %.3f s in all:\n", total);
    for (int j = 0; j < n; j++)
        fprintf(stderr, "  %-36s %9.3f s %5.1f%%  %7ld launches\n", kernel_names[order[j]], cl->prof_s[order[j]],
                100 * cl->prof_s[order[j]] / (total > 0 ? total : 1), cl->prof_n[order[j]]);
}

void ivae_cl_free(IvaeCl *cl) {
    if (!cl) return;
    if (cl->profile) print_profile(cl);
    for (int s = 0; s < IVAE_CLS_N; s++)
        if (cl->scratch[s]) CL_CHECK(clReleaseMemObject(cl->scratch[s]));
    for (int k = 0; k < IVAE_K_COUNT; k++)
        if (cl->kernel[k]) CL_CHECK(clReleaseKernel(cl->kernel[k]));
    if (cl->program) CL_CHECK(clReleaseProgram(cl->program));
    if (cl->queue) CL_CHECK(clReleaseCommandQueue(cl->queue));
    if (cl->context) CL_CHECK(clReleaseContext(cl->context));
    free(cl);
}

static double mib(size_t bytes) { return (double)bytes / (1 << 20); }

int ivae_cl_fits(IvaeCl *cl, size_t bytes, const char *what) {
    if (bytes <= cl->max_alloc) return 0;
    ivae_set_error("%s: %.4g MiB in one buffer, more than %s allows (%.4g MiB, %s)", what, mib(bytes),
                   cl->device_name, mib(cl->max_alloc),
                   cl->max_alloc_env ? "IVAE_CL_MAX_ALLOC" : "its CL_DEVICE_MAX_MEM_ALLOC_SIZE");
    return -1;
}

/* an allocation that fails is an answer about the device, not a broken call:
   one line in ivae_error() for the caller to print, nothing printed here */
static cl_mem buffer_bytes(IvaeCl *cl, size_t bytes, const void *host) {
    if (bytes == 0) bytes = 1;
    if (ivae_cl_fits(cl, bytes, "a buffer") != 0) return NULL;
    cl_int err;
    cl_mem_flags flags = CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0);
    cl_mem b = clCreateBuffer(cl->context, flags, bytes, (void *)host, &err);
    if (err != CL_SUCCESS) {
        ivae_set_error("%s cannot allocate a buffer of %.1f MiB (OpenCL error %s (%d) from clCreateBuffer; the "
                       "device has %.1f MiB in all)",
                       cl->device_name, mib(bytes), cl_error_name(err), (int)err, mib(cl->global_mem));
        return NULL;
    }
    return b;
}

cl_mem ivae_cl_buffer(IvaeCl *cl, size_t n, const float *host) {
    return buffer_bytes(cl, (n ? n : 1) * sizeof(float), host);
}

static int read_at(IvaeCl *cl, float *dst, cl_mem src, size_t offset, size_t n) {
    if (n == 0) return 0;
    return CL_CHECK(clEnqueueReadBuffer(cl->queue, src, CL_TRUE, offset * sizeof(float), n * sizeof(float), dst, 0,
                                        NULL, NULL))
               ? -1
               : 0;
}

int ivae_cl_read(IvaeCl *cl, float *dst, cl_mem src, size_t n) { return read_at(cl, dst, src, 0, n); }

int ivae_cl_write(IvaeCl *cl, cl_mem dst, const float *src, size_t n) {
    if (n == 0) return 0;
    return CL_CHECK(clEnqueueWriteBuffer(cl->queue, dst, CL_TRUE, 0, n * sizeof(float), src, 0, NULL, NULL)) ? -1 : 0;
}

cl_mem ivae_cl_buffer_bytes(IvaeCl *cl, size_t n, const void *host) { return buffer_bytes(cl, n, host); }

int ivae_cl_write_bytes(IvaeCl *cl, cl_mem dst, const void *src, size_t n) {
    if (n == 0) return 0;
    return CL_CHECK(clEnqueueWriteBuffer(cl->queue, dst, CL_TRUE, 0, n, src, 0, NULL, NULL)) ? -1 : 0;
}

int ivae_cl_read_bytes(IvaeCl *cl, void *dst, cl_mem src, size_t n) {
    if (n == 0) return 0;
    return CL_CHECK(clEnqueueReadBuffer(cl->queue, src, CL_TRUE, 0, n, dst, 0, NULL, NULL)) ? -1 : 0;
}

int ivae_cl_finish(IvaeCl *cl) { return CL_CHECK(clFinish(cl->queue)) ? -1 : 0; }

/* a scratch buffer of at least n floats, grown on demand (layers.c's ivae_scratch()) */
static cl_mem scratch(IvaeCl *cl, int slot, size_t n) {
    if (n == 0) n = 1;
    if (n * sizeof(float) > cl->scratch_bytes[slot]) {
        if (cl->scratch[slot]) CL_CHECK(clReleaseMemObject(cl->scratch[slot]));
        cl->scratch_bytes[slot] = 0;
        if (!(cl->scratch[slot] = ivae_cl_buffer(cl, n, NULL))) return NULL;
        cl->scratch_bytes[slot] = n * sizeof(float);
    }
    return cl->scratch[slot];
}

/* --- launching a kernel ----------------------------------------------------
   RUN(cl, kernel, n, args...) sets the arguments in order and runs n
   work-items, the global size rounded up to a multiple of the work-group size
   (each kernel returns early past its n). Arguments: MEM(buffer or NULL),
   INT(v), FLT(v), ULONG(v). */
typedef struct {
    size_t size;
    const void *value;
} KArg;
#define MEM(m) ((KArg){sizeof(cl_mem), &(cl_mem){(m)}})
#define INT(v) ((KArg){sizeof(cl_int), &(cl_int){(v)}})
#define FLT(v) ((KArg){sizeof(cl_float), &(cl_float){(v)}})
#define ULONG(v) ((KArg){sizeof(cl_ulong), &(cl_ulong){(v)}})
#define RUN(cl, name, n, ...)                                                                                  \
    run_kernel((cl), IVAE_K_##name, (n), (const KArg[]){__VA_ARGS__},                                          \
               (int)(sizeof((const KArg[]){__VA_ARGS__}) / sizeof(KArg)))

/* IVAE_CL_PROFILE: waits for kernel k, launched at t0, and counts its time */
static int profile_end(IvaeCl *cl, int k, double t0) {
    if (CL_CHECK(clFinish(cl->queue))) return -1;
    cl->prof_s[k] += seconds() - t0;
    cl->prof_n[k]++;
    return 0;
}

/* Fault injection, to rehearse a device that fails mid-run (a lost GPU, an
   out-of-resources launch): env IVAE_CL_FAIL_AFTER=N lets N kernel launches
   through and fails every later one as the driver would, with
   CL_OUT_OF_RESOURCES. Counted over the process; -1: off. */
static long long g_fail_after = -2, g_launches;

static int launch_fault(int k) {
    if (g_fail_after == -2) {
        const char *v = getenv("IVAE_CL_FAIL_AFTER");
        g_fail_after = -1;
        if (v && *v && parse_int(v, 0, LLONG_MAX, &g_fail_after) != 0) {
            g_fail_after = -1;
            ivae_set_error("IVAE_CL_FAIL_AFTER=%.40s is not a count of kernel launches (0, 1, ...)", v);
            return -1;
        }
    }
    if (g_fail_after < 0 || g_launches++ < g_fail_after) return 0;
    ivae_set_error("OpenCL error CL_OUT_OF_RESOURCES (-5) from clEnqueueNDRangeKernel (kernel %s; injected by "
                   "IVAE_CL_FAIL_AFTER=%lld after that many launches)", kernel_names[k], g_fail_after);
    return -1;
}

static int run_kernel(IvaeCl *cl, int k, size_t n, const KArg *args, int nargs) {
    if (n == 0) return 0;
    if (launch_fault(k)) return -1;
    for (int a = 0; a < nargs; a++)
        if (CL_CHECK(clSetKernelArg(cl->kernel[k], (cl_uint)a, args[a].size, args[a].value))) {
            fprintf(stderr, "ivae: (kernel %s, argument %d)\n", kernel_names[k], a);
            return -1;
        }
    size_t local = cl->local[k], global = (n + local - 1) / local * local;
    double t0 = cl->profile ? seconds() : 0;
    if (CL_CHECK(clEnqueueNDRangeKernel(cl->queue, cl->kernel[k], 1, NULL, &global, &local, 0, NULL, NULL))) {
        fprintf(stderr, "ivae: (kernel %s, %zu work-items in groups of %zu)\n", kernel_names[k], global, local);
        return -1;
    }
    return cl->profile ? profile_end(cl, k, t0) : 0;
}

/* RUN_ND(cl, kernel, global, local, args...): the same with a 1-, 2- or 3-D
   range, global[3] and local[3] given (global a multiple of local) */
#define RUN_ND(cl, name, global, local, ...)                                                                   \
    run_kernel_nd((cl), IVAE_K_##name, (global), (local), (const KArg[]){__VA_ARGS__},                         \
                  (int)(sizeof((const KArg[]){__VA_ARGS__}) / sizeof(KArg)))

static int run_kernel_nd(IvaeCl *cl, int k, const size_t *global, const size_t *local, const KArg *args, int nargs) {
    if (global[0] == 0 || global[1] == 0 || global[2] == 0) return 0;
    if (launch_fault(k)) return -1;
    for (int a = 0; a < nargs; a++)
        if (CL_CHECK(clSetKernelArg(cl->kernel[k], (cl_uint)a, args[a].size, args[a].value))) {
            fprintf(stderr, "ivae: (kernel %s, argument %d)\n", kernel_names[k], a);
            return -1;
        }
    double t0 = cl->profile ? seconds() : 0;
    if (CL_CHECK(clEnqueueNDRangeKernel(cl->queue, cl->kernel[k], 3, NULL, global, local, 0, NULL, NULL))) {
        fprintf(stderr, "ivae: (kernel %s, %zu x %zu x %zu work-items in groups of %zu x %zu x %zu)\n",
                kernel_names[k], global[0], global[1], global[2], local[0], local[1], local[2]);
        return -1;
    }
    return cl->profile ? profile_end(cl, k, t0) : 0;
}

/* ========================================================================== */
/* 4. the layers and the loss                                                 */
/* ========================================================================== */

static int conv_out_t(int T, int st) { return (T - 1) / st + 1; }
static int conv_out_s(int H, int k, int s) { return (H + 2 * (k / 2) - k) / s + 1; }

/* the forward kernels' work-items: FM output channels x FN outputs of a row each (kernels.cl) */
#define FWD_FM 8
#define FWD_FN 8
static size_t forward_items(int Cout, int To, int Ho, int Wo) {
    return (size_t)(Cout + FWD_FM - 1) / FWD_FM * To * Ho * ((Wo + FWD_FN - 1) / FWD_FN);
}

/* the eleven size arguments every conv kernel takes, in layers.c's order */
#define CONV_SIZES                                                                                             \
    INT(Cin), INT(T), INT(H), INT(W), INT(Cout), INT(kt), INT(kh), INT(kw), INT(st), INT(sh), INT(sw)

int ivae_cl_conv3d_forward(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem weight, cl_mem bias, int Cin, int T, int H,
                           int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw) {
    // out (Cout, To, Ho, Wo), inp (Cin, T, H, W), weight (Cout, Cin, kt, kh, kw), bias (Cout) or NULL
    size_t n = forward_items(Cout, conv_out_t(T, st), conv_out_s(H, kh, sh), conv_out_s(W, kw, sw));
    return RUN(cl, conv3d_forward, n, MEM(out), MEM(inp), MEM(weight), MEM(bias), CONV_SIZES);
}

int ivae_cl_conv3d_forward_chunk(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem prev, int s0, cl_mem weight,
                                 cl_mem bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                                 int sh, int sw) {
    // out (Cout, To, Ho, Wo) for the To output frames whose last tap falls in frames s0 .. s0+T-1
    int first = (s0 + st - 1) / st, last = (s0 + T - 1) / st, To = last - first + 1;
    if (To <= 0) return 0;
    size_t n = forward_items(Cout, To, conv_out_s(H, kh, sh), conv_out_s(W, kw, sw));
    if (RUN(cl, conv3d_forward_chunk, n, MEM(out), MEM(inp), MEM(prev), INT(s0), MEM(weight), MEM(bias), CONV_SIZES))
        return -1;
    return To;
}

int ivae_cl_conv3d_forward_padded(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem prev, int s0, cl_mem weight,
                                  cl_mem bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                                  int sh, int sw, int top, int bottom, int left, int right) {
    // out (Cout, To, Ho, Wo), Ho = (H + top + bottom - kh) / sh + 1, Wo likewise
    int first = (s0 + st - 1) / st, last = (s0 + T - 1) / st, To = last - first + 1;
    if (To <= 0) return 0;
    int Ho = (H + top + bottom - kh) / sh + 1, Wo = (W + left + right - kw) / sw + 1;
    size_t n = forward_items(Cout, To, Ho, Wo);
    if (RUN(cl, conv3d_forward_padded, n, MEM(out), MEM(inp), MEM(prev), INT(s0), MEM(weight), MEM(bias), CONV_SIZES,
            INT(top), INT(bottom), INT(left), INT(right)))
        return -1;
    return To;
}

int ivae_cl_cache_push(IvaeCl *cl, cl_mem cache, int keep, int had, cl_mem x, int C, int T, int H, int W) {
    // cache (C, keep, H, W), x (C, T, H, W); one work-item per channel and pixel
    return RUN(cl, cache_push, (size_t)C * H * W, MEM(cache), INT(keep), INT(had), MEM(x), INT(C), INT(T), INT(H),
               INT(W));
}

int ivae_cl_conv3d_backward(IvaeCl *cl, cl_mem dinp, cl_mem dweight, cl_mem dbias, cl_mem dout, cl_mem inp,
                            cl_mem weight, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw, int st,
                            int sh, int sw) {
    // dinp (Cin, T, H, W) written; dweight, dbias accumulated; dout (Cout, To, Ho, Wo)
    // the input gradient as in conv_tuned.c: the flipped convolution of dy (strided: of dy spread to the stride-1 grid)
    // (a dinp work-item computes four w of a row: neighbours, or strided sw apart, so that a row of W is
    // ceil(W / (4 sw)) groups of sw work-items; a dweight work-item four output channels)
    size_t nx4 = (size_t)Cin * T * H * ((W + 3) / 4), nw4 = (size_t)(Cout + 3) / 4 * Cin * kt * kh * kw;
    size_t nxs = (size_t)Cin * T * H * ((W + 4 * sw - 1) / (4 * sw) * sw);
    if (dinp && st == 1 && sh == 1 && sw == 1) {
        if (RUN(cl, conv3d_backward_dinp, nx4, MEM(dinp), MEM(dout), MEM(weight), CONV_SIZES)) return -1;
    } else if (dinp) {
        if (RUN(cl, conv3d_backward_dinp_strided, nxs, MEM(dinp), MEM(dout), MEM(weight), CONV_SIZES)) return -1;
    }
    if (dweight && RUN(cl, conv3d_backward_dweight, nw4, MEM(dweight), MEM(dout), MEM(inp), CONV_SIZES)) return -1;
    if (dbias && RUN(cl, conv3d_backward_dbias, (size_t)Cout, MEM(dbias), MEM(dout), CONV_SIZES)) return -1;
    return 0;
}

int ivae_cl_smc_weight_forward(IvaeCl *cl, cl_mem what, cl_mem norm, cl_mem weight, cl_mem scale, cl_mem gain,
                               int Cout, int Cin, int K) {
    return RUN(cl, smc_weight_forward, (size_t)Cout, MEM(what), MEM(norm), MEM(weight), MEM(scale), MEM(gain),
               INT(Cout), INT(Cin), INT(K));
}

int ivae_cl_smc_weight_backward(IvaeCl *cl, cl_mem dweight, cl_mem dscale, cl_mem dgain, cl_mem dwhat, cl_mem norm,
                                cl_mem weight, cl_mem scale, cl_mem gain, int Cout, int Cin, int K) {
    cl_mem dot = scratch(cl, IVAE_CLS_DOT, (size_t)Cout);
    if (!dot) return -1;
    if (RUN(cl, smc_weight_backward_dot, (size_t)Cout, MEM(dot), MEM(dwhat), MEM(weight), MEM(scale), INT(Cout),
            INT(Cin), INT(K)))
        return -1;
    if (dweight && RUN(cl, smc_weight_backward_dweight, (size_t)Cout * Cin * K, MEM(dweight), MEM(dwhat), MEM(norm),
                       MEM(dot), MEM(weight), MEM(scale), MEM(gain), INT(Cout), INT(Cin), INT(K)))
        return -1;
    if (dscale && RUN(cl, smc_weight_backward_dscale, (size_t)Cin, MEM(dscale), MEM(dwhat), MEM(norm), MEM(dot),
                      MEM(weight), MEM(scale), MEM(gain), INT(Cout), INT(Cin), INT(K)))
        return -1;
    if (dgain && RUN(cl, smc_weight_backward_dgain, 1, MEM(dgain), MEM(norm), MEM(dot), INT(Cout))) return -1;
    return 0;
}

int ivae_cl_silu_forward(IvaeCl *cl, cl_mem out, cl_mem inp, size_t n) {
    return RUN(cl, silu_forward, n, MEM(out), MEM(inp), ULONG(n));
}

int ivae_cl_silu_backward(IvaeCl *cl, cl_mem dinp, cl_mem dout, cl_mem inp, size_t n) {
    return RUN(cl, silu_backward, n, MEM(dinp), MEM(dout), MEM(inp), ULONG(n));
}

int ivae_cl_pixelnorm_forward(IvaeCl *cl, cl_mem out, cl_mem norm, cl_mem inp, int C, size_t N) {
    return RUN(cl, pixelnorm_forward, N, MEM(out), MEM(norm), MEM(inp), INT(C), ULONG(N));
}

int ivae_cl_pixelnorm_backward(IvaeCl *cl, cl_mem dinp, cl_mem dout, cl_mem norm, cl_mem inp, int C, size_t N) {
    return RUN(cl, pixelnorm_backward, N, MEM(dinp), MEM(dout), MEM(norm), MEM(inp), INT(C), ULONG(N));
}

/* GroupNorm (SPEC 9): the channels' shares of each sum in scratch (C, T),
   four of them in the backward pass (kernels.cl says in which order) */
int ivae_cl_groupnorm_forward(IvaeCl *cl, cl_mem out, cl_mem stats, cl_mem inp, cl_mem weight, cl_mem bias, int C,
                              int T, int H, int W, int G) {
    size_t CT = (size_t)C * T, GT = (size_t)G * T;
    cl_mem part = scratch(cl, IVAE_CLS_GN, 4 * CT);
    if (!part) return -1;
    for (int sq = 0; sq < 2; sq++) /* S and the mean, then V and the sd */
        if (RUN(cl, groupnorm_forward_sums, CT, MEM(part), MEM(stats), MEM(inp), INT(C), INT(T), INT(H), INT(W),
                INT(G), INT(sq)) ||
            RUN(cl, groupnorm_forward_stats, GT, MEM(stats), MEM(part), INT(C), INT(T), INT(H), INT(W), INT(G),
                INT(sq)))
            return -1;
    return RUN(cl, groupnorm_forward_apply, CT * H * W, MEM(out), MEM(stats), MEM(inp), MEM(weight), MEM(bias),
               INT(C), INT(T), INT(H), INT(W), INT(G));
}

int ivae_cl_groupnorm_backward(IvaeCl *cl, cl_mem dinp, cl_mem dweight, cl_mem dbias, cl_mem dout, cl_mem stats,
                               cl_mem inp, cl_mem weight, int C, int T, int H, int W, int G) {
    size_t CT = (size_t)C * T;
    if (!dinp && !dweight && !dbias) return 0;
    cl_mem part = scratch(cl, IVAE_CLS_GN, 4 * CT);
    if (!part || RUN(cl, groupnorm_backward_sums, CT, MEM(part), MEM(dout), MEM(stats), MEM(inp), MEM(weight),
                     INT(C), INT(T), INT(H), INT(W), INT(G)))
        return -1;
    if (dinp && RUN(cl, groupnorm_backward_dinp, CT * H * W, MEM(dinp), MEM(part), MEM(dout), MEM(stats), MEM(inp),
                    MEM(weight), INT(C), INT(T), INT(H), INT(W), INT(G)))
        return -1;
    if ((dweight || dbias) && RUN(cl, groupnorm_backward_dweight, (size_t)C, MEM(dweight), MEM(dbias), MEM(part),
                                  INT(C), INT(T), INT(dweight != NULL), INT(dbias != NULL)))
        return -1;
    return 0;
}

int ivae_cl_rmsnorm_forward(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem gamma, int C, size_t N) {
    return RUN(cl, rmsnorm_forward, N, MEM(out), MEM(inp), MEM(gamma), INT(C), ULONG(N));
}

int ivae_cl_attention_forward(IvaeCl *cl, cl_mem out, cl_mem att, cl_mem qkv, int C, int T, int H, int W, int mode) {
    // out (C, N), att (N, L), qkv (3C, N); L = N (causal) or H*W (frame)
    return RUN(cl, attention_forward, (size_t)T * H * W, MEM(out), MEM(att), MEM(qkv), INT(C), INT(T), INT(H),
               INT(W), INT(mode));
}

int ivae_cl_attention_backward(IvaeCl *cl, cl_mem dqkv, cl_mem dout, cl_mem att, cl_mem qkv, int C, int T, int H,
                               int W, int mode) {
    // dqkv (3C, N) written; ds (N, L) lives in scratch between the two kernels
    size_t N = (size_t)T * H * W, L = mode == IVAE_ATTN_CAUSAL ? N : (size_t)H * W;
    cl_mem ds = scratch(cl, IVAE_CLS_ATT, N * L);
    if (!ds) return -1;
    if (RUN(cl, attention_backward_dsdq, N, MEM(dqkv), MEM(ds), MEM(dout), MEM(att), MEM(qkv), INT(C), INT(T),
            INT(H), INT(W), INT(mode)))
        return -1;
    return RUN(cl, attention_backward_dkdv, N, MEM(dqkv), MEM(ds), MEM(dout), MEM(att), MEM(qkv), INT(C), INT(T),
               INT(H), INT(W), INT(mode));
}

int ivae_cl_upsample_forward(IvaeCl *cl, cl_mem out, cl_mem inp, int C, int T, int H, int W, int temporal) {
    size_t n = (size_t)C * (temporal ? 2 * T - 1 : T) * 4 * H * W;
    return RUN(cl, upsample_forward, n, MEM(out), MEM(inp), INT(C), INT(T), INT(H), INT(W), INT(temporal));
}

int ivae_cl_upsample_chunk(IvaeCl *cl, cl_mem out, cl_mem inp, int C, int T, int H, int W, int temporal, int first) {
    size_t n = (size_t)C * (temporal ? (first ? 2 * T - 1 : 2 * T) : T) * 4 * H * W;
    return RUN(cl, upsample_chunk, n, MEM(out), MEM(inp), INT(C), INT(T), INT(H), INT(W), INT(temporal),
               INT(first));
}

int ivae_cl_upsample_backward(IvaeCl *cl, cl_mem dinp, cl_mem dout, int C, int T, int H, int W, int temporal) {
    return RUN(cl, upsample_backward, (size_t)C * T * H * W, MEM(dinp), MEM(dout), INT(C), INT(T), INT(H), INT(W),
               INT(temporal));
}

int ivae_cl_upsample_interleave(IvaeCl *cl, cl_mem out, cl_mem inp, int C, int T, int H, int W) {
    return RUN(cl, upsample_interleave, (size_t)C * 2 * T * H * W, MEM(out), MEM(inp), INT(C), INT(T), INT(H),
               INT(W));
}

/* --- the loss --------------------------------------------------------------- */

int ivae_cl_sum_nested(IvaeCl *cl, double *sum, cl_mem v, int C, int T, int H, int W) {
    // as in C: a float sum, converted to double at the end
    cl_mem part = scratch(cl, IVAE_CLS_SUM, (size_t)C); /* the channel sums */
    cl_mem total = scratch(cl, IVAE_CLS_TOTAL, 1);
    float s;
    if (!part || !total ||
        RUN(cl, sum_nested_channel, (size_t)C, MEM(part), MEM(v), INT(C), INT(T), INT(H), INT(W)) ||
        RUN(cl, sum_nested_total, 1, MEM(total), MEM(part), INT(C)) || read_at(cl, &s, total, 0, 1))
        return -1;
    *sum = s;
    return 0;
}

int ivae_cl_rec_loss(IvaeCl *cl, double *rec, cl_mem dxhat, cl_mem xhat, cl_mem x, int C, int T, int H, int W,
                     float coef, cl_mem scratch) {
    // rec = sum |xhat - x| (nested order); dxhat = coef * sign(xhat - x) unless NULL
    if (RUN(cl, rec_loss, (size_t)C * T * H * W, MEM(dxhat), MEM(xhat), MEM(x), INT(C), INT(T), INT(H), INT(W),
            FLT(coef), MEM(scratch)))
        return -1;
    return ivae_cl_sum_nested(cl, rec, scratch, C, T, H, W);
}

int ivae_cl_latent_forward(IvaeCl *cl, double *kl, cl_mem logvar, cl_mem zs, cl_mem h, cl_mem eps, int C, int T,
                           int H, int W, cl_mem scratch) {
    // kl = 0.5 * sum (mu^2 + exp(logvar) - 1 - logvar), unnormalised, nested order
    if (RUN(cl, latent_forward, (size_t)C * T * H * W, MEM(logvar), MEM(zs), MEM(h), MEM(eps), INT(C), INT(T), INT(H),
            INT(W), MEM(scratch)))
        return -1;
    return ivae_cl_sum_nested(cl, kl, scratch, C, T, H, W);
}

int ivae_cl_latent_backward(IvaeCl *cl, cl_mem dh, cl_mem dz, cl_mem logvar, cl_mem h, cl_mem eps, size_t n,
                            float ckl) {
    return RUN(cl, latent_backward, n, MEM(dh), MEM(dz), MEM(logvar), MEM(h), MEM(eps), ULONG(n), FLT(ckl));
}

/* the scratch of the outlier penalty: the kernels' per-frame statistics
   (kernels.cl, OPL_*): m (T, C), S (T), dist (T, HW), nact (T), oplt (T), G (T, C) */
size_t ivae_cl_opl_scratch(int C, int T, int H, int W) { return (size_t)T * (2 * (size_t)C + (size_t)H * W + 3); }

int ivae_cl_opl_forward_backward(IvaeCl *cl, double *opl, cl_mem dz, cl_mem z, int C, int T, int H, int W,
                                 float coef, cl_mem scratch) {
    // opl = mean over frames of opl_t; with coef != 0 also dz += coef * d(opl)/dz
    size_t HW = (size_t)H * W, oplt_at = (size_t)T * C + 2 * (size_t)T + (size_t)T * HW;
    if (RUN(cl, opl_forward_backward_stats, (size_t)T, MEM(scratch), MEM(z), INT(C), INT(T), INT(H), INT(W)) ||
        RUN(cl, opl_forward_backward_dist, (size_t)T * HW, MEM(scratch), MEM(z), INT(C), INT(T), INT(H), INT(W)) ||
        RUN(cl, opl_forward_backward_hinge, (size_t)T, MEM(scratch), INT(C), INT(T), INT(H), INT(W)))
        return -1;
    float *oplt = malloc((size_t)T * sizeof(float));
    if (!oplt) {
        ivae_set_error("out of memory");
        return -1;
    }
    if (read_at(cl, oplt, scratch, oplt_at, (size_t)T) != 0) {
        free(oplt);
        return -1;
    }
    /* as in C: the frames' float values summed in double */
    double total = 0;
    for (int t = 0; t < T; t++) total += oplt[t];
    free(oplt);
    *opl = total / T;
    if (coef == 0 || !dz) return 0;
    if (RUN(cl, opl_forward_backward_g, (size_t)T * C, MEM(scratch), MEM(z), INT(C), INT(T), INT(H), INT(W)) ||
        RUN(cl, opl_forward_backward_dz, (size_t)C * T * HW, MEM(dz), MEM(scratch), MEM(z), INT(C), INT(T), INT(H),
            INT(W), FLT(coef)))
        return -1;
    return 0;
}

/* --- the model's glue (ivae.c sections 6, 8) ---------------------------------- */

int ivae_cl_residual_add(IvaeCl *cl, cl_mem y, cl_mem a, size_t n) {
    return RUN(cl, residual_add, n, MEM(y), MEM(a), ULONG(n));
}

int ivae_cl_residual_sub(IvaeCl *cl, cl_mem y, cl_mem a, size_t n) {
    return RUN(cl, residual_sub, n, MEM(y), MEM(a), ULONG(n));
}

int ivae_cl_adamw_tensor(IvaeCl *cl, cl_mem w, cl_mem g, cl_mem m, cl_mem v, size_t n, float lr, float beta1,
                         float beta2, float eps, float wd, float c1, float c2) {
    return RUN(cl, adamw_step, n, MEM(w), MEM(g), MEM(m), MEM(v), ULONG(n), FLT(lr), FLT(beta1), FLT(beta2),
               FLT(eps), FLT(wd), FLT(c1), FLT(c2));
}

int ivae_cl_nonfinite_flags(IvaeCl *cl, cl_mem flags, cl_mem v, size_t n, int block) {
    return RUN(cl, nonfinite_flags, (n + block - 1) / block, MEM(flags), MEM(v), ULONG(n), INT(block));
}

int ivae_cl_unit_scale(IvaeCl *cl, cl_mem x, cl_mem off, cl_mem len, cl_mem f, int n, int max_len) {
    size_t local[3] = {64, 1, 1}, global[3] = {((size_t)max_len + 63) / 64 * 64, (size_t)n, 1};
    if (local[0] > cl->local[IVAE_K_unit_scale]) local[0] = cl->local[IVAE_K_unit_scale];
    global[0] = ((size_t)max_len + local[0] - 1) / local[0] * local[0];
    return RUN_ND(cl, unit_scale, global, local, MEM(x), MEM(off), MEM(len), MEM(f), INT(n));
}

static int need_fp64(IvaeCl *cl, const char *what) {
    if (cl->fp64) return 0;
    ivae_set_error("%s needs cl_khr_fp64, which %s lacks (or IVAE_CL_NO_FP64 is set)", what, cl->device_name);
    return -1;
}

int ivae_cl_unit_sumsq(IvaeCl *cl, cl_mem out, cl_mem x, cl_mem off, cl_mem len, int n) {
    if (need_fp64(cl, "unit_sumsq")) return -1;
    return RUN(cl, unit_sumsq, (size_t)n, MEM(out), MEM(x), MEM(off), MEM(len), INT(n));
}

int ivae_cl_pixel_sumsq(IvaeCl *cl, cl_mem out, cl_mem y, int C, size_t N) {
    if (need_fp64(cl, "pixel_sumsq")) return -1;
    return RUN(cl, pixel_sumsq, N, MEM(out), MEM(y), INT(C), ULONG(N));
}

int ivae_cl_zero(IvaeCl *cl, cl_mem b, size_t n) {
    if (n == 0) return 0;
    cl_float zero = 0;
    return CL_CHECK(clEnqueueFillBuffer(cl->queue, b, &zero, sizeof zero, 0, n * sizeof(float), 0, NULL, NULL)) ? -1
                                                                                                              : 0;
}

/* --- the fast kernels --------------------------------------------------------- */

#define FT 64 /* kernels_fast.cl: the tile of C one work-group computes */
#define FG IVAE_CL_FAST_GROUP

static int fast_ready(IvaeCl *cl) {
    if (cl->fast_ok) return 0;
    ivae_set_error("the fast OpenCL kernels cannot run on %s: %s", cl->device_name, cl->fast_why);
    return -1;
}

/* the range of a tiled product C (M, N), batch entries (or chunks) nb */
static void tiled_range(size_t *global, size_t *local, size_t M, size_t N, size_t nb) {
    global[0] = (N + FT - 1) / FT * FG, global[1] = (M + FT - 1) / FT * FG, global[2] = nb;
    local[0] = FG, local[1] = FG, local[2] = 1;
}

int ivae_cl_conv3d_forward_fast(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem weight, cl_mem bias, int Cin, int T,
                                int H, int W, int Cout, int kt, int kh, int kw, int st, int sh, int sw) {
    // out (Cout, To, Ho, Wo), inp (Cin, T, H, W), weight (Cout, Cin, kt, kh, kw), bias (Cout) or NULL
    if (fast_ready(cl)) return -1;
    size_t P = (size_t)conv_out_t(T, st) * conv_out_s(H, kh, sh) * conv_out_s(W, kw, sw), global[3], local[3];
    tiled_range(global, local, Cout, P, 1);
    return RUN_ND(cl, conv3d_forward_fast, global, local, MEM(out), MEM(inp), MEM(weight), MEM(bias), CONV_SIZES);
}

int ivae_cl_conv3d_forward_padded_fast(IvaeCl *cl, cl_mem out, cl_mem inp, cl_mem prev, int s0, cl_mem weight,
                                       cl_mem bias, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                       int st, int sh, int sw, int top, int bottom, int left, int right) {
    // as ivae_cl_conv3d_forward_padded: returns the number of output frames
    if (fast_ready(cl)) return -1;
    int first = (s0 + st - 1) / st, To = (s0 + T - 1) / st - first + 1;
    if (To <= 0) return 0;
    size_t P = (size_t)To * ((H + top + bottom - kh) / sh + 1) * ((W + left + right - kw) / sw + 1), global[3], local[3];
    tiled_range(global, local, Cout, P, 1);
    if (RUN_ND(cl, conv3d_forward_padded_fast, global, local, MEM(out), MEM(inp), MEM(prev), INT(s0), MEM(weight),
               MEM(bias), CONV_SIZES, INT(top), INT(bottom), INT(left), INT(right)))
        return -1;
    return To;
}

/* the weight gradient's reduction over P positions runs in chunks of at most
   2048 positions (a multiple of the kernel's 16), enough of them to give
   the device some 512 work-groups; the partial sums are added in order */
int ivae_cl_conv3d_backward_fast(IvaeCl *cl, cl_mem dinp, cl_mem dweight, cl_mem dbias, cl_mem dout, cl_mem inp,
                                 cl_mem weight, int Cin, int T, int H, int W, int Cout, int kt, int kh, int kw,
                                 int st, int sh, int sw) {
    // dinp (Cin, T, H, W) written; dweight, dbias accumulated; dout (Cout, To, Ho, Wo)
    if (fast_ready(cl)) return -1;
    size_t P = (size_t)conv_out_t(T, st) * conv_out_s(H, kh, sh) * conv_out_s(W, kw, sw), global[3], local[3];
    size_t N = (size_t)T * H * W, NJ = (size_t)Cin * kt * kh * kw;
    if (dinp) {
        tiled_range(global, local, Cin, N, 1);
        if (RUN_ND(cl, conv3d_backward_dinp_fast, global, local, MEM(dinp), MEM(dout), MEM(weight), CONV_SIZES))
            return -1;
    }
    if (dweight) {
        size_t tiles = ((size_t)Cout + FT - 1) / FT * ((NJ + FT - 1) / FT), want = 512 / tiles + 1;
        size_t chunk = (P + want - 1) / want;
        chunk = chunk > 2048 ? 2048 : (chunk + 15) / 16 * 16;
        size_t chunks = (P + chunk - 1) / chunk;
        cl_mem part = scratch(cl, IVAE_CLS_PART, chunks * Cout * NJ);
        if (!part) return -1;
        tiled_range(global, local, Cout, NJ, chunks);
        if (RUN_ND(cl, conv3d_backward_dweight_fast, global, local, MEM(part), MEM(dout), MEM(inp), CONV_SIZES,
                   INT((int)chunk)) ||
            RUN(cl, conv3d_backward_dweight_reduce, (size_t)Cout * NJ, MEM(dweight), MEM(part),
                ULONG((size_t)Cout * NJ), INT((int)chunks)))
            return -1;
    }
    if (dbias) {
        size_t g[3] = {(size_t)Cout * FG * FG, 1, 1}, l[3] = {FG * FG, 1, 1};
        if (RUN_ND(cl, conv3d_backward_dbias_fast, g, l, MEM(dbias), MEM(dout), INT((int)P))) return -1;
    }
    return 0;
}

/* C[b](m, n) = alpha * sum_k A[b](m, k) B[b](k, n) for b < nb, X[b](i, j) = X[off + b bs + i si + j sj] */
typedef struct {
    cl_mem buf;
    size_t off, bs;
    int si, sj;
} Mat;

static int gemm(IvaeCl *cl, Mat C, Mat A, Mat B, int M, int N, int K, int nb, float alpha) {
    size_t global[3], local[3];
    tiled_range(global, local, M, N, nb);
    return RUN_ND(cl, gemm_fast, global, local, MEM(C.buf), ULONG(C.off), ULONG(C.bs), INT(C.si), INT(C.sj),
                  MEM(A.buf), ULONG(A.off), ULONG(A.bs), INT(A.si), INT(A.sj), MEM(B.buf), ULONG(B.off), ULONG(B.bs),
                  INT(B.si), INT(B.sj), INT(M), INT(N), INT(K), FLT(alpha));
}

/* Attention as products, per group of F tokens that see each other (a frame,
   or in causal mode the whole clip, masked): with q, k, v (C, N) and att (N, F),
   for each group b (tokens bF .. bF+F-1):
       att[b] = softmax(scale q[b]^T k[b]),  out[b] = v[b] att[b]^T */
int ivae_cl_attention_forward_fast(IvaeCl *cl, cl_mem out, cl_mem att, cl_mem qkv, int C, int T, int H, int W,
                                   int mode) {
    if (fast_ready(cl)) return -1;
    size_t N = (size_t)T * H * W, F = mode == IVAE_ATTN_CAUSAL ? N : (size_t)H * W, nb = N / F, CN = (size_t)C * N;
    float scale = 1 / sqrtf((float)C);
    if (gemm(cl, (Mat){att, 0, F * F, (int)F, 1}, (Mat){qkv, 0, F, 1, (int)N}, (Mat){qkv, CN, F, (int)N, 1}, (int)F,
             (int)F, C, (int)nb, scale) ||
        RUN(cl, attention_softmax_fast, N, MEM(att), INT(T), INT(H), INT(W), INT(mode)))
        return -1;
    return gemm(cl, (Mat){out, 0, F, (int)N, 1}, (Mat){qkv, 2 * CN, F, (int)N, 1}, (Mat){att, 0, F * F, 1, (int)F},
                C, (int)F, (int)F, (int)nb, 1);
}

/* da[b] = do[b]^T v[b];  ds = att * (da - rowsum(att * da));
   dq[b] = scale k[b] ds[b]^T,  dk[b] = scale q[b] ds[b],  dv[b] = do[b] att[b] */
int ivae_cl_attention_backward_fast(IvaeCl *cl, cl_mem dqkv, cl_mem dout, cl_mem att, cl_mem qkv, int C, int T,
                                    int H, int W, int mode) {
    if (fast_ready(cl)) return -1;
    size_t N = (size_t)T * H * W, F = mode == IVAE_ATTN_CAUSAL ? N : (size_t)H * W, nb = N / F, CN = (size_t)C * N;
    float scale = 1 / sqrtf((float)C);
    cl_mem ds = scratch(cl, IVAE_CLS_ATT, N * F);
    if (!ds) return -1;
    Mat dsr = {ds, 0, F * F, (int)F, 1}, dst = {ds, 0, F * F, 1, (int)F}; /* ds[b] and its transpose */
    if (gemm(cl, dsr, (Mat){dout, 0, F, 1, (int)N}, (Mat){qkv, 2 * CN, F, (int)N, 1}, (int)F, (int)F, C, (int)nb, 1) ||
        RUN(cl, attention_dsoftmax_fast, N, MEM(ds), MEM(att), INT(T), INT(H), INT(W), INT(mode)) ||
        gemm(cl, (Mat){dqkv, 0, F, (int)N, 1}, (Mat){qkv, CN, F, (int)N, 1}, dst, C, (int)F, (int)F, (int)nb, scale) ||
        gemm(cl, (Mat){dqkv, CN, F, (int)N, 1}, (Mat){qkv, 0, F, (int)N, 1}, dsr, C, (int)F, (int)F, (int)nb, scale) ||
        gemm(cl, (Mat){dqkv, 2 * CN, F, (int)N, 1}, (Mat){dout, 0, F, (int)N, 1}, (Mat){att, 0, F * F, (int)F, 1}, C,
             (int)F, (int)F, (int)nb, 1))
        return -1;
    return 0;
}
