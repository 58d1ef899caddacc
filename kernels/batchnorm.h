// Batch normalisation over the rows of x viewed as (R, C): every axis but the last (channels) is
// a row axis, so NHWC (N, H, W, C) gives R = N H W and (N, C) gives R = N. PyTorch's BatchNorm2d,
// and with per-sample gamma and beta the conditional batch norm of class-conditional generators:
//
//   training: mean_c = (1/R) sum_r x_rc,  var_c = (1/R) sum_r (x_rc - mean_c)^2   (biased)
//             running_mean_c = (1 - momentum) running_mean_c + momentum mean_c
//             running_var_c  = (1 - momentum) running_var_c  + momentum var_c R / (R - 1)
//   eval:     mean_c = running_mean_c, var_c = running_var_c (read only)
//   invstd_c = 1 / sqrt(var_c + eps),  xhat_rc = (x_rc - mean_c) invstd_c
//   z_rc = gamma_gc xhat_rc + beta_gc,   y_rc = act(z_rc)   (act: none, relu, leaky_relu(slope))
//
// Groups: gamma and beta are (G, C), G dividing R; row r belongs to group g = r / (R / G), i.e.
// G consecutive blocks of rows. G = 1 is plain batch norm (gamma, beta (C)); G = N over NHWC x is
// conditional batch norm (per-sample gamma, beta (N, C), e.g. 1 + gain(y) and bias(y) of a class
// embedding). The statistics are always over all R rows.
//
// Backward (dy' = dy act'(z), with z recomputed from x and the saved mean/invstd, never saved):
//   dbeta_gc = sum_{r in g} dy'_rc,  dgamma_gc = sum_{r in g} dy'_rc xhat_rc
//   training: dx_rc = invstd_c (gamma_gc dy'_rc - B_c / R - xhat_rc A_c / R)
//             with B_c = sum_g gamma_gc dbeta_gc, A_c = sum_g gamma_gc dgamma_gc
//             (G = 1: dx_rc = gamma_c invstd_c (dy'_rc - dbeta_c / R - xhat_rc dgamma_c / R))
//   eval:     dx_rc = gamma_gc invstd_c dy'_rc
//
// Contract: forward overwrites y and (when non-null) save_mean/save_invstd, the statistics it
// normalised with (batch statistics in training, running ones in eval), which are what backward
// takes as mean/invstd; training forward updates running_mean/running_var in place. Backward
// overwrites dx; dgamma/dbeta ((G, C)) are overwritten, or accumulated into (+=) when the matching
// accumulate flag is set (a parameter's persistent gradient buffer). Any of dx, dgamma, dbeta
// may be null (not wanted); gamma/beta may be null (1 and 0: no affine transform). Outputs must
// not alias inputs (y not x, dx not x or dy).
// act'(z): relu 1 where z > 0 (and where z is NaN: PyTorch's threshold_backward), else 0;
// leaky_relu 1 where z > 0, else slope. Same on both devices.
//
// CPU reference: plain loops in double, two passes (mean, then the squared deviations). The
// forward normalises with mean/invstd rounded to T, the values it saves, so that forward and
// backward take the same branch of the activation for every element.
//
// CUDA (float32): deterministic (fixed reduction order for a given shape and GPU, no atomics);
// blocks of 32 channels x 8 row lanes over a grid of (channel tiles) x (row splits), each split
// inside one group (splits per group x G):
//   forward training: stats kernel (per-thread Welford, Chan merges in fixed order, one
//     (mean, M2) partial per (split, channel) into the workspace), then apply kernel (every block
//     merges the partials of its channels in fixed order, split 0 writes save_mean/save_invstd
//     and the running statistics, every block normalises its rows);
//   forward eval: apply kernel only, with the running statistics;
//   backward: partial sums of dy' and dy' xhat per (split, channel), then apply kernel (merge,
//     weighted by each split's gamma when G > 1; the first split of each group writes that
//     group's dgamma/dbeta, every block writes dx for its rows).
// Workspace: CUB's two-phase convention, batch_norm_workspace_bytes(R, C, G) bytes of scratch for
// forward training and backward (it depends on the GPU's SM count). No host synchronisation and
// no allocation inside the launchers: graph-capturable.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace gan::kernels {

enum class BnAct : uint8_t { kNone, kRelu, kLeakyRelu };

