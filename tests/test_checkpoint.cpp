// Checkpoint layouts: what tools/io/checkpoint.h writes is what PyTorch's modules compute with.
// Each check recomputes a layer's output the PyTorch way (NCHW features, PyTorch-layout weights)
// from the converted tensors and compares it with our NHWC layer.
#include <catch2/catch.hpp>

#include "engine/nn.h"
#include "models/gan.h"
#include "tests/harness.h"
#include "tools/io/checkpoint.h"

using namespace gan;

namespace {

std::vector<float> values(const Tensor& t) { return t.to(Device::CPU).to_vector(); }

Tensor randn(Generator& gen, const Shape& s) {
  Tensor t = Tensor::empty(s);
  gen.normal_(t);
  return t;
}

}  // namespace

TEST_CASE("checkpoint: Linear rows over an NHWC map convert to PyTorch's NCHW view",
          "[checkpoint][cpu]") {
  Generator gen(1);
  const int64_t h = 2, w = 3, c = 4, in = 5;
  nn::Linear fc(in, h * w * c, true, gen);
  fc.mark_rows_hwc(h, w, c);
  Tensor x = randn(gen, Shape{2, in});
  const auto y = values(fc(Var(x)).value());  // (2, h*w*c) in (h, w, c) order
  std::map<std::string, nn::TorchLayout> lay;
  for (auto& [n, l] : fc.named_layouts()) lay[n] = l;
  const auto wt = values(ckpt::to_torch(fc.weight().value(), lay["weight"]));
  const auto bt = values(ckpt::to_torch(fc.bias().value(), lay["bias"]));
  const auto xv = values(x);
  // PyTorch: y_t = x W_t^T + b_t, viewed as (c, h, w).
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t yy = 0; yy < h; ++yy)
        for (int64_t xx = 0; xx < w; ++xx) {
          const int64_t row = (ch * h + yy) * w + xx;
          double s = bt[size_t(row)];
          for (int64_t k = 0; k < in; ++k) s += wt[size_t(row * in + k)] * xv[size_t(b * in + k)];
          const float ours = y[size_t(b * h * w * c + (yy * w + xx) * c + ch)];
          CHECK(ours == Approx(s).epsilon(1e-5));
        }
  // And back.
  nn::Linear fresh(in, h * w * c, true, gen);
  ckpt::from_torch(ckpt::to_torch(fc.weight().value(), lay["weight"]), lay["weight"],
                   fresh.weight().value());
  CHECK(values(fresh.weight().value()) == values(fc.weight().value()));
}

TEST_CASE("checkpoint: Linear columns over a flattened NHWC map convert to PyTorch's",
          "[checkpoint][cpu]") {
  Generator gen(2);
  const int64_t h = 2, w = 2, c = 3, out = 2;
  nn::Linear head(h * w * c, out, true, gen);
  head.mark_cols_hwc(h, w, c);
  Tensor feat = randn(gen, Shape{1, h, w, c});  // NHWC
  const auto y = values(head(flatten(Var(feat), 1)).value());
  std::map<std::string, nn::TorchLayout> lay;
  for (auto& [n, l] : head.named_layouts()) lay[n] = l;
  const auto wt = values(ckpt::to_torch(head.weight().value(), lay["weight"]));
  const auto b = values(head.bias().value());
  const auto f = values(feat);
  for (int64_t o = 0; o < out; ++o) {
    double s = b[size_t(o)];
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t yy = 0; yy < h; ++yy)
        for (int64_t xx = 0; xx < w; ++xx)  // PyTorch flattens (c, h, w)
          s += wt[size_t(o * h * w * c + (ch * h + yy) * w + xx)] *
               f[size_t((yy * w + xx) * c + ch)];
    CHECK(y[size_t(o)] == Approx(s).epsilon(1e-5));
  }
}

