// gan_bench: the time of one training iteration of the engine's DCGAN and SAGAN, for the configs
// and math modes of the PyTorch baseline (bench/torch_gan_bench.py, which prints the same fields),
// one JSON line per measurement (docs/gan_bench.md). Two loops:
//   anchor: the classic PyTorch GAN iteration: z, fake = G(z) once; D step on D(real) and
//           D(fake.detach()); G step on D(fake) through the same forward of G; both Adam steps.
//   train:  gan_train's own iteration (train::Stepper): the D step draws its fake without
//           gradient, the G step draws a fresh z and runs G again.
// Variants: fp32 (strict float32, eager), fp32tc (fp32-accurate on tensor cores: 3xTF32
// attention), tf32 (TF32 tensor cores in GEMMs, convolutions and attention), graph /
// graph_fp32tc / graph_tf32 (the whole iteration captured once as one CUDA graph and replayed),
// bf16 / graph_bf16 (bf16 precision: products on bf16 operands, float32 accumulation; PyTorch's
// torch.autocast(dtype=torch.bfloat16)); --precision bf16 runs every variant in bf16.
// Timing as the baseline's: warm-up iterations, then `reps` repeats of `iters` iterations between
// CUDA events, the median of the per-iteration means. On the CPU (or a build on the interpreter)
// the same code runs with host clocks, so CI keeps it building and running at a tiny config.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/adam.h"
#include "engine/device.h"
#include "engine/dist.h"
#include "engine/error.h"
#include "engine/host_memory.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/weight_cast.h"
#include "kernels/common.h"
#include "kernels/cpu/backend.h"
#include "models/gan.h"
#include "tools/programs/cli.h"
#include "tools/train/trainer.h"

#ifndef GAN_BENCH_BACKEND
#define GAN_BENCH_BACKEND "cuda"
#endif

namespace {

using namespace gan;
using ojson = nlohmann::ordered_json;
using train::set_requires_grad;

struct Config {
  std::string model;
  int img = 0, batch = 0;
  std::string name() const { return fmt::format("{}:{}:{}", model, img, batch); }
};

struct Settings {
  int iters = 50, reps = 5, warmup = 5;
  int64_t width = 64;
  int channels = 3;
  uint64_t seed = 0;
  Device dev = Device::CPU;
  std::string loss;   // train loop: gan_train's --loss (empty: the model's default)
  int n_dis = 0;      // train loop: D steps per iteration (0: the loss's default)
  bool arena = true;  // graph variants: the step's tensors in a capture arena
  bool bf16 = false;  // --precision bf16: every variant in bf16
  std::string dist;   // train loop: all-reduce through this backend at world size 1 ("": none)
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

Config parse_config(const std::string& s) {
  Config c;
  char model[16] = {0};
  char tail = 0;
  const std::string m = s.substr(0, s.find(':'));
  if (std::sscanf(s.c_str(), "%15[a-z-]:%d:%d%c", model, &c.img, &c.batch, &tail) != 3 ||
      (m != "dcgan" && m != "sagan" && m != "sagan-resnet") || c.batch < 1 ||
      (c.img != 32 && c.img != 64 && c.img != 128))
    throw Error(fmt::format(
        "gan_bench: --configs: '{}' is not model:img:batch (model dcgan, sagan or sagan-resnet, "
        "img 32, 64 or 128, batch >= 1)",
        s));
  c.model = model;
  return c;
}

int64_t count(nn::Module& m) {
  int64_t n = 0;
  for (auto& [name, p] : m.named_parameters()) n += p.value().numel();
  return n;
}

// The anchor loop's iteration (see the top of the file). D's parameters need no gradient in
// the G step: the engine skips that work, as gan_train does, and so does the PyTorch baseline
// (a plain PyTorch loop computes them there and zeroes them before D's next step).
class AnchorStep {
 public:
  AnchorStep(models::Gan& net, Adam& opt_g, Adam& opt_d, Generator& gen, train::Loss loss,
             int64_t batch)
      : net_(net), opt_g_(opt_g), opt_d_(opt_d), gen_(gen), bce_(loss == train::Loss::kBce) {
    z_ = Tensor::empty(Shape{batch, net.z_dim}, gen.device());
  }

