// gan_train on the CPU: short runs of each model on a Fashion-MNIST subset, checkpoints, bitwise
// resume, the non-finite-loss stop, and every bad-input case through the real binary.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/adam.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/random.h"
#include "kernels/bf16.h"
#include "models/gan.h"
#include "tests/harness.h"
#include "tests/trainer_helpers.h"
#include "tools/eval/feature_nets.h"
#include "tools/io/checkpoint.h"
#include "tools/io/data.h"
#include "tools/io/prepared.h"
#include "tools/io/safetensors.h"
#include "tools/train/trainer.h"

namespace fs = std::filesystem;
using namespace gan;
using gan::test::fashion_subset;
using gan::test::fashion_subset_labelled;
using gan::test::gan_train_bin;
using gan::test::last_line;
using gan::test::put_be32;
using gan::test::scratch;

namespace {

// A small run: tiny widths keep the CPU time down; every output still gets written.
train::Options tiny(const std::string& model, const fs::path& out, int64_t steps) {
  train::Options o;
  o.model.arch = models::parse_arch(model);
  o.data = fashion_subset(256).string();
  o.model.image_size = 32;
  o.model.ngf = o.model.ndf = 8;
  o.batch_size = 8;
  o.steps = steps;
  o.out = out.string();
  o.device = train::DeviceChoice::kCpu;
  o.log_every = 1;
  o.sample_every = steps;
  o.checkpoint_every = steps;
  o.progress = 0;
  return o;
}

// Resumes the run in `dir` on the CPU until `steps`.
train::Result resume_to(const fs::path& dir, int64_t steps) {
  train::Options o;
  o.resume = dir.string();
  o.steps = steps;
  o.given = {"steps"};
  o.progress = 0;
  o.device = train::DeviceChoice::kCpu;
  return train::run(o);
}

std::vector<nlohmann::json> metrics(const fs::path& out) {
  std::vector<nlohmann::json> m;
  std::ifstream in(out / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) m.push_back(nlohmann::json::parse(line));
  return m;
}

struct Proc {
  int code;
  std::string output;
};

// Runs gan_train with args; stdout and stderr together.
Proc gan_train(const std::string& args) {
  const std::string cmd = gan_train_bin() + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// gan_train `common` + g (CUDA graphs, the default) and `common` + e --no-cuda-graph: both
// succeed and write the same checkpoint bit for bit.
void require_graph_equals_eager(const std::string& common, const fs::path& e, const fs::path& g) {
  const Proc pg = gan_train(common + g.string());
  INFO(pg.output);
  REQUIRE(pg.code == 0);
  const Proc pe = gan_train(common + e.string() + " --no-cuda-graph");
  INFO(pe.output);
  REQUIRE(pe.code == 0);
  gan::test::require_same_checkpoint(e, g);
}

}  // namespace

TEST_CASE("trainer: each model learns to discriminate on a Fashion-MNIST subset",
          "[trainer][cpu]") {
  // At initialisation D's logits are near 0, so its loss starts near the chance value: 2 for the
  // hinge loss (relu(1 - 0) + relu(1 + 0)), 2 ln 2 for BCE. Within a few dozen D steps on real
  // Fashion-MNIST against a barely trained G it must fall well below it.
  for (const auto& [model, chance] :
       {std::pair{"sagan", 2.0}, std::pair{"dcgan", 2 * std::log(2.0)}}) {
    INFO(model);
    const fs::path out = scratch(std::string("learn_") + model);
    train::Options o = tiny(model, out, 30);
    const train::Result r = train::run(o);
    CHECK(r.steps == 30);
    const auto m = metrics(out);
    REQUIRE(m.size() == 30);
    const double first = m.front()["loss_d"], last = m.back()["loss_d"];
    INFO("loss_d first " << first << " last " << last);
    CHECK(std::fabs(first - chance) < 0.35 * chance);
    CHECK(last < 0.75 * chance);
    CHECK(fs::exists(out / "samples" / "step_0000030.png"));
    CHECK(fs::exists(out / "checkpoint.safetensors"));
    CHECK(!fs::is_empty(out / "tensorboard"));
    if (std::string(model) == "sagan") {
      CHECK(m.back().contains("G.gamma.0"));
      CHECK(m.back().contains("D.sigma.0"));
    }
  }
}

TEST_CASE("trainer: --eval-every logs every metric and keeps the best FD's state",
          "[trainer][cpu]") {
  const fs::path out = scratch("eval_every");
  const fs::path cache = scratch("eval_every_cache");
  REQUIRE(setenv("XDG_CACHE_HOME", cache.c_str(), 1) == 0);
  Generator gen(11);
  eval::ClassifierConfig cfg;
  cfg.width = 4, cfg.features = 16;
  eval::Classifier cls(cfg, gen);  // untrained: the pipeline, not the numbers, is tested here
  const std::string cls_path = (cache / "classifier.safetensors").string();
  eval::save_classifier(cls_path, cls, {});
  train::Options o = tiny("dcgan", out, 6);
  o.eval_every = 3, o.eval_samples = 40, o.eval_real = 60, o.eval_classifier = cls_path;
  CHECK(train::run(o).steps == 6);
  std::vector<nlohmann::json> evals;
  for (const auto& line : metrics(out))
    if (line.contains("eval")) evals.push_back(line);
  REQUIRE(evals.size() == 2);
  CHECK(evals[0]["step"] == 3);
  CHECK(evals[1]["step"] == 6);
  double best = INFINITY;
  int64_t best_step = 0;
  for (const auto& e : evals) {
    for (const char* k :
         {"fd", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "is_mean"})
      CHECK(std::isfinite(e["eval"][k].get<double>()));
    int64_t total = 0;
    for (const auto& c : e["eval"]["class_histogram"]) total += c.get<int64_t>();
    CHECK(total == 40);
    CHECK(e["eval"]["real_count"] == 60);
    if (e["eval"]["fd"].get<double>() < best) best = e["eval"]["fd"], best_step = e["step"];
  }
  // best.safetensors: a full checkpoint of the lowest FD's step, loadable like the last one.
  const st::File b = st::read_file((out / "best.safetensors").string());
  CHECK(std::stod(b.meta("eval_fd")) == Approx(best).epsilon(1e-12));
  CHECK(b.meta("eval_step") == std::to_string(best_step));
  CHECK(b.int64s("train.step").at(0) == best_step);
  CHECK(ckpt::load_gan((out / "best.safetensors").string(), Device::CPU).net.g != nullptr);
  // The real images' features were cached (one file, keyed by data, view and classifier).
  int cached = 0;
  for (const auto& f : fs::directory_iterator(cache / "gan_eval"))
    cached += f.path().filename().string().starts_with("features-");
  CHECK(cached == 1);
}

TEST_CASE("trainer: the checkpoint holds G D optimizers and state in PyTorch's names",
          "[trainer][cpu]") {
  const fs::path out = scratch("ckpt");
  train::Options o = tiny("sagan", out, 3);
  o.ema = 0.99;
  train::run(o);
  const st::File f = st::read_file((out / "checkpoint.safetensors").string());
  CHECK(f.meta("format") == "gan-engine checkpoint v1");
  CHECK(f.int64s("train.step") == std::vector<int64_t>{3});
  // SN conv transpose 128 -> 32 (ngf 8 at 32 px: 8 << 2): PyTorch (in, out, kh, kw).
  CHECK(f.get("G.0.weight_orig").shape == std::vector<int64_t>{128, 32, 4, 4});
  CHECK(f.has("G.0.weight_u"));
  CHECK(f.has("G.1.running_var"));
  CHECK(f.get("G.1.num_batches_tracked").dtype == "I64");
  CHECK(f.has("D.0.weight_orig"));
  CHECK(f.get("D.0.weight_orig").shape == std::vector<int64_t>{8, 1, 4, 4});  // (out, in, kh, kw)
  CHECK(f.has("G_ema.0.weight_orig"));
  CHECK(f.has("opt_g.exp_avg.0.weight_orig"));
  CHECK(f.int64s("opt_d.step") == std::vector<int64_t>{3});
  CHECK(f.has("rng.generator"));
  CHECK(f.int64s("loader.position") == std::vector<int64_t>{0, 3});
}

// [heavy]: 184 s under ASan (the checkpoint round trip is also in the shorter resume cases
// there); the main build runs it.
TEST_CASE("trainer: 200 steps straight equal 100 steps then a resume for 100 more",
          "[trainer][cpu][heavy]") {
  for (const char* model : {"sagan", "dcgan"}) {
    INFO(model);
    const fs::path a = scratch(std::string("straight_") + model);
    const fs::path b = scratch(std::string("resumed_") + model);
    train::Options oa = tiny(model, a, 200);
    oa.ema = 0.9;
    oa.checkpoint_every = 100;
    oa.log_every = 25;
    train::run(oa);
    train::Options ob = tiny(model, b, 100);
    ob.log_every = 25;
    ob.ema = 0.9;
    train::run(ob);
    CHECK(resume_to(b, 200).steps == 200);
    gan::test::require_same_checkpoint(a, b);  // bit for bit
  }
}

TEST_CASE("trainer: a prepared file trains bit for bit as its IDX source, and resumes so",
          "[trainer][cpu]") {
  const fs::path idx = scratch("prepared_idx"), prep = scratch("prepared_file"),
                 halfway = scratch("prepared_halfway");
  const std::string file = (scratch("prepared_data") / "fm.gands").string();
  data::PrepareOptions po;
  po.size = 28;  // Fashion-MNIST's own size: the pixels as they are
  po.fit = img::Fit::Pad;
  data::prepare(fashion_subset(256).string(), file, po);
  train::Options oa = tiny("dcgan", idx, 40);
  oa.hflip = true;
  train::run(oa);
  train::Options ob = tiny("dcgan", prep, 40);
  ob.hflip = true;
  ob.data = file;
  train::run(ob);
  gan::test::require_same_checkpoint(idx, prep);
  train::Options oc = tiny("dcgan", halfway, 20);  // 20 steps, then a resume to 40 (over an epoch)
  oc.hflip = true;
  oc.data = file;
  train::run(oc);
  CHECK(resume_to(halfway, 40).steps == 40);
  gan::test::require_same_checkpoint(idx, halfway);
}

TEST_CASE("trainer: a non-finite loss stops the run with the last checkpoint intact",
          "[trainer][cpu]") {
  const fs::path out = scratch("nan");
  train::Options o = tiny("dcgan", out, 20);
  o.checkpoint_every = 5;
  o.inject_nan_at = 8;
  CHECK_THROWS_WITH(train::run(o), Catch::Contains("non-finite loss at step 8") &&
                                       Catch::Contains("the first non-finite step was 8") &&
                                       Catch::Contains("the last good checkpoint"));
  const st::File f = st::read_file((out / "checkpoint.safetensors").string());
  CHECK(f.int64s("train.step") == std::vector<int64_t>{5});
  // Seen later than it happened (logging and checkpoints every 10 steps): the device-side guard
  // still names the step that first produced it, also in a resumed run.
  const fs::path out2 = scratch("nan_late");
  train::Options o2 = tiny("dcgan", out2, 20);
  o2.checkpoint_every = o2.log_every = 5;
  o2.steps = 5;
  train::run(o2);
  train::Options r = o2;
  r.resume = out2.string(), r.steps = 20, r.log_every = 10, r.checkpoint_every = 10;
  r.inject_nan_at = 7;
  r.given = {"steps", "log_every", "checkpoint_every"};
  CHECK_THROWS_WITH(train::run(r), Catch::Contains("non-finite loss at step 10") &&
                                       Catch::Contains("the first non-finite step was 7"));
  CHECK(st::read_file((out2 / "checkpoint.safetensors").string()).int64s("train.step") ==
        std::vector<int64_t>{5});
  // The same guard in bf16 precision (SAGAN: convolutions and attention in bf16).
  const fs::path out3 = scratch("nan_bf16");
  train::Options o3 = tiny("sagan", out3, 20);
  o3.checkpoint_every = 5, o3.log_every = 10;
  o3.precision = "bf16";
  o3.inject_nan_at = 6;
  CHECK_THROWS_WITH(train::run(o3), Catch::Contains("non-finite loss at step 10") &&
                                        Catch::Contains("the first non-finite step was 6"));
  CHECK(st::read_file((out3 / "checkpoint.safetensors").string()).int64s("train.step") ==
        std::vector<int64_t>{5});
  CHECK(precision() == Precision::kFP32);  // train::run restores the caller's precision
  for (const auto& e : f.entries) {
    if (e.dtype != "F32") continue;
    const float* v = reinterpret_cast<const float*>(e.bytes.data());
    for (int64_t i = 0; i < e.numel(); ++i) REQUIRE(std::isfinite(v[i]));
  }
}

TEST_CASE("trainer: WGAN-GP and R1 runs write every output and log the penalty", "[trainer][cpu]") {
  struct Run {
    const char* model;
    const char* loss;
    double r1;
    int r1_every;
    const char* key;
  };
  for (const Run& c :
       {Run{"sagan", "wgan-gp", 0, 1, "gradient_penalty"},
        Run{"dcgan", "wgan-gp", 0, 1, "gradient_penalty"}, Run{"dcgan", "bce", 10, 1, "r1_penalty"},
        Run{"sagan", "hinge", 10, 2, "r1_penalty"}}) {
    INFO(c.model << " " << c.loss << " r1 " << c.r1 << " every " << c.r1_every);
    const fs::path out = scratch(std::string("penalty_") + c.model + "_" + c.loss);
    train::Options o = tiny(c.model, out, 6);
    o.loss = train::parse_loss(c.loss);
    o.r1 = c.r1;
    o.r1_every = c.r1_every;
    const train::Result r = train::run(o);
    CHECK(r.steps == 6);
    const auto m = metrics(out);
    REQUIRE(m.size() == 6);
    for (const auto& row : m) {
      REQUIRE(row.contains(c.key));
      REQUIRE(row.contains("grad_norm"));
      CHECK(std::isfinite(row[c.key].get<double>()));
      CHECK(row["grad_norm"].get<double>() > 0);
    }
    CHECK(fs::exists(out / "samples" / "step_0000006.png"));
    CHECK(fs::exists(out / "checkpoint.safetensors"));
    CHECK(!fs::is_empty(out / "tensorboard"));
    CHECK(fs::exists(out / "metrics.jsonl"));
    const auto config = nlohmann::json::parse(
        gan::st::read_file((out / "checkpoint.safetensors").string()).meta("config"));
    if (std::string(c.loss) == "wgan-gp") {
      // The paper's settings unless given: 5 critic steps, Adam 1e-4, betas (0, 0.9).
      CHECK(config.at("n_dis") == 5);
      CHECK(config.at("lr_d") == 1e-4);
      CHECK(config.at("beta1") == 0.0);
      CHECK(config.at("beta2") == 0.9);
      // The penalty pulls DCGAN's critic's input-gradient norm towards 1 within a few steps
      // (SAGAN's spectrally normalised critic starts far below 1 and gets there more slowly).
      if (std::string(c.model) == "dcgan")
        CHECK(std::fabs(m.back()["grad_norm"].get<double>() - 1.0) < 0.5);
    }
  }
}

namespace {

// A module after one iteration against PyTorch's float64 one (fixture tensors in PyTorch's names
// and layouts): each parameter's gradient (grad_prefix + name) to 1e-4 of the tensor's largest
// element, its value after Adam (state_prefix + name) to 5e-5 absolute, and every float buffer
// (spectral-norm vectors, batch-norm statistics) to 1e-4. Adam's first step moves a weight by
// about lr whatever |g| is, except for gradients near eps (1e-8), where float32's rounding of g
// shows: an element whose gradient is within 100 eps of zero (a bias before batch norm: zero but
// for rounding) may move by anything up to one step, lr, in either direction (seen: 5.1e-5 on an
// AVX2 machine, below 5e-5 with AVX-512).
void check_step_state(const gan::st::File& f, const std::string& grad_prefix,
                      const std::string& state_prefix, nn::Module& module, double lr) {
  std::map<std::string, nn::TorchLayout> layout_of;
  for (const auto& [name, l] : module.named_layouts()) layout_of[name] = l;
  const auto layouts = [&](const std::string& name) {
    return layout_of.count(name) ? layout_of.at(name) : nn::TorchLayout{};
  };
  for (const auto& [name, p] : module.named_parameters()) {
    INFO(state_prefix << name);
    const Tensor want = Tensor::empty(p.shape(), Device::CPU);
    ckpt::from_torch(f.tensor(grad_prefix + name), layouts(name), want);
    const auto g_want = want.to_vector();
    double g_max = 0;
    for (float x : g_want) g_max = std::max(g_max, double(std::fabs(x)));
    // A bias right before batch norm has a zero gradient but for rounding (PyTorch's float64:
    // about 1e-10; float32 here: a few 1e-7): bounded absolutely.
    if (g_max < 1e-5)
      CHECK(gan::test::max_rel_error(p.grad().to(Device::CPU), want) * 1e-3 < 2e-6);
    else
      CHECK(gan::test::max_rel_error(p.grad().to(Device::CPU), want) < 1e-4);
    ckpt::from_torch(f.tensor(state_prefix + name), layouts(name), want);
    const auto got = p.value().to_vector(), w = want.to_vector();
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i)
      if (std::fabs(g_want[i]) > 1e-6)
        worst = std::max(worst, double(std::fabs(got[i] - w[i])));
      else
        CHECK(std::fabs(got[i] - w[i]) <= 1.01 * lr);
    CHECK(worst < 5e-5);
  }
  for (const auto& [name, b] : module.named_buffers()) {
    if (b.dtype() != DType::F32) continue;  // num_batches_tracked
    INFO(state_prefix << name << " (buffer)");
    const Tensor want = Tensor::empty(b.shape(), Device::CPU);
    ckpt::from_torch(f.tensor(state_prefix + name), layouts(name), want);
    CHECK(gan::test::max_rel_error(b.to(Device::CPU), want) < 1e-4);
  }
}

void check_wgan_gp_step(Device dev) {
  // tools/scripts/fixtures/make_wgan_gp_step.py: the same weights, real batch, z and interpolation
  // weights through torch.autograd.grad(..., create_graph=True) and Adam, in float64.
  const gan::st::File f = gan::st::read_file(gan::test::fixture_path("wgan_gp_step.safetensors"));
  train::Options o;
  models::ModelConfig& mc = o.model;
  mc.arch = models::Arch::kSagan, mc.image_size = 32, mc.channels = 1, mc.z_dim = 16;
  mc.ngf = mc.ndf = 8;
  o.batch_size = 4, o.loss = train::Loss::kWganGp, o.n_dis = 1, o.steps = 1;
  o = train::resolve(o);
  Generator gen(0, dev);
  models::Gan net = models::build(o.model, gen);
  ckpt::load_module(f, "G0.", *net.g);
  ckpt::load_module(f, "D0.", *net.d);
  AdamOptions a;
  a.lr = o.lr_d, a.beta1 = o.beta1, a.beta2 = o.beta2;
  CHECK(a.lr == 1e-4);
  Adam opt_g(net.g->parameters(), a), opt_d(net.d->parameters(), a);
  train::Stepper stepper(o, net, nullptr, opt_g, opt_d, gen);
  stepper.use_fixed_noise({f.tensor("z1", dev), f.tensor("z2", dev)}, {f.tensor("eps", dev)});
  stepper.iteration({f.tensor("real", dev)});

  const auto stats = stepper.stats().to_vector();
  const auto scalar = [&](const char* k) { return double(f.tensor(k).to_vector()[0]); };
  CHECK(stats[0] == Approx(scalar("loss_d")).epsilon(1e-4));
  CHECK(stats[4] == Approx(scalar("penalty")).epsilon(1e-4));
  CHECK(stats[1] == Approx(scalar("loss_g")).epsilon(1e-4));
  // Gradients (D's from its step, G's from its step) and the state after both Adam steps;
  // float32 here against float64 there.
  check_step_state(f, "gradD.", "D1.", *net.d, a.lr);
  check_step_state(f, "gradG.", "G1.", *net.g, a.lr);
}

// tools/scripts/fixtures/make_studiogan_step.py: one iteration of StudioGAN's ResNet SAGAN
// (hinge, n_dis 2, TTUR 1e-4 / 4e-4 with betas (0, 0.999), EMA 0.9) from the same weights,
// batches, labels and noise, in float64.
void check_studiogan_step(Device dev, bool conditional, bool bf16 = false);

void compare_bf16_grads(const gan::st::File& f, const std::string& ref_prefix,
                        const std::string& torch_prefix, nn::Module& net, const std::string& what);

void check_studiogan_step(Device dev, bool conditional, bool bf16) {
  PrecisionScope precision(bf16 ? Precision::kBF16 : Precision::kFP32);
  const gan::st::File f = gan::st::read_file(gan::test::fixture_path("studiogan_step.safetensors"));
  const std::string v = conditional ? "c." : "u.";
  train::Options o;
  models::ModelConfig& mc = o.model;
  mc.arch = models::Arch::kSaganResnet, mc.image_size = 32, mc.channels = 3, mc.z_dim = 16;
  mc.ngf = mc.ndf = 4;
  mc.num_classes = conditional ? 10 : 0;
  o.batch_size = 4, o.n_dis = 2, o.steps = 1, o.ema = 0.9;
  o.lr_g = 1e-4, o.lr_d = 4e-4, o.beta1 = 0.0, o.beta2 = 0.999;
  o = train::resolve(o);
  REQUIRE(o.loss == train::Loss::kHinge);
  Generator gen(0, dev);
  models::Gan net = models::build(o.model, gen), ema = models::build(o.model, gen);
  ckpt::load_module(f, v + "G0.", *net.g);
  ckpt::load_module(f, v + "D0.", *net.d);
  ckpt::load_module(f, v + "G0.", *ema.g);
  AdamOptions ag, ad;
  ag.lr = o.lr_g, ad.lr = o.lr_d;
  ag.beta1 = ad.beta1 = o.beta1, ag.beta2 = ad.beta2 = o.beta2;
  Adam opt_g(net.g->parameters(), ag), opt_d(net.d->parameters(), ad);
  train::Stepper stepper(o, net, &ema, opt_g, opt_d, gen);
  stepper.use_fixed_noise(
      {f.tensor(v + "z0", dev), f.tensor(v + "z1", dev), f.tensor(v + "z2", dev)}, {});
  if (conditional)
    stepper.set_labels(
        {f.tensor(v + "yreal0", dev), f.tensor(v + "yreal1", dev)},
        {f.tensor(v + "yfake0", dev), f.tensor(v + "yfake1", dev), f.tensor(v + "yfake2", dev)});
  stepper.iteration({f.tensor(v + "real0", dev), f.tensor(v + "real1", dev)});
  const auto stats = stepper.stats().to_vector();
  if (bf16) {  // bf16 activations (conditional batch norm among them), as check_bf16_step
    for (auto [i, name] : {std::pair{0, "loss_d"}, std::pair{1, "loss_g"}}) {
      const double ref = f.floats(v + name)[0], torch = f.floats(v + "bf16." + name)[0];
      const double e_engine = std::fabs(stats[size_t(i)] - ref) / std::max(std::fabs(ref), 1e-3);
      const double e_torch = std::fabs(torch - ref) / std::max(std::fabs(ref), 1e-3);
      std::printf("  StudioGAN %s bf16 %s: engine error %.1e, PyTorch autocast %.1e\n",
                  conditional ? "conditional" : "unconditional", name, e_engine, e_torch);
      // Four bf16 roundings (2^-8 relative each) or four times PyTorch's error: a loss is a mean
      // of four hinge terms here, each a bf16 output, so PyTorch's can be luckily small.
      CHECK(e_engine < std::max(4 * e_torch, 4.0 / 256));
    }
    compare_bf16_grads(f, v + "gradD.", v + "bf16.gradD.", *net.d, "StudioGAN " + v + "D");
    compare_bf16_grads(f, v + "gradG.", v + "bf16.gradG.", *net.g, "StudioGAN " + v + "G");
    return;
  }
  CHECK(stats[0] == Approx(double(f.floats(v + "loss_d")[0])).epsilon(1e-4));
  CHECK(stats[1] == Approx(double(f.floats(v + "loss_g")[0])).epsilon(1e-4));
  check_step_state(f, v + "gradD.", v + "D1.", *net.d, o.lr_d);
  check_step_state(f, v + "gradG.", v + "G1.", *net.g, o.lr_g);
  // The EMA: 0.9 G0 + 0.1 G1, to a tenth of the state's bound.
  std::map<std::string, nn::TorchLayout> layout_of;
  for (const auto& [name, l] : ema.g->named_layouts()) layout_of[name] = l;
  for (const auto& [name, p] : ema.g->named_parameters()) {
    INFO("G_ema." << name);
    const Tensor want = Tensor::empty(p.shape(), Device::CPU);
    ckpt::from_torch(f.tensor(v + "Gema." + name),
                     layout_of.count(name) ? layout_of.at(name) : nn::TorchLayout{}, want);
    const auto got = p.value().to_vector(), w = want.to_vector();
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i)
      worst = std::max(worst, double(std::fabs(got[i] - w[i])));
    CHECK(worst < 1.01e-5);
  }
}

}  // namespace

