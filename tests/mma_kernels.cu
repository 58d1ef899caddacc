#include "tests/mma_kernels.h"

#include "kernels/mma.h"
#include "kernels/runtime.h"

namespace gan::mma_test {

namespace {

using namespace kernels::mma;

__global__ void mma_tf32_kernel(const float* A, const float* B, const float* C, float* D) {
  const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
  const uint32_t a[4] = {to_tf32(A[g * 8 + t]), to_tf32(A[(g + 8) * 8 + t]),
                         to_tf32(A[g * 8 + t + 4]), to_tf32(A[(g + 8) * 8 + t + 4])};
  const uint32_t b[2] = {to_tf32(B[t * 8 + g]), to_tf32(B[(t + 4) * 8 + g])};
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  mma_m16n8k8_tf32(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

__global__ void mma_bf16_kernel(const float* A, const float* B, const float* C, float* D) {
  const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
  auto a_at = [&](int r, int k) { return pack_bf16(A[r * 16 + k], A[r * 16 + k + 1]); };
  auto b_at = [&](int k, int n) { return pack_bf16(B[k * 8 + n], B[(k + 1) * 8 + n]); };
  const uint32_t a[4] = {a_at(g, 2 * t), a_at(g + 8, 2 * t), a_at(g, 2 * t + 8),
                         a_at(g + 8, 2 * t + 8)};
  const uint32_t b[2] = {b_at(2 * t, g), b_at(2 * t + 8, g)};
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  mma_m16n8k16_bf16(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = d[i];
}

__global__ void ldmatrix_kernel(const uint16_t* in, uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[4][8][8];
  const int lane = int(threadIdx.x);
  for (int i = lane; i < 256; i += 32) tile[i / 64][(i / 8) % 8][i % 8] = in[i];
  __syncwarp();
  uint32_t r[4];
  ldmatrix_x4(r, &tile[lane / 8][lane % 8][0]);
  for (int j = 0; j < 4; ++j) out[lane * 4 + j] = r[j];
}

__global__ void cp_async_kernel(const float* src, int n, float* out) {
  __shared__ __align__(16) float s[128];
  const int lane = int(threadIdx.x);
  const int first = 4 * lane, valid = n - first < 0 ? 0 : (n - first > 4 ? 4 : n - first);
  cp_async_16(&s[first], valid > 0 ? src + first : src, 4 * valid);
  cp_async_commit();
  cp_async_wait<0>();
  __syncwarp();
  for (int i = lane; i < 128; i += 32) out[i] = s[i];
}

__global__ void dynamic_smem_kernel(float* out, int n) {
  GAN_DYNAMIC_SHARED(float, s);
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) s[i] = float(i);
  __syncthreads();
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) out[i] = s[n - 1 - i];
}

cudaError_t finish() {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  return cudaDeviceSynchronize();
}

}  // namespace

cudaError_t run_dynamic_smem(float* out, int n) {
  const size_t bytes = size_t(n) * sizeof(float);
  const cudaError_t e =
      cudaFuncSetAttribute(reinterpret_cast<const void*>(dynamic_smem_kernel),
                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess) return e;
  kernels::launch(dynamic_smem_kernel, 1, 256, bytes, nullptr, out, n);
  return finish();
}

cudaError_t run_mma_tf32(const float* a, const float* b, const float* c, float* d) {
  kernels::launch(mma_tf32_kernel, 1, 32, 0, nullptr, a, b, c, d);
  return finish();
}
cudaError_t run_mma_bf16(const float* a, const float* b, const float* c, float* d) {
  kernels::launch(mma_bf16_kernel, 1, 32, 0, nullptr, a, b, c, d);
  return finish();
}
cudaError_t run_ldmatrix(const uint16_t* in, uint32_t* out) {
  kernels::launch(ldmatrix_kernel, 1, 32, 0, nullptr, in, out);
  return finish();
}
cudaError_t run_cp_async(const float* src, int n, float* out) {
  kernels::launch(cp_async_kernel, 1, 32, 0, nullptr, src, n, out);
  return finish();
}

}  // namespace gan::mma_test
