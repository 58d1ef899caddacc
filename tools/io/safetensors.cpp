#include "tools/io/safetensors.h"

#include "tools/io/fileio.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <zlib.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; this code copies them as they are");

namespace gan::st {
namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference implementation's limit
constexpr const char* kChecksumKey = "gan.crc32";
constexpr const char* kMetadataKey = "__metadata__";

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw Error("checkpoint: " + path + ": " + problem);
}

[[noreturn]] void corrupt(const std::string& path, const std::string& problem) {
  fail(path, "corrupt header (" + problem + ")");
}

std::string shape_str(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  return fmt::format("({})", fmt::join(shape, ", "));
}

// numel of a shape, or -1 on a negative dimension or overflow.
int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// One line, whatever the JSON library put in its message.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

std::vector<int64_t> resolve_shape(std::vector<int64_t> shape, size_t count) {
  if (shape.size() == 1 && shape[0] == -1) shape[0] = int64_t(count);
  return shape;
}

Entry from_values(const std::string& name, const char* dtype, const void* data, size_t count,
                  size_t elem, std::vector<int64_t> shape) {
  Entry e;
  e.name = name;
  e.dtype = dtype;
  e.shape = resolve_shape(std::move(shape), count);
  GAN_CHECK(checked_numel(e.shape) == int64_t(count),
            fmt::format("checkpoint: entry '{}': shape {} does not hold {} values", name,
                        shape_str(e.shape), count));
  const auto* p = static_cast<const uint8_t*>(data);
  e.bytes.assign(p, p + count * elem);
  return e;
}

}  // namespace

int64_t Entry::numel() const { return checked_numel(shape); }

size_t dtype_size(std::string_view t) {
  if (t == "BOOL" || t == "U8" || t == "I8" || t == "F8_E4M3" || t == "F8_E5M2") return 1;
  if (t == "I16" || t == "U16" || t == "F16" || t == "BF16") return 2;
  if (t == "I32" || t == "U32" || t == "F32") return 4;
  if (t == "I64" || t == "U64" || t == "F64") return 8;
  return 0;
}

Entry from_tensor(const std::string& name, const Tensor& t) {
  GAN_CHECK(t.defined(), fmt::format("checkpoint: entry '{}': undefined tensor", name));
  GAN_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64,
            fmt::format("checkpoint: entry '{}': cannot store {}", name, t.str()));
  Entry e;
  e.name = name;
  e.dtype = t.dtype() == DType::F32 ? "F32" : "F64";
  e.shape = t.shape().vec();
  const Tensor host = t.to(Device::CPU);  // synchronises when t is on the GPU
  const auto* p = static_cast<const uint8_t*>(host.raw());
  e.bytes.assign(p, p + host.nbytes());
  return e;
}

Entry from_int64(const std::string& name, const std::vector<int64_t>& values,
                 std::vector<int64_t> shape) {
  return from_values(name, "I64", values.data(), values.size(), 8, std::move(shape));
}

Entry from_float(const std::string& name, const std::vector<float>& values,
                 std::vector<int64_t> shape) {
  return from_values(name, "F32", values.data(), values.size(), 4, std::move(shape));
}

namespace {

uint32_t crc32_of(const std::vector<uint8_t>& bytes) {
  uLong c = crc32(0L, Z_NULL, 0);
  const uint8_t* p = bytes.data();
  for (size_t left = bytes.size(); left > 0;) {  // zlib takes uInt lengths
    const uInt n = uInt(std::min<size_t>(left, size_t(1) << 30));
    c = crc32(c, p, n);
    p += n, left -= n;
  }
  return uint32_t(c);
}

}  // namespace

