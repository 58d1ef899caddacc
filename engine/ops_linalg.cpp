// matmul and linear on cuBLAS (GPU) or the loop reference (CPU). In bf16 precision
// (engine/device.h) the operands are bf16 tensors and each product is rounded to bf16 (cuBLAS
// GemmEx in bf16 with float32 compute; on the CPU the float32 reference on the widened operands,
// rounded): the outputs and the gradients of bf16 activations stay bf16 (linear's bias added in
// float32 and rounded again), the gradients of float32 tensors (weights) are widened.
#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/broadcast.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "engine/weight_cast.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/projection_head.h"
#include "kernels/reduce.h"

namespace gan {

namespace {

using kernels::Gemm;

// C = alpha op(A) op(B) + beta C on the tensors' device.
// bf16 A and B (then C is a dense float32 tensor and beta 0 or 1, or a bf16 one and beta 0): C =
// the product rounded to bf16 (beta 1: added to C in the widening pass).
void gemm(const Gemm& g, double alpha, const Tensor& A, const Tensor& B, double beta,
          const Tensor& C) {
  if (A.dtype() == DType::BF16 && C.dtype() == DType::BF16) {
    GAN_CHECK(B.dtype() == DType::BF16 && beta == 0.0,
              "gemm (bf16): expected bf16 operands and beta 0 for a bf16 result, got " + A.str() +
                  ", " + B.str());
    if (A.is_cuda()) {
      kernels::gemm_bf16_cuda(g, float(alpha), A.data<uint16_t>(), B.data<uint16_t>(),
                              C.data<uint16_t>(), cuda::cublas());
    } else {
      const Tensor c32 = Tensor::empty(C.shape(), Device::CPU, DType::F32);
      gemm(g, alpha, A, B, 0.0, c32);  // rounded to bf16 values
      kernels::cpu::f32_to_bf16(c32.data<float>(), C.data<uint16_t>(), C.numel());
    }
    return;
  }
  if (A.dtype() == DType::BF16) {
    GAN_CHECK(B.dtype() == DType::BF16 && C.dtype() == DType::F32 && (beta == 0.0 || beta == 1.0),
              "gemm (bf16): expected bf16 operands and a float32 result, got " + A.str() + ", " +
                  B.str() + " -> " + C.str());
    if (A.is_cuda()) {
      Tensor c16 = Tensor::empty(C.shape(), Device::CUDA, DType::BF16);
      kernels::gemm_bf16_cuda(g, float(alpha), A.data<uint16_t>(), B.data<uint16_t>(),
                              c16.data<uint16_t>(), cuda::cublas());
      store_bf16_result(c16, C, beta == 1.0);
    } else {
      // oneDNN's bf16 matmul where the CPU has one, else the float32 GEMM on the widened operands
      // (exact products summed in float32 either way).
      const Tensor res = beta == 1.0 ? Tensor::empty_like(C) : C;
      if (!kernels::cpu::gemm_bf16(g, float(alpha), A.data<uint16_t>(), B.data<uint16_t>(),
                                   res.data<float>())) {
        const Tensor a32 = A.to(DType::F32), b32 = B.to(DType::F32);
        kernels::cpu::gemm<float>(g, alpha, a32.data<float>(), b32.data<float>(), 0.0,
                                  res.data<float>());
      }
      store_bf16_result(res, C, beta == 1.0);
    }
    return;
  }
  if (A.is_cuda()) {
    kernels::gemm_cuda(g, float(alpha), A.data<float>(), B.data<float>(), float(beta),
                       C.data<float>(), cuda::cublas());
  } else {
    dispatch_cpu(A, "gemm", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::gemm<T>(g, alpha, A.data<T>(), B.data<T>(), beta, C.data<T>());
    });
  }
}

// Column sums of dy (rows, cols) into db (cols): accumulate into it, or overwrite.
void column_sums(const Tensor& dy, int64_t rows, int64_t cols, const Tensor& db, bool accumulate) {
  if (dy.is_cuda()) {
    const size_t ws = kernels::reduce_sum_workspace_bytes(1, rows, cols);
    Tensor work;
    if (ws) work = Tensor::empty(Shape{int64_t(ws / sizeof(float))}, Device::CUDA);
    kernels::reduce_sum_cuda(dy.data<float>(), 1, rows, cols, 1.f, accumulate, db.data<float>(),
                             ws ? work.raw() : nullptr, ws, cuda::stream());
  } else {
    dispatch_cpu(dy, "linear", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::reduce_sum<T>(dy.data<T>(), 1, rows, cols, 1.0, accumulate, db.data<T>());
    });
  }
}

