#include "tools/io/prepared.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "kernels/cpu/backend.h"

namespace gan::data {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'G', 'A', 'N', 'D', 'A', 'T', 'A', '1'};
constexpr uint32_t kDone = 0x454e4f44;  // "DONE"
constexpr uint64_t kAlign = 4096;
constexpr uint64_t kMaxHeader = uint64_t(1) << 24;
constexpr size_t kChunkBytes = size_t(4) << 20;  // pixels per chunk: about 4 MiB

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw Error("data: " + path + ": " + problem);
}

std::string errno_text() { return std::strerror(errno); }

uint64_t align_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

uint32_t crc(const void* data, size_t n) {
  return uint32_t(crc32_z(crc32_z(0, nullptr, 0), static_cast<const Bytef*>(data), n));
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

void pread_all(int fd, void* dst, size_t n, uint64_t offset, const std::string& path) {
  auto* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(path, "read error (" + errno_text() + ")");
    if (got == 0) fail(path, fmt::format("truncated (nothing at byte {})", offset));
    p += got, n -= size_t(got), offset += uint64_t(got);
  }
}

void pwrite_all(int fd, const void* src, size_t n, uint64_t offset, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(src);
  while (n > 0) {
    const ssize_t put = ::pwrite(fd, p, n, off_t(offset));
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) fail(path, "cannot write (" + errno_text() + ")");
    p += put, n -= size_t(put), offset += uint64_t(put);
  }
}

// A zip archive of images, read by several threads: each borrows an open handle (libzip's handles
// are not safe to share between threads) and gives it back.
class ZipImages {
 public:
  // An entry larger than this is refused before it is inflated: an image of at most 16.8
  // megapixels (img::decode_*) is far smaller as a PNG or JPEG, whatever the archive claims.
  static constexpr uint64_t kMaxEntry = uint64_t(256) << 20;

  explicit ZipImages(std::string path) : path_(std::move(path)) {
    zip_t* z = open();
    const zip_int64_t n = zip_get_num_entries(z, 0);
    std::vector<std::pair<std::string, zip_uint64_t>> images;
    for (zip_int64_t i = 0; i < n; ++i) {
      zip_stat_t st;
      zip_stat_init(&st);
      if (zip_stat_index(z, zip_uint64_t(i), 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME)) continue;
      const std::string name = st.name;
      if (name.empty() || name.back() == '/' || name.rfind("__MACOSX/", 0) == 0) continue;
      std::string ext = fs::path(name).extension().string();
      for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
      if (ext != ".png" && ext != ".jpg" && ext != ".jpeg") continue;
      images.emplace_back(name, zip_uint64_t(i));
      digest_ = fnv1a(name.data(), name.size() + 1, digest_);
      const uint64_t meta[2] = {uint64_t(st.size), uint64_t(st.crc)};
      digest_ = fnv1a(meta, sizeof meta, digest_);
    }
    if (images.empty()) {  // the destructor will not run: close the handle here
      zip_discard(z);
      fail(path_, "no PNG or JPEG images in the archive");
    }
    give_back(z);
    std::sort(images.begin(), images.end());
    // One folder per class, as for directories: when every image lies below a first-level folder
    // (after a single top folder common to all, as archives of a folder have), that folder is its
    // class.
    auto first = [](const std::string& s) {
      const size_t at = s.find('/');
      return at == std::string::npos ? std::string() : s.substr(0, at);
    };
    std::string top = first(images[0].first);
    for (const auto& e : images)
      if (top.empty() || first(e.first) != top) top.clear();
    bool classes = true;
    for (const auto& e : images)
      classes = classes && !first(e.first.substr(top.empty() ? 0 : top.size() + 1)).empty();
    std::vector<std::string> cls;
    for (const auto& e : images) {
      names_.push_back(e.first);
      index_.push_back(e.second);
      if (classes) cls.push_back(first(e.first.substr(top.empty() ? 0 : top.size() + 1)));
    }
    if (classes) {  // class indices in sorted name order (ImageFolder's)
      classes_ = cls;
      std::sort(classes_.begin(), classes_.end());
      classes_.erase(std::unique(classes_.begin(), classes_.end()), classes_.end());
      for (const std::string& c : cls)
        labels_.push_back(
            int32_t(std::lower_bound(classes_.begin(), classes_.end(), c) - classes_.begin()));
    }
  }
  ~ZipImages() {
    for (zip_t* z : free_) zip_discard(z);
  }
  ZipImages(const ZipImages&) = delete;
  ZipImages& operator=(const ZipImages&) = delete;

