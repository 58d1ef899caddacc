// libFuzzer: the CIFAR-10 binary reader (data::load_cifar10 on a folder holding the input as
// test_batch.bin). A valid batch is 30,730,000 bytes, far beyond what a fuzzer explores: this
// target checks the size and label validation and that no input crashes the reader.
#include <cstdint>
#include <string>

#include "engine/error.h"
#include "fuzz/fuzz_util.h"
#include "tools/io/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = gan::fuzz::scratch_subdir("cifar");
  gan::fuzz::write_input("cifar/test_batch.bin", data, size);
  try {
    (void)gan::data::load_cifar10(dir, /*train=*/false);
  } catch (const gan::Error&) {
  }
  return 0;
}
