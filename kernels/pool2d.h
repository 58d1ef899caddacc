// Pooling and resizing of NHWC activations with PyTorch's rules (InceptionV3 of pytorch-fid needs
// every one of them; tools/eval):
//   max_pool2d / avg_pool2d (kernel kh x kw, stride, zero padding; ceil_mode off): output
//     P = (H + 2 ph - kh) / sh + 1 (likewise Q). Window (i, j) starts at (i sh - ph, j sw - pw).
//     max: padding never wins (PyTorch pads with -inf); the first maximum in row-major order is
//     taken and gets the gradient; NaN counts as the maximum. avg: the sum over the window's
//     valid pixels divided by the window's size clipped to the padded input (count_include_pad)
//     or by its number of valid pixels (count_include_pad = false).
//   adaptive_avg_pool2d to P x Q: window rows [floor(i H / P), ceil((i + 1) H / P)).
//   resize_bilinear to P x Q (F.interpolate(mode="bilinear", align_corners=False,
//   antialias=False)):
//     source row s = max((i + 0.5) H / P - 0.5, 0), rows floor(s) and min(floor(s) + 1, H - 1)
//     weighted by 1 - frac(s) and frac(s); columns likewise.
//   resize_bicubic_aa to P x Q: PIL's Image.resize(resample=BICUBIC) on float ("F") images, which
//     clean-fid recommends: separable, columns first, then rows; the cubic kernel (a = -0.5)
//     stretched by the scale when shrinking (antialiasing), taps normalised to sum 1, edges not
//     padded (the window is cut at the border and renormalised).
//   upsample_nearest by an integer factor s (F.interpolate(scale_factor=s, mode="nearest")):
//     x (N, H, W, C) -> y (N, sH, sW, C), y[b, i, j, c] = x[b, i / s, j / s, c]; its adjoint
//     (the backward) dx[b, i, j, c] = sum over a, e < s of dy[b, s i + a, s j + e, c], summed in
//     row-major order (float32 on the devices, double in the reference). Also for bf16 (the copy
//     is exact; the sums in float32, rounded once).
// Backward kernels gather (every dx element is computed once, by one thread: deterministic).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace gan::kernels {

struct Pool2dGeom {
  int64_t n = 0, h = 0, w = 0, c = 0;  // input (N, H, W, C)
  int kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  bool count_include_pad = true;  // avg only
  int64_t out_h() const { return (h + 2 * ph - kh) / sh + 1; }
  int64_t out_w() const { return (w + 2 * pw - kw) / sw + 1; }
};

template <class T>
void max_pool2d_forward_cpu(const Pool2dGeom& g, const T* x, T* y) {
  const int64_t P = g.out_h(), Q = g.out_w();
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j)
        for (int64_t ch = 0; ch < g.c; ++ch) {
          const int64_t h0 = i * g.sh - g.ph, w0 = j * g.sw - g.pw;
          double best = -INFINITY;
          for (int64_t yy = std::max<int64_t>(h0, 0); yy < std::min<int64_t>(h0 + g.kh, g.h); ++yy)
            for (int64_t xx = std::max<int64_t>(w0, 0); xx < std::min<int64_t>(w0 + g.kw, g.w);
                 ++xx) {
              const double v = double(x[((b * g.h + yy) * g.w + xx) * g.c + ch]);
              if (std::isnan(best)) continue;
              if (std::isnan(v) || v > best) best = v;
            }
          y[((b * P + i) * Q + j) * g.c + ch] = T(best);
        }
}

