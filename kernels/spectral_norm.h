// Spectral normalisation (Miyato et al. 2018) with the semantics of PyTorch's
// torch.nn.utils.spectral_norm, for a group of weights at once.
//
// Each weight is a matrix W (rows, cols) (PyTorch's convention: output channels as rows), stored
// row-major either as W itself (transposed = false: linear (out, in), conv2d (out, kh, kw, in))
// or as W^T (transposed = true: conv_transpose2d (in, kh, kw, out), i.e. (cols, rows)). Kernels
// see the storage as A (m, n):
//   transposed = false: A = W,   m = rows, n = cols, W(i, j) = w[i * cols + j]
//   transposed = true:  A = W^T, m = cols, n = rows, W(i, j) = w[j * rows + i]
//
// Forward, training (iterations >= 1 power iterations from the stored u):
//   repeat `iterations` times:  s = W^T u;  v = s / max(|s|, eps);  t = W v;  u = t / max(|t|, eps)
//   sigma = u^T t   (computed as |t|^2 / max(|t|, eps), the same number since u = t / max(|t|,
//   eps)) W_sn = W / sigma The new u, v and sigma overwrite the persistent vectors in place (the
//   next call continues from them), and are written to `saved` = [u (rows), v (cols), sigma (1)]
//   when it is non-null: the copy this call's backward reads (a later call overwrites the
//   persistent ones).
// Forward, eval: no power iteration: t = W v with the stored v, sigma = u^T t with the stored u;
//   u and v are read only; sigma is written; saved = [u, v, sigma] when non-null.
// max(x, eps) propagates NaN on both devices: it is (x < eps ? eps : x).
//
// Backward (u, v, sigma = the saved ones, treated as constants, PyTorch's behaviour):
//   c = <G, W_sn> (sum over all elements),  dW = (G - c u v^T) / sigma,
//   in storage order: dA(p, q) = (G(p, q) - c a_p b_q) / sigma with a = u, b = v (transposed =
//   false) or a = v, b = u (transposed = true). dW is overwritten, or accumulated into (+=) when
//   `accumulate` is set (a parameter's persistent gradient buffer).
//
// CPU reference: plain loops, one layer per call, accumulation in double; the vectors u, v are
// rounded to T after every normalisation (they are stored in T), sigma is rounded to T before
// W_sn = W / sigma, so forward and backward use the same sigma.
//
// CUDA (float32), all layers of a call together: one ordinary launch per phase (see
// docs/kernels/spectral_norm.md). The layer table is a __grid_constant__ kernel parameter (up to
// kSpectralNormMaxLayers layers per launch; larger groups run as several sets of launches).
// Phases:
//   V: s = W^T u (+ |s|^2),  U: t = W v (+ |t|^2, or u^T t in eval),  F: u, v, sigma, W_sn = W /
//   sigma
// in stream order (training: V U V U ... F; eval: U F), one block per work unit. The two
// matrix-vector products are row dots (A x: a warp per row segment) and column dots (A^T x: 32
// columns x 8 row lanes, reduced in shared memory), split over tiles of about 8192 elements; the
// partial sums of a tile are combined in a fixed order by the last block to finish it (an integer
// ticket, the threadfence-reduction pattern), which also combines the layer's squared norm when
// it is the last tile. Backward: B1 per-chunk partial sums of G W_sn combined likewise, then B2
// dW. Deterministic: every sum has a fixed order for a given shape (independent of which block
// finishes last), no float atomics. No allocation, no host synchronisation: the launchers take a
// workspace (CUB's two-phase convention: ask *_workspace_bytes, pass that much scratch; its
// counters are zeroed with cudaMemsetAsync by the launcher), so they can be captured in a graph.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace gan::kernels {

// ---------------------------------------------------------------------------------------------
// CPU reference

// max(x, eps) that propagates NaN (the CUDA kernels use the same expression).
inline double sn_clamp_min(double x, double eps) { return x < eps ? eps : x; }

// One layer. w (storage: (rows, cols), or (cols, rows) when transposed) -> w_sn (same layout).
// u (rows), v (cols): the persistent vectors, updated in place in training, read in eval.
// sigma (1): written.
// W(i, j) of the storage (see the layouts above).
template <class T>
inline double sn_entry_cpu(const T* w, int64_t rows, int64_t cols, bool transposed, int64_t i,
                           int64_t j) {
  return double(transposed ? w[j * rows + i] : w[i * cols + j]);
}

// t (rows) = W v; returns |t|^2.
template <class T>
double sn_w_times_v_cpu(const T* w, int64_t rows, int64_t cols, bool transposed, const T* v,
                        std::vector<double>& t) {
  double ss = 0;
  for (int64_t i = 0; i < rows; ++i) {
    double acc = 0;
    for (int64_t j = 0; j < cols; ++j)
      acc += sn_entry_cpu(w, rows, cols, transposed, i, j) * double(v[j]);
    t[size_t(i)] = acc;
    ss += acc * acc;
  }
  return ss;
}

