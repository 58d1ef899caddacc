#include "engine/random.h"

#include <cstring>

#include "engine/dispatch.h"
#include "kernels/cpu/ops.h"
#include "kernels/random.h"

namespace gan {

Generator::Generator(uint64_t seed, Device device) : device_(device) {
  state_ = Storage::allocate(2 * sizeof(uint64_t), device);
  set_state(seed, 0);
}

void Generator::set_state(uint64_t seed, uint64_t offset) {
  const uint64_t s[2] = {seed, offset};
  if (device_ == Device::CUDA) {
    GAN_CUDA_CHECK(
        cudaMemcpyAsync(state_->data, s, sizeof(s), cudaMemcpyHostToDevice, cuda::stream()));
    GAN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  } else {
    std::memcpy(state_->data, s, sizeof(s));
  }
}

namespace {
void read_state(const Storage& st, uint64_t out[2]) {
  if (st.device == Device::CUDA) {
    GAN_CUDA_CHECK(cudaMemcpyAsync(out, st.data, 2 * sizeof(uint64_t), cudaMemcpyDeviceToHost,
                                   cuda::stream()));
    GAN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  } else {
    std::memcpy(out, st.data, 2 * sizeof(uint64_t));
  }
}
}  // namespace

uint64_t Generator::seed() const {
  uint64_t s[2];
  read_state(*state_, s);
  return s[0];
}

uint64_t Generator::offset() const {
  uint64_t s[2];
  read_state(*state_, s);
  return s[1];
}

void Generator::normal_(Tensor& t, double mean, double stddev) {
  fill(t, int(kernels::Dist::kNormal), mean, stddev);
}

void Generator::uniform_(Tensor& t, double lo, double hi) {
  GAN_CHECK(lo <= hi, "uniform_: lo > hi");
  fill(t, int(kernels::Dist::kUniform), lo, hi);
}

void Generator::fill(Tensor& t, int dist, double a, double b) {
  GAN_CHECK(t.device() == device_, std::string("random fill: generator on ") +
                                       device_name(device_) + ", tensor " + t.str());
  const auto d = kernels::Dist(dist);
  if (device_ == Device::CUDA) {
    check_cuda_f32("random fill", t);
    kernels::philox_fill_cuda(t.data<float>(), t.numel(), static_cast<uint64_t*>(state_->data), d,
                              a, b, cuda::stream());
    return;
  }
  auto* s = static_cast<uint64_t*>(state_->data);
  dispatch_cpu(t, "random fill", [&](auto tag) {
    using T = decltype(tag);
    kernels::cpu::philox_fill<T>(t.data<T>(), t.numel(), s[0], s[1], d, a, b);
  });
  s[1] += 1;
}

}  // namespace gan