TEST_CASE("gan_train: WGAN-GP with DCGAN's batch-normalised critic warns and trains",
          "[trainer][cpu]") {
  const fs::path out = scratch("wgan_gp_warning");
  const Proc p = gan_train(
      "--device cpu --model dcgan --loss wgan-gp --image-size 32 --ngf 8 "
      "--ndf 8 --batch-size 4 --steps 1 --progress 0 --data " +
      fashion_subset(256).string() + " --out " + out.string());
  INFO(p.output);
  CHECK(p.code == 0);
  CHECK(p.output.find("advises against") != std::string::npos);
}

namespace {

// Each parameter's gradient after a bf16 iteration (net's .grad()) against the float64 reference
// (ref_prefix + name in f) and PyTorch's autocast gradients (torch_prefix + name): the criterion
// of check_bf16_step below.
void compare_bf16_grads(const gan::st::File& f, const std::string& ref_prefix,
                        const std::string& torch_prefix, nn::Module& net, const std::string& what) {
  {
    nn::Module* module = &net;
    std::map<std::string, nn::TorchLayout> layout_of;
    for (const auto& [name, l] : module->named_layouts()) layout_of[name] = l;
    double worst_engine = 0, worst_torch = 0, worst_cross = 0, worst_rel = 0;
    // Over the whole network: |got - ref|^2, |torch - ref|^2, |ref|^2 summed (relative L2).
    double sq_engine = 0, sq_torch = 0, sq_ref = 0;
    struct Sums {
      std::string name;
      double se, st, sr, n;
    };
    std::vector<Sums> per_tensor;
    double n_total = 0;
    for (const auto& [name, p] : module->named_parameters()) {
      INFO(what << "." << name);
      const nn::TorchLayout layout = layout_of.count(name) ? layout_of.at(name) : nn::TorchLayout{};
      const auto load = [&](const std::string& prefix) {
        const Tensor t = Tensor::empty(p.shape(), Device::CPU);
        ckpt::from_torch(f.tensor(prefix + name), layout, t);
        return t;
      };
      const Tensor ref = load(ref_prefix), torch = load(torch_prefix);
      const Tensor got = p.grad().to(Device::CPU);
      const double e_engine = gan::test::max_rel_error(got, ref);
      const double e_torch = gan::test::max_rel_error(torch, ref);
      const double e_cross = gan::test::max_rel_error(got, torch);
      const auto gv = got.to_vector(), rv = ref.to_vector(), tv = torch.to_vector();
      double se = 0, st = 0, sr = 0;
      for (size_t i = 0; i < gv.size(); ++i) {
        se += double(gv[i] - rv[i]) * double(gv[i] - rv[i]);
        st += double(tv[i] - rv[i]) * double(tv[i] - rv[i]);
        sr += double(rv[i]) * double(rv[i]);
      }
      sq_engine += se, sq_torch += st, sq_ref += sr;
      per_tensor.push_back({name, se, st, sr, double(gv.size())});
      n_total += double(gv.size());
      worst_engine = std::max(worst_engine, e_engine);
      worst_torch = std::max(worst_torch, e_torch);
      worst_cross = std::max(worst_cross, e_cross);
    }
    // No tensor far off: |got - ref| <= 3 |torch - ref| + |ref| / 2 + 5% of the network's RMS
    // gradient per element (L2 over the tensor). A wrong layout or a missed rounding point gives
    // |got - ref| near |ref| or above while PyTorch's error is small. Tensors whose gradient is
    // mostly rounding noise in bf16 have errors of PyTorch's size or up to half their own
    // (attention's gamma, a sum of cancelling terms; the generator's attention projections
    // under the penalty; on the GPU path the tensor-core kernels also round the softmax P and
    // dS), or, where the true gradient is 0 (biases before batch norm; the key projection's bias,
    // to which the softmax is invariant), noise well below the network's gradients. The whole
    // network's error is compared below.
    const double rms = std::sqrt(sq_ref / n_total);
    for (const Sums& t : per_tensor) {
      INFO(what << "." << t.name);
      const double units = std::sqrt(t.se) / (3 * std::sqrt(t.st) + 0.5 * std::sqrt(t.sr) +
                                              0.05 * rms * std::sqrt(t.n) + 1e-30);
      worst_rel = std::max(worst_rel, units);
      CHECK(units <= 1.0);
    }
    const double l2_engine = std::sqrt(sq_engine / sq_ref), l2_torch = std::sqrt(sq_torch / sq_ref);
    std::printf(
        "  %s bf16 gradients: relative L2 error engine %.2e, PyTorch autocast %.2e; "
        "worst tensor: |error| / its bound %.2f; normalised max engine %.2e, PyTorch %.2e, engine "
        "vs PyTorch %.2e\n",
        what.c_str(), l2_engine, l2_torch, worst_rel, worst_engine, worst_torch, worst_cross);
    CHECK(l2_engine < 2 * l2_torch + 1e-3);
    // bf16 is really on (float32 would be ~1e-6 here).
    CHECK(l2_engine > 1e-4);
  }
}

// tools/scripts/fixtures/make_bf16_step.py: one iteration of a small SAGAN (hinge; "sagan"), the
// same SAGAN with WGAN-GP ("sagan_gp": the penalty's double backward in bf16) and a DCGAN (BCE)
// from the same weights and inputs, in float64 and under torch.autocast(dtype=torch.bfloat16).
// The engine runs it in bf16 precision. Each gradient tensor's error against the float64
// reference (normalised by its largest element) is compared with PyTorch's bf16 error: the two
// modes round at nearly the same points (PyTorch also rounds batch norm's and the activations'
// outputs, the engine keeps them float32), so the engine's error must be of the same size, and the
// engine's and PyTorch's bf16 gradients must agree to bf16 accuracy.
void check_bf16_step(Device dev, const std::string& model) {
  const gan::st::File f = gan::st::read_file(gan::test::fixture_path("bf16_step.safetensors"));
  PrecisionScope bf16(Precision::kBF16);
  train::Options o;
  models::ModelConfig& mc = o.model;
  const bool gp = model == "sagan_gp";
  mc.arch = models::parse_arch(gp ? "sagan" : model), mc.image_size = 32, mc.channels = 1;
  mc.z_dim = 16, mc.ngf = mc.ndf = 8;
  o.batch_size = 4, o.n_dis = 1, o.steps = 1;
  o.loss = gp ? train::Loss::kWganGp : model == "sagan" ? train::Loss::kHinge : train::Loss::kBce;
  o.lr_g = o.lr_d = 1e-4, o.beta1 = 0.0, o.beta2 = 0.9;
  o = train::resolve(o);
  Generator gen(0, dev);
  models::Gan net = models::build(o.model, gen);
  ckpt::load_module(f, model + ".G0.", *net.g);
  ckpt::load_module(f, model + ".D0.", *net.d);
  AdamOptions a;
  a.lr = o.lr_d, a.beta1 = o.beta1, a.beta2 = o.beta2;
  Adam opt_g(net.g->parameters(), a), opt_d(net.d->parameters(), a);
  train::Stepper stepper(o, net, nullptr, opt_g, opt_d, gen);
  std::vector<Tensor> eps;
  if (gp) eps.push_back(f.tensor(model + ".eps", dev));
  stepper.use_fixed_noise({f.tensor(model + ".z1", dev), f.tensor(model + ".z2", dev)}, eps);
  // D's gradients are those of its step: kept before the G step zeroes nothing of D's (D's
  // parameters need no gradient there), so they are still in the buffers after the iteration.
  stepper.iteration({f.tensor(model + ".real", dev)});

  const auto stats = stepper.stats().to_vector();
  const auto scalar = [&](const std::string& k) { return double(f.tensor(k).to_vector()[0]); };
  for (auto [i, name] : {std::pair{0, "loss_d"}, std::pair{1, "loss_g"}}) {
    const double ref = scalar(model + ".f64." + name), torch = scalar(model + ".bf16." + name);
    const double e_engine = std::fabs(stats[size_t(i)] - ref) / std::max(std::fabs(ref), 1e-3);
    const double e_torch = std::fabs(torch - ref) / std::max(std::fabs(ref), 1e-3);
    std::printf(
        "  %s bf16 %s: engine %.6f (error %.1e), PyTorch autocast %.6f (error %.1e), "
        "float64 %.6f\n",
        model.c_str(), name, stats[size_t(i)], e_engine, torch, e_torch, ref);
    CHECK(e_engine < std::max(4 * e_torch, 4e-3));
  }
  for (auto [net_prefix, module] : {std::pair{"D", net.d.get()}, std::pair{"G", net.g.get()}})
    compare_bf16_grads(f, model + ".f64.grad" + net_prefix + ".",
                       model + ".bf16.grad" + net_prefix + ".", *module, model + " " + net_prefix);
}

}  // namespace

