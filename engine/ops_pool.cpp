// max_pool2d, avg_pool2d, adaptive_avg_pool2d, resize_bilinear, upsample_nearest
// (kernels/pool2d.h): PyTorch's rules on NHWC activations, for SAGAN's pooled attention, the ResNet
// generator's up-sampling and the feature networks of tools/eval.
#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/pool2d.h"

namespace gan {

namespace {

kernels::Pool2dGeom geometry(const char* op, const Tensor& x, const Pool2dOptions& o) {
  GAN_CHECK(x.ndim() == 4, fmt::format("{}: expected (N, H, W, C), got {}", op, x.shape().str()));
  kernels::Pool2dGeom g;
  g.n = x.dim(0), g.h = x.dim(1), g.w = x.dim(2), g.c = x.dim(3);
  g.kh = o.kernel_h, g.kw = o.kernel_w;
  g.sh = o.stride_h > 0 ? o.stride_h : o.kernel_h;
  g.sw = o.stride_w > 0 ? o.stride_w : o.kernel_w;
  g.ph = o.pad_h, g.pw = o.pad_w;
  g.count_include_pad = o.count_include_pad;
  GAN_CHECK(
      g.kh >= 1 && g.kw >= 1 && g.ph >= 0 && g.pw >= 0 && 2 * g.ph <= g.kh && 2 * g.pw <= g.kw,
      fmt::format("{}: kernel {}x{} with padding {}x{} (padding at most half the kernel)", op, g.kh,
                  g.kw, g.ph, g.pw));
  GAN_CHECK(g.c > 0 && g.h > 0 && g.w > 0 && g.out_h() >= 1 && g.out_w() >= 1,
            fmt::format("{}: a {}x{} kernel does not fit {} with padding {}x{}", op, g.kh, g.kw,
                        x.shape().str(), g.ph, g.pw));
  return g;
}

}  // namespace

namespace {

// The gradient of max pooling: dy (N, P, Q, C) routed to each window's first maximum in x.
Tensor max_pool_route(const Tensor& xt, const kernels::Pool2dGeom& g, const Tensor& dy) {
  Tensor dx = Tensor::empty_like(xt);
  if (xt.is_cuda()) {
    kernels::max_pool2d_backward_cuda(g, xt.data<float>(), dy.data<float>(), dx.data<float>(),
                                      cuda::stream());
  } else {
    dispatch_cpu(xt, "max_pool2d", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::max_pool2d_backward<T>(g, xt.data<T>(), dy.data<T>(), dx.data<T>());
    });
  }
  return dx;
}

// Max pooling's VJP where the windows tile the input: dx = mask * upsample(dout), the mask (1 at
// each window's maximum) a constant fixed by x, the nearest-neighbour upsampling a broadcast
// product with ones (five dimensions at most). Other geometries have none (grad() then names
// the op).
VjpFn max_pool_vjp(const Tensor& xt, const kernels::Pool2dGeom& g) {
  if (g.sh != g.kh || g.sw != g.kw || g.ph != 0 || g.pw != 0 || g.h % g.kh != 0 || g.w % g.kw != 0)
    return nullptr;
  return [xt, g](const std::vector<Var>& d, const std::vector<bool>&) {
    const Tensor& dy = d[0].value();
    const int64_t p = g.out_h(), q = g.out_w();
    const Var mask(max_pool_route(xt, g, Tensor::full(dy.shape(), 1.0, dy.device(), dy.dtype())));
    const Var ones(Tensor::full(Shape{g.n * p, g.kh, q, g.kw, g.c}, 1.0, dy.device(), dy.dtype()));
    const Var up = mul(reshape(d[0], Shape{g.n * p, 1, q, 1, g.c}), ones);
    return std::vector<Var>{mul(mask, reshape(up, Shape{g.n, g.h, g.w, g.c}))};
  };
}

// max_pool2d and avg_pool2d: the same frame, kMax picks the kernels.
template <bool kMax>
Var pool2d(const char* op, const Var& x, const Pool2dOptions& o) {
  if (is_bf16(x)) return narrow(pool2d<kMax>(op, widen(x), o));
  const Tensor& xt = x.value();
  const kernels::Pool2dGeom g = geometry(op, xt, o);
  Tensor y = Tensor::empty(Shape{g.n, g.out_h(), g.out_w(), g.c}, xt.device(), xt.dtype());
  if (xt.is_cuda()) {
    check_cuda_f32(op, xt);
    (kMax ? kernels::max_pool2d_forward_cuda : kernels::avg_pool2d_forward_cuda)(
        g, xt.data<float>(), y.data<float>(), cuda::stream());
  } else {
    dispatch_cpu(xt, op, [&](auto t) {
      using T = decltype(t);
      if constexpr (kMax)
        kernels::cpu::max_pool2d_forward<T>(g, xt.data<T>(), y.data<T>());
      else
        kernels::cpu::avg_pool2d_forward<T>(g, xt.data<T>(), y.data<T>());
    });
  }
  BackwardFn backward = [xt, g, op](const BackwardContext& c) {
    if constexpr (kMax) {
      c.add(0, max_pool_route(xt, g, c.dout));
      return;
    }
    Tensor dx = Tensor::empty_like(xt);
    if (xt.is_cuda()) {
      kernels::avg_pool2d_backward_cuda(g, c.dout.data<float>(), dx.data<float>(), cuda::stream());
    } else {
      dispatch_cpu(xt, op, [&](auto t) {
        using T = decltype(t);
        kernels::cpu::avg_pool2d_backward<T>(g, c.dout.data<T>(), dx.data<T>());
      });
    }
    c.add(0, dx);
  };
  return record(op, {x}, y, backward, kMax ? max_pool_vjp(xt, g) : VjpFn());
}

}  // namespace

