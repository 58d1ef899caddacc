// Batch norm on the CPU over x (R, C), channels last: the rows cut into fixed blocks, per-block
// per-channel sums in double (two passes for the statistics, mean then squared deviations, as
// the reference), combined in block order; the elementwise passes vectorised over channels.
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace gan::kernels::cpu {

namespace {

// acc[c] += x[r, c] over count rows.
GAN_CPU_SIMD void col_sum(const float* x, int64_t count, int64_t C, double* acc) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < C; ++c) acc[c] += double(x[r * C + c]);
}

// acc[c] += (x[r, c] - mean[c])^2 over count rows.
GAN_CPU_SIMD void col_sq_dev(const float* x, int64_t count, int64_t C, const double* mean,
                             double* acc) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double d = double(x[r * C + c]) - mean[c];
      acc[c] += d * d;
    }
}

inline float act_of(BnAct act, float slope, float z) {
  return act == BnAct::kRelu        ? (z < 0.f ? 0.f : z)
         : act == BnAct::kLeakyRelu ? (z < 0.f ? slope * z : z)
                                    : z;
}

inline float act_grad(BnAct act, float slope, float z) {
  return act == BnAct::kRelu        ? (z <= 0.f ? 0.f : 1.f)
         : act == BnAct::kLeakyRelu ? (z > 0.f ? 1.f : slope)
                                    : 1.f;
}

// y = act(g (x - m) is + b) over count rows.
GAN_CPU_SIMD void apply_rows(const float* x, int64_t count, int64_t C, const float* m,
                             const float* is, const float* g, const float* b, BnAct act,
                             float slope, float* y) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (x[r * C + c] - m[c]) * is[c];
      y[r * C + c] = act_of(act, slope, g[c] * xhat + b[c]);
    }
}

// Per-channel sums of dy' and dy' xhat over count rows.
GAN_CPU_SIMD void back_sums(const float* x, const float* dy, int64_t count, int64_t C,
                            const float* m, const float* is, const float* g, const float* b,
                            BnAct act, float slope, double* sdy, double* sdyx) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (x[r * C + c] - m[c]) * is[c];
      const float dyp = dy[r * C + c] * act_grad(act, slope, g[c] * xhat + b[c]);
      sdy[c] += double(dyp);
      sdyx[c] += double(dyp) * double(xhat);
    }
}

// dx = g is (dy' - k1 - xhat k2) (k1, k2 zero in eval) over count rows.
GAN_CPU_SIMD void back_dx(const float* x, const float* dy, int64_t count, int64_t C, const float* m,
                          const float* is, const float* g, const float* b, const float* k1,
                          const float* k2, BnAct act, float slope, float* dx) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (x[r * C + c] - m[c]) * is[c];
      const float dyp = dy[r * C + c] * act_grad(act, slope, g[c] * xhat + b[c]);
      dx[r * C + c] = g[c] * is[c] * (dyp - k1[c] - xhat * k2[c]);
    }
}

// dx = g is dy' (eval: the statistics are constants, xhat enters only through act').
GAN_CPU_SIMD void back_dx_eval(const float* x, const float* dy, int64_t count, int64_t C,
                               const float* m, const float* is, const float* g, const float* b,
                               BnAct act, float slope, float* dx) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (x[r * C + c] - m[c]) * is[c];
      const float dyp = dy[r * C + c] * act_grad(act, slope, g[c] * xhat + b[c]);
      dx[r * C + c] = g[c] * is[c] * dyp;
    }
}

// Rows per block: about grain() elements.
int64_t rows_per_block(int64_t C) {
  return std::max<int64_t>(1, grain() / std::max<int64_t>(C, 1));
}

// Sums f(block rows, acc) over fixed row blocks into out (C), in block order.
template <class F>
void blocked_col_sums(int64_t R, int64_t C, int width, F f, double* out) {
  const int64_t rb = rows_per_block(C), nblk = block_count(R, rb);
  std::vector<double> part(size_t(nblk * C * width), 0.0);
  parallel_blocks(nblk, [&](int64_t blk) {
    const int64_t r0 = blk * rb, r1 = std::min(R, r0 + rb);
    f(r0, r1 - r0, part.data() + blk * C * width);
  });
  for (int64_t j = 0; j < C * width; ++j) out[j] = 0;
  for (int64_t blk = 0; blk < nblk; ++blk)
    for (int64_t j = 0; j < C * width; ++j) out[j] += part[size_t(blk * C * width + j)];
}

}  // namespace

