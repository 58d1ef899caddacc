// gan_train's checkpoints and its stops: the training state (models, optimisers, random state,
// data position, step) to and from a safetensors file in PyTorch's names and layouts, the output
// directory's checks, and SIGINT/SIGTERM turned into a checkpoint and a clean stop
// (docs/reliability.md).
#pragma once

#include <csignal>

#include <cstdint>
#include <string>

#include "engine/adam.h"
#include "engine/random.h"
#include "models/gan.h"
#include "tools/io/data.h"
#include "tools/io/safetensors.h"
#include "tools/train/options.h"

namespace gan::train {

constexpr const char* kCheckpointName = "checkpoint.safetensors";
constexpr const char* kCheckpointFormat = "gan-engine checkpoint v1";

// SIGINT and SIGTERM while training: the first one asks the loop to stop after the current step
// (it then writes a checkpoint and returns); a second one ends the process at once with
// 128 + signal, removing the temporary file of a checkpoint being written (the previous
// checkpoint stays intact: writes are atomic). SIGXFSZ is ignored, so that a file size limit
// makes writes fail with EFBIG (reported) instead of killing the process. Installed for the
// object's lifetime.
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The first signal received since construction (0: none).
  int received() const;

 private:
  struct sigaction old_int_ {
  }, old_term_{}, old_xfsz_{};
};

// Creates o.out if needed and checks that it can hold files; refuses a directory that holds
// another run unless resuming; removes temporary files a killed run left behind. One-line errors.
void prepare_output_dir(const Options& o);

// <run_dir>/checkpoint.safetensors, checked to be a gan_train checkpoint; path_out: its path.
st::File open_checkpoint(const std::string& run_dir, std::string* path_out);

// What a checkpoint holds, owned by the trainer.
struct TrainState {
  models::Gan& net;
  models::Gan* ema;  // null without --ema
  Adam& opt_g;
  Adam& opt_d;
  Generator& gen;
  data::Loader& loader;
  int64_t step = 0;    // generator steps done
  int64_t images = 0;  // real images consumed
};

// Writes s atomically to path: G., D., G_ema. modules, both optimisers' moments and step counts,
// the generator's state, the loader's position, the step and image counts; metadata: the format,
// o's configuration (to_json), the step, and `extra`.
void write_checkpoint(const std::string& path, const TrainState& s, const Options& o,
                      const st::Metadata& extra);
// Loads everything write_checkpoint wrote into s (models built from the same options).
void restore_checkpoint(const st::File& f, TrainState& s, bool ema);

}  // namespace gan::train
