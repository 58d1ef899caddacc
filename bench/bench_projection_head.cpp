// The projection discriminator's head: the fused op (engine projection_head, kernels/
// projection_head.h) against the same head in separate ops (the class rows as a GEMM with the
// one-hot labels, linear, a row-wise product and sum, an add), forward + backward through the
// engine's autograd, on the D shapes of the ResNet SAGAN (B, C) with 10 classes and one ImageNet-
// sized case (1000 classes). For each shape: the two outputs' and gradients' normalised max
// difference, then the median time of each. --device cpu (the CPU backend, wall clock) or cuda
// (CUDA events on the engine stream). One JSON line per shape (docs/kernels/projection_head.md).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench/bench_util.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/random.h"

using namespace gan;

namespace {

// Median over 5 repeats of the mean wall time (ms) of `iters` calls, after 3 warm-up calls.
double time_cpu_ms(const std::function<void()>& f, int iters) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> ms;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) f();
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() / iters);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Head {
  Var h, w, b, y, e;
};

Var fused(const Head& x) { return projection_head(x.h, x.w, x.b, x.y, x.e); }
Var separate(const Head& x) {
  const int64_t B = x.h.shape()[0];
  return add(reshape(linear(x.h, x.w, x.b), Shape{B}), sum(mul(matmul(x.y, x.e), x.h), {1}));
}

// Forward and backward (seeded with g) from fresh leaves over x's values (no gradient carried
// over from an earlier call); the output and the gradients of h, w, b, e.
std::vector<Tensor> step(const Head& x, const Tensor& g, Var (*f)(const Head&)) {
  const Head l{Var(x.h.value(), true), Var(x.w.value(), true), Var(x.b.value(), true), x.y,
               Var(x.e.value(), true)};
  const Var out = f(l);
  backward(out, g);
  return {out.value(), l.h.grad(), l.w.grad(), l.b.grad(), l.e.grad()};
}

void run_shape(Device dev, int64_t B, int64_t C, int64_t K) {
  Generator gen(99, dev);
  const auto leaf = [&](Shape s) {
    Tensor t = Tensor::empty(s, dev);
    gen.normal_(t, 0.0, 1.0);
    return Var(t, true);
  };
  Head x{leaf(Shape{B, C}), leaf(Shape{1, C}), leaf(Shape{1}), Var(), leaf(Shape{K, C})};
  std::vector<float> onehot(size_t(B * K), 0.f);
  for (int64_t i = 0; i < B; ++i) onehot[size_t(i * K + (i * 7) % K)] = 1.f;
  x.y = Var(Tensor::from_vector(onehot, Shape{B, K}, dev));
  Tensor g = Tensor::empty(Shape{B}, dev);
  gen.normal_(g, 0.0, 1.0);

  const std::vector<Tensor> a = step(x, g, fused);
  std::vector<Tensor> fa;
  for (const Tensor& t : a) fa.push_back(t.to(Device::CPU));
  const std::vector<Tensor> bsep = step(x, g, separate);
  double err = 0;
  for (size_t i = 0; i < fa.size(); ++i)
    err = std::max(err, bench::max_rel_error(fa[i], bsep[i].to(Device::CPU)));

  const auto time = [&](Var (*f)(const Head&)) {
    const auto once = [&] { step(x, g, f); };
    if (dev == Device::CUDA) return bench::time_ms(once, 10, 50, 7);
    return time_cpu_ms(once, 20);
  };
  const double t_fused = time(fused), t_sep = time(separate);
  std::printf(
      "{\"bench\": \"projection_head\", \"device\": \"%s\", \"B\": %lld, \"C\": %lld, \"K\": %lld, "
      "\"fused_ms\": %.4f, \"separate_ms\": %.4f, \"speedup\": %.2f, \"max_rel_diff\": %.3g}\n",
      dev == Device::CUDA ? bench::device_name().c_str() : "cpu", (long long)B, (long long)C,
      (long long)K, t_fused, t_sep, t_sep / t_fused, err);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_projection_head: the fused projection head against separate ops"};
  std::string device = "cuda";
  app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  CLI11_PARSE(app, argc, argv);
  const Device dev = device == "cuda" ? Device::CUDA : Device::CPU;
  if (dev == Device::CUDA && !cuda_available()) {
    std::printf("bench_projection_head: no GPU, nothing measured\n");
    return 0;
  }
  // The ResNet SAGAN's D heads (32 px: 256 channels at B64; 64 px: 1024 at B64; 128 px: 1024 at
  // B32), StudioGAN's B256 runs, and an ImageNet-sized label set.
  for (const auto& [B, C, K] :
       {std::tuple{64, 256, 10}, std::tuple{64, 1024, 10}, std::tuple{32, 1024, 10},
        std::tuple{256, 1024, 10}, std::tuple{256, 1024, 1000}})
    run_shape(dev, B, C, K);
  return 0;
}
