#include <algorithm>
#include <climits>
#include <string>

#include "kernels/matmul.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

// A row-major Gemm as cuBLAS's column-major call: C^T = op(B)^T op(A)^T, the operands swapped.
struct ColMajor {
  int m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  cublasOperation_t op_a = CUBLAS_OP_N, op_b = CUBLAS_OP_N;
};

// False when there is nothing to compute (an empty result).
bool col_major(const Gemm& g, const char* who, ColMajor& c) {
  GAN_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, std::string(who) + ": negative size");
  GAN_CHECK(g.m <= INT_MAX && g.n <= INT_MAX && g.k <= INT_MAX && g.batch <= INT_MAX,
            std::string(who) + ": a dimension exceeds 2^31-1");
  if (g.m == 0 || g.n == 0 || g.batch == 0) return false;
  c.m = int(g.n), c.n = int(g.m), c.k = int(g.k);
  c.op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  // Leading dimensions must be >= 1 even when k == 0 (then C = beta * C).
  GAN_CHECK(g.row_a() <= INT_MAX && g.row_b() <= INT_MAX && g.row_c() <= INT_MAX,
            std::string(who) + ": a leading dimension exceeds 2^31-1");
  c.ldb = int(std::max<int64_t>(1, g.row_b()));
  c.lda = int(std::max<int64_t>(1, g.row_a()));
  c.ldc = int(g.row_c());
  return true;
}

}  // namespace

void gemm_cuda(const Gemm& g, float alpha, const float* A, const float* B, float beta, float* C,
               cublasHandle_t handle) {
  GAN_NVTX("gemm");
  ColMajor c;
  if (!col_major(g, "gemm_cuda", c)) return;
  if (g.batch == 1) {
    GAN_CUBLAS_CHECK(cublasSgemm(handle, c.op_b, c.op_a, c.m, c.n, c.k, &alpha, B, c.ldb, A, c.lda,
                                 &beta, C, c.ldc));
  } else {
    GAN_CUBLAS_CHECK(cublasSgemmStridedBatched(handle, c.op_b, c.op_a, c.m, c.n, c.k, &alpha, B,
                                               c.ldb, g.stride_b, A, c.lda, g.stride_a, &beta, C,
                                               c.ldc, g.stride_c, int(g.batch)));
  }
}

void gemm_bf16_cuda(const Gemm& g, float alpha, const uint16_t* A, const uint16_t* B, uint16_t* C,
                    cublasHandle_t handle) {
  GAN_NVTX("gemm (bf16)");
  ColMajor c;
  if (!col_major(g, "gemm_bf16_cuda", c)) return;
  const float beta = 0.f;
  GAN_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle, c.op_b, c.op_a, c.m, c.n, c.k, &alpha, B, CUDA_R_16BF, c.ldb, g.stride_b, A,
      CUDA_R_16BF, c.lda, g.stride_a, &beta, C, CUDA_R_16BF, c.ldc, g.stride_c, int(g.batch),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace gan::kernels