  int64_t count() const { return int64_t(names_.size()); }
  const std::vector<int32_t>& labels() const { return labels_; }
  const std::vector<std::string>& classes() const { return classes_; }
  std::string digest() const { return fmt::format("{:016x}", digest_); }

  img::Image decode(int64_t i, int min_side) {
    const std::string what = path_ + ": " + names_[size_t(i)];
    zip_t* z = open();
    std::vector<uint8_t> bytes;
    std::string error;
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(z, index_[size_t(i)], 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
      error = "cannot read its size";
    } else if (st.size > kMaxEntry) {
      error = fmt::format("{} bytes uncompressed (over {} MiB: not an image, or a zip bomb)",
                          uint64_t(st.size), kMaxEntry >> 20);
    } else if (zip_file_t* f = zip_fopen_index(z, index_[size_t(i)], 0)) {
      // One byte more than declared: an entry that inflates past its stated size is refused.
      bytes.resize(size_t(st.size) + 1);
      const zip_int64_t got = zip_fread(f, bytes.data(), bytes.size());
      if (got < 0)
        error = std::string("cannot inflate (") + zip_strerror(z) + ")";
      else if (zip_uint64_t(got) != st.size)
        error = fmt::format("inflates to {}{} bytes, its header says {}", got,
                            zip_uint64_t(got) > st.size ? "+" : "", uint64_t(st.size));
      zip_fclose(f);
      bytes.resize(size_t(st.size));
    } else {
      error = std::string("cannot open (") + zip_strerror(z) + ")";
    }
    give_back(z);
    if (!error.empty()) fail(what, error);
    return img::decode_memory(bytes.data(), bytes.size(), 0, "data: " + what, min_side);
  }

 private:
  zip_t* open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        zip_t* z = free_.back();
        free_.pop_back();
        return z;
      }
    }
    int err = 0;
    zip_t* z = zip_open(path_.c_str(), ZIP_RDONLY, &err);
    if (!z) {
      zip_error_t e;
      zip_error_init_with_code(&e, err);
      const std::string why = zip_error_strerror(&e);
      zip_error_fini(&e);
      fail(path_, "not a readable zip archive (" + why + ")");
    }
    return z;
  }
  void give_back(zip_t* z) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(z);
  }

  std::string path_;
  std::vector<std::string> names_;
  std::vector<zip_uint64_t> index_;
  std::vector<int32_t> labels_;
  std::vector<std::string> classes_;
  uint64_t digest_ = fnv1a("zip", 3);
  std::mutex mu_;
  std::vector<zip_t*> free_;
};

bool is_zip(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  uint8_t m[4];
  const bool zip = ::pread(fd, m, 4, 0) == 4 && m[0] == 'P' && m[1] == 'K' &&
                   ((m[2] == 3 && m[3] == 4) || (m[2] == 5 && m[3] == 6));
  ::close(fd);
  return zip;
}

// The images a prepare reads: decode(i) gives image i before fitting.
struct Source {
  std::string format;
  int64_t count = 0;
  int channels = 3;  // the default output channels
  std::vector<int32_t> labels;
  std::vector<std::string> classes;
  std::string digest;
  std::shared_ptr<const Dataset> data;  // in-memory or mapped sources
  std::vector<std::string> files;       // folders
  std::shared_ptr<ZipImages> zip;       // zip archives

  img::Image decode(int64_t i, int min_side) const {
    if (data) return data->get(i);
    if (zip) return zip->decode(i, min_side);
    return img::decode_file(files[size_t(i)], 0, "data", min_side);
  }
};

