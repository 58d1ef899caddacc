#include "kernels/conv_cudnn.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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

std::mutex g_mu;  // the plans, the disk cache and the log

// One per (geometry, math mode, policy). Each direction has its own convolution descriptor so
// that it can carry the math type its algorithm was chosen with; a direction is chosen on its
// first call (has_*).
struct ConvPlan {
  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  // Descriptors are host objects: destroying them needs no device, also at exit (the plan
  // cache is a static; LeakSanitizer found them leaked).
  ~ConvPlan() {
    for (cudnnConvolutionDescriptor_t c : {probe, conv_fwd, conv_bwd_data, conv_bwd_filter})
      if (c) (void)cudnnDestroyConvolutionDescriptor(c);
    if (w) (void)cudnnDestroyFilterDescriptor(w);
    if (y) (void)cudnnDestroyTensorDescriptor(y);
    if (x) (void)cudnnDestroyTensorDescriptor(x);
  }

  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t probe = nullptr;  // the mode's math type: heuristics queries
  cudnnConvolutionDescriptor_t conv_fwd = nullptr, conv_bwd_data = nullptr,
                               conv_bwd_filter = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t ws_fwd = 0, ws_bwd_data = 0, ws_bwd_filter = 0;
  bool has_fwd = false, has_bwd_data = false, has_bwd_filter = false;
};

using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int,
                           int, int, int, int, bool, bool>;

PlanKey key_of(const ConvGeom& g, const CudnnConvContext& ctx) {
  return {g.n,      g.h,      g.w,      g.c,      g.k,      g.r,      g.s,     g.stride_h,
          g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, ctx.tf32, ctx.deterministic};
}

