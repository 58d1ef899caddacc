// gan_sample: images from a gan_train checkpoint: a grid or N single PNGs, seeded; with
// --attention-maps, for a few query pixels, the generator's attention overlaid on the sample.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "models/gan.h"
#include "tools/io/checkpoint.h"
#include "tools/io/image.h"
#include "tools/io/safetensors.h"
#include "tools/programs/cli.h"

namespace fs = std::filesystem;
using namespace gan;

namespace {

struct Args {
  std::string checkpoint, out = "samples";
  int64_t n = 64;
  int cols = 8;
  uint64_t seed = 0;
  bool singles = false, ema = false, attention = false;
  std::string cls;          // a conditional G: every sample of this class (a number or a name;
                            // empty: every class in turn)
  bool class_grid = false;  // a conditional G: one row per class, the same noise down each column
  std::string device = "auto";
  std::string math = "fp32";       // engine/device.h MathMode
  std::string precision = "fp32";  // engine/device.h Precision
  std::string dump;  // safetensors file receiving z and the images (tools/scripts/torch_check.py)
  std::string export_torch;          // G (or G_ema) and D as PyTorch state dicts, then stop
  std::string sn_naming = "legacy";  // legacy | parametrize (tools/io/checkpoint.h)
};

// --class K: a label in [0, classes), or a class name (exact, then case-insensitive).
int class_index(const std::string& s, int classes, const std::vector<std::string>& names) {
  if (!s.empty() &&
      std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) {
    const long k = s.size() <= 7 ? std::stol(s) : long(classes);
    GAN_CHECK(k < classes,
              fmt::format("gan_sample: --class {}: the model has classes 0 to {}", s, classes - 1));
    return int(k);
  }
  auto lower = [](std::string x) {
    for (char& c : x) c = char(std::tolower(static_cast<unsigned char>(c)));
    return x;
  };
  for (size_t k = 0; k < names.size(); ++k)
    if (names[k] == s) return int(k);
  for (size_t k = 0; k < names.size(); ++k)
    if (lower(names[k]) == lower(s)) return int(k);
  std::string known;
  for (size_t k = 0; k < names.size(); ++k) known += (k ? ", " : "") + names[k];
  throw Error(names.empty() ? fmt::format("gan_sample: --class {}: give a number from 0 to {} (the "
                                          "checkpoint keeps no class names)",
                                          s, classes - 1)
                            : fmt::format("gan_sample: --class {}: no such class (the classes: {})",
                                          s, known));
}

int run(const Args& a) {
  Device dev = Device::CPU;
  if (a.device == "cuda" || (a.device == "auto" && cuda_available())) dev = Device::CUDA;
  set_math_mode(parse_math_mode(a.math));
  set_precision(parse_precision(a.precision));
  ckpt::LoadedGan loaded = ckpt::load_gan(a.checkpoint, dev, a.ema);
  const std::string& path = loaded.path;
  const st::File& f = loaded.file;
  models::Gan& net = loaded.net;
  if (!a.export_torch.empty()) {
    // The state dicts as PyTorch's modules hold them ("G." / "D." prefixes, PyTorch layouts),
    // with spectral norm in the chosen naming scheme.
    ckpt::load_module(f, "D.", *net.d);
    const ckpt::SnNaming naming =
        a.sn_naming == "parametrize" ? ckpt::SnNaming::kParametrize : ckpt::SnNaming::kLegacy;
    std::vector<st::Entry> entries;
    ckpt::append_module(entries, "G.", *net.g, naming);
    ckpt::append_module(entries, "D.", *net.d, naming);
    st::write_file(a.export_torch, entries,
                   {{"config", f.meta("config")},
                    {"sn_naming", a.sn_naming},
                    {"generator", a.ema ? "G_ema" : "G"}});
    std::printf("gan_sample: G%s and D (%s spectral-norm names) in %s\n", a.ema ? " (EMA)" : "",
                a.sn_naming.c_str(), a.export_torch.c_str());
    return 0;
  }
  net.g->eval();
  GAN_CHECK(!a.attention || !net.g->attention_layers().empty(),
            "gan_sample: --attention-maps: this generator has no attention");
  GAN_CHECK(!a.attention || net.g->sequential(),
            "gan_sample: --attention-maps: the sagan and dcgan models only");
  const int classes = net.g->num_classes();
  GAN_CHECK(classes > 0 || (a.cls.empty() && !a.class_grid),
            fmt::format("gan_sample: --class and --class-grid need a conditional model ({} is not)",
                        path));
  GAN_CHECK(!a.class_grid || a.cls.empty(),
            "gan_sample: --class-grid draws every class; drop --class");
  const std::vector<std::string>& names = net.config.class_names;
  const int cls = a.cls.empty() ? -1 : class_index(a.cls, classes, names);
  if (a.class_grid && !names.empty()) {
    std::string legend;
    for (int c = 0; c < classes; ++c) legend += fmt::format("{}{} {}", c ? ", " : "", c, names[c]);
    std::printf("gan_sample: rows: %s\n", legend.c_str());
  }

  Generator gen(a.seed, dev);
  const int64_t n = a.class_grid ? int64_t(classes) * a.cols : a.n;
  Tensor z = Tensor::empty(Shape{a.class_grid ? int64_t(a.cols) : n, net.z_dim}, dev);
  gen.normal_(z);
  std::vector<int32_t> labels;
  if (a.class_grid) {  // row c: class c; column j: noise z_j
    const std::vector<float> zc = z.to_vector();
    std::vector<float> zg;
    for (int c = 0; c < classes; ++c) {
      zg.insert(zg.end(), zc.begin(), zc.end());
      labels.insert(labels.end(), size_t(a.cols), c);
    }
    z = Tensor::from_vector(zg, Shape{n, net.z_dim}).to(dev);
  } else if (classes > 0) {
    for (int64_t i = 0; i < n; ++i) labels.push_back(cls >= 0 ? cls : int32_t(i % classes));
  }
  NoGradGuard ng;
  const Var zin = models::latent_input(net, Var(z));
  const Tensor imgs =
      net.g->forward(zin, classes > 0 ? Var(models::one_hot(labels, classes, dev)) : Var()).value();
  if (!a.dump.empty()) {
    st::write_file(a.dump, {st::from_tensor("z", z), st::from_tensor("images", imgs)},
                   {{"checkpoint", path}});
    std::printf("gan_sample: z and images in %s\n", a.dump.c_str());
  }
  if (a.singles) {
    fs::create_directories(a.out);
    for (int64_t i = 0; i < n; ++i)
      img::write_png_atomic((fs::path(a.out) / fmt::format("sample_{:05d}.png", i)).string(),
                            img::tensor_image(imgs, i));
    std::printf("gan_sample: %lld images in %s\n", (long long)n, a.out.c_str());
  } else {
    std::string file = a.out;
    const std::string ext = fs::path(file).extension().string();
    const bool jpeg = ext == ".jpg" || ext == ".jpeg";
    if (ext != ".png" && !jpeg) {
      fs::create_directories(file);
      file = (fs::path(file) / "grid.png").string();
    }
    if (jpeg)
      img::write_jpeg(file, img::make_grid(imgs, a.cols));
    else
      img::write_png_atomic(file, img::make_grid(imgs, a.cols));
    std::printf("gan_sample: %lld samples in %s\n", (long long)n, file.c_str());
  }

  if (a.attention) {
    const std::string dir =
        fs::path(a.out).extension() == ".png" ? fs::path(a.out).parent_path().string() : a.out;
    fs::create_directories(dir.empty() ? "." : dir);
    // Walk the layers once more, stopping at each attention block to read its softmax rows.
    net.g->run_spectral_norm();
    Var h = zin;
    nn::Sequential& seq = net.g->net();
    int block = 0;
    const int64_t show = std::min<int64_t>(n, 4);
    for (size_t li = 0; li < seq.size(); ++li) {
      if (auto* at = dynamic_cast<models::SelfAttention*>(&seq[li])) {
        const int64_t hh = h.shape()[1], ww = h.shape()[2];
        const int64_t kh = at->official() ? hh / 2 : hh, kw = at->official() ? ww / 2 : ww;
        // Four query pixels: the centres of the four quadrants.
        const std::vector<std::pair<int64_t, int64_t>> qs = {
            {hh / 4, ww / 4}, {hh / 4, 3 * ww / 4}, {3 * hh / 4, ww / 4}, {3 * hh / 4, 3 * ww / 4}};
        std::vector<int64_t> qidx;
        for (auto [y, x] : qs) qidx.push_back(y * ww + x);
        const std::vector<float> rows = at->attention_map(h, qidx);  // (B, 4, kh*kw)
        std::vector<img::Image> tiles;
        for (int64_t s = 0; s < show; ++s) {
          const img::Image sample = img::tensor_image(imgs, s);
          for (size_t q = 0; q < qs.size(); ++q) {
            const float* r = rows.data() + (s * int64_t(qs.size()) + int64_t(q)) * kh * kw;
            // The query cell in key coordinates.
            const int qy = int(qs[q].first * kh / hh), qx = int(qs[q].second * kw / ww);
            tiles.push_back(img::overlay_heatmap(sample, std::vector<float>(r, r + kh * kw),
                                                 int(kh), int(kw), qy, qx));
          }
        }
        const std::string file =
            (fs::path(dir.empty() ? "." : dir) / fmt::format("attention_{}.png", block)).string();
        img::write_png_atomic(file, img::tile(tiles, int(qs.size())));
        std::printf(
            "gan_sample: attention of block %d (%lldx%lld, %s keys) for %lld samples x 4 "
            "query pixels in %s\n",
            block, (long long)hh, (long long)ww, at->official() ? "pooled" : "all", (long long)show,
            file.c_str());
        ++block;
      }
      h = seq[li].forward(h);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"gan_sample: samples from a gan_train checkpoint"};
  app.add_option("checkpoint", a.checkpoint, "checkpoint file or run directory")->required();
  app.add_option("--out", a.out, "a .png (or .jpg) for the grid, or a directory")
      ->capture_default_str();
  app.add_option("-n,--n", a.n, "number of samples")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(4096)));
  app.add_option("--cols", a.cols, "grid columns")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--seed", a.seed, "latent noise seed")->capture_default_str();
  app.add_flag("--singles", a.singles, "write N single PNGs instead of a grid");
  app.add_option("--class", a.cls,
                 "a conditional model: every sample of class K, a number or one of the names the "
                 "checkpoint keeps (default: every class in turn, sample i of class i mod "
                 "classes)");
  app.add_flag("--class-grid", a.class_grid,
               "a conditional model: one row per class and --cols columns, the same noise down "
               "each column (-n is ignored)");
  app.add_flag("--ema", a.ema, "use the EMA generator (runs trained with --ema)");
  app.add_flag("--attention-maps", a.attention,
               "also write, per attention block, its attention for 4 query pixels of 4 samples");
  app.add_option("--dump", a.dump,
                 "also write z and the images (NHWC) to this safetensors file (for "
                 "tools/scripts/torch_check.py)");
  app.add_option("--export-torch", a.export_torch,
                 "write G (or the EMA G) and D as PyTorch state dicts to this safetensors file, "
                 "instead of sampling");
  app.add_option("--sn-naming", a.sn_naming,
                 "spectral-norm names of --export-torch: legacy (nn.utils.spectral_norm: "
                 "weight_orig/_u/_v) or parametrize (nn.utils.parametrizations.spectral_norm)")
      ->capture_default_str()
      ->check(CLI::IsMember({"legacy", "parametrize"}));
  app.add_option("--device", a.device, "auto, cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--math", a.math,
                 "GPU float32 math: fp32 (strict), fp32-tc (3xTF32 attention), tf32")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "fp32-tc", "tf32"}));
  app.add_option("--precision", a.precision,
                 "fp32, or bf16 (convolutions, GEMMs and attention on bf16 operands, float32 "
                 "accumulation)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "bf16"}));
  if (auto rc = cli::parse(app, argc, argv, "gan_sample")) return *rc;
  try {
    return run(a);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    std::fprintf(stderr, "%s%s\n",
                 msg.rfind("gan_sample:", 0) == 0 ? "" : "gan_sample: ", msg.c_str());
    return 1;
  }
}
