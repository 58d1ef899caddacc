// The SIMT runtime: one fiber per CUDA thread, one OS thread per resident block, a seeded random
// schedule between synchronisation points, and the checks a GPU would not make (barrier
// divergence, shuffles naming exited lanes, deadlocks, stack overflows, memory faults).
#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/interpreter/runtime_internal.h"
#include "kernels/interpreter/simt.h"

// ThreadSanitizer builds (GAN_SANITIZE=thread): the kernels are instrumented, this runtime is
// not; every CUDA thread is a TSan fiber, switched without implied synchronisation, and the
// synchronisation CUDA defines is declared explicitly: block start and end, __syncthreads (a
// token per barrier generation), warp operations (per warp), grid syncs and fences.
#if defined(GAN_INTERP_TSAN)
#include <sanitizer/tsan_interface.h>
#define GAN_TSAN_RELEASE(addr) __tsan_release(addr)
#define GAN_TSAN_ACQUIRE(addr) __tsan_acquire(addr)
#define GAN_TSAN_SWITCH(fiber) __tsan_switch_to_fiber(fiber, __tsan_switch_to_fiber_no_sync)
#else
#define GAN_TSAN_RELEASE(addr) (void)(addr)
#define GAN_TSAN_ACQUIRE(addr) (void)(addr)
#define GAN_TSAN_SWITCH(fiber) ((void)0)  // not evaluated: no fiber contexts without TSan
#endif

// AddressSanitizer builds (GAN_SANITIZE=address,...): ASan is told of every switch between the
// scheduler's stack and a fiber's (__sanitizer_start/finish_switch_fiber), and a fiber stack is
// unpoisoned before it is reused, so that frames a previous fiber left behind report nothing.
#if defined(__SANITIZE_ADDRESS__)
#define GAN_INTERP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GAN_INTERP_ASAN 1
#endif
#endif
#if defined(GAN_INTERP_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define GAN_ASAN_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define GAN_ASAN_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#define GAN_ASAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define GAN_ASAN_START(save, bottom, size) ((void)0)
#define GAN_ASAN_FINISH(save, bottom, size) ((void)0)
#define GAN_ASAN_UNPOISON(p, n) ((void)0)
#endif

// The context switch (x86-64 System V): saves the callee-saved registers on the current stack,
// stores the stack pointer in *save, and resumes the context whose stack pointer is `to`.
extern "C" void gan_interp_switch(void** save, void* to);
asm(R"(
.text
.globl gan_interp_switch
.type gan_interp_switch,@function
gan_interp_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size gan_interp_switch,.-gan_interp_switch
.section .note.GNU-stack,"",@progbits
.text
)");

namespace gan::interp {

thread_local ThreadState* tls_thread __attribute__((tls_model("initial-exec"))) = nullptr;
thread_local const char* tls_activity = nullptr;

namespace {

// The H100 model (docs/interpreter.md).
constexpr int kMaxThreadsPerSm = 2048;
constexpr int kMaxBlocksPerSm = 32;
constexpr size_t kSmemPerSm = 228 * 1024;
constexpr size_t kSmemPerBlockOptin = 227 * 1024;
constexpr size_t kSmemPerBlock = 48 * 1024;

constexpr size_t kCanaryBytes = 256;  // at the low end of every fiber stack
constexpr unsigned char kStackCanary = 0xC5;
constexpr unsigned char kSharedFill = 0xFF;  // NaN as float and double

size_t fiber_stack_bytes() {
  static const size_t n = [] {
    const char* e = std::getenv("GAN_INTERP_STACK_KB");
    const long kb = e ? std::atol(e) : 0;
    return size_t(kb > 0 ? kb : 64) * 1024;
  }();
  return n;
}

// ---------------------------------------------------------------------------------------------
// Errors

std::mutex g_err_mu;
cudaError_t g_pending = cudaSuccess;
std::map<int, std::string> g_messages;

// ---------------------------------------------------------------------------------------------
// Kernel facts: names, the shared-memory range each kernel writes, the dynamic-smem opt-in.

struct KernelInfo {
  std::string name;
  size_t lo = SIZE_MAX, hi = 0;  // bytes of the module's thread-local block the kernel wrote
  int max_dynamic_smem = 0;
  int scans = 0;  // launches whose first blocks were scanned to learn [lo, hi)
};
constexpr int kLearnLaunches = 8;
std::mutex g_kernels_mu;
std::map<const void*, KernelInfo> g_kernels;

// Finds the FUNC symbol containing `addr` in the ELF file `path` (loaded at `base`).
std::string symbol_from_file(const char* path, uintptr_t base, uintptr_t addr) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  struct stat st {};
  std::string out;
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    void* m = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (m != MAP_FAILED) {
      const auto* b = static_cast<const unsigned char*>(m);
      const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(b);
      const auto* sh = reinterpret_cast<const Elf64_Shdr*>(b + eh->e_shoff);
      const uintptr_t off = addr - base;
      for (int i = 0; i < eh->e_shnum && out.empty(); ++i) {
        if (sh[i].sh_type != SHT_SYMTAB) continue;
        const auto* syms = reinterpret_cast<const Elf64_Sym*>(b + sh[i].sh_offset);
        const char* strs = reinterpret_cast<const char*>(b + sh[sh[i].sh_link].sh_offset);
        const size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < n; ++k) {
          if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC) continue;
          if (off >= syms[k].st_value &&
              off < syms[k].st_value + std::max<uint64_t>(1, syms[k].st_size)) {
            out = strs + syms[k].st_name;
            break;
          }
        }
      }
      munmap(m, size_t(st.st_size));
    }
  }
  close(fd);
  return out;
}

