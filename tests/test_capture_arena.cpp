// The capture arena (engine/capture_arena.h): best-fit placement with coalescing, the arena size
// from an allocation trace, and a captured step whose temporaries live in the arena replaying
// like the eager step with fewer graph nodes.
#include <vector>

#include <catch2/catch.hpp>

#include "engine/capture_arena.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "engine/tensor_ops.h"
#include "tests/harness.h"
#include "tools/train/stepper.h"

using gan::cuda::AllocationTrace;
using gan::cuda::ArenaPlacement;

TEST_CASE("capture arena: best-fit placement, coalescing, refusal", "[arena][cpu]") {
  ArenaPlacement p(4096);
  const size_t a = p.allocate(100), b = p.allocate(300), c = p.allocate(10);
  CHECK(a == 0);
  CHECK(b == 256);  // 256-byte granules
  CHECK(c == 768);
  p.release(b);  // a 512-byte hole at 256
  const size_t big = p.allocate(600);
  CHECK(big == 1024);  // does not fit the hole: after c
  const size_t d = p.allocate(200);
  CHECK(d == 256);  // the smallest block that fits: the hole
  CHECK(p.allocate(4096) == ArenaPlacement::kNone);
  CHECK(p.live() == 4);
  CHECK(p.high_water() == 1792);
  for (size_t off : {a, c, big, d}) p.release(off);
  CHECK(p.live() == 0);
  CHECK(p.allocate(4096) == 0);  // everything merged back into one block
  CHECK_THROWS_WITH(p.release(100), Catch::Contains("never placed"));
}

TEST_CASE("capture arena: the size from a trace leaves out what outlives it", "[arena][cpu]") {
  int ids[4];
  AllocationTrace t;
  t.events = {{&ids[0], 1000, true}, {&ids[1], 5000, true},  // ids[1]: persistent
              {&ids[2], 1000, true}, {&ids[0], 0, false},
              {&ids[3], 1024, true}, {&ids[2], 0, false},   // ids[3] takes ids[0]'s block
              {&ids[3], 0, false},   {&ids[0], 300, true},  // an id reused after its free,
              {&ids[0], 0, false}};                         // itself transient
  CHECK(gan::cuda::arena_bytes_for(t) == 2048);
  CHECK(gan::cuda::arena_bytes_for(AllocationTrace{}) == 0);
}

TEST_CASE(
    "capture arena cuda: a captured step with its temporaries in the arena replays like "
    "the eager step, with fewer nodes",
    "[arena][cuda]") {
  GAN_REQUIRE_GPU();
  using gan::Device;
  using gan::Tensor;
  std::vector<float> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 17) * 0.25f - 1.f;
  const Tensor x = Tensor::from_vector(v, gan::Shape{1000}).to(Device::CUDA);
  const Tensor out = Tensor::zeros(gan::Shape{1000}, Device::CUDA);
  // out += 0.5 (x + 2 x): two temporaries made and dropped per step.
  auto step = [&] {
    const Tensor a = gan::scaled(x, 2.0);
    const Tensor b = gan::scaled(a, 1.5);
    gan::lerp_(out, b, 0.5);
  };
  AllocationTrace trace;
  gan::cuda::begin_allocation_trace(&trace);
  step();
  gan::cuda::begin_allocation_trace(nullptr);
  CHECK(trace.events.size() == 4);  // two allocations, two frees
  const size_t bytes = gan::cuda::arena_bytes_for(trace);
  CHECK(bytes == 2 * 4096);
  gan::train::IterationGraph with_arena({}, step, bytes);
  gan::train::IterationGraph without({}, step);
  CHECK(with_arena.arena_fallbacks() == 0);
  CHECK(with_arena.arena_bytes() == bytes);
  CHECK(with_arena.nodes() + 4 == without.nodes());  // no allocation and free nodes
  with_arena.replay();
  with_arena.replay();
  without.replay();
  // Four steps in all (one eager, three replays): out = lerp four times toward 3 x.
  std::vector<float> got = out.to_vector(), want(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    double o = 0;
    for (int k = 0; k < 4; ++k) o += 0.5 * (3.0 * v[i] - o);
    want[i] = float(o);
  }
  for (size_t i = 0; i < v.size(); ++i) REQUIRE(got[i] == Approx(want[i]).epsilon(1e-6));
}
