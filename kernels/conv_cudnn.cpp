#include "kernels/conv_cudnn.h"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "kernels/check.h"
#include "kernels/common.h"

namespace gan {

void throw_cudnn_error(int status, const char* call, const char* file, int line) {
  throw Error(std::string("cuDNN error ") + cudnnGetErrorString(cudnnStatus_t(status)) + " in " +
              call + " at " + file + ":" + std::to_string(line));
}

namespace kernels {

namespace {

std::mutex g_mu;  // the plan cache and its log

// One per (geometry, math mode). Each direction has its own convolution descriptor so that it
// can carry the math type its algorithm was chosen with.
struct ConvPlan {
  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  // Descriptors are host objects: destroying them needs no device, also at exit (the plan
  // cache is a static; LeakSanitizer found them leaked).
  ~ConvPlan() {
    for (cudnnConvolutionDescriptor_t c : {conv_fwd, conv_bwd_data, conv_bwd_filter})
      if (c) (void)cudnnDestroyConvolutionDescriptor(c);
    if (w) (void)cudnnDestroyFilterDescriptor(w);
    if (y) (void)cudnnDestroyTensorDescriptor(y);
    if (x) (void)cudnnDestroyTensorDescriptor(x);
  }

  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv_fwd = nullptr, conv_bwd_data = nullptr,
                               conv_bwd_filter = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t ws_fwd = 0, ws_bwd_data = 0, ws_bwd_filter = 0;
  bool has_fwd = false, has_bwd_data = false, has_bwd_filter = false;
};

using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int,
                           int, int, int, int, bool>;

PlanKey key_of(const ConvGeom& g, bool tf32) {
  return {g.n,        g.h,        g.w,     g.c,     g.k,     g.r,     g.s,
          g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, tf32};
}

int to_int(int64_t v, const char* what) {
  GAN_CHECK(v <= INT_MAX, fmt::format("conv (cuDNN): {} = {} exceeds 2^31-1", what, v));
  return int(v);
}

cudnnConvolutionDescriptor_t make_conv(const ConvGeom& g, cudnnMathType_t math) {
  cudnnConvolutionDescriptor_t d;
  GAN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
  GAN_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, g.pad_h, g.pad_w, g.stride_h, g.stride_w,
                                                  g.dil_h, g.dil_w, CUDNN_CROSS_CORRELATION,
                                                  CUDNN_DATA_FLOAT));
  GAN_CUDNN_CHECK(cudnnSetConvolutionMathType(d, math));
  return d;
}

std::vector<std::string> g_plan_log;  // one line per plan (conv_plan_log())

bool require_deterministic() {
  const char* e = std::getenv("GAN_CUDNN_DETERMINISTIC");
  return e && *e && std::string(e) != "0";
}

// Picks the first result (cuDNN orders them by expected speed) that succeeded, preferring, in
// this order: the requested math (strict float32: CUDNN_FMA_MATH only) and deterministic; the
// requested math; in strict mode, as a last resort, CUDNN_DEFAULT_MATH (float32 data, which
// cuDNN may run as TF32 on Ampere and newer: only if cuDNN offers nothing FMA-only). A choice
// that is not deterministic is the explicit fallback: a warning, or an error when
// GAN_CUDNN_DETERMINISTIC is set. `note` describes the choice for the plan's log line.
template <class Perf>
const Perf* pick(const Perf* perf, int count, bool tf32, const char* what, std::string& note) {
  const Perf *exact = nullptr, *deterministic = nullptr, *last_resort = nullptr;
  for (int i = 0; i < count; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    const bool math_ok = tf32 || p.mathType == CUDNN_FMA_MATH;
    if (math_ok && p.determinism == CUDNN_DETERMINISTIC && !deterministic) deterministic = &p;
    if (math_ok && !exact) exact = &p;
    if (!last_resort) last_resort = &p;
  }
  const Perf* p = deterministic ? deterministic : exact ? exact : last_resort;
  GAN_CHECK(p != nullptr, fmt::format("conv (cuDNN): no {} algorithm available", what));
  note = fmt::format("{} algo {} (math {}{})", what, int(p->algo), int(p->mathType),
                     p == deterministic ? ", deterministic" : ", NOT deterministic: fallback");
  if (p != deterministic) {
    const std::string msg = fmt::format(
        "cuDNN offers no deterministic {} algorithm{} for this convolution; using algorithm {} "
        "(math type {}): runs may differ bitwise",
        what, tf32 ? "" : " in strict float32 (FMA) math", int(p->algo), int(p->mathType));
    GAN_CHECK(!require_deterministic(),
              "conv (cuDNN): " + msg + " (GAN_CUDNN_DETERMINISTIC is set)");
    std::fprintf(stderr, "gan: warning: %s\n", msg.c_str());
  }
  return p;
}

ConvPlan& plan_locked(const CudnnConvContext& ctx, const ConvGeom& g) {
  static std::map<PlanKey, std::unique_ptr<ConvPlan>> plans;
  const bool tf32 = ctx.tf32;
  auto& slot = plans[key_of(g, tf32)];
  if (slot) return *slot;
  auto plan = std::make_unique<ConvPlan>();
  ConvPlan& pl = *plan;
  GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl.x));
  GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl.y));
  GAN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&pl.w));
  GAN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl.x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT,
                                             to_int(g.n, "N"), to_int(g.c, "C"), to_int(g.h, "H"),
                                             to_int(g.w, "W")));
  GAN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl.y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT,
                                             to_int(g.n, "N"), to_int(g.k, "K"), to_int(g.p, "P"),
                                             to_int(g.q, "Q")));
  GAN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(pl.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC,
                                             to_int(g.k, "K"), to_int(g.c, "C"), to_int(g.r, "R"),
                                             to_int(g.s, "S")));
  const cudnnMathType_t query_math = tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
  cudnnConvolutionDescriptor_t probe = make_conv(g, query_math);
  struct ProbeGuard {  // destroyed on every path, errors included
    cudnnConvolutionDescriptor_t d;
    ~ProbeGuard() { (void)cudnnDestroyConvolutionDescriptor(d); }
  } probe_guard{probe};
  int n = 0, ny[4] = {};
  GAN_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(probe, pl.x, pl.w, 4, ny));
  GAN_CHECK(ny[0] == g.n && ny[1] == g.k && ny[2] == g.p && ny[3] == g.q,
            fmt::format("conv (cuDNN): output dims ({}, {}, {}, {}) differ from the expected "
                        "(N={}, K={}, P={}, Q={})",
                        ny[0], ny[1], ny[2], ny[3], g.n, g.k, g.p, g.q));
  cudnnHandle_t h = ctx.handle;

  constexpr int kMax = 16;
  std::string note_fwd, note_bwd_data, note_bwd_filter;
  {
    cudnnConvolutionFwdAlgoPerf_t perf[kMax];
    GAN_CUDNN_CHECK(
        cudnnGetConvolutionForwardAlgorithm_v7(h, pl.x, pl.w, probe, pl.y, kMax, &n, perf));
    const auto* p = pick(perf, n, tf32, "forward", note_fwd);
    pl.fwd = p->algo;
    pl.conv_fwd = make_conv(g, p->mathType);
    GAN_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, pl.x, pl.w, pl.conv_fwd, pl.y,
                                                            pl.fwd, &pl.ws_fwd));
  }
  {
    cudnnConvolutionBwdDataAlgoPerf_t perf[kMax];
    GAN_CUDNN_CHECK(
        cudnnGetConvolutionBackwardDataAlgorithm_v7(h, pl.w, pl.y, probe, pl.x, kMax, &n, perf));
    const auto* p = pick(perf, n, tf32, "backward-data", note_bwd_data);
    pl.bwd_data = p->algo;
    pl.conv_bwd_data = make_conv(g, p->mathType);
    GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
        h, pl.w, pl.y, pl.conv_bwd_data, pl.x, pl.bwd_data, &pl.ws_bwd_data));
  }
  {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[kMax];
    GAN_CUDNN_CHECK(
        cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, pl.x, pl.y, probe, pl.w, kMax, &n, perf));
    const auto* p = pick(perf, n, tf32, "backward-filter", note_bwd_filter);
    pl.bwd_filter = p->algo;
    pl.conv_bwd_filter = make_conv(g, p->mathType);
    GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
        h, pl.x, pl.y, pl.conv_bwd_filter, pl.w, pl.bwd_filter, &pl.ws_bwd_filter));
  }
  g_plan_log.push_back(fmt::format(
      "conv x ({}, {}, {}, {}) w ({}, {}, {}, {}) stride {}x{} pad {}x{} dil {}x{}{}: {}; {}; {}",
      g.n, g.h, g.w, g.c, g.k, g.r, g.s, g.c, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h,
      g.dil_w, tf32 ? " tf32" : "", note_fwd, note_bwd_data, note_bwd_filter));
  if (const char* e = std::getenv("GAN_LOG_CUDNN"); e && *e && std::string(e) != "0")
    std::fprintf(stderr, "gan: cuDNN plan: %s\n", g_plan_log.back().c_str());
  slot = std::move(plan);
  return *slot;
}

}  // namespace

