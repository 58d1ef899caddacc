#include "kernels/conv_cudnn.h"

#include "kernels/runtime.h"

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
#include "kernels/matmul.h"

namespace gan {

void throw_cudnn_error(int status, const char* call, const char* file, int line) {
  throw Error(std::string("cuDNN error ") + cudnnGetErrorString(cudnnStatus_t(status)) + " in " +
              call + " at " + file + ":" + std::to_string(line));
}

namespace kernels {

namespace {

std::mutex g_mu;  // the plans, the disk cache and the log

int to_int(int64_t v, const char* what) {
  GAN_CHECK(v <= INT_MAX, fmt::format("conv (cuDNN): {} = {} exceeds 2^31-1", what, v));
  return int(v);
}

size_t elem_size(const CudnnConvContext& ctx) { return ctx.bf16 ? 2 : 4; }

cudnnConvolutionDescriptor_t make_conv(const ConvGeom& g, cudnnMathType_t math) {
  cudnnConvolutionDescriptor_t d;
  GAN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d));
  GAN_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, g.pad_h, g.pad_w, g.stride_h, g.stride_w,
                                                  g.dil_h, g.dil_w, CUDNN_CROSS_CORRELATION,
                                                  CUDNN_DATA_FLOAT));
  GAN_CUDNN_CHECK(cudnnSetConvolutionMathType(d, math));
  return d;
}

struct ConvDesc {  // a convolution descriptor destroyed with its scope
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc(const ConvGeom& g, int math) : d(make_conv(g, cudnnMathType_t(math))) {}
  ~ConvDesc() { (void)cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// The tensor and filter descriptors of one geometry in one layout, the filter also as a 4-d
// tensor (for cudnnTransformTensor), and a probe convolution in the mode's math (for the
// heuristics). Host objects: destroying them needs no device, also at exit.
struct Descs {
  Descs() = default;
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
  ~Descs() {
    if (probe) (void)cudnnDestroyConvolutionDescriptor(probe);
    if (w) (void)cudnnDestroyFilterDescriptor(w);
    for (cudnnTensorDescriptor_t t : {x, y, wt})
      if (t) (void)cudnnDestroyTensorDescriptor(t);
  }
  bool made = false;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, wt = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t probe = nullptr;

  void make(const ConvGeom& g, const CudnnConvContext& ctx, ConvLayout layout) {
    if (made) return;
    made = true;
    const cudnnDataType_t t = ctx.bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    const cudnnTensorFormat_t f =
        layout == ConvLayout::kNCHW ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC;
    GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&wt));
    GAN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    GAN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, f, t, to_int(g.n, "N"), to_int(g.c, "C"),
                                               to_int(g.h, "H"), to_int(g.w, "W")));
    GAN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, f, t, to_int(g.n, "N"), to_int(g.k, "K"),
                                               to_int(g.p, "P"), to_int(g.q, "Q")));
    GAN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(wt, f, t, to_int(g.k, "K"), to_int(g.c, "C"),
                                               to_int(g.r, "R"), to_int(g.s, "S")));
    GAN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, t, f, to_int(g.k, "K"), to_int(g.c, "C"),
                                               to_int(g.r, "R"), to_int(g.s, "S")));
    probe = make_conv(g, ctx.tf32 || ctx.bf16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH);
    int ny[4] = {};
    GAN_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(probe, x, w, 4, ny));
    GAN_CHECK(ny[0] == g.n && ny[1] == g.k && ny[2] == g.p && ny[3] == g.q,
              fmt::format("conv (cuDNN): output dims ({}, {}, {}, {}) differ from the expected "
                          "(N={}, K={}, P={}, Q={})",
                          ny[0], ny[1], ny[2], ny[3], g.n, g.k, g.p, g.q));
  }
};

// What a direction reads and writes (the engine's NHWC / KRSC buffers): forward a = x, b = w,
// out = y; backward-data a = dy, b = w, out = dx; backward-filter a = x, b = dy, out = dw, with
// beta 1 when it accumulates.
// float32, or bf16 (ctx.bf16).
struct Operands {
  const void* a = nullptr;
  const void* b = nullptr;
  void* out = nullptr;
  float beta = 0.f;
};

