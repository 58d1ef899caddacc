// Prepared datasets (tools/io/prepared.h) and class folders: a prepared Fashion-MNIST-format set
// gives bitwise the batches of the IDX path (and resumes there exactly), labels come from class
// subfolders, the file is the same for any thread count, an interrupted prepare resumes, and
// damaged files are refused with one line naming the file.
#include <catch2/catch.hpp>

#include <zip.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "engine/error.h"
#include "tests/harness.h"
#include "tools/io/data.h"
#include "tools/io/image.h"
#include "tools/io/prepared.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using gan::data::Dataset;
using gan::data::Loader;
using gan::data::LoaderOptions;
using gan::data::PrepareOptions;
using gan::test::TempDir;

namespace {

void be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// A Fashion-MNIST-format directory: n images 28x28 with pseudo-random pixels, labels i % 10.
void write_idx_dir(const std::string& dir, uint32_t n) {
  std::vector<uint8_t> im, lb;
  be32(im, 0x00000803), be32(im, n), be32(im, 28), be32(im, 28);
  uint32_t s = 12345;
  for (uint32_t i = 0; i < n * 784; ++i)
    im.push_back(uint8_t((s = s * 1664525u + 1013904223u) >> 24));
  be32(lb, 0x00000801), be32(lb, n);
  for (uint32_t i = 0; i < n; ++i) lb.push_back(uint8_t(i % 10));
  write_bytes(dir + "/train-images-idx3-ubyte", im);
  write_bytes(dir + "/train-labels-idx1-ubyte", lb);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gan::Error& e) {
    return e.what();
  }
  return "no error";
}

std::string fmt_truncated(const std::string& path, uint64_t want, uint64_t have) {
  return "data: " + path + ": truncated (the header says " + std::to_string(want) +
         " bytes, the file has " + std::to_string(have) + ")";
}

LoaderOptions options(int size, int channels, int batch) {
  LoaderOptions o;
  o.image_size = size, o.channels = channels, o.batch_size = batch;
  o.device = gan::Device::CPU;
  o.hflip = true;
  o.seed = 77;
  return o;
}

bool same(const gan::Tensor& a, const gan::Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  return a.shape() == b.shape() && std::memcmp(x.data(), y.data(), x.size() * 4) == 0;
}

}  // namespace

TEST_CASE("prepared: an IDX set prepared at 28 and at 32 gives bitwise the IDX path's batches",
          "[io][cpu]") {
  TempDir dir;
  write_idx_dir(dir.path.string(), 300);
  const Dataset idx = gan::data::load_auto(dir.path.string());
  for (const int size : {28, 32}) {
    PrepareOptions po;
    po.size = size;
    po.fit = gan::img::Fit::Pad;  // 28 -> 32: two pixels of background each side, pixels untouched
    po.chunk_images = 64;         // 5 chunks, the last partial
    const std::string out = dir.file("fm" + std::to_string(size) + ".gands");
    const gan::data::PrepareResult r = gan::data::prepare(dir.path.string(), out, po);
    CHECK(r.count == 300);
    CHECK(r.source_format == "idx");
    CHECK(r.classes == 10);
    CHECK_FALSE(fs::exists(out + ".partial"));
    const Dataset p = gan::data::load_auto(out);  // recognised by its magic, mapped
    CHECK(p.format == "prepared");
    CHECK(p.mapped != nullptr);
    CHECK(p.pixels.empty());
    REQUIRE(p.count == 300);
    CHECK(p.height == size);
    CHECK(p.labels == idx.labels);
    REQUIRE(p.classes.size() == 10);
    CHECK(p.classes[3] == "3");
    if (size == 28) CHECK(std::memcmp(p.pixel_data(), idx.pixel_data(), idx.pixel_bytes()) == 0);
    gan::data::verify_prepared(out);

    // The loader's batches (fit to 32 by padding, flips, shuffle): bitwise the same, and again
    // after a resume in the middle of the second epoch.
    LoaderOptions o = options(32, 1, 16);
    o.fit = gan::img::Fit::Pad;
    Loader a(idx, o), b(p, o);
    for (int i = 0; i < 25; ++i) REQUIRE(same(a.next(), b.next()));  // over an epoch boundary
    a.set_position(1, 7);
    b.set_position(1, 7);
    for (int i = 0; i < 3; ++i) CHECK(same(a.next(), b.next()));
    // Data-parallel shards read their rows of the same permutation.
    LoaderOptions s = o;
    s.shard_count = 2, s.shard_rank = 1;
    CHECK(same(Loader(idx, s).next(), Loader(p, s).next()));
  }
}

