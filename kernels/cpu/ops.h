// The CPU backend's entry points (kernels/cpu/backend.h): one per reference function of
// kernels/<op>.h, with the same arguments and contract. Each is a template over the element
// type: float runs the backend (the *_f32 functions, in kernels/cpu/*.cpp), double (the gradient
// checks) and float with the reference selected run the reference itself. The engine calls these
// for every CPU tensor; only the tests call the references directly.
//
// Where the backend's float code lives:
//   conv.cpp         oneDNN convolutions: forward, backward data (= transposed convolution),
//                    backward filter; bf16 operands through oneDNN's bf16 primitives
//   gemm.cpp         oneDNN GEMM (row-major, batched, strided)
//   elementwise.cpp  unary/binary ops and their backward passes, bias + activation, small helpers
//   reduce.cpp       sums over an axis, the bias/activation backward's column sums, the
//                    projection discriminator's head
//   norm.cpp         batch norm forward and backward
//   attention.cpp    attention (blocked, online softmax), softmax rows, batched transpose
//   optim.cpp        Adam, spectral norm, losses, random fills
//   shape.cpp        pooling, resizing, concat/split
// Cheap ops whose cost is the loop itself (losses of one value, pooling, resizing, attention rows
// for pictures) run the reference's loop in float, split over images or rows across threads.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/adam.h"
#include "kernels/attention.h"
#include "kernels/batchnorm.h"
#include "kernels/bf16.h"
#include "kernels/concat.h"
#include "kernels/conv.h"
#include "kernels/cpu/backend.h"
#include "kernels/elementwise.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/pool2d.h"
#include "kernels/projection_head.h"
#include "kernels/random.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "kernels/spectral_norm.h"

