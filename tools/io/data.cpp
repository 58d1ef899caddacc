#include "tools/io/data.h"

#include <sys/mman.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "engine/device.h"
#include "engine/error.h"
#include "kernels/cpu/backend.h"
#include "tools/io/prepared.h"

namespace gan::data {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw Error("data: " + path + ": " + problem);
}

std::string errno_text(int err) { return err ? std::strerror(err) : "unknown error"; }

// ---- IDX (gzip or raw, via zlib) ----

struct GzFile {
  gzFile f = nullptr;
  std::string path;
  explicit GzFile(const std::string& p) : path(p) {
    errno = 0;
    f = gzopen(p.c_str(), "rb");
    if (!f) fail(p, "cannot open (" + errno_text(errno) + ")");
  }
  ~GzFile() {
    if (f) gzclose(f);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to n bytes; returns the count (less than n only at the end of the data). A corrupt
  // gzip stream is an error; a stream that ends early is reported as a short read.
  size_t read(void* dst, size_t n) {
    size_t done = 0;
    while (done < n) {
      const unsigned chunk = unsigned(std::min<size_t>(n - done, size_t(1) << 26));
      const int got = gzread(f, static_cast<uint8_t*>(dst) + done, chunk);
      if (got < 0) {
        int err = 0;
        const char* msg = gzerror(f, &err);
        if (err == Z_BUF_ERROR) break;  // "unexpected end of file": truncated stream
        fail(path, std::string("corrupt or unreadable (") + (msg ? msg : "zlib error") + ")");
      }
      if (got == 0) break;
      done += size_t(got);
    }
    if (done < n) {  // a truncated gzip stream: zlib reports it after the data it could inflate
      int err = 0;
      const char* msg = gzerror(f, &err);
      if (err != Z_OK && err != Z_BUF_ERROR)
        fail(path, std::string("corrupt or unreadable (") + (msg ? msg : "zlib error") + ")");
    }
    return done;
  }

  uint32_t read_be32(const char* what) {
    uint8_t b[4];
    if (read(b, 4) != 4) fail(path, fmt::format("truncated (no {} in the IDX header)", what));
    return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | b[3];
  }
};

// Reads `n` payload bytes; throws "truncated (<what>, file has m)" when short.
std::vector<uint8_t> read_payload(GzFile& g, size_t n, const std::string& what) {
  std::vector<uint8_t> buf;
  // Grow as data arrives, so that a lying header cannot make us allocate much more than the file.
  const size_t chunk = size_t(1) << 24;
  size_t done = 0;
  while (done < n) {
    const size_t want = std::min(chunk, n - done);
    buf.resize(done + want);
    const size_t got = g.read(buf.data() + done, want);
    done += got;
    if (got < want) break;
  }
  if (done < n) fail(g.path, fmt::format("truncated ({}, file has {})", what, done));
  return buf;
}

constexpr uint32_t kIdxImages = 0x00000803, kIdxLabels = 0x00000801;

void check_magic(GzFile& g, uint32_t expected, const char* kind) {
  const uint32_t magic = g.read_be32("magic number");
  if (magic != expected)
    fail(g.path, fmt::format("not an IDX {} file (magic 0x{:08x}, expected 0x{:08x})", kind, magic,
                             expected));
}

// ---- plain files ----

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, "cannot open (" + errno_text(errno) + ")");
  std::vector<uint8_t> buf;
  uint8_t tmp[1 << 16];
  size_t n;
  while ((n = std::fread(tmp, 1, sizeof tmp, f.get())) > 0) buf.insert(buf.end(), tmp, tmp + n);
  if (std::ferror(f.get())) fail(path, "read error (" + errno_text(errno) + ")");
  return buf;
}

void check_directory(const std::string& dir) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (!fs::exists(st)) fail(dir, "no such directory");
  if (!fs::is_directory(st)) fail(dir, "not a directory");
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// ---- the shuffle: SplitMix64, portable (no std:: distributions, whose output is unspecified) ----