void batch_norm_forward_f32(const float* x, const float* gamma, const float* beta, int64_t R,
                            int64_t C, bool training, double momentum, double eps, BnAct act,
                            float slope, float* running_mean, float* running_var, float* y,
                            float* save_mean, float* save_invstd) {
  if (C <= 0) return;
  std::vector<float> m(static_cast<size_t>(C)), is(static_cast<size_t>(C)),
      g(static_cast<size_t>(C), 1.f), b(static_cast<size_t>(C), 0.f);
  if (training) {
    std::vector<double> sum(static_cast<size_t>(C)), ss(static_cast<size_t>(C)),
        mean(static_cast<size_t>(C));
    blocked_col_sums(
        R, C, 1, [&](int64_t r0, int64_t n, double* acc) { col_sum(x + r0 * C, n, C, acc); },
        sum.data());
    for (int64_t c = 0; c < C; ++c) mean[size_t(c)] = sum[size_t(c)] / double(R);
    blocked_col_sums(
        R, C, 1,
        [&](int64_t r0, int64_t n, double* acc) { col_sq_dev(x + r0 * C, n, C, mean.data(), acc); },
        ss.data());
    for (int64_t c = 0; c < C; ++c) {
      const double mu = mean[size_t(c)], var = ss[size_t(c)] / double(R);
      m[size_t(c)] = float(mu);
      is[size_t(c)] = float(1.0 / std::sqrt(var + eps));
      running_mean[c] = float((1 - momentum) * double(running_mean[c]) + momentum * mu);
      running_var[c] =
          float((1 - momentum) * double(running_var[c]) + momentum * ss[size_t(c)] / double(R - 1));
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      m[size_t(c)] = running_mean[c];
      is[size_t(c)] = float(1.0 / std::sqrt(double(running_var[c]) + eps));
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    if (save_mean) save_mean[c] = m[size_t(c)];
    if (save_invstd) save_invstd[c] = is[size_t(c)];
    if (gamma) g[size_t(c)] = gamma[c];
    if (beta) b[size_t(c)] = beta[c];
  }
  const int64_t rb = rows_per_block(C);
  parallel_blocks(block_count(R, rb), [&](int64_t blk) {
    const int64_t r0 = blk * rb, r1 = std::min(R, r0 + rb);
    apply_rows(x + r0 * C, r1 - r0, C, m.data(), is.data(), g.data(), b.data(), act, slope,
               y + r0 * C);
  });
}

void batch_norm_backward_f32(const float* x, const float* dy, const float* gamma, const float* beta,
                             const float* mean, const float* invstd, int64_t R, int64_t C,
                             bool training, BnAct act, float slope, float* dx, float* dgamma,
                             float* dbeta, bool accumulate_dgamma, bool accumulate_dbeta) {
  if (C <= 0) return;
  std::vector<float> g(static_cast<size_t>(C), 1.f), b(static_cast<size_t>(C), 0.f);
  for (int64_t c = 0; c < C; ++c) {
    if (gamma) g[size_t(c)] = gamma[c];
    if (beta) b[size_t(c)] = beta[c];
  }
  std::vector<double> sums(size_t(2 * C));  // [sum dy' | sum dy' xhat]
  blocked_col_sums(
      R, C, 2,
      [&](int64_t r0, int64_t n, double* acc) {
        back_sums(x + r0 * C, dy + r0 * C, n, C, mean, invstd, g.data(), b.data(), act, slope, acc,
                  acc + C);
      },
      sums.data());
  const double* sdy = sums.data();
  const double* sdyx = sums.data() + C;
  for (int64_t c = 0; c < C; ++c) {
    if (dgamma) dgamma[c] = float((accumulate_dgamma ? double(dgamma[c]) : 0.0) + sdyx[c]);
    if (dbeta) dbeta[c] = float((accumulate_dbeta ? double(dbeta[c]) : 0.0) + sdy[c]);
  }
  if (!dx) return;
  std::vector<float> k1(static_cast<size_t>(C), 0.f), k2(static_cast<size_t>(C), 0.f);
  if (training)
    for (int64_t c = 0; c < C; ++c) {
      k1[size_t(c)] = float(sdy[c] / double(R));
      k2[size_t(c)] = float(sdyx[c] / double(R));
    }
  const int64_t rb = rows_per_block(C);
  parallel_blocks(block_count(R, rb), [&](int64_t blk) {
    const int64_t r0 = blk * rb, r1 = std::min(R, r0 + rb);
    if (training)
      back_dx(x + r0 * C, dy + r0 * C, r1 - r0, C, mean, invstd, g.data(), b.data(), k1.data(),
              k2.data(), act, slope, dx + r0 * C);
    else
      back_dx_eval(x + r0 * C, dy + r0 * C, r1 - r0, C, mean, invstd, g.data(), b.data(), act,
                   slope, dx + r0 * C);
  });
}

}  // namespace gan::kernels::cpu
