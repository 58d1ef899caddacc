// Attention in the op harness: the SAGAN block on a packed projection (y = gamma softmax(q k^T) v
// + x) and the core with pooled keys (the official variant's N/4 keys, C/2 values), over
// N in {1, 16, 17, 64, 255, 256, 1024, 1031}, C in {8, 64, 72, 128, 512}, batch 1 and 3. On the
// GPU the same ops again with the materialised (cuBLAS) version pinned, and with C = 1024 and 2048
// (d = 128 and 256: beyond the tiled kernels, so the cuBLAS version at any size); and with the
// tensor-core kernels pinned in TF32 and 3xTF32 (plus d = 125 and 128, their limit).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "kernels/attention.h"
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

// Pins the attention version and the math mode for a scope (engine/device.h).
struct Pin {
  gan::AttnKernel old_kernel = gan::attention_kernel();
  gan::MathMode old_mode = gan::math_mode();
  Pin(gan::AttnKernel kernel, gan::MathMode mode) {
    gan::set_attention_kernel(kernel);
    gan::set_math_mode(mode);
  }
  ~Pin() {
    gan::set_attention_kernel(old_kernel);
    gan::set_math_mode(old_mode);
  }
  Pin(const Pin&) = delete;
  Pin& operator=(const Pin&) = delete;
};

// How a case runs on the GPU: the version, the math mode and the tolerance against the CPU.
struct Version {
  gan::AttnKernel kernel;
  gan::MathMode mode;
  double tol;
  const char* tag;
};
// Float32 sums over up to 1031 keys (and 1031 queries for dk, dv) in tile order on the GPU vs
// double on the CPU.
constexpr Version kTiled{gan::AttnKernel::kTiled, gan::MathMode::kStrict, 2e-5, ""};
constexpr Version kGemm{gan::AttnKernel::kGemm, gan::MathMode::kStrict, 2e-5, ""};
// TF32 operands (10-bit mantissa, relative rounding 2^-11) in every product: observed up to
// 7.4e-4 (outputs, dq, dk, dv) and 2.7e-3 (dgamma, one sum over B N dv terms of o's error);
// docs/kernels/attention.md.
constexpr Version kFlashTF32{gan::AttnKernel::kFlash, gan::MathMode::kTF32, 5e-3, " flash-tf32"};
// 3xTF32: fp32 level (observed up to 2.6e-6), tighter than the FMA kernels' bound.
constexpr Version kFlash3x{gan::AttnKernel::kFlash, gan::MathMode::kAccurate, 1e-5,
                           " flash-3xtf32"};

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

std::vector<OpCase> self_attention_cases(const std::vector<A>& list, const Version& ver) {
  std::vector<OpCase> cases;
  for (const A& s : list) {
    const int64_t d = s.c / 8;
    OpCase c;
    c.name = "self_attention N" + std::to_string(s.n) + " C" + std::to_string(s.c) + " B" +
             std::to_string(s.b) + ver.tag;
    Input qkv, gamma, x;
    qkv.shape = Shape{s.b, s.n, 2 * d + s.c}, qkv.lo = -0.5, qkv.hi = 0.5;
    gamma.shape = Shape{1};
    x.shape = Shape{s.b, s.n, s.c};
    c.inputs = {qkv, gamma, x};
    // The version is chosen at the forward pass and kept for the backward.
    c.fn = [d, ver](const std::vector<Var>& v) {
      Pin pin(ver.kernel, ver.mode);
      return gan::self_attention(v[0], d, v[1], v[2]);
    };
    c.fd_samples = fd_samples(s.n, s.n, d, s.c);
    c.tol_fwd = c.tol_bwd = ver.tol;
    cases.push_back(c);
  }
  return cases;
}

