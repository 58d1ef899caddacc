#include "kernels/runtime.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace gan::kernels {

namespace {
int device_attribute(cudaDeviceAttr attr) {
  int dev = 0, v = 0;
  GAN_CUDA_CHECK(cudaGetDevice(&dev));
  GAN_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, dev));
  return v;
}
}  // namespace

int device_sm_count() {
  static const int n = device_attribute(cudaDevAttrMultiProcessorCount);
  return n;
}

bool log_kernels() {
  for (const char* name : {"GAN_LOG_KERNELS", "GAN_LOG_CUDNN"})
    if (const char* e = std::getenv(name); e && *e && std::string(e) != "0") return true;
  return false;
}

double time_with_events(cudaStream_t stream, const std::function<void()>& run) {
  cudaEvent_t a = nullptr, b = nullptr;
  GAN_CUDA_CHECK(cudaEventCreate(&a));
  GAN_CUDA_CHECK(cudaEventCreate(&b));
  struct Guard {
    cudaEvent_t a, b;
    ~Guard() {
      (void)cudaEventDestroy(a);
      (void)cudaEventDestroy(b);
    }
  } guard{a, b};
  run();  // warm-up (and the first use's lazy setup)
  std::vector<double> ms;
  for (int i = 0; i < 3; ++i) {
    GAN_CUDA_CHECK(cudaEventRecord(a, stream));
    run();
    GAN_CUDA_CHECK(cudaEventRecord(b, stream));
    GAN_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    GAN_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[1];
}

}  // namespace gan::kernels
