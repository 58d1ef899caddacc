// cuDNN for the interpreter: the convolution calls the engine makes (NHWC float32, or bf16 with
// float32 accumulation: PSEUDO_BFLOAT16), computed by the CPU references of kernels/conv.h on the
// handle's stream (bf16 operands widened exactly, the result rounded to nearest even). Like cuDNN,
// each direction needs a workspace (here: room for its result, which is computed there first and
// then blended with alpha and beta), so a workspace that moved or was freed under a captured graph
// faults.
#include <cudnn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/bf16.h"
#include "kernels/conv.h"
#include "kernels/interpreter/runtime_internal.h"
#include "kernels/interpreter/simt.h"

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

struct cudnnContext {
  cudaStream_t stream = nullptr;
};
struct cudnnTensorStruct {
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
};
struct cudnnFilterStruct {
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int k = 0, c = 0, r = 0, s = 0;
};
struct cudnnConvolutionStruct {
  int pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

namespace {

using gan::kernels::ConvGeom;

// NHWC, or NCHW (computed by converting to NHWC and back), the same for x, w and y.
bool supported(const cudnnTensorStruct* x, const cudnnFilterStruct* w,
               const cudnnConvolutionStruct* c) {
  return (x->format == CUDNN_TENSOR_NHWC || x->format == CUDNN_TENSOR_NCHW) &&
         w->format == x->format &&
         (x->type == CUDNN_DATA_FLOAT || x->type == CUDNN_DATA_BFLOAT16) && w->type == x->type &&
         c->mode == CUDNN_CROSS_CORRELATION && x->c == w->c;
}

ConvGeom geom(const cudnnTensorStruct* x, const cudnnFilterStruct* w,
              const cudnnConvolutionStruct* c) {
  ConvGeom g;
  g.n = x->n;
  g.h = x->h;
  g.w = x->w;
  g.c = x->c;
  g.k = w->k;
  g.r = w->r;
  g.s = w->s;
  g.stride_h = c->stride_h;
  g.stride_w = c->stride_w;
  g.pad_h = c->pad_h;
  g.pad_w = c->pad_w;
  g.dil_h = c->dil_h;
  g.dil_w = c->dil_w;
  g.p = (g.h + 2 * g.pad_h - g.dil_h * (g.r - 1) - 1) / g.stride_h + 1;
  g.q = (g.w + 2 * g.pad_w - g.dil_w * (g.s - 1) - 1) / g.stride_w + 1;
  return g;
}

bool same_y(const ConvGeom& g, const cudnnTensorStruct* y, const cudnnTensorStruct* x) {
  return y->format == x->format && y->type == x->type && y->n == g.n && y->c == g.k &&
         y->h == g.p && y->w == g.q;
}

int64_t offset(const cudnnTensorStruct* d, int64_t n, int64_t c, int64_t h, int64_t w) {
  return d->format == CUDNN_TENSOR_NCHW ? ((n * d->c + c) * d->h + h) * d->w + w
                                        : ((n * d->h + h) * d->w + w) * d->c + c;
}

// A block (n, c, h, w) from NCHW to NHWC (to_nhwc) or back; filters are (k, c, r, s) blocks.
std::vector<float> to_nhwc(const float* in, int64_t n, int64_t c, int64_t h, int64_t w) {
  std::vector<float> out(size_t(n * c * h * w));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          out[size_t(((i * h + y) * w + x) * c + ch)] = in[((i * c + ch) * h + y) * w + x];
  return out;
}
void to_nchw(const float* in, float* out, int64_t n, int64_t c, int64_t h, int64_t w) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          out[((i * c + ch) * h + y) * w + x] = in[((i * h + y) * w + x) * c + ch];
}

// n values at p, float32 or bf16 (widened exactly), as float32.
std::vector<float> load(const void* p, int64_t n, bool bf16) {
  std::vector<float> v(static_cast<size_t>(n));
  if (bf16)
    gan::kernels::bf16_to_f32_cpu(static_cast<const uint16_t*>(p), v.data(), n);
  else if (n)
    std::memcpy(v.data(), p, size_t(n) * sizeof(float));
  return v;
}

// out = alpha * r + beta * out (beta == 0 does not read out); a bf16 out is rounded to nearest
// even.
void blend(void* out, const float* r, int64_t n, float alpha, float beta, bool bf16) {
  auto* f = static_cast<float*>(out);
  auto* h = static_cast<uint16_t*>(out);
  for (int64_t i = 0; i < n; ++i) {
    const double old = beta == 0.f ? 0.0 : bf16 ? gan::kernels::bf16_to_f32(h[i]) : f[i];
    const float v = float(double(alpha) * r[i] + double(beta) * old);
    if (bf16)
      h[i] = gan::kernels::f32_to_bf16(v);
    else
      f[i] = v;
  }
}

// How many algorithms the heuristics list per direction: 1, or $GAN_INTERP_CUDNN_ALGOS (up to
// 3) to exercise timed selection; they compute the same (the CPU reference). The first is
// deterministic FMA; the second is listed as a tensor-op (TF32) one, whatever the descriptor's
// math, which strict float32 must skip; the third is FMA and listed as non-deterministic, as
// cuDNN's atomics-based algorithms are.
int listed_algorithms() {
  const char* e = std::getenv("GAN_INTERP_CUDNN_ALGOS");
  if (!e || !*e) return 1;
  const int n = std::atoi(e);
  return n < 1 ? 1 : n > 3 ? 3 : n;
}

// NCHW algorithms are listed only with $GAN_INTERP_CUDNN_NCHW=1 (else none: the engine then times
// no NCHW candidate, which keeps the interpreter's runs short).
bool nchw_listed() {
  const char* e = std::getenv("GAN_INTERP_CUDNN_NCHW");
  return e && *e == '1';
}

template <class Perf, class Algo>
void results(Perf* perf, int* returned, int capacity, const Algo (&algos)[3], size_t bytes) {
  const int n = std::min(listed_algorithms(), capacity);
  *returned = n;
  const cudnnMathType_t fma = CUDNN_FMA_MATH;
  for (int i = 0; i < n; ++i) {
    perf[i] = Perf{};
    perf[i].algo = algos[i];
    perf[i].status = CUDNN_STATUS_SUCCESS;
    perf[i].memory = bytes;
    perf[i].determinism = i == 2 ? CUDNN_NON_DETERMINISTIC : CUDNN_DETERMINISTIC;
    perf[i].mathType = i == 1 ? CUDNN_TENSOR_OP_MATH : fma;
  }
}

}  // namespace