struct DirPlan {
  bool chosen = false;
  ConvCandidate c;
  size_t ws = 0;
};

// One per (geometry, math mode, policy).
struct ConvPlan {
  Descs nhwc, nchw;
  DirPlan dir[3];
};

using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int,
                           int, int, int, int, bool, bool, bool>;

PlanKey key_of(const ConvGeom& g, const CudnnConvContext& ctx) {
  return {g.n,     g.h,     g.w,        g.c,        g.k,
          g.r,     g.s,     g.stride_h, g.stride_w, g.pad_h,
          g.pad_w, g.dil_h, g.dil_w,    ctx.tf32,   ctx.deterministic,
          ctx.bf16};
}

std::map<PlanKey, std::unique_ptr<ConvPlan>>& plans() {
  static std::map<PlanKey, std::unique_ptr<ConvPlan>> p;
  return p;
}

std::vector<std::string> g_plan_log;  // one line per choice (conv_plan_log())

std::string geom_text(const ConvGeom& g) {
  return fmt::format("x ({}, {}, {}, {}) w ({}, {}, {}, {}) stride {}x{} pad {}x{} dil {}x{}", g.n,
                     g.h, g.w, g.c, g.k, g.r, g.s, g.c, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                     g.dil_h, g.dil_w);
}

std::string candidate_text(const ConvCandidate& c) {
  if (c.algo == kConvGemmAlgo) return "gemm (cuBLAS)";
  return fmt::format("algo {} math {}{}{}", c.algo, c.math,
                     c.layout == ConvLayout::kNCHW ? " nchw" : "",
                     c.deterministic ? "" : " non-deterministic");
}

// The window covers the whole input: y (N, K) = x (N, HWC) w (K, HWC)^T, a GEMM.
bool full_window(const ConvGeom& g) {
  return g.p == 1 && g.q == 1 && g.pad_h == 0 && g.pad_w == 0 && g.dil_h == 1 && g.dil_w == 1 &&
         g.r == g.h && g.s == g.w;
}

// ---- the plan cache on disk ----
// One line per timed choice: "<key>\t<algo>\t<math>\t<layout>\t<ms>", the key naming the GPU, its
// compute capability, the cuDNN version, the geometry, the math mode and the direction. Later
// lines win; lines of another form are skipped.
struct DiskCache {
  std::string path;
  bool loaded = false;
  std::map<std::string, std::tuple<int, int, int>> entries;  // key -> (algo, math, layout)
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

// The numeric mode of a context: "bf16" (bf16 operands), "tf32" or "fp32".
const char* mode_name(const CudnnConvContext& ctx) {
  return ctx.bf16 ? "bf16" : ctx.tf32 ? "tf32" : "fp32";
}

std::string cache_key(const ConvGeom& g, const CudnnConvContext& ctx, ConvDirection d) {
  return fmt::format("{} | {} | {} | {}", device_tag(), geom_text(g), mode_name(ctx),
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
    int algo = -2, math = -1, layout = -1;
    double ms = 0;
    if (std::sscanf(line.c_str() + t1 + 1, "%d\t%d\t%d\t%lf", &algo, &math, &layout, &ms) != 4)
      continue;
    if (algo < kConvGemmAlgo || math < 0 || layout < 0 || layout > 1) continue;
    g_disk.entries[line.substr(0, t1)] = {algo, math, layout};
  }
}

void save_to_disk_cache_locked(const std::string& key, const ConvCandidate& c, double ms) {
  g_disk.entries[key] = {c.algo, c.math, int(c.layout)};
  if (g_disk.path.empty()) return;
  const auto dir = std::filesystem::path(g_disk.path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  // One short line per append: concurrent writers (ranks) interleave whole lines.
  if (FILE* f = std::fopen(g_disk.path.c_str(), "a")) {
    std::fprintf(f, "%s\t%d\t%d\t%d\t%.5f\n", key.c_str(), c.algo, c.math, int(c.layout), ms);
    std::fclose(f);
  } else {
    std::fprintf(stderr, "gan: warning: cannot append to the cuDNN plan cache %s\n",
                 g_disk.path.c_str());
  }
}

// ---- listing, sizing and running candidates ----

constexpr int kMaxAlgos = 16;

template <class Perf>
void append_listed(const Perf* perf, int count, ConvDirection d, ConvLayout layout,
                   std::vector<ConvCandidate>& out) {
  for (int i = 0; i < count; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    out.push_back(
        {d, int(p.algo), int(p.mathType), layout, p.memory, p.determinism == CUDNN_DETERMINISTIC});
  }
}

// cuDNN's heuristics for one direction in one layout, in their order.
std::vector<ConvCandidate> heuristics(const CudnnConvContext& ctx, const Descs& ds, ConvDirection d,
                                      ConvLayout layout) {
  std::vector<ConvCandidate> out;
  int n = 0;
  if (d == ConvDirection::kForward) {
    cudnnConvolutionFwdAlgoPerf_t perf[kMaxAlgos];
    GAN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(ctx.handle, ds.x, ds.w, ds.probe, ds.y,
                                                           kMaxAlgos, &n, perf));
    append_listed(perf, n, d, layout, out);
  } else if (d == ConvDirection::kBackwardData) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[kMaxAlgos];
    GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx.handle, ds.w, ds.y, ds.probe,
                                                                ds.x, kMaxAlgos, &n, perf));
    append_listed(perf, n, d, layout, out);
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[kMaxAlgos];
    GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx.handle, ds.x, ds.y, ds.probe,
                                                                  ds.w, kMaxAlgos, &n, perf));
    append_listed(perf, n, d, layout, out);
  }
  return out;
}

