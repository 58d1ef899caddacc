// Prepared datasets: images decoded and fitted once (on several threads) into one file that
// training maps instead of reading, so memory stays bounded whatever the dataset's size and no run
// decodes again. `gan_data prepare` writes them; data::load_auto recognises them.
//
// The file (little-endian):
//   0   "GANDATA1"                      8 bytes
//   8   header length H                 uint64
//   16  header: JSON, H bytes           {"version": 1, "count", "height", "width", "channels",
//                                        "fit", "fast_decode", "background", "classes", "labels",
//                                        "labels_crc32", "source", "source_format",
//                                        "source_digest", "chunk_images", "chunks", "pixel_offset",
//                                        "label_offset", "checksum_offset", "file_bytes"}
//   pixel_offset (4096-aligned)         uint8 (count, height, width, channels), NHWC
//   label_offset                        int32 (count), when "labels"
//   checksum_offset                     per chunk of chunk_images images: uint32 CRC-32 of its
//                                       pixels, uint32 0x454e4f44 ("DONE")
// The file is written as <out>.partial and renamed when complete; an interrupted prepare resumes
// from the chunks whose checksum entry is present and matches.
//
// Errors are gan::Error with one line "data: <path>: <problem>".
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tools/io/data.h"

namespace gan::data {

struct PrepareOptions {
  int size = 64;                  // images are fitted to size x size
  int channels = 0;               // 1 or 3; 0: the source's (3 for folders)
  img::Fit fit = img::Fit::Crop;  // see img::fit
  uint8_t background = 0;         // padding value for Fit::Pad
  int threads = 0;                // decoding threads; 0: kernels::cpu::num_threads()
  bool train = true;              // the split of an IDX/CIFAR-10 directory
  bool overwrite = false;         // replace an existing output file
  int64_t chunk_images = 0;       // images per chunk; 0: about 4 MiB of pixels
  // JPEGs decoded at a reduced scale that stays >= size (img::decode_file's min_side): faster,
  // a few levels away from the exact decode. Recorded in the header ("fast_decode").
  bool fast_decode = false;
  // Called about twice a second and at the end with (images done, images in all, resumed).
  std::function<void(int64_t, int64_t, int64_t)> progress;
};

struct PrepareResult {
  int64_t count = 0;          // images in the file
  int64_t resumed = 0;        // images kept from an interrupted earlier run
  std::string source_format;  // "folder", "idx", "cifar10", "prepared"
  int64_t classes = 0;
};

// Writes `out` from `src`: a folder of PNG/JPEG images (recursive; one subfolder per class gives
// labels, as load_folder), a zip archive of them (the same layout inside it, below one optional
// common top folder; entries over 256 MiB uncompressed, or inflating past their stated size, are
// refused), an IDX file, a Fashion-MNIST/MNIST or CIFAR-10 directory, or another prepared file
// (to refit it).
PrepareResult prepare(const std::string& src, const std::string& out, const PrepareOptions& opt);

struct PreparedHeader {
  int64_t count = 0;
  int height = 0, width = 0, channels = 0;
  std::string fit, source, source_format, source_digest;
  int background = 0;
  std::vector<std::string> classes;
  bool labels = false;
  bool fast_decode = false;
  uint32_t labels_crc32 = 0;
  int64_t chunk_images = 0, chunks = 0;
  uint64_t pixel_offset = 0, label_offset = 0, checksum_offset = 0, file_bytes = 0;
  std::string json;  // the header as stored
};

bool is_prepared(const std::string& path);  // the file starts with "GANDATA1"
// The header, checked against itself and the file's size (offsets, counts, lengths).
PreparedHeader read_prepared_header(const std::string& path);
// The dataset, mapped read-only (format "prepared"); labels copied and checked against classes.
Dataset map_prepared(const std::string& path);
// Reads every chunk and the labels and checks their CRC-32s; throws naming the first bad chunk.
// `progress` as in PrepareOptions (no resumed count).
void verify_prepared(const std::string& path,
                     const std::function<void(int64_t, int64_t, int64_t)>& progress = {});

}  // namespace gan::data
