// Graph memory without graph allocation nodes. A CUDA graph captured with stream-ordered
// allocations gets one allocation node and one free node per tensor made and dropped inside the
// step: about 60% of the nodes of a training iteration. Instead, the tensors allocated while a
// CaptureArena is active come from one buffer (allocated from the engine's pool before the
// capture, so the memory the eager step freed is reused), placed best-fit with coalescing and
// given back to the arena when dropped; kernels see fixed addresses, replays run on one stream, so
// reusing a block within the step is ordered like the pool's own reuse.
//
// The buffer's size comes from an AllocationTrace of the eager step before the capture (the same
// ops in the same order), replayed through the same placement (arena_bytes_for). An allocation
// that does not fit falls back to the pool (a graph node, as before), so a sequence that differs
// costs nodes, never correctness. A tensor allocated inside the capture and still alive after it
// keeps its block, which every replay rewrites (as memory the graph allocated itself would be).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <vector>

namespace gan::cuda {

// Best-fit placement in [0, capacity) with coalescing, 256-byte granules. Host-side only.
class ArenaPlacement {
 public:
  explicit ArenaPlacement(size_t capacity) : capacity_(capacity) {
    if (capacity) free_[0] = capacity;
  }
  static constexpr size_t kNone = size_t(-1);
  size_t allocate(size_t bytes);  // offset, or kNone when no free block is large enough
  void release(size_t offset);
  size_t live() const { return used_.size(); }
  size_t high_water() const { return high_; }  // the largest end offset ever placed

 private:
  size_t capacity_;
  std::map<size_t, size_t> free_;  // offset -> size
  std::map<size_t, size_t> used_;  // offset -> size
  size_t high_ = 0;
};

// CUDA tensor allocations and frees, in order, while tracing (begin_allocation_trace).
struct AllocationTrace {
  struct Event {
    const void* id;  // the Storage
    size_t bytes;    // allocations only
    bool alloc;
  };
  std::vector<Event> events;
};
// Records into `trace` until called with nullptr. Not nested.
void begin_allocation_trace(AllocationTrace* trace);
// Storage's hook (engine/tensor.cpp): one allocation (alloc) or free of a CUDA tensor.
void trace_allocation(const void* id, size_t bytes, bool alloc);
// The arena size that places the trace's allocations that it also frees, in order. Those still
// alive at its end are the step's persistent state (a workspace grown, a first-use buffer), which
// a capture of the same step does not allocate again.
size_t arena_bytes_for(const AllocationTrace& trace);

// The arena of one captured graph: active between activate() and deactivate() (the capture).
class CaptureArena {
 public:
  explicit CaptureArena(size_t bytes);  // allocates on the engine stream (outside a capture)
  ~CaptureArena();                      // frees it stream-ordered
  CaptureArena(const CaptureArena&) = delete;
  CaptureArena& operator=(const CaptureArena&) = delete;
  void activate();
  void deactivate();
  size_t bytes() const { return bytes_; }
  size_t live() const;                             // allocations still placed
  size_t fallbacks() const { return fallbacks_; }  // allocations that went to the pool

  // Storage's hooks (engine/tensor.cpp): a block, or nullptr to use the pool.
  struct State;
  static std::shared_ptr<State> active();
  static void* allocate(const std::shared_ptr<State>& s, size_t bytes);
  static void release(State& s, void* p);

 private:
  std::shared_ptr<State> state_;
  size_t bytes_ = 0;
  size_t fallbacks_ = 0;
};

}  // namespace gan::cuda