size_t algo_workspace(const CudnnConvContext& ctx, const ConvGeom& g, const Descs& ds,
                      const ConvCandidate& c) {
  const ConvDesc cd(g, c.math);
  size_t b = 0;
  if (c.direction == ConvDirection::kForward)
    GAN_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(ctx.handle, ds.x, ds.w, cd.d, ds.y,
                                                            cudnnConvolutionFwdAlgo_t(c.algo), &b));
  else if (c.direction == ConvDirection::kBackwardData)
    GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
        ctx.handle, ds.w, ds.y, cd.d, ds.x, cudnnConvolutionBwdDataAlgo_t(c.algo), &b));
  else
    GAN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
        ctx.handle, ds.x, ds.y, cd.d, ds.w, cudnnConvolutionBwdFilterAlgo_t(c.algo), &b));
  return b;
}

size_t round_up(size_t b) { return (b + 255) / 256 * 256; }

// Element counts of a direction's a, b and out.
void operand_sizes(const ConvGeom& g, ConvDirection d, size_t& na, size_t& nb, size_t& nout) {
  const size_t nx = size_t(g.x_numel()), nw = size_t(g.w_numel()), ny = size_t(g.y_numel());
  if (d == ConvDirection::kForward)
    na = nx, nb = nw, nout = ny;
  else if (d == ConvDirection::kBackwardData)
    na = ny, nb = nw, nout = nx;
  else
    na = nx, nb = ny, nout = nw;
}

// A candidate's whole workspace: the algorithm's, plus in NCHW the converted a, b and out.
size_t candidate_workspace(const CudnnConvContext& ctx, const ConvGeom& g, ConvPlan& pl,
                           const ConvCandidate& c) {
  if (c.algo == kConvGemmAlgo) return 0;
  if (c.layout == ConvLayout::kNHWC) return algo_workspace(ctx, g, pl.nhwc, c);
  size_t na, nb, nout;
  operand_sizes(g, c.direction, na, nb, nout);
  return round_up(algo_workspace(ctx, g, pl.nchw, c)) + round_up(na * 4) + round_up(nb * 4) +
         round_up(nout * 4);
}

// The descriptors of a direction's a, b, out in a layout (filters as 4-d tensors).
void operand_descs(const Descs& ds, ConvDirection d, cudnnTensorDescriptor_t& a,
                   cudnnTensorDescriptor_t& b, cudnnTensorDescriptor_t& out) {
  if (d == ConvDirection::kForward)
    a = ds.x, b = ds.wt, out = ds.y;
  else if (d == ConvDirection::kBackwardData)
    a = ds.y, b = ds.wt, out = ds.x;
  else
    a = ds.x, b = ds.y, out = ds.wt;
}