// act(z) and act'(z), the same definitions as the elementwise relu/leaky_relu (NaN propagates in
// the forward; relu's derivative is 0 where z <= 0, so 1 where z is NaN).
inline double bn_act_cpu(BnAct act, double slope, double z) {
  switch (act) {
    case BnAct::kRelu:
      return z < 0 ? 0.0 : z;
    case BnAct::kLeakyRelu:
      return z < 0 ? slope * z : z;
    default:
      return z;
  }
}
inline double bn_act_grad_cpu(BnAct act, double slope, double z) {
  switch (act) {
    case BnAct::kRelu:
      return z <= 0 ? 0.0 : 1.0;
    case BnAct::kLeakyRelu:
      return z > 0 ? 1.0 : slope;
    default:
      return 1.0;
  }
}

// ---------------------------------------------------------------------------------------------
// CPU reference

// x (R, C), gamma, beta (G, C) or null -> y (R, C); save_mean, save_invstd (C) or null.
// running_mean, running_var (C): updated in training (R > 1 required), read in eval.
template <class T>
void batch_norm_forward_cpu(const T* x, const T* gamma, const T* beta, int64_t R, int64_t C,
                            bool training, double momentum, double eps, BnAct act, double slope,
                            T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd,
                            int64_t groups = 1) {
  const int64_t S = groups > 0 ? R / groups : R;  // rows per group
  for (int64_t c = 0; c < C; ++c) {
    double mean = 0, invstd = 0;
    if (training) {
      double s = 0;
      for (int64_t r = 0; r < R; ++r) s += double(x[r * C + c]);
      mean = s / double(R);
      double ss = 0;  // second pass: squared deviations from the mean
      for (int64_t r = 0; r < R; ++r) {
        const double d = double(x[r * C + c]) - mean;
        ss += d * d;
      }
      invstd = 1.0 / std::sqrt(ss / double(R) + eps);
      running_mean[c] = T((1 - momentum) * double(running_mean[c]) + momentum * mean);
      running_var[c] = T((1 - momentum) * double(running_var[c]) + momentum * ss / double(R - 1));
    } else {
      mean = double(running_mean[c]);
      invstd = 1.0 / std::sqrt(double(running_var[c]) + eps);
    }
    const T mean_t = T(mean), invstd_t = T(invstd);  // what backward will read
    if (save_mean) save_mean[c] = mean_t;
    if (save_invstd) save_invstd[c] = invstd_t;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t gi = (r / S) * C + c;
      const double g = gamma ? double(gamma[gi]) : 1.0, b = beta ? double(beta[gi]) : 0.0;
      const double xhat = (double(x[r * C + c]) - double(mean_t)) * double(invstd_t);
      y[r * C + c] = T(bn_act_cpu(act, slope, g * xhat + b));
    }
  }
}

