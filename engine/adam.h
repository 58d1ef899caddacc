// Adam over a list of parameters (torch.optim.Adam semantics, kernels/adam.h). On CUDA one step is
// two launches (the scalar update, then one multi-tensor kernel for every parameter), no host
// sync and no allocation, so it can be captured in a CUDA graph. The state (exp_avg m, exp_avg_sq
// v, step) is exposed for checkpoints.
#pragma once

#include <memory>
#include <vector>

#include "engine/autograd.h"
#include "kernels/adam.h"

namespace gan {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class Adam {
 public:
  Adam(std::vector<Var> params, const AdamOptions& options);

  // p -= update(grad) for every parameter.
  void step();
  // Learning rate for the following steps (a device write on CUDA: capturable).
  void set_lr(double lr);

  const AdamOptions& options() const { return options_; }
  const std::vector<Var>& params() const { return params_; }
  std::vector<Tensor>& exp_avg() { return m_; }
  std::vector<Tensor>& exp_avg_sq() { return v_; }
  // Completed steps (reads device memory on CUDA: synchronises).
  int64_t step_count() const;
  // Where the completed-step count lives (a double in this optimiser's device memory, updated by
  // step() before it updates the parameters): for kernels that gate on it without a host read.
  const double* step_counter() const;
  void set_step_count(int64_t step);

 private:
  kernels::AdamScalars read_scalars() const;
  void write_scalars(const kernels::AdamScalars& s);

  AdamOptions options_;
  kernels::AdamHyper hyper_;
  std::vector<Var> params_;
  std::vector<Tensor> m_, v_;
  Device device_ = Device::CPU;
  std::shared_ptr<Storage> scalars_;  // one AdamScalars on device_
  std::shared_ptr<Storage> refs_;     // CUDA: AdamTensorRef[params]
  std::shared_ptr<Storage> chunks_;   // CUDA: AdamChunk[num_chunks_]
  int64_t num_chunks_ = 0;
};

}  // namespace gan
