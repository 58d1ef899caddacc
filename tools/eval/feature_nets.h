// The feature networks' files: the classifier's (save, load, the committed default) and
// InceptionV3's converted weights (load, and the formula weights the tests compare against
// pytorch-fid with). The networks themselves are models (models/classifier.h,
// models/inception.h); this is where they meet files (tools/io), so evaluation code names them
// from here.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "models/classifier.h"
#include "models/inception.h"

namespace gan::eval {

using models::Classifier;
using models::ClassifierConfig;
using models::FeatureNet;
using models::InceptionV3;

// A classifier file: safetensors with the state in PyTorch's names and metadata "gan.kind" =
// "classifier", "gan.classifier_config" (JSON of ClassifierConfig) and free-form metadata (the
// command that made it, its test accuracy).
void save_classifier(const std::string& path, const Classifier& c,
                     const std::map<std::string, std::string>& metadata);
struct LoadedClassifier {
  std::shared_ptr<Classifier> net;  // in eval mode
  std::map<std::string, std::string> metadata;
};
LoadedClassifier load_classifier(const std::string& path, Device device);

// The default classifier file: $GAN_CLASSIFIER, else
// models/weights/fashion_mnist_classifier.safetensors under the program's build/.. , the working
// directory or the source tree it was built from.
std::string default_classifier_path(const char* argv0);
// Where cached dataset features go: $XDG_CACHE_HOME/gan_eval, else ~/.cache/gan_eval ("" if
// neither is set).
std::string default_cache_dir();

// Loads a converted file (safetensors with torchvision's names; fc.* optional), in eval mode.
std::shared_ptr<InceptionV3> load_inception(const std::string& path, Device device);
// The source tree this program was built from (tools/eval/source_dir.cpp).
const char* source_dir();

// Fills every parameter and buffer of `net` with the formula tools/scripts/convert_fid_inception.py
// --formula (and tools/scripts/fixtures/make_inception_fixture.py) uses, so that the architecture
// can be tested against pytorch-fid without the real weights. For the tensor named n (k = sum over
// its characters of (position + 1) * byte, mod 997) element i (PyTorch's layout, row-major): conv
// weights 2 sin(0.37 i + 1.7 k) / sqrt(fan_in); BatchNorm weight 1 + 0.1 sin(0.11 i + k), bias 0.1
// cos(0.13 i + k), running_mean 0.05 sin(0.17 i + k), running_var 1 + 0.2 sin(0.19 i + k)^2; fc
// weight 0.05 sin(0.23 i + k), bias 0.01 cos(0.29 i + k); num_batches_tracked 0. Computed in
// double, stored as float.
void fill_formula_weights(nn::Module& net);

}  // namespace gan::eval
