#include "kernels/bf16.h"
#include "kernels/pool2d.h"
#include "kernels/runtime.h"

namespace gan::kernels {

namespace {

constexpr int kThreads = 256;

struct Dims {
  int64_t n, h, w, c;
  int kh, kw, sh, sw, ph, pw;
  bool include_pad;
  int64_t P, Q;
};

Dims dims_of(const Pool2dGeom& g) {
  return {g.n,       g.h,      g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.count_include_pad,
          g.out_h(), g.out_w()};
}

// Index (element e of an NHWC tensor with spatial size H x W) -> (b, y, x, ch).
__device__ __forceinline__ void split(int64_t e, int64_t H, int64_t W, int64_t C, int64_t& b,
                                      int64_t& y, int64_t& x, int64_t& ch) {
  ch = e % C;
  x = (e / C) % W;
  y = (e / (C * W)) % H;
  b = e / (C * W * H);
}

// The first maximum of window (i, j) (row-major; NaN wins): its flat input index, or -1.
__device__ int64_t window_argmax(const Dims& d, const float* __restrict__ x, int64_t b, int64_t i,
                                 int64_t j, int64_t ch, float* best_out) {
  const int64_t h0 = i * d.sh - d.ph, w0 = j * d.sw - d.pw;
  float best = -INFINITY;
  int64_t at = -1;
  const int64_t y1 = min(h0 + d.kh, d.h), x1 = min(w0 + d.kw, d.w);
  for (int64_t yy = max(h0, int64_t(0)); yy < y1; ++yy)
    for (int64_t xx = max(w0, int64_t(0)); xx < x1; ++xx) {
      const int64_t e = ((b * d.h + yy) * d.w + xx) * d.c + ch;
      const float v = x[e];
      if (at >= 0 && isnan(best)) continue;
      if (at < 0 || isnan(v) || v > best) best = v, at = e;
    }
  if (best_out) *best_out = at >= 0 ? best : -INFINITY;
  return at;
}

__device__ __forceinline__ int64_t divisor(const Dims& d, int64_t i, int64_t j) {
  const int64_t h0 = i * d.sh - d.ph, w0 = j * d.sw - d.pw;
  if (d.include_pad) return (min(h0 + d.kh, d.h + d.ph) - h0) * (min(w0 + d.kw, d.w + d.pw) - w0);
  return (min(h0 + d.kh, d.h) - max(h0, int64_t(0))) * (min(w0 + d.kw, d.w) - max(w0, int64_t(0)));
}

// Outputs i whose window [i s - p, i s - p + k) holds input row y: [lo, hi] within [0, out).
__device__ __forceinline__ void covering(int64_t y, int k, int s, int p, int64_t out, int64_t& lo,
                                         int64_t& hi) {
  const int64_t t = y + p - k + 1;  // i s >= t
  lo = t <= 0 ? 0 : (t + s - 1) / s;
  hi = min((y + p) / s, out - 1);
}

template <bool kMax>
__global__ void pool_forward_kernel(Dims d, const float* __restrict__ x, float* __restrict__ y) {
  const int64_t total = d.n * d.P * d.Q * d.c;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, i, j, ch;
    split(e, d.P, d.Q, d.c, b, i, j, ch);
    if constexpr (kMax) {
      float best;
      window_argmax(d, x, b, i, j, ch, &best);
      y[e] = best;
    } else {
      const int64_t h0 = i * d.sh - d.ph, w0 = j * d.sw - d.pw;
      float s = 0.f;
      for (int64_t yy = max(h0, int64_t(0)); yy < min(h0 + d.kh, d.h); ++yy)
        for (int64_t xx = max(w0, int64_t(0)); xx < min(w0 + d.kw, d.w); ++xx)
          s += x[((b * d.h + yy) * d.w + xx) * d.c + ch];
      y[e] = s / float(divisor(d, i, j));
    }
  }
}

// One thread per input element: the sum over the windows that contain it.
template <bool kMax>
__global__ void pool_backward_kernel(Dims d, const float* __restrict__ x,
                                     const float* __restrict__ dy, float* __restrict__ dx) {
  const int64_t total = d.n * d.h * d.w * d.c;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, yy, xx, ch;
    split(e, d.h, d.w, d.c, b, yy, xx, ch);
    int64_t i0, i1, j0, j1;
    covering(yy, d.kh, d.sh, d.ph, d.P, i0, i1);
    covering(xx, d.kw, d.sw, d.pw, d.Q, j0, j1);
    float g = 0.f;
    for (int64_t i = i0; i <= i1; ++i)
      for (int64_t j = j0; j <= j1; ++j) {
        const float v = dy[((b * d.P + i) * d.Q + j) * d.c + ch];
        if constexpr (kMax) {
          if (window_argmax(d, x, b, i, j, ch, nullptr) == e) g += v;
        } else {
          g += v / float(divisor(d, i, j));
        }
      }
    dx[e] = g;
  }
}

