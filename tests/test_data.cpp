// tools/data: dataset loaders (IDX, Fashion-MNIST, CIFAR-10, image folders) with their errors, and
// the Loader: shuffling, flips, conversion, scaling, resume, the background thread, the GPU copy.
#include <catch2/catch.hpp>

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/error.h"
#include "tests/harness.h"
#include "tools/io/data.h"
#include "tools/io/image.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using gan::data::Dataset;
using gan::data::Loader;
using gan::data::LoaderOptions;

namespace {

using gan::test::TempDir;

void be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

// IDX image file bytes: n images of rows x cols, pixel (i, y, x) = (i * 7 + y * 3 + x) % 256.
std::vector<uint8_t> idx_images(uint32_t n, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> b;
  be32(b, 0x00000803);
  be32(b, n);
  be32(b, rows);
  be32(b, cols);
  for (uint32_t i = 0; i < n; ++i)
    for (uint32_t y = 0; y < rows; ++y)
      for (uint32_t x = 0; x < cols; ++x) b.push_back(uint8_t((i * 7 + y * 3 + x) % 256));
  return b;
}

std::vector<uint8_t> idx_labels(uint32_t n) {
  std::vector<uint8_t> b;
  be32(b, 0x00000801);
  be32(b, n);
  for (uint32_t i = 0; i < n; ++i) b.push_back(uint8_t(i % 10));
  return b;
}

void write_raw(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& b) {
  gzFile g = gzopen(path.c_str(), "wb");
  REQUIRE(g != nullptr);
  REQUIRE(gzwrite(g, b.data(), unsigned(b.size())) == int(b.size()));
  REQUIRE(gzclose(g) == Z_OK);
}

// A dataset of n gray 4x4 images where every pixel of image i is i (so a batch row tells its
// source), except pixel (0, 0) = 255 - i (so a flip is visible).
Dataset indexed(int n, int size = 4, int channels = 1) {
  Dataset d;
  d.count = n;
  d.height = d.width = size;
  d.channels = channels;
  d.pixels.assign(size_t(n) * d.image_bytes(), 0);
  for (int i = 0; i < n; ++i) {
    uint8_t* p = d.pixels.data() + size_t(i) * d.image_bytes();
    std::fill(p, p + d.image_bytes(), uint8_t(i));
    for (int k = 0; k < channels; ++k) p[k] = uint8_t(255 - i);
  }
  d.source = "indexed";
  return d;
}

// The index of the image in row r of a CPU batch (B, S, S, C) made from indexed(): the value of
// pixel (S/2, S/2), channel 0.
int row_index(const std::vector<float>& v, int r, int S, int C) {
  const float x = v[((size_t(r) * S + S / 2) * S + S / 2) * C];
  return int(std::lround((x + 1.0f) * 127.5f));
}

LoaderOptions cpu_options(int size, int channels, int batch) {
  LoaderOptions o;
  o.image_size = size;
  o.channels = channels;
  o.batch_size = batch;
  o.device = gan::Device::CPU;
  return o;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gan::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("data: IDX files load raw and gzipped with labels", "[io][cpu]") {
  TempDir dir;
  const auto images = idx_images(5, 3, 4), labels = idx_labels(5);
  write_raw(dir.file("img.idx"), images);
  write_gz(dir.file("img.idx.gz"), images);
  write_gz(dir.file("lab.idx.gz"), labels);
  for (const char* name : {"img.idx", "img.idx.gz"}) {
    const Dataset d = gan::data::load_idx(dir.file(name), dir.file("lab.idx.gz"));
    CHECK(d.count == 5);
    CHECK(d.height == 3);
    CHECK(d.width == 4);
    CHECK(d.channels == 1);
    CHECK(d.format == "idx");
    CHECK(d.source == dir.file(name));
    REQUIRE(d.pixels.size() == 60);
    CHECK(std::equal(d.pixels.begin(), d.pixels.end(), images.begin() + 16));
    CHECK(d.labels == std::vector<int32_t>{0, 1, 2, 3, 4});
    CHECK(d.get(2).at(1, 3)[0] == (2 * 7 + 1 * 3 + 3));
    CHECK(d.info() == "idx " + dir.file(name) + ": 5 images 3x4x1 with labels");
  }
  CHECK(gan::data::load_idx(dir.file("img.idx")).labels.empty());
}

TEST_CASE("data: IDX errors are one line naming the file", "[io][cpu]") {
  TempDir dir;
  const std::string img = dir.file("train-images-idx3-ubyte.gz"), lab = dir.file("labels.gz");
  write_gz(lab, idx_labels(3));
  CHECK(error_of([&] { gan::data::load_idx(lab); }) ==
        "data: " + lab + ": not an IDX image file (magic 0x00000801, expected 0x00000803)");
  write_gz(img, idx_images(4, 2, 2));
  CHECK(error_of([&] { gan::data::load_idx(img, img); }) ==
        "data: " + img + ": not an IDX label file (magic 0x00000803, expected 0x00000801)");
  CHECK(error_of([&] { gan::data::load_idx(img, lab); }) ==
        "data: " + lab + ": 3 labels for 4 images in " + img);

  // Truncated payload, raw and gzipped: the header's size against what the file has.
  auto cut = idx_images(60, 28, 28);
  cut.resize(16 + 1000);
  write_raw(dir.file("cut.idx"), cut);
  CHECK(error_of([&] { gan::data::load_idx(dir.file("cut.idx")); }) ==
        "data: " + dir.file("cut.idx") +
            ": truncated (header says 60 images of 28x28 = 47040 bytes, file has 1000)");
  write_gz(dir.file("cut.idx.gz"), cut);
  CHECK(error_of([&] { gan::data::load_idx(dir.file("cut.idx.gz")); }) ==
        "data: " + dir.file("cut.idx.gz") +
            ": truncated (header says 60 images of 28x28 = 47040 bytes, file has 1000)");
  // A gzip stream cut in the middle.
  {
    write_gz(dir.file("whole.gz"), idx_images(200, 28, 28));
    std::ifstream in(dir.file("whole.gz"), std::ios::binary);
    std::vector<uint8_t> gz((std::istreambuf_iterator<char>(in)), {});
    gz.resize(gz.size() / 2);
    write_raw(dir.file("half.gz"), gz);
    CHECK_THAT(
        error_of([&] { gan::data::load_idx(dir.file("half.gz")); }),
        StartsWith("data: " + dir.file("half.gz") +
                   ": truncated (header says 200 images of 28x28 = 156800 bytes, file has "));
  }
  // Corrupt gzip data after a valid gzip header.
  {
    write_gz(dir.file("ok.gz"), idx_images(50, 28, 28));
    std::ifstream in(dir.file("ok.gz"), std::ios::binary);
    std::vector<uint8_t> gz((std::istreambuf_iterator<char>(in)), {});
    for (size_t i = 20; i < gz.size(); ++i) gz[i] = uint8_t(i * 131);
    write_raw(dir.file("bad.gz"), gz);
    const std::string msg = error_of([&] { gan::data::load_idx(dir.file("bad.gz")); });
    CHECK_THAT(msg, StartsWith("data: " + dir.file("bad.gz") + ": "));
    CHECK(msg.find('\n') == std::string::npos);
  }
  write_raw(dir.file("short"), {0, 0, 8});
  CHECK(error_of([&] { gan::data::load_idx(dir.file("short")); }) ==
        "data: " + dir.file("short") + ": truncated (no magic number in the IDX header)");
  write_raw(dir.file("zero"), idx_images(0, 28, 28));
  CHECK(error_of([&] { gan::data::load_idx(dir.file("zero")); }) ==
        "data: " + dir.file("zero") + ": no images (the IDX header says 0)");
  CHECK(error_of([&] { gan::data::load_idx(dir.file("missing.gz")); }) ==
        "data: " + dir.file("missing.gz") + ": cannot open (No such file or directory)");
}

TEST_CASE("data: Fashion-MNIST directories", "[io][cpu]") {
  TempDir dir;
  write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_images(6, 28, 28));
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_labels(6));
  write_raw(dir.file("t10k-images-idx3-ubyte"), idx_images(2, 28, 28));  // uncompressed
  const Dataset train = gan::data::load_fashion_mnist(dir.path.string());
  CHECK(train.count == 6);
  CHECK(train.labels.size() == 6);
  const Dataset test = gan::data::load_fashion_mnist(dir.path.string(), false);
  CHECK(test.count == 2);
  CHECK(test.labels.empty());
  CHECK(gan::data::load_auto(dir.path.string()).count == 6);
  TempDir empty;
  CHECK(error_of([&] { gan::data::load_fashion_mnist(empty.path.string()); }) ==
        "data: " + empty.path.string() + ": no train-images-idx3-ubyte.gz (or uncompressed) file");
  CHECK(error_of([&] { gan::data::load_fashion_mnist("/no/such/dir"); }) ==
        "data: /no/such/dir: no such directory");

