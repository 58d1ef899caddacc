// bfloat16 as its 16-bit pattern (uint16_t), shared by the CPU references, the CUDA kernels and
// the interpreter, so every path rounds the same way at the same points:
//   f32_to_bf16: round to nearest, ties to even (PyTorch's .to(torch.bfloat16) and CUDA's
//     __float2bfloat16_rn); values past bf16's largest finite value round to infinity; a NaN stays
//     a quiet NaN with its sign and leading payload bits; subnormals round like any other value.
//   bf16_to_f32: exact (bf16 is the top half of a float32).
//   round_bf16: a float32 rounded to the nearest bf16, as a float32.
#pragma once

#include <cstdint>
#include <cstring>

#include <cuda_runtime_api.h>

namespace gan::kernels {

__host__ __device__ inline uint16_t f32_to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u)  // inf stays inf; NaN: quiet bit set, never inf
    return uint16_t((u >> 16) | ((u & 0x7fffffu) ? 0x40u : 0u));
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__host__ __device__ inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

__host__ __device__ inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// Whole buffers: n values, CPU and CUDA (the engine stream's order).
inline void f32_to_bf16_cpu(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_bf16(x[i]);
}
inline void bf16_to_f32_cpu(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(x[i]);
}
void f32_to_bf16_cuda(const float* x, uint16_t* y, int64_t n, cudaStream_t stream);
void bf16_to_f32_cuda(const uint16_t* x, float* y, int64_t n, cudaStream_t stream);
// y += widen(x): a bf16 product's result added into a float32 gradient buffer in one pass.
void bf16_accumulate_cuda(const uint16_t* x, float* y, int64_t n, cudaStream_t stream);
// y = round(y + x), both bf16 (a bf16 activation's gradient accumulated, as PyTorch does).
void bf16_add_cuda(const uint16_t* x, uint16_t* y, int64_t n, cudaStream_t stream);
// y = round(value) everywhere.
void bf16_fill_cuda(uint16_t* y, int64_t n, float value, cudaStream_t stream);

}  // namespace gan::kernels