std::vector<uint8_t> serialize(const std::vector<Entry>& entries, const Metadata& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json sums = nlohmann::ordered_json::object();
  for (const Entry& e : entries) sums[e.name] = fmt::format("{:08x}", crc32_of(e.bytes));
  Metadata meta = metadata;
  meta[kChecksumKey] = sums.dump();
  header[kMetadataKey] = meta;
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const Entry& e : entries) {
    GAN_CHECK(!e.name.empty() && e.name != kMetadataKey,
              fmt::format("checkpoint: invalid entry name '{}'", e.name));
    GAN_CHECK(names.insert(e.name).second,
              fmt::format("checkpoint: duplicate entry name '{}'", e.name));
    const size_t elem = dtype_size(e.dtype);
    GAN_CHECK(elem != 0,
              fmt::format("checkpoint: entry '{}': unknown dtype '{}'", e.name, e.dtype));
    const int64_t n = checked_numel(e.shape);
    GAN_CHECK(
        n >= 0 && uint64_t(n) * elem == e.bytes.size(),
        fmt::format("checkpoint: entry '{}': shape {} of {} needs {} bytes, has {}", e.name,
                    shape_str(e.shape), e.dtype, n < 0 ? -1 : n * int64_t(elem), e.bytes.size()));
    header[e.name] = {{"dtype", e.dtype},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::vector<uint8_t> out(8 + json.size() + offset);
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(out.data() + 8, json.data(), json.size());
  uint8_t* buf = out.data() + 8 + json.size();
  for (const Entry& e : entries) {
    if (!e.bytes.empty()) std::memcpy(buf, e.bytes.data(), e.bytes.size());
    buf += e.bytes.size();
  }
  return out;
}

void write_file(const std::string& path, const std::vector<Entry>& entries,
                const Metadata& metadata) {
  std::vector<uint8_t> bytes;
  try {
    bytes = serialize(entries, metadata);
  } catch (const Error& e) {
    // "checkpoint: <problem>" -> "checkpoint: <path>: <problem>"
    const std::string msg = e.what();
    fail(path, msg.rfind("checkpoint: ", 0) == 0 ? msg.substr(12) : msg);
  }
  io::write_file_atomic(path, bytes.data(), bytes.size(), "checkpoint");
}

namespace {

// Checks every tensor against the CRC-32 the writer stored (files written elsewhere, e.g. by
// PyTorch, have none and are taken as they are); the key is removed from the metadata.
void verify_checksums(File& file) {
  const auto it = file.metadata.find(kChecksumKey);
  if (it == file.metadata.end()) return;
  nlohmann::json sums;
  try {
    sums = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    corrupt(file.path, fmt::format("{} is not JSON: {}", kChecksumKey, one_line(e.what())));
  }
  if (!sums.is_object()) corrupt(file.path, fmt::format("{} is not a JSON object", kChecksumKey));
  for (auto s = sums.begin(); s != sums.end(); ++s)
    if (!file.has(s.key()))
      corrupt(file.path, fmt::format("{} names tensor '{}', which the file does not hold",
                                     kChecksumKey, s.key()));
  for (const Entry& e : file.entries) {
    const auto s = sums.find(e.name);
    if (s == sums.end() || !s->is_string())
      corrupt(file.path, fmt::format("tensor '{}' has no checksum in {}", e.name, kChecksumKey));
    const std::string computed = fmt::format("{:08x}", crc32_of(e.bytes));
    if (s->get<std::string>() != computed)
      fail(file.path, fmt::format("tensor '{}' is damaged: its bytes fail the CRC-32 check "
                                  "(stored {}, computed {})",
                                  e.name, s->get<std::string>(), computed));
  }
  file.metadata.erase(it);
  file.checksummed = true;
}

}  // namespace

File parse(const std::vector<uint8_t>& bytes, const std::string& path) {
  if (bytes.size() < 8)
    fail(path,
         fmt::format("too short for a safetensors file ({} bytes, need at least 8)", bytes.size()));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(bytes[size_t(i)]) << (8 * i);
  const uint64_t avail = bytes.size() - 8;
  if (n > kMaxHeader)
    corrupt(path, fmt::format("header length {} exceeds the limit of {}", n, kMaxHeader));
  if (n > avail)
    corrupt(path, fmt::format("header length {} is beyond the end of the file ({} bytes)", n,
                              bytes.size()));
  const char* begin = reinterpret_cast<const char*>(bytes.data() + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(begin, begin + n);
  } catch (const nlohmann::json::exception& e) {
    corrupt(path, "invalid JSON: " + one_line(e.what()));
  }
  if (!header.is_object()) corrupt(path, "the JSON header is not an object");

  File file;
  file.path = path;
  const uint64_t buffer_size = avail - n;
  const uint8_t* buffer = bytes.data() + 8 + n;
  struct Span {
    uint64_t begin, end;
    size_t entry;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == kMetadataKey) {
      if (!v.is_object()) corrupt(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          corrupt(path, fmt::format("__metadata__ value for '{}' is not a string", m.key()));
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) corrupt(path, fmt::format("tensor '{}' is not an object", name));
    const auto dtype = v.find("dtype");
    const auto shape = v.find("shape");
    const auto offsets = v.find("data_offsets");
    if (dtype == v.end() || !dtype->is_string())
      corrupt(path, fmt::format("tensor '{}' has no dtype string", name));
    if (shape == v.end() || !shape->is_array())
      corrupt(path, fmt::format("tensor '{}' has no shape array", name));
    if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
      corrupt(path, fmt::format("tensor '{}' has no data_offsets [begin, end]", name));
    Entry e;
    e.name = name;
    e.dtype = dtype->get<std::string>();
    const size_t elem = dtype_size(e.dtype);
    if (elem == 0) corrupt(path, fmt::format("tensor '{}' has unknown dtype '{}'", name, e.dtype));
    for (const auto& d : *shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        corrupt(path,
                fmt::format("tensor '{}' has an invalid shape {}", name, one_line(shape->dump())));
      e.shape.push_back(d.get<int64_t>());
    }
    const uint64_t b = (*offsets)[0].get<uint64_t>(), en = (*offsets)[1].get<uint64_t>();
    if (b > en || en > buffer_size)
      corrupt(path, fmt::format("tensor '{}' data_offsets [{}, {}] out of range (buffer has {} "
                                "bytes)",
                                name, b, en, buffer_size));
    const int64_t numel = checked_numel(e.shape);
    if (numel < 0 || uint64_t(numel) > (en - b) / elem || uint64_t(numel) * elem != en - b)
      corrupt(path, fmt::format("tensor '{}': shape {} of {} needs {} bytes, data_offsets give {}",
                                name, shape_str(e.shape), e.dtype,
                                numel < 0 ? std::string("too many")
                                          : std::to_string(uint64_t(numel) * elem),
                                en - b));
    spans.push_back({b, en, file.entries.size()});
    file.entries.push_back(std::move(e));
  }
  // The tensors must tile the buffer: sorted by offset, each starts where the previous ended.
  std::stable_sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span& s = spans[i];
    const std::string& name = file.entries[s.entry].name;
    if (s.begin < at)
      corrupt(path, fmt::format("tensors '{}' and '{}' overlap",
                                file.entries[spans[i - 1].entry].name, name));
    if (s.begin > at)
      corrupt(path, fmt::format("{} unused bytes before tensor '{}' (at byte {})", s.begin - at,
                                name, at));
    at = s.end;
  }
  if (at != buffer_size)
    corrupt(path, fmt::format("{} bytes after the last tensor (buffer has {}, tensors cover {})",
                              buffer_size - at, buffer_size, at));
  // Entries in buffer order, with their bytes.
  std::vector<Entry> ordered;
  ordered.reserve(spans.size());
  for (const Span& s : spans) {
    Entry& e = file.entries[s.entry];
    e.bytes.assign(buffer + s.begin, buffer + s.end);
    ordered.push_back(std::move(e));
  }
  file.entries = std::move(ordered);
  verify_checksums(file);
  return file;
}

