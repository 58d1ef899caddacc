// The CUDA runtime API subset the engine uses, on host memory, for the interpreter: streams
// (work runs as it is enqueued), events (host clock), guarded device memory and the
// stream-ordered pool, stream capture into graphs and their replay, device queries answered from
// the H100 model, and errors that carry the interpreter's diagnosis.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <cuda_profiler_api.h>

#include "kernels/interpreter/runtime_internal.h"
#include "kernels/interpreter/simt.h"

namespace gan::interp {
struct GraphData;
struct Capture;
}  // namespace gan::interp

struct CUstream_st {
  unsigned flags = 0;
  std::shared_ptr<gan::interp::Capture> capture;
};
struct CUevent_st {
  unsigned flags = 0;
  double ms = 0;                                // host clock at the record
  std::weak_ptr<gan::interp::Capture> capture;  // recorded on a stream being captured into it
};
struct CUgraph_st {
  std::shared_ptr<gan::interp::GraphData> g;
};
struct CUgraphExec_st {
  std::shared_ptr<gan::interp::GraphData> g;
};
struct CUmemPoolHandle_st {
  int unused = 0;
};

namespace gan::interp {

struct Node {
  enum Kind { kWork, kAlloc, kFree } kind = kWork;
  std::string what;
  std::function<cudaError_t()> work;
  void* ptr = nullptr;
};

struct GraphData {
  std::vector<Node> nodes;
  std::vector<void*> owned;  // allocated by the graph: unmapped with it
  ~GraphData() {
    for (void* p : owned) device_release(p);
  }
};

struct Capture {
  std::shared_ptr<GraphData> g = std::make_shared<GraphData>();
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id owner;
  bool invalid = false;
  std::string why;
  CUstream_st* origin = nullptr;
  // Streams that joined by waiting on an event recorded in this capture (a fork, as CUDA's
  // cross-stream capture): their work goes into the same graph, in enqueue order.
  std::vector<CUstream_st*> joined;
};

namespace {

std::mutex g_mu;
std::vector<std::weak_ptr<Capture>> g_captures;  // in progress
CUstream_st g_legacy;                            // the legacy default stream (never captured)
CUmemPoolHandle_st g_pool;

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

CUstream_st* resolve(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return &g_legacy;
  return s;
}

std::shared_ptr<Capture> capture_of(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(g_mu);
  return resolve(s)->capture;
}

cudaError_t run_graph(const std::shared_ptr<GraphData>& g) {
  for (const Node& n : g->nodes) {
    switch (n.kind) {
      case Node::kAlloc:
        device_arm(n.ptr, true);
        break;
      case Node::kFree:
        device_arm(n.ptr, false);
        break;
      case Node::kWork: {
        Activity a(n.what.c_str());
        if (const cudaError_t e = n.work(); e != cudaSuccess) return e;
      }
    }
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t submit(cudaStream_t stream, const char* what, std::function<cudaError_t()> work) {
  if (auto cap = capture_of(stream)) {
    if (cap->invalid) return cudaErrorStreamCaptureInvalidated;
    Node n;
    n.what = what;
    n.work = std::move(work);
    cap->g->nodes.push_back(std::move(n));
    return cudaSuccess;
  }
  Activity a(what);
  return work();
}

bool capture_alloc(cudaStream_t stream, void* p) {
  auto cap = capture_of(stream);
  if (!cap) return false;
  Node n;
  n.kind = Node::kAlloc;
  n.ptr = p;
  cap->g->nodes.push_back(n);
  cap->g->owned.push_back(p);
  device_arm(p, true);
  return true;
}

bool capture_free(cudaStream_t stream, void* p) {
  auto cap = capture_of(stream);
  if (!cap) return false;
  bool owned = false;
  for (void* q : cap->g->owned) owned = owned || q == p;
  Node n;
  n.ptr = p;
  if (owned) {
    n.kind = Node::kFree;
    device_arm(p, false);
  } else {
    n.what = "cudaFreeAsync (graph node)";
    n.work = [p] { return device_free(p); };
  }
  cap->g->nodes.push_back(std::move(n));
  return true;
}

// This thread's capture interaction mode (cudaThreadExchangeStreamCaptureMode).
thread_local cudaStreamCaptureMode tls_capture_mode = cudaStreamCaptureModeGlobal;

cudaError_t check_sync_allowed(const char* call) {
  if (tls_capture_mode == cudaStreamCaptureModeRelaxed) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mu);
  cudaError_t e = cudaSuccess;
  for (auto& w : g_captures) {
    auto c = w.lock();
    if (!c || c->invalid) continue;
    const bool applies =
        c->mode == cudaStreamCaptureModeGlobal ||
        (c->mode == cudaStreamCaptureModeThreadLocal && c->owner == std::this_thread::get_id());
    if (!applies) continue;
    c->invalid = true;
    c->why = std::string(call) + " was called while a stream was being captured";
    e = cudaErrorStreamCaptureUnsupported;
  }
  if (e != cudaSuccess)
    return fail(e, std::string("interp: ") + call +
                       " during stream capture: not allowed in a CUDA graph (the capture is "
                       "invalidated)");
  return cudaSuccess;
}

}  // namespace gan::interp

using namespace gan::interp;

namespace {

const char* code_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure:
      return "cudaErrorLaunchFailure";
    case cudaErrorCooperativeLaunchTooLarge:
      return "cudaErrorCooperativeLaunchTooLarge";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotSupported:
      return "cudaErrorNotSupported";
    default:
      return "cudaErrorUnknown";
  }
}

cudaError_t sync_point(const char* call) {
  ensure_init();
  if (const cudaError_t e = check_sync_allowed(call); e != cudaSuccess) return e;
  return take_pending();
}

}  // namespace

