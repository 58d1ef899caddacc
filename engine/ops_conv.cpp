// conv2d and conv_transpose2d: cuDNN on the GPU, the loop references of kernels/conv.h on the CPU.
// In bf16 precision (engine/device.h) the operands are bf16 tensors and each product's result is
// rounded to bf16: cuDNN in bf16 on the GPU; on the CPU the float32 reference on the widened
// operands, rounded to bf16 (the same rounding points). Outputs and input gradients of bf16
// activations stay bf16 (the bias and activation applied in float32 and rounded again); filter
// gradients are widened into their float32 buffers.
#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/broadcast.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/weight_cast.h"
#include "kernels/common.h"
#include "kernels/conv.h"
#include "kernels/conv_cudnn.h"
#include "kernels/cpu/ops.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace gan {

namespace {

using kernels::ConvGeom;

// An empty convolution (a zero dimension) has nothing to sum: its output is zero.
bool empty_conv(const ConvGeom& g) {
  return g.n == 0 || g.c == 0 || g.k == 0 || g.h == 0 || g.w == 0 || g.p == 0 || g.q == 0;
}

void bias_act(const Tensor& y, const Tensor& b, const Conv2dOptions& o);
kernels::BiasAct bias_act_of(Activation a);

// bf16 operands (a BF16 tensor pair) give a float32 result holding bf16 values: on CUDA cuDNN
// writes bf16 into a scratch tensor widened into out; on the CPU the float32 reference runs on the
// widened operands and its result is rounded. cuda_run / cpu_run are the direction's call, and
// cpu_native its oneDNN bf16 call (false where the CPU has none: then cpu_run on the widened
// operands; the same rounding points either way, exact products summed in float32). With
// `epi` the bias `bias` and epi's activation follow in float32 (on CUDA fused into the widening
// pass, kernels::bias_act_bf16_cuda); with `accumulate` the rounded result is added to out (a
// parameter's gradient buffer) in the widening pass.
// A bf16 `out` (bf16 activations) gets the rounded result itself, then (with epi) act(out + bias)
// in float32 rounded again, in place.
template <class Cuda, class Cpu, class CpuNative>
void conv_bf16(const Tensor& a, const Tensor& b, const Tensor& out, Cuda&& cuda_run, Cpu&& cpu_run,
               CpuNative&& cpu_native, const Tensor& bias = Tensor(),
               const Conv2dOptions* epi = nullptr, bool accumulate = false) {
  const auto cpu_product = [&](float* res) {
    if (cpu_native(a.data<uint16_t>(), b.data<uint16_t>(), res)) return;
    const Tensor a32 = a.to(DType::F32), b32 = b.to(DType::F32);
    cpu_run(a32.data<float>(), b32.data<float>(), res);
  };
  GAN_CHECK(a.dtype() == DType::BF16 && b.dtype() == DType::BF16 &&
                (out.dtype() == DType::F32 || (out.dtype() == DType::BF16 && !accumulate)),
            "conv (bf16): expected bf16 operands and a float32 or bf16 result, got " + a.str() +
                ", " + b.str() + " -> " + out.str());
  const bool epilogue = epi && (bias.defined() || epi->act != Activation::kNone);
  if (out.dtype() == DType::BF16) {
    if (a.is_cuda()) {
      kernels::CudnnConvContext ctx = cuda::conv_context();
      ctx.bf16 = true;
      cuda_run(ctx, a.raw(), b.raw(), out.raw());
      if (epilogue) {
        const int64_t k = out.dim(-1);
        kernels::bias_act_bf16_cuda(out.data<uint16_t>(), nullptr,
                                    bias.defined() ? bias.data<float>() : nullptr,
                                    k ? out.numel() / k : 0, k, bias_act_of(epi->act),
                                    float(epi->slope), cuda::stream(), out.data<uint16_t>());
      }
    } else {
      const Tensor res = Tensor::empty(out.shape(), Device::CPU, DType::F32);
      cpu_product(res.data<float>());
      store_bf16_result(res, res, false);  // rounded in place
      if (epilogue) bias_act(res, bias, *epi);
      kernels::cpu::f32_to_bf16(res.data<float>(), out.data<uint16_t>(), out.numel());
    }
    return;
  }
  if (a.is_cuda()) {
    Tensor o16 = Tensor::empty(out.shape(), Device::CUDA, DType::BF16);
    kernels::CudnnConvContext ctx = cuda::conv_context();
    ctx.bf16 = true;
    cuda_run(ctx, a.raw(), b.raw(), o16.raw());
    if (epi && !accumulate) {
      const int64_t k = out.dim(-1);
      kernels::bias_act_bf16_cuda(
          o16.data<uint16_t>(), out.data<float>(), bias.defined() ? bias.data<float>() : nullptr,
          k ? out.numel() / k : 0, k, bias_act_of(epi->act), float(epi->slope), cuda::stream());
    } else {
      store_bf16_result(o16, out, accumulate);
    }
  } else {
    const Tensor res = accumulate ? Tensor::empty_like(out) : out;
    cpu_product(res.data<float>());
    store_bf16_result(res, out, accumulate);
    if (epi) bias_act(out, bias, *epi);
  }
}

// bias / epi: the bf16 path's fused epilogue (conv_bf16); float32 callers apply bias_act after.
void conv_fwd(const ConvGeom& g, const Tensor& x, const Tensor& w, const Tensor& y,
              const Tensor& bias = Tensor(), const Conv2dOptions* epi = nullptr) {
  if (empty_conv(g)) {
    y.zero_();
    if (epi) bias_act(y, bias, *epi);
    return;
  }
  if (x.dtype() == DType::BF16) {
    return conv_bf16(
        x, w, y,
        [&](const kernels::CudnnConvContext& ctx, const void* a, const void* b, void* o) {
          kernels::conv_forward_cudnn(ctx, g, a, b, o);
        },
        [&](const float* a, const float* b, float* o) {
          kernels::cpu::conv_forward<float>(g, a, b, o);
        },
        [&](const uint16_t* a, const uint16_t* b, float* o) {
          return kernels::cpu::conv_forward_bf16(g, a, b, o);
        },
        bias, epi);
  }
  if (x.is_cuda()) {
    kernels::conv_forward_cudnn(cuda::conv_context(), g, x.data<float>(), w.data<float>(),
                                y.data<float>());
  } else {
    dispatch_cpu(x, "conv", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::conv_forward<T>(g, x.data<T>(), w.data<T>(), y.data<T>());
    });
  }
}

