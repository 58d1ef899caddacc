// Sum reduction over the middle axis of a tensor viewed as (outer, r, inner):
//   y (outer, inner) = scale * sum_k x (outer, k, inner)   [+ y when accumulate]
// Any reduction over one run of adjacent axes has this form (the engine splits other axis sets
// into runs). Deterministic: a fixed summation order for a given shape and GPU (no atomics).
// The CUDA path splits long reductions over blocks into a workspace (CUB's two-phase convention:
// ask reduce_sum_workspace_bytes, pass that much scratch), then reduces the partial sums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/bf16.h"

namespace gan::kernels {

template <class T>
void reduce_sum_cpu(const T* x, int64_t outer, int64_t r, int64_t inner, double scale,
                    bool accumulate, T* y) {
  std::vector<double> acc(size_t(inner > 0 ? inner : 1));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) acc[size_t(i)] = 0;
    for (int64_t k = 0; k < r; ++k) {
      const T* row = x + (o * r + k) * inner;
      for (int64_t i = 0; i < inner; ++i) acc[size_t(i)] += double(row[i]);
    }
    for (int64_t i = 0; i < inner; ++i) {
      const double prev = accumulate ? double(y[o * inner + i]) : 0.0;
      y[o * inner + i] = T(prev + scale * acc[size_t(i)]);
    }
  }
}

size_t reduce_sum_workspace_bytes(int64_t outer, int64_t r, int64_t inner);

// The backward of a fused bias + activation (a convolution's epilogue) in one pass over the
// gradient: dz (rows, k) = dy * act'(y), the derivative read from the activation's output y
// (tanh: 1 - y^2; else 1 where y > 0, otherwise slope: ReLU's is 0), and the bias gradient
// db (k) = sum over rows of dz [+ db when accumulate]. Instead of an elementwise pass writing dz
// and a reduction reading it back. CUDA: the column reduction's split (workspace from
// bias_act_backward_workspace_bytes). With dz16 (bf16 precision) dz is written rounded to bf16
// there instead (dz unused), the bias gradient still summed from the float32 values. With y16 and
// dy16 (bf16 activations, CUDA) y and dy are read from those bf16 tensors instead. db null: dz
// only (an activation without a bias to differentiate).
template <class T>
void bias_act_backward_cpu(const T* y, const T* dy, int64_t rows, int64_t k, bool tanh,
                           double slope, bool accumulate, T* dz, T* db, uint16_t* dz16 = nullptr) {
  std::vector<double> acc(size_t(k > 0 ? k : 1), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = r * k + i;
      const double yj = double(y[j]);
      const T g = T(double(dy[j]) * (tanh ? 1.0 - yj * yj : yj > 0 ? 1.0 : slope));
      if (dz16)
        dz16[j] = f32_to_bf16(float(g));
      else
        dz[j] = g;
      acc[size_t(i)] += double(g);
    }
  if (db)
    for (int64_t i = 0; i < k; ++i) db[i] = T((accumulate ? double(db[i]) : 0.0) + acc[size_t(i)]);
}
size_t bias_act_backward_workspace_bytes(int64_t rows, int64_t k);
void bias_act_backward_cuda(const float* y, const float* dy, int64_t rows, int64_t k, bool tanh,
                            float slope, bool accumulate, float* dz, float* db, void* workspace,
                            size_t workspace_bytes, cudaStream_t stream, uint16_t* dz16 = nullptr,
                            const uint16_t* y16 = nullptr, const uint16_t* dy16 = nullptr);
void reduce_sum_cuda(const float* x, int64_t outer, int64_t r, int64_t inner, float scale,
                     bool accumulate, float* y, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream);

}  // namespace gan::kernels
