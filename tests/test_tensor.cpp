// Tensor basics: shapes, views, copies between devices, errors, guard mode, the memory pool.
#include <cstring>

#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
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

  // Mixed devices are an error naming the op.
  Var a(Tensor::zeros(Shape{3})), b(Tensor::zeros(Shape{3}, Device::CUDA));
  CHECK_THROWS_WITH(add(a, b), "add: device mismatch: cpu f32 (3,) vs cuda f32 (3,)");
}