void conv_bwd_data(const ConvGeom& g, const Tensor& dy, const Tensor& w, const Tensor& dx,
                   const Tensor& bias = Tensor(), const Conv2dOptions* epi = nullptr) {
  if (empty_conv(g)) {
    dx.zero_();
    if (epi) bias_act(dx, bias, *epi);
    return;
  }
  if (dy.dtype() == DType::BF16) {
    return conv_bf16(
        dy, w, dx,
        [&](const kernels::CudnnConvContext& ctx, const void* a, const void* b, void* o) {
          kernels::conv_backward_data_cudnn(ctx, g, a, b, o);
        },
        [&](const float* a, const float* b, float* o) {
          kernels::cpu::conv_backward_data<float>(g, a, b, o);
        },
        [&](const uint16_t* a, const uint16_t* b, float* o) {
          return kernels::cpu::conv_backward_data_bf16(g, a, b, o);
        },
        bias, epi);
  }
  if (dy.is_cuda()) {
    kernels::conv_backward_data_cudnn(cuda::conv_context(), g, dy.data<float>(), w.data<float>(),
                                      dx.data<float>());
  } else {
    dispatch_cpu(dy, "conv", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::conv_backward_data<T>(g, dy.data<T>(), w.data<T>(), dx.data<T>());
    });
  }
}

