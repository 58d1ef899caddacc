// The CUDA device context: one device, one engine stream on which every op runs, a cuBLAS handle
// bound to it, and the stream-ordered memory pool. Everything is created on first use; on a
// machine without a GPU, cuda_available() is false and context() throws a clear error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

namespace gan {

namespace kernels {
struct CudnnConvContext;
}

// True when a CUDA device can be used (the driver loads and reports at least one device).
bool cuda_available();

// Math mode for float32 GEMMs and convolutions: strict float32 by default; TF32 tensor cores when
// allowed. The setting applies to cuBLAS now and to cuDNN convolutions created afterwards.
void set_allow_tf32(bool allow);
bool allow_tf32();

// cuDNN convolution algorithms: timed on first use, non-deterministic ones allowed (default), or
// deterministic only, untimed (bitwise-equal runs on the same GPU and cuDNN): the default comes
// from $GAN_CUDNN_DETERMINISTIC; gan_train --deterministic sets it. Applies to plans made later.
void set_cudnn_deterministic(bool deterministic);
bool cudnn_deterministic();
// The file of timed cuDNN choices (kernels/conv_cudnn.h): $GAN_CUDNN_PLAN_CACHE, else
// $XDG_CACHE_HOME/gan/cudnn_plans.tsv, else ~/.cache/gan/cudnn_plans.tsv; "" or "off" turns it
// off. Takes effect now (the file is read at the next choice).
void set_cudnn_plan_cache(const std::string& path);
std::string default_cudnn_plan_cache();

// Attention on the GPU materialises softmax(Q K^T) (the cuBLAS version, faster) when B Nq Nk
// floats take at most this many bytes, and uses the tiled kernels that never store it otherwise
// (leaner). Default 256 MiB, or $GAN_ATTN_GEMM_MAX_MB; the backward pass holds two such buffers.
// Sizes the tiled kernels cannot take (d > 64 or dv > 1024) use the cuBLAS version at any size.
void set_attention_gemm_max_bytes(size_t bytes);
size_t attention_gemm_max_bytes();

namespace cuda {

struct Context {
  int device = 0;
  int sm_count = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cudaMemPool_t pool = nullptr;
};

Context& context();
inline cudaStream_t stream() { return context().stream; }
inline cublasHandle_t cublas() { return context().cublas; }
// The cuDNN handle of the engine stream (created on first use).
cudnnHandle_t cudnn();
// What kernels/conv_cudnn.h needs to run a convolution on the engine stream: the cuDNN handle,
// the math mode (allow_tf32()), the algorithm policy (cudnn_deterministic(); timed candidates may
// use at most a quarter of the free device memory, up to 1 GiB, as workspace) and the engine's
// convolution workspace, which grows
// (stream-ordered) when a plan needs more, which the first step does. Growth during a CUDA graph
// capture is refused (a captured workspace must never move), and a workspace replaced later
// stays allocated, since a graph captured earlier still uses it (e.g. a sample forward at another
// batch size makes new plans after the training step was captured).
kernels::CudnnConvContext conv_context();
// Waits for all work on the engine stream.
void synchronize();
// Bytes the memory pool holds from the driver (steady-state training should not grow this).
size_t pool_reserved_bytes();

}  // namespace cuda
}  // namespace gan
