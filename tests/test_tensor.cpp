// Tensor basics: shapes, views, copies between devices, errors, guard mode, the memory pool.
#include <cmath>
#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/host_memory.h"
#include "engine/ops.h"
#include "kernels/bf16.h"
#include "tests/harness.h"

using namespace gan;

TEST_CASE("shape: numel str dims and broadcasting", "[tensor][cpu]") {
  CHECK(Shape{}.numel() == 1);
  CHECK(Shape{2, 3, 4}.numel() == 24);
  CHECK(Shape{2, 0, 4}.numel() == 0);
  CHECK(Shape{2, 3}.str() == "(2, 3)");
  CHECK(Shape{5}.str() == "(5,)");
  CHECK(Shape{}.str() == "()");
  CHECK(Shape{2, 3, 4}.dim(-1) == 4);
  CHECK(broadcast_shapes(Shape{2, 4, 4, 3}, Shape{3}, "t") == Shape{2, 4, 4, 3});
  CHECK(broadcast_shapes(Shape{3, 1, 5}, Shape{4, 1}, "t") == Shape{3, 4, 5});
  CHECK_THROWS_WITH(broadcast_shapes(Shape{2, 3}, Shape{4}, "add"),
                    "add: shapes (2, 3) and (4,) do not broadcast");
  CHECK_THROWS_AS((Shape{1, 2, 3, 4, 5, 6}), gan::Error);
  CHECK_THROWS_AS((Shape{2, -3}), gan::Error);
}

TEST_CASE("tensor: values reshape views clone and dtype conversion", "[tensor][cpu]") {
  Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, Shape{2, 3});
  CHECK(t.numel() == 6);
  CHECK(t.str() == "cpu f32 (2, 3)");
  Tensor v = t.reshape(Shape{3, -1});
  CHECK(v.shape() == Shape{3, 2});
  CHECK(v.raw() == t.raw());  // a view
  Tensor c = t.clone();
  CHECK(c.raw() != t.raw());
  CHECK(c.to_vector() == t.to_vector());
  CHECK_THROWS_WITH(t.reshape(Shape{4, 2}),
                    "reshape: cannot reshape (2, 3) (6 elements) to (4, 2)");
  Tensor d = t.to(DType::F64);
  CHECK(d.dtype() == DType::F64);
  CHECK(d.to_double_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK_THROWS_WITH(d.data<float>(), "tensor: f32 data requested from a cpu f64 (2, 3) tensor");
  Tensor z = Tensor::zeros(Shape{1031});
  for (float x : z.to_vector()) REQUIRE(x == 0.f);
  Tensor f = Tensor::full(Shape{5}, 2.5);
  CHECK(f.to_vector() == std::vector<float>(5, 2.5f));
  CHECK(Tensor::full(Shape{}, 3).item() == 3.f);
  CHECK_THROWS_AS(Tensor::empty(Shape{2}, Device::CUDA, DType::F64), gan::Error);
}

TEST_CASE("tensor: op errors name the op and the shapes", "[tensor][cpu]") {
  Var a(Tensor::zeros(Shape{2, 3})), b(Tensor::zeros(Shape{4}));
  CHECK_THROWS_WITH(add(a, b), "add: shapes (2, 3) and (4,) do not broadcast");
  CHECK_THROWS_WITH(matmul(a, a), "matmul: shapes (2, 3) and (2, 3) do not match");
  Var w(Tensor::zeros(Shape{5, 4}));
  CHECK_THROWS_WITH(linear(a, w), "linear: input (2, 3) does not match weight (5, 4) (out, in)");
  Var d(Tensor::zeros(Shape{2, 3}, Device::CPU, DType::F64));
  CHECK_THROWS_WITH(add(a, d), "add: dtype mismatch: cpu f32 (2, 3) vs cpu f64 (2, 3)");
  CHECK_THROWS_WITH(sum(a, {2}), "sum: axis 2 out of range for shape (2, 3)");
  CHECK_THROWS_WITH(concat({a, b}),
                    "concat: input 1 has shape (4,), incompatible with (2, 3) "
                    "along axis 1");
}

