// Batch norm: our kernels (kernels/batchnorm.cu) against cuDNN's NHWC batch norm
// (cudnnBatchNormalizationForwardTrainingEx / BackwardEx, CUDNN_BATCHNORM_SPATIAL_PERSISTENT, no
// activation) on the DCGAN/SAGAN generator shapes. For each shape: one checked run of both
// (normalised max errors of y, dx, dgamma, dbeta, saved statistics and running statistics against
// cuDNN), then forward-training + backward timed (median, bench_util.h's time_ms). Bytes counted
// for our kernels: forward reads x twice and writes y, backward reads x and dy twice and writes
// dx: 8 R C 4 bytes per forward + backward (the (C) vectors and partials are noise); the same
// count is used for cuDNN's rate so the two compare directly. One JSON line per shape, and one for
// the conditional form (per-sample gamma and beta, ReLU fused) of our kernels at the same shape.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "bench/bench_util.h"
#include "engine/device.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/batchnorm.h"
#include "kernels/conv_cudnn.h"

using namespace gan;

namespace {

struct Nhwc {
  int n, h, w, c;
};

Tensor scratch(size_t bytes) {
  return Tensor::empty(Shape{int64_t(std::max<size_t>(bytes, 4) / 4 + 1)}, Device::CUDA);
}

void run_shape(const Nhwc& s, double copy_gbs) {
  const int64_t C = s.c, R = int64_t(s.n) * s.h * s.w, numel = R * C;
  const Shape xs{s.n, s.h, s.w, s.c}, cs{C};
  const Device d = Device::CUDA;
  Generator gen(1234, d);
  Tensor x = Tensor::empty(xs, d), dy = Tensor::empty(xs, d);
  Tensor gamma = Tensor::empty(cs, d), beta = Tensor::empty(cs, d);
  gen.normal_(x, 0.5, 2.0);
  gen.normal_(dy, 0.0, 1.0);
  gen.uniform_(gamma, 0.5, 1.5);
  gen.uniform_(beta, -0.5, 0.5);
  const double momentum = 0.1, eps = 1e-5;

  // Ours.
  Tensor rm = Tensor::zeros(cs, d), rv = Tensor::full(cs, 1.0, d);
  Tensor y = Tensor::empty(xs, d), dx = Tensor::empty(xs, d);
  Tensor mean = Tensor::empty(cs, d), invstd = Tensor::empty(cs, d);
  Tensor dg = Tensor::empty(cs, d), db = Tensor::empty(cs, d);
  const size_t ws_bytes = kernels::batch_norm_workspace_bytes(R, C, 1);
  const Tensor ws = scratch(ws_bytes);
  cudaStream_t st = cuda::stream();
  auto ours_fwd = [&] {
    kernels::batch_norm_forward_train_cuda(
        x.data<float>(), gamma.data<float>(), beta.data<float>(), R, C, float(momentum), float(eps),
        kernels::BnAct::kNone, 0.f, rm.data<float>(), rv.data<float>(), y.data<float>(),
        mean.data<float>(), invstd.data<float>(), ws.raw(), ws_bytes, st);
  };
  auto ours_bwd = [&] {
    kernels::batch_norm_backward_cuda(
        x.data<float>(), dy.data<float>(), gamma.data<float>(), nullptr, mean.data<float>(),
        invstd.data<float>(), R, C, true, kernels::BnAct::kNone, 0.f, dx.data<float>(),
        dg.data<float>(), db.data<float>(), false, false, ws.raw(), ws_bytes, st);
  };

  // cuDNN, NHWC, spatial persistent, batch norm only.
  cudnnHandle_t h = cuda::cudnn();
  const cudnnBatchNormMode_t mode = CUDNN_BATCHNORM_SPATIAL_PERSISTENT;
  const cudnnBatchNormOps_t ops = CUDNN_BATCHNORM_OPS_BN;
  cudnnTensorDescriptor_t xd = nullptr, bnd = nullptr;
  GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&xd));
  GAN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&bnd));
  GAN_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s.n, s.c, s.h, s.w));
  GAN_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(bnd, xd, mode));
  size_t fws = 0, bws = 0, rsv = 0;
  GAN_CUDNN_CHECK(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
      h, mode, ops, xd, nullptr, xd, bnd, nullptr, &fws));
  GAN_CUDNN_CHECK(cudnnGetBatchNormalizationBackwardExWorkspaceSize(
      h, mode, ops, xd, xd, xd, nullptr, xd, bnd, nullptr, &bws));
  GAN_CUDNN_CHECK(
      cudnnGetBatchNormalizationTrainingExReserveSpaceSize(h, mode, ops, nullptr, xd, &rsv));
  const Tensor fwork = scratch(fws), bwork = scratch(bws), reserve = scratch(rsv);
  Tensor rm2 = Tensor::zeros(cs, d), rv2 = Tensor::full(cs, 1.0, d);
  Tensor y2 = Tensor::empty(xs, d), dx2 = Tensor::empty(xs, d);
  Tensor mean2 = Tensor::empty(cs, d), invstd2 = Tensor::empty(cs, d);
  Tensor dg2 = Tensor::empty(cs, d), db2 = Tensor::empty(cs, d);
  const float one = 1.f, zero = 0.f;
  auto cudnn_fwd = [&] {
    GAN_CUDNN_CHECK(cudnnBatchNormalizationForwardTrainingEx(
        h, mode, ops, &one, &zero, xd, x.raw(), nullptr, nullptr, xd, y2.raw(), bnd, gamma.raw(),
        beta.raw(), momentum, rm2.raw(), rv2.raw(), eps, mean2.raw(), invstd2.raw(), nullptr,
        fwork.raw(), fws, reserve.raw(), rsv));
  };
  auto cudnn_bwd = [&] {
    GAN_CUDNN_CHECK(cudnnBatchNormalizationBackwardEx(
        h, mode, ops, &one, &zero, &one, &zero, xd, x.raw(), xd, y2.raw(), xd, dy.raw(), nullptr,
        nullptr, xd, dx2.raw(), bnd, gamma.raw(), beta.raw(), dg2.raw(), db2.raw(), eps,
        mean2.raw(), invstd2.raw(), nullptr, bwork.raw(), bws, reserve.raw(), rsv));
  };

  // One checked step of each from the same running statistics.
  ours_fwd();
  ours_bwd();
  cudnn_fwd();
  cudnn_bwd();
  cuda::synchronize();
  const double e_y = bench::max_rel_error(y, y2), e_dx = bench::max_rel_error(dx, dx2);
  const double e_dg = bench::max_rel_error(dg, dg2), e_db = bench::max_rel_error(db, db2);
  const double e_mean = bench::max_rel_error(mean, mean2),
               e_invstd = bench::max_rel_error(invstd, invstd2);
  const double e_rm = bench::max_rel_error(rm, rm2), e_rv = bench::max_rel_error(rv, rv2);

  const double ours_f = bench::time_ms(ours_fwd), ours_b = bench::time_ms(ours_bwd);
  const double ours_t = bench::time_ms([&] {
    ours_fwd();
    ours_bwd();
  });
  const double cudnn_f = bench::time_ms(cudnn_fwd), cudnn_b = bench::time_ms(cudnn_bwd);
  const double cudnn_t = bench::time_ms([&] {
    cudnn_fwd();
    cudnn_bwd();
  });
  const double bytes_f = 3.0 * double(numel) * 4, bytes_b = 5.0 * double(numel) * 4;
  const double bytes_t = bytes_f + bytes_b;
  auto gbs = [](double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; };
  std::printf(
      "{\"bench\": \"batch_norm\", \"shape\": [%d, %d, %d, %d], \"R\": %lld, \"C\": %lld, "
      "\"ours_fwd_ms\": %.4f, \"ours_bwd_ms\": %.4f, \"ours_ms\": %.4f, \"cudnn_fwd_ms\": %.4f, "
      "\"cudnn_bwd_ms\": %.4f, \"cudnn_ms\": %.4f, \"ours_vs_cudnn\": %.3f, \"ours_gbs\": %.1f, "
      "\"ours_fwd_gbs\": %.1f, \"ours_bwd_gbs\": %.1f, \"ours_frac_copy\": %.3f, "
      "\"cudnn_gbs\": %.1f, \"copy_gbs\": %.1f, \"err_y\": %.3g, \"err_dx\": %.3g, "
      "\"err_dgamma\": %.3g, \"err_dbeta\": %.3g, \"err_save_mean\": %.3g, "
      "\"err_save_invstd\": %.3g, \"err_running_mean\": %.3g, \"err_running_var\": %.3g}\n",
      s.n, s.h, s.w, s.c, (long long)R, (long long)C, ours_f, ours_b, ours_t, cudnn_f, cudnn_b,
      cudnn_t, ours_t / cudnn_t, gbs(bytes_t, ours_t), gbs(bytes_f, ours_f), gbs(bytes_b, ours_b),
      gbs(bytes_t, ours_t) / copy_gbs, gbs(bytes_t, cudnn_t), copy_gbs, e_y, e_dx, e_dg, e_db,
      e_mean, e_invstd, e_rm, e_rv);
  std::fflush(stdout);

  // Conditional batch norm (the ResNet SAGAN's generator): gamma and beta per sample ((N, C), N
  // groups of H W rows) with the ReLU fused, against the per-channel kernels above (no cuDNN
  // counterpart). Same bytes: the (N, C) vectors are 2 N C floats, noise beside R C.
  {
    const int64_t G = s.n;
    Tensor gg = Tensor::empty(Shape{G, C}, d), bg = Tensor::empty(Shape{G, C}, d);
    gen.uniform_(gg, 0.5, 1.5);
    gen.uniform_(bg, -0.5, 0.5);
    Tensor dgg = Tensor::empty(Shape{G, C}, d), dbg = Tensor::empty(Shape{G, C}, d);
    const size_t gws_bytes = kernels::batch_norm_workspace_bytes(R, C, G);
    const Tensor gws = scratch(gws_bytes);
    auto cbn_fwd = [&] {
      kernels::batch_norm_forward_train_cuda(
          x.data<float>(), gg.data<float>(), bg.data<float>(), R, C, float(momentum), float(eps),
          kernels::BnAct::kRelu, 0.f, rm.data<float>(), rv.data<float>(), y.data<float>(),
          mean.data<float>(), invstd.data<float>(), gws.raw(), gws_bytes, st, G);
    };
    auto cbn_bwd = [&] {
      kernels::batch_norm_backward_cuda(
          x.data<float>(), dy.data<float>(), gg.data<float>(), bg.data<float>(), mean.data<float>(),
          invstd.data<float>(), R, C, true, kernels::BnAct::kRelu, 0.f, dx.data<float>(),
          dgg.data<float>(), dbg.data<float>(), false, false, gws.raw(), gws_bytes, st, G);
    };
    const double cf = bench::time_ms(cbn_fwd), cb = bench::time_ms(cbn_bwd);
    const double ct = bench::time_ms([&] {
      cbn_fwd();
      cbn_bwd();
    });
    std::printf(
        "{\"bench\": \"batch_norm_conditional\", \"shape\": [%d, %d, %d, %d], \"groups\": %lld, "
        "\"cbn_fwd_ms\": %.4f, \"cbn_bwd_ms\": %.4f, \"cbn_ms\": %.4f, "
        "\"cbn_vs_per_channel\": %.3f, \"cbn_gbs\": %.1f, \"cbn_frac_copy\": %.3f}\n",
        s.n, s.h, s.w, s.c, (long long)G, cf, cb, ct, ct / ours_t, gbs(bytes_t, ct),
        gbs(bytes_t, ct) / copy_gbs);
    std::fflush(stdout);
  }
  GAN_CUDNN_CHECK(cudnnDestroyTensorDescriptor(xd));
  GAN_CUDNN_CHECK(cudnnDestroyTensorDescriptor(bnd));
}

}  // namespace

int main() {
  if (!cuda_available()) {
    std::printf("bench_batchnorm: no GPU, nothing measured\n");
    return 0;
  }
  const double copy_gbs = bench::copy_bandwidth_gbs();
  std::printf(
      "{\"bench\": \"batch_norm\", \"device\": \"%s\", \"sm_count\": %d, "
      "\"copy_gbs\": %.1f}\n",
      bench::device_name().c_str(), cuda::context().sm_count, copy_gbs);
  // DCGAN/SAGAN generator activations (NHWC) at batch 64, and two at batch 256.
  const std::vector<Nhwc> shapes = {
      {64, 32, 32, 64}, {64, 16, 16, 128}, {64, 8, 8, 256},    {64, 4, 4, 512},   {64, 16, 16, 256},
      {64, 8, 8, 512},  {64, 32, 32, 128}, {256, 16, 16, 128}, {256, 32, 32, 64},
  };
  for (const Nhwc& s : shapes) run_shape(s, copy_gbs);
  return 0;
}
