// Differentiable ops on Vars. Each runs its CPU reference (f32 or f64) or its CUDA launcher
// (f32) after the inputs' device, and records its backward on the tape (engine/autograd.h).
// Shapes are checked first; errors name the op and the shapes.
//
// Double backward (grad(..., create_graph), engine/autograd.h): every op below has a VJP written
// in these ops, except: conv2d, conv_transpose2d and linear give gradients as Vars for their input
// and bias but not their weight; concat only along the last axis; spectral_norm's treats u and v
// as constants (as its backward does); the losses have none (grad() names the op). VJPs create no
// host data (their constants are device fills), so a penalty step can be captured as a CUDA graph.
// attention and self_attention recompute softmax(q k^T) as a B x Nq x Nk tensor in their VJP. That
// covers a gradient penalty on the input of SAGAN's and DCGAN's discriminators (spectral norm's
// output is a weight: not on the input's path).
//
// bf16 activations (bf16 precision, engine/device.h): the products (conv2d, conv_transpose2d,
// linear, matmul) round float32 operands to bf16, take bf16 ones as they are, and return bf16
// tensors; batch_norm takes and returns bf16 (float32 statistics). The other ops accept bf16 too:
// elementwise ops, shapes, pooling and attention return bf16 for bf16 inputs (float32 when a
// float32 operand is mixed in), reductions, softmax and the losses return float32
// (engine/autocast.h). Gradients have their value's dtype. Weights, biases, batch-norm affine
// parameters and statistics stay float32.
#pragma once

#include <vector>

#include "engine/autograd.h"