// The module's thread-local block on this thread: where the kernels' __shared__ variables live.
struct Window {
  unsigned char* data = nullptr;
  size_t size = 0;
};

Window tls_window_of(const void* fn) {
  struct Query {
    uintptr_t addr;
    Window w;
  } q{reinterpret_cast<uintptr_t>(fn), {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* p) -> int {
        auto* qq = static_cast<Query*>(p);
        bool holds = false;
        size_t tls = 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type == PT_LOAD && qq->addr >= info->dlpi_addr + ph.p_vaddr &&
              qq->addr < info->dlpi_addr + ph.p_vaddr + ph.p_memsz)
            holds = true;
          if (ph.p_type == PT_TLS) tls = ph.p_memsz;
        }
        if (!holds) return 0;
        qq->w.data = static_cast<unsigned char*>(info->dlpi_tls_data);
        qq->w.size = qq->w.data ? tls : 0;
        return 1;
      },
      &q);
  return q.w;
}

// ---------------------------------------------------------------------------------------------
// Fibers and the block scheduler

enum class FState { kReady, kBarrier, kWarp, kDone, kFault };

struct AsyncCopy {
  void* dst;
  const void* src;
  int bytes, src_bytes;
};

struct Fiber {
  void* sp = nullptr;
  unsigned char* stack_lo = nullptr;
  ThreadState ts{};
  FState state = FState::kReady;
  std::source_location where;
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
  std::string fault;
  std::vector<AsyncCopy> open_copies;               // issued, not yet committed
  std::vector<std::vector<AsyncCopy>> copy_groups;  // committed, not yet waited for
};

std::string loc_str(const std::source_location& l) {
  const char* f = l.file_name();
  const char* s = std::strrchr(f, '/');
  return std::string(s ? s + 1 : f) + ":" + std::to_string(l.line());
}
std::string dim_str(const uint3& d) {
  char b[48];
  std::snprintf(b, sizeof b, "(%u, %u, %u)", d.x, d.y, d.z);
  return b;
}

// The fibers that may run. Two policies, by the parity of the base seed: odd seeds draw the next
// fiber uniformly at random (threads advance evenly); even seeds give every fiber a random
// priority, drawn again at every barrier, and run the highest first, so one warp may run many
// warp operations before another thread moves at all (as PCT-style schedulers do).
class ReadySet {
 public:
  void reset(unsigned n, bool priority, std::mt19937_64* rng) {
    priority_ = priority;
    rng_ = rng;
    items_.clear();
    prio_.resize(n);
    reshuffle();
  }
  void reshuffle() {
    if (priority_)
      for (auto& p : prio_) p = (*rng_)();
  }
  void push(unsigned i) {
    items_.push_back(i);
    if (priority_) std::push_heap(items_.begin(), items_.end(), Cmp{&prio_});
  }
  bool empty() const { return items_.empty(); }
  unsigned pop() {
    if (priority_) {
      std::pop_heap(items_.begin(), items_.end(), Cmp{&prio_});
    } else {
      const size_t k = size_t((*rng_)() % items_.size());
      std::swap(items_[k], items_.back());
    }
    const unsigned i = items_.back();
    items_.pop_back();
    return i;
  }

 private:
  struct Cmp {
    const std::vector<uint64_t>* prio;
    bool operator()(unsigned a, unsigned b) const { return (*prio)[a] < (*prio)[b]; }
  };
  bool priority_ = false;
  std::mt19937_64* rng_ = nullptr;
  std::vector<unsigned> items_;
  std::vector<uint64_t> prio_;
};

class Runner;
thread_local Runner* tls_runner __attribute__((tls_model("initial-exec"))) = nullptr;

// Runs blocks on the current OS thread, one at a time.
class Runner {
 public:
  ~Runner() {
#if defined(GAN_INTERP_TSAN)
    for (void* f : tsan_fibers_) __tsan_destroy_fiber(f);
#endif
    if (stacks_) {
      // Frames of fibers that never returned leave poisoned shadow; the addresses may come back
      // as device memory.
      GAN_ASAN_UNPOISON(stacks_, nstacks_ * slot_bytes());
      munmap(stacks_, nstacks_ * slot_bytes());
    }
  }