std::vector<std::string> conv_plan_log() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_plan_log;
}

void conv_forward_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const float* x,
                        const float* w, float* y) {
  GAN_NVTX("conv_forward (cuDNN)");
  std::unique_lock<std::mutex> lock(g_mu);
  const ConvPlan& pl = plan_locked(ctx, g);
  lock.unlock();
  void* ws = pl.ws_fwd ? ctx.workspace(pl.ws_fwd) : nullptr;
  const float one = 1.f, zero = 0.f;
  GAN_CUDNN_CHECK(cudnnConvolutionForward(ctx.handle, &one, pl.x, x, pl.w, w, pl.conv_fwd, pl.fwd,
                                          ws, pl.ws_fwd, &zero, pl.y, y));
}

void conv_backward_data_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const float* dy,
                              const float* w, float* dx) {
  GAN_NVTX("conv_backward_data (cuDNN)");
  std::unique_lock<std::mutex> lock(g_mu);
  const ConvPlan& pl = plan_locked(ctx, g);
  lock.unlock();
  void* ws = pl.ws_bwd_data ? ctx.workspace(pl.ws_bwd_data) : nullptr;
  const float one = 1.f, zero = 0.f;
  GAN_CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.handle, &one, pl.w, w, pl.y, dy,
                                               pl.conv_bwd_data, pl.bwd_data, ws, pl.ws_bwd_data,
                                               &zero, pl.x, dx));
}

void conv_backward_filter_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const float* x,
                                const float* dy, float* dw, bool accumulate) {
  GAN_NVTX("conv_backward_filter (cuDNN)");
  std::unique_lock<std::mutex> lock(g_mu);
  const ConvPlan& pl = plan_locked(ctx, g);
  lock.unlock();
  void* ws = pl.ws_bwd_filter ? ctx.workspace(pl.ws_bwd_filter) : nullptr;
  const float one = 1.f, beta = accumulate ? 1.f : 0.f;
  GAN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.handle, &one, pl.x, x, pl.y, dy,
                                                 pl.conv_bwd_filter, pl.bwd_filter, ws,
                                                 pl.ws_bwd_filter, &beta, pl.w, dw));
}

}  // namespace kernels
}  // namespace gan
