// Convolutions on the CPU through oneDNN: NHWC activations as they are, (K, R, S, C) filters
// ("ohwi") reordered to and from the layout the primitive prefers (blocked for the JIT kernels),
// one plan per geometry, direction and data type, created on first use and kept. Scratchpads are
// the backend's (user mode), so a step after the first allocates nothing here.
#include <cstring>
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

struct Plan {
  dnnl::primitive prim;
  memory::desc src, wei, dst;  // the primitive's (diff_src / diff_wei / diff_dst as they apply)
  memory::desc wei_user;       // (K, R, S, C) float32 or bf16
  bool reorder_wei = false;
  dnnl::primitive to_prim, to_user, to_user_sum;  // weight reorders
  size_t scratch = 0;
};

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int, int, int, int, int, int, int, int>;

Key key_of(const ConvGeom& g, Dir dir, bool bf16) {
  return Key{g.n,        g.h,        g.w,     g.c,     g.k,     g.r,     g.s,      g.p,      g.q,
             g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, int(dir), int(bf16)};
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
      wei_any(wei_dims, wei_t, tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  // The forward descriptor is also the hint of the backward ones.
  const memory::desc fsrc(src_dims, in, tag::nhwc),
      fdst(dst_dims, dir == Dir::kForward ? dt::f32 : in, tag::nhwc), fwei(wei_dims, in, tag::any);
  const dnnl::convolution_forward::desc fd(dnnl::prop_kind::forward_training,
                                           dnnl::algorithm::convolution_direct, fsrc, fwei, fdst,
                                           strides, dil, pl, pr);
  const dnnl::convolution_forward::primitive_desc fpd(fd, attr, eng);

  auto plan = std::make_unique<Plan>();
  plan->wei_user = memory::desc(wei_dims, wei_t, tag::ohwi);
  std::string impl;
  if (dir == Dir::kForward) {
    plan->prim = dnnl::convolution_forward(fpd);
    plan->src = fpd.src_desc();
    plan->wei = fpd.weights_desc();
    plan->dst = fpd.dst_desc();
    plan->scratch = fpd.scratchpad_desc().get_size();
    impl = fpd.impl_info_str();
  } else if (dir == Dir::kBackwardData) {
    const dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, src_md,
                                                   wei_any, dst_md, strides, dil, pl, pr);
    const dnnl::convolution_backward_data::primitive_desc bpd(bd, attr, eng, fpd);
    plan->prim = dnnl::convolution_backward_data(bpd);
    plan->src = bpd.diff_src_desc();
    plan->wei = bpd.weights_desc();
    plan->dst = bpd.diff_dst_desc();
    plan->scratch = bpd.scratchpad_desc().get_size();
    impl = bpd.impl_info_str();
  } else {
    const dnnl::convolution_backward_weights::desc wd(dnnl::algorithm::convolution_direct, src_md,
                                                      wei_any, dst_md, strides, dil, pl, pr);
    const dnnl::convolution_backward_weights::primitive_desc wpd(wd, attr, eng, fpd);
    plan->prim = dnnl::convolution_backward_weights(wpd);
    plan->src = wpd.src_desc();
    plan->wei = wpd.diff_weights_desc();
    plan->dst = wpd.diff_dst_desc();
    plan->scratch = wpd.scratchpad_desc().get_size();
    impl = wpd.impl_info_str();
  }
  plan->reorder_wei = plan->wei != plan->wei_user;
  if (plan->reorder_wei) {
    if (dir == Dir::kBackwardFilter) {
      plan->to_user =
          dnnl::reorder(dnnl::reorder::primitive_desc(eng, plan->wei, eng, plan->wei_user));
      dnnl::post_ops sum;
      sum.append_sum(1.0f);
      dnnl::primitive_attr acc;
      acc.set_post_ops(sum);
      plan->to_user_sum =
          dnnl::reorder(dnnl::reorder::primitive_desc(eng, plan->wei, eng, plan->wei_user, acc));
    } else {
      plan->to_prim =
          dnnl::reorder(dnnl::reorder::primitive_desc(eng, plan->wei_user, eng, plan->wei));
    }
  }
  static const char* names[] = {"forward", "backward data", "backward filter"};
  log_plan(fmt::format(
      "conv {} {}x (N, H, W, C) = ({}, {}, {}, {}) w (K, R, S, C) = ({}, {}, {}, {}) stride {}x{} "
      "pad {}x{} dil {}x{}: oneDNN {}{}",
      names[int(dir)], bf16 ? "bf16 " : "", g.n, g.h, g.w, g.c, g.k, g.r, g.s, g.c, g.stride_h,
      g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, impl,
      plan->reorder_wei ? " (filters reordered)" : ""));
  return plan;
}

// The plan, or null where oneDNN has none (the caller then runs the reference's loop; logged).
Plan* plan_for(const ConvGeom& g, Dir dir, bool bf16) {
  static std::map<Key, std::unique_ptr<Plan>> plans;
  const Key key = key_of(g, dir, bf16);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second.get();
  std::unique_ptr<Plan> p;
  try {
    p = make_plan(g, dir, bf16);
  } catch (const dnnl::error& e) {
    log_plan(
        fmt::format("conv {}x{} -> ({}, {}, {}, {}): no oneDNN plan ({}); the loop reference runs",
                    g.r, g.s, g.n, g.p, g.q, g.k, e.what()));
  }
  return (plans[key] = std::move(p)).get();
}

// Runs one direction: a = the input read (x or dy), the weights w (user layout), out the result.
// For the filter gradient w is the result (user layout) and out unused.
// False when there is no plan.
bool run(const ConvGeom& g, Dir dir, bool bf16, const void* src, const void* wei, const void* dst,
         bool accumulate) {
  std::lock_guard<std::mutex> hold(dnnl_util::lock());
  Plan* plan = plan_for(g, dir, bf16);
  if (!plan) return false;
  Plan& p = *plan;
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
  return true;
}

bool empty(const ConvGeom& g) {
  return g.n == 0 || g.c == 0 || g.k == 0 || g.h == 0 || g.w == 0 || g.p == 0 || g.q == 0;
}

}  // namespace

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
  return !reference() && !empty(g) && has_native_bf16() && run(g, Dir::kForward, true, x, w, y, false);
}

bool conv_backward_data_bf16(const ConvGeom& g, const uint16_t* dy, const uint16_t* w, float* dx) {
  return !reference() && !empty(g) && has_native_bf16() && run(g, Dir::kBackwardData, true, dx, w, dy, false);
}

bool conv_backward_filter_bf16(const ConvGeom& g, const uint16_t* x, const uint16_t* dy,
                               float* dw) {
  return !reference() && !empty(g) && has_native_bf16() && run(g, Dir::kBackwardFilter, true, x, dw, dy, false);
}

}  // namespace gan::kernels::cpu