std::vector<OpCase> pooled_attention_cases(const std::vector<A>& list, const Version& ver) {
  std::vector<OpCase> cases;
  for (const A& s : list) {
    const int64_t d = s.c / 8, nk = std::max<int64_t>(1, s.n / 4), dv = s.c / 2;
    OpCase c;
    c.name = "attention pooled keys N" + std::to_string(s.n) + " Nk" + std::to_string(nk) + " C" +
             std::to_string(s.c) + " B" + std::to_string(s.b) + ver.tag;
    Input q, k, v;
    q.shape = Shape{s.b, s.n, d}, q.lo = -0.5, q.hi = 0.5;
    k.shape = Shape{s.b, nk, d}, k.lo = -0.5, k.hi = 0.5;
    v.shape = Shape{s.b, nk, dv};
    c.inputs = {q, k, v};
    c.fn = [ver](const std::vector<Var>& in) {
      Pin pin(ver.kernel, ver.mode);
      return gan::attention(in[0], in[1], in[2]);
    };
    c.fd_samples = fd_samples(s.n, nk, d, dv);
    c.tol_fwd = c.tol_bwd = ver.tol;
    // One key: dq and dk are exactly zero (dP - D cancels); in TF32 dP's rounding against the
    // float32 row dot D leaves ~1e-4 absolute, 0.1 of the harness's 1e-3 floor.
    if (nk == 1 && ver.mode == gan::MathMode::kTF32) c.tol_bwd = 0.2;
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
// The tensor-core kernels: the sizes above with one long sequence (N 1031, B 1: the interpreter
// emulates every mma), partial 64-row blocks over two batch items, and d = 125 and 128 (their
// limit) with dv over several 64-column chunks.
const std::vector<A>& flash_sizes() {
  static const std::vector<A> s = {{1, 8, 1},    {16, 8, 3},   {17, 64, 1},  {64, 72, 3},
                                   {16, 128, 1}, {17, 512, 3}, {255, 8, 1},  {256, 128, 1},
                                   {64, 512, 1}, {1031, 8, 1}, {130, 64, 2}, {19, 1000, 1},
                                   {16, 1024, 2}};
  return s;
}
// Tiled kernels wherever they apply (else the materialised version), and the materialised
// version everywhere; the tensor-core kernels in TF32 and 3xTF32.
std::vector<OpCase> self_attention_tiled() { return self_attention_cases(sizes(), kTiled); }
std::vector<OpCase> pooled_attention_tiled() { return pooled_attention_cases(sizes(), kTiled); }
std::vector<OpCase> self_attention_gemm() { return self_attention_cases(gemm_sizes(), kGemm); }
std::vector<OpCase> pooled_attention_gemm() { return pooled_attention_cases(gemm_sizes(), kGemm); }
std::vector<OpCase> self_attention_flash() {
  auto c = self_attention_cases(flash_sizes(), kFlashTF32);
  for (auto& x : self_attention_cases(flash_sizes(), kFlash3x)) c.push_back(x);
  return c;
}
std::vector<OpCase> pooled_attention_flash() {
  auto c = pooled_attention_cases(flash_sizes(), kFlashTF32);
  for (auto& x : pooled_attention_cases(flash_sizes(), kFlash3x)) c.push_back(x);
  return c;
}
// For ThreadSanitizer (tools/scripts/test.sh), where every emulated mma is slow: the code paths of
// the sizes above (partial blocks, two batch items, d = 128, dv over two chunks) at small N.
// For ThreadSanitizer too: the tiled kernels' paths (one row, partial tiles, several batch items,
// d = 128, dv over several chunks, several key tiles) without the sequences of 1024 and more.
std::vector<OpCase> self_attention_tiled_small() {
  const std::vector<A> s = {{1, 8, 1},    {16, 8, 3},   {17, 64, 1}, {64, 72, 3},
                            {16, 128, 1}, {17, 512, 3}, {255, 8, 1}};
  return self_attention_cases(s, kTiled);
}
std::vector<OpCase> pooled_attention_flash_small() {
  const std::vector<A> s = {{17, 64, 1}, {64, 72, 3}, {130, 64, 2}, {16, 128, 1}};
  auto c = pooled_attention_cases(s, kFlashTF32);
  for (auto& x : pooled_attention_cases(s, kFlash3x)) c.push_back(x);
  return c;
}
}  // namespace

GAN_OP_TEST("self_attention", self_attention_tiled)
GAN_OP_TEST_CUDA("self_attention small", self_attention_tiled_small)
GAN_OP_TEST("attention", pooled_attention_tiled)
GAN_OP_TEST_CUDA("self_attention materialised", self_attention_gemm)
GAN_OP_TEST_CUDA("attention materialised", pooled_attention_gemm)
GAN_OP_TEST_CUDA("self_attention flash", self_attention_flash)
GAN_OP_TEST_CUDA("attention flash", pooled_attention_flash)
GAN_OP_TEST_CUDA("attention flash small", pooled_attention_flash_small)
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

TEST_CASE("attention cuda: the version is chosen by timing, once per shape and math mode",
          "[attention][cuda]") {
  GAN_REQUIRE_GPU();
  using namespace gan;
  Pin pin(AttnKernel::kAuto, MathMode::kTF32);
  std::map<std::string, double> ms = {
      {"gemm", 3.0}, {"flash-tf32", 1.0}, {"flash-3xtf32", 2.0}, {"tiled", 5.0}};
  std::vector<std::string> timed;
  set_attention_timer([&](const std::string& v) {
    timed.push_back(v);
    return ms.at(v);
  });
  struct Restore {
    ~Restore() { set_attention_timer(nullptr); }
  } restore;
  Generator gen(5);
  Tensor qkv = Tensor::empty(Shape{2, 40, 2 * 4 + 24});
  gen.uniform_(qkv, -0.5, 0.5);
  Tensor x = Tensor::empty(Shape{2, 40, 24});
  gen.uniform_(x, -1, 1);
  const Tensor g = Tensor::full(Shape{1}, 0.7);
  const auto run = [&](Device dev) {
    return self_attention(Var(qkv.to(dev)), 4, Var(g.to(dev)), Var(x.to(dev))).value().to_vector();
  };
  const auto want = run(Device::CPU);
  auto check_close = [&](const std::vector<float>& got, double tol) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).margin(tol));
  };
  // TF32: all three candidates timed, the fastest (flash) kept; the same shape is not re-timed.
  check_close(run(Device::CUDA), 5e-3);
  CHECK(timed == std::vector<std::string>{"flash-tf32", "gemm", "tiled"});
  const std::string tf32_line = attention_choice_log().back();
  CHECK(tf32_line.find("tf32: timed: flash-tf32 1.000 ms, gemm 3.000 ms, tiled 5.000 ms -> "
                       "flash-tf32") != std::string::npos);
  run(Device::CUDA);
  CHECK(timed.size() == 3);
  // fp32-tc: the 3xTF32 kernel competes; made slowest, the timing picks gemm (strict in this mode).
  set_math_mode(MathMode::kAccurate);
  ms["flash-3xtf32"] = 9.0;
  timed.clear();
  check_close(run(Device::CUDA), 2e-5);
  CHECK(timed == std::vector<std::string>{"flash-3xtf32", "gemm", "tiled"});
  CHECK(attention_choice_log().back().find("-> gemm") != std::string::npos);
  // Strict fp32: no tensor-core candidate; with the materialised buffers over the budget, only
  // the tiled kernel remains, chosen untimed.
  set_math_mode(MathMode::kStrict);
  const size_t old_budget = attention_gemm_max_bytes();
  set_attention_gemm_max_bytes(1);
  timed.clear();
  check_close(run(Device::CUDA), 2e-5);
  set_attention_gemm_max_bytes(old_budget);
  CHECK(timed.empty());
  CHECK(attention_choice_log().back().find("only candidate -> tiled") != std::string::npos);
  // Pinned: flash needs a tensor-core math mode.
  set_attention_kernel(AttnKernel::kFlash);
  CHECK_THROWS_WITH(run(Device::CUDA), Catch::Contains("needs the fp32-tc or tf32 math mode"));
}

