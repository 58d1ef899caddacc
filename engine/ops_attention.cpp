// attention, self_attention (packed, fused epilogue), attention_rows.
// bf16 precision (engine/device.h): q, k and v (the packed qkv) and the incoming gradient are
// rounded to bf16 values: on the GPU by the tensor-core kernels' bf16 variant as they load them
// (it also rounds P and dS, the operands of its other products), elsewhere (the CPU's double
// reference, or a float32 version chosen on the GPU) in float32 tensors first (Choice::
// pre_round). Softmax statistics, the output and the gradients stay float32.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/autocast.h"
#include "engine/device.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/attention.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/runtime.h"

namespace gan {

namespace {

using kernels::AttnDims;

struct AttnPtrs {  // typed views of q, k, v inside their tensors
  int64_t q_off = 0, k_off = 0, v_off = 0;
};

// The version that runs an attention shape on the GPU, chosen at the forward pass (timed once per
// shape and math mode, engine/device.h) and kept for its backward.
struct Choice {
  AttnKernel kern = AttnKernel::kGemm;
  kernels::AttnMath math = kernels::AttnMath::kTF32;  // kFlash only
  bool bf16 = false;  // bf16 precision: operands (and the backward's dy) rounded to bf16
  // bf16 with a version that does not round as it loads (the CPU reference, gemm, tiled): the
  // operands and dy are rounded into float32 tensors first.
  bool pre_round() const {
    return bf16 && !(kern == AttnKernel::kFlash && math == kernels::AttnMath::kBF16);
  }
};

// t's values rounded to bf16 (nearest even), as a float32 tensor.
Tensor round_to_bf16(const Tensor& t) { return t.to(DType::BF16).to(DType::F32); }

std::string choice_name(const Choice& c) {
  if (c.kern == AttnKernel::kFlash) return std::string("flash-") + kernels::attn_math_name(c.math);
  return attention_kernel_name(c.kern);
}

bool takes(AttnKernel k, const AttnDims& a) {
  switch (k) {
    case AttnKernel::kFlash:
      return a.d <= kernels::kAttnMmaMaxD;
    case AttnKernel::kTiled:
      return a.d <= kernels::kAttnMaxD && a.dv <= kernels::kAttnMaxDv;
    default:
      return true;
  }
}

// Bytes one B Nq Nk float buffer may take for the materialised version to be a candidate: the
// setting, else an eighth of the free device memory (256 MiB inside a graph capture, where the
// memory query is not made).
size_t gemm_budget(bool in_capture) {
  if (const size_t cap = attention_gemm_max_bytes()) return cap;
  if (in_capture) return size_t(256) << 20;
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    (void)cudaGetLastError();
    return size_t(256) << 20;
  }
  return free_b / 8;
}

struct ChoiceState {
  std::mutex mu;
  std::map<std::string, Choice> chosen;
  std::vector<std::string> log;
  std::function<double(const std::string&)> timer;  // tests
};
ChoiceState& choice_state() {
  static ChoiceState* s = new ChoiceState;  // never destroyed (used until exit)
  return *s;
}

// The CPU interpreter of the CUDA code: its timings say nothing about a GPU and vary from run
// to run, so there the choice is a fixed rule.
bool on_interpreter() { return cuda_is_interpreter(); }

// The version for shape a (on the GPU). run(c) runs forward and backward with version c on
// scratch outputs (for the timing). In bf16 precision the tensor-core candidate is the bf16
// variant (the others run their float32 math on the rounded operands); on the interpreter it is
// the fixed choice there (the GPU's usual one, so that CI runs it).
Choice choose_kernel(const Tensor& t, const AttnDims& a,
                     const std::function<void(const Choice&)>& run) {
  if (!t.is_cuda()) return {};
  const bool bf16 = rounds_to_bf16(t);
  const MathMode mode = math_mode();
  const kernels::AttnMath fmath = bf16                      ? kernels::AttnMath::kBF16
                                  : mode == MathMode::kTF32 ? kernels::AttnMath::kTF32
                                                            : kernels::AttnMath::k3xTF32;
  const bool flash_ok = bf16 || mode != MathMode::kStrict;
  const AttnKernel pinned = attention_kernel();
  if (pinned != AttnKernel::kAuto) {
    GAN_CHECK(pinned != AttnKernel::kFlash || flash_ok,
              "attention: the tensor-core (flash) version needs the fp32-tc or tf32 math mode "
              "or bf16 precision; strict fp32 runs gemm or tiled");
    return takes(pinned, a) ? Choice{pinned, fmath} : Choice{};
  }
  const std::string key =
      fmt::format("B{} Nq{} Nk{} d{} dv{} ld{},{},{},{} {}{}", a.b, a.nq, a.nk, a.d, a.dv, a.ldq,
                  a.ldk, a.ldv, a.ldo, math_mode_name(mode), bf16 ? " bf16" : "");
  ChoiceState& st = choice_state();
  std::unique_lock<std::mutex> lock(st.mu);
  if (auto it = st.chosen.find(key); it != st.chosen.end()) return it->second;  // the usual path

  const bool in_capture = cuda::capturing();
  std::vector<Choice> cands;
  const bool gemm_fits =
      double(a.b) * double(a.nq) * double(a.nk) * 4.0 <= double(gemm_budget(in_capture));
  if (flash_ok && takes(AttnKernel::kFlash, a)) cands.push_back({AttnKernel::kFlash, fmath});
  if (gemm_fits) cands.push_back({AttnKernel::kGemm, fmath});
  if (takes(AttnKernel::kTiled, a)) cands.push_back({AttnKernel::kTiled, fmath});
  if (cands.empty()) cands.push_back({AttnKernel::kGemm, fmath});  // any size, memory permitting
  std::string how;
  Choice best = cands.front();
  if (cands.size() == 1) {
    how = "only candidate";
  } else if (!st.timer && on_interpreter()) {
    // The materialised version where it fits (its interpreted cuBLAS is the reference's math);
    // in bf16 the bf16 tensor-core kernels.
    for (const Choice& c : cands)
      if (bf16 ? c.kern == AttnKernel::kFlash : c.kern == AttnKernel::kGemm) best = c;
    how = "untimed (interpreter)";
  } else if (in_capture) {
    how = "untimed (first use inside a CUDA graph capture)";
  } else {
    const auto timer = st.timer;
    lock.unlock();  // the runs below allocate and launch; other threads may choose meanwhile
    double best_ms = INFINITY;
    for (const Choice& c : cands) {
      const double ms = timer ? timer(choice_name(c))
                              : kernels::time_with_events(cuda::stream(), [&] { run(c); });
      how += fmt::format("{}{} {:.3f} ms", how.empty() ? "timed: " : ", ", choice_name(c), ms);
      if (ms < best_ms) best_ms = ms, best = c;
    }
    lock.lock();
    if (auto it = st.chosen.find(key); it != st.chosen.end()) return it->second;
  }
  st.chosen[key] = best;
  st.log.push_back(fmt::format("attention {}: {} -> {}", key, how, choice_name(best)));
  if (kernels::log_kernels()) std::fprintf(stderr, "gan: %s\n", st.log.back().c_str());
  return best;
}

Choice choose(const Tensor& t, const AttnDims& a, const std::function<void(const Choice&)>& run) {
  Choice c = choose_kernel(t, a, run);
  c.bf16 = rounds_to_bf16(t);
  return c;
}

// t rounded to bf16 values when the choice needs it (Choice::pre_round), else t.
Tensor operand(const Choice& ch, const Tensor& t) { return ch.pre_round() ? round_to_bf16(t) : t; }

Tensor scores(const AttnDims& a) { return Tensor::empty(Shape{a.b, a.nq, a.nk}, Device::CUDA); }

// Forward on the tensors' device. gamma/x/y undefined: no epilogue.
void forward(const AttnDims& a, const AttnPtrs& off, const Choice& ch, const Tensor& qt,
             const Tensor& kt, const Tensor& vt, const Tensor& o, const Tensor& lse,
             const Tensor& gamma, const Tensor& x, const Tensor& y) {
  auto opt = [](const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; };
  if (qt.is_cuda()) {
    const float *q = qt.data<float>() + off.q_off, *k = kt.data<float>() + off.k_off,
                *v = vt.data<float>() + off.v_off;
    switch (ch.kern) {
      case AttnKernel::kFlash:
        kernels::attention_forward_mma_cuda(a, q, k, v, o.data<float>(), lse.data<float>(),
                                            opt(gamma), opt(x), opt(y), ch.math, cuda::stream());
        break;
      case AttnKernel::kTiled:
        kernels::attention_forward_cuda(a, q, k, v, o.data<float>(), lse.data<float>(), opt(gamma),
                                        opt(x), opt(y), cuda::stream());
        break;
      default: {
        Tensor s = scores(a);
        kernels::attention_forward_gemm_cuda(a, q, k, v, o.data<float>(), lse.data<float>(),
                                             opt(gamma), opt(x), opt(y), s.data<float>(),
                                             cuda::cublas(), cuda::stream());
      }
    }
  } else {
    dispatch_cpu(qt, "attention", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::attention_forward<T>(
          a, qt.data<T>() + off.q_off, kt.data<T>() + off.k_off, vt.data<T>() + off.v_off,
          o.data<T>(), lse.data<T>(), gamma.defined() ? gamma.data<T>() : nullptr,
          x.defined() ? x.data<T>() : nullptr, y.defined() ? y.data<T>() : nullptr);
    });
  }
}