// The host cache (engine/tensor.cpp): a freed block serves a later request of a smaller class
// (up to twice that class) instead of fresh memory, and goes back to its own class. Sizes no other
// case uses (classes of 224, 160 and 96 MiB; the pages are never touched).
TEST_CASE("tensor: a freed host block serves smaller requests up to half its size",
          "[tensor][cpu]") {
  constexpr size_t kMiB = size_t(1) << 20;
  const auto floats = [](size_t bytes) { return Shape{int64_t(bytes / 4)}; };
  { const Tensor a = Tensor::empty(floats(224 * kMiB)); }  // 1.75 x 128 MiB
  const host_memory::Stats s0 = host_memory::stats();
  REQUIRE(s0.cached >= 224 * kMiB);
  {
    const Tensor b = Tensor::empty(floats(150 * kMiB));  // class 160 MiB (1.25 x 128)
    const host_memory::Stats s1 = host_memory::stats();
    CHECK(s1.cached == s0.cached - 224 * kMiB);  // the 224 MiB block, no fresh memory
    CHECK(s1.live == s0.live + 224 * kMiB);      // counted as the block it occupies
  }
  CHECK(host_memory::stats().cached == s0.cached);  // back in its own class
  {
    const Tensor c = Tensor::empty(floats(90 * kMiB));  // class 96 MiB: under half of 224
    const host_memory::Stats s2 = host_memory::stats();
    CHECK(s2.cached == s0.cached);  // fresh memory; the big block stays parked
    CHECK(s2.live == s0.live + 96 * kMiB);
  }
}

TEST_CASE("guard mode: an out-of-bounds write is reported", "[tensor][cpu]") {
  (void)debug::take_guard_violations();
  debug::set_guard_mode(true);
  {
    Tensor t = Tensor::empty(Shape{7});
    // Unwritten elements read as NaN in guard mode.
    CHECK(std::isnan(t.to_vector()[3]));
    float* p = t.data<float>();
    p[7] = 1.f;  // one past the end: lands in the back guard
    const auto v = debug::take_guard_violations();
    REQUIRE(v.size() == 1);
    CHECK(v[0] == "cpu allocation of 28 bytes: write at byte 0 past its end");
    p[7] = 0.f;
    std::memset(p + 7, 0xA5, sizeof(float));  // restore the guard
  }
  debug::set_guard_mode(false);
  CHECK(debug::take_guard_violations().empty());
}