extern "C" {

const char* cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
    case CUDNN_STATUS_SUCCESS:
      return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM:
      return "CUDNN_STATUS_BAD_PARAM (interpreter)";
    case CUDNN_STATUS_NOT_SUPPORTED:
      return "CUDNN_STATUS_NOT_SUPPORTED (interpreter: float32 or bf16 cross-correlation only)";
    default:
      return "CUDNN_STATUS_EXECUTION_FAILED (interpreter)";
  }
}

cudnnStatus_t cudnnCreate(cudnnHandle_t* h) {
  *h = new cudnnContext;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
  delete h;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetStream(cudnnHandle_t h, cudaStream_t* s) {
  *s = h->stream;
  return CUDNN_STATUS_SUCCESS;
}
size_t cudnnGetVersion() { return 90000; }  // the interpreter models cuDNN 9's API

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* d) {
  *d = new cudnnTensorStruct;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f,
                                         cudnnDataType_t t, int n, int c, int h, int w) {
  if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
  *d = cudnnTensorStruct{f, t, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* d) {
  *d = new cudnnFilterStruct;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t,
                                         cudnnTensorFormat_t f, int k, int c, int h, int w) {
  if (k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
  *d = cudnnFilterStruct{f, t, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* d) {
  *d = new cudnnConvolutionStruct;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw,
                                              int sh, int sw, int dh, int dw,
                                              cudnnConvolutionMode_t mode, cudnnDataType_t) {
  if (ph < 0 || pw < 0 || sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0) return CUDNN_STATUS_BAD_PARAM;
  d->pad_h = ph;
  d->pad_w = pw;
  d->stride_h = sh;
  d->stride_w = sw;
  d->dil_h = dh;
  d->dil_w = dw;
  d->mode = mode;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
  d->math = m;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionNdForwardOutputDim(const cudnnConvolutionDescriptor_t c,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int nb,
                                                    int out[]) {
  if (nb != 4) return CUDNN_STATUS_BAD_PARAM;
  const ConvGeom g = geom(x, w, c);
  out[0] = int(g.n);
  out[1] = int(g.k);
  out[2] = int(g.p);
  out[3] = int(g.q);
  return CUDNN_STATUS_SUCCESS;
}

// Algorithms (listed_algorithms()); the workspace holds the result.
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t c,
                                                     const cudnnTensorDescriptor_t, const int cap,
                                                     int* n, cudnnConvolutionFwdAlgoPerf_t* perf) {
  if (!supported(x, w, c)) return CUDNN_STATUS_NOT_SUPPORTED;
  if (x->format == CUDNN_TENSOR_NCHW && !nchw_listed()) {
    *n = 0;
    return CUDNN_STATUS_SUCCESS;
  }
  const cudnnConvolutionFwdAlgo_t algos[3] = {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                              CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                                              CUDNN_CONVOLUTION_FWD_ALGO_GEMM};
  results(perf, n, cap, algos, size_t(geom(x, w, c).y_numel()) * 4);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t,
    const cudnnConvolutionDescriptor_t c, const cudnnTensorDescriptor_t x, const int cap, int* n,
    cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  if (!supported(x, w, c)) return CUDNN_STATUS_NOT_SUPPORTED;
  if (x->format == CUDNN_TENSOR_NCHW && !nchw_listed()) {
    *n = 0;
    return CUDNN_STATUS_SUCCESS;
  }
  const cudnnConvolutionBwdDataAlgo_t algos[3] = {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_0};
  results(perf, n, cap, algos, size_t(geom(x, w, c).x_numel()) * 4);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t,
    const cudnnConvolutionDescriptor_t c, const cudnnFilterDescriptor_t w, const int cap, int* n,
    cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  if (!supported(x, w, c)) return CUDNN_STATUS_NOT_SUPPORTED;
  if (x->format == CUDNN_TENSOR_NCHW && !nchw_listed()) {
    *n = 0;
    return CUDNN_STATUS_SUCCESS;
  }
  const cudnnConvolutionBwdFilterAlgo_t algos[3] = {
      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0};
  results(perf, n, cap, algos, size_t(geom(x, w, c).w_numel()) * 4);
  // GAN_INTERP_CUDNN_NONDETERMINISTIC_FILTER=1 models geometries for which cuDNN offers only
  // non-deterministic backward-filter algorithms (it happens with odd channel counts in NHWC).
  if (const char* e = std::getenv("GAN_INTERP_CUDNN_NONDETERMINISTIC_FILTER"); e && *e == '1') {
    for (int i = 0; i < *n; ++i) perf[i].determinism = CUDNN_NON_DETERMINISTIC;
    perf[0].algo = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0;
  }
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t,
                                                      const cudnnTensorDescriptor_t x,
                                                      const cudnnFilterDescriptor_t w,
                                                      const cudnnConvolutionDescriptor_t c,
                                                      const cudnnTensorDescriptor_t,
                                                      cudnnConvolutionFwdAlgo_t, size_t* bytes) {
  *bytes = size_t(geom(x, w, c).y_numel()) * 4;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t,
    const cudnnConvolutionDescriptor_t c, const cudnnTensorDescriptor_t x,
    cudnnConvolutionBwdDataAlgo_t, size_t* bytes) {
  *bytes = size_t(geom(x, w, c).x_numel()) * 4;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t,
    const cudnnConvolutionDescriptor_t c, const cudnnFilterDescriptor_t w,
    cudnnConvolutionBwdFilterAlgo_t, size_t* bytes) {
  *bytes = size_t(geom(x, w, c).w_numel()) * 4;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void* alpha,
                                      const cudnnTensorDescriptor_t xd, const void* x,
                                      const cudnnFilterDescriptor_t wd, const void* w,
                                      const cudnnConvolutionDescriptor_t cd,
                                      cudnnConvolutionFwdAlgo_t, void* ws, size_t ws_bytes,
                                      const void* beta, const cudnnTensorDescriptor_t yd, void* y) {
  if (!supported(xd, wd, cd)) return CUDNN_STATUS_NOT_SUPPORTED;
  const ConvGeom g = geom(xd, wd, cd);
  if (!same_y(g, yd, xd) || !ws || ws_bytes < size_t(g.y_numel()) * 4)
    return CUDNN_STATUS_BAD_PARAM;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  auto* r = static_cast<float*>(ws);
  const bool nchw = xd->format == CUDNN_TENSOR_NCHW, bf16 = xd->type == CUDNN_DATA_BFLOAT16;
  const cudaError_t e =
      gan::interp::enqueue(h->stream, "cudnnConvolutionForward (CPU reference)", [=] {
        const auto xv = load(x, g.x_numel(), bf16), wv = load(w, g.w_numel(), bf16);
        const float *xp = xv.data(), *wp = wv.data();
        if (nchw) {
          const auto xh = to_nhwc(xp, g.n, g.c, g.h, g.w), wh = to_nhwc(wp, g.k, g.c, g.r, g.s);
          std::vector<float> rh(size_t(g.y_numel()));
          gan::kernels::conv_forward_cpu(g, xh.data(), wh.data(), rh.data());
          to_nchw(rh.data(), r, g.n, g.k, g.p, g.q);
        } else {
          gan::kernels::conv_forward_cpu(g, xp, wp, r);
        }
        blend(y, r, g.y_numel(), al, be, bf16);
      });
  return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void* alpha,
                                           const cudnnFilterDescriptor_t wd, const void* w,
                                           const cudnnTensorDescriptor_t yd, const void* dy,
                                           const cudnnConvolutionDescriptor_t cd,
                                           cudnnConvolutionBwdDataAlgo_t, void* ws, size_t ws_bytes,
                                           const void* beta, const cudnnTensorDescriptor_t xd,
                                           void* dx) {
  if (!supported(xd, wd, cd)) return CUDNN_STATUS_NOT_SUPPORTED;
  const ConvGeom g = geom(xd, wd, cd);
  if (!same_y(g, yd, xd) || !ws || ws_bytes < size_t(g.x_numel()) * 4)
    return CUDNN_STATUS_BAD_PARAM;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  auto* r = static_cast<float*>(ws);
  const bool nchw = xd->format == CUDNN_TENSOR_NCHW, bf16 = xd->type == CUDNN_DATA_BFLOAT16;
  const cudaError_t e =
      gan::interp::enqueue(h->stream, "cudnnConvolutionBackwardData (CPU reference)", [=] {
        const auto dyv = load(dy, g.y_numel(), bf16), wv = load(w, g.w_numel(), bf16);
        const float *dyp = dyv.data(), *wp = wv.data();
        if (nchw) {
          const auto dyh = to_nhwc(dyp, g.n, g.k, g.p, g.q), wh = to_nhwc(wp, g.k, g.c, g.r, g.s);
          std::vector<float> rh(size_t(g.x_numel()));
          gan::kernels::conv_backward_data_cpu(g, dyh.data(), wh.data(), rh.data());
          to_nchw(rh.data(), r, g.n, g.c, g.h, g.w);
        } else {
          gan::kernels::conv_backward_data_cpu(g, dyp, wp, r);
        }
        blend(dx, r, g.x_numel(), al, be, bf16);
      });
  return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void* alpha,
                                             const cudnnTensorDescriptor_t xd, const void* x,
                                             const cudnnTensorDescriptor_t yd, const void* dy,
                                             const cudnnConvolutionDescriptor_t cd,
                                             cudnnConvolutionBwdFilterAlgo_t, void* ws,
                                             size_t ws_bytes, const void* beta,
                                             const cudnnFilterDescriptor_t wd, void* dw) {
  if (!supported(xd, wd, cd)) return CUDNN_STATUS_NOT_SUPPORTED;
  const ConvGeom g = geom(xd, wd, cd);
  if (!same_y(g, yd, xd) || !ws || ws_bytes < size_t(g.w_numel()) * 4)
    return CUDNN_STATUS_BAD_PARAM;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  auto* r = static_cast<float*>(ws);
  const bool nchw = xd->format == CUDNN_TENSOR_NCHW, bf16 = xd->type == CUDNN_DATA_BFLOAT16;
  const cudaError_t e =
      gan::interp::enqueue(h->stream, "cudnnConvolutionBackwardFilter (CPU reference)", [=] {
        const auto xv = load(x, g.x_numel(), bf16), dyv = load(dy, g.y_numel(), bf16);
        const float *xp = xv.data(), *dyp = dyv.data();
        if (nchw) {
          const auto xh = to_nhwc(xp, g.n, g.c, g.h, g.w), dyh = to_nhwc(dyp, g.n, g.k, g.p, g.q);
          std::vector<float> rh(size_t(g.w_numel()));
          gan::kernels::conv_backward_filter_cpu(g, xh.data(), dyh.data(), rh.data(), false);
          to_nchw(rh.data(), r, g.k, g.c, g.r, g.s);
        } else {
          gan::kernels::conv_backward_filter_cpu(g, xp, dyp, r, false);
        }
        blend(dw, r, g.w_numel(), al, be, bf16);
      });
  return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

// y = alpha x + beta y between two 4-d float tensors of the same dimensions, any layouts.
cudnnStatus_t cudnnTransformTensor(cudnnHandle_t h, const void* alpha,
                                   const cudnnTensorDescriptor_t xd, const void* x,
                                   const void* beta, const cudnnTensorDescriptor_t yd, void* y) {
  if (xd->type != CUDNN_DATA_FLOAT || yd->type != CUDNN_DATA_FLOAT || xd->n != yd->n ||
      xd->c != yd->c || xd->h != yd->h || xd->w != yd->w)
    return CUDNN_STATUS_BAD_PARAM;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const auto* xp = static_cast<const float*>(x);
  auto* yp = static_cast<float*>(y);
  const cudnnTensorStruct xs = *xd, ys = *yd;
  const cudaError_t e = gan::interp::enqueue(h->stream, "cudnnTransformTensor (CPU)", [=] {
    for (int64_t n = 0; n < xs.n; ++n)
      for (int64_t c = 0; c < xs.c; ++c)
        for (int64_t i = 0; i < xs.h; ++i)
          for (int64_t j = 0; j < xs.w; ++j) {
            float& out = yp[offset(&ys, n, c, i, j)];
            const double v = double(al) * xp[offset(&xs, n, c, i, j)];
            out = float(be == 0.f ? v : v + double(be) * out);
          }
  });
  return e == cudaSuccess ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_EXECUTION_FAILED;
}

}  // extern "C"
