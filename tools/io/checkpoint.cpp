#include "tools/io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace gan::ckpt {

namespace {

using nn::TorchLayout;

// Row permutation between (h, w, c) order (ours) and (c, h, w) order (PyTorch): for each torch
// index, the index of ours.
std::vector<int64_t> hwc_from_chw(int64_t h, int64_t w, int64_t c) {
  std::vector<int64_t> ours(size_t(h * w * c));
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) ours[size_t((ch * h + y) * w + x)] = (y * w + x) * c + ch;
  return ours;
}

// rows x cols matrix; permute rows (by_rows) or columns: out[perm-index] = in[map[index]].
Tensor permute_matrix(const Tensor& t, int64_t rows, int64_t cols, const std::vector<int64_t>& map,
                      bool by_rows, bool inverse) {
  const Tensor src = t.to(Device::CPU).to(DType::F32);
  Tensor dst = Tensor::empty(src.shape());
  const float* a = src.data<float>();
  float* b = dst.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t tr = by_rows ? r : c;
      const int64_t mapped = map[size_t(tr)];
      const int64_t sr = by_rows ? mapped : r, sc = by_rows ? c : mapped;
      if (!inverse)
        b[r * cols + c] = a[sr * cols + sc];  // torch[r][c] = ours[mapped]
      else
        b[sr * cols + sc] = a[r * cols + c];  // ours[mapped] = torch[r][c]
    }
  return dst;
}

Tensor convert(const Tensor& t, const TorchLayout& l, bool to_torch_dir) {
  switch (l.kind) {
    case TorchLayout::kSame:
      return t.to(Device::CPU).clone();
    case TorchLayout::kConv:
      return to_torch_dir ? nn::to_torch_layout(t) : nn::from_torch_layout(t);
    case TorchLayout::kSnVConv:
      return to_torch_dir ? nn::sn_v_to_torch(t, l.h, l.w, l.c)
                          : nn::sn_v_from_torch(t, l.h, l.w, l.c);
    case TorchLayout::kLinearOutHWC: {
      const int64_t rows = t.dim(0), cols = t.ndim() == 2 ? t.dim(1) : 1;
      return permute_matrix(t, rows, cols, hwc_from_chw(l.h, l.w, l.c), true, !to_torch_dir);
    }
    case TorchLayout::kLinearInHWC: {
      const int64_t rows = t.dim(0), cols = t.dim(1);
      return permute_matrix(t, rows, cols, hwc_from_chw(l.h, l.w, l.c), false, !to_torch_dir);
    }
  }
  return t;
}

std::map<std::string, TorchLayout> layouts_of(const nn::Module& m) {
  std::map<std::string, TorchLayout> out;
  for (auto& [name, l] : m.named_layouts()) out[name] = l;
  return out;
}

std::vector<int64_t> torch_shape(const Tensor& t, const TorchLayout& l) {
  if (l.kind == TorchLayout::kConv) return {t.dim(0), t.dim(3), t.dim(1), t.dim(2)};
  return t.shape().vec();
}

}  // namespace

Tensor to_torch(const Tensor& t, const nn::TorchLayout& layout) {
  return convert(t.to(DType::F32), layout, true);
}

void from_torch(const Tensor& torch, const nn::TorchLayout& layout, const Tensor& dst) {
  Tensor ours = convert(torch, layout, false).reshape(dst.shape());
  dst.copy_from(ours.to(dst.dtype()).to(dst.device()));
}

std::string sn_name(const std::string& legacy, SnNaming naming) {
  if (naming == SnNaming::kLegacy) return legacy;
  static const std::pair<const char*, const char*> map[] = {
      {"weight_orig", "parametrizations.weight.original"},
      {"weight_u", "parametrizations.weight.0._u"},
      {"weight_v", "parametrizations.weight.0._v"}};
  for (const auto& [from, to] : map) {
    const std::string f = from;
    if (legacy == f || legacy.ends_with("." + f))
      return legacy.substr(0, legacy.size() - f.size()) + to;
  }
  return legacy;
}

void append_module(std::vector<st::Entry>& out, const std::string& prefix, const nn::Module& m,
                   SnNaming naming) {
  const auto layouts = layouts_of(m);
  auto layout = [&](const std::string& n) {
    auto it = layouts.find(n);
    return it == layouts.end() ? TorchLayout{} : it->second;
  };
  for (auto& [name, p] : m.named_parameters())
    out.push_back(
        st::from_tensor(prefix + sn_name(name, naming), to_torch(p.value(), layout(name))));
  for (auto& [name, b] : m.named_buffers()) {
    if (name.ends_with("num_batches_tracked")) {
      out.push_back(st::from_int64(prefix + name, {int64_t(b.to_double_vector()[0])}, {}));
      continue;
    }
    out.push_back(st::from_tensor(prefix + sn_name(name, naming),
                                  to_torch(b.to(Device::CPU).to(DType::F32), layout(name))));
  }
}