std::map<PlanKey, std::unique_ptr<ConvPlan>>& plans() {
  static std::map<PlanKey, std::unique_ptr<ConvPlan>> p;
  return p;
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

std::vector<std::string> g_plan_log;  // one line per choice (conv_plan_log())

bool log_kernels() {
  for (const char* name : {"GAN_LOG_KERNELS", "GAN_LOG_CUDNN"})
    if (const char* e = std::getenv(name); e && *e && std::string(e) != "0") return true;
  return false;
}

std::string geom_text(const ConvGeom& g) {
  return fmt::format("x ({}, {}, {}, {}) w ({}, {}, {}, {}) stride {}x{} pad {}x{} dil {}x{}", g.n,
                     g.h, g.w, g.c, g.k, g.r, g.s, g.c, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                     g.dil_h, g.dil_w);
}

// ---- the plan cache on disk ----
// One line per timed choice: "<key>\t<algo>\t<math>\t<ms>", the key naming the GPU, its compute
// capability, the cuDNN version, the geometry, the math mode and the direction. Later lines win.
struct DiskCache {
  std::string path;
  bool loaded = false;
  std::map<std::string, std::pair<int, int>> entries;  // key -> (algo, math)
};
DiskCache g_disk;

std::string device_tag() {
  static const std::string tag = [] {
    int dev = 0;
    cudaDeviceProp prop{};
    std::string name = "unknown-gpu";
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
      name = fmt::format("{} sm_{}{}", prop.name, prop.major, prop.minor);
    else
      (void)cudaGetLastError();
    return fmt::format("{} cudnn {}", name, size_t(cudnnGetVersion()));
  }();
  return tag;
}

std::string cache_key(const ConvGeom& g, bool tf32, ConvDirection d) {
  return fmt::format("{} | {} | {} | {}", device_tag(), geom_text(g), tf32 ? "tf32" : "fp32",
                     conv_direction_name(d));
}

void load_disk_cache_locked() {
  if (g_disk.loaded) return;
  g_disk.loaded = true;
  g_disk.entries.clear();
  if (g_disk.path.empty()) return;
  std::ifstream in(g_disk.path);
  std::string line;
  while (std::getline(in, line)) {
    const size_t t1 = line.find('\t');
    if (t1 == std::string::npos) continue;
    int algo = -1, math = -1;
    double ms = 0;
    if (std::sscanf(line.c_str() + t1 + 1, "%d\t%d\t%lf", &algo, &math, &ms) != 3) continue;
    if (algo < 0 || math < 0) continue;
    g_disk.entries[line.substr(0, t1)] = {algo, math};
  }
}

void save_to_disk_cache_locked(const std::string& key, int algo, int math, double ms) {
  g_disk.entries[key] = {algo, math};
  if (g_disk.path.empty()) return;
  const auto dir = std::filesystem::path(g_disk.path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  // One short line per append: concurrent writers (ranks) interleave whole lines.
  if (FILE* f = std::fopen(g_disk.path.c_str(), "a")) {
    std::fprintf(f, "%s\t%d\t%d\t%.5f\n", key.c_str(), algo, math, ms);
    std::fclose(f);
  } else {
    std::fprintf(stderr, "gan: warning: cannot append to the cuDNN plan cache %s\n",
                 g_disk.path.c_str());
  }
}

// ---- choosing ----

// What one direction needs: its heuristics, how to size and run a candidate.
struct Direction {
  ConvDirection dir;
  std::vector<ConvCandidate> listed;  // the heuristics' order, successes only
  std::function<void(cudnnConvolutionDescriptor_t, int algo, void* ws, size_t ws_bytes)> run;
  std::function<size_t(cudnnConvolutionDescriptor_t, int algo)> workspace_size;
};

template <class Perf>
std::vector<ConvCandidate> listed_of(const Perf* perf, int count, ConvDirection d) {
  std::vector<ConvCandidate> out;
  for (int i = 0; i < count; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    out.push_back({d, int(p.algo), int(p.mathType), p.memory, p.determinism == CUDNN_DETERMINISTIC});
  }
  return out;
}

bool math_ok(const ConvCandidate& c, bool tf32) { return tf32 || c.math == CUDNN_FMA_MATH; }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
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
  return median(ms);
}

struct Choice {
  ConvCandidate c;
  std::string how;  // for the log
};

// The policy of the header comment.
Choice choose(const CudnnConvContext& ctx, const ConvGeom& g, Direction& d) {
  const char* what = conv_direction_name(d.dir);
  GAN_CHECK(!d.listed.empty(), fmt::format("conv (cuDNN): no {} algorithm available", what));
  if (ctx.deterministic) {
    for (const ConvCandidate& c : d.listed)
      if (c.deterministic && math_ok(c, ctx.tf32)) return {c, "heuristic, deterministic"};
    throw Error(fmt::format(
        "conv (cuDNN): cuDNN offers no deterministic {} algorithm{} for {}; run without "
        "--deterministic (GAN_CUDNN_DETERMINISTIC) to allow non-deterministic ones",
        what, ctx.tf32 ? "" : " in strict float32 (FMA) math", geom_text(g)));
  }
  std::vector<ConvCandidate> cands;
  for (const ConvCandidate& c : d.listed)
    if (math_ok(c, ctx.tf32)) cands.push_back(c);
  if (cands.empty()) {  // strict float32 with no FMA algorithm: cuDNN's default math, said loudly
    cands.push_back(d.listed.front());
    std::fprintf(stderr,
                 "gan: warning: cuDNN offers no strict float32 (FMA) %s algorithm for %s; using "
                 "algorithm %d in math type %d\n",
                 what, geom_text(g).c_str(), cands[0].algo, cands[0].math);
  }
  // Inside a capture nothing can be timed (nor allocated): the heuristics' first.
  cudaStream_t stream = nullptr;
  GAN_CUDNN_CHECK(cudnnGetStream(ctx.handle, &stream));
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  GAN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
  if (capturing != cudaStreamCaptureStatusNone)
    return {cands.front(), "heuristic (first use inside a CUDA graph capture)"};
  const std::string key = cache_key(g, ctx.tf32, d.dir);
  load_disk_cache_locked();
  if (auto it = g_disk.entries.find(key); it != g_disk.entries.end()) {
    for (const ConvCandidate& c : cands)
      if (c.algo == it->second.first && c.math == it->second.second) return {c, "cached"};
  }
  if (cands.size() == 1 && !ctx.timer) return {cands.front(), "heuristic (the only candidate)"};
  // Each candidate's real workspace size (the heuristics' figure may differ), within the limit.
  size_t ws_max = 0;
  std::vector<ConvCandidate> timed;
  for (ConvCandidate c : cands) {
    cudnnConvolutionDescriptor_t cd = make_conv(g, cudnnMathType_t(c.math));
    size_t bytes = 0;
    bool ok = true;
    try {
      bytes = d.workspace_size(cd, c.algo);
    } catch (const Error&) {
      ok = false;
    }
    (void)cudnnDestroyConvolutionDescriptor(cd);
    if (!ok || bytes > ctx.workspace_limit) continue;
    c.workspace = bytes;
    ws_max = std::max(ws_max, bytes);
    timed.push_back(c);
  }
  GAN_CHECK(!timed.empty(), fmt::format("conv (cuDNN): no {} algorithm fits a workspace of {} "
                                        "bytes for {}",
                                        what, ctx.workspace_limit, geom_text(g)));
  // A temporary workspace for the timing (the engine's keeps the chosen plan's size only).
  void* ws = nullptr;
  if (ws_max) GAN_CUDA_CHECK(cudaMalloc(&ws, ws_max));
  struct Free {
    void* p;
    ~Free() {
      if (p) (void)cudaFree(p);
    }
  } free_ws{ws};
  std::string report;
  const ConvCandidate* best = nullptr;
  double best_ms = 0;
  for (const ConvCandidate& c : timed) {
    cudnnConvolutionDescriptor_t cd = make_conv(g, cudnnMathType_t(c.math));
    double ms = -1;
    const std::function<void()> run = [&] { d.run(cd, c.algo, ws, c.workspace); };
    try {
      ms = ctx.timer ? ctx.timer(c, run) : time_with_events(stream, run);
    } catch (const Error&) {
      ms = -1;  // refused at run time: not a candidate
    }
    (void)cudnnDestroyConvolutionDescriptor(cd);
    report += fmt::format("{}{}/{}{}={}", report.empty() ? "" : " ", c.algo, c.math,
                          c.deterministic ? "" : "(nd)",
                          ms < 0 ? std::string("failed") : fmt::format("{:.4f}", ms));
    if (ms >= 0 && (!best || ms < best_ms)) {
      best = &c;
      best_ms = ms;
    }
  }
  GAN_CUDA_CHECK(cudaStreamSynchronize(stream));
  GAN_CHECK(best != nullptr, fmt::format("conv (cuDNN): every {} algorithm failed for {}", what,
                                         geom_text(g)));
  save_to_disk_cache_locked(key, best->algo, best->math, best_ms);
  return {*best, fmt::format("timed {:.4f} ms [algo/math=ms: {}]", best_ms, report)};
}

void record(const ConvGeom& g, const CudnnConvContext& ctx, ConvDirection dir, const Choice& c) {
  g_plan_log.push_back(fmt::format("conv {}{}{}: {} algo {} math {}{} ({})", geom_text(g),
                                   ctx.tf32 ? " tf32" : " fp32",
                                   ctx.deterministic ? " deterministic" : "",
                                   conv_direction_name(dir), c.c.algo, c.c.math,
                                   c.c.deterministic ? "" : " non-deterministic", c.how));
  if (log_kernels()) std::fprintf(stderr, "gan: cuDNN plan: %s\n", g_plan_log.back().c_str());
}

// x, y and w descriptors of `g` in NHWC or NCHW, and the probe of the math mode.
void make_descriptors(ConvPlan& pl, const ConvGeom& g, bool tf32, cudnnTensorFormat_t format) {
  GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl.x));
  GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl.y));
  GAN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&pl.w));
  GAN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl.x, format, CUDNN_DATA_FLOAT, to_int(g.n, "N"),
                                             to_int(g.c, "C"), to_int(g.h, "H"),
                                             to_int(g.w, "W")));
  GAN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl.y, format, CUDNN_DATA_FLOAT, to_int(g.n, "N"),
                                             to_int(g.k, "K"), to_int(g.p, "P"),
                                             to_int(g.q, "Q")));
  GAN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(pl.w, CUDNN_DATA_FLOAT, format, to_int(g.k, "K"),
                                             to_int(g.c, "C"), to_int(g.r, "R"),
                                             to_int(g.s, "S")));
  pl.probe = make_conv(g, tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH);
  int ny[4] = {};
  GAN_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(pl.probe, pl.x, pl.w, 4, ny));
  GAN_CHECK(ny[0] == g.n && ny[1] == g.k && ny[2] == g.p && ny[3] == g.q,
            fmt::format("conv (cuDNN): output dims ({}, {}, {}, {}) differ from the expected "
                        "(N={}, K={}, P={}, Q={})",
                        ny[0], ny[1], ny[2], ny[3], g.n, g.k, g.p, g.q));
}

