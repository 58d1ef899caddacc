// The ResNet SAGAN (models/resnet.h) against StudioGAN's modules: the PyTorch mirror's state_dicts
// load strictly (every tensor present with StudioGAN's shape, no tensor left over), the engine's
// own state_dict has exactly StudioGAN's names and shapes at 32, 64 and 128 px, and G and D
// compute StudioGAN's outputs and buffer updates (tests/fixtures/studiogan_sagan.safetensors,
// tools/scripts/fixtures/make_studiogan_fixture.py).
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "models/resnet.h"
#include "tests/harness.h"
#include "tests/trainer_helpers.h"
#include "tools/io/checkpoint.h"

using namespace gan;

namespace {

// max |a - b| / max(max |b|, 1e-3)
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0, s = 1e-3;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    s = std::max(s, std::abs(double(b[i])));
  }
  return m / s;
}

// name -> shape of m's state_dict in PyTorch's names and layouts.
std::map<std::string, std::vector<int64_t>> torch_shapes(const nn::Module& m) {
  std::vector<st::Entry> e;
  ckpt::append_module(e, "", m);
  std::map<std::string, std::vector<int64_t>> out;
  for (const st::Entry& x : e) out[x.name] = x.shape;
  return out;
}

// The fixture's tensors under `prefix`, without it.
std::set<std::string> names_under(const st::File& f, const std::string& prefix) {
  std::set<std::string> out;
  for (const st::Entry& e : f.entries)
    if (e.name.starts_with(prefix)) out.insert(e.name.substr(prefix.size()));
  return out;
}

models::ModelConfig small_config(bool conditional) {
  models::ModelConfig c;
  c.arch = models::Arch::kSaganResnet;
  c.image_size = 32, c.channels = 3, c.z_dim = 32, c.ngf = 8, c.ndf = 8;
  c.num_classes = conditional ? 10 : 0;
  return c;
}

void check_against_studiogan(Device dev, bool conditional) {
  const st::File f = st::read_file(test::fixture_path("studiogan_sagan.safetensors"));
  const std::string v = conditional ? "c." : "u.";
  Generator gen(1, dev);
  models::Gan net = models::build(small_config(conditional), gen);
  // Strict both ways: the engine's names are exactly the fixture's, and load_module finds every
  // one with StudioGAN's shape.
  for (auto [p, m] : {std::pair{"G0.", net.g.get()}, std::pair{"D0.", net.d.get()}}) {
    std::set<std::string> ours;
    for (const auto& [name, shape] : torch_shapes(*m)) ours.insert(name);
    CHECK(ours == names_under(f, v + p));
    ckpt::load_module(f, v + p, *m);
  }
  const Var z(f.tensor(v + "z", dev)), x(f.tensor(v + "x", dev));
  const Var onehot = conditional ? Var(f.tensor(v + "onehot", dev)) : Var();
  net.g->train(), net.d->train();
  Var gz, dx;
  {
    NoGradGuard ng;
    gz = net.g->forward(z, onehot);
    dx = net.d->forward(x, onehot);
  }
  // float32 here against float64 there, through 3 residual blocks, attention and batch norm
  CHECK(rel_err(gz.value().to_vector(), f.floats(v + "G.out")) < 2e-5);
  CHECK(rel_err(dx.value().to_vector(), f.floats(v + "D.out")) < 2e-5);
  // The buffers the training forward updates: power-iteration vectors, batch-norm statistics.
  for (auto [p, m] : {std::pair{"G1.", net.g.get()}, std::pair{"D1.", net.d.get()}}) {
    std::vector<st::Entry> e;
    ckpt::append_module(e, "", *m);
    int n = 0;
    for (const st::Entry& ours : e) {
      if (!f.has(v + p + ours.name)) continue;
      ++n;
      INFO(v + p + ours.name);
      const st::File one = st::parse(st::serialize({ours}));
      if (ours.name.ends_with("num_batches_tracked")) {
        CHECK(one.int64s(ours.name) == f.int64s(v + p + ours.name));
      } else {
        CHECK(rel_err(one.floats(ours.name), f.floats(v + p + ours.name)) < 2e-5);
      }
    }
    CHECK(n >= 20);
  }
  net.g->eval(), net.d->eval();
  {
    NoGradGuard ng;
    CHECK(rel_err(net.g->forward(z, onehot).value().to_vector(), f.floats(v + "G.eval")) < 2e-5);
    CHECK(rel_err(net.d->forward(x, onehot).value().to_vector(), f.floats(v + "D.eval")) < 2e-5);
  }
}

