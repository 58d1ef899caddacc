#include "engine/nn.h"

#include <cmath>

#include <fmt/format.h>

#include "engine/error.h"

namespace gan::nn {

// ---------------------------------------------------------------------------------------------
// Module

std::vector<std::pair<std::string, Var>> Module::named_parameters(const std::string& prefix) const {
  std::vector<std::pair<std::string, Var>> out;
  for (const auto& [name, v] : params_) out.emplace_back(prefix + name, v);
  for (const auto& [name, m] : children_) {
    auto sub = m->named_parameters(name.empty() ? prefix : prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, m] : children_) {
    auto sub = m->named_buffers(name.empty() ? prefix : prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<Var> Module::parameters() const {
  std::vector<Var> out;
  for (auto& [name, v] : named_parameters()) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, TorchLayout>> Module::named_layouts(
    const std::string& prefix) const {
  std::vector<std::pair<std::string, TorchLayout>> out;
  for (const auto& [name, l] : layouts_) out.emplace_back(prefix + name, l);
  for (const auto& [name, m] : children_) {
    auto sub = m->named_layouts(name.empty() ? prefix : prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

void Module::replace_module(const std::string& name, std::shared_ptr<Module> m) {
  for (auto& [n, child] : children_)
    if (n == name) {
      child = std::move(m);
      return;
    }
  throw_error("module: no child '" + name + "' to replace");
}

void Module::set_layout(const std::string& name, TorchLayout layout) {
  for (auto& [n, l] : layouts_)
    if (n == name) {
      l = layout;
      return;
    }
  layouts_.emplace_back(name, layout);
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Var& v : parameters()) n += v.value().numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, m] : children_) m->train(on);
}

Var Module::register_parameter(const std::string& name, Tensor value) {
  for (const auto& [n, v] : params_)
    GAN_CHECK(n != name, "module: parameter '" + name + "' registered twice");
  Var p = parameter(std::move(value), name);
  params_.emplace_back(name, p);
  return p;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  for (const auto& [n, t] : buffers_)
    GAN_CHECK(n != name, "module: buffer '" + name + "' registered twice");
  buffers_.emplace_back(name, value);
  return value;
}

void Module::rename_parameter(const std::string& from, const std::string& to) {
  for (auto& [n, l] : layouts_)
    if (n == from) n = to;
  for (auto& [n, v] : params_) {
    if (n == from) {
      n = to;
      v.set_name(to);
      return;
    }
  }
  throw_error("module: no parameter '" + from + "' to rename");
}

Var Sequential::forward(const Var& x) {
  Var h = x;
  for (auto& l : layers_) h = l->forward(h);
  return h;
}

void Sequential::fuse_batchnorm_activations() {
  for (size_t i = 0; i + 1 < layers_.size(); ++i) {
    // The layer's activation slot: a batch norm's, or a convolution's options.
    Activation* act = nullptr;
    double* slope = nullptr;
    if (auto* bn = dynamic_cast<BatchNorm2d*>(layers_[i].get()))
      act = &bn->act, slope = &bn->slope;
    else if (auto* cv = dynamic_cast<Conv2d*>(layers_[i].get()))
      act = &cv->options.act, slope = &cv->options.slope;
    else if (auto* ct = dynamic_cast<ConvTranspose2d*>(layers_[i].get()))
      act = &ct->options.act, slope = &ct->options.slope;
    if (!act || *act != Activation::kNone) continue;
    if (dynamic_cast<ReLU*>(layers_[i + 1].get())) {
      *act = Activation::kRelu;
    } else if (auto* lr = dynamic_cast<LeakyReLU*>(layers_[i + 1].get()); lr && lr->slope > 0) {
      *act = Activation::kLeakyRelu;
      *slope = lr->slope;
    } else if (dynamic_cast<Tanh*>(layers_[i + 1].get()) &&
               !dynamic_cast<BatchNorm2d*>(layers_[i].get())) {
      *act = Activation::kTanh;  // a generator's output convolution
    } else {
      continue;
    }
    layers_[i + 1] = std::make_shared<Identity>();
    replace_module(std::to_string(i + 1), layers_[i + 1]);
  }
}

Var Reshape::forward(const Var& x) {
  std::vector<int64_t> dims = {x.shape().dim(0)};
  dims.insert(dims.end(), dims_.begin(), dims_.end());
  return reshape(x, Shape(dims));
}

// ---------------------------------------------------------------------------------------------
// Spectral norm

namespace {

// x / |x| for a fresh N(0, 1) draw (PyTorch's initialisation of u and v).
Tensor random_unit(Generator& gen, int64_t n) {
  Tensor t = Tensor::empty(Shape{n}, gen.device());
  gen.normal_(t);
  std::vector<float> h = t.to_vector();
  double s = 0;
  for (float x : h) s += double(x) * x;
  const double inv = 1.0 / std::max(std::sqrt(s), 1e-12);
  for (float& x : h) x = float(x * inv);
  return Tensor::from_vector(h, Shape{n}, gen.device());
}

Tensor uniform(Generator& gen, const Shape& s, double bound) {
  Tensor t = Tensor::empty(s, gen.device());
  gen.uniform_(t, -bound, bound);
  return t;
}

}  // namespace

void WeightLayer::enable_spectral_norm(Generator& gen, int iterations, double eps) {
  GAN_CHECK(!sn_, "spectral_norm: already enabled on this layer");
  GAN_CHECK(iterations >= 1, "spectral_norm: iterations must be >= 1");
  rename_parameter("weight", "weight_orig");
  sn_ = std::make_unique<SnState>();
  sn_->iterations = iterations;
  sn_->eps = eps;
  SpectralNormLayer& l = sn_->layer;
  l.weight = weight_;
  l.rows = rows_, l.cols = cols_, l.transposed = transposed_;
  l.u = register_buffer("weight_u", random_unit(gen, rows_));
  l.v = register_buffer("weight_v", random_unit(gen, cols_));
  if (sn_u_layout_.kind != TorchLayout::kSame) set_layout("weight_u", sn_u_layout_);
  if (sn_v_layout_.kind != TorchLayout::kSame) set_layout("weight_v", sn_v_layout_);
  l.sigma = Tensor::full(Shape{1}, 1.0, gen.device());
}

Var WeightLayer::effective_weight() {
  if (!sn_) return weight_;
  if (sn_->pending.defined()) {
    Var w = std::move(sn_->pending);
    sn_->pending = Var();
    return w;
  }
  std::vector<SpectralNormLayer> one = {sn_->layer};
  return gan::spectral_norm(one, training(), sn_->iterations, sn_->eps)[0];
}

void SpectralNormGroup::add(WeightLayer* layer) {
  GAN_CHECK(layer->has_spectral_norm(), "spectral_norm group: layer has no spectral norm");
  if (!layers_.empty())
    GAN_CHECK(layer->sn_->iterations == layers_[0]->sn_->iterations &&
                  layer->sn_->eps == layers_[0]->sn_->eps,
              "spectral_norm group: layers must share iterations and eps");
  layers_.push_back(layer);
}

void SpectralNormGroup::add_all(Module& m) {
  if (auto* w = dynamic_cast<WeightLayer*>(&m); w && w->has_spectral_norm()) add(w);
  for (auto& [name, child] : m.children_) add_all(*child);
}

void SpectralNormGroup::run(bool training) {
  if (layers_.empty()) return;
  std::vector<SpectralNormLayer> ls;
  for (WeightLayer* l : layers_) ls.push_back(l->sn_->layer);
  std::vector<Var> w =
      gan::spectral_norm(ls, training, layers_[0]->sn_->iterations, layers_[0]->sn_->eps);
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i]->set_pending_weight(w[i]);
}

// ---------------------------------------------------------------------------------------------
// Layers

Linear::Linear(int64_t in, int64_t out, bool bias, Generator& gen) {
  const double bound = 1.0 / std::sqrt(double(in));
  weight_ = register_parameter("weight", uniform(gen, Shape{out, in}, bound));
  if (bias) bias_ = register_parameter("bias", uniform(gen, Shape{out}, bound));
  set_matrix_view(out, in, false);
}

Var Linear::forward(const Var& x) { return linear(x, effective_weight(), bias_); }

// Under spectral norm the weight is "weight_orig" and its power-iteration vectors follow the
// rows (u) or the columns (v): each a 1-D map in the same (h, w, c) order.
void Linear::mark_rows_hwc(int64_t h, int64_t w, int64_t c) {
  const TorchLayout l{TorchLayout::kLinearOutHWC, h, w, c};
  set_layout(has_spectral_norm() ? "weight_orig" : "weight", l);
  if (bias_.defined()) set_layout("bias", l);
  set_sn_u_layout(l);
}

void Linear::mark_cols_hwc(int64_t h, int64_t w, int64_t c) {
  set_layout(has_spectral_norm() ? "weight_orig" : "weight", {TorchLayout::kLinearInHWC, h, w, c});
  set_sn_v_layout({TorchLayout::kLinearOutHWC, h, w, c});
}

Conv2d::Conv2d(int64_t in, int64_t out, int kernel, int stride, int padding, bool bias,
               Generator& gen) {
  const double bound = 1.0 / std::sqrt(double(in * kernel * kernel));
  weight_ = register_parameter("weight", uniform(gen, Shape{out, kernel, kernel, in}, bound));
  set_layout("weight", {TorchLayout::kConv});
  if (bias) bias_ = register_parameter("bias", uniform(gen, Shape{out}, bound));
  options.stride_h = options.stride_w = stride;
  options.pad_h = options.pad_w = padding;
  set_matrix_view(out, in * kernel * kernel, false);
  set_sn_v_layout({TorchLayout::kSnVConv, kernel, kernel, in});
}

Conv2d::Conv2d(int64_t in, int64_t out, int kernel_h, int kernel_w, const Conv2dOptions& o,
               bool bias, Generator& gen)
    : options(o) {
  const double bound = 1.0 / std::sqrt(double(in * kernel_h * kernel_w));
  weight_ = register_parameter("weight", uniform(gen, Shape{out, kernel_h, kernel_w, in}, bound));
  set_layout("weight", {TorchLayout::kConv});
  if (bias) bias_ = register_parameter("bias", uniform(gen, Shape{out}, bound));
  set_matrix_view(out, in * kernel_h * kernel_w, false);
  set_sn_v_layout({TorchLayout::kSnVConv, kernel_h, kernel_w, in});
}

Var Conv2d::forward(const Var& x) { return conv2d(x, effective_weight(), bias_, options); }

ConvTranspose2d::ConvTranspose2d(int64_t in, int64_t out, int kernel, int stride, int padding,
                                 bool bias, Generator& gen, int output_padding) {
  const double bound = 1.0 / std::sqrt(double(out * kernel * kernel));
  weight_ = register_parameter("weight", uniform(gen, Shape{in, kernel, kernel, out}, bound));
  set_layout("weight", {TorchLayout::kConv});
  if (bias) bias_ = register_parameter("bias", uniform(gen, Shape{out}, bound));
  options.stride_h = options.stride_w = stride;
  options.pad_h = options.pad_w = padding;
  options.out_pad_h = options.out_pad_w = output_padding;
  // PyTorch's spectral norm of a transposed conv uses dim 1 (out) as rows; our storage
  // (in, k, k, out) is that matrix transposed.
  set_matrix_view(out, in * kernel * kernel, true);
}

Var ConvTranspose2d::forward(const Var& x) {
  return conv_transpose2d(x, effective_weight(), bias_, options);
}

BatchNorm2d::BatchNorm2d(int64_t channels, Device device, double eps_, double momentum_,
                         Activation act_, double slope_)
    : eps(eps_), momentum(momentum_), act(act_), slope(slope_) {
  weight_ = register_parameter("weight", Tensor::full(Shape{channels}, 1.0, device));
  bias_ = register_parameter("bias", Tensor::zeros(Shape{channels}, device));
  running_mean_ = register_buffer("running_mean", Tensor::zeros(Shape{channels}, device));
  running_var_ = register_buffer("running_var", Tensor::full(Shape{channels}, 1.0, device));
  num_batches_tracked_ =
      register_buffer("num_batches_tracked", Tensor::zeros(Shape{}, Device::CPU, DType::F64));
}

Var BatchNorm2d::forward(const Var& x) {
  if (training()) *num_batches_tracked_.data<double>() += 1;
  return batch_norm(x, weight_, bias_, running_mean_, running_var_, training(), momentum, eps, act,
                    slope);
}

// ---------------------------------------------------------------------------------------------
// Layout conversions

namespace {
// (A, B, C, D) -> the permutation `perm` of its axes, on the CPU.
Tensor permute4(const Tensor& w, const int perm[4]) {
  GAN_CHECK(w.ndim() == 4, "permute: expected a 4-D weight, got " + w.shape().str());
  const Tensor src = w.to(Device::CPU).to(DType::F32);
  const Shape& s = src.shape();
  Shape o{s[perm[0]], s[perm[1]], s[perm[2]], s[perm[3]]};
  Tensor dst = Tensor::empty(o);
  const float* a = src.data<float>();
  float* b = dst.data<float>();
  int64_t idx[4];
  for (idx[0] = 0; idx[0] < s[0]; ++idx[0])
    for (idx[1] = 0; idx[1] < s[1]; ++idx[1])
      for (idx[2] = 0; idx[2] < s[2]; ++idx[2])
        for (idx[3] = 0; idx[3] < s[3]; ++idx[3]) {
          const int64_t src_i = ((idx[0] * s[1] + idx[1]) * s[2] + idx[2]) * s[3] + idx[3];
          const int64_t dst_i =
              ((idx[perm[0]] * o[1] + idx[perm[1]]) * o[2] + idx[perm[2]]) * o[3] + idx[perm[3]];
          b[dst_i] = a[src_i];
        }
  return dst;
}
}  // namespace

Tensor to_torch_layout(const Tensor& w) {
  const int perm[4] = {0, 3, 1, 2};  // (A, kh, kw, B) -> (A, B, kh, kw)
  return permute4(w, perm);
}

Tensor from_torch_layout(const Tensor& w) {
  const int perm[4] = {0, 2, 3, 1};  // (A, B, kh, kw) -> (A, kh, kw, B)
  return permute4(w, perm);
}

Tensor sn_v_to_torch(const Tensor& v, int64_t kh, int64_t kw, int64_t in) {
  return to_torch_layout(v.to(Device::CPU).reshape(Shape{1, kh, kw, in})).reshape(Shape{v.numel()});
}

Tensor sn_v_from_torch(const Tensor& v, int64_t kh, int64_t kw, int64_t in) {
  return from_torch_layout(v.to(Device::CPU).reshape(Shape{1, in, kh, kw}))
      .reshape(Shape{v.numel()});
}

}  // namespace gan::nn
