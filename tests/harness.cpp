#include "tests/harness.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/random.h"
#include "kernels/cpu/backend.h"

namespace gan::test {

namespace {

int g_skipped = 0;

// Tensors whose largest element is below this are compared in absolute terms against it: an
// f32 result computed from O(1) intermediates (sigmoid'(30) = y (1 - y)) cannot be more exact.
constexpr double kMinScale = 1e-3;

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// Case inputs as f64 CPU tensors whose values are exactly representable in f32.
std::vector<Tensor> make_inputs(const OpCase& c) {
  Generator gen(hash_name(c.name));
  std::vector<Tensor> out;
  for (const Input& in : c.inputs) {
    Tensor t = Tensor::empty(in.shape, Device::CPU, DType::F64);
    gen.uniform_(t, in.lo, in.hi);
    double* p = t.data<double>();
    for (int64_t j = 0; j < t.numel(); ++j) {
      double v = p[j];
      for (double k : in.kinks)
        if (std::fabs(v - k) < in.margin) v = k + (v >= k ? in.margin : -in.margin);
      p[j] = double(float(v));
    }
    out.push_back(t);
  }
  return out;
}

Tensor make_upstream(const OpCase& c, const Shape& shape) {
  Generator gen(hash_name(c.name) ^ 0x9e3779b97f4a7c15ull);
  Tensor r = Tensor::empty(shape, Device::CPU, DType::F64);
  gen.uniform_(r, -1.0, 1.0);
  double* p = r.data<double>();
  for (int64_t j = 0; j < r.numel(); ++j) p[j] = double(float(p[j]));
  return r;
}

// f64 CPU tensor -> the given device/dtype.
Tensor convert(const Tensor& t64, Device device, DType dtype) {
  if (dtype == DType::F64) return t64.clone();
  return t64.to(DType::F32).to(device);
}

struct Run {
  Tensor out;
  std::vector<Tensor> grads;  // undefined where the input needs no gradient
};

// Forward, then backward with upstream R (f64 CPU; skipped when undefined). CPU float32 runs the
// CPU backend, or the reference with `reference`.
Run run_case(const OpCase& c, const std::vector<Tensor>& inputs64, const Tensor& R, Device device,
             DType dtype, bool reference = false) {
  kernels::cpu::ReferenceScope ref(reference);
  tape().clear();
  std::vector<Var> vars;
  for (size_t i = 0; i < inputs64.size(); ++i) {
    const Input& in = c.inputs[i];
    Tensor v = convert(inputs64[i], device, dtype);
    vars.push_back(in.param ? parameter(v) : Var(v, in.requires_grad));
  }
  Var out = c.fn(vars);
  Run r;
  r.out = out.value();
  if (R.defined() && out.requires_grad()) {
    backward(out, convert(R, device, dtype));
    for (const Var& v : vars) r.grads.push_back(v.requires_grad() ? v.grad() : Tensor());
  }
  tape().clear();
  return r;
}

// The reference's float32 run (the oracle of the CPU backend and CUDA).
Run run_reference(const OpCase& c, const std::vector<Tensor>& inputs64, const Tensor& R) {
  return run_case(c, inputs64, R, Device::CPU, DType::F32, true);
}

// The CPU backend split as finely as it goes (every loop over 2 threads, reductions in blocks of a
// few elements) for its lifetime.
struct SplitScope {
  int threads = kernels::cpu::num_threads();
  SplitScope() {
    kernels::cpu::set_test_splitting(true);
    kernels::cpu::set_num_threads(2);
  }
  ~SplitScope() {
    kernels::cpu::set_test_splitting(false);
    kernels::cpu::set_num_threads(threads);
  }
};

// <R, f(inputs)> in double, no tape.
double objective(const OpCase& c, const std::vector<Tensor>& inputs64, const Tensor& R) {
  NoGradGuard no_grad;
  std::vector<Var> vars;
  for (const Tensor& t : inputs64) vars.push_back(Var(t));
  const Tensor out = c.fn(vars).value();
  const double* o = out.data<double>();
  const double* r = R.data<double>();
  double s = 0;
  for (int64_t j = 0; j < out.numel(); ++j) s += o[j] * r[j];
  return s;
}

std::vector<int64_t> sample_indices(int64_t n, int count, uint64_t seed) {
  std::vector<int64_t> idx;
  if (n <= count) {
    for (int64_t j = 0; j < n; ++j) idx.push_back(j);
    return idx;
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, n - 1);
  idx.push_back(0);
  idx.push_back(n - 1);
  while (int(idx.size()) < count) idx.push_back(pick(rng));
  return idx;
}

void require_no_guard_violations(const char* where) {
  const std::vector<std::string> v = debug::take_guard_violations();
  std::string all;
  for (const auto& s : v) all += s + "; ";
  INFO(where << ": " << all);
  REQUIRE(v.empty());
}

struct GuardScope {
  GuardScope() {
    (void)debug::take_guard_violations();
    debug::set_guard_mode(true);
  }
  ~GuardScope() { debug::set_guard_mode(false); }
};

void compare(const char* what, const Tensor& got, const Tensor& want, double tol) {
  INFO(what << ": got " << got.str() << ", want " << want.str());
  REQUIRE(got.shape() == want.shape());
  std::string where;
  const bool parity = nonfinite_parity(got, want, &where);
  INFO(what << ": non-finite mismatch " << where);
  REQUIRE(parity);
  const double err = max_rel_error(got, want);
  INFO(what << ": normalised error " << err << " (tolerance " << tol << ")");
  CHECK(err <= tol);
  if (std::getenv("GAN_TEST_VERBOSE"))
    fmt::print("  {}: normalised error {:.3g} (tolerance {:.3g})\n", what, err, tol);
}

// Every non-finite element of want is non-finite in got (got may have more).
bool nonfinite_kept(const Tensor& got, const Tensor& want, std::string* where) {
  const std::vector<double> g = got.to_double_vector(), w = want.to_double_vector();
  for (size_t j = 0; j < w.size(); ++j) {
    if (!std::isfinite(w[j]) && std::isfinite(g[j])) {
      if (where) *where = fmt::format("at element {}: got {}, want {}", j, g[j], w[j]);
      return false;
    }
  }
  return true;
}

void plant_nonfinite(Tensor& t64) {
  double* p = t64.data<double>();
  const int64_t n = t64.numel();
  if (n == 0) return;
  p[0] = NAN;
  if (n >= 3) {
    p[n / 2] = INFINITY;
    p[n - 1] = -INFINITY;
  }
}

}  // namespace

bool have_gpu() { return cuda_available(); }

const char* fixtures_dir_built();  // generated by tests/CMakeLists.txt
const char* python3_built();       // the same file: the Python CMake found

std::string fixture_path(const std::string& name) {
  const char* env = std::getenv("GAN_TEST_FIXTURES");
  return (std::filesystem::path(env && *env ? env : fixtures_dir_built()) / name).string();
}

std::string source_path(const std::string& rel) {
  return (std::filesystem::path(fixture_path("")).parent_path().parent_path().parent_path() / rel)
      .string();
}

std::string python3() {
  const char* env = std::getenv("GAN_TEST_PYTHON");
  if (env && *env) return env;
  return std::filesystem::exists(python3_built()) ? python3_built() : "python3";
}

TempDir::TempDir() {
  std::string t = (std::filesystem::temp_directory_path() / "gan_test_XXXXXX").string();
  REQUIRE(mkdtemp(t.data()) != nullptr);
  path = t;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

int TempDir::count() const {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(path)) ++n;
  return n;
}
void mark_skipped() { ++g_skipped; }
int skipped_cases() { return g_skipped; }

double max_rel_error(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = got.to_double_vector(), w = want.to_double_vector();
  double scale = 0, err = 0;
  for (size_t j = 0; j < w.size(); ++j) {
    if (!std::isfinite(w[j]) || !std::isfinite(g[j])) continue;
    scale = std::max(scale, std::fabs(w[j]));
    err = std::max(err, std::fabs(g[j] - w[j]));
  }
  return err / std::max(scale, kMinScale);
}

bool nonfinite_parity(const Tensor& got, const Tensor& want, std::string* where) {
  const std::vector<double> g = got.to_double_vector(), w = want.to_double_vector();
  auto kind = [](double v) { return std::isnan(v) ? 1 : std::isinf(v) ? (v > 0 ? 2 : 3) : 0; };
  for (size_t j = 0; j < w.size(); ++j) {
    if (kind(g[j]) != kind(w[j])) {
      if (where) *where = fmt::format("at element {}: got {}, want {}", j, g[j], w[j]);
      return false;
    }
  }
  return true;
}

ScopedCudnnDeterministic::ScopedCudnnDeterministic(bool on) : old_(cudnn_deterministic()) {
  set_cudnn_deterministic(on);
}
ScopedCudnnDeterministic::~ScopedCudnnDeterministic() { set_cudnn_deterministic(old_); }

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ha = a.to(Device::CPU), hb = b.to(Device::CPU);
  return std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) == 0;
}

