#include "tools/io/tfevents.h"

#include <stdio_ext.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "engine/error.h"

namespace gan::tb {
namespace {

// Table for the reflected Castagnoli polynomial, built at compile time (no static initialiser).
constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// ---- protobuf wire format (only what Event needs) ----

struct Proto {
  std::vector<uint8_t> b;

  void varint(uint64_t v) {
    while (v >= 0x80) {
      b.push_back(uint8_t(v) | 0x80);
      v >>= 7;
    }
    b.push_back(uint8_t(v));
  }
  void tag(int field, int wire) { varint(uint64_t(field) << 3 | uint64_t(wire)); }
  void int_field(int field, int64_t v) {  // int32/int64: varint of the two's complement
    tag(field, 0);
    varint(uint64_t(v));
  }
  void double_field(int field, double v) {  // fixed64
    tag(field, 1);
    uint64_t u;
    std::memcpy(&u, &v, 8);
    for (int i = 0; i < 8; ++i) b.push_back(uint8_t(u >> (8 * i)));
  }
  void float_field(int field, float v) {  // fixed32
    tag(field, 5);
    uint32_t u;
    std::memcpy(&u, &v, 4);
    for (int i = 0; i < 4; ++i) b.push_back(uint8_t(u >> (8 * i)));
  }
  void bytes_field(int field, const void* data, size_t n) {  // length-delimited
    tag(field, 2);
    varint(n);
    const auto* p = static_cast<const uint8_t*>(data);
    b.insert(b.end(), p, p + n);
  }
  void string_field(int field, const std::string& s) { bytes_field(field, s.data(), s.size()); }
  void message_field(int field, const Proto& m) { bytes_field(field, m.b.data(), m.b.size()); }
};

std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
  return buf;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

Writer::Writer(const std::string& logdir, double flush_secs) : flush_secs_(flush_secs) {
  std::error_code ec;
  std::filesystem::create_directories(logdir, ec);
  if (ec || !std::filesystem::is_directory(logdir))
    throw Error(fmt::format("tfevents: {}: cannot create the log directory ({})", logdir,
                            ec ? ec.message() : "not a directory"));
  const double wall = now_seconds();
  const std::string base = (std::filesystem::path(logdir) /
                            fmt::format("events.out.tfevents.{}.{}", int64_t(wall), hostname()))
                               .string();
  path_ = base;
  for (int i = 1; std::filesystem::exists(path_, ec); ++i) path_ = fmt::format("{}.{}", base, i);
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_)
    throw Error(fmt::format("tfevents: {}: cannot open ({})", path_, std::strerror(errno)));
  Proto ev;
  ev.double_field(1, wall);
  ev.string_field(3, "brain.Event:2");
  std::lock_guard<std::mutex> lock(mu_);
  write_record(ev.b);
  flush_locked();
}

Writer::~Writer() {
  if (!file_) return;
  if (std::fflush(file_) != 0) {  // errors ignored, but no partial record stays behind
    __fpurge(file_);
    (void)!::ftruncate(::fileno(file_), off_t(committed_));
  }
  std::fclose(file_);
}

void Writer::write_record(const std::vector<uint8_t>& data) {
  uint8_t head[12];
  const uint64_t n = data.size();
  for (int i = 0; i < 8; ++i) head[i] = uint8_t(n >> (8 * i));
  const uint32_t len_crc = masked_crc32c(head, 8);
  const uint32_t data_crc = masked_crc32c(data.data(), data.size());
  for (int i = 0; i < 4; ++i) head[8 + i] = uint8_t(len_crc >> (8 * i));
  uint8_t tail[4];
  for (int i = 0; i < 4; ++i) tail[i] = uint8_t(data_crc >> (8 * i));
  const bool ok = std::fwrite(head, 1, 12, file_) == 12 &&
                  std::fwrite(data.data(), 1, data.size(), file_) == data.size() &&
                  std::fwrite(tail, 1, 4, file_) == 4;
  if (!ok) fail_locked(errno);
}

void Writer::flush_locked() {
  if (std::fflush(file_) != 0) fail_locked(errno);
  const long at = std::ftell(file_);
  if (at >= 0) committed_ = at;
  last_flush_ = now_seconds();
}

void Writer::fail_locked(int err) {
  // Drop what is buffered and cut the file back to its last complete record.
  __fpurge(file_);
  std::clearerr(file_);
  (void)!::ftruncate(::fileno(file_), off_t(committed_));
  (void)std::fseek(file_, committed_, SEEK_SET);
  throw Error(fmt::format("tfevents: {}: cannot write ({}); the file keeps its complete records",
                          path_, std::strerror(err)));
}

void Writer::write_event(int64_t step, const std::vector<uint8_t>& summary) {
  Proto ev;
  ev.double_field(1, now_seconds());
  ev.int_field(2, step);
  ev.bytes_field(5, summary.data(), summary.size());
  std::lock_guard<std::mutex> lock(mu_);
  write_record(ev.b);
  if (now_seconds() - last_flush_ >= flush_secs_) flush_locked();
}

void Writer::add_scalar(const std::string& tag, double value, int64_t step) {
  add_scalars({{tag, value}}, step);
}

void Writer::add_scalars(const std::map<std::string, double>& values, int64_t step) {
  Proto summary;
  for (const auto& [tag, value] : values) {
    Proto v;
    v.string_field(1, tag);
    v.float_field(2, float(value));
    summary.message_field(1, v);
  }
  write_event(step, summary.b);
}

void Writer::add_image(const std::string& tag, const img::Image& image, int64_t step) {
  const std::vector<uint8_t> png = img::encode_png(image);
  Proto im;
  im.int_field(1, image.height);
  im.int_field(2, image.width);
  im.int_field(3, image.channels);  // colorspace: 1 gray, 3 RGB
  im.bytes_field(4, png.data(), png.size());
  Proto v;
  v.string_field(1, tag);
  v.message_field(4, im);
  Proto summary;
  summary.message_field(1, v);
  write_event(step, summary.b);
}

void Writer::flush() {
  std::lock_guard<std::mutex> lock(mu_);
  flush_locked();
}

}  // namespace gan::tb