  // The installed dataset, when this machine has it.
  if (fs::exists(fs::path(gan::data::kFashionMnistDir) / "train-images-idx3-ubyte.gz")) {
    const Dataset fm = gan::data::load_fashion_mnist();
    CHECK(fm.count == 60000);
    CHECK(fm.height == 28);
    CHECK(fm.width == 28);
    CHECK(fm.labels.size() == 60000);
    CHECK(*std::max_element(fm.labels.begin(), fm.labels.end()) == 9);
    CHECK(gan::data::load_fashion_mnist(gan::data::kFashionMnistDir, false).count == 10000);
  } else {
    WARN("no Fashion-MNIST in " << gan::data::kFashionMnistDir);
  }
}

TEST_CASE("data: CIFAR-10 binary batches", "[io][cpu]") {
  TempDir dir;
  // test_batch.bin: record r has label r % 10 and pixel (c, y, x) = (r + c * 50 + y + x) % 256.
  std::vector<uint8_t> batch;
  batch.reserve(30730000);
  for (int r = 0; r < 10000; ++r) {
    batch.push_back(uint8_t(r % 10));
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) batch.push_back(uint8_t((r + c * 50 + y + x) % 256));
  }
  write_raw(dir.file("test_batch.bin"), batch);
  const Dataset d = gan::data::load_cifar10(dir.path.string(), false);
  CHECK(d.count == 10000);
  CHECK(d.height == 32);
  CHECK(d.channels == 3);
  CHECK(d.format == "cifar10");
  CHECK(d.labels[1234] == 4);
  const gan::img::Image im = d.get(1234);
  for (int c = 0; c < 3; ++c) CHECK(im.at(5, 9)[c] == uint8_t((1234 + c * 50 + 5 + 9) % 256));
  CHECK(gan::data::load_auto(dir.path.string(), false).count == 10000);

  // Train: data_batch_1.bin .. 5; a missing one, a truncated one, a wrong file.
  write_raw(dir.file("data_batch_1.bin"), batch);
  CHECK(error_of([&] { gan::data::load_cifar10(dir.path.string()); }) ==
        "data: " + dir.file("data_batch_2.bin") + ": cannot open (No such file or directory)");
  batch.resize(1000);
  write_raw(dir.file("data_batch_1.bin"), batch);
  CHECK(error_of([&] { gan::data::load_cifar10(dir.path.string()); }) ==
        "data: " + dir.file("data_batch_1.bin") +
            ": truncated (expected 30730000 bytes = 10000 records of 1 + 3072, file has 1000)");
  // Sizes are checked before anything is read: the missing batch is named first.
  batch.assign(30730000, 77);
  write_raw(dir.file("data_batch_1.bin"), batch);
  CHECK(error_of([&] { gan::data::load_cifar10(dir.path.string()); }) ==
        "data: " + dir.file("data_batch_2.bin") + ": cannot open (No such file or directory)");
  write_raw(dir.file("test_batch.bin"), batch);
  CHECK(error_of([&] { gan::data::load_cifar10(dir.path.string(), false); }) ==
        "data: " + dir.file("test_batch.bin") +
            ": not a CIFAR-10 batch (record 0 has label 77, expected 0..9)");
}