namespace gan::kernels::cpu {

// Starts the statement that runs T's call on the backend: compiled for float only, taken unless
// the reference is selected.
#define GAN_CPU_FAST(T)                   \
  if constexpr (std::is_same_v<T, float>) \
    if (!::gan::kernels::cpu::reference())

// ---------------------------------------------------------------------------------------------
// Declarations of the float implementations.

void conv_forward_f32(const ConvGeom& g, const float* x, const float* w, float* y);
void conv_backward_data_f32(const ConvGeom& g, const float* dy, const float* w, float* dx);
void conv_backward_filter_f32(const ConvGeom& g, const float* x, const float* dy, float* dw,
                              bool accumulate);
// bf16 operands (uint16_t patterns), float32 result (accumulated in float32; with accumulate added
// to out). False when oneDNN has no bf16 implementation here (the caller then widens).
bool conv_forward_bf16(const ConvGeom& g, const uint16_t* x, const uint16_t* w, float* y);
bool conv_backward_data_bf16(const ConvGeom& g, const uint16_t* dy, const uint16_t* w, float* dx);
bool conv_backward_filter_bf16(const ConvGeom& g, const uint16_t* x, const uint16_t* dy, float* dw);
void gemm_f32(const Gemm& g, float alpha, const float* A, const float* B, float beta, float* C);
// bf16 A and B, float32 C overwritten (beta 0); false when unavailable (see conv_forward_bf16).
bool gemm_bf16(const Gemm& g, float alpha, const uint16_t* A, const uint16_t* B, float* C);

void unary_forward_f32(Unary op, float alpha, const float* x, float* y, int64_t n);
void unary_backward_f32(Unary op, float alpha, const float* x, const float* y, const float* dy,
                        float* dx, int64_t n);
void binary_forward_f32(Binary op, const BroadcastIndex& bi, const float* a, const float* b,
                        float* y);
void binary_backward_f32(Binary op, const BroadcastIndex& bi, const float* a, const float* b,
                         const float* dy, float* ga, float* gb);
void expand_f32(const BroadcastIndex& bi, const float* x, float scale, float* y);
void axpy_f32(float alpha, const float* x, float* y, int64_t n);
void clamp_f32(float* y, int64_t n, float lo, float hi);
void lerp_f32(float* ema, const float* x, int64_t n, float w);
void bias_act_f32(float* y, const float* b, int64_t rows, int64_t k, BiasAct act, float slope);
void nonfinite_guard_f32(const float* x, int64_t n, float* guard);
void f32_to_bf16_f32(const float* x, uint16_t* y, int64_t n);
void bf16_to_f32_f32(const uint16_t* x, float* y, int64_t n);

void reduce_sum_f32(const float* x, int64_t outer, int64_t r, int64_t inner, float scale,
                    bool accumulate, float* y);
void bias_act_backward_f32(const float* y, const float* dy, int64_t rows, int64_t k, bool tanh,
                           float slope, bool accumulate, float* dz, float* db, uint16_t* dz16);
void projection_head_forward_f32(const float* h, const float* w, const float* bias, const float* y,
                                 const float* e, int64_t B, int64_t C, int64_t K, float* out);
void projection_head_backward_f32(const float* h, const float* w, const float* y, const float* e,
                                  const float* g, int64_t B, int64_t C, int64_t K, float* dh,
                                  float* dw, float* dbias, float* de, float* dy);

void batch_norm_forward_f32(const float* x, const float* gamma, const float* beta, int64_t R,
                            int64_t C, bool training, double momentum, double eps, BnAct act,
                            float slope, float* running_mean, float* running_var, float* y,
                            float* save_mean, float* save_invstd, int64_t groups);
void batch_norm_backward_f32(const float* x, const float* dy, const float* gamma, const float* beta,
                             const float* mean, const float* invstd, int64_t R, int64_t C,
                             bool training, BnAct act, float slope, float* dx, float* dgamma,
                             float* dbeta, bool accumulate_dgamma, bool accumulate_dbeta,
                             int64_t groups);

void attention_forward_f32(const AttnDims& a, const float* q, const float* k, const float* v,
                           float* o, float* lse, const float* gamma, const float* x, float* y);
void attention_backward_f32(const AttnDims& a, const float* q, const float* k, const float* v,
                            const float* o, const float* lse, const float* dy, const float* scale,
                            float* dq, float* dk, float* dv, float* dgamma);
void softmax_rows_f32(const float* x, float* y, int64_t rows, int64_t n);
void softmax_rows_backward_f32(const float* y, const float* dy, float* dx, int64_t rows, int64_t n);
void transpose_f32(const float* x, float* y, int64_t b, int64_t m, int64_t n);

void adam_f32(const AdamHyper& h, double lr, double t, float* p, const float* grad, float* m,
              float* v, int64_t n);
void spectral_norm_forward_f32(const float* w, int64_t rows, int64_t cols, bool transposed,
                               bool training, int iterations, double eps, float* u, float* v,
                               float* sigma, float* w_sn);
void spectral_norm_backward_f32(const float* g, const float* w_sn, const float* u, const float* v,
                                const float* sigma, int64_t rows, int64_t cols, bool transposed,
                                bool accumulate, float* dw);
void philox_fill_f32(float* out, int64_t n, uint64_t seed, uint64_t offset, Dist d, double a,
                     double b);

void concat_f32(int count, const float* const* xs, const int64_t* widths, int64_t rows, float* y);
void split_f32(int count, const float* dy, const int64_t* widths, int64_t rows, float* const* dxs);
void max_pool2d_forward_f32(const Pool2dGeom& g, const float* x, float* y);
void max_pool2d_backward_f32(const Pool2dGeom& g, const float* x, const float* dy, float* dx);
void avg_pool2d_forward_f32(const Pool2dGeom& g, const float* x, float* y);
void avg_pool2d_backward_f32(const Pool2dGeom& g, const float* dy, float* dx);
void upsample_nearest_forward_f32(const float* x, int64_t n, int64_t h, int64_t w, int64_t c, int s,
                                  float* y);
void upsample_nearest_backward_f32(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                   int s, float* dx);
// The NHWC resamplings (n, h, w, c) <-> (n, P, Q, c), split over images.
enum class Resample : uint8_t { kAdaptiveAvg, kBilinear, kBilinearCorners, kBicubicAA };
void resample_forward_f32(Resample kind, const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                          int64_t P, int64_t Q, float* y);
void resample_backward_f32(Resample kind, const float* dy, int64_t n, int64_t h, int64_t w,
                           int64_t c, int64_t P, int64_t Q, float* dx);

// ---------------------------------------------------------------------------------------------
// The entry points.

template <class T>
void conv_forward(const ConvGeom& g, const T* x, const T* w, T* y) {
  GAN_CPU_FAST(T) return conv_forward_f32(g, x, w, y);
  conv_forward_cpu(g, x, w, y);
}
template <class T>
void conv_backward_data(const ConvGeom& g, const T* dy, const T* w, T* dx) {
  GAN_CPU_FAST(T) return conv_backward_data_f32(g, dy, w, dx);
  conv_backward_data_cpu(g, dy, w, dx);
}
template <class T>
void conv_backward_filter(const ConvGeom& g, const T* x, const T* dy, T* dw, bool accumulate) {
  GAN_CPU_FAST(T) return conv_backward_filter_f32(g, x, dy, dw, accumulate);
  conv_backward_filter_cpu(g, x, dy, dw, accumulate);
}
template <class T>
void gemm(const Gemm& g, double alpha, const T* A, const T* B, double beta, T* C) {
  GAN_CPU_FAST(T) return gemm_f32(g, float(alpha), A, B, float(beta), C);
  gemm_cpu(g, alpha, A, B, beta, C);
}

template <class T>
void unary_forward(Unary op, double alpha, const T* x, T* y, int64_t n) {
  GAN_CPU_FAST(T) return unary_forward_f32(op, float(alpha), x, y, n);
  unary_forward_cpu(op, alpha, x, y, n);
}
template <class T>
void unary_backward(Unary op, double alpha, const T* x, const T* y, const T* dy, T* dx, int64_t n) {
  GAN_CPU_FAST(T) return unary_backward_f32(op, float(alpha), x, y, dy, dx, n);
  unary_backward_cpu(op, alpha, x, y, dy, dx, n);
}
template <class T>
void binary_forward(Binary op, const BroadcastIndex& bi, const T* a, const T* b, T* y) {
  GAN_CPU_FAST(T) return binary_forward_f32(op, bi, a, b, y);
  binary_forward_cpu(op, bi, a, b, y);
}
template <class T>
void binary_backward(Binary op, const BroadcastIndex& bi, const T* a, const T* b, const T* dy,
                     T* ga, T* gb) {
  GAN_CPU_FAST(T) return binary_backward_f32(op, bi, a, b, dy, ga, gb);
  binary_backward_cpu(op, bi, a, b, dy, ga, gb);
}
template <class T>
void expand(const BroadcastIndex& bi, const T* x, double scale, T* y) {
  GAN_CPU_FAST(T) return expand_f32(bi, x, float(scale), y);
  expand_cpu(bi, x, scale, y);
}
template <class T>
void axpy(double alpha, const T* x, T* y, int64_t n) {
  GAN_CPU_FAST(T) return axpy_f32(float(alpha), x, y, n);
  axpy_cpu(alpha, x, y, n);
}
template <class T>
void clamp(T* y, int64_t n, double lo, double hi) {
  GAN_CPU_FAST(T) return clamp_f32(y, n, float(lo), float(hi));
  clamp_cpu(y, n, lo, hi);
}
template <class T>
void lerp(T* ema, const T* x, int64_t n, double w) {
  GAN_CPU_FAST(T) return lerp_f32(ema, x, n, float(w));
  lerp_cpu(ema, x, n, w);
}
template <class T>
void bias_act(T* y, const T* b, int64_t rows, int64_t k, BiasAct act, double slope) {
  GAN_CPU_FAST(T) return bias_act_f32(y, b, rows, k, act, float(slope));
  bias_act_cpu(y, b, rows, k, act, slope);
}
template <class T>
void nonfinite_guard(const T* x, int64_t n, T* guard) {
  GAN_CPU_FAST(T) return nonfinite_guard_f32(x, n, guard);
  nonfinite_guard_cpu(x, n, guard);
}
// bf16 conversions (the same rounding everywhere; the backend only splits the loop).
inline void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
  if (!reference()) return f32_to_bf16_f32(x, y, n);
  f32_to_bf16_cpu(x, y, n);
}
inline void bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
  if (!reference()) return bf16_to_f32_f32(x, y, n);
  bf16_to_f32_cpu(x, y, n);
}