File read_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, fmt::format("cannot open ({})", std::strerror(errno)));
  std::vector<uint8_t> bytes;
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(size_t(size));
  uint8_t tmp[1 << 16];
  size_t got;
  while ((got = std::fread(tmp, 1, sizeof tmp, f.get())) > 0)
    bytes.insert(bytes.end(), tmp, tmp + got);
  if (std::ferror(f.get())) fail(path, fmt::format("read error ({})", std::strerror(errno)));
  return parse(bytes, path);
}

// ---- File lookups ----

const Entry* File::find(std::string_view name) const {
  for (const Entry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

const Entry& File::get(std::string_view name) const {
  const Entry* e = find(name);
  if (!e) fail(path, fmt::format("no tensor '{}'", name));
  return *e;
}

const std::string& File::meta(const std::string& key) const {
  const auto it = metadata.find(key);
  if (it == metadata.end()) fail(path, fmt::format("no metadata key '{}'", key));
  return it->second;
}

Tensor File::tensor(std::string_view name, Device device,
                    const std::vector<int64_t>& expected) const {
  const Entry& e = get(name);
  if (e.dtype != "F32" && e.dtype != "F64")
    fail(path, fmt::format("tensor '{}' has dtype {}, expected F32", name, e.dtype));
  if (!expected.empty() && e.shape != expected)
    fail(path, fmt::format("tensor '{}' has shape {}, expected {}", name, shape_str(e.shape),
                           shape_str(expected)));
  if (int(e.shape.size()) > Shape::kMaxDims)
    fail(path, fmt::format("tensor '{}' has {} dimensions (at most {} supported)", name,
                           e.shape.size(), Shape::kMaxDims));
  const DType dt = e.dtype == "F32" ? DType::F32 : DType::F64;
  if (dt == DType::F64 && device != Device::CPU)
    fail(path, fmt::format("tensor '{}' is F64, which exists on the CPU only", name));
  Tensor t = Tensor::empty(Shape(e.shape), Device::CPU, dt);
  if (!e.bytes.empty()) std::memcpy(t.raw(), e.bytes.data(), e.bytes.size());
  return t.to(device);
}

void File::load_into(std::string_view name, const Tensor& dst) const {
  const Entry& e = get(name);
  GAN_CHECK(dst.defined(),
            fmt::format("checkpoint: {}: loading '{}' into an undefined tensor", path, name));
  const char* want = dst.dtype() == DType::F32 ? "F32" : dst.dtype() == DType::F64 ? "F64" : "?";
  if (e.dtype != want)
    fail(path, fmt::format("tensor '{}' has dtype {}, expected {}", name, e.dtype, want));
  const std::vector<int64_t> shape = dst.shape().vec();
  if (e.shape != shape)
    fail(path, fmt::format("tensor '{}' has shape {}, expected {}", name, shape_str(e.shape),
                           shape_str(shape)));
  Tensor host = Tensor::empty(dst.shape(), Device::CPU, dst.dtype());
  if (!e.bytes.empty()) std::memcpy(host.raw(), e.bytes.data(), e.bytes.size());
  dst.copy_from(host);
}

std::vector<int64_t> File::int64s(std::string_view name) const {
  const Entry& e = get(name);
  if (e.dtype != "I64")
    fail(path, fmt::format("tensor '{}' has dtype {}, expected I64", name, e.dtype));
  std::vector<int64_t> v(e.bytes.size() / 8);
  if (!v.empty()) std::memcpy(v.data(), e.bytes.data(), e.bytes.size());
  return v;
}

std::vector<float> File::floats(std::string_view name) const {
  const Entry& e = get(name);
  if (e.dtype != "F32")
    fail(path, fmt::format("tensor '{}' has dtype {}, expected F32", name, e.dtype));
  std::vector<float> v(e.bytes.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), e.bytes.data(), e.bytes.size());
  return v;
}

}  // namespace gan::st
