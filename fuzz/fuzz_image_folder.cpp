// libFuzzer: the image-folder loader (data::load_folder: stb's PNG/JPEG decoders, channel
// conversion, fit to 32 x 32 by crop, pad and resize) on a folder holding the input as one image
// (named .png; stb decides the format from the bytes), and img::decode_memory.
#include <cstdint>
#include <string>

#include "engine/error.h"
#include "fuzz/fuzz_util.h"
#include "tools/io/data.h"
#include "tools/io/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = gan::fuzz::scratch_subdir("images");
  gan::fuzz::write_input("images/a.png", data, size);
  const gan::img::Fit fits[] = {gan::img::Fit::Crop, gan::img::Fit::Pad, gan::img::Fit::Resize};
  gan::data::FolderOptions o;
  o.size = 32;
  o.channels = size % 2 ? 1 : 3;
  o.fit = fits[size % 3];
  try {
    (void)gan::data::load_folder(dir, o);
  } catch (const gan::Error&) {
  }
  try {
    (void)gan::img::decode_memory(data, size, 0, "fuzz");
  } catch (const gan::Error&) {
  }
  return 0;
}
