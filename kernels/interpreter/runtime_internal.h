// Shared by the interpreter's runtime files (not by kernel code): errors, memory, streams.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include <cuda_runtime_api.h>

namespace gan::interp {

// Runtime set-up (signal handler, environment); idempotent, called by every entry point.
void ensure_init();
// The base seed of the schedules (GAN_INTERP_SEED, default 1).
uint64_t base_seed();

// Errors. A failed launch or API call leaves its error pending: the next cudaGetLastError(),
// synchronising call or graph launch returns it (and clears it). The message is what
// cudaGetErrorString() returns for that code until the next error.
cudaError_t fail(cudaError_t code, const std::string& message);
cudaError_t take_pending();
cudaError_t peek_pending();
const char* message_for(cudaError_t code);

// What the current OS thread is doing outside kernels (named by the memory-fault report).
extern thread_local const char* tls_activity;
struct Activity {
  const char* saved;
  explicit Activity(const char* what) : saved(tls_activity) { tls_activity = what; }
  ~Activity() { tls_activity = saved; }
};

// Device memory: every allocation has PROT_NONE pages right after its end (to the byte, up to
// 16-byte alignment, whose slack holds canary bytes checked at free) and before its start; freed
// memory stays PROT_NONE in a quarantine. New memory is filled with 0xFF bytes (NaN as floats).
void* device_alloc(size_t bytes);
cudaError_t device_free(void* p);
// Graph-owned allocations: made once at capture, re-armed (readable, refilled) by the replay's
// allocation node and disarmed (PROT_NONE) by its free node; unmapped with the graph.
void device_arm(void* p, bool on);
void device_release(void* p);
// Describes addr relative to the allocations ("12 bytes past the end of a 4096-byte allocation");
// empty when addr is not near one. Safe to call from the fault handler (try-lock).
std::string describe_address(const void* addr);
// Whether addr lies in a device allocation's mapping (live, quarantined or graph-owned).
bool is_device_address(const void* addr);
// Empty unless [addr, addr + n) starts inside a device allocation and runs past its end; then
// says by how much.
std::string span_past_end(const void* addr, size_t n);
// Bytes the pool holds (high-water mark of live device allocations).
size_t reserved_bytes();
// Bytes of live device allocations, their high water since reset_used_high() (the pool's
// UsedMemCurrent / UsedMemHigh; reserved_bytes() is the high water of all time, the pool keeping
// what it had: ReservedMem*).
size_t used_bytes();
size_t used_high_bytes();
void reset_used_high();

// Streams: work runs as it is enqueued, except while the stream is being captured, when it is
// recorded into the capture's graph. `work` returns cudaSuccess or the error it set with fail().
cudaError_t submit(cudaStream_t stream, const char* what, std::function<cudaError_t()> work);
// Records an allocation or free node when `stream` is being captured; false otherwise.
bool capture_alloc(cudaStream_t stream, void* p);
bool capture_free(cudaStream_t stream, void* p);
// A call that would synchronise (or allocate synchronously): invalidates any capture in
// progress (global or thread-local mode), as CUDA does, and returns the error; else cudaSuccess.
cudaError_t check_sync_allowed(const char* call);

// Kernel launches (runtime.cpp).
struct Launch {
  const void* fn = nullptr;
  dim3 grid, block;
  size_t smem = 0;
  std::function<void()> body;
};
cudaError_t validate_launch(const Launch& l);
cudaError_t execute_launch(const Launch& l);
// The kernel's name (demangled, from the symbol table of the module that holds it).
std::string kernel_name(const void* fn);
// cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize).
void set_max_dynamic_smem(const void* fn, int bytes);

}  // namespace gan::interp
