#include "kernels/runtime.h"

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

}  // namespace gan::kernels
