// Elementwise ops on the CPU: float loops over parts of the range, one part per thread, the op
// chosen outside the loop so that each loop vectorises. Results equal the reference's to within
// a rounding (it computes in double and rounds once; add, sub and mul of two floats round the
// same either way).
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vmath.h"

namespace gan::kernels::cpu {

namespace {

GAN_CPU_SIMD void scale_loop(const float* x, float* y, int64_t n, float a) {
  for (int64_t i = 0; i < n; ++i) y[i] = a * x[i];
}
GAN_CPU_SIMD void relu_loop(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.f ? 0.f : x[i];
}
GAN_CPU_SIMD void tanh_loop(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = tanh_fast(x[i]);
}
GAN_CPU_SIMD void leaky_loop(const float* x, float* y, int64_t n, float a) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.f ? a * x[i] : x[i];
}

float sigmoidf(float v) {
  const double d = v;
  return float(d >= 0 ? 1 / (1 + std::exp(-d)) : std::exp(d) / (1 + std::exp(d)));
}

}  // namespace

void unary_forward_f32(Unary op, float alpha, const float* x, float* y, int64_t n) {
  parallel_for(n, grain(), [&](int64_t b, int64_t e) {
    const float* xs = x + b;
    float* ys = y + b;
    const int64_t m = e - b;
    switch (op) {
      case Unary::kScale:
        return scale_loop(xs, ys, m, alpha);
      case Unary::kRelu:
        return relu_loop(xs, ys, m);
      case Unary::kLeakyRelu:
        return leaky_loop(xs, ys, m, alpha);
      case Unary::kTanh:
        return tanh_loop(xs, ys, m);
      case Unary::kSigmoid:
        for (int64_t i = 0; i < m; ++i) ys[i] = sigmoidf(xs[i]);
        return;
      case Unary::kSqrt:
        for (int64_t i = 0; i < m; ++i) ys[i] = std::sqrt(xs[i]);
        return;
    }
  });
}

namespace {

GAN_CPU_SIMD void relu_back(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] <= 0.f ? 0.f : dy[i];
}
GAN_CPU_SIMD void leaky_back(const float* x, const float* dy, float* dx, int64_t n, float a) {
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > 0.f ? dy[i] : dy[i] * a;
}
GAN_CPU_SIMD void tanh_back(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (1.f - y[i] * y[i]);
}
GAN_CPU_SIMD void sigmoid_back(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (1.f - y[i]);
}

}  // namespace

void unary_backward_f32(Unary op, float alpha, const float* x, const float* y, const float* dy,
                        float* dx, int64_t n) {
  parallel_for(n, grain(), [&](int64_t b, int64_t e) {
    const int64_t m = e - b;
    switch (op) {
      case Unary::kScale:
        return scale_loop(dy + b, dx + b, m, alpha);
      case Unary::kRelu:
        return relu_back(y + b, dy + b, dx + b, m);
      case Unary::kLeakyRelu:
        return leaky_back(x + b, dy + b, dx + b, m, alpha);
      case Unary::kTanh:
        return tanh_back(y + b, dy + b, dx + b, m);
      case Unary::kSigmoid:
        return sigmoid_back(y + b, dy + b, dx + b, m);
      case Unary::kSqrt:
        for (int64_t i = b; i < e; ++i) dx[i] = float(double(dy[i]) / (2 * double(y[i])));
        return;
    }
  });
}

namespace {

// y[i] = a[i] op b[i] over a run, b either a run too (bstep 1) or one value (bstep 0).
GAN_CPU_SIMD void zip(Binary op, const float* a, const float* b, int64_t bstep, float* y,
                      int64_t n) {
  if (bstep) {
    switch (op) {
      case Binary::kAdd:
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
        return;
      case Binary::kSub:
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] - b[i];
        return;
      case Binary::kMul:
        for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
        return;
      case Binary::kDiv:
        for (int64_t i = 0; i < n; ++i) y[i] = float(double(a[i]) / double(b[i]));
        return;
    }
  }
  const float v = b[0];
  switch (op) {
    case Binary::kAdd:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] + v;
      return;
    case Binary::kSub:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] - v;
      return;
    case Binary::kMul:
      for (int64_t i = 0; i < n; ++i) y[i] = a[i] * v;
      return;
    case Binary::kDiv:
      for (int64_t i = 0; i < n; ++i) y[i] = float(double(a[i]) / double(v));
      return;
  }
}

// Runs f(a_run, b_run or b_value, bstep, y_run, length) over the output in pieces that are
// contiguous in a and y, following the broadcast mode of bi. Generic layouts compute indices per
// element (f on runs of one).
template <class Run>
void for_runs(const BroadcastIndex& bi, const float* a, const float* b, float* y, Run run) {
  const int64_t n = bi.n;
  switch (bi.mode) {
    case BroadcastIndex::kSame:
      return parallel_for(n, grain(),
                          [&](int64_t s, int64_t e) { run(a + s, b + s, 1, y + s, e - s); });
    case BroadcastIndex::kScalarB:
      return parallel_for(n, grain(),
                          [&](int64_t s, int64_t e) { run(a + s, b, 0, y + s, e - s); });
    case BroadcastIndex::kRowB: {  // rows of `inner`, b one row
      const int64_t w = bi.inner, rows = w ? n / w : 0;
      return parallel_for(rows, std::max<int64_t>(1, grain() / std::max<int64_t>(w, 1)),
                          [&](int64_t s, int64_t e) {
                            for (int64_t r = s; r < e; ++r) run(a + r * w, b, 1, y + r * w, w);
                          });
    }
    case BroadcastIndex::kOuterB: {  // runs of `inner` with one b value each
      const int64_t w = bi.inner, runs = w ? n / w : 0;
      return parallel_for(runs, std::max<int64_t>(1, grain() / std::max<int64_t>(w, 1)),
                          [&](int64_t s, int64_t e) {
                            for (int64_t r = s; r < e; ++r)
                              run(a + r * w, b + (r % bi.nb), 0, y + r * w, w);
                          });
    }
    default:
      return parallel_for(n, grain(), [&](int64_t s, int64_t e) {
        for (int64_t i = s; i < e; ++i) run(a + bi.index_a(i), b + bi.index_b(i), 0, y + i, 1);
      });
  }
}

}  // namespace

