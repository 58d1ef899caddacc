// Modules on top of the ops: parameter and buffer registration (in PyTorch's state_dict order and
// names), train/eval mode, and the layers GANs use: Linear, Conv2d, ConvTranspose2d, BatchNorm2d,
// activations, and spectral normalisation of a layer's weight.
//
// Weight layouts (see engine/ops.h): Linear (out, in) as PyTorch; Conv2d (out, kh, kw, in);
// ConvTranspose2d (in, kh, kw, out). to_torch_layout / from_torch_layout convert conv weights to
// and from PyTorch's OIHW / IOHW (both are a move of our last axis to position 1).
//
// Spectral norm: spectral_norm(layer) makes the layer use W / sigma(W), with PyTorch's names
// (nn.utils.spectral_norm): the parameter becomes "weight_orig", buffers "weight_u", "weight_v".
// A SpectralNormGroup runs the power iterations of many layers in one launch; a layer whose
// group has not run for the current forward computes its own.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"

namespace gan::nn {

// How a parameter or buffer maps onto PyTorch's equivalent (checkpoints convert with it).
struct TorchLayout {
  enum Kind {
    kSame,          // identical layout
    kConv,          // ours (A, kh, kw, B), PyTorch (A, B, kh, kw)
    kLinearInHWC,   // Linear weight (out, H*W*C): our columns in (h, w, c) order, PyTorch's (c, h,
                    // w)
    kLinearOutHWC,  // Linear weight or bias whose rows are (h, w, c), PyTorch's (c, h, w)
    kSnVConv,       // a conv's spectral-norm v: ours (kh, kw, in), PyTorch's (in, kh, kw)
  };
  Kind kind = kSame;
  int64_t h = 0, w = 0, c = 0;  // kLinear*: the feature map; kSnVConv: kh, kw, in
};

class Module {
 public:
  virtual ~Module() = default;

  // Parameters and buffers of this module and its children, depth first in registration order,
  // named like PyTorch's state_dict ("block.conv.weight"; a child registered with an empty name
  // adds no prefix).
  std::vector<std::pair<std::string, Var>> named_parameters(const std::string& prefix = "") const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(const std::string& prefix = "") const;
  std::vector<Var> parameters() const;
  int64_t num_parameters() const;
  // PyTorch layout of every parameter and buffer by state_dict name.
  std::vector<std::pair<std::string, TorchLayout>> named_layouts(
      const std::string& prefix = "") const;

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

 protected:
  Var register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }
  friend class SpectralNormGroup;
  // Renames a registered parameter or buffer (spectral norm: weight -> weight_orig).
  void rename_parameter(const std::string& from, const std::string& to);
  void replace_module(const std::string& name, std::shared_ptr<Module> m);
  // Records how a registered parameter or buffer maps onto PyTorch's layout.
  void set_layout(const std::string& name, TorchLayout layout);

 private:
  std::vector<std::pair<std::string, TorchLayout>> layouts_;
  std::vector<std::pair<std::string, Var>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A module with one input and one output.
class Layer : public Module {
 public:
  virtual Var forward(const Var& x) = 0;
  Var operator()(const Var& x) { return forward(x); }
};

// Layers applied in order, named "0", "1", ... like PyTorch's nn.Sequential (layers without
// parameters still take an index).
class Sequential : public Layer {
 public:
  template <class L>
  std::shared_ptr<L> add(std::shared_ptr<L> layer) {
    layers_.push_back(layer);
    return register_module(std::to_string(layers_.size() - 1), layer);
  }
  Var forward(const Var& x) override;
  size_t size() const { return layers_.size(); }
  Layer& operator[](size_t i) { return *layers_[i]; }
  // Fuses each BatchNorm2d, Conv2d or ConvTranspose2d followed by ReLU or LeakyReLU (positive
  // slope), and each Conv2d or ConvTranspose2d followed by Tanh, into one op with the activation
  // (the activation's slot becomes an Identity: names and indices do not change).
  void fuse_batchnorm_activations();

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

// (B, ...) -> (B, dims...): PyTorch's view after a Linear (in NHWC order: see TorchLayout).
class Reshape : public Layer {
 public:
  explicit Reshape(std::vector<int64_t> dims) : dims_(std::move(dims)) {}
  Var forward(const Var& x) override;

