// Training data: in-memory uint8 datasets (MNIST-format IDX files, Fashion-MNIST, CIFAR-10 binary
// batches, folders of PNG/JPEG images) and a Loader that turns them into shuffled float batches
// (B, S, S, C) in [-1, 1], prepared on a background thread into pinned host buffers and copied to
// the GPU asynchronously on the engine stream. See docs/io.md for formats, pipeline and resume.
//
// Errors are gan::Error with one line "data: <path>: <problem>", e.g.
//   data: /x/train-images-idx3-ubyte.gz: not an IDX image file (magic 0x00000801, expected
//   0x00000803)
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/tensor.h"
#include "tools/io/image.h"

namespace gan::data {

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Images decoded when they are used (a folder streamed without preparing): read(i, dst) writes
// image i, fitted, as height x width x channels bytes. Safe to call from several threads at once.
struct LazyImages {
  virtual ~LazyImages() = default;
  virtual void read(int64_t i, uint8_t* dst) const = 0;
};

// N images of H x W x C bytes, stored contiguously: pixels (N, H, W, C), in memory or mapped from
// a prepared file (tools/io/prepared.h). Copies share a mapping (read-only).
struct Dataset {
  int64_t count = 0;
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;          // (N, H, W, C) in memory; empty when mapped
  std::vector<int32_t> labels;          // (N), or empty when the source has none
  std::vector<std::string> classes;     // label k names classes[k]; empty when unnamed
  std::string source;                   // the file or directory it was read from
  std::string format;                   // "idx", "cifar10", "folder", "prepared"
  std::shared_ptr<const void> mapping;  // keeps `mapped` valid
  const uint8_t* mapped = nullptr;      // (N, H, W, C) in a read-only mapping, or null
  // Set for a streamed folder: no pixels are held (pixel_data() is null, image() must not be
  // called); get(i) decodes. The Loader decodes on its workers.
  std::shared_ptr<const LazyImages> lazy;