ConvPlan& plan_locked(const CudnnConvContext& ctx, const ConvGeom& g) {
  auto& slot = plans()[key_of(g, ctx)];
  if (slot) return *slot;
  auto plan = std::make_unique<ConvPlan>();
  make_descriptors(*plan, g, ctx.tf32, CUDNN_TENSOR_NHWC);
  slot = std::move(plan);
  return *slot;
}

constexpr int kMaxAlgos = 16;

Direction forward_direction(const CudnnConvContext& ctx, const ConvPlan& pl, const float* x,
                            const float* w, float* y) {
  cudnnConvolutionFwdAlgoPerf_t perf[kMaxAlgos];
  int n = 0;
  GAN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(ctx.handle, pl.x, pl.w, pl.probe, pl.y,
                                                         kMaxAlgos, &n, perf));
  Direction d{ConvDirection::kForward, listed_of(perf, n, ConvDirection::kForward), {}, {}};
  d.workspace_size = [&ctx, &pl](cudnnConvolutionDescriptor_t cd, int algo) {
    size_t b = 0;
    GAN_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(
        ctx.handle, pl.x, pl.w, cd, pl.y, cudnnConvolutionFwdAlgo_t(algo), &b));
    return b;
  };
  d.run = [&ctx, &pl, x, w, y](cudnnConvolutionDescriptor_t cd, int algo, void* ws, size_t ws_bytes) {
    const float one = 1.f, zero = 0.f;
    GAN_CUDNN_CHECK(cudnnConvolutionForward(ctx.handle, &one, pl.x, x, pl.w, w, cd,
                                            cudnnConvolutionFwdAlgo_t(algo), ws, ws_bytes, &zero,
                                            pl.y, y));
  };
  return d;
}

