// Convolutions on the CPU through oneDNN: NHWC activations as they are, (K, R, S, C) filters
// ("ohwi") reordered to and from the layout each implementation prefers (blocked for the JIT
// kernels). One plan per geometry, direction and data type, made on first use and kept:
//  - chosen by measurement (the default): every implementation oneDNN offers for the problem
//    (its reference loops excepted) runs on zero-filled scratch buffers, one warm-up then the
//    median of 3, filter reorders included; the fastest wins (brgconv and the older JIT kernels
//    differ by up to 2x on GAN layers, either way). Choices are kept in a plan cache on disk
//    (set_plan_cache), keyed by ISA, oneDNN version, thread count and problem, so a second run
//    starts without timing and picks the same kernels;
//  - deterministic (set_deterministic, gan_train --deterministic): oneDNN's first implementation,
//    untimed, so two runs on the same machine and thread count are bitwise equal even without
//    the cache.
// Scratchpads are the backend's (user mode): a step after the first allocates nothing here.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <tuple>

#include <fmt/format.h>

#include "kernels/cpu/dnnl_util.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/plan_log.h"

namespace gan::kernels::cpu {

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

enum class Dir { kForward, kBackwardData, kBackwardFilter };
const char* dir_name(Dir d) {
  return d == Dir::kForward        ? "forward"
         : d == Dir::kBackwardData ? "backward data"
                                   : "backward filter";
}

// One implementation of a direction with its filter reorders.
struct Plan {
  dnnl::primitive prim;
  memory::desc src, wei, dst;  // the primitive's (diff_src / diff_wei / diff_dst as they apply)
  memory::desc wei_user;       // (K, R, S, C) float32 or bf16
  bool reorder_wei = false;
  dnnl::primitive to_prim, to_user, to_user_sum;  // filter reorders
  size_t scratch = 0;
  std::string impl;
};

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int, int, int, int, int, int, int, int>;

Key key_of(const ConvGeom& g, Dir dir, bool bf16) {
  return Key{g.n,        g.h,        g.w,     g.c,     g.k,     g.r,     g.s,      g.p,      g.q,
             g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, int(dir), int(bf16)};
}

std::string describe(const ConvGeom& g, Dir dir, bool bf16) {
  return fmt::format(
      "conv {} {}x (N, H, W, C) = ({}, {}, {}, {}) w (K, R, S, C) = ({}, {}, {}, {}) stride {}x{} "
      "pad {}x{} dil {}x{}",
      dir_name(dir), bf16 ? "bf16 " : "", g.n, g.h, g.w, g.c, g.k, g.r, g.s, g.c, g.stride_h,
      g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w);
}

// The right padding that gives exactly the output size P for input size H (oneDNN checks
// (H + pl + pr - ext) / s + 1 == P, ext the dilated filter extent); the smallest one that is not
// negative when the floor allows it.
int64_t pad_right(int64_t H, int64_t P, int64_t R, int64_t stride, int64_t pad, int64_t dil) {
  const int64_t ext = (R - 1) * dil + 1;
  int64_t pr = (P - 1) * stride + ext - H - pad;
  if (pr < 0) pr = std::min<int64_t>(0, pr + stride - 1);
  return pr;
}

// ---- the plan cache on disk: lines "key<TAB>implementation" ----

struct DiskCache {
  std::string path;
  bool chosen = false, loaded = false;
  std::map<std::string, std::string> entries;
};
DiskCache g_disk;

std::string default_cache_path() {
  if (const char* e = std::getenv("GAN_CPU_PLAN_CACHE")) return std::string(e) == "off" ? "" : e;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::string(x) + "/gan/cpu_plans.tsv";
  if (const char* h = std::getenv("HOME"); h && *h)
    return std::string(h) + "/.cache/gan/cpu_plans.tsv";
  return "";
}

void load_disk() {
  if (!g_disk.chosen) {
    g_disk.path = default_cache_path();
    g_disk.chosen = true;
  }
  if (g_disk.loaded) return;
  g_disk.loaded = true;
  g_disk.entries.clear();
  if (g_disk.path.empty()) return;
  std::ifstream in(g_disk.path);
  std::string line;
  while (std::getline(in, line)) {
    const size_t t = line.find('\t');
    if (t != std::string::npos) g_disk.entries[line.substr(0, t)] = line.substr(t + 1);
  }
}

void store_disk(const std::string& key, const std::string& impl) {
  g_disk.entries[key] = impl;
  if (g_disk.path.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(g_disk.path).parent_path(), ec);
  // One short line per append: concurrent writers (ranks, test processes) interleave whole lines.
  if (FILE* f = std::fopen(g_disk.path.c_str(), "a")) {
    std::fprintf(f, "%s\t%s\n", key.c_str(), impl.c_str());
    std::fclose(f);
  }
}

std::string disk_key(const ConvGeom& g, Dir dir, bool bf16) {
  const dnnl_version_t* v = dnnl_version();
  return fmt::format(
      "onednn{}.{}.{}|isa{}|threads{}|conv|{}|{}|{}x{}x{}x{}|{}x{}x{}|{}x{}|{}x{}|{}x{}|{}x{}",
      v->major, v->minor, v->patch, int(dnnl_get_effective_cpu_isa()), num_threads(), int(dir),
      bf16 ? "bf16" : "f32", g.n, g.h, g.w, g.c, g.k, g.r, g.s, g.p, g.q, g.stride_h, g.stride_w,
      g.pad_h, g.pad_w, g.dil_h, g.dil_w);
}

// ---- plans ----

// The plan of the implementation pd currently points at.
std::unique_ptr<Plan> build(const dnnl::primitive_desc& pd, Dir dir, const memory::desc& wei_user) {
  auto& eng = dnnl_util::engine();
  auto p = std::make_unique<Plan>();
  p->wei_user = wei_user;
  p->impl = pd.impl_info_str();
  p->scratch = pd.scratchpad_desc().get_size();
  p->prim = dnnl::primitive(pd);
  if (dir == Dir::kForward) {
    p->src = pd.src_desc();
    p->wei = pd.weights_desc();
    p->dst = pd.dst_desc();
  } else if (dir == Dir::kBackwardData) {
    p->src = pd.diff_src_desc();
    p->wei = pd.weights_desc();
    p->dst = pd.diff_dst_desc();
  } else {
    p->src = pd.src_desc();
    p->wei = pd.diff_weights_desc();
    p->dst = pd.diff_dst_desc();
  }
  p->reorder_wei = p->wei != p->wei_user;
  if (p->reorder_wei) {
    if (dir == Dir::kBackwardFilter) {
      p->to_user = dnnl::reorder(dnnl::reorder::primitive_desc(eng, p->wei, eng, p->wei_user));
      dnnl::post_ops sum;
      sum.append_sum(1.0f);
      dnnl::primitive_attr acc;
      acc.set_post_ops(sum);
      p->to_user_sum =
          dnnl::reorder(dnnl::reorder::primitive_desc(eng, p->wei, eng, p->wei_user, acc));
    } else {
      p->to_prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng, p->wei_user, eng, p->wei));
    }
  }
  return p;
}

