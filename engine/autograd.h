// Tape autograd.
//
// A Var is a cheap handle: a value Tensor plus a shared GradNode that receives its gradient. Every
// differentiable op computes its output, then record()s one tape entry: the input nodes, the output
// node and a backward closure holding exactly the tensors that backward needs (an op that does not
// need a tensor does not keep it alive). backward(loss) seeds d loss = 1 and walks the tape in
// reverse; an entry whose output received a gradient calls its closure, which adds gradients to
// its inputs through BackwardContext::add (shape-checked). The tape is then cleared, releasing the
// saved tensors, unless retain_tape is set.
//
// Gradients: parameters own a persistent grad buffer that backward accumulates into in place and
// zero_grad() zeroes without reallocating. Other leaves and intermediates receive fresh tensors
// (accumulation never writes into a tensor that another node may alias). Intermediate gradients
// are dropped once their producer's backward has run, unless retain_grad() was called.
//
// Backward closures must treat `dout` as read-only: it may be aliased as another node's gradient.
//
// Higher order (grad with create_graph, as PyTorch's torch.autograd.grad(..., create_graph=True)):
// an op may record a second closure, its VJP, that computes the input gradients from the output
// gradients as Vars, written with differentiable ops. grad() walks the tape with those closures,
// so the gradients it returns are themselves on the tape, and a loss built from them (a gradient
// penalty) backpropagates to the parameters through the ordinary backward of the ops the VJPs
// used. An op without a VJP on the path is an error naming it.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace gan {

struct GradNode {
  Tensor grad;
  Shape shape;
  DType dtype = DType::F32;  // the value's: gradients are converted to it (bf16 activations)
  bool requires_grad = false;
  bool is_param = false;     // leaf with a persistent grad buffer
  bool retain_grad = false;  // keep the gradient of a non-leaf after backward
  bool is_leaf = true;
  std::string name;
};

class Var {
 public:
  Var() = default;
  // A leaf. requires_grad leaves receive gradients (as fresh tensors; see parameter()).
  explicit Var(Tensor value, bool requires_grad = false);

  bool defined() const { return value_.defined(); }
  const Tensor& value() const { return value_; }
  const Tensor& grad() const { return node_->grad; }
  bool requires_grad() const { return node_ && node_->requires_grad; }
  bool is_param() const { return node_ && node_->is_param; }
  const Shape& shape() const { return value_.shape(); }
  Device device() const { return value_.device(); }
  const std::string& name() const { return node_->name; }
  Var& set_name(std::string name) {
    node_->name = std::move(name);
    return *this;
  }
  // Same value, no gradient: the returned Var is a leaf that stops backpropagation.
  Var detach() const;
  void retain_grad() { node_->retain_grad = true; }
  // Drops the gradient of a non-parameter (a parameter's buffer is permanent: zero_grad it).
  void clear_grad();
  const std::shared_ptr<GradNode>& node() const { return node_; }

 private:
  friend Var make_output(Tensor value, bool requires_grad);
  Tensor value_;
  std::shared_ptr<GradNode> node_;
};

// A trainable parameter: a leaf that requires grad with a zeroed gradient buffer of its shape.
Var parameter(Tensor value, std::string name = {});
// Zeroes parameter gradient buffers in place (no reallocation); other Vars drop their gradient.
void zero_grad(const std::vector<Var>& vars);

// While alive, ops record nothing (grad mode off). Nests.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};
bool grad_enabled();

// While alive, ops record (grad mode on), also inside a NoGradGuard. Nests.
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

class BackwardContext {
 public:
  const char* op;
  const Tensor& dout;  // gradient of the op's (first) output (read-only)

  // Gradient of output i of a multi-output op; undefined when that output received none.
  const Tensor& dout_at(int i) const { return *douts_[size_t(i)]; }

  // Does input i want a gradient?
  bool needs(int i) const { return inputs_[size_t(i)] && inputs_[size_t(i)]->requires_grad; }
  // Adds g to input i's gradient. g must have input i's shape.
  void add(int i, const Tensor& g) const;
  // Input i's persistent gradient buffer when it is a parameter, for ops that can accumulate in
  // place (a GEMM with beta = 1); nullptr otherwise (use add()).
  Tensor* accum_buffer(int i) const;

  BackwardContext(const char* op_name, const std::vector<const Tensor*>& douts,
                  const std::vector<GradNode*>& inputs)
      : op(op_name), dout(*douts[0]), douts_(douts), inputs_(inputs) {}

 private:
  const std::vector<const Tensor*>& douts_;
  const std::vector<GradNode*>& inputs_;
};

using BackwardFn = std::function<void(const BackwardContext&)>;
// douts[i]: the gradient of output i (undefined when it received none); needs[i]: whether input
// i's gradient is wanted. Returns one Var per input (undefined where not wanted).
using VjpFn =
    std::function<std::vector<Var>(const std::vector<Var>& douts, const std::vector<bool>& needs)>;

// Wraps `out` as the result of `op` on `inputs`. If grad mode is on and an input requires grad,
// appends a tape entry whose closure computes the input gradients; else returns a plain Var.
Var record(const char* op, std::initializer_list<Var> inputs, Tensor out, BackwardFn backward,
           VjpFn vjp = nullptr);
Var record(const char* op, const std::vector<Var>& inputs, Tensor out, BackwardFn backward,
           VjpFn vjp = nullptr);
// An op with several outputs (one tape entry). Its closure runs when any output received a
// gradient; dout_at(i) is undefined for the others.
std::vector<Var> record_multi(const char* op, const std::vector<Var>& inputs,
                              std::vector<Tensor> outs, BackwardFn backward, VjpFn vjp = nullptr);

// Sets the VJP of the entry that produced `out` (the last one recorded), for ops whose VJP reads
// their own output. Does nothing when `out` was not recorded (grad mode off, no input needing a
// gradient).
void set_vjp(const Var& out, VjpFn vjp);

struct TapeEntry {
  const char* op;
  std::vector<std::shared_ptr<GradNode>> inputs;  // null where the input needs no gradient
  std::vector<std::shared_ptr<GradNode>> outputs;
  BackwardFn backward;
  VjpFn vjp;  // may be empty: the op has no double backward
};

class Tape {
 public:
  std::vector<TapeEntry>& entries() { return entries_; }
  size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

 private:
  std::vector<TapeEntry> entries_;
};

// The calling thread's tape.
Tape& tape();

// Backpropagates from root. dout defaults to 1 for a one-element root; otherwise it must have
// root's shape. Clears the tape unless retain_tape.
void backward(const Var& root, const Tensor& dout = Tensor(), bool retain_tape = false);

// While set on this thread, backward() calls hook(p) for every parameter p (a node with
// is_param) that an entry of the tape takes as an input, as soon as its gradient is final: right
// after the last such entry has run (entries run in reverse order; one that receives no gradient
// counts as run). Data-parallel training starts each gradient's all-reduce there
// (dist::GradReducer). An empty hook removes it.
using GradReadyHook = std::function<void(GradNode& param)>;
void set_grad_ready_hook(GradReadyHook hook);

// Adds g into node's gradient (shape-checked, naming op on mismatch). Exposed for optimizers and
// tests; ops use BackwardContext::add. A gradient has its value's dtype: g of another dtype is
// converted first (f32 <-> bf16, as PyTorch's engine casts a gradient to its input's dtype), and
// bf16 gradients add rounded to bf16.
void accumulate_grad(GradNode& node, const Tensor& g, const char* op);

}  // namespace gan
