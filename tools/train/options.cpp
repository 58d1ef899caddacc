#include "tools/train/options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "models/resnet.h"
#include "tools/io/checkpoint.h"
#include "tools/io/safetensors.h"

namespace gan::train {

using json = nlohmann::json;

namespace {

// Options that define the model, the data or the optimisation: a resumed run must use the
// checkpoint's.
const char* const kModelKeys[] = {"model",       "preset",      "image_size", "channels",
                                  "ngf",         "ndf",         "z_dim",      "official_attention",
                                  "num_classes", "g_attn",      "d_attn",     "g_init",
                                  "d_init",      "data",        "fit",        "hflip",
                                  "batch_size",  "loss",        "n_dis",      "ema",
                                  "seed",        "lr_g",        "lr_d",       "beta1",
                                  "beta2",       "wgan_clip",   "gp_lambda",  "r1",
                                  "r1_every",    "class_names", "ema_start",  "ema_buffers"};

// The keys of kModelKeys from a checkpoint's configuration into o.
void from_json_model(const json& j, Options& o) {
  o.model = ckpt::model_config_from_json(j);
  o.data = j.at("data").get<std::string>();
  o.fit = img::parse_fit(j.at("fit").get<std::string>());
  o.hflip = j.at("hflip").get<bool>();
  o.batch_size = j.at("batch_size").get<int>();
  o.loss = parse_loss(j.at("loss").get<std::string>());
  o.n_dis = j.at("n_dis").get<int>();
  o.ema = j.at("ema").get<double>();
  o.seed = j.at("seed").get<uint64_t>();
  o.lr_g = j.at("lr_g").get<double>();
  o.lr_d = j.at("lr_d").get<double>();
  o.beta1 = j.at("beta1").get<double>();
  o.beta2 = j.at("beta2").get<double>();
  o.wgan_clip = j.at("wgan_clip").get<double>();
  // Penalties (absent from checkpoints written before they existed: off).
  o.gp_lambda = j.value("gp_lambda", 10.0);
  o.r1 = j.value("r1", 0.0);
  o.r1_every = j.value("r1_every", 1);
  // The EMA's start and buffers (absent before they existed: from step 0, buffers copied).
  o.ema_start = j.value("ema_start", int64_t(0));
  o.ema_buffers = j.value("ema_buffers", std::string("copy"));
}

}  // namespace

const char* loss_name(Loss l) {
  switch (l) {
    case Loss::kModelDefault:
      return "";
    case Loss::kBce:
      return "bce";
    case Loss::kHinge:
      return "hinge";
    case Loss::kWgan:
      return "wgan";
    case Loss::kWganGp:
      return "wgan-gp";
  }
  return "?";
}

Loss parse_loss(const std::string& name) {
  for (Loss l : {Loss::kBce, Loss::kHinge, Loss::kWgan, Loss::kWganGp})
    if (name == loss_name(l)) return l;
  throw Error("gan_train: --loss must be bce, hinge, wgan or wgan-gp, got " + name);
}

const char* device_choice_name(DeviceChoice d) {
  return d == DeviceChoice::kAuto ? "auto" : d == DeviceChoice::kCpu ? "cpu" : "cuda";
}

DeviceChoice parse_device_choice(const std::string& name) {
  for (DeviceChoice d : {DeviceChoice::kAuto, DeviceChoice::kCpu, DeviceChoice::kCuda})
    if (name == device_choice_name(d)) return d;
  throw Error("gan_train: --device must be auto, cpu or cuda, got " + name);
}

Options resolve(Options o) {
  auto fail = [](const std::string& m) { throw Error("gan_train: " + m); };
  const bool sagan = o.sagan();
  if (o.loss == Loss::kModelDefault) o.loss = sagan ? Loss::kHinge : Loss::kBce;
  // WGAN-GP: the paper's Adam (1e-4, betas (0, 0.9)) and 5 critic steps, unless given.
  const bool gp = o.gradient_penalty();
  if (o.resnet() && !gp) {
    // StudioGAN's SAGAN configurations: CIFAR-10 (32 px) Adam 2e-4 for both, betas (0.5, 0.999),
    // 5 D steps per G step; its 64 and 128 px SAGANs TTUR 1e-4 / 4e-4, betas (0, 0.999), 1 step.
    const bool small = o.model.image_size == 32;
    if (o.lr_g < 0) o.lr_g = small ? 2e-4 : 1e-4;
    if (o.lr_d < 0) o.lr_d = small ? 2e-4 : 4e-4;
    if (o.beta1 < 0) o.beta1 = small ? 0.5 : 0.0;
    if (o.beta2 < 0) o.beta2 = 0.999;
    if (o.n_dis == 0) o.n_dis = small ? 5 : 1;
  }
  if (o.lr_g < 0) o.lr_g = gp ? 1e-4 : sagan ? 1e-4 : 2e-4;
  if (o.lr_d < 0) o.lr_d = gp ? 1e-4 : sagan ? 4e-4 : 2e-4;
  if (o.beta1 < 0) o.beta1 = gp || sagan ? 0.0 : 0.5;
  if (o.beta2 < 0) o.beta2 = gp || sagan ? 0.9 : 0.999;
  if (o.n_dis == 0) o.n_dis = gp ? 5 : 1;
  models::ModelConfig& m = o.model;
  if (m.z_dim <= 0) m.z_dim = sagan ? 128 : 100;
  if (!(o.gp_lambda >= 0)) fail(fmt::format("--gp-lambda must be >= 0, got {}", o.gp_lambda));
  if (!(o.r1 >= 0)) fail(fmt::format("--r1 must be >= 0, got {}", o.r1));
  if (o.r1_every < 1) fail(fmt::format("--r1-every must be >= 1, got {}", o.r1_every));
  if (m.image_size != 32 && m.image_size != 64 && m.image_size != 128)
    fail(fmt::format("--image-size must be 32, 64 or 128, got {}", m.image_size));
  if (m.channels != 0 && m.channels != 1 && m.channels != 3)
    fail(fmt::format("--channels must be 1 or 3, got {}", m.channels));
  if (sagan && m.preset != models::Preset::kDefault) fail("--preset wide is DCGAN's only");
  if (!o.resnet() && (o.conditional || !m.g_attn.empty() || !m.d_attn.empty()))
    fail("--conditional, --g-attn and --d-attn are sagan-resnet's");
  for (const auto* at : {&m.g_attn, &m.d_attn})
    for (int b : *at)
      if (b < 0 || (b == 0 && at->size() > 1))
        fail("--g-attn and --d-attn take block numbers from 1 (or 0 alone: no attention)");
  if (o.batch_size < 1) fail(fmt::format("--batch-size must be >= 1, got {}", o.batch_size));
  if (o.sync_bn && o.has_penalty() && !o.sagan())
    fail(
        "--sync-bn with a gradient penalty on DCGAN's critic (batch norm): the penalty's grad() "
        "needs per-rank statistics; drop --sync-bn");
  if (o.dist_check_every < 0)
    fail(fmt::format("--dist-check-every must be >= 0, got {}", o.dist_check_every));
  if (o.steps < 0 || (o.steps == 0 && o.epochs < 1)) fail("give --epochs >= 1 or --steps >= 1");
  if (o.n_dis < 1) fail(fmt::format("--n-dis must be >= 1, got {}", o.n_dis));
  if (o.ema < 0 || o.ema >= 1) fail(fmt::format("--ema must be in [0, 1), got {}", o.ema));
  if (o.ema_start < 0) fail(fmt::format("--ema-start must be >= 0, got {}", o.ema_start));
  if (o.ema_buffers != "copy" && o.ema_buffers != "average")
    fail(fmt::format("--ema-buffers must be copy or average, got '{}'", o.ema_buffers));
  if (o.lr_g <= 0 || o.lr_d <= 0) fail("learning rates must be > 0");
  if (o.beta1 >= 1 || o.beta2 >= 1) fail("betas must be in [0, 1)");
  if (o.eval_every < 0 || o.eval_samples < 2 || o.eval_real < 2)
    fail("--eval-every must be >= 0, --eval-samples and --eval-real >= 2");
  if (o.sample_every < 1 || o.checkpoint_every < 1 || o.log_every < 1)
    fail("--sample-every, --checkpoint-every and --log-every must be >= 1");
  return o;
}

json to_json(const Options& o) {
  json j{{"data", o.data},
         {"fit", img::fit_name(o.fit)},
         {"hflip", o.hflip},
         {"batch_size", o.batch_size},
         {"epochs", o.epochs},
         {"steps", o.steps},
         {"lr_g", o.lr_g},
         {"lr_d", o.lr_d},
         {"beta1", o.beta1},
         {"beta2", o.beta2},
         {"loss", loss_name(o.loss)},
         {"n_dis", o.n_dis},
         {"ema", o.ema},
         {"ema_start", o.ema_start},
         {"ema_buffers", o.ema_buffers},
         {"wgan_clip", o.wgan_clip},
         {"gp_lambda", o.gp_lambda},
         {"r1", o.r1},
         {"r1_every", o.r1_every},
         {"seed", o.seed},
         {"out", o.out},
         {"sample_every", o.sample_every},
         {"checkpoint_every", o.checkpoint_every},
         {"log_every", o.log_every},
         {"eval_every", o.eval_every},
         {"eval_samples", o.eval_samples},
         {"eval_real", o.eval_real},
         {"device", device_choice_name(o.device)},
         {"tf32", o.tf32},
         {"math", o.math},
         {"precision", o.precision},
         {"deterministic", o.deterministic},
         {"cuda_graph", o.cuda_graph},
         {"world_size", o.world_size},
         {"sync_bn", o.sync_bn}};
  ckpt::model_config_to_json(o.model, j);
  return j;
}

Options resume_options(const Options& o, const st::File& checkpoint, const std::string& path) {
  try {
    json saved = json::parse(checkpoint.meta("config"));
    // The global batch stays; per rank it is split over this run's ranks.
    const int64_t global = saved.at("batch_size").get<int64_t>() * saved.value("world_size", 1);
    if (global % o.world_size != 0)
      throw Error(
          fmt::format("gan_train: the checkpoint's global batch {} ({}) does not split "
                      "over {} ranks",
                      global, path, o.world_size));
    saved["batch_size"] = global / o.world_size;
    Options from = o;
    from_json_model(saved, from);
    const json cur = to_json(o);
    for (const char* key : kModelKeys) {
      const json was = saved.contains(key) ? saved.at(key) : json();
      if (o.given.count(key) && cur.at(key) != was)
        throw Error(fmt::format("gan_train: --{} {} does not match the checkpoint's {} ({})", key,
                                cur.at(key).dump(), was.dump(), path));
    }
    if (!o.given.count("out")) from.out = o.resume;
    if (!o.given.count("sync_bn")) from.sync_bn = saved.value("sync_bn", false);
    if (!o.given.count("precision")) from.precision = saved.value("precision", std::string("fp32"));
    if (!o.given.count("steps") && !o.given.count("epochs")) {
      from.steps = saved.at("steps").get<int64_t>();
      from.epochs = saved.at("epochs").get<int>();
    }
    return from;
  } catch (const json::exception& e) {
    throw Error(
        fmt::format("gan_train: {}: corrupt configuration in the checkpoint ({})", path, e.what()));
  } catch (const std::invalid_argument& e) {  // ckpt::model_config_from_json's checks
    throw Error(
        fmt::format("gan_train: {}: corrupt configuration in the checkpoint ({})", path, e.what()));
  }
}

std::string describe(const Options& o, Device dev) {
  const models::ModelConfig& m = o.model;
  std::string penalties;
  if (o.gradient_penalty()) penalties += fmt::format(" gp_lambda={}", o.gp_lambda);
  if (o.r1 > 0) penalties += fmt::format(" r1={} every {}", o.r1, o.r1_every);
  return fmt::format(
      "gan_train: model={} preset={} image_size={} channels={} z={} ngf={} ndf={} "
      "attention={} | data={} fit={} hflip={} | batch_size={} {} n_dis={} loss={} lr_g={} "
      "lr_d={} betas=({}, {}) ema={}{}{} | seed={} device={} math={} precision={} deterministic={} "
      "out={}",
      models::arch_name(m.arch), models::preset_name(m.preset), m.image_size, m.channels, m.z_dim,
      m.ngf, m.ndf,
      m.arch == models::Arch::kSaganResnet
          ? fmt::format("G {} D {} classes={} init={}/{}", fmt::join(models::resnet_g_attn(m), ","),
                        fmt::join(models::resnet_d_attn(m), ","), m.num_classes, m.g_init, m.d_init)
          : std::string(m.official_attention ? "official" : "default"),
      o.data, img::fit_name(o.fit), o.hflip,
      o.world_size == 1
          ? fmt::format("{}", o.batch_size)
          : fmt::format("{} x {} ranks (global {}){}", o.batch_size, o.world_size,
                        int64_t(o.batch_size) * o.world_size, o.sync_bn ? " sync_bn" : ""),
      o.steps > 0 ? fmt::format("steps={}", o.steps) : fmt::format("epochs={}", o.epochs), o.n_dis,
      loss_name(o.loss), o.lr_g, o.lr_d, o.beta1, o.beta2, o.ema,
      o.ema > 0 && (o.ema_start > 0 || o.ema_buffers != "copy")
          ? fmt::format(" (from step {}, buffers {})", o.ema_start + 1, o.ema_buffers)
          : std::string(),
      penalties, o.seed, device_name(dev), o.tf32 ? "tf32" : o.math, o.precision, o.deterministic,
      o.out);
}

std::string shrink_for_cpu(Options& o) {
  std::string changed;
  auto shrink = [&](const char* key, auto& field, auto value) {
    if (!o.given.count(key)) {
      field = value;
      changed += fmt::format(" {}={}", key, value);
    }
  };
  shrink("steps", o.steps, kCpuSteps);
  shrink("batch_size", o.batch_size, 64);
  shrink("image_size", o.model.image_size, 32);
  shrink("sample_every", o.sample_every, int64_t(250));
  shrink("checkpoint_every", o.checkpoint_every, int64_t(500));
  shrink("log_every", o.log_every, int64_t(50));
  o.announce_duration = true;
  return changed.empty() ? changed : changed.substr(1);
}

}  // namespace gan::train
