// The tape: accumulation, detach, no_grad, parameters, tape lifetime and errors.
#include <catch2/catch.hpp>

#include "engine/ops.h"
#include "tests/harness.h"

using namespace gan;

namespace {
Var leaf(std::vector<float> v, Shape s) { return Var(Tensor::from_vector(v, s), true); }
}  // namespace

TEST_CASE("autograd: a value used twice accumulates both paths", "[autograd][cpu]") {
  Var x = leaf({1, -2, 3}, Shape{3});
  // y = sum(x * x + 3 x) -> dy/dx = 2x + 3
  Var y = sum(add(mul(x, x), scale(x, 3.0)));
  backward(y);
  CHECK(x.grad().to_vector() == std::vector<float>{5, -1, 9});
  CHECK(tape().size() == 0);  // backward consumes the tape
}

TEST_CASE("autograd: detach and no_grad stop gradients", "[autograd][cpu]") {
  Var x = leaf({1, 2}, Shape{2});
  Var y = sum(add(mul(x, x.detach()), x));  // d/dx = x + 1 (the detached factor is constant)
  backward(y);
  CHECK(x.grad().to_vector() == std::vector<float>{2, 3});
  {
    NoGradGuard ng;
    Var z = mul(x, x);
    CHECK_FALSE(z.requires_grad());
    CHECK(tape().size() == 0);
  }
  CHECK(grad_enabled());
  CHECK_THROWS_WITH(backward(Var(Tensor::zeros(Shape{}))),
                    Catch::Contains("backward: the root does not require grad"));
}

TEST_CASE("autograd: parameters accumulate in place; zero_grad keeps the buffer",
          "[autograd][cpu]") {
  Var w = parameter(Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, Shape{2, 3}), "w");
  Var b = parameter(Tensor::from_vector(std::vector<float>{0.5f, -0.5f}, Shape{2}), "b");
  const void* wbuf = w.grad().raw();
  Var x(Tensor::from_vector(std::vector<float>{1, 1, 1, 2, 0, -1}, Shape{2, 3}));
  for (int rep = 1; rep <= 2; ++rep) {
    backward(sum(linear(x, w, b)));
    // dW = sum over rows of x = (3, 1, 0) for each output row, times the step count.
    CHECK(w.grad().to_vector() ==
          std::vector<float>{3.f * rep, 1.f * rep, 0, 3.f * rep, 1.f * rep, 0});
    CHECK(b.grad().to_vector() == std::vector<float>{2.f * rep, 2.f * rep});
    CHECK(w.grad().raw() == wbuf);
  }
  zero_grad({w, b});
  CHECK(w.grad().raw() == wbuf);
  CHECK(w.grad().to_vector() == std::vector<float>(6, 0.f));
}

TEST_CASE("autograd: saved tensors are released with the tape unless retained", "[autograd][cpu]") {
  Var x = leaf({0.5f, -1.f, 2.f}, Shape{3});
  std::weak_ptr<Storage> saved;
  Var y;
  {
    Var t = tanh(x);  // tanh keeps its output for backward
    saved = t.value().storage();
    y = sum(t);
  }
  CHECK_FALSE(saved.expired());  // held by the tape entry
  backward(y, Tensor(), /*retain_tape=*/true);
  CHECK_FALSE(saved.expired());
  const std::vector<float> g1 = x.grad().to_vector();
  backward(y);  // second pass over the retained tape: leaf gradients add up
  const std::vector<float> g2 = x.grad().to_vector();
  for (size_t i = 0; i < g1.size(); ++i) CHECK(g2[i] == Approx(2 * g1[i]));
  CHECK(saved.expired());
  // relu keeps only its output, not its input.
  std::weak_ptr<Storage> in;
  {
    Var a = scale(x, 2.0);
    in = a.value().storage();
    y = sum(relu(a));
  }
  CHECK(in.expired());
  tape().clear();
}

TEST_CASE("autograd: shape-checked accumulation and non-scalar roots", "[autograd][cpu]") {
  GradNode node;
  node.shape = Shape{3};
  node.requires_grad = true;
  CHECK_THROWS_WITH(accumulate_grad(node, Tensor::zeros(Shape{4}), "myop"),
                    "backward of myop: gradient of shape (4,) for an input of shape (3,)");
  Var x = leaf({1, 2, 3}, Shape{3});
  Var y = mul(x, x);
  CHECK_THROWS_WITH(backward(y), "backward: root of shape (3,) is not a scalar; pass its gradient");
  backward(y, Tensor::from_vector(std::vector<float>{1, 0, -1}, Shape{3}));
  CHECK(x.grad().to_vector() == std::vector<float>{2, 0, -6});
}

TEST_CASE("autograd: intermediate gradients on request", "[autograd][cpu]") {
  Var x = leaf({1, 2}, Shape{2});
  Var h = scale(x, 3.0);
  h.retain_grad();
  Var y = sum(mul(h, h));
  backward(y);
  CHECK(h.grad().to_vector() == std::vector<float>{6, 12});
  CHECK(x.grad().to_vector() == std::vector<float>{18, 36});
}

TEST_CASE("autograd: multi-output ops run when any output gets a gradient", "[autograd][cpu]") {
  Var x = leaf({1, 2}, Shape{2});
  // Outputs (2x, 3x); the closure sees an undefined gradient for an unused output.
  auto twice_thrice = [](const Var& in) {
    Tensor a = Tensor::empty_like(in.value()), b = Tensor::empty_like(in.value());
    const auto v = in.value().to_vector();
    a.copy_from(Tensor::from_vector(std::vector<float>{2 * v[0], 2 * v[1]}, Shape{2}));
    b.copy_from(Tensor::from_vector(std::vector<float>{3 * v[0], 3 * v[1]}, Shape{2}));
    return record_multi("twice_thrice", {in}, {a, b}, [](const BackwardContext& c) {
      std::vector<float> g(2, 0.f);
      if (c.dout_at(0).defined())
        for (int i = 0; i < 2; ++i) g[size_t(i)] += 2 * c.dout_at(0).to_vector()[size_t(i)];
      if (c.dout_at(1).defined())
        for (int i = 0; i < 2; ++i) g[size_t(i)] += 3 * c.dout_at(1).to_vector()[size_t(i)];
      c.add(0, Tensor::from_vector(g, Shape{2}));
    });
  };
  auto outs = twice_thrice(x);
  backward(sum(outs[1]));  // only the second output is used
  CHECK(x.grad().to_vector() == std::vector<float>{3, 3});
  zero_grad({x});
  outs = twice_thrice(x);
  backward(sum(add(outs[0], outs[1])));
  CHECK(x.grad().to_vector() == std::vector<float>{5, 5});
}