  // Runs one block to completion; false (and `error`) when it failed.
  bool run_block(const Launch& l, KernelInfo& info, const std::string& name, uint3 bid,
                 uint64_t seed, bool learn) {
    launch_ = &l;
    name_ = &name;
    const unsigned n = l.block.x * l.block.y * l.block.z;
    ensure_stacks(n);
    fibers_.resize(n);
    rng_.seed(seed);
    if (dyn_.size() < l.smem) dyn_.resize(l.smem);
    if (l.smem) std::memset(dyn_.data(), kSharedFill, l.smem);
    if (window_fn_ != l.fn) {
      window_ = tls_window_of(l.fn);
      window_fn_ = l.fn;
    }
    if (window_.data &&
        std::find(cleaned_.begin(), cleaned_.end(), window_.data) == cleaned_.end()) {
      std::memset(window_.data, kSharedFill, window_.size);  // first block of this module here
      cleaned_.push_back(window_.data);
    }
    for (unsigned i = 0; i < n; ++i) {
      Fiber& f = fibers_[i];
      f = Fiber{};
      f.ts.thread_idx =
          uint3{i % l.block.x, (i / l.block.x) % l.block.y, i / (l.block.x * l.block.y)};
      f.ts.block_idx = bid;
      f.ts.block_dim = l.block;
      f.ts.grid_dim = l.grid;
      f.ts.lane = i % 32;
      f.stack_lo = stack_lo(i);
      GAN_ASAN_UNPOISON(f.stack_lo, stack_bytes());
      void** top = reinterpret_cast<void**>(f.stack_lo + stack_bytes());
      // Stack as gan_interp_switch leaves it: 6 saved registers, then the return address (the
      // entry); the slot above stands for the entry's own return address (16-byte alignment).
      top[-1] = nullptr;
      top[-2] = reinterpret_cast<void*>(&fiber_entry);
      for (int k = 3; k <= 8; ++k) top[-k] = nullptr;
      f.sp = top - 8;
    }
    bar_gen_ = 0;
    for (auto& g : warp_gen_) g = 0;
#if defined(GAN_INTERP_TSAN)
    while (tsan_fibers_.size() < n) tsan_fibers_.push_back(__tsan_create_fiber(0));
#endif
    GAN_TSAN_RELEASE(&block_token_);  // the fills above happen before the block's accesses
    const bool ok = schedule(n);
    GAN_TSAN_ACQUIRE(&end_token_);  // the block's accesses happen before the refill below
    // Leave the window all fill bytes again (the invariant between blocks); learn the kernel's
    // range from a scan where asked.
    if (window_.data) {
      size_t lo0 = 0, hi0 = 0;
      {
        std::lock_guard<std::mutex> lock(g_kernels_mu);
        lo0 = info.lo;
        hi0 = info.hi;
      }
      if (learn) {
        const auto [lo, hi] = dirty_range();
        if (hi) {
          std::lock_guard<std::mutex> lock(g_kernels_mu);
          info.lo = std::min(info.lo, lo);
          info.hi = std::max(info.hi, hi);
          std::memset(window_.data + lo, kSharedFill, hi - lo);
        }
      } else if (hi0 > lo0) {
        std::memset(window_.data + lo0, kSharedFill, hi0 - lo0);
      }
    }
    tls_thread = nullptr;
    return ok;
  }

  std::string error;

  // The bytes of the window that differ from the fill byte, as [lo, hi) (hi == 0: none).
  std::pair<size_t, size_t> dirty_range() const {
    const unsigned char* d = window_.data;
    const size_t n = window_.size;
    uint64_t fill = 0;
    std::memset(&fill, kSharedFill, 8);
    size_t lo = SIZE_MAX, hi = 0;
    for (size_t k = 0; k < n;) {
      if (k % 8 == 0 && k + 8 <= n) {
        uint64_t w;
        std::memcpy(&w, d + k, 8);
        if (w == fill) {
          k += 8;
          continue;
        }
      }
      if (d[k] != kSharedFill) {
        lo = std::min(lo, k);
        hi = k + 1;
      }
      ++k;
    }
    return {lo, hi};
  }

  // Called on the fiber: hand control back to the scheduler.
  void yield() {
    Fiber& f = *cur_;
    GAN_TSAN_SWITCH(tsan_sched_);
    [[maybe_unused]] void* fake = nullptr;
    GAN_ASAN_START(&fake, sched_bottom_, sched_size_);
    gan_interp_switch(&f.sp, sched_sp_);
    GAN_ASAN_FINISH(fake, &sched_bottom_, &sched_size_);
  }
  Fiber& current() { return *cur_; }
  const Launch& launch() const { return *launch_; }
  void* dynamic() { return dyn_.data(); }
  bool in_stack_guard(const void* a) const {
    const auto* p = static_cast<const unsigned char*>(a);
    if (!guarded_) return false;
    for (size_t i = 0; i < nstacks_; ++i) {
      const unsigned char* g = stacks_ + i * slot_bytes();
      if (p >= g && p < g + page()) return true;
    }
    return false;
  }

 private:
  static size_t page() { return size_t(sysconf(_SC_PAGESIZE)); }
  static size_t stack_bytes() { return fiber_stack_bytes(); }
  static size_t slot_bytes() { return stack_bytes() + page(); }  // guard page + stack
  unsigned char* stack_lo(unsigned i) { return stacks_ + i * slot_bytes() + page(); }

