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
#include "models/gan.h"  // IWYU pragma: keep (ModelConfig, Gan, SelfAttention)

namespace gan::models {

// StudioGAN's initialisations (ModelConfig g_init / d_init): orthogonal weights (ortho),
// N(0, 0.02) (N02), Glorot-uniform (glorot); biases 0. Batch-norm weights stay 1, sigma 0.
enum class ResnetInit { kOrtho, kN02, kGlorot };
ResnetInit parse_resnet_init(const std::string& name);  // "ortho", "N02", "glorot"

// The attention placement a ModelConfig resolves to (its own, or StudioGAN's SAGAN default for
// the image size); {} for none.
std::vector<int> resnet_g_attn(const ModelConfig& c);
std::vector<int> resnet_d_attn(const ModelConfig& c);

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

// Builds the ResNet SAGAN's G and D (GanNets over LabelledNets) on gen's device, initialised per
// config (arch kSaganResnet; ngf, ndf are the conv dims; z_dim 0 means 128); throws gan::Error on a
// configuration StudioGAN has no table for. models::build calls it.
Gan build_resnet(const ModelConfig& config, Generator& gen);

}  // namespace gan::models