void conv_bwd_filter(const ConvGeom& g, const Tensor& x, const Tensor& dy, const Tensor& dw,
                     bool accumulate) {
  if (empty_conv(g)) {
    if (!accumulate) dw.zero_();
    return;
  }
  if (x.dtype() == DType::BF16) {
    return conv_bf16(
        x, dy, dw,
        [&](const kernels::CudnnConvContext& ctx, const void* a, const void* b, void* o) {
          kernels::conv_backward_filter_cudnn(ctx, g, a, b, o, false);
        },
        [&](const float* a, const float* b, float* o) {
          kernels::cpu::conv_backward_filter<float>(g, a, b, o, false);
        },
        [&](const uint16_t* a, const uint16_t* b, float* o) {
          return kernels::cpu::conv_backward_filter_bf16(g, a, b, o);
        },
        Tensor(), nullptr, accumulate);
  }
  if (x.is_cuda()) {
    kernels::conv_backward_filter_cudnn(cuda::conv_context(), g, x.data<float>(), dy.data<float>(),
                                        dw.data<float>(), accumulate);
  } else {
    dispatch_cpu(x, "conv", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::conv_backward_filter<T>(g, x.data<T>(), dy.data<T>(), dw.data<T>(), accumulate);
    });
  }
}

kernels::BiasAct bias_act_of(Activation a) {
  return a == Activation::kRelu        ? kernels::BiasAct::kRelu
         : a == Activation::kLeakyRelu ? kernels::BiasAct::kLeakyRelu
         : a == Activation::kTanh      ? kernels::BiasAct::kTanh
                                       : kernels::BiasAct::kNone;
}

// y (rows, K) = act(y + b) in place (b may be undefined): one pass.
void bias_act(const Tensor& y, const Tensor& b, const Conv2dOptions& o) {
  const int64_t k = y.dim(-1);
  if (k == 0 || y.numel() == 0 || (!b.defined() && o.act == Activation::kNone)) return;
  const int64_t rows = y.numel() / k;
  if (y.dtype() == DType::BF16) {  // in float32, rounded again
    if (y.is_cuda())
      return kernels::bias_act_bf16_cuda(
          y.data<uint16_t>(), nullptr, b.defined() ? b.data<float>() : nullptr, rows, k,
          bias_act_of(o.act), float(o.slope), cuda::stream(), y.data<uint16_t>());
    const Tensor y32 = y.to(DType::F32);
    bias_act(y32, b, o);
    return kernels::cpu::f32_to_bf16(y32.data<float>(), y.data<uint16_t>(), y.numel());
  }
  if (y.is_cuda()) {
    kernels::bias_act_cuda(y.data<float>(), b.defined() ? b.data<float>() : nullptr, rows, k,
                           bias_act_of(o.act), float(o.slope), cuda::stream());
  } else {
    dispatch_cpu(y, "conv bias", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::bias_act<T>(y.data<T>(), b.defined() ? b.data<T>() : nullptr, rows, k,
                                bias_act_of(o.act), o.slope);
    });
  }
}

Tensor act_bias_backward_bf16(const Tensor& y, const Tensor& dy, Activation act, double slope,
                              const Tensor& db, bool accumulate);

// The activation's derivative applied to dy, read from the activation's output y (y > 0 exactly
// where its input is, for ReLU and a positive leaky slope; ReLU's backward reads its output):
// what the separate activation's backward gives. bf16 y: the result is bf16 (dy bf16 too).
Tensor act_backward(const Tensor& y, const Tensor& dy, Activation act, double slope) {
  if (y.dtype() == DType::BF16) return act_bias_backward_bf16(y, dy, act, slope, Tensor(), false);
  Tensor out = Tensor::empty_like(dy);
  const kernels::Unary op = act == Activation::kRelu   ? kernels::Unary::kRelu
                            : act == Activation::kTanh ? kernels::Unary::kTanh
                                                       : kernels::Unary::kLeakyRelu;
  if (y.is_cuda()) {
    kernels::unary_backward_cuda(op, float(slope), y.data<float>(), y.data<float>(),
                                 dy.data<float>(), out.data<float>(), y.numel(), cuda::stream());
  } else {
    dispatch_cpu(y, "conv activation", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::unary_backward<T>(op, slope, y.data<T>(), y.data<T>(), dy.data<T>(),
                                      out.data<T>(), y.numel());
    });
  }
  return out;
}

