// Device/dtype dispatch for the engine's op wrappers: CUDA runs the f32 launchers; the CPU runs the
// reference templates in f32 (training) or f64 (gradient checks).
#pragma once

#include <string>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/bf16.h"

namespace gan {

// Calls f(T{}) with T = float or double after the dtype of t (a CPU tensor).
template <class F>
void dispatch_cpu(const Tensor& t, const char* op, F&& f) {
  switch (t.dtype()) {
    case DType::F32:
      f(float{});
      return;
    case DType::F64:
      f(double{});
      return;
    default:
      throw_error(std::string(op) + ": dtype " + dtype_name(t.dtype()) + " is not supported");
  }
}

// Throws unless t is a f32 CUDA tensor (the only kind the CUDA launchers take).
inline void check_cuda_f32(const char* op, const Tensor& t) {
  GAN_CHECK(t.dtype() == DType::F32,
            std::string(op) + ": cuda kernels take f32 tensors, got " + t.str());
}

// Whether t, a product's operand, is rounded to bf16: bf16 precision (engine/device.h) and a
// float32 tensor (float64 ones, the gradient checks, never are).
inline bool rounds_to_bf16(const Tensor& t) {
  return precision() == Precision::kBF16 && t.dtype() == DType::F32;
}

// A bf16 product's result into the float32 tensor out (same size), overwritten or, with
// accumulate, added (a parameter's gradient buffer): r is the product's bf16 result (CUDA: widened
// in one pass) or its float32 result (CPU: rounded to bf16 first; r may be out when overwriting).
inline void store_bf16_result(const Tensor& r, const Tensor& out, bool accumulate) {
  if (r.is_cuda()) {
    if (accumulate)
      kernels::bf16_accumulate_cuda(r.data<uint16_t>(), out.data<float>(), out.numel(),
                                    cuda::stream());
    else
      kernels::bf16_to_f32_cuda(r.data<uint16_t>(), out.data<float>(), out.numel(), cuda::stream());
    return;
  }
  const float* src = r.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) {
    const float v = kernels::round_bf16(src[i]);
    dst[i] = accumulate ? dst[i] + v : v;
  }
}

}  // namespace gan
