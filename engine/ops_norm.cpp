// batch_norm: PyTorch's BatchNorm2d over NHWC (or (N, C)) activations with an optional fused
// activation; with per-sample gamma and beta (N, C), conditional batch norm in the same kernels
// (groups = N). Kernels and formulas: kernels/batchnorm.h.
#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/dispatch.h"
#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/tensor_ops.h"
#include "kernels/batchnorm.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/elementwise.h"

namespace gan {

namespace {

kernels::BnAct to_bn_act(Activation act) {
  switch (act) {
    case Activation::kRelu:
      return kernels::BnAct::kRelu;
    case Activation::kLeakyRelu:
      return kernels::BnAct::kLeakyRelu;
    default:
      return kernels::BnAct::kNone;
  }
}

template <class T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Scratch for the CUDA kernels (from the stream-ordered pool: graph-safe).
Tensor cuda_workspace(int64_t R, int64_t C, int64_t G) {
  const size_t bytes = kernels::batch_norm_workspace_bytes(R, C, G);
  if (bytes == 0) return Tensor();
  return Tensor::empty(Shape{int64_t((bytes + sizeof(float) - 1) / sizeof(float))}, Device::CUDA);
}

// A gamma/beta gradient (shape ps: (C) or (N, C)) of input i: the parameter's buffer to
// accumulate into when there is one (then *accumulate is set), else a fresh tensor for
// BackwardContext::add.
Tensor channel_grad(const BackwardContext& c, int i, const Tensor& like, const Shape& ps,
                    bool* accumulate) {
  *accumulate = false;
  if (!c.needs(i)) return Tensor();
  if (Tensor* acc = c.accum_buffer(i)) {
    check_shape("batch_norm", "parameter gradient buffer", *acc, ps);
    check_same_device("batch_norm", {&like, acc});
    check_same_dtype("batch_norm", {&like, acc});
    *accumulate = true;
    return *acc;
  }
  return Tensor::empty(ps, like.device(), like.dtype());
}

// Sums a gamma-shaped (G, C) tensor weighted by gamma over its groups: (C) (G = 1: gamma t).
Var weighted_by_gamma(const Var& t, const Tensor& gv, int64_t G, int64_t C) {
  if (!gv.defined()) return G == 1 ? reshape(t, Shape{C}) : sum(reshape(t, Shape{G, C}), {0});
  const Var w = mul(reshape(t, Shape{G, C}), Var(gv.reshape(Shape{G, C})));
  return G == 1 ? reshape(w, Shape{C}) : sum(w, {0});
}

// Synchronised statistics (dist::sync_batch_norm()): the mean and biased variance (C) of x (R, C)
// over the rows of every rank (two passes, each one allreduce; every rank has R rows), and the
// running statistics moved with them as PyTorch's SyncBatchNorm does.
struct GlobalStats {
  Tensor mean, var;
  int64_t count = 0;
};
GlobalStats global_stats(dist::Communicator& comm, const Tensor& x2d, const Tensor& running_mean,
                         const Tensor& running_var, double momentum) {
  NoGradGuard ng;
  GlobalStats g;
  g.count = x2d.shape()[0] * comm.size();
  const double inv_n = 1.0 / double(g.count);
  const Var x(x2d);
  g.mean = sum(x, {0}).value();
  comm.allreduce_sum({g.mean});
  g.mean = scaled(g.mean, inv_n);
  const Var xc = sub(x, Var(g.mean));
  g.var = sum(mul(xc, xc), {0}).value();
  comm.allreduce_sum({g.var});
  g.var = scaled(g.var, inv_n);
  lerp_(running_mean, g.mean, momentum);
  lerp_(running_var, scaled(g.var, double(g.count) / double(g.count - 1)), momentum);
  return g;
}

// The eval-mode backward (x's gradient as if the statistics were constants, the local sums of
// g and g xhat per group as gamma's and beta's gradients), then the statistics' share: with the
// gamma-weighted sums over all ranks Sb = sum gamma g, Sg = sum gamma g xhat and N rows in all,
// dx -= invstd (Sb + xhat Sg) / N. Parameter gradients stay local (the trainer averages them over
// ranks like every other; per-sample ones belong to this rank's samples).
void sync_backward(const BackwardContext& c, dist::Communicator& comm, const Tensor& xv,
                   const Tensor& gv, const Tensor& beta_for_act, const Tensor& save_mean,
                   const Tensor& save_invstd, int64_t R, int64_t C, int64_t G, kernels::BnAct bact,
                   double slope) {
  const Tensor& dy = c.dout;
  check_same_device("batch_norm", {&xv, &dy});
  check_same_dtype("batch_norm", {&xv, &dy});
  const Shape ps = G == 1 ? Shape{C} : Shape{G, C};
  const Tensor dx = c.needs(0) ? Tensor::empty_like(xv) : Tensor();
  const Tensor dg = Tensor::empty(ps, xv.device(), xv.dtype());
  const Tensor db = Tensor::empty(ps, xv.device(), xv.dtype());
  if (xv.is_cuda()) {
    const Tensor ws = cuda_workspace(R, C, G);
    kernels::batch_norm_backward_cuda(
        xv.data<float>(), dy.data<float>(), ptr_or_null<float>(gv),
        ptr_or_null<float>(beta_for_act), save_mean.data<float>(), save_invstd.data<float>(), R, C,
        false, bact, float(slope), ptr_or_null<float>(dx), dg.data<float>(), db.data<float>(),
        false, false, ws.raw(), ws.defined() ? ws.nbytes() : 0, cuda::stream(), G);
  } else {
    dispatch_cpu(xv, "batch_norm", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::batch_norm_backward<T>(
          xv.data<T>(), dy.data<T>(), ptr_or_null<T>(gv), ptr_or_null<T>(beta_for_act),
          save_mean.data<T>(), save_invstd.data<T>(), R, C, false, bact, slope, ptr_or_null<T>(dx),
          dg.data<T>(), db.data<T>(), false, false, G);
    });
  }
  NoGradGuard ng;
  if (dx.defined()) {
    // Both weighted sums in one collective: [Sg | Sb].
    const Var both =
        concat({weighted_by_gamma(Var(dg), gv, G, C), weighted_by_gamma(Var(db), gv, G, C)}, -1);
    comm.allreduce_sum({both.value()});
    const Var sg_row = slice_last(both, 0, C), sb_row = slice_last(both, C, C);
    const Var inv(save_invstd), mu(save_mean);
    const Var x(xv.reshape(Shape{R, C}));
    const Var xhat = mul(sub(x, mu), inv);
    const Var k = scale(inv, -1.0 / double(R * comm.size()));
    const Var corr = mul(k, add(sb_row, mul(xhat, sg_row)));
    const Tensor dxc = add(Var(dx.reshape(Shape{R, C})), corr).value();
    c.add(0, dxc.reshape(xv.shape()));
  }
  if (c.needs(1)) c.add(1, dg);
  if (c.needs(2)) c.add(2, db);
}

}  // namespace

