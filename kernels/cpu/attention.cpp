// Attention on the CPU, blocked by queries: for a block of kQB queries of one batch item the
// scores against all keys (kQB x Nk, a few hundred KB: it stays in the core's L2) by a GEMM, the
// exact row softmax with a vectorised exp, then P V by a GEMM. Blocks run in parallel, each GEMM
// on its own thread. The backward pass runs one batch item per thread (its key and value
// gradients sum over all query blocks, in block order): P recomputed from the saved lse, dP = dO
// V^T, dS = P (dP - D), then dQ = dS K, dK += dS^T Q, dV += P^T dO by GEMMs.
// Softmax rows (rows, n) and the batched transpose, which attention's double backward uses, are
// here too.
#include <cmath>
#include <vector>

#include "kernels/cpu/dnnl_util.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vmath.h"

namespace gan::kernels::cpu {

namespace {

constexpr int64_t kQB = 64;  // queries per block

using dnnl_util::sgemm;

// p (n) = exp(s - m) in place.
GAN_CPU_SIMD void exp_shift(float* p, int64_t n, float m) {
  for (int64_t j = 0; j < n; ++j) p[j] = exp_softmax(p[j] - m);
}

// The sum of p (n) in double: 16 lanes, then the lanes in order.
GAN_CPU_SIMD double sum_row(const float* p, int64_t n) {
  double lane[16] = {};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int t = 0; t < 16; ++t) lane[t] += double(p[j + t]);
  double s = 0;
  for (; j < n; ++j) s += double(p[j]);
  for (int t = 0; t < 16; ++t) s += lane[t];
  return s;
}

// dS = P (dP - D) in place of dP, row by row (D one value per row).
GAN_CPU_SIMD void ds_rows(const float* p, float* dp, int64_t rows, int64_t n, const float* D) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j) dp[i * n + j] = p[i * n + j] * (dp[i * n + j] - D[i]);
}

GAN_CPU_SIMD float row_max(const float* p, int64_t n) {
  float m = -INFINITY;
  for (int64_t j = 0; j < n; ++j) m = p[j] > m ? p[j] : m;
  return m;
}

GAN_CPU_SIMD void scale_row(float* p, int64_t n, float s) {
  for (int64_t j = 0; j < n; ++j) p[j] *= s;
}

// Softmax of each row of s (rows, n) in place; lse (rows) = log sum exp. A row holding NaN comes
// out NaN (the max ignores NaN, the exponentials do not).
void softmax_inplace(float* s, int64_t rows, int64_t n, float* lse) {
  for (int64_t i = 0; i < rows; ++i) {
    float* p = s + i * n;
    const float m = row_max(p, n);
    exp_shift(p, n, m);
    const double l = sum_row(p, n);
    scale_row(p, n, float(1.0 / l));
    if (lse) lse[i] = float(double(m) + std::log(l));
  }
}

double dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

}  // namespace

void attention_forward_f32(const AttnDims& a, const float* q, const float* k, const float* v,
                           float* o, float* lse, const float* gamma, const float* x, float* y) {
  if (a.b <= 0 || a.nq <= 0) return;
  if (a.nk <= 0 || a.d <= 0) return attention_forward_cpu(a, q, k, v, o, lse, gamma, x, y);
  const int64_t nblk = block_count(a.nq, kQB);
  parallel_blocks(a.b * nblk, [&](int64_t job) {
    const int64_t b = job / nblk, i0 = (job % nblk) * kQB, mq = std::min(kQB, a.nq - i0);
    std::vector<float> s(size_t(mq * a.nk));
    const int64_t row0 = b * a.nq + i0;
    sgemm(false, true, mq, a.nk, a.d, 1.f, q + row0 * a.ldq, a.ldq, k + b * a.nk * a.ldk, a.ldk,
          0.f, s.data(), a.nk);
    softmax_inplace(s.data(), mq, a.nk, lse + row0);
    if (a.dv > 0)
      sgemm(false, false, mq, a.dv, a.nk, 1.f, s.data(), a.nk, v + b * a.nk * a.ldv, a.ldv, 0.f,
            o + row0 * a.ldo, a.ldo);
    if (gamma && x) {
      const float g = *gamma;
      for (int64_t i = 0; i < mq; ++i)
        for (int64_t c = 0; c < a.dv; ++c)
          y[(row0 + i) * a.ldo + c] = g * o[(row0 + i) * a.ldo + c] + x[(row0 + i) * a.ldo + c];
    }
  });
}

