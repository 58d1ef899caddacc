// tools/tfevents: the written file decoded by an independent minimal reader (TFRecord framing with
// a bitwise CRC-32C, protobuf wire decoding written here).
#include <catch2/catch.hpp>

#include "tests/harness.h"

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "engine/error.h"
#include "tools/io/image.h"
#include "tools/io/tfevents.h"

namespace fs = std::filesystem;

namespace {

using gan::test::TempDir;

// Bit-at-a-time CRC-32C (reflected 0x82F63B78): independent of the writer's table.
uint32_t crc32c_bitwise(const uint8_t* p, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}
uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

uint64_t le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Protobuf fields: number -> list of (wire type, integer value or bytes).
struct Field {
  int wire = 0;
  uint64_t num = 0;           // varint, fixed64, fixed32
  std::vector<uint8_t> data;  // length-delimited
};
using Message = std::multimap<int, Field>;

Message decode(const std::vector<uint8_t>& b) {
  Message m;
  size_t i = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(i < b.size());
      const uint8_t byte = b[i++];
      v |= uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
  };
  while (i < b.size()) {
    const uint64_t key = varint();
    Field f;
    f.wire = int(key & 7);
    if (f.wire == 0) {
      f.num = varint();
    } else if (f.wire == 1) {
      REQUIRE(i + 8 <= b.size());
      f.num = le(&b[i], 8), i += 8;
    } else if (f.wire == 5) {
      REQUIRE(i + 4 <= b.size());
      f.num = le(&b[i], 4), i += 4;
    } else {
      REQUIRE(f.wire == 2);
      const uint64_t n = varint();
      REQUIRE(i + n <= b.size());
      f.data.assign(b.begin() + long(i), b.begin() + long(i + n));
      i += n;
    }
    m.emplace(int(key >> 3), std::move(f));
  }
  return m;
}

const Field& one(const Message& m, int field) {
  REQUIRE(m.count(field) == 1);
  return m.find(field)->second;
}
std::string str(const Field& f) { return std::string(f.data.begin(), f.data.end()); }
double as_double(const Field& f) {
  double d;
  std::memcpy(&d, &f.num, 8);
  return d;
}
float as_float(const Field& f) {
  const uint32_t u = uint32_t(f.num);
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// Records of a TFRecord file, each CRC-checked.
std::vector<std::vector<uint8_t>> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> b((std::istreambuf_iterator<char>(in)), {});
  std::vector<std::vector<uint8_t>> out;
  size_t i = 0;
  while (i < b.size()) {
    REQUIRE(i + 12 <= b.size());
    const uint64_t n = le(&b[i], 8);
    CHECK(uint32_t(le(&b[i + 8], 4)) == masked(crc32c_bitwise(&b[i], 8)));
    REQUIRE(i + 12 + n + 4 <= b.size());
    const uint8_t* data = &b[i + 12];
    CHECK(uint32_t(le(data + n, 4)) == masked(crc32c_bitwise(data, n)));
    out.emplace_back(data, data + n);
    i += 12 + n + 4;
  }
  return out;
}

}  // namespace

TEST_CASE("tfevents: crc32c matches the Castagnoli check value", "[io][cpu]") {
  const char* s = "123456789";
  CHECK(gan::tb::crc32c(s, 9) == 0xE3069283u);
  CHECK(crc32c_bitwise(reinterpret_cast<const uint8_t*>(s), 9) == 0xE3069283u);
  CHECK(gan::tb::crc32c(s + 4, 5, gan::tb::crc32c(s, 4)) == 0xE3069283u);  // incremental
  CHECK(gan::tb::crc32c(s, 0) == 0u);
  const uint8_t zeros[32] = {};
  CHECK(gan::tb::crc32c(zeros, 32) == 0x8A9136AAu);  // RFC 3720 B.4
  CHECK(gan::tb::masked_crc32c(s, 9) == masked(0xE3069283u));
}

