// The interpreter itself (docs/interpreter.md): SIMT semantics against known results, the
// misuses it reports, launch limits, graph capture rules and guarded memory. Built only into
// engine_tests_interp; the cases that must kill the process run as their own ctest tests.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <catch2/catch.hpp>

#include "tests/interpreter/kernels.h"

using namespace gan::interp_test;

namespace {

struct DeviceBuffer {
  float* p = nullptr;
  explicit DeviceBuffer(size_t n) { REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), n * 4) == 0); }
  ~DeviceBuffer() { (void)cudaFree(p); }
};

std::string error_text(cudaError_t e) { return cudaGetErrorString(e); }

}  // namespace

TEST_CASE("interp: shuffles, votes and barriers give the CUDA results", "[interp]") {
  std::vector<float> in(64);
  for (int i = 0; i < 64; ++i) in[size_t(i)] = float(i % 7) - 2.f;
  DeviceBuffer x(64), y(77);
  REQUIRE(cudaMemcpy(x.p, in.data(), 64 * 4, cudaMemcpyHostToDevice) == 0);
  REQUIRE(run_warp_and_block_ops(x.p, y.p) == cudaSuccess);
  std::vector<float> out(77);
  REQUIRE(cudaMemcpy(out.data(), y.p, 77 * 4, cudaMemcpyDeviceToHost) == 0);
  for (int w = 0; w < 2; ++w) {
    float sum = 0, prefix = 0;
    int positive = 0;
    for (int l = 0; l < 32; ++l) {
      const float v = in[size_t(32 * w + l)];
      prefix += v;
      CHECK(out[size_t(32 * w + l)] == prefix);
      sum += v;
      positive += v > 0;
    }
    const float* r = out.data() + 64 + 6 * w;
    CHECK(r[0] == sum);
    CHECK(r[1] == sum);
    CHECK(r[2] == in[size_t(32 * w)]);
    CHECK(r[3] == float(positive));
    CHECK(r[4] == 0.f);
    CHECK(r[5] == 1.f);
  }
  CHECK(out[76] == std::accumulate(in.begin(), in.end(), 0.f));
}

TEST_CASE("interp: random schedules expose a missing __syncthreads", "[interp]") {
  const int n = 256;
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) in[size_t(i)] = float(i);
  DeviceBuffer x(n), y(n);
  REQUIRE(cudaMemcpy(x.p, in.data(), n * 4, cudaMemcpyHostToDevice) == 0);
  REQUIRE(run_missing_barrier(x.p, y.p, n) == cudaSuccess);
  std::vector<float> out(n);
  REQUIRE(cudaMemcpy(out.data(), y.p, n * 4, cudaMemcpyDeviceToHost) == 0);
  int wrong = 0;
  for (int i = 0; i < n; ++i) wrong += out[size_t(i)] != float((i + 1) % n);
  // Each thread's neighbour runs before it with probability 1/2 in a random order.
  CHECK(wrong > n / 8);
}

TEST_CASE("interp: shared memory starts as NaN in every block", "[interp]") {
  DeviceBuffer y(128);
  REQUIRE(run_uninitialised_shared(y.p, 128) == cudaSuccess);
  std::vector<float> out(128);
  REQUIRE(cudaMemcpy(out.data(), y.p, 128 * 4, cudaMemcpyDeviceToHost) == 0);
  for (float v : out) CHECK(std::isnan(v));
}

TEST_CASE("interp: cp.async data lands only at the wait, so a missing wait shows", "[interp]") {
  std::vector<float> in(128, 2.f);
  DeviceBuffer x(128), y(128);
  REQUIRE(cudaMemcpy(x.p, in.data(), 128 * 4, cudaMemcpyHostToDevice) == 0);
  REQUIRE(run_cp_async_without_wait(x.p, y.p) == cudaSuccess);
  std::vector<float> out(128);
  REQUIRE(cudaMemcpy(out.data(), y.p, 128 * 4, cudaMemcpyDeviceToHost) == 0);
  for (float v : out) CHECK(std::isnan(v));
}

TEST_CASE("interp: barrier and shuffle misuse fail the launch with a diagnosis", "[interp]") {
  DeviceBuffer y(64);
  cudaError_t e = run_partial_barrier(y.p);
  CHECK(e == cudaErrorLaunchFailure);
  CHECK_THAT(error_text(e), Catch::Contains("reached by 16 of 32 threads") &&
                                Catch::Contains("partial_barrier_kernel"));
  e = run_divergent_barriers(y.p);
  CHECK(e == cudaErrorLaunchFailure);
  CHECK_THAT(error_text(e), Catch::Contains("different __syncthreads barriers"));
  e = run_shuffle_exited_lane(y.p);
  CHECK(e == cudaErrorLaunchFailure);
  CHECK_THAT(error_text(e), Catch::Contains("names lane 31, which has exited"));
  e = run_deadlock(y.p);
  CHECK(e == cudaErrorLaunchFailure);
  CHECK_THAT(error_text(e), Catch::Contains("deadlock"));
  CHECK_THAT(error_text(e), Catch::Contains("GAN_INTERP_SEED="));
  CHECK(cudaGetLastError() == cudaSuccess);  // reported once
}

namespace {
// CUB's shuffle order: the result of lanes [0, n) is tree(first half) + tree(second half);
// lanes at or past `valid` contribute nothing.
float cub_tree(const float* x, int n, int valid) {
  if (n == 1) return x[0];
  const float a = cub_tree(x, n / 2, valid);
  return valid > n / 2 ? a + cub_tree(x + n / 2, n / 2, valid - n / 2) : a;
}
}  // namespace