TEST_CASE("data: image folders are sorted decoded and fitted", "[io][cpu]") {
  TempDir dir;
  gan::img::write_png(dir.file("b.png"), gan::img::Image(10, 20, 3, 200));
  gan::img::write_png(dir.file("a.PNG"), gan::img::Image(8, 8, 1, 50));
  gan::img::write_jpeg(dir.file("c.jpeg"), gan::img::Image(16, 16, 3, 100));
  fs::create_directory(dir.path / "sub");
  gan::img::write_png(dir.file("sub/d.png"), gan::img::Image(4, 4, 3, 10));
  write_raw(dir.file("notes.txt"), {1, 2, 3});

  gan::data::FolderOptions o;
  o.size = 8;
  o.channels = 3;
  o.fit = gan::img::Fit::Pad;
  o.background = 0;
  const Dataset d = gan::data::load_folder(dir.path.string(), o);
  CHECK(d.format == "folder");
  REQUIRE(d.count == 3);  // a.PNG, b.png, c.jpeg (sorted; not recursive; .txt ignored)
  CHECK(d.height == 8);
  CHECK(d.channels == 3);
  CHECK(d.get(0).at(4, 4)[2] == 50);   // gray replicated
  CHECK(d.get(1).at(4, 4)[0] == 200);  // 10x20 shrunk to 4x8, centred
  CHECK(d.get(1).at(0, 4)[0] == 0);    // padding
  CHECK(std::abs(int(d.get(2).at(4, 4)[1]) - 100) <= 2);
  o.recursive = true;
  o.channels = 1;
  o.fit = gan::img::Fit::Resize;
  const Dataset r = gan::data::load_folder(dir.path.string(), o);
  REQUIRE(r.count == 4);
  CHECK(r.channels == 1);
  CHECK(r.get(3).at(7, 7)[0] == 10);  // sub/d.png, upscaled 4 -> 8
  o.limit = 2;
  CHECK(gan::data::load_folder(dir.path.string(), o).count == 2);

  TempDir empty;
  write_raw(empty.file("x.txt"), {1});
  CHECK(error_of([&] { gan::data::load_folder(empty.path.string()); }) ==
        "data: " + empty.path.string() + ": no PNG or JPEG images");
  CHECK(error_of([&] { gan::data::load_folder(empty.file("x.txt")); }) ==
        "data: " + empty.file("x.txt") + ": not a directory");
  write_raw(empty.file("a.png"), {0x89, 'P', 'N', 'G', 1, 2, 3});
  CHECK_THAT(error_of([&] { gan::data::load_folder(empty.path.string()); }),
             StartsWith("data: " + empty.file("a.png") + ": cannot decode (") && !Contains("\n"));
  CHECK(error_of([&] { gan::data::load_auto("/no/such/path"); }) ==
        "data: /no/such/path: no such file or directory");
}

