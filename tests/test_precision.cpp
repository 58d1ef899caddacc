// bf16 precision (engine/device.h Precision::kBF16): each product op (convolution, transposed
// convolution, linear, matmul, attention) against the float64 reference within a bf16 bound and
// far from float32's error (so the mode is really on), the rounding points (results and filter
// gradients are bf16 values), and the CUDA path (the interpreter, or a GPU) against the CPU's.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/adam.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/weight_cast.h"
#include "kernels/bf16.h"
#include "kernels/cpu/backend.h"
#include "tests/harness.h"

using namespace gan;

namespace {

struct In {
  In(Shape s, bool p = false, std::function<float(int64_t)> v = {})
      : shape(s), param(p), value(std::move(v)) {}
  Shape shape;
  bool param = false;  // a parameter (its gradient buffer is accumulated into)
  // Fixed values by index instead of uniform draws in [-1, 1].
  std::function<float(int64_t)> value;
};

// A bias of +-20 by channel: the pre-activations stay far from ReLU's kink (|conv| < 20 here), so
// that bf16's forward error flips no mask element and the gradients measure the products' error.
float far_bias(int64_t i) { return i % 2 ? -20.f : 20.f; }

struct Bf16Case {
  std::string name;
  std::vector<In> inputs;
  std::function<Var(const std::vector<Var>&)> fn;
  // Normalised error bounds against the float64 reference: forward and gradients in bf16.
  double bound_fwd, bound_bwd;
};

struct Result {
  Tensor out;                 // CPU f32
  std::vector<Tensor> grads;  // CPU f32, one per input
};

// The case's output and input gradients for upstream gradient r, on `dev` in `dtype` (F64 only
// on the CPU) and precision p; values are the same draws whatever the run.
Result run(const Bf16Case& c, Device dev, DType dtype, Precision p,
           const std::vector<Tensor>& values, const Tensor& r) {
  PrecisionScope scope(p);
  std::vector<Var> vars;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    Tensor v = (dtype == DType::F64 ? values[i].to(DType::F64) : values[i].clone()).to(dev);
    vars.push_back(c.inputs[i].param ? parameter(v) : Var(v, true));
  }
  const Var out = c.fn(vars);
  Tensor rr = (dtype == DType::F64 ? r.to(DType::F64) : r.clone()).to(dev);
  backward(out, rr);
  Result res;
  auto host = [](const Tensor& t) {
    const Tensor h = t.to(Device::CPU);
    return h.dtype() == DType::F32 ? h : h.to(DType::F32);
  };
  res.out = host(out.value());
  for (const Var& v : vars) res.grads.push_back(host(v.grad()));
  return res;
}

Tensor uniform(const Shape& s, Generator& g) {
  Tensor t = Tensor::empty(s, Device::CPU);
  g.uniform_(t, -1.0, 1.0);
  return t;
}

// In bf16 precision a float32 tensor cast to bf16 (an activation as the op before would give
// it); as it is otherwise (float32 and float64 runs).
Var as_activation(const Var& v) {
  return precision() == Precision::kBF16 && v.value().dtype() == DType::F32 ? cast(v, DType::BF16)
                                                                            : v;
}