// dx (N, H, W, C) overwritten.
template <class T>
void max_pool2d_backward_cpu(const Pool2dGeom& g, const T* x, const T* dy, T* dx) {
  const int64_t P = g.out_h(), Q = g.out_w();
  std::fill(dx, dx + g.n * g.h * g.w * g.c, T(0));
  std::vector<double> acc(size_t(g.n * g.h * g.w * g.c), 0.0);
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j)
        for (int64_t ch = 0; ch < g.c; ++ch) {
          const int64_t h0 = i * g.sh - g.ph, w0 = j * g.sw - g.pw;
          double best = -INFINITY;
          int64_t at = -1;
          for (int64_t yy = std::max<int64_t>(h0, 0); yy < std::min<int64_t>(h0 + g.kh, g.h); ++yy)
            for (int64_t xx = std::max<int64_t>(w0, 0); xx < std::min<int64_t>(w0 + g.kw, g.w);
                 ++xx) {
              const int64_t e = ((b * g.h + yy) * g.w + xx) * g.c + ch;
              const double v = double(x[e]);
              if (at >= 0 && std::isnan(best)) continue;
              if (at < 0 || std::isnan(v) || v > best) best = v, at = e;
            }
          if (at >= 0) acc[size_t(at)] += double(dy[((b * P + i) * Q + j) * g.c + ch]);
        }
  for (size_t e = 0; e < acc.size(); ++e) dx[e] = T(acc[e]);
}

// The divisor of window (i, j).
inline int64_t avg_pool_divisor(const Pool2dGeom& g, int64_t i, int64_t j) {
  const int64_t h0 = i * g.sh - g.ph, w0 = j * g.sw - g.pw;
  if (g.count_include_pad)
    return (std::min<int64_t>(h0 + g.kh, g.h + g.ph) - h0) *
           (std::min<int64_t>(w0 + g.kw, g.w + g.pw) - w0);
  return (std::min<int64_t>(h0 + g.kh, g.h) - std::max<int64_t>(h0, 0)) *
         (std::min<int64_t>(w0 + g.kw, g.w) - std::max<int64_t>(w0, 0));
}

template <class T>
void avg_pool2d_forward_cpu(const Pool2dGeom& g, const T* x, T* y) {
  const int64_t P = g.out_h(), Q = g.out_w();
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j)
        for (int64_t ch = 0; ch < g.c; ++ch) {
          const int64_t h0 = i * g.sh - g.ph, w0 = j * g.sw - g.pw;
          double s = 0;
          for (int64_t yy = std::max<int64_t>(h0, 0); yy < std::min<int64_t>(h0 + g.kh, g.h); ++yy)
            for (int64_t xx = std::max<int64_t>(w0, 0); xx < std::min<int64_t>(w0 + g.kw, g.w);
                 ++xx)
              s += double(x[((b * g.h + yy) * g.w + xx) * g.c + ch]);
          y[((b * P + i) * Q + j) * g.c + ch] = T(s / double(avg_pool_divisor(g, i, j)));
        }
}

template <class T>
void avg_pool2d_backward_cpu(const Pool2dGeom& g, const T* dy, T* dx) {
  const int64_t P = g.out_h(), Q = g.out_w();
  std::vector<double> acc(size_t(g.n * g.h * g.w * g.c), 0.0);
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j)
        for (int64_t ch = 0; ch < g.c; ++ch) {
          const int64_t h0 = i * g.sh - g.ph, w0 = j * g.sw - g.pw;
          const double v =
              double(dy[((b * P + i) * Q + j) * g.c + ch]) / double(avg_pool_divisor(g, i, j));
          for (int64_t yy = std::max<int64_t>(h0, 0); yy < std::min<int64_t>(h0 + g.kh, g.h); ++yy)
            for (int64_t xx = std::max<int64_t>(w0, 0); xx < std::min<int64_t>(w0 + g.kw, g.w);
                 ++xx)
              acc[size_t(((b * g.h + yy) * g.w + xx) * g.c + ch)] += v;
        }
  for (size_t e = 0; e < acc.size(); ++e) dx[e] = T(acc[e]);
}

// Adaptive average pooling: x (N, H, W, C) -> y (N, P, Q, C).
inline int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
inline int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

