// Adam against torch.optim.Adam's definition; the multi-tensor CUDA kernel against the CPU.
#include <cmath>

#include <catch2/catch.hpp>

#include "engine/adam.h"
#include "engine/random.h"
#include "tests/harness.h"

using namespace gan;

namespace {

// torch.optim.Adam's documented algorithm (amsgrad=False, maximize=False), written out in double
// independently of kernels/adam.h.
struct TorchAdam {
  double lr, b1, b2, eps, wd;
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (wd != 0) g += wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double mhat = m[i] / (1 - std::pow(b1, t));
      const double vhat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

Var param64(const std::vector<double>& v) {
  return parameter(Tensor::from_vector(v, Shape{int64_t(v.size())}));
}

void set_grad(Var& p, const std::vector<double>& g) {
  Tensor gt = p.grad();
  gt.copy_from(Tensor::from_vector(g, gt.shape()));
}

}  // namespace

TEST_CASE("adam: the first step moves by lr g over (|g| + eps)", "[adam][cpu]") {
  const std::vector<double> p0 = {1.0, -2.0, 0.5, 3.0}, g = {0.5, -3.0, 1e-3, 0.0};
  Var p = param64(p0);
  AdamOptions o;
  o.lr = 0.1;
  Adam adam({p}, o);
  set_grad(p, g);
  adam.step();
  const auto got = p.value().to_double_vector();
  for (size_t i = 0; i < p0.size(); ++i)
    CHECK(got[i] == Approx(p0[i] - 0.1 * g[i] / (std::fabs(g[i]) + 1e-8)).epsilon(1e-14));
  CHECK(adam.step_count() == 1);
  // State: m = (1 - beta1) g, v = (1 - beta2) g^2 after one step.
  const auto m = adam.exp_avg()[0].to_double_vector(), v = adam.exp_avg_sq()[0].to_double_vector();
  for (size_t i = 0; i < p0.size(); ++i) {
    CHECK(m[i] == Approx(0.1 * g[i]).epsilon(1e-14));
    CHECK(v[i] == Approx(0.001 * g[i] * g[i]).epsilon(1e-14));
  }
}

TEST_CASE("adam: matches torch.optim.Adam's algorithm over many steps", "[adam][cpu]") {
  for (const auto& [b1, b2, wd, lr] :
       {std::tuple{0.9, 0.999, 0.0, 1e-3}, std::tuple{0.5, 0.999, 0.0, 2e-4},  // DCGAN
        std::tuple{0.0, 0.9, 0.0, 4e-4},                                       // SAGAN D
        std::tuple{0.9, 0.99, 0.01, 0.05}}) {
    INFO("betas " << b1 << ", " << b2 << " wd " << wd << " lr " << lr);
    std::vector<double> ref = {0.3, -1.2, 2.5, 0.0, 1e-4, -7.0, 0.9};
    Var p = param64(ref);
    AdamOptions o;
    o.lr = lr, o.beta1 = b1, o.beta2 = b2, o.weight_decay = wd;
    Adam adam({p}, o);
    TorchAdam torch{lr, b1, b2, 1e-8, wd, {}, {}, 0};
    for (int t = 1; t <= 25; ++t) {
      std::vector<double> g(ref.size());
      for (size_t i = 0; i < g.size(); ++i) g[i] = std::sin(0.7 * t + 1.3 * double(i)) * (i + 1);
      set_grad(p, g);
      adam.step();
      torch.step(ref, g);
    }
    const auto got = p.value().to_double_vector();
    for (size_t i = 0; i < ref.size(); ++i)
      CHECK(got[i] == Approx(ref[i]).epsilon(1e-12).margin(1e-15));
  }
}

TEST_CASE("adam: learning-rate changes and option errors", "[adam][cpu]") {
  Var p = param64({1.0});
  AdamOptions o;
  o.lr = 0.1;
  Adam adam({p}, o);
  set_grad(p, {1.0});
  adam.set_lr(0.0);
  adam.step();
  CHECK(p.value().to_double_vector()[0] == 1.0);  // lr 0: no move, but the step counts
  CHECK(adam.step_count() == 1);
  o.beta1 = 1.0;
  CHECK_THROWS_WITH(Adam({p}, o), "adam: betas (1, 0.999) outside [0, 1)");
  Var notparam(Tensor::zeros(Shape{2}), true);
  CHECK_THROWS_WITH(Adam({notparam}, AdamOptions{}), Catch::Contains("is not a parameter"));
}

TEST_CASE("adam cuda: the multi-tensor kernel matches the cpu", "[adam][cuda]") {
  GAN_REQUIRE_GPU();
  // Sizes around the 4096-element chunk, odd and > 1024.
  const std::vector<Shape> shapes = {Shape{1},    Shape{7},     Shape{4096},
                                     Shape{4097}, Shape{10007}, Shape{3, 1100}};
  AdamOptions o;
  o.lr = 2e-3, o.beta1 = 0.5, o.beta2 = 0.999, o.weight_decay = 0.01;
  Generator gen(3);
  std::vector<Var> pc, pg;
  for (const Shape& s : shapes) {
    Tensor t = Tensor::empty(s);
    gen.normal_(t);
    pc.push_back(parameter(t.clone()));
    pg.push_back(parameter(t.to(Device::CUDA)));
  }
  Adam ac(pc, o), ag(pg, o);
  for (int step = 1; step <= 6; ++step) {
    if (step == 4) {
      ac.set_lr(5e-4);
      ag.set_lr(5e-4);
    }
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor g = Tensor::empty(shapes[i]);
      gen.normal_(g);
      pc[i].grad().copy_from(g);
      pg[i].grad().copy_from(g);
    }
    ac.step();
    ag.step();
  }
  CHECK(ag.step_count() == 6);
  for (size_t i = 0; i < shapes.size(); ++i) {
    INFO("tensor " << i << " " << shapes[i].str());
    // Float32 arithmetic on the GPU vs double in the reference: a few float ulps.
    CHECK(test::max_rel_error(pg[i].value(), pc[i].value()) < 1e-6);
    CHECK(test::max_rel_error(ag.exp_avg()[i], ac.exp_avg()[i]) < 1e-6);
    CHECK(test::max_rel_error(ag.exp_avg_sq()[i], ac.exp_avg_sq()[i]) < 1e-6);
  }
}