void check_cpu(const OpCase& c) {
  GuardScope guard;
  const std::vector<Tensor> x64 = make_inputs(c);

  // f64 forward + backward with a random upstream gradient.
  const Run probe = run_case(c, x64, Tensor(), Device::CPU, DType::F64);
  const Tensor R = make_upstream(c, probe.out.shape());
  const Run ref = run_case(c, x64, R, Device::CPU, DType::F64);

  // Finite differences on sampled coordinates of every input that wants a gradient.
  std::vector<Tensor> xs = x64;
  for (auto& t : xs) t = t.clone();
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!c.inputs[i].requires_grad && !c.inputs[i].param) continue;
    REQUIRE(ref.grads.size() == xs.size());
    REQUIRE(ref.grads[i].defined());
    double* p = xs[i].data<double>();
    const double* g = ref.grads[i].data<double>();
    // Gradients below 1e-5 are compared in absolute terms (the stencil's rounding noise is about
    // 1.5 eps |f| / h, ~1e-12 here); the floor also rises with |f| for very large outputs.
    double scale = 1e-5, err = 0;
    int64_t worst = -1;
    double worst_num = 0;
    for (int64_t j : sample_indices(xs[i].numel(), c.fd_samples, hash_name(c.name) + i)) {
      const double x0 = p[j];
      // Five-point central difference: truncation O(h^4), so h can stay large enough that the
      // rounding of <R, f> (a sum over every output) does not dominate.
      const double h = 1e-4 * std::max(1.0, std::fabs(x0));
      double f[4];
      const double offsets[4] = {-2, -1, 1, 2};
      for (int t = 0; t < 4; ++t) {
        p[j] = x0 + offsets[t] * h;
        f[t] = objective(c, xs, R);
      }
      p[j] = x0;
      const double num = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h);
      scale = std::max(scale, 1e3 * 1.5 * 2.2e-16 * std::fabs(f[2]) / h);
      scale = std::max({scale, std::fabs(num), std::fabs(g[j])});
      if (std::fabs(num - g[j]) > err) {
        err = std::fabs(num - g[j]);
        worst = j;
        worst_num = num;
      }
    }
    INFO("input " << i << " " << xs[i].shape().str() << ": finite-difference error " << err / scale
                  << " at element " << worst << " (analytic " << (worst >= 0 ? g[worst] : 0.0)
                  << ", numeric " << worst_num << ")");
    CHECK(err / scale <= c.tol_fd);
  }

  // The reference's f32 against f64, and two f32 runs bitwise equal.
  const Run f32a = run_reference(c, x64, R);
  const Run f32b = run_reference(c, x64, R);
  compare("cpu f32 forward vs f64", f32a.out, ref.out.to(DType::F32), c.tol_f32);
  CHECK(bitwise_equal(f32a.out, f32b.out));
  for (size_t i = 0; i < f32a.grads.size(); ++i) {
    if (!f32a.grads[i].defined()) continue;
    compare(fmt::format("cpu f32 grad {} vs f64", i).c_str(), f32a.grads[i],
            ref.grads[i].to(DType::F32), c.tol_f32);
    CHECK(bitwise_equal(f32a.grads[i], f32b.grads[i]));
  }
  require_no_guard_violations("cpu");
}