// db (K) = sum of dy (rows, K) over rows, into the parameter buffer or a fresh tensor.
void bias_grad(const BackwardContext& c, int input, const Tensor& dy, int64_t k) {
  const int64_t rows = k ? dy.numel() / k : 0;
  Tensor* acc = c.accum_buffer(input);
  Tensor db = acc ? *acc : Tensor::empty(Shape{k}, dy.device(), dy.dtype());
  if (dy.is_cuda()) {
    const size_t ws = kernels::reduce_sum_workspace_bytes(1, rows, k);
    Tensor work;
    if (ws) work = Tensor::empty(Shape{int64_t(ws / sizeof(float))}, Device::CUDA);
    kernels::reduce_sum_cuda(dy.data<float>(), 1, rows, k, 1.f, acc != nullptr, db.data<float>(),
                             ws ? work.raw() : nullptr, ws, cuda::stream());
  } else {
    dispatch_cpu(dy, "conv bias", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::reduce_sum<T>(dy.data<T>(), 1, rows, k, 1.0, acc != nullptr, db.data<T>());
    });
  }
  if (!acc) c.add(input, db);
}

// bf16 y and dy (bf16 activations): dz (bf16) = dy act'(y) in float32, rounded, and (db defined)
// db (float32, k) = the sum of the unrounded dz over rows, overwritten or accumulated. CUDA: one
// pass reading the bf16 tensors; CPU: the reference on the widened values.
Tensor act_bias_backward_bf16(const Tensor& y, const Tensor& dy, Activation act, double slope,
                              const Tensor& db, bool accumulate) {
  const int64_t k = y.dim(-1), rows = k ? y.numel() / k : 0;
  const double s = act == Activation::kRelu ? 0.0 : slope;
  const bool tanh = act == Activation::kTanh;
  Tensor dz = Tensor::empty(y.shape(), y.device(), DType::BF16);
  float* db_ptr = db.defined() ? db.data<float>() : nullptr;
  if (y.is_cuda()) {
    const size_t ws = db_ptr ? kernels::bias_act_backward_workspace_bytes(rows, k) : 0;
    Tensor work;
    if (ws) work = Tensor::empty(Shape{int64_t(ws / sizeof(float))}, Device::CUDA);
    kernels::bias_act_backward_cuda(nullptr, nullptr, rows, k, tanh, float(s), accumulate, nullptr,
                                    db_ptr, ws ? work.raw() : nullptr, ws, cuda::stream(),
                                    dz.data<uint16_t>(), y.data<uint16_t>(), dy.data<uint16_t>());
  } else {
    const Tensor y32 = y.to(DType::F32), dy32 = dy.to(DType::F32);
    kernels::cpu::bias_act_backward<float>(y32.data<float>(), dy32.data<float>(), rows, k, tanh, s,
                                           accumulate, nullptr, db_ptr, dz.data<uint16_t>());
  }
  return dz;
}

