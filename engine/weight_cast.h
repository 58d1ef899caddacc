// bf16 roundings of float32 weights, reused within a training step (bf16 precision).
//
// A product rounds its float32 weight to bf16 at each use: forward, and again in its backward
// pass. While a WeightCastScope is open on the thread, bf16_weight() keeps each rounding and hands
// the same bf16 tensor to every later use of the same weight tensor in the scope: the
// discriminator's forwards of one step, and the backward passes. That is valid only while the
// weights do not change, so a scope covers one optimiser step's forward and backward passes
// (tools/train/stepper.cpp opens one per iteration) and Adam::step drops the roundings of its
// parameters from the open scope's cache. A weight tensor that is freed and replaced (the spectral
// norm's output is a new tensor every forward) is never mistaken for the old one: entries hold the
// storage weakly and are matched on it. Outside a scope every use casts, as before.
#pragma once

#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace gan {

class WeightCastScope {
 public:
  WeightCastScope();
  ~WeightCastScope();
  WeightCastScope(const WeightCastScope&) = delete;
  WeightCastScope& operator=(const WeightCastScope&) = delete;

  struct Cache;

 private:
  std::unique_ptr<Cache> cache_;
  Cache* prev_;
};

// w (float32) rounded to a bf16 tensor; the open scope's copy when it has one. A bf16 w is
// returned as it is.
Tensor bf16_weight(const Tensor& w);
// Empties the open scope's cache (the weights are about to change). No-op without a scope.
void invalidate_weight_casts();
// Drops the roundings of these tensors (any tensor on their storage): an optimiser's parameters.
void invalidate_weight_casts(const std::vector<Tensor>& changed);
// Casts made and reused in the open scope (tests, logging): {made, reused}.
std::pair<int64_t, int64_t> weight_cast_counts();

}  // namespace gan
