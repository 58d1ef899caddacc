// libFuzzer: the safetensors reader (header JSON, offsets, tiling, the per-tensor CRC-32) through
// st::read_file, then the typed accessors on every entry it accepts.
#include <cstdint>
#include <string>

#include "engine/error.h"
#include "fuzz/fuzz_util.h"
#include "tools/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gan::fuzz::write_input("x.safetensors", data, size);
  try {
    const gan::st::File f = gan::st::read_file(path);
    for (const gan::st::Entry& e : f.entries) {
      try {
        if (e.dtype == "I64") (void)f.int64s(e.name);
        if (e.dtype == "F32") (void)f.floats(e.name);
        if (e.dtype == "F32" || e.dtype == "F64") (void)f.tensor(e.name);
      } catch (const gan::Error&) {
      }
    }
    for (const auto& [k, v] : f.metadata) (void)f.meta(k);
  } catch (const gan::Error&) {
  }
  return 0;
}