std::vector<Bf16Case> cases() {
  Conv2dOptions same;
  same.pad_h = same.pad_w = 1;
  same.act = Activation::kRelu;
  Conv2dOptions down;
  down.stride_h = down.stride_w = 2, down.pad_h = down.pad_w = 1;
  down.act = Activation::kLeakyRelu, down.slope = 0.2;
  Conv2dOptions up = down;
  up.act = Activation::kTanh;
  Conv2dOptions plain;
  Conv2dOptions leaky3;
  leaky3.act = Activation::kLeakyRelu;
  return {
      {"conv2d 3x3 + bias + relu",
       {{Shape{2, 6, 6, 8}}, {Shape{16, 3, 3, 8}, true}, {Shape{16}, true, far_bias}},
       [same](const std::vector<Var>& v) { return conv2d(v[0], v[1], v[2], same); },
       0.02,
       0.03},
      {"conv2d 4x4 stride 2 + bias + leaky relu",
       {{Shape{2, 8, 8, 4}}, {Shape{8, 4, 4, 4}, true}, {Shape{8}, true, far_bias}},
       [down](const std::vector<Var>& v) { return conv2d(v[0], v[1], v[2], down); },
       0.02,
       0.03},
      {"conv_transpose2d 4x4 stride 2 + bias + tanh",
       {{Shape{2, 4, 4, 16}}, {Shape{16, 4, 4, 4}, true}, {Shape{4}, true}},
       [up](const std::vector<Var>& v) { return conv_transpose2d(v[0], v[1], v[2], up); },
       0.02,
       0.03},
      {"conv2d 3x3 + bias + leaky relu, odd sizes (the epilogue's scalar path)",
       {{Shape{1, 5, 5, 3}}, {Shape{3, 3, 3, 3}, true}, {Shape{3}, true, far_bias}},
       [leaky3](const std::vector<Var>& v) { return conv2d(v[0], v[1], v[2], leaky3); },
       0.02,
       0.03},
      // (tanh: smooth, so that bf16's forward error flips no ReLU mask element without a bias)
      {"conv_transpose2d 4x4 stride 2 + tanh, no bias, on a bf16 activation",
       {{Shape{2, 4, 4, 16}}, {Shape{16, 4, 4, 4}, true}},
       [up](const std::vector<Var>& v) {
         return conv_transpose2d(as_activation(v[0]), v[1], Var(), up);
       },
       0.02,
       0.03},
      {"conv2d 3x3, no bias",
       {{Shape{2, 5, 5, 8}}, {Shape{8, 3, 3, 8}, true}},
       [plain](const std::vector<Var>& v) { return conv2d(v[0], v[1], Var(), plain); },
       0.02,
       0.03},
      {"linear + bias",
       {{Shape{6, 32}}, {Shape{8, 32}, true}, {Shape{8}, true}},
       [](const std::vector<Var>& v) { return linear(v[0], v[1], v[2]); },
       0.02,
       0.03},
      {"matmul batched",
       {{Shape{3, 5, 16}}, {Shape{3, 16, 7}}},
       [](const std::vector<Var>& v) { return matmul(v[0], v[1]); },
       0.02,
       0.03},
      // bf16 activations: the input is cast to bf16 first (a bf16 activation from the op before),
      // then batch norm's bf16 kernels (float32 statistics) and the elementwise ops' fallback.
      {"batch_norm + leaky relu on a bf16 activation",
       {{Shape{4, 3, 3, 8}}, {Shape{8}, true}, {Shape{8}, true, far_bias}},
       [](const std::vector<Var>& v) {
         const Tensor rm = Tensor::zeros(Shape{8}, v[1].device(), v[1].value().dtype());
         const Tensor rv = Tensor::full(Shape{8}, 1.0, v[1].device(), v[1].value().dtype());
         return batch_norm(as_activation(v[0]), v[1], v[2], rm, rv, true, 0.1, 1e-5,
                           Activation::kLeakyRelu, 0.2);
       },
       0.02,
       0.03},
      {"leaky_relu, add, mul, max_pool2d on bf16 activations",
       {{Shape{2, 4, 4, 8}}, {Shape{2, 4, 4, 8}}},
       [](const std::vector<Var>& v) {
         const Var a = as_activation(v[0]), b = as_activation(v[1]);
         return max_pool2d(mul(add(leaky_relu(a, 0.2), b), a));
       },
       0.02,
       0.03},
      {"tanh, sigmoid, sub, div, scale on bf16 activations, odd size (the scalar kernels)",
       {{Shape{3, 5, 7}},
        {Shape{3, 5, 7}, false, [](int64_t i) { return 1.5f + 0.01f * float(i); }}},
       [](const std::vector<Var>& v) {
         const Var a = as_activation(v[0]), b = as_activation(v[1]);
         return scale(div(sub(tanh(a), sigmoid(b)), b), 0.5);
       },
       0.02,
       0.03},
      {"mul and sub with a broadcast (per-channel) bf16 operand",
       {{Shape{2, 3, 3, 8}}, {Shape{8}}},
       [](const std::vector<Var>& v) {
         const Var a = as_activation(v[0]), c = as_activation(v[1]);
         return sub(mul(a, c), c);
       },
       0.02,
       0.03},
      {"self_attention (packed qkv, gamma, residual)",
       {{Shape{2, 16, 16}}, {Shape{1}, true}, {Shape{2, 16, 8}}},
       [](const std::vector<Var>& v) { return self_attention(v[0], 4, v[1], v[2]); },
       0.02,
       0.03},
      {"self_attention on bf16 activations",
       {{Shape{2, 16, 16}}, {Shape{1}, true}, {Shape{2, 16, 8}}},
       [](const std::vector<Var>& v) {
         return self_attention(as_activation(v[0]), 4, v[1], as_activation(v[2]));
       },
       0.02,
       0.03},
  };
}

