#include "kernels/cpu/backend.h"

#include "kernels/cpu/plan_log.h"

#include <omp.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <fmt/format.h>
#include <oneapi/dnnl/dnnl.h>

namespace gan::kernels::cpu {

namespace {

bool env_flag(const char* name) {
  const char* e = std::getenv(name);
  return e && *e && std::string(e) != "0";
}

std::atomic<bool> g_reference{false};
std::atomic<int> g_threads{0};  // 0: the default

int default_threads() {
  // omp_get_max_threads() before anyone set it: OMP_NUM_THREADS, else the CPUs in the process's
  // affinity mask (libgomp reads both at start-up).
  static const int n = [] { return std::max(1, omp_get_max_threads()); }();
  return n;
}

}  // namespace

int num_threads() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : default_threads();
}

void set_num_threads(int n) {
  g_threads.store(n > 0 ? n : 0);
  // oneDNN's OpenMP runtime uses omp_get_max_threads() for its parallel regions.
  omp_set_num_threads(num_threads());
}

std::atomic<bool> g_deterministic{env_flag("GAN_CUDNN_DETERMINISTIC")};
bool deterministic() { return g_deterministic.load(std::memory_order_relaxed); }
void set_deterministic(bool on) { g_deterministic.store(on); }

std::atomic<bool> g_splitting{false};
bool test_splitting() { return g_splitting.load(std::memory_order_relaxed); }
void set_test_splitting(bool on) { g_splitting.store(on); }

bool reference() { return g_reference.load(std::memory_order_relaxed); }
void set_reference(bool on) { g_reference.store(on); }

std::string describe() {
  const dnnl_version_t* v = dnnl_version();
  const char* isa = "unknown";
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41:
      isa = "sse4.1";
      break;
    case dnnl_cpu_isa_avx:
      isa = "avx";
      break;
    case dnnl_cpu_isa_avx2:
      isa = "avx2";
      break;
    case dnnl_cpu_isa_avx512_core:
      isa = "avx512";
      break;
    case dnnl_cpu_isa_avx512_core_vnni:
      isa = "avx512-vnni";
      break;
    case dnnl_cpu_isa_avx512_core_bf16:
      isa = "avx512-bf16";
      break;
    case dnnl_cpu_isa_avx512_core_amx:
      isa = "avx512-amx";
      break;
    case dnnl_cpu_isa_avx2_vnni:
      isa = "avx2-vnni";
      break;
    default:
      break;
  }
  return fmt::format("cpu backend: oneDNN {}.{}.{} ({}), {} threads", v->major, v->minor, v->patch,
                     isa, num_threads());
}

namespace {
std::mutex g_log_lock;
std::vector<std::string>& log_lines() {
  static std::vector<std::string> lines;
  return lines;
}
}  // namespace

void log_plan(const std::string& line) {
  std::lock_guard<std::mutex> hold(g_log_lock);
  log_lines().push_back(line);
  static const bool print = [] {
    const char* e = std::getenv("GAN_LOG_KERNELS");
    return e && *e && std::string(e) != "0";
  }();
  if (print) std::fprintf(stderr, "%s\n", line.c_str());
}

std::vector<std::string> plan_log() {
  std::lock_guard<std::mutex> hold(g_log_lock);
  return log_lines();
}

bool has_native_bf16() {
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  return isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
}

}  // namespace gan::kernels::cpu
