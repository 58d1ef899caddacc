#include "engine/capture_arena.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <unordered_map>

#include "engine/device.h"
#include "engine/error.h"

namespace gan::cuda {

namespace {
constexpr size_t kGranule = 256;
size_t granules(size_t bytes) {
  return (std::max<size_t>(bytes, 1) + kGranule - 1) / kGranule * kGranule;
}
std::mutex g_mu;
AllocationTrace* g_trace = nullptr;
// Lock-free fast paths for Storage's hooks, which run on every CUDA allocation and free: both
// are false except while tracing an eager step or capturing with an arena.
std::atomic<bool> g_tracing{false};
std::atomic<bool> g_arena_on{false};
}  // namespace

size_t ArenaPlacement::allocate(size_t bytes) {
  const size_t need = granules(bytes);
  auto best = free_.end();
  for (auto it = free_.begin(); it != free_.end(); ++it)
    if (it->second >= need && (best == free_.end() || it->second < best->second)) best = it;
  if (best == free_.end()) return kNone;
  const size_t off = best->first, size = best->second;
  free_.erase(best);
  if (size > need) free_[off + need] = size - need;
  used_[off] = need;
  high_ = std::max(high_, off + need);
  return off;
}

void ArenaPlacement::release(size_t offset) {
  auto u = used_.find(offset);
  GAN_CHECK(u != used_.end(), "capture arena: release of an offset never placed");
  size_t off = offset, size = u->second;
  used_.erase(u);
  auto next = free_.lower_bound(off);
  if (next != free_.end() && off + size == next->first) {  // merge with the block after
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {  // and with the block before
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      prev->second += size;
      return;
    }
  }
  free_[off] = size;
}

void begin_allocation_trace(AllocationTrace* trace) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_trace = trace;
  g_tracing = trace != nullptr;
}

// Called by Storage (engine/tensor.cpp) for every CUDA allocation and free.
void trace_allocation(const void* id, size_t bytes, bool alloc) {
  if (!g_tracing.load(std::memory_order_relaxed)) return;
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_trace) g_trace->events.push_back({id, bytes, alloc});
}

size_t arena_bytes_for(const AllocationTrace& trace) {
  // Which allocations the trace also frees (ids are reused after a free: match in order).
  std::vector<bool> transient(trace.events.size(), false);
  std::unordered_map<const void*, size_t> open;  // id -> index of its allocation
  for (size_t i = 0; i < trace.events.size(); ++i) {
    const auto& e = trace.events[i];
    if (e.alloc) {
      open[e.id] = i;
    } else if (auto it = open.find(e.id); it != open.end()) {
      transient[it->second] = true;
      open.erase(it);
    }
  }
  ArenaPlacement p(size_t(1) << 62);
  std::unordered_map<const void*, size_t> at;
  for (size_t i = 0; i < trace.events.size(); ++i) {
    const auto& e = trace.events[i];
    if (e.alloc) {
      if (transient[i]) at[e.id] = p.allocate(e.bytes);
    } else if (auto it = at.find(e.id); it != at.end()) {
      p.release(it->second);
      at.erase(it);
    }
  }
  return p.high_water();
}

struct CaptureArena::State {
  char* base = nullptr;
  ArenaPlacement place{0};
  bool active = false;
  size_t fallbacks = 0;
};

namespace {
std::shared_ptr<CaptureArena::State> g_active;
}

CaptureArena::CaptureArena(size_t bytes)
    : state_(std::make_shared<State>()), bytes_(granules(bytes)) {
  state_->place = ArenaPlacement(bytes_);
  // The pool keeps what the eager step freed, in pieces; give it back first so that the arena
  // takes its place rather than adding to it (one synchronisation, before the capture).
  synchronize();
  GAN_CUDA_CHECK(cudaMemPoolTrimTo(context().pool, 0));
  GAN_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&state_->base), bytes_, stream()));
}

CaptureArena::~CaptureArena() {
  deactivate();
  if (state_->base) (void)cudaFreeAsync(state_->base, stream());
  state_->base = nullptr;
}

void CaptureArena::activate() {
  std::lock_guard<std::mutex> lock(g_mu);
  GAN_CHECK(!g_active, "capture arena: another arena is active");
  state_->active = true;
  g_active = state_;
  g_arena_on = true;
}

void CaptureArena::deactivate() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_active == state_) g_active.reset();
  g_arena_on = g_active != nullptr;
  state_->active = false;
  fallbacks_ = state_->fallbacks;
}

size_t CaptureArena::live() const {
  std::lock_guard<std::mutex> lock(g_mu);
  return state_->place.live();
}

std::shared_ptr<CaptureArena::State> CaptureArena::active() {
  if (!g_arena_on.load(std::memory_order_relaxed)) return nullptr;
  std::lock_guard<std::mutex> lock(g_mu);
  return g_active;
}

void* CaptureArena::allocate(const std::shared_ptr<State>& s, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!s->active || !s->base) return nullptr;
  const size_t off = s->place.allocate(bytes);
  if (off == ArenaPlacement::kNone) {
    ++s->fallbacks;
    return nullptr;
  }
  return s->base + off;
}

void CaptureArena::release(State& s, void* p) {
  std::lock_guard<std::mutex> lock(g_mu);
  // Outside the capture the block stays placed: the graph's replays own it.
  if (!s.active || !s.base) return;
  s.place.release(size_t(static_cast<char*>(p) - s.base));
}

}  // namespace gan::cuda
