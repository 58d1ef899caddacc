#include "engine/autograd.h"

#include <fmt/format.h>

#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/common.h"
#include "kernels/elementwise.h"

namespace gan {

namespace {
thread_local bool t_grad_enabled = true;

// dst += src (same shape, device, dtype).
void add_into(Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (dst.is_cuda()) {
    kernels::axpy_cuda(1.f, src.data<float>(), dst.data<float>(), n, cuda::stream());
  } else {
    dispatch_cpu(dst, "accumulate_grad", [&](auto t) {
      using T = decltype(t);
      kernels::axpy_cpu<T>(1.0, src.data<T>(), dst.data<T>(), n);
    });
  }
}
}  // namespace

Var make_output(Tensor value, bool requires_grad) {
  Var v;
  v.value_ = std::move(value);
  v.node_ = std::make_shared<GradNode>();
  v.node_->shape = v.value_.shape();
  v.node_->requires_grad = requires_grad;
  v.node_->is_leaf = !requires_grad;
  return v;
}

Var::Var(Tensor value, bool requires_grad) : value_(std::move(value)) {
  node_ = std::make_shared<GradNode>();
  node_->shape = value_.shape();
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
  for (const Var& v : vars) {
    if (!v.node()) continue;
    if (v.is_param())
      v.node()->grad.zero_();
    else
      v.node()->grad = Tensor();
  }
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

void accumulate_grad(GradNode& node, const Tensor& g, const char* op) {
  GAN_CHECK(g.shape() == node.shape,
            fmt::format("backward of {}: gradient of shape {} for an input of shape {}", op,
                        g.shape().str(), node.shape.str()));
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

std::vector<Var> grad(const std::vector<Var>& outputs, const std::vector<Var>& inputs,
                      const std::vector<Var>& grad_outputs, bool create_graph) {
  GAN_CHECK(
      grad_outputs.empty() || grad_outputs.size() == outputs.size(),
      fmt::format("grad: {} grad_outputs for {} outputs", grad_outputs.size(), outputs.size()));
  for (const Var& in : inputs)
    GAN_CHECK(in.requires_grad(), "grad: an input does not require grad");
  // Nodes on a path from an input: the inputs, then every output of an entry that reads one.
  std::unordered_set<const GradNode*> relevant;
  for (const Var& in : inputs) relevant.insert(in.node().get());
  auto& entries = tape().entries();
  const size_t n0 = entries.size();  // VJPs append entries: walk only the ones before
  std::vector<bool> active(n0, false);
  for (size_t k = 0; k < n0; ++k) {
    for (const auto& p : entries[k].inputs)
      if (p && relevant.count(p.get())) active[k] = true;
    if (active[k])
      for (const auto& o : entries[k].outputs) relevant.insert(o.get());
  }
  std::unordered_map<const GradNode*, Var> g;
  auto accumulate = [&](const GradNode* n, const Var& v) {
    auto it = g.find(n);
    if (it == g.end())
      g.emplace(n, v);
    else
      it->second = add(it->second, v);
  };
  std::optional<NoGradGuard> no_grad;
  if (!create_graph) no_grad.emplace();
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Var& out = outputs[i];
    Var seed;
    if (!grad_outputs.empty() && grad_outputs[i].defined()) {
      check_shape("grad", "grad_outputs", grad_outputs[i].value(), out.shape());
      seed = grad_outputs[i];
    } else {
      GAN_CHECK(out.value().numel() == 1, "grad: output of shape " + out.shape().str() +
                                              " is not a scalar; pass its grad_outputs");
      seed = Var(Tensor::full(out.shape(), 1.0, out.device(), out.value().dtype()));
    }
    if (out.node() && relevant.count(out.node().get())) accumulate(out.node().get(), seed);
  }
  std::vector<Var> douts;
  std::vector<bool> needs;
  for (size_t k = n0; k-- > 0;) {
    if (!active[k]) continue;
    // Copy what the walk needs: VJPs append to (and may reallocate) the tape.
    const char* op = entries[k].op;
    const std::vector<std::shared_ptr<GradNode>> ins = entries[k].inputs;
    const std::vector<std::shared_ptr<GradNode>> outs = entries[k].outputs;
    douts.clear();
    bool any = false;
    for (const auto& o : outs) {
      auto it = g.find(o.get());
      douts.push_back(it == g.end() ? Var() : it->second);
      any = any || it != g.end();
    }
    if (!any) continue;
    const VjpFn vjp = entries[k].vjp;
    GAN_CHECK(bool(vjp), fmt::format("grad: {} has no double backward (no VJP); it cannot lie "
                                     "between the inputs and the outputs of grad()",
                                     op));
    needs.clear();
    for (const auto& p : ins) needs.push_back(p && relevant.count(p.get()));
    std::vector<Var> gin;
    {
      const std::string range = std::string(op) + " vjp";
      NvtxRange nvtx(range.c_str());
      gin = vjp(douts, needs);
    }
    GAN_CHECK(gin.size() == ins.size(),
              fmt::format("grad: the VJP of {} returned {} gradients for {} inputs", op, gin.size(),
                          ins.size()));
    for (size_t i = 0; i < ins.size(); ++i) {
      if (!needs[i] || !gin[i].defined()) continue;
      GAN_CHECK(gin[i].shape() == ins[i]->shape,
                fmt::format("grad: the VJP of {} gave a gradient of shape {} for an input of "
                            "shape {}",
                            op, gin[i].shape().str(), ins[i]->shape.str()));
      accumulate(ins[i].get(), gin[i]);
    }
  }
  std::vector<Var> result;
  for (const Var& in : inputs) {
    auto it = g.find(in.node().get());
    result.push_back(it != g.end()
                         ? it->second
                         : Var(Tensor::zeros(in.shape(), in.device(), in.value().dtype())));
  }
  return result;
}

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
  std::vector<GradNode*> ins;
  std::vector<Tensor> held;
  std::vector<const Tensor*> douts;
  for (size_t k = entries.size(); k-- > 0;) {
    TapeEntry& e = entries[k];
    bool any = false;
    for (const auto& o : e.outputs) any = any || o->grad.defined();
    if (!any) continue;
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
  }
  if (!retain_tape) tape().clear();
}

}  // namespace gan
