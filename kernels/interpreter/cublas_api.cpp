// cuBLAS for the interpreter: the calls the engine makes, computed on the CPU (plain loops with
// double accumulation, column-major as cuBLAS defines them) on the handle's stream, so that they
// are captured into graphs like any other stream work.
#include <algorithm>

#include <cublas_v2.h>

#include "kernels/bf16.h"
#include "kernels/interpreter/runtime_internal.h"
#include "kernels/interpreter/simt.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

// C (m, n) = alpha op(A) op(B) + beta C, column-major; beta == 0 does not read C.
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
          const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int p = 0; p < k; ++p) {
        const double a = ta == CUBLAS_OP_N ? A[i + size_t(p) * lda] : A[p + size_t(i) * lda];
        const double b = tb == CUBLAS_OP_N ? B[p + size_t(j) * ldb] : B[j + size_t(p) * ldb];
        acc += a * b;
      }
      float& c = C[i + size_t(j) * ldc];
      c = float(double(alpha) * acc + (beta == 0.f ? 0.0 : double(beta) * double(c)));
    }
}

bool bad_args(int m, int n, int k, int lda, int ldb, int ldc, cublasOperation_t ta,
              cublasOperation_t tb) {
  if (m < 0 || n < 0 || k < 0) return true;
  if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k)) return true;
  if (ldb < std::max(1, tb == CUBLAS_OP_N ? k : n)) return true;
  return ldc < std::max(1, m);
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    default:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
  }
}
const char* cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }

cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                              int n, int k, const float* alpha, const float* A, int lda,
                              const float* B, int ldb, const float* beta, float* C, int ldc) {
  if (bad_args(m, n, k, lda, ldb, ldc, ta, tb)) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *alpha, be = *beta;
  const cudaError_t e = gan::interp::enqueue(h->stream, "cublasSgemm (CPU reference)", [=] {
    gemm(ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc);
  });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta,
                                         float* C, int ldc, long long sc, int batch) {
  if (bad_args(m, n, k, lda, ldb, ldc, ta, tb) || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *alpha, be = *beta;
  const cudaError_t e =
      gan::interp::enqueue(h->stream, "cublasSgemmStridedBatched (CPU reference)", [=] {
        for (int b = 0; b < batch; ++b)
          gemm(ta, tb, m, n, k, al, A + b * sa, lda, B + b * sb, ldb, be, C + b * sc, ldc);
      });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

// The mixed-precision GEMM the engine's bf16 precision makes: A and B float32 or bf16 (the same),
// C float32 or bf16 (rounded to nearest even), float32 compute (here double accumulation).
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void* alpha, const void* A, cudaDataType at,
                                          int lda, long long sa, const void* B, cudaDataType bt,
                                          int ldb, long long sb, const void* beta, void* C,
                                          cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (bad_args(m, n, k, lda, ldb, ldc, ta, tb) || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const auto type_ok = [](cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; };
  if (!type_ok(at) || bt != at || !type_ok(ct) ||
      (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const cudaError_t e =
      gan::interp::enqueue(h->stream, "cublasGemmStridedBatchedEx (CPU reference)", [=] {
        const auto rd = [](const void* p, cudaDataType t, size_t i) {
          return t == CUDA_R_16BF
                     ? double(gan::kernels::bf16_to_f32(static_cast<const uint16_t*>(p)[i]))
                     : double(static_cast<const float*>(p)[i]);
        };
        for (int bi = 0; bi < batch; ++bi)
          for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
              double acc = 0;
              for (int p = 0; p < k; ++p) {
                const size_t ai = ta == CUBLAS_OP_N ? i + size_t(p) * lda : p + size_t(i) * lda;
                const size_t bj = tb == CUBLAS_OP_N ? p + size_t(j) * ldb : j + size_t(p) * ldb;
                acc += rd(A, at, size_t(bi * sa) + ai) * rd(B, bt, size_t(bi * sb) + bj);
              }
              const size_t ci = size_t(bi * sc) + i + size_t(j) * ldc;
              const double prev = be == 0.f ? 0.0 : double(be) * rd(C, ct, ci);
              const float v = float(double(al) * acc + prev);
              if (ct == CUDA_R_16BF)
                static_cast<uint16_t*>(C)[ci] = gan::kernels::f32_to_bf16(v);
              else
                static_cast<float*>(C)[ci] = v;
            }
      });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // extern "C"
