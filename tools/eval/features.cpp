#include "tools/eval/features.h"

#include <algorithm>

#include <fmt/format.h>

#include "engine/error.h"

namespace gan::eval {

namespace {

void append_rows(Matrix& m, const Tensor& t) {
  const Tensor host = t.to(Device::CPU);
  const std::vector<float> v = host.dtype() == DType::F32 ? host.to_vector() : std::vector<float>();
  GAN_CHECK(!v.empty() || host.numel() == 0, "features: expected float32 outputs");
  m.cols = t.shape().back();
  m.rows += t.numel() / m.cols;
  m.values.insert(m.values.end(), v.begin(), v.end());
}

}  // namespace

Extracted extract(FeatureNet& net, std::shared_ptr<const data::Dataset> data, int batch,
                  Device device, int64_t limit) {
  GAN_CHECK(data && data->count > 0, "features: no images");
  auto subset = data;
  if (limit > 0 && limit < data->count) {
    auto d = std::make_shared<data::Dataset>(*data);
    d->truncate(limit);
    subset = d;
  }
  data::LoaderOptions o;
  o.image_size = net.input_size() > 0 ? net.input_size() : subset->height;
  o.channels = net.input_channels();
  o.batch_size = int(std::min<int64_t>(batch, subset->count));
  o.fit = img::Fit::Pad;
  o.drop_last = false;
  o.shuffle = false;
  o.device = device;
  data::Loader loader(subset, o);
  net.eval();
  NoGradGuard no_grad;
  Extracted out;
  for (int64_t step = 0; step < loader.batches_per_epoch(); ++step) {
    const FeatureNet::Output y = net.forward(Var(loader.next()));
    append_rows(out.features, y.features.value());
    if (y.logits.defined()) append_rows(out.logits, y.logits.value());
  }
  return out;
}

std::vector<int> predictions(const Matrix& logits) {
  std::vector<int> p(size_t(logits.rows));
  for (int64_t i = 0; i < logits.rows; ++i) {
    const float* r = logits.row(i);
    p[size_t(i)] = int(std::max_element(r, r + logits.cols) - r);
  }
  return p;
}

}  // namespace gan::eval
