// gan_train: trains SAGAN or DCGAN (docs/gan_train.md). With no arguments: SAGAN on
// Fashion-MNIST on the GPU (a short CPU run when there is none).
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/dist.h"
#include "engine/error.h"
#include "models/gan.h"
#include "tools/io/image.h"
#include "tools/programs/cli.h"
#include "tools/train/trainer.h"

int main(int argc, char** argv) {
  namespace models = gan::models;
  gan::train::Options o;
  models::ModelConfig& m = o.model;
  CLI::App app{"gan_train: train SAGAN, DCGAN or the ResNet SAGAN with the gan engine"};
  // Enum options are read as their names (checked here, so that --help and errors list the
  // names) and converted after parsing.
  std::string arch = "sagan", preset = "default", fit = "resize", loss, device = "auto";
  app.add_option("--model", arch,
                 "sagan, dcgan or sagan-resnet (the paper's ResNet SAGAN as StudioGAN configures "
                 "it: docs/models.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sagan", "dcgan", "sagan-resnet"}));
  app.add_option("--preset", preset, "dcgan: default or wide (the study's 64 px DCGAN)")
      ->capture_default_str()
      ->check(CLI::IsMember({"default", "wide"}));
  app.add_option("--data", o.data,
                 "Fashion-MNIST/MNIST directory or IDX file, CIFAR-10 binary folder, or a folder "
                 "of PNG/JPEG images")
      ->capture_default_str();
  app.add_option("--image-size", m.image_size, "32, 64 or 128")
      ->capture_default_str()
      ->check(CLI::IsMember({32, 64, 128}));
  app.add_option("--channels", m.channels, "1 or 3 (0: the dataset's)")
      ->capture_default_str()
      ->check(CLI::IsMember({0, 1, 3}));
  app.add_option("--fit", fit, "resize, pad or crop dataset images to the model's size")
      ->capture_default_str()
      ->check(CLI::IsMember({"resize", "pad", "crop"}));
  app.add_flag("--hflip", o.hflip, "random horizontal flips");
  app.add_option("--batch-size", o.batch_size, "batch size")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--epochs", o.epochs, "epochs (ignored when --steps is given)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--steps", o.steps, "generator steps (0: use --epochs)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  app.add_option("--lr-g", o.lr_g, "G learning rate (default: DCGAN 2e-4, SAGAN 1e-4)")
      ->check(CLI::PositiveNumber);
  app.add_option("--lr-d", o.lr_d, "D learning rate (default: DCGAN 2e-4, SAGAN 4e-4)")
      ->check(CLI::PositiveNumber);
  app.add_option("--beta1", o.beta1, "Adam beta1 (default: DCGAN 0.5, SAGAN 0)")
      ->check(CLI::Range(0.0, 0.999999));
  app.add_option("--beta2", o.beta2, "Adam beta2 (default: DCGAN 0.999, SAGAN 0.9)")
      ->check(CLI::Range(0.0, 0.999999));
  app.add_option("--loss", loss,
                 "bce, hinge, wgan (weight clipping) or wgan-gp (gradient penalty; default: "
                 "DCGAN bce, SAGAN hinge)")
      ->check(CLI::IsMember({"bce", "hinge", "wgan", "wgan-gp"}));
  app.add_option("--gp-lambda", o.gp_lambda, "wgan-gp: weight of the gradient penalty")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--r1", o.r1, "R1 penalty gamma on real data (0: off; any loss)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--r1-every", o.r1_every, "lazy R1: every k-th iteration, weighted by k")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--wgan-clip", o.wgan_clip, "WGAN: clip D's weights to [-c, c]")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--n-dis", o.n_dis, "D steps per G step (default: wgan-gp 5, else 1)")
      ->check(CLI::Range(1, 100));
  app.add_option("--ema", o.ema, "decay of an EMA of G's weights used for samples (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999999999));
  app.add_option("--ema-start", o.ema_start,
                 "G steps that copy G into the EMA before averaging starts (StudioGAN's "
                 "g_ema_start)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--ema-buffers", o.ema_buffers,
                 "the EMA's batch-norm statistics: copy (G's) or average (averaged like the "
                 "weights, as StudioGAN)")
      ->capture_default_str()
      ->check(CLI::IsMember({"copy", "average"}));
  app.add_option("--z-dim", m.z_dim, "latent size (default: DCGAN 100, SAGAN 128)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--ngf", m.ngf, "G width (SAGAN conv_dim)")
      ->capture_default_str()
      ->check(CLI::Range(8, 4096));
  app.add_option("--ndf", m.ndf, "D width")->capture_default_str()->check(CLI::Range(8, 4096));
  app.add_flag("--official-attention", m.official_attention,
               "SAGAN: the official attention (pooled keys/values, C/2 values, projection)");
  app.add_flag("--conditional", o.conditional,
               "sagan-resnet: class-conditional on the dataset's labels (cBN in G, projection D)");
  app.add_option("--g-attn", m.g_attn,
                 "sagan-resnet: G blocks (from 1) followed by attention, or 0 for none (default: "
                 "2 / 3 / 4 at 32 / 64 / 128 px)")
      ->delimiter(',');
  app.add_option("--d-attn", m.d_attn,
                 "sagan-resnet: D blocks followed by attention, or 0 (default: 1)")
      ->delimiter(',');
  app.add_option("--class-names", m.class_names,
                 "sagan-resnet --conditional: the classes' names in label order, comma-separated "
                 "(default: the dataset's: folder names, CIFAR-10's, Fashion-MNIST's)")
      ->delimiter(',');
  app.add_option("--g-init", m.g_init, "sagan-resnet: G's initialisation: ortho, N02 or glorot")
      ->capture_default_str()
      ->check(CLI::IsMember({"ortho", "N02", "glorot"}));
  app.add_option("--d-init", m.d_init, "sagan-resnet: D's initialisation: ortho, N02 or glorot")
      ->capture_default_str()
      ->check(CLI::IsMember({"ortho", "N02", "glorot"}));
  app.add_option("--seed", o.seed, "random seed (weights, noise, data order)")
      ->capture_default_str();
  app.add_option("--out", o.out, "output directory")->capture_default_str();
  app.add_option("--sample-every", o.sample_every, "steps between sample grids")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  app.add_option("--log-every", o.log_every, "steps between metric records / plain lines")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  app.add_option("--eval-every", o.eval_every,
                 "steps between evaluations (FD, KID, precision/recall, ...; 0: off); the best "
                 "FD's state goes to best.safetensors")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--eval-samples", o.eval_samples, "generated images per evaluation")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(2), int64_t(1) << 40));
  app.add_option("--eval-real", o.eval_real, "training images the samples are compared with")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(2), int64_t(1) << 40));
  app.add_option("--eval-classifier", o.eval_classifier,
                 "feature network (default: models/weights/fashion_mnist_classifier.safetensors)");
  app.add_option("--resume", o.resume, "continue the run in this directory (bit for bit)");
  app.add_option("--device", device, "auto, cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--math", o.math,
                 "float32 math: fp32 (strict, FMA), fp32-tc (fp32-accurate on tensor cores: "
                 "3xTF32 attention), tf32 (TF32 tensor cores in GEMMs, convolutions, attention)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "fp32-tc", "tf32"}));
  app.add_flag("--tf32", o.tf32, "the same as --math tf32");
  app.add_option("--precision", o.precision,
                 "fp32, or bf16: convolutions, GEMMs and attention on bf16 operands with float32 "
                 "accumulation; weights, optimiser, EMA, batch-norm and spectral-norm state, "
                 "softmax statistics and losses stay float32 (docs/precision.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_flag("--deterministic", o.deterministic,
               "cuDNN: only deterministic convolution algorithms, untimed (two runs on the same "
               "GPU and library are bitwise equal); default: the fastest measured, any");
  app.add_flag("--cuda-graph,!--no-cuda-graph", o.cuda_graph,
               "GPU: capture one whole iteration as a CUDA graph and replay it (default; "
               "--no-cuda-graph runs every step eagerly)");
  std::string profile_steps;
  app.add_option("--profile-steps", profile_steps,
                 "GPU: A:B brackets generator steps A..B with cudaProfilerStart/Stop (nsys "
                 "--capture-range=cudaProfilerApi; docs/profiling.md)");
  app.add_option("--dist-backend", o.dist_backend,
                 "data parallel (docs/distributed.md): auto (nccl on GPUs, mpi on CPUs, none for "
                 "one rank), mpi or nccl; ranks come from mpirun, srun or RANK/WORLD_SIZE")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "local", "mpi", "nccl"}));
  app.add_option("--dist-init", o.dist_init,
                 "nccl without MPI: file:PATH on a filesystem all ranks share, new for each job "
                 "(rank 0 writes NCCL's id there)");
  app.add_flag("--sync-bn", o.sync_bn,
               "data parallel: batch-norm statistics over the global batch (default: per rank)");
  app.add_option("--dist-check-every", o.dist_check_every,
                 "data parallel: compare every rank's whole state every K steps; stop on a "
                 "difference (0: never)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--progress", o.progress, "1 live bar, 0 plain lines, -1 auto")
      ->capture_default_str()
      ->check(CLI::IsMember({-1, 0, 1}));
  app.add_option("--inject-nan-at", o.inject_nan_at, "tests: make D's weights NaN at this step")
      ->group("");  // hidden
  app.add_option("--inject-checkpoint-error-at", o.inject_checkpoint_error_at,
                 "tests: rank 0's checkpoint write fails at this step")
      ->group("");  // hidden
  if (auto rc = gan::cli::parse(app, argc, argv, "gan_train")) return *rc;
  m.arch = models::parse_arch(arch);
  m.preset = models::parse_preset(preset);
  o.fit = gan::img::parse_fit(fit);
  if (!loss.empty()) o.loss = gan::train::parse_loss(loss);
  o.device = gan::train::parse_device_choice(device);
  if (!profile_steps.empty()) {
    long long a = 0, b = 0;
    char tail = 0;
    if (std::sscanf(profile_steps.c_str(), "%lld:%lld%c", &a, &b, &tail) != 2 || a < 1 || b < a) {
      std::fprintf(stderr,
                   "gan_train: --profile-steps must be A:B with 1 <= A <= B, got '%s' (see "
                   "--help)\n",
                   profile_steps.c_str());
      return 2;
    }
    o.profile_from = a, o.profile_to = b;
  }
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->count() == 0) continue;
    std::string key = opt->get_name();
    while (!key.empty() && key[0] == '-') key.erase(0, 1);
    for (char& c : key)
      if (c == '-') c = '_';
    o.given.insert(key);
  }
  try {
    const gan::train::Result r = gan::train::run(o);
    return r.stop_signal ? 128 + r.stop_signal : 0;
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    std::fflush(stdout);  // the error comes last, also when both go to one file
    std::fprintf(stderr, "%s%s\n",
                 msg.rfind("gan_train:", 0) == 0 ? "" : "gan_train: ", msg.c_str());
    gan::dist::abort_job(1);  // one rank of several: end them all, not just this one
    return 1;
  }
}
