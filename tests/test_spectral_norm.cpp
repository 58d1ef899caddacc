// spectral_norm: harness sweeps (eval and training, single layers and groups, the transposed
// storage of conv_transpose2d weights, > 1024 columns, odd sizes), sigma against the top singular
// value from an independent Jacobi eigensolver, the discriminator's two forwards before one
// backward, the persistent u/v/sigma, errors; on a GPU: bitwise repeatability run to run, GPU
// against CPU on the SAGAN 64 px layer group, CUDA-graph replay.
//
// How the finite-difference check of the harness applies (backward treats u and v as constants,
// PyTorch's behaviour, while the forward's u and v depend on W through the power iteration):
//   - eval cases: u and v are fixed inputs (built identically by every evaluation of the case),
//     sigma = u^T W v is a function of W alone, and dW = (G - <G, W_sn> u v^T) / sigma is its
//     exact derivative: the finite differences must match to 1e-6.
//   - training cases (iterations 1 and 3): each evaluation starts the power iteration from the
//     exact top left singular vector u1(W) of the weight it is given (computed here in double, to
//     convergence). Then v = v1, u = u1, sigma = s1(W) for any number of iterations, so the
//     output is W / s1(W), whose derivative is exactly the formula with (u1, v1): the dependence
//     of u, v on W drops out at the fixed point because sigma = |W v| is stationary in v there.
//     The finite differences must match to 1e-6 as well. Training from a u that is not converged
//     (where the formula is PyTorch's approximation, not the derivative) is checked separately
//     against the formula with the u, v, sigma the call used.
// Weights are drawn in [-0.5, 1.5] (mean 0.5): a clear gap between the top two singular values
// (the mean's rank-one part dominates), so the reference power iteration converges quickly, and
// sigma = u^T W v with the positive fixed u, v of the eval cases stays far from 0.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "kernels/spectral_norm.h"
#include "tests/harness.h"

using namespace gan;
using gan::test::Input;
using gan::test::OpCase;

namespace {

// ---------------------------------------------------------------------------------------------
// Double-precision reference, independent of the op's code

// W (rows, cols) viewed through its storage (W itself, or W^T when transposed).
struct RefMat {
  int64_t rows = 0, cols = 0;
  bool transposed = false;
  std::vector<double> w;  // storage, rows * cols values
  double at(int64_t i, int64_t j) const {
    return transposed ? w[size_t(j * rows + i)] : w[size_t(i * cols + j)];
  }
};

double norm2(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

std::vector<double> mat_t_vec(const RefMat& W, const std::vector<double>& u) {  // W^T u (cols)
  std::vector<double> s(size_t(W.cols), 0.0);
  for (int64_t i = 0; i < W.rows; ++i)
    for (int64_t j = 0; j < W.cols; ++j) s[size_t(j)] += W.at(i, j) * u[size_t(i)];
  return s;
}

std::vector<double> mat_vec(const RefMat& W, const std::vector<double>& v) {  // W v (rows)
  std::vector<double> t(size_t(W.rows), 0.0);
  for (int64_t i = 0; i < W.rows; ++i)
    for (int64_t j = 0; j < W.cols; ++j) t[size_t(i)] += W.at(i, j) * v[size_t(j)];
  return t;
}

std::vector<double> scaled(std::vector<double> x, double s) {
  for (double& v : x) v *= s;
  return x;
}

struct RefSn {
  std::vector<double> u, v;
  double sigma = 0;
};

// PyTorch's power iteration from u: v = W^T u / |.|, u = W v / |.|, sigma = u^T W v.
RefSn ref_power_iteration(const RefMat& W, std::vector<double> u, int iterations,
                          double eps = 1e-12) {
  RefSn r;
  for (int it = 0; it < iterations; ++it) {
    const std::vector<double> s = mat_t_vec(W, u);
    r.v = scaled(s, 1.0 / std::max(norm2(s), eps));
    const std::vector<double> t = mat_vec(W, r.v);
    u = scaled(t, 1.0 / std::max(norm2(t), eps));
  }
  r.u = u;
  const std::vector<double> t = mat_vec(W, r.v);
  r.sigma = 0;
  for (int64_t i = 0; i < W.rows; ++i) r.sigma += r.u[size_t(i)] * t[size_t(i)];
  return r;
}

// The top left singular vector, by power iteration to convergence from a fixed start.
std::vector<double> top_left_singular_vector(const RefMat& W) {
  std::vector<double> u(size_t(W.rows));
  for (size_t i = 0; i < u.size(); ++i) u[i] = 1.0 + 0.37 * std::sin(double(i) + 1.0);
  u = scaled(u, 1.0 / norm2(u));
  for (int it = 0; it < 20000; ++it) {
    const std::vector<double> s = mat_t_vec(W, u);
    const std::vector<double> v = scaled(s, 1.0 / std::max(norm2(s), 1e-300));
    const std::vector<double> t = mat_vec(W, v);
    const std::vector<double> next = scaled(t, 1.0 / std::max(norm2(t), 1e-300));
    double change = 0;
    for (size_t i = 0; i < u.size(); ++i) change = std::max(change, std::fabs(next[i] - u[i]));
    u = next;
    if (!(change > 1e-16)) break;  // converged (or NaN: a planted non-finite input)
  }
  return u;
}

// Largest singular value of W: Jacobi eigenvalue method (cyclic sweeps of plane rotations) on
// the smaller Gram matrix W W^T or W^T W, in double.
double jacobi_top_singular_value(const RefMat& W) {
  const bool by_rows = W.rows <= W.cols;
  const int64_t k = by_rows ? W.rows : W.cols;
  std::vector<double> B(size_t(k * k), 0.0);
  auto a = [&](int64_t p, int64_t q) -> double& { return B[size_t(p * k + q)]; };
  for (int64_t p = 0; p < k; ++p)
    for (int64_t q = 0; q < k; ++q) {
      double s = 0;
      if (by_rows)
        for (int64_t j = 0; j < W.cols; ++j) s += W.at(p, j) * W.at(q, j);
      else
        for (int64_t i = 0; i < W.rows; ++i) s += W.at(i, p) * W.at(i, q);
      a(p, q) = s;
    }
  double frob = 0;
  for (double x : B) frob += x * x;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < k; ++p)
      for (int64_t q = p + 1; q < k; ++q) off += a(p, q) * a(p, q);
    if (off <= 1e-30 * frob) break;
    for (int64_t p = 0; p < k; ++p)
      for (int64_t q = p + 1; q < k; ++q) {
        const double apq = a(p, q);
        if (apq == 0) continue;
        const double theta = (a(q, q) - a(p, p)) / (2 * apq);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int64_t r = 0; r < k; ++r) {
          if (r == p || r == q) continue;
          const double arp = a(r, p), arq = a(r, q);
          a(r, p) = a(p, r) = c * arp - s * arq;
          a(r, q) = a(q, r) = s * arp + c * arq;
        }
        a(p, p) -= t * apq;
        a(q, q) += t * apq;
        a(p, q) = a(q, p) = 0;
      }
  }
  double top = 0;
  for (int64_t p = 0; p < k; ++p) top = std::max(top, a(p, p));
  return std::sqrt(top);
}