TEST_CASE("trainer: one bf16 iteration of SAGAN and DCGAN against PyTorch's autocast",
          "[trainer][bf16][cpu]") {
  for (const char* m : {"sagan", "sagan_gp", "dcgan"}) check_bf16_step(Device::CPU, m);
}

TEST_CASE("trainer cuda: one bf16 iteration of SAGAN and DCGAN against PyTorch's autocast",
          "[trainer][bf16][cuda]") {
  GAN_REQUIRE_GPU();
  for (const char* m : {"sagan", "sagan_gp", "dcgan"}) check_bf16_step(Device::CUDA, m);
}

TEST_CASE("gan_train: --precision bf16 trains, checkpoints float32 and resumes in either precision",
          "[trainer][bf16][cpu]") {
  const fs::path out = scratch("bf16_cli");
  const std::string fm = fashion_subset(256).string();
  const std::string base =
      "--device cpu --model sagan --image-size 32 --ngf 8 --ndf 8 "
      "--batch-size 4 --progress 0 --log-every 1 --data " +
      fm;
  const fs::path run = out / "bf16";
  Proc p = gan_train(base + " --steps 3 --precision bf16 --out " + run.string());
  INFO(p.output);
  REQUIRE(p.code == 0);
  CHECK(p.output.find("precision=bf16") != std::string::npos);
  const auto config_of = [](const fs::path& dir) {
    return nlohmann::json::parse(
        gan::st::read_file((dir / "checkpoint.safetensors").string()).meta("config"));
  };
  CHECK(config_of(run).at("precision") == "bf16");
  // The checkpoint's tensors are float32 (PyTorch's layouts), as an fp32 run's.
  const gan::st::File f = gan::st::read_file((run / "checkpoint.safetensors").string());
  const Tensor w = f.tensor("G.0.weight_orig");
  CHECK(w.dtype() == DType::F32);
  bool any_not_bf16 = false;  // master weights keep float32 bits after Adam's steps
  for (float x : w.to_vector()) any_not_bf16 |= kernels::round_bf16(x) != x;
  CHECK(any_not_bf16);
  // Resumed without --precision: bf16 still; with --precision fp32: float32 from the same file.
  p = gan_train(base + " --steps 5 --resume " + run.string());
  INFO(p.output);
  REQUIRE(p.code == 0);
  CHECK(p.output.find("precision=bf16") != std::string::npos);
  CHECK(config_of(run).at("precision") == "bf16");
  const fs::path run32 = out / "fp32";
  p = gan_train(base + " --steps 7 --precision fp32 --resume " + run.string() + " --out " +
                run32.string());
  INFO(p.output);
  REQUIRE(p.code == 0);
  CHECK(p.output.find("precision=fp32") != std::string::npos);
  CHECK(config_of(run32).at("precision") == "fp32");
  // And an fp32 checkpoint resumes in bf16.
  p = gan_train(base + " --steps 8 --precision bf16 --resume " + run32.string());
  INFO(p.output);
  CHECK(p.code == 0);
  CHECK(config_of(run32).at("precision") == "bf16");
  const Proc bad = gan_train(base + " --steps 1 --precision fp16 --out " + (out / "x").string());
  CHECK(bad.code != 0);
  CHECK(last_line(bad.output).find("--precision") != std::string::npos);
}

