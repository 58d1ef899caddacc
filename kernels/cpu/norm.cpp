// Batch norm on the CPU over x (R, C), channels last: the rows cut into fixed blocks (inside one
// group of rows when gamma and beta are per group, kernels/batchnorm.h), per-block per-channel
// sums in double (two passes for the statistics, mean then squared deviations, as the
// reference), combined in block order; the elementwise passes vectorised over channels.
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

// dx = is (g dy' - k1 - xhat k2) over count rows; k1, k2 are the gamma-weighted sums over R.
GAN_CPU_SIMD void back_dx(const float* x, const float* dy, int64_t count, int64_t C, const float* m,
                          const float* is, const float* g, const float* b, const float* k1,
                          const float* k2, BnAct act, float slope, float* dx) {
  for (int64_t r = 0; r < count; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (x[r * C + c] - m[c]) * is[c];
      const float dyp = dy[r * C + c] * act_grad(act, slope, g[c] * xhat + b[c]);
      dx[r * C + c] = is[c] * (g[c] * dyp - k1[c] - xhat * k2[c]);
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

// Fixed row blocks that never cross a group: (groups, blocks per group).
struct Blocks {
  int64_t rows_per_group, rb, per_group, count;
  Blocks(int64_t R, int64_t C, int64_t G)
      : rows_per_group(R / G),
        rb(rows_per_block(C)),
        per_group(block_count(rows_per_group, rb)),
        count(G * per_group) {}
  int64_t group(int64_t blk) const { return blk / per_group; }
  int64_t begin(int64_t blk) const { return group(blk) * rows_per_group + (blk % per_group) * rb; }
  int64_t end(int64_t blk) const {
    return std::min((group(blk) + 1) * rows_per_group, begin(blk) + rb);
  }
};

// Sums f(block rows, acc) over the fixed row blocks of each group into out (G, width C), each
// group's blocks in order.
template <class F>
void blocked_col_sums(const Blocks& bl, int64_t G, int64_t C, int width, F f, double* out) {
  const int64_t w = C * width;
  std::vector<double> part(size_t(bl.count * w), 0.0);
  parallel_blocks(bl.count, [&](int64_t blk) {
    f(blk, bl.begin(blk), bl.end(blk) - bl.begin(blk), part.data() + blk * w);
  });
  for (int64_t j = 0; j < G * w; ++j) out[j] = 0;
  for (int64_t blk = 0; blk < bl.count; ++blk) {
    double* o = out + bl.group(blk) * w;
    for (int64_t j = 0; j < w; ++j) o[j] += part[size_t(blk * w + j)];
  }
}

// gamma, beta (G, C) or null as (G, C) arrays of 1 and 0.
void affine_or_default(const float* gamma, const float* beta, int64_t G, int64_t C,
                       std::vector<float>& g, std::vector<float>& b) {
  g.assign(size_t(G * C), 1.f);
  b.assign(size_t(G * C), 0.f);
  for (int64_t i = 0; i < G * C; ++i) {
    if (gamma) g[size_t(i)] = gamma[i];
    if (beta) b[size_t(i)] = beta[i];
  }
}

}  // namespace

void batch_norm_forward_f32(const float* x, const float* gamma, const float* beta, int64_t R,
                            int64_t C, bool training, double momentum, double eps, BnAct act,
                            float slope, float* running_mean, float* running_var, float* y,
                            float* save_mean, float* save_invstd, int64_t groups) {
  if (C <= 0) return;
  const int64_t G = std::max<int64_t>(groups, 1);
  const Blocks rows(R, C, 1), bl(R, C, G);
  std::vector<float> m(static_cast<size_t>(C)), is(static_cast<size_t>(C)), g, b;
  if (training) {
    std::vector<double> sum(static_cast<size_t>(C)), ss(static_cast<size_t>(C)),
        mean(static_cast<size_t>(C));
    blocked_col_sums(
        rows, 1, C, 1,
        [&](int64_t, int64_t r0, int64_t n, double* acc) { col_sum(x + r0 * C, n, C, acc); },
        sum.data());
    for (int64_t c = 0; c < C; ++c) mean[size_t(c)] = sum[size_t(c)] / double(R);
    blocked_col_sums(
        rows, 1, C, 1,
        [&](int64_t, int64_t r0, int64_t n, double* acc) {
          col_sq_dev(x + r0 * C, n, C, mean.data(), acc);
        },
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
  }
  affine_or_default(gamma, beta, G, C, g, b);
  parallel_blocks(bl.count, [&](int64_t blk) {
    const int64_t r0 = bl.begin(blk), off = bl.group(blk) * C;
    apply_rows(x + r0 * C, bl.end(blk) - r0, C, m.data(), is.data(), g.data() + off, b.data() + off,
               act, slope, y + r0 * C);
  });
}

void batch_norm_backward_f32(const float* x, const float* dy, const float* gamma, const float* beta,
                             const float* mean, const float* invstd, int64_t R, int64_t C,
                             bool training, BnAct act, float slope, float* dx, float* dgamma,
                             float* dbeta, bool accumulate_dgamma, bool accumulate_dbeta,
                             int64_t groups) {
  if (C <= 0) return;
  const int64_t G = std::max<int64_t>(groups, 1);
  const Blocks bl(R, C, G);
  std::vector<float> g, b;
  affine_or_default(gamma, beta, G, C, g, b);
  std::vector<double> sums(size_t(2 * G * C));  // per group: [sum dy' | sum dy' xhat]
  blocked_col_sums(
      bl, G, C, 2,
      [&](int64_t blk, int64_t r0, int64_t n, double* acc) {
        const int64_t off = bl.group(blk) * C;
        back_sums(x + r0 * C, dy + r0 * C, n, C, mean, invstd, g.data() + off, b.data() + off, act,
                  slope, acc, acc + C);
      },
      sums.data());
  // Per channel: sum_g gamma_g (sum dy'), sum_g gamma_g (sum dy' xhat), for dx in training.
  std::vector<double> wdy(size_t(C), 0.0), wdyx(size_t(C), 0.0);
  for (int64_t grp = 0; grp < G; ++grp) {
    const double* sdy = sums.data() + grp * 2 * C;
    const double* sdyx = sdy + C;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = grp * C + c;
      if (dgamma) dgamma[i] = float((accumulate_dgamma ? double(dgamma[i]) : 0.0) + sdyx[c]);
      if (dbeta) dbeta[i] = float((accumulate_dbeta ? double(dbeta[i]) : 0.0) + sdy[c]);
      wdy[size_t(c)] += double(g[size_t(i)]) * sdy[c];
      wdyx[size_t(c)] += double(g[size_t(i)]) * sdyx[c];
    }
  }
  if (!dx) return;
  std::vector<float> k1(static_cast<size_t>(C), 0.f), k2(static_cast<size_t>(C), 0.f);
  if (training)
    for (int64_t c = 0; c < C; ++c) {
      k1[size_t(c)] = float(wdy[size_t(c)] / double(R));
      k2[size_t(c)] = float(wdyx[size_t(c)] / double(R));
    }
  parallel_blocks(bl.count, [&](int64_t blk) {
    const int64_t r0 = bl.begin(blk), n = bl.end(blk) - r0, off = bl.group(blk) * C;
    if (training)
      back_dx(x + r0 * C, dy + r0 * C, n, C, mean, invstd, g.data() + off, b.data() + off,
              k1.data(), k2.data(), act, slope, dx + r0 * C);
    else
      back_dx_eval(x + r0 * C, dy + r0 * C, n, C, mean, invstd, g.data() + off, b.data() + off, act,
                   slope, dx + r0 * C);
  });
}

}  // namespace gan::kernels::cpu
