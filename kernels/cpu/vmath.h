// Float math the compiler can vectorise (kernels/cpu/ only): branch-free, integer tricks instead of
// library calls, so loops over arrays become SIMD loops in each GAN_CPU_SIMD version.
#pragma once

#include <cstdint>
#include <cstring>

namespace gan::kernels::cpu {

// exp(x) for the softmax's x <= 0 (also right up to x = 88): Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2 / 2, a degree-7 Taylor polynomial for exp(r) (truncation below
// 6e-9 relative), times 2^n built from its bits. Within 2 ulp of the correctly rounded value;
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

}  // namespace gan::kernels::cpu
