// Index mapping for numpy-style broadcasting of two operands a and b to an output shape, shared by
// the CPU reference and the CUDA kernels. Common layouts get a cheap mode; others use strides.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace gan::kernels {

constexpr int kBroadcastMaxDims = 5;  // engine/shape.h's Shape::kMaxDims

struct BroadcastIndex {
  enum Mode : int {
    kSame = 0,  // a, b and out have the same shape
    kScalarB,   // b has one element
    kRowB,      // b repeats with period `inner` (per-channel in NHWC): ib = i % inner
    kOuterB,    // b is constant over the trailing `inner` elements: ib = (i / inner) % nb
    kGeneric,   // strides (0 on broadcast dimensions)
  };
  int mode = kSame;
  int ndim = 0;
  int64_t n = 0;      // output elements
  int64_t inner = 1;  // period for kRowB, run length for kOuterB
  int64_t nb = 1;     // elements of b
  int64_t out[kBroadcastMaxDims] = {};
  int64_t sa[kBroadcastMaxDims] = {};  // strides of a in out's index space (0 where broadcast)
  int64_t sb[kBroadcastMaxDims] = {};

  GAN_HD int64_t index_b(int64_t i) const {
    switch (mode) {
      case kSame:
        return i;
      case kScalarB:
        return 0;
      case kRowB:
        return i % inner;
      case kOuterB:
        return (i / inner) % nb;
      default:
        return generic(i, sb);
    }
  }
  GAN_HD int64_t index_a(int64_t i) const { return mode == kGeneric ? generic(i, sa) : i; }

  GAN_HD int64_t generic(int64_t i, const int64_t* s) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t q = i / out[d];
      off += (i - q * out[d]) * s[d];
      i = q;
    }
    return off;
  }
};

}  // namespace gan::kernels
