// oneDNN plumbing shared by the CPU backend's convolutions and GEMMs (kernels/cpu/ only): the
// engine and stream, the scratch buffers, and the lock that serialises primitive execution.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include <oneapi/dnnl/dnnl.hpp>

namespace gan::kernels::cpu::dnnl_util {

dnnl::engine& engine();
dnnl::stream& stream();
// Held while a primitive runs: plans and scratch buffers are shared.
std::mutex& lock();

// A growable 64-byte-aligned buffer (kept between calls: no allocation in the steady state).
class Scratch {
 public:
  Scratch() = default;
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get(size_t bytes);

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Scratch buffers by purpose: oneDNN's scratchpad and reordered weights (two: a direction may
// need one weight in the primitive's layout while another is written).
Scratch& scratchpad();
Scratch& weights(int i);

// Runs prim with args on the backend's stream and waits.
void execute(const dnnl::primitive& prim, const std::unordered_map<int, dnnl::memory>& args);

// Row-major C (m, n) = alpha op(A) op(B) + beta C through dnnl_sgemm (thread-safe; inside a
// parallel region it runs on the calling thread). Throws gan::Error on failure.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The implementation oneDNN chose ("jit:avx512_core", "gemm:jit", ...).
std::string impl_name(const dnnl::primitive_desc_base& pd);

}  // namespace gan::kernels::cpu::dnnl_util