// dz = dy * act'(y) and the bias gradient sum_rows dz (into the parameter buffer or a fresh
// tensor) in one pass over dy (kernels::bias_act_backward); returns dz, rounded into a bf16 tensor
// when bf16 (the products' operand in bf16 precision; the bias gradient from float32 values).
Tensor act_bias_backward(const BackwardContext& c, int input, const Tensor& y, const Tensor& dy,
                         Activation act, double slope, int64_t k, bool bf16) {
  if (y.dtype() == DType::BF16) {
    Tensor* acc = c.accum_buffer(input);
    const Tensor db = acc ? *acc : Tensor::empty(Shape{k}, y.device(), DType::F32);
    Tensor dz = act_bias_backward_bf16(y, dy, act, slope, db, acc != nullptr);
    if (!acc) c.add(input, db);
    return dz;
  }
  const int64_t rows = k ? dy.numel() / k : 0;
  const double s = act == Activation::kRelu ? 0.0 : slope;
  const bool tanh = act == Activation::kTanh;
  Tensor dz = Tensor::empty(dy.shape(), dy.device(), bf16 ? DType::BF16 : dy.dtype());
  uint16_t* dz16 = bf16 ? dz.data<uint16_t>() : nullptr;
  Tensor* acc = c.accum_buffer(input);
  Tensor db = acc ? *acc : Tensor::empty(Shape{k}, dy.device(), dy.dtype());
  if (dy.is_cuda()) {
    const size_t ws = kernels::bias_act_backward_workspace_bytes(rows, k);
    Tensor work;
    if (ws) work = Tensor::empty(Shape{int64_t(ws / sizeof(float))}, Device::CUDA);
    kernels::bias_act_backward_cuda(y.data<float>(), dy.data<float>(), rows, k, tanh, float(s),
                                    acc != nullptr, bf16 ? nullptr : dz.data<float>(),
                                    db.data<float>(), ws ? work.raw() : nullptr, ws, cuda::stream(),
                                    dz16);
  } else {
    dispatch_cpu(dy, "conv bias and activation", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::bias_act_backward<T>(y.data<T>(), dy.data<T>(), rows, k, tanh, s,
                                         acc != nullptr, bf16 ? nullptr : dz.data<T>(),
                                         db.data<T>(), dz16);
    });
  }
  if (!acc) c.add(input, db);
  return dz;
}

// A filter gradient straight into the parameter buffer when there is one (bf16 operands: the
// bf16-rounded gradient added to the float32 buffer in the widening pass).
void filter_grad(const BackwardContext& c, int input, const ConvGeom& g, const Shape& w_shape,
                 const Tensor& x, const Tensor& dy) {
  const bool bf16 = x.dtype() == DType::BF16;
  if (Tensor* acc = c.accum_buffer(input)) {
    check_shape(c.op, "parameter gradient buffer", *acc, w_shape);
    conv_bwd_filter(g, x, dy, *acc, true);
  } else {
    Tensor dw = Tensor::empty(w_shape, x.device(), bf16 ? DType::F32 : x.dtype());
    conv_bwd_filter(g, x, dy, dw, false);
    c.add(input, dw);
  }
}

void check_inputs(const char* op, const Tensor& x, const Tensor& w, const Tensor& b,
                  const Conv2dOptions& o) {
  check_same_device(op, {&x, &w, &b});
  if (x.dtype() == DType::BF16) {  // a bf16 activation with float32 parameters
    check_same_dtype(op, {&w, &b});
    GAN_CHECK(w.dtype() == DType::F32,
              std::string(op) + ": a bf16 input takes float32 weights, got " + w.str());
  } else {
    check_same_dtype(op, {&x, &w, &b});
  }
  GAN_CHECK(x.ndim() == 4 && w.ndim() == 4,
            fmt::format("{}: expected x (N, H, W, C) and w (K, kh, kw, C), got x {} and w {}", op,
                        x.shape().str(), w.shape().str()));
  GAN_CHECK(o.stride_h > 0 && o.stride_w > 0 && o.dil_h > 0 && o.dil_w > 0 && o.pad_h >= 0 &&
                o.pad_w >= 0 && o.out_pad_h >= 0 && o.out_pad_w >= 0,
            fmt::format("{}: stride ({}, {}), dilation ({}, {}), padding ({}, {}) and output "
                        "padding ({}, {}) must be positive / non-negative",
                        op, o.stride_h, o.stride_w, o.dil_h, o.dil_w, o.pad_h, o.pad_w, o.out_pad_h,
                        o.out_pad_w));
  if (x.is_cuda() && x.dtype() != DType::BF16) check_cuda_f32(op, x);
}

