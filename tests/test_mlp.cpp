// End-to-end: a 3-layer MLP trained with the engine on a fixed toy regression problem.
#include <cmath>

#include <catch2/catch.hpp>

#include "engine/adam.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "tests/harness.h"

using namespace gan;

namespace {

// Fits y = sin(3 x0) cos(2 x1) on a fixed 16 x 16 grid in [-1, 1]^2 with a 2-32-32-1 tanh MLP,
// mean squared error, Adam lr 1e-2, for `steps` steps. Returns the loss after each step.
std::vector<float> train_mlp(Device dev, int steps) {
  std::vector<float> xs, ys;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      const float a = -1.f + 2.f * i / 15.f, b = -1.f + 2.f * j / 15.f;
      xs.push_back(a), xs.push_back(b);
      ys.push_back(std::sin(3.f * a) * std::cos(2.f * b));
    }
  Var x(Tensor::from_vector(xs, Shape{256, 2}, dev));
  Var y(Tensor::from_vector(ys, Shape{256, 1}, dev));
  // Initialised on the CPU from one seed, then moved: both devices start from the same weights.
  Generator gen(42);
  std::vector<Var> params;
  const int64_t sizes[] = {2, 32, 32, 1};
  for (int l = 0; l < 3; ++l) {
    const double bound = 1.0 / std::sqrt(double(sizes[l]));
    Tensor w = Tensor::empty(Shape{sizes[l + 1], sizes[l]}), b = Tensor::empty(Shape{sizes[l + 1]});
    gen.uniform_(w, -bound, bound);
    gen.uniform_(b, -bound, bound);
    params.push_back(parameter(w.to(dev)));
    params.push_back(parameter(b.to(dev)));
  }
  AdamOptions o;
  o.lr = 1e-2;
  Adam adam(params, o);
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) {
    Var h = tanh(linear(x, params[0], params[1]));
    h = tanh(linear(h, params[2], params[3]));
    Var out = linear(h, params[4], params[5]);
    Var d = sub(out, y);
    Var loss = mean(mul(d, d));
    zero_grad(params);
    backward(loss);
    adam.step();
    losses.push_back(loss.value().item());
  }
  return losses;
}

}  // namespace

TEST_CASE("mlp: 100 Adam steps fit the toy problem on the cpu", "[mlp][cpu]") {
  const std::vector<float> l = train_mlp(Device::CPU, 100);
  INFO("initial loss " << l.front() << ", final " << l.back());
  // The target's variance is about 0.14; predicting a constant leaves that much. The fit must do
  // much better than a constant.
  CHECK(l.front() > 0.1);
  CHECK(l.back() < 0.02);
}

TEST_CASE("mlp cuda: the same 100 steps reach the cpu loss within 1e-4", "[mlp][cuda]") {
  GAN_REQUIRE_GPU();
  const std::vector<float> c = train_mlp(Device::CPU, 100), g = train_mlp(Device::CUDA, 100);
  INFO("cpu " << c.back() << ", gpu " << g.back());
  CHECK(std::fabs(c.back() - g.back()) < 1e-4);
  CHECK(g.back() < 0.02);
}