bool all_bf16_values(const Tensor& t) {
  const auto v = t.to_vector();
  for (float x : v)
    if (kernels::round_bf16(x) != x) return false;
  return true;
}

struct Prepared {
  std::vector<Tensor> values;
  Tensor r;
};

Prepared prepare(const Bf16Case& c, uint64_t seed) {
  Generator g(seed, Device::CPU);
  Prepared p;
  for (const In& in : c.inputs) {
    Tensor t = uniform(in.shape, g);
    if (in.value)
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = in.value(i);
    p.values.push_back(t);
  }
  // The upstream gradient has the output's shape: one float64 forward to learn it.
  const Result shape_run = [&] {
    PrecisionScope scope(Precision::kFP32);
    std::vector<Var> vars;
    for (const Tensor& v : p.values) vars.push_back(Var(v.clone(), false));
    return Result{c.fn(vars).value(), {}};
  }();
  p.r = uniform(shape_run.out.shape(), g);
  return p;
}

}  // namespace

TEST_CASE("bf16 precision: each product op within its bf16 bound of the float64 reference",
          "[bf16][precision][cpu]") {
  uint64_t seed = 11;
  for (const Bf16Case& c : cases()) {
    INFO("case: " << c.name);
    const Prepared p = prepare(c, seed++);
    const Result ref = run(c, Device::CPU, DType::F64, Precision::kFP32, p.values, p.r);
    const Result f32 = run(c, Device::CPU, DType::F32, Precision::kFP32, p.values, p.r);
    const Result b16 = run(c, Device::CPU, DType::F32, Precision::kBF16, p.values, p.r);
    // In bf16 precision a float64 run is the reference still (no bf16 on float64).
    const Result ref_b = run(c, Device::CPU, DType::F64, Precision::kBF16, p.values, p.r);
    CHECK(gan::test::max_rel_error(ref_b.out, ref.out) < 1e-12);

    const double e_f32 = gan::test::max_rel_error(f32.out, ref.out);
    const double e_fwd = gan::test::max_rel_error(b16.out, ref.out);
    double e_bwd = 0, e_bwd_f32 = 0;
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      INFO("gradient of input " << i);
      const double e = gan::test::max_rel_error(b16.grads[i], ref.grads[i]);
      e_bwd = std::max(e_bwd, e);
      e_bwd_f32 = std::max(e_bwd_f32, gan::test::max_rel_error(f32.grads[i], ref.grads[i]));
      CHECK(e < c.bound_bwd);
    }
    std::printf(
        "  bf16 %-46s forward %.2e (bound %.0e; fp32 %.1e)  gradients %.2e (bound %.0e; "
        "fp32 %.1e)\n",
        c.name.c_str(), e_fwd, c.bound_fwd, e_f32, e_bwd, c.bound_bwd, e_bwd_f32);
    CHECK(e_fwd < c.bound_fwd);
    // The mode is on: bf16's rounding (2^-9 relative) shows, float32's (2^-24) does not.
    CHECK(e_fwd > 1e-4);
    CHECK(e_bwd > 1e-4);
    CHECK(e_f32 < 1e-5);
    CHECK(e_bwd_f32 < 1e-5);
  }
}