template <class T>
void adaptive_avg_pool2d_forward_cpu(const T* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                     int64_t P, int64_t Q, T* y) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j) {
        const int64_t y0 = adaptive_start(i, h, P), y1 = adaptive_end(i, h, P);
        const int64_t x0 = adaptive_start(j, w, Q), x1 = adaptive_end(j, w, Q);
        for (int64_t ch = 0; ch < c; ++ch) {
          double s = 0;
          for (int64_t yy = y0; yy < y1; ++yy)
            for (int64_t xx = x0; xx < x1; ++xx) s += double(x[((b * h + yy) * w + xx) * c + ch]);
          y[((b * P + i) * Q + j) * c + ch] = T(s / double((y1 - y0) * (x1 - x0)));
        }
      }
}

template <class T>
void adaptive_avg_pool2d_backward_cpu(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                      int64_t P, int64_t Q, T* dx) {
  std::vector<double> acc(size_t(n * h * w * c), 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j) {
        const int64_t y0 = adaptive_start(i, h, P), y1 = adaptive_end(i, h, P);
        const int64_t x0 = adaptive_start(j, w, Q), x1 = adaptive_end(j, w, Q);
        for (int64_t ch = 0; ch < c; ++ch) {
          const double v =
              double(dy[((b * P + i) * Q + j) * c + ch]) / double((y1 - y0) * (x1 - x0));
          for (int64_t yy = y0; yy < y1; ++yy)
            for (int64_t xx = x0; xx < x1; ++xx) acc[size_t(((b * h + yy) * w + xx) * c + ch)] += v;
        }
      }
  for (size_t e = 0; e < acc.size(); ++e) dx[e] = T(acc[e]);
}

// Bilinear source coordinate of output index i: rows lo, hi and the weight of hi. scale = in / out
// (float, as PyTorch's kernels compute it). half_pixel: PyTorch's area_pixel_compute_source_index
// with align_corners = false, (i + 0.5) scale - 0.5 clamped at 0; else TF1's resize_bilinear
// without half-pixel centres (the TF Inception graph's resize, StyleGAN's nv_bilinear): i scale.
inline void bilinear_source(int64_t i, int64_t in, float scale, int64_t& lo, int64_t& hi,
                            float& frac, bool half_pixel = true) {
  const float s = half_pixel ? std::max(scale * (float(i) + 0.5f) - 0.5f, 0.f) : scale * float(i);
  lo = std::min<int64_t>(int64_t(s), in - 1);
  hi = std::min<int64_t>(lo + 1, in - 1);
  frac = s - float(lo);
}

template <class T>
void resize_bilinear_forward_cpu(const T* x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t P,
                                 int64_t Q, T* y, bool half_pixel = true) {
  const float sy = float(h) / float(P), sx = float(w) / float(Q);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < P; ++i) {
      int64_t y0, y1;
      float fy;
      bilinear_source(i, h, sy, y0, y1, fy, half_pixel);
      for (int64_t j = 0; j < Q; ++j) {
        int64_t x0, x1;
        float fx;
        bilinear_source(j, w, sx, x0, x1, fx, half_pixel);
        for (int64_t ch = 0; ch < c; ++ch) {
          auto at = [&](int64_t yy, int64_t xx) {
            return double(x[((b * h + yy) * w + xx) * c + ch]);
          };
          const double top = (1 - double(fx)) * at(y0, x0) + double(fx) * at(y0, x1);
          const double bot = (1 - double(fx)) * at(y1, x0) + double(fx) * at(y1, x1);
          y[((b * P + i) * Q + j) * c + ch] = T((1 - double(fy)) * top + double(fy) * bot);
        }
      }
    }
}

template <class T>
void resize_bilinear_backward_cpu(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                  int64_t P, int64_t Q, T* dx, bool half_pixel = true) {
  const float sy = float(h) / float(P), sx = float(w) / float(Q);
  std::vector<double> acc(size_t(n * h * w * c), 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < P; ++i) {
      int64_t y0, y1;
      float fy;
      bilinear_source(i, h, sy, y0, y1, fy, half_pixel);
      for (int64_t j = 0; j < Q; ++j) {
        int64_t x0, x1;
        float fx;
        bilinear_source(j, w, sx, x0, x1, fx, half_pixel);
        for (int64_t ch = 0; ch < c; ++ch) {
          const double g = double(dy[((b * P + i) * Q + j) * c + ch]);
          auto add = [&](int64_t yy, int64_t xx, double wt) {
            acc[size_t(((b * h + yy) * w + xx) * c + ch)] += g * wt;
          };
          add(y0, x0, (1 - double(fy)) * (1 - double(fx)));
          add(y0, x1, (1 - double(fy)) * double(fx));
          add(y1, x0, double(fy) * (1 - double(fx)));
          add(y1, x1, double(fy) * double(fx));
        }
      }
    }
  for (size_t e = 0; e < acc.size(); ++e) dx[e] = T(acc[e]);
}