  size_t image_bytes() const { return size_t(height) * width * channels; }
  const uint8_t* pixel_data() const { return lazy ? nullptr : mapped ? mapped : pixels.data(); }
  size_t pixel_bytes() const {
    return lazy ? 0 : mapped ? size_t(count) * image_bytes() : pixels.size();
  }
  const uint8_t* image(int64_t i) const { return pixel_data() + size_t(i) * image_bytes(); }
  img::Image get(int64_t i) const;  // a copy of image i
  std::string info() const;         // "idx /x/train-images-idx3-ubyte.gz: 60000 images 28x28x1"
  void truncate(int64_t n);         // keeps the first n images (and labels)
  void materialize();  // copies mapped (or decodes lazy) pixels into `pixels` (to edit them)
  // Read-ahead for a mapped dataset: asks the kernel to page in images [i, i + n) (no-op in
  // memory).
  void will_need(int64_t i, int64_t n = 1) const;
  // A mapped dataset's pages leave this process's resident set (they stay in the page cache; a
  // later read maps them again). No-op in memory.
  void release() const;
};

// MNIST-format IDX: images (magic 0x00000803: count, rows, cols, big-endian uint32) and optional
// labels (magic 0x00000801: count). gzip-compressed or raw (zlib reads both).
Dataset load_idx(const std::string& images_path, const std::string& labels_path = "");

// Fashion-MNIST (or MNIST) from a directory holding train-images-idx3-ubyte[.gz] (train) or
// t10k-images-idx3-ubyte[.gz] (test), with the matching labels file when present.
Dataset load_fashion_mnist(const std::string& dir = kFashionMnistDir, bool train = true);

// The classes' names in label order: Fashion-MNIST's (given to IDX files in a directory whose path
// has "fashion" or "fmnist"; IDX files carry no names) and CIFAR-10's (its batches.meta.txt).
const std::vector<std::string>& fashion_mnist_classes();
const std::vector<std::string>& cifar10_classes();

// CIFAR-10 binary version: data_batch_1.bin .. data_batch_5.bin (train, 50000 images) or
// test_batch.bin (test), each 10000 records of 1 label byte + 3072 bytes (3, 32, 32) planar;
// stored HWC.
Dataset load_cifar10(const std::string& dir, bool train = true);

// A folder of PNG/JPEG images (*.png, *.jpg, *.jpeg, any case), sorted by path, each decoded on
// `threads` threads (0: the CPU backend's count), converted to `channels` and fitted to size x
// size. A folder without images of its own whose subfolders hold them is laid out by class, as
// torchvision's ImageFolder: each subfolder (sorted by name) is a class, its images (recursively)
// carry its index as label, and the names go to Dataset::classes.
struct FolderOptions {
  int size = 64;
  int channels = 3;               // 1 or 3
  img::Fit fit = img::Fit::Crop;  // see img::fit
  uint8_t background = 0;         // padding value for Fit::Pad
  bool recursive = false;         // include subdirectories
  int64_t limit = 0;              // > 0: only the first `limit` files (sorted order)
  int threads = 0;                // decoding threads; 0: kernels::cpu::num_threads()
  // Stream: list the files only and decode each image when it is used (Dataset::lazy), so the
  // first batch comes after its own images, not after the whole folder.
  bool lazy = false;
};

// The files a folder load would read, in order, with their labels (empty unless laid out by
// class) and class names. Throws "no PNG or JPEG images" when there are none.
struct FolderListing {
  std::vector<std::string> files;
  std::vector<int32_t> labels;
  std::vector<std::string> classes;
};
FolderListing list_folder(const std::string& dir, bool recursive);
Dataset load_folder(const std::string& dir, const FolderOptions& options = {});

// Picks the loader from what `path` is: a prepared file (prepared.h, mapped); an IDX file; a
// directory with data_batch_1.bin (CIFAR-10), with train-images-idx3-ubyte[.gz]
// (Fashion-MNIST/MNIST), else a folder of images.
Dataset load_auto(const std::string& path, bool train = true, const FolderOptions& folder = {});

struct LoaderOptions {
  int image_size = 32;           // S: batches are (B, S, S, C)
  int channels = 1;              // C: 1 or 3 (gray -> RGB by replication, RGB -> gray by luma)
  int batch_size = 64;           // B
  img::Fit fit = img::Fit::Pad;  // how dataset images are brought to S x S (identity if already)
  uint8_t background = 0;        // padding value for Fit::Pad (before scaling: 0 -> -1.0)
  bool hflip = false;            // random horizontal flips
  uint64_t seed = 0;
  bool drop_last = true;  // drop the last partial batch (else it is smaller than B)
  bool shuffle = true;    // false: every epoch in dataset order (evaluation)
  Device device = Device::CUDA;
  int prefetch = 3;  // host buffers in the ring (1..8; pinned for CUDA): batches prepared ahead
  // Threads that assemble a batch's rows when images need decoding (a streamed folder) or fitting
  // (first use); 1: the producer alone. The batches do not depend on it.
  int workers = 2;
  // Data parallel: this loader yields rows [shard_rank B, (shard_rank + 1) B) of each global batch
  // of shard_count B images (the same permutation and flips on every rank; drop_last only).
  int shard_rank = 0, shard_count = 1;
};

// SplitMix64's finaliser: the loader's shuffle and flips hash with it (portable, unlike std::
// distributions); gan_train draws a conditional model's fake labels with it.
uint64_t mix64(uint64_t z);

// The position of the next batch: batch `step` (0-based) of epoch `epoch`. A batch is a pure
// function of (seed, epoch, step), so restoring a position resumes exactly.
struct Position {
  int64_t epoch = 0;
  int64_t step = 0;
  bool operator==(const Position&) const = default;
};

// Shuffled batches, prepared on a background thread. Epoch e visits every image once in the order
// permutation(e) (a Fisher-Yates shuffle driven by a SplitMix64 stream seeded from (seed, e):
// identical on every platform). Image at position i of epoch e is flipped when hflip is on and bit
// 0 of hash(seed, e, i) is set. Batch b of epoch e holds positions [b B, (b + 1) B); with shards,
// [b G + r B, b G + (r + 1) B) for shard r of a global batch G = shard_count B.
//
// Device::CUDA: next() allocates the batch from the engine's pool, queues cudaMemcpyAsync from the
// pinned buffer on gan::cuda::stream() and records an event; the producer waits on that event (on
// its own thread) before it refills the buffer. The consumer only blocks when the producer is
// behind. Device::CPU: next() returns a CPU tensor (no CUDA calls; works without a GPU).
// Call next()/next_into() outside CUDA graph capture (copy into the graph's static input with
// next_into, then launch the graph). The public methods are for one consumer thread.
class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> data, const LoaderOptions& options);
  Loader(Dataset data, const LoaderOptions& options);
  ~Loader();  // stops and joins the producer (never waits on the consumer)
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch (B, S, S, C) float32 in [-1, 1] on options().device; advances the position
  // (moving to the next epoch after the last batch). Rethrows an error raised by the producer.
  Tensor next();
  // Same, into an existing tensor of that shape on options().device (e.g. a CUDA graph's static
  // input). With drop_last = false the last batch of an epoch has fewer rows: dst must match.
  void next_into(const Tensor& dst);

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t epoch() const { return pos_.epoch; }
  int64_t step_in_epoch() const { return pos_.step; }
  Position position() const { return pos_; }
  // Jumps to a position (resume): restarts the producer there. step in [0, batches_per_epoch).
  void set_position(Position p);
  void set_position(int64_t epoch, int64_t step) { set_position(Position{epoch, step}); }

  // Rows of batch `step` (B, or fewer for a last partial batch).
  int64_t batch_rows(int64_t step) const;
  const Dataset& dataset() const { return *data_; }
  const LoaderOptions& options() const { return opt_; }

  // The pure functions the batches are made of (also usable without the thread):
  std::vector<int64_t> permutation(int64_t epoch) const;  // dataset indices in epoch order
  bool flipped(int64_t epoch, int64_t position) const;
  // Batch (epoch, step) computed synchronously on the CPU: what next() returns there.
  Tensor batch(int64_t epoch, int64_t step) const;
  // The dataset labels of batch (epoch, step)'s rows, in row order (this shard's rows); throws
  // when the dataset has no labels. The permutation of the last epoch asked for is kept.
  std::vector<int32_t> batch_labels(int64_t epoch, int64_t step);

 private:
  struct Slot;
  struct FitCache;
  void start();
  void stop();
  void produce();
  void prepare(const std::vector<int64_t>& order, int64_t epoch, int64_t step, float* out,
               FitCache* cache) const;
  Slot& wait_ready();

  std::shared_ptr<const Dataset> data_;
  LoaderOptions opt_;
  int64_t batches_per_epoch_ = 0;
  Position pos_;  // consumer: the next batch next() returns

  int64_t labels_epoch_ = -1;  // batch_labels: the epoch of labels_order_
  std::vector<int64_t> labels_order_;
  std::unique_ptr<FitCache> cache_;    // producer thread only
  uint64_t mapped_since_release_ = 0;  // producer thread only
  std::vector<std::unique_ptr<Slot>> slots_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t produced_ = 0, consumed_ = 0;  // batches since the last (re)start
  std::exception_ptr error_;
};

}  // namespace gan::data