void check_cuda(const OpCase& c) {
  GuardScope guard;
  const std::vector<Tensor> x64 = make_inputs(c);
  const Run probe = run_reference(c, x64, Tensor());
  const Tensor R = make_upstream(c, probe.out.shape());

  const Run cpu = run_reference(c, x64, R);
  const Run gpu = run_case(c, x64, R, Device::CUDA, DType::F32);
  // Two runs bitwise equal: on a GPU in cuDNN's deterministic policy (the default may choose
  // algorithms that add with atomics), checked against the CPU too; on the interpreter every
  // listed algorithm computes the same, so the default's runs must be equal.
  Run rep1, rep2;
  if (on_interpreter()) {
    rep1 = gpu;
    rep2 = run_case(c, x64, R, Device::CUDA, DType::F32);
  } else {
    ScopedCudnnDeterministic det;
    rep1 = run_case(c, x64, R, Device::CUDA, DType::F32);
    rep2 = run_case(c, x64, R, Device::CUDA, DType::F32);
    compare("cuda (deterministic) forward vs cpu", rep1.out, cpu.out, c.tol_fwd);
  }
  require_no_guard_violations("cuda");

  compare("cuda forward vs cpu", gpu.out, cpu.out, c.tol_fwd);
  CHECK(bitwise_equal(rep1.out, rep2.out));
  REQUIRE(gpu.grads.size() == cpu.grads.size());
  for (size_t i = 0; i < gpu.grads.size(); ++i) {
    if (!cpu.grads[i].defined()) continue;
    compare(fmt::format("cuda grad {} vs cpu", i).c_str(), gpu.grads[i], cpu.grads[i], c.tol_bwd);
    INFO("grad " << i << ": two backward runs differ");
    CHECK(bitwise_equal(rep1.grads[i], rep2.grads[i]));
  }

  if (c.nan_parity && !x64.empty()) {
    std::vector<Tensor> bad = x64;
    bad[0] = bad[0].clone();
    plant_nonfinite(bad[0]);
    const Run cb = run_reference(c, bad, R);
    const Run gb = run_case(c, bad, R, Device::CUDA, DType::F32);
    require_no_guard_violations("cuda nan");
    compare("cuda forward with NaN/Inf vs cpu", gb.out, cb.out, c.tol_fwd);
    for (size_t i = 0; i < gb.grads.size(); ++i) {
      if (!cb.grads[i].defined()) continue;
      std::string where;
      INFO("grad " << i << " with NaN/Inf inputs");
      const bool parity = nonfinite_parity(gb.grads[i], cb.grads[i], &where);
      INFO(where);
      CHECK(parity);
    }
  }
}

