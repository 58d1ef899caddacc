// The GAN trainer behind gan_train (and the tests): data, models, losses, Adam with TTUR, n_dis,
// EMA of G, sample grids, metrics.jsonl, TensorBoard events, atomic safetensors checkpoints,
// bit-for-bit resume, and a stop with the last good checkpoint intact on a non-finite loss.
// docs/gan_train.md describes the outputs and every option.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "engine/adam.h"
#include "engine/random.h"
#include "models/gan.h"

namespace gan::train {

struct Options {
  // model
  std::string model = "sagan";     // sagan | dcgan
  std::string preset = "default";  // dcgan: default | wide
  int image_size = 64;
  int channels = 0;  // 0: the dataset's (Fashion-MNIST 1, CIFAR-10 3)
  int64_t ngf = 64, ndf = 64;
  int64_t z_dim = 0;  // 0: the model's default
  bool official_attention = false;
  // data
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string fit = "resize";  // resize | pad | crop
  bool hflip = false;
  // optimisation (negative / empty: the model's default, see resolve())
  int batch_size = 64;
  int epochs = 5;
  int64_t steps = 0;  // > 0: this many generator steps instead of epochs
  double lr_g = -1, lr_d = -1, beta1 = -1, beta2 = -1;
  std::string loss;       // bce | hinge | wgan | wgan-gp
  int n_dis = 0;          // 0: the loss's default (wgan-gp 5, else 1)
  double gp_lambda = 10;  // wgan-gp: weight of the gradient penalty on interpolates
  double r1 = 0;          // R1 penalty weight gamma on real data (0: off); any loss
  int r1_every = 1;       // lazy R1: every k-th iteration, weighted by k (no CUDA graph when > 1)
  double ema = 0;         // decay of the EMA of G's weights (0: off)
  double wgan_clip = 0.01;
  uint64_t seed = 0;
  // run
  std::string out = "runs/gan";
  int64_t sample_every = 500, checkpoint_every = 1000, log_every = 50;
  // evaluation (tools/eval, docs/metrics.md): every eval_every steps (0: never) and at the end,
  // eval_samples images of G (G_ema with --ema) against the first eval_real training images
  // (as G sees them) under the classifier; logged, and best.safetensors kept by lowest FD.
  int64_t eval_every = 0, eval_samples = 5000, eval_real = 10000;
  std::string eval_classifier;  // empty: eval::default_classifier_path
  std::string resume;           // a run directory to continue
  std::string device = "auto";  // auto | cpu | cuda
  bool tf32 = false;
  // CUDA: capture one whole iteration (D steps, G step, EMA) as a CUDA graph after a warm-up
  // iteration and replay it (not yet run on a GPU; see docs/gan_train.md).
  bool cuda_graph = true;  // GPU only; bitwise equal to eager steps (tests/test_trainer.cpp)
  // CUDA: bracket generator steps [profile_from, profile_to] (1-based, inclusive) with
  // cudaProfilerStart/Stop, for nsys --capture-range=cudaProfilerApi (0: no bracket).
  int64_t profile_from = 0, profile_to = 0;
  int progress = -1;          // 1 live bar, 0 plain lines, -1 auto (a terminal gets the bar)
  int64_t inject_nan_at = 0;  // tests: poison D's first weight with NaN before this step

  // Option names given explicitly (on the command line); resume checks them against the
  // checkpoint, and the CPU fallback leaves them alone.
  std::set<std::string> given;
};

// Fills model-dependent defaults (z, learning rates, betas, loss) and validates; throws gan::Error.
Options resolve(Options o);

struct Result {
  int64_t steps = 0;        // generator steps completed (the global step)
  double images_per_s = 0;  // real images per second over the run
  std::string checkpoint;   // the last checkpoint written
  int stop_signal =
      0;  // SIGINT or SIGTERM when a signal stopped the run early (after a checkpoint)
};

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
  Stepper(const Options& o, models::Gan& net, models::Gan* ema, Adam& opt_g, Adam& opt_d,
          Generator& gen);
  // `step`: the 0-based index of this iteration (lazy R1 runs when step % r1_every == 0).
  void iteration(const std::vector<Tensor>& reals, int64_t step = 0);
  // loss_d, loss_g, D(x), D(G(z)), the penalty (wgan-gp: mean (|grad| - 1)^2; R1: mean |grad|^2,
  // unweighted) and the mean gradient norm |d D / d input| it was taken on, of the last
  // iteration (persistent memory on the device).
  const Tensor& stats() const { return stats_; }
  static constexpr int64_t kStats = 6;
  // Tests: take the noise of the following iterations from these tensors, in order, instead of
  // the generator: z (batch, z_dim) for each D step and then the G step, eps (batch) for each
  // WGAN-GP D step. Each queue falls back to the generator once empty.
  void use_fixed_noise(std::vector<Tensor> z, std::vector<Tensor> eps);

 private:
  void keep_scalar(int64_t i, const Var& v);
  void next_z();
  void next_eps();

  Options o_;
  models::Gan& net_;
  Adam &opt_g_, &opt_d_;
  Generator& gen_;
  Tensor z_, stats_, eps_;
  std::vector<Tensor> fixed_z_, fixed_eps_;  // tests (use_fixed_noise), consumed front first
  std::vector<Var> g_params_, ema_params_;
};

// One iteration captured as a CUDA graph and replayed. The capture runs nothing, so BatchNorm's
// host-side num_batches_tracked counters of `modules` are restored after it and advanced by what
// the capture added at each replay. The iteration must have run eagerly once before (cuDNN plans,
// workspace sizes).
class IterationGraph {
 public:
  IterationGraph(const std::vector<nn::Module*>& modules, const std::function<void()>& body);
  ~IterationGraph();
  IterationGraph(const IterationGraph&) = delete;
  IterationGraph& operator=(const IterationGraph&) = delete;
  void replay();
  // Nodes of the captured graph (kernels, copies, memsets, pool allocations and frees).
  size_t nodes() const { return nodes_; }

 private:
  cudaGraphExec_t exec_ = nullptr;
  size_t nodes_ = 0;
  std::vector<std::pair<Tensor, double>> counters_;  // counter, increment per iteration
};

// Trains; prints the resolved configuration first. SIGINT/SIGTERM stop it after the current step
// with a checkpoint (Result::stop_signal; a second signal exits at once, see trainer.cpp).
// Throws gan::Error on bad input, on a failed write and on a non-finite loss (after which the
// last checkpoint written is intact).
Result run(Options o);

}  // namespace gan::train