TEST_CASE("data: the loader visits every image once per epoch in a reproducible order",
          "[io][cpu]") {
  const int N = 103, B = 10;
  auto ds = std::make_shared<const Dataset>(indexed(N));
  LoaderOptions o = cpu_options(4, 1, B);
  o.seed = 1234;
  Loader a(ds, o);
  CHECK(a.batches_per_epoch() == 10);  // drop_last
  CHECK(a.dataset().count == N);
  std::vector<int> seen_epoch0;
  for (int step = 0; step < 25; ++step) {
    const gan::data::Position p = a.position();
    CHECK(p.epoch == step / 10);
    CHECK(p.step == step % 10);
    const gan::Tensor t = a.next();
    REQUIRE(t.shape() == gan::Shape({B, 4, 4, 1}));
    CHECK(t.device() == gan::Device::CPU);
    const std::vector<float> v = t.to_vector();
    CHECK(v == a.batch(p.epoch, p.step).to_vector());  // next() is the pure function
    const std::vector<int64_t> perm = a.permutation(p.epoch);
    for (int r = 0; r < B; ++r) {
      CHECK(row_index(v, r, 4, 1) == perm[size_t(p.step * B + r)]);
      if (p.epoch == 0) seen_epoch0.push_back(row_index(v, r, 4, 1));
    }
  }
  CHECK(a.epoch() == 2);
  CHECK(a.step_in_epoch() == 5);
  std::sort(seen_epoch0.begin(), seen_epoch0.end());
  CHECK(std::adjacent_find(seen_epoch0.begin(), seen_epoch0.end()) == seen_epoch0.end());

  // Permutations: complete, different per epoch and per seed, identical for the same seed.
  const auto p0 = a.permutation(0), p1 = a.permutation(1);
  std::vector<int64_t> sorted = p0;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < N; ++i) CHECK(sorted[size_t(i)] == i);
  CHECK(p0 != p1);
  o.seed = 1235;
  CHECK(Loader(ds, o).permutation(0) != p0);
  o.seed = 1234;
  CHECK(Loader(ds, o).permutation(0) == p0);
  // The shuffle is portable (no std:: distributions): pinned values for seed 0, epoch 0.
  const auto golden = Loader(indexed(10), cpu_options(4, 1, 2)).permutation(0);
  CHECK(golden == std::vector<int64_t>{7, 6, 5, 9, 2, 3, 4, 8, 1, 0});

  // No drop_last: a last batch of 3.
  o.drop_last = false;
  Loader c(ds, o);
  CHECK(c.batches_per_epoch() == 11);
  CHECK(c.batch_rows(10) == 3);
  for (int i = 0; i < 10; ++i) c.next();
  CHECK(c.next().shape() == gan::Shape({3, 4, 4, 1}));
  CHECK(c.position() == gan::data::Position{1, 0});
}