constexpr size_t kFitCacheBytes = size_t(1) << 30;
constexpr uint64_t kReleaseBytes = uint64_t(512) << 20;

constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;
constexpr uint64_t kShuffleSalt = 0x53485546464c4531ull;  // "SHUFFLE1"
constexpr uint64_t kFlipSalt = 0x464c495050494e47ull;     // "FLIPPING"

struct SplitMix64 {
  uint64_t state;
  uint64_t next() { return mix64(state += kGamma); }
  // Uniform in [0, n), n >= 1 (Lemire's multiply-shift with rejection: exactly uniform).
  uint64_t below(uint64_t n) {
    unsigned __int128 m = (unsigned __int128)next() * n;
    uint64_t low = uint64_t(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = (unsigned __int128)next() * n;
        low = uint64_t(m);
      }
    }
    return uint64_t(m >> 64);
  }
};

}  // namespace

img::Image Dataset::get(int64_t i) const {
  GAN_CHECK(i >= 0 && i < count,
            fmt::format("data: {}: image {} out of range ({} images)", source, i, count));
  img::Image im(height, width, channels);
  if (lazy)
    lazy->read(i, im.pixels.data());
  else
    std::memcpy(im.pixels.data(), image(i), image_bytes());
  return im;
}

std::string Dataset::info() const {
  return fmt::format("{} {}: {} images {}x{}x{}{}", format, source, count, height, width, channels,
                     labels.empty()    ? ""
                     : classes.empty() ? " with labels"
                                       : fmt::format(" in {} classes", classes.size()));
}

void Dataset::truncate(int64_t n) {
  GAN_CHECK(n >= 0 && n <= count,
            fmt::format("data: {}: cannot keep {} of {} images", source, n, count));
  count = n;
  if (!mapped) pixels.resize(size_t(n) * image_bytes());
  if (!labels.empty()) labels.resize(size_t(n));
}

void Dataset::materialize() {
  if (lazy) {
    pixels.resize(size_t(count) * image_bytes());
    for (int64_t i = 0; i < count; ++i) lazy->read(i, pixels.data() + size_t(i) * image_bytes());
    lazy.reset();
    return;
  }
  if (!mapped) return;
  pixels.assign(mapped, mapped + size_t(count) * image_bytes());
  mapped = nullptr;
  mapping.reset();
}

void Dataset::will_need(int64_t i, int64_t n) const {
  if (!mapped || n <= 0) return;
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(image(i)) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(image(i) + size_t(n) * image_bytes());
  (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);  // a hint only
}

void Dataset::release() const {
  if (!mapped) return;
  static const size_t page = size_t(sysconf(_SC_PAGESIZE));
  // Read-only and shared with the file: unmapping a page another thread reads only makes it fault
  // the page in again from the page cache.
  (void)madvise(const_cast<uint8_t*>(mapped), (pixel_bytes() + page - 1) / page * page,
                MADV_DONTNEED);
}

// ---------------------------------------------------------------------------------------------
// Loaders
// ---------------------------------------------------------------------------------------------

Dataset load_idx(const std::string& images_path, const std::string& labels_path) {
  Dataset d;
  {
    GzFile g(images_path);
    check_magic(g, kIdxImages, "image");
    const uint32_t n = g.read_be32("image count");
    const uint32_t rows = g.read_be32("row count");
    const uint32_t cols = g.read_be32("column count");
    if (n == 0) fail(images_path, "no images (the IDX header says 0)");
    if (rows == 0 || cols == 0 || rows > 65536 || cols > 65536)
      fail(images_path, fmt::format("implausible image size {}x{} in the IDX header", rows, cols));
    const size_t bytes = size_t(n) * rows * cols;
    d.pixels = read_payload(
        g, bytes, fmt::format("header says {} images of {}x{} = {} bytes", n, rows, cols, bytes));
    d.count = n;
    d.height = int(rows);
    d.width = int(cols);
    d.channels = 1;
  }
  if (!labels_path.empty()) {
    GzFile g(labels_path);
    check_magic(g, kIdxLabels, "label");
    const uint32_t n = g.read_be32("label count");
    if (int64_t(n) != d.count)
      fail(labels_path, fmt::format("{} labels for {} images in {}", n, d.count, images_path));
    const std::vector<uint8_t> raw =
        read_payload(g, n, fmt::format("header says {} labels = {} bytes", n, n));
    d.labels.assign(raw.begin(), raw.end());
  }
  d.source = images_path;
  d.format = "idx";
  return d;
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> c = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                             "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                             "Bag",         "Ankle boot"};
  return c;
}

