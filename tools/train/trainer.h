// The GAN trainer behind gan_train (and the tests): data, models, losses, Adam with TTUR, n_dis,
// EMA of G, sample grids, metrics.jsonl, TensorBoard events, atomic safetensors checkpoints,
// bit-for-bit resume, and a stop with the last good checkpoint intact on a non-finite loss.
// docs/gan_train.md describes the outputs and every option. The parts: options.h (configuration),
// stepper.h (one iteration and its CUDA graph), logging.h (outputs while training),
// checkpointing.h (checkpoints and stop signals); run() puts them together.
#pragma once

#include <cstdint>
#include <string>

#include "tools/train/checkpointing.h"
#include "tools/train/options.h"
#include "tools/train/stepper.h"

namespace gan::train {

struct Result {
  int64_t steps = 0;        // generator steps completed (the global step)
  double images_per_s = 0;  // real images per second over the run
  std::string checkpoint;   // the last checkpoint written
  int stop_signal = 0;      // SIGINT or SIGTERM when a signal stopped the run (after a checkpoint)
};

// Trains; prints the resolved configuration first. SIGINT/SIGTERM stop it after the current step
// with a checkpoint (Result::stop_signal; a second signal exits at once: checkpointing.h).
// Throws gan::Error on bad input, on a failed write and on a non-finite loss (after which the
// last checkpoint written is intact).
Result run(Options o);

}  // namespace gan::train