// Records conv2d (transposed = false) or conv_transpose2d, whose forward is the convolution's
// backward-data: its dx is the convolution's forward of dy, and its filter gradient the
// convolution's with input and output swapped. Keeps x only if w wants a gradient, and w only
// if x does.
// bf16: the forward used x's and w's bf16 roundings; the backward rounds them again from the
// float32 values it keeps (the values other ops keep too: the producer of x keeps it for its own
// backward, w is the parameter, so keeping bf16 copies would add memory, not save it) and rounds
// dy to bf16 too.
Var record_conv(const char* op, bool transposed, const ConvGeom& g, const Var& x, const Var& w,
                const Var& b, bool bf16, const Tensor& y, const Conv2dOptions& fwd) {
  const Activation act = fwd.act;
  const double slope = fwd.slope;
  // With a fused activation the backward first turns dy into the gradient of its input (from y).
  const Tensor keep_y = act != Activation::kNone ? y : Tensor();
  const Tensor keep_x = w.requires_grad() ? x.value() : Tensor();
  const Tensor keep_w = x.requires_grad() ? w.value() : Tensor();
  const Shape x_shape = x.shape(), w_shape = w.shape();
  const DType x_dtype = x.value().dtype();
  const bool has_bias = b.defined();
  std::vector<Var> inputs = {x, w};
  if (has_bias) inputs.push_back(b);
  // VJP: conv2d's input gradient is conv_transpose2d of dout with the same weight, and the other
  // way round; both are differentiable in dout and in the weight Var. Bias: the sum of dout.
  // tanh's derivative 1 - y^2 depends on the inputs: its VJP recomputes y from them as Vars.
  const bool tanh = act == Activation::kTanh;
  const Var x_t = tanh ? x : Var(), b_t = tanh ? b : Var();
  Conv2dOptions plain = fwd;
  plain.act = Activation::kNone;
  VjpFn vjp = [op, transposed, g, w, x_shape, has_bias, keep_y, act, slope, tanh, x_t, b_t, plain](
                  const std::vector<Var>& d, const std::vector<bool>& needs) {
    GAN_CHECK(!needs[1], fmt::format("grad: {} gives no differentiable gradient for its weight "
                                     "(create_graph through a weight is not supported)",
                                     op));
    std::vector<Var> r(has_bias ? 3 : 2);
    // The activation's derivative: ReLU's and LeakyReLU's a constant mask read from y (as
    // batch_norm's VJP does); tanh's 1 - y^2 with y recomputed (differentiable in x and b).
    Var y_t;
    if (tanh)
      y_t =
          gan::tanh(transposed ? conv_transpose2d(x_t, w, b_t, plain) : conv2d(x_t, w, b_t, plain));
    const Var one =
        tanh ? Var(Tensor::full(Shape{}, 1.0, y_t.device(), y_t.value().dtype())) : Var();
    const Var dpre =
        tanh ? mul(d[0], sub(one, mul(y_t, y_t)))
        : keep_y.defined()
            ? mul(d[0],  // a float32 mask (the slope exact) for bf16 outputs too
                  Var(act_backward(
                      widened(keep_y),
                      Tensor::full(keep_y.shape(), 1.0, keep_y.device(),
                                   keep_y.dtype() == DType::BF16 ? DType::F32 : keep_y.dtype()),
                      act, slope)))
            : d[0];
    Conv2dOptions o;
    o.stride_h = g.stride_h, o.stride_w = g.stride_w, o.pad_h = g.pad_h, o.pad_w = g.pad_w;
    o.dil_h = g.dil_h, o.dil_w = g.dil_w;
    if (needs[0]) {
      if (transposed) {
        r[0] = conv2d(dpre, w, Var(), o);
      } else {
        // The output padding that gives back the input's size.
        o.out_pad_h =
            int(x_shape[1] - ((g.p - 1) * g.stride_h - 2 * g.pad_h + g.dil_h * (g.r - 1) + 1));
        o.out_pad_w =
            int(x_shape[2] - ((g.q - 1) * g.stride_w - 2 * g.pad_w + g.dil_w * (g.s - 1) + 1));
        r[0] = conv_transpose2d(dpre, w, Var(), o);
      }
    }
    if (has_bias && needs[2]) r[2] = sum(dpre, {0, 1, 2});
    return r;
  };
  return record(
      op, inputs, y,
      [transposed, g, keep_x, keep_w, x_shape, x_dtype, w_shape, has_bias, keep_y, act, slope,
       bf16](const BackwardContext& c) {
        // With a fused activation and a bias gradient to take, one pass does both.
        const bool bias = has_bias && c.needs(2);
        // The bias gradient is summed from the float32 gradient; the products take it in bf16
        // (the fused backward writes it so).
        const Tensor dy_full = !keep_y.defined() ? c.dout
                               : bias ? act_bias_backward(c, 2, keep_y, c.dout, act, slope,
                                                          transposed ? g.c : g.k, bf16)
                                      : act_backward(keep_y, c.dout, act, slope);
        const Tensor dy =
            bf16 && dy_full.dtype() != DType::BF16 ? dy_full.to(DType::BF16) : dy_full;
        if (c.needs(0)) {
          const Tensor wo = bf16 ? bf16_weight(keep_w) : keep_w;
          // A bf16 input's gradient stays bf16; a float32 one (the image) gets the widened one.
          Tensor dx = Tensor::empty(x_shape, c.dout.device(), x_dtype);
          if (transposed)
            conv_fwd(g, dy, wo, dx);
          else
            conv_bwd_data(g, dy, wo, dx);
          c.add(0, dx);
        }
        if (c.needs(1)) {
          const Tensor xo = bf16 ? keep_x.to(DType::BF16) : keep_x;
          if (transposed)
            filter_grad(c, 1, g, w_shape, dy, xo);
          else
            filter_grad(c, 1, g, w_shape, xo, dy);
        }
        if (bias && !keep_y.defined()) bias_grad(c, 2, widened(dy_full), transposed ? g.c : g.k);
      },
      std::move(vjp));
}