  void iteration(const Tensor& real_batch) {
    WeightCastScope weight_casts;  // as gan_train's step: one bf16 rounding per weight and step
    set_requires_grad(*net_.d, true);
    set_requires_grad(*net_.g, true);
    gen_.normal_(z_);
    const Var fake = net_.g->forward(models::latent_input(net_, Var(z_)));
    const size_t mark = tape().size();  // G's forward: kept for the G step
    {
      GAN_NVTX("D step");
      const Var dr = net_.d->forward(Var(real_batch)), df = net_.d->forward(fake.detach());
      const Var loss_d =
          bce_ ? add(bce_with_logits(dr, 1.0), bce_with_logits(df, 0.0)) : hinge_d_loss(dr, df);
      zero_grad(opt_d_.params());
      backward(loss_d, Tensor(), /*retain_tape=*/true);
      opt_d_.step();
      auto& e = tape().entries();
      e.erase(e.begin() + std::ptrdiff_t(mark), e.end());  // D's step is done with its entries
    }
    {
      GAN_NVTX("G step");
      set_requires_grad(*net_.d, false);
      const Var out = net_.d->forward(fake);
      const Var loss_g = bce_ ? bce_with_logits(out, 1.0) : hinge_g_loss(out);
      zero_grad(opt_g_.params());
      backward(loss_g);
      opt_g_.step();
    }
  }