// PIL's bicubic filter (a = -0.5) and one output sample's window over an axis of `in` samples
// resized to `out`: first tap `lo`, `count` taps, weights w[0..count) (normalised). PIL computes
// these in double (Resample.c, precompute_coeffs); max taps: 2 ceil(2 max(in / out, 1)) + 1.
inline double pil_bicubic(double x) {
  const double a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

inline int64_t pil_window(int64_t i, int64_t in, int64_t out, double* w, int64_t& lo) {
  const double scale = double(in) / double(out);
  const double fscale = scale > 1 ? scale : 1.0;
  const double support = 2.0 * fscale;
  const double center = (double(i) + 0.5) * scale;
  int64_t xmin = int64_t(center - support + 0.5);
  if (xmin < 0) xmin = 0;
  int64_t xmax = int64_t(center + support + 0.5);
  if (xmax > in) xmax = in;
  const int64_t count = xmax - xmin;
  double total = 0;
  for (int64_t t = 0; t < count; ++t)
    total += w[t] = pil_bicubic((double(t + xmin) - center + 0.5) / fscale);
  for (int64_t t = 0; t < count; ++t) w[t] = total != 0 ? w[t] / total : 0.0;
  lo = xmin;
  return count;
}

inline int64_t pil_max_taps(int64_t in, int64_t out) {
  const double scale = double(in) / double(out);
  return 2 * int64_t(std::ceil(2.0 * (scale > 1 ? scale : 1.0))) + 3;
}

// x (N, H, W, C) -> y (N, P, Q, C): columns (W -> Q) into a float intermediate, then rows.
template <class T>
void resize_bicubic_aa_forward_cpu(const T* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                   int64_t P, int64_t Q, T* y) {
  std::vector<T> tmp(size_t(n * h * Q * c));
  std::vector<double> wt(size_t(std::max(pil_max_taps(w, Q), pil_max_taps(h, P))));
  for (int64_t j = 0; j < Q; ++j) {
    int64_t lo;
    const int64_t cnt = pil_window(j, w, Q, wt.data(), lo);
    for (int64_t b = 0; b < n * h; ++b)
      for (int64_t ch = 0; ch < c; ++ch) {
        double s = 0;
        for (int64_t t = 0; t < cnt; ++t) s += wt[size_t(t)] * double(x[(b * w + lo + t) * c + ch]);
        tmp[size_t((b * Q + j) * c + ch)] = T(s);
      }
  }
  for (int64_t i = 0; i < P; ++i) {
    int64_t lo;
    const int64_t cnt = pil_window(i, h, P, wt.data(), lo);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = 0; j < Q; ++j)
        for (int64_t ch = 0; ch < c; ++ch) {
          double s = 0;
          for (int64_t t = 0; t < cnt; ++t)
            s += wt[size_t(t)] * double(tmp[size_t(((b * h + lo + t) * Q + j) * c + ch)]);
          y[((b * P + i) * Q + j) * c + ch] = T(s);
        }
  }
}

