// The evaluation pipeline (tools/eval): the classifier file, feature extraction on both devices,
// distortions, and the metrics on real Fashion-MNIST images with the committed classifier:
// train vs test near 0, blur and noise monotonically worse.
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "engine/device.h"
#include "engine/random.h"
#include "tests/harness.h"
#include "tools/eval/evaluate.h"
#include "tools/eval/feature_nets.h"
#include "tools/eval/metrics.h"
#include "tools/io/data.h"
#include "tools/io/image.h"
#include "tools/io/safetensors.h"

namespace {

using namespace gan;
namespace fs = std::filesystem;

// GAN_FASHION_MNIST_DIR: the dataset on a machine without the Debian package (the GPU machine
// gets the training files only: the [cuda] cases read those).
std::shared_ptr<data::Dataset> first_images(bool train, int64_t n) {
  const char* where = std::getenv("GAN_FASHION_MNIST_DIR");
  auto d = std::make_shared<data::Dataset>(
      data::load_fashion_mnist(where && *where ? where : data::kFashionMnistDir, train));
  d->count = n;
  d->pixels.resize(size_t(n) * d->image_bytes());
  d->labels.resize(size_t(n));
  return d;
}

std::string committed_classifier() {
  return test::source_path("models/weights/fashion_mnist_classifier.safetensors");
}

double max_abs_diff(const eval::Matrix& a, const eval::Matrix& b) {
  REQUIRE(a.rows == b.rows);
  REQUIRE(a.cols == b.cols);
  double m = 0;
  for (size_t i = 0; i < a.values.size(); ++i)
    m = std::max(m, double(std::abs(a.values[i] - b.values[i])));
  return m;
}

}  // namespace

TEST_CASE("classifier: a saved file loads back to the same outputs", "[cpu][eval]") {
  test::TempDir dir;
  Generator gen(3);
  eval::ClassifierConfig cfg;
  cfg.width = 4, cfg.features = 16;
  eval::Classifier net(cfg, gen);
  const auto images = first_images(false, 20);
  const eval::Extracted a = eval::extract(net, images, 7, Device::CPU);
  CHECK(a.features.rows == 20);
  CHECK(a.features.cols == 16);
  CHECK(a.logits.cols == 10);
  eval::save_classifier(dir.file("c.safetensors"), net, {{"test_accuracy", "0.5"}});
  const eval::LoadedClassifier l = eval::load_classifier(dir.file("c.safetensors"), Device::CPU);
  CHECK(l.metadata.at("test_accuracy") == "0.5");
  CHECK(l.net->config().features == 16);
  const eval::Extracted b = eval::extract(*l.net, images, 20, Device::CPU);
  // Batch size does not matter in eval mode, up to the float32 rounding of the CPU backend's
  // convolutions (oneDNN blocks its sums differently for 7 and 20 images).
  CHECK(max_abs_diff(a.features, b.features) < 1e-5);
  CHECK(max_abs_diff(a.logits, b.logits) < 1e-5);
  // Not a classifier: a one-line error naming the file.
  st::write_file(dir.file("x.safetensors"), {st::from_float("a", {1.f})}, {});
  CHECK_THROWS_WITH(eval::load_classifier(dir.file("x.safetensors"), Device::CPU),
                    Catch::Contains("x.safetensors: not a classifier file"));
}

TEST_CASE("classifier cuda: features and logits equal the CPU's", "[cuda][eval]") {
  GAN_REQUIRE_GPU();
  Generator gen(5);
  eval::ClassifierConfig cfg;
  cfg.width = 4, cfg.features = 16;
  eval::Classifier cpu(cfg, gen);
  test::TempDir dir;  // the same weights on the GPU, through a file
  eval::save_classifier(dir.file("c.safetensors"), cpu, {});
  const eval::LoadedClassifier on_gpu =
      eval::load_classifier(dir.file("c.safetensors"), Device::CUDA);
  const auto images = first_images(false, 24);
  const eval::Extracted a = eval::extract(cpu, images, 12, Device::CPU);
  const eval::Extracted b = eval::extract(*on_gpu.net, images, 12, Device::CUDA);
  CHECK(max_abs_diff(a.features, b.features) < 1e-4);
  CHECK(max_abs_diff(a.logits, b.logits) < 1e-4);
}

