#include "models/resnet.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "engine/autocast.h"
#include "engine/error.h"

namespace gan::models {

namespace {

constexpr double kSnEps = 1e-6;  // StudioGAN's spectral_norm(..., eps=1e-6)
constexpr double kBnEps = 1e-4;  // StudioGAN's batchnorm_2d default

std::shared_ptr<nn::Conv2d> sn_conv(int64_t in, int64_t out, int k, int pad, Generator& gen) {
  auto c = std::make_shared<nn::Conv2d>(in, out, k, 1, pad, true, gen);
  c->enable_spectral_norm(gen, 1, kSnEps);
  return c;
}

std::shared_ptr<nn::Linear> sn_linear(int64_t in, int64_t out, bool bias, Generator& gen) {
  auto l = std::make_shared<nn::Linear>(in, out, bias, gen);
  l->enable_spectral_norm(gen, 1, kSnEps);
  return l;
}

Var avg_pool2x(const Var& x) {
  Pool2dOptions o;
  return avg_pool2d(x, o);
}

// Plain batch norm (affine, eps 1e-4) or conditional batch norm, each followed by ReLU.
class Norm : public nn::Module {
 public:
  Norm(int64_t classes, int64_t channels, Generator& gen) {
    if (classes > 0)
      cbn_ = std::make_shared<ConditionalBatchNorm>(classes, channels, gen);
    else
      bn_ =
          std::make_shared<nn::BatchNorm2d>(channels, gen.device(), kBnEps, 0.1, Activation::kRelu);
  }
  // Registered in place of the Norm itself (StudioGAN names it bn1, bn2, bn4).
  std::shared_ptr<nn::Module> module() const {
    return cbn_ ? std::shared_ptr<nn::Module>(cbn_) : std::shared_ptr<nn::Module>(bn_);
  }
  Var operator()(const Var& x, const Var& onehot) const {
    if (cbn_) {
      GAN_CHECK(onehot.defined(), "resnet: a conditional model needs labels");
      return cbn_->forward(x, onehot, true);
    }
    return bn_->forward(x);
  }

 private:
  std::shared_ptr<ConditionalBatchNorm> cbn_;
  std::shared_ptr<nn::BatchNorm2d> bn_;
};

// StudioGAN's GenBlock: bn1 -> ReLU -> 2x nearest -> conv2d1 (3x3) -> bn2 -> ReLU -> conv2d2
// (3x3), plus the shortcut conv2d0 (1x1) of the up-sampled input.
class GenBlock : public nn::Module {
 public:
  GenBlock(int64_t in, int64_t out, int classes, Generator& gen)
      : bn1_(classes, in, gen), bn2_(classes, out, gen) {
    register_module("bn1", bn1_.module());
    register_module("bn2", bn2_.module());
    conv0_ = register_module("conv2d0", sn_conv(in, out, 1, 0, gen));
    conv1_ = register_module("conv2d1", sn_conv(in, out, 3, 1, gen));
    conv2_ = register_module("conv2d2", sn_conv(out, out, 3, 1, gen));
  }
  Var forward(const Var& x, const Var& onehot) {
    Var h = upsample_nearest(bn1_(x, onehot), 2);
    h = conv2_->forward(bn2_(conv1_->forward(h), onehot));
    return add(h, conv0_->forward(upsample_nearest(x, 2)));
  }

 private:
  Norm bn1_, bn2_;
  std::shared_ptr<nn::Conv2d> conv0_, conv1_, conv2_;
};

// StudioGAN's DiscOptBlock (the first block): conv2d1 -> ReLU -> conv2d2 -> avg pool, plus the
// shortcut avg pool -> conv2d0.
class DiscOptBlock : public nn::Module {
 public:
  DiscOptBlock(int64_t in, int64_t out, Generator& gen) {
    conv0_ = register_module("conv2d0", sn_conv(in, out, 1, 0, gen));
    conv1_ = register_module("conv2d1", sn_conv(in, out, 3, 1, gen));
    conv2_ = register_module("conv2d2", sn_conv(out, out, 3, 1, gen));
  }
  Var forward(const Var& x) {
    const Var h = avg_pool2x(conv2_->forward(relu(conv1_->forward(x))));
    return add(h, conv0_->forward(avg_pool2x(x)));
  }

