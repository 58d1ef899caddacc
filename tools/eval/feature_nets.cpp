#include "tools/eval/feature_nets.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "tools/io/checkpoint.h"
#include "tools/io/safetensors.h"

namespace gan::eval {

namespace {

double mix(uint64_t x, uint64_t k) {
  uint64_t h = (x + 1) * 0x9E3779B97F4A7C15ull + k * 0xBF58476D1CE4E5B9ull;
  h ^= h >> 31;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 29;
  return double(h >> 11) / 9007199254740992.0 - 0.5;
}

uint64_t name_key(const std::string& n) {
  uint64_t k = 0;
  for (size_t i = 0; i < n.size(); ++i) k += (i + 1) * uint64_t(static_cast<unsigned char>(n[i]));
  return k % 997;
}

}  // namespace

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
                               fs::current_path(), fs::path(source_dir())})
    if (!base.empty() && fs::exists(base / rel)) return (base / rel).string();
  return (fs::path(source_dir()) / rel).string();
}

std::string default_cache_dir() {
  namespace fs = std::filesystem;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (fs::path(x) / "gan_eval").string();
  if (const char* h = std::getenv("HOME"); h && *h)
    return (fs::path(h) / ".cache/gan_eval").string();
  return "";
}

std::shared_ptr<InceptionV3> load_inception(const std::string& path, Device device) {
  GAN_CHECK(
      std::filesystem::is_regular_file(path),
      fmt::format("inception: {}: no such file (tools/scripts/convert_fid_inception.py makes it)",
                  path));
  const st::File f = st::read_file(path);
  GAN_CHECK(f.has("Mixed_7c.branch_pool.conv.weight"),
            fmt::format("inception: {}: not an InceptionV3 state dict (convert pytorch-fid's "
                        "weights with tools/scripts/convert_fid_inception.py)",
                        path));
  Generator g(0, device);
  auto net = std::make_shared<InceptionV3>(g, f.has("fc.weight"));
  ckpt::load_module(f, "", *net);
  net->eval();
  return net;
}

void fill_formula_weights(nn::Module& net) {
  std::map<std::string, nn::TorchLayout> layouts;
  for (auto& [name, l] : net.named_layouts()) layouts[name] = l;
  auto fill = [&](const std::string& name, const Tensor& dst) {
    if (dst.dtype() == DType::F64) {  // num_batches_tracked (a host count)
      dst.fill_(0.0);
      return;
    }
    const nn::TorchLayout l = layouts.count(name) ? layouts[name] : nn::TorchLayout{};
    const Tensor like = ckpt::to_torch(dst, l);  // PyTorch's shape
    const double k = double(name_key(name));
    const int64_t n = like.numel();
    std::vector<float> v(static_cast<size_t>(n));
    const bool bn = name.find(".bn.") != std::string::npos;
    const bool fc = name.starts_with("fc.");
    double fan_in = 1;
    for (int d = 1; d < like.ndim(); ++d) fan_in *= double(like.dim(d));
    for (int64_t i = 0; i < n; ++i) {
      const double x = double(i);
      double w = 0;
      if (name.ends_with("num_batches_tracked"))
        w = 0;
      else if (fc)
        w = name.ends_with("weight") ? 0.05 * std::sin(0.23 * x + k)
                                     : 0.01 * std::cos(0.29 * x + k);
      else if (bn && name.ends_with("weight"))
        w = 1 + 0.1 * std::sin(0.11 * x + k);
      else if (bn && name.ends_with("bias"))
        w = 0.1 * std::cos(0.13 * x + k);
      else if (bn && name.ends_with("running_mean"))
        w = 0.05 * std::sin(0.17 * x + k);
      else if (bn && name.ends_with("running_var"))
        w = 1 + 0.2 * std::pow(std::sin(0.19 * x + k), 2);
      else
        w = mix(uint64_t(i), uint64_t(k)) * std::sqrt(24.0 / fan_in);
      v[size_t(i)] = float(w);
    }
    ckpt::from_torch(Tensor::from_vector(v, like.shape()), l, dst);
  };
  for (auto& [name, p] : net.named_parameters()) fill(name, p.value());
  for (auto& [name, b] : net.named_buffers()) fill(name, b);
}

}  // namespace gan::eval
