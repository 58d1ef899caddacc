// Tensor-level building blocks shared by op wrappers (no autograd): they allocate their result on
// the input's device and run the CPU reference or the CUDA launcher.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor.h"
#include "kernels/elementwise.h"

namespace gan {

// Sums x over the axes in `axis_mask` (bit d = axis d), scaled by `scale`. The result keeps the
// reduced axes as size 1 (keepdim shape). Adjacent axes are reduced in one pass.
Tensor reduce_sum_axes(const Tensor& x, uint32_t axis_mask, double scale);
// Sums a broadcast gradient g down to `target` (a shape g's shape was broadcast from).
Tensor sum_to_shape(const Tensor& g, const Shape& target);
// scale * x broadcast to `shape` (x's shape must broadcast to it).
Tensor expand_to(const Tensor& x, const Shape& shape, double scale = 1.0);
// alpha * x as a new tensor.
Tensor scaled(const Tensor& x, double alpha);
// In place: t = clamp(t, lo, hi).
void clamp_(const Tensor& t, double lo, double hi);
// In place: ema += w (x - ema) (same shape and device).
void lerp_(const Tensor& ema, const Tensor& x, double w);
// The same for lists (a model's weight EMA): one launch on the GPU (a chunk table made once per
// list, outside graph capture), element by element elsewhere.
void lerp_all_(const std::vector<Tensor>& ema, const std::vector<Tensor>& x, double w);
// Gated by a step counter (a double in the tensors' device memory, e.g. Adam::step_counter()):
// ema = x exactly while *step <= start, else ema += w (x - ema). On the GPU the gate is read by
// the kernel (graph-safe; the chunk table must exist before a capture: call it once eagerly);
// float32 tensors there.
void lerp_all_gated_(const std::vector<Tensor>& ema, const std::vector<Tensor>& x, double w,
                     const double* step, double start);

// A device table of buffer chunks (kernels::chunk_table) for one launch over many buffers: made
// on first use of a list, outside a CUDA graph capture, and kept (a model's buffers are the same
// every step); {nullptr, 0} when first asked for inside a capture (the caller goes buffer by
// buffer).
struct DeviceChunkTable {
  const kernels::BufferChunk* table = nullptr;
  int64_t count = 0;
};
DeviceChunkTable device_chunk_table(const std::vector<kernels::BufferChunk>& buffers);

}  // namespace gan