 private:
  models::Gan& net_;
  Adam &opt_g_, &opt_d_;
  Generator& gen_;
  bool bce_;
  Tensor z_;
};

double now_ms() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

// Median over s.reps repeats of the mean time (ms) of s.iters calls of f; also min and max.
struct Times {
  double median = 0, min = 0, max = 0;
};
Times time_iterations(const std::function<void()>& f, const Settings& s) {
  std::vector<double> ms;
  const bool gpu = s.dev == Device::CUDA;
  cudaEvent_t a = nullptr, b = nullptr;
  if (gpu) {
    GAN_CUDA_CHECK(cudaEventCreate(&a));
    GAN_CUDA_CHECK(cudaEventCreate(&b));
  }
  for (int r = 0; r < s.reps; ++r) {
    if (gpu) {
      GAN_CUDA_CHECK(cudaEventRecord(a, cuda::stream()));
      for (int i = 0; i < s.iters; ++i) f();
      GAN_CUDA_CHECK(cudaEventRecord(b, cuda::stream()));
      GAN_CUDA_CHECK(cudaEventSynchronize(b));
      float t = 0;
      GAN_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
      ms.push_back(double(t) / s.iters);
    } else {
      const double t0 = now_ms();
      for (int i = 0; i < s.iters; ++i) f();
      ms.push_back((now_ms() - t0) / s.iters);
    }
  }
  if (gpu) {
    GAN_CUDA_CHECK(cudaEventDestroy(a));
    GAN_CUDA_CHECK(cudaEventDestroy(b));
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

double round_to(double v, int digits) {
  const double p = std::pow(10.0, digits);
  return std::round(v * p) / p;
}

uint64_t pool_attr(cudaMemPoolAttr attr) {
  uint64_t v = 0;
  GAN_CUDA_CHECK(cudaMemPoolGetAttribute(cuda::context().pool, attr, &v));
  return v;
}

ojson bench(const Config& c, const std::string& variant, const std::string& loop,
            const Settings& s) {
  ojson r;
  r["model"] = c.model, r["img"] = c.img, r["batch"] = c.batch, r["variant"] = variant;
  r["loop"] = loop;
  if (cudnn_deterministic()) r["cudnn"] = "deterministic";
  const bool graph = variant.rfind("graph", 0) == 0;
  const MathMode math = variant.find("tf32") != std::string::npos     ? MathMode::kTF32
                        : variant.find("fp32tc") != std::string::npos ? MathMode::kAccurate
                                                                      : MathMode::kStrict;
  const Precision prec =
      variant.find("bf16") != std::string::npos || s.bf16 ? Precision::kBF16 : Precision::kFP32;
  if (graph && s.dev != Device::CUDA) {
    r["skipped"] = "CUDA graphs need the GPU (or the interpreter build)";
    return r;
  }
  set_math_mode(math);  // before the models: cuDNN plans pick their math when made
  set_precision(prec);
  r["math"] = math_mode_name(math);
  r["precision"] = precision_name(prec);

  train::Options o;
  models::ModelConfig& mc = o.model;
  mc.arch = models::parse_arch(c.model), mc.image_size = c.img, mc.channels = s.channels;
  mc.ngf = mc.ndf = s.width;
  // The ResNet SAGAN as published: class-conditional, 10 classes, gan_train's iteration only.
  const bool resnet = mc.arch == models::Arch::kSaganResnet;
  if (resnet) mc.num_classes = 10;
  if (resnet && loop == "anchor") {
    r["skipped"] = "the anchor loop has no labels: sagan-resnet runs --loops train";
    return r;
  }
  o.batch_size = c.batch, o.seed = s.seed, o.steps = 1;
  if (loop == "train") {
    if (!s.loss.empty()) o.loss = train::parse_loss(s.loss);
    o.n_dis = s.n_dis;
  }
  o = train::resolve(o);
  Generator gen(s.seed, s.dev);
  models::Gan net = models::build(o.model, gen);
  AdamOptions ag, ad;
  ag.lr = o.lr_g, ad.lr = o.lr_d;
  ag.beta1 = ad.beta1 = o.beta1, ag.beta2 = ad.beta2 = o.beta2;
  Adam opt_g(net.g->parameters(), ag), opt_d(net.d->parameters(), ad);
  Tensor real = Tensor::empty(Shape{c.batch, c.img, c.img, s.channels}, s.dev);
  gen.uniform_(real, -1.0, 1.0);
  const std::vector<Tensor> reals(size_t(o.n_dis), real);  // one real batch per D step

  std::unique_ptr<AnchorStep> anchor;
  std::unique_ptr<dist::Communicator> comm;  // before the stepper, which uses it
  std::unique_ptr<train::Stepper> stepper;
  std::function<void()> it;
  if (loop == "anchor") {
    anchor = std::make_unique<AnchorStep>(net, opt_g, opt_d, gen, o.loss, c.batch);
    it = [&] { anchor->iteration(real); };
  } else {
    if (!s.dist.empty()) comm = dist::make_communicator(dist::Launch{}, s.dev, s.dist);
    stepper = std::make_unique<train::Stepper>(o, net, nullptr, opt_g, opt_d, gen, comm.get());
    if (resnet) {  // fixed labels: every class in turn (their values do not change the work)
      std::vector<int32_t> y(size_t(c.batch));
      for (size_t i = 0; i < y.size(); ++i) y[i] = int32_t(i % 10);
      const Tensor onehot = models::one_hot(y, 10, s.dev);
      stepper->set_labels(std::vector<Tensor>(size_t(o.n_dis), onehot),
                          std::vector<Tensor>(size_t(o.n_dis) + 1, onehot));
    }
    it = [&] { stepper->iteration(reals); };
  }

  const double t0 = now_ms();
  std::unique_ptr<train::IterationGraph> g;
  if (graph) {
    // Eager first: cuDNN plans, workspace sizes, and the allocations that size the arena.
    cuda::AllocationTrace trace;
    cuda::begin_allocation_trace(&trace);
    it();
    cuda::begin_allocation_trace(nullptr);
    g = std::make_unique<train::IterationGraph>(std::vector<nn::Module*>{net.g.get(), net.d.get()},
                                                it, s.arena ? cuda::arena_bytes_for(trace) : 0);
    for (int i = 0; i < s.warmup; ++i) g->replay();
  } else {
    for (int i = 0; i < s.warmup; ++i) it();
  }
  if (s.dev == Device::CUDA) {
    cuda::synchronize();
    uint64_t zero = 0;
    GAN_CUDA_CHECK(
        cudaMemPoolSetAttribute(cuda::context().pool, cudaMemPoolAttrUsedMemHigh, &zero));
  }
  const double warm_s = (now_ms() - t0) / 1e3;
  const Times t = time_iterations(g ? std::function<void()>([&] { g->replay(); }) : it, s);
  r["ms_per_iter"] = round_to(t.median, 4);
  r["img_per_s"] = round_to(c.batch / t.median * 1e3, 1);
  r["min_ms"] = round_to(t.min, 4);
  r["max_ms"] = round_to(t.max, 4);
  r["warmup_s"] = round_to(warm_s, 1);
  if (s.dev == Device::CUDA) {
    // The pool's high-water mark of memory in use while timing: parameters, Adam's state,
    // activations, gradients and the cuDNN workspace (cuBLAS's fixed workspace is outside it).
    r["peak_mem_mb"] = round_to(double(pool_attr(cudaMemPoolAttrUsedMemHigh)) / (1 << 20), 1);
    r["reserved_mb"] =
        round_to(double(pool_attr(cudaMemPoolAttrReservedMemCurrent)) / (1 << 20), 1);
  } else {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    r["peak_rss_mb"] = round_to(double(ru.ru_maxrss) / 1024.0, 1);  // the process's, so far
    // Where it goes: CPU tensors at their high-water mark, and with the engine's free lists.
    const host_memory::Stats hm = host_memory::stats();
    r["tensors_peak_mb"] = round_to(double(hm.peak_live) / (1 << 20), 1);
    r["tensors_and_cache_peak_mb"] = round_to(double(hm.peak_total) / (1 << 20), 1);
  }
  r["params_G"] = count(*net.g);
  r["params_D"] = count(*net.d);
  if (g) {
    r["graph_nodes"] = g->nodes();
    r["graph_arena_mb"] = double(g->arena_bytes()) / (1 << 20);
    if (g->arena_fallbacks()) r["graph_arena_fallbacks"] = g->arena_fallbacks();
  }
  if (loop == "train" && (!s.loss.empty() || s.n_dis))
    r["loss"] = train::loss_name(o.loss), r["n_dis"] = o.n_dis;
  if (comm) r["dist"] = comm->backend();
  if (s.width != 64) r["width"] = s.width;
  if (s.channels != 3) r["channels"] = s.channels;
  g.reset();
  if (s.dev == Device::CUDA) cuda::synchronize();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gan_bench: time one training iteration of the engine's DCGAN/SAGAN (docs/gan_bench.md)"};
  std::string configs =
      "dcgan:32:64,sagan:32:64,dcgan:64:64,sagan:64:64,sagan:128:64,dcgan:64:256,sagan:64:256";
  std::string variants = "fp32,tf32,graph,graph_tf32", loops = "anchor,train", device = "auto";
  Settings s;
  app.add_option("--configs", configs, "model:img:batch,... (the anchor script's)")
      ->capture_default_str();
  app.add_option("--variants", variants,
                 "fp32, fp32tc, tf32, bf16, graph, graph_fp32tc, graph_tf32, graph_bf16")
      ->capture_default_str();
  std::string precision = "fp32";
  app.add_option("--precision", precision, "fp32, or bf16 for every variant")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--loops", loops, "anchor (the anchor script's iteration), train (gan_train's)")
      ->capture_default_str();
  app.add_option("--iters", s.iters, "iterations per timed repeat")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--reps", s.reps, "timed repeats (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--warmup", s.warmup, "warm-up iterations")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  app.add_option("--width", s.width, "ngf = ndf (SAGAN conv_dim); the anchor's is 64")
      ->capture_default_str()
      ->check(CLI::Range(8, 4096));
  app.add_option("--channels", s.channels, "image channels (the anchor's: 3)")
      ->capture_default_str()
      ->check(CLI::IsMember({1, 3}));
  app.add_option("--seed", s.seed, "seed of weights, data and noise")->capture_default_str();
  app.add_option("--loss", s.loss, "train loop: bce, hinge, wgan or wgan-gp (the penalty step)")
      ->check(CLI::IsMember({"bce", "hinge", "wgan", "wgan-gp"}));
  app.add_option("--n-dis", s.n_dis, "train loop: D steps per iteration (default: the loss's)")
      ->check(CLI::Range(1, 100));
  app.add_option("--device", device, "auto, cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--dist-backend", s.dist,
                 "train loop: the data-parallel path at world size 1 (gradients and scalars "
                 "all-reduced through nccl or mpi inside the step), to measure its overhead")
      ->check(CLI::IsMember({"nccl", "mpi"}));
  app.add_flag("!--no-arena", s.arena,
               "graph variants: the step's tensors as graph allocation nodes, not in an arena");
  bool deterministic = false;
  app.add_flag("--deterministic", deterministic,
               "cuDNN: deterministic algorithms only, untimed (gan_train --deterministic)");
  if (auto rc = cli::parse(app, argc, argv, "gan_bench")) return *rc;
  if (deterministic) set_cudnn_deterministic(true);
  s.bf16 = precision == "bf16";
  std::vector<Config> cfgs;
  try {
    for (const std::string& c : split(configs)) cfgs.push_back(parse_config(c));
    for (const std::string& v : split(variants))
      GAN_CHECK(v == "fp32" || v == "fp32tc" || v == "tf32" || v == "bf16" || v == "graph" ||
                    v == "graph_fp32tc" || v == "graph_tf32" || v == "graph_bf16",
                "gan_bench: --variants: unknown variant '" + v +
                    "' (fp32, fp32tc, tf32, bf16, graph, graph_fp32tc, graph_tf32, graph_bf16)");
    for (const std::string& l : split(loops))
      GAN_CHECK(l == "anchor" || l == "train",
                "gan_bench: --loops: unknown loop '" + l + "' (anchor, train)");
    GAN_CHECK(!cfgs.empty() && !split(variants).empty() && !split(loops).empty(),
              "gan_bench: nothing to measure (empty --configs, --variants or --loops)");
    if (device == "cuda")
      GAN_CHECK(cuda_available(), "gan_bench: --device cuda but no CUDA device is available");
    s.dev = device == "cpu" || !cuda_available() ? Device::CPU : Device::CUDA;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }

  ojson head;
  head["engine"] = "gan-engine";
  head["backend"] = s.dev == Device::CUDA ? GAN_BENCH_BACKEND : "cpu";
  std::string gpu = "none";
  if (s.dev == Device::CUDA) {
    cudaDeviceProp p{};
    GAN_CUDA_CHECK(cudaGetDeviceProperties(&p, cuda::context().device));
    gpu = p.name;
  }
  head["gpu"] = gpu;
  if (s.dev == Device::CPU) {
    head["threads"] = kernels::cpu::num_threads();
    head["cpu_backend"] = kernels::cpu::describe();
  }
  std::printf("%s\n", head.dump().c_str());
  std::fflush(stdout);
  int failures = 0;
  for (const Config& c : cfgs)
    for (const std::string& v : split(variants))
      for (const std::string& l : split(loops)) {
        ojson r;
        try {
          r = bench(c, v, l, s);
        } catch (const std::exception& e) {
          r = ojson{{"model", c.model}, {"img", c.img}, {"batch", c.batch},
                    {"variant", v},     {"loop", l},    {"error", e.what()}};
          ++failures;
          if (s.dev == Device::CUDA) (void)cudaGetLastError();
          tape().clear();
        }
        std::printf("%s\n", r.dump().c_str());
        std::fflush(stdout);
      }
  if (failures) std::fprintf(stderr, "gan_bench: %d measurement(s) failed\n", failures);
  return failures ? 1 : 0;
}
