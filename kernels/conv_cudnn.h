// Convolutions on cuDNN (NHWC tensors, (K, R, S, C) filters, float32), the GPU path of conv2d /
// conv_transpose2d (engine/ops_conv.cpp; kernels/conv.h has the geometry and the CPU references).
// A plan (descriptors and the algorithm of each direction) is made once per geometry and math
// mode and cached; the algorithm is the fastest deterministic one cuDNN's heuristics offer in
// that math mode (strict float32 = CUDNN_FMA_MATH unless TF32 is allowed). A direction for which
// cuDNN offers no deterministic algorithm falls back explicitly: a warning, or an error with
// GAN_CUDNN_DETERMINISTIC=1. The caller supplies the handle (bound to its stream), the math mode
// and the workspace, so that this layer owns every cuDNN call and the engine owns the memory.
#pragma once

#include <cudnn.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "kernels/conv.h"

namespace gan {
[[noreturn]] void throw_cudnn_error(int status, const char* call, const char* file, int line);
}

#define GAN_CUDNN_CHECK(call)                                            \
  do {                                                                   \
    const auto gan_st_ = (call);                                         \
    if (gan_st_ != CUDNN_STATUS_SUCCESS)                                 \
      ::gan::throw_cudnn_error(int(gan_st_), #call, __FILE__, __LINE__); \
  } while (0)

namespace gan::kernels {

struct CudnnConvContext {
  cudnnHandle_t handle = nullptr;  // bound to the stream the convolution runs on
  bool tf32 = false;               // TF32 tensor-op math allowed (else strict float32, FMA)
  // A device buffer of at least `bytes` bytes, usable on that stream until the next call.
  std::function<void*(size_t bytes)> workspace;
};

// x (N, H, W, C), w (K, R, S, C) -> y (N, P, Q, K), overwritten.
void conv_forward_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const float* x,
                        const float* w, float* y);
// dy (N, P, Q, K), w -> dx (N, H, W, C), overwritten.
void conv_backward_data_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const float* dy,
                              const float* w, float* dx);
// x, dy -> dw (K, R, S, C), overwritten or accumulated.
void conv_backward_filter_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const float* x,
                                const float* dy, float* dw, bool accumulate);

// One line per plan made so far: its geometry and the algorithm chosen for each direction, with
// "NOT deterministic: fallback" where cuDNN offered no deterministic one. GAN_LOG_CUDNN=1 prints
// each line to stderr as the plan is made.
std::vector<std::string> conv_plan_log();

}  // namespace gan::kernels