Source open_source(const std::string& src, bool train) {
  Source s;
  std::error_code ec;
  if (!fs::exists(src, ec)) fail(src, "no such file or directory");
  const fs::path p(src);
  const bool dir = fs::is_directory(src, ec);
  const bool dataset_dir =
      dir && (fs::exists(p / "data_batch_1.bin", ec) || fs::exists(p / "test_batch.bin", ec) ||
              fs::exists(p / "train-images-idx3-ubyte.gz", ec) ||
              fs::exists(p / "train-images-idx3-ubyte", ec) ||
              fs::exists(p / "t10k-images-idx3-ubyte.gz", ec) ||
              fs::exists(p / "t10k-images-idx3-ubyte", ec));
  if (dir && !dataset_dir) {
    FolderListing l = list_folder(src, true);
    s.format = "folder";
    s.count = int64_t(l.files.size());
    s.labels = std::move(l.labels);
    s.classes = std::move(l.classes);
    s.files = std::move(l.files);
    // The digest of the file list: relative paths, sizes and modification times.
    uint64_t h = fnv1a("folder", 6);
    for (const std::string& f : s.files) {
      const std::string rel = fs::relative(f, p, ec).string();
      h = fnv1a(rel.data(), rel.size() + 1, h);
      struct stat st {};
      if (::stat(f.c_str(), &st) == 0) {
        const int64_t meta[3] = {int64_t(st.st_size), int64_t(st.st_mtim.tv_sec),
                                 int64_t(st.st_mtim.tv_nsec)};
        h = fnv1a(meta, sizeof meta, h);
      }
    }
    s.digest = fmt::format("{:016x}", h);
    return s;
  }
  if (!dir && is_zip(src)) {
    s.format = "zip";
    s.zip = std::make_shared<ZipImages>(src);
    s.count = s.zip->count();
    s.labels = s.zip->labels();
    s.classes = s.zip->classes();
    s.digest = s.zip->digest();
    return s;
  }
  auto d = std::make_shared<const Dataset>(load_auto(src, train));
  s.format = d->format;
  s.count = d->count;
  s.channels = d->channels;
  s.labels = d->labels;
  s.classes = d->classes;
  if (s.classes.empty() && !s.labels.empty()) {  // IDX not named for Fashion-MNIST: the digits
    const int32_t top = *std::max_element(s.labels.begin(), s.labels.end());
    for (int32_t k = 0; k <= top; ++k) s.classes.push_back(std::to_string(k));
  }
  uint64_t h = fnv1a(d->format.data(), d->format.size());
  h = fnv1a(d->pixel_data(), d->pixel_bytes(), h);
  if (!d->labels.empty()) h = fnv1a(d->labels.data(), d->labels.size() * 4, h);
  s.digest = fmt::format("{:016x}", h);
  s.data = d;
  return s;
}

nlohmann::json header_json(const PreparedHeader& h) {
  nlohmann::json j;
  j["version"] = 1;
  j["count"] = h.count;
  j["height"] = h.height;
  j["width"] = h.width;
  j["channels"] = h.channels;
  j["fit"] = h.fit;
  j["fast_decode"] = h.fast_decode;
  j["background"] = h.background;
  j["classes"] = h.classes;
  j["labels"] = h.labels;
  j["labels_crc32"] = h.labels_crc32;
  j["source"] = h.source;
  j["source_format"] = h.source_format;
  j["source_digest"] = h.source_digest;
  j["chunk_images"] = h.chunk_images;
  j["chunks"] = h.chunks;
  j["pixel_offset"] = h.pixel_offset;
  j["label_offset"] = h.label_offset;
  j["checksum_offset"] = h.checksum_offset;
  j["file_bytes"] = h.file_bytes;
  return j;
}

// Offsets and the JSON for a header whose other fields are set.
void lay_out(PreparedHeader& h) {
  const uint64_t image_bytes = uint64_t(h.height) * h.width * h.channels;
  const uint64_t pixels = uint64_t(h.count) * image_bytes;
  h.chunks = (h.count + h.chunk_images - 1) / h.chunk_images;
  h.pixel_offset = h.label_offset = h.checksum_offset = h.file_bytes = 0;
  const uint64_t base = header_json(h).dump().size() + 16 + 128;  // 128: room for the offsets
  h.pixel_offset = align_up(base);
  h.label_offset = h.pixel_offset + pixels;
  h.checksum_offset = h.label_offset + (h.labels ? uint64_t(h.count) * 4 : 0);
  h.file_bytes = h.checksum_offset + uint64_t(h.chunks) * 8;
  h.json = header_json(h).dump();
  GAN_CHECK(16 + h.json.size() <= h.pixel_offset, "data: prepared header layout");
}