template <class T>
void reduce_sum(const T* x, int64_t outer, int64_t r, int64_t inner, double scale, bool accumulate,
                T* y) {
  GAN_CPU_FAST(T) return reduce_sum_f32(x, outer, r, inner, float(scale), accumulate, y);
  reduce_sum_cpu(x, outer, r, inner, scale, accumulate, y);
}
template <class T>
void bias_act_backward(const T* y, const T* dy, int64_t rows, int64_t k, bool tanh, double slope,
                       bool accumulate, T* dz, T* db, uint16_t* dz16 = nullptr) {
  GAN_CPU_FAST(T)
  return bias_act_backward_f32(y, dy, rows, k, tanh, float(slope), accumulate, dz, db, dz16);
  bias_act_backward_cpu(y, dy, rows, k, tanh, slope, accumulate, dz, db, dz16);
}

template <class T>
void batch_norm_forward(const T* x, const T* gamma, const T* beta, int64_t R, int64_t C,
                        bool training, double momentum, double eps, BnAct act, double slope,
                        T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd,
                        int64_t groups = 1) {
  GAN_CPU_FAST(T)
  return batch_norm_forward_f32(x, gamma, beta, R, C, training, momentum, eps, act, float(slope),
                                running_mean, running_var, y, save_mean, save_invstd, groups);
  batch_norm_forward_cpu(x, gamma, beta, R, C, training, momentum, eps, act, slope, running_mean,
                         running_var, y, save_mean, save_invstd, groups);
}
template <class T>
void batch_norm_backward(const T* x, const T* dy, const T* gamma, const T* beta, const T* mean,
                         const T* invstd, int64_t R, int64_t C, bool training, BnAct act,
                         double slope, T* dx, T* dgamma, T* dbeta, bool accumulate_dgamma,
                         bool accumulate_dbeta, int64_t groups = 1) {
  GAN_CPU_FAST(T)
  return batch_norm_backward_f32(x, dy, gamma, beta, mean, invstd, R, C, training, act,
                                 float(slope), dx, dgamma, dbeta, accumulate_dgamma,
                                 accumulate_dbeta, groups);
  batch_norm_backward_cpu(x, dy, gamma, beta, mean, invstd, R, C, training, act, slope, dx, dgamma,
                          dbeta, accumulate_dgamma, accumulate_dbeta, groups);
}