TEST_CASE("trainer: one WGAN-GP iteration of SAGAN equals PyTorch's", "[trainer][cpu]") {
  check_wgan_gp_step(Device::CPU);
}

TEST_CASE("trainer: one iteration of StudioGAN's ResNet SAGAN equals PyTorch's",
          "[trainer][resnet][cpu]") {
  check_studiogan_step(Device::CPU, true);
  check_studiogan_step(Device::CPU, false);
}

TEST_CASE("trainer: one bf16 iteration of StudioGAN's ResNet SAGAN against PyTorch's autocast",
          "[trainer][resnet][bf16][cpu]") {
  check_studiogan_step(Device::CPU, true, true);
  check_studiogan_step(Device::CPU, false, true);
}

TEST_CASE("trainer cuda: one bf16 iteration of StudioGAN's ResNet SAGAN against autocast",
          "[trainer][resnet][bf16][cuda]") {
  GAN_REQUIRE_GPU();
  check_studiogan_step(Device::CUDA, true, true);
}

TEST_CASE("trainer cuda: one iteration of StudioGAN's ResNet SAGAN equals PyTorch's",
          "[trainer][resnet][cuda]") {
  GAN_REQUIRE_GPU();
  check_studiogan_step(Device::CUDA, true);
  check_studiogan_step(Device::CUDA, false);
}