ConvGeom base_geom(const Conv2dOptions& o) {
  ConvGeom g;
  g.stride_h = o.stride_h, g.stride_w = o.stride_w;
  g.pad_h = o.pad_h, g.pad_w = o.pad_w;
  g.dil_h = o.dil_h, g.dil_w = o.dil_w;
  return g;
}

}  // namespace

Var conv2d(const Var& x, const Var& w, const Var& b, const Conv2dOptions& o) {
  GAN_NVTX("conv2d");
  const Tensor &xv = x.value(), &wv = w.value();
  const Tensor bv = b.defined() ? b.value() : Tensor();
  check_inputs("conv2d", xv, wv, bv, o);
  GAN_CHECK(o.out_pad_h == 0 && o.out_pad_w == 0,
            "conv2d: output padding applies to conv_transpose2d only");
  ConvGeom g = base_geom(o);
  g.n = xv.dim(0), g.h = xv.dim(1), g.w = xv.dim(2), g.c = xv.dim(3);
  g.k = wv.dim(0), g.r = wv.dim(1), g.s = wv.dim(2);
  GAN_CHECK(wv.dim(3) == g.c, fmt::format("conv2d: input {} has {} channels, weight {} expects {}",
                                          xv.shape().str(), g.c, wv.shape().str(), wv.dim(3)));
  if (bv.defined()) check_shape("conv2d", "bias", bv, Shape{g.k});
  g.p = (g.h + 2 * o.pad_h - o.dil_h * (g.r - 1) - 1) / o.stride_h + 1;
  g.q = (g.w + 2 * o.pad_w - o.dil_w * (g.s - 1) - 1) / o.stride_w + 1;
  GAN_CHECK(
      g.h + 2 * o.pad_h >= o.dil_h * (g.r - 1) + 1 && g.w + 2 * o.pad_w >= o.dil_w * (g.s - 1) + 1,
      fmt::format("conv2d: input {} padded by ({}, {}) is smaller than the kernel {}",
                  xv.shape().str(), o.pad_h, o.pad_w, wv.shape().str()));
  // bf16: a float32 input rounded, a bf16 one as it is; the output bf16.
  const bool bf16 = xv.dtype() == DType::BF16 || rounds_to_bf16(xv);
  Tensor y = Tensor::empty(Shape{g.n, g.p, g.q, g.k}, xv.device(), bf16 ? DType::BF16 : xv.dtype());
  const Tensor xo = bf16 ? xv.to(DType::BF16) : xv, wo = bf16 ? bf16_weight(wv) : wv;
  if (bf16) {
    conv_fwd(g, xo, wo, y, bv, &o);  // the epilogue fused into the widening pass
  } else {
    conv_fwd(g, xo, wo, y);
    bias_act(y, bv, o);
  }
  return record_conv("conv2d", false, g, x, w, b, bf16, y, o);
}