  void ensure_stacks(unsigned n) {
    if (n <= nstacks_) return;
    if (stacks_) {
      // Frames of fibers that never returned leave poisoned shadow; the addresses may come back
      // as device memory.
      GAN_ASAN_UNPOISON(stacks_, nstacks_ * slot_bytes());
      munmap(stacks_, nstacks_ * slot_bytes());
    }
    const size_t len = n * slot_bytes();
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "interp: cannot map %zu bytes of fiber stacks\n", len);
      std::abort();
    }
    stacks_ = static_cast<unsigned char*>(m);
    nstacks_ = n;
    // Guard pages split the mapping (2 areas per stack); within a budget of the kernel's map
    // count limit they make an overflow fault at once, beyond it the canary catches it.
    static std::atomic<size_t> guarded{0};
    guarded_ = guarded.fetch_add(n) + n <= 16384;
    for (unsigned i = 0; i < n; ++i) {
      if (guarded_) mprotect(stacks_ + i * slot_bytes(), page(), PROT_NONE);
      std::memset(stack_lo(i), kStackCanary, kCanaryBytes);
    }
  }

  static void fiber_entry() {
    Runner& r = *tls_runner;
    GAN_ASAN_FINISH(nullptr, &r.sched_bottom_, &r.sched_size_);
    Fiber& f = *r.cur_;
    GAN_TSAN_ACQUIRE(&r.block_token_);
    try {
      r.launch_->body();
      f.state = FState::kDone;
    } catch (const std::exception& e) {
      f.fault = std::string("exception thrown in kernel code: ") + e.what();
      f.state = FState::kFault;
    }
    GAN_TSAN_RELEASE(&r.end_token_);
    GAN_TSAN_SWITCH(r.tsan_sched_);
    GAN_ASAN_START(nullptr, r.sched_bottom_, r.sched_size_);  // this fiber ends here
    gan_interp_switch(&f.sp, r.sched_sp_);
    std::abort();  // never resumed
  }

  std::string where(const Fiber& f) const {
    return "kernel " + *name_ + ", block " + dim_str(f.ts.block_idx) + ", thread " +
           dim_str(f.ts.thread_idx);
  }
  bool fail_block(const std::string& msg) {
    error = msg;
    return false;
  }

  bool schedule(unsigned n) {
#if defined(GAN_INTERP_TSAN)
    tsan_sched_ = __tsan_get_current_fiber();
#endif
    ReadySet& ready = ready_;
    ready.reset(n, base_seed() % 2 == 0, &rng_);
    for (unsigned i = 0; i < n; ++i) ready.push(i);
    unsigned done = 0, at_barrier = 0, at_warp = 0;
    tls_runner = this;
    for (;;) {
      while (!ready.empty()) {
        const unsigned i = ready.pop();
        Fiber& f = fibers_[i];
        cur_ = &f;
        tls_thread = &f.ts;
        GAN_TSAN_SWITCH(tsan_fibers_[i]);
        [[maybe_unused]] void* fake = nullptr;
        GAN_ASAN_START(&fake, f.stack_lo, stack_bytes());
        gan_interp_switch(&sched_sp_, f.sp);
        GAN_ASAN_FINISH(fake, nullptr, nullptr);
        tls_thread = nullptr;
        if (!guarded_ && !canary_intact(f.stack_lo))
          return fail_block("fiber stack overflow in " + where(f) + " (stack " +
                            std::to_string(stack_bytes() / 1024) +
                            " KB; raise GAN_INTERP_STACK_KB)");
        switch (f.state) {
          case FState::kDone:
            ++done;
            break;
          case FState::kFault:
            return fail_block(f.fault + " (" + where(f) + ")");
          case FState::kBarrier:
            ++at_barrier;
            break;
          case FState::kWarp: {
            ++at_warp;
            std::string err;
            const int released = try_release_warp(i, n, ready, err);
            if (released < 0) return fail_block(err);
            at_warp -= unsigned(released);
            break;
          }
          case FState::kReady:
            break;
        }
      }
      if (done == n) return true;
      if (at_warp == 0 && at_barrier > 0 && at_barrier + done == n) {
        if (std::string e = check_barrier(n, done, FState::kBarrier); !e.empty())
          return fail_block(e);
        release(FState::kBarrier, n, ready);
        ++bar_gen_;
        at_barrier = 0;
        continue;
      }
      return fail_block(describe_deadlock(n));
    }
  }

  static bool canary_intact(const unsigned char* lo) {
    uint64_t w[kCanaryBytes / 8];
    std::memcpy(w, lo, kCanaryBytes);
    uint64_t pattern = 0;
    std::memset(&pattern, kStackCanary, 8);
    for (uint64_t v : w)
      if (v != pattern) return false;
    return true;
  }

  std::string check_barrier(unsigned n, unsigned done, FState s) {
    const char* what = s == FState::kBarrier ? "__syncthreads" : "grid sync";
    const Fiber* first = nullptr;
    for (unsigned i = 0; i < n; ++i) {
      const Fiber& f = fibers_[i];
      if (f.state != s) continue;
      if (!first) {
        first = &f;
      } else if (f.where.line() != first->where.line() ||
                 (f.where.file_name() != first->where.file_name() &&
                  std::strcmp(f.where.file_name(), first->where.file_name()) != 0)) {
        return std::string("threads wait at different ") + what + " barriers: thread " +
               dim_str(first->ts.thread_idx) + " at " + loc_str(first->where) + ", thread " +
               dim_str(f.ts.thread_idx) + " at " + loc_str(f.where) + " (kernel " + *name_ +
               ", block " + dim_str(f.ts.block_idx) + ")";
      }
    }
    if (done > 0)
      return std::string(what) + " at " + loc_str(first->where) + " reached by " +
             std::to_string(n - done) + " of " + std::to_string(n) + " threads; " +
             std::to_string(done) + " had exited (kernel " + *name_ + ", block " +
             dim_str(first->ts.block_idx) + ")";
    return {};
  }

  void release(FState s, unsigned n, ReadySet& ready) {
    ready.reshuffle();  // a new phase: new priorities
    for (unsigned i = 0; i < n; ++i)
      if (fibers_[i].state == s) {
        fibers_[i].state = FState::kReady;
        ready.push(i);
      }
  }

  // Releases fiber i's warp group when complete: >= 0 fibers released, -1 on a misuse.
  int try_release_warp(unsigned i, unsigned n, ReadySet& ready, std::string& err) {
    const Fiber& f = fibers_[i];
    const unsigned warp = i / 32, lane = i % 32;
    const unsigned mask = f.mask;
    auto at = [&](const Fiber& g) { return std::string(" at ") + loc_str(g.where); };
    if (!(mask >> lane & 1u)) {
      err = "warp operation" + at(f) + " with mask " + hex(mask) +
            " that excludes the calling lane " + std::to_string(lane) + " (" + where(f) + ")";
      return -1;
    }
    if (f.width < 1 || f.width > 32 || (f.width & (f.width - 1))) {
      err = "shuffle width " + std::to_string(f.width) + " is not a power of 2 <= 32" + at(f) +
            " (" + where(f) + ")";
      return -1;
    }
    for (unsigned l = 0; l < 32; ++l) {
      if (!(mask >> l & 1u)) continue;
      const unsigned j = warp * 32 + l;
      if (j >= n) {
        err = "warp operation" + at(f) + " names lane " + std::to_string(l) +
              ", which does not exist (the block has " + std::to_string(n) + " threads) (" +
              where(f) + ")";
        return -1;
      }
      const Fiber& g = fibers_[j];
      if (g.state == FState::kDone) {
        err = "warp operation" + at(f) + " with mask " + hex(mask) + " names lane " +
              std::to_string(l) + ", which has exited (" + where(f) + ")";
        return -1;
      }
      if (g.state != FState::kWarp) return 0;
      if (g.mask != mask || g.op != f.op) {
        err = "lanes of one warp disagree: lane " + std::to_string(lane) + at(f) + " (mask " +
              hex(mask) + "), lane " + std::to_string(l) + at(g) + " (mask " + hex(g.mask) + ") (" +
              where(f) + ")";
        return -1;
      }
    }
    // Every lane of the group is here: compute each lane's result from the values.
    uint64_t ballot = 0;
    for (unsigned l = 0; l < 32; ++l)
      if (mask >> l & 1u) ballot |= (fibers_[warp * 32 + l].value != 0 ? 1ull : 0ull) << l;
    int released = 0;
    for (unsigned l = 0; l < 32; ++l) {
      if (!(mask >> l & 1u)) continue;
      Fiber& g = fibers_[warp * 32 + l];
      const int w = g.width;
      const int seg = int(l) & ~(w - 1);
      int src = int(l);
      switch (g.op) {
        case WarpOp::kShflIdx:
          src = seg + (g.arg & (w - 1));
          break;
        case WarpOp::kShflUp:
          src = (int(l) - seg) >= g.arg ? int(l) - g.arg : int(l);
          break;
        case WarpOp::kShflDown:
          src = (int(l) - seg) + g.arg < w ? int(l) + g.arg : int(l);
          break;
        case WarpOp::kShflXor:
          src = int(l) ^ g.arg;
          if ((src & ~(w - 1)) > seg || src > 31) src = int(l);
          break;
        default:
          break;
      }
      if (src < 0 || src > 31 || !(mask >> unsigned(src) & 1u)) {
        const unsigned j = warp * 32 + unsigned(std::max(0, std::min(31, src)));
        err = "shuffle" + at(g) + " by lane " + std::to_string(l) + " reads lane " +
              std::to_string(src) + ", which is not in the mask " + hex(mask) +
              (j < n && fibers_[j].state == FState::kDone ? " (it has exited)" : "") + " (" +
              where(g) + ")";
        return -1;
      }
      switch (g.op) {
        case WarpOp::kBallot:
          g.result = ballot;
          break;
        case WarpOp::kAny:
          g.result = ballot != 0;
          break;
        case WarpOp::kAll:
          g.result = ballot == uint64_t(mask);
          break;
        case WarpOp::kSync:
          g.result = 0;
          break;
        default:
          g.result = fibers_[warp * 32 + unsigned(src)].value;
      }
    }
    for (unsigned l = 0; l < 32; ++l)
      if (mask >> l & 1u) {
        fibers_[warp * 32 + l].state = FState::kReady;
        ready.push(warp * 32 + l);
        ++released;
      }
    ++warp_gen_[warp % 32];
    return released;
  }

  static std::string hex(unsigned v) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%08x", v);
    return b;
  }

  std::string describe_deadlock(unsigned n) {
    std::map<std::string, unsigned> groups;
    for (unsigned i = 0; i < n; ++i) {
      const Fiber& f = fibers_[i];
      std::string k;
      switch (f.state) {
        case FState::kBarrier:
          k = "__syncthreads at " + loc_str(f.where);
          break;
        case FState::kWarp:
          k = "warp operation (mask " + hex(f.mask) + ") at " + loc_str(f.where);
          break;
        case FState::kDone:
          k = "exited";
          break;
        default:
          k = "running";
      }
      ++groups[k];
    }
    std::string s =
        "deadlock in kernel " + *name_ + ", block " + dim_str(fibers_[0].ts.block_idx) + ": ";
    bool first = true;
    for (const auto& [k, c] : groups) {
      s += (first ? "" : "; ") + std::to_string(c) + " threads " + k;
      first = false;
    }
    return s;
  }

  std::vector<Fiber> fibers_;
  ReadySet ready_;
  std::vector<void*> tsan_fibers_;  // TSan: one fiber context per stack slot
  void* tsan_sched_ = nullptr;

 public:
  // TSan sync objects (addresses only): block start and end, barrier and warp generations.
  char block_token_ = 0, end_token_ = 0;
  char bar_tokens_[2] = {};
  unsigned bar_gen_ = 0;
  char warp_tokens_[32][2] = {};
  unsigned warp_gen_[32] = {};

 private:
  unsigned char* stacks_ = nullptr;
  size_t nstacks_ = 0;
  void* sched_sp_ = nullptr;
  // ASan: the scheduler's stack, as the first switch into a fiber reports it.
  const void* sched_bottom_ = nullptr;
  size_t sched_size_ = 0;
  Fiber* cur_ = nullptr;
  std::mt19937_64 rng_;
  const Launch* launch_ = nullptr;
  const std::string* name_ = nullptr;
  std::vector<unsigned char> dyn_;
  Window window_;
  const void* window_fn_ = nullptr;
  std::vector<unsigned char*> cleaned_;  // modules whose window this thread has filled
  bool guarded_ = false;
};