template <class T>
void attention_forward(const AttnDims& a, const T* q, const T* k, const T* v, T* o, T* lse,
                       const T* gamma, const T* x, T* y) {
  GAN_CPU_FAST(T) return attention_forward_f32(a, q, k, v, o, lse, gamma, x, y);
  attention_forward_cpu(a, q, k, v, o, lse, gamma, x, y);
}
template <class T>
void attention_backward(const AttnDims& a, const T* q, const T* k, const T* v, const T* o,
                        const T* lse, const T* dy, const T* scale, T* dq, T* dk, T* dv, T* dgamma) {
  GAN_CPU_FAST(T) return attention_backward_f32(a, q, k, v, o, lse, dy, scale, dq, dk, dv, dgamma);
  attention_backward_cpu(a, q, k, v, o, lse, dy, scale, dq, dk, dv, dgamma);
}
// Attention rows for pictures (gan_sample --attention-maps): the reference's loop.
template <class T>
std::vector<double> attention_rows(const AttnDims& a, const T* q, const T* k,
                                   const std::vector<int64_t>& queries) {
  return attention_rows_cpu(a, q, k, queries);
}
template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n) {
  GAN_CPU_FAST(T) return softmax_rows_f32(x, y, rows, n);
  softmax_rows_cpu(x, y, rows, n);
}
template <class T>
void softmax_rows_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t n) {
  GAN_CPU_FAST(T) return softmax_rows_backward_f32(y, dy, dx, rows, n);
  softmax_rows_backward_cpu(y, dy, dx, rows, n);
}
template <class T>
void transpose(const T* x, T* y, int64_t b, int64_t m, int64_t n) {
  GAN_CPU_FAST(T) return transpose_f32(x, y, b, m, n);
  transpose_cpu(x, y, b, m, n);
}