Var conv_transpose2d(const Var& x, const Var& w, const Var& b, const Conv2dOptions& o) {
  GAN_NVTX("conv_transpose2d");
  const Tensor &xv = x.value(), &wv = w.value();
  const Tensor bv = b.defined() ? b.value() : Tensor();
  check_inputs("conv_transpose2d", xv, wv, bv, o);
  GAN_CHECK(
      o.out_pad_h < std::max(o.stride_h, o.dil_h) && o.out_pad_w < std::max(o.stride_w, o.dil_w),
      fmt::format("conv_transpose2d: output padding ({}, {}) must be smaller than the "
                  "stride or the dilation",
                  o.out_pad_h, o.out_pad_w));
  // cuDNN derives the convolution's output size from its input size, which loses an output
  // padding of a stride or more (possible when the dilation exceeds the stride).
  GAN_CHECK(
      !xv.is_cuda() || (o.out_pad_h < o.stride_h && o.out_pad_w < o.stride_w),
      fmt::format("conv_transpose2d: on cuda the output padding ({}, {}) must be smaller than "
                  "the stride ({}, {})",
                  o.out_pad_h, o.out_pad_w, o.stride_h, o.stride_w));
  // The underlying convolution maps the output (N, Ho, Wo, Cout) to the input (N, H, W, Cin).
  ConvGeom g = base_geom(o);
  g.n = xv.dim(0), g.p = xv.dim(1), g.q = xv.dim(2), g.k = xv.dim(3);
  GAN_CHECK(wv.dim(0) == g.k, fmt::format("conv_transpose2d: input {} has {} channels, weight {} "
                                          "(Cin, kh, kw, Cout) expects {}",
                                          xv.shape().str(), g.k, wv.shape().str(), wv.dim(0)));
  g.r = wv.dim(1), g.s = wv.dim(2), g.c = wv.dim(3);
  if (bv.defined()) check_shape("conv_transpose2d", "bias", bv, Shape{g.c});
  g.h = (g.p - 1) * o.stride_h - 2 * o.pad_h + o.dil_h * (g.r - 1) + o.out_pad_h + 1;
  g.w = (g.q - 1) * o.stride_w - 2 * o.pad_w + o.dil_w * (g.s - 1) + o.out_pad_w + 1;
  GAN_CHECK(g.h > 0 && g.w > 0,
            fmt::format("conv_transpose2d: input {} with weight {} and padding ({}, {}) gives an "
                        "empty output",
                        xv.shape().str(), wv.shape().str(), o.pad_h, o.pad_w));
  const bool bf16 = xv.dtype() == DType::BF16 || rounds_to_bf16(xv);
  Tensor y = Tensor::empty(Shape{g.n, g.h, g.w, g.c}, xv.device(), bf16 ? DType::BF16 : xv.dtype());
  const Tensor xo = bf16 ? xv.to(DType::BF16) : xv, wo = bf16 ? bf16_weight(wv) : wv;
  if (bf16) {
    conv_bwd_data(g, xo, wo, y, bv, &o);
  } else {
    conv_bwd_data(g, xo, wo, y);
    bias_act(y, bv, o);
  }
  return record_conv("conv_transpose2d", true, g, x, w, b, bf16, y, o);
}

}  // namespace gan