Runner& runner() {
  thread_local std::unique_ptr<Runner> r;
  if (!r) r = std::make_unique<Runner>();
  return *r;
}

void install_altstack();

// A pool of OS threads; a job runs on `k` of them (the caller is one).
class Pool {
 public:
  void run(int k, const std::function<void(int)>& job) {
    if (k <= 1) {
      job(0);
      return;
    }
    std::unique_lock<std::mutex> lock(mu_);
    while (int(threads_.size()) < k - 1) {
      const int idx = int(threads_.size());
      threads_.emplace_back([this, idx] { worker(idx); });
    }
    job_ = &job;
    participants_ = k - 1;
    remaining_ = k - 1;
    ++gen_;
    cv_work_.notify_all();
    lock.unlock();
    job(k - 1);
    lock.lock();
    cv_done_.wait(lock, [&] { return remaining_ == 0; });
    job_ = nullptr;
  }

 private:
  void worker(int idx) {
    install_altstack();
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_work_.wait(lock, [&] { return gen_ != seen; });
      seen = gen_;
      if (idx >= participants_) continue;
      const auto* job = job_;
      lock.unlock();
      (*job)(idx);
      lock.lock();
      if (--remaining_ == 0) cv_done_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::vector<std::thread> threads_;  // never joined: they live as long as the process
  const std::function<void(int)>* job_ = nullptr;
  int participants_ = 0, remaining_ = 0;
  uint64_t gen_ = 0;
};

// Launches use a pool of GAN_INTERP_THREADS.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

int pool_threads() {
  static const int n = [] {
    const char* e = std::getenv("GAN_INTERP_THREADS");
    const int v = e ? std::atoi(e) : 0;
    return v > 0 ? v : std::max(1, int(std::thread::hardware_concurrency()));
  }();
  return n;
}

std::atomic<uint64_t> g_launches{0};

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// ---------------------------------------------------------------------------------------------
// Fault handler: names the kernel, block and thread (or the API call) and the allocation.

// One alternate signal stack per thread (the fault handler runs on it when a fiber's stack
// overflows into its guard page), released when the thread ends.
void install_altstack() {
  struct AltStack {
    void* mem = nullptr;
    ~AltStack() {
      if (!mem) return;
      stack_t off{};
      off.ss_flags = SS_DISABLE;
      sigaltstack(&off, nullptr);
      std::free(mem);
    }
  };
  thread_local AltStack alt;
  if (alt.mem) return;
  stack_t ss{};
  ss.ss_size = 64 * 1024;
  ss.ss_sp = alt.mem = std::malloc(ss.ss_size);
  sigaltstack(&ss, nullptr);
}

void on_fault(int sig, siginfo_t* si, void* uc) {
  const void* addr = si->si_addr;
  bool write = false;
#if defined(__x86_64__)
  write = (static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
  std::string what = describe_address(addr);
  const bool overflow = tls_runner && tls_thread && tls_runner->in_stack_guard(addr);
  if (what.empty() && !overflow) {
    signal(sig, SIG_DFL);  // not ours: the default action on return
    return;
  }
  std::string where;
  if (tls_thread && tls_runner) {
    const auto& t = *tls_thread;
    where = "kernel " + kernel_name(tls_runner->launch().fn) + ", block " + dim_str(t.block_idx) +
            ", thread " + dim_str(t.thread_idx);
  } else {
    where = tls_activity ? tls_activity : "host code";
  }
  if (overflow)
    std::fprintf(stderr, "interp: fiber stack overflow in %s (raise GAN_INTERP_STACK_KB)\n",
                 where.c_str());
  else
    std::fprintf(stderr, "interp: invalid %s at %p: %s, in %s (schedule seed %llu)\n",
                 write ? "write" : "read", addr, what.c_str(), where.c_str(),
                 static_cast<unsigned long long>(base_seed()));
  std::fflush(stderr);
  signal(SIGABRT, SIG_DFL);
  std::abort();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Interface

void ensure_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
  });
  install_altstack();
}