// The cuDNN call of a direction on descriptors `ds`, out = conv + beta out.
void run_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const Descs& ds,
               const ConvCandidate& c, const void* a, const void* b, void* out, float beta,
               void* ws, size_t ws_bytes) {
  const ConvDesc cd(g, c.math);
  const float one = 1.f;
  if (c.direction == ConvDirection::kForward)
    GAN_CUDNN_CHECK(cudnnConvolutionForward(ctx.handle, &one, ds.x, a, ds.w, b, cd.d,
                                            cudnnConvolutionFwdAlgo_t(c.algo), ws, ws_bytes, &beta,
                                            ds.y, out));
  else if (c.direction == ConvDirection::kBackwardData)
    GAN_CUDNN_CHECK(cudnnConvolutionBackwardData(ctx.handle, &one, ds.w, b, ds.y, a, cd.d,
                                                 cudnnConvolutionBwdDataAlgo_t(c.algo), ws,
                                                 ws_bytes, &beta, ds.x, out));
  else
    GAN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(ctx.handle, &one, ds.x, a, ds.y, b, cd.d,
                                                   cudnnConvolutionBwdFilterAlgo_t(c.algo), ws,
                                                   ws_bytes, &beta, ds.w, out));
}

// Runs candidate c on the engine's buffers; ws holds candidate_workspace(c) bytes.
void run_candidate(const CudnnConvContext& ctx, const ConvGeom& g, ConvPlan& pl,
                   const ConvCandidate& c, const Operands& o, void* ws, size_t ws_bytes) {
  if (c.algo == kConvGemmAlgo) {
    const int64_t l = g.h * g.w * g.c;  // = R S C
    Gemm m;
    if (c.direction == ConvDirection::kForward) {  // y (N, K) = x (N, L) w (K, L)^T
      m.trans_b = true, m.m = g.n, m.n = g.k, m.k = l;
    } else if (c.direction == ConvDirection::kBackwardData) {  // dx (N, L) = dy (N, K) w (K, L)
      m.m = g.n, m.n = l, m.k = g.k;
    } else {  // dw (K, L) = dy (N, K)^T x (N, L)
      m.trans_a = true, m.m = g.k, m.n = l, m.k = g.n;
      gemm_cuda(m, 1.f, static_cast<const float*>(o.b), static_cast<const float*>(o.a), o.beta,
                static_cast<float*>(o.out), ctx.cublas);
      return;
    }
    gemm_cuda(m, 1.f, static_cast<const float*>(o.a), static_cast<const float*>(o.b), o.beta,
              static_cast<float*>(o.out), ctx.cublas);
    return;
  }
  if (c.layout == ConvLayout::kNHWC) {
    run_cudnn(ctx, g, pl.nhwc, c, o.a, o.b, o.out, o.beta, ws, ws_bytes);
    return;
  }
  // NCHW: convert a and b, convolve into a converted result, convert it back (adding when beta).
  size_t na, nb, nout;
  operand_sizes(g, c.direction, na, nb, nout);
  const size_t algo_ws = round_up(algo_workspace(ctx, g, pl.nchw, c));
  GAN_CHECK(ws_bytes >= algo_ws + round_up(na * 4) + round_up(nb * 4) + round_up(nout * 4),
            "conv (cuDNN): NCHW workspace too small");
  auto* base = static_cast<char*>(ws);
  auto* a2 = reinterpret_cast<float*>(base + algo_ws);
  auto* b2 = reinterpret_cast<float*>(base + algo_ws + round_up(na * 4));
  auto* out2 = reinterpret_cast<float*>(base + algo_ws + round_up(na * 4) + round_up(nb * 4));
  cudnnTensorDescriptor_t a_h, b_h, out_h, a_c, b_c, out_c;
  operand_descs(pl.nhwc, c.direction, a_h, b_h, out_h);
  operand_descs(pl.nchw, c.direction, a_c, b_c, out_c);
  const float one = 1.f, zero = 0.f;
  GAN_CUDNN_CHECK(cudnnTransformTensor(ctx.handle, &one, a_h, o.a, &zero, a_c, a2));
  GAN_CUDNN_CHECK(cudnnTransformTensor(ctx.handle, &one, b_h, o.b, &zero, b_c, b2));
  run_cudnn(ctx, g, pl.nchw, c, a2, b2, out2, 0.f, algo_ws ? ws : nullptr, algo_ws);
  GAN_CUDNN_CHECK(cudnnTransformTensor(ctx.handle, &one, out_c, out2, &o.beta, out_h, o.out));
}

