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
/* floor(v) for |v| < 2^22 without a call: v rounded to the nearest integer
   by adding and subtracting 1.5 * 2^23 (exact in float), less one where that
   rounded up. The same value as floorf in that range (ivae_expf's), and a
   loop of it vectorises, where floorf's does not under -ftrapping-math. */
static inline float ivae_floorf(float v) {
    float rn = (v + 12582912.0f) - 12582912.0f;
    return rn - (rn > v ? 1.0f : 0.0f);
}
/* 2^n for -126 <= n <= 127, from its exponent bits */
static inline float ivae_pow2i(int n) {
    int32_t bits = (int32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
#endif

IVAE_MATH_FN float ivae_expf(float x) {
    /* Every input takes the same steps and the special cases are chosen at
       the end, so that a loop of ivae_expf vectorises; the polynomial's
       argument is x clamped to the finite range (NaN: 0), which is x itself
       for every input whose result is computed. */
    const float hi = 88.72283935546875f, lo = -103.97208404541015625f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    xc = xc == xc ? xc : 0.0f;
    float fn = ivae_floorf(xc * 1.44269504088896341f + 0.5f);   /* in [-150, 128] */
    float r = xc - fn * 0.693359375f;       /* C1: exact product */
    r = r + fn * 2.12194440e-4f;            /* C2 = C1 - ln2 */
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * z + r + 1.0f;             /* exp(r) */
    int n = (int)fn;
    int n1 = n / 2, n2 = n - n1;            /* each half stays a normal power */
    float e = y * ivae_pow2i(n1) * ivae_pow2i(n2);
    e = x > hi ? ivae_pow2i(64) * ivae_pow2i(64) : e;     /* +inf */
    e = x < lo ? 0.0f : e;
    return x == x ? e : x;                  /* NaN in, NaN out */
}

#endif
