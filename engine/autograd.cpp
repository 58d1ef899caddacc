#include "engine/autograd.h"

#include <fmt/format.h>

#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "engine/dispatch.h"
#include "engine/tensor_ops.h"
#include "kernels/bf16.h"
#include "kernels/common.h"
#include "kernels/cpu/ops.h"
#include "kernels/elementwise.h"

namespace gan {

namespace {
thread_local bool t_grad_enabled = true;

// dst += src (same shape, device, dtype).
void add_into(Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (dst.dtype() == DType::BF16) {
    if (dst.is_cuda())
      return kernels::bf16_add_cuda(src.data<uint16_t>(), dst.data<uint16_t>(), n, cuda::stream());
    const uint16_t* s = src.data<uint16_t>();
    uint16_t* d = dst.data<uint16_t>();
    for (int64_t i = 0; i < n; ++i)
      d[i] = kernels::f32_to_bf16(kernels::bf16_to_f32(d[i]) + kernels::bf16_to_f32(s[i]));
    return;
  }
  if (dst.is_cuda()) {
    kernels::axpy_cuda(1.f, src.data<float>(), dst.data<float>(), n, cuda::stream());
  } else {
    dispatch_cpu(dst, "accumulate_grad", [&](auto t) {
      using T = decltype(t);
      kernels::cpu::axpy<T>(1.0, src.data<T>(), dst.data<T>(), n);
    });
  }
}
}  // namespace

Var make_output(Tensor value, bool requires_grad) {
  Var v;
  v.value_ = std::move(value);
  v.node_ = std::make_shared<GradNode>();
  v.node_->shape = v.value_.shape();
  v.node_->dtype = v.value_.dtype();
  v.node_->requires_grad = requires_grad;
  v.node_->is_leaf = !requires_grad;
  return v;
}

Var::Var(Tensor value, bool requires_grad) : value_(std::move(value)) {
  node_ = std::make_shared<GradNode>();
  node_->shape = value_.shape();
  node_->dtype = value_.dtype();
  node_->requires_grad = requires_grad;
}

Var Var::detach() const { return Var(value_, false); }

void Var::clear_grad() {
  GAN_CHECK(!node_->is_param,
            "clear_grad: '" + node_->name +
                "' is a parameter, whose gradient buffer is permanent (optimizers "
                "hold it); use zero_grad");
  node_->grad = Tensor();
}

Var parameter(Tensor value, std::string name) {
  Var v(std::move(value), true);
  v.node()->is_param = true;
  v.node()->name = std::move(name);
  v.node()->grad = Tensor::zeros_like(v.value());
  return v;
}

void zero_grad(const std::vector<Var>& vars) {
  std::vector<kernels::BufferChunk> cuda_grads;
  for (const Var& v : vars) {
    if (!v.node()) continue;
    if (!v.is_param()) {
      v.node()->grad = Tensor();
      continue;
    }
    Tensor& g = v.node()->grad;
    if (g.is_cuda() && g.dtype() == DType::F32 && g.numel() > 0)
      cuda_grads.push_back({g.data<float>(), nullptr, g.numel()});
    else
      g.zero_();
  }
  if (cuda_grads.empty()) return;
  // One launch for the model (a table made once, outside capture), else one memset each.
  const DeviceChunkTable t =
      cuda_grads.size() > 1 ? device_chunk_table(cuda_grads) : DeviceChunkTable{};
  if (t.table) return kernels::zero_chunks_cuda(t.table, t.count, cuda::stream());
  for (const Var& v : vars)
    if (v.node() && v.is_param() && v.node()->grad.is_cuda()) v.node()->grad.zero_();
}

NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }
bool grad_enabled() { return t_grad_enabled; }
EnableGradGuard::EnableGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { t_grad_enabled = prev_; }

Tape& tape() {
  thread_local Tape t;
  return t;
}

void accumulate_grad(GradNode& node, const Tensor& g_in, const char* op) {
  GAN_CHECK(g_in.shape() == node.shape,
            fmt::format("backward of {}: gradient of shape {} for an input of shape {}", op,
                        g_in.shape().str(), node.shape.str()));
  const bool convert =
      g_in.dtype() != node.dtype && (g_in.dtype() == DType::BF16 || node.dtype == DType::BF16);
  const Tensor g = convert ? g_in.to(node.dtype) : g_in;
  if (!node.grad.defined()) {
    node.grad = g;  // alias: nobody writes into a gradient that is not a parameter buffer
  } else if (node.is_param) {
    check_same_device(op, {&node.grad, &g});
    add_into(node.grad, g);
  } else {
    Tensor sum = node.grad.clone();
    add_into(sum, g);
    node.grad = sum;
  }
}