void check_cpu_backend(const OpCase& c) {
  GuardScope guard;
  SplitScope split;
  const std::vector<Tensor> x64 = make_inputs(c);
  const Run probe = run_reference(c, x64, Tensor());
  const Tensor R = make_upstream(c, probe.out.shape());

  const Run ref = run_reference(c, x64, R);
  const Run a = run_case(c, x64, R, Device::CPU, DType::F32);
  const Run b = run_case(c, x64, R, Device::CPU, DType::F32);
  require_no_guard_violations("cpu backend");
  compare("cpu backend forward vs reference", a.out, ref.out, c.tol_fwd);
  CHECK(bitwise_equal(a.out, b.out));
  REQUIRE(a.grads.size() == ref.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    if (!ref.grads[i].defined()) continue;
    compare(fmt::format("cpu backend grad {} vs reference", i).c_str(), a.grads[i], ref.grads[i],
            c.tol_bwd);
    INFO("grad " << i << ": two backward runs differ");
    CHECK(bitwise_equal(a.grads[i], b.grads[i]));
  }

  if (c.nan_parity && !x64.empty()) {
    std::vector<Tensor> bad = x64;
    bad[0] = bad[0].clone();
    plant_nonfinite(bad[0]);
    const Run rb = run_reference(c, bad, R);
    const Run fb = run_case(c, bad, R, Device::CPU, DType::F32);
    require_no_guard_violations("cpu backend nan");
    if (c.nan_spreads_through_padding) {
      std::string where;
      const bool kept = nonfinite_kept(fb.out, rb.out, &where);
      INFO("forward with NaN/Inf inputs " << where);
      CHECK(kept);
    } else {
      compare("cpu backend forward with NaN/Inf vs reference", fb.out, rb.out, c.tol_fwd);
    }
    for (size_t i = 0; i < fb.grads.size(); ++i) {
      if (!rb.grads[i].defined()) continue;
      std::string where;
      INFO("grad " << i << " with NaN/Inf inputs");
      const bool parity = c.nan_spreads_through_padding
                              ? nonfinite_kept(fb.grads[i], rb.grads[i], &where)
                              : nonfinite_parity(fb.grads[i], rb.grads[i], &where);
      INFO(where);
      CHECK(parity);
    }
  }
}

bool on_interpreter() {
  if (!have_gpu()) return false;
  cudaDeviceProp p{};
  return cudaGetDeviceProperties(&p, 0) == cudaSuccess &&
         std::strstr(p.name, "interpreter") != nullptr;
}

}  // namespace gan::test
