// Tensor: a shape, a dtype and a shared, contiguous allocation on the CPU or on the CUDA device.
// Copies of a Tensor share storage (cheap handles); reshape() returns a view of the same storage;
// clone() copies. Device memory comes from a stream-ordered cudaMallocAsync pool whose memory is
// kept (release threshold = max), so steady-state training does no cudaMalloc/cudaFree.
//
// float32 is the training dtype. float64 exists on the CPU only, for the reference path (finite
// differences run the CPU ops in double). bf16 tensors (CPU and CUDA) hold 16-bit patterns
// (data<uint16_t>(), kernels/bf16.h): to(DType) converts between f32 and bf16 (round to nearest
// even). In bf16 precision the activations between ops are bf16 tensors (engine/ops.h says which
// ops produce and accept them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/shape.h"

namespace gan {

enum class Device : uint8_t { CPU, CUDA };
enum class DType : uint8_t { F32, F64, BF16 };

const char* device_name(Device d);
const char* dtype_name(DType t);
size_t dtype_size(DType t);

// One allocation. On CUDA it is freed stream-ordered on the engine stream.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  void* base = nullptr;  // start of the allocation (data minus the front guard in guard mode)
  size_t guard = 0;      // guard bytes on each side (debug guard mode), else 0
  bool pinned = false;   // CPU page-locked (cudaMallocHost)
  std::shared_ptr<void> arena;  // CUDA: placed in a capture arena (engine/capture_arena.h)

  static std::shared_ptr<Storage> allocate(size_t bytes, Device device, bool pinned = false);
  ~Storage();
};

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, Device device = Device::CPU, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, Device device = Device::CPU, DType dtype = DType::F32);
  static Tensor full(const Shape& shape, double value, Device device = Device::CPU,
                     DType dtype = DType::F32);
  static Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.device(), t.dtype()); }
  static Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.device(), t.dtype()); }
  // Page-locked host memory, for asynchronous copies (data loading).
  static Tensor empty_pinned(const Shape& shape, DType dtype = DType::F32);
  // Host values into a new tensor; F64 only on the CPU.
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape,
                            Device device = Device::CPU);
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim; }
  int64_t dim(int i) const { return shape_.dim(i); }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  bool is_cuda() const { return device_ == Device::CUDA; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Typed pointer; throws if T does not match the dtype.
  template <class T>
  T* data() const;
  void* raw() const { return storage_ ? storage_->data : nullptr; }

  // Same storage, new shape with the same number of elements. One dimension may be -1.
  Tensor reshape(const Shape& shape) const;
  Tensor to(Device device) const;  // copy (returns *this when already there)
  // Conversion copy: F32 <-> F64 (CPU), F32 <-> BF16 (CPU and CUDA, round to nearest even).
  Tensor to(DType dtype) const;
  Tensor clone() const;
  // Copies src (same shape and dtype, any devices) into this tensor's storage.
  // (Like data(), these write through the handle: const refers to the handle, not the values.)
  void copy_from(const Tensor& src) const;
  void zero_() const;
  void fill_(double value) const;

  // Host copies (synchronise the engine stream; never inside a training step).
  std::vector<float> to_vector() const;
  std::vector<double> to_double_vector() const;
  float item() const;

  std::string str() const;  // "cuda f32 (2, 3)"

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Device device_ = Device::CPU;
  DType dtype_ = DType::F32;
};

// Throws gan::Error "<op>: ..." unless all defined tensors share the device (and dtype).
void check_same_device(const char* op, std::initializer_list<const Tensor*> ts);
void check_same_dtype(const char* op, std::initializer_list<const Tensor*> ts);
// Throws unless t has the given shape: "<op>: <what> has shape (..), expected (..)".
void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected);

// Debug guard mode (the op-test harness turns it on): every allocation gets guard bytes before
// and after it filled with a sentinel, and its data is filled with NaN bytes (0xFF) so that an
// output element a kernel forgets to write shows up. verify_guards() checks every live
// allocation; freed allocations are checked when freed. Guard mode synchronises: tests only.
namespace debug {
void set_guard_mode(bool on);
bool guard_mode();
// Checks all live guarded allocations; returns and clears the violations seen so far.
std::vector<std::string> take_guard_violations();
}  // namespace debug

template <>
float* Tensor::data<float>() const;
template <>
double* Tensor::data<double>() const;
template <>
uint16_t* Tensor::data<uint16_t>() const;  // BF16: the values' bit patterns

}  // namespace gan