 private:
  std::shared_ptr<nn::Conv2d> conv0_, conv1_, conv2_;
};

// StudioGAN's DiscBlock: ReLU -> conv2d1 -> ReLU -> conv2d2 (-> avg pool), plus the shortcut
// conv2d0 (-> avg pool) when it down-samples or changes the width, else the identity. StudioGAN's
// ReLU is in place (nn.ReLU(inplace=True)) and its shortcut holds the same tensor, so the
// shortcut sees relu(x) too: computed here as written, not as a pre-activation block.
class DiscBlock : public nn::Module {
 public:
  DiscBlock(int64_t in, int64_t out, bool down, Generator& gen) : down_(down) {
    if (down || in != out) conv0_ = register_module("conv2d0", sn_conv(in, out, 1, 0, gen));
    conv1_ = register_module("conv2d1", sn_conv(in, out, 3, 1, gen));
    conv2_ = register_module("conv2d2", sn_conv(out, out, 3, 1, gen));
  }
  Var forward(const Var& x) {
    const Var xr = relu(x);
    Var h = conv2_->forward(relu(conv1_->forward(xr)));
    if (down_) h = avg_pool2x(h);
    Var s = xr;
    if (conv0_) s = conv0_->forward(s);
    if (down_) s = avg_pool2x(s);
    return add(h, s);
  }

 private:
  bool down_;
  std::shared_ptr<nn::Conv2d> conv0_, conv1_, conv2_;
};

// "blocks.<i>" holding one module at index 0 (StudioGAN's nn.ModuleList of nn.ModuleLists).
class Slot : public nn::Module {
 public:
  explicit Slot(std::shared_ptr<nn::Module> m) { register_module("0", std::move(m)); }
};

struct Tables {
  std::vector<int64_t> in, out;
  std::vector<bool> down;  // D only
};

// StudioGAN's channel tables (src/models/resnet.py) in units of the conv dim.
Tables g_tables(int size, int64_t g) {
  switch (size) {
    case 32:
      return {{g * 4, g * 4, g * 4}, {g * 4, g * 4, g * 4}, {}};
    case 64:
      return {{g * 16, g * 8, g * 4, g * 2}, {g * 8, g * 4, g * 2, g}, {}};
    case 128:
      return {{g * 16, g * 16, g * 8, g * 4, g * 2}, {g * 16, g * 8, g * 4, g * 2, g}, {}};
  }
  throw_error(fmt::format("model: the ResNet SAGAN is 32, 64 or 128 px, got {}", size));
}

Tables d_tables(int size, int64_t d, int channels) {
  switch (size) {
    case 32:
      return {{channels, d * 2, d * 2, d * 2},
              {d * 2, d * 2, d * 2, d * 2},
              {true, true, false, false}};
    case 64:
      return {{channels, d, d * 2, d * 4, d * 8},
              {d, d * 2, d * 4, d * 8, d * 16},
              {true, true, true, true, false}};
    case 128:
      return {{channels, d, d * 2, d * 4, d * 8, d * 16},
              {d, d * 2, d * 4, d * 8, d * 16, d * 16},
              {true, true, true, true, true, false}};
  }
  throw_error(fmt::format("model: the ResNet SAGAN is 32, 64 or 128 px, got {}", size));
}

void check_attn(const std::vector<int>& at, size_t blocks, const char* which) {
  for (int b : at)
    GAN_CHECK(b >= 1 && size_t(b) <= blocks,
              fmt::format("model: attention after {} block {} (the model has blocks 1 to {})",
                          which, b, blocks));
}

// StudioGAN's nn.ModuleList of one-module nn.ModuleLists: "blocks.<i>.0.<name>".
class Blocks : public nn::Module {
 public:
  void append(std::shared_ptr<nn::Module> m) {
    auto slot = std::make_shared<Slot>(std::move(m));
    register_module(std::to_string(n_++), slot);
  }

