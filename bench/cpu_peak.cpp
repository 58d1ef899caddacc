// cpu_peak: the CPU's measured float32 throughput, the floor of docs/cpu-backend.md's table.
//
//   build/bench/cpu_peak [--threads N] [--seconds S]
//
// Prints one JSON line: "fma_gflops", independent FMA chains on every thread in the widest vectors
// the CPU has (AVX-512, else AVX2 + FMA; 2 flops per lane per FMA); "sgemm_gflops", oneDNN's
// sgemm on 2048 x 2048 x 2048 (what a well-blocked product reaches); the thread count and the
// vector width used. Medians of 5 repeats.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>

#include "kernels/cpu/backend.h"
#include "tools/programs/cli.h"

namespace {

constexpr int64_t kIters = 1 << 22;

// 12 independent accumulators of FMAs: enough to cover the FMA latency on current cores.
__attribute__((target("avx512f"))) float fma_avx512(float seed) {
  __m512 a[12];
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(seed + float(i));
  for (int64_t it = 0; it < kIters; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  float out[16];
  _mm512_storeu_ps(out, s);
  float t = 0;
  for (float v : out) t += v;
  return t;
}

__attribute__((target("avx2,fma"))) float fma_avx2(float seed) {
  __m256 a[12];
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(seed + float(i));
  for (int64_t it = 0; it < kIters; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  float t = 0;
  for (float v : out) t += v;
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cpu_peak: the CPU's float32 FMA and sgemm throughput"};
  if (auto rc = gan::cli::parse(app, argc, argv, "cpu_peak")) return *rc;
  const int threads = gan::kernels::cpu::num_threads();
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const int lanes = avx512 ? 16 : avx2 ? 8 : 0;
  double fma_gflops = 0;
  float sink = 0;  // printed, so that the loops are not optimised away
  if (lanes) {
    std::vector<double> reps;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      float sum = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
      sum += avx512 ? fma_avx512(float(omp_get_thread_num())) : fma_avx2(1.f);
      sink += sum;
      const double s = seconds_since(t0);
      reps.push_back(double(threads) * kIters * 12 * lanes * 2 / s / 1e9);
    }
    fma_gflops = median(reps);
  }
  const int64_t n = 2048;
  std::vector<float> A(size_t(n * n), 0.5f), B(size_t(n * n), 0.25f), C(size_t(n * n));
  std::vector<double> reps;
  for (int r = 0; r < 6; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    dnnl_sgemm('N', 'N', n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);
    const double s = seconds_since(t0);
    if (r > 0) reps.push_back(2.0 * n * n * n / s / 1e9);  // the first one warms up
  }
  std::printf(
      "{\"threads\": %d, \"vector_lanes\": %d, \"fma_gflops\": %.1f, \"sgemm_gflops\": %.1f, "
      "\"cpu_backend\": \"%s\", \"checksum\": %g}\n",
      threads, lanes, fma_gflops, median(reps), gan::kernels::cpu::describe().c_str(),
      double(sink + C[0]));
  return 0;
}