void choose_forward_locked(const CudnnConvContext& ctx, const ConvGeom& g, ConvPlan& pl,
                           const float* x, const float* w, float* y) {
  Direction d = forward_direction(ctx, pl, x, w, y);
  const Choice c = choose(ctx, g, d);
  pl.fwd = cudnnConvolutionFwdAlgo_t(c.c.algo);
  pl.conv_fwd = make_conv(g, cudnnMathType_t(c.c.math));
  pl.ws_fwd = d.workspace_size(pl.conv_fwd, c.c.algo);
  pl.has_fwd = true;
  record(g, ctx, d.dir, c);
}

Direction backward_data_direction(const CudnnConvContext& ctx, const ConvPlan& pl,
                                  const float* dy, const float* w, float* dx) {
  cudnnConvolutionBwdDataAlgoPerf_t perf[kMaxAlgos];
  int n = 0;
  GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx.handle, pl.w, pl.y, pl.probe,
                                                              pl.x, kMaxAlgos, &n, perf));
  Direction d{ConvDirection::kBackwardData, listed_of(perf, n, ConvDirection::kBackwardData), {},
              {}};
  d.workspace_size = [&ctx, &pl](cudnnConvolutionDescriptor_t cd, int algo) {
    size_t b = 0;
    GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
        ctx.handle, pl.w, pl.y, cd, pl.x, cudnnConvolutionBwdDataAlgo_t(algo), &b));
    return b;
  };
  d.run = [&ctx, &pl, dy, w, dx](cudnnConvolutionDescriptor_t cd, int algo, void* ws, size_t ws_bytes) {
    const float one = 1.f, zero = 0.f;
    GAN_CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.handle, &one, pl.w, w, pl.y, dy, cd,
                                                 cudnnConvolutionBwdDataAlgo_t(algo), ws, ws_bytes,
                                                 &zero, pl.x, dx));
  };
  return d;
}

