// The CPU backend's record of its choices (kernels/cpu/ only; read through plan_log() in
// backend.h): one line per plan made, printed to stderr as well with GAN_LOG_KERNELS=1.
#pragma once

#include <string>

namespace gan::kernels::cpu {

void log_plan(const std::string& line);

}  // namespace gan::kernels::cpu