Var max_pool2d(const Var& x, const Pool2dOptions& o) {
  GAN_NVTX("max_pool2d");
  return pool2d<true>("max_pool2d", x, o);
}

Var avg_pool2d(const Var& x, const Pool2dOptions& o) {
  GAN_NVTX("avg_pool2d");
  return pool2d<false>("avg_pool2d", x, o);
}

namespace {

// The shared frame of adaptive_avg_pool2d and resize_bilinear: x (N, H, W, C) -> (N, P, Q, C),
// a linear map with a forward and a backward launcher pair.
template <class FwdCuda, class BwdCuda, class FwdCpu, class BwdCpu>
Var resample(const char* op, const Var& x, int64_t P, int64_t Q, FwdCuda fwd_cuda, BwdCuda bwd_cuda,
             FwdCpu fwd_cpu, BwdCpu bwd_cpu) {
  if (is_bf16(x)) return narrow(resample(op, widen(x), P, Q, fwd_cuda, bwd_cuda, fwd_cpu, bwd_cpu));
  const Tensor& xt = x.value();
  GAN_CHECK(xt.ndim() == 4 && xt.dim(1) > 0 && xt.dim(2) > 0 && P > 0 && Q > 0,
            fmt::format("{}: expected (N, H, W, C) and an output size >= 1, got {} -> {}x{}", op,
                        xt.shape().str(), P, Q));
  const int64_t n = xt.dim(0), h = xt.dim(1), w = xt.dim(2), ch = xt.dim(3);
  Tensor y = Tensor::empty(Shape{n, P, Q, ch}, xt.device(), xt.dtype());
  if (xt.is_cuda()) {
    check_cuda_f32(op, xt);
    fwd_cuda(xt.data<float>(), n, h, w, ch, P, Q, y.data<float>(), cuda::stream());
  } else {
    dispatch_cpu(xt, op, [&](auto t) {
      using T = decltype(t);
      fwd_cpu(xt.data<T>(), n, h, w, ch, P, Q, y.data<T>());
    });
  }
  return record(
      op, {x}, y, [xt, n, h, w, ch, P, Q, op, bwd_cuda, bwd_cpu](const BackwardContext& c) {
        Tensor dx = Tensor::empty_like(xt);
        if (xt.is_cuda()) {
          bwd_cuda(c.dout.data<float>(), n, h, w, ch, P, Q, dx.data<float>(), cuda::stream());
        } else {
          dispatch_cpu(xt, op, [&](auto t) {
            using T = decltype(t);
            bwd_cpu(c.dout.data<T>(), n, h, w, ch, P, Q, dx.data<T>());
          });
        }
        c.add(0, dx);
      });
}

}  // namespace