// Backward; gradient pointers null where not wanted; offsets apply to dq/dk/dv like q/k/v.
void backward(const AttnDims& a, const AttnPtrs& off, const Choice& ch, const Tensor& qt,
              const Tensor& kt, const Tensor& vt, const Tensor& o, const Tensor& lse,
              const Tensor& dy_in, const Tensor& scale, const Tensor& dqt, const Tensor& dkt,
              const Tensor& dvt, const Tensor& dgamma) {
  const Tensor dy = operand(ch, dy_in);
  if (qt.is_cuda()) {
    auto ptr = [](const Tensor& t, int64_t o2) {
      return t.defined() ? t.data<float>() + o2 : nullptr;
    };
    Tensor drow = Tensor::empty(Shape{a.b * a.nq}, Device::CUDA);
    const size_t ws = kernels::attention_backward_workspace_bytes(a);
    Tensor work;
    if (ws) work = Tensor::empty(Shape{int64_t(ws / 4)}, Device::CUDA);
    const float *q = qt.data<float>() + off.q_off, *k = kt.data<float>() + off.k_off,
                *v = vt.data<float>() + off.v_off;
    const float* sc = scale.defined() ? scale.data<float>() : nullptr;
    float* dg = dgamma.defined() ? dgamma.data<float>() : nullptr;
    switch (ch.kern) {
      case AttnKernel::kFlash:
        kernels::attention_backward_mma_cuda(
            a, q, k, v, o.data<float>(), lse.data<float>(), dy.data<float>(), sc,
            ptr(dqt, off.q_off), ptr(dkt, off.k_off), ptr(dvt, off.v_off), dg, drow.data<float>(),
            ws ? work.raw() : nullptr, ws, ch.math, cuda::stream());
        break;
      case AttnKernel::kTiled:
        kernels::attention_backward_cuda(
            a, q, k, v, o.data<float>(), lse.data<float>(), dy.data<float>(), sc,
            ptr(dqt, off.q_off), ptr(dkt, off.k_off), ptr(dvt, off.v_off), dg, drow.data<float>(),
            ws ? work.raw() : nullptr, ws, cuda::stream());
        break;
      default: {
        const bool grads = dqt.defined() || dkt.defined() || dvt.defined();
        Tensor p = grads ? scores(a) : Tensor(), dp = grads ? scores(a) : Tensor();
        kernels::attention_backward_gemm_cuda(
            a, q, k, v, o.data<float>(), lse.data<float>(), dy.data<float>(), sc,
            ptr(dqt, off.q_off), ptr(dkt, off.k_off), ptr(dvt, off.v_off), dg, drow.data<float>(),
            grads ? p.data<float>() : nullptr, grads ? dp.data<float>() : nullptr,
            ws ? work.raw() : nullptr, ws, cuda::cublas(), cuda::stream());
      }
    }
  } else {
    dispatch_cpu(qt, "attention", [&](auto t) {
      using T = decltype(t);
      auto ptr = [](const Tensor& x, int64_t o2) {
        return x.defined() ? x.data<T>() + o2 : nullptr;
      };
      kernels::cpu::attention_backward<T>(
          a, qt.data<T>() + off.q_off, kt.data<T>() + off.k_off, vt.data<T>() + off.v_off,
          o.data<T>(), lse.data<T>(), dy.data<T>(), scale.defined() ? scale.data<T>() : nullptr,
          ptr(dqt, off.q_off), ptr(dkt, off.k_off), ptr(dvt, off.v_off),
          dgamma.defined() ? dgamma.data<T>() : nullptr);
    });
  }
}

