#include "engine/shape.h"

#include "engine/error.h"

namespace gan {

namespace {
// -1 is allowed: reshape() infers that dimension.
void check_dims(const Shape& s) {
  for (int i = 0; i < s.ndim; ++i)
    GAN_CHECK(s.dims[i] >= -1, "shape: negative dimension in " + s.str());
}
}  // namespace

Shape::Shape(std::initializer_list<int64_t> d) {
  GAN_CHECK(d.size() <= size_t(kMaxDims),
            "shape: " + std::to_string(d.size()) + " dimensions, at most 5 are supported");
  for (int64_t v : d) dims[ndim++] = v;
  check_dims(*this);
}

Shape::Shape(const std::vector<int64_t>& d) {
  GAN_CHECK(d.size() <= size_t(kMaxDims),
            "shape: " + std::to_string(d.size()) + " dimensions, at most 5 are supported");
  for (int64_t v : d) dims[ndim++] = v;
  check_dims(*this);
}

int64_t Shape::dim(int i) const {
  const int j = i < 0 ? i + ndim : i;
  GAN_CHECK(j >= 0 && j < ndim,
            "shape: dimension " + std::to_string(i) + " out of range for " + str());
  return dims[j];
}

int64_t Shape::numel() const { return prod(0, ndim); }

int64_t Shape::prod(int begin, int end) const {
  int64_t n = 1;
  for (int i = begin; i < end; ++i) n *= dims[i];
  return n;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < ndim; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  if (ndim == 1) s += ",";
  return s + ")";
}

bool Shape::operator==(const Shape& o) const {
  if (ndim != o.ndim) return false;
  for (int i = 0; i < ndim; ++i)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  Shape out;
  out.ndim = a.ndim > b.ndim ? a.ndim : b.ndim;
  for (int i = 0; i < out.ndim; ++i) {
    const int ia = a.ndim - out.ndim + i, ib = b.ndim - out.ndim + i;
    const int64_t da = ia >= 0 ? a.dims[ia] : 1, db = ib >= 0 ? b.dims[ib] : 1;
    GAN_CHECK(da == db || da == 1 || db == 1,
              std::string(op) + ": shapes " + a.str() + " and " + b.str() + " do not broadcast");
    out.dims[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace gan