TEST_CASE("bf16 precision: products are rounded to bf16 where the GPU rounds them",
          "[bf16][precision][cpu]") {
  // Without bias or activation a convolution's output, its input gradient and its filter gradient
  // (added into the zeroed parameter buffer) are bf16 values widened; the same for linear and
  // matmul. In float32 precision they are not.
  for (const Bf16Case& c : cases()) {
    if (c.name != "conv2d 3x3, no bias" && c.name != "matmul batched") continue;
    INFO("case: " << c.name);
    const Prepared p = prepare(c, 5);
    const Result b16 = run(c, Device::CPU, DType::F32, Precision::kBF16, p.values, p.r);
    CHECK(all_bf16_values(b16.out));
    for (const Tensor& g : b16.grads) CHECK(all_bf16_values(g));
    const Result f32 = run(c, Device::CPU, DType::F32, Precision::kFP32, p.values, p.r);
    CHECK_FALSE(all_bf16_values(f32.out));
  }
  // Saved operands are bf16 tensors: the weight's float32 master is untouched by a bf16 forward.
  Generator g(3, Device::CPU);
  const Tensor w0 = uniform(Shape{8, 32}, g);
  Var w = parameter(w0.clone());
  {
    PrecisionScope scope(Precision::kBF16);
    const Var y = linear(Var(uniform(Shape{4, 32}, g)), w);
    backward(sum(y));
  }
  CHECK(gan::test::bitwise_equal(w.value(), w0));
  CHECK_FALSE(all_bf16_values(w.value()));
}

TEST_CASE("bf16 precision: the CUDA path equals the CPU's rounding points",
          "[bf16][precision][cuda]") {
  GAN_REQUIRE_GPU();
  // The interpreter's cuDNN and cuBLAS compute like the CPU references: convolutions and GEMMs
  // agree to float32 rounding. On a GPU float32 accumulation in another order may move a result
  // across a bf16 rounding boundary: one bf16 step (2^-8 of the element) at most. Attention's
  // tensor-core kernels also round P and dS (the CPU keeps them exact): within the bf16 bound.
  const bool interp = gan::test::on_interpreter();
  uint64_t seed = 11;
  for (const Bf16Case& c : cases()) {
    INFO("case: " << c.name);
    const Prepared p = prepare(c, seed++);
    // The CPU side is the reference (kernels/<op>.h, float32 with the bf16 rounding points), like
    // the interpreter's cuDNN and cuBLAS: the CPU backend sums in float32 in its own order.
    Result cpu;
    {
      kernels::cpu::ReferenceScope ref;
      cpu = run(c, Device::CPU, DType::F32, Precision::kBF16, p.values, p.r);
    }
    const Result gpu = run(c, Device::CUDA, DType::F32, Precision::kBF16, p.values, p.r);
    const bool attn = c.name.find("attention") != std::string::npos;
    // Batch norm's CUDA kernels sum in another order than the CPU's double loops: a float32
    // difference may move a bf16 output across a rounding boundary, in the interpreter too.
    const bool own_sums = c.name.find("batch_norm") != std::string::npos;
    const double tol = attn ? 0.02 : (interp && !own_sums) ? 1e-6 : 1.0 / 128;
    const double e_fwd = gan::test::max_rel_error(gpu.out, cpu.out);
    double e_bwd = 0;
    for (size_t i = 0; i < c.inputs.size(); ++i)
      e_bwd = std::max(e_bwd, gan::test::max_rel_error(gpu.grads[i], cpu.grads[i]));
    std::printf("  bf16 cuda vs cpu %-40s forward %.2e  gradients %.2e (tolerance %.0e)\n",
                c.name.c_str(), e_fwd, e_bwd, tol);
    CHECK(e_fwd <= tol);
    CHECK(e_bwd <= tol);
    if (!attn) {
      // Results are bf16 values there too (where no bias or activation follows).
      if (c.name == "conv2d 3x3, no bias" || c.name == "matmul batched") {
        CHECK(all_bf16_values(gpu.out));
        for (const Tensor& g : gpu.grads) CHECK(all_bf16_values(g));
      }
    }
  }
}