extern "C" {

// Errors ----------------------------------------------------------------------------------------
cudaError_t cudaGetLastError() { return take_pending(); }
cudaError_t cudaPeekAtLastError() { return peek_pending(); }
const char* cudaGetErrorName(cudaError_t e) { return code_name(e); }
const char* cudaGetErrorString(cudaError_t e) {
  if (const char* m = message_for(e)) return m;
  return e == cudaSuccess ? "no error" : code_name(e);
}

// Device ----------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaDeviceSynchronize() { return sync_point("cudaDeviceSynchronize"); }
cudaError_t cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *v = 132;
      break;
    case cudaDevAttrCooperativeLaunch:  // the interpreter has no cooperative launches
      *v = 0;
      break;
    case cudaDevAttrMaxThreadsPerBlock:
      *v = 1024;
      break;
    case cudaDevAttrMaxThreadsPerMultiProcessor:
      *v = 2048;
      break;
    case cudaDevAttrWarpSize:
      *v = 32;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *v = 48 * 1024;
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *v = 227 * 1024;
      break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *v = 228 * 1024;
      break;
    case cudaDevAttrMaxRegistersPerBlock:
    case cudaDevAttrMaxRegistersPerMultiprocessor:
      *v = 65536;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *v = 9;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *v = 0;
      break;
    case cudaDevAttrMaxBlocksPerMultiprocessor:
      *v = 32;
      break;
    case cudaDevAttrMemoryPoolsSupported:
      *v = 1;
      break;
    default:
      return fail(cudaErrorInvalidValue, "interp: cudaDeviceGetAttribute: attribute " +
                                             std::to_string(int(attr)) +
                                             " is not in the interpreter's H100 model");
  }
  return cudaSuccess;
}

// The modelled device's memory: what it reports, not what the host has (allocations come from
// the host's heap and fail there first).
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *total_bytes = size_t(80) << 30;
  *free_bytes = *total_bytes / 2;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "%s", "gan-engine interpreter (H100 model, CPU)");
  p->totalGlobalMem = size_t(80) << 30;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->sharedMemPerMultiprocessor = 228 * 1024;
  p->regsPerBlock = 65536;
  p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->maxThreadsPerMultiProcessor = 2048;
  p->maxBlocksPerMultiProcessor = 32;
  p->cooperativeLaunch = 0;
  p->memoryPoolsSupported = 1;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void*, int block_size,
                                                          size_t dynamic_smem) {
  *n = max_blocks_per_sm(block_size, dynamic_smem);
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* n, const void* fn,
                                                                   int block_size,
                                                                   size_t dynamic_smem, unsigned) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, fn, block_size, dynamic_smem);
}

cudaError_t cudaFuncSetAttribute(const void* fn, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > 227 * 1024)
      return fail(cudaErrorInvalidValue,
                  "interp: cudaFuncSetAttribute: " + std::to_string(value) +
                      " bytes of dynamic shared memory is over the H100's 227 KB");
    set_max_dynamic_smem(fn, value);
  }
  return cudaSuccess;
}

cudaError_t cudaProfilerStart() { return cudaSuccess; }
cudaError_t cudaProfilerStop() { return cudaSuccess; }

