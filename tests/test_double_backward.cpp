// Double backward (grad with create_graph, engine/autograd.h) through the op harness: each case
// wraps an op f into h(x) = sum_i <R_i, d<U, f(x)>/dx_i>, the gradients taken by grad(...,
// create_graph = true) with fixed pseudo-random U and R_i. The harness then checks h's gradient,
// i.e. the op's double backward, against five-point finite differences in float64 (1e-6), float32
// against float64, and the GPU against the CPU (the interpreter without a GPU).
#include <cmath>

#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/grad.h"
#include "engine/ops.h"
#include "tests/harness.h"

namespace {

using gan::Conv2dOptions;
using gan::DType;
using gan::Shape;
using gan::Tensor;
using gan::Var;
using gan::test::Input;
using gan::test::OpCase;

// Fixed values in [-1, 1] from a seed, in the dtype and on the device of `like`.
Var fixed(const Shape& shape, int seed, const Tensor& like) {
  std::vector<double> v(size_t(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(1.7 * double(i) + 0.91 * seed + 0.3);
  if (like.dtype() == DType::F64) return Var(Tensor::from_vector(v, shape));
  return Var(Tensor::from_vector(std::vector<float>(v.begin(), v.end()), shape, like.device()));
}

// f's double backward through the inputs `wrt` (the others are still checked by the outer
// finite differences: h depends on them through the gradients).
OpCase second_order(const std::string& name, std::vector<Input> inputs,
                    std::function<Var(const std::vector<Var>&)> f, std::vector<int> wrt) {
  OpCase c;
  c.name = "grad of " + name;
  c.inputs = std::move(inputs);
  c.fn = [f, wrt](const std::vector<Var>& in) {
    // The finite differences evaluate h under NoGradGuard with plain inputs: h itself needs a
    // tape, so record here and drop what was recorded when the caller records nothing.
    const bool outer = gan::grad_enabled();
    const size_t n0 = gan::tape().size();
    gan::EnableGradGuard enable;
    std::vector<Var> v = in;
    for (int i : wrt)
      if (!v[size_t(i)].requires_grad()) v[size_t(i)] = Var(v[size_t(i)].value(), true);
    if (outer && in[0].value().dtype() == DType::F64) {
      // First order, on the float64 reference run: grad()'s values equal the tape's backward
      // (the finite differences below check h against itself, i.e. the VJPs' derivatives, not
      // that the VJPs are the gradients).
      const size_t n1 = gan::tape().size();
      std::vector<Var> v2;
      for (const Var& x : in) v2.push_back(Var(x.value(), true));
      const Var y2 = f(v2);
      std::vector<Var> xs2;
      for (int i : wrt) xs2.push_back(v2[size_t(i)]);
      const Var u = fixed(y2.shape(), 1, y2.value());
      const std::vector<Var> g2 = gan::grad({y2}, xs2, {u}, false);
      gan::backward(y2, u.value(), true);
      for (size_t k = 0; k < g2.size(); ++k) {
        INFO("first-order gradient of input " << wrt[k]);
        CHECK(gan::test::max_rel_error(g2[k].value(), xs2[k].grad()) < 1e-12);
      }
      auto& e = gan::tape().entries();
      e.erase(e.begin() + long(n1), e.end());
    }
    const Var y = f(v);
    std::vector<Var> xs;
    for (int i : wrt) xs.push_back(v[size_t(i)]);
    const std::vector<Var> g = gan::grad({y}, xs, {fixed(y.shape(), 1, y.value())}, true);
    Var h;
    for (size_t k = 0; k < g.size(); ++k) {
      const Var t = gan::sum(gan::mul(g[k], fixed(xs[k].shape(), int(k) + 2, y.value())));
      h = h.defined() ? gan::add(h, t) : t;
    }
    if (!outer) {
      auto& e = gan::tape().entries();
      e.erase(e.begin() + long(n0), e.end());
      return h.detach();
    }
    return h;
  };
  c.nan_parity = false;  // the seeds U and R are constants, not inputs
  c.fd_samples = 12;
  return c;
}

Input in(Shape s, double lo = -1, double hi = 1, std::vector<double> kinks = {}) {
  Input i;
  i.shape = s, i.lo = lo, i.hi = hi, i.kinks = std::move(kinks);
  return i;
}

std::vector<OpCase> elementwise_cases() {
  std::vector<OpCase> cases;
  const Shape s{2, 3, 4, 5};
  auto unary = [&](const std::string& n, std::function<Var(const Var&)> f, double lo, double hi,
                   std::vector<double> kinks) {
    // f(x) * x: a linear op alone has a constant gradient (no second derivative to check).
    cases.push_back(second_order(n + "(x) * x", {in(s, lo, hi, kinks)},
                                 [f](const std::vector<Var>& v) { return gan::mul(f(v[0]), v[0]); },
                                 {0}));
  };
  unary("scale", [](const Var& x) { return gan::scale(x, -1.5); }, -1, 1, {});
  unary("relu", [](const Var& x) { return gan::relu(x); }, -1, 1, {0.0});
  unary("leaky_relu", [](const Var& x) { return gan::leaky_relu(x, 0.2); }, -1, 1, {0.0});
  unary("tanh", [](const Var& x) { return gan::tanh(x); }, -2, 2, {});
  unary("sigmoid", [](const Var& x) { return gan::sigmoid(x); }, -3, 3, {});
  unary("sqrt", [](const Var& x) { return gan::sqrt(x); }, 0.3, 3, {});
  // Binary ops, broadcasting per channel and per sample (the interpolation of WGAN-GP).
  using BinaryFn = Var (*)(const Var&, const Var&);
  const std::pair<const char*, BinaryFn> ops[] = {
      {"add", gan::add}, {"sub", gan::sub}, {"mul", gan::mul}, {"div", gan::div}};
  for (const auto& [n, f] : ops)
    for (const Shape& sb : {s, Shape{5}, Shape{2, 1, 1, 1}})
      cases.push_back(second_order(std::string(n) + " " + s.str() + " " + sb.str(),
                                   {in(s), in(sb, 0.5, 1.5)},
                                   [f = f](const std::vector<Var>& v) {
                                     const Var y = f(v[0], v[1]);
                                     return gan::mul(y, y);  // add and sub alone are linear
                                   },
                                   {0, 1}));
  return cases;
}

std::vector<OpCase> reduce_shape_cases() {
  std::vector<OpCase> cases;
  const Shape s{2, 3, 4, 5};
  // sum and mean are linear: h is linear in x; products make the second derivative non-zero.
  cases.push_back(second_order("sum of x*x over (1, 2, 3)", {in(s)},
                               [](const std::vector<Var>& v) {
                                 return gan::sum(gan::mul(v[0], v[0]), {1, 2, 3});
                               },
                               {0}));
  cases.push_back(second_order(
      "mean of x*x over 0, keepdim", {in(s)},
      [](const std::vector<Var>& v) { return gan::mean(gan::mul(v[0], v[0]), {0}, true); }, {0}));
  cases.push_back(
      second_order("sum of x*x", {in(s)},
                   [](const std::vector<Var>& v) { return gan::sum(gan::mul(v[0], v[0])); }, {0}));
  cases.push_back(
      second_order("mean of x*x", {in(s)},
                   [](const std::vector<Var>& v) { return gan::mean(gan::mul(v[0], v[0])); }, {0}));
  cases.push_back(second_order(
      "flatten of x*x", {in(s)},
      [](const std::vector<Var>& v) { return gan::flatten(gan::mul(v[0], v[0])); }, {0}));
  return cases;
}

// The projection head is bilinear in (h, w + y e): its double backward couples every input.
// Squared, so that the bias reaches the gradients too. wrt all (each gradient's derivative), and
// wrt h only (a gradient penalty on D's features, whose backward reaches w, the bias, y and e
// through the VJP).
std::vector<OpCase> projection_head_cases() {
  std::vector<OpCase> cases;
  Input y = in(Shape{4, 3});
  y.lo = 0.1, y.hi = 1;  // non-zero weights
  const auto f = [](const std::vector<Var>& v) {
    const Var out = gan::projection_head(v[0], v[1], v[2], v[3], v[4]);
    return gan::mul(out, out);
  };
  for (const std::vector<int>& wrt : {std::vector<int>{0, 1, 2, 3, 4}, std::vector<int>{0}})
    cases.push_back(second_order(
        std::string("projection_head (4, 6), 3 classes, wrt ") + (wrt.size() > 1 ? "all" : "h"),
        {in(Shape{4, 6}), in(Shape{1, 6}), in(Shape{1}), y, in(Shape{3, 6})}, f, wrt));
  return cases;
}

std::vector<OpCase> conv_linear_cases() {
  std::vector<OpCase> cases;
  struct C {
    Shape x, w;
    Conv2dOptions o;
  };
  Conv2dOptions s2;
  s2.stride_h = s2.stride_w = 2, s2.pad_h = s2.pad_w = 1;
  Conv2dOptions s1;
  s1.pad_h = s1.pad_w = 1;
  Conv2dOptions odd;  // stride 2 on an odd size: the input gradient needs an output padding
  odd.stride_h = odd.stride_w = 2, odd.pad_h = 1, odd.pad_w = 0;
  for (const C& k :
       {C{Shape{2, 8, 8, 3}, Shape{4, 4, 4, 3}, s2}, C{Shape{1, 5, 6, 2}, Shape{3, 3, 3, 2}, s1},
        C{Shape{2, 7, 9, 3}, Shape{2, 3, 3, 3}, odd}}) {
    const Conv2dOptions o = k.o;
    // conv2d followed by x*x (so the double backward reaches the weight and the input).
    cases.push_back(second_order("conv2d " + k.x.str() + " " + k.w.str(),
                                 {in(k.x), in(k.w), in(Shape{k.w[0]})},
                                 [o](const std::vector<Var>& v) {
                                   const Var y = gan::conv2d(v[0], v[1], v[2], o);
                                   return gan::mul(y, y);
                                 },
                                 {0, 2}));
    // conv_transpose2d with weight (Cin, kh, kw, Cout) = conv2d's weight layout swapped.
    const Shape wt{k.x[3], k.w[1], k.w[2], k.w[0]};
    const int64_t hp = (k.x[1] + 2 * o.pad_h - (k.w[1] - 1) - 1) / o.stride_h + 1;
    const int64_t wp = (k.x[2] + 2 * o.pad_w - (k.w[2] - 1) - 1) / o.stride_w + 1;
    cases.push_back(second_order("conv_transpose2d " + wt.str(),
                                 {in(Shape{k.x[0], hp, wp, k.x[3]}), in(wt), in(Shape{k.w[0]})},
                                 [o](const std::vector<Var>& v) {
                                   const Var y = gan::conv_transpose2d(v[0], v[1], v[2], o);
                                   return gan::mul(y, y);
                                 },
                                 {0, 2}));
  }
  // With the activation fused (SAGAN's D: leaky 0.1 after each convolution; G: ReLU).
  Conv2dOptions leaky = s2;
  leaky.act = gan::Activation::kLeakyRelu, leaky.slope = 0.1;
  cases.push_back(second_order("conv2d + leaky_relu (2, 8, 8, 3)",
                               {in(Shape{2, 8, 8, 3}), in(Shape{4, 4, 4, 3}), in(Shape{4})},
                               [leaky](const std::vector<Var>& v) {
                                 const Var y = gan::conv2d(v[0], v[1], v[2], leaky);
                                 return gan::mul(y, y);
                               },
                               {0, 2}));
  Conv2dOptions relu = s2;
  relu.act = gan::Activation::kRelu;
  cases.push_back(second_order("conv_transpose2d + relu (2, 4, 4, 3)",
                               {in(Shape{2, 4, 4, 3}), in(Shape{3, 4, 4, 5}), in(Shape{5})},
                               [relu](const std::vector<Var>& v) {
                                 const Var y = gan::conv_transpose2d(v[0], v[1], v[2], relu);
                                 return gan::mul(y, y);
                               },
                               {0, 2}));
  Conv2dOptions tanh = s2;
  tanh.act = gan::Activation::kTanh;
  cases.push_back(second_order("conv_transpose2d + tanh (2, 4, 4, 3)",
                               {in(Shape{2, 4, 4, 3}), in(Shape{3, 4, 4, 5}), in(Shape{5})},
                               [tanh](const std::vector<Var>& v) {
                                 const Var y = gan::conv_transpose2d(v[0], v[1], v[2], tanh);
                                 return gan::mul(y, y);
                               },
                               {0, 2}));
  cases.push_back(second_order("conv2d + tanh (2, 8, 8, 3)",
                               {in(Shape{2, 8, 8, 3}), in(Shape{4, 4, 4, 3}), in(Shape{4})},
                               [tanh](const std::vector<Var>& v) {
                                 const Var y = gan::conv2d(v[0], v[1], v[2], tanh);
                                 return gan::mul(y, y);
                               },
                               {0, 2}));
  cases.push_back(second_order("linear (2, 3, 6) x (4, 6)",
                               {in(Shape{2, 3, 6}), in(Shape{4, 6}), in(Shape{4})},
                               [](const std::vector<Var>& v) {
                                 const Var y = gan::linear(v[0], v[1], v[2]);
                                 return gan::mul(y, y);
                               },
                               {0, 2}));
  return cases;
}

std::vector<OpCase> batch_norm_cases() {
  std::vector<OpCase> cases;
  const Shape s{3, 4, 4, 5};
  for (bool training : {true, false})
    for (gan::Activation act :
         {gan::Activation::kNone, gan::Activation::kRelu, gan::Activation::kLeakyRelu}) {
      const std::string name = std::string("batch_norm ") + (training ? "train" : "eval") +
                               (act == gan::Activation::kNone   ? ""
                                : act == gan::Activation::kRelu ? " relu"
                                                                : " leaky_relu");
      // Squared, so the second derivative reaches gamma and beta as well; kinks of the
      // activation are not controlled here (the output of the normalisation), so the
      // activations use a seed whose values stay clear of 0 at these sizes. gamma and beta per
      // channel (5), then per sample (3, 5): conditional batch norm.
      for (const Shape& ps : {Shape{5}, Shape{3, 5}})
        cases.push_back(second_order(
            name + (ps.ndim == 2 ? " per-sample gamma beta" : ""),
            {in(s, -2, 2), in(ps, 0.5, 1.5), in(ps, -0.5, 0.5)},
            [training, act](const std::vector<Var>& v) {
              const Tensor rm = Tensor::full(Shape{5}, 0.1, v[0].device(), v[0].value().dtype());
              const Tensor rv = Tensor::full(Shape{5}, 1.3, v[0].device(), v[0].value().dtype());
              const Var y =
                  gan::batch_norm(v[0], v[1], v[2], rm, rv, training, 0.1, 1e-5, act, 0.2);
              return gan::mul(y, y);
            },
            {0, 1, 2}));
    }
  return cases;
}

std::vector<OpCase> attention_cases() {
  std::vector<OpCase> cases;
  cases.push_back(second_order("matmul (2, 3, 4) x (2, 4, 5)",
                               {in(Shape{2, 3, 4}), in(Shape{2, 4, 5})},
                               [](const std::vector<Var>& v) {
                                 const Var y = gan::matmul(v[0], v[1]);
                                 return gan::mul(y, y);
                               },
                               {0, 1}));
  cases.push_back(second_order("transpose (2, 3, 4)", {in(Shape{2, 3, 4})},
                               [](const std::vector<Var>& v) {
                                 const Var y = gan::transpose(v[0]);
                                 return gan::mul(y, y);
                               },
                               {0}));
  cases.push_back(second_order("softmax (3, 7)", {in(Shape{3, 7}, -2, 2)},
                               [](const std::vector<Var>& v) { return gan::softmax(v[0]); }, {0}));
  for (int64_t n : {1, 5, 16}) {
    cases.push_back(second_order(
        "attention N" + std::to_string(n),
        {in(Shape{2, n, 3}), in(Shape{2, n, 3}), in(Shape{2, n, 4})},
        [](const std::vector<Var>& v) { return gan::attention(v[0], v[1], v[2]); }, {0, 1, 2}));
    // The SAGAN block: y = gamma softmax(q k^T) v + x, d = 2, dv = 8 (C = 8 at 4 x 4 or n pixels).
    cases.push_back(second_order("self_attention N" + std::to_string(n),
                                 {in(Shape{2, n, 12}), in(Shape{1}, 0.5, 1.5), in(Shape{2, n, 8})},
                                 [](const std::vector<Var>& v) {
                                   const Var y = gan::self_attention(v[0], 2, v[1], v[2]);
                                   return gan::mul(y, y);  // so x's second derivative is not zero
                                 },
                                 {0, 1, 2}));
  }
  // The same on the GPU with the tensor-core kernels pinned in 3xTF32 (the fp32-tc math mode:
  // the first-order pass runs them; GEMMs stay strict).
  for (int64_t n : {5, 16}) {
    struct Pin {
      gan::AttnKernel k = gan::attention_kernel();
      gan::MathMode m = gan::math_mode();
      Pin() {
        gan::set_attention_kernel(gan::AttnKernel::kFlash);
        gan::set_math_mode(gan::MathMode::kAccurate);
      }
      ~Pin() {
        gan::set_attention_kernel(k);
        gan::set_math_mode(m);
      }
    };
    cases.push_back(second_order("attention flash-3xtf32 N" + std::to_string(n),
                                 {in(Shape{2, n, 3}), in(Shape{2, n, 3}), in(Shape{2, n, 4})},
                                 [](const std::vector<Var>& v) {
                                   Pin pin;
                                   return gan::attention(v[0], v[1], v[2]);
                                 },
                                 {0, 1, 2}));
    cases.push_back(second_order("self_attention flash-3xtf32 N" + std::to_string(n),
                                 {in(Shape{2, n, 12}), in(Shape{1}, 0.5, 1.5), in(Shape{2, n, 8})},
                                 [](const std::vector<Var>& v) {
                                   Pin pin;
                                   const Var y = gan::self_attention(v[0], 2, v[1], v[2]);
                                   return gan::mul(y, y);
                                 },
                                 {0, 1, 2}));
  }
  return cases;
}

// Spectral norm in eval mode (u, v fixed: what its backward and VJP assume), squared so the
// second derivative is not trivially the VJP's own; and max pooling.
std::vector<OpCase> sn_pool_cases() {
  std::vector<OpCase> cases;
  for (bool transposed : {false, true}) {
    // conv2d weight (K, kh, kw, C): rows K; conv_transpose2d weight (Cin, kh, kw, Cout) holds W^T:
    // rows Cout, cols Cin kh kw.
    cases.push_back(
        second_order(std::string("spectral_norm (3, 2, 2, 4)") + (transposed ? " transposed" : ""),
                     {in(Shape{3, 2, 2, 4}, 0.2, 1.0)},
                     [transposed](const std::vector<Var>& v) {
                       const Shape& s = v[0].shape();
                       gan::SpectralNormLayer l;
                       l.weight = v[0];
                       l.rows = transposed ? s[3] : s[0];
                       l.cols = s.numel() / l.rows;
                       l.transposed = transposed;
                       l.u = fixed(Shape{l.rows}, 7, v[0].value()).value();
                       l.v = fixed(Shape{l.cols}, 8, v[0].value()).value();
                       l.sigma = Tensor::empty(Shape{1}, v[0].device(), v[0].value().dtype());
                       std::vector<gan::SpectralNormLayer> layers{l};
                       const Var w = gan::spectral_norm(layers, false)[0];
                       return gan::mul(w, w);
                     },
                     {0}));
  }
  cases.push_back(second_order("max_pool2d 2x2 (2, 4, 6, 3)", {in(Shape{2, 4, 6, 3})},
                               [](const std::vector<Var>& v) {
                                 const Var y = gan::max_pool2d(v[0]);
                                 return gan::mul(y, y);
                               },
                               {0}));
  // Its VJP is its adjoint op, whose VJP is upsample_nearest again: the squared output makes the
  // second derivative go through both.
  cases.push_back(second_order("upsample_nearest 2x (2, 3, 4, 5)", {in(Shape{2, 3, 4, 5})},
                               [](const std::vector<Var>& v) {
                                 const Var y = gan::upsample_nearest(v[0], 2);
                                 return gan::mul(y, y);
                               },
                               {0}));
  return cases;
}

}  // namespace

GAN_OP_TEST("double backward spectral_norm max_pool2d upsample", sn_pool_cases)
GAN_OP_TEST("double backward attention", attention_cases)
GAN_OP_TEST("double backward batch_norm", batch_norm_cases)
GAN_OP_TEST("double backward elementwise", elementwise_cases)
GAN_OP_TEST("double backward reductions and shapes", reduce_shape_cases)
GAN_OP_TEST("double backward conv and linear", conv_linear_cases)
GAN_OP_TEST("double backward projection_head", projection_head_cases)

TEST_CASE("grad: plain values without create_graph, zeros for unused inputs, clear errors",
          "[autograd][cpu]") {
  const Var x(Tensor::from_vector(std::vector<double>{1, 2, 3}, Shape{3}), true);
  const Var z(Tensor::from_vector(std::vector<double>{5}, Shape{1}), true);
  const Var y = gan::sum(gan::mul(x, x));
  const auto g = gan::grad({y}, {x, z});
  const auto gx = g[0].value().to_vector();
  CHECK(gx == std::vector<float>{2, 4, 6});
  CHECK(!g[0].requires_grad());  // not recorded
  CHECK(g[1].value().to_vector() == std::vector<float>{0});
  CHECK(!x.grad().defined());  // grad() touches no .grad
  // The tape is kept: backward still runs through the forward afterwards.
  gan::backward(y);
  CHECK(x.grad().to_vector() == std::vector<float>{2, 4, 6});
  // An op without a VJP on the path is named.
  const Var a(Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, Shape{4}), true);
  const Var p = gan::bce_with_logits(a, 1.0);
  REQUIRE_THROWS_WITH(gan::grad({p}, {a}, {}, true), Catch::Contains("has no double backward"));
  gan::tape().clear();
}

namespace {

// The WGAN-GP penalty of a discriminator at fixed inputs x: mean_i (|d D(x) / d x_i| - 1)^2,
// as a function of D's parameters (the harness's inputs after x).
Var penalty(const Var& x_in, const std::function<Var(const Var&)>& d) {
  const bool outer = gan::grad_enabled();
  const size_t n0 = gan::tape().size();
  gan::EnableGradGuard enable;
  const Var x(x_in.value(), true);
  const Var y = d(x);
  const Var ones(Tensor::full(y.shape(), 1.0, y.device(), y.value().dtype()));
  const Var g = gan::grad({y}, {x}, {ones}, true)[0];
  const Var n = gan::sqrt(gan::sum(gan::mul(g, g), {1, 2, 3}));
  const Var one(Tensor::full(Shape{}, 1.0, y.device(), y.value().dtype()));
  const Var dev = gan::sub(n, one);
  Var p = gan::mean(gan::mul(dev, dev));
  if (!outer) {  // the finite differences' evaluations: drop what was recorded
    auto& e = gan::tape().entries();
    e.erase(e.begin() + long(n0), e.end());
    p = p.detach();
  }
  return p;
}

// Spectral norm in eval mode with fixed positive u, v (sigma = u^T W v): what the backward
// assumes (u and v constants), so finite differences see the same function.
Var sn(const Var& w) {
  const Shape& s = w.shape();
  gan::SpectralNormLayer l;
  l.weight = w;
  l.rows = s[0];
  l.cols = s.numel() / s[0];
  const auto unit = [&](int64_t n) {
    return Tensor::full(Shape{n}, 1.0 / std::sqrt(double(n)), w.device(), w.value().dtype());
  };
  l.u = unit(l.rows), l.v = unit(l.cols);
  l.sigma = Tensor::empty(Shape{1}, w.device(), w.value().dtype());
  std::vector<gan::SpectralNormLayer> layers{l};
  return gan::spectral_norm(layers, false)[0];
}

Conv2dOptions conv_opts(int stride, int pad) {
  Conv2dOptions o;
  o.stride_h = o.stride_w = stride, o.pad_h = o.pad_w = pad;
  return o;
}

// A small SAGAN discriminator: SN conv 4x4/2 -> leaky relu -> self-attention (SN 1x1 projection
// to q | k | v, gamma) -> SN conv 4x4 -> one logit per image (no bias: the penalty does not depend
// on it). Inputs: x, w1, b1, wqkv, bqkv, gamma, w2.
OpCase sagan_penalty_case() {
  OpCase c;
  c.name = "WGAN-GP penalty of a small SAGAN discriminator (attention included)";
  Input x = in(Shape{2, 8, 8, 1});
  x.requires_grad = false;
  // Positive weights keep each sigma = u^T W v away from 0.
  c.inputs = {x,
              in(Shape{8, 4, 4, 1}, 0.2, 1.0),
              in(Shape{8}),
              in(Shape{10, 1, 1, 8}, 0.2, 1.0),
              in(Shape{10}),
              in(Shape{1}, 0.5, 1.0),
              in(Shape{1, 4, 4, 8}, 0.2, 1.0)};
  c.fn = [](const std::vector<Var>& v) {
    return penalty(v[0], [&](const Var& img) {
      Var h = gan::leaky_relu(gan::conv2d(img, sn(v[1]), v[2], conv_opts(2, 1)), 0.1);
      const Var qkv = gan::conv2d(h, sn(v[3]), v[4], conv_opts(1, 0));
      h = gan::self_attention(gan::reshape(qkv, Shape{2, 16, 10}), 1, v[5], h);
      return gan::conv2d(h, sn(v[6]), Var(), conv_opts(1, 0));
    });
  };
  c.fd_samples = 8;
  c.nan_parity = false;
  c.tol_fwd = c.tol_bwd = 1e-4;
  return c;
}

// A small DCGAN discriminator: conv 4x4/2 -> leaky relu -> conv 4x4/2 -> batch norm (training,
// fused leaky relu) -> conv 2x2 -> one logit. Inputs: x, w1, w2, gamma, beta, w3.
OpCase dcgan_penalty_case() {
  OpCase c;
  c.name = "WGAN-GP penalty of a small DCGAN discriminator (batch norm in training mode)";
  Input x = in(Shape{3, 8, 8, 1});
  x.requires_grad = false;
  // beta shifts the pre-activation only: the input gradient, hence the penalty, does not depend
  // on it (but through the activation's kinks), so it is an input without a gradient here.
  Input beta = in(Shape{8}, -0.5, 0.5);
  beta.requires_grad = false;
  c.inputs = {x,    in(Shape{4, 4, 4, 1}), in(Shape{8, 4, 4, 4}), in(Shape{8}, 0.5, 1.5),
              beta, in(Shape{1, 2, 2, 8})};
  c.fn = [](const std::vector<Var>& v) {
    return penalty(v[0], [&](const Var& img) {
      const Var h = gan::leaky_relu(gan::conv2d(img, v[1], Var(), conv_opts(2, 1)), 0.2);
      const Var h2 = gan::conv2d(h, v[2], Var(), conv_opts(2, 1));
      const Tensor rm = Tensor::zeros(Shape{8}, h2.device(), h2.value().dtype());
      const Tensor rv = Tensor::full(Shape{8}, 1.0, h2.device(), h2.value().dtype());
      const Var h3 = gan::batch_norm(h2, v[3], v[4], rm, rv, true, 0.1, 1e-5,
                                     gan::Activation::kLeakyRelu, 0.2);
      return gan::conv2d(h3, v[5], Var(), conv_opts(1, 0));
    });
  };
  c.fd_samples = 8;
  c.nan_parity = false;
  c.tol_fwd = c.tol_bwd = 1e-4;
  return c;
}

std::vector<OpCase> penalty_cases() { return {sagan_penalty_case(), dcgan_penalty_case()}; }

}  // namespace

// Every parameter's gradient of the penalty against five-point finite differences (float64,
// 1e-6), float32 against float64, and the GPU path (the interpreter without a GPU) against the CPU.
GAN_OP_TEST("gradient penalty", penalty_cases)
