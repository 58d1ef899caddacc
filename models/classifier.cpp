#include "models/classifier.h"

#include <fmt/format.h>

#include "engine/error.h"

namespace gan::models {

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
  // Float32 out (bf16 precision: the activations inside are bf16).
  const Var f = cast(features_->forward(x), DType::F32);
  return {f, cast(head_->forward(f), DType::F32)};
}

std::string Classifier::describe() const {
  return fmt::format("classifier {}x{}x{} -> {} -> {} (width {})", config_.image_size,
                     config_.image_size, config_.channels, config_.features, config_.classes,
                     config_.width);
}

}  // namespace gan::models
