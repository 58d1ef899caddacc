// The op-test harness (in the style of ggml's test-backend-ops). An op case declares its inputs
// and a function building the op from Vars; the harness then checks, for every case of a sweep:
//
// CPU (always):
// The reference (the plain loops of kernels/<op>.h; float64 tensors always run it):
//   - backward in float64 against five-point central differences of <R, f(x)> with a random
//     upstream gradient R (never sum(): softmax/normalisation outputs sum to constants);
//   - the float32 run against the float64 run (forward and backward);
//   - two float32 runs bitwise equal; no write outside any buffer (guard mode).
// The CPU backend (kernels/cpu/, what the engine runs for CPU tensors), like CUDA:
//   - forward and backward against the reference's float32 run within the case's stated
//     tolerance (tol_fwd, tol_bwd: the same bounds as CUDA's), with every loop split over the
//     threads however small (kernels::cpu::set_test_splitting) so the parallel paths run;
//   - NaN/Inf parity with the reference, two runs bitwise equal, no write outside any buffer.
// CUDA (skipped without a GPU):
//   - forward and backward against the reference's float32 run within the case's stated
//     tolerance;
//   - guard bytes around every allocation intact, unwritten outputs caught (NaN fill);
//   - NaN/Inf parity: with NaN and +-Inf planted in the inputs, each output element is finite,
//     NaN, +Inf or -Inf on the GPU exactly when it is on the CPU;
//   - two runs bitwise equal.
//
// Errors are normalised: max |got - want| / max(max |want|, 1e-3) over the tensor, so a
// tolerance reads as "relative to the tensor's largest element" (absolute below 1e-3).
// See docs/testing.md.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd.h"

namespace gan::test {

bool have_gpu();
// tests/fixtures/<name>, or $GAN_TEST_FIXTURES/<name> (the GPU machine's copy of the tree).
std::string fixture_path(const std::string& name);
// <the source tree>/<rel>, found from the fixtures' directory.
std::string source_path(const std::string& rel);
// The Python interpreter for the project's scripts: $GAN_TEST_PYTHON, the one CMake found, or
// python3 on the PATH (the GPU machine's copy of the tree).
std::string python3();
// Counts a skipped test case (main() exits 77, "skipped" for ctest, when all cases skipped).
void mark_skipped();
int skipped_cases();

struct Input {
  Shape shape;
  double lo = -1.0, hi = 1.0;  // uniform initial values
  bool requires_grad = true;
  bool param = false;         // a parameter (persistent gradient buffer)
  std::vector<double> kinks;  // points where the op is not differentiable: values are moved at
  double margin = 0.02;       // least `margin` away so finite differences do not straddle them
};

struct OpCase {
  std::string name;
  std::vector<Input> inputs;
  std::function<Var(const std::vector<Var>&)> fn;
  double tol_fwd = 1e-5;  // CUDA or the CPU backend vs the reference in f32, forward
  double tol_bwd = 1e-5;  // CUDA or the CPU backend vs the reference in f32, gradients
  double tol_f32 = 1e-5;  // reference f32 vs reference f64 (forward and gradients)
  double tol_fd = 1e-6;   // analytic vs finite-difference gradient, f64
  int fd_samples = 24;    // coordinates per input checked by finite differences
  bool nan_parity = true;
  // The CPU backend's convolutions (oneDNN) multiply a non-finite input by the zero padding where
  // the reference skips the tap: there they may give NaN where the reference gives a number (never
  // the reverse), which is all that is checked for cases that set this.
  bool nan_spreads_through_padding = false;
};

void check_cpu(const OpCase& c);          // the reference (finite differences, f32 vs f64)
void check_cpu_backend(const OpCase& c);  // the CPU backend against the reference
void check_cuda(const OpCase& c);         // CUDA against the reference

// Normalised max error between two tensors of the same shape (finite elements only), and the
// parity of their non-finite elements (true when they are non-finite at the same places with
// the same kind).
double max_rel_error(const Tensor& got, const Tensor& want);
bool nonfinite_parity(const Tensor& got, const Tensor& want, std::string* where = nullptr);
bool bitwise_equal(const Tensor& a, const Tensor& b);

// A fresh temporary directory, removed with everything in it when the object goes.
struct TempDir {
  std::filesystem::path path;
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
  int count() const;  // entries in the directory
};

// Sets an environment variable for its lifetime (restores or unsets it after).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

// True when the CUDA device is the interpreter (kernels/interpreter/), not a GPU.
bool on_interpreter();

// cuDNN's deterministic policy (engine/device.h) for its lifetime.
class ScopedCudnnDeterministic {
 public:
  explicit ScopedCudnnDeterministic(bool on = true);
  ~ScopedCudnnDeterministic();
  ScopedCudnnDeterministic(const ScopedCudnnDeterministic&) = delete;
  ScopedCudnnDeterministic& operator=(const ScopedCudnnDeterministic&) = delete;

 private:
  bool old_;
};

}  // namespace gan::test

// Use as the first statement of a CUDA test case.
#define GAN_REQUIRE_GPU()           \
  do {                              \
    if (!::gan::test::have_gpu()) { \
      ::gan::test::mark_skipped();  \
      WARN("skipped: no GPU");      \
      return;                       \
    }                               \
  } while (0)

// Three test cases per op (the reference, the CPU backend, CUDA), each running every case of the
// sweep `cases()`.
#define GAN_OP_TEST(op, cases)                                           \
  TEST_CASE("op " op " cpu", "[op][" op "][cpu]") {                      \
    for (const auto& c : cases()) {                                      \
      INFO("case: " << c.name);                                          \
      ::gan::test::check_cpu(c);                                         \
    }                                                                    \
  }                                                                      \
  TEST_CASE("op " op " cpu backend", "[op][" op "][cpu][cpu-backend]") { \
    for (const auto& c : cases()) {                                      \
      INFO("case: " << c.name);                                          \
      ::gan::test::check_cpu_backend(c);                                 \
    }                                                                    \
  }                                                                      \
  GAN_OP_TEST_CUDA(op, cases)

// Only the CUDA half (a GPU version whose CPU path a GAN_OP_TEST already covers).
#define GAN_OP_TEST_CUDA(op, cases)                   \
  TEST_CASE("op " op " cuda", "[op][" op "][cuda]") { \
    GAN_REQUIRE_GPU();                                \
    for (const auto& c : cases()) {                   \
      INFO("case: " << c.name);                       \
      ::gan::test::check_cuda(c);                     \
    }                                                 \
  }