namespace {

// Nearest upsampling between (n, h, w, c) and (n, s h, s w, c): forward (small -> large, a copy)
// or adjoint (large -> small, window sums) of `in` into `out`.
void upsample_run(const Tensor& in, const Tensor& out, int64_t n, int64_t h, int64_t w, int64_t c,
                  int s, bool adjoint) {
  const char* op = "upsample_nearest";
  if (in.is_cuda()) {
    if (in.dtype() == DType::BF16) {
      if (adjoint)
        kernels::upsample_nearest_backward_cuda(in.data<uint16_t>(), n, h, w, c, s,
                                                out.data<uint16_t>(), cuda::stream());
      else
        kernels::upsample_nearest_forward_cuda(in.data<uint16_t>(), n, h, w, c, s,
                                               out.data<uint16_t>(), cuda::stream());
      return;
    }
    check_cuda_f32(op, in);
    if (adjoint)
      kernels::upsample_nearest_backward_cuda(in.data<float>(), n, h, w, c, s, out.data<float>(),
                                              cuda::stream());
    else
      kernels::upsample_nearest_forward_cuda(in.data<float>(), n, h, w, c, s, out.data<float>(),
                                             cuda::stream());
    return;
  }
  if (in.dtype() == DType::BF16) {  // widened, rounded back (the copy is exact)
    const Tensor in32 = in.to(DType::F32);
    const Tensor out32 = Tensor::empty(out.shape(), out.device(), DType::F32);
    upsample_run(in32, out32, n, h, w, c, s, adjoint);
    out.copy_from(out32.to(DType::BF16));
    return;
  }
  dispatch_cpu(in, op, [&](auto t) {
    using T = decltype(t);
    if (adjoint)
      kernels::cpu::upsample_nearest_backward<T>(in.data<T>(), n, h, w, c, s, out.data<T>());
    else
      kernels::cpu::upsample_nearest_forward<T>(in.data<T>(), n, h, w, c, s, out.data<T>());
  });
}

// upsample_nearest (adjoint false) or its adjoint, each recorded with the other as its backward
// and its VJP.
Var upsample_op(const Var& x, int s, bool adjoint) {
  const char* op = adjoint ? "upsample_nearest (adjoint)" : "upsample_nearest";
  const Tensor& xt = x.value();
  GAN_CHECK(xt.ndim() == 4 && s >= 1,
            fmt::format("{}: expected (N, H, W, C) and a factor >= 1, got {} and {}", op,
                        xt.shape().str(), s));
  GAN_CHECK(!adjoint || (xt.dim(1) % s == 0 && xt.dim(2) % s == 0),
            fmt::format("{}: {} is not a multiple of {}", op, xt.shape().str(), s));
  const int64_t n = xt.dim(0), c = xt.dim(3);
  const int64_t h = adjoint ? xt.dim(1) / s : xt.dim(1), w = adjoint ? xt.dim(2) / s : xt.dim(2);
  const Shape small{n, h, w, c}, large{n, h * s, w * s, c};
  Tensor y = Tensor::empty(adjoint ? small : large, xt.device(), xt.dtype());
  upsample_run(xt, y, n, h, w, c, s, adjoint);
  return record(
      op, {x}, y,
      [xt, n, h, w, c, s, adjoint](const BackwardContext& ctx) {
        Tensor dx = Tensor::empty_like(xt);
        upsample_run(ctx.dout, dx, n, h, w, c, s, !adjoint);
        ctx.add(0, dx);
      },
      [s, adjoint](const std::vector<Var>& d, const std::vector<bool>&) {
        return std::vector<Var>{upsample_op(d[0], s, !adjoint)};
      });
}

}  // namespace

