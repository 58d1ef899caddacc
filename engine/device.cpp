#include "engine/device.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/conv_cudnn.h"

namespace gan {

namespace {

std::atomic<bool> g_allow_tf32{false};

size_t default_attention_gemm_max_bytes() {
  const char* env = std::getenv("GAN_ATTN_GEMM_MAX_MB");
  if (env == nullptr || *env == '\0') return size_t(256) << 20;
  char* end = nullptr;
  const unsigned long long mb = std::strtoull(env, &end, 10);
  GAN_CHECK(end != env && *end == '\0' && mb < (1ull << 40),
            std::string("GAN_ATTN_GEMM_MAX_MB: expected a number of MiB, got '") + env + "'");
  return size_t(mb) << 20;
}
std::atomic<size_t> g_attention_gemm_max_bytes{default_attention_gemm_max_bytes()};
std::mutex g_ctx_mu;
cuda::Context* g_ctx = nullptr;  // created once, never destroyed (tensors may be freed at exit)

// cuBLAS's own workspace is set once so that no GEMM allocates inside a captured CUDA graph.
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

void apply_math_mode(cublasHandle_t h) {
  GAN_CUBLAS_CHECK(
      cublasSetMathMode(h, g_allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
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

void set_allow_tf32(bool allow) {
  g_allow_tf32 = allow;
  std::lock_guard<std::mutex> lock(g_ctx_mu);
  if (g_ctx) apply_math_mode(g_ctx->cublas);
}

bool allow_tf32() { return g_allow_tf32; }

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
  }
  return handle;
}

kernels::CudnnConvContext conv_context() {
  kernels::CudnnConvContext ctx;
  ctx.handle = cudnn();
  ctx.tf32 = allow_tf32();
  ctx.workspace = [](size_t bytes) -> void* {
    static std::mutex mu;
    static Tensor ws;
    static std::vector<Tensor> retired;
    std::lock_guard<std::mutex> lock(mu);
    if (bytes == 0) return nullptr;
    if (!ws.defined() || ws.nbytes() < bytes) {
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      GAN_CUDA_CHECK(cudaStreamIsCapturing(stream(), &status));
      GAN_CHECK(status == cudaStreamCaptureStatusNone,
                "conv (cuDNN): the workspace must grow to " + std::to_string(bytes) +
                    " bytes during a CUDA graph capture; run every shape once before capturing");
      if (ws.defined()) retired.push_back(ws);
      ws = Tensor::empty(Shape{int64_t((bytes + 3) / 4)}, Device::CUDA);
    }
    return ws.raw();
  };
  return ctx;
}

void synchronize() { GAN_CUDA_CHECK(cudaStreamSynchronize(context().stream)); }

size_t pool_reserved_bytes() {
  uint64_t v = 0;
  GAN_CUDA_CHECK(cudaMemPoolGetAttribute(context().pool, cudaMemPoolAttrReservedMemCurrent, &v));
  return size_t(v);
}

}  // namespace cuda
}  // namespace gan
