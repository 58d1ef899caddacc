// Test kernels for kernels/mma.h (tests/mma_kernels.cu), built for the GPU into engine_tests and
// for the interpreter into engine_tests_interp. Each runs one warp on the legacy stream and
// returns cudaGetLastError() after synchronising.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace gan::mma_test {

// D (16x8) = A (16x8, row-major) B (8x8, row-major k x n) + C (16x8), TF32 inputs.
cudaError_t run_mma_tf32(const float* a, const float* b, const float* c, float* d);
// D (16x8) = A (16x16) B (16x8) + C, BF16 inputs (rounded from the floats given).
cudaError_t run_mma_bf16(const float* a, const float* b, const float* c, float* d);
// in: 4 matrices of 8x8 uint16 (256 values); out (32 lanes x 4 registers): ldmatrix.x4's result.
cudaError_t run_ldmatrix(const uint16_t* in, uint32_t* out);
// out[i] = src[i] for i < n, 0 for n <= i < 128: 32 cp.async copies of 16 bytes (the last ones
// zero-filled past n), one commit group, a wait.
cudaError_t run_cp_async(const float* src, int n, float* out);

// Dynamic shared memory over 48 KB (with the opt-in attribute): out[i] = n - 1 - i, staged
// through n floats of dynamic shared memory by one block of 256 threads.
cudaError_t run_dynamic_smem(float* out, int n);

}  // namespace gan::mma_test