TEST_CASE("eval: distortions", "[cpu][eval]") {
  data::Dataset d;
  d.count = 1, d.height = d.width = 9, d.channels = 1;
  d.pixels.assign(81, 100);
  eval::distort(d, 1.5, 0, 1);  // a blur keeps a constant image
  CHECK(std::all_of(d.pixels.begin(), d.pixels.end(), [](uint8_t p) { return p == 100; }));
  d.pixels[40] = 255;
  eval::distort(d, 1.0, 0, 1);  // and spreads a point symmetrically
  CHECK(d.pixels[40] < 255);
  CHECK(d.pixels[39] == d.pixels[41]);
  CHECK(d.pixels[31] == d.pixels[49]);
  data::Dataset n = d;
  eval::distort(n, 0, 0.1, 7);
  double var = 0;
  for (size_t i = 0; i < n.pixels.size(); ++i)
    var += (double(n.pixels[i]) - d.pixels[i]) * (double(n.pixels[i]) - d.pixels[i]);
  CHECK(std::sqrt(var / 81) == Approx(12.75).epsilon(0.3));  // 0.1 x 127.5 levels
}

// The committed classifier (tools/programs/train_classifier.cpp) on 1000 training vs 1000 test
// images. Blur from sigma 1 and noise from 0.1 make every score worse, monotonically; milder
// distortions (blur 0.5, noise 0.05) raise precision and density slightly (docs/metrics.md has the
// table): they measure fidelity, and slightly smoothed images still lie where real ones are dense.
// [heavy]: not in the sanitizer builds (numerics only; a minute there).
TEST_CASE("gan_eval: train vs test scores near 0, blur and noise make every score worse",
          "[cpu][eval][heavy]") {
  const eval::LoadedClassifier c = eval::load_classifier(committed_classifier(), Device::CPU);
  const int64_t n = 1000;
  const eval::Extracted real = eval::extract(*c.net, first_images(true, n), 500, Device::CPU);
  eval::MetricOptions mo;
  mo.kid_subsets = 20, mo.kid_subset_size = 500;
  auto score = [&](double blur, double noise) {
    auto fake = first_images(false, n);
    eval::distort(*fake, blur, noise, 3);
    return eval::evaluate(real, eval::extract(*c.net, fake, 500, Device::CPU), mo);
  };
  const nlohmann::json clean = score(0, 0);
  INFO(clean.dump());
  CHECK(clean["fd"].get<double>() < 0.02 * clean["fd_parts"]["trace_real"].get<double>());
  CHECK(std::abs(clean["kid_mean"].get<double>()) < 3 * clean["kid_std"].get<double>() + 1e-9);
  CHECK(clean["precision"].get<double>() > 0.7);
  CHECK(clean["recall"].get<double>() > 0.7);
  CHECK(clean["coverage"].get<double>() > 0.85);
  CHECK(clean["density"].get<double>() > 0.8);
  for (const bool noise : {false, true}) {
    nlohmann::json last = clean;
    for (const double level : {1.0, 2.0}) {
      const nlohmann::json s = noise ? score(0, 0.15 * level) : score(level, 0);
      INFO((noise ? "noise " : "blur ") << level << ": " << s.dump());
      CHECK(s["fd"].get<double>() > last["fd"].get<double>());
      CHECK(s["kid_mean"].get<double>() > last["kid_mean"].get<double>());
      for (const char* k : {"precision", "recall", "density", "coverage", "is_mean"})
        CHECK(s[k].get<double>() <= last[k].get<double>());
      last = s;
    }
  }
}

namespace {

// The largest |got - want| and the largest |want|.
std::pair<double, double> max_abs_error(const std::vector<float>& got,
                                        const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, double(std::abs(got[i] - want[i])));
    scale = std::max(scale, double(std::abs(want[i])));
  }
  return {err, scale};
}

