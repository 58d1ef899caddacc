// Guarded device memory for the interpreter: each allocation sits between PROT_NONE pages, so an
// out-of-bounds access or a use after free faults at once and the fault handler (runtime.cpp)
// names the kernel and the allocation.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>

#include "kernels/interpreter/runtime_internal.h"

namespace gan::interp {

namespace {

constexpr size_t kAlign = 16;                   // user pointers: 16-byte aligned
constexpr unsigned char kCanary = 0xA7;         // alignment slack around the user bytes
constexpr unsigned char kFresh = 0xFF;          // new memory (NaN as float)
constexpr size_t kQuarantineBytes = 256 << 20;  // freed address space kept PROT_NONE
constexpr size_t kQuarantineCount = 8192;

size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}
size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

struct Region {
  char* map = nullptr;  // [guard page][data pages][guard page]
  size_t map_len = 0;
  char* user = nullptr;
  size_t bytes = 0;
  bool freed = false;
  bool graph_owned = false;
  char* data() const { return map + page_size(); }
  size_t data_len() const { return map_len - 2 * page_size(); }
};

struct Registry {
  std::mutex mu;
  std::map<uintptr_t, Region> regions;  // by map start: live, quarantined and graph-owned
  std::map<uintptr_t, uintptr_t> user_to_map;
  std::deque<uintptr_t> quarantine;
  size_t quarantine_bytes = 0;
  size_t live_bytes = 0, high_water = 0;
  size_t used_high = 0;  // high water of live_bytes since the last reset_used_high()
};

Registry& reg() {
  static Registry* r = new Registry;  // never destroyed: memory may be freed at exit
  return *r;
}

void fill_canaries(const Region& r) {
  std::memset(r.data(), kCanary, size_t(r.user - r.data()));
  std::memset(r.user + r.bytes, kCanary, size_t(r.data() + r.data_len() - (r.user + r.bytes)));
}

// Empty when the slack bytes around the allocation are intact.
std::string check_canaries(const Region& r) {
  for (char* p = r.data(); p < r.user; ++p)
    if (static_cast<unsigned char>(*p) != kCanary)
      return std::to_string(r.user - p) + " bytes before the start";
  for (char* p = r.data() + r.data_len() - 1; p >= r.user + r.bytes; --p)
    if (static_cast<unsigned char>(*p) != kCanary)
      return std::to_string(p - (r.user + r.bytes)) + " bytes past the end";
  return {};
}

Region* find_user_locked(Registry& g, const void* p) {
  auto it = g.user_to_map.find(reinterpret_cast<uintptr_t>(p));
  if (it == g.user_to_map.end()) return nullptr;
  return &g.regions.at(it->second);
}

void unmap_locked(Registry& g, uintptr_t key) {
  auto it = g.regions.find(key);
  if (it == g.regions.end()) return;
  g.user_to_map.erase(reinterpret_cast<uintptr_t>(it->second.user));
  munmap(it->second.map, it->second.map_len);
  g.regions.erase(it);
}

}  // namespace

void* device_alloc(size_t bytes) {
  const size_t pg = page_size();
  const size_t user_len = round_up(bytes ? bytes : 1, kAlign);
  const size_t data_len = round_up(user_len, pg);
  const size_t len = data_len + 2 * pg;
  void* m = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  char* map = static_cast<char*>(m);
  if (mprotect(map + pg, data_len, PROT_READ | PROT_WRITE) != 0) {
    munmap(map, len);
    return nullptr;
  }
  Region r;
  r.map = map;
  r.map_len = len;
  r.user = map + pg + data_len - user_len;
  r.bytes = bytes;
  fill_canaries(r);
  std::memset(r.user, kFresh, bytes);
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  g.regions[reinterpret_cast<uintptr_t>(map)] = r;
  g.user_to_map[reinterpret_cast<uintptr_t>(r.user)] = reinterpret_cast<uintptr_t>(map);
  g.live_bytes += bytes;
  if (g.live_bytes > g.high_water) g.high_water = g.live_bytes;
  if (g.live_bytes > g.used_high) g.used_high = g.live_bytes;
  return r.user;
}

