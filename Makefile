# ivae: build and test. `make` builds ./ivae, `make test` runs every test.
#
# Switches: NO_OMP=1 builds without OpenMP, NO_OPENCL=1 without OpenCL, NO_MPI=1
# without MPI, CC=clang another compiler. The flags never include fast-math: -ffp-contract=off
# forbids the compiler to fuse a*b+c on its own, so every a*b+c in the source
# is two roundings and every fused multiply-add is an explicit fmaf() where
# the summation rule (SPEC 8.1) asks for one: the same bits on every x86 or
# ARM compiler.

# make's built-in default for CC is cc; gcc unless the user names another
ifeq ($(origin CC),default)
  CC    := gcc
endif
PYTHON  ?= /usr/bin/python3
CFLAGS  ?= -O3 -march=native
CFLAGS  += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -ffp-contract=off
# -fno-trapping-math: ivae never reads the floating-point exception flags, so
# the compiler may evaluate both sides of a select. Without it gcc does not
# vectorise ivae_expf's loops on AVX2 (SiLU ran scalar: 9% of a training
# step). It changes no value: every operation and its rounding stay as
# written (what the fast-math options would change; those stay off).
CFLAGS  += -fno-trapping-math
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

# the library: the layers (layers.c, the tuned conv in conv_tuned.c), the ivae
# model (ivae.c), the Wan 2.1 VAE (wan.c), safetensors files, small helpers;
# then the program
LIB  := util.c safetensors.c layers.c conv_tuned.c ivae.c wan.c
SRC  := $(LIB) media.c train.c lessons.c main.c
HDR  := ivae.h layers.h safetensors.h util.h wan.h ivae_math.h media.h train.h

.PHONY: all asan test golden clean run
all: ivae

ivae: $(SRC) $(HDR)
	$(CC) $(CFLAGS) -o $@ $(SRC) $(LDLIBS)

# the sanitizer build, for the bad-input tests
ivae_asan: $(SRC) $(HDR)
	$(CC) $(filter-out -O2,$(CFLAGS)) $(SAN) -o $@ $(SRC) $(LDLIBS)
asan: ivae_asan

# the finite-difference check compiles ivae.c in double precision
test/gradcheck: test/gradcheck.c $(LIB) $(HDR)
	$(CC) $(CFLAGS) -DIVAE_DOUBLE -o $@ test/gradcheck.c $(LIB) $(LDLIBS)

# the tuned convolution against the naive one, bit for bit
test/test_conv: test/test_conv.c $(LIB) $(HDR)
	$(CC) $(CFLAGS) -o $@ test/test_conv.c $(LIB) $(LDLIBS)

# the same test built without AVX-512 (x86), so that an AVX-512 machine also
# checks the AVX2 tiles of conv_tuned.c (elsewhere it is test_conv again)
NO512   := $(shell $(CC) -march=native -mno-avx512f -E -x c /dev/null > /dev/null 2>&1 && echo -mno-avx512f)
test/test_conv_avx2: test/test_conv.c $(LIB) $(HDR)
	$(CC) $(CFLAGS) $(NO512) -o $@ test/test_conv.c $(LIB) $(LDLIBS)

# the Wan 2.1 VAE against test/wan_ref.py's golden files; its timing and memory
test/test_wan: test/test_wan.c $(LIB) $(HDR)
	$(CC) $(CFLAGS) -o $@ test/test_wan.c $(LIB) $(LDLIBS)

test/bench_wan: test/bench_wan.c $(LIB) $(HDR)
	$(CC) $(CFLAGS) -o $@ test/bench_wan.c $(LIB) $(LDLIBS)

# one conv shape timed (test/bench_conv CIN COUT T H KT K [PASSES [ST SS]])
test/bench_conv: test/bench_conv.c $(LIB) $(HDR)
	$(CC) $(CFLAGS) -o $@ test/bench_conv.c $(LIB) $(LDLIBS)

