#include "models/inception.h"

#include <cmath>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "engine/error.h"

namespace gan::models {

namespace {

using nn::Layer;

// torchvision's BasicConv2d: conv (no bias) + BatchNorm(eps 0.001) + ReLU (fused into the norm).
class BasicConv2d : public Layer {
 public:
  BasicConv2d(int64_t in, int64_t out, int kh, int kw, int sh, int sw, int ph, int pw,
              Generator& gen) {
    Conv2dOptions o;
    o.stride_h = sh, o.stride_w = sw, o.pad_h = ph, o.pad_w = pw;
    conv_ = register_module("conv", std::make_shared<nn::Conv2d>(in, out, kh, kw, o, false, gen));
    bn_ = register_module(
        "bn", std::make_shared<nn::BatchNorm2d>(out, gen.device(), 0.001, 0.1, Activation::kRelu));
  }
  Var forward(const Var& x) override { return bn_->forward(conv_->forward(x)); }

 private:
  std::shared_ptr<nn::Conv2d> conv_;
  std::shared_ptr<nn::BatchNorm2d> bn_;
};

using Conv = std::shared_ptr<BasicConv2d>;

Pool2dOptions pool(int k, int s, int p, bool include_pad = true) {
  Pool2dOptions o;
  o.kernel_h = o.kernel_w = k, o.stride_h = o.stride_w = s, o.pad_h = o.pad_w = p;
  o.count_include_pad = include_pad;
  return o;
}
// FIDInception*'s branch pool: avg_pool2d(3, 1, 1, count_include_pad=False).
Var fid_avg(const Var& x) { return avg_pool2d(x, pool(3, 1, 1, false)); }

class InceptionA : public Layer {  // FIDInceptionA
 public:
  InceptionA(int64_t in, int64_t pool_features, Generator& g) {
    b1 = add("branch1x1", in, 64, 1, 1, 1, 0, 0, g);
    b5_1 = add("branch5x5_1", in, 48, 1, 1, 1, 0, 0, g);
    b5_2 = add("branch5x5_2", 48, 64, 5, 5, 1, 2, 2, g);
    d1 = add("branch3x3dbl_1", in, 64, 1, 1, 1, 0, 0, g);
    d2 = add("branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1, g);
    d3 = add("branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1, g);
    bp = add("branch_pool", in, pool_features, 1, 1, 1, 0, 0, g);
  }
  Var forward(const Var& x) override {
    return concat({b1->forward(x), b5_2->forward(b5_1->forward(x)),
                   d3->forward(d2->forward(d1->forward(x))), bp->forward(fid_avg(x))});
  }

 protected:
  Conv add(const std::string& name, int64_t in, int64_t out, int kh, int kw, int s, int ph, int pw,
           Generator& g) {
    return register_module(name, std::make_shared<BasicConv2d>(in, out, kh, kw, s, s, ph, pw, g));
  }
  Conv b1, b5_1, b5_2, d1, d2, d3, bp;
};

class InceptionB : public Layer {  // torchvision's InceptionB (Mixed_6a)
 public:
  InceptionB(int64_t in, Generator& g) {
    b3 = add("branch3x3", in, 384, 3, 3, 2, 0, 0, g);
    d1 = add("branch3x3dbl_1", in, 64, 1, 1, 1, 0, 0, g);
    d2 = add("branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1, g);
    d3 = add("branch3x3dbl_3", 96, 96, 3, 3, 2, 0, 0, g);
  }
  Var forward(const Var& x) override {
    return concat(
        {b3->forward(x), d3->forward(d2->forward(d1->forward(x))), max_pool2d(x, pool(3, 2, 0))});
  }

 private:
  Conv add(const std::string& name, int64_t in, int64_t out, int kh, int kw, int s, int ph, int pw,
           Generator& g) {
    return register_module(name, std::make_shared<BasicConv2d>(in, out, kh, kw, s, s, ph, pw, g));
  }
  Conv b3, d1, d2, d3;
};

class InceptionC : public Layer {  // FIDInceptionC
 public:
  InceptionC(int64_t in, int64_t c7, Generator& g) {
    b1 = add("branch1x1", in, 192, 1, 1, 0, 0, g);
    b7_1 = add("branch7x7_1", in, c7, 1, 1, 0, 0, g);
    b7_2 = add("branch7x7_2", c7, c7, 1, 7, 0, 3, g);
    b7_3 = add("branch7x7_3", c7, 192, 7, 1, 3, 0, g);
    d1 = add("branch7x7dbl_1", in, c7, 1, 1, 0, 0, g);
    d2 = add("branch7x7dbl_2", c7, c7, 7, 1, 3, 0, g);
    d3 = add("branch7x7dbl_3", c7, c7, 1, 7, 0, 3, g);
    d4 = add("branch7x7dbl_4", c7, c7, 7, 1, 3, 0, g);
    d5 = add("branch7x7dbl_5", c7, 192, 1, 7, 0, 3, g);
    bp = add("branch_pool", in, 192, 1, 1, 0, 0, g);
  }
  Var forward(const Var& x) override {
    return concat({b1->forward(x), b7_3->forward(b7_2->forward(b7_1->forward(x))),
                   d5->forward(d4->forward(d3->forward(d2->forward(d1->forward(x))))),
                   bp->forward(fid_avg(x))});
  }

 private:
  Conv add(const std::string& name, int64_t in, int64_t out, int kh, int kw, int ph, int pw,
           Generator& g) {
    return register_module(name, std::make_shared<BasicConv2d>(in, out, kh, kw, 1, 1, ph, pw, g));
  }
  Conv b1, b7_1, b7_2, b7_3, d1, d2, d3, d4, d5, bp;
};

class InceptionD : public Layer {  // torchvision's InceptionD (Mixed_7a)
 public:
  InceptionD(int64_t in, Generator& g) {
    b3_1 = add("branch3x3_1", in, 192, 1, 1, 1, 0, 0, g);
    b3_2 = add("branch3x3_2", 192, 320, 3, 3, 2, 0, 0, g);
    b7_1 = add("branch7x7x3_1", in, 192, 1, 1, 1, 0, 0, g);
    b7_2 = add("branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3, g);
    b7_3 = add("branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0, g);
    b7_4 = add("branch7x7x3_4", 192, 192, 3, 3, 2, 0, 0, g);
  }
  Var forward(const Var& x) override {
    return concat({b3_2->forward(b3_1->forward(x)),
                   b7_4->forward(b7_3->forward(b7_2->forward(b7_1->forward(x)))),
                   max_pool2d(x, pool(3, 2, 0))});
  }

 private:
  Conv add(const std::string& name, int64_t in, int64_t out, int kh, int kw, int s, int ph, int pw,
           Generator& g) {
    return register_module(name, std::make_shared<BasicConv2d>(in, out, kh, kw, s, s, ph, pw, g));
  }
  Conv b3_1, b3_2, b7_1, b7_2, b7_3, b7_4;
};

class InceptionE : public Layer {  // FIDInceptionE_1 (avg pool) / FIDInceptionE_2 (max pool)
 public:
  InceptionE(int64_t in, bool max_pool, Generator& g) : max_pool_(max_pool) {
    b1 = add("branch1x1", in, 320, 1, 1, 0, 0, g);
    b3_1 = add("branch3x3_1", in, 384, 1, 1, 0, 0, g);
    b3_2a = add("branch3x3_2a", 384, 384, 1, 3, 0, 1, g);
    b3_2b = add("branch3x3_2b", 384, 384, 3, 1, 1, 0, g);
    d1 = add("branch3x3dbl_1", in, 448, 1, 1, 0, 0, g);
    d2 = add("branch3x3dbl_2", 448, 384, 3, 3, 1, 1, g);
    d3a = add("branch3x3dbl_3a", 384, 384, 1, 3, 0, 1, g);
    d3b = add("branch3x3dbl_3b", 384, 384, 3, 1, 1, 0, g);
    bp = add("branch_pool", in, 192, 1, 1, 0, 0, g);
  }
  Var forward(const Var& x) override {
    const Var t = b3_1->forward(x);
    const Var u = d2->forward(d1->forward(x));
    const Var p = max_pool_ ? max_pool2d(x, pool(3, 1, 1)) : fid_avg(x);
    return concat({b1->forward(x), b3_2a->forward(t), b3_2b->forward(t), d3a->forward(u),
                   d3b->forward(u), bp->forward(p)});
  }

 private:
  Conv add(const std::string& name, int64_t in, int64_t out, int kh, int kw, int ph, int pw,
           Generator& g) {
    return register_module(name, std::make_shared<BasicConv2d>(in, out, kh, kw, 1, 1, ph, pw, g));
  }
  bool max_pool_;
  Conv b1, b3_1, b3_2a, b3_2b, d1, d2, d3a, d3b, bp;
};

// SplitMix64-style hash of (element, key) -> uniform [-0.5, 0.5) (the fixture script's mix()).
}  // namespace

InceptionV3::InceptionV3(Generator& g, bool with_fc) {
  auto conv = [&](const std::string& name, int64_t in, int64_t out, int k, int s, int p) {
    blocks_.push_back(
        register_module(name, std::make_shared<BasicConv2d>(in, out, k, k, s, s, p, p, g)));
  };
  conv("Conv2d_1a_3x3", 3, 32, 3, 2, 0);
  conv("Conv2d_2a_3x3", 32, 32, 3, 1, 0);
  conv("Conv2d_2b_3x3", 32, 64, 3, 1, 1);
  blocks_.push_back(nullptr);  // max pool 3, stride 2
  conv("Conv2d_3b_1x1", 64, 80, 1, 1, 0);
  conv("Conv2d_4a_3x3", 80, 192, 3, 1, 0);
  blocks_.push_back(nullptr);
  auto add = [&](const std::string& name, std::shared_ptr<Layer> l) {
    blocks_.push_back(register_module(name, std::move(l)));
  };
  add("Mixed_5b", std::make_shared<InceptionA>(192, 32, g));
  add("Mixed_5c", std::make_shared<InceptionA>(256, 64, g));
  add("Mixed_5d", std::make_shared<InceptionA>(288, 64, g));
  add("Mixed_6a", std::make_shared<InceptionB>(288, g));
  add("Mixed_6b", std::make_shared<InceptionC>(768, 128, g));
  add("Mixed_6c", std::make_shared<InceptionC>(768, 160, g));
  add("Mixed_6d", std::make_shared<InceptionC>(768, 160, g));
  add("Mixed_6e", std::make_shared<InceptionC>(768, 192, g));
  add("Mixed_7a", std::make_shared<InceptionD>(768, g));
  add("Mixed_7b", std::make_shared<InceptionE>(1280, false, g));
  add("Mixed_7c", std::make_shared<InceptionE>(2048, true, g));
  if (with_fc) fc_ = register_module("fc", std::make_shared<nn::Linear>(2048, 1008, true, g));
}

FeatureNet::Output InceptionV3::forward(const Var& x) {
  GAN_CHECK(x.shape().ndim == 4 && x.shape()[3] == 3,
            fmt::format("inception: expected RGB images (B, H, W, 3), got {}", x.shape().str()));
  Var h = x;
  if (x.shape()[1] != 299 || x.shape()[2] != 299) {
    if (resize_ == Resize::kBilinear || resize_ == Resize::kTF) {
      h = resize_bilinear(x, 299, 299, resize_ == Resize::kBilinear);
    } else {  // clamp(bicubic(x), -1, 1) = relu(y + 1) - relu(y - 1) - 1
      const Var y = resize_bicubic_aa(x, 299, 299);
      const Var one(Tensor::full(Shape{1}, 1.0, x.device(), x.value().dtype()));
      h = sub(sub(relu(add(y, one)), relu(sub(y, one))), one);
    }
  }
  if (range_ == InputRange::kTF) {  // v / 128 - 1 = (127.5 / 128) u + 127.5 / 128 - 1
    const Var shift(Tensor::full(Shape{1}, -1.0 / 256, x.device(), x.value().dtype()));
    h = add(scale(h, 255.0 / 256), shift);
  }
  for (const auto& b : blocks_) h = b ? b->forward(h) : max_pool2d(h, pool(3, 2, 0));
  // Features and logits leave the model float32 (bf16 precision: the activations inside are bf16).
  // (the pooled mean taken in float32)
  const Var f = reshape(adaptive_avg_pool2d(cast(h, DType::F32), 1, 1), Shape{x.shape()[0], 2048});
  if (!fc_) return {f, Var()};
  return {f, cast(logits_bias_ ? fc_->forward(f) : linear(f, fc_->weight()), DType::F32)};
}

std::string InceptionV3::describe() const {
  return fmt::format("InceptionV3 (pytorch-fid's FID network{}, {} resize, input {}) -> 2048",
                     fc_ ? ", with fc" : "",
                     resize_ == Resize::kBilinear ? "pytorch-fid's bilinear"
                     : resize_ == Resize::kTF     ? "the TF graph's bilinear"
                                                  : "clean-fid's bicubic",
                     range_ == InputRange::kTorch ? "2 v / 255 - 1" : "v / 128 - 1");
}

}  // namespace gan::models
