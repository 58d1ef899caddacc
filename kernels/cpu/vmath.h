// Float math the compiler can vectorise (kernels/cpu/ only): branch-free, integer tricks instead of
// library calls, so loops over arrays become SIMD loops in each GAN_CPU_SIMD version.
#pragma once

#include <cstdint>
#include <cstring>

namespace gan::kernels::cpu {

// exp(x) for the softmax's x <= 0 (also right up to x = 88): Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2 / 2, a degree-7 Taylor polynomial for exp(r) (truncation below
// 6e-9 relative), times 2^n built from its bits. Within 2 ulp of the correctly rounded value
// (1.2 ulp measured over [-87, 0]);
// below -87.3 it returns about 1e-38 instead of a subnormal or 0 (invisible next to the row's
// largest term, which is 1). NaN gives NaN.
inline float exp_softmax(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);  // NaN passes through both
  const float t = x * 1.44269504088896341f;
  // Round to nearest with the 1.5 * 2^23 trick: its low mantissa bits then hold n (no float to
  // int conversion, which a NaN would make undefined).
  const float shifted = t + 12582912.f;
  const float n = shifted - 12582912.f;
  int32_t sbits, base;
  const float magic = 12582912.f;
  std::memcpy(&sbits, &shifted, 4);
  std::memcpy(&base, &magic, 4);
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.f / 5040;
  p = p * r + 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = int32_t(uint32_t(sbits - base + 127) << 23);
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// tanh(x), branch-free: for |x| < 0.625 the [7/6] Pade approximant of the continued fraction
// x (135135 + 17325 x^2 + 378 x^4 + x^6) / (135135 + 62370 x^2 + 3150 x^4 + 28 x^6) (error below
// 1e-9 there), beyond it 1 - 2 / (exp(2 |x|) + 1) with the sign of x (|x| clamped at 9, where
// tanh is 1 in float32). Within 3 ulp of the correctly rounded value (measured over
// [-12, 12]); NaN gives NaN.
inline float tanh_fast(float x) {
  const float ax = x < 0.f ? -x : x;
  const float x2 = x * x;
  const float num = x * (135135.f + x2 * (17325.f + x2 * (378.f + x2)));
  const float den = 135135.f + x2 * (62370.f + x2 * (3150.f + x2 * 28.f));
  const float small = num / den;
  const float e = exp_softmax(2.f * (ax > 9.f ? 9.f : ax));
  const float big = 1.f - 2.f / (e + 1.f);
  const float r = ax < 0.625f ? small : (x < 0.f ? -big : big);
  return x != x ? x : r;  // NaN: the clamp above would have hidden it
}

}  // namespace gan::kernels::cpu