__device__ __forceinline__ int64_t astart(int64_t i, int64_t in, int64_t out) {
  return (i * in) / out;
}
__device__ __forceinline__ int64_t aend(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

__global__ void adaptive_forward_kernel(const float* __restrict__ x, int64_t n, int64_t h,
                                        int64_t w, int64_t c, int64_t P, int64_t Q,
                                        float* __restrict__ y) {
  const int64_t total = n * P * Q * c;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, i, j, ch;
    split(e, P, Q, c, b, i, j, ch);
    const int64_t y0 = astart(i, h, P), y1 = aend(i, h, P), x0 = astart(j, w, Q),
                  x1 = aend(j, w, Q);
    float s = 0.f;
    for (int64_t yy = y0; yy < y1; ++yy)
      for (int64_t xx = x0; xx < x1; ++xx) s += x[((b * h + yy) * w + xx) * c + ch];
    y[e] = s / float((y1 - y0) * (x1 - x0));
  }
}

__global__ void adaptive_backward_kernel(const float* __restrict__ dy, int64_t n, int64_t h,
                                         int64_t w, int64_t c, int64_t P, int64_t Q,
                                         float* __restrict__ dx) {
  const int64_t total = n * h * w * c;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, yy, xx, ch;
    split(e, h, w, c, b, yy, xx, ch);
    float g = 0.f;
    // Windows holding row yy: i from yy P / h - 1 on (windows overlap by at most one row).
    for (int64_t i = max(int64_t(0), yy * P / h - 1); i < P && astart(i, h, P) <= yy; ++i) {
      if (aend(i, h, P) <= yy) continue;
      for (int64_t j = max(int64_t(0), xx * Q / w - 1); j < Q && astart(j, w, Q) <= xx; ++j) {
        if (aend(j, w, Q) <= xx) continue;
        g += dy[((b * P + i) * Q + j) * c + ch] /
             float((aend(i, h, P) - astart(i, h, P)) * (aend(j, w, Q) - astart(j, w, Q)));
      }
    }
    dx[e] = g;
  }
}

__device__ __forceinline__ void source(int64_t i, int64_t in, float scale, int64_t& lo, int64_t& hi,
                                       float& frac, bool half_pixel) {
  const float s = half_pixel ? fmaxf(scale * (float(i) + 0.5f) - 0.5f, 0.f) : scale * float(i);
  lo = min(int64_t(s), in - 1);
  hi = min(lo + 1, in - 1);
  frac = s - float(lo);
}

__global__ void bilinear_forward_kernel(const float* __restrict__ x, int64_t n, int64_t h,
                                        int64_t w, int64_t c, int64_t P, int64_t Q, float sy,
                                        float sx, bool half_pixel, float* __restrict__ y) {
  const int64_t total = n * P * Q * c;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, i, j, ch, y0, y1, x0, x1;
    split(e, P, Q, c, b, i, j, ch);
    float fy, fx;
    source(i, h, sy, y0, y1, fy, half_pixel);
    source(j, w, sx, x0, x1, fx, half_pixel);
    const float* xb = x + b * h * w * c + ch;
    const float top = (1.f - fx) * xb[(y0 * w + x0) * c] + fx * xb[(y0 * w + x1) * c];
    const float bot = (1.f - fx) * xb[(y1 * w + x0) * c] + fx * xb[(y1 * w + x1) * c];
    y[e] = (1.f - fy) * top + fy * bot;
  }
}

// Output rows whose lo or hi is `yy`: a small range around yy out / in, checked exactly.
__device__ __forceinline__ float bilinear_weight(int64_t yy, int64_t i, int64_t in, float scale,
                                                 bool half_pixel) {
  int64_t lo, hi;
  float f;
  source(i, in, scale, lo, hi, f, half_pixel);
  return (lo == yy ? 1.f - f : 0.f) + (hi == yy ? f : 0.f);
}

