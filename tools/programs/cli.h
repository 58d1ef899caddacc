// Command-line parsing shared by the programs (gan_train, gan_sample, gan_eval, train_classifier,
// gan_bench): --help prints and exits 0; any other parse error is one line on stderr,
// "<program>: <what CLI11 says> (see --help)", and exit status 2.
#pragma once

#include <cstdio>
#include <optional>

#include <CLI/CLI.hpp>

namespace gan::cli {

// The exit status when parsing ended the program, nothing when it should go on:
//   if (auto rc = gan::cli::parse(app, argc, argv, "gan_eval")) return *rc;
inline std::optional<int> parse(CLI::App& app, int argc, char** argv, const char* program) {
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