// dW (storage order) = (G - <G, W_sn> u v^T) / sigma.
std::vector<double> ref_grad(const RefMat& shape, const std::vector<double>& G,
                             const std::vector<double>& w_sn, const std::vector<double>& u,
                             const std::vector<double>& v, double sigma) {
  double c = 0;
  for (size_t e = 0; e < G.size(); ++e) c += G[e] * w_sn[e];
  std::vector<double> dw(G.size());
  for (int64_t i = 0; i < shape.rows; ++i)
    for (int64_t j = 0; j < shape.cols; ++j) {
      const size_t e = size_t(shape.transposed ? j * shape.rows + i : i * shape.cols + j);
      dw[e] = (G[e] - c * u[size_t(i)] * v[size_t(j)]) / sigma;
    }
  return dw;
}

// max |got - want| / max(max |want|, 1e-3), as the harness normalises.
double rel_err(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double scale = 1e-3, err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    err = std::max(err, std::fabs(got[i] - want[i]));
  }
  return err / scale;
}

std::vector<double> add_vecs(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] + b[i];
  return r;
}

// ---------------------------------------------------------------------------------------------
// Tensors

// Deterministic values in [lo, hi), rounded to float (identical in f32 and f64 runs).
std::vector<double> rand_values(int64_t n, uint64_t seed, double lo, double hi) {
  Generator gen(seed);
  Tensor t = Tensor::empty(Shape{n}, Device::CPU, DType::F64);
  gen.uniform_(t, lo, hi);
  std::vector<double> v = t.to_double_vector();
  for (double& x : v) x = double(float(x));
  return v;
}

// x / |x| rounded to float.
std::vector<double> unit(std::vector<double> x) {
  const double n = norm2(x);
  for (double& v : x) v = double(float(v / n));
  return x;
}

Tensor make_tensor(const std::vector<double>& v, const Shape& shape, Device device, DType dtype) {
  const Tensor t64 = Tensor::from_vector(v, shape);
  if (dtype == DType::F64) return t64;
  return t64.to(DType::F32).to(device);
}

Tensor make_vec(const std::vector<double>& v, Device device, DType dtype) {
  return make_tensor(v, Shape{int64_t(v.size())}, device, dtype);
}

// A layer's geometry: the weight's storage shape and the matrix view.
struct Geo {
  Shape shape;
  int64_t rows, cols;
  bool transposed;
};

Geo conv(int64_t out, int64_t k, int64_t in) {
  return {Shape{out, k, k, in}, out, k * k * in, false};
}
Geo conv_t(int64_t in, int64_t k, int64_t out) {
  return {Shape{in, k, k, out}, out, k * k * in, true};
}
Geo dense(int64_t out, int64_t in) { return {Shape{out, in}, out, in, false}; }

