#include "engine/adam.h"

#include <cstring>

#include <fmt/format.h>

#include "engine/dispatch.h"
#include "engine/weight_cast.h"
#include "kernels/cpu/ops.h"

namespace gan {

Adam::Adam(std::vector<Var> params, const AdamOptions& options)
    : options_(options), params_(std::move(params)) {
  GAN_CHECK(options.lr >= 0, fmt::format("adam: learning rate {} < 0", options.lr));
  GAN_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
            fmt::format("adam: betas ({}, {}) outside [0, 1)", options.beta1, options.beta2));
  GAN_CHECK(options.eps >= 0, fmt::format("adam: eps {} < 0", options.eps));
  hyper_ = {options.beta1, options.beta2, options.eps, options.weight_decay};
  if (!params_.empty()) device_ = params_[0].device();
  for (size_t i = 0; i < params_.size(); ++i) {
    const Var& p = params_[i];
    GAN_CHECK(p.is_param(), fmt::format("adam: argument {} ({}) is not a parameter", i, p.name()));
    GAN_CHECK(p.device() == device_,
              fmt::format("adam: parameter {} ({}) on {}, others on {}", i, p.name(),
                          device_name(p.device()), device_name(device_)));
    m_.push_back(Tensor::zeros_like(p.value()));
    v_.push_back(Tensor::zeros_like(p.value()));
  }
  scalars_ = Storage::allocate(sizeof(kernels::AdamScalars), device_);
  kernels::AdamScalars s;
  s.lr = options.lr;
  write_scalars(s);
  if (device_ != Device::CUDA) return;

  // Device tables for the multi-tensor kernel: pointers are stable for the optimizer's life.
  std::vector<kernels::AdamTensorRef> refs;
  std::vector<kernels::AdamChunk> chunks;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].value();
    check_cuda_f32("adam", p);
    refs.push_back({p.data<float>(), params_[i].grad().data<float>(), m_[i].data<float>(),
                    v_[i].data<float>(), p.numel()});
    for (int64_t start = 0; start < p.numel(); start += kernels::kAdamChunk)
      chunks.push_back({int32_t(i), start});
  }
  num_chunks_ = int64_t(chunks.size());
  refs_ = Storage::allocate(refs.size() * sizeof(refs[0]), Device::CUDA);
  chunks_ = Storage::allocate(chunks.size() * sizeof(chunks[0]), Device::CUDA);
  cudaStream_t st = cuda::stream();
  if (!refs.empty())
    GAN_CUDA_CHECK(cudaMemcpyAsync(refs_->data, refs.data(), refs.size() * sizeof(refs[0]),
                                   cudaMemcpyHostToDevice, st));
  if (!chunks.empty())
    GAN_CUDA_CHECK(cudaMemcpyAsync(chunks_->data, chunks.data(), chunks.size() * sizeof(chunks[0]),
                                   cudaMemcpyHostToDevice, st));
  GAN_CUDA_CHECK(cudaStreamSynchronize(st));  // the host vectors go out of scope
}

void Adam::step() {
  {  // the bf16 roundings of the weights about to change (engine/weight_cast.h)
    std::vector<Tensor> changed;
    changed.reserve(params_.size());
    for (const Var& p : params_) changed.push_back(p.value());
    invalidate_weight_casts(changed);
  }
  if (device_ == Device::CUDA) {
    auto* s = static_cast<kernels::AdamScalars*>(scalars_->data);
    kernels::adam_begin_step_cuda(s, hyper_, cuda::stream());
    kernels::adam_update_cuda(static_cast<const kernels::AdamTensorRef*>(refs_->data),
                              static_cast<const kernels::AdamChunk*>(chunks_->data), num_chunks_, s,
                              hyper_, cuda::stream());
    return;
  }
  auto* s = static_cast<kernels::AdamScalars*>(scalars_->data);
  s->step += 1;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].value();
    dispatch_cpu(p, "adam", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::adam<T>(hyper_, s->lr, s->step, p.data<T>(), params_[i].grad().data<T>(),
                            m_[i].data<T>(), v_[i].data<T>(), p.numel());
    });
  }
}

void Adam::set_lr(double lr) {
  GAN_CHECK(lr >= 0, fmt::format("adam: learning rate {} < 0", lr));
  options_.lr = lr;
  if (device_ == Device::CUDA)
    kernels::adam_set_lr_cuda(static_cast<kernels::AdamScalars*>(scalars_->data), lr,
                              cuda::stream());
  else
    static_cast<kernels::AdamScalars*>(scalars_->data)->lr = lr;
}

kernels::AdamScalars Adam::read_scalars() const {
  kernels::AdamScalars s;
  if (device_ == Device::CUDA) {
    GAN_CUDA_CHECK(
        cudaMemcpyAsync(&s, scalars_->data, sizeof(s), cudaMemcpyDeviceToHost, cuda::stream()));
    GAN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  } else {
    std::memcpy(&s, scalars_->data, sizeof(s));
  }
  return s;
}

void Adam::write_scalars(const kernels::AdamScalars& s) {
  if (device_ == Device::CUDA) {
    GAN_CUDA_CHECK(
        cudaMemcpyAsync(scalars_->data, &s, sizeof(s), cudaMemcpyHostToDevice, cuda::stream()));
    GAN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  } else {
    std::memcpy(scalars_->data, &s, sizeof(s));
  }
}

const double* Adam::step_counter() const {
  return &static_cast<const kernels::AdamScalars*>(scalars_->data)->step;
}

int64_t Adam::step_count() const { return int64_t(read_scalars().step); }

void Adam::set_step_count(int64_t step) {
  kernels::AdamScalars s = read_scalars();
  s.step = double(step);
  write_scalars(s);
}

}  // namespace gan