 private:
  std::vector<int64_t> dims_;
};

// x -> x (a layer fused into its predecessor keeps its index as an Identity).
class Identity : public Layer {
 public:
  Var forward(const Var& x) override { return x; }
};

// (B, ...) -> (B, rest).
// PyTorch's nn.MaxPool2d (no parameters); by default nn.MaxPool2d(2): 2x2 windows, stride 2.
class MaxPool2d : public Layer {
 public:
  explicit MaxPool2d(const Pool2dOptions& o = {}) : o_(o) {}
  Var forward(const Var& x) override { return max_pool2d(x, o_); }

 private:
  Pool2dOptions o_;
};

class Flatten : public Layer {
 public:
  Var forward(const Var& x) override { return flatten(x, 1); }
};

// A layer with a weight that spectral normalisation can wrap.
class WeightLayer : public Layer {
 public:
  const Var& weight() const { return weight_; }
  const Var& bias() const { return bias_; }
  bool has_spectral_norm() const { return sn_ != nullptr; }
  SpectralNormLayer* sn_state() { return sn_ ? &sn_->layer : nullptr; }
  // The weight this forward uses: W, or W / sigma under spectral norm.
  Var effective_weight();
  // Turns spectral normalisation on (u, v drawn from gen, normalised).
  void enable_spectral_norm(Generator& gen, int iterations = 1, double eps = 1e-12);
  // Called by SpectralNormGroup: the normalised weight for the next forward.
  void set_pending_weight(Var w) { sn_->pending = std::move(w); }

 protected:
  // rows/cols/transposed: the weight as a matrix (PyTorch's convention), see SpectralNormLayer.
  void set_matrix_view(int64_t rows, int64_t cols, bool transposed) {
    rows_ = rows, cols_ = cols, transposed_ = transposed;
  }
  // PyTorch order of the spectral-norm u and v of this layer (conv weights and Linear layers over
  // a feature map differ); applies now or when spectral norm is enabled later.
  void set_sn_u_layout(TorchLayout l) {
    sn_u_layout_ = l;
    if (sn_) set_layout("weight_u", l);
  }
  void set_sn_v_layout(TorchLayout l) {
    sn_v_layout_ = l;
    if (sn_) set_layout("weight_v", l);
  }
  Var weight_, bias_;

