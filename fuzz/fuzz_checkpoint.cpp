// libFuzzer: loading a checkpoint into a model (ckpt::load_module: every name present, every shape
// and dtype as the model expects, PyTorch layouts converted) for a DCGAN and a SAGAN generator
// and discriminator of 32 px and width 8 on the CPU: what gan_train --resume and gan_sample do
// after st::read_file has accepted the file.
#include <cstdint>
#include <memory>
#include <string>

#include "engine/error.h"
#include "engine/random.h"
#include "fuzz/fuzz_util.h"
#include "models/gan.h"
#include "tools/io/checkpoint.h"
#include "tools/io/safetensors.h"

namespace {

gan::models::Gan make(const char* model) {
  gan::Generator gen(0, gan::Device::CPU);
  gan::models::ModelConfig c;
  c.arch = gan::models::parse_arch(model), c.image_size = 32, c.channels = 1, c.ngf = c.ndf = 8;
  return gan::models::build(c, gen);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static gan::models::Gan nets[] = {make("dcgan"), make("sagan")};
  const std::string path = gan::fuzz::write_input("checkpoint.safetensors", data, size);
  try {
    const gan::st::File f = gan::st::read_file(path);
    for (auto& n : nets) {
      for (auto [prefix, m] : {std::pair{"G.", n.g.get()}, std::pair{"D.", n.d.get()}}) {
        try {
          gan::ckpt::load_module(f, prefix, *m);
        } catch (const gan::Error&) {
        }
      }
    }
  } catch (const gan::Error&) {
  }
  return 0;
}