__global__ void bilinear_backward_kernel(const float* __restrict__ dy, int64_t n, int64_t h,
                                         int64_t w, int64_t c, int64_t P, int64_t Q, float sy,
                                         float sx, bool half_pixel, float* __restrict__ dx) {
  const int64_t total = n * h * w * c;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, yy, xx, ch;
    split(e, h, w, c, b, yy, xx, ch);
    // Output i reads rows floor(s) and floor(s) + 1 with s = (i + 0.5) sy - 0.5: i within
    // [(yy - 1 + 0.5) / sy - 0.5 - 1, (yy + 1 + 0.5) / sy - 0.5 + 1] (and every i reading the
    // last row when yy = h - 1, which the clamp handles: the range reaches P - 1 there).
    // Without half-pixel centres, i reads floor(i sy) and the row after: i within
    // [(yy - 1) / sy, (yy + 1) / sy] (one more on each side for float rounding).
    const float hy = half_pixel ? 0.5f : 0.f, hx = hy;
    const int64_t i0 = max(int64_t(0), int64_t(floorf((float(yy) - 1.f + hy) / sy - hy)) - 1);
    const int64_t i1 =
        yy == h - 1 ? P - 1 : min(P - 1, int64_t(ceilf((float(yy) + 1.f + hy) / sy)) + 1);
    const int64_t j0 = max(int64_t(0), int64_t(floorf((float(xx) - 1.f + hx) / sx - hx)) - 1);
    const int64_t j1 =
        xx == w - 1 ? Q - 1 : min(Q - 1, int64_t(ceilf((float(xx) + 1.f + hx) / sx)) + 1);
    float g = 0.f;
    for (int64_t i = i0; i <= i1; ++i) {
      const float wy = bilinear_weight(yy, i, h, sy, half_pixel);
      if (wy == 0.f) continue;
      for (int64_t j = j0; j <= j1; ++j) {
        const float wx = bilinear_weight(xx, j, w, sx, half_pixel);
        if (wx != 0.f) g += wy * wx * dy[((b * P + i) * Q + j) * c + ch];
      }
    }
    dx[e] = g;
  }
}

// PIL's bicubic resampling along one axis of a (outer, in, inner) view -> (outer, out, inner).
// Window parameters and weights in double, as PIL (and the CPU reference) computes them.
__device__ __forceinline__ double cubic(double x) {
  const double a = -0.5;
  x = fabs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

struct Window {
  double center, fscale;
  int64_t lo, hi;  // taps [lo, hi)
};

__device__ __forceinline__ Window window(int64_t i, int64_t in, int64_t out) {
  const double scale = double(in) / double(out);
  Window w;
  w.fscale = scale > 1 ? scale : 1.0;
  const double support = 2.0 * w.fscale;
  w.center = (double(i) + 0.5) * scale;
  w.lo = max(int64_t(w.center - support + 0.5), int64_t(0));
  w.hi = min(int64_t(w.center + support + 0.5), in);
  return w;
}

__device__ __forceinline__ double tap(const Window& w, int64_t x) {
  return cubic((double(x) - w.center + 0.5) / w.fscale);
}

__global__ void bicubic_axis_kernel(const float* __restrict__ x, int64_t outer, int64_t in,
                                    int64_t out, int64_t inner, float* __restrict__ y) {
  const int64_t total = outer * out * inner;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = e % inner, i = (e / inner) % out, o = e / (inner * out);
    const Window w = window(i, in, out);
    double s = 0, norm = 0;
    for (int64_t t = w.lo; t < w.hi; ++t) {
      const double wt = tap(w, t);
      norm += wt;
      s += wt * double(x[(o * in + t) * inner + k]);
    }
    y[e] = norm != 0 ? float(s / norm) : 0.f;
  }
}

// The adjoint along one axis: thread per input sample, over the outputs whose window holds it.
__global__ void bicubic_axis_adjoint_kernel(const float* __restrict__ dy, int64_t outer, int64_t in,
                                            int64_t out, int64_t inner, float* __restrict__ dx) {
  const int64_t total = outer * in * inner;
  const double scale = double(in) / double(out);
  const double support = 2.0 * (scale > 1 ? scale : 1.0);
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = e % inner, xi = (e / inner) % in, o = e / (inner * in);
    // Output i's window spans about center +- support, center = (i + 0.5) scale.
    const int64_t i0 = max(int64_t(0), int64_t(floor((double(xi) - support - 1) / scale - 0.5)));
    const int64_t i1 = min(out - 1, int64_t(ceil((double(xi) + support + 2) / scale - 0.5)));
    double g = 0;
    for (int64_t i = i0; i <= i1; ++i) {
      const Window w = window(i, in, out);
      if (xi < w.lo || xi >= w.hi) continue;
      double norm = 0;
      for (int64_t t = w.lo; t < w.hi; ++t) norm += tap(w, t);
      if (norm != 0) g += tap(w, xi) / norm * double(dy[(o * out + i) * inner + k]);
    }
    dx[e] = float(g);
  }
}

