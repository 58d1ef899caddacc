#include "kernels/elementwise.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "kernels/bf16.h"
#include "kernels/runtime.h"

namespace gan::kernels {

const char* unary_name(Unary op) {
  switch (op) {
    case Unary::kScale:
      return "scale";
    case Unary::kRelu:
      return "relu";
    case Unary::kLeakyRelu:
      return "leaky_relu";
    case Unary::kTanh:
      return "tanh";
    case Unary::kSigmoid:
      return "sigmoid";
    case Unary::kSqrt:
      return "sqrt";
  }
  return "?";
}

const char* binary_name(Binary op) {
  switch (op) {
    case Binary::kAdd:
      return "add";
    case Binary::kSub:
      return "sub";
    case Binary::kMul:
      return "mul";
    case Binary::kDiv:
      return "div";
  }
  return "?";
}

namespace {

constexpr int kThreads = 256;

#define GRID_STRIDE_LOOP(i, n)                                              \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

// Elements are float32 or bf16 (uint16_t patterns: loaded into float32, stored rounded).
__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(uint16_t v) { return bf16_to_f32(v); }
__device__ __forceinline__ void st(float& d, float v) { d = v; }
__device__ __forceinline__ void st(uint16_t& d, float v) { d = f32_to_bf16(v); }

// Four bf16 values packed in 8 bytes (the lower address in the low half) <-> four floats.
__device__ __forceinline__ float4 widen4(uint2 h) {
  return make_float4(bf16_to_f32(uint16_t(h.x & 0xffffu)), bf16_to_f32(uint16_t(h.x >> 16)),
                     bf16_to_f32(uint16_t(h.y & 0xffffu)), bf16_to_f32(uint16_t(h.y >> 16)));
}
__device__ __forceinline__ uint2 narrow4(float4 v) {
  uint2 h;
  h.x = uint32_t(f32_to_bf16(v.x)) | (uint32_t(f32_to_bf16(v.y)) << 16);
  h.y = uint32_t(f32_to_bf16(v.z)) | (uint32_t(f32_to_bf16(v.w)) << 16);
  return h;
}

template <Unary OP>
__device__ __forceinline__ float unary_f(float v, float alpha) {
  if constexpr (OP == Unary::kScale) return alpha * v;
  if constexpr (OP == Unary::kRelu) return v < 0.f ? 0.f : v;
  if constexpr (OP == Unary::kLeakyRelu) return v < 0.f ? alpha * v : v;
  if constexpr (OP == Unary::kTanh) return tanhf(v);
  if constexpr (OP == Unary::kSigmoid) {
    if (v >= 0.f) return 1.f / (1.f + expf(-v));
    const float e = expf(v);
    return e / (1.f + e);
  }
  if constexpr (OP == Unary::kSqrt) return sqrtf(v);
  return 0.f;
}

template <Unary OP>
__device__ __forceinline__ float unary_df(float x, float y, float g, float alpha) {
  if constexpr (OP == Unary::kScale) return alpha * g;
  if constexpr (OP == Unary::kRelu) return y <= 0.f ? 0.f : g;
  if constexpr (OP == Unary::kLeakyRelu) return x > 0.f ? g : g * alpha;
  if constexpr (OP == Unary::kTanh) return g * (1.f - y * y);
  if constexpr (OP == Unary::kSigmoid) return g * y * (1.f - y);
  if constexpr (OP == Unary::kSqrt) return g / (2.f * y);
  return 0.f;
}

// x (n) -> y (n)
template <Unary OP, class T>
__global__ void unary_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                     float alpha) {
  GRID_STRIDE_LOOP(i, n) st(y[i], unary_f<OP>(ld(x[i]), alpha));
}

// dy (n) -> dx (n); x or y may be null when OP does not read it.
template <Unary OP, class T>
__global__ void unary_backward_kernel(const T* __restrict__ x, const T* __restrict__ y,
                                      const T* __restrict__ dy, T* __restrict__ dx, int64_t n,
                                      float alpha) {
  GRID_STRIDE_LOOP(i, n) {
    const float xv = x ? ld(x[i]) : 0.f, yv = y ? ld(y[i]) : 0.f;
    st(dx[i], unary_df<OP>(xv, yv, ld(dy[i]), alpha));
  }
}

// bf16, 4 elements per iteration: 8-byte loads and stores (n a multiple of 4, buffers 8-byte
// aligned); x or y may be null in the backward pass when OP does not read it.
template <Unary OP>
__global__ void unary_forward_bf16x4_kernel(const uint16_t* __restrict__ x,
                                            uint16_t* __restrict__ y, int64_t n, float alpha) {
  GRID_STRIDE_LOOP(q, n / 4) {
    const float4 v = widen4(reinterpret_cast<const uint2*>(x)[q]);
    reinterpret_cast<uint2*>(y)[q] =
        narrow4(make_float4(unary_f<OP>(v.x, alpha), unary_f<OP>(v.y, alpha),
                            unary_f<OP>(v.z, alpha), unary_f<OP>(v.w, alpha)));
  }
}

template <Unary OP>
__global__ void unary_backward_bf16x4_kernel(const uint16_t* __restrict__ x,
                                             const uint16_t* __restrict__ y,
                                             const uint16_t* __restrict__ dy,
                                             uint16_t* __restrict__ dx, int64_t n, float alpha) {
  GRID_STRIDE_LOOP(q, n / 4) {
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    const float4 xv = x ? widen4(reinterpret_cast<const uint2*>(x)[q]) : zero;
    const float4 yv = y ? widen4(reinterpret_cast<const uint2*>(y)[q]) : zero;
    const float4 g = widen4(reinterpret_cast<const uint2*>(dy)[q]);
    reinterpret_cast<uint2*>(dx)[q] = narrow4(
        make_float4(unary_df<OP>(xv.x, yv.x, g.x, alpha), unary_df<OP>(xv.y, yv.y, g.y, alpha),
                    unary_df<OP>(xv.z, yv.z, g.z, alpha), unary_df<OP>(xv.w, yv.w, g.w, alpha)));
  }
}

// n a multiple of 4 and every non-null pointer 8-byte aligned.
inline bool bf16x4_ok(int64_t n, std::initializer_list<const void*> ptrs) {
  if (n % 4 != 0) return false;
  for (const void* p : ptrs)
    if (p && reinterpret_cast<uintptr_t>(p) % 8 != 0) return false;
  return true;
}

template <Binary OP>
__device__ __forceinline__ float binary_f(float u, float v) {
  if constexpr (OP == Binary::kAdd) return u + v;
  if constexpr (OP == Binary::kSub) return u - v;
  if constexpr (OP == Binary::kMul) return u * v;
  if constexpr (OP == Binary::kDiv) return u / v;
  return 0.f;
}

// a, b broadcast -> y (bi.n). In place (y == a) is allowed when a has the output shape.
template <Binary OP, class T>
__global__ void binary_forward_kernel(BroadcastIndex bi, const T* a, const T* b, T* y) {
  GRID_STRIDE_LOOP(i, bi.n) st(y[i], binary_f<OP>(ld(a[bi.index_a(i)]), ld(b[bi.index_b(i)])));
}

// Full-size partials of mul/div: ga, gb (bi.n), either may be null.
template <Binary OP, class T>
__global__ void binary_backward_kernel(BroadcastIndex bi, const T* __restrict__ a,
                                       const T* __restrict__ b, const T* __restrict__ dy,
                                       T* __restrict__ ga, T* __restrict__ gb) {
  GRID_STRIDE_LOOP(i, bi.n) {
    const float u = ld(a[bi.index_a(i)]), v = ld(b[bi.index_b(i)]), g = ld(dy[i]);
    if constexpr (OP == Binary::kMul) {
      if (ga) st(ga[i], g * v);
      if (gb) st(gb[i], g * u);
    } else {
      if (ga) st(ga[i], g / v);
      if (gb) st(gb[i], -g * u / (v * v));
    }
  }
}

__global__ void expand_kernel(BroadcastIndex bi, const float* __restrict__ x, float scale,
                              float* __restrict__ y) {
  GRID_STRIDE_LOOP(i, bi.n) y[i] = scale * x[bi.index_b(i)];
}

__global__ void axpy_kernel(float alpha, const float* __restrict__ x, float* __restrict__ y,
                            int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] += alpha * x[i];
}