uint64_t base_seed() {
  static const uint64_t s = [] {
    const char* e = std::getenv("GAN_INTERP_SEED");
    return e && *e ? std::strtoull(e, nullptr, 10) : 1ull;
  }();
  return s;
}

cudaError_t fail(cudaError_t code, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_err_mu);
  g_messages[int(code)] = message;
  if (g_pending == cudaSuccess) g_pending = code;
  std::fprintf(stderr, "interp: %s\n", message.c_str());
  return code;
}

cudaError_t take_pending() {
  std::lock_guard<std::mutex> lock(g_err_mu);
  const cudaError_t e = g_pending;
  g_pending = cudaSuccess;
  return e;
}

cudaError_t peek_pending() {
  std::lock_guard<std::mutex> lock(g_err_mu);
  return g_pending;
}

const char* message_for(cudaError_t code) {
  std::lock_guard<std::mutex> lock(g_err_mu);
  auto it = g_messages.find(int(code));
  return it == g_messages.end() ? nullptr : it->second.c_str();
}

std::string kernel_name(const void* fn) {
  std::lock_guard<std::mutex> lock(g_kernels_mu);
  KernelInfo& k = g_kernels[fn];
  if (k.name.empty()) {
    Dl_info di{};
    std::string sym;
    if (dladdr(fn, &di) && di.dli_fname)
      sym = di.dli_sname && di.dli_saddr == fn
                ? di.dli_sname
                : symbol_from_file(di.dli_fname, reinterpret_cast<uintptr_t>(di.dli_fbase),
                                   reinterpret_cast<uintptr_t>(fn));
    if (sym.empty()) {
      char b[32];
      std::snprintf(b, sizeof b, "%p", fn);
      k.name = b;
    } else {
      int st = 0;
      char* d = abi::__cxa_demangle(sym.c_str(), nullptr, nullptr, &st);
      k.name = st == 0 && d ? d : sym;
      std::free(d);
      const std::string anon = "(anonymous namespace)::";
      for (size_t p; (p = k.name.find(anon)) != std::string::npos;) k.name.erase(p, anon.size());
      // Drop the parameter list: "ns::kernel<1>(Args, float*)" -> "ns::kernel<1>".
      int depth = 0;
      for (size_t i = 0; i < k.name.size(); ++i) {
        if (k.name[i] == '<') ++depth;
        if (k.name[i] == '>') --depth;
        if (k.name[i] == '(' && depth == 0) {
          k.name.resize(i);
          break;
        }
      }
    }
  }
  return k.name;
}

