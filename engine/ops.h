// Differentiable ops on Vars. Each runs its CPU reference (f32 or f64) or its CUDA launcher
// (f32) after the inputs' device, and records its backward on the tape (engine/autograd.h).
// Shapes are checked first; errors name the op and the shapes.
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

// ---- reductions
Var sum(const Var& x);   // all elements -> shape ()
Var mean(const Var& x);  // all elements -> shape ()
// Over the given axes (negative counts from the end); keepdim keeps them as size 1.
Var sum(const Var& x, const std::vector<int>& axes, bool keepdim = false);
Var mean(const Var& x, const std::vector<int>& axes, bool keepdim = false);

// ---- shapes
Var reshape(const Var& x, const Shape& shape);  // one dim may be -1
Var flatten(const Var& x, int start_dim = 1);   // (N, H, W, C) -> (N, H*W*C)
// Concatenation along `axis` (default: the last, i.e. channels of NHWC activations).
Var concat(const std::vector<Var>& xs, int axis = -1);

// ---- linear algebra
// (m, k) x (k, n) -> (m, n), or batched (B, m, k) x (B, k, n) -> (B, m, n).
Var matmul(const Var& a, const Var& b);
// x (..., in), w (out, in) [PyTorch's layout], optional b (out) -> (..., out): x w^T + b.
Var linear(const Var& x, const Var& w, const Var& b = Var());

// ---- losses (mean over all elements, one-element result)
// Binary cross-entropy on logits against targets of the same shape, or a constant target.
Var bce_with_logits(const Var& logits, const Var& targets);
Var bce_with_logits(const Var& logits, double target);
// SAGAN's hinge losses: D: mean relu(1 - real) + mean relu(1 + fake); G: -mean fake.
Var hinge_d_loss(const Var& real, const Var& fake);
Var hinge_g_loss(const Var& fake);

}  // namespace gan