TEST_CASE("prepared: class subfolders give labels and names; threads do not change the file",
          "[io][cpu]") {
  TempDir dir;
  const fs::path root = dir.path / "images";
  // cat: 3 images (one in a nested folder), dog: 2, empty/: no images (not a class).
  for (const char* d : {"cat", "cat/more", "dog", "empty"}) fs::create_directories(root / d);
  gan::img::write_png((root / "cat/a.png").string(), gan::img::Image(10, 12, 3, 10));
  gan::img::write_png((root / "cat/b.png").string(), gan::img::Image(8, 8, 1, 20));
  gan::img::write_jpeg((root / "cat/more/c.jpg").string(), gan::img::Image(16, 9, 3, 30));
  gan::img::write_png((root / "dog/d.png").string(), gan::img::Image(7, 7, 3, 40));
  gan::img::write_png((root / "dog/e.PNG").string(), gan::img::Image(20, 20, 3, 50));

  gan::data::FolderOptions fo;
  fo.size = 8;
  const Dataset f = gan::data::load_folder(root.string(), fo);
  REQUIRE(f.count == 5);
  CHECK(f.classes == std::vector<std::string>{"cat", "dog"});
  CHECK(f.labels == std::vector<int32_t>{0, 0, 0, 1, 1});
  CHECK(f.get(3).at(4, 4)[0] == 40);  // dog/d.png
  fo.threads = 1;
  const Dataset f1 = gan::data::load_folder(root.string(), fo);
  CHECK(f1.pixels == f.pixels);

  PrepareOptions po;
  po.size = 8;
  po.chunk_images = 2;
  po.threads = 1;
  gan::data::prepare(root.string(), dir.file("one.gands"), po);
  po.threads = 3;
  gan::data::prepare(root.string(), dir.file("three.gands"), po);
  CHECK(read_bytes(dir.file("one.gands")) == read_bytes(dir.file("three.gands")));
  const Dataset p = gan::data::map_prepared(dir.file("three.gands"));
  CHECK(p.classes == f.classes);
  CHECK(p.labels == f.labels);
  CHECK(p.channels == 3);
  CHECK(std::memcmp(p.pixel_data(), f.pixel_data(), f.pixel_bytes()) == 0);
  const gan::data::PreparedHeader h = gan::data::read_prepared_header(dir.file("three.gands"));
  CHECK(h.chunks == 3);
  CHECK(h.source_format == "folder");
  CHECK(h.fit == "crop");
}

TEST_CASE("prepared: an interrupted prepare resumes; an existing file is kept", "[io][cpu]") {
  TempDir dir;
  write_idx_dir(dir.path.string(), 100);
  PrepareOptions po;
  po.size = 28;
  po.chunk_images = 16;  // 7 chunks
  const std::string out = dir.file("fm.gands");
  gan::data::prepare(dir.path.string(), out, po);
  const std::vector<uint8_t> whole = read_bytes(out);

  // Another prepare to the same file: refused, the file untouched.
  CHECK(error_of([&] { gan::data::prepare(dir.path.string(), out, po); }) ==
        "data: " + out + ": already exists (remove it or pass --overwrite)");
  CHECK(read_bytes(out) == whole);

  // An interruption: chunk 2 never written, chunk 5 written but its pixels damaged afterwards.
  const gan::data::PreparedHeader h = gan::data::read_prepared_header(out);
  std::vector<uint8_t> part = whole;
  std::fill_n(part.begin() + std::ptrdiff_t(h.checksum_offset + 2 * 8), 8, 0);
  part[size_t(h.pixel_offset + 5 * 16 * 784 + 100)] ^= 1;
  write_bytes(out + ".partial", part);
  fs::remove(out);
  const gan::data::PrepareResult r = gan::data::prepare(dir.path.string(), out, po);
  CHECK(r.resumed == 100 - 32);
  CHECK(read_bytes(out) == whole);
  CHECK_FALSE(fs::exists(out + ".partial"));

  // A partial file of another job (another size) is not reused.
  po.size = 20;
  write_bytes(dir.file("fm20.gands.partial"), whole);
  CHECK(gan::data::prepare(dir.path.string(), dir.file("fm20.gands"), po).resumed == 0);
  CHECK(gan::data::map_prepared(dir.file("fm20.gands")).height == 20);
}