TEST_CASE("checkpoint: a conv's spectral-norm v converts with its weight", "[checkpoint][cpu]") {
  Generator gen(3);
  auto conv = nn::spectral_norm(std::make_shared<nn::Conv2d>(3, 4, 2, 1, 0, false, gen), gen);
  std::map<std::string, nn::TorchLayout> lay;
  for (auto& [n, l] : conv->named_layouts()) lay[n] = l;
  // W v (the u update) is the same vector in both layouts.
  const auto w = values(conv->weight().value());  // (4, 2, 2, 3)
  const auto v = values(conv->sn_state()->v);
  const auto wt = values(ckpt::to_torch(conv->weight().value(), lay["weight_orig"]));  // (4,3,2,2)
  const auto vt = values(ckpt::to_torch(conv->sn_state()->v, lay["weight_v"]));
  for (int o = 0; o < 4; ++o) {
    double a = 0, b = 0;
    for (int j = 0; j < 12; ++j) {
      a += w[size_t(o * 12 + j)] * v[size_t(j)];
      b += wt[size_t(o * 12 + j)] * vt[size_t(j)];
    }
    CHECK(a == Approx(b).epsilon(1e-5));
  }
}

TEST_CASE("checkpoint: every model round-trips through safetensors entries", "[checkpoint][cpu]") {
  for (const auto& [model, preset] : {std::pair{"sagan", "default"}, std::pair{"dcgan", "wide"}}) {
    INFO(model << " " << preset);
    models::ModelConfig c;
    c.arch = models::parse_arch(model), c.preset = models::parse_preset(preset), c.image_size = 64,
    c.ngf = c.ndf = 8;
    if (std::string(preset) == "wide") c.ngf = c.ndf = 64;  // the preset fixes its widths
    Generator g1(1), g2(2);
    models::Gan a = models::build(c, g1), b = models::build(c, g2);
    std::vector<st::Entry> e;
    ckpt::append_module(e, "G.", *a.g);
    const st::File f = st::parse(st::serialize(e));
    ckpt::load_module(f, "G.", *b.g);
    auto pa = a.g->named_parameters(), pb = b.g->named_parameters();
    REQUIRE(pa.size() == pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      INFO(pa[i].first);
      CHECK(values(pa[i].second.value()) == values(pb[i].second.value()));
    }
    auto ba = a.g->named_buffers(), bb = b.g->named_buffers();
    for (size_t i = 0; i < ba.size(); ++i) CHECK(values(ba[i].second) == values(bb[i].second));
  }
}

TEST_CASE("checkpoint: spectral norm exports and imports in both of PyTorch's naming schemes",
          "[checkpoint][cpu]") {
  CHECK(ckpt::sn_name("0.weight_orig", ckpt::SnNaming::kParametrize) ==
        "0.parametrizations.weight.original");
  CHECK(ckpt::sn_name("9.q.weight_u", ckpt::SnNaming::kParametrize) ==
        "9.q.parametrizations.weight.0._u");
  CHECK(ckpt::sn_name("9.q.weight_v", ckpt::SnNaming::kParametrize) ==
        "9.q.parametrizations.weight.0._v");
  CHECK(ckpt::sn_name("1.running_var", ckpt::SnNaming::kParametrize) == "1.running_var");
  CHECK(ckpt::sn_name("0.weight_orig", ckpt::SnNaming::kLegacy) == "0.weight_orig");
  models::ModelConfig c;
  c.arch = models::Arch::kSagan, c.image_size = 32, c.ngf = c.ndf = 8;
  Generator g1(1), g2(2);
  models::Gan a = models::build(c, g1), b = models::build(c, g2);
  std::vector<st::Entry> e;
  ckpt::append_module(e, "D.", *a.d, ckpt::SnNaming::kParametrize);
  const st::File f = st::parse(st::serialize(e));
  CHECK(f.has("D.0.parametrizations.weight.original"));
  CHECK(f.has("D.0.parametrizations.weight.0._u"));
  CHECK(f.has("D.0.parametrizations.weight.0._v"));
  CHECK(!f.has("D.0.weight_orig"));
  CHECK(f.has("D.0.bias"));
  ckpt::load_module(f, "D.", *b.d);  // the legacy names are not there: found under the others
  auto pa = a.d->named_parameters(), pb = b.d->named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].first);
    CHECK(values(pa[i].second.value()) == values(pb[i].second.value()));
  }
  auto ba = a.d->named_buffers(), bb = b.d->named_buffers();
  for (size_t i = 0; i < ba.size(); ++i) CHECK(values(ba[i].second) == values(bb[i].second));
}