TEST_CASE("tfevents: scalars and images decode with an independent reader", "[io][cpu]") {
  TempDir dir;
  const std::string logdir = (dir.path / "run" / "a").string();  // created with its parents
  const double t0 =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  gan::img::Image im(5, 7, 3);
  for (size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = uint8_t(i * 5);
  std::string path;
  {
    gan::tb::Writer w(logdir);
    path = w.path();
    w.add_scalar("loss/d", 0.6931, 0);
    w.add_scalar("loss/g", -1.5, 1234567890123);
    w.add_scalars({{"lr", 2e-4}, {"fid", 35.25}}, 7);
    w.add_image("samples", im, 42);
    w.flush();
  }
  // events.out.tfevents.<unix seconds>.<hostname>
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::string name = fs::path(path).filename().string();
  CHECK(fs::path(path).parent_path() == fs::path(logdir));
  REQUIRE(name.rfind("events.out.tfevents.", 0) == 0);
  const std::string rest = name.substr(20);
  const auto dot = rest.find('.');
  REQUIRE(dot != std::string::npos);
  CHECK(std::abs(std::stod(rest.substr(0, dot)) - t0) <= 2.0);
  CHECK(rest.substr(dot + 1) == host);

  const auto records = read_records(path);
  REQUIRE(records.size() == 5);
  // 1: file_version with the wall time, no step or summary.
  const Message first = decode(records[0]);
  CHECK(str(one(first, 3)) == "brain.Event:2");
  CHECK(one(first, 1).wire == 1);
  CHECK(std::abs(as_double(one(first, 1)) - t0) < 5.0);
  CHECK(first.count(5) == 0);

  struct Scalar {
    std::string tag;
    float value;
  };
  auto scalars = [](const Message& ev) {
    std::vector<Scalar> out;
    const Message summary = decode(one(ev, 5).data);
    for (auto [it, end] = summary.equal_range(1); it != end; ++it) {
      const Message v = decode(it->second.data);
      CHECK(one(v, 2).wire == 5);
      out.push_back({str(one(v, 1)), as_float(one(v, 2))});
    }
    return out;
  };
  const Message e1 = decode(records[1]);
  CHECK(one(e1, 2).num == 0);
  CHECK(as_double(one(e1, 1)) >= as_double(one(first, 1)));
  auto s1 = scalars(e1);
  REQUIRE(s1.size() == 1);
  CHECK(s1[0].tag == "loss/d");
  CHECK(s1[0].value == 0.6931f);
  const Message e2 = decode(records[2]);
  CHECK(int64_t(one(e2, 2).num) == 1234567890123);
  CHECK(scalars(e2)[0].value == -1.5f);
  const Message e3 = decode(records[3]);
  CHECK(one(e3, 2).num == 7);
  auto s3 = scalars(e3);
  REQUIRE(s3.size() == 2);
  CHECK(s3[0].tag == "fid");
  CHECK(s3[0].value == 35.25f);
  CHECK(s3[1].tag == "lr");
  CHECK(s3[1].value == 2e-4f);

  // The image: Value { tag = 1, image = 4 { height, width, colorspace, PNG } }.
  const Message e4 = decode(records[4]);
  CHECK(one(e4, 2).num == 42);
  const Message summary = decode(one(e4, 5).data);
  const Message value = decode(one(summary, 1).data);
  CHECK(str(one(value, 1)) == "samples");
  const Message image = decode(one(value, 4).data);
  CHECK(one(image, 1).num == 5);
  CHECK(one(image, 2).num == 7);
  CHECK(one(image, 3).num == 3);
  const std::vector<uint8_t>& png = one(image, 4).data;
  const gan::img::Image back = gan::img::decode_memory(png.data(), png.size(), 0);
  CHECK(back.height == 5);
  CHECK(back.width == 7);
  CHECK(back.pixels == im.pixels);
}

TEST_CASE("tfevents: writers in one directory get distinct files", "[io][cpu]") {
  TempDir dir;
  gan::tb::Writer a(dir.path.string());
  gan::tb::Writer b(dir.path.string());
  CHECK(a.path() != b.path());
  a.add_scalar("x", 1, 1);
  b.add_scalar("x", 2, 1);
  a.flush();
  b.flush();
  CHECK(read_records(a.path()).size() == 2);
  CHECK(read_records(b.path()).size() == 2);
  // Negative steps encode as ten-byte varints and come back.
  {
    gan::tb::Writer c((dir.path / "neg").string());
    c.add_scalar("x", 1, -5);
    c.flush();
    const auto recs = read_records(c.path());
    REQUIRE(recs.size() == 2);
    CHECK(int64_t(one(decode(recs[1]), 2).num) == -5);
  }
  // A log directory that cannot be created.
  const std::string file = (dir.path / "plain").string();
  std::ofstream(file) << "x";
  CHECK_THROWS_WITH(
      gan::tb::Writer(file + "/sub"),
      Catch::Matchers::StartsWith("tfevents: " + file + "/sub: cannot create the log directory ("));
}

TEST_CASE("tfevents: a failed write cuts the file back to its last complete record",
          "[io][cpu][diskfull]") {
  TempDir dir;
  gan::tb::Writer w(dir.path.string());
  w.add_scalars({{"loss_d", 0.5}, {"loss_g", 1.5}}, 1);
  w.flush();
  const uintmax_t committed = std::filesystem::file_size(w.path());
  REQUIRE(read_records(w.path()).size() == 2);
  gan::img::Image noise(64, 64, 3);
  uint32_t x = 12345;
  for (auto& p : noise.pixels) p = uint8_t((x = x * 1664525u + 1013904223u) >> 24);
  // The disk "fills up" 100 bytes later (file size limit): the image record does not fit.
  rlimit old{};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
  auto* prev = std::signal(SIGXFSZ, SIG_IGN);
  rlimit lim = old;
  lim.rlim_cur = rlim_t(committed + 100);
  REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  std::string msg;
  try {
    w.add_image("samples", noise, 2);
    w.flush();
  } catch (const gan::Error& e) {
    msg = e.what();
  }
  REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
  std::signal(SIGXFSZ, prev);
  CHECK(msg == "tfevents: " + w.path() +
                   ": cannot write (File too large); the file keeps its complete records");
  CHECK(std::filesystem::file_size(w.path()) == committed);
  CHECK(read_records(w.path()).size() == 2);
  // With room again, writing goes on after the last complete record.
  w.add_scalar("loss_d", 0.25, 3);
  w.flush();
  CHECK(read_records(w.path()).size() == 3);
}