TEST_CASE("prepared: damaged files are refused with one line naming the file", "[io][cpu]") {
  TempDir dir;
  write_idx_dir(dir.path.string(), 40);
  PrepareOptions po;
  po.size = 28;
  po.chunk_images = 16;
  const std::string good = dir.file("fm.gands");
  gan::data::prepare(dir.path.string(), good, po);
  const std::vector<uint8_t> whole = read_bytes(good);
  const gan::data::PreparedHeader h = gan::data::read_prepared_header(good);
  const std::string bad = dir.file("bad.gands");
  auto map_error = [&](const std::vector<uint8_t>& bytes) {
    write_bytes(bad, bytes);
    return error_of([&] { (void)gan::data::load_auto(bad); });
  };

  std::vector<uint8_t> b(whole.begin(), whole.end() - 100);
  CHECK(map_error(b) == fmt_truncated(bad, h.file_bytes, h.file_bytes - 100));
  b = whole;
  b[0] = 'X';  // no magic: read as IDX, refused as such
  CHECK_THAT(map_error(b), StartsWith("data: " + bad + ": not an IDX image file"));
  b = whole;
  b[8] = 0xff, b[9] = 0xff, b[10] = 0xff;  // header length past the end
  CHECK_THAT(map_error(b), StartsWith("data: " + bad + ": the header length "));
  // A header that lies: one more image than the file holds (same JSON length).
  std::string json(h.json);
  const size_t at = json.find("\"count\":40");
  REQUIRE(at != std::string::npos);
  json.replace(at, 10, "\"count\":41");
  b = whole;
  std::copy(json.begin(), json.end(), b.begin() + 16);
  CHECK(map_error(b) ==
        "data: " + bad + ": the header's offsets and sizes do not agree (a damaged header)");
  b = whole;
  b[16] = 'x';  // not JSON any more
  CHECK(map_error(b) == "data: " + bad + ": the header is not valid JSON");
  // A label outside the classes (and its CRC-32 no longer matching).
  b = whole;
  b[size_t(h.label_offset + 4 * 7)] = 99;
  CHECK(map_error(b) ==
        "data: " + bad + ": the labels are corrupt (their CRC-32 does not match the header's)");
  // Damaged pixels: mapping checks the structure only; verify reads every chunk.
  b = whole;
  b[size_t(h.pixel_offset + 20 * 784)] ^= 0x40;
  write_bytes(bad, b);
  CHECK(gan::data::load_auto(bad).count == 40);
  CHECK_THAT(error_of([&] { gan::data::verify_prepared(bad); }),
             StartsWith("data: " + bad + ": chunk 1 (images 16..31) is corrupt (CRC-32 ") &&
                 !Contains("\n"));
  gan::data::verify_prepared(good);
  CHECK(error_of([&] { (void)gan::data::map_prepared(dir.file("none")); }) ==
        "data: " + dir.file("none") + ": cannot open (No such file or directory)");
  CHECK(error_of([&] { gan::data::prepare(dir.file("none"), dir.file("x"), po); }) ==
        "data: " + dir.file("none") + ": no such file or directory");
  CHECK_FALSE(fs::exists(dir.file("x")));
}