// Computes a parameter-or-not gradient with a GEMM: straight into the parameter's buffer
// (beta = 1; bf16 operands: the rounded product added) when there is one, else into a fresh
// tensor of the input's dtype (bf16 operands: float32 or bf16) handed to add().
void gemm_grad(const BackwardContext& c, int input, const Shape& shape, DType dtype, const Gemm& g,
               const Tensor& A, const Tensor& B) {
  const bool bf16 = A.dtype() == DType::BF16;
  if (Tensor* acc = c.accum_buffer(input)) {
    check_shape(c.op, "parameter gradient buffer", *acc, shape);
    gemm(g, 1.0, A, B, 1.0, *acc);
  } else {
    Tensor grad = Tensor::empty(shape, A.device(),
                                bf16 ? (dtype == DType::BF16 ? DType::BF16 : DType::F32) : dtype);
    gemm(g, 1.0, A, B, 0.0, grad);
    c.add(input, grad);
  }
}

}  // namespace

Var matmul(const Var& a, const Var& b) {
  GAN_NVTX("matmul");
  const Tensor &av = a.value(), &bv = b.value();
  check_same_device("matmul", {&av, &bv});
  // bf16: float32 operands rounded, bf16 ones as they are, the result bf16.
  const bool bf16 = av.dtype() == DType::BF16 || bv.dtype() == DType::BF16 ||
                    (rounds_to_bf16(av) && rounds_to_bf16(bv));
  if (!bf16) check_same_dtype("matmul", {&av, &bv});
  const Shape sa = av.shape(), sb = bv.shape();
  const bool batched = sa.ndim == 3 && sb.ndim == 3;
  GAN_CHECK((sa.ndim == 2 && sb.ndim == 2) || batched,
            fmt::format("matmul: expected (m, k) x (k, n) or (B, m, k) x (B, k, n), got {} x {}",
                        sa.str(), sb.str()));
  const int64_t batch = batched ? sa[0] : 1;
  const int64_t m = sa.dim(-2), k = sa.dim(-1), n = sb.dim(-1);
  GAN_CHECK(sb.dim(-2) == k && (!batched || sb[0] == batch),
            fmt::format("matmul: shapes {} and {} do not match", sa.str(), sb.str()));
  const Shape out_shape = batched ? Shape{batch, m, n} : Shape{m, n};
  Tensor y = Tensor::empty(out_shape, av.device(), bf16 ? DType::BF16 : av.dtype());
  if (av.is_cuda() && !bf16) check_cuda_f32("matmul", av);
  Gemm g;
  g.m = m, g.n = n, g.k = k, g.batch = batch;
  g.stride_a = m * k, g.stride_b = k * n, g.stride_c = m * n;
  const Tensor ao = bf16 ? av.to(DType::BF16) : av, bo = bf16 ? bv.to(DType::BF16) : bv;
  gemm(g, 1.0, ao, bo, 0.0, y);
  const DType a_dtype = av.dtype(), b_dtype = bv.dtype();
  // da needs b and db needs a: keep each only if the other side wants a gradient (in bf16 their
  // float32 values, rounded again in the backward: see record_conv in ops_conv.cpp).
  const Tensor keep_a = b.requires_grad() ? av : Tensor();
  const Tensor keep_b = a.requires_grad() ? bv : Tensor();
  // VJP: da = dout b^T, db = a^T dout, on Vars.
  VjpFn vjp = [a, b](const std::vector<Var>& d, const std::vector<bool>& needs) {
    std::vector<Var> r(2);
    if (needs[0]) r[0] = matmul(d[0], transpose(b));
    if (needs[1]) r[1] = matmul(transpose(a), d[0]);
    return r;
  };
  return record(
      "matmul", {a, b}, y,
      [keep_a, keep_b, sa, sb, a_dtype, b_dtype, g, bf16](const BackwardContext& c) {
        const Tensor dy = bf16 ? c.dout.to(DType::BF16) : c.dout;
        const auto op = [bf16](const Tensor& t) { return bf16 ? t.to(DType::BF16) : t; };
        if (c.needs(0)) {  // da (m, k) = dy (m, n) b^T
          Gemm d = g;
          d.trans_b = true, d.m = g.m, d.n = g.k, d.k = g.n;
          d.stride_a = g.m * g.n, d.stride_b = g.k * g.n, d.stride_c = g.m * g.k;
          gemm_grad(c, 0, sa, a_dtype, d, dy, op(keep_b));
        }
        if (c.needs(1)) {  // db (k, n) = a^T (k, m) dy (m, n)
          Gemm d = g;
          d.trans_a = true, d.m = g.k, d.n = g.n, d.k = g.m;
          d.stride_a = g.m * g.k, d.stride_b = g.m * g.n, d.stride_c = g.k * g.n;
          gemm_grad(c, 1, sb, b_dtype, d, op(keep_a), dy);
        }
      },
      std::move(vjp));
}

