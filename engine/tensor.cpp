#include "engine/tensor.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "engine/capture_arena.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/host_memory.h"
#include "kernels/bf16.h"
#include "kernels/cpu/ops.h"
#include "kernels/elementwise.h"

namespace gan {

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "f32";
    case DType::F64:
      return "f64";
    case DType::BF16:
      return "bf16";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::F64:
      return 8;
    case DType::BF16:
      return 2;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Allocation and guard mode

namespace {

constexpr size_t kGuardBytes = 256;
constexpr unsigned char kGuardByte = 0xA5;
constexpr unsigned char kUninitByte = 0xFF;  // every float32/float64 made of it is a NaN

struct GuardRegistry {
  std::mutex mu;
  bool on = false;
  std::set<const Storage*> live;
  std::vector<std::string> violations;
};

GuardRegistry& guards() {
  static GuardRegistry* g = new GuardRegistry;  // never destroyed: storages may outlive statics
  return *g;
}

// Checks both guard regions of s; records a violation message. Caller holds the mutex.
void check_guards_locked(const Storage& s, std::vector<std::string>& out) {
  std::vector<unsigned char> front(s.guard), back(s.guard);
  const auto* base = static_cast<const unsigned char*>(s.base);
  if (s.device == Device::CUDA) {
    GAN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
    GAN_CUDA_CHECK(cudaMemcpy(front.data(), base, s.guard, cudaMemcpyDeviceToHost));
    GAN_CUDA_CHECK(
        cudaMemcpy(back.data(), base + s.guard + s.bytes, s.guard, cudaMemcpyDeviceToHost));
  } else {
    std::memcpy(front.data(), base, s.guard);
    std::memcpy(back.data(), base + s.guard + s.bytes, s.guard);
  }
  for (size_t i = 0; i < s.guard; ++i) {
    if (front[i] != kGuardByte) {
      out.push_back(fmt::format("{} allocation of {} bytes: write {} bytes before its start",
                                device_name(s.device), s.bytes, s.guard - i));
      break;
    }
  }
  for (size_t i = 0; i < s.guard; ++i) {
    if (back[i] != kGuardByte) {
      out.push_back(fmt::format("{} allocation of {} bytes: write at byte {} past its end",
                                device_name(s.device), s.bytes, i));
      break;
    }
  }
}

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Host memory of CPU tensors. Blocks of 64 KiB and more go back to free lists by size class when
// freed and are handed out again: a training step after the first then takes nothing from the
// OS, whose fresh pages cost a page fault each (13% of a DCGAN-64 step on the CPU backend before
// this cache; glibc returns large blocks to the OS on free). Size classes are 2^k, 1.25, 1.5 and
// 1.75 times 2^k, so a block is at most 25% larger than asked. A request whose class has no free
// block takes the smallest free block of a larger class up to twice its own (best fit) before
// asking the OS: the blocks parked in other classes are memory the process already holds (with
// exact classes only, the ResNet SAGAN at 64 px kept 24% of its tensors' peak parked there). At
// most a quarter of the machine's memory (up to 8 GiB) stays cached (InceptionV3 at batch 50
// cycles through about 3 GiB). Guarded allocations (tests) never use it.
class HostCache {
 public:
  static size_t size_class(size_t bytes) {
    if (bytes < kMin) return round_up(bytes ? bytes : 1, 64);
    size_t p = size_t(1) << (63 - __builtin_clzll(bytes));
    for (size_t q : {p, p + p / 4, p + p / 2, p + 3 * (p / 4)})
      if (bytes <= q) return q;
    return 2 * p;
  }
  void* get(size_t bytes) {
    size_t c = size_class(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    void* p = nullptr;
    if (c >= kMin) {
      auto it = free_.lower_bound(c);  // lists are never left empty in the map
      if (it != free_.end() && it->first <= 2 * c) {
        c = it->first;
        p = it->second.back();
        it->second.pop_back();
        if (it->second.empty()) free_.erase(it);
        cached_ -= c;
      }
    }
    if (!p) p = std::aligned_alloc(64, c);
    if (!p) return nullptr;  // the caller reports it
    if (c >= kMin) class_of_[p] = c;
    live_ += c;
    peak_live_ = std::max(peak_live_, live_);
    peak_total_ = std::max(peak_total_, live_ + cached_);
    return p;
  }
  void put(void* p, size_t bytes) {
    size_t c = size_class(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    if (c >= kMin) {  // the block's own class (it may be larger than the request's)
      auto it = class_of_.find(p);
      if (it != class_of_.end()) c = it->second, class_of_.erase(it);
    }
    live_ -= c;
    if (c >= kMin && cached_ + c <= max_cached()) {
      free_[c].push_back(p);
      cached_ += c;
      return;
    }
    std::free(p);
  }
  host_memory::Stats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {live_, cached_, peak_live_, peak_total_};
  }

 private:
  static constexpr size_t kMin = size_t(64) << 10;
  static size_t max_cached() {
    static const size_t m = [] {
      const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
      const size_t quarter = pages > 0 && page > 0 ? size_t(pages) * size_t(page) / 4 : 0;
      return std::clamp(quarter, size_t(1) << 30, size_t(8) << 30);
    }();
    return m;
  }
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;   // by class; no empty lists
  std::unordered_map<void*, size_t> class_of_;  // blocks of kMin and more handed out
  size_t cached_ = 0;
  size_t live_ = 0, peak_live_ = 0, peak_total_ = 0;  // bytes of size classes (host_memory.h)
};

// Never destroyed: tensors may be freed during static destruction.
HostCache& host_cache() {
  static HostCache* c = new HostCache;
  return *c;
}

}  // namespace

namespace debug {

void set_guard_mode(bool on) {
  std::lock_guard<std::mutex> lock(guards().mu);
  guards().on = on;
}

bool guard_mode() {
  std::lock_guard<std::mutex> lock(guards().mu);
  return guards().on;
}

std::vector<std::string> take_guard_violations() {
  GuardRegistry& g = guards();
  std::lock_guard<std::mutex> lock(g.mu);
  for (const Storage* s : g.live) check_guards_locked(*s, g.violations);
  std::vector<std::string> out;
  out.swap(g.violations);
  return out;
}

}  // namespace debug

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device device, bool pinned) {
  auto s = std::make_shared<Storage>();
  s->bytes = bytes;
  s->device = device;
  s->pinned = pinned;
  GuardRegistry& g = guards();
  const bool guarded = debug::guard_mode();
  if (guarded && device == Device::CUDA) {
    // Guard checks synchronise and copy on the legacy stream: impossible inside a capture.
    GAN_CHECK(!cuda::capturing(),
              "tensor: guard mode (debug::set_guard_mode) cannot be used while a CUDA graph is "
              "being captured");
  }
  s->guard = guarded ? kGuardBytes : 0;
  const size_t total = bytes + 2 * s->guard;
  if (device == Device::CUDA) {
    cudaStream_t st = cuda::stream();
    if (auto a = cuda::CaptureArena::active(); a && !guarded) {  // inside an arena's capture
      if (void* p = cuda::CaptureArena::allocate(a, total)) {
        s->base = p;
        s->arena = a;
      }
    }
    if (!s->base) GAN_CUDA_CHECK(cudaMallocAsync(&s->base, total ? total : 1, st));
    cuda::trace_allocation(s.get(), total, true);
    if (guarded) {
      auto* b = static_cast<unsigned char*>(s->base);
      GAN_CUDA_CHECK(cudaMemsetAsync(b, kGuardByte, s->guard, st));
      GAN_CUDA_CHECK(cudaMemsetAsync(b + s->guard, kUninitByte, bytes, st));
      GAN_CUDA_CHECK(cudaMemsetAsync(b + s->guard + bytes, kGuardByte, s->guard, st));
    }
  } else if (pinned) {
    GAN_CUDA_CHECK(cudaMallocHost(&s->base, total ? total : 1));
  } else {
    s->base =
        guarded ? std::aligned_alloc(64, round_up(total ? total : 1, 64)) : host_cache().get(total);
    GAN_CHECK(s->base != nullptr, fmt::format("tensor: out of host memory ({} bytes)", bytes));
  }
  s->data = static_cast<unsigned char*>(s->base) + s->guard;
  if (guarded && device == Device::CPU) {
    auto* b = static_cast<unsigned char*>(s->base);
    std::memset(b, kGuardByte, s->guard);
    std::memset(b + s->guard, kUninitByte, bytes);
    std::memset(b + s->guard + bytes, kGuardByte, s->guard);
  }
  if (guarded) {
    std::lock_guard<std::mutex> lock(g.mu);
    g.live.insert(s.get());
  }
  return s;
}

Storage::~Storage() {
  if (!base) return;
  if (guard) {
    GuardRegistry& g = guards();
    std::lock_guard<std::mutex> lock(g.mu);
    g.live.erase(this);
    try {
      check_guards_locked(*this, g.violations);
    } catch (const Error&) {
      // The context may be gone at exit; nothing to report then.
    }
  }
  if (device == Device::CUDA) {
    cuda::trace_allocation(this, 0, false);
    if (arena) {  // back to the arena (inside its capture), else kept for the graph's replays
      cuda::CaptureArena::release(*std::static_pointer_cast<cuda::CaptureArena::State>(arena),
                                  base);
      return;
    }
    // Stream-ordered free: later work on the engine stream may reuse the memory. Errors are
    // ignored because destructors run at exit, when the runtime may already be unloading.
    (void)cudaFreeAsync(base, cuda::stream());
  } else if (pinned) {
    (void)cudaFreeHost(base);
  } else if (guard) {
    std::free(base);
  } else {
    host_cache().put(base, bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor

template <>
float* Tensor::data<float>() const {
  GAN_CHECK(dtype_ == DType::F32, "tensor: f32 data requested from a " + str() + " tensor");
  return static_cast<float*>(raw());
}

template <>
double* Tensor::data<double>() const {
  GAN_CHECK(dtype_ == DType::F64, "tensor: f64 data requested from a " + str() + " tensor");
  return static_cast<double*>(raw());
}

template <>
uint16_t* Tensor::data<uint16_t>() const {
  GAN_CHECK(dtype_ == DType::BF16, "tensor: bf16 data requested from a " + str() + " tensor");
  return static_cast<uint16_t*>(raw());
}

Tensor Tensor::empty(const Shape& shape, Device device, DType dtype) {
  GAN_CHECK(!(dtype == DType::F64 && device == Device::CUDA),
            "tensor: f64 exists on the cpu only (the reference path); cuda tensors are f32");
  Tensor t;
  t.shape_ = shape;
  t.device_ = device;
  t.dtype_ = dtype;
  t.storage_ = Storage::allocate(t.nbytes(), device);
  return t;
}

Tensor Tensor::empty_pinned(const Shape& shape, DType dtype) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.storage_ = Storage::allocate(t.nbytes(), Device::CPU, /*pinned=*/true);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, Device device, DType dtype) {
  Tensor t = empty(shape, device, dtype);
  t.zero_();
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, Device device, DType dtype) {
  Tensor t = empty(shape, device, dtype);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape, Device device) {
  GAN_CHECK(int64_t(v.size()) == shape.numel(),
            fmt::format("tensor: {} values for shape {}", v.size(), shape.str()));
  Tensor t = empty(shape, device, DType::F32);
  if (device == Device::CUDA) {
    GAN_CUDA_CHECK(
        cudaMemcpyAsync(t.raw(), v.data(), t.nbytes(), cudaMemcpyHostToDevice, cuda::stream()));
  } else if (!v.empty()) {
    std::memcpy(t.raw(), v.data(), t.nbytes());
  }
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& shape) {
  GAN_CHECK(int64_t(v.size()) == shape.numel(),
            fmt::format("tensor: {} values for shape {}", v.size(), shape.str()));
  Tensor t = empty(shape, Device::CPU, DType::F64);
  if (!v.empty()) std::memcpy(t.raw(), v.data(), t.nbytes());
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < s.ndim; ++i) {
    if (s.dims[i] == -1) {
      GAN_CHECK(infer < 0, "reshape: more than one -1 in " + shape.str());
      infer = i;
    } else {
      known *= s.dims[i];
    }
  }
  if (infer >= 0) {
    GAN_CHECK(known > 0 && numel() % known == 0,
              "reshape: cannot reshape " + shape_.str() + " to " + shape.str());
    s.dims[infer] = numel() / known;
  }
  GAN_CHECK(s.numel() == numel(), "reshape: cannot reshape " + shape_.str() + " (" +
                                      std::to_string(numel()) + " elements) to " + s.str());
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  Tensor t = empty(shape_, device, dtype_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  const int64_t n = numel();
  const bool bf16 = (dtype_ == DType::F32 && dtype == DType::BF16) ||
                    (dtype_ == DType::BF16 && dtype == DType::F32);
  if (bf16) {
    Tensor t = empty(shape_, device_, dtype);
    if (device_ == Device::CUDA && dtype == DType::BF16)
      kernels::f32_to_bf16_cuda(data<float>(), t.data<uint16_t>(), n, cuda::stream());
    else if (device_ == Device::CUDA)
      kernels::bf16_to_f32_cuda(data<uint16_t>(), t.data<float>(), n, cuda::stream());
    else if (dtype == DType::BF16)
      kernels::cpu::f32_to_bf16(data<float>(), t.data<uint16_t>(), n);
    else
      kernels::cpu::bf16_to_f32(data<uint16_t>(), t.data<float>(), n);
    return t;
  }
  GAN_CHECK(device_ == Device::CPU,
            "tensor: f64 conversion is a cpu operation (cuda converts f32 <-> bf16), got " + str());
  Tensor t = empty(shape_, Device::CPU, dtype);
  if (dtype_ == DType::F32 && dtype == DType::F64) {
    const float* a = data<float>();
    double* b = t.data<double>();
    for (int64_t i = 0; i < n; ++i) b[i] = a[i];
  } else if (dtype_ == DType::F64 && dtype == DType::F32) {
    const double* a = data<double>();
    float* b = t.data<float>();
    for (int64_t i = 0; i < n; ++i) b[i] = float(a[i]);
  } else {
    throw_error(std::string("tensor: no conversion from ") + dtype_name(dtype_) + " to " +
                dtype_name(dtype));
  }
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, device_, dtype_);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) const {
  GAN_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_,
            "copy: source " + src.str() + " does not match destination " + str());
  if (nbytes() == 0) return;
  if (device_ == Device::CPU && src.device_ == Device::CPU) {
    std::memcpy(raw(), src.raw(), nbytes());
    return;
  }
  const cudaMemcpyKind kind = src.device_ == Device::CPU ? cudaMemcpyHostToDevice
                              : device_ == Device::CPU   ? cudaMemcpyDeviceToHost
                                                         : cudaMemcpyDeviceToDevice;
  GAN_CUDA_CHECK(cudaMemcpyAsync(raw(), src.raw(), nbytes(), kind, cuda::stream()));
  // A host destination must hold the data when this returns.
  if (device_ == Device::CPU) GAN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
}

void Tensor::zero_() const {
  if (nbytes() == 0) return;
  if (device_ == Device::CUDA)
    GAN_CUDA_CHECK(cudaMemsetAsync(raw(), 0, nbytes(), cuda::stream()));
  else
    std::memset(raw(), 0, nbytes());
}

void Tensor::fill_(double value) const {
  const int64_t n = numel();
  if (dtype_ == DType::BF16) {
    if (device_ == Device::CUDA)
      return kernels::bf16_fill_cuda(data<uint16_t>(), n, float(value), cuda::stream());
    uint16_t* p = data<uint16_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = kernels::f32_to_bf16(float(value));
    return;
  }
  if (device_ == Device::CUDA) {
    kernels::fill_cuda(data<float>(), n, float(value), cuda::stream());
  } else if (dtype_ == DType::F64) {
    double* p = data<double>();
    for (int64_t i = 0; i < n; ++i) p[i] = value;
  } else {
    float* p = data<float>();
    for (int64_t i = 0; i < n; ++i) p[i] = float(value);
  }
}

std::vector<float> Tensor::to_vector() const {
  if (dtype_ == DType::BF16) return to(DType::F32).to_vector();
  if (dtype_ == DType::F64) {
    std::vector<double> d = to_double_vector();
    return std::vector<float>(d.begin(), d.end());
  }
  std::vector<float> v(static_cast<size_t>(numel()));
  if (v.empty()) return v;
  if (device_ == Device::CUDA) {
    GAN_CUDA_CHECK(
        cudaMemcpyAsync(v.data(), raw(), nbytes(), cudaMemcpyDeviceToHost, cuda::stream()));
    GAN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  } else {
    std::memcpy(v.data(), data<float>(), nbytes());
  }
  return v;
}

std::vector<double> Tensor::to_double_vector() const {
  if (dtype_ == DType::F64) {
    const double* p = data<double>();
    return std::vector<double>(p, p + numel());
  }
  std::vector<float> f = to_vector();
  return std::vector<double>(f.begin(), f.end());
}

float Tensor::item() const {
  GAN_CHECK(numel() == 1, "item: tensor " + str() + " does not have exactly one element");
  return to_vector()[0];
}

std::string Tensor::str() const {
  return fmt::format("{} {} {}", device_name(device_), dtype_name(dtype_), shape_.str());
}

void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    GAN_CHECK(t->device() == first->device(),
              fmt::format("{}: device mismatch: {} vs {}", op, first->str(), t->str()));
  }
}

void check_same_dtype(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    GAN_CHECK(t->dtype() == first->dtype(),
              fmt::format("{}: dtype mismatch: {} vs {}", op, first->str(), t->str()));
  }
}

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  GAN_CHECK(t.shape() == expected, fmt::format("{}: {} has shape {}, expected {}", op, what,
                                               t.shape().str(), expected.str()));
}

namespace host_memory {

Stats stats() { return host_cache().stats(); }

}  // namespace host_memory

}  // namespace gan
