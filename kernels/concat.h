// Concatenation along one axis and its backward (split). Each input is viewed as (rows, w_j),
// rows = product of the dims before the axis, w_j = its size along the axis times the product of
// the dims after it; the output is (rows, W) with W = sum_j w_j. Concatenating NHWC activations
// along channels is rows = N*H*W, w_j = C_j.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace gan::kernels {

template <class T>
void concat_cpu(int count, const T* const* xs, const int64_t* widths, int64_t rows, T* y) {
  int64_t total = 0;
  for (int j = 0; j < count; ++j) total += widths[j];
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0;
    for (int j = 0; j < count; ++j) {
      for (int64_t c = 0; c < widths[j]; ++c) y[r * total + off + c] = xs[j][r * widths[j] + c];
      off += widths[j];
    }
  }
}

// dy (rows, W) -> dxs[j] (rows, w_j); a null dxs[j] is skipped.
template <class T>
void split_cpu(int count, const T* dy, const int64_t* widths, int64_t rows, T* const* dxs) {
  int64_t total = 0;
  for (int j = 0; j < count; ++j) total += widths[j];
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0;
    for (int j = 0; j < count; ++j) {
      if (dxs[j])
        for (int64_t c = 0; c < widths[j]; ++c) dxs[j][r * widths[j] + c] = dy[r * total + off + c];
      off += widths[j];
    }
  }
}

void concat_cuda(int count, const float* const* xs, const int64_t* widths, int64_t rows, float* y,
                 cudaStream_t stream);
void split_cuda(int count, const float* dy, const int64_t* widths, int64_t rows, float* const* dxs,
                cudaStream_t stream);

}  // namespace gan::kernels
