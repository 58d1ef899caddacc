// Helpers of the fuzz targets: a private scratch directory (tmpfs when there is one), writing the
// input to a file there, and the rule every target follows: gan::Error is the expected way to
// refuse bad input; anything else (a crash, a sanitizer report, another exception) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace gan::fuzz {

// A directory of this process, created on first use.
const std::string& scratch_dir();
// scratch_dir()/name, created on first use.
std::string scratch_subdir(const std::string& name);
// Writes data to scratch_dir()/name; returns the path.
std::string write_input(const std::string& name, const uint8_t* data, size_t size);

}  // namespace gan::fuzz