// pytorch-fid's FID InceptionV3 with the formula weights on two 37 x 37 images
// (tools/scripts/fixtures/make_inception_fixture.py) against models/inception.h's network.
void check_inception(Device dev) {
  const st::File f = st::read_file(test::fixture_path("inception_fid_formula.safetensors"));
  const Tensor images = f.tensor("images");  // (2, 37, 37, 3), 0..255
  std::vector<float> x = images.to_vector();
  for (float& v : x) v = v / 127.5f - 1.f;  // the loader's [-1, 1]
  Generator gen(0, dev);
  eval::InceptionV3 net(gen, true);
  eval::fill_formula_weights(net);
  net.eval();
  NoGradGuard no_grad;
  const auto out = net.forward(Var(Tensor::from_vector(x, images.shape(), dev)));
  for (const char* name : {"features", "logits"}) {
    const std::vector<float> want = f.tensor(name).to_vector();
    const std::vector<float> got = (std::string(name) == "features" ? out.features : out.logits)
                                       .value()
                                       .to(Device::CPU)
                                       .to_vector();
    const auto [err, scale] = max_abs_error(got, want);
    INFO(name << ": max abs error " << err << " of max " << scale);
    CHECK(scale > 0.1);
    CHECK(err < (dev == Device::CPU ? 2e-5 : 2e-4) * scale);  // 6e-7 of 1.6 measured on the CPU
  }
}

}  // namespace

TEST_CASE("inception: pytorch-fid's FID InceptionV3 gives pytorch-fid's features",
          "[cpu][eval][inception][heavy]") {
  check_inception(Device::CPU);
}

// --input-range tf: the loader's u = v / 127.5 - 1 reaches the network as v / 128 - 1.
TEST_CASE("inception: the TF input range is the TF graph's v / 128 - 1",
          "[cpu][eval][inception][heavy]") {
  Generator gen(0, Device::CPU);
  eval::InceptionV3 net(gen, false);
  eval::fill_formula_weights(net);
  net.eval();
  NoGradGuard no_grad;
  std::vector<float> u(size_t(2) * 299 * 299 * 3), tf(u.size());
  for (size_t i = 0; i < u.size(); ++i) {
    const int v = int((i * 37 + i / 899 * 11) % 256);
    u[i] = float(v / 127.5 - 1.0);
    tf[i] = float(v / 128.0 - 1.0);
  }
  const Shape s{2, 299, 299, 3};
  const std::vector<float> want =
      net.forward(Var(Tensor::from_vector(tf, s))).features.value().to_vector();
  net.set_input_range(eval::InceptionV3::InputRange::kTF);
  const std::vector<float> got =
      net.forward(Var(Tensor::from_vector(u, s))).features.value().to_vector();
  const auto [err, scale] = max_abs_error(got, want);
  INFO("max abs error " << err << " of max " << scale);
  CHECK(scale > 0.1);
  CHECK(err < 1e-5 * scale);
  net.set_input_range(eval::InceptionV3::InputRange::kTorch);  // and back: the input as given
  const std::vector<float> same =
      net.forward(Var(Tensor::from_vector(tf, s))).features.value().to_vector();
  CHECK(same == want);
}

TEST_CASE("inception cuda: pytorch-fid's FID InceptionV3 gives pytorch-fid's features",
          "[cuda][eval][inception][heavy]") {
  GAN_REQUIRE_GPU();
  check_inception(Device::CUDA);
}

// The published TF-Inception weights, converted without torch by tools/scripts/fetch_fid_weights.py
// ($GAN_FID_WEIGHTS, else gan_eval's cache folder), against the features torch.jit.load computes
// The fixture's features as a Matrix (rows = images).
eval::Matrix fixture_features(const st::File& f, const char* name) {
  const Tensor t = f.tensor(name);
  eval::Matrix m;
  m.rows = t.dim(0), m.cols = t.dim(1);
  m.values = t.to_vector();
  return m;
}