TEST_CASE("interp: CUB's block and warp reductions follow CUB's order with the result in thread 0",
          "[interp]") {
  std::vector<float> in(128);
  uint32_t s = 12345;
  for (float& v : in) {
    s = s * 1664525u + 1013904223u;
    v = float(s >> 8) / float(1 << 24) * 2.f - 1.f;
  }
  DeviceBuffer x(128), y(35);
  REQUIRE(cudaMemcpy(x.p, in.data(), 128 * 4, cudaMemcpyHostToDevice) == 0);
  REQUIRE(run_cub_reductions(x.p, y.p) == cudaSuccess);
  std::vector<float> out(35);
  REQUIRE(cudaMemcpy(out.data(), y.p, 35 * 4, cudaMemcpyDeviceToHost) == 0);
  // Warp aggregates (warp reductions), then thread 0 adds warps 1, 2, 3 in order.
  auto block = [&](int valid) {
    float r = cub_tree(in.data(), 32, valid);
    for (int w = 1; w < 4; ++w)
      if (w * 32 < valid) r += cub_tree(in.data() + 32 * w, 32, valid - 32 * w);
    return r;
  };
  CHECK(out[0] == block(128));
  CHECK(out[1] == block(70));
  CHECK(out[2] == *std::max_element(in.begin(), in.end()));
  for (int g = 0; g < 16; ++g) {
    CHECK(out[size_t(3 + g)] == cub_tree(in.data() + 8 * g, 8, 8));
    CHECK(out[size_t(19 + g)] == cub_tree(in.data() + 8 * g, 8, 5));
  }
}

TEST_CASE("interp: occupancy follows the H100 model", "[interp]") {
  int per_sm = 0;
  REQUIRE(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, nullptr, 256, 0) == 0);
  CHECK(per_sm == 8);  // 2048 threads per SM / 256
}

TEST_CASE("interp: launches over the H100's limits are refused", "[interp]") {
  DeviceBuffer y(4);
  cudaError_t e = run_too_many_threads(y.p);
  CHECK(e == cudaErrorInvalidConfiguration);
  e = run_too_much_dynamic_smem(y.p);
  CHECK(e == cudaErrorInvalidValue);
  CHECK_THAT(error_text(e), Catch::Contains("over 48 KB"));
}

TEST_CASE("interp: synchronising calls invalidate a stream capture", "[interp]") {
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == 0);
  float* p = nullptr;
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == 0);
  REQUIRE(cudaMallocAsync(reinterpret_cast<void**>(&p), 64, s) == 0);
  REQUIRE(cudaMemsetAsync(p, 0, 64, s) == 0);
  CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported);
  cudaGraph_t g = nullptr;
  CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated);
  CHECK(g == nullptr);
  (void)cudaGetLastError();

  // A copy from or to pageable host memory is refused during a capture (as CUDA does: the copy
  // would be staged through the host at every replay).
  float pageable[16] = {};
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == 0);
  REQUIRE(cudaMallocAsync(reinterpret_cast<void**>(&p), 64, s) == 0);
  CHECK(cudaMemcpyAsync(p, pageable, 64, cudaMemcpyHostToDevice, s) ==
        cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();

  // A valid capture: allocation, memset, copy (to pinned memory) and free replay in order, twice.
  float* host = nullptr;
  REQUIRE(cudaMallocHost(reinterpret_cast<void**>(&host), 64) == 0);
  std::memset(host, 0, 64);
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == 0);
  REQUIRE(cudaMallocAsync(reinterpret_cast<void**>(&p), 64, s) == 0);
  REQUIRE(cudaMemsetAsync(p, 0x3f, 64, s) == 0);
  REQUIRE(cudaMemcpyAsync(host, p, 64, cudaMemcpyDeviceToHost, s) == 0);
  REQUIRE(cudaFreeAsync(p, s) == 0);
  REQUIRE(cudaStreamEndCapture(s, &g) == 0);
  CHECK(host[0] == 0.f);  // nothing ran during the capture
  cudaGraphExec_t ge = nullptr;
  REQUIRE(cudaGraphInstantiate(&ge, g, 0) == 0);
  for (int r = 0; r < 2; ++r) {
    std::memset(host, 0, 64);
    REQUIRE(cudaGraphLaunch(ge, s) == 0);
    REQUIRE(cudaStreamSynchronize(s) == 0);
    uint32_t bits = 0;
    std::memcpy(&bits, &host[15], 4);
    CHECK(bits == 0x3f3f3f3fu);
  }
  CHECK(cudaGraphExecDestroy(ge) == 0);
  CHECK(cudaGraphDestroy(g) == 0);
  CHECK(cudaFreeHost(host) == 0);
  CHECK(cudaStreamDestroy(s) == 0);
}

// Run as their own ctest tests (the process must die with the report): hidden from "[interp]".
TEST_CASE("interp abort: an out-of-bounds store names the kernel and the allocation",
          "[.interp-abort-oob]") {
  DeviceBuffer y(12);  // 48 bytes: the guard page starts right after the last element
  (void)run_out_of_bounds(y.p, 12);
}

TEST_CASE("interp abort: a use after free names the allocation", "[.interp-abort-uaf]") {
  float* p = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), 40) == 0);
  REQUIRE(cudaFree(p) == 0);
  (void)run_out_of_bounds(p, 0);
}

TEST_CASE("interp abort: a fiber stack overflow is reported", "[.interp-abort-stack]") {
  DeviceBuffer y(1);
  (void)run_stack_overflow(y.p);
}
