// Adam as torch.optim.Adam defines it (single-tensor path; weight decay is L2 added to the grad):
//   g = grad + wd * p
//   m = lerp(m, g, 1 - beta1)                  (= beta1 m + (1 - beta1) g)
//   v = beta2 v + (1 - beta2) g^2
//   step_size = lr / (1 - beta1^t),  bc2_sqrt = sqrt(1 - beta2^t)
//   p = p - step_size * m / (sqrt(v) / bc2_sqrt + eps)
// The per-step scalars (lr, t and the two derived values) live in device memory: adam_begin_step
// increments t and derives the rest on the device, so a captured CUDA graph replays correctly and
// a learning-rate schedule only writes lr. One multi-tensor kernel updates every parameter: the
// tensors are cut into fixed chunks, one block per chunk.
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace gan::kernels {

struct AdamHyper {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
};

// Device-resident per-step scalars (double, as PyTorch's Python-side arithmetic).
struct AdamScalars {
  double lr = 1e-3;
  double step = 0;       // t: number of completed steps (incremented before each update)
  double step_size = 0;  // lr / (1 - beta1^t)
  double bc2_sqrt = 0;   // sqrt(1 - beta2^t)
};

// CPU reference for one tensor at step t (already incremented): p, m, v (n) updated in place.
template <class T>
void adam_cpu(const AdamHyper& h, double lr, double t, T* p, const T* grad, T* m, T* v, int64_t n) {
  const double bc1 = 1 - std::pow(h.beta1, t), bc2 = 1 - std::pow(h.beta2, t);
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(grad[i]) + h.weight_decay * double(p[i]);
    const double mi = h.beta1 * double(m[i]) + (1 - h.beta1) * g;
    const double vi = h.beta2 * double(v[i]) + (1 - h.beta2) * g * g;
    m[i] = T(mi);
    v[i] = T(vi);
    p[i] = T(double(p[i]) - lr / bc1 * mi / (std::sqrt(vi) / std::sqrt(bc2) + h.eps));
  }
}

struct AdamTensorRef {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
};

struct AdamChunk {
  int32_t tensor;  // index into the AdamTensorRef array
  int64_t start;   // first element of the chunk
};

constexpr int64_t kAdamChunk = 4096;  // elements per block

// t += 1, step_size, bc2_sqrt from lr and t (one thread).
void adam_begin_step_cuda(AdamScalars* s, const AdamHyper& h, cudaStream_t stream);
// tensors, chunks: device arrays (built once; pointers stay valid across steps).
void adam_update_cuda(const AdamTensorRef* tensors, const AdamChunk* chunks, int64_t num_chunks,
                      const AdamScalars* s, const AdamHyper& h, cudaStream_t stream);
// Writes lr into the device scalars (stream-ordered, capturable).
void adam_set_lr_cuda(AdamScalars* s, double lr, cudaStream_t stream);

}  // namespace gan::kernels