void check_geom(const Pool2dGeom& g, const char* who) {
  GAN_CHECK(g.n >= 0 && g.h > 0 && g.w > 0 && g.c > 0 && g.kh > 0 && g.kw > 0 && g.sh > 0 &&
                g.sw > 0 && g.ph >= 0 && g.pw >= 0 && g.out_h() > 0 && g.out_w() > 0,
            std::string(who) + ": bad geometry");
}

void check_sizes(int64_t h, int64_t w, int64_t P, int64_t Q, const char* who) {
  GAN_CHECK(h > 0 && w > 0 && P > 0 && Q > 0, std::string(who) + ": bad size");
}

// Every kernel here is a grid-stride loop over `total` elements.
// Nearest upsampling: one thread per output element, a copy (float32 or bf16 bits alike).
template <class T>
__global__ void upsample_nearest_forward_kernel(const T* __restrict__ x, int64_t h, int64_t w,
                                                int64_t c, int s, int64_t total,
                                                T* __restrict__ y) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, i, j, ch;
    split(e, h * s, w * s, c, b, i, j, ch);
    y[e] = x[((b * h + i / s) * w + j / s) * c + ch];
  }
}

__device__ __forceinline__ float up_ld(float v) { return v; }
__device__ __forceinline__ float up_ld(uint16_t v) { return bf16_to_f32(v); }
__device__ __forceinline__ void up_st(float& d, float v) { d = v; }
__device__ __forceinline__ void up_st(uint16_t& d, float v) { d = f32_to_bf16(v); }

// Its adjoint: one thread per input element, the s x s window summed in row-major order.
template <class T>
__global__ void upsample_nearest_backward_kernel(const T* __restrict__ dy, int64_t h, int64_t w,
                                                 int64_t c, int s, int64_t total,
                                                 T* __restrict__ dx) {
  const int64_t Q = w * s;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, i, j, ch;
    split(e, h, w, c, b, i, j, ch);
    const T* p = dy + ((b * h * s + i * s) * Q + j * s) * c + ch;
    float acc = 0.f;
    for (int a = 0; a < s; ++a)
      for (int k = 0; k < s; ++k) acc += up_ld(p[(a * Q + k) * c]);
    up_st(dx[e], acc);
  }
}

template <class Kernel, class... Args>
void run(Kernel kernel, int64_t total, cudaStream_t stream, Args... args) {
  if (total == 0) return;
  launch(kernel, grid_blocks(total, kThreads), kThreads, 0, stream, args...);
  GAN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void max_pool2d_forward_cuda(const Pool2dGeom& g, const float* x, float* y, cudaStream_t stream) {
  GAN_NVTX("max_pool2d");
  check_geom(g, "max_pool2d_forward_cuda");
  const Dims d = dims_of(g);
  run(pool_forward_kernel<true>, d.n * d.P * d.Q * d.c, stream, d, x, y);
}

void max_pool2d_backward_cuda(const Pool2dGeom& g, const float* x, const float* dy, float* dx,
                              cudaStream_t stream) {
  GAN_NVTX("max_pool2d_backward");
  check_geom(g, "max_pool2d_backward_cuda");
  const Dims d = dims_of(g);
  run(pool_backward_kernel<true>, d.n * d.h * d.w * d.c, stream, d, x, dy, dx);
}

void avg_pool2d_forward_cuda(const Pool2dGeom& g, const float* x, float* y, cudaStream_t stream) {
  GAN_NVTX("avg_pool2d");
  check_geom(g, "avg_pool2d_forward_cuda");
  const Dims d = dims_of(g);
  run(pool_forward_kernel<false>, d.n * d.P * d.Q * d.c, stream, d, x, y);
}

void avg_pool2d_backward_cuda(const Pool2dGeom& g, const float* dy, float* dx,
                              cudaStream_t stream) {
  GAN_NVTX("avg_pool2d_backward");
  check_geom(g, "avg_pool2d_backward_cuda");
  const Dims d = dims_of(g);
  run(pool_backward_kernel<false>, d.n * d.h * d.w * d.c, stream, d,
      static_cast<const float*>(nullptr), dy, dx);
}

void adaptive_avg_pool2d_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                      int64_t P, int64_t Q, float* y, cudaStream_t stream) {
  GAN_NVTX("adaptive_avg_pool2d");
  check_sizes(h, w, P, Q, "adaptive_avg_pool2d_forward_cuda");
  run(adaptive_forward_kernel, n * P * Q * c, stream, x, n, h, w, c, P, Q, y);
}

