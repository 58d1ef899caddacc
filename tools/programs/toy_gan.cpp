// toy_gan: the engine's end-to-end demo until gan_train lands. A GAN with MLP generator and
// discriminator learns a ring of 8 Gaussians in 2-D (the classic mode-collapse test), with
// non-saturating BCE losses and Adam, on the GPU when there is one and otherwise on the CPU.
// At the end it reports how many of the 8 modes the generator covers.
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "tools/programs/cli.h"

#include "engine/adam.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/random.h"

namespace {

using namespace gan;

constexpr int kModes = 8;
constexpr double kRadius = 2.0;

struct Mlp {
  std::vector<Var> w, b;
  double slope;  // leaky_relu slope between layers (0: relu)

  // PyTorch's nn.Linear initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
  Mlp(const std::vector<int64_t>& sizes, double negative_slope, Generator& gen, Device dev,
      const std::string& name)
      : slope(negative_slope) {
    for (size_t i = 0; i + 1 < sizes.size(); ++i) {
      const double bound = 1.0 / std::sqrt(double(sizes[i]));
      Tensor wt = Tensor::empty(Shape{sizes[i + 1], sizes[i]}, dev);
      Tensor bt = Tensor::empty(Shape{sizes[i + 1]}, dev);
      gen.uniform_(wt, -bound, bound);
      gen.uniform_(bt, -bound, bound);
      w.push_back(parameter(wt, fmt::format("{}.{}.weight", name, i)));
      b.push_back(parameter(bt, fmt::format("{}.{}.bias", name, i)));
    }
  }

  Var operator()(Var x) const {
    for (size_t i = 0; i < w.size(); ++i) {
      x = linear(x, w[i], b[i]);
      if (i + 1 < w.size()) x = slope > 0 ? leaky_relu(x, slope) : relu(x);
    }
    return x;
  }

  std::vector<Var> params() const {
    std::vector<Var> p;
    for (size_t i = 0; i < w.size(); ++i) {
      p.push_back(w[i]);
      p.push_back(b[i]);
    }
    return p;
  }
};

std::array<double, 2> mode_center(int k) {
  const double a = 2 * M_PI * k / kModes;
  return {kRadius * std::cos(a), kRadius * std::sin(a)};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"toy_gan: a GAN learns a ring of 8 Gaussians (engine demo)"};
  int64_t steps = 3000, batch = 256, zdim = 8, width = 128, seed = 1;
  double lr = 1e-3, beta1 = 0.5, beta2 = 0.999, noise = 0.05;
  std::string device = "auto";
  app.add_option("--steps", steps, "training iterations (one D and one G step each)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--batch-size", batch, "batch size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--z-dim", zdim, "latent size")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--width", width, "hidden width")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--lr", lr, "Adam learning rate (G and D)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--beta1", beta1, "Adam beta1")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999999));
  app.add_option("--beta2", beta2, "Adam beta2")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999999));
  app.add_option("--noise", noise, "standard deviation of each mode")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--device", device, "auto, cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  if (auto rc = gan::cli::parse(app, argc, argv, "toy_gan")) return *rc;

  try {
    Device dev = Device::CPU;
    if (device == "cuda" || (device == "auto" && cuda_available())) dev = Device::CUDA;
    if (device == "auto" && dev == Device::CPU)
      fmt::print("toy_gan: no GPU found, training on the CPU\n");
    fmt::print("toy_gan: device={} steps={} batch={} z={} width={} lr={} betas=({}, {}) seed={}\n",
               device_name(dev), steps, batch, zdim, width, lr, beta1, beta2, seed);

    Generator gen(uint64_t(seed), dev);
    Mlp G({zdim, width, width, 2}, 0.0, gen, dev, "G");
    Mlp D({2, width, width, 1}, 0.2, gen, dev, "D");
    AdamOptions opt;
    opt.lr = lr, opt.beta1 = beta1, opt.beta2 = beta2;
    Adam opt_g(G.params(), opt), opt_d(D.params(), opt);

    std::mt19937_64 host_rng(static_cast<uint64_t>(seed));
    std::normal_distribution<double> normal(0.0, noise);
    std::uniform_int_distribution<int> pick(0, kModes - 1);
    std::vector<float> real_host(size_t(batch * 2));
    Tensor z = Tensor::empty(Shape{batch, zdim}, dev);

    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t step = 1; step <= steps; ++step) {
      for (int64_t i = 0; i < batch; ++i) {
        const auto c = mode_center(pick(host_rng));
        real_host[size_t(2 * i)] = float(c[0] + normal(host_rng));
        real_host[size_t(2 * i + 1)] = float(c[1] + normal(host_rng));
      }
      Var real(Tensor::from_vector(real_host, Shape{batch, 2}, dev));

      // Discriminator: real -> 1, fake -> 0 (the generator is not differentiated here).
      gen.normal_(z);
      Var fake;
      {
        NoGradGuard no_grad;
        fake = G(Var(z));
      }
      Var loss_d = add(bce_with_logits(D(real), 1.0), bce_with_logits(D(fake), 0.0));
      zero_grad(D.params());
      backward(loss_d);
      opt_d.step();

      // Generator: non-saturating loss, fake -> 1.
      gen.normal_(z);
      Var loss_g = bce_with_logits(D(G(Var(z))), 1.0);
      zero_grad(G.params());
      backward(loss_g);
      opt_g.step();

      if (step % 100 == 0 || step == steps) {
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        fmt::print("step {:5d}  loss_d {:.4f}  loss_g {:.4f}  {:.0f} it/s\n", step,
                   loss_d.value().item(), loss_g.value().item(), double(step) / secs);
        std::fflush(stdout);
      }
    }

    // Mode coverage: a sample is good when within 3 noise std of a mode; a mode is covered when
    // at least 1% of the samples are good samples of it.
    const int64_t n_eval = 4096;
    Tensor ze = Tensor::empty(Shape{n_eval, zdim}, dev);
    gen.normal_(ze);
    std::vector<float> s;
    {
      NoGradGuard no_grad;
      s = G(Var(ze)).value().to_vector();
    }
    std::array<int64_t, kModes> count{};
    int64_t good = 0;
    for (int64_t i = 0; i < n_eval; ++i) {
      for (int k = 0; k < kModes; ++k) {
        const auto c = mode_center(k);
        const double dx = s[size_t(2 * i)] - c[0], dy = s[size_t(2 * i + 1)] - c[1];
        if (std::sqrt(dx * dx + dy * dy) < 3 * noise) {
          ++count[size_t(k)];
          ++good;
          break;
        }
      }
    }
    int covered = 0;
    for (int64_t c : count) covered += c >= n_eval / 100 ? 1 : 0;
    fmt::print("toy_gan: {} of {} modes covered, {:.1f}% of samples within 3 std of a mode\n",
               covered, kModes, 100.0 * double(good) / double(n_eval));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "toy_gan: %s\n", e.what());
    return 1;
  }
}