TEST_CASE("data: the loader resumes exactly from a saved position", "[io][cpu]") {
  auto ds = std::make_shared<const Dataset>(indexed(50));
  LoaderOptions o = cpu_options(6, 3, 8);
  o.hflip = true;
  o.seed = 99;
  Loader a(ds, o);
  for (int i = 0; i < 9; ++i) a.next();  // into epoch 1 (6 batches per epoch)
  const gan::data::Position saved = a.position();
  CHECK(saved == gan::data::Position{1, 3});
  std::vector<std::vector<float>> want;
  for (int i = 0; i < 8; ++i) want.push_back(a.next().to_vector());

  Loader b(ds, o);  // a fresh process: same options, restored position
  b.next();         // whatever it had prepared is discarded
  b.set_position(saved);
  CHECK(b.position() == saved);
  for (int i = 0; i < 8; ++i) CHECK(b.next().to_vector() == want[size_t(i)]);
  b.set_position(0, 0);
  CHECK(b.next().to_vector() == b.batch(0, 0).to_vector());
  CHECK_THROWS_WITH(b.set_position(0, 6),
                    "data: loader: position (epoch 0, step 6) out of range (steps 0..5)");
}

TEST_CASE("data: the loader fits converts flips and scales", "[io][cpu]") {
  // 28x28 gray -> 32x32 by padding 2 px: background 0 -> -1.
  Dataset d = indexed(4, 28, 1);
  auto ds = std::make_shared<const Dataset>(d);
  LoaderOptions o = cpu_options(32, 1, 4);
  Loader a(ds, o);
  const std::vector<float> v = a.next().to_vector();
  const auto perm = a.permutation(0);
  for (int r = 0; r < 4; ++r) {
    const float* im = v.data() + size_t(r) * 32 * 32;
    const int i = int(perm[size_t(r)]);
    CHECK(im[0] == -1.0f);
    CHECK(im[31 * 32 + 31] == -1.0f);
    CHECK(im[2 * 32 + 2] == float(255 - i) / 127.5f - 1.0f);  // source (0, 0)
    CHECK(im[10 * 32 + 10] == float(i) / 127.5f - 1.0f);
  }
  // Extremes: 0 -> -1 and 255 -> 1 exactly.
  Dataset ex;
  ex.count = 1, ex.height = ex.width = 2, ex.channels = 1;
  ex.pixels = {0, 255, 255, 0};
  const std::vector<float> e = Loader(ex, cpu_options(2, 1, 1)).next().to_vector();
  CHECK(e == std::vector<float>{-1, 1, 1, -1});

  // Gray -> RGB replicates; RGB -> gray uses the luma.
  LoaderOptions o3 = cpu_options(28, 3, 2);
  const std::vector<float> rgb = Loader(ds, o3).next().to_vector();
  CHECK(rgb[3 * 100 + 0] == rgb[3 * 100 + 1]);
  CHECK(rgb[3 * 100 + 0] == rgb[3 * 100 + 2]);
  Dataset c;
  c.count = 1, c.height = c.width = 1, c.channels = 3;
  c.pixels = {200, 100, 50};
  const float y = Loader(c, cpu_options(1, 1, 1)).next().item();
  const int luma = int((19595u * 200 + 38470u * 100 + 7471u * 50 + 32768u) >> 16);
  CHECK(y == float(luma) / 127.5f - 1.0f);

  // Resize instead of pad: a constant image stays constant.
  LoaderOptions orz = cpu_options(16, 1, 2);
  orz.fit = gan::img::Fit::Resize;
  Loader rz(ds, orz);
  const std::vector<float> small = rz.next().to_vector();
  const int first = int(rz.permutation(0)[0]);
  CHECK(small[8 * 16 + 8] == float(first) / 127.5f - 1.0f);

  // Fitted images are cached by the producer after their first use: later epochs (cached) equal
  // the uncached pure function.
  LoaderOptions oc = cpu_options(8, 1, 4);
  oc.fit = gan::img::Fit::Resize;
  oc.hflip = true;
  Loader cached(indexed(13, 6, 3), oc);
  for (int i = 0; i < 3 * 3 + 1; ++i) {
    const gan::data::Position p = cached.position();
    CHECK(cached.next().to_vector() == cached.batch(p.epoch, p.step).to_vector());
  }

  // Flips: about half the images, mirrored left-right.
  auto many = std::make_shared<const Dataset>(indexed(200, 4, 3));
  LoaderOptions of = cpu_options(4, 3, 200);
  of.hflip = true;
  Loader f(many, of);
  const std::vector<float> fv = f.next().to_vector();
  const auto fp = f.permutation(0);
  int flips = 0;
  for (int r = 0; r < 200; ++r) {
    const int i = int(fp[size_t(r)]);
    const float marker = float(255 - i) / 127.5f - 1.0f;
    const float* im = fv.data() + size_t(r) * 4 * 4 * 3;
    const bool flipped = f.flipped(0, r);
    flips += flipped;
    CHECK(im[(flipped ? 3 : 0) * 3] == marker);  // pixel (0, 0) moved to (0, 3)
    CHECK(im[(flipped ? 0 : 3) * 3] == float(i) / 127.5f - 1.0f);
  }
  CHECK(flips > 70);
  CHECK(flips < 130);
  CHECK(f.flipped(0, 5) == f.flipped(0, 5));
  of.hflip = false;
  CHECK_FALSE(Loader(many, of).flipped(0, 5));
}