// run(c) for choose(): forward and backward of version c into scratch tensors (the packed case:
// q, k and v are column ranges of one tensor, and so are their gradients).
std::function<void(const Choice&)> timing_run(const AttnDims& a, const AttnPtrs& off,
                                              const Tensor& qt, const Tensor& kt, const Tensor& vt,
                                              const Tensor& gamma, const Tensor& x) {
  return [&a, &off, &qt, &kt, &vt, &gamma, &x](const Choice& c) {
    Tensor o = Tensor::empty(Shape{a.b, a.nq, a.dv}, Device::CUDA);
    Tensor lse = Tensor::empty(Shape{a.b, a.nq}, Device::CUDA);
    Tensor y = x.defined() ? Tensor::empty_like(x) : Tensor();
    forward(a, off, c, qt, kt, vt, o, lse, gamma, x, y);
    const bool packed = qt.raw() == kt.raw();
    Tensor dq = Tensor::empty_like(qt);
    Tensor dk = packed ? dq : Tensor::empty_like(kt), dv = packed ? dq : Tensor::empty_like(vt);
    Tensor dg = gamma.defined() ? Tensor::empty_like(gamma) : Tensor();
    backward(a, off, c, qt, kt, vt, o, lse, o, gamma, dq, dk, dv, dg);  // dy = o: any values
  };
}