// FID's formula on identical statistics: the engine's Frechet distance (tr sqrt from the
// symmetric eigenproblem) against pytorch-fid's (scipy's sqrtm of the covariance product), both
// from torch.jit's features of two sets of four images (make_fid_tf_fixture.py).
// [heavy]: numerics only, 213 s under ASan; the main build runs it.
TEST_CASE("fid: the engine's Frechet distance equals pytorch-fid's formula on the same features",
          "[cpu][eval][heavy]") {
  const st::File f = st::read_file(test::fixture_path("fid_tf_features.safetensors"));
  const double want = f.tensor("fid_299_vs_64").to(DType::F64).data<double>()[0];
  const eval::Frechet fd =
      eval::frechet_distance(eval::fit_gaussian(fixture_features(f, "features")),
                             eval::fit_gaussian(fixture_features(f, "features_64_tf_resize")));
  CHECK(want > 300);                                 // 324.9976
  CHECK(fd.distance == Approx(want).epsilon(1e-6));  // observed 2.7e-7 relative
}

// from the same archive (tests/fixtures/fid_tf_features.safetensors). Skipped without the weights
// (fetching them needs the network; CI checks the converter on a synthetic archive instead).
TEST_CASE("inception: the TF-Inception weights converted without torch give torch.jit's features",
          "[cpu][eval][inception][heavy]") {
  const char* env = std::getenv("GAN_FID_WEIGHTS");
  const std::string path =
      env && *env ? std::string(env) : eval::default_cache_dir() + "/fid_inception_tf.safetensors";
  if (!fs::exists(path)) {
    test::mark_skipped();
    WARN("skipped: no converted weights at " << path
                                             << " (tools/scripts/fetch_fid_weights.py makes them)");
    return;
  }
  const st::File f = st::read_file(test::fixture_path("fid_tf_features.safetensors"));
  // tools/scripts/fixtures/make_fid_tf_fixture.py's pixel(): four 299 x 299 images.
  auto pixel = [](int n, int y, int x, int c) {
    int v[3];
    if (n == 0) {
      v[0] = x * 255 / 298, v[1] = y * 255 / 298, v[2] = (x + y) * 255 / 596;
    } else if (n == 1) {
      const int r2 = (x - 150) * (x - 150) + (y - 140) * (y - 140);
      v[0] = (r2 / 37) % 256, v[1] = (x * y) % 256, v[2] = 255 - (r2 / 91) % 256;
    } else if (n == 2) {
      v[0] = (x / 7) % 2 * 200 + 20, v[1] = (y * 3) % 256, v[2] = (x * y) % 251;
    } else {
      const int k = ((x / 23) + (y / 23)) % 2;
      v[0] = k * 255, v[1] = 128, v[2] = 255 - k * 255;
    }
    return v[c];
  };
  auto images = [&](int size, double div) {
    std::vector<float> x(size_t(4) * size * size * 3);
    for (int n = 0; n < 4; ++n)
      for (int y = 0; y < size; ++y)
        for (int xx = 0; xx < size; ++xx)
          for (int c = 0; c < 3; ++c)
            x[((size_t(n) * size + y) * size + xx) * 3 + c] = float(pixel(n, y, xx, c) / div - 1.0);
    return Tensor::from_vector(x, Shape{4, size, size, 3});
  };
  auto compare = [&](const Tensor& got, const char* name) {
    const auto [err, scale] = max_abs_error(got.to_vector(), f.tensor(name).to_vector());
    INFO(name << ": max abs error " << err << " of max " << scale);
    CHECK(scale > 1);
    CHECK(err < 1e-4 * scale);
  };
  auto net = eval::load_inception(path, Device::CPU);
  NoGradGuard no_grad;
  // 299 x 299 fed as the TF graph's v / 128 - 1 directly.
  const Tensor f299 = net->forward(Var(images(299, 128.0))).features.value();
  compare(f299, "features");
  // gan_eval --fid: the loader's v / 127.5 - 1 at 64 x 64, the TF graph's resize and range.
  net->set_resize(eval::InceptionV3::Resize::kTF);
  net->set_input_range(eval::InceptionV3::InputRange::kTF);
  const Tensor f64 = net->forward(Var(images(64, 127.5))).features.value();
  compare(f64, "features_64_tf_resize");
  // The FID of the two sets from the engine's features within 0.1% of torch.jit's with
  // pytorch-fid's formula.
  auto matrix = [](const Tensor& t) {
    eval::Matrix m;
    m.rows = t.dim(0), m.cols = t.numel() / t.dim(0);
    m.values = t.to_vector();
    return m;
  };
  const double fid =
      eval::frechet_distance(eval::fit_gaussian(matrix(f299)), eval::fit_gaussian(matrix(f64)))
          .distance;
  const double want = f.tensor("fid_299_vs_64").to(DType::F64).data<double>()[0];
  INFO("FID " << fid << ", torch.jit + pytorch-fid's formula " << want);
  CHECK(fid == Approx(want).epsilon(1e-3));
}

