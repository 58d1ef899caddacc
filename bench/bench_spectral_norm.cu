// Spectral normalisation of the 64 px SAGAN's layers, all at once (kernels/spectral_norm.h):
// G (transposed convolutions and attention 1x1 convolutions), D (convolutions and attention),
// and both together, about 7M weights. For each group: a check against the CPU reference, then
// the median time (CUDA events) of the training forward (one power iteration, one launch per
// phase), the eval forward, the backward, forward + backward
// replayed from a CUDA graph, and the op wrapper (spectral_norm(): allocation and host work
// included). Each line also gives the bytes moved and the floor at the measured copy bandwidth.
// One JSON line per measurement on stdout; exits 0 with a message when there is no GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "bench/bench_util.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "kernels/spectral_norm.h"

using namespace gan;

namespace {

struct Geo {
  std::string name;
  Shape shape;  // storage
  int64_t rows, cols;
  bool transposed;
};

Geo conv(const std::string& name, int64_t out, int64_t k, int64_t in) {
  return {name, Shape{out, k, k, in}, out, k * k * in, false};
}
Geo conv_t(const std::string& name, int64_t in, int64_t k, int64_t out) {
  return {name, Shape{in, k, k, out}, out, k * k * in, true};
}

std::vector<Geo> g_layers() {
  std::vector<Geo> g = {conv_t("g.convt1", 128, 4, 512), conv_t("g.convt2", 512, 4, 256),
                        conv_t("g.convt3", 256, 4, 128), conv_t("g.convt4", 128, 4, 64)};
  for (int64_t C : {128, 64}) {
    const std::string a = "g.attn" + std::to_string(C);
    g.push_back(conv(a + ".q", C / 8, 1, C));
    g.push_back(conv(a + ".k", C / 8, 1, C));
    g.push_back(conv(a + ".v", C, 1, C));
  }
  return g;
}

std::vector<Geo> d_layers() {
  std::vector<Geo> d = {conv("d.conv1", 64, 4, 3), conv("d.conv2", 128, 4, 64),
                        conv("d.conv3", 256, 4, 128), conv("d.conv4", 512, 4, 256)};
  for (int64_t C : {256, 512}) {
    const std::string a = "d.attn" + std::to_string(C);
    d.push_back(conv(a + ".q", C / 8, 1, C));
    d.push_back(conv(a + ".k", C / 8, 1, C));
    d.push_back(conv(a + ".v", C, 1, C));
  }
  return d;
}

// x / |x| for a fresh N(0, 1) draw.
Tensor random_unit(Generator& gen, int64_t n) {
  Tensor t = Tensor::empty(Shape{n});
  gen.normal_(t);
  std::vector<float> h = t.to_vector();
  double s = 0;
  for (float x : h) s += double(x) * x;
  for (float& x : h) x = float(x / std::sqrt(s));
  return Tensor::from_vector(h, Shape{n}, Device::CUDA);
}

struct Group {
  std::string name;
  std::vector<Geo> geos;
  std::vector<Tensor> w, w_sn, u, v, u0, sigma, saved, g, dw;
  std::vector<kernels::SpectralNormForwardLayer> fwd;
  std::vector<kernels::SpectralNormBackwardLayer> bwd;
  Tensor fwork, bwork;
  size_t fws = 0, bws = 0;
  int64_t weights = 0;
};

Group make_group(const std::string& name, const std::vector<Geo>& geos, uint64_t seed) {
  Group G;
  G.name = name;
  G.geos = geos;
  Generator gen(seed);
  for (const Geo& ge : geos) {
    Tensor w = Tensor::empty(ge.shape);
    gen.normal_(w, 0.0, 0.02);
    Tensor g = Tensor::empty(ge.shape);
    gen.uniform_(g, -1, 1);
    G.w.push_back(w.to(Device::CUDA));
    G.g.push_back(g.to(Device::CUDA));
    G.w_sn.push_back(Tensor::empty(ge.shape, Device::CUDA));
    G.dw.push_back(Tensor::zeros(ge.shape, Device::CUDA));
    G.u.push_back(random_unit(gen, ge.rows));
    G.u0.push_back(G.u.back().clone());
    G.v.push_back(random_unit(gen, ge.cols));
    G.sigma.push_back(Tensor::zeros(Shape{1}, Device::CUDA));
    G.saved.push_back(Tensor::empty(Shape{ge.rows + ge.cols + 1}, Device::CUDA));
    G.weights += ge.rows * ge.cols;
  }
  for (size_t i = 0; i < geos.size(); ++i) {
    kernels::SpectralNormForwardLayer f;
    f.w = G.w[i].data<float>(), f.w_sn = G.w_sn[i].data<float>(), f.u = G.u[i].data<float>();
    f.v = G.v[i].data<float>(), f.sigma = G.sigma[i].data<float>();
    f.saved = G.saved[i].data<float>();
    f.rows = geos[i].rows, f.cols = geos[i].cols, f.transposed = geos[i].transposed;
    G.fwd.push_back(f);
    kernels::SpectralNormBackwardLayer b;
    b.g = G.g[i].data<float>(), b.w_sn = G.w_sn[i].data<float>();
    b.saved = G.saved[i].data<float>(), b.dw = G.dw[i].data<float>(), b.accumulate = true;
    b.rows = geos[i].rows, b.cols = geos[i].cols, b.transposed = geos[i].transposed;
    G.bwd.push_back(b);
  }
  G.fws = kernels::spectral_norm_forward_workspace_bytes(G.fwd);
  G.bws = kernels::spectral_norm_backward_workspace_bytes(G.bwd);
  G.fwork = Tensor::empty(Shape{int64_t(G.fws / 4 + 1)}, Device::CUDA);
  G.bwork = Tensor::empty(Shape{int64_t(G.bws / 4 + 1)}, Device::CUDA);
  return G;
}

void forward(Group& G, bool training) {
  kernels::spectral_norm_forward_cuda(G.fwd, training, 1, 1e-12f, G.fwork.raw(), G.fws,
                                      cuda::stream());
}
void backward(Group& G) {
  kernels::spectral_norm_backward_cuda(G.bwd, G.bwork.raw(), G.bws, cuda::stream());
}

// One training forward + backward from u0 on the GPU against the CPU reference: the largest
// normalised error of W_sn, sigma and dW over the layers.
double check(Group& G) {
  for (size_t i = 0; i < G.geos.size(); ++i) {
    G.u[i].copy_from(G.u0[i]);
    G.dw[i].zero_();
  }
  forward(G, true);
  backward(G);
  double worst = 0;
  auto err = [](const std::vector<float>& got, const std::vector<float>& want) {
    double scale = 1e-3, e = 0;
    for (size_t k = 0; k < want.size(); ++k) {
      scale = std::max(scale, std::fabs(double(want[k])));
      e = std::max(e, std::fabs(double(got[k]) - double(want[k])));
    }
    return e / scale;
  };
  for (size_t i = 0; i < G.geos.size(); ++i) {
    const Geo& ge = G.geos[i];
    const std::vector<float> w = G.w[i].to_vector(), g = G.g[i].to_vector();
    std::vector<float> u = G.u0[i].to_vector(), v = G.v[i].to_vector(), sigma(1);
    std::vector<float> w_sn(w.size()), dw(w.size(), 0.f);
    kernels::spectral_norm_forward_cpu<float>(w.data(), ge.rows, ge.cols, ge.transposed, true, 1,
                                              1e-12, u.data(), v.data(), sigma.data(), w_sn.data());
    kernels::spectral_norm_backward_cpu<float>(g.data(), w_sn.data(), u.data(), v.data(),
                                               sigma.data(), ge.rows, ge.cols, ge.transposed, true,
                                               dw.data());
    worst = std::max(worst, err(G.w_sn[i].to_vector(), w_sn));
    worst = std::max(worst, err(G.sigma[i].to_vector(), sigma));
    worst = std::max(worst, err(G.dw[i].to_vector(), dw));
  }
  return worst;
}

void emit(const Group& G, const char* what, double us, double bytes_issued, double bytes_min,
          double bw_gbs, const std::string& dev) {
  const double floor_us = bytes_min / (bw_gbs * 1e9) * 1e6;
  std::printf(
      "{\"bench\": \"spectral_norm\", \"device\": \"%s\", \"group\": \"%s\", \"what\": \"%s\", "
      "\"layers\": %zu, \"weights\": %lld, \"us\": %.2f, \"bytes_issued\": %.0f, "
      "\"bytes_min\": %.0f, \"floor_us\": %.2f, \"copy_gbs\": %.1f, \"gbs_min\": %.1f}\n",
      dev.c_str(), G.name.c_str(), what, G.geos.size(), static_cast<long long>(G.weights), us,
      bytes_issued, bytes_min, floor_us, bw_gbs, bytes_min / (us * 1e-6) / 1e9);
}

void bench_group(Group& G, double bw, const std::string& dev) {
  const double err = check(G);
  std::printf(
      "{\"bench\": \"spectral_norm\", \"device\": \"%s\", \"group\": \"%s\", \"check\": "
      "\"gpu vs cpu (w_sn, sigma, dw)\", \"max_normalised_error\": %.3g}\n",
      dev.c_str(), G.name.c_str(), err);
  const double N = double(G.weights), f = sizeof(float);
  // Training forward: W read by V, U and F (3 N), W_sn written (N); W read once when it stays in
  // L2 between the phases (28 MB for all 7M weights: H100's L2 is 50 MB).
  const double fwd_issued = 4 * N * f, fwd_min = 2 * N * f;
  // Eval forward: U and F read W, F writes W_sn.
  const double eval_issued = 3 * N * f, eval_min = 2 * N * f;
  // Backward (accumulating): B1 reads G and W_sn, B2 reads G and dW and writes dW.
  const double bwd_issued = 5 * N * f, bwd_min = 4 * N * f;

  emit(G, "forward_train", 1e3 * bench::time_ms([&] { forward(G, true); }), fwd_issued, fwd_min, bw,
       dev);
  emit(G, "forward_eval", 1e3 * bench::time_ms([&] { forward(G, false); }), eval_issued, eval_min,
       bw, dev);
  emit(G, "backward", 1e3 * bench::time_ms([&] { backward(G); }), bwd_issued, bwd_min, bw, dev);

  // Forward + backward captured once, replayed.
  cudaStream_t st = cuda::stream();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  GAN_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  forward(G, true);
  backward(G);
  GAN_CUDA_CHECK(cudaStreamEndCapture(st, &graph));
  GAN_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  emit(G, "forward_train_backward_graph",
       1e3 * bench::time_ms([&] { GAN_CUDA_CHECK(cudaGraphLaunch(exec, st)); }),
       fwd_issued + bwd_issued, fwd_min + bwd_min, bw, dev);
  GAN_CUDA_CHECK(cudaGraphExecDestroy(exec));
  GAN_CUDA_CHECK(cudaGraphDestroy(graph));

  // The op: parameters, one tape entry, allocations from the pool, host-side checks.
  std::vector<SpectralNormLayer> layers;
  for (size_t i = 0; i < G.geos.size(); ++i) {
    SpectralNormLayer l;
    l.weight = parameter(G.w[i]);
    l.rows = G.geos[i].rows, l.cols = G.geos[i].cols, l.transposed = G.geos[i].transposed;
    l.u = G.u[i], l.v = G.v[i], l.sigma = G.sigma[i];
    layers.push_back(l);
  }
  emit(G, "op_forward_train", 1e3 * bench::time_ms([&] {
                                (void)spectral_norm(layers, true, 1);
                                tape().clear();
                              }),
       fwd_issued, fwd_min, bw, dev);
}

}  // namespace

int main() {
  if (!cuda_available()) {
    std::printf("bench_spectral_norm: no CUDA device, nothing to measure\n");
    return 0;
  }
  try {
    const std::string dev = bench::device_name();
    const double bw = bench::copy_bandwidth_gbs();
    std::vector<Geo> all = g_layers();
    for (const Geo& d : d_layers()) all.push_back(d);
    Group g = make_group("G", g_layers(), 1);
    Group d = make_group("D", d_layers(), 2);
    Group both = make_group("G+D", all, 3);
    for (Group* grp : {&g, &d, &both}) bench_group(*grp, bw, dev);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_spectral_norm: %s\n", e.what());
    return 1;
  }
  return 0;
}
