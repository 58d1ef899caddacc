// GEMMs on the CPU through oneDNN: float32 with dnnl_sgemm (row-major, any leading dimensions,
// threaded inside), one call per batch item; bf16 operands with the matmul primitive (float32
// accumulation and result), one plan per shape.
#include <map>
#include <memory>
#include <tuple>

#include <fmt/format.h>

#include "kernels/cpu/dnnl_util.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/plan_log.h"

namespace gan::kernels::cpu {

void gemm_f32(const Gemm& g, float alpha, const float* A, const float* B, float beta, float* C) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (g.k == 0) {  // nothing to sum: C = beta C (beta 0 ignores C, as BLAS does)
    return gemm_cpu(g, double(alpha), A, B, double(beta), C);
  }
  for (int64_t b = 0; b < g.batch; ++b)
    dnnl_util::sgemm(g.trans_a, g.trans_b, g.m, g.n, g.k, alpha, A + b * g.stride_a, g.row_a(),
                     B + b * g.stride_b, g.row_b(), beta, C + b * g.stride_c, g.row_c());
}

namespace {

using dnnl::memory;
using dt = dnnl::memory::data_type;

struct MatmulPlan {
  dnnl::matmul prim;
  memory::desc a, b, c;
  size_t scratch = 0;
};

using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, float>;

// (batch, rows, cols) with the row stride ld, transposed storage when trans, batch stride s (0:
// one matrix for every batch item).
memory::desc operand(dt type, int64_t batch, int64_t rows, int64_t cols, int64_t ld, bool trans,
                     int64_t s) {
  if (batch == 1)  // 2-D: oneDNN's optimised matmuls take more layouts there
    return memory::desc({rows, cols}, type, trans ? memory::dims{1, ld} : memory::dims{ld, 1});
  const int64_t nb = s == 0 ? 1 : batch;
  return memory::desc({nb, rows, cols}, type,
                      trans ? memory::dims{s, 1, ld} : memory::dims{s, ld, 1});
}

MatmulPlan* matmul_plan(const Gemm& g, float alpha) {
  static std::map<Key, std::unique_ptr<MatmulPlan>> plans;
  const Key key{g.trans_a,  g.trans_b,  g.m,       g.n,       g.k,       g.batch, g.stride_a,
                g.stride_b, g.stride_c, g.row_a(), g.row_b(), g.row_c(), alpha};
  auto it = plans.find(key);
  if (it != plans.end()) return it->second.get();
  std::unique_ptr<MatmulPlan> p = std::make_unique<MatmulPlan>();
  try {
    p->a = operand(dt::bf16, g.batch, g.m, g.k, g.row_a(), g.trans_a, g.stride_a);
    p->b = operand(dt::bf16, g.batch, g.k, g.n, g.row_b(), g.trans_b, g.stride_b);
    p->c = g.batch == 1
               ? memory::desc({g.m, g.n}, dt::f32, memory::dims{g.row_c(), 1})
               : memory::desc({g.batch, g.m, g.n}, dt::f32, memory::dims{g.stride_c, g.row_c(), 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    const dnnl::matmul::desc md(p->a, p->b, p->c);  // outlives the implementation iterator
    dnnl::matmul::primitive_desc pd(md, attr, dnnl_util::engine());
    // oneDNN's reference loops are far slower than the float32 GEMM on widened operands (which
    // gives the same values): only its optimised implementations are taken.
    while (std::string(pd.impl_info_str()).rfind("ref", 0) == 0)
      if (!pd.next_impl()) {
        log_plan(
            fmt::format("gemm bf16 {}x{}x{} batch {}: no optimised oneDNN matmul for this "
                        "layout; float32 on the widened operands instead",
                        g.m, g.n, g.k, g.batch));
        return (plans[key] = nullptr).get();
      }
    p->prim = dnnl::matmul(pd);
    p->scratch = pd.scratchpad_desc().get_size();
    log_plan(fmt::format("gemm bf16 {}x{}x{} batch {}: oneDNN {}", g.m, g.n, g.k, g.batch,
                         pd.impl_info_str()));
  } catch (const dnnl::error& e) {
    log_plan(fmt::format("gemm bf16 {}x{}x{} batch {}: no oneDNN plan ({}); float32 instead", g.m,
                         g.n, g.k, g.batch, e.what()));
    p.reset();
  }
  return (plans[key] = std::move(p)).get();
}

}  // namespace

bool gemm_bf16(const Gemm& g, float alpha, const uint16_t* A, const uint16_t* B, float* C) {
  if (reference() || !has_native_bf16() || g.m == 0 || g.n == 0 || g.k == 0 || g.batch == 0)
    return false;
  std::lock_guard<std::mutex> hold(dnnl_util::lock());
  MatmulPlan* p = matmul_plan(g, alpha);
  if (!p) return false;
  auto& eng = dnnl_util::engine();
  memory a(p->a, eng, const_cast<uint16_t*>(A)), b(p->b, eng, const_cast<uint16_t*>(B)),
      c(p->c, eng, C);
  memory scratch(memory::desc({int64_t(p->scratch)}, dt::u8, memory::format_tag::x), eng,
                 dnnl_util::scratchpad().get(p->scratch));
  dnnl_util::execute(p->prim, {{DNNL_ARG_SRC, a},
                               {DNNL_ARG_WEIGHTS, b},
                               {DNNL_ARG_DST, c},
                               {DNNL_ARG_SCRATCHPAD, scratch}});
  return true;
}

}  // namespace gan::kernels::cpu