RefMat ref_mat(const Geo& g, std::vector<double> w) {
  RefMat m;
  m.rows = g.rows, m.cols = g.cols, m.transposed = g.transposed, m.w = std::move(w);
  return m;
}

SpectralNormLayer make_layer(const Var& w, const Geo& g, const std::vector<double>& u,
                             const std::vector<double>& v) {
  SpectralNormLayer l;
  l.weight = w;
  l.rows = g.rows, l.cols = g.cols, l.transposed = g.transposed;
  const Tensor& wv = w.value();
  l.u = make_vec(u, wv.device(), wv.dtype());
  l.v = make_vec(v, wv.device(), wv.dtype());
  l.sigma = Tensor::zeros(Shape{1}, wv.device(), wv.dtype());
  return l;
}

// The outputs as one Var: the output itself for one layer, else the flattened outputs
// concatenated.
Var join(const std::vector<Var>& outs) {
  if (outs.size() == 1) return outs[0];
  std::vector<Var> flat;
  for (const Var& o : outs) flat.push_back(reshape(o, Shape{-1}));
  return concat(flat, 0);
}

// ---------------------------------------------------------------------------------------------
// Harness sweeps

struct CaseLayer {
  Geo geo;
  bool param;
};

OpCase make_case(const std::string& name, const std::vector<CaseLayer>& ls, bool training,
                 int iterations) {
  OpCase c;
  c.name = name;
  for (const CaseLayer& l : ls) {
    Input in;
    in.shape = l.geo.shape;
    in.lo = -0.5, in.hi = 1.5;
    in.param = l.param;
    if (l.geo.rows * l.geo.cols == 1) in.kinks = {0.0};  // W_sn = sign(w)
    c.inputs.push_back(in);
  }
  c.fn = [ls, training, iterations](const std::vector<Var>& x) {
    std::vector<SpectralNormLayer> layers;
    for (size_t i = 0; i < ls.size(); ++i) {
      const Geo& g = ls[i].geo;
      // Eval: fixed positive unit u, v. Training: u = u1(W) (see the top of the file); v is
      // overwritten by the first iteration.
      const std::vector<double> v0 = unit(rand_values(g.cols, 200 + i, 0.5, 1.5));
      std::vector<double> u0 = unit(rand_values(g.rows, 100 + i, 0.5, 1.5));
      if (training) {
        u0 = top_left_singular_vector(ref_mat(g, x[i].value().to_double_vector()));
        if (x[i].value().dtype() == DType::F32)
          for (double& e : u0) e = double(float(e));
      }
      layers.push_back(make_layer(x[i], g, u0, v0));
    }
    return join(spectral_norm(layers, training, iterations));
  };
  // GPU vs CPU: the default 1e-5 (float32 dot products of up to 1100 terms and the norm and
  // sigma reductions, against the CPU's double accumulation): not yet observed on a GPU.
  return c;
}

// A group of layers of different sizes: > 1024 columns (two column chunks on the GPU), a
// transposed layer with > 256 storage rows (two row chunks), odd sizes, 1 x 1, parameters and
// plain leaves (accumulate into the gradient buffer vs add()).
std::vector<CaseLayer> group_layers() {
  return {{dense(16, 1100), true},
          {conv_t(130, 2, 9), false},
          {dense(33, 17), true},
          {dense(1, 1), false},
          {conv(5, 3, 7), true}};
}

