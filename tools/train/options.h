// gan_train's configuration: the options (the model's own configuration embedded), the enums they
// choose from, validation and model-dependent defaults (resolve), the JSON a checkpoint carries,
// and the checks that a resumed run matches its checkpoint. docs/gan_train.md lists every option.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "engine/tensor.h"
#include "models/gan.h"
#include "tools/io/image.h"

namespace gan::st {
struct File;
}

namespace gan::train {

// kModelDefault: DCGAN bce, SAGAN hinge (resolve() fills it in).
enum class Loss { kModelDefault, kBce, kHinge, kWgan, kWganGp };
enum class DeviceChoice { kAuto, kCpu, kCuda };

// Names as on the command line ("bce", "hinge", "wgan", "wgan-gp"; "auto", "cpu", "cuda"); the
// parsers throw gan::Error naming the accepted values.
const char* loss_name(Loss l);
Loss parse_loss(const std::string& name);
const char* device_choice_name(DeviceChoice d);
DeviceChoice parse_device_choice(const std::string& name);

struct Options {
  // model: architecture, preset, image size, channels (0: the dataset's: Fashion-MNIST 1,
  // CIFAR-10 3), z (0: the model's default), widths, attention variant
  models::ModelConfig model{.channels = 0};
  // sagan-resnet: class-conditional on the dataset's labels (model.num_classes is set from the
  // dataset's classes when the data is loaded).
  bool conditional = false;
  // data
  std::string data = "/usr/share/datasets/fashion-mnist";
  img::Fit fit = img::Fit::Resize;
  bool hflip = false;
  // optimisation (negative / kModelDefault / 0: the model's or the loss's default, see resolve())
  int batch_size = 64;
  int epochs = 5;
  int64_t steps = 0;  // > 0: this many generator steps instead of epochs
  double lr_g = -1, lr_d = -1, beta1 = -1, beta2 = -1;
  Loss loss = Loss::kModelDefault;
  int n_dis = 0;          // 0: the loss's default (wgan-gp 5, else 1)
  double gp_lambda = 10;  // wgan-gp: weight of the gradient penalty on interpolates
  double r1 = 0;          // R1 penalty weight gamma on real data (0: off); any loss
  int r1_every = 1;       // lazy R1: every k-th iteration, weighted by k (no CUDA graph when > 1)
  double ema = 0;         // decay of the EMA of G's weights (0: off)
  int64_t ema_start = 0;  // G's first ema_start steps copy G into the EMA (StudioGAN's g_ema_start)
  // The EMA's batch-norm statistics: "copy" (G's, when sampling) or "average" (averaged like the
  // weights, num_batches_tracked copied: StudioGAN's Ema).
  std::string ema_buffers = "copy";
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
  DeviceChoice device = DeviceChoice::kAuto;
  bool tf32 = false;          // --tf32: shorthand for --math tf32
  std::string math = "fp32";  // float32 math mode: fp32, fp32-tc or tf32 (engine/device.h)
  // Precision of the products: fp32 or bf16 (engine/device.h; kept on resume unless given).
  std::string precision = "fp32";
  bool deterministic = false;  // cuDNN: deterministic algorithms only, untimed (bitwise-equal runs)
  // CUDA: capture one whole iteration (D steps, G step, EMA) as a CUDA graph after a warm-up
  // iteration and replay it; bitwise equal to eager steps (tests/test_trainer.cpp).
  bool cuda_graph = true;
  // CUDA: bracket generator steps [profile_from, profile_to] (1-based, inclusive) with
  // cudaProfilerStart/Stop, for nsys --capture-range=cudaProfilerApi (0: no bracket).
  int64_t profile_from = 0, profile_to = 0;
  // data parallel (engine/dist.h, docs/distributed.md): batch_size is per rank, the global batch
  // batch_size * world_size; the communicator backend and NCCL's rendezvous; synchronised batch
  // norm; a cross-rank check of the whole state every dist_check_every steps (0: never).
  std::string dist_backend = "auto";
  std::string dist_init;
  bool sync_bn = false;
  int64_t dist_check_every = 0;
  int world_size = 1, rank = 0;  // from the launcher (not options)
  int progress = -1;             // 1 live bar, 0 plain lines, -1 auto (a terminal gets the bar)
  int64_t inject_nan_at = 0;     // tests: poison D's first weight with NaN before this step
  int64_t inject_checkpoint_error_at = 0;  // tests: rank 0's checkpoint write throws at this step

  // Option names given explicitly (on the command line, '-' as '_'); resume checks them against
  // the checkpoint, and the CPU fallback leaves them alone.
  std::set<std::string> given;
  // Set by the CPU fallback: announce the run's duration after its first timed steps.
  bool announce_duration = false;

  // Either SAGAN (hinge loss, no batch norm in D).
  bool sagan() const {
    return model.arch == models::Arch::kSagan || model.arch == models::Arch::kSaganResnet;
  }
  bool resnet() const { return model.arch == models::Arch::kSaganResnet; }
  bool gradient_penalty() const { return loss == Loss::kWganGp; }
  // A penalty is computed (and logged) in some iterations: WGAN-GP or R1.
  bool has_penalty() const { return gradient_penalty() || r1 > 0; }
};

// Fills model-dependent defaults (z, learning rates, betas, loss, n_dis) and validates; throws
// gan::Error with a one-line message naming the option.
Options resolve(Options o);

// The configuration a checkpoint stores (metadata "config"): every option but the run-local ones.
nlohmann::json to_json(const Options& o);

// Resuming: the checkpoint's model, data and optimisation options replace o's; an option given
// explicitly that differs from the checkpoint's is an error naming both values. The global batch
// is kept: on o.world_size ranks each takes the checkpoint's global batch / o.world_size. --out
// defaults to the run directory; the step budget stays the checkpoint's unless --steps or --epochs
// is given. `path` names the checkpoint in messages.
Options resume_options(const Options& o, const st::File& checkpoint, const std::string& path);

// One line of the resolved configuration for the start of a run.
std::string describe(const Options& o, Device dev);

// The CPU fallback of the default job (no GPU found, --device auto): a run of a few minutes on two
// cores that still learns (kCpuSteps steps of batch 64 at 32 px, samples every 250 steps) for
// options the user did not give; returns what it changed ("steps=2000 batch_size=64 ...", empty
// when nothing). The trainer then announces the run's duration once the first steps are timed.
constexpr int64_t kCpuSteps = 2000;
std::string shrink_for_cpu(Options& o);

}  // namespace gan::train
