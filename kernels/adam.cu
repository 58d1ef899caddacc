#include <algorithm>

#include "kernels/adam.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void adam_begin_step_kernel(AdamScalars* s, double beta1, double beta2) {
  const double t = s->step + 1;
  s->step = t;
  s->step_size = s->lr / (1 - pow(beta1, t));
  s->bc2_sqrt = sqrt(1 - pow(beta2, t));
}

__global__ void adam_set_lr_kernel(AdamScalars* s, double lr) { s->lr = lr; }

// PyTorch's lerp: exact at both ends, the branch chosen by the weight's size.
__device__ __forceinline__ float lerp_torch(float self, float end, float w) {
  return fabsf(w) < 0.5f ? self + w * (end - self) : end - (end - self) * (1.f - w);
}

// One block per chunk of kAdamChunk elements of one tensor.
__global__ void adam_update_kernel(const AdamTensorRef* __restrict__ tensors,
                                   const AdamChunk* __restrict__ chunks, int64_t num_chunks,
                                   const AdamScalars* __restrict__ s, float w1, float beta2,
                                   float one_minus_beta2, float eps, float weight_decay) {
  const float step_size = float(s->step_size);
  const float bc2_sqrt = float(s->bc2_sqrt);
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const AdamChunk ch = chunks[c];
    const AdamTensorRef t = tensors[ch.tensor];
    const int64_t end = min(t.n, ch.start + kAdamChunk);
    for (int64_t i = ch.start + threadIdx.x; i < end; i += kThreads) {
      float g = t.g[i];
      float p = t.p[i];
      if (weight_decay != 0.f) g = g + weight_decay * p;
      const float m = lerp_torch(t.m[i], g, w1);
      const float v = t.v[i] * beta2 + one_minus_beta2 * g * g;
      t.m[i] = m;
      t.v[i] = v;
      const float denom = sqrtf(v) / bc2_sqrt + eps;
      t.p[i] = p + (-step_size) * (m / denom);
    }
  }
}

}  // namespace

void adam_begin_step_cuda(AdamScalars* s, const AdamHyper& h, cudaStream_t stream) {
  GAN_NVTX("adam_begin_step");
  launch(adam_begin_step_kernel, 1, 1, 0, stream, s, h.beta1, h.beta2);
  GAN_CUDA_CHECK_LAUNCH();
}

void adam_set_lr_cuda(AdamScalars* s, double lr, cudaStream_t stream) {
  GAN_NVTX("adam_set_lr");
  launch(adam_set_lr_kernel, 1, 1, 0, stream, s, lr);
  GAN_CUDA_CHECK_LAUNCH();
}

void adam_update_cuda(const AdamTensorRef* tensors, const AdamChunk* chunks, int64_t num_chunks,
                      const AdamScalars* s, const AdamHyper& h, cudaStream_t stream) {
  GAN_NVTX("adam");
  if (num_chunks == 0) return;
  const unsigned blocks = unsigned(std::min<int64_t>(num_chunks, int64_t(1) << 20));
  launch(adam_update_kernel, blocks, kThreads, 0, stream, tensors, chunks, num_chunks, s,
         float(1 - h.beta1), float(h.beta2), float(1 - h.beta2), float(h.eps),
         float(h.weight_decay));
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace gan::kernels