Var upsample_nearest(const Var& x, int s) {
  GAN_NVTX("upsample_nearest");
  return upsample_op(x, s, false);
}

Var adaptive_avg_pool2d(const Var& x, int64_t out_h, int64_t out_w) {
  GAN_NVTX("adaptive_avg_pool2d");
  return resample(
      "adaptive_avg_pool2d", x, out_h, out_w, kernels::adaptive_avg_pool2d_forward_cuda,
      kernels::adaptive_avg_pool2d_backward_cuda,
      [](const auto* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P, int64_t Q,
         auto* out) { kernels::cpu::adaptive_avg_pool2d_forward(in, n, h, w, c, P, Q, out); },
      [](const auto* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P, int64_t Q,
         auto* out) { kernels::cpu::adaptive_avg_pool2d_backward(in, n, h, w, c, P, Q, out); });
}

Var resize_bilinear(const Var& x, int64_t out_h, int64_t out_w, bool half_pixel) {
  GAN_NVTX("resize_bilinear");
  return resample(
      half_pixel ? "resize_bilinear" : "resize_bilinear (TF1, no half-pixel centres)", x, out_h,
      out_w,
      [half_pixel](const float* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P,
                   int64_t Q, float* out, cudaStream_t stream) {
        kernels::resize_bilinear_forward_cuda(in, n, h, w, c, P, Q, out, stream, half_pixel);
      },
      [half_pixel](const float* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P,
                   int64_t Q, float* out, cudaStream_t stream) {
        kernels::resize_bilinear_backward_cuda(in, n, h, w, c, P, Q, out, stream, half_pixel);
      },
      [half_pixel](const auto* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P, int64_t Q,
                   auto* out) {
        kernels::cpu::resize_bilinear_forward(in, n, h, w, c, P, Q, out, half_pixel);
      },
      [half_pixel](const auto* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P, int64_t Q,
                   auto* out) {
        kernels::cpu::resize_bilinear_backward(in, n, h, w, c, P, Q, out, half_pixel);
      });
}

Var resize_bicubic_aa(const Var& x, int64_t out_h, int64_t out_w) {
  GAN_NVTX("resize_bicubic_aa");
  // Both CUDA passes go through an (N, H, Q, C) intermediate, made per call from the pool.
  return resample(
      "resize_bicubic_aa", x, out_h, out_w,
      [](const float* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P, int64_t Q,
         float* out, cudaStream_t stream) {
        const Tensor tmp = Tensor::empty(Shape{n * h * Q * c}, Device::CUDA);
        kernels::resize_bicubic_aa_forward_cuda(in, n, h, w, c, P, Q, tmp.data<float>(), out,
                                                stream);
      },
      [](const float* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P, int64_t Q,
         float* out, cudaStream_t stream) {
        const Tensor tmp = Tensor::empty(Shape{n * h * Q * c}, Device::CUDA);
        kernels::resize_bicubic_aa_backward_cuda(in, n, h, w, c, P, Q, tmp.data<float>(), out,
                                                 stream);
      },
      [](const auto* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P, int64_t Q,
         auto* out) { kernels::cpu::resize_bicubic_aa_forward(in, n, h, w, c, P, Q, out); },
      [](const auto* in, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P, int64_t Q,
         auto* out) { kernels::cpu::resize_bicubic_aa_backward(in, n, h, w, c, P, Q, out); });
}

}  // namespace gan
