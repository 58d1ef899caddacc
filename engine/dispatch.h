// Device/dtype dispatch for the engine's op wrappers: CUDA runs the f32 launchers; the CPU runs the
// reference templates in f32 (training) or f64 (gradient checks).
#pragma once

#include <string>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/tensor.h"

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

// A product's operand in the precision mode (engine/device.h): in bf16 precision a float32 tensor
// rounded to a bf16 tensor (nearest even); otherwise (or for float64, the gradient checks) t.
inline Tensor bf16_operand(const Tensor& t) {
  return precision() == Precision::kBF16 && t.dtype() == DType::F32 ? t.to(DType::BF16) : t;
}

}  // namespace gan