void choose_backward_data_locked(const CudnnConvContext& ctx, const ConvGeom& g, ConvPlan& pl,
                                 const float* dy, const float* w, float* dx) {
  Direction d = backward_data_direction(ctx, pl, dy, w, dx);
  const Choice c = choose(ctx, g, d);
  pl.bwd_data = cudnnConvolutionBwdDataAlgo_t(c.c.algo);
  pl.conv_bwd_data = make_conv(g, cudnnMathType_t(c.c.math));
  pl.ws_bwd_data = d.workspace_size(pl.conv_bwd_data, c.c.algo);
  pl.has_bwd_data = true;
  record(g, ctx, d.dir, c);
}

Direction backward_filter_direction(const CudnnConvContext& ctx, const ConvPlan& pl,
                                    const float* x, const float* dy, float* dw_scratch) {
  cudnnConvolutionBwdFilterAlgoPerf_t perf[kMaxAlgos];
  int n = 0;
  GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx.handle, pl.x, pl.y, pl.probe,
                                                                pl.w, kMaxAlgos, &n, perf));
  Direction d{ConvDirection::kBackwardFilter, listed_of(perf, n, ConvDirection::kBackwardFilter),
              {}, {}};
  d.workspace_size = [&ctx, &pl](cudnnConvolutionDescriptor_t cd, int algo) {
    size_t b = 0;
    GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
        ctx.handle, pl.x, pl.y, cd, pl.w, cudnnConvolutionBwdFilterAlgo_t(algo), &b));
    return b;
  };
  d.run = [&ctx, &pl, x, dy, dw_scratch](cudnnConvolutionDescriptor_t cd, int algo, void* ws, size_t ws_bytes) {
    const float one = 1.f, zero = 0.f;
    GAN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.handle, &one, pl.x, x, pl.y, dy, cd,
                                                   cudnnConvolutionBwdFilterAlgo_t(algo), ws,
                                                   ws_bytes, &zero, pl.w, dw_scratch));
  };
  return d;
}

// `dw_scratch`: where the timing writes (never the caller's dw when it accumulates).
void choose_backward_filter_locked(const CudnnConvContext& ctx, const ConvGeom& g, ConvPlan& pl,
                                   const float* x, const float* dy, float* dw_scratch) {
  Direction d = backward_filter_direction(ctx, pl, x, dy, dw_scratch);
  const Choice c = choose(ctx, g, d);
  pl.bwd_filter = cudnnConvolutionBwdFilterAlgo_t(c.c.algo);
  pl.conv_bwd_filter = make_conv(g, cudnnMathType_t(c.c.math));
  pl.ws_bwd_filter = d.workspace_size(pl.conv_bwd_filter, c.c.algo);
  pl.has_bwd_filter = true;
  record(g, ctx, d.dir, c);
}

}  // namespace

const char* conv_direction_name(ConvDirection d) {
  switch (d) {
    case ConvDirection::kForward:
      return "forward";
    case ConvDirection::kBackwardData:
      return "backward-data";
    case ConvDirection::kBackwardFilter:
      return "backward-filter";
  }
  return "?";
}

void set_conv_plan_cache(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_disk = DiskCache{};
  g_disk.path = path;
}

void reset_conv_plans() {
  std::lock_guard<std::mutex> lock(g_mu);
  plans().clear();
}

std::vector<std::string> conv_plan_log() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_plan_log;
}

