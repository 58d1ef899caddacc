// bf16 activations (bf16 precision, engine/device.h): how an op treats bf16 inputs when it has no
// bf16 kernel of its own. Such an op runs its float32 kernel on the widened inputs (a recorded
// cast, exact) and rounds its result back to bf16 when the result is an activation (elementwise
// ops, pooling, shapes, attention), or keeps it float32 (reductions, softmax, losses: PyTorch
// autocast's float32 list). The rounding points are then those of a bf16 kernel that loads bf16,
// computes in float32 and stores bf16, which is what the ops with bf16 kernels do (products,
// batch norm); the fallback costs a float32 copy, not accuracy.
#pragma once

#include "engine/ops.h"

namespace gan {

inline bool is_bf16(const Var& v) { return v.defined() && v.value().dtype() == DType::BF16; }
// t as float32 (a conversion copy, not recorded) when it is bf16, else t: what an op's own code
// uses where a kernel takes float32.
inline Tensor widened(const Tensor& t) {
  return t.defined() && t.dtype() == DType::BF16 ? t.to(DType::F32) : t;
}
// v as float32 (a recorded cast when it is bf16).
inline Var widen(const Var& v) { return is_bf16(v) ? cast(v, DType::F32) : v; }
// A float32 result back to bf16 (a recorded cast).
inline Var narrow(const Var& v) {
  return v.value().dtype() == DType::F32 ? cast(v, DType::BF16) : v;
}

}  // namespace gan
