// libFuzzer: the IDX reader (Fashion-MNIST/MNIST images and labels, gzip or raw) through
// data::load_idx, the code gan_train runs on --data. The input is the image file; a second
// run reads it as a labels file beside a valid one-image image file.
#include <cstdint>
#include <string>

#include "engine/error.h"
#include "fuzz/fuzz_util.h"
#include "tools/io/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string images = gan::fuzz::write_input("images-idx3-ubyte", data, size);
  try {
    const gan::data::Dataset d = gan::data::load_idx(images);
    if (d.count > 0) (void)d.get(d.count - 1);
  } catch (const gan::Error&) {
  }
  // As labels: a valid 1-image 1x1 IDX image file and the input as its labels.
  static const std::string one = [] {
    const uint8_t b[] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 7};
    return gan::fuzz::write_input("one-idx3-ubyte", b, sizeof b);
  }();
  const std::string labels = gan::fuzz::write_input("labels-idx1-ubyte", data, size);
  try {
    (void)gan::data::load_idx(one, labels);
  } catch (const gan::Error&) {
  }
  return 0;
}