__global__ void fill_kernel(float* __restrict__ y, int64_t n, float value) {
  GRID_STRIDE_LOOP(i, n) y[i] = value;
}

__global__ void clamp_kernel(float* __restrict__ y, int64_t n, float lo, float hi) {
  GRID_STRIDE_LOOP(i, n) {
    const float v = y[i];
    y[i] = v < lo ? lo : v > hi ? hi : v;
  }
}

__global__ void lerp_kernel(float* __restrict__ ema, const float* __restrict__ x, int64_t n,
                            float w) {
  GRID_STRIDE_LOOP(i, n) ema[i] += w * (x[i] - ema[i]);
}

}  // namespace

void clamp_cuda(float* y, int64_t n, float lo, float hi, cudaStream_t stream) {
  GAN_NVTX("clamp");
  if (n == 0) return;
  launch(clamp_kernel, grid_blocks(n, kThreads), kThreads, 0, stream, y, n, lo, hi);
  GAN_CUDA_CHECK_LAUNCH();
}

void lerp_cuda(float* ema, const float* x, int64_t n, float w, cudaStream_t stream) {
  GAN_NVTX("ema");
  if (n == 0) return;
  launch(lerp_kernel, grid_blocks(n, kThreads), kThreads, 0, stream, ema, x, n, w);
  GAN_CUDA_CHECK_LAUNCH();
}

