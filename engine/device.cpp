#include "engine/device.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/conv_cudnn.h"
#include "kernels/cpu/backend.h"

namespace gan {

namespace {

std::atomic<MathMode> g_math{MathMode::kStrict};
std::atomic<Precision> g_precision{Precision::kFP32};

size_t default_attention_gemm_max_bytes() {
  const char* env = std::getenv("GAN_ATTN_GEMM_MAX_MB");
  if (env == nullptr || *env == '\0') return 0;  // from free memory
  char* end = nullptr;
  const unsigned long long mb = std::strtoull(env, &end, 10);
  GAN_CHECK(end != env && *end == '\0' && mb < (1ull << 40),
            std::string("GAN_ATTN_GEMM_MAX_MB: expected a number of MiB, got '") + env + "'");
  return size_t(mb) << 20;
}
bool env_flag(const char* name) {
  const char* e = std::getenv(name);
  return e && *e && std::string(e) != "0";
}
std::atomic<bool> g_cudnn_deterministic{env_flag("GAN_CUDNN_DETERMINISTIC")};

AttnKernel default_attention_kernel() {
  const char* e = std::getenv("GAN_ATTN_KERNEL");
  if (e == nullptr || *e == '\0') return AttnKernel::kAuto;
  for (AttnKernel k :
       {AttnKernel::kAuto, AttnKernel::kGemm, AttnKernel::kFlash, AttnKernel::kTiled})
    if (std::string(e) == attention_kernel_name(k)) return k;
  throw Error(std::string("GAN_ATTN_KERNEL: expected auto, gemm, flash or tiled, got '") + e + "'");
}
std::atomic<AttnKernel> g_attention_kernel{default_attention_kernel()};

std::atomic<bool> g_plan_cache_chosen{false};  // set_cudnn_plan_cache() called, or the default set

std::atomic<size_t> g_attention_gemm_max_bytes{default_attention_gemm_max_bytes()};
std::mutex g_ctx_mu;
cuda::Context* g_ctx = nullptr;  // created once, never destroyed (tensors may be freed at exit)

// cuBLAS's own workspace is set once so that no GEMM allocates inside a captured CUDA graph.
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

void apply_math_mode(cublasHandle_t h) {
  GAN_CUBLAS_CHECK(
      cublasSetMathMode(h, allow_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

}  // namespace

bool cuda_available() {
  static const bool available = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return n > 0;
  }();
  return available;
}

bool cuda_is_interpreter() {
  static const bool interp = [] {
    cudaDeviceProp p{};
    if (!cuda_available() || cudaGetDeviceProperties(&p, 0) != cudaSuccess) return false;
    return std::string(p.name).find("interpreter") != std::string::npos;
  }();
  return interp;
}

void set_math_mode(MathMode mode) {
  g_math = mode;
  std::lock_guard<std::mutex> lock(g_ctx_mu);
  if (g_ctx) apply_math_mode(g_ctx->cublas);
}
MathMode math_mode() { return g_math; }
const char* math_mode_name(MathMode mode) {
  switch (mode) {
    case MathMode::kStrict:
      return "fp32";
    case MathMode::kAccurate:
      return "fp32-tc";
    case MathMode::kTF32:
      return "tf32";
  }
  return "?";
}
MathMode parse_math_mode(const std::string& name) {
  for (MathMode m : {MathMode::kStrict, MathMode::kAccurate, MathMode::kTF32})
    if (name == math_mode_name(m)) return m;
  throw Error("math mode: expected fp32, fp32-tc or tf32, got '" + name + "'");
}

void set_precision(Precision p) { g_precision = p; }
Precision precision() { return g_precision; }
const char* precision_name(Precision p) { return p == Precision::kBF16 ? "bf16" : "fp32"; }
Precision parse_precision(const std::string& name) {
  for (Precision p : {Precision::kFP32, Precision::kBF16})
    if (name == precision_name(p)) return p;
  throw Error("precision: expected fp32 or bf16, got '" + name + "'");
}

void set_allow_tf32(bool allow) { set_math_mode(allow ? MathMode::kTF32 : MathMode::kStrict); }
bool allow_tf32() { return g_math == MathMode::kTF32; }

void set_attention_kernel(AttnKernel kernel) { g_attention_kernel = kernel; }
AttnKernel attention_kernel() { return g_attention_kernel; }
const char* attention_kernel_name(AttnKernel kernel) {
  switch (kernel) {
    case AttnKernel::kAuto:
      return "auto";
    case AttnKernel::kGemm:
      return "gemm";
    case AttnKernel::kFlash:
      return "flash";
    case AttnKernel::kTiled:
      return "tiled";
  }
  return "?";
}

void set_cudnn_deterministic(bool deterministic) {
  g_cudnn_deterministic = deterministic;
  kernels::cpu::set_deterministic(deterministic);  // the CPU backend's choices likewise
}
bool cudnn_deterministic() { return g_cudnn_deterministic; }

std::string default_cudnn_plan_cache() {
  if (const char* e = std::getenv("GAN_CUDNN_PLAN_CACHE")) return std::string(e) == "off" ? "" : e;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::string(x) + "/gan/cudnn_plans.tsv";
  if (const char* h = std::getenv("HOME"); h && *h)
    return std::string(h) + "/.cache/gan/cudnn_plans.tsv";
  return "";
}

void set_cudnn_plan_cache(const std::string& path) {
  g_plan_cache_chosen = true;
  kernels::set_conv_plan_cache(path == "off" ? "" : path);
}

void set_attention_gemm_max_bytes(size_t bytes) { g_attention_gemm_max_bytes = bytes; }
size_t attention_gemm_max_bytes() { return g_attention_gemm_max_bytes; }

namespace cuda {

Context& context() {
  std::lock_guard<std::mutex> lock(g_ctx_mu);
  if (g_ctx) return *g_ctx;
  GAN_CHECK(cuda_available(),
            "cuda: no CUDA device is available (no GPU, or the driver is not loaded); "
            "use the cpu device");
  auto* c = new Context;
  GAN_CUDA_CHECK(cudaGetDevice(&c->device));
  GAN_CUDA_CHECK(cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, c->device));
  GAN_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  // The pool keeps what it got from the driver: after the first step, allocation is a pool hit.
  GAN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&c->pool, c->device));
  uint64_t threshold = UINT64_MAX;
  GAN_CUDA_CHECK(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  GAN_CUBLAS_CHECK(cublasCreate(&c->cublas));
  GAN_CUBLAS_CHECK(cublasSetStream(c->cublas, c->stream));
  void* ws = nullptr;
  GAN_CUDA_CHECK(cudaMalloc(&ws, kCublasWorkspaceBytes));
  GAN_CUBLAS_CHECK(cublasSetWorkspace(c->cublas, ws, kCublasWorkspaceBytes));
  apply_math_mode(c->cublas);
  g_ctx = c;
  return *g_ctx;
}

cudnnHandle_t cudnn() {
  static std::mutex mu;
  static cudnnHandle_t handle = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (!handle) {
    cudaStream_t st = stream();
    GAN_CUDNN_CHECK(cudnnCreate(&handle));
    GAN_CUDNN_CHECK(cudnnSetStream(handle, st));
    if (!g_plan_cache_chosen.exchange(true))
      kernels::set_conv_plan_cache(default_cudnn_plan_cache());
  }
  return handle;
}

kernels::CudnnConvContext conv_context() {
  kernels::CudnnConvContext ctx;
  ctx.handle = cudnn();
  ctx.tf32 = allow_tf32();
  ctx.deterministic = cudnn_deterministic();
  ctx.cublas = cublas();  // the GEMM candidate, in the engine's math mode (= ctx.tf32)
  static const size_t limit = [] {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      (void)cudaGetLastError();
      return size_t(256) << 20;
    }
    return std::min(size_t(1) << 30, free_b / 4);
  }();
  ctx.workspace_limit = limit;
  ctx.workspace = [](size_t bytes) -> void* {
    static std::mutex mu;
    static Tensor ws;
    static std::vector<Tensor> retired;
    std::lock_guard<std::mutex> lock(mu);
    if (bytes == 0) return nullptr;
    if (!ws.defined() || ws.nbytes() < bytes) {
      GAN_CHECK(!capturing(),
                "conv (cuDNN): the workspace must grow to " + std::to_string(bytes) +
                    " bytes during a CUDA graph capture; run every shape once before capturing");
      if (ws.defined()) retired.push_back(ws);
      ws = Tensor::empty(Shape{int64_t((bytes + 3) / 4)}, Device::CUDA);
    }
    return ws.raw();
  };
  return ctx;
}

bool capturing() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  GAN_CUDA_CHECK(cudaStreamIsCapturing(stream(), &status));
  return status != cudaStreamCaptureStatusNone;
}

void synchronize() { GAN_CUDA_CHECK(cudaStreamSynchronize(context().stream)); }

size_t pool_reserved_bytes() {
  uint64_t v = 0;
  GAN_CUDA_CHECK(cudaMemPoolGetAttribute(context().pool, cudaMemPoolAttrReservedMemCurrent, &v));
  return size_t(v);
}

}  // namespace cuda
}  // namespace gan
