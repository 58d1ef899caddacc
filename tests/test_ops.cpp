// Op sweeps for the harness: every op over shapes that include 1, odd sizes and sizes > 1024.
// Tolerances: the default 1e-5 (normalised, see harness.h) holds for every elementwise op; looser
// ones carry the reason beside them.
#include <cmath>
#include <tuple>

#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/ops.h"
#include "kernels/reduce.h"
#include "tests/harness.h"

namespace {

using gan::Shape;
using gan::Var;
using gan::test::Input;
using gan::test::OpCase;

// Shapes for elementwise ops: scalars, 1, odd, > 1024, 4-D NHWC, 5-D.
const std::vector<Shape>& elementwise_shapes() {
  static const std::vector<Shape> s = {Shape{},
                                       Shape{1},
                                       Shape{7},
                                       Shape{3, 5},
                                       Shape{1031},
                                       Shape{3, 1100},
                                       Shape{2, 5, 5, 3},
                                       Shape{1, 1, 1, 1, 1},
                                       Shape{2, 3, 1, 4, 5}};
  return s;
}

std::vector<OpCase> unary_cases(const std::string& op, std::function<Var(const Var&)> f,
                                std::vector<double> kinks, double lo = -3, double hi = 3) {
  std::vector<OpCase> cases;
  for (const Shape& s : elementwise_shapes()) {
    OpCase c;
    c.name = op + " " + s.str();
    Input in;
    in.shape = s, in.lo = lo, in.hi = hi, in.kinks = kinks;
    c.inputs = {in};
    c.fn = [f](const std::vector<Var>& v) { return f(v[0]); };
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> relu_cases() {
  return unary_cases("relu", [](const Var& x) { return gan::relu(x); }, {0.0});
}
std::vector<OpCase> leaky_relu_cases() {
  return unary_cases("leaky_relu", [](const Var& x) { return gan::leaky_relu(x, 0.2); }, {0.0});
}
std::vector<OpCase> tanh_cases() {
  return unary_cases("tanh", [](const Var& x) { return gan::tanh(x); }, {});
}
std::vector<OpCase> sqrt_cases() {
  return unary_cases(
      "sqrt", [](const Var& x) { return gan::sqrt(x); }, {}, 0.25, 4);
}
std::vector<OpCase> sigmoid_cases() {
  // Wide range: the stable formula must not overflow for large |x|.
  return unary_cases(
      "sigmoid", [](const Var& x) { return gan::sigmoid(x); }, {}, -30, 30);
}
std::vector<OpCase> scale_cases() {
  return unary_cases("scale", [](const Var& x) { return gan::scale(x, -1.7); }, {});
}

// Operand shape pairs for binary ops: same, scalar, per-channel NHWC, per-sample, two-sided
// broadcasting, leading broadcast, > 1024, 5-D.
const std::vector<std::pair<Shape, Shape>>& binary_shapes() {
  static const std::vector<std::pair<Shape, Shape>> s = {
      {Shape{3, 5}, Shape{3, 5}},
      {Shape{1}, Shape{1}},
      {Shape{7}, Shape{}},
      {Shape{2, 4, 4, 3}, Shape{3}},
      {Shape{2, 3, 3, 5}, Shape{2, 1, 1, 1}},
      {Shape{3, 1, 5}, Shape{4, 1}},
      {Shape{1}, Shape{1031}},
      {Shape{1100}, Shape{1100}},
      {Shape{3, 1100}, Shape{1, 1100}},
      {Shape{2, 3, 4, 5, 6}, Shape{3, 1, 5, 1}},
  };
  return s;
}

std::vector<OpCase> binary_cases(const std::string& op,
                                 std::function<Var(const Var&, const Var&)> f, double b_lo,
                                 double b_hi) {
  std::vector<OpCase> cases;
  for (const auto& [sa, sb] : binary_shapes()) {
    OpCase c;
    c.name = op + " " + sa.str() + " " + sb.str();
    Input a, b;
    a.shape = sa;
    b.shape = sb, b.lo = b_lo, b.hi = b_hi;
    c.inputs = {a, b};
    c.fn = [f](const std::vector<Var>& v) { return f(v[0], v[1]); };
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> add_cases() {
  return binary_cases(
      "add", [](const Var& a, const Var& b) { return gan::add(a, b); }, -1, 1);
}
std::vector<OpCase> sub_cases() {
  return binary_cases(
      "sub", [](const Var& a, const Var& b) { return gan::sub(a, b); }, -1, 1);
}
std::vector<OpCase> mul_cases() {
  return binary_cases(
      "mul", [](const Var& a, const Var& b) { return gan::mul(a, b); }, -1, 1);
}
std::vector<OpCase> div_cases() {
  // Divisors kept in [0.5, 2]: away from zero.
  return binary_cases(
      "div", [](const Var& a, const Var& b) { return gan::div(a, b); }, 0.5, 2);
}

std::vector<OpCase> reduce_cases(bool mean) {
  const std::string op = mean ? "mean" : "sum";
  struct R {
    Shape s;
    std::vector<int> axes;  // empty: all
    bool keepdim;
  };
  // Long reductions (70000, (8192, 64) over axis 0) exercise the split into partial sums on the
  // GPU; (2, 3, 4, 5) over {1, 3} takes two runs of axes.
  const std::vector<R> rs = {
      {Shape{}, {}, false},
      {Shape{1}, {}, false},
      {Shape{7}, {}, false},
      {Shape{1031}, {}, false},
      {Shape{70000}, {}, false},
      {Shape{3, 1100}, {1}, false},
      {Shape{3, 1100}, {0}, true},
      {Shape{2, 3, 4, 5}, {0, 1, 2}, false},
      {Shape{2, 3, 4, 5}, {1, 3}, true},
      {Shape{2, 3, 4, 5}, {-1}, false},
      {Shape{8192, 64}, {0}, false},
      {Shape{2, 1025, 3}, {1}, false},
      {Shape{4, 1, 5}, {1}, false},
  };
  std::vector<OpCase> cases;
  for (const R& r : rs) {
    OpCase c;
    c.name = op + " " + r.s.str() + " axes " + std::to_string(r.axes.size()) +
             (r.axes.empty() ? "" : " first " + std::to_string(r.axes[0])) +
             (r.keepdim ? " keepdim" : "");
    Input in;
    in.shape = r.s;
    c.inputs = {in};
    const auto axes = r.axes;
    const bool keep = r.keepdim;
    c.fn = [mean, axes, keep](const std::vector<Var>& v) {
      if (axes.empty()) return mean ? gan::mean(v[0]) : gan::sum(v[0]);
      return mean ? gan::mean(v[0], axes, keep) : gan::sum(v[0], axes, keep);
    };
    // Sums of up to 70000 float32 terms: the GPU's tree order differs from the CPU's double
    // accumulation by a few float ulps of the result.
    c.tol_fwd = 2e-5;
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> sum_cases() { return reduce_cases(false); }
std::vector<OpCase> mean_cases() { return reduce_cases(true); }

std::vector<OpCase> reshape_cases() {
  std::vector<OpCase> cases;
  const std::vector<std::pair<Shape, Shape>> rs = {{Shape{1}, Shape{}},
                                                   {Shape{3, 5}, Shape{5, 3}},
                                                   {Shape{2, 4, 4, 3}, Shape{2, -1}},
                                                   {Shape{1031}, Shape{1, 1031, 1}}};
  for (const auto& [a, b] : rs) {
    OpCase c;
    c.name = "reshape " + a.str() + " -> " + b.str();
    Input in;
    in.shape = a;
    c.inputs = {in};
    const Shape to = b;
    c.fn = [to](const std::vector<Var>& v) { return gan::reshape(v[0], to); };
    cases.push_back(c);
  }
  OpCase f;
  f.name = "flatten (2, 3, 4, 5)";
  Input in;
  in.shape = Shape{2, 3, 4, 5};
  f.inputs = {in};
  f.fn = [](const std::vector<Var>& v) { return gan::flatten(v[0]); };
  cases.push_back(f);
  return cases;
}

std::vector<OpCase> concat_cases() {
  std::vector<OpCase> cases;
  struct C {
    std::vector<Shape> parts;
    int axis;
  };
  std::vector<Shape> ten;  // more inputs than one launch takes (8)
  for (int j = 0; j < 10; ++j) ten.push_back(Shape{3, 2, 1 + j % 3});
  const std::vector<C> cs = {
      {{Shape{1}, Shape{1}}, -1},
      {{Shape{2, 4, 4, 3}, Shape{2, 4, 4, 5}}, -1},
      {{Shape{2, 3, 3, 1}, Shape{2, 3, 3, 7}, Shape{2, 3, 3, 2}}, 3},
      {{Shape{2, 3, 5}, Shape{2, 1, 5}}, 1},
      {{Shape{1031, 2}, Shape{3, 2}}, 0},
      {{Shape{5, 1100}, Shape{5, 3}}, -1},
      {ten, -1},
  };
  for (const C& cc : cs) {
    OpCase c;
    c.name = "concat " + std::to_string(cc.parts.size()) + " parts " + cc.parts[0].str() +
             " axis " + std::to_string(cc.axis);
    for (const Shape& s : cc.parts) {
      Input in;
      in.shape = s;
      c.inputs.push_back(in);
    }
    const int axis = cc.axis;
    c.fn = [axis](const std::vector<Var>& v) { return gan::concat(v, axis); };
    cases.push_back(c);
  }
  // Only some inputs want a gradient.
  OpCase c;
  c.name = "concat partial grads";
  Input a, b;
  a.shape = Shape{4, 3};
  b.shape = Shape{4, 2};
  b.requires_grad = false;
  c.inputs = {a, b};
  c.fn = [](const std::vector<Var>& v) { return gan::concat(v, -1); };
  cases.push_back(c);
  return cases;
}

std::vector<OpCase> transpose_cases() {
  std::vector<OpCase> cases;
  for (const Shape& s : {Shape{1, 1}, Shape{3, 5}, Shape{2, 33, 70}, Shape{3, 64, 1}}) {
    OpCase c;
    c.name = "transpose " + s.str();
    Input x;
    x.shape = s;
    c.inputs = {x};
    c.fn = [](const std::vector<Var>& v) { return gan::transpose(v[0]); };
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> softmax_cases() {
  std::vector<OpCase> cases;
  for (const Shape& s : {Shape{1}, Shape{3, 5}, Shape{2, 7, 300}, Shape{4, 1031}}) {
    OpCase c;
    c.name = "softmax " + s.str();
    Input x;
    x.shape = s, x.lo = -4, x.hi = 4;
    c.inputs = {x};
    c.fn = [](const std::vector<Var>& v) { return gan::softmax(v[0]); };
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> matmul_cases() {
  std::vector<OpCase> cases;
  const std::vector<std::pair<Shape, Shape>> ms = {
      {Shape{1, 1}, Shape{1, 1}},         {Shape{3, 5}, Shape{5, 7}},
      {Shape{17, 33}, Shape{33, 9}},      {Shape{2, 3, 4}, Shape{2, 4, 5}},
      {Shape{1030, 3}, Shape{3, 2}},      {Shape{16, 1100}, Shape{1100, 3}},
      {Shape{3, 1, 64}, Shape{3, 64, 1}},
  };
  for (const auto& [a, b] : ms) {
    OpCase c;
    c.name = "matmul " + a.str() + " x " + b.str();
    Input x, y;
    x.shape = a;
    y.shape = b;
    c.inputs = {x, y};
    c.fn = [](const std::vector<Var>& v) { return gan::matmul(v[0], v[1]); };
    // cuBLAS accumulates k = 1100 products in float32 in its own order; the CPU reference in
    // double. Error scales with sqrt(k) ulps.
    c.tol_fwd = c.tol_bwd = 2e-5;
    cases.push_back(c);
  }
  return cases;
}

// The projection head: labels as constants (one-hot rows, some rows with none or two classes,
// classes no row selects, K > 32 so the GPU's ballot scan takes several steps, C > 256 so a row's
// block loops) and as a differentiable input with every weight non-zero (dy). With NaN planted in
// e, a class no row selects must leave the outputs finite on every backend (the lookup skips it).
Var label_rows(const std::vector<int>& cls, int64_t K, const gan::Tensor& like) {
  // cls[b] >= 0: one-hot; -1: no class; -2: classes 0 and K - 1 with weights 0.25 and 0.75.
  std::vector<double> v(cls.size() * size_t(K), 0.0);
  for (size_t b = 0; b < cls.size(); ++b) {
    if (cls[b] >= 0) v[b * size_t(K) + size_t(cls[b])] = 1.0;
    if (cls[b] == -2) v[b * size_t(K)] = 0.25, v[b * size_t(K) + size_t(K - 1)] = 0.75;
  }
  const Shape s{int64_t(cls.size()), K};
  if (like.dtype() == gan::DType::F64) return Var(gan::Tensor::from_vector(v, s));
  return Var(gan::Tensor::from_vector(std::vector<float>(v.begin(), v.end()), s, like.device()));
}

std::vector<OpCase> projection_head_cases() {
  std::vector<OpCase> cases;
  struct P {
    int64_t C, K;
    std::vector<int> cls;  // empty: y is a random differentiable input (B = 3)
    bool bias, w_row;      // w_row: w is (1, C) (nn.Linear's), else (C)
  };
  const std::vector<P> ps = {
      {5, 4, {}, true, true},
      {7, 1, {}, false, false},
      {37, 10, {3, 3, 0, 9, 5, 3}, true, true},
      {300, 40, {39, -1, 33, -2, 0}, true, false},
      {256, 1000, {999, 5, 5, 512, 7, 0, 1, 2}, false, true},
      {1, 3, {2}, true, true},
  };
  for (const P& p : ps) {
    OpCase c;
    const bool labels_in = p.cls.empty();
    const int64_t B = labels_in ? 3 : int64_t(p.cls.size());
    c.name = "projection_head B " + std::to_string(B) + " C " + std::to_string(p.C) + " K " +
             std::to_string(p.K) + (labels_in ? " labels differentiable" : " one-hot labels") +
             (p.bias ? " bias" : "") + (p.w_row ? " w (1, C)" : " w (C)");
    Input h, w, b, y, e;
    h.shape = Shape{B, p.C};
    w.shape = p.w_row ? Shape{1, p.C} : Shape{p.C};
    w.param = true;
    b.shape = Shape{1};
    b.param = true;
    y.shape = Shape{B, p.K};
    y.lo = 0.1, y.hi = 1;
    e.shape = Shape{p.K, p.C};
    e.param = true;
    c.inputs = {h, w};
    if (p.bias) c.inputs.push_back(b);
    if (labels_in) c.inputs.push_back(y);
    c.inputs.push_back(e);
    const bool bias = p.bias;
    const std::vector<int> cls = p.cls;
    const int64_t K = p.K;
    c.fn = [bias, cls, K](const std::vector<Var>& v) {
      size_t i = 0;
      const Var hv = v[i++], wv = v[i++], bv = bias ? v[i++] : Var();
      const Var yv = cls.empty() ? v[i++] : label_rows(cls, K, hv.value());
      return gan::projection_head(hv, wv, bv, yv, v[i]);
    };
    // Sums of up to 300 products (forward, dy) and 8 rows (dw, de) in float32.
    c.tol_fwd = c.tol_bwd = 2e-5;
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> linear_cases() {
  std::vector<OpCase> cases;
  struct L {
    Shape x;
    int64_t out;
    bool bias;
    bool params;
  };
  const std::vector<L> ls = {
      {Shape{4, 5}, 3, true, true},    {Shape{1, 1}, 1, true, false},
      {Shape{4, 5}, 3, false, true},   {Shape{2, 3, 4, 6}, 7, true, true},
      {Shape{3, 1100}, 5, true, true}, {Shape{1031, 3}, 2, true, false},
      {Shape{64, 2}, 128, true, true},
  };
  for (const L& l : ls) {
    OpCase c;
    c.name = "linear " + l.x.str() + " -> " + std::to_string(l.out) + (l.bias ? " bias" : "") +
             (l.params ? " params" : " leaves");
    Input x, w, b;
    x.shape = l.x;
    w.shape = Shape{l.out, l.x.back()};
    w.param = l.params;
    b.shape = Shape{l.out};
    b.param = l.params;
    c.inputs = {x, w};
    if (l.bias) c.inputs.push_back(b);
    const bool bias = l.bias;
    c.fn = [bias](const std::vector<Var>& v) {
      return bias ? gan::linear(v[0], v[1], v[2]) : gan::linear(v[0], v[1]);
    };
    c.tol_fwd = c.tol_bwd = 2e-5;  // as matmul: k up to 1100 (forward) and 1031 (dw)
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> bce_cases() {
  std::vector<OpCase> cases;
  for (const Shape& s : {Shape{1}, Shape{64, 1}, Shape{1031}, Shape{3, 7}}) {
    for (int mode = 0; mode < 3; ++mode) {  // targets tensor, constant 1, constant 0
      OpCase c;
      c.name = "bce_with_logits " + s.str() + (mode == 0 ? " targets" : mode == 1 ? " 1" : " 0");
      Input x;
      x.shape = s, x.lo = -40, x.hi = 40;  // large logits: the stable form must not overflow
      c.inputs = {x};
      if (mode == 0) {
        Input t;
        t.shape = s, t.lo = 0, t.hi = 1;
        c.inputs.push_back(t);
        c.fn = [](const std::vector<Var>& v) { return gan::bce_with_logits(v[0], v[1]); };
      } else {
        const double target = mode == 1 ? 1.0 : 0.0;
        c.fn = [target](const std::vector<Var>& v) { return gan::bce_with_logits(v[0], target); };
      }
      cases.push_back(c);
    }
  }
  return cases;
}

// Targets are any non-negative weights (not normalised: the tsum factor of the gradient is
// exercised); large logits check the log-sum-exp's stability; 40 classes span two warp strides.
std::vector<OpCase> cross_entropy_cases() {
  std::vector<OpCase> cases;
  for (const Shape& s :
       {Shape{1, 10}, Shape{64, 10}, Shape{3, 40}, Shape{2, 5, 3}, Shape{1100, 2}}) {
    OpCase c;
    c.name = "softmax_cross_entropy " + s.str();
    Input x, t;
    x.shape = s, x.lo = -30, x.hi = 30;
    t.shape = s, t.lo = 0, t.hi = 1, t.requires_grad = false;
    c.inputs = {x, t};
    c.fn = [](const std::vector<Var>& v) { return gan::softmax_cross_entropy(v[0], v[1].value()); };
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> hinge_cases() {
  std::vector<OpCase> cases;
  for (const auto& [sr, sf] :
       {std::pair{Shape{1}, Shape{1}}, std::pair{Shape{64, 1}, Shape{64, 1}},
        std::pair{Shape{7}, Shape{5}}, std::pair{Shape{1031}, Shape{1100}}}) {
    OpCase c;
    c.name = "hinge_d_loss " + sr.str() + " " + sf.str();
    Input r, f;
    r.shape = sr, r.lo = -3, r.hi = 3, r.kinks = {1.0};
    f.shape = sf, f.lo = -3, f.hi = 3, f.kinks = {-1.0};
    c.inputs = {r, f};
    c.fn = [](const std::vector<Var>& v) { return gan::hinge_d_loss(v[0], v[1]); };
    cases.push_back(c);
    OpCase g;
    g.name = "hinge_g_loss " + sf.str();
    g.inputs = {f};
    g.fn = [](const std::vector<Var>& v) { return gan::hinge_g_loss(v[0]); };
    cases.push_back(g);
  }
  return cases;
}

}  // namespace

GAN_OP_TEST("relu", relu_cases)
GAN_OP_TEST("leaky_relu", leaky_relu_cases)
GAN_OP_TEST("tanh", tanh_cases)
GAN_OP_TEST("sigmoid", sigmoid_cases)
GAN_OP_TEST("sqrt", sqrt_cases)
GAN_OP_TEST("scale", scale_cases)
GAN_OP_TEST("add", add_cases)
GAN_OP_TEST("sub", sub_cases)
GAN_OP_TEST("mul", mul_cases)
GAN_OP_TEST("div", div_cases)
GAN_OP_TEST("sum", sum_cases)
GAN_OP_TEST("mean", mean_cases)
GAN_OP_TEST("reshape", reshape_cases)
GAN_OP_TEST("concat", concat_cases)
GAN_OP_TEST("matmul", matmul_cases)
GAN_OP_TEST("transpose", transpose_cases)
GAN_OP_TEST("softmax", softmax_cases)
GAN_OP_TEST("linear", linear_cases)
GAN_OP_TEST("projection_head", projection_head_cases)
GAN_OP_TEST("bce_with_logits", bce_cases)
GAN_OP_TEST("hinge_loss", hinge_cases)
GAN_OP_TEST("softmax_cross_entropy", cross_entropy_cases)

// PyTorch: F.cross_entropy(torch.tensor([[1., 2., 3.], [0., 0., 0.]]), torch.tensor([2, 0]))
// = 0.8530 (mean of 0.40760596 and log 3 = 1.09861229); the gradient of the first row is
// (softmax - onehot) / 2.
TEST_CASE("softmax_cross_entropy: PyTorch's value for class labels", "[cpu][loss]") {
  Var x(gan::Tensor::from_vector(std::vector<double>{1, 2, 3, 0, 0, 0}, gan::Shape{2, 3}), true);
  const gan::Tensor t =
      gan::Tensor::from_vector(std::vector<double>{0, 0, 1, 1, 0, 0}, gan::Shape{2, 3});
  Var loss = gan::softmax_cross_entropy(x, t);
  CHECK(*loss.value().data<double>() ==
        Approx((0.40760596444438 + 1.09861228866811) / 2).epsilon(1e-12));
  gan::backward(loss);
  const double* g = x.grad().data<double>();
  const double e = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  CHECK(g[0] == Approx(std::exp(1.0) / e / 2).epsilon(1e-12));
  CHECK(g[2] == Approx((std::exp(3.0) / e - 1) / 2).epsilon(1e-12));
  CHECK(g[3] == Approx((1.0 / 3 - 1) / 2).epsilon(1e-12));
}

// The fused bias + activation backward (a convolution's epilogue): dz and the bias gradient in
// one pass, against its CPU reference (itself checked here against the two separate steps), for
// one block per column tile, a split over row chunks (the two-pass path), one column, and
// accumulation into an existing gradient.
// By hand: 0.25 + <(1, 2), (0.5, -1)> + <(1, 2), e_1 = (1, 2)> = 0.25 - 1.5 + 5 = 3.75, with a NaN
// in the unselected row e_0 (an embedding lookup never reads it); then the shape errors.
TEST_CASE("projection_head: a value by hand and its errors", "[cpu][projection_head]") {
  const auto t = [](std::vector<float> v, Shape s) {
    return Var(gan::Tensor::from_vector(v, s, gan::Device::CPU));
  };
  const Var h = t({1, 2}, Shape{1, 2}), w = t({0.5f, -1}, Shape{1, 2}), b = t({0.25f}, Shape{1});
  const Var y = t({0, 1}, Shape{1, 2}), e = t({NAN, 10, 1, 2}, Shape{2, 2});
  CHECK(gan::projection_head(h, w, b, y, e).value().to_vector() == std::vector<float>{3.75f});
  CHECK_THROWS_WITH(gan::projection_head(h, w, b, y, t({1, 2, 3}, Shape{1, 3})),
                    "projection_head: expected h (B, C), y (B, K), e (K, C), got h (1, 2), y (1, "
                    "2), e (1, 3)");
  CHECK_THROWS_WITH(gan::projection_head(h, t({1, 2}, Shape{2, 1}), b, y, e),
                    "projection_head: weight (2, 1) is not (C) or (1, C) with C = 2");
  CHECK_THROWS_WITH(gan::projection_head(h, w, t({1, 2}, Shape{2}), y, e),
                    "projection_head: bias (2,) is not one element");
}

TEST_CASE("bias_act_backward: dz and the bias gradient in one pass", "[sum][cpu][cuda]") {
  for (auto [rows, k, tanh, slope, acc] :
       {std::tuple{int64_t(7), int64_t(40), false, 0.0, false},
        std::tuple{int64_t(20000), int64_t(3), false, 0.2, true},
        std::tuple{int64_t(1500), int64_t(1), false, 0.1, false},
        std::tuple{int64_t(0), int64_t(5), false, 0.0, true},
        std::tuple{int64_t(3000), int64_t(3), true, 0.0, false}}) {
    CAPTURE(rows, k, tanh, slope, acc);
    std::vector<float> y(size_t(rows * k)), dy(y.size());
    for (size_t i = 0; i < y.size(); ++i) {
      y[i] = float(int(i * 2654435761u % 997) - 498) / 128.f;
      if (i % 11 == 0) y[i] = 0.f;  // the derivative at 0 is the slope's side
      if (tanh) y[i] = std::tanh(y[i]);
      dy[i] = float(int(i * 40503u % 1009) - 504) / 256.f;
    }
    std::vector<float> dz(y.size()), db(size_t(k), 0.5f);
    gan::kernels::bias_act_backward_cpu(y.data(), dy.data(), rows, k, tanh, slope, acc, dz.data(),
                                        db.data());
    for (int64_t i = 0; i < k; ++i) {
      double s = acc ? 0.5 : 0.0;
      for (int64_t r = 0; r < rows; ++r) {
        const size_t j = size_t(r * k + i);
        const double yj = y[j];
        const double want = dy[j] * (tanh ? 1.0 - yj * yj : yj > 0 ? 1.0 : slope);
        REQUIRE(dz[j] == float(want));
        s += float(want);
      }
      REQUIRE(db[size_t(i)] == Approx(s).epsilon(1e-6).margin(1e-6));
    }
    if (!gan::cuda_available()) continue;
    const gan::Tensor yt = gan::Tensor::from_vector(y, gan::Shape{rows, k}, gan::Device::CUDA);
    const gan::Tensor dyt = gan::Tensor::from_vector(dy, gan::Shape{rows, k}, gan::Device::CUDA);
    const gan::Tensor dzt = gan::Tensor::empty(gan::Shape{rows, k}, gan::Device::CUDA);
    const gan::Tensor dbt = gan::Tensor::full(gan::Shape{k}, 0.5, gan::Device::CUDA);
    const size_t ws_bytes = gan::kernels::bias_act_backward_workspace_bytes(rows, k);
    const gan::Tensor ws =
        gan::Tensor::empty(gan::Shape{int64_t(ws_bytes / 4 + 1)}, gan::Device::CUDA);
    gan::kernels::bias_act_backward_cuda(yt.data<float>(), dyt.data<float>(), rows, k, tanh,
                                         float(slope), acc, dzt.data<float>(), dbt.data<float>(),
                                         ws.data<float>(), ws_bytes, gan::cuda::stream());
    const std::vector<float> gz = dzt.to_vector();  // one product each: within an ulp
    for (size_t j = 0; j < dz.size(); ++j)
      REQUIRE(gz[j] == Approx(dz[j]).epsilon(1e-6).margin(1e-7));
    const std::vector<float> got = dbt.to_vector();
    for (int64_t i = 0; i < k; ++i)
      CHECK(got[size_t(i)] == Approx(db[size_t(i)]).epsilon(1e-5).margin(1e-5));
  }
}

// More rows than a grid dimension holds (65535): the column reduction's blocks loop over rows
// and reuse their shared memory (the barrier at the end of each row matters only here).
TEST_CASE("reduce_sum cuda: more rows than one grid dimension", "[sum][cuda]") {
  GAN_REQUIRE_GPU();
  const int64_t outer = 65535 + 700, r = 3, inner = 5;
  std::vector<float> x(size_t(outer * r * inner));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 2654435761u % 1000) - 500) / 64.f;
  std::vector<float> want(size_t(outer * inner));
  gan::kernels::reduce_sum_cpu(x.data(), outer, r, inner, 1.0, false, want.data());
  const gan::Tensor dx =
      gan::Tensor::from_vector(x, gan::Shape{outer, r, inner}, gan::Device::CUDA);
  gan::Tensor dy = gan::Tensor::empty(gan::Shape{outer, inner}, gan::Device::CUDA);
  const size_t ws_bytes = gan::kernels::reduce_sum_workspace_bytes(outer, r, inner);
  const gan::Tensor ws =
      gan::Tensor::empty(gan::Shape{int64_t(ws_bytes / 4 + 1)}, gan::Device::CUDA);
  gan::kernels::reduce_sum_cuda(dx.data<float>(), outer, r, inner, 1.f, false, dy.data<float>(),
                                ws.data<float>(), ws_bytes, gan::cuda::stream());
  const std::vector<float> got = dy.to_vector();
  REQUIRE(got.size() == want.size());
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += got[i] != want[i];  // 3 terms: exact
  CHECK(bad == 0);
}
