// Attention in the op harness: the SAGAN block on a packed projection (y = gamma softmax(q k^T) v
// + x) and the core with pooled keys (the official variant's N/4 keys, C/2 values), over
// N in {1, 16, 17, 64, 255, 256, 1024, 1031}, C in {8, 64, 72, 128, 512}, batch 1 and 3. On the
// GPU the same ops again with the materialised (cuBLAS) version forced, and with C = 1024 and 2048
// (d = 128 and 256: beyond the tiled kernels, so the cuBLAS version at any size).
#include <cmath>

#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "tests/harness.h"

namespace {

using gan::Shape;
using gan::Var;
using gan::test::Input;
using gan::test::OpCase;

struct A {
  int64_t n, c, b;
};

// (N, C, B) combinations: every N and every C appears, with both batch sizes.
const std::vector<A>& sizes() {
  static const std::vector<A> s = {{1, 8, 1},    {16, 8, 3},   {17, 64, 1},  {64, 72, 3},
                                   {16, 128, 1}, {17, 512, 3}, {255, 8, 1},  {256, 128, 1},
                                   {64, 512, 1}, {1024, 8, 1}, {1031, 8, 3}, {256, 64, 3}};
  return s;
}

// Sets the materialised-attention threshold for a scope (engine/device.h).
struct GemmLimit {
  size_t old = gan::attention_gemm_max_bytes();
  explicit GemmLimit(size_t bytes) { gan::set_attention_gemm_max_bytes(bytes); }
  ~GemmLimit() { gan::set_attention_gemm_max_bytes(old); }
  GemmLimit(const GemmLimit&) = delete;
  GemmLimit& operator=(const GemmLimit&) = delete;
};

// The forced-materialised runs: a subset of sizes() plus the wide channels.
const std::vector<A>& gemm_sizes() {
  static const std::vector<A> s = {{1, 8, 1},     {17, 64, 1},   {64, 72, 3},
                                   {255, 8, 1},   {1031, 8, 3},  {256, 64, 3},
                                   {16, 1024, 2}, {64, 1024, 1}, {17, 2048, 1}};
  return s;
}

// Finite differences cost one forward per sample: fewer samples for the big cases.
int fd_samples(int64_t nq, int64_t nk, int64_t d, int64_t dv) {
  return double(nq) * double(nk) * double(d + dv) > 5e6 ? 4 : 16;
}

std::vector<OpCase> self_attention_cases(const std::vector<A>& list, size_t gemm_limit) {
  std::vector<OpCase> cases;
  for (const A& s : list) {
    const int64_t d = s.c / 8;
    OpCase c;
    c.name = "self_attention N" + std::to_string(s.n) + " C" + std::to_string(s.c) + " B" +
             std::to_string(s.b);
    Input qkv, gamma, x;
    qkv.shape = Shape{s.b, s.n, 2 * d + s.c}, qkv.lo = -0.5, qkv.hi = 0.5;
    gamma.shape = Shape{1};
    x.shape = Shape{s.b, s.n, s.c};
    c.inputs = {qkv, gamma, x};
    // The version is chosen at the forward pass and kept for the backward.
    c.fn = [d, gemm_limit](const std::vector<Var>& v) {
      GemmLimit limit(gemm_limit);
      return gan::self_attention(v[0], d, v[1], v[2]);
    };
    c.fd_samples = fd_samples(s.n, s.n, d, s.c);
    // Float32 sums over up to 1031 keys (and 1031 queries for dk, dv) in tile order on the GPU vs
    // double on the CPU.
    c.tol_fwd = c.tol_bwd = 2e-5;
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> pooled_attention_cases(const std::vector<A>& list, size_t gemm_limit) {
  std::vector<OpCase> cases;
  for (const A& s : list) {
    const int64_t d = s.c / 8, nk = std::max<int64_t>(1, s.n / 4), dv = s.c / 2;
    OpCase c;
    c.name = "attention pooled keys N" + std::to_string(s.n) + " Nk" + std::to_string(nk) + " C" +
             std::to_string(s.c) + " B" + std::to_string(s.b);
    Input q, k, v;
    q.shape = Shape{s.b, s.n, d}, q.lo = -0.5, q.hi = 0.5;
    k.shape = Shape{s.b, nk, d}, k.lo = -0.5, k.hi = 0.5;
    v.shape = Shape{s.b, nk, dv};
    c.inputs = {q, k, v};
    c.fn = [gemm_limit](const std::vector<Var>& in) {
      GemmLimit limit(gemm_limit);
      return gan::attention(in[0], in[1], in[2]);
    };
    c.fd_samples = fd_samples(s.n, nk, d, dv);
    c.tol_fwd = c.tol_bwd = 2e-5;
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> max_pool_cases() {
  std::vector<OpCase> cases;
  for (const Shape& s :
       {Shape{1, 2, 2, 1}, Shape{3, 4, 6, 5}, Shape{2, 8, 8, 64}, Shape{1, 32, 34, 3}}) {
    OpCase c;
    c.name = "max_pool2d 2x2 " + s.str();
    Input x;
    x.shape = s;
    c.inputs = {x};
    c.fn = [](const std::vector<Var>& v) { return gan::max_pool2d(v[0]); };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

namespace {
// Tiled kernels wherever they apply (threshold 0), and the materialised version everywhere.
std::vector<OpCase> self_attention_tiled() { return self_attention_cases(sizes(), 0); }
std::vector<OpCase> pooled_attention_tiled() { return pooled_attention_cases(sizes(), 0); }
std::vector<OpCase> self_attention_gemm() { return self_attention_cases(gemm_sizes(), SIZE_MAX); }
std::vector<OpCase> pooled_attention_gemm() {
  return pooled_attention_cases(gemm_sizes(), SIZE_MAX);
}
}  // namespace

GAN_OP_TEST("self_attention", self_attention_tiled)
GAN_OP_TEST("attention", pooled_attention_tiled)
GAN_OP_TEST_CUDA("self_attention materialised", self_attention_gemm)
GAN_OP_TEST_CUDA("attention materialised", pooled_attention_gemm)
GAN_OP_TEST("max_pool2d 2x2", max_pool_cases)

TEST_CASE("attention: a hand-checked example and the attention rows", "[attention][cpu]") {
  using namespace gan;
  // One batch, 2 queries, 3 keys, d = 1, dv = 2. Scores s_ij = q_i k_j.
  const std::vector<float> qv = {1.f, -2.f}, kv = {0.f, 1.f, 2.f};
  const std::vector<float> vv = {1.f, 0.f, 0.f, 1.f, 2.f, 2.f};
  Var q(Tensor::from_vector(qv, Shape{1, 2, 1})), k(Tensor::from_vector(kv, Shape{1, 3, 1}));
  Var v(Tensor::from_vector(vv, Shape{1, 3, 2}));
  const auto o = attention(q, k, v).value().to_vector();
  for (int i = 0; i < 2; ++i) {
    double w[3], l = 0;
    for (int j = 0; j < 3; ++j) l += w[j] = std::exp(double(qv[size_t(i)]) * kv[size_t(j)]);
    for (int c = 0; c < 2; ++c) {
      double want = 0;
      for (int j = 0; j < 3; ++j) want += w[j] / l * vv[size_t(j * 2 + c)];
      CHECK(o[size_t(i * 2 + c)] == Approx(want).epsilon(1e-6));
    }
  }
  const auto rows = attention_rows(q.value(), k.value(), {1});
  REQUIRE(rows.size() == 3);
  const double l1 = std::exp(0.0) + std::exp(-2.0) + std::exp(-4.0);
  CHECK(rows[0] == Approx(1.0 / l1));
  CHECK(rows[2] == Approx(std::exp(-4.0) / l1));
  CHECK_THROWS_WITH(attention_rows(q.value(), k.value(), {2}),
                    "attention_rows: query 2 out of range (N = 2)");
  CHECK_THROWS_AS(attention(q, v, v), gan::Error);
}

TEST_CASE("attention: the packed block equals gamma times the core plus x", "[attention][cpu]") {
  using namespace gan;
  Generator gen(11);
  const int64_t b = 2, n = 9, d = 2, dv = 16;
  Tensor pk = Tensor::empty(Shape{b, n, 2 * d + dv});
  gen.uniform_(pk, -1, 1);
  Tensor xt = Tensor::empty(Shape{b, 3, 3, dv});
  gen.uniform_(xt, -1, 1);
  const auto p = pk.to_vector();
  std::vector<float> qs, ks, vs;
  for (int64_t r = 0; r < b * n; ++r)
    for (int64_t c = 0; c < 2 * d + dv; ++c) {
      const float val = p[size_t(r * (2 * d + dv) + c)];
      (c < d ? qs : c < 2 * d ? ks : vs).push_back(val);
    }
  const auto core = attention(Var(Tensor::from_vector(qs, Shape{b, n, d})),
                              Var(Tensor::from_vector(ks, Shape{b, n, d})),
                              Var(Tensor::from_vector(vs, Shape{b, n, dv})))
                        .value()
                        .to_vector();
  const auto y = self_attention(Var(pk), d, Var(Tensor::full(Shape{1}, 0.75)), Var(xt));
  CHECK(y.shape() == Shape{b, 3, 3, dv});
  const auto yv = y.value().to_vector(), xv = xt.to_vector();
  for (size_t i = 0; i < yv.size(); ++i)
    CHECK(yv[i] == Approx(0.75f * core[i] + xv[i]).margin(1e-6));
}
