// Command-line parsing shared by the programs (gan_train, gan_sample, gan_eval, train_classifier,
// toy_gan, gan_bench): --help prints and exits 0; any other parse error is one line on stderr,
// "<program>: <what CLI11 says> (see --help)", and exit status 2. Every program gets --threads N
// here: the CPU backend's threads (kernels/cpu/backend.h; default OMP_NUM_THREADS, else the cores
// available to the process).
#pragma once

#include <cstdio>
#include <optional>

#include <CLI/CLI.hpp>

#include "kernels/cpu/backend.h"

namespace gan::cli {

// The exit status when parsing ended the program, nothing when it should go on:
//   if (auto rc = gan::cli::parse(app, argc, argv, "gan_eval")) return *rc;
inline std::optional<int> parse(CLI::App& app, int argc, char** argv, const char* program) {
  app.add_option_function<int>(
         "--threads", [](const int& n) { kernels::cpu::set_num_threads(n); },
         "CPU threads (the CPU backend and oneDNN); default: OMP_NUM_THREADS, else the cores "
         "available")
      ->check(CLI::Range(1, 4096));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "%s: %s (see --help)\n", program, e.what());
    return 2;
  }
  return std::nullopt;
}

}  // namespace gan::cli
