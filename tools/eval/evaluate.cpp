#include "tools/eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include <fmt/format.h>

#include "engine/error.h"
#include "engine/ops.h"
#include "tools/eval/metrics.h"
#include "tools/io/image.h"
#include "tools/io/safetensors.h"

namespace gan::eval {

namespace {

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

Matrix matrix_of(const st::File& f, const char* name) {
  const Tensor t = f.tensor(name);
  GAN_CHECK(t.ndim() == 2, fmt::format("gan_eval: {}: tensor '{}' is not a matrix", f.path, name));
  Matrix m;
  m.rows = t.dim(0), m.cols = t.dim(1);
  m.values = t.to_vector();
  return m;
}

Tensor tensor_of(const Matrix& m) { return Tensor::from_vector(m.values, Shape{m.rows, m.cols}); }

// The squared k-th-neighbour radii of e's features for every k of ks.
void add_radii(Extracted& e, const std::vector<int>& ks, Device device) {
  std::vector<int> missing;
  for (int k : ks)
    if (!e.radii2.count(k) && k < e.features.rows) missing.push_back(k);
  if (missing.empty()) return;
  const auto r = kth_radii2(e.features, missing, device);
  for (size_t t = 0; t < missing.size(); ++t) e.radii2[missing[t]] = r[t];
}

void write_cache(const std::string& path, const Extracted& e, const std::string& key,
                 const std::string& source, const std::string& view, int64_t count,
                 const std::string& digest) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::vector<st::Entry> entries = {st::from_tensor("features", tensor_of(e.features))};
  if (e.logits.rows > 0) entries.push_back(st::from_tensor("logits", tensor_of(e.logits)));
  for (const auto& [k, r] : e.radii2)
    entries.push_back(st::from_tensor(fmt::format("radii2_k{}", k),
                                      Tensor::from_vector(r, Shape{int64_t(r.size())})));
  st::write_file(path, entries,
                 {{"key", key},
                  {"dataset", source},
                  {"view", view},
                  {"count", std::to_string(count)},
                  {"classifier", digest}});
}

}  // namespace

nlohmann::json evaluate(const Extracted& real, const Extracted& fake, const MetricOptions& o) {
  const int64_t smaller = std::min(real.features.rows, fake.features.rows);
  GAN_CHECK(
      o.kid_shrink_subsets || o.kid_subset_size <= smaller,
      fmt::format("gan_eval: the KID subset size {} is larger than the {} set ({} images), "
                  "which torch-fidelity refuses too: give a smaller --kid-subset-size, or "
                  "--kid-shrink-subsets to use {}",
                  o.kid_subset_size, real.features.rows <= fake.features.rows ? "real" : "fake",
                  smaller, smaller));
  const Frechet fd = frechet_distance(fit_gaussian(real.features), fit_gaussian(fake.features));
  const Kid k =
      kid(real.features, fake.features, o.kid_subsets, o.kid_subset_size, o.seed, o.device);
  const std::vector<Prdc> both =
      prdc(real.features, fake.features, {o.pr_k, o.dc_k}, o.device, &real.radii2);
  const Prdc &pr = both[0], &dc = both[1];
  nlohmann::json j;
  j["fd"] = fd.distance;
  j["fd_parts"] = {{"mean_term", fd.mean_term},
                   {"trace_real", fd.trace_a},
                   {"trace_fake", fd.trace_b},
                   {"trace_sqrt", fd.trace_sqrt}};
  j["kid_mean"] = k.mean;
  j["kid_std"] = k.std;
  j["kid_subsets"] = k.subsets;
  j["kid_subset_size"] = k.subset_size;
  j["kid_subset_shrunk"] = k.subset_size < o.kid_subset_size;
  j["precision"] = pr.precision;
  j["recall"] = pr.recall;
  j["pr_k"] = pr.k;
  j["density"] = dc.density;
  j["coverage"] = dc.coverage;
  j["dc_k"] = dc.k;
  if (fake.logits.rows > 0) {
    const Score is =
        inception_score(fake.logits, int(std::min<int64_t>(o.is_splits, fake.logits.rows)));
    j["is_mean"] = is.mean;
    j["is_std"] = is.std;
    j["is_splits"] = is.splits;
    j["class_histogram"] = class_histogram(fake.logits);
  }
  if (real.logits.rows > 0) j["real_class_histogram"] = class_histogram(real.logits);
  j["real_count"] = real.features.rows;
  j["fake_count"] = fake.features.rows;
  return j;
}

namespace {

// The rows of m whose label is k.
Matrix rows_of_class(const Matrix& m, const std::vector<int32_t>& labels, int k) {
  Matrix out;
  out.cols = m.cols;
  for (int64_t i = 0; i < m.rows; ++i)
    if (labels[size_t(i)] == k) {
      out.values.insert(out.values.end(), m.row(i), m.row(i) + m.cols);
      ++out.rows;
    }
  return out;
}

double accuracy(const Matrix& logits, const std::vector<int32_t>& labels) {
  const std::vector<int> pred = predictions(logits);
  int64_t hit = 0;
  for (size_t i = 0; i < pred.size(); ++i) hit += pred[i] == labels[i];
  return pred.empty() ? 0.0 : double(hit) / double(pred.size());
}

}  // namespace