std::vector<ConvTiming> conv_time_candidates(const CudnnConvContext& ctx, const ConvGeom& g,
                                             bool nchw, ConvDirection direction) {
  std::lock_guard<std::mutex> lock(g_mu);
  ConvPlan pl;
  make_descriptors(pl, g, ctx.tf32, nchw ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC);
  cudaStream_t stream = nullptr;
  GAN_CUDNN_CHECK(cudnnGetStream(ctx.handle, &stream));
  // Buffers: x, w, y, then the largest workspace of the listed candidates.
  const size_t nx = size_t(g.x_numel()), nw = size_t(g.w_numel()), ny = size_t(g.y_numel());
  float* buf = nullptr;
  GAN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&buf), (nx + nw + ny) * sizeof(float)));
  struct Free {
    void* p;
    ~Free() {
      if (p) (void)cudaFree(p);
    }
  } free_buf{buf}, free_ws{nullptr};
  // Small finite values (bytes 0x3c: about 0.0115) so that no algorithm meets NaN or Inf.
  GAN_CUDA_CHECK(cudaMemsetAsync(buf, 0x3c, (nx + nw + ny) * sizeof(float), stream));
  float *x = buf, *w = buf + nx, *y = buf + nx + nw;
  Direction d = direction == ConvDirection::kForward ? forward_direction(ctx, pl, x, w, y)
                : direction == ConvDirection::kBackwardData
                    ? backward_data_direction(ctx, pl, y, w, x)
                    : backward_filter_direction(ctx, pl, x, y, w);
  std::vector<ConvTiming> out;
  size_t ws_max = 0;
  for (ConvCandidate c : d.listed) {
    if (!math_ok(c, ctx.tf32)) continue;
    cudnnConvolutionDescriptor_t cd = make_conv(g, cudnnMathType_t(c.math));
    try {
      c.workspace = d.workspace_size(cd, c.algo);
    } catch (const Error&) {
      c.workspace = SIZE_MAX;
    }
    (void)cudnnDestroyConvolutionDescriptor(cd);
    if (c.workspace != SIZE_MAX && c.workspace <= ctx.workspace_limit)
      ws_max = std::max(ws_max, c.workspace);
    out.push_back({c, -1});
  }
  void* ws = nullptr;
  if (ws_max) GAN_CUDA_CHECK(cudaMalloc(&ws, ws_max));
  free_ws.p = ws;
  for (ConvTiming& t : out) {
    if (t.candidate.workspace > ctx.workspace_limit) continue;
    cudnnConvolutionDescriptor_t cd = make_conv(g, cudnnMathType_t(t.candidate.math));
    const std::function<void()> run = [&] { d.run(cd, t.candidate.algo, ws, t.candidate.workspace); };
    try {
      t.ms = ctx.timer ? ctx.timer(t.candidate, run) : time_with_events(stream, run);
    } catch (const Error&) {
      t.ms = -1;
    }
    (void)cudnnDestroyConvolutionDescriptor(cd);
  }
  GAN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}

void conv_forward_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const float* x,
                        const float* w, float* y) {
  GAN_NVTX("conv_forward (cuDNN)");
  std::unique_lock<std::mutex> lock(g_mu);
  ConvPlan& pl = plan_locked(ctx, g);
  if (!pl.has_fwd) choose_forward_locked(ctx, g, pl, x, w, y);
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
  ConvPlan& pl = plan_locked(ctx, g);
  if (!pl.has_bwd_data) choose_backward_data_locked(ctx, g, pl, dy, w, dx);
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
  ConvPlan& pl = plan_locked(ctx, g);
  if (!pl.has_bwd_filter) {
    if (!accumulate) {
      choose_backward_filter_locked(ctx, g, pl, x, dy, dw);
    } else {  // the timing must not add into dw: it writes a scratch filter
      float* scratch = nullptr;
      GAN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&scratch), size_t(g.w_numel()) * sizeof(float)));
      struct Free {
        float* p;
        ~Free() { (void)cudaFree(p); }
      } free_scratch{scratch};
      choose_backward_filter_locked(ctx, g, pl, x, dy, scratch);
    }
  }
  lock.unlock();
  void* ws = pl.ws_bwd_filter ? ctx.workspace(pl.ws_bwd_filter) : nullptr;
  const float one = 1.f, beta = accumulate ? 1.f : 0.f;
  GAN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.handle, &one, pl.x, x, pl.y, dy,
                                                 pl.conv_bwd_filter, pl.bwd_filter, ws,
                                                 pl.ws_bwd_filter, &beta, pl.w, dw));
}

}  // namespace kernels
}  // namespace gan
