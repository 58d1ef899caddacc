// Benchmark helpers: CUDA-event timing after warm-up, medians, the device's measured copy
// bandwidth (the ceiling memory-bound kernels are reported against), and one JSON line per
// measurement on stdout.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace gan::bench {

// Median over `reps` repeats of the mean time (ms) of `iters` back-to-back calls of f on the
// engine stream, after `warmup` calls.
inline double time_ms(const std::function<void()>& f, int warmup = 10, int iters = 50,
                      int reps = 7) {
  cudaStream_t st = cuda::stream();
  for (int i = 0; i < warmup; ++i) f();
  GAN_CUDA_CHECK(cudaStreamSynchronize(st));
  cudaEvent_t a, b;
  GAN_CUDA_CHECK(cudaEventCreate(&a));
  GAN_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    GAN_CUDA_CHECK(cudaEventRecord(a, st));
    for (int i = 0; i < iters; ++i) f();
    GAN_CUDA_CHECK(cudaEventRecord(b, st));
    GAN_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    GAN_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(double(t) / iters);
  }
  GAN_CUDA_CHECK(cudaEventDestroy(a));
  GAN_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written.
inline double copy_bandwidth_gbs(size_t bytes = size_t(256) << 20) {
  void *src = nullptr, *dst = nullptr;
  GAN_CUDA_CHECK(cudaMalloc(&src, bytes));
  GAN_CUDA_CHECK(cudaMalloc(&dst, bytes));
  const double ms = time_ms(
      [&] {
        GAN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda::stream()));
      },
      3, 10, 5);
  GAN_CUDA_CHECK(cudaFree(src));
  GAN_CUDA_CHECK(cudaFree(dst));
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

// max |got - want| / max(max |want|, 1e-3) over two tensors of the same size (any device), as the
// test harness normalises errors.
inline double max_rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  double scale = 0, err = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    scale = std::max(scale, std::fabs(double(w[i])));
    err = std::max(err, std::fabs(double(g[i]) - double(w[i])));
  }
  return err / std::max(scale, 1e-3);
}

inline std::string device_name() {
  cudaDeviceProp p{};
  GAN_CUDA_CHECK(cudaGetDeviceProperties(&p, cuda::context().device));
  return p.name;
}

}  // namespace gan::bench