void set_max_dynamic_smem(const void* fn, int bytes) {
  std::lock_guard<std::mutex> lock(g_kernels_mu);
  g_kernels[fn].max_dynamic_smem = bytes;
}

int max_blocks_per_sm(int threads, size_t smem) {
  if (threads <= 0) return 0;
  const int warps = (threads + 31) / 32;
  int n = std::min(kMaxBlocksPerSm, kMaxThreadsPerSm / (warps * 32));
  if (smem > 0) n = std::min<int>(n, int(kSmemPerSm / smem));
  return n;
}

cudaError_t validate_launch(const Launch& l) {
  auto bad = [&](cudaError_t e, const std::string& why) {
    return fail(e, "launch of " + kernel_name(l.fn) + " " + why);
  };
  const dim3 g = l.grid, b = l.block;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0)
    return bad(cudaErrorInvalidConfiguration, "with a zero grid or block dimension");
  if (b.x > 1024 || b.y > 1024 || b.z > 64 || uint64_t(b.x) * b.y * b.z > 1024)
    return bad(cudaErrorInvalidConfiguration, "with block " + dim_str(uint3{b.x, b.y, b.z}) +
                                                  ": over 1024 threads (or x, y > 1024, z > 64)");
  if (g.x > 2147483647u || g.y > 65535 || g.z > 65535)
    return bad(cudaErrorInvalidConfiguration, "with grid " + dim_str(uint3{g.x, g.y, g.z}) +
                                                  " over the limits (2^31-1, 65535, 65535)");
  int optin = 0;
  {
    std::lock_guard<std::mutex> lock(g_kernels_mu);
    optin = g_kernels[l.fn].max_dynamic_smem;
  }
  if (l.smem > kSmemPerBlockOptin)
    return bad(cudaErrorInvalidValue, "with " + std::to_string(l.smem) +
                                          " bytes of dynamic shared memory (the H100 has 227 KB)");
  if (l.smem > kSmemPerBlock && l.smem > size_t(optin))
    return bad(cudaErrorInvalidValue, "with " + std::to_string(l.smem) +
                                          " bytes of dynamic shared memory, over 48 KB without "
                                          "cudaFuncAttributeMaxDynamicSharedMemorySize");
  return cudaSuccess;
}