TEST_CASE("tensor cuda: copies fill guard mode and the pool", "[tensor][cuda]") {
  GAN_REQUIRE_GPU();
  std::vector<float> h(5000);
  for (size_t i = 0; i < h.size(); ++i) h[i] = float(i) * 0.5f - 7.f;
  Tensor g = Tensor::from_vector(h, Shape{50, 100}, Device::CUDA);
  CHECK(g.is_cuda());
  CHECK(g.to_vector() == h);
  CHECK(g.clone().to(Device::CPU).to_vector() == h);
  Tensor f = Tensor::full(Shape{1031}, -1.25, Device::CUDA);
  CHECK(f.to_vector() == std::vector<float>(1031, -1.25f));
  Tensor z = Tensor::zeros(Shape{1031}, Device::CUDA);
  CHECK(z.to_vector() == std::vector<float>(1031, 0.f));

  // Device-side out-of-bounds write lands in the guard.
  (void)debug::take_guard_violations();
  debug::set_guard_mode(true);
  {
    Tensor t = Tensor::empty(Shape{7}, Device::CUDA);
    const float one = 1.f;
    // On the engine stream, after the guard memsets that Tensor::empty queued there.
    REQUIRE(cudaMemcpyAsync(t.data<float>() + 7, &one, sizeof(one), cudaMemcpyHostToDevice,
                            cuda::stream()) == cudaSuccess);
    cuda::synchronize();
    const auto v = debug::take_guard_violations();
    REQUIRE(v.size() == 1);
    CHECK(v[0] == "cuda allocation of 28 bytes: write at byte 0 past its end");
    const unsigned char guard[4] = {0xA5, 0xA5, 0xA5, 0xA5};
    REQUIRE(cudaMemcpyAsync(t.data<float>() + 7, guard, 4, cudaMemcpyHostToDevice,
                            cuda::stream()) == cudaSuccess);
    cuda::synchronize();
  }
  debug::set_guard_mode(false);

  // Guard mode cannot work inside a capture (its checks synchronise): a clear error.
  {
    cudaStream_t st = cuda::stream();
    REQUIRE(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    debug::set_guard_mode(true);
    CHECK_THROWS_WITH(Tensor::empty(Shape{4}, Device::CUDA),
                      Catch::Contains("guard mode") && Catch::Contains("captured"));
    debug::set_guard_mode(false);
    cudaGraph_t graph = nullptr;
    REQUIRE(cudaStreamEndCapture(st, &graph) == cudaSuccess);
    if (graph) CHECK(cudaGraphDestroy(graph) == cudaSuccess);
  }

  // Steady state: the same allocations again take nothing new from the driver.
  for (int i = 0; i < 3; ++i) Tensor::empty(Shape{1 << 20}, Device::CUDA);
  cuda::synchronize();
  const size_t reserved = cuda::pool_reserved_bytes();
  for (int i = 0; i < 10; ++i) Tensor::empty(Shape{1 << 20}, Device::CUDA);
  cuda::synchronize();
  CHECK(cuda::pool_reserved_bytes() == reserved);

  // The pool's used memory (gan_bench's peak_mem_mb): current follows live tensors; the high
  // water, once reset, is the largest live total since.
  {
    const auto attr = [](cudaMemPoolAttr a) {
      uint64_t v = 0;
      REQUIRE(cudaMemPoolGetAttribute(cuda::context().pool, a, &v) == cudaSuccess);
      return v;
    };
    cuda::synchronize();
    const uint64_t base = attr(cudaMemPoolAttrUsedMemCurrent);
    uint64_t zero = 0;
    REQUIRE(cudaMemPoolSetAttribute(cuda::context().pool, cudaMemPoolAttrUsedMemHigh, &zero) ==
            cudaSuccess);
    {
      Tensor t1 = Tensor::empty(Shape{1 << 20}, Device::CUDA);  // 4 MiB
      Tensor t2 = Tensor::empty(Shape{1 << 19}, Device::CUDA);  // 2 MiB
      cuda::synchronize();
      CHECK(attr(cudaMemPoolAttrUsedMemCurrent) >= base + (6u << 20));
    }
    cuda::synchronize();
    CHECK(attr(cudaMemPoolAttrUsedMemCurrent) == base);
    const uint64_t high = attr(cudaMemPoolAttrUsedMemHigh);
    CHECK(high >= base + (6u << 20));
    CHECK(high < base + (8u << 20));
    CHECK(attr(cudaMemPoolAttrReservedMemCurrent) >= high);
  }

  // Mixed devices are an error naming the op.
  Var a(Tensor::zeros(Shape{3})), b(Tensor::zeros(Shape{3}, Device::CUDA));
  CHECK_THROWS_WITH(add(a, b), "add: device mismatch: cpu f32 (3,) vs cuda f32 (3,)");
}

namespace {
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Values around every rounding case of float32 -> bf16, and random bit patterns.
std::vector<float> bf16_probe_values() {
  std::vector<float> v = {0.f,
                          -0.f,
                          1.f,
                          -1.f,
                          3.14159265f,
                          1e-40f,
                          -1e-45f,
                          3.4e38f,
                          -3.4e38f,
                          bits_float(0x7f800000u),
                          bits_float(0xff800000u),
                          bits_float(0x7fc00001u),
                          bits_float(0xffa00000u),
                          bits_float(0x7f7fffffu),
                          bits_float(0x7f7f7fffu),
                          bits_float(0x7f7f8000u),
                          bits_float(0x00008000u),
                          bits_float(0x00018000u)};
  uint32_t s = 12345;
  for (int i = 0; i < 5000; ++i) {
    s = s * 1664525u + 1013904223u;
    v.push_back(bits_float(s));
    v.push_back(bits_float((s & 0xffff0000u) | 0x8000u));  // an exact tie
  }
  return v;
}
}  // namespace

TEST_CASE("bf16: round to nearest even, infinities, NaN and subnormals", "[bf16][tensor][cpu]") {
  using kernels::f32_to_bf16;
  CHECK(f32_to_bf16(1.f) == 0x3f80);
  CHECK(f32_to_bf16(bits_float(0x3f808000u)) == 0x3f80);  // tie: to the even 0x3f80
  CHECK(f32_to_bf16(bits_float(0x3f818000u)) == 0x3f82);  // tie: to the even 0x3f82
  CHECK(f32_to_bf16(bits_float(0x3f808001u)) == 0x3f81);  // above the tie: up
  CHECK(f32_to_bf16(bits_float(0x3f807fffu)) == 0x3f80);  // below: down
  CHECK(f32_to_bf16(-0.f) == 0x8000);
  CHECK(f32_to_bf16(bits_float(0x7f7fffffu)) == 0x7f80);  // float's largest: bf16's infinity
  CHECK(f32_to_bf16(bits_float(0x7f7f7fffu)) == 0x7f7f);  // bf16's largest finite stays
  CHECK(f32_to_bf16(bits_float(0x7f800000u)) == 0x7f80);
  CHECK(f32_to_bf16(bits_float(0xff800000u)) == 0xff80);
  CHECK(f32_to_bf16(bits_float(0x7f800001u)) == 0x7fc0);  // a NaN whose payload is in the tail
  CHECK(f32_to_bf16(bits_float(0xffc12345u)) == 0xffc1);
  CHECK(f32_to_bf16(bits_float(0x00008000u)) == 0x0000);  // subnormal tie: to even (zero)
  CHECK(f32_to_bf16(bits_float(0x00018000u)) == 0x0002);
  CHECK(kernels::bf16_to_f32(0x4049) == 3.140625f);
  // Every bf16 pattern survives the round trip (NaNs as NaNs).
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = kernels::bf16_to_f32(uint16_t(h));
    if (f != f)
      REQUIRE((kernels::f32_to_bf16(f) & 0x7fc0) == 0x7fc0);
    else
      REQUIRE(kernels::f32_to_bf16(f) == h);
  }
  // Against the double reference: the nearest bf16, ties to the even pattern.
  for (float x : bf16_probe_values()) {
    if (!(std::abs(x) < 3.38e38f)) continue;  // finite and away from the overflow edge
    const uint16_t h = kernels::f32_to_bf16(x);
    const double got = kernels::bf16_to_f32(h);
    // The neighbours in magnitude (a zero has one: the smallest subnormal of its sign).
    const bool zero = (h & 0x7fff) == 0;
    const double lo = zero ? got : kernels::bf16_to_f32(uint16_t(h - 1));
    const double hi = kernels::bf16_to_f32(uint16_t(h + 1));
    const double e = std::abs(got - double(x));
    REQUIRE(e <= std::abs(lo - double(x)));
    REQUIRE(e <= std::abs(hi - double(x)));
    if (e == std::abs(lo - double(x)) && e != 0) REQUIRE((h & 1) == 0);
  }
}