TEST_CASE("prepared: a streamed folder gives the batches of the decoded one, with any workers",
          "[io][cpu]") {
  TempDir dir;
  for (int i = 0; i < 23; ++i) {  // sizes and colours vary; two classes
    const std::string sub = dir.file(i % 3 ? "a" : "b");
    fs::create_directories(sub);
    gan::img::Image im(9 + i % 5, 12 - i % 4, 3, uint8_t(i * 10));
    im.at(1, 2)[1] = uint8_t(255 - i);
    gan::img::write_png(sub + "/" + std::to_string(100 + i) + ".png", im);
  }
  gan::data::FolderOptions fo;
  fo.size = 8;
  const Dataset eager = gan::data::load_folder(dir.path.string(), fo);
  fo.lazy = true;
  const Dataset lazy = gan::data::load_folder(dir.path.string(), fo);
  CHECK(lazy.pixels.empty());
  CHECK(lazy.pixel_data() == nullptr);
  CHECK(lazy.labels == eager.labels);
  CHECK(lazy.get(5).pixels == eager.get(5).pixels);
  for (const int workers : {1, 3}) {
    for (const int size : {8, 16}) {  // as they are, and fitted again by the loader
      LoaderOptions o = options(size, 3, 5);
      o.workers = workers;
      Loader a(eager, o), b(lazy, o);
      for (int i = 0; i < 9; ++i) REQUIRE(same(a.next(), b.next()));  // two epochs
    }
  }
  // A file that cannot be decoded stops the loader with the file's name.
  std::ofstream(dir.file("a/999.png")) << "not a png";
  const Dataset broken = gan::data::load_folder(dir.path.string(), fo);
  LoaderOptions o = options(8, 3, broken.count);
  CHECK_THAT(error_of([&] { Loader(broken, o).next(); }),
             StartsWith("data: " + dir.file("a/999.png") + ": cannot decode"));
}

TEST_CASE("prepared: fast decode stays within a few levels of the exact decode", "[io][cpu]") {
  TempDir dir;
  fs::create_directories(dir.path / "img");
  for (int k = 0; k < 4; ++k) {  // smooth 96x80 gradients as JPEGs
    gan::img::Image im(80, 96, 3);
    for (int y = 0; y < 80; ++y)
      for (int x = 0; x < 96; ++x)
        for (int c = 0; c < 3; ++c) im.at(y, x)[c] = uint8_t(x * (3 - c) / 3 + y + k * 20 + c * 10);
    gan::img::write_jpeg(dir.file("img/" + std::to_string(k) + ".jpg"), im);
  }
  PrepareOptions po;
  po.size = 16;  // 80 / 4 = 20 >= 16: decoded at a quarter of the size
  gan::data::prepare(dir.file("img"), dir.file("exact.gands"), po);
  po.fast_decode = true;
  gan::data::prepare(dir.file("img"), dir.file("fast.gands"), po);
  CHECK(gan::data::read_prepared_header(dir.file("fast.gands")).fast_decode);
  CHECK_FALSE(gan::data::read_prepared_header(dir.file("exact.gands")).fast_decode);
  const Dataset e = gan::data::map_prepared(dir.file("exact.gands"));
  const Dataset f = gan::data::map_prepared(dir.file("fast.gands"));
  REQUIRE(e.pixel_bytes() == f.pixel_bytes());
  int64_t differ = 0, worst = 0, sum = 0;
  for (size_t i = 0; i < e.pixel_bytes(); ++i) {
    const int64_t d = std::abs(int(e.pixel_data()[i]) - int(f.pixel_data()[i]));
    differ += d > 0;
    worst = std::max(worst, d);
    sum += d;
  }
  CHECK(differ > 0);  // it did decode differently
  CHECK(worst <= 6);
  CHECK(double(sum) / double(e.pixel_bytes()) < 1.5);
}

namespace {

// A zip archive of (name, bytes) entries, deflated, written with libzip.
void write_zip(const std::string& path,
               const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  REQUIRE(z != nullptr);
  for (const auto& [name, bytes] : entries) {
    zip_source_t* s = zip_source_buffer(z, bytes.data(), bytes.size(), 0);
    REQUIRE(s != nullptr);
    REQUIRE(zip_file_add(z, name.c_str(), s, ZIP_FL_ENC_UTF_8) >= 0);
  }
  REQUIRE(zip_close(z) == 0);  // the buffers are read here
}

}  // namespace