std::vector<OpCase> spectral_norm_cases() {
  std::vector<OpCase> cases;
  for (bool training : {false, true}) {
    const std::string mode = training ? "train" : "eval";
    const int it1 = 1, it3 = 3;
    cases.push_back(make_case(mode + " 1x1", {{dense(1, 1), true}}, training, it1));
    cases.push_back(make_case(mode + " 3x5", {{dense(3, 5), false}}, training, it1));
    cases.push_back(make_case(mode + " 7x1 it3", {{dense(7, 1), true}}, training, it3));
    cases.push_back(make_case(mode + " conv 64x4x4x3", {{conv(64, 4, 3), true}}, training, it1));
    cases.push_back(
        make_case(mode + " conv_transpose 6x2x2x5", {{conv_t(6, 2, 5), true}}, training, it3));
    cases.push_back(make_case(mode + " group", group_layers(), training, it1));
    if (training) cases.push_back(make_case(mode + " group it3", group_layers(), training, it3));
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// Matrices with a planted top singular value: uniform [-1, 1) noise plus alpha a b^T with unit
// a, b and alpha = 2 (sqrt(rows) + sqrt(cols)): s2 / s1 is about 0.3.
std::vector<double> planted(const Geo& g, uint64_t seed) {
  std::vector<double> w = rand_values(g.rows * g.cols, seed, -1, 1);
  const std::vector<double> a = unit(rand_values(g.rows, seed + 1, -1, 1));
  const std::vector<double> b = unit(rand_values(g.cols, seed + 2, -1, 1));
  const double alpha = 2 * (std::sqrt(double(g.rows)) + std::sqrt(double(g.cols)));
  for (int64_t i = 0; i < g.rows; ++i)
    for (int64_t j = 0; j < g.cols; ++j) {
      const size_t e = size_t(g.transposed ? j * g.rows + i : i * g.cols + j);
      w[e] = double(float(w[e] + alpha * a[size_t(i)] * b[size_t(j)]));
    }
  return w;
}

// sigma after 50 power iterations (one call for all layers) against Jacobi, relative tol.
void check_sigma_vs_jacobi(Device device, DType dtype, double tol) {
  const std::vector<Geo> geos = {dense(8, 13),      conv(40, 3, 4), conv(64, 4, 3),
                                 conv_t(10, 2, 24), dense(1, 9),    dense(17, 1)};
  std::vector<SpectralNormLayer> layers;
  std::vector<double> want;
  for (size_t i = 0; i < geos.size(); ++i) {
    const Geo& g = geos[i];
    const std::vector<double> w = planted(g, 1000 + 10 * i);
    want.push_back(jacobi_top_singular_value(ref_mat(g, w)));
    const Var wv(make_tensor(w, g.shape, device, dtype));
    layers.push_back(make_layer(wv, g, unit(rand_values(g.rows, 7 + i, -1, 1)),
                                unit(rand_values(g.cols, 9 + i, -1, 1))));
  }
  (void)spectral_norm(layers, true, 50);
  for (size_t i = 0; i < geos.size(); ++i) {
    const double got = layers[i].sigma.to_double_vector()[0];
    INFO("layer " << i << " " << geos[i].shape.str() << ": sigma " << got << ", Jacobi "
                  << want[i]);
    CHECK(std::fabs(got - want[i]) <= tol * want[i]);
  }
}

// Snapshot of a layer's persistent state after a call.
struct State {
  std::vector<double> u, v;
  double sigma;
};
State snapshot(const SpectralNormLayer& l) {
  return {l.u.to_double_vector(), l.v.to_double_vector(), l.sigma.to_double_vector()[0]};
}

// The discriminator's pattern: two training forwards (u changes between them), both outputs in
// one loss, one backward. Returns the gradients; checks them against the sum of the two formula
// gradients, each with its own call's u, v, sigma.
std::vector<std::vector<double>> two_forwards_one_backward(Device device,
                                                           std::vector<State>* states = nullptr) {
  const std::vector<Geo> geos = {conv(12, 3, 5), conv_t(7, 2, 11)};
  std::vector<Var> ws;
  std::vector<SpectralNormLayer> layers;
  std::vector<RefMat> mats;
  for (size_t i = 0; i < geos.size(); ++i) {
    const Geo& g = geos[i];
    const std::vector<double> w = rand_values(g.rows * g.cols, 50 + i, -1, 1);
    mats.push_back(ref_mat(g, w));
    ws.push_back(parameter(make_tensor(w, g.shape, device, DType::F32)));
    layers.push_back(make_layer(ws.back(), g, unit(rand_values(g.rows, 60 + i, -1, 1)),
                                unit(rand_values(g.cols, 70 + i, -1, 1))));
  }
  const std::vector<Var> out1 = spectral_norm(layers, true, 1);
  std::vector<State> s1, s2;
  for (const auto& l : layers) s1.push_back(snapshot(l));
  const std::vector<Var> out2 = spectral_norm(layers, true, 1);
  for (const auto& l : layers) s2.push_back(snapshot(l));
  Var loss;
  std::vector<std::vector<double>> r1, r2;
  for (size_t i = 0; i < geos.size(); ++i) {
    r1.push_back(rand_values(geos[i].rows * geos[i].cols, 80 + i, -1, 1));
    r2.push_back(rand_values(geos[i].rows * geos[i].cols, 90 + i, -1, 1));
    const Var R1(make_tensor(r1[i], geos[i].shape, device, DType::F32));
    const Var R2(make_tensor(r2[i], geos[i].shape, device, DType::F32));
    const Var term = add(sum(mul(out1[i], R1)), sum(mul(out2[i], R2)));
    loss = loss.defined() ? add(loss, term) : term;
  }
  backward(loss);
  std::vector<std::vector<double>> grads;
  for (size_t i = 0; i < geos.size(); ++i) {
    INFO("layer " << i);
    // u moved between the calls (otherwise the test would not tell the two apart).
    CHECK(rel_err(s2[i].u, s1[i].u) > 1e-3);
    const std::vector<double> w1 = out1[i].value().to_double_vector();
    const std::vector<double> w2 = out2[i].value().to_double_vector();
    const std::vector<double> want =
        add_vecs(ref_grad(mats[i], r1[i], w1, s1[i].u, s1[i].v, s1[i].sigma),
                 ref_grad(mats[i], r2[i], w2, s2[i].u, s2[i].v, s2[i].sigma));
    const std::vector<double> wrong =
        add_vecs(ref_grad(mats[i], r1[i], w1, s2[i].u, s2[i].v, s2[i].sigma),
                 ref_grad(mats[i], r2[i], w2, s2[i].u, s2[i].v, s2[i].sigma));
    grads.push_back(ws[i].grad().to_double_vector());
    CHECK(rel_err(grads.back(), want) < 1e-5);
    CHECK(rel_err(grads.back(), wrong) > 1e-3);
    // Each call's W_sn is W / its own sigma.
    CHECK(rel_err(w1, scaled(mats[i].w, 1 / s1[i].sigma)) < 1e-6);
    CHECK(rel_err(w2, scaled(mats[i].w, 1 / s2[i].sigma)) < 1e-6);
  }
  if (states) {
    *states = s1;
    states->insert(states->end(), s2.begin(), s2.end());
  }
  return grads;
}

// The spectral-norm layers of the 64 px SAGAN: G's transposed convolutions and attention 1x1
// convolutions (C = 128, 64), D's convolutions and attention (C = 256, 512). About 7M weights.
std::vector<Geo> sagan_layers() {
  std::vector<Geo> g = {conv_t(128, 4, 512), conv_t(512, 4, 256), conv_t(256, 4, 128),
                        conv_t(128, 4, 64),  conv(64, 4, 3),      conv(128, 4, 64),
                        conv(256, 4, 128),   conv(512, 4, 256)};
  for (int64_t C : {128, 64, 256, 512}) {
    g.push_back(conv(C / 8, 1, C));
    g.push_back(conv(C / 8, 1, C));
    g.push_back(conv(C, 1, C));
  }
  return g;
}

// Runs training forward (iterations) + backward on `device` for the given layers from fixed
// initial values; returns every output, gradient and final u, v, sigma as host vectors.
std::vector<std::vector<double>> run_group(const std::vector<Geo>& geos, Device device,
                                           int iterations, bool training = true) {
  std::vector<SpectralNormLayer> layers;
  std::vector<Var> ws;
  for (size_t i = 0; i < geos.size(); ++i) {
    const Geo& g = geos[i];
    ws.push_back(parameter(make_tensor(rand_values(g.rows * g.cols, 300 + i, -0.1, 0.1), g.shape,
                                       device, DType::F32)));
    layers.push_back(make_layer(ws.back(), g, unit(rand_values(g.rows, 400 + i, -1, 1)),
                                unit(rand_values(g.cols, 500 + i, -1, 1))));
  }
  const std::vector<Var> outs = spectral_norm(layers, training, iterations);
  Var loss;
  for (size_t i = 0; i < geos.size(); ++i) {
    const Var R(make_tensor(rand_values(geos[i].rows * geos[i].cols, 600 + i, -1, 1), geos[i].shape,
                            device, DType::F32));
    const Var term = sum(mul(outs[i], R));
    loss = loss.defined() ? add(loss, term) : term;
  }
  backward(loss);
  std::vector<std::vector<double>> r;
  for (size_t i = 0; i < geos.size(); ++i) {
    r.push_back(outs[i].value().to_double_vector());
    r.push_back(ws[i].grad().to_double_vector());
    r.push_back(layers[i].u.to_double_vector());
    r.push_back(layers[i].v.to_double_vector());
    r.push_back(layers[i].sigma.to_double_vector());
  }
  return r;
}

}  // namespace

GAN_OP_TEST("spectral_norm", spectral_norm_cases)

TEST_CASE("spectral_norm: sigma matches the Jacobi top singular value", "[spectral_norm][cpu]") {
  check_sigma_vs_jacobi(Device::CPU, DType::F32, 1e-5);
  check_sigma_vs_jacobi(Device::CPU, DType::F64, 1e-10);
}

TEST_CASE("spectral_norm: the Jacobi reference finds known singular values",
          "[spectral_norm][cpu]") {
  // diag(3, 1, 2) with a row of zeros appended, in both layouts: top singular value 3.
  RefMat m;
  m.rows = 4, m.cols = 3;
  m.w = {3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0};
  CHECK(std::fabs(jacobi_top_singular_value(m) - 3) < 1e-12);
  m.transposed = true;
  m.rows = 3, m.cols = 4;
  CHECK(std::fabs(jacobi_top_singular_value(m) - 3) < 1e-12);
  // A rotated rank-one matrix 5 a b^T: 5.
  RefMat r;
  r.rows = 2, r.cols = 2;
  const double a0 = 0.6, a1 = 0.8, b0 = 1 / std::sqrt(2.0), b1 = -1 / std::sqrt(2.0);
  r.w = {5 * a0 * b0, 5 * a0 * b1, 5 * a1 * b0, 5 * a1 * b1};
  CHECK(std::fabs(jacobi_top_singular_value(r) - 5) < 1e-12);
}

TEST_CASE("spectral_norm: training backward uses the formula with the call's u v sigma",
          "[spectral_norm][cpu]") {
  // Not converged (random u, one iteration): the formula is PyTorch's gradient, not the
  // derivative of the power-iteration output. The parameter's buffer is pre-filled: accumulation.
  for (const Geo& g : {conv(9, 3, 2), conv_t(4, 2, 13), dense(1, 6)}) {
    INFO("weight " << g.shape.str());
    const std::vector<double> w = rand_values(g.rows * g.cols, 11, -1, 1);
    const RefMat m = ref_mat(g, w);
    Var wv = parameter(make_tensor(w, g.shape, Device::CPU, DType::F32));
    wv.node()->grad.fill_(0.25);
    const std::vector<double> u0 = unit(rand_values(g.rows, 12, -1, 1));
    std::vector<SpectralNormLayer> layers = {
        make_layer(wv, g, u0, unit(rand_values(g.cols, 13, -1, 1)))};
    const Var out = spectral_norm(layers, true, 1)[0];
    const State s = snapshot(layers[0]);
    // The stored u, v, sigma are one power iteration from u0.
    const RefSn ref = ref_power_iteration(m, u0, 1);
    CHECK(rel_err(s.u, ref.u) < 1e-6);
    CHECK(rel_err(s.v, ref.v) < 1e-6);
    CHECK(std::fabs(s.sigma - ref.sigma) < 1e-6 * ref.sigma);
    const std::vector<double> G = rand_values(g.rows * g.cols, 14, -1, 1);
    backward(sum(mul(out, Var(make_tensor(G, g.shape, Device::CPU, DType::F32)))));
    std::vector<double> want = ref_grad(m, G, out.value().to_double_vector(), s.u, s.v, s.sigma);
    for (double& x : want) x += 0.25;
    CHECK(rel_err(wv.grad().to_double_vector(), want) < 1e-5);
  }
}

TEST_CASE("spectral_norm: two forwards before one backward", "[spectral_norm][cpu]") {
  two_forwards_one_backward(Device::CPU);
}

TEST_CASE("spectral_norm: persistent u v sigma", "[spectral_norm][cpu]") {
  const Geo g = conv_t(5, 3, 4);
  const std::vector<double> w = rand_values(g.rows * g.cols, 21, -1, 1);
  const RefMat m = ref_mat(g, w);
  const Var wv = parameter(make_tensor(w, g.shape, Device::CPU, DType::F32));
  const std::vector<double> u0 = unit(rand_values(g.rows, 22, -1, 1));
  const std::vector<double> v0 = unit(rand_values(g.cols, 23, -1, 1));
  SpectralNormLayer layer = make_layer(wv, g, u0, v0);
  const void* u_mem = layer.u.raw();

  // Training: u, v are updated in place (a copy of the layer struct, as nn.cpp makes, shares
  // them), sigma is written, W_sn = W / sigma; two iterations from u0.
  std::vector<SpectralNormLayer> group = {layer};
  const Var out = spectral_norm(group, true, 2)[0];
  CHECK(group[0].u.raw() == u_mem);
  const State s = snapshot(layer);
  const RefSn ref = ref_power_iteration(m, u0, 2);
  CHECK(rel_err(s.u, u0) > 1e-3);
  CHECK(rel_err(s.v, v0) > 1e-3);
  CHECK(rel_err(s.u, ref.u) < 1e-6);
  CHECK(rel_err(s.v, ref.v) < 1e-6);
  CHECK(std::fabs(s.sigma - ref.sigma) < 1e-6 * ref.sigma);
  CHECK(rel_err(out.value().to_double_vector(), scaled(w, 1 / s.sigma)) < 1e-6);

  // The saved copy the backward reads equals the stored state of this call, even after a later
  // call moved the stored u, v.
  const State before = snapshot(layer);
  {
    NoGradGuard ng;
    (void)spectral_norm(group, true, 1);
  }
  CHECK(rel_err(snapshot(layer).u, before.u) > 1e-4);
  const std::vector<double> G = rand_values(g.rows * g.cols, 24, -1, 1);
  backward(sum(mul(out, Var(make_tensor(G, g.shape, Device::CPU, DType::F32)))));
  CHECK(rel_err(wv.grad().to_double_vector(), ref_grad(m, G, out.value().to_double_vector(),
                                                       before.u, before.v, before.sigma)) < 1e-5);

  // Eval: u, v unchanged (bitwise), sigma = u^T W v written, W_sn = W / sigma.
  const std::vector<float> u_before = layer.u.to_vector(), v_before = layer.v.to_vector();
  const State cur = snapshot(layer);
  const Var ev = spectral_norm(group, false)[0];
  CHECK(layer.u.to_vector() == u_before);
  CHECK(layer.v.to_vector() == v_before);
  const std::vector<double> t = mat_vec(m, cur.v);
  double want_sigma = 0;
  for (int64_t i = 0; i < g.rows; ++i) want_sigma += cur.u[size_t(i)] * t[size_t(i)];
  CHECK(std::fabs(snapshot(layer).sigma - want_sigma) < 1e-6 * std::fabs(want_sigma));
  CHECK(rel_err(ev.value().to_double_vector(), scaled(w, 1 / snapshot(layer).sigma)) < 1e-6);

  // Under no_grad nothing is recorded.
  tape().clear();
  {
    NoGradGuard ng;
    (void)spectral_norm(group, true, 1);
  }
  CHECK(tape().size() == 0);
  (void)spectral_norm(group, true, 1);
  CHECK(tape().size() == 1);  // one entry for the whole group
  tape().clear();
}

TEST_CASE("spectral_norm: errors name the op and the shapes", "[spectral_norm][cpu]") {
  const Geo g = dense(3, 4);
  const Var w =
      parameter(make_tensor(rand_values(12, 31, -1, 1), g.shape, Device::CPU, DType::F32));
  auto layer = [&] {
    return make_layer(w, g, unit(rand_values(3, 32, -1, 1)), unit(rand_values(4, 33, -1, 1)));
  };
  std::vector<SpectralNormLayer> ls = {layer()};
  ls[0].u = Tensor::zeros(Shape{4});
  CHECK_THROWS_WITH(spectral_norm(ls, true), Catch::Contains("spectral_norm") &&
                                                 Catch::Contains("(4,)") &&
                                                 Catch::Contains("(3,)"));
  ls = {layer()};
  ls[0].cols = 5;
  CHECK_THROWS_WITH(spectral_norm(ls, true), Catch::Contains("spectral_norm") &&
                                                 Catch::Contains("(3, 4)") &&
                                                 Catch::Contains("(3, 5)"));
  ls = {layer()};
  CHECK_THROWS_WITH(spectral_norm(ls, true, 0), Catch::Contains("spectral_norm: iterations"));
  ls = {layer(), layer()};  // the same weight twice
  CHECK_THROWS_WITH(spectral_norm(ls, true), Catch::Contains("spectral_norm: layer 1"));
  ls = {layer()};
  ls[0].sigma = Tensor::zeros(Shape{1}, Device::CPU, DType::F64);
  CHECK_THROWS_WITH(spectral_norm(ls, true), Catch::Contains("spectral_norm"));
  ls.clear();
  CHECK(spectral_norm(ls, true).empty());
  tape().clear();
}

// ---------------------------------------------------------------------------------------------
// GPU

TEST_CASE("spectral_norm: cuda sigma matches the Jacobi top singular value",
          "[spectral_norm][cuda]") {
  GAN_REQUIRE_GPU();
  check_sigma_vs_jacobi(Device::CUDA, DType::F32, 1e-5);
}

TEST_CASE("spectral_norm: cuda two forwards before one backward match the cpu",
          "[spectral_norm][cuda]") {
  GAN_REQUIRE_GPU();
  std::vector<State> sc, sg;
  const auto cpu = two_forwards_one_backward(Device::CPU, &sc);
  const auto gpu = two_forwards_one_backward(Device::CUDA, &sg);
  for (size_t i = 0; i < cpu.size(); ++i) CHECK(rel_err(gpu[i], cpu[i]) < 1e-5);
  for (size_t i = 0; i < sc.size(); ++i) {
    CHECK(rel_err(sg[i].u, sc[i].u) < 1e-5);
    CHECK(rel_err(sg[i].v, sc[i].v) < 1e-5);
    CHECK(std::fabs(sg[i].sigma - sc[i].sigma) < 1e-5 * sc[i].sigma);
  }
}

// [heavy]: slow under ASan; the main build runs it under both schedule seeds. Which block of a
// tile or layer finishes last (and combines the partial sums) varies from run to run (on the
// interpreter with the launch's block order); the results may not.
TEST_CASE("spectral_norm: cuda results are bitwise repeatable run to run",
          "[spectral_norm][cuda][heavy]") {
  GAN_REQUIRE_GPU();
  const std::vector<Geo> geos = sagan_layers();
  for (int iterations : {1, 3}) {
    for (bool training : {true, false}) {
      INFO("iterations " << iterations << " training " << training);
      const auto first = run_group(geos, Device::CUDA, iterations, training);
      const auto again = run_group(geos, Device::CUDA, iterations, training);
      REQUIRE(first.size() == again.size());
      for (size_t k = 0; k < first.size(); ++k) {
        INFO("layer " << k / 5 << " item " << k % 5 << " (w_sn, grad, u, v, sigma)");
        CHECK(first[k] == again[k]);
      }
    }
  }
}

TEST_CASE("spectral_norm: cuda matches the cpu on the SAGAN layers", "[spectral_norm][cuda]") {
  GAN_REQUIRE_GPU();
  const std::vector<Geo> geos = sagan_layers();
  for (int iterations : {1, 3}) {
    INFO("iterations " << iterations);
    const auto cpu = run_group(geos, Device::CPU, iterations);
    const auto gpu = run_group(geos, Device::CUDA, iterations);
    REQUIRE(cpu.size() == gpu.size());
    for (size_t k = 0; k < cpu.size(); ++k) {
      INFO("layer " << k / 5 << " item " << k % 5 << " (w_sn, grad, u, v, sigma)");
      // float32 dot products of up to 8192 terms (split in chunks of 1024 and 256) against the
      // CPU's double accumulation; not yet observed on a GPU.
      CHECK(rel_err(gpu[k], cpu[k]) < 2e-5);
    }
  }
}

TEST_CASE("spectral_norm: cuda launches replay in a CUDA graph", "[spectral_norm][cuda]") {
  GAN_REQUIRE_GPU();
  // The launchers with fixed buffers, captured once and replayed: the same results as direct
  // launches (the layer table travels by value in the kernel parameters).
  const std::vector<Geo> geos = {conv_t(64, 4, 32), conv(48, 4, 16), dense(8, 1100)};
  std::vector<Tensor> w, wsn, u, v, sigma, saved, dw, g;
  std::vector<kernels::SpectralNormForwardLayer> fwd;
  std::vector<kernels::SpectralNormBackwardLayer> bwd;
  for (size_t i = 0; i < geos.size(); ++i) {
    const Geo& ge = geos[i];
    const int64_t n = ge.rows * ge.cols;
    w.push_back(make_tensor(rand_values(n, 700 + i, -1, 1), ge.shape, Device::CUDA, DType::F32));
    g.push_back(make_tensor(rand_values(n, 710 + i, -1, 1), ge.shape, Device::CUDA, DType::F32));
    wsn.push_back(Tensor::empty(ge.shape, Device::CUDA));
    dw.push_back(Tensor::empty(ge.shape, Device::CUDA));
    u.push_back(make_vec(unit(rand_values(ge.rows, 720 + i, -1, 1)), Device::CUDA, DType::F32));
    v.push_back(make_vec(unit(rand_values(ge.cols, 730 + i, -1, 1)), Device::CUDA, DType::F32));
    sigma.push_back(Tensor::zeros(Shape{1}, Device::CUDA));
    saved.push_back(Tensor::empty(Shape{ge.rows + ge.cols + 1}, Device::CUDA));
    kernels::SpectralNormForwardLayer f;
    f.w = w[i].data<float>(), f.w_sn = wsn[i].data<float>(), f.u = u[i].data<float>();
    f.v = v[i].data<float>(), f.sigma = sigma[i].data<float>(), f.saved = saved[i].data<float>();
    f.rows = ge.rows, f.cols = ge.cols, f.transposed = ge.transposed;
    fwd.push_back(f);
    kernels::SpectralNormBackwardLayer b;
    b.g = g[i].data<float>(), b.w_sn = wsn[i].data<float>(), b.saved = saved[i].data<float>();
    b.dw = dw[i].data<float>(), b.accumulate = false;
    b.rows = ge.rows, b.cols = ge.cols, b.transposed = ge.transposed;
    bwd.push_back(b);
  }
  const size_t fws = kernels::spectral_norm_forward_workspace_bytes(fwd);
  const size_t bws = kernels::spectral_norm_backward_workspace_bytes(bwd);
  const Tensor fwork = Tensor::empty(Shape{int64_t(fws / 4 + 1)}, Device::CUDA);
  const Tensor bwork = Tensor::empty(Shape{int64_t(bws / 4 + 1)}, Device::CUDA);
  const std::vector<Tensor> u0 = {u[0].clone(), u[1].clone(), u[2].clone()};
  auto step = [&] {
    kernels::spectral_norm_forward_cuda(fwd, true, 1, 1e-12f, fwork.raw(), fws, cuda::stream());
    kernels::spectral_norm_backward_cuda(bwd, bwork.raw(), bws, cuda::stream());
  };
  auto results = [&] {
    std::vector<std::vector<float>> r;
    for (size_t i = 0; i < geos.size(); ++i) {
      r.push_back(wsn[i].to_vector());
      r.push_back(dw[i].to_vector());
      r.push_back(u[i].to_vector());
      r.push_back(sigma[i].to_vector());
    }
    return r;
  };
  auto reset = [&] {
    for (size_t i = 0; i < geos.size(); ++i) u[i].copy_from(u0[i]);
  };
  // Direct: two steps (the second continues from the first's u).
  step();
  const auto direct1 = results();
  step();
  const auto direct2 = results();
  reset();
  cudaStream_t st = cuda::stream();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  step();
  REQUIRE(cudaStreamEndCapture(st, &graph) == cudaSuccess);
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, st) == cudaSuccess);
  CHECK(results() == direct1);
  REQUIRE(cudaGraphLaunch(exec, st) == cudaSuccess);
  CHECK(results() == direct2);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}