TEST_CASE("bf16 activations: products and batch norm return bf16, gradients keep their dtypes",
          "[bf16][precision][cpu][cuda]") {
  // A discriminator's first layers: conv (float32 image in), batch norm + leaky relu, linear,
  // a float32 loss. In bf16 precision the activations and their gradients are bf16; the image's
  // gradient, the parameters' and the loss are float32. In float32 precision nothing is bf16.
  for (const Device dev : {Device::CPU, Device::CUDA}) {
    if (dev == Device::CUDA && !gan::test::have_gpu()) continue;
    for (const Precision p : {Precision::kBF16, Precision::kFP32}) {
      INFO("device " << device_name(dev) << ", precision " << int(p));
      PrecisionScope scope(p);
      Generator g(7, Device::CPU);
      Var x(uniform(Shape{2, 8, 8, 3}, g).to(dev), true);
      Var w1 = parameter(uniform(Shape{8, 4, 4, 3}, g).to(dev));
      Var gamma = parameter(Tensor::full(Shape{8}, 1.0, dev));
      Var beta = parameter(Tensor::zeros(Shape{8}, dev));
      Var w2 = parameter(uniform(Shape{1, 128}, g).to(dev));
      const Tensor rm = Tensor::zeros(Shape{8}, dev), rv = Tensor::full(Shape{8}, 1.0, dev);
      Conv2dOptions o;
      o.stride_h = o.stride_w = 2, o.pad_h = o.pad_w = 1;
      Var y1 = conv2d(x, w1, Var(), o);
      Var y2 = batch_norm(y1, gamma, beta, rm, rv, true, 0.1, 1e-5, Activation::kLeakyRelu, 0.2);
      Var y3 = linear(flatten(y2), w2);
      const Var loss = mean(y3);
      y1.retain_grad();
      y2.retain_grad();
      const DType act = p == Precision::kBF16 ? DType::BF16 : DType::F32;
      CHECK(y1.value().dtype() == act);
      CHECK(y2.value().dtype() == act);
      CHECK(y3.value().dtype() == act);
      CHECK(loss.value().dtype() == DType::F32);
      CHECK(rm.dtype() == DType::F32);
      backward(loss);
      CHECK(y1.grad().dtype() == act);
      CHECK(y2.grad().dtype() == act);
      for (const Var* v : {&x, &w1, &gamma, &beta, &w2}) CHECK(v->grad().dtype() == DType::F32);
      if (p == Precision::kBF16) {
        // Half the bytes per activation.
        CHECK(y1.value().nbytes() == size_t(y1.value().numel()) * 2);
        // The running statistics moved (float32 updates from the bf16 activation).
        CHECK(rm.to_vector() != std::vector<float>(8, 0.f));
      }
    }
  }
}

TEST_CASE("bf16 weight casts: one rounding per weight and optimiser step, the same results",
          "[bf16][precision][cpu][cuda]") {
  // Three optimiser steps of a tiny critic run twice in one forward each (as D on real and fake
  // images), with and without a WeightCastScope: bitwise the same losses, outputs after each step
  // (which must see the updated weights) and final weights; with the scope each weight is rounded
  // once before the step and once after it.
  for (const Device dev : {Device::CPU, Device::CUDA}) {
    if (dev == Device::CUDA && !gan::test::have_gpu()) continue;
    INFO("device " << device_name(dev));
    auto run = [dev](bool scoped) {
      PrecisionScope precision_scope(Precision::kBF16);
      Generator g(5, Device::CPU);
      Var w = parameter(uniform(Shape{8, 3, 3, 4}, g).to(dev));
      Var w2 = parameter(uniform(Shape{1, 128}, g).to(dev));
      const Tensor x1 = uniform(Shape{2, 4, 4, 4}, g).to(dev);
      const Tensor x2 = uniform(Shape{2, 4, 4, 4}, g).to(dev);
      AdamOptions ao;
      ao.lr = 1e-2;
      Adam opt({w, w2}, ao);
      Conv2dOptions o;
      o.pad_h = o.pad_w = 1;
      o.act = Activation::kLeakyRelu;
      const auto critic = [&](const Tensor& x) {
        return linear(flatten(conv2d(Var(x), w, Var(), o)), w2);
      };
      std::vector<float> out;
      for (int it = 0; it < 3; ++it) {
        std::optional<WeightCastScope> scope;
        if (scoped) scope.emplace();
        const Var loss = mean(add(critic(x1), critic(x2)));
        zero_grad({w, w2});
        backward(loss);
        opt.step();
        const Var after = mean(critic(x1));  // in the same scope: the new weights
        if (scoped) {
          // w and w2 made before the step and again after it; reused: both in the second
          // forward, w2 in the two linear backward passes (the conv's input needs no gradient).
          CHECK(weight_cast_counts() == std::pair<int64_t, int64_t>{4, 4});
        }
        out.push_back(loss.value().item());
        out.push_back(after.value().item());
      }
      for (const Var* p : {&w, &w2})
        for (float v : p->value().to_vector()) out.push_back(v);
      return out;
    };
    const std::vector<float> with = run(true), without = run(false);
    REQUIRE(with.size() == without.size());
    CHECK(with == without);
  }
}