const std::vector<std::string>& cifar10_classes() {  // batches.meta.txt's order
  static const std::vector<std::string> c = {"airplane", "automobile", "bird",  "cat",  "deer",
                                             "dog",      "frog",       "horse", "ship", "truck"};
  return c;
}

Dataset load_fashion_mnist(const std::string& dir, bool train) {
  check_directory(dir);
  const std::string prefix = train ? "train" : "t10k";
  auto pick = [&](const std::string& stem) -> std::string {
    const fs::path gz = fs::path(dir) / (stem + ".gz"), raw = fs::path(dir) / stem;
    if (path_exists(gz)) return gz.string();
    if (path_exists(raw)) return raw.string();
    return "";
  };
  const std::string images = pick(prefix + "-images-idx3-ubyte");
  if (images.empty())
    fail(dir, fmt::format("no {}-images-idx3-ubyte.gz (or uncompressed) file", prefix));
  const std::string labels = pick(prefix + "-labels-idx1-ubyte");
  Dataset d = load_idx(images, labels);
  // IDX files carry no class names; MNIST's and Fashion-MNIST's share the format. A directory
  // named for Fashion-MNIST ("fashion" or "fmnist" in its path) gets its classes' names.
  std::string lower = fs::absolute(dir).string();
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  if (!d.labels.empty() &&
      (lower.find("fashion") != std::string::npos || lower.find("fmnist") != std::string::npos) &&
      *std::max_element(d.labels.begin(), d.labels.end()) <= 9)
    d.classes = fashion_mnist_classes();
  return d;
}

Dataset load_cifar10(const std::string& dir, bool train) {
  check_directory(dir);
  std::vector<std::string> files;
  if (train) {
    for (int i = 1; i <= 5; ++i)
      files.push_back((fs::path(dir) / fmt::format("data_batch_{}.bin", i)).string());
  } else {
    files.push_back((fs::path(dir) / "test_batch.bin").string());
  }
  constexpr size_t kRecords = 10000, kRecord = 1 + 3072, kBytes = kRecords * kRecord;
  // Sizes first: nothing is allocated or read for a folder of wrong files (however large).
  for (const std::string& f : files) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(f, ec);
    if (ec) fail(f, "cannot open (" + ec.message() + ")");
    if (size != kBytes)
      fail(f, fmt::format("{} (expected {} bytes = {} records of 1 + 3072, file has {})",
                          size < kBytes ? "truncated" : "wrong size", kBytes, kRecords, size));
  }
  Dataset d;
  d.height = d.width = 32;
  d.channels = 3;
  d.count = int64_t(files.size() * kRecords);
  d.pixels.resize(size_t(d.count) * 3072);
  d.labels.resize(size_t(d.count));
  int64_t at = 0;
  for (const std::string& f : files) {
    const std::vector<uint8_t> buf = read_whole_file(f);
    if (buf.size() != kBytes)
      fail(f, fmt::format("{} (expected {} bytes = {} records of 1 + 3072, file has {})",
                          buf.size() < kBytes ? "truncated" : "wrong size", kBytes, kRecords,
                          buf.size()));
    for (size_t r = 0; r < kRecords; ++r, ++at) {
      const uint8_t* rec = buf.data() + r * kRecord;
      if (rec[0] > 9)
        fail(f, fmt::format("not a CIFAR-10 batch (record {} has label {}, expected 0..9)", r,
                            rec[0]));
      d.labels[size_t(at)] = rec[0];
      const uint8_t* planes = rec + 1;                     // (3, 32, 32)
      uint8_t* out = d.pixels.data() + size_t(at) * 3072;  // (32, 32, 3)
      for (int p = 0; p < 1024; ++p)
        for (int c = 0; c < 3; ++c) out[p * 3 + c] = planes[c * 1024 + p];
    }
  }
  d.classes = cifar10_classes();
  d.source = dir;
  d.format = "cifar10";
  return d;
}

