// Attention kernel lab: every version is checked against the reference, then timed (forward +
// backward of softmax(Q K^T) V, as bench/torch_gan_bench.py --attn times PyTorch).
//   v0 naive: S = Q K^T and dS materialised (cuBLAS batched SGEMM + a row-softmax kernel)
//   v1 flash: kernels/attention.cu (tiles of 32 x 32, online softmax, lse saved, SIMT float32)
//   v3 mma:   kernels/attention_mma.cu (tensor cores, mma.sync m16n8k8) in TF32 and 3xTF32
// Every version's error is measured against v0 in strict float32 (the reference, computed
// first). --tf32 runs v0 itself with TF32 GEMMs.
// Usage: bench_attention [--tf32] [B C N ...]   (default: torch_gan_bench.py --attn's shapes)
// Prints one JSON line per shape and version. Exits 0 with a message without a GPU.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "engine/device.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"

using namespace gan;

namespace {

// One block per row of S (B * N rows of N): P = softmax(S) in place.
__global__ void softmax_rows_kernel(float* s, int64_t n) {
  float* row = s + int64_t(blockIdx.x) * n;
  __shared__ float red[32];
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, row[j]);
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
  __syncthreads();
  m = red[0];
  for (int w = 1; w < int(blockDim.x) / 32; ++w) m = fmaxf(m, red[w]);
  __syncthreads();
  float l = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) l += expf(row[j] - m);
  for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = l;
  __syncthreads();
  l = 0.f;
  for (int w = 0; w < int(blockDim.x) / 32; ++w) l += red[w];
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) row[j] = expf(row[j] - m) / l;
}

// dS = P * (dP - sum_j P dP), in place in dp.
__global__ void softmax_rows_backward_kernel(const float* p, float* dp, int64_t n) {
  const float* prow = p + int64_t(blockIdx.x) * n;
  float* drow = dp + int64_t(blockIdx.x) * n;
  __shared__ float red[32];
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += prow[j] * drow[j];
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
  __syncthreads();
  s = 0.f;
  for (int w = 0; w < int(blockDim.x) / 32; ++w) s += red[w];
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) drow[j] = prow[j] * (drow[j] - s);
}

struct Bufs {
  Tensor q, k, v, dy, o, lse, dq, dk, dv, drow, work, s, dp;
};

void naive(const kernels::AttnDims& a, Bufs& t) {
  using kernels::Gemm;
  cudaStream_t st = cuda::stream();
  cublasHandle_t h = cuda::cublas();
  const int64_t n = a.nq, d = a.d, dv = a.dv, b = a.b;
  Gemm g;  // S (N, N) = Q K^T
  g.trans_b = true, g.m = n, g.n = n, g.k = d, g.batch = b;
  g.stride_a = n * d, g.stride_b = n * d, g.stride_c = n * n;
  kernels::gemm_cuda(g, 1.f, t.q.data<float>(), t.k.data<float>(), 0.f, t.s.data<float>(), h);
  softmax_rows_kernel<<<unsigned(b * n), 256, 0, st>>>(t.s.data<float>(), n);
  Gemm pv;  // O (N, dv) = P V
  pv.m = n, pv.n = dv, pv.k = n, pv.batch = b;
  pv.stride_a = n * n, pv.stride_b = n * dv, pv.stride_c = n * dv;
  kernels::gemm_cuda(pv, 1.f, t.s.data<float>(), t.v.data<float>(), 0.f, t.o.data<float>(), h);
  Gemm dpg;  // dP (N, N) = dO V^T
  dpg.trans_b = true, dpg.m = n, dpg.n = n, dpg.k = dv, dpg.batch = b;
  dpg.stride_a = n * dv, dpg.stride_b = n * dv, dpg.stride_c = n * n;
  kernels::gemm_cuda(dpg, 1.f, t.dy.data<float>(), t.v.data<float>(), 0.f, t.dp.data<float>(), h);
  Gemm dvg;  // dV (N, dv) = P^T dO
  dvg.trans_a = true, dvg.m = n, dvg.n = dv, dvg.k = n, dvg.batch = b;
  dvg.stride_a = n * n, dvg.stride_b = n * dv, dvg.stride_c = n * dv;
  kernels::gemm_cuda(dvg, 1.f, t.s.data<float>(), t.dy.data<float>(), 0.f, t.dv.data<float>(), h);
  softmax_rows_backward_kernel<<<unsigned(b * n), 256, 0, st>>>(t.s.data<float>(),
                                                                t.dp.data<float>(), n);
  Gemm dqg;  // dQ (N, d) = dS K
  dqg.m = n, dqg.n = d, dqg.k = n, dqg.batch = b;
  dqg.stride_a = n * n, dqg.stride_b = n * d, dqg.stride_c = n * d;
  kernels::gemm_cuda(dqg, 1.f, t.dp.data<float>(), t.k.data<float>(), 0.f, t.dq.data<float>(), h);
  Gemm dkg;  // dK (N, d) = dS^T Q
  dkg.trans_a = true, dkg.m = n, dkg.n = d, dkg.k = n, dkg.batch = b;
  dkg.stride_a = n * n, dkg.stride_b = n * d, dkg.stride_c = n * d;
  kernels::gemm_cuda(dkg, 1.f, t.dp.data<float>(), t.q.data<float>(), 0.f, t.dk.data<float>(), h);
}

