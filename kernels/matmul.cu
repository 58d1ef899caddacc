#include <algorithm>
#include <climits>

#include "kernels/matmul.h"
#include "kernels/runtime.h"

namespace gan::kernels {

void gemm_cuda(const Gemm& g, float alpha, const float* A, const float* B, float beta, float* C,
               cublasHandle_t handle) {
  GAN_NVTX("gemm");
  GAN_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, "gemm_cuda: negative size");
  GAN_CHECK(g.m <= INT_MAX && g.n <= INT_MAX && g.k <= INT_MAX && g.batch <= INT_MAX,
            "gemm_cuda: a dimension exceeds 2^31-1");
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const int m = int(g.n), n = int(g.m), k = int(g.k);
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  // Leading dimensions must be >= 1 even when k == 0 (then C = beta * C).
  GAN_CHECK(g.row_a() <= INT_MAX && g.row_b() <= INT_MAX && g.row_c() <= INT_MAX,
            "gemm_cuda: a leading dimension exceeds 2^31-1");
  const int ldb = int(std::max<int64_t>(1, g.row_b()));
  const int lda = int(std::max<int64_t>(1, g.row_a()));
  const int ldc = int(g.row_c());
  if (g.batch == 1) {
    GAN_CUBLAS_CHECK(
        cublasSgemm(handle, op_b, op_a, m, n, k, &alpha, B, ldb, A, lda, &beta, C, ldc));
  } else {
    GAN_CUBLAS_CHECK(cublasSgemmStridedBatched(handle, op_b, op_a, m, n, k, &alpha, B, ldb,
                                               g.stride_b, A, lda, g.stride_a, &beta, C, ldc,
                                               g.stride_c, int(g.batch)));
  }
}

void gemm_bf16_cuda(const Gemm& g, float alpha, const uint16_t* A, const uint16_t* B, uint16_t* C,
                    cublasHandle_t handle) {
  GAN_NVTX("gemm (bf16)");
  GAN_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, "gemm_bf16_cuda: negative size");
  GAN_CHECK(g.m <= INT_MAX && g.n <= INT_MAX && g.k <= INT_MAX && g.batch <= INT_MAX,
            "gemm_bf16_cuda: a dimension exceeds 2^31-1");
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  const int m = int(g.n), n = int(g.m), k = int(g.k);
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  GAN_CHECK(g.row_a() <= INT_MAX && g.row_b() <= INT_MAX && g.row_c() <= INT_MAX,
            "gemm_bf16_cuda: a leading dimension exceeds 2^31-1");
  const int ldb = int(std::max<int64_t>(1, g.row_b()));
  const int lda = int(std::max<int64_t>(1, g.row_a()));
  const int ldc = int(g.row_c());
  const float beta = 0.f;
  GAN_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, op_b, op_a, m, n, k, &alpha, B, CUDA_R_16BF,
                                              ldb, g.stride_b, A, CUDA_R_16BF, lda, g.stride_a,
                                              &beta, C, CUDA_R_16BF, ldc, g.stride_c, int(g.batch),
                                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace gan::kernels
