// The GAN trainer behind gan_train (and the tests): data, models, losses, Adam with TTUR, n_dis,
// EMA of G, sample grids, metrics.jsonl, TensorBoard events, atomic safetensors checkpoints,
// bit-for-bit resume, and a stop with the last good checkpoint intact on a non-finite loss.
// docs/gan_train.md describes the outputs and every option.
#pragma once

#include <cstdint>
#include <set>
#include <string>

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
  std::string loss;  // bce | hinge | wgan
  int n_dis = 1;
  double ema = 0;  // decay of the EMA of G's weights (0: off)
  double wgan_clip = 0.01;
  uint64_t seed = 0;
  // run
  std::string out = "runs/gan";
  int64_t sample_every = 500, checkpoint_every = 1000, log_every = 50;
  std::string resume;           // a run directory to continue
  std::string device = "auto";  // auto | cpu | cuda
  bool tf32 = false;
  // CUDA: capture one whole iteration (D steps, G step, EMA) as a CUDA graph after a warm-up
  // iteration and replay it (not yet run on a GPU; see docs/gan_train.md).
  bool cuda_graph = false;
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
};

// Trains; prints the resolved configuration first. Throws gan::Error on bad input and on a
// non-finite loss (after which the last checkpoint written is intact).
Result run(Options o);

}  // namespace gan::train
