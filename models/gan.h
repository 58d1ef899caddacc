// Model definitions: DCGAN (pytorch/examples shape, 32/64/128 px, and the `wide` preset of the
// study this project reproduces) and SAGAN (the public PyTorch port's layout). Each model is an
// nn::Sequential numbered like the equivalent PyTorch nn.Sequential, so state_dict names match
// (docs/models.md lists them with the parameter counts).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"

namespace gan::models {

// kSaganResnet: the paper's ResNet SAGAN as StudioGAN configures it (models/resnet.h).
enum class Arch { kSagan, kDcgan, kSaganResnet };
enum class Preset { kDefault, kWide };  // kWide: DCGAN only
// Names as on the command line and in checkpoints ("sagan", "dcgan", "sagan-resnet"; "default",
// "wide"); the
// parsers throw gan::Error naming the accepted values.
const char* arch_name(Arch a);
Arch parse_arch(const std::string& name);
const char* preset_name(Preset p);
Preset parse_preset(const std::string& name);

struct ModelConfig {
  Arch arch = Arch::kSagan;
  Preset preset = Preset::kDefault;
  int image_size = 64;              // 32, 64 or 128 (wide: 64)
  int channels = 3;                 // 1 or 3
  int64_t z_dim = 0;                // 0: the model's default (DCGAN 100, SAGAN 128)
  int64_t ngf = 64, ndf = 64;       // widths (DCGAN ngf/ndf, SAGAN conv_dim = ngf)
  bool official_attention = false;  // SAGAN: pooled keys/values, C/2 values, output projection
  // sagan-resnet only (ngf, ndf are StudioGAN's g_conv_dim, d_conv_dim):
  int num_classes = 0;                  // 0: unconditional; else cBN in G and a projection D
  std::vector<int> g_attn{}, d_attn{};  // 1-based blocks followed by attention; empty: the size's
                                        // default (StudioGAN's SAGAN: G 2 / 3 / 4 at 32 / 64 / 128
                                        // px, D 1); {0}: none
  std::string g_init = "ortho", d_init = "ortho";  // ortho, N02 or glorot
  // Label k's name (empty: unnamed): from the dataset (folder names, CIFAR-10's, Fashion-MNIST's)
  // or --class-names; kept in checkpoints with the rest of the configuration.
  std::vector<std::string> class_names{};
};

// SAGAN self-attention on NHWC x (B, H, W, C), d = C/8:
//   default: q, k, v = 1x1 convs (C/8, C/8, C, with bias; spectral norm optional), computed as
//            one GEMM on the concatenated weights; y = gamma softmax(q k^T) v + x (fused kernel).
//   official: k, v from 2x2 max-pooled features (N/4 keys), v with C/2 channels, a 1x1 output
//            projection C/2 -> C, all without bias; y = gamma proj(softmax(q k^T) v) + x.
// gamma starts at 0.
class SelfAttention : public nn::Layer {
 public:
  // studiogan_names: StudioGAN's names for the official form (conv1x1_theta, _phi, _g, _attn,
  // sigma) instead of q, k, v, o, gamma. sn_eps: the spectral norm's eps.
  SelfAttention(int64_t channels, bool spectral_norm, bool official, Generator& gen,
                bool studiogan_names = false, double sn_eps = 1e-12);
  Var forward(const Var& x) override;
  const Var& gamma() const { return gamma_; }
  int64_t channels() const { return c_; }
  bool official() const { return official_; }
  // Softmax rows (B, len(queries), keys) of chosen query pixels (row-major index y * W + x) for
  // input x, computed without recording; keys are pixels (default) or 2x2-pooled pixels.
  std::vector<float> attention_map(const Var& x, const std::vector<int64_t>& queries);

 private:
  int64_t c_, d_;
  bool official_;
  std::shared_ptr<nn::Conv2d> q_, k_, v_, o_;
  Var gamma_;
};

// A network whose forward also takes class labels as one-hot rows (B, classes), undefined for an
// unconditional model (the ResNet SAGAN).
class LabelledNet : public nn::Module {
 public:
  virtual Var forward(const Var& x, const Var& onehot) = 0;
  virtual std::vector<SelfAttention*> attention_layers() const = 0;
};

// A generator or a discriminator: the layers (an nn::Sequential, or a LabelledNet), plus one
// spectral-norm group that recomputes every normalised weight of the model in one op at the start
// of each forward.
class GanNet : public nn::Layer {
 public:
  explicit GanNet(std::shared_ptr<nn::Sequential> net);
  GanNet(std::shared_ptr<LabelledNet> net, int num_classes);
  Var forward(const Var& x) override;  // an unconditional network, or no labels
  // onehot (B, num_classes()); undefined: forward(x).
  Var forward(const Var& x, const Var& onehot);
  int num_classes() const { return num_classes_; }
  bool sequential() const { return net_ != nullptr; }
  // The layers of a Sequential network (throws for a LabelledNet).
  nn::Sequential& net();
  std::vector<SelfAttention*> attention_layers();
  std::vector<nn::WeightLayer*> spectral_norm_layers();
  // Recomputes every spectral-normalised weight for the next forward of the layers (forward()
  // does this first; call it before running layers one by one through net()).
  void run_spectral_norm() { sn_.run(training()); }
  // Names of the spectral-norm layers (state_dict prefixes) in group order.
  std::vector<std::string> spectral_norm_names();

 private:
  std::shared_ptr<nn::Sequential> net_;
  std::shared_ptr<LabelledNet> labelled_;
  int num_classes_ = 0;
  nn::SpectralNormGroup sn_;
};

struct Gan {
  std::shared_ptr<GanNet> g, d;
  int64_t z_dim = 0;
  std::string default_loss;  // "bce" (DCGAN) or "hinge" (SAGAN)
  ModelConfig config;        // resolved (z_dim filled in)
};

// Builds G and D on gen's device; throws gan::Error on an unsupported configuration.
Gan build(const ModelConfig& config, Generator& gen);

// The generator's input for a latent batch z (B, z_dim): (B, 1, 1, z_dim), or z itself for the
// wide preset and the ResNet SAGAN (their first layer is a Linear).
Var latent_input(const Gan& gan, const Var& z);

// One-hot rows (labels.size(), classes) float32 on device; a label outside [0, classes) is an
// error naming it.
Tensor one_hot(const std::vector<int32_t>& labels, int classes, Device device);

}  // namespace gan::models