void flash_v1(const kernels::AttnDims& a, Bufs& t) {
  cudaStream_t st = cuda::stream();
  kernels::attention_forward_cuda(a, t.q.data<float>(), t.k.data<float>(), t.v.data<float>(),
                                  t.o.data<float>(), t.lse.data<float>(), nullptr, nullptr, nullptr,
                                  st);
  kernels::attention_backward_cuda(
      a, t.q.data<float>(), t.k.data<float>(), t.v.data<float>(), t.o.data<float>(),
      t.lse.data<float>(), t.dy.data<float>(), nullptr, t.dq.data<float>(), t.dk.data<float>(),
      t.dv.data<float>(), nullptr, t.drow.data<float>(), nullptr, 0, st);
}

void flash_v3(const kernels::AttnDims& a, Bufs& t, kernels::AttnMath math) {
  cudaStream_t st = cuda::stream();
  kernels::attention_forward_mma_cuda(a, t.q.data<float>(), t.k.data<float>(), t.v.data<float>(),
                                      t.o.data<float>(), t.lse.data<float>(), nullptr, nullptr,
                                      nullptr, math, st);
  kernels::attention_backward_mma_cuda(
      a, t.q.data<float>(), t.k.data<float>(), t.v.data<float>(), t.o.data<float>(),
      t.lse.data<float>(), t.dy.data<float>(), nullptr, t.dq.data<float>(), t.dk.data<float>(),
      t.dv.data<float>(), nullptr, t.drow.data<float>(), nullptr, 0, math, st);
}

double max_rel(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector(), y = b.to_vector();
  double err = 0, scale = 1e-3;
  for (size_t i = 0; i < x.size(); ++i) {
    err = std::max(err, double(std::fabs(x[i] - y[i])));
    scale = std::max(scale, double(std::fabs(y[i])));
  }
  return err / scale;
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda_available()) {
    std::printf("bench_attention: no GPU, nothing to measure\n");
    return 0;
  }
  std::vector<int64_t> shapes;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--tf32")
      set_allow_tf32(true);
    else
      shapes.push_back(std::atoll(argv[i]));
  }
  if (shapes.empty())
    shapes = {64, 64, 1024, 64, 128, 256, 64, 64, 4096, 16, 64, 4096, 256, 64, 1024};
  std::printf("{\"gpu\": \"%s\", \"tf32\": %s}\n", bench::device_name().c_str(),
              allow_tf32() ? "true" : "false");
  const bool tf32 = allow_tf32();
  const char* names[] = {"v0_naive", "v1_flash", "v3_mma_tf32", "v3_mma_3xtf32"};
  Generator gen(1, Device::CUDA);
  for (size_t s = 0; s + 2 < shapes.size(); s += 3) {
    const int64_t b = shapes[s], c = shapes[s + 1], n = shapes[s + 2], d = c / 8;
    kernels::AttnDims a;
    a.b = b, a.nq = a.nk = n, a.d = d, a.dv = c, a.ldq = a.ldk = d, a.ldv = a.ldo = c;
    auto make = [&] {
      Bufs t;
      t.o = Tensor::empty(Shape{b, n, c}, Device::CUDA);
      t.lse = Tensor::empty(Shape{b, n}, Device::CUDA);
      t.drow = Tensor::empty(Shape{b, n}, Device::CUDA);
      t.dq = Tensor::empty(Shape{b, n, d}, Device::CUDA);
      t.dk = Tensor::empty(Shape{b, n, d}, Device::CUDA);
      t.dv = Tensor::empty(Shape{b, n, c}, Device::CUDA);
      return t;
    };
    Bufs ref = make();
    ref.q = Tensor::empty(Shape{b, n, d}, Device::CUDA);
    ref.k = Tensor::empty(Shape{b, n, d}, Device::CUDA);
    ref.v = Tensor::empty(Shape{b, n, c}, Device::CUDA);
    ref.dy = Tensor::empty(Shape{b, n, c}, Device::CUDA);
    gen.normal_(ref.q);
    gen.normal_(ref.k);
    gen.normal_(ref.v);
    gen.normal_(ref.dy);
    ref.s = Tensor::empty(Shape{b, n, n}, Device::CUDA);
    ref.dp = Tensor::empty(Shape{b, n, n}, Device::CUDA);
    set_allow_tf32(false);
    naive(a, ref);  // the reference: strict float32
    set_allow_tf32(tf32);
    // 2 N^2 (d + dv) forward, 2 N^2 (3 d + 2 dv) backward (the minimum; v1, v3 recompute more).
    const double flops = 2.0 * double(b) * double(n) * double(n) * double(4 * d + 3 * c);
    for (int version = 0; version < 4; ++version) {
      Bufs t = make();
      t.q = ref.q, t.k = ref.k, t.v = ref.v, t.dy = ref.dy, t.s = ref.s, t.dp = ref.dp;
      auto run = [&] {
        if (version == 0)
          naive(a, t);
        else if (version == 1)
          flash_v1(a, t);
        else
          flash_v3(a, t, version == 2 ? kernels::AttnMath::kTF32 : kernels::AttnMath::k3xTF32);
      };
      if (version == 1 && d > kernels::kAttnMaxD) continue;
      run();
      const double err = std::max({max_rel(t.o, ref.o), max_rel(t.dq, ref.dq),
                                   max_rel(t.dk, ref.dk), max_rel(t.dv, ref.dv)});
      const double ms = bench::time_ms(run, 3, 5, 7);
      std::printf(
          "{\"B\": %lld, \"C\": %lld, \"N\": %lld, \"version\": \"%s\", \"fwd_bwd_ms\": %.4f, "
          "\"tflops\": %.2f, \"max_rel_err_vs_fp32\": %.3g, \"extra_bytes\": %lld}\n",
          (long long)b, (long long)c, (long long)n, names[version], ms, flops / (ms * 1e-3) / 1e12,
          err, (long long)(version == 0 ? 2 * b * n * n * 4 : (b * n * c + 2 * b * n) * 4));
      std::fflush(stdout);
    }
  }
  return 0;
}