void BackwardContext::add(int i, const Tensor& g) const {
  GradNode* n = inputs_[size_t(i)];
  if (n && n->requires_grad) accumulate_grad(*n, g, op);
}

Tensor* BackwardContext::accum_buffer(int i) const {
  GradNode* n = inputs_[size_t(i)];
  return (n && n->is_param) ? &n->grad : nullptr;
}

std::vector<Var> record_multi(const char* op, const std::vector<Var>& inputs,
                              std::vector<Tensor> outs, BackwardFn backward, VjpFn vjp) {
  bool any = false;
  if (t_grad_enabled)
    for (const Var& v : inputs) any = any || v.requires_grad();
  std::vector<Var> results;
  for (Tensor& t : outs) results.push_back(make_output(std::move(t), any));
  if (!any) return results;
  TapeEntry e;
  e.op = op;
  e.inputs.reserve(inputs.size());
  for (const Var& v : inputs) e.inputs.push_back(v.requires_grad() ? v.node() : nullptr);
  for (const Var& r : results) e.outputs.push_back(r.node());
  e.backward = std::move(backward);
  e.vjp = std::move(vjp);
  tape().entries().push_back(std::move(e));
  return results;
}

Var record(const char* op, const std::vector<Var>& inputs, Tensor out, BackwardFn backward,
           VjpFn vjp) {
  std::vector<Tensor> outs;
  outs.push_back(std::move(out));
  return record_multi(op, inputs, std::move(outs), std::move(backward), std::move(vjp))[0];
}

Var record(const char* op, std::initializer_list<Var> inputs, Tensor out, BackwardFn backward,
           VjpFn vjp) {
  return record(op, std::vector<Var>(inputs), std::move(out), std::move(backward), std::move(vjp));
}

void set_vjp(const Var& out, VjpFn vjp) {
  auto& entries = tape().entries();
  if (entries.empty() || !out.node()) return;
  for (const auto& o : entries.back().outputs)
    if (o == out.node()) {
      entries.back().vjp = std::move(vjp);
      return;
    }
}

namespace {
thread_local GradReadyHook t_grad_ready;
}  // namespace

void set_grad_ready_hook(GradReadyHook hook) { t_grad_ready = std::move(hook); }

void backward(const Var& root, const Tensor& dout, bool retain_tape) {
  GAN_CHECK(root.requires_grad(),
            "backward: the root does not require grad (no recorded op "
            "depends on a parameter, or it was computed under no_grad)");
  Tensor seed = dout;
  if (!seed.defined()) {
    GAN_CHECK(root.value().numel() == 1, "backward: root of shape " + root.shape().str() +
                                             " is not a scalar; pass its gradient");
    seed = Tensor::full(root.shape(), 1.0, root.device(), root.value().dtype());
  }
  check_shape("backward", "the root gradient", seed, root.shape());
  accumulate_grad(*root.node(), seed, "backward");

  auto& entries = tape().entries();
  // With a grad-ready hook: how many entries still to run take each parameter.
  std::unordered_map<GradNode*, int> uses;
  if (t_grad_ready)
    for (const TapeEntry& e : entries)
      for (const auto& p : e.inputs)
        if (p && p->is_param) ++uses[p.get()];
  auto ran = [&](const TapeEntry& e) {
    if (!t_grad_ready) return;
    for (const auto& p : e.inputs)
      if (p && p->is_param && --uses[p.get()] == 0) t_grad_ready(*p);
  };
  std::vector<GradNode*> ins;
  std::vector<Tensor> held;
  std::vector<const Tensor*> douts;
  for (size_t k = entries.size(); k-- > 0;) {
    TapeEntry& e = entries[k];
    bool any = false;
    for (const auto& o : e.outputs) any = any || o->grad.defined();
    if (!any) {
      ran(e);
      continue;
    }
    ins.clear();
    for (const auto& p : e.inputs) ins.push_back(p.get());
    // Hold the gradients: the closure may be the last user of their storage.
    held.clear();
    for (const auto& o : e.outputs) held.push_back(o->grad);
    douts.clear();
    for (const Tensor& t : held) douts.push_back(&t);
    {
      const std::string range = std::string(e.op) + " backward";
      NvtxRange nvtx(range.c_str());
      e.backward(BackwardContext(e.op, douts, ins));
    }
    for (const auto& o : e.outputs)
      if (!o->retain_grad && !o->is_leaf) o->grad = Tensor();
    ran(e);
  }
  if (!retain_tape) tape().clear();
}

}  // namespace gan
