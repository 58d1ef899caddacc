// conv2d and conv_transpose2d in the op harness: the kernel/stride/padding combinations DCGAN and
// SAGAN use (k4 s2 p1, k4 s1 p0, k1 s1 p0, k3 s1 p1) and general ones (stride 2 without padding,
// dilation, rectangular kernels, output padding), batch 1 and 3, odd channel counts.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
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
             (sp.bias ? " bias" : "") + (sp.params ? " params" : "") +
             (sp.o.act == gan::Activation::kRelu        ? " relu"
              : sp.o.act == gan::Activation::kLeakyRelu ? " leaky"
              : sp.o.act == gan::Activation::kTanh      ? " tanh"
                                                        : "");
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
    // oneDNN (the CPU backend) multiplies inputs by the zero padding: NaN spreads a little wider.
    c.nan_spreads_through_padding = true;
    cases.push_back(c);
  }
  return cases;
}

// o with a fused activation.
Conv2dOptions with_act(Conv2dOptions o, gan::Activation act, double slope = 0.2) {
  o.act = act, o.slope = slope;
  return o;
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
          // The bias and the activation fused into the output pass (SAGAN's and DCGAN's D).
          {Shape{2, 8, 8, 3}, Shape{5, 4, 4, 3},
           with_act(opts(2, 1), gan::Activation::kLeakyRelu, 0.1), true, true},
          {Shape{2, 9, 8, 3}, Shape{4, 3, 3, 3}, with_act(opts(2, 0), gan::Activation::kRelu),
           false, true},
          // tanh fused (a generator's output layer), with and without a bias.
          {Shape{2, 8, 8, 4}, Shape{3, 3, 3, 4}, with_act(opts(1, 1), gan::Activation::kTanh), true,
           true},
          {Shape{1, 7, 7, 2}, Shape{1, 3, 3, 2}, with_act(opts(1, 1), gan::Activation::kTanh),
           false, true},
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
          {Shape{1, 4, 4, 3}, Shape{3, 4, 4, 5}, with_act(opts(2, 1), gan::Activation::kRelu), true,
           true},
          {Shape{2, 3, 3, 4}, Shape{4, 3, 3, 3}, with_act(opts(1, 1), gan::Activation::kLeakyRelu),
           false, false},
          // DCGAN's output layer: k4 s2 p1, no bias, tanh.
          {Shape{2, 4, 4, 6}, Shape{6, 4, 4, 3}, with_act(opts(2, 1), gan::Activation::kTanh),
           false, true},
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

namespace {

// Inputs of a small geometry no other test uses (`tag` varies the channel count, so that each
// call site makes new plans), on the GPU, with the CPU reference of each direction.
struct SelectionCase {
  gan::kernels::ConvGeom g;
  gan::Tensor x, w, dy, dw0;  // CUDA
  std::vector<float> y_ref, dx_ref, dw_ref;
};

// full_window: the window covers the whole input (output 1x1: a GEMM candidate too).
SelectionCase selection_case(int64_t c, bool full_window = false) {
  using gan::Device;
  using gan::Tensor;
  SelectionCase s;
  gan::kernels::ConvGeom& g = s.g;
  g.n = 2, g.h = 7, g.w = 9, g.c = c, g.k = 5, g.r = 3, g.s = 3, g.pad_h = g.pad_w = 1;
  g.stride_h = g.stride_w = 2;
  g.p = 4, g.q = 5;
  if (full_window) {
    g.n = 3, g.h = g.r = 4, g.w = g.s = 3, g.k = 2, g.pad_h = g.pad_w = 0, g.p = g.q = 1;
    g.stride_h = g.stride_w = 1;
  }
  std::mt19937 rng{unsigned(c)};
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto filled = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& e : v) e = u(rng);
    return v;
  };
  const auto x = filled(g.x_numel()), w = filled(g.w_numel()), dy = filled(g.y_numel());
  const auto dw0 = filled(g.w_numel());
  s.x = Tensor::from_vector(x, Shape{g.n, g.h, g.w, g.c}).to(Device::CUDA);
  s.w = Tensor::from_vector(w, Shape{g.k, g.r, g.s, g.c}).to(Device::CUDA);
  s.dy = Tensor::from_vector(dy, Shape{g.n, g.p, g.q, g.k}).to(Device::CUDA);
  s.dw0 = Tensor::from_vector(dw0, Shape{g.k, g.r, g.s, g.c}).to(Device::CUDA);
  s.y_ref.resize(size_t(g.y_numel()));
  s.dx_ref.resize(size_t(g.x_numel()));
  s.dw_ref = dw0;
  gan::kernels::conv_forward_cpu(g, x.data(), w.data(), s.y_ref.data());
  gan::kernels::conv_backward_data_cpu(g, dy.data(), w.data(), s.dx_ref.data());
  gan::kernels::conv_backward_filter_cpu(g, x.data(), dy.data(), s.dw_ref.data(), true);
  return s;
}