void check_limits(const char* op, const Tensor& t, const AttnDims& a) {
  GAN_CHECK(a.nk >= 1, fmt::format("{}: no keys", op));
  if (t.is_cuda()) {
    check_cuda_f32(op, t);
    GAN_CHECK(a.b * a.nq <= int64_t(INT32_MAX) && a.b <= 65535,
              fmt::format("{}: the CUDA kernels take B <= 65535 and B Nq < 2^31, got B {}, Nq {}",
                          op, a.b, a.nq));
  }
}

// The attention core's VJP in differentiable ops (materialises P = softmax(q k^T)):
//   o = P v;  dv = P^T dO;  dP = dO v^T;  dS = P (dP - rowsum(dP P));  dq = dS k;  dk = dS^T q.
struct CoreGrads {
  Var dq, dk, dv, o;
};
CoreGrads core_vjp(const Var& q, const Var& k, const Var& v, const Var& dout) {
  const Var p = softmax(matmul(q, transpose(k)));
  CoreGrads g;
  g.o = matmul(p, v);
  g.dv = matmul(transpose(p), dout);
  const Var dp = matmul(dout, transpose(v));
  const Var ds = mul(p, sub(dp, sum(mul(dp, p), {-1}, true)));
  g.dq = matmul(ds, k);
  g.dk = matmul(transpose(ds), q);
  return g;
}

}  // namespace