namespace {

// StudioGAN's Ema (--ema-start, --ema-buffers average) through the stepper: G's first
// ema_start steps copy G into G_ema (weights and the batch-norm statistics, bit for bit, though
// G_ema starts different), later steps average, num_batches_tracked left alone. On CUDA the gate
// is read on the device from G's optimiser's step count.
void check_ema_start(Device dev) {
  train::Options o;
  o.model.arch = models::Arch::kDcgan;
  o.model.image_size = 32, o.model.channels = 1, o.model.ngf = o.model.ndf = 8;
  o.batch_size = 4, o.n_dis = 1, o.ema = 0.75, o.ema_start = 2, o.ema_buffers = "average";
  o = train::resolve(o);
  Generator gen(3, dev);
  models::Gan net = models::build(o.model, gen), ema = models::build(o.model, gen);
  AdamOptions ag, ad;
  Adam opt_g(net.g->parameters(), ag), opt_d(net.d->parameters(), ad);
  train::Stepper stepper(o, net, &ema, opt_g, opt_d, gen);
  Tensor real = Tensor::empty(Shape{4, 32, 32, 1}, dev);
  // Every float tensor of G's state (parameters, then buffers but the step counters), host copies.
  auto state = [](models::Gan& m) {
    std::vector<std::pair<std::string, std::vector<float>>> out;
    for (const auto& [name, p] : m.g->named_parameters())
      out.emplace_back(name, p.value().to_vector());
    for (const auto& [name, b] : m.g->named_buffers())
      if (!name.ends_with("num_batches_tracked")) out.emplace_back(name, b.to_vector());
    return out;
  };
  REQUIRE(state(net) != state(ema));  // built from the same generator one after the other
  for (int step = 1; step <= 4; ++step) {
    INFO("G step " << step);
    const auto before = state(ema);
    gen.uniform_(real, -1.0, 1.0);
    stepper.iteration({real});
    const auto g = state(net), e = state(ema);
    REQUIRE(g.size() == e.size());
    double worst = 0;
    for (size_t t = 0; t < g.size(); ++t) {
      INFO(g[t].first);
      REQUIRE(g[t].first == e[t].first);
      if (step <= o.ema_start) {
        CHECK(e[t].second == g[t].second);  // a copy
        continue;
      }
      for (size_t i = 0; i < g[t].second.size(); ++i) {
        const double p = before[t].second[i], want = p + 0.25 * (g[t].second[i] - p);
        worst = std::max(worst, std::fabs(e[t].second[i] - want) / (std::fabs(want) + 1e-3));
      }
    }
    if (step > o.ema_start) {
      INFO("worst relative error of the average " << worst);
      CHECK(worst < 1e-6);
      CHECK(state(ema) != g);
    }
  }
  // num_batches_tracked: G's counts its training forwards, G_ema's is not averaged.
  for (const auto& [name, b] : ema.g->named_buffers())
    if (name.ends_with("num_batches_tracked")) CHECK(b.to_vector()[0] == 0.0f);
}

}  // namespace

