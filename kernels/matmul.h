// Batched row-major GEMM: for each batch index,
//   C (m, n) = alpha * op(A) op(B) + beta * C
// op(A) is (m, k): A is stored (m, k), or (k, m) when trans_a. op(B) is (k, n): B is stored
// (k, n), or (n, k) when trans_b. Batches are stride_* elements apart (a stride of 0 reuses the
// operand, e.g. one weight for every batch). lda, ldb, ldc are the row strides of A, B, C as
// stored (0: dense, i.e. the stored row length), so operands can be column ranges of wider
// matrices. GPU: cuBLAS SGEMM, strict float32 unless TF32 is
// allowed (engine/device.h). CPU: plain loops with double accumulation.
#pragma once

#include <cstdint>
#include <vector>

#include <cublas_v2.h>

namespace gan::kernels {

struct Gemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  // 0: dense

  int64_t row_a() const { return lda ? lda : (trans_a ? m : k); }
  int64_t row_b() const { return ldb ? ldb : (trans_b ? k : n); }
  int64_t row_c() const { return ldc ? ldc : n; }
};

template <class T>
void gemm_cpu(const Gemm& g, double alpha, const T* A, const T* B, double beta, T* C) {
  std::vector<double> row(size_t(g.n > 0 ? g.n : 1));
  const int64_t lda = g.row_a(), ldb = g.row_b(), ldc = g.row_c();
  for (int64_t bt = 0; bt < g.batch; ++bt) {
    const T* a = A + bt * g.stride_a;
    const T* b = B + bt * g.stride_b;
    T* c = C + bt * g.stride_c;
    for (int64_t i = 0; i < g.m; ++i) {
      for (int64_t j = 0; j < g.n; ++j) row[size_t(j)] = 0;
      for (int64_t p = 0; p < g.k; ++p) {
        const double av = double(g.trans_a ? a[p * lda + i] : a[i * lda + p]);
        if (g.trans_b) {
          for (int64_t j = 0; j < g.n; ++j) row[size_t(j)] += av * double(b[j * ldb + p]);
        } else {
          const T* brow = b + p * ldb;
          for (int64_t j = 0; j < g.n; ++j) row[size_t(j)] += av * double(brow[j]);
        }
      }
      for (int64_t j = 0; j < g.n; ++j) {
        // beta == 0 ignores C (which may be uninitialised), as BLAS does.
        const double prev = beta == 0 ? 0.0 : beta * double(c[i * ldc + j]);
        c[i * ldc + j] = T(alpha * row[size_t(j)] + prev);
      }
    }
  }
}

void gemm_cuda(const Gemm& g, float alpha, const float* A, const float* B, float beta, float* C,
               cublasHandle_t handle);
// bf16 A, B and C (uint16_t patterns), float32 accumulation (cuBLAS's GemmEx, compute 32F); C is
// overwritten (beta 0) with the result rounded to nearest even.
void gemm_bf16_cuda(const Gemm& g, float alpha, const uint16_t* A, const uint16_t* B, uint16_t* C,
                    cublasHandle_t handle);

}  // namespace gan::kernels
