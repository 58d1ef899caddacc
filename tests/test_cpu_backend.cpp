// The CPU backend (kernels/cpu/, docs/cpu-backend.md) beyond the op harness: its own loops give
// the same bits for any thread count; convolution choices are timed, cached on disk and replayed
// (or, deterministic, untimed) with the same results; the reference switch.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/adam.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "kernels/cpu/backend.h"
#include "tests/harness.h"

using namespace gan;

namespace {

Tensor random_tensor(const Shape& s, uint64_t seed, double lo = -1, double hi = 1) {
  Generator g(seed);
  Tensor t = Tensor::empty(s);
  g.uniform_(t, lo, hi);
  return t;
}

// Outputs and gradients of a few ops whose CPU code is the backend's own loops (no oneDNN):
// reductions, batch norm with a fused activation, softmax, broadcasting, pooling, spectral norm,
// Adam; sizes large enough that every loop splits over the threads.
std::vector<Tensor> own_loops_run() {
  std::vector<Tensor> out;
  tape().clear();
  const Var x = parameter(random_tensor(Shape{8, 16, 16, 64}, 1));  // 131072 elements
  const Var gamma = parameter(random_tensor(Shape{64}, 2, 0.5, 1.5));
  const Var beta = parameter(random_tensor(Shape{64}, 3));
  Tensor rm = Tensor::zeros(Shape{64}), rv = Tensor::full(Shape{64}, 1.0);
  const Var b = batch_norm(x, gamma, beta, rm, rv, true, 0.1, 1e-5, Activation::kLeakyRelu, 0.2);
  const Var bias = parameter(random_tensor(Shape{64}, 4));
  const Var y = mul(add(b, bias), b);
  const Var p = max_pool2d(y, Pool2dOptions{3, 3, 2, 2, 1, 1});
  const Var s = softmax(reshape(p, Shape{8 * 8 * 8, 64}));
  const Var w = parameter(random_tensor(Shape{256, 4, 4, 64}, 5));  // spectral norm, 262144
  std::vector<SpectralNormLayer> layers(1);
  layers[0].weight = w;
  layers[0].rows = 256, layers[0].cols = 4 * 4 * 64;
  layers[0].u = random_tensor(Shape{256}, 6), layers[0].v = random_tensor(Shape{1024}, 7);
  layers[0].sigma = Tensor::empty(Shape{1});
  const Var wsn = spectral_norm(layers, true)[0];
  const Var loss = add(sum(mul(s, s)), scale(sum(mul(wsn, wsn)), 1e-3));
  backward(loss);
  out = {b.value(),
         s.value(),
         wsn.value(),
         rm,
         rv,
         x.grad(),
         gamma.grad(),
         beta.grad(),
         bias.grad(),
         w.grad(),
         sum(x, {0, 1, 2}).value()};
  AdamOptions o;
  Adam adam({x, gamma, beta, bias, w}, o);
  adam.step();
  for (const Var& v : {x, gamma, beta, bias, w}) out.push_back(v.value());
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

struct ThreadsScope {
  int old = kernels::cpu::num_threads();
  explicit ThreadsScope(int n) { kernels::cpu::set_num_threads(n); }
  ~ThreadsScope() { kernels::cpu::set_num_threads(old); }
};

}  // namespace

TEST_CASE("cpu backend: its own loops give the same bits for 1, 2 and 3 threads",
          "[cpu][cpu-backend]") {
  std::vector<Tensor> one;
  {
    ThreadsScope t(1);
    one = own_loops_run();
  }
  for (int n : {2, 3}) {
    ThreadsScope t(n);
    const std::vector<Tensor> many = own_loops_run();
    REQUIRE(many.size() == one.size());
    for (size_t i = 0; i < one.size(); ++i) {
      INFO(n << " threads, tensor " << i << " " << one[i].str());
      CHECK(test::bitwise_equal(many[i], one[i]));
    }
  }
  // And the same again: run to run.
  const std::vector<Tensor> again = own_loops_run();
  for (size_t i = 0; i < one.size(); ++i) CHECK(test::bitwise_equal(again[i], one[i]));
}

TEST_CASE("cpu backend: convolution choices are timed, cached on disk and replayed",
          "[cpu][cpu-backend][conv]") {
  test::TempDir dir;
  const std::string cache = dir.file("cpu_plans.tsv");
  kernels::cpu::set_plan_cache(cache);
  kernels::cpu::reset_plans();
  // A geometry no other test uses (its plan is made here).
  Conv2dOptions o;
  o.stride_h = o.stride_w = 2, o.pad_h = o.pad_w = 1;
  auto run = [&] {
    tape().clear();
    const Var x(random_tensor(Shape{3, 13, 11, 5}, 11), true);
    const Var w(random_tensor(Shape{7, 3, 3, 5}, 12), true);
    const Var y = conv2d(x, w, Var(), o);
    backward(sum(mul(y, y)));
    std::vector<Tensor> r{y.value(), x.grad().clone(), w.grad().clone()};
    tape().clear();
    return r;
  };
  auto log_since = [](size_t n) {
    const std::vector<std::string> all = kernels::cpu::plan_log();
    std::string s;
    for (size_t i = n; i < all.size(); ++i) s += all[i] + "\n";
    return s;
  };

  size_t n0 = kernels::cpu::plan_log().size();
  const std::vector<Tensor> timed = run();
  const std::string first = log_since(n0);
  INFO(first);
  CHECK(first.find("(N, H, W, C) = (3, 13, 11, 5)") != std::string::npos);
  CHECK(first.find("timed:") != std::string::npos);
  const std::string file = read_all(cache);
  CHECK(file.find("|conv|0|f32|3x13x11x5|7x3x3|") != std::string::npos);  // forward
  CHECK(file.find("|conv|2|f32|3x13x11x5|7x3x3|") != std::string::npos);  // filter gradient

  kernels::cpu::reset_plans();  // as a new process would: the file decides
  n0 = kernels::cpu::plan_log().size();
  const std::vector<Tensor> replayed = run();
  const std::string second = log_since(n0);
  INFO(second);
  CHECK(second.find("(cached)") != std::string::npos);
  CHECK(second.find("timed:") == std::string::npos);
  for (size_t i = 0; i < timed.size(); ++i) CHECK(test::bitwise_equal(replayed[i], timed[i]));

  // A line cut short (a process killed while appending) names no implementation: timed again.
  {
    const std::string line = file.substr(0, file.find('\n'));
    std::ofstream(cache, std::ios::app) << line.substr(0, line.find('\t')) << "\tjit:avx5\n"
                                        << "a line without a tab\n";
  }
  kernels::cpu::reset_plans();
  n0 = kernels::cpu::plan_log().size();
  const std::vector<Tensor> retimed = run();
  const std::string cut = log_since(n0);
  INFO(cut);
  CHECK(cut.find("timed:") != std::string::npos);
  for (size_t i = 0; i < timed.size(); ++i) CHECK(test::max_rel_error(retimed[i], timed[i]) < 1e-5);

  // Deterministic: untimed, oneDNN's first implementation, the same results run to run.
  kernels::cpu::set_deterministic(true);
  kernels::cpu::reset_plans();
  n0 = kernels::cpu::plan_log().size();
  const std::vector<Tensor> d1 = run(), d2 = run();
  const std::string third = log_since(n0);
  kernels::cpu::set_deterministic(false);
  INFO(third);
  CHECK(third.find("deterministic") != std::string::npos);
  for (size_t i = 0; i < d1.size(); ++i) {
    CHECK(test::bitwise_equal(d1[i], d2[i]));
    CHECK(test::max_rel_error(d1[i], timed[i]) < 1e-5);
  }
  kernels::cpu::set_plan_cache("");
  kernels::cpu::reset_plans();
}

TEST_CASE("cpu backend: the reference switch runs the plain loops", "[cpu][cpu-backend]") {
  // The reference's float32 convolution sums in double; the backend in float32 in oneDNN's
  // order: they differ in the last bits, and the switch is what selects between them.
  const Var x(random_tensor(Shape{2, 9, 9, 16}, 21));
  const Var w(random_tensor(Shape{8, 3, 3, 16}, 22));
  Conv2dOptions o;
  o.pad_h = o.pad_w = 1;
  const Tensor fast = conv2d(x, w, Var(), o).value();
  Tensor ref;
  {
    kernels::cpu::ReferenceScope scope;
    CHECK(kernels::cpu::reference());
    ref = conv2d(x, w, Var(), o).value();
  }
  CHECK_FALSE(kernels::cpu::reference());
  const Tensor x64 = x.value().to(DType::F64), w64 = w.value().to(DType::F64);
  const Tensor exact = conv2d(Var(x64), Var(w64), Var(), o).value();
  CHECK(test::max_rel_error(ref, exact.to(DType::F32)) < 1e-7);  // rounded once from double
  CHECK(test::max_rel_error(fast, exact.to(DType::F32)) < 1e-5);
  CHECK_FALSE(test::bitwise_equal(fast, ref));
}