// Runs one direction with plan p: src = x (forward, filter) or dx (data), dst = y or dy; wei the
// filter (user layout), which the filter gradient writes (added to with accumulate).
void execute(const Plan& p, const ConvGeom& g, Dir dir, const void* src, const void* wei,
             const void* dst, bool accumulate) {
  auto& eng = dnnl_util::engine();
  memory src_m(p.src, eng, const_cast<void*>(src)), dst_m(p.dst, eng, const_cast<void*>(dst));
  memory user_w(p.wei_user, eng, const_cast<void*>(wei));
  memory prim_w = user_w;
  if (p.reorder_wei || (dir == Dir::kBackwardFilter && accumulate))
    prim_w = memory(p.wei, eng, dnnl_util::weights(0).get(p.wei.get_size()));
  memory scratch(dnnl::memory::desc({int64_t(p.scratch)}, dt::u8, tag::x), eng,
                 dnnl_util::scratchpad().get(p.scratch));
  if (dir == Dir::kForward) {
    if (p.reorder_wei)
      dnnl_util::execute(p.to_prim, {{DNNL_ARG_FROM, user_w}, {DNNL_ARG_TO, prim_w}});
    dnnl_util::execute(p.prim, {{DNNL_ARG_SRC, src_m},
                                {DNNL_ARG_WEIGHTS, prim_w},
                                {DNNL_ARG_DST, dst_m},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
  } else if (dir == Dir::kBackwardData) {
    if (p.reorder_wei)
      dnnl_util::execute(p.to_prim, {{DNNL_ARG_FROM, user_w}, {DNNL_ARG_TO, prim_w}});
    dnnl_util::execute(p.prim, {{DNNL_ARG_DIFF_SRC, src_m},
                                {DNNL_ARG_WEIGHTS, prim_w},
                                {DNNL_ARG_DIFF_DST, dst_m},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
  } else {
    dnnl_util::execute(p.prim, {{DNNL_ARG_SRC, src_m},
                                {DNNL_ARG_DIFF_WEIGHTS, prim_w},
                                {DNNL_ARG_DIFF_DST, dst_m},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
    if (p.reorder_wei) {
      dnnl_util::execute(accumulate ? p.to_user_sum : p.to_user,
                         {{DNNL_ARG_FROM, prim_w}, {DNNL_ARG_TO, user_w}});
    } else if (accumulate) {  // the same layout: add the result
      float* o = static_cast<float*>(const_cast<void*>(wei));
      const float* r = static_cast<const float*>(prim_w.get_data_handle());
      for (int64_t i = 0; i < g.w_numel(); ++i) o[i] += r[i];
    }
  }
}

// Milliseconds of one call of p (a warm-up, then the median of 3) on zero-filled buffers.
double time_plan(const Plan& p, const ConvGeom& g, Dir dir) {
  auto buffer = [](size_t bytes) {
    void* b = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    std::memset(b, 0, (bytes + 63) / 64 * 64 + 64);
    return std::unique_ptr<void, decltype(&std::free)>(b, &std::free);
  };
  auto src = buffer(p.src.get_size()), dst = buffer(p.dst.get_size()),
       wei = buffer(p.wei_user.get_size());
  double ms[3];
  execute(p, g, dir, src.get(), wei.get(), dst.get(), false);
  for (double& m : ms) {
    const auto t0 = std::chrono::steady_clock::now();
    execute(p, g, dir, src.get(), wei.get(), dst.get(), false);
    m = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  std::sort(ms, ms + 3);
  return ms[1];
}

std::unique_ptr<Plan> make_plan(const ConvGeom& g, Dir dir, bool bf16) {
  auto& eng = dnnl_util::engine();
  const dt in = bf16 ? dt::bf16 : dt::f32;
  const memory::dims src_dims{g.n, g.c, g.h, g.w}, wei_dims{g.k, g.c, g.r, g.s},
      dst_dims{g.n, g.k, g.p, g.q};
  const memory::dims strides{g.stride_h, g.stride_w}, dil{g.dil_h - 1, g.dil_w - 1},
      pl{g.pad_h, g.pad_w},
      pr{pad_right(g.h, g.p, g.r, g.stride_h, g.pad_h, g.dil_h),
         pad_right(g.w, g.q, g.s, g.stride_w, g.pad_w, g.dil_w)};
  // Operands' data types per direction: bf16 inputs, float32 results.
  const dt src_t = dir == Dir::kBackwardData ? dt::f32 : in;
  const dt dst_t = dir == Dir::kForward ? dt::f32 : in;
  const dt wei_t = dir == Dir::kBackwardFilter ? dt::f32 : in;
  const memory::desc src_md(src_dims, src_t, tag::nhwc), dst_md(dst_dims, dst_t, tag::nhwc),
      wei_any(wei_dims, wei_t, tag::any), wei_user(wei_dims, wei_t, tag::ohwi);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  // The forward descriptor is also the hint of the backward ones.
  const memory::desc fsrc(src_dims, in, tag::nhwc),
      fdst(dst_dims, dir == Dir::kForward ? dt::f32 : in, tag::nhwc), fwei(wei_dims, in, tag::any);
  const dnnl::convolution_forward::desc fd(dnnl::prop_kind::forward_training,
                                           dnnl::algorithm::convolution_direct, fsrc, fwei, fdst,
                                           strides, dil, pl, pr);
  const dnnl::convolution_forward::primitive_desc fpd(fd, attr, eng);
  // The operation descriptors outlive the loop below: oneDNN's implementation iterator reads
  // them again at each next_impl().
  const dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, src_md,
                                                 wei_any, dst_md, strides, dil, pl, pr);
  const dnnl::convolution_backward_weights::desc wd(dnnl::algorithm::convolution_direct, src_md,
                                                    wei_any, dst_md, strides, dil, pl, pr);
  dnnl::primitive_desc pd;
  if (dir == Dir::kForward)
    pd = fpd;
  else if (dir == Dir::kBackwardData)
    pd = dnnl::convolution_backward_data::primitive_desc(bd, attr, eng, fpd);
  else
    pd = dnnl::convolution_backward_weights::primitive_desc(wd, attr, eng, fpd);
  const std::string what = describe(g, dir, bf16);
  if (deterministic()) {
    auto p = build(pd, dir, wei_user);
    log_plan(fmt::format("{}: oneDNN {} (deterministic: the first implementation){}", what, p->impl,
                         p->reorder_wei ? ", filters reordered" : ""));
    return p;
  }
  load_disk();
  const std::string key = disk_key(g, dir, bf16);
  const auto cached = g_disk.entries.find(key);
  const dnnl::primitive_desc first = pd;  // keeps its implementation while pd moves on
  std::vector<std::unique_ptr<Plan>> cands;
  do {
    const std::string impl = pd.impl_info_str();
    if (impl.rfind("ref", 0) == 0) continue;  // oneDNN's reference loops: never the fastest
    cands.push_back(build(pd, dir, wei_user));
    if (cached != g_disk.entries.end() && impl == cached->second) {
      log_plan(fmt::format("{}: oneDNN {} (cached){}", what, impl,
                           cands.back()->reorder_wei ? ", filters reordered" : ""));
      return std::move(cands.back());
    }
  } while (pd.next_impl() && cands.size() < 8);
  // Not cached (or a cached name no implementation has, e.g. a line cut short by a kill): time.
  if (cands.empty()) {  // only oneDNN's reference loops: the first
    auto p = build(first, dir, wei_user);
    log_plan(fmt::format("{}: oneDNN {} (the only kind listed)", what, p->impl));
    return p;
  }
  std::string timings;
  size_t best = 0;
  double best_ms = 0;
  for (size_t i = 0; i < cands.size(); ++i) {
    const double ms = cands.size() > 1 ? time_plan(*cands[i], g, dir) : 0.0;
    timings += fmt::format("{}{} {:.3f} ms", i ? ", " : "", cands[i]->impl, ms);
    if (i == 0 || ms < best_ms) best = i, best_ms = ms;
  }
  store_disk(key, cands[best]->impl);
  log_plan(fmt::format("{}: timed: {} -> oneDNN {}{}", what, timings, cands[best]->impl,
                       cands[best]->reorder_wei ? " (filters reordered)" : ""));
  return std::move(cands[best]);
}

std::map<Key, std::unique_ptr<Plan>>& conv_plans() {
  static std::map<Key, std::unique_ptr<Plan>> plans;
  return plans;
}

// The plan, or null where oneDNN has none (the caller then runs the reference's loop; logged).
Plan* plan_for(const ConvGeom& g, Dir dir, bool bf16) {
  auto& plans = conv_plans();
  const Key key = key_of(g, dir, bf16);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second.get();
  std::unique_ptr<Plan> p;
  try {
    p = make_plan(g, dir, bf16);
  } catch (const dnnl::error& e) {
    log_plan(fmt::format("{}: no oneDNN plan ({}); the loop reference runs", describe(g, dir, bf16),
                         e.what()));
  }
  return (plans[key] = std::move(p)).get();
}

// False when there is no plan.
bool run(const ConvGeom& g, Dir dir, bool bf16, const void* src, const void* wei, const void* dst,
         bool accumulate) {
  std::lock_guard<std::mutex> hold(dnnl_util::lock());
  Plan* plan = plan_for(g, dir, bf16);
  if (!plan) return false;
  execute(*plan, g, dir, src, wei, dst, accumulate);
  return true;
}

bool empty(const ConvGeom& g) {
  return g.n == 0 || g.c == 0 || g.k == 0 || g.h == 0 || g.w == 0 || g.p == 0 || g.q == 0;
}

}  // namespace

void reset_plans() {
  std::lock_guard<std::mutex> hold(dnnl_util::lock());
  conv_plans().clear();
  g_disk.loaded = false;  // read the file again at the next choice
}

void set_plan_cache(const std::string& path) {
  std::lock_guard<std::mutex> hold(dnnl_util::lock());
  g_disk.path = path == "off" ? "" : path;
  g_disk.chosen = true;
  g_disk.loaded = false;
}

void conv_forward_f32(const ConvGeom& g, const float* x, const float* w, float* y) {
  if (empty(g) || !run(g, Dir::kForward, false, x, w, y, false)) conv_forward_cpu(g, x, w, y);
}

void conv_backward_data_f32(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  if (empty(g) || !run(g, Dir::kBackwardData, false, dx, w, dy, false))
    conv_backward_data_cpu(g, dy, w, dx);
}

void conv_backward_filter_f32(const ConvGeom& g, const float* x, const float* dy, float* dw,
                              bool accumulate) {
  if (empty(g) || !run(g, Dir::kBackwardFilter, false, x, dw, dy, accumulate))
    conv_backward_filter_cpu(g, x, dy, dw, accumulate);
}

bool conv_forward_bf16(const ConvGeom& g, const uint16_t* x, const uint16_t* w, float* y) {
  return !reference() && !empty(g) && has_native_bf16() &&
         run(g, Dir::kForward, true, x, w, y, false);
}

bool conv_backward_data_bf16(const ConvGeom& g, const uint16_t* dy, const uint16_t* w, float* dx) {
  return !reference() && !empty(g) && has_native_bf16() &&
         run(g, Dir::kBackwardData, true, dx, w, dy, false);
}

bool conv_backward_filter_bf16(const ConvGeom& g, const uint16_t* x, const uint16_t* dy,
                               float* dw) {
  return !reference() && !empty(g) && has_native_bf16() &&
         run(g, Dir::kBackwardFilter, true, x, dw, dy, false);
}

}  // namespace gan::kernels::cpu