Var attention(const Var& q, const Var& k, const Var& v) {
  if (is_bf16(q) || is_bf16(k) || is_bf16(v)) {
    const Var r = attention(widen(q), widen(k), widen(v));
    return is_bf16(q) && is_bf16(k) && is_bf16(v) ? narrow(r) : r;
  }
  GAN_NVTX("attention");
  const Tensor &qt = q.value(), &kt = k.value(), &vt = v.value();
  check_same_device("attention", {&qt, &kt, &vt});
  check_same_dtype("attention", {&qt, &kt, &vt});
  GAN_CHECK(qt.ndim() == 3 && kt.ndim() == 3 && vt.ndim() == 3 && qt.dim(0) == kt.dim(0) &&
                kt.dim(0) == vt.dim(0) && qt.dim(2) == kt.dim(2) && kt.dim(1) == vt.dim(1) &&
                qt.dim(2) >= 1 && vt.dim(2) >= 1,
            fmt::format("attention: expected q (B, Nq, d), k (B, Nk, d), v (B, Nk, dv), got {}, "
                        "{}, {}",
                        qt.shape().str(), kt.shape().str(), vt.shape().str()));
  AttnDims a;
  a.b = qt.dim(0), a.nq = qt.dim(1), a.nk = kt.dim(1), a.d = qt.dim(2), a.dv = vt.dim(2);
  a.ldq = a.ldk = a.d, a.ldv = a.ldo = a.dv;
  check_limits("attention", qt, a);
  Tensor o = Tensor::empty(Shape{a.b, a.nq, a.dv}, qt.device(), qt.dtype());
  Tensor lse = Tensor::empty(Shape{a.b, a.nq}, qt.device(), qt.dtype());
  // (The timing runs on the unrounded values: the times do not depend on them.)
  const Choice ch = choose(qt, a, timing_run(a, {}, qt, kt, vt, Tensor(), Tensor()));
  forward(a, {}, ch, operand(ch, qt), operand(ch, kt), operand(ch, vt), o, lse, Tensor(), Tensor(),
          Tensor());
  VjpFn vjp = [q, k, v](const std::vector<Var>& d, const std::vector<bool>& needs) {
    const CoreGrads g = core_vjp(q, k, v, d[0]);
    return std::vector<Var>{needs[0] ? g.dq : Var(), needs[1] ? g.dk : Var(),
                            needs[2] ? g.dv : Var()};
  };
  return record(
      "attention", {q, k, v}, o,
      [a, ch, qt, kt, vt, o, lse](const BackwardContext& c) {
        // bf16: rounded again from the float32 values (which their producers keep anyway).
        const auto r = [&ch](const Tensor& t) { return operand(ch, t); };
        Tensor dq = c.needs(0) ? Tensor::empty_like(qt) : Tensor();
        Tensor dk = c.needs(1) ? Tensor::empty_like(kt) : Tensor();
        Tensor dv = c.needs(2) ? Tensor::empty_like(vt) : Tensor();
        backward(a, {}, ch, r(qt), r(kt), r(vt), o, lse, c.dout, Tensor(), dq, dk, dv, Tensor());
        if (dq.defined()) c.add(0, dq);
        if (dk.defined()) c.add(1, dk);
        if (dv.defined()) c.add(2, dv);
      },
      std::move(vjp));
}

Var self_attention(const Var& qkv, int64_t d, const Var& gamma, const Var& x) {
  GAN_NVTX("self_attention");
  // bf16 activations: the kernels run on float32 copies of qkv and x (exact; the bf16 kernels
  // round as they load), the op keeps the bf16 qkv for its backward (widened again there), and y
  // is rounded to bf16 like the residual x; its gradient dqkv is rounded by BackwardContext::add.
  const Tensor& keep_p = qkv.value();
  const bool y16 = is_bf16(x);
  const Tensor pt = widened(keep_p);
  const Tensor xt = y16 ? x.value().to(DType::F32) : x.value();
  const Tensor& gt = gamma.value();
  check_same_device("self_attention", {&pt, &gt, &xt});
  check_same_dtype("self_attention", {&pt, &gt, &xt});
  GAN_CHECK(pt.ndim() == 3 && d >= 1 && pt.dim(2) > 2 * d,
            fmt::format("self_attention: expected qkv (B, N, 2d + dv) with d = {}, got {}", d,
                        pt.shape().str()));
  AttnDims a;
  a.b = pt.dim(0), a.nq = a.nk = pt.dim(1), a.d = d, a.dv = pt.dim(2) - 2 * d;
  a.ldq = a.ldk = a.ldv = pt.dim(2), a.ldo = a.dv;
  GAN_CHECK(
      xt.ndim() >= 1 && xt.dim(0) == a.b && xt.numel() == a.b * a.nq * a.dv && xt.dim(-1) == a.dv,
      fmt::format("self_attention: residual x {} does not match qkv {} (B {}, N {}, dv {})",
                  xt.shape().str(), pt.shape().str(), a.b, a.nq, a.dv));
  GAN_CHECK(gt.numel() == 1,
            "self_attention: gamma must have one element, got " + gt.shape().str());
  check_limits("self_attention", pt, a);
  const AttnPtrs off{0, d, 2 * d};
  Tensor o = Tensor::empty(Shape{a.b, a.nq, a.dv}, pt.device(), pt.dtype());
  Tensor lse = Tensor::empty(Shape{a.b, a.nq}, pt.device(), pt.dtype());
  Tensor y = Tensor::empty_like(xt);
  const Choice ch = choose(pt, a, timing_run(a, off, pt, pt, pt, gt, xt));
  const Tensor pr = operand(ch, pt);
  forward(a, off, ch, pr, pr, pr, o, lse, gt, xt, y);
  // VJP: q, k, v as column ranges of qkv (Vars), the core's VJP, the residual passes dy.
  VjpFn vjp = [qkv, gamma, d, a](const std::vector<Var>& dd, const std::vector<bool>& needs) {
    const Var dy = reshape(dd[0], Shape{a.b, a.nq, a.dv});
    std::vector<Var> r(3);
    if (needs[0] || needs[1]) {
      const Var q = slice_last(qkv, 0, d), k = slice_last(qkv, d, d);
      const Var v = slice_last(qkv, 2 * d, a.dv);
      const CoreGrads g = core_vjp(q, k, v, mul(dy, gamma));
      if (needs[0]) r[0] = concat({g.dq, g.dk, g.dv}, -1);
      if (needs[1]) r[1] = reshape(sum(mul(dy, g.o)), gamma.shape());
    }
    if (needs[2]) r[2] = dd[0];
    return r;
  };
  return record(
      "self_attention", {qkv, gamma, x}, y16 ? y.to(DType::BF16) : y,
      [a, off, ch, keep_p, gt, o, lse](const BackwardContext& c) {
        const Tensor dy = widened(c.dout);
        const Tensor p32 = widened(keep_p);
        Tensor dp = c.needs(0) ? Tensor::empty_like(p32) : Tensor();
        Tensor dg = c.needs(1) ? Tensor::empty_like(gt) : Tensor();
        if (dp.defined() || dg.defined()) {
          // bf16: rounded again from qkv (the projection's output, kept anyway; widened if bf16).
          const Tensor rounded = operand(ch, p32);
          backward(a, off, ch, rounded, rounded, rounded, o, lse, dy, gt, dp, dp, dp, dg);
        }
        if (dp.defined()) c.add(0, dp);
        if (dg.defined()) c.add(1, dg);
        if (c.needs(2)) c.add(2, c.dout);  // the residual
      },
      std::move(vjp));
}