// The bf16 variant of the tensor-core kernels (for the bf16 precision mode; no float32 math mode
// selects it) at the kernel level against the double reference: packed and separate q/k/v, odd
// N, d and dv, dv over several 64-column chunks, d up to 128. Operands rounded to bf16 (relative
// 2^-9) in every product: observed 9.1e-3 (output) and 7.6e-3 (gradients) of the largest element.
TEST_CASE("attention cuda: the bf16 tensor-core kernels against the double reference",
          "[attention][cuda]") {
  GAN_REQUIRE_GPU();
  using namespace gan;
  struct S {
    int64_t b, nq, nk, d, dv;
    bool packed;
  };
  double worst_fwd = 0, worst_bwd = 0;
  for (const S& s : {S{2, 37, 37, 8, 64, true}, S{1, 70, 19, 5, 33, false},
                     S{1, 45, 45, 100, 130, true}, S{1, 17, 66, 128, 8, false}}) {
    INFO("B " << s.b << " Nq " << s.nq << " Nk " << s.nk << " d " << s.d << " dv " << s.dv);
    kernels::AttnDims a;
    a.b = s.b, a.nq = s.nq, a.nk = s.nk, a.d = s.d, a.dv = s.dv;
    a.ldq = a.ldk = a.ldv = s.packed ? 2 * s.d + s.dv : 0;
    if (!s.packed) a.ldq = a.ldk = s.d, a.ldv = s.dv;
    a.ldo = s.dv;
    Generator gen(17);
    // Packed: one (B, N, 2d + dv) buffer; separate: three.
    const int64_t nq_rows = s.b * s.nq, nk_rows = s.b * s.nk;
    Tensor qt = Tensor::empty(Shape{nq_rows * a.ldq}), kt = qt, vt = qt;
    if (!s.packed)
      kt = Tensor::empty(Shape{nk_rows * a.ldk}), vt = Tensor::empty(Shape{nk_rows * a.ldv});
    for (Tensor* t : {&qt, &kt, &vt}) gen.uniform_(*t, -1.0, 1.0);
    Tensor dy = Tensor::empty(Shape{nq_rows * a.ldo});
    gen.uniform_(dy, -1.0, 1.0);
    const int64_t qo = 0, ko = s.packed ? s.d : 0, vo = s.packed ? 2 * s.d : 0;
    // The double reference.
    auto dbl = [](const Tensor& t) {
      const auto v = t.to_vector();
      return std::vector<double>(v.begin(), v.end());
    };
    const auto q64 = dbl(qt), k64 = dbl(kt), v64 = dbl(vt), dy64 = dbl(dy);
    std::vector<double> o_ref(size_t(nq_rows * a.ldo)), lse_ref(static_cast<size_t>(nq_rows));
    kernels::attention_forward_cpu<double>(a, q64.data() + qo, k64.data() + ko, v64.data() + vo,
                                           o_ref.data(), lse_ref.data(), nullptr, nullptr, nullptr);
    std::vector<double> dq_ref(q64.size()), dk_ref(k64.size()), dv_ref(v64.size());
    auto& dk_r = s.packed ? dq_ref : dk_ref;
    auto& dv_r = s.packed ? dq_ref : dv_ref;
    kernels::attention_backward_cpu<double>(
        a, q64.data() + qo, k64.data() + ko, v64.data() + vo, o_ref.data(), lse_ref.data(),
        dy64.data(), nullptr, dq_ref.data() + qo, dk_r.data() + ko, dv_r.data() + vo, nullptr);
    // The bf16 kernels.
    const Tensor qc = qt.to(Device::CUDA), kc = s.packed ? qc : kt.to(Device::CUDA),
                 vc = s.packed ? qc : vt.to(Device::CUDA), dyc = dy.to(Device::CUDA);
    Tensor o = Tensor::empty(Shape{nq_rows * a.ldo}, Device::CUDA);
    Tensor lse = Tensor::empty(Shape{nq_rows}, Device::CUDA);
    Tensor drow = Tensor::empty(Shape{nq_rows}, Device::CUDA);
    Tensor dq = Tensor::zeros(Shape{qt.numel()}, Device::CUDA);
    Tensor dk = s.packed ? dq : Tensor::zeros(Shape{kt.numel()}, Device::CUDA);
    Tensor dv = s.packed ? dq : Tensor::zeros(Shape{vt.numel()}, Device::CUDA);
    kernels::attention_forward_mma_cuda(
        a, qc.data<float>() + qo, kc.data<float>() + ko, vc.data<float>() + vo, o.data<float>(),
        lse.data<float>(), nullptr, nullptr, nullptr, kernels::AttnMath::kBF16, cuda::stream());
    kernels::attention_backward_mma_cuda(
        a, qc.data<float>() + qo, kc.data<float>() + ko, vc.data<float>() + vo, o.data<float>(),
        lse.data<float>(), dyc.data<float>(), nullptr, dq.data<float>() + qo, dk.data<float>() + ko,
        dv.data<float>() + vo, nullptr, drow.data<float>(), nullptr, 0, kernels::AttnMath::kBF16,
        cuda::stream());
    // Normalised error (the harness's: max |error| over max(|reference|, 1e-3)).
    auto err = [](const std::vector<float>& got, const std::vector<double>& want) {
      double e = 0, m = 1e-3;
      for (size_t i = 0; i < got.size(); ++i) {
        e = std::max(e, std::fabs(double(got[i]) - want[i]));
        m = std::max(m, std::fabs(want[i]));
      }
      return e / m;
    };
    const double ef = err(o.to_vector(), o_ref);
    double eb = err(dq.to_vector(), dq_ref);
    if (!s.packed) eb = std::max({eb, err(dk.to_vector(), dk_ref), err(dv.to_vector(), dv_ref)});
    CHECK(ef < 2e-2);
    CHECK(eb < 3e-2);
    worst_fwd = std::max(worst_fwd, ef), worst_bwd = std::max(worst_bwd, eb);
  }
  if (std::getenv("GAN_TEST_VERBOSE"))
    std::printf("  bf16 attention: normalised error forward %.3g, backward %.3g\n", worst_fwd,
                worst_bwd);
}
