#include "tools/eval/classifier.h"

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "tools/io/checkpoint.h"

namespace gan::eval {

Classifier::Classifier(const ClassifierConfig& c, Generator& gen) : config_(c) {
  GAN_CHECK(c.image_size % 4 == 0 && c.image_size >= 4 && (c.channels == 1 || c.channels == 3) &&
                c.classes >= 2 && c.width >= 1 && c.features >= 1,
            fmt::format("classifier: bad configuration {}x{}x{}, {} classes", c.image_size,
                        c.image_size, c.channels, c.classes));
  const Device dev = gen.device();
  const int64_t w1 = c.width, w2 = 2 * c.width, s4 = c.image_size / 4;
  features_ = std::make_shared<nn::Sequential>();
  features_->add(std::make_shared<nn::Conv2d>(c.channels, w1, 3, 1, 1, true, gen));
  features_->add(std::make_shared<nn::BatchNorm2d>(w1, dev));
  features_->add(std::make_shared<nn::ReLU>());
  features_->add(std::make_shared<nn::MaxPool2d>());
  features_->add(std::make_shared<nn::Conv2d>(w1, w2, 3, 1, 1, true, gen));
  features_->add(std::make_shared<nn::BatchNorm2d>(w2, dev));
  features_->add(std::make_shared<nn::ReLU>());
  features_->add(std::make_shared<nn::MaxPool2d>());
  features_->add(std::make_shared<nn::Flatten>());
  auto fc = features_->add(std::make_shared<nn::Linear>(s4 * s4 * w2, c.features, true, gen));
  fc->mark_cols_hwc(s4, s4, w2);
  features_->add(std::make_shared<nn::ReLU>());
  features_->fuse_batchnorm_activations();
  register_module("features", features_);
  head_ = register_module("head", std::make_shared<nn::Linear>(c.features, c.classes, true, gen));
}

FeatureNet::Output Classifier::forward(const Var& x) {
  const Shape& s = x.shape();
  GAN_CHECK(s.ndim == 4 && s[1] == config_.image_size && s[2] == config_.image_size &&
                s[3] == config_.channels,
            fmt::format("classifier: expected images (B, {}, {}, {}), got {}", config_.image_size,
                        config_.image_size, config_.channels, s.str()));
  Var f = features_->forward(x);
  return {f, head_->forward(f)};
}

std::string Classifier::describe() const {
  return fmt::format("classifier {}x{}x{} -> {} -> {} (width {})", config_.image_size,
                     config_.image_size, config_.channels, config_.features, config_.classes,
                     config_.width);
}

void save_classifier(const std::string& path, const Classifier& c,
                     const std::map<std::string, std::string>& metadata) {
  std::vector<st::Entry> entries;
  ckpt::append_module(entries, "", c);
  st::Metadata meta = metadata;
  const ClassifierConfig& k = c.config();
  meta["gan.kind"] = "classifier";
  meta["gan.classifier_config"] = nlohmann::json{
      {"image_size", k.image_size},
      {"channels", k.channels},
      {"classes", k.classes},
      {"width", k.width},
      {"features", k.features}}.dump();
  st::write_file(path, entries, meta);
}

LoadedClassifier load_classifier(const std::string& path, Device device) {
  GAN_CHECK(
      std::filesystem::is_regular_file(path),
      fmt::format("classifier: {}: no such file (tools/programs/train_classifier.cpp makes one)",
                  path));
  const st::File f = st::read_file(path);
  const auto kind = f.metadata.find("gan.kind");
  GAN_CHECK(kind != f.metadata.end() && kind->second == "classifier",
            fmt::format("classifier: {}: not a classifier file (no gan.kind = classifier)", path));
  ClassifierConfig k;
  try {
    const auto j = nlohmann::json::parse(f.meta("gan.classifier_config"));
    k.image_size = j.at("image_size").get<int>();
    k.channels = j.at("channels").get<int>();
    k.classes = j.at("classes").get<int>();
    k.width = j.at("width").get<int>();
    k.features = j.at("features").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw_error(fmt::format("classifier: {}: bad gan.classifier_config: {}", path, e.what()));
  }
  Generator gen(0, device);
  auto net = std::make_shared<Classifier>(k, gen);
  ckpt::load_module(f, "", *net);
  net->eval();
  LoadedClassifier out{net, {}};
  for (const auto& [key, value] : f.metadata)
    if (!key.starts_with("gan.")) out.metadata[key] = value;
  return out;
}

std::string default_classifier_path(const char* argv0) {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("GAN_CLASSIFIER"); env && *env) return env;
  const char* rel = "models/weights/fashion_mnist_classifier.safetensors";
  std::error_code ec;
  const fs::path exe = argv0 ? fs::canonical(fs::path(argv0), ec) : fs::path();
  for (const fs::path& base : {ec ? fs::path() : exe.parent_path().parent_path(),
                               fs::current_path(), fs::path(GAN_SOURCE_DIR)})
    if (!base.empty() && fs::exists(base / rel)) return (base / rel).string();
  return (fs::path(GAN_SOURCE_DIR) / rel).string();
}

std::string default_cache_dir() {
  namespace fs = std::filesystem;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (fs::path(x) / "gan_eval").string();
  if (const char* h = std::getenv("HOME"); h && *h)
    return (fs::path(h) / ".cache/gan_eval").string();
  return "";
}

}  // namespace gan::eval