void check_close(const gan::Tensor& got, const std::vector<float>& want, const char* what) {
  const std::vector<float> v = got.to_vector();
  REQUIRE(v.size() == want.size());
  double worst = 0;
  for (size_t i = 0; i < v.size(); ++i)
    worst = std::max(worst, std::fabs(double(v[i]) - want[i]) / (1 + std::fabs(double(want[i]))));
  INFO(what << ": worst relative error " << worst);
  CHECK(worst < 1e-5);
}

// All three directions of `s`, dw accumulated onto dw0; returns (y, dx, dw).
std::tuple<gan::Tensor, gan::Tensor, gan::Tensor> run_directions(
    const gan::kernels::CudnnConvContext& ctx, const SelectionCase& s) {
  using gan::Device;
  using gan::Tensor;
  const auto& g = s.g;
  Tensor y = Tensor::empty(Shape{g.n, g.p, g.q, g.k}, Device::CUDA);
  Tensor dx = Tensor::empty(Shape{g.n, g.h, g.w, g.c}, Device::CUDA);
  Tensor dw = s.dw0.clone();
  gan::kernels::conv_forward_cudnn(ctx, g, s.x.data<float>(), s.w.data<float>(), y.data<float>());
  gan::kernels::conv_backward_data_cudnn(ctx, g, s.dy.data<float>(), s.w.data<float>(),
                                         dx.data<float>());
  gan::kernels::conv_backward_filter_cudnn(ctx, g, s.x.data<float>(), s.dy.data<float>(),
                                           dw.data<float>(), /*accumulate=*/true);
  return {y, dx, dw};
}

// The plan log's lines from index `from` on.
std::vector<std::string> log_since(size_t from) {
  const auto all = gan::kernels::conv_plan_log();
  return {all.begin() + std::ptrdiff_t(std::min(from, all.size())), all.end()};
}

}  // namespace