Var linear(const Var& x, const Var& w, const Var& b) {
  GAN_NVTX("linear");
  const Tensor &xv = x.value(), &wv = w.value();
  const Tensor bv = b.defined() ? b.value() : Tensor();
  check_same_device("linear", {&xv, &wv, &bv});
  if (xv.dtype() == DType::BF16) {  // a bf16 activation with float32 parameters
    check_same_dtype("linear", {&wv, &bv});
    GAN_CHECK(wv.dtype() == DType::F32,
              "linear: a bf16 input takes float32 weights, got " + wv.str());
  } else {
    check_same_dtype("linear", {&xv, &wv, &bv});
  }
  const Shape& sx = xv.shape();
  GAN_CHECK(wv.ndim() == 2 && sx.ndim >= 1 && sx.back() == wv.dim(1),
            fmt::format("linear: input {} does not match weight {} (out, in)", sx.str(),
                        wv.shape().str()));
  const int64_t in = wv.dim(1), out = wv.dim(0), rows = sx.prod(0, sx.ndim - 1);
  if (bv.defined()) check_shape("linear", "bias", bv, Shape{out});
  Shape out_shape = sx;
  out_shape.dims[sx.ndim - 1] = out;
  // bf16: a float32 input rounded, a bf16 one as it is; the output bf16.
  const bool bf16 = xv.dtype() == DType::BF16 || rounds_to_bf16(xv);
  Tensor y = Tensor::empty(out_shape, xv.device(), bf16 ? DType::BF16 : xv.dtype());
  if (xv.is_cuda() && !bf16) check_cuda_f32("linear", xv);
  Gemm g;  // y (rows, out) = x (rows, in) w^T
  g.trans_b = true, g.m = rows, g.n = out, g.k = in;
  const Tensor xo = bf16 ? xv.to(DType::BF16) : xv, wo = bf16 ? bf16_weight(wv) : wv;
  if (bf16 && !xv.is_cuda()) {
    // CPU: the rounded product plus the bias in float32, rounded again.
    const Tensor y32 = Tensor::empty(out_shape, Device::CPU, DType::F32);
    gemm(g, 1.0, xo, wo, 0.0, y32);
    if (bv.defined())
      kernels::cpu::binary_forward<float>(
          kernels::Binary::kAdd,
          make_broadcast_index(Shape{rows, out}, Shape{rows, out}, Shape{out}), y32.data<float>(),
          bv.data<float>(), y32.data<float>());
    kernels::cpu::f32_to_bf16(y32.data<float>(), y.data<uint16_t>(), y.numel());
  } else if (bf16) {
    gemm(g, 1.0, xo, wo, 0.0, y);
    if (bv.defined())  // y = round(y + b) in place
      kernels::bias_act_bf16_cuda(y.data<uint16_t>(), nullptr, bv.data<float>(), rows, out,
                                  kernels::BiasAct::kNone, 0.f, cuda::stream(), y.data<uint16_t>());
  } else {
    gemm(g, 1.0, xo, wo, 0.0, y);
  }
  if (bv.defined() && !bf16) {  // y += b, broadcast over rows (in place)
    const kernels::BroadcastIndex bi =
        make_broadcast_index(Shape{rows, out}, Shape{rows, out}, Shape{out});
    if (xv.is_cuda()) {
      kernels::binary_forward_cuda(kernels::Binary::kAdd, bi, y.data<float>(), bv.data<float>(),
                                   y.data<float>(), cuda::stream());
    } else {
      dispatch_cpu(xv, "linear", [&](auto t) {
        using T = decltype(t);
        kernels::cpu::binary_forward<T>(kernels::Binary::kAdd, bi, y.data<T>(), bv.data<T>(),
                                        y.data<T>());
      });
    }
  }
  const std::vector<Var> inputs = b.defined() ? std::vector<Var>{x, w, b} : std::vector<Var>{x, w};
  const bool has_bias = b.defined();
  // dx needs w and dw needs x: keep each only if the other side wants a gradient.
  const Tensor keep_x = w.requires_grad() ? xv : Tensor();
  const Tensor keep_w = x.requires_grad() ? wv : Tensor();
  const Shape x_shape = sx, w_shape = wv.shape();
  const DType x_dtype = xv.dtype(), w_dtype = wv.dtype();
  // VJP: dx = dout w (a matmul with the weight Var), db = the sum of dout over rows.
  VjpFn vjp = [w, x_shape, rows, out, has_bias](const std::vector<Var>& d,
                                                const std::vector<bool>& needs) {
    GAN_CHECK(!needs[1],
              "grad: linear gives no differentiable gradient for its weight "
              "(create_graph through a weight is not supported)");
    std::vector<Var> r(has_bias ? 3 : 2);
    const Var d2 = reshape(d[0], Shape{rows, out});
    if (needs[0]) r[0] = reshape(matmul(d2, w), x_shape);
    if (has_bias && needs[2]) r[2] = sum(d2, {0});
    return r;
  };
  return record(
      "linear", inputs, y,
      [keep_x, keep_w, x_shape, x_dtype, w_shape, w_dtype, rows, in, out, has_bias,
       bf16](const BackwardContext& c) {
        // The products take dy in bf16; the bias gradient sums it in float32.
        const Tensor dyo = bf16 ? c.dout.to(DType::BF16) : c.dout;

        if (c.needs(0)) {  // dx (rows, in) = dy (rows, out) w (out, in)
          Gemm d;
          d.m = rows, d.n = in, d.k = out;
          gemm_grad(c, 0, x_shape, x_dtype, d, dyo, bf16 ? bf16_weight(keep_w) : keep_w);
        }
        if (c.needs(1)) {  // dw (out, in) = dy^T (out, rows) x (rows, in)
          Gemm d;
          d.trans_a = true, d.m = out, d.n = in, d.k = rows;
          gemm_grad(c, 1, w_shape, w_dtype, d, dyo, bf16 ? keep_x.to(DType::BF16) : keep_x);
        }
        if (has_bias && c.needs(2)) {  // db (out) = sum over rows of dy
          const Tensor dy = widened(c.dout);
          if (Tensor* acc = c.accum_buffer(2)) {
            column_sums(dy, rows, out, *acc, true);
          } else {
            Tensor db = Tensor::empty(Shape{out}, dy.device(), dy.dtype());
            column_sums(dy, rows, out, db, false);
            c.add(2, db);
          }
        }
      },
      std::move(vjp));
}