void attention_backward_f32(const AttnDims& a, const float* q, const float* k, const float* v,
                            const float* o, const float* lse, const float* dy, const float* scale,
                            float* dq, float* dk, float* dv, float* dgamma) {
  if (a.b <= 0) {
    if (dgamma) *dgamma = 0.f;
    return;
  }
  if (a.nq <= 0 || a.nk <= 0 || a.d <= 0 || a.dv <= 0)
    return attention_backward_cpu(a, q, k, v, o, lse, dy, scale, dq, dk, dv, dgamma);
  const float g = scale ? *scale : 1.f;
  std::vector<double> dgam(size_t(a.b), 0.0);
  parallel_blocks(a.b, [&](int64_t b) {
    const int64_t nq = a.nq, nk = a.nk;
    std::vector<float> p(size_t(kQB * nk)), dp(size_t(kQB * nk)), D(static_cast<size_t>(kQB));
    const float* kb = k + b * nk * a.ldk;
    const float* vb = v + b * nk * a.ldv;
    double dg = 0;
    for (int64_t i0 = 0; i0 < nq; i0 += kQB) {
      const int64_t mq = std::min(kQB, nq - i0), row0 = b * nq + i0;
      const float* qb = q + row0 * a.ldq;
      const float* dyb = dy + row0 * a.ldo;
      // P = exp(Q K^T - lse).
      sgemm(false, true, mq, nk, a.d, 1.f, qb, a.ldq, kb, a.ldk, 0.f, p.data(), nk);
      for (int64_t i = 0; i < mq; ++i) {
        exp_shift(p.data() + i * nk, nk, lse[row0 + i]);
        const double dyo = dot(dyb + i * a.ldo, o + (row0 + i) * a.ldo, a.dv);
        dg += dyo;
        D[size_t(i)] = float(double(g) * dyo);
      }
      // dP = g dy V^T; dS = P (dP - D) in place of dP.
      sgemm(false, true, mq, nk, a.dv, g, dyb, a.ldo, vb, a.ldv, 0.f, dp.data(), nk);
      ds_rows(p.data(), dp.data(), mq, nk, D.data());
      const float beta = i0 == 0 ? 0.f : 1.f;
      if (dq)
        sgemm(false, false, mq, a.d, nk, 1.f, dp.data(), nk, kb, a.ldk, 0.f, dq + row0 * a.ldq,
              a.ldq);
      if (dk)
        sgemm(true, false, nk, a.d, mq, 1.f, dp.data(), nk, qb, a.ldq, beta, dk + b * nk * a.ldk,
              a.ldk);
      if (dv)
        sgemm(true, false, nk, a.dv, mq, g, p.data(), nk, dyb, a.ldo, beta, dv + b * nk * a.ldv,
              a.ldv);
    }
    dgam[size_t(b)] = dg;
  });
  if (dgamma) {
    double s = 0;
    for (double d : dgam) s += d;
    *dgamma = float(s);
  }
}

void softmax_rows_f32(const float* x, float* y, int64_t rows, int64_t n) {
  if (n <= 0) return;
  parallel_for(rows, std::max<int64_t>(1, grain() / n), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = 0; j < n; ++j) y[r * n + j] = x[r * n + j];
    softmax_inplace(y + b * n, e - b, n, nullptr);
  });
}

void softmax_rows_backward_f32(const float* y, const float* dy, float* dx, int64_t rows,
                               int64_t n) {
  if (n <= 0) return;
  parallel_for(rows, std::max<int64_t>(1, grain() / n), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* yr = y + r * n;
      const float* dyr = dy + r * n;
      const float s = float(dot(dyr, yr, n));
      for (int64_t j = 0; j < n; ++j) dx[r * n + j] = yr[j] * (dyr[j] - s);
    }
  });
}

void transpose_f32(const float* x, float* y, int64_t b, int64_t m, int64_t n) {
  constexpr int64_t kT = 32;  // tiles of 32 x 32
  const int64_t tm = block_count(m, kT), tn = block_count(n, kT);
  parallel_blocks(b * tm, [&](int64_t job) {
    const int64_t k = job / tm, i0 = (job % tm) * kT, i1 = std::min(m, i0 + kT);
    for (int64_t j0 = 0; j0 < tn * kT; j0 += kT) {
      const int64_t j1 = std::min(n, j0 + kT);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) y[(k * n + j) * m + i] = x[(k * m + i) * n + j];
    }
  });
}

}  // namespace gan::kernels::cpu
