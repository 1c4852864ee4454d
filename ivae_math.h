/*
 * ivae_math.h: the one transcendental function ivae needs, written once.
 *
 * exp() appears in SiLU, softmax, the KL term and the sampling step. Every C
 * library and every OpenCL driver has its own expf, and they differ in the
 * last bit, which would make a bit-for-bit comparison of two implementations
 * impossible. So ivae computes exp with this function everywhere: the CPU
 * reference includes this header, and so does kernels.cl.
 *
 * It uses only float +, -, * (each correctly rounded by IEEE 754, with
 * contraction into fma turned off on both sides), floor, and exact bit
 * operations, so any conforming compiler gives the same bits.
 *
 * Method (the classic one): write x = n*ln2 + r with |r| <= ln2/2, where
 * n = floor(x*log2(e) + 1/2); subtract n*ln2 in two pieces (Cody-Waite: the
 * high piece 0.693359375 has few mantissa bits, so n*C1 is exact); evaluate
 * exp(r) with a degree-7 minimax polynomial; multiply by 2^n, built from its
 * exponent bits in two halves so that results near the overflow and
 * underflow limits are right. Accuracy: within 2 ulp of the true exp over
 * the whole float range (checked by test/test_model.c against libm's double
 * exp).
 */
#ifndef IVAE_MATH_H
#define IVAE_MATH_H

#ifdef __OPENCL_VERSION__
#define IVAE_MATH_FN inline
#define ivae_floorf(x) floor(x)
static inline float ivae_pow2i(int n) { return as_float((n + 127) << 23); }
#else
#include <math.h>
#include <stdint.h>
#include <string.h>
#define IVAE_MATH_FN static inline
#define ivae_floorf(x) floorf(x)
/* 2^n for -126 <= n <= 127, from its exponent bits */
static inline float ivae_pow2i(int n) {
    int32_t bits = (int32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
#endif

IVAE_MATH_FN float ivae_expf(float x) {
    if (!(x == x)) return x;                /* NaN in, NaN out */
    if (x > 88.72283935546875f) return ivae_pow2i(64) * ivae_pow2i(64); /* +inf */
    if (x < -103.97208404541015625f) return 0.0f;
    float fn = ivae_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - fn * 0.693359375f;        /* C1: exact product */
    r = r + fn * 2.12194440e-4f;            /* C2 = C1 - ln2 */
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * z + r + 1.0f;             /* exp(r) */
    int n = (int)fn;                        /* -150 <= n <= 128 */
    int n1 = n / 2, n2 = n - n1;            /* each half stays a normal power */
    return y * ivae_pow2i(n1) * ivae_pow2i(n2);
}

#endif
