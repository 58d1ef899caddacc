// The CPU backend (kernels/cpu/): what the engine runs for float32 CPU tensors. Convolutions,
// transposed convolutions and GEMMs through oneDNN (NHWC, primitives created once per shape and
// cached); everything else as float loops over all cores (OpenMP). The plain double loops of
// kernels/<op>.h stay the reference, the oracle the tests compare both this backend and CUDA
// against (docs/cpu-backend.md).
//
// Routing: every entry point of kernels/cpu/ops.h takes float (this backend) or double (the
// reference, which is what float64 tensors, the gradient checks, always run). With the reference
// selected (set_reference / ReferenceScope, for tests) the float entry points run the reference
// too, so the same engine code gives either.
//
// Threads: every parallel region and oneDNN use num_threads() threads: OMP_NUM_THREADS, else the
// cores available to the process, unless set_num_threads() chose another count (the programs'
// --threads). Determinism: the same inputs and thread count give bitwise the same results run to
// run. The loops written here split their reductions into fixed blocks that depend on the shape
// only, so their results do not depend on the thread count either; oneDNN's convolutions and
// GEMMs may split sums by thread, so theirs can change in the last bits with the thread count.
#pragma once

#include <string>
#include <vector>

namespace gan::kernels::cpu {

// Threads of the backend's parallel regions and of oneDNN (at least 1).
int num_threads();
// n >= 1: use n threads from now on; n <= 0: back to the default (OMP_NUM_THREADS, else the
// cores available).
void set_num_threads(int n);

// Whether the float entry points run the reference loops instead (tests).
bool reference();
void set_reference(bool on);

// Selects the reference (or the backend) for its lifetime.
class ReferenceScope {
 public:
  explicit ReferenceScope(bool on = true) : prev_(reference()) { set_reference(on); }
  ~ReferenceScope() { set_reference(prev_); }
  ReferenceScope(const ReferenceScope&) = delete;
  ReferenceScope& operator=(const ReferenceScope&) = delete;

 private:
  bool prev_;
};

// Tests: every parallel loop split over the threads however small it is, and reductions cut into
// blocks of a few elements, so that small test cases run the paths large tensors take.
bool test_splitting();
void set_test_splitting(bool on);

// One line about the backend: oneDNN's version and the ISA it dispatches to, the thread count.
std::string describe();

// How convolution implementations are chosen (kernels/cpu/conv.cpp): timed on first use (the
// default) or, deterministic, oneDNN's first one untimed. Default: $GAN_CUDNN_DETERMINISTIC, as
// for cuDNN (gan_train --deterministic sets both).
bool deterministic();
void set_deterministic(bool on);
// The file of timed choices: $GAN_CPU_PLAN_CACHE, else $XDG_CACHE_HOME/gan/cpu_plans.tsv, else
// ~/.cache/gan/cpu_plans.tsv; "" or "off" turns it off. Takes effect at the next choice.
void set_plan_cache(const std::string& path);
// Forgets every convolution plan made so far (the next use chooses again, reading the plan
// cache anew; the log stays): tests.
void reset_plans();

// Every choice the backend made so far, oldest first: one line per convolution or GEMM plan (the
// oneDNN implementation it runs). GAN_LOG_KERNELS=1 prints each to stderr when made.
std::vector<std::string> plan_log();

// Whether oneDNN can run bf16 convolutions and matmuls natively here (AVX-512 BF16 or AMX); where
// it cannot, bf16 products run on the float32 path with the same rounding points.
bool has_native_bf16();

}  // namespace gan::kernels::cpu