TEST_CASE("trainer: the EMA of G copies for --ema-start steps, then averages weights and buffers",
          "[trainer][cpu]") {
  check_ema_start(Device::CPU);
}

TEST_CASE("trainer cuda: the EMA's start is gated on the device", "[trainer][cuda]") {
  GAN_REQUIRE_GPU();
  check_ema_start(Device::CUDA);
}

TEST_CASE("trainer cuda: one WGAN-GP iteration of SAGAN equals PyTorch's", "[trainer][cuda]") {
  GAN_REQUIRE_GPU();
  check_wgan_gp_step(Device::CUDA);
}

TEST_CASE("gan_train: bad input gives one clear line and a non-zero exit", "[trainer][cpu]") {
  const fs::path out = scratch("cli");
  const std::string fm = fashion_subset(256).string();
  const std::string opts =
      "--device cpu --image-size 32 --ngf 8 --ndf 8 --batch-size 4 "
      "--progress 0 --steps 2";
  const std::string base = opts + " --data " + fm;
  struct Case {
    std::string args, expect;
  };
  const fs::path bad_magic = out / "bad-magic-idx3-ubyte";
  const fs::path truncated = out / "truncated-idx3-ubyte";
  const fs::path empty_dir = out / "empty";
  const fs::path corrupt_dir = out / "corrupt";
  fs::create_directories(empty_dir);
  fs::create_directories(corrupt_dir);
  {
    std::ofstream(bad_magic, std::ios::binary)
        << std::string("\x00\x00\x08\x01\x00\x00\x00\x01", 8);
    std::string t;
    put_be32(t, 0x803), put_be32(t, 100), put_be32(t, 28), put_be32(t, 28);
    t += std::string(500, '\x01');
    std::ofstream(truncated, std::ios::binary) << t;
    std::ofstream(corrupt_dir / "a.png", std::ios::binary) << "not a png at all";
  }
  const std::vector<Case> cases = {
      {"--bogus", "--bogus"},
      {"--batch-size 0", "--batch-size"},
      {"--image-size 48", "--image-size"},
      {"--model biggan", "--model"},
      {"--profile-steps 3:2", "--profile-steps"},
      {"--profile-steps 2", "--profile-steps"},
      {"--loss wgan-gp2", "--loss"},
      {"--r1 -1", "--r1"},
      {"--r1-every 0", "--r1-every"},
      {opts + " --data /nonexistent/fashion", "/nonexistent/fashion"},
      {opts + " --data " + bad_magic.string(), "magic"},
      {opts + " --data " + truncated.string(), "truncated"},
      {opts + " --data " + empty_dir.string(), "no PNG or JPEG images"},
      {opts + " --data " + corrupt_dir.string(), "cannot decode"},
      {base + " --out /proc/forbidden_out", "--out /proc/forbidden_out"},
      {base + " --resume " + (out / "no_run").string(), "no checkpoint.safetensors"},
      {base + " --conditional", "--conditional, --g-attn and --d-attn are sagan-resnet's"},
      {base + " --model sagan-resnet --conditional", "has no labels"},
      {base + " --model sagan-resnet --g-attn 7", "attention after G block 7"},
      {base + " --model sagan-resnet --d-attn 0,1", "0 alone"},
  };
  for (const Case& c : cases) {
    INFO(c.args);
    const bool has_out = c.args.find("--out") != std::string::npos;
    const Proc p = gan_train(c.args + (has_out ? "" : " --out " + (out / "run").string()));
    INFO(p.output);
    CHECK(p.code != 0);
    CHECK(last_line(p.output).find(c.expect) != std::string::npos);
  }

  // A real run, then: a second run into the same --out is refused and changes nothing; a corrupt
  // checkpoint and a mismatched model are refused on resume.
  const fs::path run = out / "good";
  REQUIRE(gan_train(base + " --model dcgan --out " + run.string()).code == 0);
  const auto before = fs::last_write_time(run / "checkpoint.safetensors");
  const auto size_before = fs::file_size(run / "metrics.jsonl");
  Proc p = gan_train(base + " --model dcgan --out " + run.string());
  CHECK(p.code != 0);
  CHECK(last_line(p.output).find("already holds a run") != std::string::npos);
  CHECK(fs::last_write_time(run / "checkpoint.safetensors") == before);
  CHECK(fs::file_size(run / "metrics.jsonl") == size_before);
  p = gan_train("--device cpu --progress 0 --steps 4 --model sagan --resume " + run.string());
  CHECK(p.code != 0);
  CHECK(last_line(p.output).find("does not match the checkpoint") != std::string::npos);
  const fs::path broken = out / "broken";
  fs::create_directories(broken);
  std::ofstream(broken / "checkpoint.safetensors", std::ios::binary)
      << "\x10\x00\x00\x00\x00\x00\x00\x00{not json}";
  p = gan_train("--device cpu --progress 0 --resume " + broken.string());
  CHECK(p.code != 0);
  CHECK(last_line(p.output).find("checkpoint.safetensors") != std::string::npos);
}

