// Philox fills: known-answer vectors, statistics, reproducibility, CPU/GPU equality, CUDA graphs.
#include <cmath>
#include <cstring>

#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/random.h"
#include "kernels/random.h"
#include "tests/harness.h"

using namespace gan;

TEST_CASE("philox4x32-10 known-answer vectors (Random123)", "[random][cpu]") {
  using kernels::philox4x32_10;
  auto r = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(r.w[0] == 0x6627e8d5u);
  CHECK(r.w[1] == 0xe169c58du);
  CHECK(r.w[2] == 0xbc57ac4cu);
  CHECK(r.w[3] == 0x9b00dbd8u);
  r = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  CHECK(r.w[0] == 0x408f276du);
  CHECK(r.w[1] == 0x41c83b0eu);
  CHECK(r.w[2] == 0xa20bc7c6u);
  CHECK(r.w[3] == 0x6d5451fdu);
  r = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(r.w[0] == 0xd16cfe09u);
  CHECK(r.w[1] == 0x94fdccebu);
  CHECK(r.w[2] == 0x5001e420u);
  CHECK(r.w[3] == 0x24126ea1u);
}

TEST_CASE("random fills: statistics and reproducibility", "[random][cpu]") {
  const int64_t n = 1 << 20;
  Generator gen(1234);
  Tensor u = Tensor::empty(Shape{n});
  gen.uniform_(u, 0.0, 1.0);
  double s = 0, s2 = 0, lo = 1, hi = 0;
  for (float v : u.to_vector()) {
    s += v, s2 += double(v) * v;
    lo = std::min(lo, double(v)), hi = std::max(hi, double(v));
  }
  const double mean = s / n, var = s2 / n - mean * mean;
  CHECK(std::fabs(mean - 0.5) < 1.5e-3);  // 5 standard errors (0.289 / 1024)
  CHECK(std::fabs(var - 1.0 / 12) < 1e-3);
  CHECK(lo >= 0.0);
  CHECK(hi < 1.0);

  Tensor z = Tensor::empty(Shape{n});
  gen.normal_(z, 0.0, 1.0);
  double zs = 0, zs2 = 0;
  int64_t within = 0;
  for (float v : z.to_vector()) {
    zs += v, zs2 += double(v) * v;
    within += std::fabs(v) < 1 ? 1 : 0;
  }
  const double zm = zs / n, zsd = std::sqrt(zs2 / n - zm * zm);
  CHECK(std::fabs(zm) < 5e-3);
  CHECK(std::fabs(zsd - 1) < 5e-3);
  CHECK(std::fabs(double(within) / n - 0.682689) < 3e-3);

  // Same seed, same numbers; the offset moves on after each fill.
  Generator a(7), b(7);
  Tensor x = Tensor::empty(Shape{1031}), y = Tensor::empty(Shape{1031});
  a.normal_(x, 0.0, 0.02);
  b.normal_(y, 0.0, 0.02);
  CHECK(x.to_vector() == y.to_vector());
  CHECK(a.offset() == 1);
  a.normal_(x, 0.0, 0.02);
  CHECK(x.to_vector() != y.to_vector());
  a.set_state(7, 0);
  a.normal_(x, 0.0, 0.02);
  CHECK(x.to_vector() == y.to_vector());
  // A prefix of a longer fill is the shorter fill.
  Generator c(7);
  Tensor w = Tensor::empty(Shape{5});
  c.normal_(w, 0.0, 0.02);
  const auto xv = x.to_vector(), wv = w.to_vector();
  for (int i = 0; i < 5; ++i) CHECK(xv[size_t(i)] == wv[size_t(i)]);
}

TEST_CASE("random fills cuda: same numbers as the cpu and capturable in a graph",
          "[random][cuda]") {
  GAN_REQUIRE_GPU();
  const int64_t n = 100003;
  for (int dist = 0; dist < 2; ++dist) {
    Generator gc(99, Device::CPU), gg(99, Device::CUDA);
    Tensor c = Tensor::empty(Shape{n}), g = Tensor::empty(Shape{n}, Device::CUDA);
    if (dist == 0) {
      gc.uniform_(c, -0.5, 2.0);
      gg.uniform_(g, -0.5, 2.0);
    } else {
      gc.normal_(c, 1.0, 0.02);
      gg.normal_(g, 1.0, 0.02);
    }
    const auto cv = c.to_vector(), gv = g.to_vector();
    int64_t differ = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (cv[size_t(i)] != gv[size_t(i)]) {
        ++differ;
        // Double libm vs CUDA may move a normal value by one float ulp near a rounding boundary.
        CHECK(std::nextafter(cv[size_t(i)], gv[size_t(i)]) == gv[size_t(i)]);
      }
    }
    INFO("distribution " << dist << ": " << differ << " of " << n << " values differ by 1 ulp");
    CHECK(differ <= (dist == 0 ? 0 : 2));
    CHECK(gg.offset() == 1);
  }

  // Captured once, replayed twice: each replay draws the next offset's numbers.
  Generator gg(5, Device::CUDA), gc(5, Device::CPU);
  Tensor g = Tensor::empty(Shape{4099}, Device::CUDA);
  cudaStream_t st = cuda::stream();
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  REQUIRE(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal) == cudaSuccess);
  gg.uniform_(g, 0.0, 1.0);
  REQUIRE(cudaStreamEndCapture(st, &graph) == cudaSuccess);
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  Tensor c = Tensor::empty(Shape{4099});
  for (int rep = 0; rep < 2; ++rep) {
    REQUIRE(cudaGraphLaunch(exec, st) == cudaSuccess);
    gc.uniform_(c, 0.0, 1.0);
    CHECK(g.to_vector() == c.to_vector());
  }
  CHECK(gg.offset() == 2);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}