cudaError_t execute_launch(const Launch& l) {
  ensure_init();
  const std::string name = kernel_name(l.fn);
  KernelInfo* info = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_kernels_mu);
    info = &g_kernels[l.fn];
  }
  bool learn = false;
  {
    std::lock_guard<std::mutex> lock(g_kernels_mu);
    learn = info->scans < kLearnLaunches;
    if (learn) ++info->scans;
  }
  const uint64_t index = g_launches.fetch_add(1);
  const uint64_t seed = mix(base_seed() ^ mix(index));
  const uint64_t nblocks = uint64_t(l.grid.x) * l.grid.y * l.grid.z;
  auto block_of = [&](uint64_t k) {
    return uint3{unsigned(k % l.grid.x), unsigned((k / l.grid.x) % l.grid.y),
                 unsigned(k / (uint64_t(l.grid.x) * l.grid.y))};
  };
  std::mutex err_mu;
  std::string first_error;
  std::atomic<bool> failed{false};
  auto record = [&](const std::string& e) {
    std::lock_guard<std::mutex> lock(err_mu);
    if (first_error.empty()) first_error = e;
    failed = true;
  };
  {
    // Blocks in a seeded random order, spread over the pool.
    std::vector<uint64_t> order(nblocks);
    for (uint64_t k = 0; k < nblocks; ++k) order[k] = k;
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    std::atomic<uint64_t> next{0};
    const int workers = int(std::min<uint64_t>(nblocks, uint64_t(pool_threads())));
    pool().run(workers, [&](int) {
      install_altstack();
      Runner& r = runner();
      bool first = true;
      for (uint64_t i; !failed && (i = next.fetch_add(1)) < nblocks;) {
        const uint64_t k = order[i];
        if (!r.run_block(l, *info, name, block_of(k), mix(seed + k), learn && first)) {
          record(r.error);
          break;
        }
        first = false;
      }
    });
  }
  if (failed)
    return fail(cudaErrorLaunchFailure,
                first_error + " (schedule seed " + std::to_string(base_seed()) +
                    "; replay with GAN_INTERP_SEED=" + std::to_string(base_seed()) + ")");
  return cudaSuccess;
}

// Called on fibers (through device.h).
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width,
                 const std::source_location& loc) {
  Runner& r = *tls_runner;
  Fiber& f = r.current();
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.where = loc;
  f.state = FState::kWarp;
  const unsigned warp =
      (f.ts.thread_idx.x +
       f.ts.block_dim.x * (f.ts.thread_idx.y + f.ts.block_dim.y * f.ts.thread_idx.z)) /
      32;
  char* token = r.warp_tokens_[warp % 32] + r.warp_gen_[warp % 32] % 2;
  GAN_TSAN_RELEASE(token);
  r.yield();
  GAN_TSAN_ACQUIRE(token);
  return f.result;
}

void block_sync(const std::source_location& loc) {
  Runner& r = *tls_runner;
  Fiber& f = r.current();
  f.where = loc;
  f.state = FState::kBarrier;
  char* token = r.bar_tokens_ + r.bar_gen_ % 2;
  GAN_TSAN_RELEASE(token);
  r.yield();
  GAN_TSAN_ACQUIRE(token);
}

void kernel_fault(const char* what) {
  Runner& r = *tls_runner;
  Fiber& f = r.current();
  f.fault = what;
  f.state = FState::kFault;
  r.yield();
  std::abort();
}

void* dynamic_shared() { return tls_runner->dynamic(); }

void tsan_fence() {
  static char token;
  GAN_TSAN_RELEASE(&token);
  GAN_TSAN_ACQUIRE(&token);
}

void async_copy(void* dst, const void* src, int bytes, int src_bytes) {
  if (src_bytes < 0 || src_bytes > bytes) kernel_fault("cp.async: src-size outside [0, 16]");
  // The GPU reads only src_bytes, but compute-sanitizer's memcheck checks the whole span (seen on
  // an H200, CUDA 13.0): a partial chunk at the end of a buffer must still lie inside it.
  if (src_bytes > 0) {
    const std::string past = span_past_end(src, size_t(bytes));
    if (!past.empty())
      kernel_fault(("cp.async: the source span of a partial copy runs past its buffer (" + past +
                    "); memcheck reports that: pad the buffer to whole 16-byte chunks")
                       .c_str());
  }
  tls_runner->current().open_copies.push_back(AsyncCopy{dst, src, bytes, src_bytes});
}

void async_commit() {
  Fiber& f = tls_runner->current();
  f.copy_groups.push_back(std::move(f.open_copies));
  f.open_copies.clear();
}

void async_wait(int n) {
  Fiber& f = tls_runner->current();
  const size_t keep = size_t(n < 0 ? 0 : n);
  size_t done = 0;
  while (f.copy_groups.size() - done > keep) {
    for (const AsyncCopy& c : f.copy_groups[done]) {
      auto* d = static_cast<unsigned char*>(c.dst);
      if (c.src_bytes > 0) std::memcpy(d, c.src, size_t(c.src_bytes));
      std::memset(d + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
    }
    ++done;
  }
  f.copy_groups.erase(f.copy_groups.begin(), f.copy_groups.begin() + long(done));
}

cudaError_t submit_launch(const void* fn, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          std::function<void()> body) {
  ensure_init();
  auto l = std::make_shared<Launch>();
  l->fn = fn;
  l->grid = grid;
  l->block = block;
  l->smem = smem;
  l->body = std::move(body);
  if (const cudaError_t e = validate_launch(*l); e != cudaSuccess) return e;
  // GAN_INTERP_GRAPH_NODES=1 lists a captured graph's kernels by name (the name lives in
  // g_kernels, which never drops an entry).
  static const bool by_name = [] {
    const char* e = std::getenv("GAN_INTERP_GRAPH_NODES");
    return e && *e == '1';
  }();
  const char* what = "kernel launch";
  if (by_name) {
    kernel_name(fn);
    std::lock_guard<std::mutex> lock(g_kernels_mu);
    what = g_kernels[fn].name.c_str();
  }
  return submit(stream, what, [l] { return execute_launch(*l); });
}

cudaError_t enqueue(cudaStream_t stream, const char* what, std::function<void()> work) {
  ensure_init();
  return submit(stream, what, [w = std::move(work)] {
    w();
    return cudaSuccess;
  });
}

}  // namespace gan::interp
