// sum and mean, over all elements or over axes.
#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/dispatch.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/tensor_ops.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/softmax.h"

namespace gan {

namespace {

uint32_t axis_mask(const Shape& s, const std::vector<int>& axes, const char* op) {
  uint32_t mask = 0;
  for (int a : axes) {
    const int d = a < 0 ? a + s.ndim : a;
    GAN_CHECK(d >= 0 && d < s.ndim,
              fmt::format("{}: axis {} out of range for shape {}", op, a, s.str()));
    GAN_CHECK(!(mask >> d & 1u), fmt::format("{}: axis {} given twice", op, a));
    mask |= 1u << d;
  }
  return mask;
}

Var reduce(const char* op, const Var& x, uint32_t mask, bool mean, bool keepdim) {
  if (is_bf16(x)) return reduce(op, widen(x), mask, mean, keepdim);  // float32 sums
  GAN_NVTX(op);
  const Shape& s = x.shape();
  int64_t count = 1;
  Shape kept = s, out_shape;
  std::vector<int64_t> out_dims;
  for (int d = 0; d < s.ndim; ++d) {
    if (mask >> d & 1u) {
      count *= s.dims[d];
      kept.dims[d] = 1;
      if (keepdim) out_dims.push_back(1);
    } else {
      out_dims.push_back(s.dims[d]);
    }
  }
  out_shape = Shape(out_dims);
  // The mean of no elements is NaN (0/0), as in PyTorch.
  const double sc = mean ? (count ? 1.0 / double(count) : NAN) : 1.0;
  Tensor y = reduce_sum_axes(x.value(), mask, sc).reshape(out_shape);
  return record(
      op, {x}, y,
      [s, kept, sc](const BackwardContext& c) { c.add(0, expand_to(c.dout.reshape(kept), s, sc)); },
      // VJP: the gradient broadcast back over the reduced axes (a product with a constant sc).
      [s, kept, sc](const std::vector<Var>& d, const std::vector<bool>&) {
        const Var k = reshape(d[0], kept);
        return std::vector<Var>{mul(Var(Tensor::full(s, sc, k.device(), k.value().dtype())), k)};
      });
}

}  // namespace

Var sum(const Var& x) { return reduce("sum", x, (1u << x.shape().ndim) - 1, false, false); }
Var mean(const Var& x) { return reduce("mean", x, (1u << x.shape().ndim) - 1, true, false); }

Var sum(const Var& x, const std::vector<int>& axes, bool keepdim) {
  return reduce("sum", x, axis_mask(x.shape(), axes, "sum"), false, keepdim);
}

Var softmax(const Var& x) {
  if (is_bf16(x)) return softmax(widen(x));  // float32, as autocast
  GAN_NVTX("softmax");
  const Tensor& xv = x.value();
  GAN_CHECK(xv.ndim() >= 1, "softmax: expected at least one dimension, got a scalar");
  const int64_t n = xv.shape().back(), rows = n ? xv.numel() / n : 0;
  Tensor y = Tensor::empty_like(xv);
  if (xv.is_cuda()) {
    check_cuda_f32("softmax", xv);
    kernels::softmax_rows_cuda(xv.data<float>(), y.data<float>(), rows, n, cuda::stream());
  } else {
    dispatch_cpu(xv, "softmax", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::softmax_rows<T>(xv.data<T>(), y.data<T>(), rows, n);
    });
  }
  Var out = record("softmax", {x}, y, [y, rows, n](const BackwardContext& c) {
    Tensor dx = Tensor::empty_like(y);
    if (y.is_cuda()) {
      kernels::softmax_rows_backward_cuda(y.data<float>(), c.dout.data<float>(), dx.data<float>(),
                                          rows, n, cuda::stream());
    } else {
      dispatch_cpu(y, "softmax", [&](auto t) {
        using T = decltype(t);
        kernels::cpu::softmax_rows_backward<T>(y.data<T>(), c.dout.data<T>(), dx.data<T>(), rows,
                                               n);
      });
    }
    c.add(0, dx);
  });
  if (out.requires_grad())  // dx = y (dout - sum(dout y)), differentiable in y
    set_vjp(out, [y = out](const std::vector<Var>& d, const std::vector<bool>&) {
      return std::vector<Var>{mul(y, sub(d[0], sum(mul(d[0], y), {-1}, true)))};
    });
  return out;
}

Var sum_to(const Var& g, const Shape& shape) {
  const Shape& s = g.shape();
  if (s == shape) return g;
  GAN_CHECK(shape.ndim <= s.ndim,
            fmt::format("sum_to: cannot reduce {} to {}", s.str(), shape.str()));
  const int off = s.ndim - shape.ndim;
  std::vector<int> axes;
  for (int d = 0; d < s.ndim; ++d) {
    if (d < off) {
      axes.push_back(d);
      continue;
    }
    GAN_CHECK(shape.dims[d - off] == s.dims[d] || shape.dims[d - off] == 1,
              fmt::format("sum_to: cannot reduce {} to {}", s.str(), shape.str()));
    if (shape.dims[d - off] == 1 && s.dims[d] != 1) axes.push_back(d);
  }
  const Var r = axes.empty() ? g : sum(g, axes, true);
  return reshape(r, shape);
}

Var mean(const Var& x, const std::vector<int>& axes, bool keepdim) {
  return reduce("mean", x, axis_mask(x.shape(), axes, "mean"), true, keepdim);
}

}  // namespace gan