nlohmann::json conditional_metrics(const Extracted& real, const std::vector<int32_t>& real_labels,
                                   const Extracted& fake, const std::vector<int32_t>& fake_labels,
                                   int classes) {
  GAN_CHECK(int64_t(real_labels.size()) == real.features.rows &&
                int64_t(fake_labels.size()) == fake.features.rows,
            fmt::format("eval: {} real and {} fake labels for {} and {} images", real_labels.size(),
                        fake_labels.size(), real.features.rows, fake.features.rows));
  for (const auto* ls : {&real_labels, &fake_labels})
    for (int32_t l : *ls)
      GAN_CHECK(l >= 0 && l < classes,
                fmt::format("eval: label {} outside the {} classes", l, classes));
  nlohmann::json j;
  j["classes"] = classes;
  nlohmann::json per = nlohmann::json::array();
  double sum = 0;
  int n = 0;
  for (int k = 0; k < classes; ++k) {
    const Matrix r = rows_of_class(real.features, real_labels, k);
    const Matrix f = rows_of_class(fake.features, fake_labels, k);
    if (r.rows < 2 || f.rows < 2) {
      per.push_back(nullptr);
      continue;
    }
    const double fd = frechet_distance(fit_gaussian(r), fit_gaussian(f)).distance;
    per.push_back(fd);
    sum += fd, ++n;
  }
  j["intra_fd"] = per;
  j["intra_fd_mean"] = n > 0 ? nlohmann::json(sum / n) : nlohmann::json(nullptr);
  if (fake.logits.rows > 0) {
    GAN_CHECK(fake.logits.cols >= classes,
              fmt::format("eval: the network has {} classes, the generator {}", fake.logits.cols,
                          classes));
    j["class_accuracy"] = accuracy(fake.logits, fake_labels);
    if (real.logits.rows > 0) j["real_class_accuracy"] = accuracy(real.logits, real_labels);
  }
  return j;
}

std::shared_ptr<data::Dataset> sample(models::Gan& net, int64_t n, int batch, uint64_t seed,
                                      Device device) {
  GAN_CHECK(n > 0 && batch > 0, "gan_eval: the number of samples and the batch must be positive");
  auto d = std::make_shared<data::Dataset>();
  const models::ModelConfig& c = net.config;
  d->height = d->width = c.image_size;
  d->channels = int(c.channels);
  d->source = "generator";
  d->format = "samples";
  d->pixels.reserve(size_t(n) * d->image_bytes());
  const bool was_training = net.g->training();
  net.g->eval();
  Generator gen(seed, device);
  NoGradGuard no_grad;
  for (int64_t done = 0; done < n;) {
    const int64_t b = std::min<int64_t>(batch, n - done);
    Tensor z = Tensor::empty(Shape{b, net.z_dim}, device);
    gen.normal_(z);
    Var labels;  // a conditional G: every class in turn, sample i of class i mod classes
    if (const int k = net.g->num_classes(); k > 0) {
      std::vector<int32_t> y(static_cast<size_t>(b));
      for (int64_t i = 0; i < b; ++i) y[size_t(i)] = int32_t((done + i) % k);
      d->labels.insert(d->labels.end(), y.begin(), y.end());
      labels = Var(models::one_hot(y, k, device));
    }
    const Tensor images = net.g->forward(models::latent_input(net, Var(z)), labels).value();
    // 8-bit as a saved PNG would hold it (img::tensor_image's mapping), one host copy per batch.
    for (const float v : images.to_vector()) d->pixels.push_back(img::to_u8(v));
    done += b;
  }
  d->count = n;
  net.g->train(was_training);
  return d;
}

