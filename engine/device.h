// The CUDA device context: one device, one engine stream on which every op runs, a cuBLAS handle
// bound to it, and the stream-ordered memory pool. Everything is created on first use; on a
// machine without a GPU, cuda_available() is false and context() throws a clear error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

namespace gan {

namespace kernels {
struct CudnnConvContext;
}

// True when a CUDA device can be used (the driver loads and reports at least one device).
bool cuda_available();
// True when the CUDA runtime is the CPU interpreter of the CUDA code (kernels/interpreter/): its
// device memory is host memory and its timings say nothing about a GPU.
bool cuda_is_interpreter();

// Float32 math, as accuracy (like PyTorch's float32 matmul precision), one switch for GEMMs,
// convolutions and attention:
//   kStrict    "fp32": FMA everywhere (the default; PyTorch's "highest");
//   kAccurate  "fp32-tc": fp32-accurate on tensor cores: attention on the 3xTF32 kernels (error
//              at fp32 level, docs/kernels/attention.md); GEMMs and convolutions stay strict
//              (neither cuBLAS's float32 GEMM nor cuDNN offers the split);
//   kTF32      "tf32": TF32 tensor cores in GEMMs, convolutions and attention ("high").
// Applies to cuBLAS now, to cuDNN convolutions created afterwards and to attention's next choice.
enum class MathMode { kStrict, kAccurate, kTF32 };
void set_math_mode(MathMode mode);
MathMode math_mode();
const char* math_mode_name(MathMode mode);
// "fp32", "fp32-tc" or "tf32"; anything else is an error naming the choices.
MathMode parse_math_mode(const std::string& name);
// set_allow_tf32(b) = set_math_mode(b ? kTF32 : kStrict); allow_tf32() = (math_mode() == kTF32).
void set_allow_tf32(bool allow);
bool allow_tf32();

// Precision of the products (autocast, like PyTorch's torch.autocast(dtype=torch.bfloat16)):
//   kFP32  every op in float32 under the math mode above (the default);
//   kBF16  convolutions, transposed convolutions, linear/matmul and attention round their
//          operands (activations and the float32 master weights) to bf16 and multiply with
//          float32 accumulation (cuDNN and cuBLAS in bf16 on the GPU); their result is rounded
//          to bf16, the bias and fused activation added in float32. Their backward passes take
//          the incoming gradient in bf16 and give bf16-rounded gradients (from the float32 inputs
//          kept, rounded again). Everything else (batch norm and its statistics, the
//          spectral norm, softmax statistics, losses, the penalty's norm, Adam, the EMA) stays
//          float32, and so do the tensors between ops. docs/precision.md.
enum class Precision { kFP32, kBF16 };
void set_precision(Precision p);
Precision precision();
const char* precision_name(Precision p);  // "fp32" or "bf16"
// "fp32" or "bf16"; anything else is an error naming the choices.
Precision parse_precision(const std::string& name);
// Sets a precision for its lifetime and restores the previous one.
class PrecisionScope {
 public:
  explicit PrecisionScope(Precision p) : prev_(precision()) { set_precision(p); }
  ~PrecisionScope() { set_precision(prev_); }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  Precision prev_;
};

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

// Attention on the GPU (engine/ops_attention.cpp, docs/kernels/attention.md) has three versions:
// the materialised one (cuBLAS; B Nq Nk float buffers, two in the backward pass), the
// tensor-core flash kernels (TF32 or 3xTF32; in the tf32 and fp32-tc math modes) and the tiled
// SIMT kernels (FMA). kAuto (default) times the candidates the math mode and the memory allow on
// first use of each shape, before any graph capture, and keeps the fastest (untimed: inside a
// capture the first of flash, gemm, tiled; on the interpreter, whose timings mean nothing, gemm
// where it fits); a pinned version is
// used wherever it can take the shape (else the materialised one). $GAN_ATTN_KERNEL = auto, gemm,
// flash or tiled sets the default.
enum class AttnKernel { kAuto, kGemm, kFlash, kTiled };
void set_attention_kernel(AttnKernel kernel);
AttnKernel attention_kernel();
const char* attention_kernel_name(AttnKernel kernel);
// Every attention choice made, as logged with GAN_LOG_KERNELS=1 ("attention <shape and mode>:
// timed: gemm 1.2 ms, flash-tf32 0.4 ms, ... -> flash-tf32"), oldest first.
std::vector<std::string> attention_choice_log();
// Tests: the candidates' milliseconds come from timer(version name: "gemm", "flash-tf32",
// "flash-3xtf32", "tiled") instead of CUDA events; null restores the events. Forgets the choices
// made so far (as does every call).
void set_attention_timer(std::function<double(const std::string&)> timer);
// The materialised version is a candidate when one B Nq Nk float buffer takes at most this many
// bytes: $GAN_ATTN_GEMM_MAX_MB or the setter; by default (0 here) an eighth of the device memory
// free at the choice, so that the backward pass's two buffers take at most a quarter.
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
// Whether the engine stream is being captured into a CUDA graph.
bool capturing();
// Bytes the memory pool holds from the driver (steady-state training should not grow this).
size_t pool_reserved_bytes();

}  // namespace cuda
}  // namespace gan
