// Adam, spectral norm and random fills on the CPU.
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/parallel.h"

namespace gan::kernels::cpu {

namespace {

// PyTorch's float Adam as the CUDA kernel computes it (kernels/adam.cu): m by torch.lerp's
// formula, the (1 - beta) factors rounded from double.
GAN_CPU_SIMD void adam_loop(float* p, const float* grad, float* m, float* v, int64_t n, float w1,
                            float b2, float omb2, float eps, float wd, float step_size,
                            float bc2_sqrt) {
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    const float pi = p[i];
    if (wd != 0.f) g = g + wd * pi;
    const float mi = std::fabs(w1) < 0.5f ? m[i] + w1 * (g - m[i]) : g - (g - m[i]) * (1.f - w1);
    const float vi = v[i] * b2 + omb2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    p[i] = pi + (-step_size) * (mi / denom);
  }
}

}  // namespace

void adam_f32(const AdamHyper& h, double lr, double t, float* p, const float* grad, float* m,
              float* v, int64_t n) {
  const double bc1 = 1 - std::pow(h.beta1, t), bc2 = 1 - std::pow(h.beta2, t);
  const float step_size = float(lr / bc1), bc2_sqrt = float(std::sqrt(bc2));
  parallel_for(n, grain(), [&](int64_t b, int64_t e) {
    adam_loop(p + b, grad + b, m + b, v + b, e - b, float(1 - h.beta1), float(h.beta2),
              float(1 - h.beta2), float(h.eps), float(h.weight_decay), step_size, bc2_sqrt);
  });
}

namespace {

// Storage A (m, n) row-major.
// out (m) = A x, row dots in double; returns |out|^2.
double a_times(const float* A, int64_t m, int64_t n, const float* x, double* out) {
  parallel_for(m, std::max<int64_t>(1, grain() / std::max<int64_t>(n, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t i = b; i < e; ++i) {
                   const float* row = A + i * n;
                   double s = 0;
                   for (int64_t j = 0; j < n; ++j) s += double(row[j]) * double(x[j]);
                   out[i] = s;
                 }
               });
  double ss = 0;
  for (int64_t i = 0; i < m; ++i) ss += out[i] * out[i];
  return ss;
}

GAN_CPU_SIMD void axpy_rows(const float* A, int64_t count, int64_t n, const float* x, double* acc) {
  for (int64_t i = 0; i < count; ++i) {
    const double xi = double(x[i]);
    const float* row = A + i * n;
    for (int64_t j = 0; j < n; ++j) acc[j] += double(row[j]) * xi;
  }
}

// out (n) = A^T x: partial column sums over fixed row blocks, added in block order; returns
// |out|^2.
double at_times(const float* A, int64_t m, int64_t n, const float* x, double* out) {
  const int64_t rb = std::max<int64_t>(1, grain() / std::max<int64_t>(n, 1)),
                nblk = block_count(m, rb);
  std::vector<double> part(size_t(nblk * n), 0.0);
  parallel_blocks(nblk, [&](int64_t blk) {
    const int64_t r0 = blk * rb, r1 = std::min(m, r0 + rb);
    axpy_rows(A + r0 * n, r1 - r0, n, x + r0, part.data() + blk * n);
  });
  double ss = 0;
  for (int64_t j = 0; j < n; ++j) {
    double s = 0;
    for (int64_t blk = 0; blk < nblk; ++blk) s += part[size_t(blk * n + j)];
    out[j] = s;
    ss += s * s;
  }
  return ss;
}

}  // namespace

void spectral_norm_forward_f32(const float* w, int64_t rows, int64_t cols, bool transposed,
                               bool training, int iterations, double eps, float* u, float* v,
                               float* sigma, float* w_sn) {
  // Storage A (m, n): W or W^T. W^T u and W v as products with A or A^T.
  const int64_t m = transposed ? cols : rows, n = transposed ? rows : cols;
  std::vector<double> s(static_cast<size_t>(cols)), t(static_cast<size_t>(rows));
  auto wt_times = [&](const float* x, double* out) {  // W^T x (x: rows) -> cols
    return transposed ? a_times(w, m, n, x, out) : at_times(w, m, n, x, out);
  };
  auto w_times = [&](const float* x, double* out) {  // W x (x: cols) -> rows
    return transposed ? at_times(w, m, n, x, out) : a_times(w, m, n, x, out);
  };
  double sig = 0;
  if (training) {
    for (int it = 0; it < iterations; ++it) {
      const double ds = sn_clamp_min(std::sqrt(wt_times(u, s.data())), eps);
      for (int64_t j = 0; j < cols; ++j) v[j] = float(s[size_t(j)] / ds);
      const double st = w_times(v, t.data());
      const double dt = sn_clamp_min(std::sqrt(st), eps);
      for (int64_t i = 0; i < rows; ++i) u[i] = float(t[size_t(i)] / dt);
      sig = st / dt;
    }
  } else {
    w_times(v, t.data());
    for (int64_t i = 0; i < rows; ++i) sig += double(u[i]) * t[size_t(i)];
  }
  sigma[0] = float(sig);
  const float sg = sigma[0];
  parallel_for(rows * cols, grain(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) w_sn[i] = float(double(w[i]) / double(sg));
  });
}

void spectral_norm_backward_f32(const float* g, const float* w_sn, const float* u, const float* v,
                                const float* sigma, int64_t rows, int64_t cols, bool transposed,
                                bool accumulate, float* dw) {
  const int64_t numel = rows * cols;
  const int64_t nblk = block_count(numel, grain());
  std::vector<double> part(static_cast<size_t>(nblk), 0.0);
  parallel_blocks(nblk, [&](int64_t blk) {
    const int64_t b = blk * grain(), e = std::min(numel, b + grain());
    double s = 0;
    for (int64_t i = b; i < e; ++i) s += double(g[i]) * double(w_sn[i]);
    part[size_t(blk)] = s;
  });
  double c = 0;
  for (double p : part) c += p;
  const double sg = double(sigma[0]);
  const int64_t n = transposed ? rows : cols;
  const float* a = transposed ? v : u;
  const float* b = transposed ? u : v;
  const int64_t m = n ? numel / n : 0;
  parallel_for(m, std::max<int64_t>(1, grain() / std::max<int64_t>(n, 1)),
               [&](int64_t p0, int64_t p1) {
                 for (int64_t p = p0; p < p1; ++p) {
                   const double ca = c * double(a[p]);
                   for (int64_t q = 0; q < n; ++q) {
                     const int64_t e = p * n + q;
                     const double prev = accumulate ? double(dw[e]) : 0.0;
                     dw[e] = float(prev + (double(g[e]) - ca * double(b[q])) / sg);
                   }
                 }
               });
}

void philox_fill_f32(float* out, int64_t n, uint64_t seed, uint64_t offset, Dist d, double a,
                     double b) {
  const int64_t groups = (n + 3) / 4;
  parallel_for(groups, 1024, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const Philox4 r = philox_group(seed, offset, uint64_t(g));
      for (int lane = 0; lane < 4 && g * 4 + lane < n; ++lane)
        out[g * 4 + lane] = philox_value(r, lane, d, a, b);
    }
  });
}

}  // namespace gan::kernels::cpu
