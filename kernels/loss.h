// GAN losses, reduced to one value (mean over the batch) in one launch.
//
// Binary cross-entropy with logits, numerically stable for any x:
//   loss = (1/n) sum_i [max(x_i, 0) - x_i t_i + log(1 + exp(-|x_i|))]
//   dx_i = dl (sigmoid(x_i) - t_i) / n,  dt_i = -dl x_i / n
// The targets t are a tensor (n) or, when t is null, the constant `target` (1 real, 0 fake).
//
// SAGAN's discriminator hinge loss:
//   loss = (1/nr) sum_i relu(1 - real_i) + (1/nf) sum_j relu(1 + fake_j)
//   dreal_i = -dl [1 - real_i > 0] / nr,  dfake_j = dl [1 + fake_j > 0] / nf
// (The generator's hinge loss, -mean(fake), is composed from mean and scale by the engine.)
//
// Softmax cross-entropy over the last axis of logits x (rows, c) against target distributions t
// (rows, c) (one-hot for class labels; any weights summing to 1 for label smoothing):
//   loss = (1/rows) sum_r [lse_r sum_c t_rc - sum_c t_rc x_rc],  lse_r = log sum_c exp(x_rc)
//   dx_rc = dl (softmax(x_r)_c sum_c' t_rc' - t_rc) / rows   (targets get no gradient)
//
// dl is the upstream gradient, read from memory (on the device for CUDA: no host sync).
// CPU references accumulate in double; the CUDA forward kernels are one block with a fixed
// reduction order (deterministic), accumulating in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace gan::kernels {

template <class T>
void bce_logits_forward_cpu(const T* x, const T* t, double target, int64_t n, T* loss) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(x[i]), y = t ? double(t[i]) : target;
    s += std::max(v, 0.0) - v * y + std::log1p(std::exp(-std::fabs(v)));
  }
  *loss = T(n > 0 ? s / double(n) : 0.0);
}

template <class T>
void bce_logits_backward_cpu(const T* x, const T* t, double target, int64_t n, const T* dl, T* dx,
                             T* dt) {
  const double g = double(*dl) / double(n);
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(x[i]), y = t ? double(t[i]) : target;
    const double sig = v >= 0 ? 1 / (1 + std::exp(-v)) : std::exp(v) / (1 + std::exp(v));
    if (dx) dx[i] = T(g * (sig - y));
    if (dt) dt[i] = T(-g * v);
  }
}

template <class T>
void hinge_d_forward_cpu(const T* real, int64_t nr, const T* fake, int64_t nf, T* loss) {
  double sr = 0, sf = 0;
  for (int64_t i = 0; i < nr; ++i) sr += std::max(0.0, 1 - double(real[i]));
  for (int64_t i = 0; i < nf; ++i) sf += std::max(0.0, 1 + double(fake[i]));
  // max(0, NaN) is 0 in std::max(0, v) order; keep NaN visible like the GPU does.
  for (int64_t i = 0; i < nr; ++i)
    if (std::isnan(double(real[i]))) sr = NAN;
  for (int64_t i = 0; i < nf; ++i)
    if (std::isnan(double(fake[i]))) sf = NAN;
  *loss = T((nr ? sr / double(nr) : 0.0) + (nf ? sf / double(nf) : 0.0));
}

template <class T>
void hinge_d_backward_cpu(const T* real, int64_t nr, const T* fake, int64_t nf, const T* dl,
                          T* dreal, T* dfake) {
  const double g = double(*dl);
  if (dreal)
    for (int64_t i = 0; i < nr; ++i) dreal[i] = T(1 - double(real[i]) > 0 ? -g / double(nr) : 0.0);
  if (dfake)
    for (int64_t i = 0; i < nf; ++i) dfake[i] = T(1 + double(fake[i]) > 0 ? g / double(nf) : 0.0);
}

template <class T>
double logsumexp_row(const T* x, int64_t c) {
  double m = -INFINITY;
  for (int64_t j = 0; j < c; ++j) m = std::max(m, double(x[j]));
  if (std::isinf(m)) return m;  // all -inf (or +inf): the max itself
  double s = 0;
  for (int64_t j = 0; j < c; ++j) s += std::exp(double(x[j]) - m);
  return m + std::log(s);
}

template <class T>
void cross_entropy_forward_cpu(const T* x, const T* t, int64_t rows, int64_t c, T* loss) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * c, *tr = t + r * c;
    const double lse = logsumexp_row(xr, c);
    for (int64_t j = 0; j < c; ++j)
      if (tr[j] != T(0)) total += double(tr[j]) * (lse - double(xr[j]));
  }
  *loss = T(rows > 0 ? total / double(rows) : 0.0);
}

template <class T>
void cross_entropy_backward_cpu(const T* x, const T* t, int64_t rows, int64_t c, const T* dl,
                                T* dx) {
  const double g = rows > 0 ? double(*dl) / double(rows) : 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * c, *tr = t + r * c;
    const double lse = logsumexp_row(xr, c);
    double tsum = 0;
    for (int64_t j = 0; j < c; ++j) tsum += double(tr[j]);
    for (int64_t j = 0; j < c; ++j)
      dx[r * c + j] = T(g * (std::exp(double(xr[j]) - lse) * tsum - double(tr[j])));
  }
}

void bce_logits_forward_cuda(const float* x, const float* t, float target, int64_t n, float* loss,
                             cudaStream_t stream);
void bce_logits_backward_cuda(const float* x, const float* t, float target, int64_t n,
                              const float* dl, float* dx, float* dt, cudaStream_t stream);
// One block; a warp per row.
void cross_entropy_forward_cuda(const float* x, const float* t, int64_t rows, int64_t c,
                                float* loss, cudaStream_t stream);
void cross_entropy_backward_cuda(const float* x, const float* t, int64_t rows, int64_t c,
                                 const float* dl, float* dx, cudaStream_t stream);
void hinge_d_forward_cuda(const float* real, int64_t nr, const float* fake, int64_t nf, float* loss,
                          cudaStream_t stream);
void hinge_d_backward_cuda(const float* real, int64_t nr, const float* fake, int64_t nf,
                           const float* dl, float* dreal, float* dfake, cudaStream_t stream);

}  // namespace gan::kernels