namespace {

// The one dispatch from a runtime op to the kernels' compile-time template argument:
// f(std::integral_constant<Unary, OP>{}) for the op given.
template <class F>
void dispatch_unary(Unary op, F&& f) {
  switch (op) {
    case Unary::kScale:
      return f(std::integral_constant<Unary, Unary::kScale>{});
    case Unary::kRelu:
      return f(std::integral_constant<Unary, Unary::kRelu>{});
    case Unary::kLeakyRelu:
      return f(std::integral_constant<Unary, Unary::kLeakyRelu>{});
    case Unary::kTanh:
      return f(std::integral_constant<Unary, Unary::kTanh>{});
    case Unary::kSigmoid:
      return f(std::integral_constant<Unary, Unary::kSigmoid>{});
    case Unary::kSqrt:
      return f(std::integral_constant<Unary, Unary::kSqrt>{});
  }
  throw_error("elementwise: unknown unary op");
}

template <class F>
void dispatch_binary(Binary op, F&& f) {
  switch (op) {
    case Binary::kAdd:
      return f(std::integral_constant<Binary, Binary::kAdd>{});
    case Binary::kSub:
      return f(std::integral_constant<Binary, Binary::kSub>{});
    case Binary::kMul:
      return f(std::integral_constant<Binary, Binary::kMul>{});
    case Binary::kDiv:
      return f(std::integral_constant<Binary, Binary::kDiv>{});
  }
  throw_error("elementwise: unknown binary op");
}

}  // namespace

namespace {
template <class T>
void unary_forward_t(Unary op, float alpha, const T* x, T* y, int64_t n, cudaStream_t stream) {
  GAN_NVTX(unary_name(op));
  GAN_CHECK(n >= 0, "unary_forward_cuda: negative size");
  if (n == 0) return;
  dispatch_unary(op, [&](auto k) {
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (bf16x4_ok(n, {x, y})) {
        launch(unary_forward_bf16x4_kernel<decltype(k)::value>, grid_blocks(n / 4, kThreads),
               kThreads, 0, stream, x, y, n, alpha);
        return;
      }
    }
    launch(unary_forward_kernel<decltype(k)::value, T>, grid_blocks(n, kThreads), kThreads, 0,
           stream, x, y, n, alpha);
  });
  GAN_CUDA_CHECK_LAUNCH();
}

template <class T>
void unary_backward_t(Unary op, float alpha, const T* x, const T* y, const T* dy, T* dx, int64_t n,
                      cudaStream_t stream) {
  GAN_NVTX(unary_name(op));
  GAN_CHECK(n >= 0, "unary_backward_cuda: negative size");
  if (n == 0) return;
  dispatch_unary(op, [&](auto k) {
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (bf16x4_ok(n, {x, y, dy, dx})) {
        launch(unary_backward_bf16x4_kernel<decltype(k)::value>, grid_blocks(n / 4, kThreads),
               kThreads, 0, stream, x, y, dy, dx, n, alpha);
        return;
      }
    }
    launch(unary_backward_kernel<decltype(k)::value, T>, grid_blocks(n, kThreads), kThreads, 0,
           stream, x, y, dy, dx, n, alpha);
  });
  GAN_CUDA_CHECK_LAUNCH();
}