 private:
  int n_ = 0;
};

bool attn_after(const std::vector<int>& at, size_t i) {
  return std::find(at.begin(), at.end(), int(i) + 1) != at.end();
}

// linear0 (z -> 4x4 map) -> blocks (GenBlocks, attention after the chosen ones) -> bn4 -> ReLU
// -> conv2d5 (3x3) -> tanh.
class ResnetGenerator : public LabelledNet {
 public:
  ResnetGenerator(const ModelConfig& c, Generator& gen) {
    const Tables t = g_tables(c.image_size, c.ngf);
    const std::vector<int> at = resnet_g_attn(c);
    check_attn(at, t.in.size(), "G");
    c0_ = t.in[0];
    linear0_ = register_module("linear0", sn_linear(c.z_dim, c0_ * 4 * 4, true, gen));
    linear0_->mark_rows_hwc(4, 4, c0_);
    auto blocks = register_module("blocks", std::make_shared<Blocks>());
    for (size_t i = 0; i < t.in.size(); ++i) {
      auto b = std::make_shared<GenBlock>(t.in[i], t.out[i], c.num_classes, gen);
      blocks->append(b);
      steps_.push_back({b, nullptr});
      if (attn_after(at, i)) {
        auto a = std::make_shared<SelfAttention>(t.out[i], true, true, gen, true, kSnEps);
        blocks->append(a);
        attn_.push_back(a.get());
        steps_.push_back({nullptr, a});
      }
    }
    bn4_ = std::make_unique<Norm>(0, t.out.back(), gen);
    register_module("bn4", bn4_->module());
    conv5_ = register_module("conv2d5", sn_conv(t.out.back(), c.channels, 3, 1, gen));
  }
  std::vector<SelfAttention*> attention_layers() const override { return attn_; }
  Var forward(const Var& z, const Var& onehot) override {
    Var h = reshape(linear0_->forward(z), Shape{z.shape()[0], 4, 4, c0_});
    for (auto& s : steps_) h = s.block ? s.block->forward(h, onehot) : s.attn->forward(h);
    h = (*bn4_)(h, Var());
    return tanh(conv5_->forward(h));
  }

 private:
  struct Step {
    std::shared_ptr<GenBlock> block;
    std::shared_ptr<SelfAttention> attn;
  };
  int64_t c0_ = 0;
  std::vector<SelfAttention*> attn_;
  std::shared_ptr<nn::Linear> linear0_;
  std::vector<Step> steps_;
  std::unique_ptr<Norm> bn4_;
  std::shared_ptr<nn::Conv2d> conv5_;
};

// blocks (DiscOptBlock, DiscBlocks, attention after the chosen ones) -> ReLU -> sum over pixels
// -> linear1 (-> 1), plus the projection <embedding(y), h> when conditional.
class ResnetDiscriminator : public LabelledNet {
 public:
  ResnetDiscriminator(const ModelConfig& c, Generator& gen) {
    const Tables t = d_tables(c.image_size, c.ndf, c.channels);
    const std::vector<int> at = resnet_d_attn(c);
    check_attn(at, t.in.size(), "D");
    auto blocks = register_module("blocks", std::make_shared<Blocks>());
    for (size_t i = 0; i < t.in.size(); ++i) {
      if (i == 0) {
        auto b = std::make_shared<DiscOptBlock>(t.in[i], t.out[i], gen);
        blocks->append(b);
        steps_.push_back([b](const Var& x) { return b->forward(x); });
      } else {
        auto b = std::make_shared<DiscBlock>(t.in[i], t.out[i], t.down[i], gen);
        blocks->append(b);
        steps_.push_back([b](const Var& x) { return b->forward(x); });
      }
      if (attn_after(at, i)) {
        auto a = std::make_shared<SelfAttention>(t.out[i], true, true, gen, true, kSnEps);
        blocks->append(a);
        attn_.push_back(a.get());
        steps_.push_back([a](const Var& x) { return a->forward(x); });
      }
    }
    const int64_t cl = t.out.back();
    linear1_ = register_module("linear1", sn_linear(cl, 1, true, gen));
    if (c.num_classes > 0)  // nn.Embedding(classes, C): weight (classes, C), the matrix SN sees
      embedding_ = register_module("embedding", sn_linear(cl, c.num_classes, false, gen));
  }
  std::vector<SelfAttention*> attention_layers() const override { return attn_; }
  Var forward(const Var& x, const Var& onehot) override {
    Var h = x;
    for (auto& s : steps_) h = s(h);
    h = sum(relu(h), {1, 2});  // (B, C)
    if (!embedding_) return reshape(linear1_->forward(h), Shape{h.shape()[0]});
    GAN_CHECK(onehot.defined(), "resnet: a conditional model needs labels");
    // linear1(h) + <embedding(y), h> in one op (kernels/projection_head.h).
    return projection_head(h, linear1_->effective_weight(), linear1_->bias(), onehot,
                           embedding_->effective_weight());
  }