namespace {

bool is_image_file(const fs::path& p) {
  const std::string ext = lower(p.extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// Image files under dir (recursively or not), sorted by path.
std::vector<std::string> image_files(const std::string& dir, bool recursive) {
  std::vector<std::string> files;
  auto consider = [&](const fs::directory_entry& e) {
    std::error_code ec;
    if (e.is_regular_file(ec) && is_image_file(e.path())) files.push_back(e.path().string());
  };
  std::error_code ec;
  const auto opts = fs::directory_options::skip_permission_denied;
  if (recursive) {
    for (fs::recursive_directory_iterator it(dir, opts, ec), end; !ec && it != end;
         it.increment(ec))
      consider(*it);
  } else {
    for (fs::directory_iterator it(dir, opts, ec), end; !ec && it != end; it.increment(ec))
      consider(*it);
  }
  if (ec) fail(dir, "cannot list (" + ec.message() + ")");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

FolderListing list_folder(const std::string& dir, bool recursive) {
  check_directory(dir);
  // No images at the top but subfolders: one subfolder per class (torchvision's ImageFolder).
  bool top_images = false;
  std::vector<std::string> subdirs;
  std::error_code ec;
  for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_directory(ec2))
      subdirs.push_back(it->path().filename().string());
    else if (it->is_regular_file(ec2) && is_image_file(it->path()))
      top_images = true;
  }
  if (ec) fail(dir, "cannot list (" + ec.message() + ")");
  FolderListing l;
  if (!top_images && !subdirs.empty()) {
    std::sort(subdirs.begin(), subdirs.end());
    for (const std::string& name : subdirs) {
      std::vector<std::string> f = image_files((fs::path(dir) / name).string(), true);
      if (f.empty()) continue;  // as ImageFolder: a class has at least one image
      l.labels.insert(l.labels.end(), f.size(), int32_t(l.classes.size()));
      l.classes.push_back(name);
      l.files.insert(l.files.end(), f.begin(), f.end());
    }
  } else {
    l.files = image_files(dir, recursive);
  }
  if (l.files.empty()) fail(dir, "no PNG or JPEG images");
  return l;
}

Dataset load_folder(const std::string& dir, const FolderOptions& options) {
  check_directory(dir);
  GAN_CHECK(options.size > 0 && (options.channels == 1 || options.channels == 3),
            fmt::format("data: {}: invalid folder options (size {}, channels {})", dir,
                        options.size, options.channels));
  FolderListing l = list_folder(dir, options.recursive);
  if (options.limit > 0 && int64_t(l.files.size()) > options.limit) {
    l.files.resize(size_t(options.limit));
    if (!l.labels.empty()) l.labels.resize(size_t(options.limit));
  }

  Dataset d;
  d.height = d.width = options.size;
  d.channels = options.channels;
  d.count = int64_t(l.files.size());
  d.labels = std::move(l.labels);
  d.classes = std::move(l.classes);
  d.source = dir;
  d.format = "folder";
  if (options.lazy) {
    struct FolderImages : LazyImages {
      std::vector<std::string> files;
      FolderOptions o;
      void read(int64_t i, uint8_t* dst) const override {
        const img::Image im =
            img::fit(img::to_channels(img::decode_file(files[size_t(i)], 0, "data"), o.channels),
                     o.size, o.fit, o.background);
        std::memcpy(dst, im.pixels.data(), im.pixels.size());
      }
    };
    auto f = std::make_shared<FolderImages>();
    f->files = std::move(l.files);
    f->o = options;
    d.lazy = std::move(f);
    (void)d.get(0);  // a folder of unreadable files fails here, not at the first batch
    return d;
  }
  d.pixels.resize(size_t(d.count) * d.image_bytes());
  // Decoded on several threads, each image into its own place: the result does not depend on the
  // thread count. The first error (in file order) is the one reported.
  const int threads = int(std::clamp<int64_t>(
      options.threads > 0 ? options.threads : kernels::cpu::num_threads(), 1, d.count));
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(size_t(d.count));
  std::atomic<bool> failed{false};
  auto work = [&] {
    for (int64_t i; !failed.load(std::memory_order_relaxed) && (i = next++) < d.count;) {
      try {
        const img::Image im = img::fit(
            img::to_channels(img::decode_file(l.files[size_t(i)], 0, "data"), options.channels),
            options.size, options.fit, options.background);
        std::memcpy(d.pixels.data() + size_t(i) * d.image_bytes(), im.pixels.data(),
                    d.image_bytes());
      } catch (...) {
        errors[size_t(i)] = std::current_exception();
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return d;
}

Dataset load_auto(const std::string& path, bool train, const FolderOptions& folder) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "no such file or directory");
  if (!fs::is_directory(path, ec)) return is_prepared(path) ? map_prepared(path) : load_idx(path);
  const fs::path p(path);
  if (path_exists(p / "data_batch_1.bin") || path_exists(p / "test_batch.bin"))
    return load_cifar10(path, train);
  for (const char* stem : {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"})
    if (path_exists(p / stem) || path_exists(p / (std::string(stem) + ".gz")))
      return load_fashion_mnist(path, train);
  return load_folder(path, folder);
}

// ---------------------------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------------------------

struct Loader::Slot {
  Tensor host;                  // (B, S, S, C) float32, pinned when the device is CUDA
  cudaEvent_t event = nullptr;  // recorded after the copy out of `host` was queued
  bool copy_pending = false;    // set by the consumer, cleared by the producer after waiting

  Slot() = default;
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  ~Slot() {
    if (!event) return;
    // The pinned buffer must outlive a copy still queued on the stream.
    if (copy_pending) (void)cudaEventSynchronize(event);
    (void)cudaEventDestroy(event);
  }
};

// Images fitted (and converted to gray when C = 1) once, by the producer, the first time each is
// used: fitting is a pure function of the image, so later epochs reuse it. Only the producer
// thread touches it (batch() computes without it), and only while the fitted dataset stays under
// kFitCacheBytes.
struct Loader::FitCache {
  size_t image_bytes = 0;
  // (N, S, S, sc), allocated and zeroed at once: the resident set is flat from the first batch
  // (the trainer's stability checks measure it for leaks)
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> done;  // (N) 1 once pixels holds image i
};

Loader::Loader(Dataset data, const LoaderOptions& options)
    : Loader(std::make_shared<const Dataset>(std::move(data)), options) {}

Loader::Loader(std::shared_ptr<const Dataset> data, const LoaderOptions& options)
    : data_(std::move(data)), opt_(options), cache_(std::make_unique<FitCache>()) {
  GAN_CHECK(data_ && data_->count > 0, "data: loader: empty dataset");
  const Dataset& d = *data_;
  GAN_CHECK(d.channels == 1 || d.channels == 3,
            fmt::format("data: {}: {} channels (expected 1 or 3)", d.source, d.channels));
  GAN_CHECK(d.lazy || (d.pixel_data() && d.pixel_bytes() == size_t(d.count) * d.image_bytes()),
            fmt::format("data: {}: {} pixel bytes for {} images of {}x{}x{}", d.source,
                        d.pixel_bytes(), d.count, d.height, d.width, d.channels));
  GAN_CHECK(opt_.image_size > 0 && opt_.image_size <= 8192,
            fmt::format("data: loader: invalid image_size {}", opt_.image_size));
  GAN_CHECK(opt_.channels == 1 || opt_.channels == 3,
            fmt::format("data: loader: invalid channels {} (expected 1 or 3)", opt_.channels));
  GAN_CHECK(opt_.batch_size > 0,
            fmt::format("data: loader: invalid batch_size {}", opt_.batch_size));
  GAN_CHECK(opt_.prefetch >= 1 && opt_.prefetch <= 8,
            fmt::format("data: loader: invalid prefetch {} (expected 1..8)", opt_.prefetch));
  GAN_CHECK(opt_.workers >= 1 && opt_.workers <= 256,
            fmt::format("data: loader: invalid workers {} (expected 1..256)", opt_.workers));
  GAN_CHECK(opt_.shard_count >= 1 && opt_.shard_rank >= 0 && opt_.shard_rank < opt_.shard_count &&
                (opt_.shard_count == 1 || opt_.drop_last),
            fmt::format("data: loader: invalid shard {} of {} (drop_last {})", opt_.shard_rank,
                        opt_.shard_count, opt_.drop_last));
  const int64_t B = opt_.batch_size, G = B * opt_.shard_count;
  batches_per_epoch_ = opt_.drop_last ? d.count / G : (d.count + B - 1) / B;
  GAN_CHECK(batches_per_epoch_ > 0,
            fmt::format("data: {}: {} images are fewer than one batch of {} (drop_last)", d.source,
                        d.count, G));

  const Shape shape{B, opt_.image_size, opt_.image_size, opt_.channels};
  const bool cuda = opt_.device == Device::CUDA;
  if (cuda) (void)cuda::context();  // throws a clear error without a GPU
  for (int i = 0; i < opt_.prefetch; ++i) {
    auto s = std::make_unique<Slot>();
    s->host = cuda ? Tensor::empty_pinned(shape) : Tensor::empty(shape);
    if (cuda) GAN_CUDA_CHECK(cudaEventCreateWithFlags(&s->event, cudaEventDisableTiming));
    slots_.push_back(std::move(s));
  }
  start();
}

Loader::~Loader() { stop(); }  // then ~Slot waits for queued copies before freeing buffers

int64_t Loader::batch_rows(int64_t step) const {
  const int64_t B = opt_.batch_size;
  return std::min<int64_t>(B, data_->count - step * B);
}

std::vector<int64_t> Loader::permutation(int64_t epoch) const {
  std::vector<int64_t> order(size_t(data_->count));
  for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
  if (!opt_.shuffle || order.size() < 2) return order;
  SplitMix64 rng{mix64(mix64(opt_.seed ^ kShuffleSalt) ^ uint64_t(epoch))};
  for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  return order;
}

bool Loader::flipped(int64_t epoch, int64_t position) const {
  if (!opt_.hflip) return false;
  return mix64(mix64(mix64(opt_.seed ^ kFlipSalt) ^ uint64_t(epoch)) + uint64_t(position)) & 1;
}

// Batch (epoch, step) into out (rows, S, S, C): gather (decode), fit, convert, flip, scale to
// [-1, 1]. Rows that need decoding or fitting are split over opt_.workers threads; every row is a
// function of its image alone, so the result does not depend on how they are split.
void Loader::prepare(const std::vector<int64_t>& order, int64_t epoch, int64_t step, float* out,
                     FitCache* cache) const {
  const Dataset& d = *data_;
  const int S = opt_.image_size, C = opt_.channels;
  const int64_t rows = batch_rows(step);
  const bool to_gray = d.channels == 3 && C == 1;
  const bool same_size = d.height == S && d.width == S;
  const bool work = to_gray || !same_size || d.lazy;  // per-image work before the copy
  const int sc = to_gray ? 1 : d.channels;            // channels of the fitted image
  const size_t fitted_bytes = size_t(S) * S * sc;
  if (cache && cache->image_bytes == 0 && work &&
      fitted_bytes * size_t(d.count) <= kFitCacheBytes) {
    cache->image_bytes = fitted_bytes;
    cache->pixels.resize(fitted_bytes * size_t(d.count));
    cache->done.assign(size_t(d.count), 0);
  }
  const bool use_cache = cache && cache->image_bytes != 0;
  auto do_rows = [&](int64_t r0, int64_t stride) {
    img::Image tmp;
    for (int64_t r = r0; r < rows; r += stride) {
      const int64_t position =
          (step * opt_.shard_count + opt_.shard_rank) * int64_t(opt_.batch_size) + r;
      const int64_t index = order[size_t(position)];
      // src (S, S, sc) after fitting; RGB -> gray happens before fitting (less to resample).
      const uint8_t* src = nullptr;
      if (use_cache && cache->done[size_t(index)]) {
        src = cache->pixels.data() + size_t(index) * fitted_bytes;
      } else if (work) {
        tmp = d.get(index);
        if (to_gray) tmp = img::to_gray(tmp);
        if (!same_size) tmp = img::fit(tmp, S, opt_.fit, opt_.background);
        src = tmp.pixels.data();
        if (use_cache) {  // rows of one batch are distinct images: no two threads write one slot
          std::memcpy(cache->pixels.data() + size_t(index) * fitted_bytes, src, fitted_bytes);
          cache->done[size_t(index)] = 1;
        }
      } else {
        src = d.image(index);
      }
      const bool flip = flipped(epoch, position);
      float* dst = out + size_t(r) * S * S * C;
      for (int y = 0; y < S; ++y) {
        for (int x = 0; x < S; ++x) {
          const uint8_t* p = src + (size_t(y) * S + (flip ? S - 1 - x : x)) * sc;
          float* q = dst + (size_t(y) * S + x) * C;
          for (int k = 0; k < C; ++k) q[k] = float(p[sc == 1 ? 0 : k]) / 127.5f - 1.0f;
        }
      }
    }
  };
  // Workers only where rows may need decoding or fitting (a cached epoch is a copy).
  bool all_cached = use_cache;
  for (int64_t r = 0; all_cached && r < rows; ++r)
    all_cached = cache->done[size_t(
        order[size_t((step * opt_.shard_count + opt_.shard_rank) * int64_t(opt_.batch_size) + r)])];
  const int64_t threads = work && !all_cached ? std::min<int64_t>(opt_.workers, rows) : 1;
  if (threads <= 1) {
    do_rows(0, 1);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t)
    pool.emplace_back([&, t] {
      try {
        do_rows(t, threads);
      } catch (...) {
        errors[size_t(t)] = std::current_exception();
      }
    });
  try {
    do_rows(0, threads);
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<int32_t> Loader::batch_labels(int64_t epoch, int64_t step) {
  GAN_CHECK(!data_->labels.empty(),
            fmt::format("data: {}: the dataset has no labels", data_->source));
  GAN_CHECK(
      step >= 0 && step < batches_per_epoch_,
      fmt::format("data: loader: step {} out of range (0..{})", step, batches_per_epoch_ - 1));
  if (labels_epoch_ != epoch) labels_order_ = permutation(epoch), labels_epoch_ = epoch;
  std::vector<int32_t> out(size_t(batch_rows(step)));
  for (size_t r = 0; r < out.size(); ++r)
    out[r] = data_->labels[size_t(labels_order_[size_t(
        (step * opt_.shard_count + opt_.shard_rank) * int64_t(opt_.batch_size) + int64_t(r))])];
  return out;
}

Tensor Loader::batch(int64_t epoch, int64_t step) const {
  GAN_CHECK(
      step >= 0 && step < batches_per_epoch_,
      fmt::format("data: loader: step {} out of range (0..{})", step, batches_per_epoch_ - 1));
  const int S = opt_.image_size;
  Tensor t = Tensor::empty({batch_rows(step), S, S, opt_.channels});
  prepare(permutation(epoch), epoch, step, t.data<float>(), nullptr);
  return t;
}

void Loader::start() {
  stop_ = false;
  produced_ = consumed_ = 0;
  error_ = nullptr;
  thread_ = std::thread([this] { produce(); });
}

void Loader::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Loader::produce() {
  try {
    if (opt_.device == Device::CUDA) GAN_CUDA_CHECK(cudaSetDevice(cuda::context().device));
    Position p;
    {
      std::lock_guard<std::mutex> lock(mu_);
      p = pos_;
    }
    std::vector<int64_t> order = permutation(p.epoch);
    int64_t order_epoch = p.epoch;
    const uint64_t K = slots_.size();
    for (uint64_t seq = 0;; ++seq) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || seq - consumed_ < K; });
        if (stop_) return;
      }
      Slot& s = *slots_[seq % K];
      if (s.copy_pending) {  // the consumer's copy out of this buffer must have completed
        GAN_CUDA_CHECK(cudaEventSynchronize(s.event));
        s.copy_pending = false;
      }
      if (p.epoch != order_epoch) {
        order = permutation(p.epoch);
        order_epoch = p.epoch;
      }
      if (data_->mapped) {  // page in the next batch's images while this one is assembled
        const int64_t next = p.step + 1 < batches_per_epoch_ ? p.step + 1 : -1;
        if (next >= 0)
          for (int64_t r = 0, rows = batch_rows(next); r < rows; ++r)
            data_->will_need(order[size_t(
                (next * opt_.shard_count + opt_.shard_rank) * int64_t(opt_.batch_size) + r)]);
      }
      prepare(order, p.epoch, p.step, s.host.data<float>(), cache_.get());
      if (data_->mapped && data_->pixel_bytes() > kReleaseBytes) {
        // A page fault maps the whole page-cache folio around an image (up to 2 MiB), so the
        // pages a large mapped dataset leaves resident grow far faster than the bytes read:
        // unmap them all whenever the reads may have mapped kReleaseBytes. A dataset smaller
        // than that stays mapped (its resident pages are bounded by its size).
        mapped_since_release_ +=
            uint64_t(batch_rows(p.step)) * std::max<uint64_t>(data_->image_bytes(), 2u << 20);
        if (mapped_since_release_ >= kReleaseBytes) {
          data_->release();
          mapped_since_release_ = 0;
        }
      }
      if (++p.step == batches_per_epoch_) p = Position{p.epoch + 1, 0};
      {
        std::lock_guard<std::mutex> lock(mu_);
        produced_ = seq + 1;
      }
      cv_.notify_all();
    }
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
    }
    cv_.notify_all();
  }
}

Loader::Slot& Loader::wait_ready() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return produced_ > consumed_ || error_; });
  if (produced_ == consumed_) std::rethrow_exception(error_);
  return *slots_[consumed_ % slots_.size()];
}