namespace gan {

// ---- elementwise; binary ops broadcast numpy-style (scalar, per-channel (C) against NHWC, ...)
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
Var scale(const Var& x, double s);
Var relu(const Var& x);
Var leaky_relu(const Var& x, double negative_slope);
Var tanh(const Var& x);
Var sigmoid(const Var& x);
Var sqrt(const Var& x);  // d/dx = 1 / (2 sqrt(x)): infinite at 0

// ---- reductions
Var sum(const Var& x);   // all elements -> shape ()
Var mean(const Var& x);  // all elements -> shape ()
// Over the given axes (negative counts from the end); keepdim keeps them as size 1.
Var sum(const Var& x, const std::vector<int>& axes, bool keepdim = false);
Var mean(const Var& x, const std::vector<int>& axes, bool keepdim = false);

// ---- shapes
Var reshape(const Var& x, const Shape& shape);  // one dim may be -1
Var flatten(const Var& x, int start_dim = 1);   // (N, H, W, C) -> (N, H*W*C)
// Sums g over the axes that broadcasting expanded from `shape` (right-aligned), giving `shape`.
Var sum_to(const Var& g, const Shape& shape);
// Concatenation along `axis` (default: the last, i.e. channels of NHWC activations).
Var concat(const std::vector<Var>& xs, int axis = -1);
// Columns [start, start + len) of the last axis.
Var slice_last(const Var& x, int64_t start, int64_t len);
// (m, n) -> (n, m), or batched (B, m, n) -> (B, n, m).
Var transpose(const Var& x);
// Softmax over the last axis.
Var softmax(const Var& x);
// x converted to dtype (f32 <-> bf16 rounds to nearest even, f32 <-> f64); the gradient is
// converted back. x itself when it already has that dtype.
Var cast(const Var& x, DType dtype);

// ---- linear algebra
// (m, k) x (k, n) -> (m, n), or batched (B, m, k) x (B, k, n) -> (B, m, n).
Var matmul(const Var& a, const Var& b);
// x (..., in), w (out, in) [PyTorch's layout], optional b (out) -> (..., out): x w^T + b.
Var linear(const Var& x, const Var& w, const Var& b = Var());
// The head of a projection discriminator in one op (kernels/projection_head.h): features h (B, C),
// the output layer's weight w (C) or (1, C) and optional bias (one element), labels y (B, K) as
// one-hot rows (or any weights) and the class embedding e (K, C) -> (B):
// out_b = bias + <w, h_b> + sum over k with y_bk != 0 of y_bk <e_k, h_b> (an unselected class's
// row is never read, as in an embedding lookup). Runs in float32 (bf16 h or y are widened).
Var projection_head(const Var& h, const Var& w, const Var& bias, const Var& y, const Var& e);

// ---- convolutions (cuDNN on the GPU, direct loops on the CPU), NHWC activations.
// Weights are stored (K, kh, kw, C) where K is the output channel count of the underlying
// convolution: conv2d (out, kh, kw, in); conv_transpose2d (in, kh, kw, out). PyTorch's OIHW
// (conv) and IOHW (transposed conv) are the same tensors with the channel axis moved:
// see engine/nn.h for the conversions used by checkpoints.
// kTanh: convolutions only (a generator's output layer); batch_norm refuses it.
enum class Activation { kNone, kRelu, kLeakyRelu, kTanh };

struct Conv2dOptions {
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int dil_h = 1, dil_w = 1;
  int out_pad_h = 0, out_pad_w = 0;  // conv_transpose2d only: extra rows/cols at the end
  // An activation applied to the output (after the bias) in the same pass: relu(conv + b),
  // leaky_relu(conv + b, slope) or tanh(conv + b), as the separate ops would give (nn::Sequential
  // fuses a convolution followed by ReLU, LeakyReLU or Tanh into it).
  Activation act = Activation::kNone;
  double slope = 0.2;
};
// x (N, H, W, C), w (K, kh, kw, C), optional b (K) -> (N, P, Q, K),
// P = (H + 2 pad_h - dil_h (kh - 1) - 1) / stride_h + 1 (likewise Q).
Var conv2d(const Var& x, const Var& w, const Var& b, const Conv2dOptions& o);
// The adjoint of conv2d (its backward-data): x (N, H, W, Cin), w (Cin, kh, kw, Cout), optional
// b (Cout) -> (N, P, Q, Cout), P = (H - 1) stride_h - 2 pad_h + dil_h (kh - 1) + out_pad_h + 1.
Var conv_transpose2d(const Var& x, const Var& w, const Var& b, const Conv2dOptions& o);

// ---- normalisation
// Batch normalisation over every axis but the last (channels): x (N, H, W, C) or (N, C),
// gamma, beta (C), or per sample (N, C) (conditional batch norm: each sample's own scale and
// shift, e.g. from its class, after normalising with the statistics of the whole batch).
// Training: normalises with the batch mean and biased variance, and updates
// running_mean/running_var (C) in place with `momentum` using the unbiased variance (PyTorch's
// convention). Eval: normalises with the running statistics. An activation can be fused:
// y = act(gamma (x - mean) / sqrt(var + eps) + beta). One kernel either way
// (kernels/batchnorm.h); differentiable twice.
Var batch_norm(const Var& x, const Var& gamma, const Var& beta, const Tensor& running_mean,
               const Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5,
               Activation act = Activation::kNone, double slope = 0.2);

// Spectral normalisation of several weights at once (one launch for all of them on the GPU).
struct SpectralNormLayer {
  Var weight;        // the parameter W, any layout
  int64_t rows = 0;  // W as a matrix (PyTorch's convention: output channels as rows)
  int64_t cols = 0;
  bool transposed = false;  // storage holds W^T row-major (cols, rows): conv_transpose2d weights
  Tensor u;                 // (rows) persistent power-iteration vectors
  Tensor v;                 // (cols)
  Tensor sigma;             // (1) the last sigma (written by every call; for logging)
};
// Returns W / sigma(W) for every layer, each with its weight's shape. Training: `iterations`
// power iterations from the stored u: v = normalize(W^T u), u = normalize(W v),
// sigma = u^T W v; the new u, v are stored (and the ones this call used are kept for its
// backward). Eval: sigma = u^T W v from the stored u, v. normalize(x) = x / max(|x|, eps).
// Backward treats u and v as constants: dW = (G - <G, W_sn> u v^T) / sigma.
std::vector<Var> spectral_norm(std::vector<SpectralNormLayer>& layers, bool training,
                               int iterations = 1, double eps = 1e-12);

// ---- attention (kernels/attention.h): softmax over keys of q k^T (no scale), times v.
// q (B, Nq, d), k (B, Nk, d), v (B, Nk, dv) -> (B, Nq, dv). CUDA: 1 <= d <= 64, dv <= 1024.
Var attention(const Var& q, const Var& k, const Var& v);
// The SAGAN block on a packed projection qkv (B, N, 2d + dv) whose columns are q | k | v (one GEMM
// makes it): y = gamma softmax(q k^T) v + x, with x of N*dv elements per batch item (e.g. NHWC
// (B, H, W, dv)) and gamma one element. Returns y shaped like x. One fused kernel forward, two
// backward; the N x N matrix is never stored.
Var self_attention(const Var& qkv, int64_t d, const Var& gamma, const Var& x);
// Rows of softmax(q k^T) (B, len(queries), Nk) for chosen query positions, on the host (for
// pictures of what the model attends to). q (B, Nq, d) and k (B, Nk, d); or, with k undefined, q
// is a packed (B, N, 2d + dv) projection and d is given.
std::vector<float> attention_rows(const Tensor& q, const Tensor& k,
                                  const std::vector<int64_t>& queries, int64_t d = -1);

// ---- pooling and resizing with PyTorch's rules (kernels/pool2d.h), x (N, H, W, C).
struct Pool2dOptions {
  int kernel_h = 2, kernel_w = 2;
  int stride_h = 0, stride_w = 0;  // 0: the kernel size (PyTorch's default)
  int pad_h = 0, pad_w = 0;        // at most half the kernel
  bool count_include_pad = true;   // avg_pool2d: divide by the window size including padding
};
// nn.MaxPool2d / nn.AvgPool2d (ceil_mode off): (N, P, Q, C), P = (H + 2 pad - k) / stride + 1.
// max_pool2d routes each gradient to the first maximum of its window; with windows that tile
// the input (stride = kernel, no padding, H and W multiples of the kernel: SAGAN's pooled keys,
// the classifier) it also has a VJP, so gradient penalties differentiate through it twice.
Var max_pool2d(const Var& x, const Pool2dOptions& o = {});
Var avg_pool2d(const Var& x, const Pool2dOptions& o);
// nn.AdaptiveAvgPool2d((out_h, out_w)).
Var adaptive_avg_pool2d(const Var& x, int64_t out_h, int64_t out_w);
// F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False).
// half_pixel false: TF1's resize_bilinear without half-pixel centres (source i in / out), the
// TF Inception graph's resize (StyleGAN's nv_bilinear), for FID as the TF code computes it.
Var resize_bilinear(const Var& x, int64_t out_h, int64_t out_w, bool half_pixel = true);
// PIL's Image.resize(resample=BICUBIC) on float images (antialiased when shrinking), which
// clean-fid recommends over the bilinear resize: kernels/pool2d.h.
Var resize_bicubic_aa(const Var& x, int64_t out_h, int64_t out_w);
// F.interpolate(x, scale_factor=s, mode="nearest") for an integer s >= 1: (N, H, W, C) ->
// (N, sH, sW, C), each pixel repeated s x s; one copy kernel, its backward one window-sum kernel
// (kernels/pool2d.h), float32 and bf16 alike; differentiable to any order.
Var upsample_nearest(const Var& x, int s);

// ---- losses (mean over all elements, one-element result)
// Binary cross-entropy on logits against targets of the same shape, or a constant target.
Var bce_with_logits(const Var& logits, const Var& targets);
Var bce_with_logits(const Var& logits, double target);
// Softmax cross-entropy over the last axis (classes): logits (..., C) against target distributions
// of the same shape (one-hot rows for labels), mean over the rows. Targets get no gradient.
// PyTorch: F.cross_entropy(logits, targets) with probability targets.
Var softmax_cross_entropy(const Var& logits, const Tensor& targets);
// SAGAN's hinge losses: D: mean relu(1 - real) + mean relu(1 + fake); G: -mean fake.
Var hinge_d_loss(const Var& real, const Var& fake);
Var hinge_g_loss(const Var& fake);

}  // namespace gan