 private:
  std::vector<SelfAttention*> attn_;
  std::vector<std::function<Var(const Var&)>> steps_;
  std::shared_ptr<nn::Linear> linear1_, embedding_;
};

// Orthonormalises the n rows (length m >= n) of v in place: block classical Gram-Schmidt run
// twice per block (CGS2; the projections are GEMMs on the CPU backend), modified Gram-Schmidt in
// double inside each block of 32 rows. A 1024 x 9216 matrix (a 128 px model's widest conv) takes
// well under a second instead of the minutes of plain loops.
void orthonormalise_rows(std::vector<float>& v, int64_t n, int64_t m) {
  constexpr int64_t kBlock = 32;
  NoGradGuard no_grad;
  for (int64_t s = 0; s < n; s += kBlock) {
    const int64_t nb = std::min(kBlock, n - s);
    float* blk = &v[size_t(s * m)];
    if (s > 0) {
      const Tensor q =
          Tensor::from_vector(std::vector<float>(v.begin(), v.begin() + s * m), Shape{s, m});
      for (int pass = 0; pass < 2; ++pass) {
        const Var b(Tensor::from_vector(std::vector<float>(blk, blk + nb * m), Shape{nb, m}));
        const Var c = linear(b, Var(q));  // b q^T (nb, s)
        const std::vector<float> r = sub(b, matmul(c, Var(q))).value().to_vector();
        std::copy(r.begin(), r.end(), blk);
      }
    }
    for (int64_t i = 0; i < nb; ++i) {
      float* vi = blk + i * m;
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t j = 0; j < i; ++j) {
          const float* vj = blk + j * m;
          double d = 0;
          for (int64_t k = 0; k < m; ++k) d += double(vi[k]) * vj[k];
          for (int64_t k = 0; k < m; ++k) vi[k] = float(vi[k] - d * vj[k]);
        }
      double nrm = 0;
      for (int64_t k = 0; k < m; ++k) nrm += double(vi[k]) * vi[k];
      const double inv = 1.0 / std::sqrt(nrm);
      for (int64_t k = 0; k < m; ++k) vi[k] = float(vi[k] * inv);
    }
  }
}

// torch.nn.init.orthogonal_'s distribution: the weight as a (rows, rest) matrix with orthonormal
// rows (or columns, when there are more rows than columns), from a Gaussian matrix.
void orthogonal_(Tensor& t, Generator& gen) {
  const int64_t rows = t.shape()[0], cols = t.numel() / rows;
  Tensor g = Tensor::empty(t.shape(), t.device());
  gen.normal_(g, 0.0, 1.0);
  std::vector<float> a = g.to_vector();
  const bool by_rows = rows <= cols;
  const int64_t n = by_rows ? rows : cols, m = by_rows ? cols : rows;
  std::vector<float> v(a.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k)
      v[size_t(by_rows ? r * m + k : k * m + r)] = a[size_t(r * cols + k)];
  orthonormalise_rows(v, n, m);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k)
      a[size_t(r * cols + k)] = v[size_t(by_rows ? r * m + k : k * m + r)];
  t.copy_from(Tensor::from_vector(a, t.shape()));
}

// StudioGAN's init_weights over every conv, linear and embedding weight; biases 0. Batch-norm
// weights (1-D "weight") and the attention's sigma keep their values.
void init_resnet(nn::Module& m, ResnetInit init, Generator& gen) {
  for (auto& [name, p] : m.named_parameters()) {
    Tensor t = p.value();
    if (t.ndim() >= 2) {
      if (init == ResnetInit::kOrtho) {
        orthogonal_(t, gen);
      } else if (init == ResnetInit::kN02) {
        gen.normal_(t, 0.0, 0.02);
      } else {  // Glorot uniform: fan_in = in * k * k, fan_out = out * k * k
        const int64_t out = t.shape()[0], rest = t.numel() / out;
        const int64_t rf = t.ndim() == 4 ? t.shape()[1] * t.shape()[2] : 1;
        const double fan_in = double(rest), fan_out = double(out * rf);
        const double a = std::sqrt(6.0 / (fan_in + fan_out));
        gen.uniform_(t, -a, a);
      }
    } else if (name.ends_with(".bias")) {  // conv and linear biases (batch norm's are 0 already)
      t.zero_();
    }
  }
}

}  // namespace

