// tools/safetensors: round trips, an independent reader, atomic replacement, and every corruption.
#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "tests/harness.h"
#include "tools/io/safetensors.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

using gan::test::TempDir;

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void spit(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// A file with a hand-written header (length-prefixed, unpadded) and buffer.
std::vector<uint8_t> raw_file(const std::string& header, size_t buffer_bytes) {
  std::vector<uint8_t> out(8 + header.size() + buffer_bytes, 0xAB);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

std::vector<gan::st::Entry> sample_entries() {
  std::vector<gan::st::Entry> es;
  es.push_back(gan::st::from_tensor(
      "gen.fc.weight",
      gan::Tensor::from_vector(std::vector<float>{1, -2, 3.5f, 4, 5, -6e-3f}, {2, 3})));
  es.push_back(gan::st::from_tensor("ref.f64",
                                    gan::Tensor::from_vector(std::vector<double>{0.1, 0.2}, {2})));
  es.push_back(gan::st::from_int64("step", {123456789012345}, {}));
  es.push_back(gan::st::from_int64("rng", {1, -2, 3}));
  es.push_back(gan::st::from_float("lr", {2e-4f}));
  gan::st::Entry u8{"mask", "U8", {2, 2}, {0, 1, 254, 255}};
  es.push_back(u8);
  es.push_back(gan::st::Entry{"empty", "F32", {0, 4}, {}});
  return es;
}

}  // namespace

TEST_CASE("safetensors: round trip with metadata and typed accessors", "[io][cpu]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  const auto entries = sample_entries();
  const gan::st::Metadata meta = {{"format", "pt"}, {"config", "{\"lr\": 0.0002}"}};
  gan::st::write_file(path, entries, meta);
  CHECK(dir.count() == 1);  // no temporary file left behind

  const gan::st::File f = gan::st::read_file(path);
  CHECK(f.metadata == meta);
  CHECK(f.meta("format") == "pt");
  REQUIRE(f.entries.size() == entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    CHECK(f.entries[i].name == entries[i].name);  // buffer order = the order given
    CHECK(f.entries[i].dtype == entries[i].dtype);
    CHECK(f.entries[i].shape == entries[i].shape);
    CHECK(f.entries[i].bytes == entries[i].bytes);
  }
  const gan::Tensor w = f.tensor("gen.fc.weight", gan::Device::CPU, {2, 3});
  CHECK(w.shape() == gan::Shape({2, 3}));
  CHECK(w.to_vector() == std::vector<float>{1, -2, 3.5f, 4, 5, -6e-3f});
  CHECK(f.tensor("ref.f64").dtype() == gan::DType::F64);
  CHECK(f.tensor("ref.f64").to_double_vector() == std::vector<double>{0.1, 0.2});
  CHECK(f.int64s("step") == std::vector<int64_t>{123456789012345});
  CHECK(f.get("step").shape.empty());
  CHECK(f.int64s("rng") == std::vector<int64_t>{1, -2, 3});
  CHECK(f.floats("lr") == std::vector<float>{2e-4f});
  CHECK(f.tensor("empty").numel() == 0);

  const gan::Tensor dst = gan::Tensor::zeros({2, 3});
  f.load_into("gen.fc.weight", dst);
  CHECK(dst.to_vector() == w.to_vector());

  // Lookup errors name the file and the tensor.
  CHECK_THROWS_WITH(f.get("nope"), "checkpoint: " + path + ": no tensor 'nope'");
  CHECK_THROWS_WITH(f.meta("nope"), "checkpoint: " + path + ": no metadata key 'nope'");
  CHECK_THROWS_WITH(
      f.tensor("gen.fc.weight", gan::Device::CPU, {3, 2}),
      "checkpoint: " + path + ": tensor 'gen.fc.weight' has shape (2, 3), expected (3, 2)");
  CHECK_THROWS_WITH(f.tensor("rng"),
                    "checkpoint: " + path + ": tensor 'rng' has dtype I64, expected F32");
  CHECK_THROWS_WITH(f.int64s("lr"),
                    "checkpoint: " + path + ": tensor 'lr' has dtype F32, expected I64");
  CHECK_THROWS_WITH(
      f.load_into("gen.fc.weight", gan::Tensor::zeros({6})),
      "checkpoint: " + path + ": tensor 'gen.fc.weight' has shape (2, 3), expected (6,)");
  CHECK_THROWS_WITH(f.load_into("ref.f64", gan::Tensor::zeros({2})),
                    "checkpoint: " + path + ": tensor 'ref.f64' has dtype F64, expected F32");

  // No metadata of the caller's: only the checksums, which the reader verifies and removes.
  gan::st::write_file(path, {entries[0]});
  const gan::st::File g = gan::st::read_file(path);
  CHECK(g.metadata.empty());
  CHECK(g.checksummed);
}

TEST_CASE("safetensors: every tensor is checksummed; a flipped byte names the tensor",
          "[io][cpu]") {
  TempDir dir;
  const std::string path = dir.file("sum.safetensors");
  const auto entries = sample_entries();
  gan::st::write_file(path, entries, {{"epoch", "3"}});
  const std::vector<uint8_t> good = slurp(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | good[size_t(i)];
  const nlohmann::json j = nlohmann::json::parse(good.begin() + 8, good.begin() + 8 + long(n));
  // The stored value is zlib's CRC-32 of the tensor's bytes (an independent computation here).
  const nlohmann::json sums =
      nlohmann::json::parse(j["__metadata__"]["gan.crc32"].get<std::string>());
  REQUIRE(sums.size() == entries.size());
  auto crc = [](const std::vector<uint8_t>& b) {
    uint32_t c = 0xffffffffu;  // the reflected CRC-32 (polynomial 0xedb88320), bit by bit
    for (uint8_t byte : b) {
      c ^= byte;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return fmt::format("{:08x}", ~c);
  };
  for (const auto& e : entries) CHECK(sums.at(e.name) == crc(e.bytes));
  CHECK(crc({'1', '2', '3', '4', '5', '6', '7', '8', '9'}) == "cbf43926");  // the check value

  // Flip one bit in the middle of each tensor's bytes in turn: the error names that tensor.
  const size_t buffer = 8 + size_t(n);
  for (const auto& e : entries) {
    if (e.bytes.empty()) continue;
    const uint64_t b = j[e.name]["data_offsets"][0], en = j[e.name]["data_offsets"][1];
    std::vector<uint8_t> bad = good;
    bad[buffer + size_t((b + en) / 2)] ^= 0x10;
    spit(path, bad);
    std::string msg;
    try {
      gan::st::read_file(path);
    } catch (const gan::Error& err) {
      msg = err.what();
    }
    INFO(e.name);
    CHECK(msg == fmt::format("checkpoint: {}: tensor '{}' is damaged: its bytes fail the CRC-32 "
                             "check (stored {}, computed {})",
                             path, e.name, sums.at(e.name).get<std::string>(),
                             crc(std::vector<uint8_t>(bad.begin() + long(buffer + b),
                                                      bad.begin() + long(buffer + en)))));
  }
  // A file without checksums (as PyTorch writes it) loads unverified.
  spit(path, raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 2));
  const gan::st::File plain = gan::st::read_file(path);
  CHECK(!plain.checksummed);
  CHECK(plain.entries.size() == 1);
  // Damaged checksum metadata is a corrupt header.
  auto with_sums = [](const std::string& sums_json) {
    nlohmann::json h;
    h["__metadata__"]["gan.crc32"] = sums_json;
    h["a"] = {{"dtype", "U8"}, {"shape", {2}}, {"data_offsets", {0, 2}}};
    return raw_file(h.dump(), 2);
  };
  for (const auto& [sums_json, problem] : std::vector<std::pair<std::string, std::string>>{
           {"{", "gan.crc32 is not JSON"},
           {"[1]", "gan.crc32 is not a JSON object"},
           {R"({"a":"00000000","b":"00000000"})", "gan.crc32 names tensor 'b'"},
           {"{}", "tensor 'a' has no checksum in gan.crc32"}}) {
    spit(path, with_sums(sums_json));
    std::string msg;
    try {
      gan::st::read_file(path);
    } catch (const gan::Error& err) {
      msg = err.what();
    }
    INFO(sums_json);
    CHECK_THAT(msg, StartsWith("checkpoint: " + path + ": corrupt header (") && Contains(problem));
  }
}

TEST_CASE("safetensors: a small independent reader agrees with the writer", "[io][cpu]") {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  const auto entries = sample_entries();
  gan::st::write_file(path, entries, {{"epoch", "3"}});

  // Plain byte reads: 8-byte little-endian length, the JSON header, then the buffer.
  const std::vector<uint8_t> bytes = slurp(path);
  REQUIRE(bytes.size() >= 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[size_t(i)];
  CHECK(n % 8 == 0);  // padded like the reference implementation
  REQUIRE(8 + n <= bytes.size());
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + long(n));
  CHECK(header.front() == '{');
  CHECK(header.find_last_not_of(' ') + 1 + 7 >= header.size());  // at most 7 padding spaces
  const nlohmann::json j = nlohmann::json::parse(header);
  CHECK(j["__metadata__"]["epoch"] == "3");
  const size_t buffer = 8 + size_t(n);
  uint64_t expected_begin = 0;
  for (const auto& e : entries) {
    const auto& t = j.at(e.name);
    CHECK(t["dtype"] == e.dtype);
    CHECK(t["shape"].get<std::vector<int64_t>>() == e.shape);
    const uint64_t b = t["data_offsets"][0], en = t["data_offsets"][1];
    CHECK(b == expected_begin);  // laid out in the order given, back to back
    expected_begin = en;
    REQUIRE(buffer + en <= bytes.size());
    CHECK(std::vector<uint8_t>(bytes.begin() + long(buffer + b),
                               bytes.begin() + long(buffer + en)) == e.bytes);
  }
  CHECK(buffer + expected_begin == bytes.size());
  // The F32 values are plain little-endian floats.
  float first;
  std::memcpy(&first, bytes.data() + buffer, 4);
  CHECK(first == 1.0f);

  // And the reader accepts a file written by hand in the reference layout (keys in any order).
  const std::string hand =
      R"({"b":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})";
  std::vector<uint8_t> file = raw_file(hand, 0);
  const int32_t vals[2] = {7, -9};
  file.insert(file.end(), reinterpret_cast<const uint8_t*>(vals),
              reinterpret_cast<const uint8_t*>(vals) + 8);
  const gan::st::File f = gan::st::parse(file, "hand");
  REQUIRE(f.entries.size() == 2);
  CHECK(f.entries[0].name == "a");  // buffer order
  CHECK(f.entries[1].bytes == std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(vals + 1),
                                                   reinterpret_cast<const uint8_t*>(vals + 2)));
}

TEST_CASE("safetensors: a failed write leaves the previous checkpoint intact", "[io][cpu]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  gan::st::write_file(path, sample_entries(), {{"v", "1"}});
  const std::vector<uint8_t> before = slurp(path);

  // Invalid entries: rejected before anything is written.
  CHECK_THROWS_WITH(
      gan::st::write_file(path, {gan::st::Entry{"bad", "F32", {3}, {1, 2}}}),
      "checkpoint: " + path + ": entry 'bad': shape (3,) of F32 needs 12 bytes, has 2");
  CHECK_THROWS_WITH(gan::st::write_file(path, {gan::st::Entry{"x", "Q8", {1}, {1}}}),
                    "checkpoint: " + path + ": entry 'x': unknown dtype 'Q8'");
  CHECK_THROWS_WITH(gan::st::write_file(path, {sample_entries()[0], sample_entries()[0]}),
                    "checkpoint: " + path + ": duplicate entry name 'gen.fc.weight'");
  CHECK(slurp(path) == before);

  // A directory that does not exist.
  CHECK_THROWS_WITH(gan::st::write_file(dir.file("no/such/dir/c.safetensors"), sample_entries()),
                    StartsWith("checkpoint: " + dir.file("no/such/dir/c.safetensors") +
                               ": cannot write (No such file or directory"));

  // An unwritable directory (meaningless as root, who may write anywhere).
  if (geteuid() != 0) {
    const std::string ro = dir.file("ro");
    fs::create_directory(ro);
    gan::st::write_file(ro + "/c.safetensors", sample_entries());
    const auto ro_before = slurp(ro + "/c.safetensors");
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    CHECK_THROWS_WITH(gan::st::write_file(ro + "/c.safetensors", {sample_entries()[2]}),
                      Contains("cannot write"));
    fs::permissions(ro, fs::perms::owner_all);
    CHECK(slurp(ro + "/c.safetensors") == ro_before);
  }

  // The disk "fills up" in the middle of the write (file size limit): the write fails, the
  // temporary file is removed, and the old checkpoint is still the complete old one.
  {
    std::vector<float> big(1 << 20, 0.5f);  // 4 MiB
    rlimit old{};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto* prev = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = old;
    lim.rlim_cur = 1 << 20;  // 1 MiB
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    std::string msg;
    try {
      gan::st::write_file(path, {gan::st::from_float("big", big)});
    } catch (const gan::Error& e) {
      msg = e.what();
    }
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    std::signal(SIGXFSZ, prev);
    CHECK_THAT(
        msg, StartsWith("checkpoint: " + path + ": cannot write (") && Contains("File too large"));
  }
  CHECK(slurp(path) == before);
  CHECK(gan::st::read_file(path).metadata.at("v") == "1");
  CHECK(dir.count() == 1);

  // A successful write replaces the file.
  gan::st::write_file(path, {sample_entries()[2]}, {{"v", "2"}});
  CHECK(gan::st::read_file(path).meta("v") == "2");
  CHECK(dir.count() == 1);
}

TEST_CASE("safetensors: every corruption is a one-line error naming the file", "[io][cpu]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  auto expect = [&](const std::vector<uint8_t>& bytes, const std::string& problem) {
    spit(path, bytes);
    std::string msg;
    try {
      gan::st::read_file(path);
    } catch (const gan::Error& e) {
      msg = e.what();
    }
    INFO("problem: " << problem);
    CHECK_THAT(msg, StartsWith("checkpoint: " + path + ": ") && Contains(problem));
    CHECK(msg.find('\n') == std::string::npos);
  };
  const std::string f32 = R"("dtype":"F32","shape":[2],"data_offsets":)";

  expect({1, 2, 3}, "too short for a safetensors file (3 bytes, need at least 8)");
  spit(path, raw_file("{}", 0));  // a valid file with no tensors
  CHECK(gan::st::read_file(path).entries.empty());
  {
    auto b = raw_file("{}", 0);
    b[0] = 200;  // header length 200 > file
    expect(b, "corrupt header (header length 200 is beyond the end of the file (10 bytes))");
    b[0] = 0, b[5] = 1;
    expect(b, "exceeds the limit");
  }
  expect(raw_file("{\"a\": ", 0), "corrupt header (invalid JSON: ");
  expect(raw_file("[1, 2]", 0), "corrupt header (the JSON header is not an object)");
  expect(raw_file(R"({"__metadata__": {"k": 1}})", 0),
         "corrupt header (__metadata__ value for 'k' is not a string)");
  expect(raw_file(R"({"__metadata__": [1]})", 0), "corrupt header (__metadata__ is not an object)");
  expect(raw_file(R"({"a": 3})", 0), "corrupt header (tensor 'a' is not an object)");
  expect(raw_file(R"({"a": {"shape":[2],"data_offsets":[0,8]}})", 8),
         "corrupt header (tensor 'a' has no dtype string)");
  expect(raw_file(R"({"a": {"dtype":"F32","data_offsets":[0,8]}})", 8),
         "corrupt header (tensor 'a' has no shape array)");
  expect(raw_file(R"({"a": {"dtype":"F32","shape":[2]}})", 8),
         "corrupt header (tensor 'a' has no data_offsets [begin, end])");
  expect(raw_file(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", 8),
         "corrupt header (tensor 'a' has no data_offsets [begin, end])");
  expect(raw_file(R"({"a": {"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8),
         "corrupt header (tensor 'a' has unknown dtype 'Q7')");
  expect(raw_file(R"({"a": {"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
         "corrupt header (tensor 'a' has an invalid shape [-2])");
  expect(raw_file("{\"a\": {" + f32 + "[0,12]}}", 12),
         "corrupt header (tensor 'a': shape (2,) of F32 needs 8 bytes, data_offsets give 12)");
  expect(raw_file("{\"a\": {" + f32 + "[0,8]}}", 4),
         "corrupt header (tensor 'a' data_offsets [0, 8] out of range (buffer has 4 bytes))");
  expect(raw_file("{\"a\": {" + f32 + "[8,0]}}", 8),
         "corrupt header (tensor 'a' data_offsets [8, 0] out of range");
  expect(raw_file("{\"a\": {" + f32 + "[0,8]}, \"b\": {" + f32 + "[4,12]}}", 12),
         "corrupt header (tensors 'a' and 'b' overlap)");
  expect(raw_file("{\"a\": {" + f32 + "[4,12]}}", 12),
         "corrupt header (4 unused bytes before tensor 'a' (at byte 0))");
  expect(raw_file("{\"a\": {" + f32 + "[0,8]}}", 9),
         "corrupt header (1 bytes after the last tensor (buffer has 9, tensors cover 8))");
  // A truncated copy of a real checkpoint.
  const std::string good = dir.file("good.safetensors");
  gan::st::write_file(good, sample_entries());
  auto bytes = slurp(good);
  bytes.resize(bytes.size() - 3);
  expect(bytes, "out of range");
  CHECK_THROWS_WITH(
      gan::st::read_file(dir.file("missing")),
      "checkpoint: " + dir.file("missing") + ": cannot open (No such file or directory)");
}

TEST_CASE("safetensors cuda: tensors go to and from the GPU", "[io][cuda]") {
  GAN_REQUIRE_GPU();
  TempDir dir;
  const std::string path = dir.file("gpu.safetensors");
  const gan::Tensor g =
      gan::Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2}, gan::Device::CUDA);
  gan::st::write_file(path, {gan::st::from_tensor("w", g)});
  const gan::st::File f = gan::st::read_file(path);
  const gan::Tensor back = f.tensor("w", gan::Device::CUDA);
  CHECK(back.is_cuda());
  CHECK(back.to_vector() == g.to_vector());
  const gan::Tensor dst = gan::Tensor::zeros({3, 2}, gan::Device::CUDA);
  f.load_into("w", dst);
  CHECK(dst.to_vector() == g.to_vector());
}
