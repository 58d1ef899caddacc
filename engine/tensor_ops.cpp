#include "engine/tensor_ops.h"

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "engine/broadcast.h"
#include "engine/dispatch.h"
#include "kernels/cpu/ops.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace gan {

namespace {

// Reduces one run [begin, end) of axes: x viewed as (outer, r, inner).
Tensor reduce_run(const Tensor& x, int begin, int end, double scale) {
  const Shape& s = x.shape();
  const int64_t outer = s.prod(0, begin), r = s.prod(begin, end), inner = s.prod(end, s.ndim);
  Shape out_shape = s;
  for (int d = begin; d < end; ++d) out_shape.dims[d] = 1;
  Tensor y = Tensor::empty(out_shape, x.device(), x.dtype());
  if (x.is_cuda()) {
    const size_t ws = kernels::reduce_sum_workspace_bytes(outer, r, inner);
    Tensor work;
    if (ws) work = Tensor::empty(Shape{int64_t(ws / sizeof(float))}, Device::CUDA);
    kernels::reduce_sum_cuda(x.data<float>(), outer, r, inner, float(scale), false, y.data<float>(),
                             ws ? work.raw() : nullptr, ws, cuda::stream());
  } else {
    dispatch_cpu(x, "reduce_sum", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::reduce_sum<T>(x.data<T>(), outer, r, inner, scale, false, y.data<T>());
    });
  }
  return y;
}

}  // namespace

Tensor reduce_sum_axes(const Tensor& x, uint32_t axis_mask, double scale) {
  const Shape& s = x.shape();
  // Axes of size 1 need no work; find runs of adjacent reduced axes.
  Tensor cur = x;
  bool scaled_once = false;
  int d = 0;
  while (d < s.ndim) {
    if (!(axis_mask >> d & 1u) || s.dims[d] == 1) {
      ++d;
      continue;
    }
    int e = d;
    while (e < s.ndim && (axis_mask >> e & 1u)) ++e;
    cur = reduce_run(cur, d, e, scaled_once ? 1.0 : scale);
    scaled_once = true;
    d = e;
  }
  Shape out_shape = s;
  for (int k = 0; k < s.ndim; ++k)
    if (axis_mask >> k & 1u) out_shape.dims[k] = 1;
  if (!scaled_once) {
    // Nothing to sum (all reduced axes have size 1): a scaled copy.
    cur = scaled(x, scale);
  }
  return cur.reshape(out_shape);
}

Tensor sum_to_shape(const Tensor& g, const Shape& target) {
  if (g.shape() == target) return g;
  if (g.dtype() == DType::BF16) return sum_to_shape(g.to(DType::F32), target);  // float32 sums
  const Shape& s = g.shape();
  uint32_t mask = 0;
  for (int d = 0; d < s.ndim; ++d) {
    const int k = target.ndim - s.ndim + d;
    const int64_t td = k >= 0 ? target.dims[k] : 1;
    if (td == 1 && s.dims[d] != 1) mask |= 1u << d;
  }
  return reduce_sum_axes(g, mask, 1.0).reshape(target);
}

Tensor expand_to(const Tensor& x, const Shape& shape, double scale) {
  Tensor y = Tensor::empty(shape, x.device(), x.dtype());
  const kernels::BroadcastIndex bi = make_broadcast_index(shape, shape, x.shape());
  if (x.is_cuda()) {
    kernels::expand_cuda(bi, x.data<float>(), float(scale), y.data<float>(), cuda::stream());
  } else {
    dispatch_cpu(x, "expand", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::expand<T>(bi, x.data<T>(), scale, y.data<T>());
    });
  }
  return y;
}

Tensor scaled(const Tensor& x, double alpha) {
  Tensor y = Tensor::empty_like(x);
  if (x.dtype() == DType::BF16) {
    if (x.is_cuda()) {
      kernels::unary_forward_cuda(kernels::Unary::kScale, float(alpha), x.data<uint16_t>(),
                                  y.data<uint16_t>(), x.numel(), cuda::stream());
      return y;
    }
    return scaled(x.to(DType::F32), alpha).to(DType::BF16);
  }
  if (x.is_cuda()) {
    kernels::unary_forward_cuda(kernels::Unary::kScale, float(alpha), x.data<float>(),
                                y.data<float>(), x.numel(), cuda::stream());
  } else {
    dispatch_cpu(x, "scale", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::unary_forward<T>(kernels::Unary::kScale, alpha, x.data<T>(), y.data<T>(),
                                     x.numel());
    });
  }
  return y;
}

}  // namespace gan

