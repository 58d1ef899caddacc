// Module state <-> safetensors entries in PyTorch's names and layouts, so that a checkpoint's
// "G." tensors load into the equivalent PyTorch nn.Sequential with load_state_dict (after
// stripping the prefix). Conversions follow each tensor's nn::TorchLayout: conv weights
// (A, kh, kw, B) <-> (A, B, kh, kw); Linear weights/biases over an NHWC feature map <-> NCHW;
// a conv's spectral-norm v (kh, kw, in) <-> (in, kh, kw); num_batches_tracked as int64.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/nn.h"
#include "models/gan.h"
#include "tools/io/safetensors.h"

namespace gan::ckpt {

// Our layout -> PyTorch's (a CPU f32 copy), and back into `dst` (our layout, any device).
Tensor to_torch(const Tensor& t, const nn::TorchLayout& layout);
void from_torch(const Tensor& torch, const nn::TorchLayout& layout, const Tensor& dst);

// PyTorch's two spectral-norm naming schemes: torch.nn.utils.spectral_norm's (kLegacy:
// weight_orig, weight_u, weight_v; what checkpoints hold) and the one PyTorch now recommends,
// torch.nn.utils.parametrizations.spectral_norm's (kParametrize: parametrizations.weight.original,
// parametrizations.weight.0._u, parametrizations.weight.0._v). Same tensors, same shapes.
enum class SnNaming { kLegacy, kParametrize };
// A state_dict name (in the legacy scheme) in the given scheme; other names are unchanged.
std::string sn_name(const std::string& legacy, SnNaming naming);

// Appends every parameter and buffer of m as prefix + state_dict name.
void append_module(std::vector<st::Entry>& out, const std::string& prefix, const nn::Module& m,
                   SnNaming naming = SnNaming::kLegacy);
// Loads them back in place (the buffers kernels hold stay valid); every tensor of m must be
// present with PyTorch's shape: "checkpoint: <path>: tensor 'G.0.weight' has shape ..".
// Spectral-norm tensors are found under either naming scheme.
void load_module(const st::File& f, const std::string& prefix, nn::Module& m);

// The model's keys in a run's configuration (a flat JSON object: "model", "preset", "image_size",
// "channels", "ngf", "ndf", "z_dim", "official_attention", "num_classes", "g_attn", "d_attn",
// "g_init", "d_init", "class_names"), written into j / read back; keys older checkpoints lack take
// defaults. Class names, when present, number num_classes.
void model_config_to_json(const models::ModelConfig& m, nlohmann::json& j);
models::ModelConfig model_config_from_json(const nlohmann::json& j);

// The format of a models-only checkpoint (tools/scripts/studiogan_convert.py import: G, D, G_ema
// and the configuration; gan_train checkpoints are "gan-engine checkpoint v1").
inline constexpr const char* kModelFormat = "gan-engine model v1";

// A gan_train checkpoint or a models-only one (the file, or a run directory holding
// checkpoint.safetensors): its models built from the stored configuration, G loaded (G_ema with
// ema: the file must hold one; a gan_train run's G_ema takes G's batch-norm statistics and
// spectral-norm vectors, a models-only file's keeps its own), D left as initialised
// (load_module(file, "D.", *d) if needed).
// Errors name the file: "checkpoint: <path>: corrupt configuration (...)".
struct LoadedGan {
  std::string path;  // the file read
  st::File file;
  models::Gan net;
};
LoadedGan load_gan(const std::string& path_or_run_dir, Device device, bool ema = false);

}  // namespace gan::ckpt