// Integer field `key` of the header, within [lo, hi].
int64_t field(const nlohmann::json& j, const char* key, int64_t lo, int64_t hi,
              const std::string& path) {
  if (!j.contains(key) || !j[key].is_number_integer())
    fail(path, fmt::format("not a prepared dataset (the header has no integer \"{}\")", key));
  int64_t v = 0;
  if (j[key].is_number_unsigned()) {
    const uint64_t u = j[key].get<uint64_t>();
    if (u > uint64_t(hi)) fail(path, fmt::format("the header's \"{}\" {} is out of range", key, u));
    v = int64_t(u);
  } else {
    v = j[key].get<int64_t>();
  }
  if (v < lo || v > hi)
    fail(path, fmt::format("the header's \"{}\" {} is out of range ({}..{})", key, v, lo, hi));
  return v;
}

std::string text_field(const nlohmann::json& j, const char* key, const std::string& path) {
  if (!j.contains(key) || !j[key].is_string())
    fail(path, fmt::format("not a prepared dataset (the header has no string \"{}\")", key));
  return j[key].get<std::string>();
}

PreparedHeader parse_header(int fd, uint64_t file_size, const std::string& path) {
  if (file_size < 16) fail(path, "not a prepared dataset (shorter than its 16-byte preamble)");
  uint8_t pre[16];
  pread_all(fd, pre, 16, 0, path);
  if (std::memcmp(pre, kMagic, 8) != 0) fail(path, "not a prepared dataset (no GANDATA1 magic)");
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= uint64_t(pre[8 + i]) << (8 * i);
  if (len == 0 || len > kMaxHeader || 16 + len > file_size)
    fail(path,
         fmt::format("the header length {} does not fit the file ({} bytes)", len, file_size));
  PreparedHeader h;
  h.json.resize(size_t(len));
  pread_all(fd, h.json.data(), size_t(len), 16, path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(h.json);
  } catch (const std::exception&) {
    fail(path, "the header is not valid JSON");
  }
  if (!j.is_object()) fail(path, "the header is not a JSON object");
  if (field(j, "version", 0, 1000, path) != 1)
    fail(path, fmt::format("prepared format version {} (this build reads 1)", j["version"].dump()));
  const int64_t kMaxCount = int64_t(1) << 40;
  h.count = field(j, "count", 1, kMaxCount, path);
  h.height = int(field(j, "height", 1, 8192, path));
  h.width = int(field(j, "width", 1, 8192, path));
  h.channels = int(field(j, "channels", 1, 3, path));
  if (h.channels == 2) fail(path, "the header's \"channels\" 2 is out of range (1 or 3)");
  h.background = int(field(j, "background", 0, 255, path));
  h.fit = text_field(j, "fit", path);
  h.source = text_field(j, "source", path);
  h.source_format = text_field(j, "source_format", path);
  h.source_digest = text_field(j, "source_digest", path);
  if (!j.contains("labels") || !j["labels"].is_boolean())
    fail(path, "not a prepared dataset (the header has no boolean \"labels\")");
  h.labels = j["labels"].get<bool>();
  if (j.contains("fast_decode")) {
    if (!j["fast_decode"].is_boolean()) fail(path, "the header's \"fast_decode\" is not a boolean");
    h.fast_decode = j["fast_decode"].get<bool>();
  }
  h.labels_crc32 = uint32_t(field(j, "labels_crc32", 0, 0xffffffffll, path));
  if (!j.contains("classes") || !j["classes"].is_array())
    fail(path, "not a prepared dataset (the header has no \"classes\" list)");
  for (const auto& c : j["classes"]) {
    if (!c.is_string()) fail(path, "the header's \"classes\" holds a non-string");
    h.classes.push_back(c.get<std::string>());
  }
  h.chunk_images = field(j, "chunk_images", 1, kMaxCount, path);
  h.chunks = field(j, "chunks", 1, kMaxCount, path);
  const int64_t kMaxOffset = std::numeric_limits<int64_t>::max();
  h.pixel_offset = uint64_t(field(j, "pixel_offset", 0, kMaxOffset, path));
  h.label_offset = uint64_t(field(j, "label_offset", 0, kMaxOffset, path));
  h.checksum_offset = uint64_t(field(j, "checksum_offset", 0, kMaxOffset, path));
  h.file_bytes = uint64_t(field(j, "file_bytes", 0, kMaxOffset, path));
  // The layout must be exactly what a writer computes (no overlaps, nothing past the end).
  const unsigned __int128 image_bytes = (unsigned __int128)h.height * h.width * h.channels;
  const unsigned __int128 pixels = image_bytes * (unsigned __int128)h.count;
  const bool ok =
      h.chunks == (h.count + h.chunk_images - 1) / h.chunk_images && h.pixel_offset >= 16 + len &&
      h.pixel_offset % kAlign == 0 &&
      (unsigned __int128)h.label_offset == h.pixel_offset + pixels &&
      (unsigned __int128)h.checksum_offset ==
          (unsigned __int128)h.label_offset + (h.labels ? (unsigned __int128)h.count * 4 : 0) &&
      (unsigned __int128)h.file_bytes ==
          (unsigned __int128)h.checksum_offset + (unsigned __int128)h.chunks * 8;
  if (!ok) fail(path, "the header's offsets and sizes do not agree (a damaged header)");
  if (h.file_bytes != file_size)
    fail(path, fmt::format("{} (the header says {} bytes, the file has {})",
                           file_size < h.file_bytes ? "truncated" : "wrong size", h.file_bytes,
                           file_size));
  return h;
}