// The selection logic with an injected timer: on the interpreter (three algorithms listed per
// direction and layout, $GAN_INTERP_CUDNN_ALGOS and _NCHW) and on a GPU (cuDNN's own lists)
// alike. The last candidate timed is made the fastest: an NCHW one (operands and result
// converted) on both.
TEST_CASE("conv cuda: the fastest timed algorithm wins; the timing leaves results alone",
          "[conv][cuda]") {
  GAN_REQUIRE_GPU();
  gan::test::ScopedEnv algos("GAN_INTERP_CUDNN_ALGOS", "3");
  gan::test::ScopedEnv nchw("GAN_INTERP_CUDNN_NCHW", "1");
  gan::test::TempDir dir;
  gan::set_cudnn_plan_cache(dir.file("plans.tsv"));
  for (const bool tf32 : {false, true}) {
    INFO((tf32 ? "tf32" : "fp32"));
    const SelectionCase s = selection_case(tf32 ? 3 : 2);
    gan::kernels::CudnnConvContext ctx = gan::cuda::conv_context();
    ctx.tf32 = tf32;
    ctx.deterministic = false;
    // Each direction's candidates in the order timed; the last one timed is made the fastest.
    std::map<int, std::vector<gan::kernels::ConvCandidate>> seen;
    ctx.timer = [&](const gan::kernels::ConvCandidate& c, const std::function<void()>& run) {
      run();  // the real launch, on the caller's buffers (or a scratch filter)
      auto& v = seen[int(c.direction)];
      v.push_back(c);
      return 10.0 - double(v.size());
    };
    const size_t from = gan::kernels::conv_plan_log().size();
    const auto [y, dx, dw] = run_directions(ctx, s);
    check_close(y, s.y_ref, "forward");
    check_close(dx, s.dx_ref, "backward-data");
    check_close(dw, s.dw_ref, "backward-filter (accumulated once, not per timed run)");
    const auto lines = log_since(from);
    REQUIRE(lines.size() == 3);
    for (int d = 0; d < 3; ++d) {
      const auto& v = seen[d];
      INFO(lines[size_t(d)]);
      REQUIRE(v.size() >= 2);  // a choice was made
      if (gan::test::on_interpreter()) CHECK(v.size() == (tf32 ? 6u : 4u));
      bool any_nd = false, any_nchw = false;
      for (const auto& c : v) {
        if (!tf32) CHECK(c.math == CUDNN_FMA_MATH);  // strict float32: FMA algorithms only
        any_nd = any_nd || !c.deterministic;
        any_nchw = any_nchw || c.layout == gan::kernels::ConvLayout::kNCHW;
        CHECK(c.algo != gan::kernels::kConvGemmAlgo);  // the window is not the whole input
      }
      if (gan::test::on_interpreter()) CHECK(any_nd);  // non-deterministic ones are timed too
      CHECK(any_nchw);
      const bool last_nchw = v.back().layout == gan::kernels::ConvLayout::kNCHW;
      CHECK_THAT(lines[size_t(d)],
                 Catch::Contains(
                     fmt::format("{}: {} algo {} math {}{}", tf32 ? "tf32" : "fp32",
                                 gan::kernels::conv_direction_name(gan::kernels::ConvDirection(d)),
                                 v.back().algo, v.back().math, last_nchw ? " nchw" : "")) &&
                     Catch::Contains("timed"));
    }
  }
  gan::set_cudnn_plan_cache("");
}

// Output 1x1 from the whole input: y = x w^T, and a cuBLAS GEMM competes with cuDNN.
TEST_CASE("conv cuda: a window over the whole input may run as a GEMM", "[conv][cuda]") {
  GAN_REQUIRE_GPU();
  gan::test::ScopedEnv algos("GAN_INTERP_CUDNN_ALGOS", "3");
  gan::set_cudnn_plan_cache("");
  const SelectionCase s = selection_case(5, /*full_window=*/true);
  gan::kernels::CudnnConvContext ctx = gan::cuda::conv_context();
  ctx.deterministic = false;
  std::map<int, int> gemms;
  ctx.timer = [&](const gan::kernels::ConvCandidate& c, const std::function<void()>& run) {
    run();
    const bool gemm = c.algo == gan::kernels::kConvGemmAlgo;
    gemms[int(c.direction)] += gemm;
    return gemm ? 0.5 : 1.0;
  };
  const size_t from = gan::kernels::conv_plan_log().size();
  const auto [y, dx, dw] = run_directions(ctx, s);
  check_close(y, s.y_ref, "forward");
  check_close(dx, s.dx_ref, "backward-data");
  check_close(dw, s.dw_ref, "backward-filter (accumulated)");
  const auto lines = log_since(from);
  REQUIRE(lines.size() == 3);
  for (int d = 0; d < 3; ++d) {
    INFO(lines[size_t(d)]);
    CHECK(gemms[d] == 1);
    CHECK_THAT(lines[size_t(d)], Catch::Contains("gemm (cuBLAS) (timed"));
  }
  // A second call runs the chosen GEMM again (no timing), overwriting or accumulating.
  const auto [y2, dx2, dw2] = run_directions(ctx, s);
  check_close(y2, s.y_ref, "forward, second call");
  check_close(dw2, s.dw_ref, "backward-filter, second call");
  CHECK(gemms[0] == 1);
}

