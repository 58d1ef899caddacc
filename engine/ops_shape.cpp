// reshape, flatten, concat.
#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/common.h"
#include "kernels/concat.h"
#include "kernels/cpu/ops.h"
#include "kernels/softmax.h"

namespace gan {

Var reshape(const Var& x, const Shape& shape) {
  Tensor y = x.value().reshape(shape);
  const Shape in = x.shape();
  return record(
      "reshape", {x}, y, [in](const BackwardContext& c) { c.add(0, c.dout.reshape(in)); },
      [in](const std::vector<Var>& d, const std::vector<bool>&) {
        return std::vector<Var>{reshape(d[0], in)};
      });
}

Var cast(const Var& x, DType dtype) {
  const DType from = x.value().dtype();
  if (from == dtype) return x;
  GAN_NVTX("cast");
  return record(
      "cast", {x}, x.value().to(dtype),
      [from](const BackwardContext& c) {
        c.add(0, c.dout.dtype() == from ? c.dout : c.dout.to(from));
      },
      [from](const std::vector<Var>& d, const std::vector<bool>&) {
        return std::vector<Var>{cast(d[0], from)};
      });
}

Var flatten(const Var& x, int start_dim) {
  const Shape& s = x.shape();
  const int d = start_dim < 0 ? start_dim + s.ndim : start_dim;
  GAN_CHECK(d >= 0 && d <= s.ndim,
            fmt::format("flatten: start_dim {} out of range for {}", start_dim, s.str()));
  std::vector<int64_t> dims(s.dims, s.dims + d);
  dims.push_back(s.prod(d, s.ndim));
  return reshape(x, Shape(dims));
}

namespace {
Tensor transpose_tensor(const Tensor& x, int64_t b, int64_t m, int64_t n, const Shape& out) {
  Tensor y = Tensor::empty(out, x.device(), x.dtype());
  if (x.is_cuda()) {
    check_cuda_f32("transpose", x);
    kernels::transpose_cuda(x.data<float>(), y.data<float>(), b, m, n, cuda::stream());
  } else {
    dispatch_cpu(x, "transpose", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::transpose<T>(x.data<T>(), y.data<T>(), b, m, n);
    });
  }
  return y;
}
}  // namespace

Var transpose(const Var& x) {
  if (is_bf16(x)) return narrow(transpose(widen(x)));
  GAN_NVTX("transpose");
  const Shape& s = x.shape();
  GAN_CHECK(s.ndim == 2 || s.ndim == 3, "transpose: expected (m, n) or (B, m, n), got " + s.str());
  const int64_t b = s.ndim == 3 ? s[0] : 1, m = s.dim(-2), n = s.dim(-1);
  const Shape out = s.ndim == 3 ? Shape{b, n, m} : Shape{n, m};
  Tensor y = transpose_tensor(x.value(), b, m, n, out);
  return record(
      "transpose", {x}, y,
      [b, m, n, s](const BackwardContext& c) { c.add(0, transpose_tensor(c.dout, b, n, m, s)); },
      [](const std::vector<Var>& d, const std::vector<bool>&) {
        return std::vector<Var>{transpose(d[0])};
      });
}

Var slice_last(const Var& x, int64_t start, int64_t len) {
  if (is_bf16(x)) return narrow(slice_last(widen(x), start, len));
  GAN_NVTX("slice_last");
  const Tensor& xv = x.value();
  const Shape& s = xv.shape();
  GAN_CHECK(
      s.ndim >= 1 && start >= 0 && len >= 0 && start + len <= s.back(),
      fmt::format("slice_last: columns [{}, {}) out of range for {}", start, start + len, s.str()));
  const int64_t width = s.back(), rows = width ? xv.numel() / width : 0;
  Shape out = s;
  out.dims[s.ndim - 1] = len;
  Tensor y = Tensor::empty(out, xv.device(), xv.dtype());
  const int64_t widths[3] = {start, len, width - start - len};
  if (xv.is_cuda()) {
    check_cuda_f32("slice_last", xv);
    float* parts[3] = {nullptr, y.data<float>(), nullptr};
    kernels::split_cuda(3, xv.data<float>(), widths, rows, parts, cuda::stream());
  } else {
    dispatch_cpu(xv, "slice_last", [&](auto t) {
      using T = decltype(t);
      T* parts[3] = {nullptr, y.data<T>(), nullptr};
      kernels::cpu::split<T>(3, xv.data<T>(), widths, rows, parts);
    });
  }
  // Backward: dout between zero columns (a concatenation; the zeros are device fills, so this
  // stays valid inside a captured CUDA graph).
  auto widen = [s, start, len](const Var& d) {
    Shape before = s, after = s;
    before.dims[s.ndim - 1] = start;
    after.dims[s.ndim - 1] = s.back() - start - len;
    const Tensor& dv = d.value();
    return concat({Var(Tensor::zeros(before, dv.device(), dv.dtype())), d,
                   Var(Tensor::zeros(after, dv.device(), dv.dtype()))},
                  -1);
  };
  return record(
      "slice_last", {x}, y,
      [widen](const BackwardContext& c) {
        NoGradGuard ng;
        c.add(0, widen(Var(c.dout)).value());
      },
      [widen](const std::vector<Var>& d, const std::vector<bool>&) {
        return std::vector<Var>{widen(d[0])};
      });
}