void Loader::next_into(const Tensor& dst) {
  const int S = opt_.image_size;
  const Shape want{batch_rows(pos_.step), S, S, opt_.channels};
  GAN_CHECK(dst.defined() && dst.shape() == want && dst.dtype() == DType::F32 &&
                dst.device() == opt_.device,
            fmt::format("data: loader: batch destination is {}, expected {} f32 {}",
                        dst.defined() ? dst.str() : std::string("undefined"),
                        device_name(opt_.device), want.str()));
  Slot& s = wait_ready();
  if (opt_.device == Device::CUDA) {
    GAN_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), s.host.raw(), dst.nbytes(), cudaMemcpyHostToDevice,
                                   cuda::stream()));
    GAN_CUDA_CHECK(cudaEventRecord(s.event, cuda::stream()));
    s.copy_pending = true;
  } else {
    std::memcpy(dst.raw(), s.host.raw(), dst.nbytes());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++consumed_;
    if (++pos_.step == batches_per_epoch_) pos_ = Position{pos_.epoch + 1, 0};
  }
  cv_.notify_all();
}

Tensor Loader::next() {
  const int S = opt_.image_size;
  Tensor t = Tensor::empty({batch_rows(pos_.step), S, S, opt_.channels}, opt_.device);
  next_into(t);
  return t;
}

void Loader::set_position(Position p) {
  GAN_CHECK(p.epoch >= 0 && p.step >= 0 && p.step < batches_per_epoch_,
            fmt::format("data: loader: position (epoch {}, step {}) out of range (steps 0..{})",
                        p.epoch, p.step, batches_per_epoch_ - 1));
  stop();
  pos_ = p;
  start();
}

}  // namespace gan::data
