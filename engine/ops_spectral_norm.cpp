// spectral_norm: W / sigma(W) for a group of weights, one tape entry (and on the GPU one launch)
// for all of them. Kernels and the contract: kernels/spectral_norm.h.
#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/spectral_norm.h"

namespace gan {

namespace {

// What the backward needs of one layer (the weight itself is not kept: the formula reads W_sn).
struct SnLayerSave {
  Tensor w_sn;  // the forward's output (the weight's shape)
  int64_t rows = 0, cols = 0;
  bool transposed = false;
  int64_t saved_off = 0;  // [u (rows), v (cols), sigma (1)] at this offset of the saved tensor
};

void check_layers(const std::vector<SpectralNormLayer>& layers) {
  const Tensor& first = layers[0].weight.value();
  std::set<const void*> storages;  // weights, u, v, sigma: no two may share memory
  for (size_t i = 0; i < layers.size(); ++i) {
    const SpectralNormLayer& l = layers[i];
    GAN_CHECK(l.weight.defined(), fmt::format("spectral_norm: layer {} has no weight", i));
    const Tensor& w = l.weight.value();
    GAN_CHECK(l.rows >= 1 && l.cols >= 1 && l.rows * l.cols == w.numel(),
              fmt::format("spectral_norm: layer {}: weight {} is not a ({}, {}) matrix", i,
                          w.shape().str(), l.rows, l.cols));
    GAN_CHECK(l.u.defined() && l.v.defined() && l.sigma.defined(),
              fmt::format("spectral_norm: layer {}: u, v and sigma must be allocated", i));
    const std::string what = fmt::format("layer {}", i);
    check_shape("spectral_norm", (what + " u").c_str(), l.u, Shape{l.rows});
    check_shape("spectral_norm", (what + " v").c_str(), l.v, Shape{l.cols});
    check_shape("spectral_norm", (what + " sigma").c_str(), l.sigma, Shape{1});
    GAN_CHECK(
        w.device() == first.device() && w.dtype() == first.dtype(),
        fmt::format("spectral_norm: layer {}: weight {} differs in device or dtype from layer "
                    "0's {}",
                    i, w.str(), first.str()));
    check_same_device("spectral_norm", {&w, &l.u, &l.v, &l.sigma});
    check_same_dtype("spectral_norm", {&w, &l.u, &l.v, &l.sigma});
    for (const Tensor* t : {&w, &l.u, &l.v, &l.sigma})
      GAN_CHECK(storages.insert(t->storage().get()).second,
                fmt::format("spectral_norm: layer {}: weight, u, v and sigma must not share "
                            "memory with each other or with another layer's",
                            i));
  }
  if (first.is_cuda()) check_cuda_f32("spectral_norm", first);
}

}  // namespace

std::vector<Var> spectral_norm(std::vector<SpectralNormLayer>& layers, bool training,
                               int iterations, double eps) {
  GAN_NVTX("spectral_norm");
  if (layers.empty()) return {};
  GAN_CHECK(!training || iterations >= 1,
            fmt::format("spectral_norm: iterations must be >= 1, got {}", iterations));
  GAN_CHECK(std::isfinite(eps) && eps >= 0,
            fmt::format("spectral_norm: eps must be finite and >= 0, got {}", eps));
  check_layers(layers);
  const Tensor& first = layers[0].weight.value();
  const Device device = first.device();
  const DType dtype = first.dtype();

  // The backward runs only if the tape records this op; then keep this call's u, v, sigma.
  bool any_grad = false;
  for (const auto& l : layers) any_grad = any_grad || l.weight.requires_grad();
  const bool keep = grad_enabled() && any_grad;

  std::vector<SnLayerSave> save(layers.size());
  std::vector<Tensor> outs;
  std::vector<Var> inputs;
  int64_t saved_len = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const SpectralNormLayer& l = layers[i];
    outs.push_back(Tensor::empty(l.weight.shape(), device, dtype));
    inputs.push_back(l.weight);
    SnLayerSave& s = save[i];
    s.w_sn = outs.back();
    s.rows = l.rows, s.cols = l.cols, s.transposed = l.transposed;
    s.saved_off = saved_len;
    saved_len += l.rows + l.cols + 1;
  }
  const Tensor saved = keep ? Tensor::empty(Shape{saved_len}, device, dtype) : Tensor();