TEST_CASE("data: loader options errors and shutdown without consuming", "[io][cpu]") {
  auto ds = std::make_shared<const Dataset>(indexed(10));
  LoaderOptions o = cpu_options(4, 1, 16);
  CHECK(error_of([&] { Loader(ds, o); }) ==
        "data: indexed: 10 images are fewer than one batch of 16 (drop_last)");
  o.batch_size = 2;
  o.channels = 2;
  CHECK(error_of([&] { Loader(ds, o); }) == "data: loader: invalid channels 2 (expected 1 or 3)");
  o.channels = 1;
  o.prefetch = 0;
  CHECK_THROWS_AS(Loader(ds, o), gan::Error);
  o.prefetch = 2;
  CHECK(error_of([&] { Loader(std::make_shared<const Dataset>(), o); }) ==
        "data: loader: empty dataset");
  // Destroyed while the producer waits for a free buffer, right after start, or mid-epoch.
  for (int i = 0; i < 20; ++i) {
    Loader l(ds, o);
    if (i % 2) l.next();
  }
  Loader keep(ds, o);
  const gan::Tensor wrong = gan::Tensor::empty({3, 4, 4, 1});
  CHECK_THAT(error_of([&] { keep.next_into(wrong); }),
             StartsWith("data: loader: batch destination is cpu f32 (3, 4, 4, 1), expected cpu "
                        "f32 (2, 4, 4, 1)"));
  CHECK(keep.position() == gan::data::Position{0, 0});
  if (!gan::cuda_available()) {
    o.device = gan::Device::CUDA;
    CHECK_THAT(error_of([&] { Loader(ds, o); }), StartsWith("cuda: no CUDA device"));
  }
}

