// Elementwise ops: unary activations and scale, binary add/sub/mul/div with broadcasting, and the
// small helpers the engine needs (fill, y += alpha * x, broadcast-copy).
//
// Contract: forward overwrites its output; backward writes full-size partial gradients (the engine
// reduces them to broadcast operand shapes); nothing accumulates except axpy. The CPU functions
// are the reference: plain loops computing in double. The CUDA launchers run on `stream`, open an
// NVTX range named after the op and check the launch.
//
// NaN semantics (kept identical on both devices): relu and leaky_relu propagate NaN; relu's
// backward passes the gradient where y is NaN (PyTorch's threshold_backward: y <= 0 -> 0).
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/broadcast.h"

namespace gan::kernels {

enum class Unary : uint8_t { kScale, kRelu, kLeakyRelu, kTanh, kSigmoid, kSqrt };
enum class Binary : uint8_t { kAdd, kSub, kMul, kDiv };

const char* unary_name(Unary op);
const char* binary_name(Binary op);

// ---------------------------------------------------------------------------------------------
// CPU reference

// x (n) -> y (n). alpha: the factor of kScale, the negative slope of kLeakyRelu.
template <class T>
void unary_forward_cpu(Unary op, double alpha, const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(x[i]);
    double r = 0;
    switch (op) {
      case Unary::kScale:
        r = alpha * v;
        break;
      case Unary::kRelu:
        r = v < 0 ? 0.0 : v;
        break;
      case Unary::kLeakyRelu:
        r = v < 0 ? alpha * v : v;
        break;
      case Unary::kTanh:
        r = std::tanh(v);
        break;
      case Unary::kSigmoid:
        r = v >= 0 ? 1 / (1 + std::exp(-v)) : std::exp(v) / (1 + std::exp(v));
        break;
      case Unary::kSqrt:
        r = std::sqrt(v);
        break;
    }
    y[i] = T(r);
  }
}

// dy (n) -> dx (n). Reads x (leaky_relu) or y (relu, tanh, sigmoid, sqrt); the other may be null.
// sqrt: dx = dy / (2 y) (infinite at 0, as PyTorch's).
template <class T>
void unary_backward_cpu(Unary op, double alpha, const T* x, const T* y, const T* dy, T* dx,
                        int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = double(dy[i]);
    double r = 0;
    switch (op) {
      case Unary::kScale:
        r = alpha * g;
        break;
      case Unary::kRelu:
        r = double(y[i]) <= 0 ? 0.0 : g;
        break;
      case Unary::kLeakyRelu:
        r = double(x[i]) > 0 ? g : g * alpha;
        break;
      case Unary::kTanh:
        r = g * (1 - double(y[i]) * double(y[i]));
        break;
      case Unary::kSigmoid:
        r = g * double(y[i]) * (1 - double(y[i]));
        break;
      case Unary::kSqrt:
        r = g / (2 * double(y[i]));
        break;
    }
    dx[i] = T(r);
  }
}

// a, b broadcast to bi's output shape -> y (bi.n).
template <class T>
void binary_forward_cpu(Binary op, const BroadcastIndex& bi, const T* a, const T* b, T* y) {
  for (int64_t i = 0; i < bi.n; ++i) {
    const double u = double(a[bi.index_a(i)]), v = double(b[bi.index_b(i)]);
    double r = 0;
    switch (op) {
      case Binary::kAdd:
        r = u + v;
        break;
      case Binary::kSub:
        r = u - v;
        break;
      case Binary::kMul:
        r = u * v;
        break;
      case Binary::kDiv:
        r = u / v;
        break;
    }
    y[i] = T(r);
  }
}

// Full-size partial gradients for kMul and kDiv (add/sub need no kernel):
// ga (bi.n) = dy * d(a op b)/da, gb (bi.n) = dy * d(a op b)/db; either may be null.
template <class T>
void binary_backward_cpu(Binary op, const BroadcastIndex& bi, const T* a, const T* b, const T* dy,
                         T* ga, T* gb) {
  for (int64_t i = 0; i < bi.n; ++i) {
    const double u = double(a[bi.index_a(i)]), v = double(b[bi.index_b(i)]);
    const double g = double(dy[i]);
    if (op == Binary::kMul) {
      if (ga) ga[i] = T(g * v);
      if (gb) gb[i] = T(g * u);
    } else {  // kDiv
      if (ga) ga[i] = T(g / v);
      if (gb) gb[i] = T(-g * u / (v * v));
    }
  }
}

// y (bi.n) = scale * x broadcast to bi's output. x is operand b of bi:
// bi = make_broadcast_index(out_shape, out_shape, x_shape).
template <class T>
void expand_cpu(const BroadcastIndex& bi, const T* x, double scale, T* y) {
  for (int64_t i = 0; i < bi.n; ++i) y[i] = T(scale * double(x[bi.index_b(i)]));
}

template <class T>
void axpy_cpu(double alpha, const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = T(double(y[i]) + alpha * double(x[i]));
}

// y = clamp(y, lo, hi) in place (WGAN weight clipping); NaN stays NaN.
template <class T>
void clamp_cpu(T* y, int64_t n, double lo, double hi) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(y[i]);
    y[i] = T(v < lo ? lo : v > hi ? hi : v);
  }
}

// ema += w (x - ema) in place (exponential moving average of weights, w = 1 - decay).
template <class T>
void lerp_cpu(T* ema, const T* x, int64_t n, double w) {
  for (int64_t i = 0; i < n; ++i) ema[i] = T(double(ema[i]) + w * (double(x[i]) - double(ema[i])));
}

