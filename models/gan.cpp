#include "models/gan.h"

#include <fmt/format.h>

#include "engine/error.h"
#include "models/resnet.h"

namespace gan::models {

namespace {

using nn::Sequential;

// DCGAN initialisation (pytorch/examples weights_init): conv and linear weights N(0, 0.02);
// BatchNorm weights N(1, 0.02), biases 0.
void dcgan_init(nn::Module& m, Generator& gen) {
  for (auto& [name, p] : m.named_parameters()) {
    Tensor t = p.value();  // a handle: fills write the parameter's storage
    if (t.ndim() >= 2)
      gen.normal_(t, 0.0, 0.02);
    else if (name.ends_with("weight"))  // BatchNorm (the only 1-D weights)
      gen.normal_(t, 1.0, 0.02);
    else
      t.zero_();
  }
}

int stages_for(int image_size) {
  switch (image_size) {
    case 32:
      return 3;
    case 64:
      return 4;
    case 128:
      return 5;
    default:
      throw_error(fmt::format("model: image size {} is not supported (32, 64 or 128)", image_size));
  }
}

Gan dcgan(const ModelConfig& c, Generator& gen) {
  const Device dev = gen.device();
  const int nup = stages_for(c.image_size);
  const int64_t nz = c.z_dim, ngf = c.ngf, ndf = c.ndf;
  auto g = std::make_shared<Sequential>();
  int64_t ch = ngf << (nup - 1);
  g->add(std::make_shared<nn::ConvTranspose2d>(nz, ch, 4, 1, 0, false, gen));
  g->add(std::make_shared<nn::BatchNorm2d>(ch, dev));
  g->add(std::make_shared<nn::ReLU>());
  for (int i = nup - 1; i > 0; --i) {
    g->add(std::make_shared<nn::ConvTranspose2d>(ch, ch / 2, 4, 2, 1, false, gen));
    g->add(std::make_shared<nn::BatchNorm2d>(ch / 2, dev));
    g->add(std::make_shared<nn::ReLU>());
    ch /= 2;
  }
  g->add(std::make_shared<nn::ConvTranspose2d>(ngf, c.channels, 4, 2, 1, false, gen));
  g->add(std::make_shared<nn::Tanh>());

  auto d = std::make_shared<Sequential>();
  d->add(std::make_shared<nn::Conv2d>(c.channels, ndf, 4, 2, 1, false, gen));
  d->add(std::make_shared<nn::LeakyReLU>(0.2));
  ch = ndf;
  for (int i = 0; i < nup - 1; ++i) {
    d->add(std::make_shared<nn::Conv2d>(ch, ch * 2, 4, 2, 1, false, gen));
    d->add(std::make_shared<nn::BatchNorm2d>(ch * 2, dev));
    d->add(std::make_shared<nn::LeakyReLU>(0.2));
    ch *= 2;
  }
  d->add(std::make_shared<nn::Conv2d>(ch, 1, 4, 1, 0, false, gen));
  dcgan_init(*g, gen);
  dcgan_init(*d, gen);
  return {std::make_shared<GanNet>(g), std::make_shared<GanNet>(d), nz, "bce", c};
}

// The study's wide DCGAN (64 px): G = Linear(z -> 1024*4*4), ReLU, then ConvT 1024 -> 512 ->
// 256 -> 128 -> C (k4 s2 p1, no bias) with BatchNorm + ReLU between and Tanh last; D = Conv C ->
// 128 -> 256 -> 512 -> 1024 (k4 s2 p1, no bias, BatchNorm from the second, LeakyReLU 0.2), then
// Linear(16384 -> 1).
Gan dcgan_wide(const ModelConfig& c, Generator& gen) {
  GAN_CHECK(c.image_size == 64,
            fmt::format("model: the wide DCGAN preset is 64 px, got {}", c.image_size));
  const Device dev = gen.device();
  const int64_t nz = c.z_dim;
  auto g = std::make_shared<Sequential>();
  auto fc = g->add(std::make_shared<nn::Linear>(nz, 1024 * 4 * 4, true, gen));
  g->add(std::make_shared<nn::Reshape>(std::vector<int64_t>{4, 4, 1024}));
  g->add(std::make_shared<nn::ReLU>());
  int64_t ch = 1024;
  for (int i = 0; i < 3; ++i) {
    g->add(std::make_shared<nn::ConvTranspose2d>(ch, ch / 2, 4, 2, 1, false, gen));
    g->add(std::make_shared<nn::BatchNorm2d>(ch / 2, dev));
    g->add(std::make_shared<nn::ReLU>());
    ch /= 2;
  }
  g->add(std::make_shared<nn::ConvTranspose2d>(ch, c.channels, 4, 2, 1, false, gen));
  g->add(std::make_shared<nn::Tanh>());
  fc->mark_rows_hwc(4, 4, 1024);

  auto d = std::make_shared<Sequential>();
  ch = c.channels;
  for (int i = 0; i < 4; ++i) {
    const int64_t out = int64_t(128) << i;
    d->add(std::make_shared<nn::Conv2d>(ch, out, 4, 2, 1, false, gen));
    if (i > 0) d->add(std::make_shared<nn::BatchNorm2d>(out, dev));
    d->add(std::make_shared<nn::LeakyReLU>(0.2));
    ch = out;
  }
  d->add(std::make_shared<nn::Flatten>());
  auto head = d->add(std::make_shared<nn::Linear>(1024 * 4 * 4, 1, true, gen));
  head->mark_cols_hwc(4, 4, 1024);
  dcgan_init(*g, gen);
  dcgan_init(*d, gen);
  return {std::make_shared<GanNet>(g), std::make_shared<GanNet>(d), nz, "bce", c};
}

// SAGAN as the popular PyTorch port builds it (and tools/scripts/torch_check.py): spectral
// norm on every conv of G and D but the last, BatchNorm in G, attention after the last two
// stages of G and of D, LeakyReLU 0.1 in D; PyTorch's default initialisation.
Gan sagan(const ModelConfig& c, Generator& gen) {
  const Device dev = gen.device();
  const int nup = stages_for(c.image_size);
  const int64_t nz = c.z_dim, dim = c.ngf;
  auto sn = [&](auto layer) { return nn::spectral_norm(layer, gen); };
  auto g = std::make_shared<Sequential>();
  int64_t ch = dim << (nup - 1);
  g->add(sn(std::make_shared<nn::ConvTranspose2d>(nz, ch, 4, 1, 0, true, gen)));
  g->add(std::make_shared<nn::BatchNorm2d>(ch, dev));
  g->add(std::make_shared<nn::ReLU>());
  for (int i = 0; i < nup - 1; ++i) {
    g->add(sn(std::make_shared<nn::ConvTranspose2d>(ch, ch / 2, 4, 2, 1, true, gen)));
    g->add(std::make_shared<nn::BatchNorm2d>(ch / 2, dev));
    g->add(std::make_shared<nn::ReLU>());
    ch /= 2;
    if (i >= nup - 3) g->add(std::make_shared<SelfAttention>(ch, true, c.official_attention, gen));
  }
  g->add(std::make_shared<nn::ConvTranspose2d>(ch, c.channels, 4, 2, 1, true, gen));
  g->add(std::make_shared<nn::Tanh>());

  const int64_t ddim = c.ndf;
  auto d = std::make_shared<Sequential>();
  d->add(sn(std::make_shared<nn::Conv2d>(c.channels, ddim, 4, 2, 1, true, gen)));
  d->add(std::make_shared<nn::LeakyReLU>(0.1));
  ch = ddim;
  for (int i = 0; i < nup - 1; ++i) {
    d->add(sn(std::make_shared<nn::Conv2d>(ch, ch * 2, 4, 2, 1, true, gen)));
    d->add(std::make_shared<nn::LeakyReLU>(0.1));
    ch *= 2;
    if (i >= nup - 3) d->add(std::make_shared<SelfAttention>(ch, true, c.official_attention, gen));
  }
  d->add(std::make_shared<nn::Conv2d>(ch, 1, 4, 1, 0, true, gen));
  return {std::make_shared<GanNet>(g), std::make_shared<GanNet>(d), nz, "hinge", c};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SelfAttention

SelfAttention::SelfAttention(int64_t channels, bool spectral_norm, bool official, Generator& gen,
                             bool studiogan_names, double sn_eps)
    : c_(channels), d_(channels / 8), official_(official) {
  GAN_CHECK(channels >= 8 && channels % 8 == 0,
            fmt::format("self-attention: channels {} must be a positive multiple of 8", channels));
  GAN_CHECK(official || !studiogan_names,
            "self-attention: StudioGAN's names need the official form");
  const bool bias = !official;
  const int64_t dv = official ? channels / 2 : channels;
  const bool sg = studiogan_names;
  q_ = register_module(sg ? "conv1x1_theta" : "q",
                       std::make_shared<nn::Conv2d>(channels, d_, 1, 1, 0, bias, gen));
  k_ = register_module(sg ? "conv1x1_phi" : "k",
                       std::make_shared<nn::Conv2d>(channels, d_, 1, 1, 0, bias, gen));
  v_ = register_module(sg ? "conv1x1_g" : "v",
                       std::make_shared<nn::Conv2d>(channels, dv, 1, 1, 0, bias, gen));
  if (official)
    o_ = register_module(sg ? "conv1x1_attn" : "o",
                         std::make_shared<nn::Conv2d>(dv, channels, 1, 1, 0, false, gen));
  if (spectral_norm) {
    q_->enable_spectral_norm(gen, 1, sn_eps);
    k_->enable_spectral_norm(gen, 1, sn_eps);
    v_->enable_spectral_norm(gen, 1, sn_eps);
    if (o_) o_->enable_spectral_norm(gen, 1, sn_eps);
  }
  gamma_ = register_parameter(sg ? "sigma" : "gamma", Tensor::zeros(Shape{1}, gen.device()));
}

namespace {
// A 1x1 conv weight (out, 1, 1, in) as a linear weight (out, in).
Var as_matrix(const Var& w) { return reshape(w, Shape{w.shape()[0], w.shape()[3]}); }
}  // namespace

Var SelfAttention::forward(const Var& x) {
  const Shape& s = x.shape();
  GAN_CHECK(s.ndim == 4 && s[3] == c_,
            fmt::format("self-attention: expected (B, H, W, {}), got {}", c_, s.str()));
  const int64_t b = s[0], n = s[1] * s[2];
  const Var xf = reshape(x, Shape{b, n, c_});
  if (!official_) {
    // One GEMM for q | k | v on the concatenated (2d + C, C) weight.
    const Var w = concat({as_matrix(q_->effective_weight()), as_matrix(k_->effective_weight()),
                          as_matrix(v_->effective_weight())},
                         0);
    const Var bias = concat({q_->bias(), k_->bias(), v_->bias()}, 0);
    return self_attention(linear(xf, w, bias), d_, gamma_, x);
  }
  const Var q = linear(xf, as_matrix(q_->effective_weight()));
  const Var kf = linear(x, as_matrix(k_->effective_weight()));  // (B, H, W, d)
  const Var vf = linear(x, as_matrix(v_->effective_weight()));  // (B, H, W, C/2)
  const Var kp = max_pool2d(kf), vp = max_pool2d(vf);
  const int64_t nk = kp.shape()[1] * kp.shape()[2];
  const Var o = attention(q, reshape(kp, Shape{b, nk, d_}), reshape(vp, Shape{b, nk, c_ / 2}));
  const Var proj = linear(o, as_matrix(o_->effective_weight()));  // (B, N, C)
  return add(mul(reshape(proj, s), gamma_), x);
}

std::vector<float> SelfAttention::attention_map(const Var& x, const std::vector<int64_t>& queries) {
  NoGradGuard no_grad;
  const Shape& s = x.shape();
  const int64_t b = s[0], n = s[1] * s[2];
  const Var xf = reshape(x, Shape{b, n, c_});
  const Var q = linear(xf, as_matrix(q_->effective_weight()), q_->bias());
  Var k;
  if (official_) {
    const Var kp = max_pool2d(linear(x, as_matrix(k_->effective_weight())));
    k = reshape(kp, Shape{b, kp.shape()[1] * kp.shape()[2], d_});
  } else {
    k = linear(xf, as_matrix(k_->effective_weight()), k_->bias());
  }
  // Under spectral norm, effective_weight() ran a power iteration in training mode: the map is
  // meant for eval, where it reads the stored u, v only.
  return attention_rows(q.value(), k.value(), queries);
}

// ---------------------------------------------------------------------------------------------
// GanNet

GanNet::GanNet(std::shared_ptr<nn::Sequential> net) : net_(std::move(net)) {
  net_->fuse_batchnorm_activations();
  register_module("", net_);  // unnamed: state_dict names are the Sequential's ("0.weight")
  sn_.add_all(*net_);
}

GanNet::GanNet(std::shared_ptr<LabelledNet> net, int num_classes)
    : labelled_(std::move(net)), num_classes_(num_classes) {
  register_module("", labelled_);
  sn_.add_all(*labelled_);
}

nn::Sequential& GanNet::net() {
  GAN_CHECK(net_ != nullptr, "model: this network is not an nn::Sequential");
  return *net_;
}

Var GanNet::forward(const Var& x) { return forward(x, Var()); }

Var GanNet::forward(const Var& x, const Var& onehot) {
  sn_.run(training());
  GAN_CHECK(!onehot.defined() || num_classes_ > 0,
            "model: labels given to an unconditional network");
  if (onehot.defined())
    GAN_CHECK(onehot.shape() == Shape({x.shape()[0], int64_t(num_classes_)}),
              fmt::format("model: expected one-hot labels ({}, {}), got {}", x.shape()[0],
                          num_classes_, onehot.shape().str()));
  // Images and scores leave the model float32 (in bf16 precision the activations inside are bf16).
  return cast(net_ ? net_->forward(x) : labelled_->forward(x, onehot), DType::F32);
}

std::vector<nn::WeightLayer*> GanNet::spectral_norm_layers() { return sn_.layers(); }

std::vector<std::string> GanNet::spectral_norm_names() {
  // The group was filled depth first in registration order, as named_parameters() walks.
  std::vector<std::string> out;
  for (const auto& [name, p] : named_parameters())
    if (name.ends_with(".weight_orig")) out.push_back(name.substr(0, name.size() - 12));
  return out;
}

std::vector<SelfAttention*> GanNet::attention_layers() {
  if (labelled_) return labelled_->attention_layers();
  std::vector<SelfAttention*> out;
  for (size_t i = 0; i < net_->size(); ++i)
    if (auto* a = dynamic_cast<SelfAttention*>(&(*net_)[i])) out.push_back(a);
  return out;
}

// ---------------------------------------------------------------------------------------------

const char* arch_name(Arch a) {
  return a == Arch::kSagan ? "sagan" : a == Arch::kDcgan ? "dcgan" : "sagan-resnet";
}

Arch parse_arch(const std::string& name) {
  if (name == "sagan") return Arch::kSagan;
  if (name == "dcgan") return Arch::kDcgan;
  if (name == "sagan-resnet") return Arch::kSaganResnet;
  throw_error("model: unknown model '" + name + "' (sagan, dcgan or sagan-resnet)");
}

const char* preset_name(Preset p) { return p == Preset::kDefault ? "default" : "wide"; }

Preset parse_preset(const std::string& name) {
  if (name == "default") return Preset::kDefault;
  if (name == "wide") return Preset::kWide;
  throw_error("model: unknown preset '" + name + "' (default or wide)");
}

Gan build(const ModelConfig& config, Generator& gen) {
  ModelConfig c = config;
  GAN_CHECK(c.channels == 1 || c.channels == 3,
            fmt::format("model: channels must be 1 or 3, got {}", c.channels));
  if (c.arch == Arch::kSaganResnet) return build_resnet(c, gen);  // its own width rules
  GAN_CHECK(c.ngf >= 8 && c.ndf >= 8,
            fmt::format("model: widths ngf {} and ndf {} must be at least 8", c.ngf, c.ndf));
  if (c.arch == Arch::kDcgan) {
    if (c.z_dim == 0) c.z_dim = 100;
    return c.preset == Preset::kWide ? dcgan_wide(c, gen) : dcgan(c, gen);
  }
  if (c.z_dim == 0) c.z_dim = 128;
  GAN_CHECK(c.preset == Preset::kDefault, std::string("model: SAGAN has no preset '") +
                                              preset_name(c.preset) + "' (default only)");
  return sagan(c, gen);
}

Tensor one_hot(const std::vector<int32_t>& labels, int classes, Device device) {
  std::vector<float> v(labels.size() * size_t(classes), 0.0f);
  for (size_t i = 0; i < labels.size(); ++i) {
    GAN_CHECK(labels[i] >= 0 && labels[i] < classes,
              fmt::format("model: label {} outside the model's {} classes", labels[i], classes));
    v[i * size_t(classes) + size_t(labels[i])] = 1.0f;
  }
  return Tensor::from_vector(v, Shape{int64_t(labels.size()), int64_t(classes)}).to(device);
}

Var latent_input(const Gan& gan, const Var& z) {
  if (gan.config.arch == Arch::kDcgan && gan.config.preset == Preset::kWide) return z;
  if (gan.config.arch == Arch::kSaganResnet) return z;
  return reshape(z, Shape{z.shape()[0], 1, 1, gan.z_dim});
}

}  // namespace gan::models