TEST_CASE("trainer cuda: one training step on the GPU equals the CPU step", "[trainer][cuda]") {
  GAN_REQUIRE_GPU();
  // Same seed: the same initial weights (Philox gives the same numbers on both devices), the
  // same batch and noise. After one step every tensor of the checkpoint must agree.
  for (const char* model : {"sagan", "dcgan"}) {
    INFO(model);
    const fs::path c = scratch(std::string("cpu_step_") + model);
    const fs::path g = scratch(std::string("gpu_step_") + model);
    train::Options oc = tiny(model, c, 1);
    oc.ema = 0.9;  // G_ema too (one launch for all of G's weights on the GPU)
    train::run(oc);
    train::Options og = tiny(model, g, 1);
    og.ema = 0.9;
    og.device = train::DeviceChoice::kCuda;
    train::run(og);
    const st::File fc = st::read_file((c / "checkpoint.safetensors").string());
    const st::File fg = st::read_file((g / "checkpoint.safetensors").string());
    REQUIRE(fc.entries.size() == fg.entries.size());
    for (size_t i = 0; i < fc.entries.size(); ++i) {
      const st::Entry &a = fc.entries[i], &b = fg.entries[i];
      INFO(a.name);
      REQUIRE(a.name == b.name);
      if (a.dtype != "F32") {
        CHECK(a.bytes == b.bytes);
        continue;
      }
      const float* x = reinterpret_cast<const float*>(a.bytes.data());
      const float* y = reinterpret_cast<const float*>(b.bytes.data());
      double err = 0, scale = 1e-3;
      for (int64_t k = 0; k < a.numel(); ++k) {
        err = std::max(err, double(std::fabs(x[k] - y[k])));
        scale = std::max(scale, double(std::fabs(x[k])));
      }
      if (a.name.rfind("opt_", 0) == 0) {
        // Adam's moments after one step are the gradients (times 1 - beta): float32 sums in
        // cuDNN's and cuBLAS's order against the CPU's double accumulation.
        CHECK(err / scale < 1e-3);
      } else {
        // The first Adam step moves each weight by lr g / (|g| + eps), about lr in size, so a
        // gradient within float32 noise of zero may move the other way: at most 2 lr (4e-4 for
        // D's SAGAN rate) apart; anything else (BatchNorm statistics, u, v) agrees closely.
        CHECK(err <= 8e-4 + 1e-4 * scale);
      }
    }
  }
}

