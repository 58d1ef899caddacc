// libFuzzer: prepared datasets (data::map_prepared: the preamble, the JSON header checked against
// itself and the file's size, the chunk table, the labels; data::verify_prepared: every chunk's
// CRC-32). A file that maps must be readable to its last pixel.
#include <cstdint>
#include <string>

#include "engine/error.h"
#include "fuzz/fuzz_util.h"
#include "tools/io/prepared.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gan::fuzz::write_input("input.gands", data, size);
  try {
    const gan::data::Dataset d = gan::data::map_prepared(path);
    unsigned sum = 0;
    const uint8_t* p = d.pixel_data();
    for (size_t i = 0; i < d.pixel_bytes(); i += 512) sum += p[i];
    if (d.pixel_bytes()) sum += p[d.pixel_bytes() - 1];
    for (const int32_t l : d.labels) sum += unsigned(l);
    __asm__ volatile("" : : "r"(sum) : "memory");  // keeps the reads
  } catch (const gan::Error&) {
  }
  try {
    gan::data::verify_prepared(path);
  } catch (const gan::Error&) {
  }
  return 0;
}