// Memory ----------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t bytes) {
  ensure_init();
  if (const cudaError_t e = check_sync_allowed("cudaMalloc"); e != cudaSuccess) return e;
  *p = device_alloc(bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  ensure_init();
  if (const cudaError_t e = check_sync_allowed("cudaFree"); e != cudaSuccess) return e;
  return device_free(p);
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream) {
  ensure_init();
  *p = device_alloc(bytes);
  if (!*p) return cudaErrorMemoryAllocation;
  capture_alloc(stream, *p);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream) {
  ensure_init();
  if (capture_free(stream, p)) return cudaSuccess;
  return device_free(p);
}
// Pinned host memory is host memory; allocating or freeing it synchronises the device in CUDA,
// so it is refused during a capture here too.
namespace {
std::mutex g_pinned_mu;
std::map<uintptr_t, size_t> g_pinned;  // pinned host allocations: start -> bytes

bool pinned(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_pinned_mu);
  auto it = g_pinned.upper_bound(a);
  if (it == g_pinned.begin()) return false;
  --it;
  return a < it->first + it->second;
}
}  // namespace

cudaError_t cudaMallocHost(void** p, size_t bytes) {
  ensure_init();
  if (const cudaError_t e = check_sync_allowed("cudaMallocHost"); e != cudaSuccess) return e;
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  if (*p) {
    std::lock_guard<std::mutex> lock(g_pinned_mu);
    g_pinned[reinterpret_cast<uintptr_t>(*p)] = bytes;
  }
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) { return cudaMallocHost(p, bytes); }
cudaError_t cudaFreeHost(void* p) {
  ensure_init();
  if (const cudaError_t e = check_sync_allowed("cudaFreeHost"); e != cudaSuccess) return e;
  {
    std::lock_guard<std::mutex> lock(g_pinned_mu);
    g_pinned.erase(reinterpret_cast<uintptr_t>(p));
  }
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (const cudaError_t e = sync_point("cudaMemcpy"); e != cudaSuccess) return e;
  Activity a("cudaMemcpy");
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                            cudaStream_t stream) {
  ensure_init();
  // A captured copy from or to pageable host memory reads (writes) that memory at every replay,
  // long after the caller may have freed it: refused, as a graph cannot hold such a copy safely.
  if (bytes && capture_of(stream)) {
    for (const void* p : {static_cast<const void*>(dst), src})
      if (!is_device_address(p) && !pinned(p)) {
        if (auto cap = capture_of(stream)) {
          cap->invalid = true;
          cap->why = "a cudaMemcpyAsync touched pageable host memory";
        }
        return fail(cudaErrorStreamCaptureUnsupported,
                    "interp: cudaMemcpyAsync from or to pageable host memory during stream "
                    "capture: the graph would read it at every replay, after the caller may have "
                    "freed it (use device fills or pinned memory)");
      }
  }
  return submit(stream, "cudaMemcpyAsync", [=] {
    if (bytes) std::memmove(dst, src, bytes);
    return cudaSuccess;
  });
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (const cudaError_t e = sync_point("cudaMemset"); e != cudaSuccess) return e;
  Activity a("cudaMemset");
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  ensure_init();
  return submit(stream, "cudaMemsetAsync", [=] {
    std::memset(p, value, bytes);
    return cudaSuccess;
  });
}
cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t stream) {
  ensure_init();
  if (width > pitch && height > 1)
    return fail(cudaErrorInvalidValue, "interp: cudaMemset2DAsync: width " + std::to_string(width) +
                                           " exceeds the pitch " + std::to_string(pitch));
  return submit(stream, "cudaMemset2DAsync", [=] {
    for (size_t r = 0; r < height; ++r)
      std::memset(static_cast<char*>(p) + r * pitch, value, width);
    return cudaSuccess;
  });
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  *pool = &g_pool;
  return cudaSuccess;
}
// Resetting UsedMemHigh (to 0, the only value CUDA allows) starts a new high water.
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr attr, void*) {
  if (attr == cudaMemPoolAttrUsedMemHigh) gan::interp::reset_used_high();
  return cudaSuccess;
}
// The interpreter's pool holds nothing back: trimming has nothing to release.
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr attr, void* value) {
  switch (attr) {
    case cudaMemPoolAttrReservedMemCurrent:
    case cudaMemPoolAttrReservedMemHigh:
      *static_cast<uint64_t*>(value) = reserved_bytes();
      return cudaSuccess;
    case cudaMemPoolAttrUsedMemHigh:
      *static_cast<uint64_t*>(value) = gan::interp::used_high_bytes();
      return cudaSuccess;
    case cudaMemPoolAttrUsedMemCurrent:
      *static_cast<uint64_t*>(value) = gan::interp::used_bytes();
      return cudaSuccess;
    default:
      return cudaErrorInvalidValue;
  }
}