void adaptive_avg_pool2d_backward_cuda(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                       int64_t P, int64_t Q, float* dx, cudaStream_t stream) {
  GAN_NVTX("adaptive_avg_pool2d_backward");
  check_sizes(h, w, P, Q, "adaptive_avg_pool2d_backward_cuda");
  run(adaptive_backward_kernel, n * h * w * c, stream, dy, n, h, w, c, P, Q, dx);
}

void resize_bilinear_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                  int64_t P, int64_t Q, float* y, cudaStream_t stream,
                                  bool half_pixel) {
  GAN_NVTX("resize_bilinear");
  check_sizes(h, w, P, Q, "resize_bilinear_forward_cuda");
  run(bilinear_forward_kernel, n * P * Q * c, stream, x, n, h, w, c, P, Q, float(h) / float(P),
      float(w) / float(Q), half_pixel, y);
}

void resize_bilinear_backward_cuda(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                   int64_t P, int64_t Q, float* dx, cudaStream_t stream,
                                   bool half_pixel) {
  GAN_NVTX("resize_bilinear_backward");
  check_sizes(h, w, P, Q, "resize_bilinear_backward_cuda");
  run(bilinear_backward_kernel, n * h * w * c, stream, dy, n, h, w, c, P, Q, float(h) / float(P),
      float(w) / float(Q), half_pixel, dx);
}

void resize_bicubic_aa_forward_cuda(const float* x, int64_t n, int64_t h, int64_t w, int64_t c,
                                    int64_t P, int64_t Q, float* tmp, float* y,
                                    cudaStream_t stream) {
  GAN_NVTX("resize_bicubic_aa");
  check_sizes(h, w, P, Q, "resize_bicubic_aa_forward_cuda");
  run(bicubic_axis_kernel, n * h * Q * c, stream, x, n * h, w, Q, c, tmp);  // columns
  run(bicubic_axis_kernel, n * P * Q * c, stream, static_cast<const float*>(tmp), n, h, P, Q * c,
      y);  // rows
}

void resize_bicubic_aa_backward_cuda(const float* dy, int64_t n, int64_t h, int64_t w, int64_t c,
                                     int64_t P, int64_t Q, float* tmp, float* dx,
                                     cudaStream_t stream) {
  GAN_NVTX("resize_bicubic_aa_backward");
  check_sizes(h, w, P, Q, "resize_bicubic_aa_backward_cuda");
  run(bicubic_axis_adjoint_kernel, n * h * Q * c, stream, dy, n, h, P, Q * c, tmp);  // rows
  run(bicubic_axis_adjoint_kernel, n * h * w * c, stream, static_cast<const float*>(tmp), n * h, w,
      Q, c, dx);  // columns
}

namespace {
void check_upsample(int64_t n, int64_t h, int64_t w, int64_t c, int s, const char* fn) {
  GAN_CHECK(n >= 0 && h >= 0 && w >= 0 && c >= 0 && s >= 1,
            std::string(fn) + ": negative size or a factor below 1");
}
}  // namespace

#define GAN_UPSAMPLE_PUBLIC(T)                                                                 \
  void upsample_nearest_forward_cuda(const T* x, int64_t n, int64_t h, int64_t w, int64_t c,   \
                                     int s, T* y, cudaStream_t stream) {                       \
    GAN_NVTX("upsample_nearest");                                                              \
    check_upsample(n, h, w, c, s, "upsample_nearest_forward_cuda");                            \
    const int64_t total = n * h * s * w * s * c;                                               \
    run(upsample_nearest_forward_kernel<T>, total, stream, x, h, w, c, s, total, y);           \
  }                                                                                            \
  void upsample_nearest_backward_cuda(const T* dy, int64_t n, int64_t h, int64_t w, int64_t c, \
                                      int s, T* dx, cudaStream_t stream) {                     \
    GAN_NVTX("upsample_nearest_backward");                                                     \
    check_upsample(n, h, w, c, s, "upsample_nearest_backward_cuda");                           \
    const int64_t total = n * h * w * c;                                                       \
    run(upsample_nearest_backward_kernel<T>, total, stream, dy, h, w, c, s, total, dx);        \
  }
GAN_UPSAMPLE_PUBLIC(float)
GAN_UPSAMPLE_PUBLIC(uint16_t)
#undef GAN_UPSAMPLE_PUBLIC

}  // namespace gan::kernels