// tools/scripts/studiogan_convert.py with `args`; its exit status (stderr to `err_file`).
int convert(const std::string& args, const std::string& err_file) {
  const std::string cmd =
      fmt::format("\"{}\" \"{}\" {} > /dev/null 2> \"{}\"", test::python3(),
                  test::source_path("tools/scripts/studiogan_convert.py"), args, err_file);
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string pth(const std::string& variant, const std::string& file) {
  return fmt::format("\"{}\"",
                     test::fixture_path(fmt::format("studiogan_pth/{}/{}", variant, file)));
}

// The imported checkpoint's G and D (eval mode, stored u, v and running statistics) compute the
// fixture's eval-mode outputs: the files hold its parameters before, its buffers after the forward.
void check_imported(const std::string& path) {
  const st::File f = st::read_file(test::fixture_path("studiogan_sagan.safetensors"));
  ckpt::LoadedGan loaded = ckpt::load_gan(path, Device::CPU);
  const models::ModelConfig& c = loaded.net.config;
  CHECK(c.arch == models::Arch::kSaganResnet);
  CHECK((c.image_size == 32 && c.ngf == 8 && c.ndf == 8 && c.z_dim == 32 && c.num_classes == 10));
  CHECK(models::resnet_g_attn(c) == std::vector<int>{2});
  CHECK(models::resnet_d_attn(c) == std::vector<int>{1});
  models::Gan& net = loaded.net;
  ckpt::load_module(loaded.file, "D.", *net.d);
  net.g->eval(), net.d->eval();
  NoGradGuard ng;
  const Var onehot(f.tensor("c.onehot"));
  CHECK(rel_err(net.g->forward(Var(f.tensor("c.z")), onehot).value().to_vector(),
                f.floats("c.G.eval")) < 2e-5);
  CHECK(rel_err(net.d->forward(Var(f.tensor("c.x")), onehot).value().to_vector(),
                f.floats("c.D.eval")) < 2e-5);
}

}  // namespace