// One layer. w (storage: (rows, cols), or (cols, rows) when transposed) -> w_sn (same layout).
// u (rows), v (cols): the persistent vectors, updated in place in training, read in eval.
// sigma (1): written.
template <class T>
void spectral_norm_forward_cpu(const T* w, int64_t rows, int64_t cols, bool transposed,
                               bool training, int iterations, double eps, T* u, T* v, T* sigma,
                               T* w_sn) {
  std::vector<double> s(static_cast<size_t>(cols)),
      t(static_cast<size_t>(rows));  // s (cols) = W^T u, t (rows) = W v
  double sig = 0;
  if (training) {
    for (int it = 0; it < iterations; ++it) {
      double ss = 0;  // s = W^T u, v = s / max(|s|, eps)
      for (int64_t j = 0; j < cols; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < rows; ++i)
          acc += sn_entry_cpu(w, rows, cols, transposed, i, j) * double(u[i]);
        s[size_t(j)] = acc;
        ss += acc * acc;
      }
      const double ds = sn_clamp_min(std::sqrt(ss), eps);
      for (int64_t j = 0; j < cols; ++j) v[j] = T(s[size_t(j)] / ds);
      // t = W v, u = t / max(|t|, eps), sigma = u^T t = |t|^2 / max(|t|, eps)
      const double st = sn_w_times_v_cpu(w, rows, cols, transposed, v, t);
      const double dt = sn_clamp_min(std::sqrt(st), eps);
      for (int64_t i = 0; i < rows; ++i) u[i] = T(t[size_t(i)] / dt);
      sig = st / dt;
    }
  } else {
    sn_w_times_v_cpu(w, rows, cols, transposed, v, t);
    for (int64_t i = 0; i < rows; ++i) sig += double(u[i]) * t[size_t(i)];
  }
  sigma[0] = T(sig);
  const double sg = double(sigma[0]);
  for (int64_t e = 0; e < rows * cols; ++e) w_sn[e] = T(double(w[e]) / sg);
}

// One layer. g, w_sn (storage layout as w), u (rows), v (cols), sigma (1): the forward's saved
// values -> dw (storage layout): dW = (G - <G, W_sn> u v^T) / sigma, overwritten or accumulated.
template <class T>
void spectral_norm_backward_cpu(const T* g, const T* w_sn, const T* u, const T* v, const T* sigma,
                                int64_t rows, int64_t cols, bool transposed, bool accumulate,
                                T* dw) {
  const int64_t numel = rows * cols;
  double c = 0;
  for (int64_t e = 0; e < numel; ++e) c += double(g[e]) * double(w_sn[e]);
  const double sg = double(sigma[0]);
  const int64_t n = transposed ? rows : cols;  // storage (m, n)
  const T* a = transposed ? v : u;             // a (m)
  const T* b = transposed ? u : v;             // b (n)
  for (int64_t e = 0; e < numel; ++e) {
    const int64_t p = e / n, q = e - p * n;
    const double prev = accumulate ? double(dw[e]) : 0.0;
    dw[e] = T(prev + (double(g[e]) - c * double(a[p]) * double(b[q])) / sg);
  }
}

// ---------------------------------------------------------------------------------------------
// CUDA (float32)

constexpr int kSpectralNormMaxLayers = 32;  // layers per launch (the kernel parameter table)

struct SpectralNormForwardLayer {
  const float* w = nullptr;  // storage (m, n), see above
  float* w_sn = nullptr;     // (m, n) out
  float* u = nullptr;        // (rows) persistent: read; overwritten in training
  float* v = nullptr;        // (cols) persistent: read; overwritten in training
  float* sigma = nullptr;    // (1) out
  float* saved = nullptr;    // (rows + cols + 1) out [u, v, sigma], or nullptr
  int64_t rows = 0, cols = 0;
  bool transposed = false;
};

struct SpectralNormBackwardLayer {
  const float* g = nullptr;      // (m, n) gradient of W_sn
  const float* w_sn = nullptr;   // (m, n) the forward's output
  const float* saved = nullptr;  // (rows + cols + 1) [u, v, sigma] of the forward
  float* dw = nullptr;           // (m, n) out: overwritten, or += when accumulate
  bool accumulate = false;
  int64_t rows = 0, cols = 0;
  bool transposed = false;
};

size_t spectral_norm_forward_workspace_bytes(const std::vector<SpectralNormForwardLayer>& layers);
void spectral_norm_forward_cuda(const std::vector<SpectralNormForwardLayer>& layers, bool training,
                                int iterations, float eps, void* workspace, size_t workspace_bytes,
                                cudaStream_t stream);

size_t spectral_norm_backward_workspace_bytes(const std::vector<SpectralNormBackwardLayer>& layers);
void spectral_norm_backward_cuda(const std::vector<SpectralNormBackwardLayer>& layers,
                                 void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace gan::kernels
