// Helpers of the tests that run gan_train: scratch directories, a small Fashion-MNIST file, and
// child processes (started with an optional file size limit, signalled, waited for).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace gan::test {

#ifdef GAN_TRAIN_BIN
// The gan_train binary the tests start: $GAN_TRAIN_BIN when set (binaries carried to another
// machine, as tools/scripts/gpu_session.sh does), else the one built beside the tests.
inline std::string gan_train_bin() {
  const char* env = std::getenv("GAN_TRAIN_BIN");
  return env != nullptr && *env != '\0' ? env : GAN_TRAIN_BIN;
}
#endif

// An empty directory <tmp>/gan_trainer_test_<name> (removed first if it exists).
std::filesystem::path scratch(const std::string& name);

// The first n Fashion-MNIST training images as a gzip IDX file (made once, then reused).
std::filesystem::path fashion_subset(int64_t n);

void put_be32(std::string& s, uint32_t v);

// Splits a command line on spaces (test paths have none).
std::vector<std::string> split_args(const std::string& args);

// Starts `program args...` with stdout and stderr to `log`; with fsize_limit > 0 the child runs
// under RLIMIT_FSIZE = fsize_limit bytes (what a full disk looks like to a writer).
pid_t spawn(const std::string& program, const std::vector<std::string>& args,
            const std::filesystem::path& log, uint64_t fsize_limit = 0);
// Waits for the child: its exit status, or 128 + the signal that ended it.
int wait_exit(pid_t pid);

std::string read_text(const std::filesystem::path& p);
std::string last_line(const std::string& s);
// Requires every tensor of <a>/checkpoint.safetensors and <b>/checkpoint.safetensors equal, bit
// for bit, in the same order.
void require_same_checkpoint(const std::filesystem::path& a, const std::filesystem::path& b);

// Files in dir (recursively) whose name contains ".tmp.": temporaries of atomic writes.
std::vector<std::filesystem::path> temp_files(const std::filesystem::path& dir);

}  // namespace gan::test