TEST_CASE("eval: cached features and radii give the numbers computed afresh", "[cpu][eval]") {
  test::TempDir dir;
  Generator gen(4);
  eval::ClassifierConfig cfg;
  cfg.width = 4, cfg.features = 16;
  eval::Classifier net(cfg, gen);
  const auto real = first_images(true, 80);
  const auto fake = first_images(false, 40);
  eval::MetricOptions mo;
  mo.kid_subsets = 3, mo.kid_subset_size = 30;
  const eval::Extracted f = eval::extract(net, fake, 40, Device::CPU);
  const nlohmann::json fresh =
      eval::evaluate(eval::extract(net, real, 40, Device::CPU), f, mo);  // radii computed here
  const eval::Extracted first =
      eval::cached_extract(net, "d1", real, "train", 40, Device::CPU, dir.file("cache"));
  CHECK(first.radii2.size() == 2);
  const eval::Extracted second =  // read back from the file
      eval::cached_extract(net, "d1", real, "train", 40, Device::CPU, dir.file("cache"));
  CHECK(second.radii2.at(3) == first.radii2.at(3));
  CHECK(second.features.values == first.features.values);
  const nlohmann::json cached = eval::evaluate(second, f, mo);
  for (const char* k : {"fd", "kid_mean", "precision", "recall", "density", "coverage", "is_mean"})
    CHECK(cached[k].get<double>() == fresh[k].get<double>());
  // Another classifier digest is another cache entry.
  eval::cached_extract(net, "d2", real, "train", 40, Device::CPU, dir.file("cache"));
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.file("cache"))) files += e.is_regular_file();
  CHECK(files == 2);
}

// A folder of 28x28 images reaches the classifier as the same images from an IDX file do: each
// image resampled at most once, straight to the network's 32x32 (padded as gan_train pads
// Fashion-MNIST). Before, a real folder went through the training loader's defaults (centre crop,
// resample to 64) and then back to the fake size: 28 -> 64 -> 28 gave FD 193 for a folder scored
// against itself.
TEST_CASE("gan_eval: a folder of images is read at its own size and resized once", "[cpu][eval]") {
  test::TempDir dir;
  const int64_t n = 40;
  const auto idx = first_images(false, n);
  const std::string folder = dir.file("pngs");
  fs::create_directories(folder);
  for (int64_t i = 0; i < n; ++i)
    img::write_png(fmt::format("{}/{:03d}.png", folder, i), idx->get(i));
  const auto from_folder = eval::load_image_set(folder, true, 32, 1, img::Fit::Pad);
  const auto from_idx = eval::fit_dataset(idx, 32, img::Fit::Pad);
  REQUIRE(from_folder->count == n);
  REQUIRE(from_folder->height == 32);
  REQUIRE(from_folder->channels == 1);
  CHECK(from_folder->pixels == from_idx->pixels);

  const eval::LoadedClassifier c = eval::load_classifier(committed_classifier(), Device::CPU);
  eval::MetricOptions mo;
  mo.kid_subsets = 5, mo.kid_subset_size = 20;
  const eval::Extracted a = eval::extract(*c.net, from_folder, 20, Device::CPU);
  const nlohmann::json self = eval::evaluate(a, a, mo);
  INFO(self.dump());
  CHECK(std::abs(self["fd"].get<double>()) < 1e-3);
  CHECK(self["precision"].get<double>() == 1.0);
  CHECK(self["recall"].get<double>() == 1.0);
}