TEST_CASE("resnet: StudioGAN's checkpoint files convert both ways", "[models][resnet][cpu]") {
  test::TempDir t;
  const std::string err = t.file("stderr.txt");
  SECTION("current naming, PyTorch's zip format, with G_ema") {
    const std::string out = t.file("current.safetensors");
    REQUIRE(convert("import --G " + pth("current", "model=G-current-weights-step=1200.pth") +
                        " --D " + pth("current", "model=D-current-weights-step=1200.pth") +
                        " --G-ema " + pth("current", "model=G_ema-current-weights-step=1200.pth") +
                        " --out " + out,
                    err) == 0);
    check_imported(out);
    // G_ema's parameters are G's times 0.5 in the files (exact in float); its buffers are G's.
    ckpt::LoadedGan g = ckpt::load_gan(out, Device::CPU),
                    ema = ckpt::load_gan(out, Device::CPU, true);
    const auto gp = g.net.g->named_parameters(), ep = ema.net.g->named_parameters();
    REQUIRE(gp.size() == ep.size());
    for (size_t i = 0; i < gp.size(); ++i) {
      INFO(gp[i].first);
      std::vector<float> half = gp[i].second.value().to_vector();
      for (float& x : half) x *= 0.5f;
      CHECK(ep[i].second.value().to_vector() == half);
    }
    CHECK(st::read_file(out).meta("step") == "1200");

    // Back to StudioGAN's files and in again: the same tensors, bit for bit.
    REQUIRE(convert("export \"" + out + "\" --out-dir \"" + t.file("exported") + "\"", err) == 0);
    const std::string dir = t.file("exported") + "/";
    const std::string again = t.file("again.safetensors");
    REQUIRE(convert("import --G \"" + dir + "model=G-current-weights-step=1200.pth\" --D \"" + dir +
                        "model=D-current-weights-step=1200.pth\" --G-ema \"" + dir +
                        "model=G_ema-current-weights-step=1200.pth\" --out " + again,
                    err) == 0);
    const st::File a = st::read_file(out), b = st::read_file(again);
    REQUIRE(a.entries.size() == b.entries.size());
    for (const st::Entry& e : a.entries) {
      INFO(e.name);
      REQUIRE(b.has(e.name));
      CHECK(b.get(e.name).shape == e.shape);
      CHECK(b.get(e.name).bytes == e.bytes);
    }
  }
  SECTION("the older cBN naming (embed0 / embed1), PyTorch's pre-1.6 format, DataParallel names") {
    const std::string out = t.file("older.safetensors");
    REQUIRE(convert("import --G " + pth("older", "model=G-best-weights-step=1000.pth") + " --D " +
                        pth("older", "model=D-best-weights-step=1000.pth") + " --out " + out +
                        " --class-names a,b,c,d,e,f,g,h,i,j",
                    err) == 0);
    check_imported(out);
  }
  SECTION("bad input: one line on stderr, a non-zero exit, nothing written") {
    const std::string out = t.file("bad.safetensors");
    const auto truncate_copy = [&](const std::string& variant, const std::string& file) {
      const std::string src = test::fixture_path("studiogan_pth/" + variant + "/" + file);
      const std::string dst = t.file("cut_" + file);
      std::filesystem::copy_file(src, dst);
      std::filesystem::resize_file(dst, std::filesystem::file_size(src) / 2);
      return fmt::format("\"{}\"", dst);
    };
    const std::string d = pth("current", "model=D-current-weights-step=1200.pth");
    for (const std::string& g :
         {truncate_copy("current", "model=G-current-weights-step=1200.pth"),
          truncate_copy("older", "model=G-best-weights-step=1000.pth"),
          fmt::format("\"{}\"", test::fixture_path("studiogan_sagan.safetensors")), d,
          std::string("/nonexistent.pth")}) {
      INFO(g);
      CHECK(convert("import --G " + g + " --D " + d + " --out " + out, err) == 1);
      CHECK_FALSE(std::filesystem::exists(out));
      const std::string msg = test::read_text(err);
      CHECK(msg.starts_with("studiogan_convert: "));
      CHECK(std::count(msg.begin(), msg.end(), '\n') == 1);
    }
    CHECK(convert("import --G " + pth("current", "model=G-current-weights-step=1200.pth") +
                      " --D " + d + " --out " + out + " --class-names a,b",
                  err) == 1);
    CHECK(test::read_text(err).find("2 names for 10 classes") != std::string::npos);
  }
}

TEST_CASE("resnet: StudioGAN's conditional SAGAN loads strictly and computes its outputs",
          "[models][resnet][cpu]") {
  check_against_studiogan(Device::CPU, true);
}

TEST_CASE("resnet: StudioGAN's unconditional SAGAN loads strictly and computes its outputs",
          "[models][resnet][cpu]") {
  check_against_studiogan(Device::CPU, false);
}

TEST_CASE("resnet cuda: StudioGAN's SAGAN computes its outputs", "[models][resnet][cuda]") {
  GAN_REQUIRE_GPU();
  check_against_studiogan(Device::CUDA, true);
  check_against_studiogan(Device::CUDA, false);
}

