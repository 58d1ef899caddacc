// Shape: up to 5 dimensions, row-major (the last dimension is contiguous). Images are NHWC:
// (N, H, W, C). A shape with no dimensions is a scalar with one element. A dimension of -1 is
// only meaningful as an argument of reshape(), which infers it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace gan {

struct Shape {
  static constexpr int kMaxDims = 5;

  int ndim = 0;
  int64_t dims[kMaxDims] = {0, 0, 0, 0, 0};

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  explicit Shape(const std::vector<int64_t>& d);

  int64_t operator[](int i) const { return dims[i]; }
  int64_t& operator[](int i) { return dims[i]; }
  // Dimension i, negative counts from the end (-1 is the last).
  int64_t dim(int i) const;
  int64_t back() const { return ndim ? dims[ndim - 1] : 1; }
  int64_t numel() const;
  // Product of dims [begin, end).
  int64_t prod(int begin, int end) const;
  std::vector<int64_t> vec() const { return std::vector<int64_t>(dims, dims + ndim); }
  std::string str() const;  // "(2, 3, 4)", "()" for a scalar

  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
};

// Numpy broadcasting of two shapes (aligned at the last dimension). Throws gan::Error naming op.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace gan