// torch-fidelity refuses a KID subset larger than a set; so does evaluate() unless told to shrink
// it, and the JSON says when it did.
TEST_CASE("eval: a KID subset larger than a set is refused unless shrinking is asked for",
          "[cpu][eval][metrics]") {
  Generator gen(5);
  eval::ClassifierConfig cfg;
  cfg.width = 4, cfg.features = 8;
  eval::Classifier net(cfg, gen);
  const eval::Extracted real = eval::extract(net, first_images(true, 30), 30, Device::CPU);
  const eval::Extracted fake = eval::extract(net, first_images(false, 20), 20, Device::CPU);
  eval::MetricOptions mo;
  mo.kid_subsets = 2, mo.kid_subset_size = 25;
  CHECK_THROWS_WITH(eval::evaluate(real, fake, mo),
                    Catch::Contains("KID subset size 25 is larger than the fake set (20 images)"));
  mo.kid_shrink_subsets = true;
  const nlohmann::json j = eval::evaluate(real, fake, mo);
  CHECK(j["kid_subset_size"].get<int64_t>() == 20);
  CHECK(j["kid_subset_shrunk"].get<bool>());
  mo.kid_subset_size = 20;
  CHECK_FALSE(eval::evaluate(real, fake, mo)["kid_subset_shrunk"].get<bool>());
}

TEST_CASE("eval: a conditional generator's per-class FD and class accuracy", "[cpu][eval]") {
  // Class 0: the fakes are the real images' features (FD 0); class 1: shifted by 0.5 in one
  // feature (FD = 0.25, the mean term alone: equal covariances); class 2: one fake only (none).
  const int64_t per = 40, dim = 6;
  gan::Generator gen(17);
  gan::Tensor t = gan::Tensor::empty(gan::Shape{2 * per, dim});
  gen.normal_(t);
  const std::vector<float> v = t.to_vector();
  gan::eval::Extracted real, fake;
  real.features = {2 * per, dim, v};
  std::vector<int32_t> real_labels, fake_labels;
  for (int64_t i = 0; i < 2 * per; ++i) real_labels.push_back(i < per ? 0 : 1);
  std::vector<float> f = v;
  for (int64_t i = per; i < 2 * per; ++i) f[size_t(i * dim)] += 0.5f;
  f.insert(f.end(), v.begin(), v.begin() + dim);  // one image of class 2
  fake.features = {2 * per + 1, dim, f};
  fake_labels = real_labels;
  fake_labels.push_back(2);
  // Logits: fake i predicted as class (i % 4 == 0 ? other : its own): 3 of 4 right.
  fake.logits.rows = fake.features.rows, fake.logits.cols = 3;
  for (int64_t i = 0; i < fake.logits.rows; ++i) {
    const int32_t want = fake_labels[size_t(i)], got = i % 4 == 0 ? (want + 1) % 3 : want;
    for (int c = 0; c < 3; ++c) fake.logits.values.push_back(c == got ? 5.0f : 0.0f);
  }
  const nlohmann::json j = gan::eval::conditional_metrics(real, real_labels, fake, fake_labels, 3);
  INFO(j.dump());
  CHECK(j["intra_fd"][0].get<double>() == Approx(0.0).margin(1e-6));
  CHECK(j["intra_fd"][1].get<double>() == Approx(0.25).epsilon(1e-5));
  CHECK(j["intra_fd"][2].is_null());
  CHECK(j["intra_fd_mean"].get<double>() == Approx(0.125).epsilon(1e-5));
  const int64_t right = [&] {
    int64_t n = 0;
    for (int64_t i = 0; i < fake.logits.rows; ++i) n += i % 4 != 0;
    return n;
  }();
  CHECK(j["class_accuracy"].get<double>() == Approx(double(right) / double(fake.logits.rows)));
  CHECK_FALSE(j.contains("real_class_accuracy"));  // the reals have no logits here
  fake_labels.back() = 3;
  CHECK_THROWS_WITH(gan::eval::conditional_metrics(real, real_labels, fake, fake_labels, 3),
                    Catch::Contains("label 3 outside the 3 classes"));
}