Var batch_norm(const Var& x, const Var& gamma, const Var& beta, const Tensor& running_mean,
               const Tensor& running_var, bool training, double momentum, double eps,
               Activation act, double slope) {
  GAN_NVTX("batch_norm");
  GAN_CHECK(x.defined(), "batch_norm: x is undefined");
  // bf16 activations: x, y and their gradients bf16, everything per channel float32. The
  // synchronised statistics run on the widened values.
  const bool bf16 = is_bf16(x);
  if (bf16 && training && dist::sync_batch_norm() && dist::sync_batch_norm()->size() > 1)
    return narrow(batch_norm(widen(x), gamma, beta, running_mean, running_var, training, momentum,
                             eps, act, slope));
  const Tensor& xv = x.value();
  const Tensor gv = gamma.defined() ? gamma.value() : Tensor();
  const Tensor bv = beta.defined() ? beta.value() : Tensor();
  GAN_CHECK(running_mean.defined() && running_var.defined(),
            "batch_norm: running_mean and running_var are required");
  check_same_device("batch_norm", {&xv, &gv, &bv, &running_mean, &running_var});
  if (bf16)
    check_same_dtype("batch_norm", {&gv, &bv, &running_mean, &running_var});
  else
    check_same_dtype("batch_norm", {&xv, &gv, &bv, &running_mean, &running_var});
  const DType stat_type = running_mean.dtype();
  const Shape& sx = xv.shape();
  GAN_CHECK(sx.ndim >= 2,
            fmt::format("batch_norm: expected x of shape (N, ..., C) with at least 2 dimensions, "
                        "got {}",
                        sx.str()));
  const int64_t C = sx.back(), R = sx.prod(0, sx.ndim - 1);
  const Shape cs{C};
  // Per-sample gamma and beta (N, C): conditional batch norm, groups of R / N rows.
  const Tensor& affine = gv.defined() ? gv : bv;
  const bool per_sample = affine.defined() && affine.shape().ndim == 2;
  const int64_t G = per_sample ? sx[0] : 1;
  const Shape ps = per_sample ? Shape{sx[0], C} : cs;
  if (gv.defined()) check_shape("batch_norm", "gamma", gv, ps);
  if (bv.defined()) check_shape("batch_norm", "beta", bv, ps);
  check_shape("batch_norm", "running_mean", running_mean, cs);
  check_shape("batch_norm", "running_var", running_var, cs);
  GAN_CHECK(!training || R > 1,
            fmt::format("batch_norm: expected more than 1 value per channel when training, got "
                        "input {}",
                        sx.str()));
  GAN_CHECK(act != Activation::kTanh, "batch_norm: tanh cannot be fused (ReLU or LeakyReLU only)");
  const kernels::BnAct bact = to_bn_act(act);

  Tensor y = Tensor::empty_like(xv);
  // The statistics the forward normalised with, for backward (batch ones in training, a snapshot
  // of the running ones in eval): (C) each, only when a gradient will be asked for.
  const bool keep =
      grad_enabled() && (x.requires_grad() || gamma.requires_grad() || beta.requires_grad());
  const Tensor save_mean = keep ? Tensor::empty(cs, xv.device(), stat_type) : Tensor();
  const Tensor save_invstd = keep ? Tensor::empty(cs, xv.device(), stat_type) : Tensor();

  dist::Communicator* sync = training ? dist::sync_batch_norm() : nullptr;
  if (sync && sync->size() == 1) sync = nullptr;
  if (sync) {
    // Normalise with the global statistics: the eval-mode kernels take them as given.
    const GlobalStats g =
        global_stats(*sync, xv.reshape(Shape{R, C}), running_mean, running_var, momentum);
    if (xv.is_cuda()) {
      check_cuda_f32("batch_norm", xv);
      kernels::batch_norm_forward_eval_cuda(
          xv.data<float>(), ptr_or_null<float>(gv), ptr_or_null<float>(bv), R, C, float(eps), bact,
          float(slope), g.mean.data<float>(), g.var.data<float>(), y.data<float>(),
          ptr_or_null<float>(save_mean), ptr_or_null<float>(save_invstd), cuda::stream(), G);
    } else {
      dispatch_cpu(xv, "batch_norm", [&](auto tag) {
        using T = decltype(tag);
        kernels::cpu::batch_norm_forward<T>(xv.data<T>(), ptr_or_null<T>(gv), ptr_or_null<T>(bv), R,
                                            C, false, momentum, eps, bact, slope, g.mean.data<T>(),
                                            g.var.data<T>(), y.data<T>(), ptr_or_null<T>(save_mean),
                                            ptr_or_null<T>(save_invstd), G);
      });
    }
  } else if (bf16 && xv.is_cuda()) {
    if (training) {
      const Tensor ws = cuda_workspace(R, C, G);
      kernels::batch_norm_forward_train_cuda(
          xv.data<uint16_t>(), ptr_or_null<float>(gv), ptr_or_null<float>(bv), R, C,
          float(momentum), float(eps), bact, float(slope), running_mean.data<float>(),
          running_var.data<float>(), y.data<uint16_t>(), ptr_or_null<float>(save_mean),
          ptr_or_null<float>(save_invstd), ws.raw(), ws.defined() ? ws.nbytes() : 0, cuda::stream(),
          G);
    } else {
      kernels::batch_norm_forward_eval_cuda(
          xv.data<uint16_t>(), ptr_or_null<float>(gv), ptr_or_null<float>(bv), R, C, float(eps),
          bact, float(slope), running_mean.data<float>(), running_var.data<float>(),
          y.data<uint16_t>(), ptr_or_null<float>(save_mean), ptr_or_null<float>(save_invstd),
          cuda::stream(), G);
    }
  } else if (bf16) {  // the CPU reference on the widened values, y rounded
    const Tensor x32 = xv.to(DType::F32), y32 = Tensor::empty_like(x32);
    kernels::cpu::batch_norm_forward<float>(
        x32.data<float>(), ptr_or_null<float>(gv), ptr_or_null<float>(bv), R, C, training, momentum,
        eps, bact, slope, running_mean.data<float>(), running_var.data<float>(), y32.data<float>(),
        ptr_or_null<float>(save_mean), ptr_or_null<float>(save_invstd), G);
    kernels::cpu::f32_to_bf16(y32.data<float>(), y.data<uint16_t>(), y.numel());
  } else if (xv.is_cuda()) {
    check_cuda_f32("batch_norm", xv);
    if (training) {
      const Tensor ws = cuda_workspace(R, C, G);
      kernels::batch_norm_forward_train_cuda(
          xv.data<float>(), ptr_or_null<float>(gv), ptr_or_null<float>(bv), R, C, float(momentum),
          float(eps), bact, float(slope), running_mean.data<float>(), running_var.data<float>(),
          y.data<float>(), ptr_or_null<float>(save_mean), ptr_or_null<float>(save_invstd), ws.raw(),
          ws.defined() ? ws.nbytes() : 0, cuda::stream(), G);
    } else {
      kernels::batch_norm_forward_eval_cuda(
          xv.data<float>(), ptr_or_null<float>(gv), ptr_or_null<float>(bv), R, C, float(eps), bact,
          float(slope), running_mean.data<float>(), running_var.data<float>(), y.data<float>(),
          ptr_or_null<float>(save_mean), ptr_or_null<float>(save_invstd), cuda::stream(), G);
    }
  } else {
    dispatch_cpu(xv, "batch_norm", [&](auto tag) {
      using T = decltype(tag);
      kernels::cpu::batch_norm_forward<T>(
          xv.data<T>(), ptr_or_null<T>(gv), ptr_or_null<T>(bv), R, C, training, momentum, eps, bact,
          slope, running_mean.data<T>(), running_var.data<T>(), y.data<T>(),
          ptr_or_null<T>(save_mean), ptr_or_null<T>(save_invstd), G);
    });
  }

  // Backward recomputes xhat (and the pre-activation) from x and the saved statistics: it keeps
  // x, gamma, beta (only with an activation) and two (C) tensors, never y.
  const Tensor beta_for_act = bact != kernels::BnAct::kNone ? bv : Tensor();
  // VJP, in differentiable ops: xhat and 1/sqrt(var + eps) recomputed from x as Vars (training)
  // or from the saved running statistics as constants (eval); the activation's derivative is a
  // constant mask read from y (y > 0 exactly where the pre-activation is, for relu and a positive
  // leaky slope).
  VjpFn vjp = [x, gamma, y_out = y, training, eps, bact, slope, save_mean, save_invstd,
               nd = sx.ndim, per_sample, synced = sync != nullptr](const std::vector<Var>& d,
                                                                   const std::vector<bool>& needs) {
    // (bf16: the mask and the constants from y's float32 values.)
    const Tensor yv = widened(y_out);
    GAN_CHECK(!synced,
              "batch_norm: grad() does not go through synchronised batch norm (a gradient penalty "
              "on a critic with batch norm needs per-rank statistics: drop --sync-bn)");
    std::vector<int> axes;
    for (int i = 0; i + 1 < nd; ++i) axes.push_back(i);
    Var g = d[0];
    if (bact != kernels::BnAct::kNone) {
      Tensor mask = Tensor::empty_like(yv);
      const Tensor ones = Tensor::full(yv.shape(), 1.0, yv.device(), yv.dtype());
      const double s = bact == kernels::BnAct::kRelu ? 0.0 : slope;
      if (yv.is_cuda()) {
        kernels::unary_backward_cuda(kernels::Unary::kLeakyRelu, float(s), yv.data<float>(),
                                     nullptr, ones.data<float>(), mask.data<float>(), yv.numel(),
                                     cuda::stream());
      } else {
        dispatch_cpu(yv, "batch_norm", [&](auto tag) {
          using T = decltype(tag);
          kernels::cpu::unary_backward<T>(kernels::Unary::kLeakyRelu, s, yv.data<T>(), nullptr,
                                          ones.data<T>(), mask.data<T>(), yv.numel());
        });
      }
      g = mul(g, Var(mask));
    }
    Var xhat, inv;
    if (training) {
      const Var xc = sub(x, mean(x, axes, true));
      const Var var = mean(mul(xc, xc), axes, true);
      const Var e(Tensor::full(Shape{}, eps, yv.device(), yv.dtype()));
      inv = div(Var(Tensor::full(Shape{}, 1.0, yv.device(), yv.dtype())), sqrt(add(var, e)));
      xhat = mul(xc, inv);
    } else {
      inv = Var(save_invstd);
      xhat = mul(sub(x, Var(save_mean)), inv);
    }
    // Per-sample gamma (N, C) broadcasts as (N, 1, ..., 1, C); its gradients sum over the
    // middle axes only.
    Var gamma_b = gamma;
    std::vector<int> param_axes = axes;
    if (per_sample) {
      Shape bs = yv.shape();
      for (int i = 1; i + 1 < nd; ++i) bs[i] = 1;
      if (gamma.defined()) gamma_b = reshape(gamma, bs);
      param_axes.assign(axes.begin() + 1, axes.end());
    }
    const auto param_sum = [&](const Var& t) {
      return param_axes.empty()
                 ? t
                 : reshape(sum(t, param_axes), Shape{yv.shape()[0], yv.shape().back()});
    };
    std::vector<Var> r(3);
    if (needs[0]) {
      const Var gg = gamma.defined() ? mul(g, gamma_b) : g;
      if (training)
        r[0] = mul(inv,
                   sub(sub(gg, mean(gg, axes, true)), mul(xhat, mean(mul(gg, xhat), axes, true))));
      else
        r[0] = mul(gg, inv);
    }
    if (needs[1]) r[1] = per_sample ? param_sum(mul(g, xhat)) : sum(mul(g, xhat), axes);
    if (needs[2]) r[2] = per_sample ? param_sum(g) : sum(g, axes);
    return r;
  };
  return record(
      "batch_norm", {x, gamma, beta}, y,
      [xv, gv, beta_for_act, save_mean, save_invstd, R, C, G, ps, training, bact, slope,
       sync](const BackwardContext& c) {
        if (sync)
          return sync_backward(c, *sync, xv, gv, beta_for_act, save_mean, save_invstd, R, C, G,
                               bact, slope);
        const Tensor& dy = c.dout;
        check_same_device("batch_norm", {&xv, &dy});
        check_same_dtype("batch_norm", {&xv, &dy});
        const Tensor dx = c.needs(0) ? Tensor::empty_like(xv) : Tensor();
        bool acc_g = false, acc_b = false;
        const Tensor dg = channel_grad(c, 1, save_mean, ps, &acc_g);
        const Tensor db = channel_grad(c, 2, save_mean, ps, &acc_b);
        if (xv.dtype() == DType::BF16 && xv.is_cuda()) {
          const Tensor ws = cuda_workspace(R, C, G);
          kernels::batch_norm_backward_cuda(
              xv.data<uint16_t>(), dy.data<uint16_t>(), ptr_or_null<float>(gv),
              ptr_or_null<float>(beta_for_act), save_mean.data<float>(), save_invstd.data<float>(),
              R, C, training, bact, float(slope), ptr_or_null<uint16_t>(dx), ptr_or_null<float>(dg),
              ptr_or_null<float>(db), acc_g, acc_b, ws.raw(), ws.defined() ? ws.nbytes() : 0,
              cuda::stream(), G);
        } else if (xv.dtype() == DType::BF16) {  // widened, dx rounded
          const Tensor x32 = xv.to(DType::F32), dy32 = dy.to(DType::F32);
          const Tensor dx32 = dx.defined() ? Tensor::empty_like(x32) : Tensor();
          kernels::cpu::batch_norm_backward<float>(
              x32.data<float>(), dy32.data<float>(), ptr_or_null<float>(gv),
              ptr_or_null<float>(beta_for_act), save_mean.data<float>(), save_invstd.data<float>(),
              R, C, training, bact, slope, ptr_or_null<float>(dx32), ptr_or_null<float>(dg),
              ptr_or_null<float>(db), acc_g, acc_b, G);
          if (dx.defined())
            kernels::cpu::f32_to_bf16(dx32.data<float>(), dx.data<uint16_t>(), dx.numel());
        } else if (xv.is_cuda()) {
          const Tensor ws = cuda_workspace(R, C, G);
          kernels::batch_norm_backward_cuda(
              xv.data<float>(), dy.data<float>(), ptr_or_null<float>(gv),
              ptr_or_null<float>(beta_for_act), save_mean.data<float>(), save_invstd.data<float>(),
              R, C, training, bact, float(slope), ptr_or_null<float>(dx), ptr_or_null<float>(dg),
              ptr_or_null<float>(db), acc_g, acc_b, ws.raw(), ws.defined() ? ws.nbytes() : 0,
              cuda::stream(), G);
        } else {
          dispatch_cpu(xv, "batch_norm", [&](auto tag) {
            using T = decltype(tag);
            kernels::cpu::batch_norm_backward<T>(
                xv.data<T>(), dy.data<T>(), ptr_or_null<T>(gv), ptr_or_null<T>(beta_for_act),
                save_mean.data<T>(), save_invstd.data<T>(), R, C, training, bact, slope,
                ptr_or_null<T>(dx), ptr_or_null<T>(dg), ptr_or_null<T>(db), acc_g, acc_b, G);
          });
        }
        if (dx.defined()) c.add(0, dx);
        if (dg.defined() && !acc_g) c.add(1, dg);
        if (db.defined() && !acc_b) c.add(2, db);
      },
      keep ? std::move(vjp) : VjpFn());
}

}  // namespace gan