// Streams ---------------------------------------------------------------------------------------
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  *s = new CUstream_st;
  (*s)->flags = flags;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s || s == cudaStreamLegacy || s == cudaStreamPerThread)
    return cudaErrorInvalidResourceHandle;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (s->capture) std::erase(s->capture->joined, s);
  }
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return sync_point("cudaStreamSynchronize"); }
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
// Work runs as it is enqueued, so there is nothing to wait for; but a stream that waits on an
// event recorded during a capture joins that capture (CUDA's fork into another stream).
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  if (!e) return cudaErrorInvalidResourceHandle;
  std::lock_guard<std::mutex> lock(g_mu);
  auto c = e->capture.lock();
  CUstream_st* st = resolve(s);
  if (!c || st->capture == c) return cudaSuccess;
  if (st == &g_legacy) return cudaErrorStreamCaptureImplicit;
  if (st->capture) return cudaErrorStreamCaptureMerge;
  st->capture = c;
  c->joined.push_back(st);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  ensure_init();
  CUstream_st* st = resolve(s);
  if (st == &g_legacy)
    return fail(cudaErrorStreamCaptureUnsupported,
                "interp: cudaStreamBeginCapture on the legacy default stream");
  std::lock_guard<std::mutex> lock(g_mu);
  if (st->capture) return cudaErrorIllegalState;
  auto c = std::make_shared<Capture>();
  c->mode = mode;
  c->owner = std::this_thread::get_id();
  c->origin = st;
  st->capture = c;
  g_captures.push_back(c);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  CUstream_st* st = resolve(s);
  std::shared_ptr<Capture> c;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (st->capture && st->capture->origin != st)
      return fail(cudaErrorStreamCaptureUnmatched,
                  "interp: cudaStreamEndCapture on a stream that joined the capture, not on the "
                  "stream that began it");
    c = std::move(st->capture);
    st->capture.reset();
    if (c)
      for (CUstream_st* j : c->joined)
        if (j->capture == c) j->capture.reset();
    std::erase_if(g_captures, [&](const std::weak_ptr<Capture>& w) {
      auto p = w.lock();
      return !p || p == c;
    });
  }
  *graph = nullptr;
  if (!c) return cudaErrorIllegalState;
  if (c->invalid)
    return fail(cudaErrorStreamCaptureInvalidated, "interp: capture invalidated: " + c->why);
  *graph = new CUgraph_st{c->g};
  return cudaSuccess;
}

// A thread in relaxed mode may make calls that would otherwise invalidate a capture in progress
// (a watchdog thread querying events while the training thread captures).
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  if (!mode) return cudaErrorInvalidValue;
  std::swap(*mode, tls_capture_mode);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  auto c = capture_of(s);
  *status = !c           ? cudaStreamCaptureStatusNone
            : c->invalid ? cudaStreamCaptureStatusInvalidated
                         : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

// Graphs ----------------------------------------------------------------------------------------
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return cudaErrorInvalidValue;
  *exec = new CUgraphExec_st{graph->g};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  ensure_init();
  if (!exec) return cudaErrorInvalidValue;
  auto g = exec->g;
  return submit(stream, "cudaGraphLaunch", [g] { return run_graph(g); });
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
// The node count only (gan_bench reports it); listing the nodes themselves is not supported.
// GAN_INTERP_GRAPH_NODES=1 prints, with each count, how many nodes of each name the graph has
// (kernels by function name; copies, memsets, allocations, frees), most frequent first.
cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* count) {
  if (!graph || !count) return cudaErrorInvalidValue;
  if (nodes)
    return fail(cudaErrorNotSupported, "interp: cudaGraphGetNodes lists no nodes, only counts");
  *count = graph->g->nodes.size();
  if (const char* e = std::getenv("GAN_INTERP_GRAPH_NODES"); e && *e == '1') {
    std::map<std::string, int> by;
    for (const Node& n : graph->g->nodes)
      ++by[n.kind == Node::kAlloc ? "(allocation)" : n.kind == Node::kFree ? "(free)" : n.what];
    std::vector<std::pair<int, std::string>> v;
    for (const auto& [name, k] : by) v.emplace_back(k, name);
    std::sort(v.rbegin(), v.rend());
    std::fprintf(stderr, "interp: graph of %zu nodes:\n", *count);
    for (const auto& [k, name] : v) std::fprintf(stderr, "  %5d  %s\n", k, name.c_str());
  }
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

// Events ----------------------------------------------------------------------------------------
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  *e = new CUevent_st;
  (*e)->flags = flags;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  ensure_init();
  e->capture = capture_of(stream);
  return submit(stream, "cudaEventRecord", [e] {
    e->ms = now_ms();
    return cudaSuccess;
  });
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return sync_point("cudaEventSynchronize"); }
cudaError_t cudaEventQuery(cudaEvent_t) {
  ensure_init();
  return check_sync_allowed("cudaEventQuery");
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if ((a->flags | b->flags) & cudaEventDisableTiming) return cudaErrorInvalidResourceHandle;
  *ms = float(b->ms - a->ms);
  return cudaSuccess;
}

}  // extern "C"
