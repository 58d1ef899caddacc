// Force-included (g++ -include) into every kernel source built for the interpreter: CUDA's device
// built-ins as C++ over the SIMT runtime (kernels/interpreter/simt.h). With nvcc none of this is
// used. __shared__ variables become thread-local statics: one OS thread runs one block at a
// time, and the runtime fills them with NaN bytes before every block (docs/interpreter.md).
#pragma once

#define GAN_INTERP 1
#define __shared__ thread_local __attribute__((tls_model("initial-exec")))
#define __launch_bounds__(...)

#include <math.h>

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

#include <cuda_runtime.h>

#include "kernels/interpreter/simt.h"

#define threadIdx (::gan::interp::tls_thread->thread_idx)
#define blockIdx (::gan::interp::tls_thread->block_idx)
#define blockDim (::gan::interp::tls_thread->block_dim)
#define gridDim (::gan::interp::tls_thread->grid_dim)
constexpr int warpSize = 32;

// extern __shared__ T name[] has no C++ equivalent: kernels written for both modes declare
// dynamic shared memory with GAN_DYNAMIC_SHARED(T, name) (kernels/runtime.h has the nvcc form).
#define GAN_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::gan::interp::dynamic_shared())

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  ::gan::interp::block_sync(loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location loc = std::source_location::current()) {
  (void)::gan::interp::warp_op(::gan::interp::WarpOp::kSync, mask, 0, 0, 32, loc);
}

namespace gan::interp {
template <class T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle: 8 bytes at most");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}
template <class T>
T shfl(WarpOp op, unsigned mask, T v, int arg, int width, const std::source_location& loc) {
  return from_bits<T>(warp_op(op, mask, to_bits(v), arg, width, loc));
}
}  // namespace gan::interp

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32,
              std::source_location loc = std::source_location::current()) {
  return ::gan::interp::shfl(::gan::interp::WarpOp::kShflIdx, mask, v, src, width, loc);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32,
                 std::source_location loc = std::source_location::current()) {
  return ::gan::interp::shfl(::gan::interp::WarpOp::kShflUp, mask, v, int(delta), width, loc);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                   std::source_location loc = std::source_location::current()) {
  return ::gan::interp::shfl(::gan::interp::WarpOp::kShflDown, mask, v, int(delta), width, loc);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                  std::source_location loc = std::source_location::current()) {
  return ::gan::interp::shfl(::gan::interp::WarpOp::kShflXor, mask, v, lane_mask, width, loc);
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              std::source_location loc = std::source_location::current()) {
  return unsigned(
      ::gan::interp::warp_op(::gan::interp::WarpOp::kBallot, mask, pred != 0, 0, 32, loc));
}
inline int __any_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  return int(::gan::interp::warp_op(::gan::interp::WarpOp::kAny, mask, pred != 0, 0, 32, loc));
}
inline int __all_sync(unsigned mask, int pred,
                      std::source_location loc = std::source_location::current()) {
  return int(::gan::interp::warp_op(::gan::interp::WarpOp::kAll, mask, pred != 0, 0, 32, loc));
}

// Memory fences: the interpreter's memory model is the CPU's; a full fence is at least as strong.
// ThreadSanitizer does not model fences: there a fence releases and acquires one global sync
// object (it orders every fence after every earlier one, stronger than CUDA).
#if defined(__SANITIZE_THREAD__)
namespace gan::interp {
void tsan_fence();
}
inline void __threadfence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  ::gan::interp::tsan_fence();
}
#else
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
#endif
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Cache-hinted loads are plain loads.
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcg(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}

// Atomics: real ones (blocks run on several OS threads at once).
template <class T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
template <class T>
T atomicSub(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_sub(v);
}
template <class T>
T atomicExch(T* p, T v) {
  return std::atomic_ref<T>(*p).exchange(v);
}
template <class T>
T atomicCAS(T* p, T expected, T desired) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
  return expected;
}
template <class T>
T atomicMax(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <class T>
T atomicMin(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}

// Arithmetic intrinsics: IEEE round-to-nearest on the CPU; the fast-math variants are the
// accurate functions (tolerances cover both).
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __frcp_rn(float a) { return 1.f / a; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __expf(float a) { return expf(a); }
inline float __logf(float a) { return logf(a); }
inline float rsqrtf(float a) { return 1.f / sqrtf(a); }
inline float __saturatef(float a) { return a < 0.f ? 0.f : (a > 1.f ? 1.f : a); }
inline int __float_as_int(float a) { return std::bit_cast<int>(a); }
inline float __int_as_float(int a) { return std::bit_cast<float>(a); }
inline unsigned __float_as_uint(float a) { return std::bit_cast<unsigned>(a); }
inline float __uint_as_float(unsigned a) { return std::bit_cast<float>(a); }
inline int __popc(unsigned a) { return std::popcount(a); }
inline int __clz(int a) { return a == 0 ? 32 : std::countl_zero(unsigned(a)); }
inline int __ffs(int a) { return a == 0 ? 0 : std::countr_zero(unsigned(a)) + 1; }

// CUDA's device min/max overloads for mixed integer and float arguments.
template <class A, class B>
requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B> std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <class A, class B>
requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B> std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}
