// cuDNN: the handle (bound to the engine stream), status checks, and the convolution plans used
// by conv2d / conv_transpose2d (engine/ops_conv.cpp).
#pragma once

#include <cudnn.h>

#include <string>
#include <vector>

#include "engine/error.h"

namespace gan {
[[noreturn]] void throw_cudnn_error(int status, const char* call, const char* file, int line);
}

#define GAN_CUDNN_CHECK(call)                                            \
  do {                                                                   \
    const auto gan_st_ = (call);                                         \
    if (gan_st_ != CUDNN_STATUS_SUCCESS)                                 \
      ::gan::throw_cudnn_error(int(gan_st_), #call, __FILE__, __LINE__); \
  } while (0)

namespace gan::cuda {
// The cuDNN handle of the engine stream (created on first use).
cudnnHandle_t cudnn();
// One line per convolution plan made so far: its geometry and the algorithm chosen for each
// direction, with "NOT deterministic: fallback" where cuDNN offered no deterministic one (a
// warning then, an error when GAN_CUDNN_DETERMINISTIC is set). GAN_LOG_CUDNN=1 prints each line
// to stderr as the plan is made.
std::vector<std::string> conv_plan_log();
}  // namespace gan::cuda

namespace gan::kernels {
struct ConvGeom;
}

// Convolutions on cuDNN (NHWC tensors, (K, R, S, C) filters, float32). A plan (descriptors and
// the algorithm of each direction) is made once per geometry and math mode and cached; the
// algorithm is the fastest deterministic one cuDNN's heuristics offer in that math mode (strict
// float32 = CUDNN_FMA_MATH unless TF32 is allowed). One workspace serves every plan; it grows when
// a plan needs more (the first step), never in steady state. See kernels/conv.h for the math.
namespace gan::cuda {
// x (N, H, W, C), w (K, R, S, C) -> y (N, P, Q, K), overwritten.
void conv_forward(const kernels::ConvGeom& g, const float* x, const float* w, float* y);
// dy (N, P, Q, K), w -> dx (N, H, W, C), overwritten.
void conv_backward_data(const kernels::ConvGeom& g, const float* dy, const float* w, float* dx);
// x, dy -> dw (K, R, S, C), overwritten or accumulated.
void conv_backward_filter(const kernels::ConvGeom& g, const float* x, const float* dy, float* dw,
                          bool accumulate);
}  // namespace gan::cuda
