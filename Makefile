# ivae: build and test. `make` builds ./ivae, `make test` runs every test.
#
# Switches: NO_OMP=1 builds without OpenMP. The flags never include fast-math:
# -ffp-contract=off keeps a*b+c as two rounded operations (no fused
# multiply-add), so the bits are the same on every x86 or ARM compiler.

CC      ?= gcc
PYTHON  ?= /usr/bin/python3
CFLAGS  ?= -O3 -march=native
CFLAGS  += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -ffp-contract=off
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

SRC  := ivae.c main.c
HDR  := ivae.h ivae_math.h

.PHONY: all asan test golden clean
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

# golden files from the project's PyTorch port (needs python3-torch)
golden:
	$(PYTHON) test/ref.py golden --config tiny --outdir test/golden
	$(PYTHON) test/ref.py golden --config ivae-s --outdir test/golden

test: ivae ivae_asan test/gradcheck test/test_model
	PYTHON=$(PYTHON) sh test/run.sh

clean:
	rm -f ivae ivae_asan test/gradcheck test/test_model
	rm -rf test/out
