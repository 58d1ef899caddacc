// Elementwise ops: unary activations, scale, broadcasting add/sub/mul/div.
#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/broadcast.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/tensor_ops.h"
#include "kernels/cpu/ops.h"
#include "kernels/elementwise.h"

namespace gan {

namespace {

using kernels::Binary;
using kernels::Unary;

// bf16 tensors on the CPU: the float32 reference on the widened values (widened(), engine/
// autocast.h), the result rounded (the CUDA kernels' rounding points).

Tensor unary_forward(Unary op, double alpha, const Tensor& x) {
  if (x.dtype() == DType::BF16 && !x.is_cuda())
    return unary_forward(op, alpha, widened(x)).to(DType::BF16);
  Tensor y = Tensor::empty_like(x);
  if (x.dtype() == DType::BF16) {
    kernels::unary_forward_cuda(op, float(alpha), x.data<uint16_t>(), y.data<uint16_t>(), x.numel(),
                                cuda::stream());
    return y;
  }
  if (x.is_cuda()) {
    check_cuda_f32(kernels::unary_name(op), x);
    kernels::unary_forward_cuda(op, float(alpha), x.data<float>(), y.data<float>(), x.numel(),
                                cuda::stream());
  } else {
    dispatch_cpu(x, kernels::unary_name(op), [&](auto t) {
      using T = decltype(t);
      kernels::cpu::unary_forward<T>(op, alpha, x.data<T>(), y.data<T>(), x.numel());
    });
  }
  return y;
}

// x or y may be undefined when op does not read it.
Tensor unary_backward(Unary op, double alpha, const Tensor& x, const Tensor& y, const Tensor& dy) {
  if (dy.dtype() == DType::BF16 && !dy.is_cuda())
    return unary_backward(op, alpha, widened(x), widened(y), widened(dy)).to(DType::BF16);
  Tensor dx = Tensor::empty_like(dy);
  if (dy.dtype() == DType::BF16) {
    kernels::unary_backward_cuda(op, float(alpha), x.defined() ? x.data<uint16_t>() : nullptr,
                                 y.defined() ? y.data<uint16_t>() : nullptr, dy.data<uint16_t>(),
                                 dx.data<uint16_t>(), dy.numel(), cuda::stream());
    return dx;
  }
  if (dy.is_cuda()) {
    kernels::unary_backward_cuda(op, float(alpha), x.defined() ? x.data<float>() : nullptr,
                                 y.defined() ? y.data<float>() : nullptr, dy.data<float>(),
                                 dx.data<float>(), dy.numel(), cuda::stream());
  } else {
    dispatch_cpu(dy, kernels::unary_name(op), [&](auto t) {
      using T = decltype(t);
      kernels::cpu::unary_backward<T>(op, alpha, x.defined() ? x.data<T>() : nullptr,
                                      y.defined() ? y.data<T>() : nullptr, dy.data<T>(),
                                      dx.data<T>(), dy.numel());
    });
  }
  return dx;
}

Var unary(Unary op, double alpha, const Var& x) {
  GAN_NVTX(kernels::unary_name(op));
  const Tensor& xv = x.value();
  Tensor y = unary_forward(op, alpha, xv);
  // Save only what the backward reads.
  Tensor saved_x = op == Unary::kLeakyRelu ? xv : Tensor();
  Tensor saved_y =
      (op == Unary::kRelu || op == Unary::kTanh || op == Unary::kSigmoid || op == Unary::kSqrt)
          ? y
          : Tensor();
  Var out = record(kernels::unary_name(op), {x}, y,
                   [op, alpha, saved_x, saved_y](const BackwardContext& c) {
                     c.add(0, unary_backward(op, alpha, saved_x, saved_y, c.dout));
                   });
  if (!out.requires_grad()) return out;
  // VJPs. Piecewise-linear ops: dx = dout * f'(x) with f'(x) a constant (its own derivative is
  // zero almost everywhere); the others differentiate through their output y.
  if (op == Unary::kScale) {
    set_vjp(out, [alpha](const std::vector<Var>& d, const std::vector<bool>&) {
      return std::vector<Var>{scale(d[0], alpha)};
    });
  } else if (op == Unary::kRelu || op == Unary::kLeakyRelu) {
    // A float32 mask for bf16 activations too: the slope exact, as in the first backward.
    const Tensor slope =
        unary_backward(op, alpha, widened(saved_x), widened(saved_y),
                       Tensor::full(y.shape(), 1.0, y.device(),
                                    y.dtype() == DType::BF16 ? DType::F32 : y.dtype()));
    set_vjp(out, [slope](const std::vector<Var>& d, const std::vector<bool>&) {
      return std::vector<Var>{mul(d[0], Var(slope))};
    });
  } else {
    // y as a Var (this entry's own output; the closure holds its node, not the entry).
    set_vjp(out, [op, y = out](const std::vector<Var>& d, const std::vector<bool>&) {
      const Var one(Tensor::full(Shape{}, 1.0, y.device(), y.value().dtype()));
      if (op == Unary::kTanh) return std::vector<Var>{mul(d[0], sub(one, mul(y, y)))};
      if (op == Unary::kSigmoid) return std::vector<Var>{mul(d[0], mul(y, sub(one, y)))};
      return std::vector<Var>{div(d[0], scale(y, 2.0))};  // sqrt
    });
  }
  return out;
}

Var binary(Binary op, const Var& a, const Var& b) {
  if (is_bf16(a) != is_bf16(b))  // bf16 with float32 gives float32
    return binary(op, widen(a), widen(b));
  const char* name = kernels::binary_name(op);
  GAN_NVTX(name);
  const Tensor &av = a.value(), &bv = b.value();
  check_same_device(name, {&av, &bv});
  check_same_dtype(name, {&av, &bv});
  const Shape out_shape = broadcast_shapes(av.shape(), bv.shape(), name);
  const kernels::BroadcastIndex bi = make_broadcast_index(out_shape, av.shape(), bv.shape());
  Tensor y = Tensor::empty(out_shape, av.device(), av.dtype());
  if (av.dtype() == DType::BF16 && av.is_cuda()) {
    kernels::binary_forward_cuda(op, bi, av.data<uint16_t>(), bv.data<uint16_t>(),
                                 y.data<uint16_t>(), cuda::stream());
  } else if (av.dtype() == DType::BF16) {
    const Tensor a32 = widened(av), b32 = widened(bv), y32 = Tensor::empty(out_shape);
    kernels::cpu::binary_forward<float>(op, bi, a32.data<float>(), b32.data<float>(),
                                        y32.data<float>());
    kernels::cpu::f32_to_bf16(y32.data<float>(), y.data<uint16_t>(), y.numel());
  } else if (av.is_cuda()) {
    check_cuda_f32(name, av);
    kernels::binary_forward_cuda(op, bi, av.data<float>(), bv.data<float>(), y.data<float>(),
                                 cuda::stream());
  } else {
    dispatch_cpu(av, name, [&](auto t) {
      using T = decltype(t);
      kernels::cpu::binary_forward<T>(op, bi, av.data<T>(), bv.data<T>(), y.data<T>());
    });
  }
  // add/sub need no saved inputs; mul/div keep both operands.
  const bool keep = op == Binary::kMul || op == Binary::kDiv;
  Tensor sa = keep ? av : Tensor(), sb = keep ? bv : Tensor();
  const Shape a_shape = av.shape(), b_shape = bv.shape();
  // VJP: the same formulas on Vars (mul and div read their operands as Vars, so the gradient is
  // differentiable in them too).
  VjpFn vjp = [op, a, b](const std::vector<Var>& d, const std::vector<bool>& needs) {
    const Var& g = d[0];
    std::vector<Var> r(2);
    switch (op) {
      case Binary::kAdd:
        if (needs[0]) r[0] = sum_to(g, a.shape());
        if (needs[1]) r[1] = sum_to(g, b.shape());
        break;
      case Binary::kSub:
        if (needs[0]) r[0] = sum_to(g, a.shape());
        if (needs[1]) r[1] = sum_to(scale(g, -1.0), b.shape());
        break;
      case Binary::kMul:
        if (needs[0]) r[0] = sum_to(mul(g, b), a.shape());
        if (needs[1]) r[1] = sum_to(mul(g, a), b.shape());
        break;
      case Binary::kDiv:
        if (needs[0]) r[0] = sum_to(div(g, b), a.shape());
        if (needs[1]) r[1] = sum_to(scale(div(mul(g, a), mul(b, b)), -1.0), b.shape());
        break;
    }
    return r;
  };
  // add/sub keep no operands for their tensor backward, but their VJP holds a and b (cheap
  // handles; the values are alive in the caller anyway while a tape refers to them).
  return record(
      name, {a, b}, y,
      [op, bi, sa, sb, a_shape, b_shape](const BackwardContext& c) {
        const Tensor& dy = c.dout;
        if (op == Binary::kAdd || op == Binary::kSub) {
          if (c.needs(0)) c.add(0, sum_to_shape(dy, a_shape));
          if (c.needs(1)) {
            const Tensor g = sum_to_shape(dy, b_shape);
            c.add(1, op == Binary::kAdd ? g : scaled(g, -1.0));
          }
          return;
        }
        // bf16 with a broadcast operand: the full-size partials in float32, summed before
        // the gradient is rounded (the widened operands through the float32 kernels).
        if (dy.dtype() == DType::BF16 && (a_shape != dy.shape() || b_shape != dy.shape())) {
          const Tensor a32 = widened(sa), b32 = widened(sb), dy32 = widened(dy);
          Tensor ga = c.needs(0) ? Tensor::empty_like(dy32) : Tensor();
          Tensor gb = c.needs(1) ? Tensor::empty_like(dy32) : Tensor();
          if (dy32.is_cuda())
            kernels::binary_backward_cuda(
                op, bi, a32.data<float>(), b32.data<float>(), dy32.data<float>(),
                ga.defined() ? ga.data<float>() : nullptr,
                gb.defined() ? gb.data<float>() : nullptr, cuda::stream());
          else
            kernels::cpu::binary_backward<float>(op, bi, a32.data<float>(), b32.data<float>(),
                                                 dy32.data<float>(),
                                                 ga.defined() ? ga.data<float>() : nullptr,
                                                 gb.defined() ? gb.data<float>() : nullptr);
          if (ga.defined()) c.add(0, sum_to_shape(ga, a_shape));
          if (gb.defined()) c.add(1, sum_to_shape(gb, b_shape));
          return;
        }
        Tensor ga = c.needs(0) ? Tensor::empty_like(dy) : Tensor();
        Tensor gb = c.needs(1) ? Tensor::empty_like(dy) : Tensor();
        if (dy.dtype() == DType::BF16 && dy.is_cuda()) {
          kernels::binary_backward_cuda(
              op, bi, sa.data<uint16_t>(), sb.data<uint16_t>(), dy.data<uint16_t>(),
              ga.defined() ? ga.data<uint16_t>() : nullptr,
              gb.defined() ? gb.data<uint16_t>() : nullptr, cuda::stream());
        } else if (dy.dtype() == DType::BF16) {
          const Tensor a32 = widened(sa), b32 = widened(sb), dy32 = widened(dy);
          const Tensor ga32 = widened(ga), gb32 = widened(gb);
          kernels::cpu::binary_backward<float>(op, bi, a32.data<float>(), b32.data<float>(),
                                               dy32.data<float>(),
                                               ga.defined() ? ga32.data<float>() : nullptr,
                                               gb.defined() ? gb32.data<float>() : nullptr);
          if (ga.defined())
            kernels::cpu::f32_to_bf16(ga32.data<float>(), ga.data<uint16_t>(), ga.numel());
          if (gb.defined())
            kernels::cpu::f32_to_bf16(gb32.data<float>(), gb.data<uint16_t>(), gb.numel());
        } else if (dy.is_cuda()) {
          kernels::binary_backward_cuda(op, bi, sa.data<float>(), sb.data<float>(),
                                        dy.data<float>(), ga.defined() ? ga.data<float>() : nullptr,
                                        gb.defined() ? gb.data<float>() : nullptr, cuda::stream());
        } else {
          dispatch_cpu(dy, kernels::binary_name(op), [&](auto t) {
            using T = decltype(t);
            kernels::cpu::binary_backward<T>(op, bi, sa.data<T>(), sb.data<T>(), dy.data<T>(),
                                             ga.defined() ? ga.data<T>() : nullptr,
                                             gb.defined() ? gb.data<T>() : nullptr);
          });
        }
        if (ga.defined()) c.add(0, sum_to_shape(ga, a_shape));
        if (gb.defined()) c.add(1, sum_to_shape(gb, b_shape));
      },
      std::move(vjp));
}

}  // namespace

Var add(const Var& a, const Var& b) { return binary(Binary::kAdd, a, b); }
Var sub(const Var& a, const Var& b) { return binary(Binary::kSub, a, b); }
Var mul(const Var& a, const Var& b) { return binary(Binary::kMul, a, b); }
Var div(const Var& a, const Var& b) { return binary(Binary::kDiv, a, b); }

Var scale(const Var& x, double s) { return unary(Unary::kScale, s, x); }
Var relu(const Var& x) { return unary(Unary::kRelu, 0.0, x); }
Var leaky_relu(const Var& x, double negative_slope) {
  return unary(Unary::kLeakyRelu, negative_slope, x);
}
Var tanh(const Var& x) { return unary(Unary::kTanh, 0.0, x); }
Var sigmoid(const Var& x) { return unary(Unary::kSigmoid, 0.0, x); }
Var sqrt(const Var& x) { return unary(Unary::kSqrt, 0.0, x); }

}  // namespace gan
