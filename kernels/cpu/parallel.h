// Parallel loops of the CPU backend (its .cpp files only: they are compiled with OpenMP).
//
// parallel_for splits a range into one contiguous part per thread: for work whose result does
// not depend on how it is split (each output element computed by one iteration). Reductions use
// fixed blocks instead (block_count / block_range): the blocks depend on the size only, each
// block's partial result is computed by one thread in a fixed order and the caller combines the
// partials in block order, so the result is the same for every thread count.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cpu/backend.h"

// Marks a function holding a hot loop: compiled three times (AVX-512, AVX2 + FMA, the baseline),
// the best one for the CPU picked at load time. Without -ffast-math the compiler neither
// contracts a * b + c into an FMA nor reorders sums, so every version gives the same bits.
// Not under ThreadSanitizer: the clones' resolvers run while the dynamic loader relocates the
// program, before TSan's runtime is up, and their instrumented entry crashes there.
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define GAN_CPU_SIMD __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define GAN_CPU_SIMD
#endif

namespace gan::kernels::cpu {

// Elements per part below which a loop over floats is not worth another thread, and the size of
// a reduction's fixed blocks: 16384, or 5 while tests split small loops (set_test_splitting).
inline int64_t grain() { return test_splitting() ? 5 : 16384; }

// Calls f(begin, end) on parts of [0, n) in parallel; serially when n < 2 * grain (a part of at
// least `grain` iterations is worth a thread) or inside another parallel region.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  const int64_t most = grain > 0 ? n / grain : n;
  const int threads = int(std::min<int64_t>(num_threads(), std::max<int64_t>(most, 1)));
  if (threads <= 1 || omp_in_parallel()) {
    f(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t b = n * t / nt, e = n * (t + 1) / nt;
    if (b < e) f(b, e);
  }
}

// Calls f(i) for i in [0, count) in parallel (static schedule): for a loop over blocks.
template <class F>
void parallel_blocks(int64_t count, F&& f) {
  if (count <= 0) return;
  const int threads = int(std::min<int64_t>(num_threads(), count));
  if (threads <= 1 || omp_in_parallel()) {
    for (int64_t i = 0; i < count; ++i) f(i);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < count; ++i) f(i);
}

// Fixed blocks for a reduction over n items: ceil(n / block) blocks of `block` items (the last
// shorter); block i covers [i * block, min(n, (i + 1) * block)).
inline int64_t block_count(int64_t n, int64_t block) {
  return n <= 0 ? 0 : (n + block - 1) / block;
}

}  // namespace gan::kernels::cpu
