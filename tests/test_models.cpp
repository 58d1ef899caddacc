// Model definitions: parameter counts (PyTorch's numbers for the same modules, as
// tools/scripts/torch_check.py builds them), state_dict names, output shapes, the CPU forward.
#include <catch2/catch.hpp>

#include "models/gan.h"
#include "tests/harness.h"

using namespace gan;

namespace {

models::Gan make(const std::string& model, const std::string& preset, int size, int channels = 3,
                 bool official = false) {
  Generator gen(5);
  models::ModelConfig c;
  c.arch = models::parse_arch(model), c.preset = models::parse_preset(preset), c.image_size = size,
  c.channels = channels;
  c.official_attention = official;
  return models::build(c, gen);
}

int64_t bytes_with_buffers(nn::Module& m) {
  int64_t n = 0;
  for (auto& [name, p] : m.named_parameters()) n += p.value().numel();
  for (auto& [name, b] : m.named_buffers()) n += b.numel();
  return n * 4;
}

}  // namespace

TEST_CASE("models: parameter counts match PyTorch's", "[models][cpu]") {
  struct Want {
    const char *model, *preset;
    int size;
    int64_t g, d;
  };
  for (const Want& w : {Want{"dcgan", "default", 32, 1068928, 663296},
                        Want{"dcgan", "default", 64, 3576704, 2765568},
                        Want{"dcgan", "wide", 64, 12672768, 11036161},
                        Want{"sagan", "default", 32, 1209909, 765859},
                        Want{"sagan", "default", 64, 3832885, 3175299},
                        Want{"sagan", "default", 128, 13273141, 12802883}}) {
    INFO(w.model << " " << w.preset << " " << w.size);
    const models::Gan g = make(w.model, w.preset, w.size);
    CHECK(g.g->num_parameters() == w.g);
    CHECK(g.d->num_parameters() == w.d);
  }
  // The study's 3.4x: SAGAN's two networks with buffers are 28 MB of float32.
  models::Gan s = make("sagan", "default", 64);
  const double mb = double(bytes_with_buffers(*s.g) + bytes_with_buffers(*s.d)) / 1e6;
  CHECK(mb > 28.0);
  CHECK(mb < 28.3);
}

TEST_CASE("models: state_dict names follow PyTorch's Sequential", "[models][cpu]") {
  models::Gan s = make("sagan", "default", 64);
  std::vector<std::string> names;
  for (auto& [n, p] : s.g->named_parameters()) names.push_back(n);
  REQUIRE(names.size() > 6);
  CHECK(names[0] == "0.weight_orig");
  CHECK(names[1] == "0.bias");
  CHECK(names[2] == "1.weight");  // BatchNorm2d
  std::vector<std::string> buffers;
  for (auto& [n, b] : s.g->named_buffers()) buffers.push_back(n);
  CHECK(buffers[0] == "0.weight_u");
  CHECK(buffers[1] == "0.weight_v");
  CHECK(buffers[2] == "1.running_mean");
  // Attention after the second up-sampling stage (index 9: 3 layers + 2 stages of 3).
  bool has_attn = false;
  for (const auto& n : names) has_attn = has_attn || n == "9.q.weight_orig" || n == "9.gamma";
  CHECK(has_attn);
  CHECK(s.g->spectral_norm_names().size() == 4 + 2 * 3);  // 4 convs, q/k/v of 2 blocks
  CHECK(s.d->spectral_norm_names().size() == 4 + 2 * 3);
  CHECK(s.g->attention_layers().size() == 2);
}

TEST_CASE("models: output shapes on the cpu", "[models][cpu]") {
  for (const auto& [model, preset, size, ch, official] :
       {std::tuple{"sagan", "default", 32, 1, false}, std::tuple{"sagan", "default", 32, 3, true},
        std::tuple{"dcgan", "default", 32, 1, false}, std::tuple{"dcgan", "wide", 64, 3, false}}) {
    INFO(model << " " << preset << " " << size << " official " << official);
    models::Gan g = make(model, preset, size, ch, official);
    Generator gen(9);
    Tensor z = Tensor::empty(Shape{3, g.z_dim});
    gen.normal_(z);
    Var img = g.g->forward(models::latent_input(g, Var(z)));
    CHECK(img.shape() == Shape{3, size, size, ch});
    for (float v : img.value().to_vector()) REQUIRE(std::fabs(v) <= 1.f);
    Var logits = g.d->forward(img);
    CHECK(logits.value().numel() == 3);
    tape().clear();
  }
}
