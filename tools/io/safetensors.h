// Checkpoints in the safetensors format (https://github.com/huggingface/safetensors):
//
//   [8 bytes: N, uint64 little-endian][N bytes: JSON header][byte buffer]
//   header = {"__metadata__": {"key": "value", ...},                       (optional, strings only)
//             "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//
// Offsets are relative to the start of the byte buffer; the tensors tile the buffer exactly (no
// gaps, no overlap), little-endian, row-major. The header is padded with spaces to a multiple of 8
// bytes (as the reference implementation writes it). Tensors are laid out in the order given.
//
// Integrity: the writer stores a CRC-32 (zlib's) of every tensor's bytes in the metadata, key
// "gan.crc32", value a JSON object {"<tensor>": "<8 hex digits>", ...} (a string, as safetensors
// requires, so PyTorch's safetensors loads the file as usual). parse() verifies every tensor
// against it: "checkpoint: <path>: tensor 'x' is damaged: its bytes fail the CRC-32 check
// (stored ..., computed ...)". Files without the key (written by other tools) load unverified.
//
// write_file is atomic: the bytes go to a temporary file in the same directory, which is fsynced
// and then rename(2)d over the target, so an existing checkpoint is only ever replaced by a
// complete one. Errors are gan::Error with one line "checkpoint: <path>: <problem>".
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tensor.h"

namespace gan::st {

// One tensor: raw little-endian bytes, numel(shape) * dtype_size(dtype) of them.
struct Entry {
  std::string name;
  std::string dtype;           // "F32", "F64", "I64", "I32", "U8", ... (see dtype_size)
  std::vector<int64_t> shape;  // [] is a scalar (one element)
  std::vector<uint8_t> bytes;

  int64_t numel() const;
};

using Metadata = std::map<std::string, std::string>;

// Bytes per element of a safetensors dtype: BOOL U8 I8 F8_E4M3 F8_E5M2 (1), I16 U16 F16 BF16 (2),
// I32 U32 F32 (4), I64 U64 F64 (8); 0 for anything else (unknown).
size_t dtype_size(std::string_view dtype);

// A tensor (F32 -> "F32", F64 -> "F64"), copied to the host (synchronises when on the GPU).
Entry from_tensor(const std::string& name, const Tensor& t);
// int64 values ("I64") / float values ("F32"); e.g. a step counter or an RNG state. The default
// shape {-1} means {values.size()}; {} is a scalar (one value).
Entry from_int64(const std::string& name, const std::vector<int64_t>& values,
                 std::vector<int64_t> shape = {-1});
Entry from_float(const std::string& name, const std::vector<float>& values,
                 std::vector<int64_t> shape = {-1});

// Writes atomically (see above). Entry names must be unique, non-empty and not "__metadata__".
void write_file(const std::string& path, const std::vector<Entry>& entries,
                const Metadata& metadata = {});
// The file's bytes (what write_file writes), for tests and in-memory use.
std::vector<uint8_t> serialize(const std::vector<Entry>& entries, const Metadata& metadata = {});

// A read checkpoint: entries in buffer order, with lookups whose errors name the file.
struct File {
  std::string path;
  std::vector<Entry> entries;
  Metadata metadata;         // without the checksum key
  bool checksummed = false;  // every tensor was verified against its stored CRC-32

  const Entry* find(std::string_view name) const;  // nullptr when absent
  const Entry& get(std::string_view name) const;   // "checkpoint: <path>: no tensor 'x'"
  bool has(std::string_view name) const { return find(name) != nullptr; }
  // The metadata value, or "checkpoint: <path>: no metadata key 'k'".
  const std::string& meta(const std::string& key) const;

  // Entry `name` as a tensor on `device`: F32 -> F32; F64 -> F64 (CPU only). With a non-empty
  // `expected` shape, a different shape is an error: "checkpoint: <path>: tensor 'x' has shape
  // (2, 3), expected (3, 2)"; a different dtype: "... tensor 'x' has dtype I64, expected F32".
  Tensor tensor(std::string_view name, Device device = Device::CPU,
                const std::vector<int64_t>& expected = {}) const;
  // Copies entry `name` into dst (same shape, F32 or F64 as dst, any device): loading parameters
  // and optimizer state in place keeps their buffers (and the pointers kernels hold).
  void load_into(std::string_view name, const Tensor& dst) const;
  std::vector<int64_t> int64s(std::string_view name) const;  // an I64 entry's values
  std::vector<float> floats(std::string_view name) const;    // an F32 entry's values
};

// Reads and validates: a file shorter than 8 bytes, a header length beyond the file, a header that
// is not a JSON object, metadata that is not string -> string, an entry without dtype/shape/
// data_offsets, an unknown dtype, negative dimensions, offsets out of range, overlapping or not
// tiling the buffer exactly, or a byte size that does not match the shape: each a one-line error.
File read_file(const std::string& path);
// The same validation on bytes in memory; `path` is only used in error messages.
File parse(const std::vector<uint8_t>& bytes, const std::string& path = "<memory>");

}  // namespace gan::st