TEST_CASE("data cuda: batches arrive on the GPU equal to the cpu batches", "[io][cuda]") {
  GAN_REQUIRE_GPU();
  auto ds = std::make_shared<const Dataset>(indexed(37, 28, 1));
  LoaderOptions o;
  o.image_size = 32;
  o.channels = 3;
  o.batch_size = 8;
  o.hflip = true;
  o.seed = 7;
  o.device = gan::Device::CUDA;
  for (int prefetch : {1, 2, 3}) {
    o.prefetch = prefetch;
    Loader l(ds, o);
    const gan::Tensor fixed = gan::Tensor::empty({8, 32, 32, 3}, gan::Device::CUDA);
    for (int i = 0; i < 14; ++i) {  // three and a half epochs of 4 batches
      const gan::data::Position p = l.position();
      gan::Tensor t;
      if (i % 2) {
        l.next_into(fixed);
        t = fixed;
      } else {
        t = l.next();
      }
      CHECK(t.is_cuda());
      CHECK(t.to_vector() == l.batch(p.epoch, p.step).to_vector());
    }
    l.set_position(1, 2);
    CHECK(l.next().to_vector() == l.batch(1, 2).to_vector());
  }
  // Destroyed with copies possibly still queued.
  {
    Loader l(ds, o), m(ds, o);
    l.next();
    l.next();
    m.next();
  }
  gan::cuda::synchronize();
}

TEST_CASE("data: a batch's labels are its rows' labels, on every shard and epoch", "[data][cpu]") {
  // Image i is labelled (7 i) mod 5: each row's pixels tell which label it must carry.
  Dataset ds = indexed(48);
  for (int i = 0; i < 48; ++i) ds.labels.push_back((7 * i) % 5);
  const auto shared = std::make_shared<const Dataset>(ds);
  for (int shards : {1, 2}) {
    for (int rank = 0; rank < shards; ++rank) {
      LoaderOptions o = cpu_options(4, 1, 4);
      o.hflip = true, o.seed = 11;
      o.shard_rank = rank, o.shard_count = shards;
      Loader l(shared, o);
      int checked = 0;
      for (int64_t e = 0; e < 3; ++e)
        for (int64_t s = 0; s < l.batches_per_epoch(); ++s) {
          const std::vector<float> v = l.batch(e, s).to_vector();
          const std::vector<int32_t> y = l.batch_labels(e, s);
          REQUIRE(y.size() == 4);
          for (int r = 0; r < 4; ++r, ++checked)
            CHECK(y[size_t(r)] == (7 * row_index(v, r, 4, 1)) % 5);
        }
      CHECK(checked == 3 * 48 / shards);
    }
  }
  Dataset unlabelled = indexed(8);
  Loader l(std::move(unlabelled), cpu_options(4, 1, 4));
  CHECK(error_of([&] { (void)l.batch_labels(0, 0); }).find("has no labels") != std::string::npos);
}