  if (device == Device::CUDA) {
    std::vector<kernels::SpectralNormForwardLayer> args(layers.size());
    for (size_t i = 0; i < layers.size(); ++i) {
      const SpectralNormLayer& l = layers[i];
      kernels::SpectralNormForwardLayer& a = args[i];
      a.w = l.weight.value().data<float>();
      a.w_sn = outs[i].data<float>();
      a.u = l.u.data<float>();
      a.v = l.v.data<float>();
      a.sigma = l.sigma.data<float>();
      a.saved = keep ? saved.data<float>() + save[i].saved_off : nullptr;
      a.rows = l.rows, a.cols = l.cols, a.transposed = l.transposed;
    }
    const size_t ws = kernels::spectral_norm_forward_workspace_bytes(args);
    const Tensor work = Tensor::empty(Shape{int64_t((ws + 3) / 4)}, Device::CUDA);
    kernels::spectral_norm_forward_cuda(args, training, iterations, float(eps), work.raw(), ws,
                                        cuda::stream());
  } else {
    dispatch_cpu(first, "spectral_norm", [&](auto tag) {
      using T = decltype(tag);
      for (size_t i = 0; i < layers.size(); ++i) {
        const SpectralNormLayer& l = layers[i];
        T* u = l.u.data<T>();
        T* v = l.v.data<T>();
        T* sigma = l.sigma.data<T>();
        kernels::cpu::spectral_norm_forward<T>(l.weight.value().data<T>(), l.rows, l.cols,
                                               l.transposed, training, iterations, eps, u, v, sigma,
                                               outs[i].data<T>());
        if (keep) {
          T* dst = saved.data<T>() + save[i].saved_off;
          std::copy(u, u + l.rows, dst);
          std::copy(v, v + l.cols, dst + l.rows);
          dst[l.rows + l.cols] = sigma[0];
        }
      }
    });
  }

  // VJP: with u, v the constants this call used, sigma = <W, u v^T> and W_sn = W / sigma, so
  // dW = (G - <G, W_sn> u v^T) / sigma, written on W's Var (differentiable in W and G). u, v are
  // read out of the saved buffer by device ops (graph-safe).
  VjpFn vjp = [save, saved, inputs](const std::vector<Var>& d, const std::vector<bool>& needs) {
    std::vector<Var> r(save.size());
    const Var flat(saved.reshape(Shape{1, saved.numel()}));
    for (size_t i = 0; i < save.size(); ++i) {
      if (!needs[i] || !d[i].defined()) continue;
      const SnLayerSave& s = save[i];
      const Var u = reshape(slice_last(flat, s.saved_off, s.rows), Shape{s.rows, 1});
      const Var v = reshape(slice_last(flat, s.saved_off + s.rows, s.cols), Shape{1, s.cols});
      Var uv = matmul(u, v);  // (rows, cols): W as PyTorch's matrix
      if (s.transposed) uv = transpose(uv);
      uv = reshape(uv, inputs[i].shape());
      const Var sigma = sum(mul(inputs[i], uv));
      const Var w_sn = div(inputs[i], sigma);
      r[i] = div(sub(d[i], mul(sum(mul(d[i], w_sn)), uv)), sigma);
    }
    return r;
  };
  return record_multi(
      "spectral_norm", inputs, std::move(outs),
      [save, saved](const BackwardContext& c) {
        // Layers whose output received a gradient and whose weight wants one.
        std::vector<size_t> active;
        for (size_t i = 0; i < save.size(); ++i)
          if (c.dout_at(int(i)).defined() && c.needs(int(i))) active.push_back(i);
        if (active.empty()) return;
        // dW goes straight into a parameter's gradient buffer (accumulate), else into a fresh
        // tensor handed to add().
        std::vector<Tensor> dst(save.size());
        std::vector<bool> accumulate(save.size(), false);
        for (size_t i : active) {
          const Tensor& w_sn = save[i].w_sn;
          if (Tensor* acc = c.accum_buffer(int(i))) {
            check_shape(c.op, "parameter gradient buffer", *acc, w_sn.shape());
            dst[i] = *acc;
            accumulate[i] = true;
          } else {
            dst[i] = Tensor::empty_like(w_sn);
          }
          check_shape(c.op, "output gradient", c.dout_at(int(i)), w_sn.shape());
        }
        if (saved.is_cuda()) {
          std::vector<kernels::SpectralNormBackwardLayer> args;
          for (size_t i : active) {
            kernels::SpectralNormBackwardLayer a;
            a.g = c.dout_at(int(i)).data<float>();
            a.w_sn = save[i].w_sn.data<float>();
            a.saved = saved.data<float>() + save[i].saved_off;
            a.dw = dst[i].data<float>();
            a.accumulate = accumulate[i];
            a.rows = save[i].rows, a.cols = save[i].cols, a.transposed = save[i].transposed;
            args.push_back(a);
          }
          const size_t ws = kernels::spectral_norm_backward_workspace_bytes(args);
          const Tensor work = Tensor::empty(Shape{int64_t((ws + 3) / 4)}, Device::CUDA);
          kernels::spectral_norm_backward_cuda(args, work.raw(), ws, cuda::stream());
        } else {
          dispatch_cpu(saved, "spectral_norm", [&](auto tag) {
            using T = decltype(tag);
            for (size_t i : active) {
              const SnLayerSave& s = save[i];
              const T* uvs = saved.data<T>() + s.saved_off;
              kernels::cpu::spectral_norm_backward<T>(c.dout_at(int(i)).data<T>(), s.w_sn.data<T>(),
                                                      uvs, uvs + s.rows, uvs + s.rows + s.cols,
                                                      s.rows, s.cols, s.transposed, accumulate[i],
                                                      dst[i].data<T>());
            }
          });
        }
        for (size_t i : active)
          if (!accumulate[i]) c.add(int(i), dst[i]);
      },
      keep ? std::move(vjp) : VjpFn());
}

}  // namespace gan
