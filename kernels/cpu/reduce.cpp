// Sums on the CPU: the summed axis cut into fixed blocks (sizes from the shape only), each block's
// partial sum accumulated in double by one thread, the partials added in block order. So the
// result does not depend on the thread count, and it matches the reference (double accumulation)
// to within its final rounding in practice.
#include <algorithm>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace gan::kernels::cpu {

namespace {

// sum of x[0 .. n) in double, 8 lanes then the lanes in order.
GAN_CPU_SIMD double sum_run(const float* x, int64_t n) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) lane[j] += double(x[i + j]);
  double s = 0;
  for (; i < n; ++i) s += double(x[i]);
  for (int j = 0; j < 8; ++j) s += lane[j];
  return s;
}

// acc[0 .. w) += rows [0, count) of x (row stride w).
GAN_CPU_SIMD void add_rows(const float* x, int64_t count, int64_t w, double* acc) {
  for (int64_t k = 0; k < count; ++k) {
    const float* row = x + k * w;
    for (int64_t i = 0; i < w; ++i) acc[i] += double(row[i]);
  }
}

}  // namespace

void reduce_sum_f32(const float* x, int64_t outer, int64_t r, int64_t inner, float scale,
                    bool accumulate, float* y) {
  if (outer <= 0 || inner <= 0) return;
  // Rows of `inner` per block: about grain() elements.
  const int64_t kb = std::max<int64_t>(1, grain() / inner);
  const int64_t nblk = std::max<int64_t>(1, block_count(r, kb));
  std::vector<double> part(size_t(outer * nblk * inner), 0.0);
  parallel_blocks(outer * nblk, [&](int64_t job) {
    const int64_t o = job / nblk, blk = job % nblk;
    const int64_t k0 = blk * kb, k1 = std::min(r, k0 + kb);
    double* acc = part.data() + job * inner;
    if (k1 <= k0) return;
    const float* base = x + (o * r + k0) * inner;
    if (inner == 1)
      acc[0] = sum_run(base, k1 - k0);
    else
      add_rows(base, k1 - k0, inner, acc);
  });
  parallel_for(outer * inner, grain(), [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const int64_t o = j / inner, i = j % inner;
      double s = 0;
      for (int64_t blk = 0; blk < nblk; ++blk) s += part[size_t((o * nblk + blk) * inner + i)];
      const double prev = accumulate ? double(y[j]) : 0.0;
      y[j] = float(prev + double(scale) * s);
    }
  });
}

namespace {

// dz for rows [0, count) of width k and their column sums into acc (may be null).
GAN_CPU_SIMD void act_back_rows(const float* y, const float* dy, int64_t count, int64_t k,
                                bool tanh, float slope, float* dz, uint16_t* dz16, double* acc) {
  for (int64_t r = 0; r < count; ++r) {
    const float* yr = y + r * k;
    const float* dyr = dy + r * k;
    for (int64_t i = 0; i < k; ++i) {
      const float d = tanh ? 1.f - yr[i] * yr[i] : (yr[i] > 0.f ? 1.f : slope);
      const float g = dyr[i] * d;
      if (dz16)
        dz16[r * k + i] = kernels::f32_to_bf16(g);
      else
        dz[r * k + i] = g;
      if (acc) acc[i] += double(g);
    }
  }
}

}  // namespace

void bias_act_backward_f32(const float* y, const float* dy, int64_t rows, int64_t k, bool tanh,
                           float slope, bool accumulate, float* dz, float* db, uint16_t* dz16) {
  if (k <= 0) return;
  const int64_t rb = std::max<int64_t>(1, grain() / k);
  const int64_t nblk = block_count(rows, rb);
  std::vector<double> part(db ? size_t(std::max<int64_t>(nblk, 1) * k) : 0, 0.0);
  parallel_blocks(nblk, [&](int64_t blk) {
    const int64_t r0 = blk * rb, r1 = std::min(rows, r0 + rb);
    act_back_rows(y + r0 * k, dy + r0 * k, r1 - r0, k, tanh, slope, dz16 ? nullptr : dz + r0 * k,
                  dz16 ? dz16 + r0 * k : nullptr, db ? part.data() + blk * k : nullptr);
  });
  if (!db) return;
  for (int64_t i = 0; i < k; ++i) {
    double s = 0;
    for (int64_t blk = 0; blk < nblk; ++blk) s += part[size_t(blk * k + i)];
    db[i] = float((accumulate ? double(db[i]) : 0.0) + s);
  }
}

// ---- the projection discriminator's head (kernels/projection_head.h)