test/test_model: test/test_model.c $(LIB) $(HDR)
	$(CC) $(CFLAGS) -o $@ test/test_model.c $(LIB) $(LDLIBS)

# the main job (README): the shipped model on the held-out data, then a fresh
# model trained on data/ for the rest of 10 minutes
MINUTES ?= 10
run: ivae
	sh ./run.sh $(MINUTES)

# golden files from the project's PyTorch port (needs python3-torch)
golden:
	$(PYTHON) test/ref.py golden --config tiny --outdir test/golden
	$(PYTHON) test/ref.py golden --config ivae-s --outdir test/golden

test: ivae ivae_asan test/gradcheck test/test_conv test/test_conv_avx2 test/test_wan test/bench_wan test/bench test/bench_conv test/test_model test/test_media test/test_media_asan test/test_cl
	PYTHON=$(PYTHON) sh test/run.sh

clean:
	rm -f ivae ivae_asan test/gradcheck test/test_conv test/test_conv_avx2 test/test_wan test/bench_wan test/bench_conv test/bench test/test_model
	rm -rf test/out

# the benchmark (test/bench.c, test/bench_torch.py): ivae.c built with the same
# CFLAGS as ./ivae (BENCH_FLAGS adds to them), timed row by row next to the
# machine's fma peak and to PyTorch; prints a table and writes bench.csv.
# BENCH_ARGS passes flags, e.g. make bench BENCH_ARGS=--quick. Then the Wan 2.1
# rows (test/bench_wan.sh: encode and decode of 3 x 17 x 256 x 256 at the
# released width beside the PyTorch port; BENCH_WAN_ARGS passes its flags).
.PHONY: bench
test/bench: test/bench.c $(LIB) $(HDR)
	$(CC) $(CFLAGS) $(BENCH_FLAGS) -DBENCH_CFLAGS='"$(strip $(CFLAGS) $(BENCH_FLAGS))"' -o $@ test/bench.c $(LIB) $(LDLIBS)

bench: test/bench test/bench_wan ivae
	./test/bench --python $(PYTHON) $(BENCH_ARGS)
	PYTHON=$(PYTHON) sh test/bench_wan.sh $(BENCH_WAN_ARGS)
	sh test/bench_busy.sh

# --- media: image/video I/O, metrics and pictures (media.c; stb, header-only) --
# test/test_media SCRATCH_DIR checks it; test/test_media_asan is the same
# program under ASan/UBSan. Uses ffmpeg for two cross-checks when installed.
test/test_media: test/test_media.c media.c media.h $(LIB) $(HDR)
	$(CC) $(CFLAGS) -o $@ test/test_media.c media.c $(LIB) $(LDLIBS)

test/test_media_asan: test/test_media.c media.c media.h $(LIB) $(HDR)
	$(CC) $(filter-out -O2,$(CFLAGS)) $(SAN) -o $@ test/test_media.c media.c $(LIB) $(LDLIBS)

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
  CL_SRC := ivae_cl.c ivae_cl_model.c wan_cl.c
  CL_LIB := -lOpenCL
else
  CL_SRC := ivae_cl_stub.c
  CL_LIB :=
endif
ivae ivae_asan: $(CL_SRC) ivae_cl_model.h wan_cl.h $(if $(filter yes,$(OPENCL_OK)),ivae_cl.h)
ivae ivae_asan: SRC += $(CL_SRC)
ivae ivae_asan: LDLIBS += $(CL_LIB)

# --- MPI -----------------------------------------------------------------------
# `mpirun -np N ./ivae train ...` trains data-parallel, bit for bit as one
# process (dist.h, SPEC 8.2). With MPI found, ./ivae is compiled by the MPI
# wrapper (mpicc) around the same compiler (OMPI_CC, MPICH_CC) with the same
# CFLAGS: the wrapper adds only the include path and -lmpi. Without MPI (or
# NO_MPI=1) dist_stub.c is one process. ivae_asan always takes the stub.
MPICC ?= mpicc
ifeq ($(NO_MPI),1)
  $(info ✗ MPI off (NO_MPI=1): building without it)
