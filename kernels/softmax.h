// Softmax over the last axis of a (rows, n) view, and the batched transpose (B, m, n) -> (B, n, m).
// Both serve the attention's VJP (engine/ops_attention.cpp), which writes softmax(q k^T) v and
// its gradient in differentiable ops, and are ops of their own (engine/ops.h).
//
//   softmax: y_ij = exp(x_ij - m_i) / sum_j exp(x_ij - m_i), m_i = max_j x_ij
//   backward: dx_ij = y_ij (dy_ij - sum_k dy_ik y_ik)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace gan::kernels {

template <class T>
void softmax_rows_cpu(const T* x, T* y, int64_t rows, int64_t n) {
  std::vector<double> e(size_t(n > 0 ? n : 1));
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    double m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) m = std::max(m, double(xr[j]));
    double l = 0;
    for (int64_t j = 0; j < n; ++j) l += e[size_t(j)] = std::exp(double(xr[j]) - m);
    for (int64_t j = 0; j < n; ++j) y[r * n + j] = T(e[size_t(j)] / l);
  }
}

template <class T>
void softmax_rows_backward_cpu(const T* y, const T* dy, T* dx, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += double(dy[r * n + j]) * double(y[r * n + j]);
    for (int64_t j = 0; j < n; ++j)
      dx[r * n + j] = T(double(y[r * n + j]) * (double(dy[r * n + j]) - s));
  }
}

// x (B, m, n) -> y (B, n, m).
template <class T>
void transpose_cpu(const T* x, T* y, int64_t b, int64_t m, int64_t n) {
  for (int64_t k = 0; k < b; ++k)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) y[(k * n + j) * m + i] = x[(k * m + i) * n + j];
}

// One block per row (rows < 2^31).
void softmax_rows_cuda(const float* x, float* y, int64_t rows, int64_t n, cudaStream_t stream);
void softmax_rows_backward_cuda(const float* y, const float* dy, float* dx, int64_t rows, int64_t n,
                                cudaStream_t stream);
// 32 x 32 tiles through shared memory.
void transpose_cuda(const float* x, float* y, int64_t b, int64_t m, int64_t n, cudaStream_t stream);

}  // namespace gan::kernels