ResnetInit parse_resnet_init(const std::string& name) {
  if (name == "ortho") return ResnetInit::kOrtho;
  if (name == "N02") return ResnetInit::kN02;
  if (name == "glorot") return ResnetInit::kGlorot;
  throw_error("model: unknown initialisation '" + name + "' (ortho, N02 or glorot)");
}

ConditionalBatchNorm::ConditionalBatchNorm(int64_t num_classes, int64_t channels, Generator& gen) {
  const Device dev = gen.device();
  // StudioGAN: self.bn = nn.BatchNorm2d(C, eps=1e-4, affine=False) registered after gain, bias.
  gain = register_module("gain", sn_linear(num_classes, channels, false, gen));
  bias = register_module("bias", sn_linear(num_classes, channels, false, gen));
  running_mean_ = register_buffer("bn.running_mean", Tensor::zeros(Shape{channels}, dev));
  running_var_ = register_buffer("bn.running_var", Tensor::full(Shape{channels}, 1.0, dev));
  num_batches_tracked_ =
      register_buffer("bn.num_batches_tracked", Tensor::zeros(Shape{}, Device::CPU, DType::F64));
}

Var ConditionalBatchNorm::forward(const Var& x, const Var& onehot, bool relu_after) {
  // One fused batch_norm with per-sample scale 1 + gain(onehot) and shift bias(onehot), (N, C)
  // in float32 (under bf16 precision the linear maps' bf16 outputs are widened).
  const Var one(Tensor::full(Shape{1}, 1.0, x.device()));
  const Var g = add(widen(gain->forward(onehot)), one);
  const Var b = widen(bias->forward(onehot));
  const Var y = batch_norm(x, g, b, running_mean_, running_var_, training(), 0.1, kBnEps,
                           relu_after ? Activation::kRelu : Activation::kNone);
  if (training()) *num_batches_tracked_.data<double>() += 1;
  return y;
}

std::vector<int> resnet_g_attn(const ModelConfig& c) {
  if (c.g_attn.empty()) return {c.image_size == 32 ? 2 : c.image_size == 64 ? 3 : 4};
  return c.g_attn == std::vector<int>{0} ? std::vector<int>{} : c.g_attn;
}

std::vector<int> resnet_d_attn(const ModelConfig& c) {
  if (c.d_attn.empty()) return {1};
  return c.d_attn == std::vector<int>{0} ? std::vector<int>{} : c.d_attn;
}

Gan build_resnet(const ModelConfig& config, Generator& gen) {
  ModelConfig c = config;
  c.arch = Arch::kSaganResnet;
  if (c.z_dim == 0) c.z_dim = 128;
  GAN_CHECK(c.channels == 1 || c.channels == 3,
            fmt::format("model: channels must be 1 or 3, got {}", c.channels));
  // Attention needs its block's width to be a multiple of 8 (checked where it is built).
  GAN_CHECK(c.ngf >= 2 && c.ndf >= 2,
            fmt::format("model: widths ngf {} and ndf {} must be at least 2", c.ngf, c.ndf));
  GAN_CHECK(c.preset == Preset::kDefault, std::string("model: sagan-resnet has no preset '") +
                                              preset_name(c.preset) + "' (default only)");
  GAN_CHECK(c.num_classes >= 0, "model: the number of classes must be >= 0");
  const ResnetInit gi = parse_resnet_init(c.g_init), di = parse_resnet_init(c.d_init);
  auto g = std::make_shared<ResnetGenerator>(c, gen);
  auto d = std::make_shared<ResnetDiscriminator>(c, gen);
  init_resnet(*g, gi, gen);
  init_resnet(*d, di, gen);
  return {std::make_shared<GanNet>(g, c.num_classes), std::make_shared<GanNet>(d, c.num_classes),
          c.z_dim, "hinge", c};
}

}  // namespace gan::models