// [heavy]: 120 s under ASan; the main build runs it under both schedule seeds (the interpreter's
// guarded memory, not ASan, is what catches a graph reading freed memory).
TEST_CASE("trainer cuda: CUDA-graph replays (the default) equal the eager steps",
          "[trainer][cuda][heavy]") {
  GAN_REQUIRE_GPU();
  // gan_train itself, each run a fresh process (--deterministic: the same cuDNN algorithms in
  // both, none adding with atomics): step 1 runs eagerly, step 2 is captured, steps 3
  // and 4 replay the graph. Batch 8, not 64: the 64-image sample forward after step 2 makes new
  // cuDNN plans after the capture, which must not move a workspace the graph still uses.
  const std::string data = fashion_subset(256).string();
  for (const char* model : {"sagan", "dcgan"}) {
    INFO(model);
    const fs::path e = scratch(std::string("eager_") + model);
    const fs::path g = scratch(std::string("graph_") + model);
    const std::string common = std::string("--model ") + model + " --data " + data +
                               " --image-size 32 --ngf 8 --ndf 8 --batch-size 8 --steps 4 "
                               "--device cuda --deterministic --log-every 1 --sample-every 2 "
                               "--checkpoint-every 4 --ema 0.99 --ema-start 3 "
                               "--ema-buffers average --progress 0 --out ";
    // (--ema: the EMA of G's weights and batch-norm statistics is one launch, captured with the
    // step; --ema-start 3: a copy up to step 3, the capture's step 2 and the replay of step 3
    // included, the average at the replay of step 4, the gate read on the device.)
    // --profile-steps: cudaProfilerStart before step 2 (eager), cudaProfilerStop after step 3
    // (a replay); neither may disturb the steps.
    const Proc pg = gan_train(common + g.string() + " --profile-steps 2:3");
    INFO(pg.output);
    REQUIRE(pg.code == 0);
    const auto config = gan::st::read_file((g / "checkpoint.safetensors").string());
    CHECK(nlohmann::json::parse(config.meta("config")).at("cuda_graph") == true);
    const Proc pe = gan_train(common + e.string() + " --no-cuda-graph");
    INFO(pe.output);
    REQUIRE(pe.code == 0);
    gan::test::require_same_checkpoint(e, g);  // the same kernels in the same order
    CHECK(metrics(g).size() == 4);
  }
  // The penalty step too (grad() with create_graph inside the captured iteration; its VJPs
  // create no host data), with WGAN-GP (SAGAN, attention's VJP included) and R1 (DCGAN).
  for (const auto& [model, extra] :
       {std::pair{"sagan", " --loss wgan-gp --n-dis 1"}, std::pair{"dcgan", " --r1 5"}}) {
    INFO(model << extra);
    const fs::path e = scratch(std::string("eager_penalty_") + model);
    const fs::path g = scratch(std::string("graph_penalty_") + model);
    const std::string common = std::string("--model ") + model + extra + " --data " + data +
                               " --image-size 32 --ngf 8 --ndf 8 --batch-size 2 --steps 3 "
                               "--device cuda --deterministic --log-every 1 --sample-every 3 "
                               "--checkpoint-every 3 --progress 0 --out ";
    require_graph_equals_eager(common, e, g);
  }
}

TEST_CASE("trainer: the conditional ResNet SAGAN trains, resumes bit for bit and samples by class",
          "[trainer][resnet][cpu]") {
  const fs::path a = scratch("cond_straight"), b = scratch("cond_resumed");
  auto options = [](const fs::path& out, int64_t steps) {
    train::Options o = tiny("sagan-resnet", out, steps);
    o.data = fashion_subset_labelled(256).string();
    o.conditional = true;
    o.batch_size = 4;
    o.n_dis = 2;  // two real batches per iteration, each with its own labels
    o.ema = 0.9;
    return o;
  };
  train::run(options(a, 4));
  train::run(options(b, 2));
  CHECK(resume_to(b, 4).steps == 4);
  gan::test::require_same_checkpoint(a, b);  // labels (real and drawn) resume exactly too
  CHECK(fs::exists(a / "samples" / "latest.png"));

  // The checkpoint rebuilds the conditional model; gan_sample --class K is G under label K.
  ckpt::LoadedGan l = ckpt::load_gan(a.string(), Device::CPU);
  REQUIRE(l.net.g->num_classes() == 10);
  CHECK(l.net.config.class_names == data::fashion_mnist_classes());  // kept in the checkpoint
  REQUIRE(l.net.config.arch == models::Arch::kSaganResnet);
  l.net.g->eval();
  const std::string sample = (fs::path(gan_train_bin()).parent_path() / "gan_sample").string();
  if (!fs::exists(sample)) {
    // The sanitizer builds make the interpreter's test binaries and gan_train only; the main
    // build (and its ctest run) has gan_sample beside gan_train.
    WARN("no gan_sample beside " << gan_train_bin() << ": its --class checks not run here");
    return;
  }
  const fs::path dump = a / "class3.safetensors";
  REQUIRE(std::system((sample + " " + a.string() + " --device cpu --class 3 -n 4 --out " +
                       (a / "c3.png").string() + " --dump " + dump.string() + " > /dev/null")
                          .c_str()) == 0);
  const st::File f = st::read_file(dump.string());
  const Var z(f.tensor("z"));
  NoGradGuard ng;
  auto images = [&](int cls) {
    return l.net.g->forward(z, Var(models::one_hot(std::vector<int32_t>(4, cls), 10, Device::CPU)))
        .value()
        .to_vector();
  };
  CHECK(images(3) == f.floats("images"));
  CHECK(images(4) != f.floats("images"));
  // By name (the checkpoint's class names; case-insensitive): the same samples.
  const fs::path by_name = a / "dress.safetensors";
  REQUIRE(std::system((sample + " " + a.string() + " --device cpu --class dress -n 4 --out " +
                       (a / "dress.png").string() + " --dump " + by_name.string() + " > /dev/null")
                          .c_str()) == 0);
  CHECK(st::read_file(by_name.string()).floats("images") == f.floats("images"));
  // The class grid: row c is class c, the same noise down each column.
  const fs::path grid = a / "grid.safetensors";
  REQUIRE(std::system((sample + " " + a.string() + " --device cpu --class-grid --cols 3 --out " +
                       (a / "grid.png").string() + " --dump " + grid.string() + " > /dev/null")
                          .c_str()) == 0);
  const st::File g = st::read_file(grid.string());
  const std::vector<float> zg = g.floats("z");
  const int64_t zd = l.net.z_dim;
  REQUIRE(int64_t(zg.size()) == 30 * zd);
  for (int64_t c = 0; c < 10; ++c)
    for (int64_t j = 0; j < 3; ++j)
      CHECK(std::equal(zg.begin() + (c * 3 + j) * zd, zg.begin() + (c * 3 + j + 1) * zd,
                       zg.begin() + j * zd));
  // An unknown class, by number or name: one line, exit 1.
  for (const char* bad : {"10", "Robe"})
    CHECK(std::system((sample + " " + a.string() + " --device cpu --class " + bad + " --out " +
                       (a / "x.png").string() + " 2> /dev/null")
                          .c_str()) != 0);
}

TEST_CASE("trainer cuda: the conditional ResNet SAGAN's graph replays equal its eager steps",
          "[trainer][resnet][cuda][heavy]") {
  GAN_REQUIRE_GPU();
  // The one-hot labels are static inputs of the graph, copied in before each replay (real labels
  // from the loader's order, fake ones drawn by hash): step 1 eager, step 2 captured, step 3 a
  // replay; two real batches per iteration.
  const std::string common =
      "--model sagan-resnet --conditional --data " + fashion_subset_labelled(256).string() +
      " --image-size 32 --ngf 8 --ndf 8 --batch-size 4 --n-dis 2 --steps 3 --device cuda "
      "--deterministic --log-every 1 --sample-every 3 --checkpoint-every 3 --ema 0.99 "
      "--progress 0 --out ";
  const fs::path e = scratch("eager_resnet"), g = scratch("graph_resnet");
  require_graph_equals_eager(common, e, g);
}
