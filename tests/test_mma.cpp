// kernels/mma.h against a plain GEMM: the tensor-core building blocks (TF32 and BF16 mma.sync,
// ldmatrix, cp.async) on the GPU, and on the interpreter's implementation of the PTX fragment
// layouts.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <cuda_runtime_api.h>
#include <catch2/catch.hpp>

#include "kernels/mma.h"
#include "tests/harness.h"
#include "tests/mma_kernels.h"

using namespace gan;

namespace {

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n;
  explicit Dev(const std::vector<T>& v) : n(v.size()) {
    REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)) == cudaSuccess);
    REQUIRE(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  }
  ~Dev() { (void)cudaFree(p); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    REQUIRE(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return v;
  }
};

std::vector<float> randoms(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

float tf32(float x) {
  const uint32_t u = kernels::mma::to_tf32(x);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float bf16(float x) {
  const uint32_t u = uint32_t(kernels::mma::to_bf16(x)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// D = A B + C with the inputs rounded by `round`, in double; checks got within 1e-5 of the sum of
// magnitudes (float32 accumulation in an unspecified order).
template <class R>
void check_gemm(int m, int n, int k, const std::vector<float>& a, const std::vector<float>& b,
                const std::vector<float>& c, const std::vector<float>& got, R round) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double want = c[size_t(i * n + j)], mag = std::fabs(want);
      for (int p = 0; p < k; ++p) {
        const double t = double(round(a[size_t(i * k + p)])) * double(round(b[size_t(p * n + j)]));
        want += t;
        mag += std::fabs(t);
      }
      INFO("D[" << i << "][" << j << "]");
      CHECK(std::fabs(got[size_t(i * n + j)] - want) <= 1e-5 * mag);
    }
}

}  // namespace

TEST_CASE("mma: TF32 and BF16 conversions round as the hardware does", "[mma][cpu]") {
  CHECK(kernels::mma::to_tf32(1.0f) == 0x3f800000u);
  // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: away from zero (cvt.rna).
  CHECK(kernels::mma::to_tf32(1.0f + 0x1p-11f) == 0x3f802000u);
  CHECK(kernels::mma::to_tf32(-(1.0f + 0x1p-11f)) == 0xbf802000u);
  CHECK(kernels::mma::to_tf32(1.0f + 0x1p-12f) == 0x3f800000u);
  CHECK(std::isnan(tf32(std::nanf(""))));
  CHECK(std::isinf(tf32(INFINITY)));
  // BF16: nearest even; 1 + 2^-8 is a tie between 1 and 1 + 2^-7 -> 1 (even).
  CHECK(kernels::mma::to_bf16(1.0f + 0x1p-8f) == 0x3f80u);
  CHECK(kernels::mma::to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82u);
  CHECK(std::isnan(bf16(std::nanf(""))));
}

TEST_CASE("mma cuda: m16n8k8 TF32 equals the GEMM of the rounded inputs", "[mma][cuda]") {
  GAN_REQUIRE_GPU();
  const auto a = randoms(16 * 8, 1), b = randoms(8 * 8, 2), c = randoms(16 * 8, 3);
  Dev<float> da(a), db(b), dc(c), dd(std::vector<float>(16 * 8, 0.f));
  REQUIRE(mma_test::run_mma_tf32(da.p, db.p, dc.p, dd.p) == cudaSuccess);
  check_gemm(16, 8, 8, a, b, c, dd.get(), tf32);
}

TEST_CASE("mma cuda: m16n8k16 BF16 equals the GEMM of the rounded inputs", "[mma][cuda]") {
  GAN_REQUIRE_GPU();
  const auto a = randoms(16 * 16, 4), b = randoms(16 * 8, 5), c = randoms(16 * 8, 6);
  Dev<float> da(a), db(b), dc(c), dd(std::vector<float>(16 * 8, 0.f));
  REQUIRE(mma_test::run_mma_bf16(da.p, db.p, dc.p, dd.p) == cudaSuccess);
  check_gemm(16, 8, 16, a, b, c, dd.get(), bf16);
}

TEST_CASE("mma cuda: ldmatrix.x4 hands each lane its rows and columns", "[mma][cuda]") {
  GAN_REQUIRE_GPU();
  std::vector<uint16_t> in(256);
  for (int i = 0; i < 256; ++i) in[size_t(i)] = uint16_t(1000 + i);
  Dev<uint16_t> din(in);
  Dev<uint32_t> dout(std::vector<uint32_t>(128, 0));
  REQUIRE(mma_test::run_ldmatrix(din.p, dout.p) == cudaSuccess);
  const auto out = dout.get();
  for (int lane = 0; lane < 32; ++lane)
    for (int j = 0; j < 4; ++j) {
      const int row = lane / 4, col = 2 * (lane % 4);
      const uint32_t want = uint32_t(in[size_t(j * 64 + row * 8 + col)]) |
                            uint32_t(in[size_t(j * 64 + row * 8 + col + 1)]) << 16;
      INFO("lane " << lane << " register " << j);
      CHECK(out[size_t(lane * 4 + j)] == want);
    }
}

TEST_CASE("mma cuda: cp.async copies 16-byte chunks and zero-fills past the edge", "[mma][cuda]") {
  GAN_REQUIRE_GPU();
  for (int n : {128, 101, 3}) {
    INFO("n = " << n);
    // The buffer holds whole 16-byte chunks (kernels/mma.h); past n it holds values the copy
    // must not take (it zero-fills instead).
    auto src = randoms(size_t(n), 7);
    std::vector<float> padded(src);
    padded.resize(size_t((n + 3) / 4 * 4), 99.f);
    Dev<float> ds(padded), dout(std::vector<float>(128, -1.f));
    REQUIRE(mma_test::run_cp_async(ds.p, n, dout.p) == cudaSuccess);
    const auto out = dout.get();
    for (int i = 0; i < 128; ++i) CHECK(out[size_t(i)] == (i < n ? src[size_t(i)] : 0.f));
  }
}

TEST_CASE("mma cuda: dynamic shared memory over 48 KB with the opt-in attribute", "[mma][cuda]") {
  GAN_REQUIRE_GPU();
  const int n = 20000;  // 80 KB
  Dev<float> dout(std::vector<float>(size_t(n), -1.f));
  REQUIRE(mma_test::run_dynamic_smem(dout.p, n) == cudaSuccess);
  const auto out = dout.get();
  int bad = 0;
  for (int i = 0; i < n; ++i) bad += out[size_t(i)] != float(n - 1 - i);
  CHECK(bad == 0);
}