std::vector<float> attention_rows(const Tensor& q, const Tensor& k,
                                  const std::vector<int64_t>& queries, int64_t d) {
  const Tensor qh = q.to(Device::CPU).to(DType::F32);
  AttnDims a;
  Tensor kh;
  int64_t k_off = 0;
  if (k.defined()) {
    kh = k.to(Device::CPU).to(DType::F32);
    GAN_CHECK(qh.ndim() == 3 && kh.ndim() == 3 && qh.dim(2) == kh.dim(2) && qh.dim(0) == kh.dim(0),
              fmt::format("attention_rows: expected q (B, Nq, d) and k (B, Nk, d), got {} and {}",
                          qh.shape().str(), kh.shape().str()));
    a.b = qh.dim(0), a.nq = qh.dim(1), a.nk = kh.dim(1), a.d = qh.dim(2);
    a.ldq = a.ldk = a.d;
  } else {
    GAN_CHECK(qh.ndim() == 3 && d >= 1 && qh.dim(2) > 2 * d,
              fmt::format("attention_rows: expected packed qkv (B, N, 2d + dv) with d = {}, got {}",
                          d, qh.shape().str()));
    kh = qh;
    k_off = d;
    a.b = qh.dim(0), a.nq = a.nk = qh.dim(1), a.d = d;
    a.ldq = a.ldk = qh.dim(2);
  }
  for (int64_t i : queries)
    GAN_CHECK(i >= 0 && i < a.nq,
              fmt::format("attention_rows: query {} out of range (N = {})", i, a.nq));
  const std::vector<double> rows =
      kernels::cpu::attention_rows<float>(a, qh.data<float>(), kh.data<float>() + k_off, queries);
  return std::vector<float>(rows.begin(), rows.end());
}

void set_attention_timer(std::function<double(const std::string&)> timer) {
  ChoiceState& st = choice_state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.timer = std::move(timer);
  st.chosen.clear();
}

std::vector<std::string> attention_choice_log() {
  ChoiceState& st = choice_state();
  std::lock_guard<std::mutex> lock(st.mu);
  return st.log;
}

}  // namespace gan