TEST_CASE("bf16: tensors convert from and to f32 on the cpu", "[bf16][tensor][cpu]") {
  const std::vector<float> v = bf16_probe_values();
  const Tensor t = Tensor::from_vector(v, Shape{int64_t(v.size())});
  const Tensor b = t.to(DType::BF16);
  CHECK(b.dtype() == DType::BF16);
  CHECK(b.nbytes() == v.size() * 2);
  const std::vector<float> back = b.to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    const float want = kernels::round_bf16(v[i]);
    REQUIRE(std::memcmp(&back[i], &want, 4) == 0);
  }
  CHECK_THROWS_WITH(b.data<float>(), Catch::Contains("f32 data requested from a cpu bf16"));
  CHECK_THROWS_WITH(b.to(DType::F64), "tensor: no conversion from bf16 to f64");
}

TEST_CASE("bf16: cuda conversions equal the cpu's bit for bit", "[bf16][tensor][cuda]") {
  GAN_REQUIRE_GPU();
  const std::vector<float> v = bf16_probe_values();
  const Tensor t = Tensor::from_vector(v, Shape{int64_t(v.size())}, Device::CUDA);
  const Tensor b = t.to(DType::BF16);
  CHECK(b.is_cuda());
  const Tensor cpu = Tensor::from_vector(v, Shape{int64_t(v.size())}).to(DType::BF16);
  const Tensor bh = b.to(Device::CPU);
  REQUIRE(std::memcmp(bh.raw(), cpu.raw(), cpu.nbytes()) == 0);
  const std::vector<float> back = b.to(DType::F32).to_vector();
  const std::vector<float> want = cpu.to_vector();
  REQUIRE(std::memcmp(back.data(), want.data(), want.size() * 4) == 0);
}
