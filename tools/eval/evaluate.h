// What gan_eval and gan_train --eval-every compute: image sets (a dataset, a folder, samples of a
// generator, optionally blurred or noised), their features under the classifier (the real set's
// cached in a file keyed by dataset and feature network), and every metric as JSON.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "models/gan.h"
#include "tools/eval/feature_nets.h"
#include "tools/eval/features.h"
#include "tools/io/data.h"

namespace gan::eval {

struct MetricOptions {
  int kid_subsets = 100;
  int64_t kid_subset_size = 1000;  // torch-fidelity's defaults
  // A KID subset larger than a set: refused, as torch-fidelity refuses it (default), or shrunk
  // to the smaller set (gan_train's periodic evaluation of a few samples).
  bool kid_shrink_subsets = false;
  int pr_k = 3;  // precision and recall
  int dc_k = 5;  // density and coverage
  int is_splits = 10;
  uint64_t seed = 0;  // KID's subsets
  Device device = Device::CPU;
};

// Every metric of `fake` against `real` (docs/metrics.md; the IS-style score and the histograms
// only when the net has logits): {"fd", "fd_parts": {...}, "kid_mean",
// "kid_std", "kid_subsets", "kid_subset_size", "precision", "recall", "pr_k", "density",
// "coverage", "dc_k", "is_mean", "is_std", "is_splits", "class_histogram": [...],
// "kid_subset_shrunk",
// "real_class_histogram": [...], "real_count", "fake_count"}.
nlohmann::json evaluate(const Extracted& real, const Extracted& fake, const MetricOptions& o);

// A conditional generator's metrics: fake row i was drawn for class fake_labels[i], real row i has
// label real_labels[i] (classes 0 .. classes - 1). {"classes", "intra_fd": [FD between the real
// and the fake images of each class; null where either side has fewer than 2], "intra_fd_mean"
// (over the classes that have one), and when the net has logits "class_accuracy" (the fraction of
// fakes the network classifies as the class they were drawn for) and "real_class_accuracy" (the
// same on the real images: the ceiling)}. A label outside the range is an error.
nlohmann::json conditional_metrics(const Extracted& real, const std::vector<int32_t>& real_labels,
                                   const Extracted& fake, const std::vector<int32_t>& fake_labels,
                                   int classes);

// n images of a generator (eval mode, latents N(0, 1) from `seed`) as 8-bit images, quantised as
// a saved PNG would be (img::tensor_image), generated `batch` at a time.
std::shared_ptr<data::Dataset> sample(models::Gan& net, int64_t n, int batch, uint64_t seed,
                                      Device device);

// Distortions for sanity checks: a Gaussian blur of standard deviation blur_sigma pixels
// (separable, kernel radius ceil(3 sigma), edges clamped), then additive Gaussian noise of
// standard deviation noise_std in [-1, 1] units (127.5 noise_std levels), rounded and clamped.
// 0 leaves the images as they are.
void distort(data::Dataset& d, double blur_sigma, double noise_std, uint64_t seed);

// A copy of `d` with every image brought to size x size (img::fit with `fit`): the view a
// generator of that size was trained on, so that real and generated images reach the classifier
// the same way. Returns d itself when its images already have that size.
std::shared_ptr<const data::Dataset> fit_dataset(std::shared_ptr<const data::Dataset> d, int size,
                                                 img::Fit fit, int64_t limit = 0);

// An image set from a path, each image resampled at most once on its way to size x size: a
// folder of images is decoded straight to that size (`fit` for images of another size or shape,
// `channels` 1 or 3, as data::load_folder); a dataset file or directory (IDX, Fashion-MNIST/MNIST,
// CIFAR-10; `train` picks the split) is read at its own size and brought to size x size by
// fit_dataset. The first `limit` images (0: all).
std::shared_ptr<const data::Dataset> load_image_set(const std::string& path, bool train, int size,
                                                    int channels, img::Fit fit, int64_t limit = 0);

// The classifier file's identity for cache keys: FNV-1a 64 of its bytes, in hex.
std::string file_digest(const std::string& path);

// Features of a dataset, read from or written to cache_dir (created when missing; empty: no
// cache): <cache_dir>/features-<digest of (source, split, count, classifier digest)>.safetensors,
// whose metadata repeats the key (a mismatch is recomputed). A damaged cache file is an error
// naming it. The file also holds the squared k-th-neighbour radii for radii_ks (precision,
// recall, density and coverage need them; an N x N distance pass).
// `view` names how the images were prepared (e.g. "train fit=resize@64") and is part of the key.
Extracted cached_extract(FeatureNet& net, const std::string& classifier_digest,
                         std::shared_ptr<const data::Dataset> d, const std::string& view, int batch,
                         Device device, const std::string& cache_dir,
                         const std::vector<int>& radii_ks = {3, 5});

}  // namespace gan::eval
