#include "kernels/cpu/dnnl_util.h"

#include <cstdlib>
#include <new>
#include <unordered_map>

#include <fmt/format.h>

#include "kernels/check.h"

namespace gan::kernels::cpu::dnnl_util {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

std::mutex& lock() {
  static std::mutex m;
  return m;
}

Scratch::~Scratch() { std::free(p_); }

void* Scratch::get(size_t bytes) {
  if (bytes <= bytes_ && p_) return p_;
  std::free(p_);
  bytes_ = (bytes + 63) / 64 * 64;
  p_ = std::aligned_alloc(64, bytes_ ? bytes_ : 64);
  if (!p_) throw std::bad_alloc();
  return p_;
}

Scratch& scratchpad() {
  static Scratch s;
  return s;
}

Scratch& weights(int i) {
  static Scratch s[2];
  return s[i];
}

void execute(const dnnl::primitive& prim, const std::unordered_map<int, dnnl::memory>& args) {
  prim.execute(stream(), args);
  stream().wait();
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, A,
                                      lda, B, ldb, beta, C, ldc);
  // gan::Error without kernels/check.cpp's helpers (not linked into this library).
  if (st != dnnl_success)
    throw Error(fmt::format("gemm: dnnl_sgemm failed with status {}", int(st)));
}

std::string impl_name(const dnnl::primitive_desc_base& pd) { return pd.impl_info_str(); }

}  // namespace gan::kernels::cpu::dnnl_util
