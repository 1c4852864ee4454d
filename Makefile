# ivae: build and test. `make` builds ./ivae, `make test` runs every test.
#
# Switches: NO_OMP=1 builds without OpenMP. The flags never include fast-math:
# -ffp-contract=off keeps a*b+c as two rounded operations (no fused
# multiply-add), so the bits are the same on every x86 or ARM compiler.

CC      ?= gcc
PYTHON  ?= /usr/bin/python3
CFLAGS  ?= -O3 -march=native
CFLAGS  += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -ffp-contract=off
# x86 with AVX-512: let the compiler use 512-bit registers (the conv tiles need
# all 32 of them). Vector width never changes the bits: the order of every
# sum is fixed in the source.
CFLAGS  += $(shell $(CC) -march=native -mprefer-vector-width=512 -E -x c /dev/null > /dev/null 2>&1 && echo -mprefer-vector-width=512)
LDLIBS  += -lm
SAN     := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# --- OpenMP probe ------------------------------------------------------------
ifeq ($(NO_OMP),1)
  $(info ✗ OpenMP off (NO_OMP=1): single-threaded build)
  CFLAGS += -Wno-unknown-pragmas
else
  OMP_OK := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes)
  ifeq ($(OMP_OK),yes)
    $(info ✓ OpenMP found)
    CFLAGS += -fopenmp
  else
    $(info ✗ OpenMP not found: single-threaded build (install gcc's libgomp to get it))
    CFLAGS += -Wno-unknown-pragmas
  endif
endif

# stb (header-only image I/O) is the one library the build needs besides libc
ifeq ($(wildcard /usr/include/stb/stb_image.h),)
  $(error ✗ stb not found: install it with   sudo apt-get install libstb-dev)
endif

SRC  := ivae.c media.c train.c main.c util.c
HDR  := ivae.h ivae_math.h media.h train.h util.h

.PHONY: all asan test golden clean run
all: ivae

ivae: $(SRC) $(HDR)
	$(CC) $(CFLAGS) -o $@ $(SRC) $(LDLIBS)

# the sanitizer build, for the bad-input tests
ivae_asan: $(SRC) $(HDR)
	$(CC) $(filter-out -O2,$(CFLAGS)) $(SAN) -o $@ $(SRC) $(LDLIBS)
asan: ivae_asan

# the finite-difference check compiles ivae.c in double precision
test/gradcheck: test/gradcheck.c ivae.c $(HDR)
	$(CC) $(CFLAGS) -o $@ test/gradcheck.c $(LDLIBS)

test/test_model: test/test_model.c ivae.c $(HDR)
	$(CC) $(CFLAGS) -o $@ test/test_model.c $(LDLIBS)

# the main job (README): the shipped model on the held-out data, then a fresh
# model trained on data/ for the rest of 10 minutes
MINUTES ?= 10
run: ivae
	sh ./run.sh $(MINUTES)

# golden files from the project's PyTorch port (needs python3-torch)
golden:
	$(PYTHON) test/ref.py golden --config tiny --outdir test/golden
	$(PYTHON) test/ref.py golden --config ivae-s --outdir test/golden

test: ivae ivae_asan test/gradcheck test/test_model test/test_media test/test_media_asan test/test_cl
	PYTHON=$(PYTHON) sh test/run.sh

clean:
	rm -f ivae ivae_asan test/gradcheck test/test_model
	rm -rf test/out

# the benchmark (test/bench.c, test/bench_torch.py): ivae.c built with the same
# CFLAGS as ./ivae (BENCH_FLAGS adds to them), timed row by row next to the
# machine's fma peak and to PyTorch; prints a table and writes bench.csv.
# BENCH_ARGS passes flags, e.g. make bench BENCH_ARGS=--quick
.PHONY: bench
test/bench: test/bench.c ivae.c $(HDR)
	$(CC) $(CFLAGS) $(BENCH_FLAGS) -DBENCH_CFLAGS='"$(strip $(CFLAGS) $(BENCH_FLAGS))"' -o $@ test/bench.c ivae.c $(LDLIBS)

bench: test/bench
	./test/bench --python $(PYTHON) $(BENCH_ARGS)

# --- media: image/video I/O, metrics and pictures (media.c; stb, header-only) --
# test/test_media SCRATCH_DIR checks it; test/test_media_asan is the same
# program under ASan/UBSan. Uses ffmpeg for two cross-checks when installed.
test/test_media: test/test_media.c media.c media.h ivae.c $(HDR)
	$(CC) $(CFLAGS) -o $@ test/test_media.c media.c ivae.c $(LDLIBS)

test/test_media_asan: test/test_media.c media.c media.h ivae.c $(HDR)
	$(CC) $(filter-out -O2,$(CFLAGS)) $(SAN) -o $@ test/test_media.c media.c ivae.c $(LDLIBS)

.PHONY: clean_media
clean: clean_media
clean_media:
	rm -f test/test_media test/test_media_asan

# --- OpenCL ------------------------------------------------------------------
# The OpenCL twin of every layer (kernels.cl, driven by ivae_cl.c) and its
# test, test/test_cl: each kernel bit for bit against its C function, on
# whatever OpenCL device IVAE_CL_PLATFORM / IVAE_CL_DEVICE name (pocl here).
# `make test_cl` builds and runs it. NO_OPENCL=1 builds CPU only.
ifeq ($(NO_OPENCL),1)
  $(info ✗ OpenCL off (NO_OPENCL=1), building CPU only)
else
  OPENCL_OK := $(shell printf '\043include <CL/cl.h>\nint main(void){cl_uint n; return (int)clGetPlatformIDs(0, 0, &n);}\n' | \
                 $(CC) -DCL_TARGET_OPENCL_VERSION=120 -x c - -o /dev/null -lOpenCL 2>/dev/null && echo yes)
  ifeq ($(OPENCL_OK),yes)
    $(info ✓ OpenCL found)
  else
    $(info ✗ OpenCL not found, building CPU only (install ocl-icd-opencl-dev and an OpenCL driver, e.g. pocl-opencl-icd))
  endif
endif

# ./ivae gets the model on the device (ivae_cl_model.c: `--device cl`,
# `ivae devices`, `ivae compare`) when OpenCL is found, and otherwise a stub
# (ivae_cl_stub.c) whose functions say that the build has no OpenCL.
ifeq ($(OPENCL_OK),yes)
  CL_SRC := ivae_cl.c ivae_cl_model.c
  CL_LIB := -lOpenCL
else
  CL_SRC := ivae_cl_stub.c
  CL_LIB :=
endif
ivae ivae_asan: $(CL_SRC) ivae_cl_model.h $(if $(filter yes,$(OPENCL_OK)),ivae_cl.h)
ivae ivae_asan: SRC += $(CL_SRC)
ivae ivae_asan: LDLIBS += $(CL_LIB)

.PHONY: test_cl clean_cl
ifeq ($(OPENCL_OK),yes)
test/test_cl: test/test_cl.c ivae_cl.c ivae_cl.h ivae_cl_model.c ivae_cl_model.h ivae.c $(HDR)
	$(CC) $(CFLAGS) -o $@ test/test_cl.c ivae_cl.c ivae_cl_model.c $(LDLIBS) -lOpenCL

test_cl: test/test_cl
	./test/test_cl
else
test/test_cl test_cl:
	@echo "SKIP test_cl: built without OpenCL"
endif

clean: clean_cl
clean_cl:
	rm -f test/test_cl
