// InceptionV3 exactly as pytorch-fid's FID network (pytorch_fid.inception.InceptionV3 with
// use_fid_inception=True, resize_input=True, normalize_input=True, output block 3): torchvision's
// Inception3 stem and blocks with the TF-ported FIDInceptionA/C/E_1/E_2 (average pools that do not
// count padding; a max pool in the last block), BatchNorm eps 0.001, then adaptive average pooling
// to the 2048 pool3 features. Inputs are resized to 299 x 299 (bilinear, align_corners=False) and
// used in [-1, 1] (pytorch-fid's 2x - 1 of [0, 1] images; bilinear resizing commutes with it).
// Gray images are replicated to RGB by the loader.
//
// Weights: state-dict names are torchvision's ("Conv2d_1a_3x3.conv.weight",
// "Mixed_5b.branch1x1.bn.running_mean", ...). The user converts pytorch-fid's published
// pt_inception-2015-12-05-6726825d.pth with tools/scripts/convert_fid_inception.py; with its fc
// (1008 classes) present, logits are computed too (for the IS-style score and class histogram).
#pragma once

#include <memory>
#include <string>

#include "models/classifier.h"

namespace gan::models {

class InceptionV3 : public FeatureNet {
 public:
  // with_fc: also the 2048 -> 1008 classifier (torchvision's fc).
  InceptionV3(Generator& gen, bool with_fc);
  // How inputs reach 299 x 299: pytorch-fid's bilinear resize (default), clean-fid's
  // recommendation, PIL's antialiased bicubic, clamped to the input range as clean-fid clips, or
  // the TF graph's own (TF1 bilinear without half-pixel centres: the original FID code's and
  // StyleGAN's).
  enum class Resize { kBilinear, kBicubicAA, kTF };
  void set_resize(Resize r) { resize_ = r; }
  // What the [-1, 1] input (the loader's v / 127.5 - 1 of 8-bit values v) becomes before the
  // network: kept (pytorch-fid's 2 (v / 255) - 1, the default), or the TF graph's v / 128 - 1
  // (the original TF code, StyleGAN's and clean-fid's TF-Inception), applied after the resize.
  enum class InputRange { kTorch, kTF };
  void set_input_range(InputRange r) { range_ = r; }
  // Logits with fc's bias (default: torchvision's fc, what pytorch-fid's network computes) or
  // without it (what torch-fidelity's Inception Score and the original TF code use).
  void set_logits_bias(bool on) { logits_bias_ = on; }
  Output forward(const Var& x) override;
  int input_size() const override { return 0; }
  int input_channels() const override { return 3; }
  std::string describe() const override;

 private:
  Resize resize_ = Resize::kBilinear;
  InputRange range_ = InputRange::kTorch;
  bool logits_bias_ = true;
  std::vector<std::shared_ptr<nn::Layer>> blocks_;
  std::shared_ptr<nn::Linear> fc_;
};

}  // namespace gan::models
