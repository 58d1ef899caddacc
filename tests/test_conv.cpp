// conv2d and conv_transpose2d in the op harness: the kernel/stride/padding combinations DCGAN and
// SAGAN use (k4 s2 p1, k4 s1 p0, k1 s1 p0, k3 s1 p1) and general ones (stride 2 without padding,
// dilation, rectangular kernels, output padding), batch 1 and 3, odd channel counts.
#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "kernels/conv.h"
#include "kernels/conv_cudnn.h"
#include "tests/harness.h"

namespace {

using gan::Conv2dOptions;
using gan::Shape;
using gan::Var;
using gan::test::Input;
using gan::test::OpCase;

struct ConvSpec {
  Shape x, w;
  Conv2dOptions o;
  bool bias;
  bool params;
};

Conv2dOptions opts(int kstride, int pad, int dil = 1, int out_pad = 0) {
  Conv2dOptions o;
  o.stride_h = o.stride_w = kstride;
  o.pad_h = o.pad_w = pad;
  o.dil_h = o.dil_w = dil;
  o.out_pad_h = o.out_pad_w = out_pad;
  return o;
}

std::vector<OpCase> make_cases(const char* op, const std::vector<ConvSpec>& specs,
                               bool transposed) {
  std::vector<OpCase> cases;
  for (const ConvSpec& sp : specs) {
    OpCase c;
    c.name = std::string(op) + " x" + sp.x.str() + " w" + sp.w.str() + " s" +
             std::to_string(sp.o.stride_h) + "," + std::to_string(sp.o.stride_w) + " p" +
             std::to_string(sp.o.pad_h) + "," + std::to_string(sp.o.pad_w) + " d" +
             std::to_string(sp.o.dil_h) + " op" + std::to_string(sp.o.out_pad_h) +
             (sp.bias ? " bias" : "") + (sp.params ? " params" : "");
    Input x, w, b;
    x.shape = sp.x;
    w.shape = sp.w;
    w.param = sp.params;
    b.shape = Shape{transposed ? sp.w[3] : sp.w[0]};
    b.param = sp.params;
    c.inputs = {x, w};
    if (sp.bias) c.inputs.push_back(b);
    const Conv2dOptions o = sp.o;
    const bool bias = sp.bias;
    if (transposed)
      c.fn = [o, bias](const std::vector<Var>& v) {
        return gan::conv_transpose2d(v[0], v[1], bias ? v[2] : Var(), o);
      };
    else
      c.fn = [o, bias](const std::vector<Var>& v) {
        return gan::conv2d(v[0], v[1], bias ? v[2] : Var(), o);
      };
    // cuDNN sums up to R*S*C = 112 products (and N*P*Q = 768 for the filter gradient) in float32
    // in its own order; the CPU reference in double.
    c.tol_fwd = c.tol_bwd = 2e-5;
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> conv2d_cases() {
  Conv2dOptions rect;
  rect.stride_h = 1, rect.stride_w = 2, rect.pad_h = 0, rect.pad_w = 1;
  return make_cases(
      "conv2d",
      {
          {Shape{1, 8, 8, 3}, Shape{5, 4, 4, 3}, opts(2, 1), true, true},   // k4 s2 p1
          {Shape{3, 4, 4, 7}, Shape{1, 4, 4, 7}, opts(1, 0), true, false},  // k4 s1 p0
          {Shape{3, 5, 5, 8}, Shape{2, 1, 1, 8}, opts(1, 0), true, true},   // k1
          {Shape{1, 7, 9, 5}, Shape{6, 3, 3, 5}, opts(1, 1), true, true},   // k3 p1
          {Shape{2, 9, 8, 3}, Shape{4, 3, 3, 3}, opts(2, 0), false, true},
          {Shape{1, 11, 11, 2}, Shape{3, 5, 5, 2}, opts(1, 2, 2), true, false},
          {Shape{2, 6, 7, 3}, Shape{4, 2, 3, 3}, rect, true, true},
          {Shape{3, 16, 16, 7}, Shape{5, 4, 4, 7}, opts(2, 1), true, true},
          {Shape{1, 1, 1, 1}, Shape{1, 1, 1, 1}, opts(1, 0), true, false},
      },
      false);
}

std::vector<OpCase> conv_transpose2d_cases() {
  return make_cases(
      "conv_transpose2d",
      {
          {Shape{3, 1, 1, 7}, Shape{7, 4, 4, 5}, opts(1, 0), true, true},   // z -> 4x4 (k4 s1 p0)
          {Shape{1, 4, 4, 3}, Shape{3, 4, 4, 5}, opts(2, 1), true, true},   // k4 s2 p1
          {Shape{3, 5, 5, 4}, Shape{4, 3, 3, 3}, opts(1, 1), false, true},  // k3 s1 p1
          {Shape{1, 6, 6, 5}, Shape{5, 1, 1, 3}, opts(1, 0), true, false},  // k1
          {Shape{2, 3, 3, 2}, Shape{2, 3, 3, 4}, opts(2, 1, 1, 1), true, true},  // output padding
          {Shape{1, 4, 5, 3}, Shape{3, 3, 3, 2}, opts(1, 2, 2), true, false},    // dilation 2
          {Shape{3, 8, 8, 7}, Shape{7, 4, 4, 6}, opts(2, 1), true, true},        // > 1024 elements
      },
      true);
}

}  // namespace

GAN_OP_TEST("conv2d", conv2d_cases)
GAN_OP_TEST("conv_transpose2d", conv_transpose2d_cases)

TEST_CASE("conv: output sizes and errors", "[conv][cpu]") {
  using namespace gan;
  Var x(Tensor::zeros(Shape{2, 8, 8, 3}));
  Var w(Tensor::zeros(Shape{5, 4, 4, 3}));
  CHECK(conv2d(x, w, Var(), opts(2, 1)).shape() == Shape{2, 4, 4, 5});
  CHECK(conv2d(x, w, Var(), opts(1, 0)).shape() == Shape{2, 5, 5, 5});
  Var wt(Tensor::zeros(Shape{3, 4, 4, 6}));
  CHECK(conv_transpose2d(x, wt, Var(), opts(2, 1)).shape() == Shape{2, 16, 16, 6});
  Var z(Tensor::zeros(Shape{2, 1, 1, 3}));
  CHECK(conv_transpose2d(z, wt, Var(), opts(1, 0)).shape() == Shape{2, 4, 4, 6});
  CHECK_THROWS_WITH(conv2d(x, Var(Tensor::zeros(Shape{5, 4, 4, 2})), Var(), opts(1, 0)),
                    "conv2d: input (2, 8, 8, 3) has 3 channels, weight (5, 4, 4, 2) expects 2");
  CHECK_THROWS_WITH(conv2d(Var(Tensor::zeros(Shape{2, 2, 2, 3})), w, Var(), opts(1, 0)),
                    "conv2d: input (2, 2, 2, 3) padded by (0, 0) is smaller than the kernel (5, 4, "
                    "4, 3)");
  CHECK_THROWS_WITH(conv2d(x, w, Var(Tensor::zeros(Shape{4})), opts(1, 0)),
                    "conv2d: bias has shape (4,), expected (5,)");
  CHECK_THROWS_WITH(conv_transpose2d(x, wt, Var(), opts(2, 1, 1, 2)),
                    "conv_transpose2d: output padding (2, 2) must be smaller than the stride or "
                    "the dilation");
  CHECK_THROWS_AS(conv2d(Var(Tensor::zeros(Shape{8, 8, 3})), w, Var(), opts(1, 0)), gan::Error);
}

TEST_CASE("conv: a hand-computed 3x3 example", "[conv][cpu]") {
  using namespace gan;
  // x = 1..9 on a 3x3 single-channel image, w = [[1, 0], [0, -1]]: y[p][q] = x[p][q] - x[p+1][q+1]
  // = -4 everywhere; with padding 1 the corners see one tap each.
  std::vector<float> xs(9);
  for (int i = 0; i < 9; ++i) xs[size_t(i)] = float(i + 1);
  Var x(Tensor::from_vector(xs, Shape{1, 3, 3, 1}));
  Var w(Tensor::from_vector(std::vector<float>{1, 0, 0, -1}, Shape{1, 2, 2, 1}));
  CHECK(conv2d(x, w, Var(), opts(1, 0)).value().to_vector() == std::vector<float>(4, -4.f));
  const auto y = conv2d(x, w, Var(), opts(1, 1)).value().to_vector();  // (1, 4, 4, 1)
  CHECK(y[0] == -1.f);                                                 // only w[1][1] * x[0][0]
  CHECK(y[15] == 9.f);                                                 // only w[0][0] * x[2][2]
  CHECK(y[5] == -4.f);                                                 // interior
}

TEST_CASE("conv and linear: empty dimensions give zeros or empty tensors", "[conv][cpu]") {
  using namespace gan;
  // No input features: the product is empty, so linear gives the bias.
  Var x(Tensor::zeros(Shape{5, 0})), w(Tensor::zeros(Shape{3, 0}));
  Var b(Tensor::from_vector(std::vector<float>{1, 2, 3}, Shape{3}));
  const auto y = linear(x, w, b).value().to_vector();
  REQUIRE(y.size() == 15);
  CHECK(y[0] == 1.f);
  CHECK(y[14] == 3.f);
  // No output channels, with a bias of no elements.
  Var xi(Tensor::zeros(Shape{2, 4, 4, 3}));
  CHECK(conv2d(xi, Var(Tensor::zeros(Shape{0, 3, 3, 3})), Var(Tensor::zeros(Shape{0})), opts(1, 1))
            .shape() == Shape{2, 4, 4, 0});
  // No input channels: zeros plus the bias.
  const auto z =
      conv2d(Var(Tensor::zeros(Shape{1, 3, 3, 0})), Var(Tensor::zeros(Shape{2, 1, 1, 0})),
             Var(Tensor::full(Shape{2}, 0.5)), opts(1, 0))
          .value()
          .to_vector();
  CHECK(z == std::vector<float>(18, 0.5f));
}

TEST_CASE("conv cuda: each plan logs its algorithms; a non-deterministic fallback is explicit",
          "[conv][cuda]") {
  GAN_REQUIRE_GPU();
  using gan::Device;
  using gan::Tensor;
  // Geometries no other test uses, so that each makes a new plan.
  gan::kernels::ConvGeom g;
  g.n = 1, g.h = 7, g.w = 9, g.c = 3, g.k = 5, g.r = 3, g.s = 3, g.pad_h = g.pad_w = 1;
  g.stride_h = g.stride_w = 2;
  g.p = 4, g.q = 5;
  const Tensor x = Tensor::zeros(Shape{g.n, g.h, g.w, g.c}, Device::CUDA);
  const Tensor w = Tensor::zeros(Shape{g.k, g.r, g.s, g.c}, Device::CUDA);
  Tensor y = Tensor::empty(Shape{g.n, g.p, g.q, g.k}, Device::CUDA);
  const bool interp = gan::test::on_interpreter();
  {
    // On the interpreter, model cuDNN offering only non-deterministic backward-filter algorithms.
    gan::test::ScopedEnv env("GAN_INTERP_CUDNN_NONDETERMINISTIC_FILTER", "1");
    gan::kernels::conv_forward_cudnn(gan::cuda::conv_context(), g, x.data<float>(), w.data<float>(),
                                     y.data<float>());
  }
  const std::string line = gan::kernels::conv_plan_log().back();
  INFO(line);
  CHECK_THAT(line, Catch::Contains("x (1, 7, 9, 3) w (5, 3, 3, 3) stride 2x2 pad 1x1"));
  CHECK_THAT(line, Catch::Contains("forward algo") && Catch::Contains("backward-data algo"));
  if (interp)
    CHECK_THAT(line,
               Catch::Contains("backward-filter algo 0 (math 3, NOT deterministic: fallback)"));
  if (interp) {
    gan::test::ScopedEnv env("GAN_INTERP_CUDNN_NONDETERMINISTIC_FILTER", "1");
    gan::test::ScopedEnv strict("GAN_CUDNN_DETERMINISTIC", "1");
    g.c = 1;  // a new geometry: a new plan
    const Tensor x1 = Tensor::zeros(Shape{g.n, g.h, g.w, 1}, Device::CUDA);
    const Tensor w1 = Tensor::zeros(Shape{g.k, g.r, g.s, 1}, Device::CUDA);
    CHECK_THROWS_WITH(
        gan::kernels::conv_forward_cudnn(gan::cuda::conv_context(), g, x1.data<float>(),
                                         w1.data<float>(), y.data<float>()),
        Catch::Contains("no deterministic backward-filter algorithm") &&
            Catch::Contains("GAN_CUDNN_DETERMINISTIC"));
  }
}
