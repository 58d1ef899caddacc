// Modules: registration names and order (PyTorch's state_dict), initialisation, train/eval,
// layout conversions, spectral-norm plumbing.
#include <cmath>

#include <catch2/catch.hpp>

#include "engine/nn.h"
#include "tests/harness.h"

using namespace gan;

namespace {

std::vector<std::string> names(const std::vector<std::pair<std::string, Var>>& ps) {
  std::vector<std::string> n;
  for (const auto& p : ps) n.push_back(p.first);
  return n;
}

std::vector<std::string> names(const std::vector<std::pair<std::string, Tensor>>& bs) {
  std::vector<std::string> n;
  for (const auto& b : bs) n.push_back(b.first);
  return n;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (float v : t.to_vector()) m = std::max(m, double(std::fabs(v)));
  return m;
}

// A two-layer block in the shape of a DCGAN discriminator stage.
struct Block : nn::Module {
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
  explicit Block(Generator& gen) {
    conv = register_module("0", std::make_shared<nn::Conv2d>(3, 8, 4, 2, 1, false, gen));
    bn = register_module("1", std::make_shared<nn::BatchNorm2d>(8, gen.device()));
  }
};

}  // namespace

TEST_CASE("nn: PyTorch names, shapes and initialisation bounds", "[nn][cpu]") {
  Generator gen(1);
  nn::Linear lin(100, 16384, true, gen);
  CHECK(names(lin.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  CHECK(lin.weight().shape() == Shape{16384, 100});
  CHECK(lin.num_parameters() == 100 * 16384 + 16384);
  CHECK(max_abs(lin.weight().value()) <= 0.1);  // 1 / sqrt(100)
  CHECK(max_abs(lin.weight().value()) > 0.099);

  nn::Conv2d conv(3, 64, 4, 2, 1, false, gen);
  CHECK(names(conv.named_parameters()) == std::vector<std::string>{"weight"});
  CHECK(conv.weight().shape() == Shape{64, 4, 4, 3});  // (out, kh, kw, in)
  CHECK(max_abs(conv.weight().value()) <= 1.0 / std::sqrt(48.0));

  nn::ConvTranspose2d convt(100, 512, 4, 1, 0, false, gen);
  CHECK(convt.weight().shape() == Shape{100, 4, 4, 512});  // (in, kh, kw, out)
  CHECK(max_abs(convt.weight().value()) <= 1.0 / std::sqrt(512.0 * 16));
  CHECK(max_abs(convt.weight().value()) > 0.9 / std::sqrt(512.0 * 16));

  Block block(gen);
  CHECK(names(block.named_parameters()) ==
        std::vector<std::string>{"0.weight", "1.weight", "1.bias"});
  CHECK(names(block.named_buffers()) ==
        std::vector<std::string>{"1.running_mean", "1.running_var", "1.num_batches_tracked"});
  CHECK(block.num_parameters() == 8 * 4 * 4 * 3 + 8 + 8);
  CHECK(block.bn->weight().value().to_vector() == std::vector<float>(8, 1.f));
  CHECK(block.bn->running_var().to_vector() == std::vector<float>(8, 1.f));
  CHECK(block.training());
  block.eval();
  CHECK_FALSE(block.bn->training());
  block.train();
  CHECK(block.conv->training());
}

TEST_CASE("nn: layers compute their op", "[nn][cpu]") {
  Generator gen(2);
  nn::Conv2d conv(3, 5, 3, 1, 1, true, gen);
  Tensor xt = Tensor::empty(Shape{2, 6, 6, 3});
  gen.normal_(xt);
  Var x(xt);
  const auto a = conv(x).value().to_vector();
  const auto b = conv2d(x, conv.weight(), conv.bias(), conv.options).value().to_vector();
  CHECK(a == b);
  nn::ConvTranspose2d convt(3, 4, 4, 2, 1, false, gen);
  CHECK(convt(x).shape() == Shape{2, 12, 12, 4});
}

TEST_CASE("nn: conv weight layouts convert to and from PyTorch's", "[nn][cpu]") {
  // Ours (A, kh, kw, B) with value 1000 a + 100 kh + 10 kw + b.
  std::vector<float> v;
  for (int a = 0; a < 2; ++a)
    for (int h = 0; h < 3; ++h)
      for (int w = 0; w < 4; ++w)
        for (int b = 0; b < 5; ++b) v.push_back(float(1000 * a + 100 * h + 10 * w + b));
  Tensor ours = Tensor::from_vector(v, Shape{2, 3, 4, 5});
  Tensor torch = nn::to_torch_layout(ours);
  REQUIRE(torch.shape() == Shape{2, 5, 3, 4});
  const auto t = torch.to_vector();
  // torch[a][b][h][w] = 1000 a + 100 h + 10 w + b
  CHECK(t[((1 * 5 + 4) * 3 + 2) * 4 + 3] == 1000.f + 200.f + 30.f + 4.f);
  CHECK(t[((0 * 5 + 2) * 3 + 1) * 4 + 0] == 100.f + 2.f);
  CHECK(nn::from_torch_layout(torch).to_vector() == v);
  // v of a conv's spectral norm: ours (kh, kw, in), PyTorch's (in, kh, kw).
  Tensor sv = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, Shape{6});  // kh1 kw2 in3
  CHECK(nn::sn_v_to_torch(sv, 1, 2, 3).to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  CHECK(nn::sn_v_from_torch(nn::sn_v_to_torch(sv, 1, 2, 3), 1, 2, 3).to_vector() == sv.to_vector());
}

TEST_CASE("nn: spectral norm renames the weight and normalises it", "[nn][cpu]") {
  Generator gen(3);
  auto conv = nn::spectral_norm(std::make_shared<nn::Conv2d>(4, 6, 3, 1, 1, true, gen), gen);
  CHECK(names(conv->named_parameters()) == std::vector<std::string>{"weight_orig", "bias"});
  CHECK(names(conv->named_buffers()) == std::vector<std::string>{"weight_u", "weight_v"});
  const auto u = conv->sn_state()->u.to_vector();
  double n2 = 0;
  for (float x : u) n2 += double(x) * x;
  CHECK(u.size() == 6);
  CHECK(conv->sn_state()->v.numel() == 36);
  CHECK(n2 == Approx(1.0).epsilon(1e-6));

  Tensor xt = Tensor::empty(Shape{1, 5, 5, 4});
  gen.normal_(xt);
  Var x(xt);
  Var y;
  for (int i = 0; i < 30; ++i) y = conv->forward(x);  // one power iteration per forward
  const double sigma = conv->sn_state()->sigma.item();
  CHECK(sigma > 0);
  // The output is the conv with W / sigma.
  Tensor wsn = Tensor::empty_like(conv->weight().value());
  {
    const auto w = conv->weight().value().to_vector();
    std::vector<float> s(w.size());
    for (size_t i = 0; i < w.size(); ++i) s[i] = float(w[i] / sigma);
    wsn = Tensor::from_vector(s, conv->weight().shape());
  }
  const auto want = conv2d(x, Var(wsn), conv->bias(), conv->options).value();
  CHECK(test::max_rel_error(y.value(), want) < 1e-5);

  // A group computes both layers' weights in one op; each layer's next forward uses it.
  auto conv2 = nn::spectral_norm(std::make_shared<nn::Conv2d>(6, 2, 1, 1, 0, false, gen), gen);
  nn::SpectralNormGroup group;
  group.add(conv.get());
  group.add(conv2.get());
  group.run(true);
  Var z = (*conv2)((*conv)(x));
  CHECK(z.shape() == Shape{1, 5, 5, 2});
  tape().clear();
}