// Strict float32 takes FMA algorithms only; TF32 and bf16 any.
bool math_ok(const ConvCandidate& c, const CudnnConvContext& ctx) {
  return ctx.tf32 || ctx.bf16 || c.math == CUDNN_FMA_MATH;
}

bool capturing(const CudnnConvContext& ctx) {
  cudaStream_t stream = nullptr;
  GAN_CUDNN_CHECK(cudnnGetStream(ctx.handle, &stream));
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  GAN_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

struct DeviceBuffer {  // a temporary allocation (never inside a capture)
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (bytes) GAN_CUDA_CHECK(cudaMalloc(&p, bytes));
  }
  ~DeviceBuffer() {
    if (p) (void)cudaFree(p);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Times each candidate (ctx.timer, or CUDA events) with a temporary workspace of the largest
// size_of(candidate) within the limit; run_one(candidate, workspace) launches it once. Candidates
// over the limit or refused get ms < 0; each candidate's workspace is set.
std::vector<ConvTiming> time_all(const CudnnConvContext& ctx, std::vector<ConvCandidate> cands,
                                 const std::function<size_t(const ConvCandidate&)>& size_of,
                                 const std::function<void(const ConvCandidate&, void*)>& run_one,
                                 cudaStream_t stream) {
  std::vector<ConvTiming> out;
  size_t ws_max = 0;
  for (ConvCandidate& c : cands) {
    try {
      c.workspace = size_of(c);
    } catch (const Error&) {
      c.workspace = SIZE_MAX;
    }
    if (c.workspace <= ctx.workspace_limit) ws_max = std::max(ws_max, c.workspace);
    out.push_back({c, -1});
  }
  const DeviceBuffer ws(ws_max);
  for (ConvTiming& t : out) {
    if (t.candidate.workspace > ctx.workspace_limit) continue;
    const std::function<void()> run = [&] { run_one(t.candidate, ws.p); };
    try {
      t.ms = ctx.timer ? ctx.timer(t.candidate, run) : time_with_events(stream, run);
    } catch (const Error&) {
      t.ms = -1;  // refused at run time: not a candidate
    }
  }
  GAN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}

// time_all over the engine's buffers `o` (every kind of candidate).
std::vector<ConvTiming> time_on(const CudnnConvContext& ctx, const ConvGeom& g, ConvPlan& pl,
                                std::vector<ConvCandidate> cands, const Operands& o,
                                cudaStream_t stream) {
  return time_all(
      ctx, std::move(cands),
      [&](const ConvCandidate& c) { return candidate_workspace(ctx, g, pl, c); },
      [&](const ConvCandidate& c, void* ws) { run_candidate(ctx, g, pl, c, o, ws, c.workspace); },
      stream);
}

struct Choice {
  ConvCandidate c;
  std::string how;  // for the log
};

// The policy of the header comment, for direction d of plan pl on the operands o.
Choice choose(const CudnnConvContext& ctx, const ConvGeom& g, ConvPlan& pl, ConvDirection d,
              const Operands& o) {
  const char* what = conv_direction_name(d);
  pl.nhwc.make(g, ctx, ConvLayout::kNHWC);
  const std::vector<ConvCandidate> listed = heuristics(ctx, pl.nhwc, d, ConvLayout::kNHWC);
  if (ctx.deterministic) {
    for (const ConvCandidate& c : listed)
      if (c.deterministic && math_ok(c, ctx)) return {c, "heuristic, deterministic"};
    throw Error(fmt::format(
        "conv (cuDNN): cuDNN offers no deterministic {} algorithm{} for {}; run without "
        "--deterministic (GAN_CUDNN_DETERMINISTIC) to allow non-deterministic ones",
        what, ctx.tf32 || ctx.bf16 ? "" : " in strict float32 (FMA) math", geom_text(g)));
  }
  std::vector<ConvCandidate> cands;
  for (const ConvCandidate& c : listed)
    if (math_ok(c, ctx)) cands.push_back(c);
  if (cands.empty()) {  // strict float32 with no FMA algorithm: cuDNN's default math, said loudly
    GAN_CHECK(!listed.empty(), fmt::format("conv (cuDNN): no {} algorithm available", what));
    cands.push_back(listed.front());
    std::fprintf(stderr,
                 "gan: warning: cuDNN offers no strict float32 (FMA) %s algorithm for %s; using "
                 "algorithm %d in math type %d\n",
                 what, geom_text(g).c_str(), cands[0].algo, cands[0].math);
  }
  // Inside a capture nothing can be timed (nor allocated): the heuristics' first.
  if (capturing(ctx)) return {cands.front(), "heuristic (first use inside a CUDA graph capture)"};
  cudaStream_t stream = nullptr;
  GAN_CUDNN_CHECK(cudnnGetStream(ctx.handle, &stream));
  // The other candidates (float32 only): NCHW with conversions, the GEMM.
  try {
    if (!ctx.bf16) {
      pl.nchw.make(g, ctx, ConvLayout::kNCHW);
      for (const ConvCandidate& c : heuristics(ctx, pl.nchw, d, ConvLayout::kNCHW))
        if (math_ok(c, ctx)) cands.push_back(c);
    }
  } catch (const Error&) {
    // no NCHW algorithm for this geometry
  }
  if (ctx.cublas && !ctx.bf16 && full_window(g))
    cands.push_back({d, kConvGemmAlgo, ctx.tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH,
                     ConvLayout::kNHWC, 0, true});
  const std::string key = cache_key(g, ctx, d);
  load_disk_cache_locked();
  if (auto it = g_disk.entries.find(key); it != g_disk.entries.end()) {
    const auto [algo, math, layout] = it->second;
    for (const ConvCandidate& c : cands)
      if (c.algo == algo && c.math == math && int(c.layout) == layout) return {c, "cached"};
  }
  if (cands.size() == 1 && !ctx.timer) return {cands.front(), "heuristic (the only candidate)"};
  const std::vector<ConvTiming> ts = time_on(ctx, g, pl, cands, o, stream);
  std::string report;
  const ConvTiming* best = nullptr;
  for (const ConvTiming& t : ts) {
    const ConvCandidate& c = t.candidate;
    report += fmt::format(
        "{}{}={}", report.empty() ? "" : ", ",
        c.algo == kConvGemmAlgo
            ? std::string("gemm")
            : fmt::format("{}/{}{}{}", c.algo, c.math, c.layout == ConvLayout::kNCHW ? "/nchw" : "",
                          c.deterministic ? "" : "/nd"),
        t.ms < 0 ? std::string("-") : fmt::format("{:.4f}", t.ms));
    if (t.ms >= 0 && (!best || t.ms < best->ms)) best = &t;
  }
  GAN_CHECK(best != nullptr,
            fmt::format("conv (cuDNN): every {} candidate failed or needs more than {} bytes of "
                        "workspace for {}",
                        what, ctx.workspace_limit, geom_text(g)));
  save_to_disk_cache_locked(key, best->candidate, best->ms);
  return {best->candidate, fmt::format("timed {:.4f} ms [algo/math=ms: {}]", best->ms, report)};
}

void record(const ConvGeom& g, const CudnnConvContext& ctx, ConvDirection dir, const Choice& c) {
  g_plan_log.push_back(fmt::format("conv {}{}{}: {} {} ({})", geom_text(g),
                                   std::string(" ") + mode_name(ctx),
                                   ctx.deterministic ? " deterministic" : "",
                                   conv_direction_name(dir), candidate_text(c.c), c.how));
  if (log_kernels()) std::fprintf(stderr, "gan: cuDNN plan: %s\n", g_plan_log.back().c_str());
}

ConvPlan& plan_locked(const CudnnConvContext& ctx, const ConvGeom& g) {
  auto& slot = plans()[key_of(g, ctx)];
  if (!slot) slot = std::make_unique<ConvPlan>();
  return *slot;
}

// Chooses direction d's candidate on first use, then runs it on `o`. A result that accumulates
// (beta != 0: the filter gradient) is timed into a scratch output, never into o.out.
void run_direction(const CudnnConvContext& ctx, const ConvGeom& g, ConvDirection d,
                   const Operands& o) {
  std::unique_lock<std::mutex> lock(g_mu);
  ConvPlan& pl = plan_locked(ctx, g);
  DirPlan& dp = pl.dir[int(d)];
  if (!dp.chosen) {
    Operands timing = o;
    std::unique_ptr<DeviceBuffer> scratch;
    if (o.beta != 0.f && !capturing(ctx)) {  // inside a capture nothing is timed
      size_t na, nb, nout;
      operand_sizes(g, d, na, nb, nout);
      scratch = std::make_unique<DeviceBuffer>(nout * elem_size(ctx));
      timing.out = scratch->p;
      timing.beta = 0.f;
    }
    const Choice c = choose(ctx, g, pl, d, timing);
    dp.c = c.c;
    dp.ws = candidate_workspace(ctx, g, pl, dp.c);
    dp.chosen = true;
    record(g, ctx, d, c);
  }
  lock.unlock();
  void* ws = dp.ws ? ctx.workspace(dp.ws) : nullptr;
  run_candidate(ctx, g, pl, dp.c, o, ws, dp.ws);
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
  ConvPlan pl;  // its own descriptors; the layout's buffers are the "engine's" here
  pl.nhwc.make(g, ctx, ConvLayout::kNHWC);
  const ConvLayout layout = nchw ? ConvLayout::kNCHW : ConvLayout::kNHWC;
  if (nchw) pl.nchw.make(g, ctx, layout);
  cudaStream_t stream = nullptr;
  GAN_CUDNN_CHECK(cudnnGetStream(ctx.handle, &stream));
  size_t na, nb, nout;
  operand_sizes(g, direction, na, nb, nout);
  const size_t es = elem_size(ctx);
  const DeviceBuffer buf((na + nb + nout) * es);
  // Small finite values (bytes 0x3c: about 0.0115 in float32, 0.0115 in bf16) so that no
  // algorithm meets NaN or Inf.
  GAN_CUDA_CHECK(cudaMemsetAsync(buf.p, 0x3c, (na + nb + nout) * es, stream));
  auto* f = static_cast<char*>(buf.p);
  const Operands o{f, f + na * es, f + (na + nb) * es, 0.f};
  std::vector<ConvCandidate> cands;
  for (const ConvCandidate& c : heuristics(ctx, nchw ? pl.nchw : pl.nhwc, direction, layout))
    if (math_ok(c, ctx)) cands.push_back(c);
  if (!nchw && ctx.cublas && !ctx.bf16 && full_window(g))
    cands.push_back({direction, kConvGemmAlgo, ctx.tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH,
                     ConvLayout::kNHWC, 0, true});
  if (!nchw) return time_on(ctx, g, pl, cands, o, stream);
  // Natively in NCHW (no conversions): the cuDNN call on the NCHW descriptors directly.
  return time_all(
      ctx, std::move(cands),
      [&](const ConvCandidate& c) { return algo_workspace(ctx, g, pl.nchw, c); },
      [&](const ConvCandidate& c, void* ws) {
        run_cudnn(ctx, g, pl.nchw, c, o.a, o.b, o.out, 0.f, ws, c.workspace);
      },
      stream);
}

void conv_forward_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const void* x,
                        const void* w, void* y) {
  GAN_NVTX("conv_forward (cuDNN)");
  run_direction(ctx, g, ConvDirection::kForward, {x, w, y, 0.f});
}

void conv_backward_data_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const void* dy,
                              const void* w, void* dx) {
  GAN_NVTX("conv_backward_data (cuDNN)");
  run_direction(ctx, g, ConvDirection::kBackwardData, {dy, w, dx, 0.f});
}

void conv_backward_filter_cudnn(const CudnnConvContext& ctx, const ConvGeom& g, const void* x,
                                const void* dy, void* dw, bool accumulate) {
  GAN_NVTX("conv_backward_filter (cuDNN)");
  run_direction(ctx, g, ConvDirection::kBackwardFilter, {x, dy, dw, accumulate ? 1.f : 0.f});
}

}  // namespace kernels
}  // namespace gan