void load_module(const st::File& f, const std::string& prefix, nn::Module& m) {
  const auto layouts = layouts_of(m);
  auto layout = [&](const std::string& n) {
    auto it = layouts.find(n);
    return it == layouts.end() ? TorchLayout{} : it->second;
  };
  // The file's name of a tensor: ours (the legacy scheme) or the parametrize scheme's.
  auto stored = [&](const std::string& name) {
    const std::string alt = prefix + sn_name(name, SnNaming::kParametrize);
    return f.has(prefix + name) || !f.has(alt) ? prefix + name : alt;
  };
  for (auto& [name, p] : m.named_parameters()) {
    const TorchLayout l = layout(name);
    from_torch(f.tensor(stored(name), Device::CPU, torch_shape(p.value(), l)), l, p.value());
  }
  for (auto& [name, b] : m.named_buffers()) {
    if (name.ends_with("num_batches_tracked")) {
      const auto v = f.int64s(prefix + name);
      GAN_CHECK(v.size() == 1,
                fmt::format("checkpoint: {}: tensor '{}{}' is not a scalar", f.path, prefix, name));
      b.fill_(double(v[0]));
      continue;
    }
    const TorchLayout l = layout(name);
    from_torch(f.tensor(stored(name), Device::CPU, torch_shape(b, l)), l, b);
  }
}

void model_config_to_json(const models::ModelConfig& m, nlohmann::json& j) {
  j["model"] = models::arch_name(m.arch);
  j["preset"] = models::preset_name(m.preset);
  j["image_size"] = m.image_size;
  j["channels"] = m.channels;
  j["ngf"] = m.ngf;
  j["ndf"] = m.ndf;
  j["z_dim"] = m.z_dim;
  j["official_attention"] = m.official_attention;
  j["num_classes"] = m.num_classes;
  j["g_attn"] = m.g_attn;
  j["d_attn"] = m.d_attn;
  j["g_init"] = m.g_init;
  j["d_init"] = m.d_init;
  j["class_names"] = m.class_names;
}

models::ModelConfig model_config_from_json(const nlohmann::json& j) {
  models::ModelConfig m;
  m.arch = models::parse_arch(j.at("model").get<std::string>());
  m.preset = models::parse_preset(j.at("preset").get<std::string>());
  m.image_size = j.at("image_size").get<int>();
  m.channels = j.at("channels").get<int>();
  m.ngf = j.at("ngf").get<int64_t>();
  m.ndf = j.at("ndf").get<int64_t>();
  m.z_dim = j.at("z_dim").get<int64_t>();
  m.official_attention = j.at("official_attention").get<bool>();
  // The ResNet SAGAN's keys (absent before it existed).
  m.num_classes = j.value("num_classes", 0);
  m.g_attn = j.value("g_attn", std::vector<int>{});
  m.d_attn = j.value("d_attn", std::vector<int>{});
  m.g_init = j.value("g_init", std::string("ortho"));
  m.d_init = j.value("d_init", std::string("ortho"));
  m.class_names = j.value("class_names", std::vector<std::string>{});
  if (!m.class_names.empty() && int(m.class_names.size()) != m.num_classes)
    throw std::invalid_argument(
        fmt::format("{} class names for {} classes", m.class_names.size(), m.num_classes));
  return m;
}

LoadedGan load_gan(const std::string& path_or_run_dir, Device device, bool ema) {
  LoadedGan out;
  out.path = std::filesystem::is_directory(path_or_run_dir)
                 ? (std::filesystem::path(path_or_run_dir) / "checkpoint.safetensors").string()
                 : path_or_run_dir;
  out.file = st::read_file(out.path);
  const st::File& f = out.file;
  models::ModelConfig mc;
  bool ema_averages_buffers = false;
  try {
    const nlohmann::json config = nlohmann::json::parse(f.meta("config"));
    mc = model_config_from_json(config);
    ema_averages_buffers = config.value("ema_buffers", std::string("copy")) == "average";
  } catch (const std::exception& e) {  // nlohmann::json's errors, std::invalid_argument
    throw Error(fmt::format("checkpoint: {}: corrupt configuration ({})", out.path, e.what()));
  }
  Generator init(0, device);
  out.net = models::build(mc, init);
  GAN_CHECK(!ema || std::any_of(f.entries.begin(), f.entries.end(),
                                [](const st::Entry& e) { return e.name.starts_with("G_ema."); }),
            fmt::format("checkpoint: {}: the run kept no EMA of G (train with --ema)", out.path));
  load_module(f, ema ? "G_ema." : "G.", *out.net.g);
  // gan_train's EMA generator never runs forward: its buffers are the training generator's, unless
  // the run averaged them (--ema-buffers average). A converted StudioGAN G_ema (format
  // kModelFormat) keeps its own (StudioGAN averages them too).
  const bool own_buffers =
      ema_averages_buffers || (f.metadata.count("format") && f.meta("format") == kModelFormat);
  if (ema && !own_buffers) {
    models::Gan tmp = models::build(mc, init);
    load_module(f, "G.", *tmp.g);
    auto src = tmp.g->named_buffers();
    auto dst = out.net.g->named_buffers();
    for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_from(src[i].second);
  }
  return out;
}

}  // namespace gan::ckpt