Var projection_head(const Var& h, const Var& w, const Var& bias, const Var& y, const Var& e) {
  GAN_NVTX("projection_head");
  const char* op = "projection_head";
  // bf16 features or labels are widened: the head runs in float32 (kernels/projection_head.h).
  const auto wide = [](const Var& v) {
    return v.defined() && v.value().dtype() == DType::BF16 ? cast(v, DType::F32) : v;
  };
  if ((h.defined() && h.value().dtype() == DType::BF16) ||
      (y.defined() && y.value().dtype() == DType::BF16))
    return projection_head(wide(h), w, bias, wide(y), e);
  GAN_CHECK(h.defined() && w.defined() && y.defined() && e.defined(),
            "projection_head: h, w, y and e are required (bias may be omitted)");
  const Tensor &hv = h.value(), &wv = w.value(), &yv = y.value(), &ev = e.value();
  const Tensor bv = bias.defined() ? bias.value() : Tensor();
  check_same_device(op, {&hv, &wv, &bv, &yv, &ev});
  check_same_dtype(op, {&hv, &wv, &bv, &yv, &ev});
  GAN_CHECK(
      hv.ndim() == 2 && yv.ndim() == 2 && ev.ndim() == 2 && yv.dim(0) == hv.dim(0) &&
          ev.dim(0) == yv.dim(1) && ev.dim(1) == hv.dim(1),
      fmt::format("projection_head: expected h (B, C), y (B, K), e (K, C), got h {}, y {}, e {}",
                  hv.shape().str(), yv.shape().str(), ev.shape().str()));
  const int64_t B = hv.dim(0), C = hv.dim(1), K = yv.dim(1);
  GAN_CHECK(wv.numel() == C && (wv.ndim() == 1 || (wv.ndim() == 2 && wv.dim(0) == 1)),
            fmt::format("projection_head: weight {} is not (C) or (1, C) with C = {}",
                        wv.shape().str(), C));
  if (bv.defined())
    GAN_CHECK(bv.numel() == 1 && bv.ndim() <= 1,
              fmt::format("projection_head: bias {} is not one element", bv.shape().str()));
  Tensor out = Tensor::empty(Shape{B}, hv.device(), hv.dtype());
  if (hv.is_cuda()) {
    check_cuda_f32(op, hv);
    kernels::projection_head_forward_cuda(
        hv.data<float>(), wv.data<float>(), bv.defined() ? bv.data<float>() : nullptr,
        yv.data<float>(), ev.data<float>(), B, C, K, out.data<float>(), cuda::stream());
  } else {
    dispatch_cpu(hv, op, [&](auto t) {
      using T = decltype(t);
      kernels::cpu::projection_head_forward<T>(hv.data<T>(), wv.data<T>(),
                                               bv.defined() ? bv.data<T>() : nullptr, yv.data<T>(),
                                               ev.data<T>(), B, C, K, out.data<T>());
    });
  }
  const bool has_bias = bias.defined();
  const int ih = 0, iw = 1, ib = has_bias ? 2 : -1, iy = has_bias ? 3 : 2, ie = iy + 1;
  const std::vector<Var> inputs =
      has_bias ? std::vector<Var>{h, w, bias, y, e} : std::vector<Var>{h, w, y, e};
  // VJP in ops (dh = g (w + y e), dw = g^T h, dbias = sum g, dy = g (h e^T), de = (g y)^T h): the
  // products here do not skip y's zeros, which matters only for non-finite values in e.
  const Shape w_shape = wv.shape(), b_shape = has_bias ? bv.shape() : Shape{};
  VjpFn vjp = [h, w, y, e, B, C, w_shape, b_shape, ih, iw, ib, iy, ie](
                  const std::vector<Var>& d, const std::vector<bool>& needs) {
    std::vector<Var> r(size_t(ie + 1));
    const Var g = reshape(d[0], Shape{B, 1});
    if (needs[size_t(ih)]) r[size_t(ih)] = mul(g, add(reshape(w, Shape{1, C}), matmul(y, e)));
    if (needs[size_t(iw)]) r[size_t(iw)] = reshape(matmul(reshape(d[0], Shape{1, B}), h), w_shape);
    if (ib >= 0 && needs[size_t(ib)]) r[size_t(ib)] = reshape(sum(d[0]), b_shape);
    if (needs[size_t(iy)]) r[size_t(iy)] = mul(g, matmul(h, transpose(e)));
    if (needs[size_t(ie)]) r[size_t(ie)] = matmul(transpose(mul(y, g)), h);
    return r;
  };
  return record(
      op, inputs, out,
      [hv, wv, yv, ev, B, C, K, b_shape, ih, iw, ib, iy, ie](const BackwardContext& c) {
        const auto grad_of = [&](int i, const Tensor& like) {
          return i >= 0 && c.needs(i) ? Tensor::empty_like(like) : Tensor();
        };
        const Tensor dh = grad_of(ih, hv), dw = grad_of(iw, wv), dy = grad_of(iy, yv),
                     de = grad_of(ie, ev);
        const Tensor db =
            ib >= 0 && c.needs(ib) ? Tensor::empty(b_shape, hv.device(), hv.dtype()) : Tensor();
        if (hv.is_cuda()) {
          const auto p = [](const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
          // Scratch: each row's selected class (B ints in a float32 tensor of B elements).
          const Tensor sel = Tensor::empty(Shape{B}, hv.device(), DType::F32);
          static_assert(sizeof(int) == sizeof(float));
          kernels::projection_head_backward_cuda(
              hv.data<float>(), wv.data<float>(), yv.data<float>(), ev.data<float>(),
              c.dout.data<float>(), B, C, K, p(dh), p(dw), p(db), p(de), p(dy),
              reinterpret_cast<int*>(sel.data<float>()), cuda::stream());
        } else {
          dispatch_cpu(hv, "projection_head", [&](auto t) {
            using T = decltype(t);
            const auto p = [](const Tensor& x) { return x.defined() ? x.data<T>() : nullptr; };
            kernels::cpu::projection_head_backward<T>(hv.data<T>(), wv.data<T>(), yv.data<T>(),
                                                      ev.data<T>(), c.dout.data<T>(), B, C, K,
                                                      p(dh), p(dw), p(db), p(de), p(dy));
          });
        }
        if (dh.defined()) c.add(ih, dh);
        if (dw.defined()) c.add(iw, dw);
        if (db.defined()) c.add(ib, db);
        if (dy.defined()) c.add(iy, dy);
        if (de.defined()) c.add(ie, de);
      },
      std::move(vjp));
}

}  // namespace gan