namespace {

// <a, b> over n floats in double, 8 lanes then the lanes in order.
GAN_CPU_SIMD double dot_run(const float* a, const float* b, int64_t n) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) lane[j] += double(a[i + j]) * double(b[i + j]);
  double s = 0;
  for (; i < n; ++i) s += double(a[i]) * double(b[i]);
  for (int j = 0; j < 8; ++j) s += lane[j];
  return s;
}

// v = w + sum over k with yr[k] != 0 of yr[k] e_k (C floats; y e products in float, as on the
// GPU).
GAN_CPU_SIMD void head_row_weight(const float* w, const float* yr, const float* e, int64_t C,
                                  int64_t K, float* v) {
  for (int64_t c = 0; c < C; ++c) v[c] = w[c];
  for (int64_t k = 0; k < K; ++k) {
    const float yk = yr[k];
    if (yk == 0.f) continue;
    const float* ek = e + k * C;
    for (int64_t c = 0; c < C; ++c) v[c] += yk * ek[c];
  }
}

// acc[0 .. n) += a x[0 .. n) in double.
GAN_CPU_SIMD void axpy_double(double a, const float* x, int64_t n, double* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] += a * double(x[i]);
}

// y[0 .. n) += a x[0 .. n): axpy_f32's arithmetic without its parallel_for, whose per-call cost
// on these 64-column runs made the 1000-class backward 15-30% slower (three runs each).
GAN_CPU_SIMD void axpy_float(float a, const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Rows per part: about grain() elements.
int64_t head_rows_grain(int64_t C) {
  return std::max<int64_t>(1, grain() / std::max<int64_t>(C, 1));
}

}  // namespace

void projection_head_forward_f32(const float* h, const float* w, const float* bias, const float* y,
                                 const float* e, int64_t B, int64_t C, int64_t K, float* out) {
  parallel_for(B, head_rows_grain(C), [&](int64_t b0, int64_t b1) {
    std::vector<float> v(size_t(std::max<int64_t>(C, 0)));
    for (int64_t b = b0; b < b1; ++b) {
      head_row_weight(w, y + b * K, e, C, K, v.data());
      out[b] = float((bias ? double(bias[0]) : 0.0) + dot_run(h + b * C, v.data(), C));
    }
  });
}

void projection_head_backward_f32(const float* h, const float* w, const float* y, const float* e,
                                  const float* g, int64_t B, int64_t C, int64_t K, float* dh,
                                  float* dw, float* dbias, float* de, float* dy) {
  if (dh || dy)
    parallel_for(B, head_rows_grain(C), [&](int64_t b0, int64_t b1) {
      std::vector<float> v(size_t(std::max<int64_t>(C, 0)));
      for (int64_t b = b0; b < b1; ++b) {
        const float gb = g[b];
        if (dh) {
          head_row_weight(w, y + b * K, e, C, K, v.data());
          for (int64_t c = 0; c < C; ++c) dh[b * C + c] = gb * v[c];
        }
        if (dy)
          for (int64_t k = 0; k < K; ++k)
            dy[b * K + k] = float(double(gb) * dot_run(e + k * C, h + b * C, C));
      }
    });
  if (dw || de) {
    // Each row's non-zero labels (k, y_bk g_b), found once.
    std::vector<int64_t> start(size_t(B) + 1, 0), cls;
    std::vector<float> coef;
    for (int64_t b = 0; de && b < B; ++b) {
      for (int64_t k = 0; k < K; ++k)
        if (y[b * K + k] != 0.f) cls.push_back(k), coef.push_back(y[b * K + k] * g[b]);
      start[size_t(b) + 1] = int64_t(cls.size());
    }
    // Fixed blocks of columns, each summing its rows in order (dw in double, de in float as on
    // the GPU): the result does not depend on the thread count.
    constexpr int64_t kCols = 64;
    parallel_blocks(block_count(C, kCols), [&](int64_t blk) {
      const int64_t c0 = blk * kCols, n = std::min(C, c0 + kCols) - c0;
      std::vector<double> sw(dw ? size_t(n) : 0, 0.0);
      for (int64_t k = 0; de && k < K; ++k) std::fill(de + k * C + c0, de + k * C + c0 + n, 0.f);
      for (int64_t b = 0; b < B; ++b) {
        const float* hb = h + b * C + c0;
        if (dw) axpy_double(double(g[b]), hb, n, sw.data());
        for (int64_t j = start[size_t(b)]; de && j < start[size_t(b) + 1]; ++j)
          axpy_float(coef[size_t(j)], hb, n, de + cls[size_t(j)] * C + c0);
      }
      for (int64_t i = 0; dw && i < n; ++i) dw[c0 + i] = float(sw[size_t(i)]);
    });
  }
  if (dbias) {
    double s = 0;
    for (int64_t b = 0; b < B; ++b) s += double(g[b]);
    *dbias = float(s);
  }
}

}  // namespace gan::kernels::cpu