 private:
  struct SnState {
    SpectralNormLayer layer;
    int iterations = 1;
    double eps = 1e-12;
    Var pending;
  };
  friend class SpectralNormGroup;
  std::unique_ptr<SnState> sn_;
  TorchLayout sn_u_layout_, sn_v_layout_;
  int64_t rows_ = 0, cols_ = 0;
  bool transposed_ = false;
};

// Returns layer after enabling spectral norm on it.
template <class L>
std::shared_ptr<L> spectral_norm(std::shared_ptr<L> layer, Generator& gen, int iterations = 1) {
  layer->enable_spectral_norm(gen, iterations);
  return layer;
}

// PyTorch's nn.Linear: w (out, in), b (out), both U(-1/sqrt(in), 1/sqrt(in)).
class Linear : public WeightLayer {
 public:
  Linear(int64_t in, int64_t out, bool bias, Generator& gen);
  Var forward(const Var& x) override;
  // The outputs (rows of weight and bias) are an (h, w, c) feature map that PyTorch views as
  // (c, h, w); or the inputs (weight columns) are a flattened NHWC (h, w, c) map.
  void mark_rows_hwc(int64_t h, int64_t w, int64_t c);
  void mark_cols_hwc(int64_t h, int64_t w, int64_t c);
};

// PyTorch's nn.Conv2d (NHWC): w (out, k, k, in), U(-1/sqrt(in k k), +) for w and b.
class Conv2d : public WeightLayer {
 public:
  Conv2d(int64_t in, int64_t out, int kernel, int stride, int padding, bool bias, Generator& gen);
  // A kh x kw kernel with any strides and paddings (InceptionV3's 1x7, 7x1, ...).
  Conv2d(int64_t in, int64_t out, int kernel_h, int kernel_w, const Conv2dOptions& o, bool bias,
         Generator& gen);
  Var forward(const Var& x) override;
  Conv2dOptions options;
};

// PyTorch's nn.ConvTranspose2d (NHWC): w (in, k, k, out), U(-1/sqrt(out k k), +) (PyTorch's
// fan-in of a transposed conv weight is its dim 1).
class ConvTranspose2d : public WeightLayer {
 public:
  ConvTranspose2d(int64_t in, int64_t out, int kernel, int stride, int padding, bool bias,
                  Generator& gen, int output_padding = 0);
  Var forward(const Var& x) override;
  Conv2dOptions options;
};

// PyTorch's nn.BatchNorm2d (weight 1, bias 0, running_mean 0, running_var 1), with an optional
// fused activation.
class BatchNorm2d : public Layer {
 public:
  BatchNorm2d(int64_t channels, Device device, double eps = 1e-5, double momentum = 0.1,
              Activation act = Activation::kNone, double slope = 0.2);
  Var forward(const Var& x) override;
  const Var& weight() const { return weight_; }
  const Var& bias() const { return bias_; }
  const Tensor& running_mean() const { return running_mean_; }
  const Tensor& running_var() const { return running_var_; }
  // PyTorch's num_batches_tracked: a host-side count (a CPU f64 scalar buffer; checkpoints store
  // it as int64), incremented by every training forward.
  int64_t batches_tracked() const { return int64_t(*num_batches_tracked_.data<double>()); }
  double eps, momentum;
  Activation act;
  double slope;

 private:
  Var weight_, bias_;
  Tensor running_mean_, running_var_, num_batches_tracked_;
};

// Runs the spectral norm of many layers in one op (one launch on the GPU) and hands each layer
// its W / sigma for the next forward.
class SpectralNormGroup {
 public:
  // Adds a layer with spectral norm (all layers of a group share iterations and eps).
  void add(WeightLayer* layer);
  // Adds every spectral-norm WeightLayer found in m (depth first).
  void add_all(Module& m);
  // One spectral_norm op for every layer; each layer's next forward uses its result.
  void run(bool training);
  size_t size() const { return layers_.size(); }
  const std::vector<WeightLayer*>& layers() const { return layers_; }

 private:
  std::vector<WeightLayer*> layers_;
};

// Activation layers (no parameters).
class ReLU : public Layer {
 public:
  Var forward(const Var& x) override { return relu(x); }
};
class LeakyReLU : public Layer {
 public:
  explicit LeakyReLU(double s = 0.2) : slope(s) {}
  Var forward(const Var& x) override { return leaky_relu(x, slope); }
  double slope;
};
class Tanh : public Layer {
 public:
  Var forward(const Var& x) override { return tanh(x); }
};
class Sigmoid : public Layer {
 public:
  Var forward(const Var& x) override { return sigmoid(x); }
};

// Conv weights between our layout (A, kh, kw, B) and PyTorch's (A, B, kh, kw) (CPU copies).
Tensor to_torch_layout(const Tensor& w);
Tensor from_torch_layout(const Tensor& w);
// A conv weight's spectral-norm v (cols = kh*kw*in in our order) in PyTorch's (in, kh, kw) order
// and back. Transposed-conv and linear v are already in PyTorch's order.
Tensor sn_v_to_torch(const Tensor& v, int64_t kh, int64_t kw, int64_t in);
Tensor sn_v_from_torch(const Tensor& v, int64_t kh, int64_t kw, int64_t in);

}  // namespace gan::nn
