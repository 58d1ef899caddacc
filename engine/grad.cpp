#include "engine/grad.h"

#include <fmt/format.h>

#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "engine/autocast.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "kernels/common.h"

namespace gan {

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
  auto accumulate = [&](const GradNode* n, const Var& v_in) {
    // A gradient has its value's dtype (bf16 activations: engine/autograd.h).
    const bool convert = v_in.value().dtype() != n->dtype &&
                         (v_in.value().dtype() == DType::BF16 || n->dtype == DType::BF16);
    const Var v = convert ? cast(v_in, n->dtype) : v_in;
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

}  // namespace gan
