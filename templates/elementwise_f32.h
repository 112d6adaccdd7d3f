/* elementwise_f32.h — the elementwise functions of rust_circuit_format.md §4.9
 * and the casts of cast_from_..._to_..., in float, for generated programs.
 * exp and tanh avoid libm calls so that loops over them vectorise; every
 * function is deterministic (no reassociation, no fast-math). The twins in
 * tests/unit/test_templates.c compare them with libm in double. */
#ifndef CIRCC_ELEMENTWISE_F32_H
#define CIRCC_ELEMENTWISE_F32_H
#include <math.h>
#include <stdint.h>

/* a program uses a few of these */
#define CIRCC_FN static inline __attribute__((unused))
/* exp and tanh without libm calls, so loops over them vectorise: exp by
 * Cody-Waite reduction x = n ln2 + r and a degree-6 polynomial (about 1 ulp;
 * results below e^-87.3 ≈ 1.2e-38 flush to 0), tanh by its odd Taylor series near 0 and
 * 1 - 2/(e^2x + 1) elsewhere (relative error below 1e-6) */
CIRCC_FN float fn_exp(float x) {
  float c = x == x ? x : 0.0f; /* no NaN reaches the int conversion */
  c = c > 88.72f ? 88.72f : c;
  c = c < -87.3f ? -87.3f : c;
  const float n = (c * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest, no libm call */
  const float r = (c - n * 0.693145752f) - n * 1.42860677e-6f;
  const float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666667f + r * (0.0416666667f + r * (0.00833333333f + r * 0.00138888889f)))));
  /* 2^n as two normal factors: n is in [-126, 128] */
  const int32_t ni = (int32_t)n, h = ni >> 1;
  union { float f; int32_t i; } s1 = {.i = (h + 127) << 23}, s2 = {.i = (ni - h + 127) << 23};
  const float y = p * s1.f * s2.f;
  float z = x > 88.72f ? INFINITY : y;
  z = x < -87.3f ? 0.0f : z;
  return x != x ? x : z;
}
CIRCC_FN float fn_tanh(float x) {
  const float a = fabsf(x), x2 = x * x;
  const float small = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * (-0.0539682540f + x2 * (0.0218694885f + x2 * (-0.00886323552f + x2 * 0.00359212803f))))));
  const float big = 1.0f - 2.0f / (fn_exp(2.0f * (a > 10.0f ? 10.0f : a)) + 1.0f); /* rounds to 1 from 10 on */
  return a < 0.5f ? small : (x < 0.0f ? -big : big);
}
CIRCC_FN float fn_sigmoid(float x) { return 1.0f / (1.0f + fn_exp(-x)); }
CIRCC_FN float fn_rsqrt(float x) { return 1.0f / sqrtf(x); }
CIRCC_FN float fn_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
CIRCC_FN float fn_gelu_new(float x) {
  return 0.5f * x * (1.0f + fn_tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
CIRCC_FN float fn_relu(float x) { return x > 0.0f ? x : (x != x ? x : 0.0f); }
CIRCC_FN float fn_step(float x) { return x > 0.0f ? 1.0f : 0.0f; }
CIRCC_FN float fn_reciprocal(float x) { return 1.0f / x; }
CIRCC_FN float fn_log_exp_p_1(float x) { return x < 0.0f ? log1pf(expf(x)) : x + log1pf(expf(-x)); }
CIRCC_FN float fn_gaussian_pdf(float x) { return expf(-0.5f * x * x) * 0.39894228040143268f; }
CIRCC_FN float fn_gaussian_cdf(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
CIRCC_FN float fn_logit(float x) { return logf(x / (1.0f - x)); }
CIRCC_FN float fn_min(float a, float b) { return a != a || b != b ? NAN : (b < a ? b : a); }
CIRCC_FN float fn_max(float a, float b) { return a != a || b != b ? NAN : (b > a ? b : a); }
/* casts (cast_from_..._to_...): values stay float, rounded as the target type would */
CIRCC_FN float cast_i64(float x) { return (float)(int64_t)x; }
CIRCC_FN float cast_i32(float x) { return (float)(int32_t)(int64_t)x; }
CIRCC_FN float cast_i16(float x) { return (float)(int16_t)(int64_t)x; }
CIRCC_FN float cast_i8(float x) { return (float)(int8_t)(int64_t)x; }
CIRCC_FN float cast_u8(float x) { return (float)(uint8_t)(int64_t)x; }
CIRCC_FN float cast_bool(float x) { return x != 0.0f ? 1.0f : 0.0f; }
CIRCC_FN float cast_bf16(float x) {
  union { float f; uint32_t u; } v = {x};
  if (x != x) return x;
  v.u = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) & 0xffff0000u; /* round to nearest even */
  return v.f;
}
CIRCC_FN float cast_f16(float x) {
  union { float f; uint32_t u; } v = {fabsf(x)};
  const float sign = x < 0.0f ? -1.0f : 1.0f;
  if (x != x) return x;
  if (v.f >= 65520.0f) return sign * INFINITY;
  if (v.f < 6.103515625e-05f) return sign * nearbyintf(v.f * 16777216.0f) / 16777216.0f; /* subnormal */
  v.u = (v.u + 0xfffu + ((v.u >> 13) & 1u)) & 0xffffe000u; /* round to nearest even */
  return sign * v.f;
}

#endif