Var concat(const std::vector<Var>& xs, int axis) {
  bool any16 = false, all16 = true;
  for (const Var& v : xs) any16 = any16 || is_bf16(v), all16 = all16 && is_bf16(v);
  if (any16) {
    std::vector<Var> w;
    for (const Var& v : xs) w.push_back(widen(v));
    const Var r = concat(w, axis);
    return all16 ? narrow(r) : r;
  }
  GAN_NVTX("concat");
  GAN_CHECK(!xs.empty(), "concat: no inputs");
  const Shape& s0 = xs[0].shape();
  const int ax = axis < 0 ? axis + s0.ndim : axis;
  GAN_CHECK(ax >= 0 && ax < s0.ndim,
            fmt::format("concat: axis {} out of range for {}", axis, s0.str()));
  Shape out_shape = s0;
  out_shape.dims[ax] = 0;
  std::vector<int64_t> widths;
  std::vector<Shape> shapes;
  const int64_t inner = s0.prod(ax + 1, s0.ndim);
  for (size_t j = 0; j < xs.size(); ++j) {
    const Shape& s = xs[j].shape();
    bool ok = s.ndim == s0.ndim;
    for (int d = 0; ok && d < s.ndim; ++d) ok = d == ax || s.dims[d] == s0.dims[d];
    GAN_CHECK(ok, fmt::format("concat: input {} has shape {}, incompatible with {} along axis {}",
                              j, s.str(), s0.str(), ax));
    check_same_device("concat", {&xs[0].value(), &xs[j].value()});
    check_same_dtype("concat", {&xs[0].value(), &xs[j].value()});
    out_shape.dims[ax] += s.dims[ax];
    widths.push_back(s.dims[ax] * inner);
    shapes.push_back(s);
  }
  const int64_t rows = s0.prod(0, ax);
  const Tensor& x0 = xs[0].value();
  Tensor y = Tensor::empty(out_shape, x0.device(), x0.dtype());
  const int count = int(xs.size());
  if (x0.is_cuda()) {
    check_cuda_f32("concat", x0);
    std::vector<const float*> ptrs;
    for (const Var& v : xs) ptrs.push_back(v.value().data<float>());
    kernels::concat_cuda(count, ptrs.data(), widths.data(), rows, y.data<float>(), cuda::stream());
  } else {
    dispatch_cpu(x0, "concat", [&](auto t) {
      using T = decltype(t);
      std::vector<const T*> ptrs;
      for (const Var& v : xs) ptrs.push_back(v.value().data<T>());
      kernels::cpu::concat<T>(count, ptrs.data(), widths.data(), rows, y.data<T>());
    });
  }
  // VJP (last axis only): each input's columns of dout.
  VjpFn vjp = [ax, shapes](const std::vector<Var>& d, const std::vector<bool>& needs) {
    GAN_CHECK(ax == shapes[0].ndim - 1,
              "grad: concat has a VJP along the last axis only (create_graph)");
    std::vector<Var> r(shapes.size());
    int64_t off = 0;
    for (size_t j = 0; j < shapes.size(); ++j) {
      const int64_t w = shapes[j].back();
      if (needs[j]) r[j] = slice_last(d[0], off, w);
      off += w;
    }
    return r;
  };
  return record(
      "concat", xs, y,
      [count, widths, rows, shapes](const BackwardContext& c) {
        const Tensor& dy = c.dout;
        std::vector<Tensor> dxs(static_cast<size_t>(count));
        for (int j = 0; j < count; ++j)
          if (c.needs(j))
            dxs[size_t(j)] = Tensor::empty(shapes[size_t(j)], dy.device(), dy.dtype());
        if (dy.is_cuda()) {
          std::vector<float*> ptrs;
          for (const Tensor& t : dxs) ptrs.push_back(t.defined() ? t.data<float>() : nullptr);
          kernels::split_cuda(count, dy.data<float>(), widths.data(), rows, ptrs.data(),
                              cuda::stream());
        } else {
          dispatch_cpu(dy, "concat", [&](auto t) {
            using T = decltype(t);
            std::vector<T*> ptrs;
            for (const Tensor& d : dxs) ptrs.push_back(d.defined() ? d.data<T>() : nullptr);
            kernels::cpu::split<T>(count, dy.data<T>(), widths.data(), rows, ptrs.data());
          });
        }
        for (int j = 0; j < count; ++j)
          if (dxs[size_t(j)].defined()) c.add(j, dxs[size_t(j)]);
      },
      std::move(vjp));
}

}  // namespace gan