// x, dy (R, C); gamma, beta (G, C) or null; mean, invstd (C): the forward's save_mean/save_invstd.
// -> dx (R, C), dgamma, dbeta (G, C), each optional.
template <class T>
void batch_norm_backward_cpu(const T* x, const T* dy, const T* gamma, const T* beta, const T* mean,
                             const T* invstd, int64_t R, int64_t C, bool training, BnAct act,
                             double slope, T* dx, T* dgamma, T* dbeta, bool accumulate_dgamma,
                             bool accumulate_dbeta, int64_t groups = 1) {
  const int64_t G = groups > 0 ? groups : 1, S = R / G;
  for (int64_t c = 0; c < C; ++c) {
    const double m = double(mean[c]), is = double(invstd[c]);
    double wdy = 0, wdyx = 0;  // sum_g gamma_g (sum dy'), sum_g gamma_g (sum dy' xhat)
    for (int64_t grp = 0; grp < G; ++grp) {
      const int64_t gi = grp * C + c;
      const double g = gamma ? double(gamma[gi]) : 1.0, b = beta ? double(beta[gi]) : 0.0;
      double sdy = 0, sdyx = 0;  // sum dy', sum dy' xhat over the group's rows
      for (int64_t r = grp * S; r < (grp + 1) * S; ++r) {
        const double xhat = (double(x[r * C + c]) - m) * is;
        const double dyp = double(dy[r * C + c]) * bn_act_grad_cpu(act, slope, g * xhat + b);
        sdy += dyp;
        sdyx += dyp * xhat;
      }
      if (dgamma) dgamma[gi] = T((accumulate_dgamma ? double(dgamma[gi]) : 0.0) + sdyx);
      if (dbeta) dbeta[gi] = T((accumulate_dbeta ? double(dbeta[gi]) : 0.0) + sdy);
      wdy += g * sdy;
      wdyx += g * sdyx;
    }
    if (!dx) continue;
    const double k1 = wdy / double(R), k2 = wdyx / double(R);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t gi = (r / S) * C + c;
      const double g = gamma ? double(gamma[gi]) : 1.0, b = beta ? double(beta[gi]) : 0.0;
      const double xhat = (double(x[r * C + c]) - m) * is;
      const double dyp = double(dy[r * C + c]) * bn_act_grad_cpu(act, slope, g * xhat + b);
      dx[r * C + c] = T(training ? is * (g * dyp - k1 - xhat * k2) : g * is * dyp);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// CUDA (float32, on `stream`)

// Scratch bytes for batch_norm_forward_train_cuda and batch_norm_backward_cuda (same for both).
size_t batch_norm_workspace_bytes(int64_t R, int64_t C, int64_t groups = 1);

// x (R, C), gamma, beta (G, C) or null -> y (R, C), save_mean, save_invstd (C) or null;
// running_mean, running_var (C) updated in place. R > 1.
void batch_norm_forward_train_cuda(const float* x, const float* gamma, const float* beta, int64_t R,
                                   int64_t C, float momentum, float eps, BnAct act, float slope,
                                   float* running_mean, float* running_var, float* y,
                                   float* save_mean, float* save_invstd, void* workspace,
                                   size_t workspace_bytes, cudaStream_t stream, int64_t groups = 1);

// x (R, C), gamma, beta (G, C) or null, running_mean, running_var (C) -> y (R, C),
// save_mean, save_invstd (C) or null.
void batch_norm_forward_eval_cuda(const float* x, const float* gamma, const float* beta, int64_t R,
                                  int64_t C, float eps, BnAct act, float slope,
                                  const float* running_mean, const float* running_var, float* y,
                                  float* save_mean, float* save_invstd, cudaStream_t stream,
                                  int64_t groups = 1);

// x, dy (R, C); gamma, beta (G, C) or null; mean, invstd (C) from the forward
// -> dx (R, C), dgamma, dbeta (G, C), each optional (see the contract above).
void batch_norm_backward_cuda(const float* x, const float* dy, const float* gamma,
                              const float* beta, const float* mean, const float* invstd, int64_t R,
                              int64_t C, bool training, BnAct act, float slope, float* dx,
                              float* dgamma, float* dbeta, bool accumulate_dgamma,
                              bool accumulate_dbeta, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream, int64_t groups = 1);

// bf16 activations (bf16 precision): x, y, dy, dx as bf16 bit patterns, read into float32 and
// written rounded to nearest even; the statistics, gamma/beta and their gradients float32. The
// same arithmetic as the float32 kernels on the widened values.
void batch_norm_forward_train_cuda(const uint16_t* x, const float* gamma, const float* beta,
                                   int64_t R, int64_t C, float momentum, float eps, BnAct act,
                                   float slope, float* running_mean, float* running_var,
                                   uint16_t* y, float* save_mean, float* save_invstd,
                                   void* workspace, size_t workspace_bytes, cudaStream_t stream,
                                   int64_t groups = 1);
void batch_norm_forward_eval_cuda(const uint16_t* x, const float* gamma, const float* beta,
                                  int64_t R, int64_t C, float eps, BnAct act, float slope,
                                  const float* running_mean, const float* running_var, uint16_t* y,
                                  float* save_mean, float* save_invstd, cudaStream_t stream,
                                  int64_t groups = 1);
void batch_norm_backward_cuda(const uint16_t* x, const uint16_t* dy, const float* gamma,
                              const float* beta, const float* mean, const float* invstd, int64_t R,
                              int64_t C, bool training, BnAct act, float slope, uint16_t* dx,
                              float* dgamma, float* dbeta, bool accumulate_dgamma,
                              bool accumulate_dbeta, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream, int64_t groups = 1);

}  // namespace gan::kernels