namespace gan {

void clamp_(const Tensor& t, double lo, double hi) {
  if (t.is_cuda()) {
    kernels::clamp_cuda(t.data<float>(), t.numel(), float(lo), float(hi), cuda::stream());
  } else {
    dispatch_cpu(t, "clamp", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::clamp<T>(t.data<T>(), t.numel(), lo, hi);
    });
  }
}

void lerp_(const Tensor& ema, const Tensor& x, double w) {
  check_same_device("lerp", {&ema, &x});
  check_shape("lerp", "x", x, ema.shape());
  if (ema.is_cuda()) {
    kernels::lerp_cuda(ema.data<float>(), x.data<float>(), ema.numel(), float(w), cuda::stream());
  } else {
    dispatch_cpu(ema, "lerp", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::lerp<T>(ema.data<T>(), x.data<T>(), ema.numel(), w);
    });
  }
}

void lerp_all_(const std::vector<Tensor>& ema, const std::vector<Tensor>& x, double w) {
  GAN_CHECK(ema.size() == x.size(), "lerp_all_: lists of different lengths");
  std::vector<kernels::BufferChunk> bufs;
  bool all_cuda = ema.size() > 1;
  for (size_t i = 0; i < ema.size(); ++i) {
    check_same_device("lerp", {&ema[i], &x[i]});
    check_shape("lerp", "x", x[i], ema[i].shape());
    all_cuda = all_cuda && ema[i].is_cuda() && ema[i].dtype() == DType::F32;
    if (all_cuda) bufs.push_back({ema[i].data<float>(), x[i].data<float>(), ema[i].numel()});
  }
  if (all_cuda)
    if (const DeviceChunkTable t = device_chunk_table(bufs); t.table)
      return kernels::lerp_chunks_cuda(t.table, t.count, float(w), cuda::stream());
  for (size_t i = 0; i < ema.size(); ++i) lerp_(ema[i], x[i], w);
}

void lerp_all_gated_(const std::vector<Tensor>& ema, const std::vector<Tensor>& x, double w,
                     const double* step, double start) {
  GAN_CHECK(ema.size() == x.size(), "lerp_all_gated_: lists of different lengths");
  if (ema.empty()) return;
  std::vector<kernels::BufferChunk> bufs;
  for (size_t i = 0; i < ema.size(); ++i) {
    check_same_device("lerp", {&ema[0], &ema[i], &x[i]});
    check_shape("lerp", "x", x[i], ema[i].shape());
    if (ema[i].is_cuda()) {
      check_cuda_f32("lerp", ema[i]);
      check_cuda_f32("lerp", x[i]);
      bufs.push_back({ema[i].data<float>(), x[i].data<float>(), ema[i].numel()});
    }
  }
  if (ema[0].is_cuda()) {
    const DeviceChunkTable t = device_chunk_table(bufs);
    GAN_CHECK(t.table != nullptr,
              "lerp_all_gated_: no chunk table for these tensors inside a capture (call it once "
              "before capturing)");
    return kernels::lerp_chunks_gated_cuda(t.table, t.count, float(w), step, start, cuda::stream());
  }
  const bool copy = *step <= start;  // host memory on the CPU
  for (size_t i = 0; i < ema.size(); ++i) {
    if (copy)
      ema[i].copy_from(x[i]);
    else
      lerp_(ema[i], x[i], w);
  }
}

DeviceChunkTable device_chunk_table(const std::vector<kernels::BufferChunk>& buffers) {
  using Key = std::vector<std::tuple<float*, const float*, int64_t>>;
  static std::mutex mu;
  static auto* tables = new std::map<Key, DeviceChunkTable>;  // never freed (used until exit)
  Key key;
  for (const kernels::BufferChunk& b : buffers) key.emplace_back(b.dst, b.src, b.n);
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = tables->find(key); it != tables->end()) return it->second;
  if (cuda::capturing()) return {};
  const std::vector<kernels::BufferChunk> t = kernels::chunk_table(buffers);
  kernels::BufferChunk* dev = nullptr;
  const size_t bytes = t.size() * sizeof(kernels::BufferChunk);
  GAN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dev), bytes));
  GAN_CUDA_CHECK(cudaMemcpy(dev, t.data(), bytes, cudaMemcpyHostToDevice));
  return (*tables)[key] = DeviceChunkTable{dev, int64_t(t.size())};
}

}  // namespace gan