template <class T>
void adam(const AdamHyper& h, double lr, double t, T* p, const T* grad, T* m, T* v, int64_t n) {
  GAN_CPU_FAST(T) return adam_f32(h, lr, t, p, grad, m, v, n);
  adam_cpu(h, lr, t, p, grad, m, v, n);
}
template <class T>
void spectral_norm_forward(const T* w, int64_t rows, int64_t cols, bool transposed, bool training,
                           int iterations, double eps, T* u, T* v, T* sigma, T* w_sn) {
  GAN_CPU_FAST(T)
  return spectral_norm_forward_f32(w, rows, cols, transposed, training, iterations, eps, u, v,
                                   sigma, w_sn);
  spectral_norm_forward_cpu(w, rows, cols, transposed, training, iterations, eps, u, v, sigma,
                            w_sn);
}
template <class T>
void spectral_norm_backward(const T* g, const T* w_sn, const T* u, const T* v, const T* sigma,
                            int64_t rows, int64_t cols, bool transposed, bool accumulate, T* dw) {
  GAN_CPU_FAST(T)
  return spectral_norm_backward_f32(g, w_sn, u, v, sigma, rows, cols, transposed, accumulate, dw);
  spectral_norm_backward_cpu(g, w_sn, u, v, sigma, rows, cols, transposed, accumulate, dw);
}
template <class T>
void philox_fill(T* out, int64_t n, uint64_t seed, uint64_t offset, Dist d, double a, double b) {
  GAN_CPU_FAST(T) return philox_fill_f32(out, n, seed, offset, d, a, b);
  philox_fill_cpu(out, n, seed, offset, d, a, b);
}

// Losses of one value: the reference's loop (double accumulation; a few thousand elements).
template <class T>
void bce_logits_forward(const T* x, const T* t, double target, int64_t n, T* loss) {
  bce_logits_forward_cpu(x, t, target, n, loss);
}
template <class T>
void bce_logits_backward(const T* x, const T* t, double target, int64_t n, const T* dl, T* dx,
                         T* dt) {
  bce_logits_backward_cpu(x, t, target, n, dl, dx, dt);
}
template <class T>
void hinge_d_forward(const T* real, int64_t nr, const T* fake, int64_t nf, T* loss) {
  hinge_d_forward_cpu(real, nr, fake, nf, loss);
}
template <class T>
void hinge_d_backward(const T* real, int64_t nr, const T* fake, int64_t nf, const T* dl, T* dreal,
                      T* dfake) {
  hinge_d_backward_cpu(real, nr, fake, nf, dl, dreal, dfake);
}
template <class T>
void cross_entropy_forward(const T* x, const T* t, int64_t rows, int64_t c, T* loss) {
  cross_entropy_forward_cpu(x, t, rows, c, loss);
}
template <class T>
void cross_entropy_backward(const T* x, const T* t, int64_t rows, int64_t c, const T* dl, T* dx) {
  cross_entropy_backward_cpu(x, t, rows, c, dl, dx);
}

