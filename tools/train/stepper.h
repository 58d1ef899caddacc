// One iteration of gan_train's loop (Stepper) and its CUDA graph (IterationGraph), shared by
// gan_train and gan_bench.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "engine/adam.h"
#include "engine/capture_arena.h"
#include "engine/dist.h"
#include "engine/random.h"
#include "models/gan.h"
#include "tools/train/options.h"

namespace gan::train {

// Sets requires_grad on every parameter of m (a step freezes the network it does not update).
void set_requires_grad(nn::Module& m, bool on);

// One iteration of gan_train's loop on models and optimisers the caller owns (gan_bench times it):
// n_dis discriminator steps on the given real batches (each with fresh noise and a fake from G
// without gradient), one generator step on a fresh fake, the EMA update. Everything it allocates
// is freed before it returns, and it never synchronises, so it can be captured as a CUDA graph.
// NVTX ranges "D step", "G step" and "EMA" mark the phases.
class Stepper {
 public:
  // o: resolved options (loss, n_dis, ema, wgan_clip, batch_size); ema: null when o.ema == 0.
  // comm (null: one rank): the gradients are averaged over its ranks before each Adam step (in
  // buckets during the backward pass from the second one on: dist::GradReducer), the
  // noise is drawn for the global batch (every rank the same draws) and this rank's rows taken,
  // and the logged scalars are averaged.
  Stepper(const Options& o, models::Gan& net, models::Gan* ema, Adam& opt_g, Adam& opt_d,
          Generator& gen, dist::Communicator* comm = nullptr);
  // `step`: the 0-based index of this iteration (lazy R1 runs when step % r1_every == 0).
  void iteration(const std::vector<Tensor>& reals, int64_t step = 0);
  // A conditional model (net.g->num_classes() > 0): the one-hot labels (batch, classes) each
  // iteration reads, tensors the caller fills before it (static inputs of a CUDA graph): real[k]
  // the labels of reals[k], fake[k] those G's fakes are drawn for in D step k, fake[n_dis] the G
  // step's.
  void set_labels(std::vector<Tensor> real, std::vector<Tensor> fake);
  // loss_d, loss_g, D(x), D(G(z)), the penalty (wgan-gp: mean (|grad| - 1)^2; R1: mean |grad|^2,
  // unweighted) and the mean gradient norm |d D / d input| it was taken on, of the last
  // iteration (persistent memory on the device).
  const Tensor& stats() const { return stats_; }
  static constexpr int64_t kStats = 6;
  // Tests: take the noise of the following iterations from these tensors, in order, instead of
  // the generator: z (batch, z_dim) for each D step and then the G step, eps (batch) for each
  // WGAN-GP D step. Each queue falls back to the generator once empty.
  void use_fixed_noise(std::vector<Tensor> z, std::vector<Tensor> eps);
  // The non-finite guard (device memory, updated by every iteration without a host sync): the
  // steps done, and the first step whose losses were not finite (0: none). set_steps_done() before
  // the first iteration (a resumed run's step); first_nonfinite_step() reads it (synchronises).
  void set_steps_done(int64_t steps);
  int64_t first_nonfinite_step() const;

 private:
  void keep_scalar(int64_t i, const Var& v);
  void next_z();
  void next_eps();
  // Fills local with this rank's rows of a draw for the whole global batch (global).
  void draw_rows(const Tensor& global, const Tensor& local, bool normal);

  Options o_;
  models::Gan& net_;
  Adam &opt_g_, &opt_d_;
  Generator& gen_;
  dist::Communicator* comm_ = nullptr;  // null: one rank, no collectives
  Tensor z_, stats_, eps_;
  Tensor z_global_, eps_global_;  // several ranks: the global batch's draws
  Tensor guard_;                  // (2): steps done, first non-finite step
  std::unique_ptr<dist::GradReducer> reduce_g_, reduce_d_;  // several ranks
  std::vector<Tensor> fixed_z_, fixed_eps_;        // tests (use_fixed_noise), consumed front first
  std::vector<Tensor> real_labels_, fake_labels_;  // conditional: set_labels
  std::vector<Var> g_params_, ema_params_;
  // --ema-buffers average: G's batch-norm statistics and spectral-norm vectors and the EMA's,
  // in the same order (num_batches_tracked left out: copied when the EMA is used).
  std::vector<Tensor> g_buffers_, ema_buffers_;
};

// One iteration captured as a CUDA graph and replayed. The capture runs nothing, so BatchNorm's
// host-side num_batches_tracked counters of `modules` are restored after it and advanced by what
// the capture added at each replay. The iteration must have run eagerly once before (cuDNN plans,
// workspace sizes). With arena_bytes > 0 (arena_bytes_for() of that eager run's AllocationTrace),
// the tensors made inside the step live in a CaptureArena (engine/capture_arena.h) rather than
// being allocation and free nodes of the graph.
class IterationGraph {
 public:
  IterationGraph(const std::vector<nn::Module*>& modules, const std::function<void()>& body,
                 size_t arena_bytes = 0);
  ~IterationGraph();
  IterationGraph(const IterationGraph&) = delete;
  IterationGraph& operator=(const IterationGraph&) = delete;
  void replay();
  // Nodes of the captured graph (kernels, copies, memsets, pool allocations and frees).
  size_t nodes() const { return nodes_; }
  size_t arena_bytes() const { return arena_ ? arena_->bytes() : 0; }
  // Allocations inside the capture that did not fit the arena (each an allocation node).
  size_t arena_fallbacks() const { return arena_ ? arena_->fallbacks() : 0; }

 private:
  std::unique_ptr<cuda::CaptureArena> arena_;  // before exec_: outlives the graph's replays
  cudaGraphExec_t exec_ = nullptr;
  size_t nodes_ = 0;
  std::vector<std::pair<Tensor, double>> counters_;  // counter, increment per iteration
};

}  // namespace gan::train