void distort(data::Dataset& d, double blur_sigma, double noise_std, uint64_t seed) {
  GAN_CHECK(blur_sigma >= 0 && noise_std >= 0, "gan_eval: blur and noise must be >= 0");
  if (blur_sigma > 0 || noise_std > 0) d.materialize();  // a mapped dataset is read-only
  const int h = d.height, w = d.width, c = d.channels;
  if (blur_sigma > 0) {
    const int r = int(std::ceil(3 * blur_sigma));
    std::vector<double> k(size_t(2 * r + 1));
    double ks = 0;
    for (int i = -r; i <= r; ++i)
      ks += k[size_t(i + r)] = std::exp(-0.5 * i * i / (blur_sigma * blur_sigma));
    for (double& v : k) v /= ks;
    std::vector<double> tmp(size_t(h) * w * c);
    for (int64_t n = 0; n < d.count; ++n) {
      uint8_t* im = d.pixels.data() + size_t(n) * d.image_bytes();
      for (int y = 0; y < h; ++y)  // horizontal
        for (int x = 0; x < w; ++x)
          for (int ch = 0; ch < c; ++ch) {
            double s = 0;
            for (int i = -r; i <= r; ++i)
              s += k[size_t(i + r)] * im[(size_t(y) * w + std::clamp(x + i, 0, w - 1)) * c + ch];
            tmp[(size_t(y) * w + x) * c + ch] = s;
          }
      for (int y = 0; y < h; ++y)  // vertical
        for (int x = 0; x < w; ++x)
          for (int ch = 0; ch < c; ++ch) {
            double s = 0;
            for (int i = -r; i <= r; ++i)
              s += k[size_t(i + r)] * tmp[(size_t(std::clamp(y + i, 0, h - 1)) * w + x) * c + ch];
            im[(size_t(y) * w + x) * c + ch] = uint8_t(std::clamp(std::lround(s), 0L, 255L));
          }
    }
  }
  if (noise_std > 0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, 127.5 * noise_std);
    for (uint8_t& p : d.pixels) p = uint8_t(std::clamp(std::lround(p + g(rng)), 0L, 255L));
  }
}

std::shared_ptr<const data::Dataset> fit_dataset(std::shared_ptr<const data::Dataset> d, int size,
                                                 img::Fit fit, int64_t limit) {
  const int64_t n = limit > 0 ? std::min(limit, d->count) : d->count;
  if (d->height == size && d->width == size && n == d->count) return d;
  auto out = std::make_shared<data::Dataset>();
  out->height = out->width = size;
  out->channels = d->channels;
  out->source = d->source;
  out->format = d->format;
  out->count = n;
  out->pixels.reserve(size_t(n) * out->image_bytes());
  for (int64_t i = 0; i < n; ++i) {
    const img::Image im =
        d->height == size && d->width == size ? d->get(i) : img::fit(d->get(i), size, fit);
    out->pixels.insert(out->pixels.end(), im.pixels.begin(), im.pixels.end());
  }
  if (!d->labels.empty()) out->labels.assign(d->labels.begin(), d->labels.begin() + n);
  return out;
}

std::shared_ptr<const data::Dataset> load_image_set(const std::string& path, bool train, int size,
                                                    int channels, img::Fit fit, int64_t limit) {
  data::FolderOptions fo;
  fo.size = size, fo.channels = channels, fo.fit = fit, fo.limit = limit;
  auto d = std::make_shared<const data::Dataset>(data::load_auto(path, train, fo));
  return fit_dataset(d, size, fit, limit);
}

std::string file_digest(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  GAN_CHECK(f.good(), fmt::format("gan_eval: {}: cannot open", path));
  const std::vector<char> bytes((std::istreambuf_iterator<char>(f)),
                                std::istreambuf_iterator<char>());
  return fmt::format("{:016x}", fnv1a(bytes.data(), bytes.size()));
}

Extracted cached_extract(FeatureNet& net, const std::string& classifier_digest,
                         std::shared_ptr<const data::Dataset> d, const std::string& view, int batch,
                         Device device, const std::string& cache_dir,
                         const std::vector<int>& radii_ks) {
  const std::string source = std::filesystem::absolute(d->source).lexically_normal().string();
  // The images themselves (a path can hold another dataset later), the view, and the net: its
  // file and its configuration (InceptionV3's resize mode is not in the file).
  const uint64_t pixels = fnv1a(d->pixel_data(), d->pixel_bytes());
  const std::string key =
      fmt::format("{}|{}|{}|{}x{}x{}|{:016x}|{}|{}", source, view, d->count, d->height, d->width,
                  d->channels, pixels, classifier_digest, net.describe());
  std::string path;
  if (!cache_dir.empty()) {
    path = (std::filesystem::path(cache_dir) /
            fmt::format("features-{:016x}.safetensors", fnv1a(key.data(), key.size())))
               .string();
    if (std::filesystem::exists(path)) {
      const st::File f = st::read_file(path);
      const auto it = f.metadata.find("key");
      if (it != f.metadata.end() && it->second == key) {
        Extracted e{
            matrix_of(f, "features"), f.has("logits") ? matrix_of(f, "logits") : Matrix(), {}};
        bool complete = true;
        for (int k : radii_ks) {
          const std::string name = fmt::format("radii2_k{}", k);
          if (!f.has(name)) {
            complete = false;
            continue;
          }
          e.radii2[k] = f.tensor(name).to_double_vector();
        }
        if (complete) return e;
        add_radii(e, radii_ks, device);  // an older cache file: complete it
        write_cache(path, e, key, source, view, d->count, classifier_digest);
        return e;
      }
    }
  }
  Extracted e = extract(net, d, batch, device);
  add_radii(e, radii_ks, device);
  if (!path.empty()) write_cache(path, e, key, source, view, d->count, classifier_digest);
  return e;
}

}  // namespace gan::eval