// The adjoint: dy (N, P, Q, C) -> dx (N, H, W, C), rows first, then columns.
template <class T>
void resize_bicubic_aa_backward_cpu(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                    int64_t P, int64_t Q, T* dx) {
  std::vector<double> tmp(size_t(n * h * Q * c), 0.0), acc(size_t(n * h * w * c), 0.0);
  std::vector<double> wt(size_t(std::max(pil_max_taps(w, Q), pil_max_taps(h, P))));
  for (int64_t i = 0; i < P; ++i) {
    int64_t lo;
    const int64_t cnt = pil_window(i, h, P, wt.data(), lo);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = 0; j < Q; ++j)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int64_t t = 0; t < cnt; ++t)
            tmp[size_t(((b * h + lo + t) * Q + j) * c + ch)] +=
                wt[size_t(t)] * double(dy[((b * P + i) * Q + j) * c + ch]);
  }
  for (int64_t j = 0; j < Q; ++j) {
    int64_t lo;
    const int64_t cnt = pil_window(j, w, Q, wt.data(), lo);
    for (int64_t b = 0; b < n * h; ++b)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t t = 0; t < cnt; ++t)
          acc[size_t((b * w + lo + t) * c + ch)] +=
              wt[size_t(t)] * tmp[size_t((b * Q + j) * c + ch)];
  }
  for (size_t e = 0; e < acc.size(); ++e) dx[e] = T(acc[e]);
}

// x (n, h, w, c) -> y (n, s h, s w, c).
template <class T>
void upsample_nearest_forward_cpu(const T* x, int64_t n, int64_t h, int64_t w, int64_t c, int s,
                                  T* y) {
  const int64_t P = h * s, Q = w * s;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < Q; ++j)
        for (int64_t ch = 0; ch < c; ++ch)
          y[((b * P + i) * Q + j) * c + ch] = x[((b * h + i / s) * w + j / s) * c + ch];
}
// dy (n, s h, s w, c) -> dx (n, h, w, c).
template <class T>
void upsample_nearest_backward_cpu(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c, int s,
                                   T* dx) {
  const int64_t P = h * s, Q = w * s;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j)
        for (int64_t ch = 0; ch < c; ++ch) {
          double acc = 0;
          for (int a = 0; a < s; ++a)
            for (int e = 0; e < s; ++e)
              acc += double(dy[((b * P + i * s + a) * Q + j * s + e) * c + ch]);
          dx[((b * h + i) * w + j) * c + ch] = T(acc);
        }
}

void max_pool2d_forward_cuda(const Pool2dGeom& g, const float* x, float* y, cudaStream_t stream);
void max_pool2d_backward_cuda(const Pool2dGeom& g, const float* x, const float* dy, float* dx,
                              cudaStream_t stream);
void avg_pool2d_forward_cuda(const Pool2dGeom& g, const float* x, float* y, cudaStream_t stream);
void avg_pool2d_backward_cuda(const Pool2dGeom& g, const float* dy, float* dx, cudaStream_t stream);
void adaptive_avg_pool2d_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                      int64_t P, int64_t Q, float* y, cudaStream_t stream);
void adaptive_avg_pool2d_backward_cuda(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                       int64_t P, int64_t Q, float* dx, cudaStream_t stream);
void resize_bilinear_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                  int64_t P, int64_t Q, float* y, cudaStream_t stream,
                                  bool half_pixel = true);
void resize_bilinear_backward_cuda(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                   int64_t P, int64_t Q, float* dx, cudaStream_t stream,
                                   bool half_pixel = true);
// tmp: n h Q c floats of scratch (the intermediate of the two passes).
void resize_bicubic_aa_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                    int64_t P, int64_t Q, float* tmp, float* y,
                                    cudaStream_t stream);
void resize_bicubic_aa_backward_cuda(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                     int64_t P, int64_t Q, float* tmp, float* dx,
                                     cudaStream_t stream);
// float32 and bf16 (uint16_t bit patterns).
void upsample_nearest_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                   int s, float* y, cudaStream_t stream);
void upsample_nearest_forward_cuda(const uint16_t* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                   int s, uint16_t* y, cudaStream_t stream);
void upsample_nearest_backward_cuda(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                    int s, float* dx, cudaStream_t stream);
void upsample_nearest_backward_cuda(const uint16_t* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                    int s, uint16_t* dx, cudaStream_t stream);

}  // namespace gan::kernels
