// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11), computed by the same host/device function on both devices, so a seed gives the
// same tensor on the CPU and the GPU.
//
// A generator's state is (seed, offset). A fill of n elements uses key = seed and the counters
// (group, offset) for group = 0 .. ceil(n/4)-1; element i takes 32-bit word i % 4 of group i / 4.
// After each fill the offset increases by one. On CUDA the state lives in device memory: the fill
// kernel reads it and a one-thread kernel advances it, so fills can be captured in a CUDA graph and
// each replay draws new numbers.
//
// uniform(lo, hi): lo + (hi - lo) * u with u = (word >> 8) * 2^-24 in [0, 1), computed in double.
// normal(mean, std): Box-Muller on the word pairs (0, 1) and (2, 3) of a group:
//   u1 = (w0 + 1) 2^-32 in (0, 1], u2 = w1 2^-32, r = sqrt(-2 ln u1),
//   z0 = r cos(2 pi u2), z1 = r sin(2 pi u2), computed in double and rounded to float.
// (Double transcendental results may differ by an ulp of double between libm and CUDA, which
// changes the float result only when it lies within that distance of a rounding boundary.)
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "kernels/common.h"

namespace gan::kernels {

enum class Dist : uint8_t { kUniform, kNormal };

struct Philox4 {
  uint32_t w[4];
};

GAN_HD inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                    uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    const uint64_t p0 = uint64_t(kM0) * c0, p1 = uint64_t(kM1) * c2;
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return Philox4{{c0, c1, c2, c3}};
}

GAN_HD inline Philox4 philox_group(uint64_t seed, uint64_t offset, uint64_t group) {
  return philox4x32_10(uint32_t(group), uint32_t(group >> 32), uint32_t(offset),
                       uint32_t(offset >> 32), uint32_t(seed), uint32_t(seed >> 32));
}

// Value of lane `lane` (0..3) of a group's words under distribution d with parameters (a, b):
// (lo, hi) for uniform, (mean, std) for normal.
GAN_HD inline float philox_value(const Philox4& r, int lane, Dist d, double a, double b) {
  if (d == Dist::kUniform) {
    const double u = double(r.w[lane] >> 8) * (1.0 / 16777216.0);
    float v = float(::fma(b - a, u, a));        // explicit fma: same rounding on both devices
    if (double(v) >= b && b > a) v = float(a);  // rounding reached hi: keep [lo, hi)
    return v;
  }
  const int pair = lane & ~1;
  const double u1 = (double(r.w[pair]) + 1.0) * (1.0 / 4294967296.0);
  const double u2 = double(r.w[pair + 1]) * (1.0 / 4294967296.0);
  const double rad = ::sqrt(-2.0 * ::log(u1));  // :: : never the engine's ops on Vars
  const double theta = 6.283185307179586476925286766559 * u2;
  const double z = (lane & 1) ? rad * ::sin(theta) : rad * ::cos(theta);
  return float(::fma(b, z, a));
}

template <class T>
void philox_fill_cpu(T* out, int64_t n, uint64_t seed, uint64_t offset, Dist d, double a,
                     double b) {
  for (int64_t g = 0; g * 4 < n; ++g) {
    const Philox4 r = philox_group(seed, offset, uint64_t(g));
    for (int lane = 0; lane < 4 && g * 4 + lane < n; ++lane)
      out[g * 4 + lane] = T(philox_value(r, lane, d, a, b));
  }
}

// state: device uint64[2] = {seed, offset}. Fills out (n) and then advances the offset.
void philox_fill_cuda(float* out, int64_t n, uint64_t* state, Dist d, double a, double b,
                      cudaStream_t stream);

}  // namespace gan::kernels