template <class T>
void concat(int count, const T* const* xs, const int64_t* widths, int64_t rows, T* y) {
  GAN_CPU_FAST(T) return concat_f32(count, xs, widths, rows, y);
  concat_cpu(count, xs, widths, rows, y);
}
template <class T>
void split(int count, const T* dy, const int64_t* widths, int64_t rows, T* const* dxs) {
  GAN_CPU_FAST(T) return split_f32(count, dy, widths, rows, dxs);
  split_cpu(count, dy, widths, rows, dxs);
}
template <class T>
void max_pool2d_forward(const Pool2dGeom& g, const T* x, T* y) {
  GAN_CPU_FAST(T) return max_pool2d_forward_f32(g, x, y);
  max_pool2d_forward_cpu(g, x, y);
}
template <class T>
void max_pool2d_backward(const Pool2dGeom& g, const T* x, const T* dy, T* dx) {
  GAN_CPU_FAST(T) return max_pool2d_backward_f32(g, x, dy, dx);
  max_pool2d_backward_cpu(g, x, dy, dx);
}
template <class T>
void avg_pool2d_forward(const Pool2dGeom& g, const T* x, T* y) {
  GAN_CPU_FAST(T) return avg_pool2d_forward_f32(g, x, y);
  avg_pool2d_forward_cpu(g, x, y);
}
template <class T>
void avg_pool2d_backward(const Pool2dGeom& g, const T* dy, T* dx) {
  GAN_CPU_FAST(T) return avg_pool2d_backward_f32(g, dy, dx);
  avg_pool2d_backward_cpu(g, dy, dx);
}
template <class T>
void upsample_nearest_forward(const T* x, int64_t n, int64_t h, int64_t w, int64_t c, int s, T* y) {
  GAN_CPU_FAST(T) return upsample_nearest_forward_f32(x, n, h, w, c, s, y);
  upsample_nearest_forward_cpu(x, n, h, w, c, s, y);
}
template <class T>
void upsample_nearest_backward(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c, int s,
                               T* dx) {
  GAN_CPU_FAST(T) return upsample_nearest_backward_f32(dy, n, h, w, c, s, dx);
  upsample_nearest_backward_cpu(dy, n, h, w, c, s, dx);
}
template <class T>
void adaptive_avg_pool2d_forward(const T* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P,
                                 int64_t Q, T* y) {
  GAN_CPU_FAST(T) return resample_forward_f32(Resample::kAdaptiveAvg, x, n, h, w, c, P, Q, y);
  adaptive_avg_pool2d_forward_cpu(x, n, h, w, c, P, Q, y);
}
template <class T>
void adaptive_avg_pool2d_backward(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                  int64_t P, int64_t Q, T* dx) {
  GAN_CPU_FAST(T) return resample_backward_f32(Resample::kAdaptiveAvg, dy, n, h, w, c, P, Q, dx);
  adaptive_avg_pool2d_backward_cpu(dy, n, h, w, c, P, Q, dx);
}
template <class T>
void resize_bilinear_forward(const T* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P,
                             int64_t Q, T* y, bool half_pixel = true) {
  GAN_CPU_FAST(T)
  return resample_forward_f32(half_pixel ? Resample::kBilinear : Resample::kBilinearCorners, x, n,
                              h, w, c, P, Q, y);
  resize_bilinear_forward_cpu(x, n, h, w, c, P, Q, y, half_pixel);
}
template <class T>
void resize_bilinear_backward(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P,
                              int64_t Q, T* dx, bool half_pixel = true) {
  GAN_CPU_FAST(T)
  return resample_backward_f32(half_pixel ? Resample::kBilinear : Resample::kBilinearCorners, dy, n,
                               h, w, c, P, Q, dx);
  resize_bilinear_backward_cpu(dy, n, h, w, c, P, Q, dx, half_pixel);
}
template <class T>
void resize_bicubic_aa_forward(const T* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P,
                               int64_t Q, T* y) {
  GAN_CPU_FAST(T) return resample_forward_f32(Resample::kBicubicAA, x, n, h, w, c, P, Q, y);
  resize_bicubic_aa_forward_cpu(x, n, h, w, c, P, Q, y);
}
template <class T>
void resize_bicubic_aa_backward(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P,
                                int64_t Q, T* dx) {
  GAN_CPU_FAST(T) return resample_backward_f32(Resample::kBicubicAA, dy, n, h, w, c, P, Q, dx);
  resize_bicubic_aa_backward_cpu(dy, n, h, w, c, P, Q, dx);
}

template <class T>
void projection_head_forward(const T* h, const T* w, const T* bias, const T* y, const T* e,
                             int64_t B, int64_t C, int64_t K, T* out) {
  GAN_CPU_FAST(T) return projection_head_forward_f32(h, w, bias, y, e, B, C, K, out);
  projection_head_forward_cpu(h, w, bias, y, e, B, C, K, out);
}
template <class T>
void projection_head_backward(const T* h, const T* w, const T* y, const T* e, const T* g, int64_t B,
                              int64_t C, int64_t K, T* dh, T* dw, T* dbias, T* de, T* dy) {
  GAN_CPU_FAST(T)
  return projection_head_backward_f32(h, w, y, e, g, B, C, K, dh, dw, dbias, de, dy);
  projection_head_backward_cpu(h, w, y, e, g, B, C, K, dh, dw, dbias, de, dy);
}

}  // namespace gan::kernels::cpu