TEST_CASE("resnet: state_dict names and shapes equal StudioGAN's at 32, 64 and 128 px",
          "[models][resnet][cpu]") {
  const st::File f = st::read_file(test::fixture_path("studiogan_sagan.safetensors"));
  const nlohmann::json shapes = nlohmann::json::parse(f.meta("shapes"));
  nlohmann::json order;  // key -> the engine's state_dict names, in its order
  for (int size : {32, 64, 128})
    for (bool cond : {true, false}) {
      models::ModelConfig c;
      c.arch = models::Arch::kSaganResnet;
      c.image_size = size, c.channels = 3, c.num_classes = cond ? 10 : 0;
      c.g_init = c.d_init = "N02";  // the cheapest: names are what counts
      Generator gen(2);
      models::Gan net = models::build(c, gen);
      for (auto [which, m] : {std::pair{"G", net.g.get()}, std::pair{"D", net.d.get()}}) {
        const std::string key = fmt::format("{}{}.{}", size, cond ? "c" : "u", which);
        INFO(key);
        std::map<std::string, std::vector<int64_t>> want;
        for (const auto& [name, shape] : shapes.at(key).items())
          want[name] = shape.get<std::vector<int64_t>>();
        CHECK(torch_shapes(*m) == want);
        std::vector<st::Entry> e;
        ckpt::append_module(e, "", *m);
        for (const st::Entry& x : e) order[key].push_back(x.name);
      }
    }
  // studiogan_convert.py export writes Adam's moments in StudioGAN's parameters() order, derived
  // from the engine's names: it must be the order of StudioGAN's own modules.
  test::TempDir t;
  std::ofstream(t.file("order.json")) << order.dump();
  const std::string cmd = fmt::format("\"{}\" \"{}\" \"{}\"", test::python3(),
                                      test::source_path("tests/scripts/studiogan_param_order.py"),
                                      t.file("order.json"));
  CHECK(std::system(cmd.c_str()) == 0);
}

TEST_CASE("resnet: initialisations as StudioGAN names them", "[models][resnet][cpu]") {
  for (const std::string init : {"ortho", "N02", "glorot"}) {
    INFO(init);
    models::ModelConfig c = small_config(true);
    c.ngf = 32;  // 128 channels: the orthogonalisation crosses its 32-row blocks
    c.g_init = c.d_init = init;
    Generator gen(3);
    models::Gan net = models::build(c, gen);
    for (const auto& [name, p] : net.g->named_parameters()) {
      const std::vector<float> w = p.value().to_vector();
      if (name.ends_with(".bias") && name.find(".bn") == std::string::npos) {
        CHECK(*std::max_element(w.begin(), w.end()) == 0.0f);
        CHECK(*std::min_element(w.begin(), w.end()) == 0.0f);
      }
      if (p.value().ndim() < 2) continue;
      const int64_t rows = p.shape()[0], cols = int64_t(w.size()) / rows;
      INFO(name << " " << rows << "x" << cols);
      if (init == "ortho") {
        // W W^T = I (rows <= cols) or W^T W = I
        const bool by_rows = rows <= cols;
        const int64_t n = by_rows ? rows : cols, len = by_rows ? cols : rows;
        double worst = 0;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j <= i; ++j) {
            double d = 0;
            for (int64_t k = 0; k < len; ++k)
              d += by_rows ? double(w[size_t(i * cols + k)]) * w[size_t(j * cols + k)]
                           : double(w[size_t(k * cols + i)]) * w[size_t(k * cols + j)];
            worst = std::max(worst, std::abs(d - (i == j ? 1.0 : 0.0)));
          }
        CHECK(worst < 5e-5);  // float32 GEMMs in the projections
      } else {
        double s2 = 0;
        float mx = 0;
        for (float x : w) s2 += double(x) * x, mx = std::max(mx, std::abs(x));
        const double sd = std::sqrt(s2 / double(w.size()));
        if (init == "N02") {
          if (w.size() >= 1000) CHECK(std::abs(sd - 0.02) < 0.002);
        } else {  // U(-a, a), a = sqrt(6 / (fan_in + fan_out)), fan = channels * receptive field
          const int64_t rf = p.value().ndim() == 4 ? p.shape()[1] * p.shape()[2] : 1;
          const double a = std::sqrt(6.0 / double(cols + rows * rf));
          CHECK(mx <= a);
          if (w.size() >= 1000) CHECK(std::abs(sd - a / std::sqrt(3.0)) < 0.1 * a);
        }
      }
    }
  }
}

