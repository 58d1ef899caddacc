// The default feature network of gan_eval: a small CNN classifier for 1-channel 32 x 32 images
// (Fashion-MNIST/MNIST padded as gan_train feeds them: 28 x 28 centred, background -1), trained by
// this engine (tools/programs/train_classifier.cpp; weights in models/weights/, loaded by
// tools/eval/feature_nets.h). Its penultimate layer (128 ReLU units) is the feature
// space of the Frechet distance (FD: not FID, which is InceptionV3's), KID and precision/recall;
// its logits give the Inception-Score-style score and the class histogram.
//
//   features: 0 Conv2d(1, 32, 3, p 1)  1 BatchNorm2d  2 ReLU  3 MaxPool2d(2)       -> 16 x 16 x 32
//             4 Conv2d(32, 64, 3, p 1) 5 BatchNorm2d  6 ReLU  7 MaxPool2d(2)       -> 8 x 8 x 64
//             8 Flatten  9 Linear(4096, 128)  10 ReLU                              -> 128
//   head:     Linear(128, 10)                                                      -> logits
//
// State names and layouts are PyTorch's (a torch.nn.Module with `features` = nn.Sequential and
// `head` = nn.Linear loads the file strictly; Linear 9 takes PyTorch's NCHW flatten order).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "engine/nn.h"

namespace gan::models {

// What the metrics need from a network: features (and class logits, when it has a classifier
// head) of images in [-1, 1]. Implemented by Classifier and InceptionV3 (models/inception.h).
class FeatureNet : public nn::Module {
 public:
  struct Output {
    Var features;  // (B, F)
    Var logits;    // (B, classes), or undefined
  };
  // x (B, S, S, C) in [-1, 1].
  virtual Output forward(const Var& x) = 0;
  // The image size S images are brought to first (0: any size, the net resizes itself), and C.
  virtual int input_size() const = 0;
  virtual int input_channels() const = 0;
  virtual std::string describe() const = 0;
};

struct ClassifierConfig {
  int image_size = 32;
  int channels = 1;
  int classes = 10;
  int width = 32;      // channels of the first conv (the second has twice as many)
  int features = 128;  // the penultimate layer
};

class Classifier : public FeatureNet {
 public:
  Classifier(const ClassifierConfig& config, Generator& gen);
  Output forward(const Var& x) override;
  int input_size() const override { return config_.image_size; }
  int input_channels() const override { return config_.channels; }
  const ClassifierConfig& config() const { return config_; }
  // "classifier 32x32x1 -> 128 -> 10 (width 32)"
  std::string describe() const override;

 private:
  ClassifierConfig config_;
  std::shared_ptr<nn::Sequential> features_;
  std::shared_ptr<nn::Linear> head_;
};

}  // namespace gan::models
