// GAN losses: BCE with logits and the hinge losses.
#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/loss.h"

namespace gan {

namespace {

// t: targets tensor or undefined (constant target).
Var bce(const Var& logits, const Var* targets, double target) {
  if (is_bf16(logits) || (targets && is_bf16(*targets))) {  // losses in float32
    const Var t = targets ? widen(*targets) : Var();
    return bce(widen(logits), targets ? &t : nullptr, target);
  }
  GAN_NVTX("bce_with_logits");
  const Tensor& x = logits.value();
  const Tensor t = targets ? targets->value() : Tensor();
  check_same_device("bce_with_logits", {&x, &t});
  check_same_dtype("bce_with_logits", {&x, &t});
  if (t.defined()) check_shape("bce_with_logits", "targets", t, x.shape());
  const int64_t n = x.numel();
  Tensor loss = Tensor::empty(Shape{}, x.device(), x.dtype());
  if (x.is_cuda()) {
    check_cuda_f32("bce_with_logits", x);
    kernels::bce_logits_forward_cuda(x.data<float>(), t.defined() ? t.data<float>() : nullptr,
                                     float(target), n, loss.data<float>(), cuda::stream());
  } else {
    dispatch_cpu(x, "bce_with_logits", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::bce_logits_forward<T>(x.data<T>(), t.defined() ? t.data<T>() : nullptr, target,
                                          n, loss.data<T>());
    });
  }
  auto backward = [x, t, target, n](const BackwardContext& c) {
    Tensor dx = c.needs(0) ? Tensor::empty_like(x) : Tensor();
    Tensor dt = (t.defined() && c.needs(1)) ? Tensor::empty_like(x) : Tensor();
    if (x.is_cuda()) {
      kernels::bce_logits_backward_cuda(x.data<float>(), t.defined() ? t.data<float>() : nullptr,
                                        float(target), n, c.dout.data<float>(),
                                        dx.defined() ? dx.data<float>() : nullptr,
                                        dt.defined() ? dt.data<float>() : nullptr, cuda::stream());
    } else {
      dispatch_cpu(x, "bce_with_logits", [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::bce_logits_backward<T>(
            x.data<T>(), t.defined() ? t.data<T>() : nullptr, target, n, c.dout.data<T>(),
            dx.defined() ? dx.data<T>() : nullptr, dt.defined() ? dt.data<T>() : nullptr);
      });
    }
    if (dx.defined()) c.add(0, dx);
    if (dt.defined()) c.add(1, dt);
  };
  if (targets) return record("bce_with_logits", {logits, *targets}, loss, backward);
  return record("bce_with_logits", {logits}, loss, backward);
}

}  // namespace

Var bce_with_logits(const Var& logits, const Var& targets) { return bce(logits, &targets, 0.0); }

Var bce_with_logits(const Var& logits, double target) { return bce(logits, nullptr, target); }

Var softmax_cross_entropy(const Var& logits, const Tensor& t) {
  if (is_bf16(logits) || t.dtype() == DType::BF16)
    return softmax_cross_entropy(widen(logits), widened(t));
  GAN_NVTX("softmax_cross_entropy");
  const Tensor& x = logits.value();
  check_same_device("softmax_cross_entropy", {&x, &t});
  check_same_dtype("softmax_cross_entropy", {&x, &t});
  GAN_CHECK(
      x.ndim() >= 1 && x.shape().back() > 0,
      fmt::format("softmax_cross_entropy: logits need a class axis, got {}", x.shape().str()));
  check_shape("softmax_cross_entropy", "targets", t, x.shape());
  const int64_t c = x.shape().back(), rows = x.numel() / c;
  Tensor loss = Tensor::empty(Shape{}, x.device(), x.dtype());
  if (x.is_cuda()) {
    check_cuda_f32("softmax_cross_entropy", x);
    kernels::cross_entropy_forward_cuda(x.data<float>(), t.data<float>(), rows, c,
                                        loss.data<float>(), cuda::stream());
  } else {
    dispatch_cpu(x, "softmax_cross_entropy", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::cross_entropy_forward<T>(x.data<T>(), t.data<T>(), rows, c, loss.data<T>());
    });
  }
  return record("softmax_cross_entropy", {logits}, loss,
                [x, t, rows, c](const BackwardContext& ctx) {
                  Tensor dx = Tensor::empty_like(x);
                  if (x.is_cuda()) {
                    kernels::cross_entropy_backward_cuda(x.data<float>(), t.data<float>(), rows, c,
                                                         ctx.dout.data<float>(), dx.data<float>(),
                                                         cuda::stream());
                  } else {
                    dispatch_cpu(x, "softmax_cross_entropy", [&](auto tag) {
                      using T = decltype(tag);
                      kernels::cpu::cross_entropy_backward<T>(x.data<T>(), t.data<T>(), rows, c,
                                                              ctx.dout.data<T>(), dx.data<T>());
                    });
                  }
                  ctx.add(0, dx);
                });
}

Var hinge_d_loss(const Var& real, const Var& fake) {
  if (is_bf16(real) || is_bf16(fake)) return hinge_d_loss(widen(real), widen(fake));
  GAN_NVTX("hinge_d_loss");
  const Tensor &r = real.value(), &f = fake.value();
  check_same_device("hinge_d_loss", {&r, &f});
  check_same_dtype("hinge_d_loss", {&r, &f});
  const int64_t nr = r.numel(), nf = f.numel();
  Tensor loss = Tensor::empty(Shape{}, r.device(), r.dtype());
  if (r.is_cuda()) {
    check_cuda_f32("hinge_d_loss", r);
    kernels::hinge_d_forward_cuda(r.data<float>(), nr, f.data<float>(), nf, loss.data<float>(),
                                  cuda::stream());
  } else {
    dispatch_cpu(r, "hinge_d_loss", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::hinge_d_forward<T>(r.data<T>(), nr, f.data<T>(), nf, loss.data<T>());
    });
  }
  return record("hinge_d_loss", {real, fake}, loss, [r, f, nr, nf](const BackwardContext& c) {
    Tensor dr = c.needs(0) ? Tensor::empty_like(r) : Tensor();
    Tensor df = c.needs(1) ? Tensor::empty_like(f) : Tensor();
    if (r.is_cuda()) {
      kernels::hinge_d_backward_cuda(r.data<float>(), nr, f.data<float>(), nf, c.dout.data<float>(),
                                     dr.defined() ? dr.data<float>() : nullptr,
                                     df.defined() ? df.data<float>() : nullptr, cuda::stream());
    } else {
      dispatch_cpu(r, "hinge_d_loss", [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::hinge_d_backward<T>(r.data<T>(), nr, f.data<T>(), nf, c.dout.data<T>(),
                                          dr.defined() ? dr.data<T>() : nullptr,
                                          df.defined() ? df.data<T>() : nullptr);
      });
    }
    if (dr.defined()) c.add(0, dr);
    if (df.defined()) c.add(1, df);
  });
}

Var hinge_g_loss(const Var& fake) { return scale(mean(fake), -1.0); }

}  // namespace gan