// [heavy]: not in the sanitizer builds (the widest models; seconds here, minutes there).
TEST_CASE("resnet: the 128 px models build with orthogonal weights",
          "[models][resnet][cpu][heavy]") {
  // StudioGAN's default initialisation on the widest models (1024 x 9216 conv weights).
  models::ModelConfig c;
  c.arch = models::Arch::kSaganResnet;
  c.image_size = 128, c.channels = 3, c.num_classes = 10;
  Generator gen(6);
  const auto t0 = std::chrono::steady_clock::now();
  models::Gan net = models::build(c, gen);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("128 px conditional G and D with orthogonal initialisation built in " << s << " s");
  int64_t n = 0;
  for (const auto& [name, p] : net.d->named_parameters()) {
    if (!name.ends_with("blocks.5.0.conv2d2.weight_orig")) continue;
    ++n;
    const std::vector<float> w = p.value().to_vector();
    const int64_t rows = p.shape()[0], cols = int64_t(w.size()) / rows;
    REQUIRE(rows == 1024);
    REQUIRE(cols == 9216);
    // rows 0, 31, 32, 500 and 1023 (across blocks): unit length and mutually orthogonal
    const std::vector<int64_t> pick = {0, 31, 32, 500, 1023};
    for (int64_t i : pick)
      for (int64_t j : pick) {
        double d = 0;
        for (int64_t k = 0; k < cols; ++k)
          d += double(w[size_t(i * cols + k)]) * w[size_t(j * cols + k)];
        CHECK(std::abs(d - (i == j ? 1.0 : 0.0)) < 1e-5);
      }
  }
  CHECK(n == 1);
}

TEST_CASE("resnet: bad configurations and missing labels are one-line errors",
          "[models][resnet][cpu]") {
  Generator gen(4);
  models::ModelConfig c = small_config(true);
  c.image_size = 48;
  CHECK_THROWS_WITH(models::build(c, gen), Catch::Contains("32, 64 or 128 px"));
  c = small_config(true);
  c.g_attn = {4};
  CHECK_THROWS_WITH(models::build(c, gen), Catch::Contains("attention after G block 4"));
  c = small_config(true);
  c.d_init = "kaiming";
  CHECK_THROWS_WITH(models::build(c, gen), Catch::Contains("ortho, N02 or glorot"));
  models::Gan net = models::build(small_config(true), gen);
  const Var z(Tensor::zeros(Shape{2, 32}));
  CHECK_THROWS_WITH(net.g->forward(z), Catch::Contains("needs labels"));
  CHECK_THROWS_WITH(net.g->forward(z, Var(Tensor::zeros(Shape{2, 9}))),
                    Catch::Contains("expected one-hot labels (2, 10)"));
  models::Gan u = models::build(small_config(false), gen);
  CHECK_THROWS_WITH(u.g->forward(z, Var(Tensor::zeros(Shape{2, 10}))),
                    Catch::Contains("labels given to an unconditional network"));
  // No attention anywhere: {0}.
  c = small_config(false);
  c.g_attn = c.d_attn = {0};
  models::Gan plain = models::build(c, gen);
  CHECK(plain.g->attention_layers().empty());
  CHECK(plain.d->attention_layers().empty());
  CHECK(u.g->attention_layers().size() == 1);
  CHECK(u.d->attention_layers().size() == 1);
}

TEST_CASE("upsample_nearest: 2x repeats pixels and sums gradients back",
          "[upsample_nearest][cpu]") {
  std::vector<float> xs(2 * 3 * 2 * 4);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = float(i);
  const Var x(Tensor::from_vector(xs, Shape{2, 3, 2, 4}), true);
  const Var y = upsample_nearest(x, 2);
  REQUIRE(y.shape() == Shape{2, 6, 4, 4});
  const std::vector<float> ys = y.value().to_vector();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t h = 0; h < 6; ++h)
      for (int64_t w = 0; w < 4; ++w)
        for (int64_t c = 0; c < 4; ++c)
          CHECK(ys[size_t(((n * 6 + h) * 4 + w) * 4 + c)] ==
                xs[size_t(((n * 3 + h / 2) * 2 + w / 2) * 4 + c)]);
  backward(sum(y));
  for (float g : x.grad().to_vector()) CHECK(g == 4.0f);
}
