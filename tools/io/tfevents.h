// TensorBoard event files, written without a protobuf library.
//
// File: <logdir>/events.out.tfevents.<unix seconds>.<hostname> (".1", ".2", ... appended when
// that name exists). Records are TFRecord-framed:
//   uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32
//   masked_crc32c(data), with masked_crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8.
// Each record's data is a hand-encoded tensorflow.Event protobuf:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; Image image = 4; }
//   Image   { int32 height = 1; int32 width = 2; int32 colorspace = 3;
//             bytes encoded_image_string = 4; }
// The first record is {wall_time, file_version: "brain.Event:2"}. See docs/io.md.
// Errors are gan::Error with one line "tfevents: <path>: <problem>".
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tools/io/image.h"

namespace gan::tb {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc` (0 to start).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
uint32_t masked_crc32c(const void* data, size_t size);

// Thread-safe. Data reaches the file on flush(), at destruction, and on any add_* when at least
// flush_secs have passed since the last flush (so a live TensorBoard sees progress). A failed
// write (disk full, file size limit) throws "tfevents: <path>: cannot write (...)" after cutting
// the file back to its last complete record; the events since the last flush are lost.
class Writer {
 public:
  // Creates logdir (and its parents) if needed and opens a new event file in it.
  explicit Writer(const std::string& logdir, double flush_secs = 10.0);
  ~Writer();  // flushes and closes (errors ignored)
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);
  // One event holding one value per tag (shown as separate scalar charts in TensorBoard).
  void add_scalars(const std::map<std::string, double>& values, int64_t step);
  // An 8-bit image (gray or RGB, (H, W, C)), PNG-encoded.
  void add_image(const std::string& tag, const img::Image& image, int64_t step);
  void flush();

  const std::string& path() const { return path_; }

 private:
  void write_event(int64_t step, const std::vector<uint8_t>& summary);  // summary: encoded
  void write_record(const std::vector<uint8_t>& data);
  void flush_locked();
  [[noreturn]] void fail_locked(int err);

  std::string path_;
  FILE* file_ = nullptr;
  double flush_secs_;
  double last_flush_ = 0;
  long committed_ = 0;  // file size after the last successful flush (whole records)
  std::mutex mu_;
};

}  // namespace gan::tb