cudaError_t device_free(void* p) {
  if (!p) return cudaSuccess;
  Registry& g = reg();
  std::unique_lock<std::mutex> lock(g.mu);
  Region* r = find_user_locked(g, p);
  if (!r) {
    lock.unlock();
    return fail(
        cudaErrorInvalidValue,
        "interp: cudaFree of a pointer that is not a device allocation: " +
            std::string(describe_address(p).empty() ? "unknown address" : describe_address(p)));
  }
  if (r->freed) {
    const size_t n = r->bytes;
    lock.unlock();
    return fail(cudaErrorInvalidValue,
                "interp: double free of a " + std::to_string(n) + "-byte device allocation");
  }
  const std::string bad = check_canaries(*r);
  if (!bad.empty()) {
    std::fprintf(stderr,
                 "interp: out-of-bounds write detected at free: %s of a %zu-byte device "
                 "allocation (inside its alignment slack)\n",
                 bad.c_str(), r->bytes);
    std::abort();
  }
  mprotect(r->map, r->map_len, PROT_NONE);
  // Keep the address range (a use after free still faults) but not the pages: a quarantine of up
  // to 256 MiB of freed memory held resident made a long run's resident set creep upwards
  // (tools/scripts/stability.py on a --cuda-graph run, where only the sample grids free memory).
  madvise(r->map, r->map_len, MADV_DONTNEED);
  r->freed = true;
  g.live_bytes -= r->bytes;
  if (r->graph_owned) return cudaSuccess;  // the graph unmaps it
  g.quarantine.push_back(reinterpret_cast<uintptr_t>(r->map));
  g.quarantine_bytes += r->map_len;
  while (g.quarantine_bytes > kQuarantineBytes || g.quarantine.size() > kQuarantineCount) {
    const uintptr_t key = g.quarantine.front();
    g.quarantine.pop_front();
    auto it = g.regions.find(key);
    if (it != g.regions.end()) g.quarantine_bytes -= it->second.map_len;
    unmap_locked(g, key);
  }
  return cudaSuccess;
}

void device_arm(void* p, bool on) {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  Region* r = find_user_locked(g, p);
  if (!r) return;
  r->graph_owned = true;
  if (on) {
    mprotect(r->data(), r->data_len(), PROT_READ | PROT_WRITE);
    fill_canaries(*r);
    std::memset(r->user, kFresh, r->bytes);
    if (r->freed) g.live_bytes += r->bytes;
    r->freed = false;
  } else if (!r->freed) {
    mprotect(r->map, r->map_len, PROT_NONE);
    r->freed = true;
    g.live_bytes -= r->bytes;
  }
  if (g.live_bytes > g.high_water) g.high_water = g.live_bytes;
  if (g.live_bytes > g.used_high) g.used_high = g.live_bytes;
}

void device_release(void* p) {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  Region* r = find_user_locked(g, p);
  if (!r) return;
  if (!r->freed) g.live_bytes -= r->bytes;
  unmap_locked(g, reinterpret_cast<uintptr_t>(r->map));
}

std::string describe_address(const void* addr) {
  Registry& g = reg();
  std::unique_lock<std::mutex> lock(g.mu, std::try_to_lock);
  if (!lock.owns_lock()) return {};
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  auto it = g.regions.upper_bound(a);
  if (it == g.regions.begin()) return {};
  --it;
  const Region& r = it->second;
  if (a >= it->first + r.map_len) return {};
  const char* p = static_cast<const char*>(addr);
  std::string s;
  if (p < r.user)
    s = std::to_string(r.user - p) + " bytes before the start of";
  else if (p >= r.user + r.bytes)
    s = std::to_string(p - (r.user + r.bytes)) + " bytes past the end of";
  else
    s = "byte " + std::to_string(p - r.user) + " of";
  s += " a " + std::to_string(r.bytes) + "-byte device allocation";
  if (r.freed) s += r.graph_owned ? " that the graph has freed" : " that was freed";
  return s;
}

bool is_device_address(const void* addr) {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  auto it = g.regions.upper_bound(a);
  if (it == g.regions.begin()) return false;
  --it;
  return a < it->first + it->second.map_len;
}

std::string span_past_end(const void* addr, size_t n) {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  auto it = g.regions.upper_bound(a);
  if (it == g.regions.begin()) return {};
  --it;
  const Region& r = it->second;
  const char* p = static_cast<const char*>(addr);
  if (a >= it->first + r.map_len || p < r.user || p >= r.user + r.bytes) return {};
  if (p + n <= r.user + r.bytes) return {};
  return std::to_string(p + n - (r.user + r.bytes)) + " of its " + std::to_string(n) +
         " bytes lie past the end of a " + std::to_string(r.bytes) + "-byte device allocation";
}

size_t reserved_bytes() {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  return g.high_water;
}

size_t used_bytes() {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  return g.live_bytes;
}

size_t used_high_bytes() {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  return g.used_high;
}

void reset_used_high() {
  Registry& g = reg();
  std::lock_guard<std::mutex> lock(g.mu);
  g.used_high = g.live_bytes;
}

}  // namespace gan::interp