uint64_t file_size_of(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, "cannot stat (" + errno_text() + ")");
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  return uint64_t(st.st_size);
}

int open_read(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open (" + errno_text() + ")");
  return fd;
}

std::vector<uint8_t> read_checksums(int fd, const PreparedHeader& h, const std::string& path) {
  std::vector<uint8_t> table(size_t(h.chunks) * 8);
  pread_all(fd, table.data(), table.size(), h.checksum_offset, path);
  return table;
}

uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

// Runs body(chunk) for chunks [0, n) on `threads` threads; stops early on the first error and
// rethrows the error of the lowest chunk that failed. Calls tick() about twice a second on this
// thread while it waits.
void for_chunks(int64_t n, int threads, const std::function<void(int64_t)>& body,
                const std::function<void()>& tick) {
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::condition_variable cv;
  int running = threads;
  int64_t error_chunk = -1;
  std::exception_ptr error;
  auto work = [&] {
    for (int64_t c; !failed.load() && (c = next++) < n;) {
      try {
        body(c);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (error_chunk < 0 || c < error_chunk) error_chunk = c, error = std::current_exception();
        failed = true;
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    --running;
    cv.notify_all();
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  {
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return running == 0; })) {
      lock.unlock();
      if (tick) tick();
      lock.lock();
    }
  }
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

void fsync_dir(const std::string& file) {
  const fs::path dir = fs::path(file).parent_path();
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

bool is_prepared(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  Fd f(fd);
  char m[8];
  return ::pread(fd, m, 8, 0) == 8 && std::memcmp(m, kMagic, 8) == 0;
}

PreparedHeader read_prepared_header(const std::string& path) {
  Fd f(open_read(path));
  return parse_header(f.fd, file_size_of(f.fd, path), path);
}

Dataset map_prepared(const std::string& path) {
  Fd f(open_read(path));
  const uint64_t size = file_size_of(f.fd, path);
  const PreparedHeader h = parse_header(f.fd, size, path);
  const std::vector<uint8_t> table = read_checksums(f.fd, h, path);
  for (int64_t c = 0; c < h.chunks; ++c)
    if (le32(table.data() + c * 8 + 4) != kDone)
      fail(path, fmt::format("incomplete (chunk {} of {} was never written)", c, h.chunks));
  Dataset d;
  d.count = h.count;
  d.height = h.height;
  d.width = h.width;
  d.channels = h.channels;
  d.classes = h.classes;
  d.source = path;
  d.format = "prepared";
  if (h.labels) {
    std::vector<uint8_t> raw(size_t(h.count) * 4);
    pread_all(f.fd, raw.data(), raw.size(), h.label_offset, path);
    if (crc(raw.data(), raw.size()) != h.labels_crc32)
      fail(path, "the labels are corrupt (their CRC-32 does not match the header's)");
    d.labels.resize(size_t(h.count));
    for (int64_t i = 0; i < h.count; ++i) {
      const int32_t v = int32_t(le32(raw.data() + i * 4));
      if (v < 0 || (!h.classes.empty() && v >= int32_t(h.classes.size())))
        fail(path, fmt::format("image {} has label {} ({} classes)", i, v, h.classes.size()));
      d.labels[size_t(i)] = v;
    }
  }
  void* base = ::mmap(nullptr, size_t(size), PROT_READ, MAP_SHARED, f.fd, 0);
  if (base == MAP_FAILED) fail(path, "cannot map (" + errno_text() + ")");
  const size_t length = size_t(size);
  d.mapping = std::shared_ptr<const void>(
      base, [length](const void* p) { ::munmap(const_cast<void*>(p), length); });
  d.mapped = static_cast<const uint8_t*>(base) + h.pixel_offset;
  (void)::madvise(base, length, MADV_RANDOM);  // batches gather images in shuffled order
  // No PMD (huge-page) mappings of the page cache: fewer pages mapped per image read.
  (void)::madvise(base, length, MADV_NOHUGEPAGE);
  return d;
}

void verify_prepared(const std::string& path,
                     const std::function<void(int64_t, int64_t, int64_t)>& progress) {
  Fd f(open_read(path));
  const PreparedHeader h = parse_header(f.fd, file_size_of(f.fd, path), path);
  const std::vector<uint8_t> table = read_checksums(f.fd, h, path);
  if (h.labels) {
    std::vector<uint8_t> raw(size_t(h.count) * 4);
    pread_all(f.fd, raw.data(), raw.size(), h.label_offset, path);
    if (crc(raw.data(), raw.size()) != h.labels_crc32)
      fail(path, "the labels are corrupt (their CRC-32 does not match the header's)");
  }
  const size_t image_bytes = size_t(h.height) * h.width * h.channels;
  std::vector<uint8_t> buf;
  int64_t done = 0;
  auto last = std::chrono::steady_clock::now();
  for (int64_t c = 0; c < h.chunks; ++c) {
    const int64_t first = c * h.chunk_images, n = std::min(h.chunk_images, h.count - first);
    if (le32(table.data() + c * 8 + 4) != kDone)
      fail(path, fmt::format("incomplete (chunk {} of {} was never written)", c, h.chunks));
    buf.resize(size_t(n) * image_bytes);
    pread_all(f.fd, buf.data(), buf.size(), h.pixel_offset + uint64_t(first) * image_bytes, path);
    const uint32_t got = crc(buf.data(), buf.size()), want = le32(table.data() + c * 8);
    if (got != want)
      fail(path, fmt::format("chunk {} (images {}..{}) is corrupt (CRC-32 {:08x}, expected {:08x})",
                             c, first, first + n - 1, got, want));
    done += n;
    if (progress && std::chrono::steady_clock::now() - last > std::chrono::milliseconds(500)) {
      progress(done, h.count, 0);
      last = std::chrono::steady_clock::now();
    }
  }
  if (progress) progress(done, h.count, 0);
}

PrepareResult prepare(const std::string& src, const std::string& out, const PrepareOptions& opt) {
  GAN_CHECK(opt.size >= 1 && opt.size <= 8192,
            fmt::format("data: prepare: invalid size {} (1..8192)", opt.size));
  GAN_CHECK(opt.channels == 0 || opt.channels == 1 || opt.channels == 3,
            fmt::format("data: prepare: invalid channels {} (1 or 3)", opt.channels));
  std::error_code ec;
  if (fs::exists(out, ec) && !opt.overwrite)
    fail(out, "already exists (remove it or pass --overwrite)");
  if (fs::exists(out, ec) && fs::equivalent(src, out, ec))
    fail(out, "is the source itself; write the prepared file elsewhere");
  const std::string partial = out + ".partial";
  Source s = open_source(src, opt.train);

  PreparedHeader h;
  h.count = s.count;
  h.height = h.width = opt.size;
  h.channels = opt.channels ? opt.channels : s.channels;
  h.fit = img::fit_name(opt.fit);
  h.fast_decode = opt.fast_decode;
  h.background = opt.background;
  h.classes = s.classes;
  h.labels = !s.labels.empty();
  std::vector<uint8_t> label_bytes(s.labels.size() * 4);
  for (size_t i = 0; i < s.labels.size(); ++i) put_le32(label_bytes.data() + i * 4, s.labels[i]);
  h.labels_crc32 = crc(label_bytes.data(), label_bytes.size());
  h.source = fs::absolute(src, ec).lexically_normal().string();
  h.source_format = s.format;
  h.source_digest = s.digest;
  const size_t image_bytes = size_t(h.height) * h.width * h.channels;
  h.chunk_images = opt.chunk_images > 0 ? opt.chunk_images
                                        : int64_t(std::max<size_t>(1, kChunkBytes / image_bytes));
  lay_out(h);

  // Resume an interrupted run of the same job: same header, same size.
  std::vector<uint8_t> done(size_t(h.chunks), 0);
  int64_t resumed = 0;
  int fd = -1;
  if (fs::exists(partial, ec)) {
    try {
      const PreparedHeader old = read_prepared_header(partial);
      if (old.json == h.json) {
        fd = ::open(partial.c_str(), O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
          const std::vector<uint8_t> table = read_checksums(fd, h, partial);
          std::vector<uint8_t> buf;
          for (int64_t c = 0; c < h.chunks; ++c) {
            if (le32(table.data() + c * 8 + 4) != kDone) continue;
            const int64_t first = c * h.chunk_images, n = std::min(h.chunk_images, h.count - first);
            buf.resize(size_t(n) * image_bytes);
            pread_all(fd, buf.data(), buf.size(), h.pixel_offset + uint64_t(first) * image_bytes,
                      partial);
            if (crc(buf.data(), buf.size()) == le32(table.data() + c * 8)) {
              done[size_t(c)] = 1;
              resumed += n;
            }
          }
        }
      }
    } catch (const Error&) {  // a partial file of another job or damaged: start again
      if (fd >= 0) ::close(fd);
      fd = -1, resumed = 0;
      std::fill(done.begin(), done.end(), 0);
    }
  }
  if (fd < 0) {
    fd = ::open(partial.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail(partial, "cannot create (" + errno_text() + ")");
    if (::ftruncate(fd, off_t(h.file_bytes)) != 0) {
      const std::string why = errno_text();
      ::close(fd);
      fail(partial, "cannot size (" + why + ")");
    }
    uint8_t pre[16];
    std::memcpy(pre, kMagic, 8);
    const uint64_t len = h.json.size();
    for (int i = 0; i < 8; ++i) pre[8 + i] = uint8_t(len >> (8 * i));
    pwrite_all(fd, pre, 16, 0, partial);
    pwrite_all(fd, h.json.data(), h.json.size(), 16, partial);
    if (h.labels) pwrite_all(fd, label_bytes.data(), label_bytes.size(), h.label_offset, partial);
  }
  Fd file(fd);

  const int threads = int(std::clamp<int64_t>(
      opt.threads > 0 ? opt.threads : kernels::cpu::num_threads(), 1, h.chunks));
  std::atomic<int64_t> images_done{resumed};
  auto body = [&](int64_t c) {
    if (done[size_t(c)]) return;
    const int64_t first = c * h.chunk_images, n = std::min(h.chunk_images, h.count - first);
    std::vector<uint8_t> buf(size_t(n) * image_bytes);
    for (int64_t i = 0; i < n; ++i) {
      const img::Image im =
          img::fit(img::to_channels(s.decode(first + i, h.fast_decode ? opt.size : 0), h.channels),
                   opt.size, opt.fit, opt.background);
      std::memcpy(buf.data() + size_t(i) * image_bytes, im.pixels.data(), image_bytes);
      ++images_done;
    }
    pwrite_all(fd, buf.data(), buf.size(), h.pixel_offset + uint64_t(first) * image_bytes, partial);
    uint8_t entry[8];
    put_le32(entry, crc(buf.data(), buf.size()));
    put_le32(entry + 4, kDone);
    pwrite_all(fd, entry, 8, h.checksum_offset + uint64_t(c) * 8, partial);
  };
  auto tick = [&] {
    if (opt.progress) opt.progress(images_done.load(), h.count, resumed);
  };
  for_chunks(h.chunks, threads, body, tick);
  if (::fsync(fd) != 0) fail(partial, "cannot write (fsync: " + errno_text() + ")");
  if (::rename(partial.c_str(), out.c_str()) != 0)
    fail(out, "cannot write (rename: " + errno_text() + ")");
  fsync_dir(out);
  tick();
  PrepareResult r;
  r.count = h.count;
  r.resumed = resumed;
  r.source_format = s.format;
  r.classes = int64_t(h.classes.size());
  return r;
}

}  // namespace gan::data
