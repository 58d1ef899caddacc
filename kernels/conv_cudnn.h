// Convolutions on cuDNN (NHWC tensors, (K, R, S, C) filters, float32), the GPU path of conv2d /
// conv_transpose2d (engine/ops_conv.cpp; kernels/conv.h has the geometry and the CPU references).
// A plan (descriptors and the algorithm of each direction) is made once per geometry and math
// mode and cached. Each direction's algorithm is chosen on its first call:
//  - by measurement (the default): the candidates are every algorithm cuDNN's heuristics list
//    for that direction in the math mode (strict float32 = CUDNN_FMA_MATH only; TF32 = any), in
//    NHWC and, with the operands and result converted by cudnnTransformTensor, in NCHW (cuDNN's
//    strict-float32 kernels for strided data gradients are twice as fast there on an H200), and,
//    where the window covers the whole input (output 1x1, no padding: a GEMM), one cuBLAS GEMM
//    (ctx.cublas, in that handle's math mode). Each whose workspace fits `workspace_limit` is
//    run on the caller's buffers and timed (ConvTimer; CUDA events, the median of 3 runs after
//    one warm-up), non-deterministic algorithms included; the fastest wins. A first call inside a
//    CUDA graph capture cannot time: it takes the heuristics' first. Timed choices are kept in a
//    plan cache on disk (set_conv_plan_cache), keyed by GPU, cuDNN version, geometry, direction and
//    math mode, so that a second run starts without timing;
//  - deterministic (ctx.deterministic, gan_train --deterministic): the heuristics' first
//    deterministic algorithm, untimed, so that two runs on the same GPU and library are bitwise
//    equal; a direction with no deterministic algorithm is an error.
// The caller supplies the handle (bound to its stream), the math mode, the policy and the
// workspace, so that this layer owns every cuDNN call and the engine owns the memory.
#pragma once

#include <cublas_v2.h>
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

enum class ConvDirection { kForward, kBackwardData, kBackwardFilter };
const char* conv_direction_name(ConvDirection d);

enum class ConvLayout { kNHWC = 0, kNCHW = 1 };
constexpr int kConvGemmAlgo = -1;  // ConvCandidate::algo of the cuBLAS GEMM

// One way to run one direction: a cuDNN algorithm as the heuristics list it, in a layout, or the
// GEMM (algo kConvGemmAlgo, layout NHWC).
struct ConvCandidate {
  ConvDirection direction = ConvDirection::kForward;
  int algo = 0;
  int math = 0;  // cudnnMathType_t
  ConvLayout layout = ConvLayout::kNHWC;
  size_t workspace = 0;  // NCHW: includes the converted operands and result
  bool deterministic = true;
};

// Times one candidate: `run` launches it once on the convolution's stream (it throws when cuDNN
// refuses it); returns milliseconds, or a negative value to exclude the candidate. Tests inject
// one; the default (empty) times with CUDA events.
using ConvTimer = std::function<double(const ConvCandidate&, const std::function<void()>& run)>;

struct CudnnConvContext {
  cudnnHandle_t handle = nullptr;  // bound to the stream the convolution runs on
  bool tf32 = false;               // TF32 tensor-op math allowed (else strict float32, FMA)
  // bf16 operands and result (uint16_t patterns), float32 accumulation (cuDNN's
  // PSEUDO_BFLOAT16 configuration), any math type; candidates: cuDNN's in NHWC only (no NCHW
  // conversion, no GEMM). Plans and cached choices are kept apart from float32 ones.
  bool bf16 = false;
  bool deterministic = false;       // heuristic deterministic algorithms only, untimed
  cublasHandle_t cublas = nullptr;  // on the same stream: the GEMM candidate (none if null)
  size_t workspace_limit = size_t(1) << 30;  // the largest workspace a timed candidate may use
  ConvTimer timer;                           // empty: CUDA events
  // A device buffer of at least `bytes` bytes, usable on that stream until the next call.
  std::function<void*(size_t bytes)> workspace;
};

// The plan cache on disk: a text file of timed choices, read on first use and appended to as
// choices are made ("" turns it off, the default). Setting it again reads the new file.
void set_conv_plan_cache(const std::string& path);
// Forgets every plan made so far (descriptors and choices; the log stays): tests, benchmarks.
void reset_conv_plans();

// Buffers hold float32, or bf16 patterns when ctx.bf16.
// x (N, H, W, C), w (K, R, S, C) -> y (N, P, Q, K), overwritten.
void conv_forward_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const void* x,
                        const void* w, void* y);
// dy (N, P, Q, K), w -> dx (N, H, W, C), overwritten.
void conv_backward_data_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const void* dy,
                              const void* w, void* dx);
// x, dy -> dw (K, R, S, C), overwritten or accumulated.
void conv_backward_filter_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const void* x,
                                const void* dy, void* dw, bool accumulate);

// For the per-geometry table (bench/bench_conv): every algorithm cuDNN's heuristics list for one
// direction of `g` with tensors in NHWC or NCHW, in the math mode of ctx.tf32 (strict float32:
// FMA ones only), each timed (ctx.timer, or CUDA events) on buffers allocated here, in the
// heuristics' order. ms < 0: refused, failed, or its workspace over ctx.workspace_limit. Not
// inside a capture.
struct ConvTiming {
  ConvCandidate candidate;
  double ms = -1;
};
std::vector<ConvTiming> conv_time_candidates(const CudnnConvContext& ctx, const ConvGeom& g,
                                             bool nchw, ConvDirection direction);

// One line per choice made so far: geometry, math mode, direction, the algorithm and how it was
// chosen (timed: each candidate's milliseconds; cached; heuristic). GAN_LOG_KERNELS=1 prints each
// line to stderr as the choice is made.
std::vector<std::string> conv_plan_log();

}  // namespace gan::kernels
