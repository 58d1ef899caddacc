// The ResNet SAGAN of the paper (arXiv 1805.08318) as StudioGAN configures it for SAGAN
// (backbone `resnet`): a generator of up-sampling residual blocks with conditional batch norm
// (cBN) and a discriminator of down-sampling residual blocks with a projection head (PD), spectral
// norm on every conv, linear and embedding of both (eps 1e-6), self-attention after chosen
// blocks, 32, 64 and 128 px. Unconditional: plain batch norm and no projection.
//
// Parameter and buffer names equal StudioGAN's Generator and Discriminator state_dicts for the
// same configuration ("linear0.weight_orig", "blocks.0.0.bn1.gain.weight_orig", ...), so weights
// load both ways (docs/models.md lists them). Labels enter as one-hot rows (B, num_classes), as
// StudioGAN's F.one_hot: the caller builds them with the batch.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"
#include "models/gan.h"

namespace gan::models {

// StudioGAN's initialisations (g_init / d_init): orthogonal weights (ortho), N(0, 0.02) (N02),
// Glorot-uniform (glorot); biases 0. Batch-norm weights stay 1, attention sigma 0.
enum class ResnetInit { kOrtho, kN02, kGlorot };
const char* resnet_init_name(ResnetInit i);
ResnetInit parse_resnet_init(const std::string& name);  // "ortho", "N02", "glorot"

struct ResnetConfig {
  int image_size = 32;            // 32, 64 or 128
  int channels = 3;               // 1 or 3
  int64_t z_dim = 128;            // StudioGAN's SAGAN: 128
  int64_t g_conv_dim = 64;        // StudioGAN's SAGAN: 64
  int64_t d_conv_dim = 64;        // StudioGAN's SAGAN: 64
  int num_classes = 0;            // 0: unconditional (batch norm, no projection)
  std::vector<int> g_attn = {2};  // 1-based blocks followed by attention (StudioGAN attn_g_loc)
  std::vector<int> d_attn = {1};  // (attn_d_loc)
  ResnetInit g_init = ResnetInit::kOrtho, d_init = ResnetInit::kOrtho;
};

// Batch norm without affine parameters (eps 1e-4), then y = bn(x) (1 + gain(onehot)) +
// bias(onehot), gain and bias spectral-normalised linear maps without bias (StudioGAN's
// ConditionalBatchNorm2d); ReLU optionally applied after.
class ConditionalBatchNorm : public nn::Module {
 public:
  ConditionalBatchNorm(int64_t num_classes, int64_t channels, Generator& gen);
  Var forward(const Var& x, const Var& onehot, bool relu_after);
  std::shared_ptr<nn::Linear> gain, bias;

 private:
  Tensor running_mean_, running_var_, num_batches_tracked_;
};

// A ResNet generator or discriminator: forward(x, onehot) with onehot undefined when
// unconditional; one spectral-norm group for the whole network.
class ResnetNet : public nn::Module {
 public:
  virtual Var forward(const Var& x, const Var& onehot) = 0;
  void run_spectral_norm() { sn_.run(training()); }
  std::vector<SelfAttention*> attention_layers() const { return attn_; }

 protected:
  nn::SpectralNormGroup sn_;
  std::vector<SelfAttention*> attn_;
};

struct ResnetGan {
  std::shared_ptr<ResnetNet> g, d;
  ResnetConfig config;
};

// Builds G and D on gen's device (initialised per config); throws gan::Error on a configuration
// StudioGAN has no table for.
ResnetGan build_resnet(const ResnetConfig& config, Generator& gen);

// x (N, H, W, C) -> (N, 2H, 2W, C), each pixel repeated 2x2 (F.interpolate(scale_factor=2,
// mode="nearest")); differentiable twice.
Var upsample_nearest2x(const Var& x);

}  // namespace gan::models
