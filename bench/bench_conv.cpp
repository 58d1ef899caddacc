// bench_conv: the per-geometry convolution table's engine side. For each convolution geometry
// (read from cuDNN plan logs, e.g. gan_bench's stderr with GAN_LOG_KERNELS=1, or given with
// --geometry), each math mode (strict float32, TF32), each layout (NHWC, the engine's; NCHW,
// PyTorch's default) and each direction, every algorithm cuDNN's heuristics list is timed
// (kernels/conv_cudnn.h, conv_time_candidates: CUDA events, the median of 3 runs after a
// warm-up). One JSON line per (geometry, mode, layout, direction): the heuristics' first pick
// and first deterministic pick, the fastest of any and of the deterministic ones.
// bench/conv_table.py joins it with PyTorch's times for the same convolutions
// (bench/torch_gan_bench.py --conv) into docs/gan_bench.md's per-geometry table.
#include <cstdio>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "kernels/conv.h"
#include "kernels/conv_cudnn.h"

namespace {

using gan::kernels::ConvGeom;

// "x (N, H, W, C) w (K, R, S, C) stride AxB pad AxB dil AxB" anywhere in a line.
const std::regex& geometry_re() {
  static const std::regex re(
      R"(x \((\d+), (\d+), (\d+), (\d+)\) w \((\d+), (\d+), (\d+), (\d+)\) stride (\d+)x(\d+) )"
      R"(pad (\d+)x(\d+) dil (\d+)x(\d+))");
  return re;
}

bool parse_geometry(const std::string& line, ConvGeom& g) {
  std::smatch m;
  if (!std::regex_search(line, m, geometry_re())) return false;
  auto v = [&](int i) { return std::stoll(m[i].str()); };
  g.n = v(1), g.h = v(2), g.w = v(3), g.c = v(4), g.k = v(5), g.r = v(6), g.s = v(7);
  g.stride_h = int(v(9)), g.stride_w = int(v(10)), g.pad_h = int(v(11)), g.pad_w = int(v(12));
  g.dil_h = int(v(13)), g.dil_w = int(v(14));
  g.p = (g.h + 2 * g.pad_h - g.dil_h * (g.r - 1) - 1) / g.stride_h + 1;
  g.q = (g.w + 2 * g.pad_w - g.dil_w * (g.s - 1) - 1) / g.stride_w + 1;
  return true;
}

std::string text(const ConvGeom& g) {
  return fmt::format("x ({}, {}, {}, {}) w ({}, {}, {}, {}) stride {}x{} pad {}x{} dil {}x{}", g.n,
                     g.h, g.w, g.c, g.k, g.r, g.s, g.c, g.stride_h, g.stride_w, g.pad_h, g.pad_w,
                     g.dil_h, g.dil_w);
}

nlohmann::json pick(const gan::kernels::ConvTiming* t) {
  if (!t) return nullptr;
  return {{"algo", t->candidate.algo},
          {"math", t->candidate.math},
          {"deterministic", t->candidate.deterministic},
          {"workspace", t->candidate.workspace},
          {"ms", t->ms}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_conv: every cuDNN algorithm of each convolution, both layouts and modes"};
  std::vector<std::string> files, geometries;
  std::string modes = "fp32,tf32", layouts = "nhwc,nchw";
  app.add_option("--from", files, "files with cuDNN plan-log lines (gan_bench's stderr)");
  app.add_option("--geometry", geometries,
                 "a geometry: 'x (N, H, W, C) w (K, R, S, C) stride 1x1 pad 0x0 dil 1x1'");
  app.add_option("--modes", modes, "fp32, tf32")->capture_default_str();
  app.add_option("--layouts", layouts, "nhwc, nchw")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    std::vector<std::string> lines = geometries;
    for (const std::string& f : files) {
      std::ifstream in(f);
      GAN_CHECK(in.good(), "bench_conv: cannot read " + f);
      for (std::string line; std::getline(in, line);) lines.push_back(line);
    }
    std::vector<ConvGeom> geoms;
    std::set<std::string> seen;
    for (const std::string& line : lines) {
      ConvGeom g;
      if (!parse_geometry(line, g)) continue;
      if (seen.insert(text(g)).second) geoms.push_back(g);
    }
    GAN_CHECK(!geoms.empty(), "bench_conv: no geometry given (--from FILE or --geometry)");
    for (const std::string& mode : {std::string("fp32"), std::string("tf32")}) {
      if (modes.find(mode) == std::string::npos) continue;
      for (const ConvGeom& g : geoms) {
        for (const std::string& layout : {std::string("nhwc"), std::string("nchw")}) {
          if (layouts.find(layout) == std::string::npos) continue;
          for (auto dir :
               {gan::kernels::ConvDirection::kForward, gan::kernels::ConvDirection::kBackwardData,
                gan::kernels::ConvDirection::kBackwardFilter}) {
            gan::kernels::CudnnConvContext ctx = gan::cuda::conv_context();
            ctx.tf32 = mode == "tf32";
            const auto ts = gan::kernels::conv_time_candidates(ctx, g, layout == "nchw", dir);
            const gan::kernels::ConvTiming *heur = nullptr, *heur_det = nullptr, *best = nullptr,
                                           *best_det = nullptr;
            for (const auto& t : ts) {
              if (t.ms < 0) continue;
              if (!heur) heur = &t;
              if (!heur_det && t.candidate.deterministic) heur_det = &t;
              if (!best || t.ms < best->ms) best = &t;
              if (t.candidate.deterministic && (!best_det || t.ms < best_det->ms)) best_det = &t;
            }
            nlohmann::json all = nlohmann::json::array();
            for (const auto& t : ts) all.push_back(pick(&t));
            const nlohmann::json j = {
                {"geometry", text(g)},     {"mode", mode},
                {"layout", layout},        {"direction", gan::kernels::conv_direction_name(dir)},
                {"heuristic", pick(heur)}, {"heuristic_deterministic", pick(heur_det)},
                {"best", pick(best)},      {"best_deterministic", pick(best_det)},
                {"candidates", all}};
            std::printf("%s\n", j.dump().c_str());
            std::fflush(stdout);
          }
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