TEST_CASE("conv cuda: timed choices round-trip through the plan cache on disk", "[conv][cuda]") {
  GAN_REQUIRE_GPU();
  gan::test::ScopedEnv algos("GAN_INTERP_CUDNN_ALGOS", "3");
  gan::test::TempDir dir;
  const std::string file = dir.file("cache/plans.tsv");  // its folder is made on the first write
  const SelectionCase s = selection_case(4);
  gan::kernels::CudnnConvContext ctx = gan::cuda::conv_context();
  ctx.tf32 = false;
  ctx.deterministic = false;
  std::map<int, gan::kernels::ConvCandidate> chosen;
  ctx.timer = [&](const gan::kernels::ConvCandidate& c, const std::function<void()>& run) {
    run();
    const bool first = chosen.count(int(c.direction)) == 0;
    if (first) chosen[int(c.direction)] = c;  // the first timed is made the fastest
    return first ? 1.0 : 2.0;
  };
  gan::set_cudnn_plan_cache(file);
  run_directions(ctx, s);
  {
    std::ifstream in(file);
    REQUIRE(in.good());
    int lines = 0;
    for (std::string line; std::getline(in, line);) {
      ++lines;
      CHECK_THAT(line, Catch::Contains("x (2, 7, 9, 4) w (5, 3, 3, 4)") && Catch::Contains("fp32"));
    }
    CHECK(lines == 3);
  }
  // A new process, in effect: no plans in memory, the file read again; nothing is timed.
  gan::kernels::reset_conv_plans();
  gan::set_cudnn_plan_cache(file);
  ctx.timer = [&](const gan::kernels::ConvCandidate&, const std::function<void()>&) -> double {
    FAIL("a cached choice was timed again");
    return 1.0;
  };
  const size_t from = gan::kernels::conv_plan_log().size();
  const auto [y, dx, dw] = run_directions(ctx, s);
  check_close(y, s.y_ref, "forward");
  check_close(dw, s.dw_ref, "backward-filter");
  const auto lines = log_since(from);
  REQUIRE(lines.size() == 3);
  for (int d = 0; d < 3; ++d) {
    INFO(lines[size_t(d)]);
    CHECK_THAT(lines[size_t(d)],
               Catch::Contains(fmt::format("algo {} math {}", chosen[d].algo, chosen[d].math)) &&
                   Catch::Contains("(cached)"));
  }
  gan::kernels::reset_conv_plans();
  gan::set_cudnn_plan_cache("");
}

TEST_CASE("conv cuda: --deterministic takes deterministic algorithms untimed, or fails clearly",
          "[conv][cuda]") {
  GAN_REQUIRE_GPU();
  gan::test::ScopedEnv algos("GAN_INTERP_CUDNN_ALGOS", "3");
  const SelectionCase s = selection_case(5);
  gan::kernels::CudnnConvContext ctx = gan::cuda::conv_context();
  ctx.deterministic = true;
  ctx.timer = [&](const gan::kernels::ConvCandidate&, const std::function<void()>&) -> double {
    FAIL("the deterministic policy timed a candidate");
    return 1.0;
  };
  const size_t from = gan::kernels::conv_plan_log().size();
  const auto [y, dx, dw] = run_directions(ctx, s);
  check_close(y, s.y_ref, "forward");
  check_close(dx, s.dx_ref, "backward-data");
  check_close(dw, s.dw_ref, "backward-filter");
  const auto lines = log_since(from);
  REQUIRE(lines.size() == 3);
  for (const auto& line : lines) {
    INFO(line);
    CHECK_THAT(line, Catch::Contains(" deterministic: ") &&
                         Catch::Contains("(heuristic, deterministic)") &&
                         !Catch::Contains("non-deterministic"));
  }
  if (gan::test::on_interpreter()) {
    // cuDNN offering only non-deterministic backward-filter algorithms: a clear error.
    gan::test::ScopedEnv env("GAN_INTERP_CUDNN_NONDETERMINISTIC_FILTER", "1");
    const SelectionCase s1 = selection_case(1);
    CHECK_THROWS_WITH(run_directions(ctx, s1),
                      Catch::Contains("no deterministic backward-filter algorithm") &&
                          Catch::Contains("--deterministic"));
    // The default policy takes one, and says so in the log.
    ctx.deterministic = false;
    ctx.timer = nullptr;
    const size_t from1 = gan::kernels::conv_plan_log().size();
    const auto [y1, dx1, dw1] = run_directions(ctx, s1);
    check_close(dw1, s1.dw_ref, "backward-filter");
    const auto l1 = log_since(from1);
    REQUIRE_FALSE(l1.empty());
    CHECK_THAT(l1.back(), Catch::Contains("backward-filter algo 0 math 3 non-deterministic"));
  }
}