void binary_forward_f32(Binary op, const BroadcastIndex& bi, const float* a, const float* b,
                        float* y) {
  for_runs(bi, a, b, y, [op](const float* as, const float* bs, int64_t step, float* ys, int64_t m) {
    zip(op, as, bs, step, ys, m);
  });
}

void binary_backward_f32(Binary op, const BroadcastIndex& bi, const float* a, const float* b,
                         const float* dy, float* ga, float* gb) {
  // Indices per element (the partials are full size; dy is dense): cheap next to the GEMMs.
  parallel_for(bi.n, grain(), [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      const double u = a[bi.index_a(i)], v = b[bi.index_b(i)], g = dy[i];
      if (op == Binary::kMul) {
        if (ga) ga[i] = float(g * v);
        if (gb) gb[i] = float(g * u);
      } else {
        if (ga) ga[i] = float(g / v);
        if (gb) gb[i] = float(-g * u / (v * v));
      }
    }
  });
}

void expand_f32(const BroadcastIndex& bi, const float* x, float scale, float* y) {
  // y = scale * x broadcast: x is operand b; a (unused) aliases y.
  for_runs(bi, y, x, y, [scale](const float*, const float* bs, int64_t step, float* ys, int64_t m) {
    if (step)
      for (int64_t i = 0; i < m; ++i) ys[i] = scale * bs[i];
    else
      for (int64_t i = 0; i < m; ++i) ys[i] = scale * bs[0];
  });
}

namespace {
GAN_CPU_SIMD void axpy_loop(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] + alpha * x[i];
}
GAN_CPU_SIMD void lerp_loop(float* ema, const float* x, int64_t n, float w) {
  for (int64_t i = 0; i < n; ++i) ema[i] = ema[i] + w * (x[i] - ema[i]);
}
}  // namespace

void axpy_f32(float alpha, const float* x, float* y, int64_t n) {
  parallel_for(n, grain(), [&](int64_t b, int64_t e) { axpy_loop(alpha, x + b, y + b, e - b); });
}

void clamp_f32(float* y, int64_t n, float lo, float hi) {
  parallel_for(n, grain(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = y[i] < lo ? lo : y[i] > hi ? hi : y[i];
  });
}

void lerp_f32(float* ema, const float* x, int64_t n, float w) {
  parallel_for(n, grain(), [&](int64_t b, int64_t e) { lerp_loop(ema + b, x + b, e - b, w); });
}

namespace {
GAN_CPU_SIMD void bias_relu(float* y, const float* b, int64_t k, BiasAct act, float slope) {
  if (b)
    for (int64_t c = 0; c < k; ++c) y[c] = y[c] + b[c];
  if (act == BiasAct::kRelu)
    for (int64_t c = 0; c < k; ++c) y[c] = y[c] < 0.f ? 0.f : y[c];
  else if (act == BiasAct::kLeakyRelu)
    for (int64_t c = 0; c < k; ++c) y[c] = y[c] < 0.f ? slope * y[c] : y[c];
}
}  // namespace

void bias_act_f32(float* y, const float* b, int64_t rows, int64_t k, BiasAct act, float slope) {
  parallel_for(rows, std::max<int64_t>(1, grain() / std::max<int64_t>(k, 1)),
               [&](int64_t s, int64_t e) {
                 for (int64_t r = s; r < e; ++r) {
                   float* yr = y + r * k;
                   if (act == BiasAct::kTanh) {
                     if (b)
                       for (int64_t c = 0; c < k; ++c) yr[c] = yr[c] + b[c];
                     tanh_loop(yr, yr, k);
                   } else {
                     bias_relu(yr, b, k, act, slope);
                   }
                 }
               });
}

void nonfinite_guard_f32(const float* x, int64_t n, float* guard) {
  guard[0] = guard[0] + 1.f;
  const int64_t blocks = block_count(n, grain());
  std::vector<char> bad(static_cast<size_t>(blocks), 0);
  parallel_blocks(blocks, [&](int64_t i) {
    const int64_t b = i * grain(), e = std::min(n, b + grain());
    bool any = false;
    for (int64_t j = b; j < e; ++j) any |= !std::isfinite(x[j]);
    bad[size_t(i)] = any;
  });
  for (char c : bad)
    if (c) {
      if (guard[1] == 0.f) guard[1] = guard[0];
      break;
    }
}

void f32_to_bf16_f32(const float* x, uint16_t* y, int64_t n) {
  parallel_for(n, grain(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = kernels::f32_to_bf16(x[i]);
  });
}

void bf16_to_f32_f32(const uint16_t* x, float* y, int64_t n) {
  parallel_for(n, grain(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = kernels::bf16_to_f32(x[i]);
  });
}

}  // namespace gan::kernels::cpu