else
  MPI_OK := $(shell printf '\043include <mpi.h>\nint main(void){return MPI_Init(0, 0);}\n' | \
              OMPI_CC=$(CC) MPICH_CC=$(CC) $(MPICC) -x c - -o /dev/null 2>/dev/null && echo yes)
  ifeq ($(MPI_OK),yes)
    $(info ✓ MPI found)
  else
    $(info ✗ MPI not found: building without it (install openmpi-bin libopenmpi-dev for data-parallel training))
  endif
endif
ifeq ($(MPI_OK),yes)
ivae: CC := OMPI_CC=$(CC) MPICH_CC=$(CC) $(MPICC)
ivae: SRC += dist.c
ivae: dist.c
else
ivae: SRC += dist_stub.c
ivae: dist_stub.c
endif
ivae_asan: SRC += dist_stub.c
ivae ivae_asan: dist.h dist_stub.c

.PHONY: test_cl clean_cl
ifeq ($(OPENCL_OK),yes)
test/test_cl: test/test_cl.c ivae_cl.c ivae_cl.h ivae_cl_model.c ivae_cl_model.h $(LIB) $(HDR)
	$(CC) $(CFLAGS) -o $@ test/test_cl.c ivae_cl.c ivae_cl_model.c $(LIB) $(LDLIBS) -lOpenCL

test_cl: test/test_cl
	./test/test_cl
else
test/test_cl test_cl:
	@echo "SKIP test_cl: built without OpenCL"
endif

clean: clean_cl
clean_cl:
	rm -f test/test_cl

# --- fuzzing (fuzz/, README "Hardening and fuzzing") ---------------------------
# libFuzzer harnesses of every parser, built with clang under ASan + UBSan:
# `make fuzz` builds them and runs each for FUZZ_SECONDS (default 120) from
# its seed corpus fuzz/corpus/TARGET (the corpus grown goes to fuzz/out/),
# then prints executions and findings per target; FUZZ_TARGETS picks some.
# `make fuzz_msan` builds the image harness under MemorySanitizer (stb is
# header-only, so the whole image path is instrumented).
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 120
FUZZ_TARGETS ?= safetensors checkpoint y4m image frames options wan
FUZZ_COMMON  := -O1 -g -std=gnu11 -ffp-contract=off -Wno-unknown-pragmas -fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_SRC     := $(LIB) media.c ivae_cl_stub.c dist_stub.c
FUZZ_OBJ     := $(patsubst %.c,fuzz/bin/obj/%.o,$(FUZZ_SRC))
.PHONY: fuzz fuzz_build fuzz_msan clean_fuzz
fuzz/bin/obj/%.o: %.c $(HDR) ivae_cl_model.h dist.h
	@mkdir -p fuzz/bin/obj
	$(FUZZ_CC) $(FUZZ_COMMON) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<
fuzz/bin/%: fuzz/fuzz_%.c fuzz/fuzz.h fuzz/fuzz_media.h fuzz/train_die.h train.c $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_COMMON) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_OBJ) -lm
fuzz_build: $(addprefix fuzz/bin/,$(FUZZ_TARGETS))
fuzz: fuzz_build
	sh fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
# MemorySanitizer wants every byte instrumented: one compile of all of it
fuzz/bin/image_msan: fuzz/fuzz_image.c fuzz/fuzz.h fuzz/fuzz_media.h $(FUZZ_SRC) $(HDR)
	@mkdir -p fuzz/bin
	$(FUZZ_CC) $(FUZZ_COMMON) -fsanitize=fuzzer,memory -fsanitize-memory-track-origins -o $@ fuzz/fuzz_image.c $(FUZZ_SRC) -lm
fuzz_msan: fuzz/bin/image_msan
	sh fuzz/run.sh $(FUZZ_SECONDS) image_msan
clean: clean_fuzz
clean_fuzz:
	rm -rf fuzz/bin fuzz/out