TEST_CASE("prepared: a zip archive prepares as the folder it holds; bombs are refused",
          "[io][cpu]") {
  TempDir dir;
  // The folder, and the same files zipped below a common top folder "set/".
  const std::vector<std::string> names = {"cat/a.png", "cat/b.jpg", "dog/sub/c.png", "dog/d.png"};
  std::vector<std::pair<std::string, std::vector<uint8_t>>> entries;
  for (size_t i = 0; i < names.size(); ++i) {
    const fs::path p = dir.path / "set" / names[i];
    fs::create_directories(p.parent_path());
    gan::img::Image im(10 + int(i), 14, 3, uint8_t(30 * i + 5));
    if (p.extension() == ".jpg")
      gan::img::write_jpeg(p.string(), im);
    else
      gan::img::write_png(p.string(), im);
    entries.emplace_back("set/" + names[i], read_bytes(p.string()));
  }
  entries.emplace_back("set/readme.txt", std::vector<uint8_t>{'h', 'i'});
  entries.emplace_back("__MACOSX/set/cat/._a.png", std::vector<uint8_t>{0, 5, 22});
  const std::string zip = dir.file("set.zip");
  write_zip(zip, entries);

  PrepareOptions po;
  po.size = 8;
  const gan::data::PrepareResult r = gan::data::prepare(zip, dir.file("z.gands"), po);
  CHECK(r.source_format == "zip");
  CHECK(r.count == 4);
  gan::data::prepare(dir.file("set"), dir.file("f.gands"), po);
  const Dataset z = gan::data::map_prepared(dir.file("z.gands"));
  const Dataset f = gan::data::map_prepared(dir.file("f.gands"));
  CHECK(z.classes == std::vector<std::string>{"cat", "dog"});
  CHECK(z.labels == std::vector<int32_t>{0, 0, 1, 1});
  CHECK(z.labels == f.labels);
  REQUIRE(z.pixel_bytes() == f.pixel_bytes());
  CHECK(std::memcmp(z.pixel_data(), f.pixel_data(), z.pixel_bytes()) == 0);

  // A bomb: an entry whose directory says 300 MiB uncompressed is refused before it is inflated.
  std::vector<uint8_t> b = read_bytes(zip);
  for (size_t at = 0; at + 46 <= b.size(); ++at) {
    if (b[at] == 'P' && b[at + 1] == 'K' && b[at + 2] == 1 && b[at + 3] == 2) {  // central entry
      const uint32_t big = 300u << 20;
      for (int k = 0; k < 4; ++k) b[at + 24 + k] = uint8_t(big >> (8 * k));
      break;  // the first: set/cat/a.png
    }
  }
  write_bytes(dir.file("bomb.zip"), b);
  CHECK(error_of([&] { gan::data::prepare(dir.file("bomb.zip"), dir.file("bomb.gands"), po); }) ==
        "data: " + dir.file("bomb.zip") +
            ": set/cat/a.png: 314572800 bytes uncompressed (over 256 MiB: not an image, or a zip "
            "bomb)");
  CHECK_FALSE(fs::exists(dir.file("bomb.gands")));
  // A truncated archive, and an archive without images.
  b = read_bytes(zip);
  b.resize(b.size() / 2);
  write_bytes(dir.file("half.zip"), b);
  CHECK_THAT(error_of([&] { gan::data::prepare(dir.file("half.zip"), dir.file("h.gands"), po); }),
             StartsWith("data: " + dir.file("half.zip") + ": not a readable zip archive ("));
  write_zip(dir.file("text.zip"), {{"a.txt", {'x'}}});
  CHECK(error_of([&] { gan::data::prepare(dir.file("text.zip"), dir.file("t.gands"), po); }) ==
        "data: " + dir.file("text.zip") + ": no PNG or JPEG images in the archive");
}