template <class T>
void binary_forward_t(Binary op, const BroadcastIndex& bi, const T* a, const T* b, T* y,
                      cudaStream_t stream) {
  GAN_NVTX(binary_name(op));
  if (bi.n == 0) return;
  dispatch_binary(op, [&](auto k) {
    launch(binary_forward_kernel<decltype(k)::value, T>, grid_blocks(bi.n, kThreads), kThreads, 0,
           stream, bi, a, b, y);
  });
  GAN_CUDA_CHECK_LAUNCH();
}

template <class T>
void binary_backward_t(Binary op, const BroadcastIndex& bi, const T* a, const T* b, const T* dy,
                       T* ga, T* gb, cudaStream_t stream) {
  GAN_NVTX(binary_name(op));
  GAN_CHECK(op == Binary::kMul || op == Binary::kDiv,
            "binary_backward_cuda: only mul and div have a backward kernel");
  if (bi.n == 0) return;
  dispatch_binary(op, [&](auto k) {
    if constexpr (decltype(k)::value == Binary::kMul || decltype(k)::value == Binary::kDiv)
      launch(binary_backward_kernel<decltype(k)::value, T>, grid_blocks(bi.n, kThreads), kThreads,
             0, stream, bi, a, b, dy, ga, gb);
  });
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace

#define GAN_ELEMENTWISE_PUBLIC(T)                                                             \
  void unary_forward_cuda(Unary op, float alpha, const T* x, T* y, int64_t n,                 \
                          cudaStream_t stream) {                                              \
    unary_forward_t(op, alpha, x, y, n, stream);                                              \
  }                                                                                           \
  void unary_backward_cuda(Unary op, float alpha, const T* x, const T* y, const T* dy, T* dx, \
                           int64_t n, cudaStream_t stream) {                                  \
    unary_backward_t(op, alpha, x, y, dy, dx, n, stream);                                     \
  }                                                                                           \
  void binary_forward_cuda(Binary op, const BroadcastIndex& bi, const T* a, const T* b, T* y, \
                           cudaStream_t stream) {                                             \
    binary_forward_t(op, bi, a, b, y, stream);                                                \
  }                                                                                           \
  void binary_backward_cuda(Binary op, const BroadcastIndex& bi, const T* a, const T* b,      \
                            const T* dy, T* ga, T* gb, cudaStream_t stream) {                 \
    binary_backward_t(op, bi, a, b, dy, ga, gb, stream);                                      \
  }
GAN_ELEMENTWISE_PUBLIC(float)
GAN_ELEMENTWISE_PUBLIC(uint16_t)
#undef GAN_ELEMENTWISE_PUBLIC

void expand_cuda(const BroadcastIndex& bi, const float* x, float scale, float* y,
                 cudaStream_t stream) {
  GAN_NVTX("expand");
  if (bi.n == 0) return;
  launch(expand_kernel, grid_blocks(bi.n, kThreads), kThreads, 0, stream, bi, x, scale, y);
  GAN_CUDA_CHECK_LAUNCH();
}

void axpy_cuda(float alpha, const float* x, float* y, int64_t n, cudaStream_t stream) {
  GAN_NVTX("axpy");
  if (n == 0) return;
  launch(axpy_kernel, grid_blocks(n, kThreads), kThreads, 0, stream, alpha, x, y, n);
  GAN_CUDA_CHECK_LAUNCH();
}

namespace {
__global__ void zero_chunks_kernel(const BufferChunk* __restrict__ table) {
  const BufferChunk c = table[blockIdx.x];
  for (int64_t i = threadIdx.x; i < c.n; i += blockDim.x) c.dst[i] = 0.f;
}
__global__ void lerp_chunks_kernel(const BufferChunk* __restrict__ table, float w) {
  const BufferChunk c = table[blockIdx.x];
  for (int64_t i = threadIdx.x; i < c.n; i += blockDim.x) c.dst[i] += w * (c.src[i] - c.dst[i]);
}
__global__ void lerp_chunks_gated_kernel(const BufferChunk* __restrict__ table, float w,
                                         const double* __restrict__ step, double start) {
  const BufferChunk c = table[blockIdx.x];
  if (*step <= start) {
    for (int64_t i = threadIdx.x; i < c.n; i += blockDim.x) c.dst[i] = c.src[i];
  } else {
    for (int64_t i = threadIdx.x; i < c.n; i += blockDim.x) c.dst[i] += w * (c.src[i] - c.dst[i]);
  }
}
}  // namespace

std::vector<BufferChunk> chunk_table(const std::vector<BufferChunk>& buffers) {
  std::vector<BufferChunk> t;
  for (const BufferChunk& b : buffers)
    for (int64_t o = 0; o < b.n; o += kChunkFloats)
      t.push_back({b.dst + o, b.src ? b.src + o : nullptr, std::min(kChunkFloats, b.n - o)});
  return t;
}

void zero_chunks_cuda(const BufferChunk* table, int64_t count, cudaStream_t stream) {
  GAN_NVTX("zero_chunks");
  if (count == 0) return;
  GAN_CHECK(count <= INT32_MAX, "zero_chunks_cuda: too many chunks");
  launch(zero_chunks_kernel, unsigned(count), kThreads, 0, stream, table);
  GAN_CUDA_CHECK_LAUNCH();
}

void lerp_chunks_cuda(const BufferChunk* table, int64_t count, float w, cudaStream_t stream) {
  GAN_NVTX("ema");
  if (count == 0) return;
  GAN_CHECK(count <= INT32_MAX, "lerp_chunks_cuda: too many chunks");
  launch(lerp_chunks_kernel, unsigned(count), kThreads, 0, stream, table, w);
  GAN_CUDA_CHECK_LAUNCH();
}

void lerp_chunks_gated_cuda(const BufferChunk* table, int64_t count, float w, const double* step,
                            double start, cudaStream_t stream) {
  GAN_NVTX("ema");
  if (count == 0) return;
  GAN_CHECK(count <= INT32_MAX, "lerp_chunks_gated_cuda: too many chunks");
  launch(lerp_chunks_gated_kernel, unsigned(count), kThreads, 0, stream, table, w, step, start);
  GAN_CUDA_CHECK_LAUNCH();
}

namespace {
template <BiasAct ACT>
__global__ void bias_act_kernel(float* __restrict__ y, const float* __restrict__ b, int64_t n,
                                int64_t k, float slope) {
  GRID_STRIDE_LOOP(i, n) {
    float v = y[i];
    if (b) v = v + b[i % k];
    if constexpr (ACT == BiasAct::kRelu) v = v < 0.f ? 0.f : v;
    if constexpr (ACT == BiasAct::kLeakyRelu) v = v < 0.f ? slope * v : v;
    if constexpr (ACT == BiasAct::kTanh) v = tanhf(v);
    y[i] = v;
  }
}
}  // namespace

void bias_act_cuda(float* y, const float* b, int64_t rows, int64_t k, BiasAct act, float slope,
                   cudaStream_t stream) {
  GAN_NVTX("bias_act");
  const int64_t n = rows * k;
  if (n == 0 || (!b && act == BiasAct::kNone)) return;
  auto go = [&](auto kernel) {
    launch(kernel, grid_blocks(n, kThreads), kThreads, 0, stream, y, b, n, k, slope);
  };
  if (act == BiasAct::kRelu)
    go(bias_act_kernel<BiasAct::kRelu>);
  else if (act == BiasAct::kLeakyRelu)
    go(bias_act_kernel<BiasAct::kLeakyRelu>);
  else if (act == BiasAct::kTanh)
    go(bias_act_kernel<BiasAct::kTanh>);
  else
    go(bias_act_kernel<BiasAct::kNone>);
  GAN_CUDA_CHECK_LAUNCH();
}

namespace {
template <BiasAct ACT>
__device__ __forceinline__ float bias_act_one(float v, const float* __restrict__ b, int64_t c,
                                              float slope) {
  if (b) v = v + b[c];
  if constexpr (ACT == BiasAct::kRelu) v = v < 0.f ? 0.f : v;
  if constexpr (ACT == BiasAct::kLeakyRelu) v = v < 0.f ? slope * v : v;
  if constexpr (ACT == BiasAct::kTanh) v = tanhf(v);
  return v;
}

// VEC: 4 elements per iteration (n4 = n / 4 groups; y16 8-byte and y 16-byte aligned). With
// out16 the result is rounded into it (8-byte aligned when VEC) and y is not written.
template <BiasAct ACT, bool VEC>
__global__ void bias_act_bf16_kernel(const uint16_t* y16, float* __restrict__ y,
                                     const float* __restrict__ b, int64_t n, int64_t k, float slope,
                                     uint16_t* out16) {
  if constexpr (VEC) {
    GRID_STRIDE_LOOP(q, n / 4) {
      const float4 w = widen4(reinterpret_cast<const uint2*>(y16)[q]);
      const int64_t i = 4 * q;
      float4 o;
      o.x = bias_act_one<ACT>(w.x, b, i % k, slope);
      o.y = bias_act_one<ACT>(w.y, b, (i + 1) % k, slope);
      o.z = bias_act_one<ACT>(w.z, b, (i + 2) % k, slope);
      o.w = bias_act_one<ACT>(w.w, b, (i + 3) % k, slope);
      if (out16)
        reinterpret_cast<uint2*>(out16)[q] = narrow4(o);
      else
        reinterpret_cast<float4*>(y)[q] = o;
    }
  } else {
    GRID_STRIDE_LOOP(i, n) {
      const float v = bias_act_one<ACT>(bf16_to_f32(y16[i]), b, i % k, slope);
      if (out16)
        out16[i] = f32_to_bf16(v);
      else
        y[i] = v;
    }
  }
}

__global__ void bf16_fill_kernel(uint16_t* __restrict__ y, int64_t n, uint16_t v) {
  GRID_STRIDE_LOOP(i, n) y[i] = v;
}
}  // namespace

void bias_act_bf16_cuda(const uint16_t* y16, float* y, const float* b, int64_t rows, int64_t k,
                        BiasAct act, float slope, cudaStream_t stream, uint16_t* out16) {
  GAN_NVTX("bias_act (bf16)");
  const int64_t n = rows * k;
  if (n == 0) return;
  const bool vec = n % 4 == 0 && reinterpret_cast<uintptr_t>(y16) % 8 == 0 &&
                   (out16 ? reinterpret_cast<uintptr_t>(out16) % 8 == 0
                          : reinterpret_cast<uintptr_t>(y) % 16 == 0);
  auto go = [&](auto vec_tag, auto act_tag) {
    constexpr bool V = decltype(vec_tag)::value;
    constexpr BiasAct A = decltype(act_tag)::value;
    launch(bias_act_bf16_kernel<A, V>, grid_blocks(V ? n / 4 : n, kThreads), kThreads, 0, stream,
           y16, y, b, n, k, slope, out16);
  };
  auto with_act = [&](auto vec_tag) {
    if (act == BiasAct::kRelu)
      go(vec_tag, std::integral_constant<BiasAct, BiasAct::kRelu>{});
    else if (act == BiasAct::kLeakyRelu)
      go(vec_tag, std::integral_constant<BiasAct, BiasAct::kLeakyRelu>{});
    else if (act == BiasAct::kTanh)
      go(vec_tag, std::integral_constant<BiasAct, BiasAct::kTanh>{});
    else
      go(vec_tag, std::integral_constant<BiasAct, BiasAct::kNone>{});
  };
  if (vec)
    with_act(std::true_type{});
  else
    with_act(std::false_type{});
  GAN_CUDA_CHECK_LAUNCH();
}

void fill_cuda(float* y, int64_t n, float value, cudaStream_t stream) {
  GAN_NVTX("fill");
  if (n == 0) return;
  launch(fill_kernel, grid_blocks(n, kThreads), kThreads, 0, stream, y, n, value);
  GAN_CUDA_CHECK_LAUNCH();
}

// ---- the trainer's non-finite guard (one thread: a handful of values)
namespace {
__global__ void nonfinite_guard_kernel(const float* __restrict__ x, int64_t n, float* guard) {
  guard[0] += 1.f;
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad = bad || !isfinite(x[i]);
  if (bad && guard[1] == 0.f) guard[1] = guard[0];
}
}  // namespace

void nonfinite_guard_cuda(const float* x, int64_t n, float* guard, cudaStream_t stream) {
  launch(nonfinite_guard_kernel, 1, 1, 0, stream, x, n, guard);
  GAN_CUDA_CHECK_LAUNCH();
}

// ---- bf16 conversions (kernels/bf16.h)
namespace {
// VEC: 4 elements per iteration (16-byte float32 and 8-byte bf16 accesses), n a multiple of 4.
template <bool VEC>
__global__ void f32_to_bf16_kernel(const float* __restrict__ x, uint16_t* __restrict__ y,
                                   int64_t n) {
  if constexpr (VEC) {
    GRID_STRIDE_LOOP(q, n / 4) {
      reinterpret_cast<uint2*>(y)[q] = narrow4(reinterpret_cast<const float4*>(x)[q]);
    }
  } else {
    GRID_STRIDE_LOOP(i, n) { y[i] = f32_to_bf16(x[i]); }
  }
}
template <bool VEC>
__global__ void bf16_to_f32_kernel(const uint16_t* __restrict__ x, float* __restrict__ y,
                                   int64_t n) {
  if constexpr (VEC) {
    GRID_STRIDE_LOOP(q, n / 4) {
      reinterpret_cast<float4*>(y)[q] = widen4(reinterpret_cast<const uint2*>(x)[q]);
    }
  } else {
    GRID_STRIDE_LOOP(i, n) { y[i] = bf16_to_f32(x[i]); }
  }
}

template <bool VEC>
__global__ void bf16_accumulate_kernel(const uint16_t* __restrict__ x, float* __restrict__ y,
                                       int64_t n) {
  if constexpr (VEC) {
    GRID_STRIDE_LOOP(q, n / 4) {
      const float4 w = widen4(reinterpret_cast<const uint2*>(x)[q]);
      float4 v = reinterpret_cast<float4*>(y)[q];
      v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
      reinterpret_cast<float4*>(y)[q] = v;
    }
  } else {
    GRID_STRIDE_LOOP(i, n) { y[i] += bf16_to_f32(x[i]); }
  }
}

template <bool VEC>
__global__ void bf16_add_kernel(const uint16_t* __restrict__ x, uint16_t* __restrict__ y,
                                int64_t n) {
  if constexpr (VEC) {
    GRID_STRIDE_LOOP(q, n / 4) {
      const float4 a = widen4(reinterpret_cast<const uint2*>(x)[q]);
      float4 v = widen4(reinterpret_cast<uint2*>(y)[q]);
      v.x += a.x, v.y += a.y, v.z += a.z, v.w += a.w;
      reinterpret_cast<uint2*>(y)[q] = narrow4(v);
    }
  } else {
    GRID_STRIDE_LOOP(i, n) { y[i] = f32_to_bf16(bf16_to_f32(y[i]) + bf16_to_f32(x[i])); }
  }
}

bool vec4(const void* f32, const void* b16, int64_t n) {
  return n % 4 == 0 && reinterpret_cast<uintptr_t>(f32) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(b16) % 8 == 0;
}
}  // namespace

void f32_to_bf16_cuda(const float* x, uint16_t* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (vec4(x, y, n))
    launch(f32_to_bf16_kernel<true>, grid_blocks(n / 4, kThreads), kThreads, 0, stream, x, y, n);
  else
    launch(f32_to_bf16_kernel<false>, grid_blocks(n, kThreads), kThreads, 0, stream, x, y, n);
  GAN_CUDA_CHECK_LAUNCH();
}

void bf16_accumulate_cuda(const uint16_t* x, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (vec4(y, x, n))
    launch(bf16_accumulate_kernel<true>, grid_blocks(n / 4, kThreads), kThreads, 0, stream, x, y,
           n);
  else
    launch(bf16_accumulate_kernel<false>, grid_blocks(n, kThreads), kThreads, 0, stream, x, y, n);
  GAN_CUDA_CHECK_LAUNCH();
}

void bf16_to_f32_cuda(const uint16_t* x, float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (vec4(y, x, n))
    launch(bf16_to_f32_kernel<true>, grid_blocks(n / 4, kThreads), kThreads, 0, stream, x, y, n);
  else
    launch(bf16_to_f32_kernel<false>, grid_blocks(n, kThreads), kThreads, 0, stream, x, y, n);
  GAN_CUDA_CHECK_LAUNCH();
}

void bf16_add_cuda(const uint16_t* x, uint16_t* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const bool vec = n % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 8 == 0 &&
                   reinterpret_cast<uintptr_t>(y) % 8 == 0;
  if (vec)
    launch(bf16_add_kernel<true>, grid_blocks(n / 4, kThreads), kThreads, 0, stream, x, y, n);
  else
    launch(bf16_add_kernel<false>, grid_blocks(n, kThreads), kThreads, 0, stream, x, y, n);
  GAN_CUDA_CHECK_LAUNCH();
}

void bf16_fill_cuda(uint16_t* y, int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  launch(bf16_fill_kernel, grid_blocks(n, kThreads), kThreads, 0, stream, y, n, f32_to_bf16(value));
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace gan::kernels