// y (rows, k) = act(y + b) in place (b (k) or null): a convolution's bias and the activation
// that follows it in one pass, with the same roundings as the separate add and activation.
enum class BiasAct : uint8_t { kNone, kRelu, kLeakyRelu, kTanh };
template <class T>
void bias_act_cpu(T* y, const T* b, int64_t rows, int64_t k, BiasAct act, double slope) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < k; ++c) {
      T& out = y[r * k + c];
      if (b) out = T(double(out) + double(b[c]));
      const double v = double(out);
      if (act == BiasAct::kRelu) out = T(v < 0 ? 0.0 : v);
      if (act == BiasAct::kLeakyRelu) out = T(v < 0 ? slope * v : v);
      if (act == BiasAct::kTanh) out = T(std::tanh(v));
    }
}

// The trainer's non-finite guard, once per iteration with no host sync: guard[0] counts the
// iterations (the step just done), and the first call whose x (n values) holds a NaN or an
// infinity stores that count in guard[1] (0: none so far). Counts are exact to 2^24 steps.
template <class T>
void nonfinite_guard_cpu(const T* x, int64_t n, T* guard) {
  guard[0] = T(double(guard[0]) + 1);
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad = bad || !std::isfinite(double(x[i]));
  if (bad && guard[1] == T(0)) guard[1] = guard[0];
}

// ---------------------------------------------------------------------------------------------
// CUDA

void unary_forward_cuda(Unary op, float alpha, const float* x, float* y, int64_t n,
                        cudaStream_t stream);
void unary_backward_cuda(Unary op, float alpha, const float* x, const float* y, const float* dy,
                         float* dx, int64_t n, cudaStream_t stream);
void binary_forward_cuda(Binary op, const BroadcastIndex& bi, const float* a, const float* b,
                         float* y, cudaStream_t stream);
void binary_backward_cuda(Binary op, const BroadcastIndex& bi, const float* a, const float* b,
                          const float* dy, float* ga, float* gb, cudaStream_t stream);
// bf16 elements (bf16 activations): loaded into float32, the same float32 math, stored rounded.
void unary_forward_cuda(Unary op, float alpha, const uint16_t* x, uint16_t* y, int64_t n,
                        cudaStream_t stream);
void unary_backward_cuda(Unary op, float alpha, const uint16_t* x, const uint16_t* y,
                         const uint16_t* dy, uint16_t* dx, int64_t n, cudaStream_t stream);
void binary_forward_cuda(Binary op, const BroadcastIndex& bi, const uint16_t* a, const uint16_t* b,
                         uint16_t* y, cudaStream_t stream);
void binary_backward_cuda(Binary op, const BroadcastIndex& bi, const uint16_t* a, const uint16_t* b,
                          const uint16_t* dy, uint16_t* ga, uint16_t* gb, cudaStream_t stream);
void expand_cuda(const BroadcastIndex& bi, const float* x, float scale, float* y,
                 cudaStream_t stream);
void axpy_cuda(float alpha, const float* x, float* y, int64_t n, cudaStream_t stream);
void fill_cuda(float* y, int64_t n, float value, cudaStream_t stream);

// Many buffers in one launch (a model's zero_grad or weight EMA: one graph node instead of one per
// parameter). The table (device memory, `count` entries) lists chunks of at most kChunkFloats
// floats, one block each; chunk_table splits (dst, src, n) buffers into it on the host.
struct BufferChunk {
  float* dst;
  const float* src;  // null for zeroing
  int64_t n;
};
constexpr int64_t kChunkFloats = int64_t(1) << 14;
std::vector<BufferChunk> chunk_table(const std::vector<BufferChunk>& buffers);
// dst = 0.
void zero_chunks_cuda(const BufferChunk* table, int64_t count, cudaStream_t stream);
// dst += w (src - dst) (lerp_cuda over every chunk).
void lerp_chunks_cuda(const BufferChunk* table, int64_t count, float w, cudaStream_t stream);
// The same gated by a step counter in device memory (a double, e.g. Adam's): dst = src exactly
// while *step <= start, dst += w (src - dst) after; the gate is read on the device, so a captured
// graph replays it correctly (an EMA that starts after `start` steps).
void lerp_chunks_gated_cuda(const BufferChunk* table, int64_t count, float w, const double* step,
                            double start, cudaStream_t stream);
void bias_act_cuda(float* y, const float* b, int64_t rows, int64_t k, BiasAct act, float slope,
                   cudaStream_t stream);
// The epilogue of a bf16 product (bf16 precision): y (rows, k) float32 = act(widen(y16) + b), one
// pass reading the bf16 result (4 elements per thread where the sizes allow: 8-byte loads,
// 16-byte stores); the same values as bf16_to_f32_cuda then bias_act_cuda. With out16 (bf16
// activations) the result is rounded to bf16 into out16 instead (y unused; out16 may be y16).
void bias_act_bf16_cuda(const uint16_t* y16, float* y, const float* b, int64_t rows, int64_t k,
                        BiasAct act, float slope, cudaStream_t stream, uint16_t* out16 = nullptr);
void clamp_cuda(float* y, int64_t n, float lo, float hi, cudaStream_t stream);
void lerp_cuda(float* ema, const float* x, int64_t n, float w, cudaStream_t stream);
void nonfinite_guard_cuda(const float* x, int64_t n, float* guard, cudaStream_t stream);

}  // namespace gan::kernels
