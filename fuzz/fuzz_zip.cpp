// libFuzzer: zip archives of images as gan_data prepare reads them (libzip's parser, the entry
// listing and class folders, the size checks against zip bombs and entries that lie about their
// size, then each image's decode and fit), written to a prepared file that is then mapped.
#include <cstdint>
#include <filesystem>
#include <string>

#include "engine/error.h"
#include "fuzz/fuzz_util.h"
#include "tools/io/prepared.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string zip = gan::fuzz::write_input("input.zip", data, size);
  const std::string out = gan::fuzz::scratch_dir() + "/out.gands";
  std::error_code ec;
  std::filesystem::remove(out, ec);
  std::filesystem::remove(out + ".partial", ec);
  gan::data::PrepareOptions o;
  o.size = 8;
  o.threads = 1;
  o.fast_decode = size % 2;
  try {
    gan::data::prepare(zip, out, o);
    (void)gan::data::map_prepared(out);
  } catch (const gan::Error&) {
  }
  return 0;
}
