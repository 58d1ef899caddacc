// gan_train when things go wrong around it (docs/reliability.md): SIGINT/SIGTERM, a second SIGINT,
// kill -9 at random moments, and writes that fail (a file size limit, which is what a full disk
// looks like to a writer). The real binary in child processes, on the CPU.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "tests/trainer_helpers.h"
#include "tools/io/safetensors.h"

namespace fs = std::filesystem;
using namespace gan;
using namespace gan::test;

namespace {

// Small SAGAN runs on a Fashion-MNIST subset (every output is written).
std::string common() {
  return "--device cpu --model sagan --image-size 32 --ngf 8 --ndf 8 --batch-size 4 --progress 0 "
         "--data " +
         fashion_subset(256).string();
}

int run_to_end(const std::string& args, const fs::path& log) {
  return wait_exit(spawn(gan_train_bin(), split_args(args), log));
}

size_t count_lines(const fs::path& p) {
  const std::string s = read_text(p);
  return size_t(std::count(s.begin(), s.end(), '\n'));
}

// Waits until `file` has at least n lines (a run has made progress); false after 120 s.
bool wait_for_lines(const fs::path& file, size_t n) {
  for (int i = 0; i < 12000; ++i) {
    if (fs::exists(file) && count_lines(file) >= n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int64_t checkpoint_step(const fs::path& dir) {
  return st::read_file((dir / "checkpoint.safetensors").string()).int64s("train.step").at(0);
}

}  // namespace

TEST_CASE(
    "gan_train: SIGINT and SIGTERM stop after a step with a checkpoint; resuming equals "
    "the uninterrupted run bit for bit",
    "[trainer][cpu][signals]") {
  const std::string run = common() +
                          " --steps 300 --log-every 5 --checkpoint-every 100 "
                          "--sample-every 1000 --out ";
  const fs::path ref = scratch("signal_ref");
  REQUIRE(run_to_end(run + ref.string(), ref / "log") == 0);
  for (const int sig : {SIGINT, SIGTERM}) {
    const std::string name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    INFO(name);
    const fs::path dir = scratch("signal_" + name);
    const fs::path log = dir.parent_path() / ("gan_trainer_test_signal_" + name + ".log");
    const pid_t pid = spawn(gan_train_bin(), split_args(run + dir.string()), log);
    REQUIRE(wait_for_lines(dir / "metrics.jsonl", 2));  // past step 10
    REQUIRE(::kill(pid, sig) == 0);
    const int code = wait_exit(pid);
    const std::string out = read_text(log);
    INFO(out);
    CHECK(code == 128 + sig);
    const int64_t k = checkpoint_step(dir);
    CHECK(k >= 10);
    CHECK(k < 300);
    CHECK(last_line(out) ==
          fmt::format("gan_train: stopped by {} after step {} of 300; checkpoint {}; resume with: "
                      "gan_train --resume {}",
                      name, k, (dir / "checkpoint.safetensors").string(), dir.string()));
    CHECK(temp_files(dir).empty());
    REQUIRE(run_to_end(run + dir.string() + " --resume " + dir.string(), log) == 0);
    require_same_checkpoint(ref, dir);
  }
}

TEST_CASE("gan_train: a second SIGINT exits at once, the last checkpoint intact",
          "[trainer][cpu][signals]") {
  // A checkpoint every step, so that the second signal often lands in the middle of the one
  // the first signal asked for.
  for (int round = 0; round < 5; ++round) {
    INFO("round " << round);
    const fs::path dir = scratch("double_sigint");
    const fs::path log = dir.parent_path() / "gan_trainer_test_double_sigint.log";
    const pid_t pid = spawn(gan_train_bin(),
                            split_args(common() +
                                       " --steps 100000 --log-every 1 --checkpoint-every 1 "
                                       "--sample-every 100000 --out " +
                                       dir.string()),
                            log);
    REQUIRE(wait_for_lines(dir / "metrics.jsonl", size_t(3 + round)));
    REQUIRE(::kill(pid, SIGINT) == 0);
    std::this_thread::sleep_for(std::chrono::microseconds(200 * round));
    ::kill(pid, SIGINT);  // may find the process gone when the first stop was quick
    const int code = wait_exit(pid);
    INFO(read_text(log));
    CHECK(code == 130);
    CHECK(checkpoint_step(dir) >= 1);  // loads: header and every tensor's CRC-32 verified
    CHECK(temp_files(dir).empty());
  }
}

TEST_CASE(
    "gan_train: kill -9 at random moments; every time the last checkpoint loads, and "
    "resuming gives the uninterrupted run bit for bit",
    "[trainer][cpu][kill]") {
  // GAN_KILL_LOOP sets the number of kills (default 50; docs/reliability.md).
  const char* env = std::getenv("GAN_KILL_LOOP");
  const int kills = env ? std::max(1, std::atoi(env)) : 50;
  const fs::path dir = scratch("kill_loop");
  const fs::path log = dir.parent_path() / "gan_trainer_test_kill_loop.log";
  const std::string run =
      common() + " --log-every 1 --checkpoint-every 1 --sample-every 7 --out " + dir.string();
  std::mt19937 rng(20261126);
  std::uniform_int_distribution<int> delay_ms(0, 700);
  int64_t last_step = 0;
  int before_first = 0, during_write = 0;
  for (int i = 0; i < kills; ++i) {
    const bool resume = fs::exists(dir / "checkpoint.safetensors");
    const pid_t pid = spawn(
        gan_train_bin(),
        split_args(run + " --steps 100000" + (resume ? " --resume " + dir.string() : "")), log);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    REQUIRE(::kill(pid, SIGKILL) == 0);
    REQUIRE(wait_exit(pid) == 128 + SIGKILL);
    if (!temp_files(dir).empty()) ++during_write;  // killed while writing a checkpoint or sample
    if (!fs::exists(dir / "checkpoint.safetensors")) {
      ++before_first;
      continue;
    }
    INFO("kill " << i << "\n" << read_text(log));
    const int64_t step = checkpoint_step(dir);  // loads (every tensor's CRC-32 verified)
    CHECK(step >= last_step);
    last_step = step;
  }
  // Finish a few steps past the last checkpoint; a straight run to the same step must agree.
  const int64_t final_step = last_step + 3;
  REQUIRE(run_to_end(run + fmt::format(" --steps {}", final_step) +
                         (last_step > 0 ? " --resume " + dir.string() : ""),
                     log) == 0);
  const std::string resumed_log = read_text(log);
  INFO(resumed_log);
  CHECK(temp_files(dir).empty());  // the resumed run removed what the kills left
  const fs::path ref = scratch("kill_loop_ref");
  const std::string ref_run = common() +
                              " --log-every 1 --checkpoint-every 1 --sample-every 7 --out " +
                              ref.string() + fmt::format(" --steps {}", final_step);
  REQUIRE(run_to_end(ref_run, ref / "log") == 0);
  require_same_checkpoint(ref, dir);
  std::printf(
      "kill loop: %d kills, %d before the first checkpoint, %d while a temporary file existed "
      "(during a write); last checkpoint at step %lld, finished at %lld and equal to the "
      "uninterrupted run\n",
      kills, before_first, during_write, (long long)last_step, (long long)final_step);
  CHECK(last_step > 0);
}

TEST_CASE(
    "gan_train: a failed write names the file in one line; the checkpoint stays intact "
    "and no partial or temporary file is left",
    "[trainer][cpu][diskfull]") {
  // A run to step 4, then resumed under a file size limit that one kind of write exceeds first.
  const fs::path base = scratch("diskfull_base");
  const std::string run = common() +
                          " --steps 4 --log-every 1 --checkpoint-every 2 "
                          "--sample-every 1000 --out " +
                          base.string();
  REQUIRE(run_to_end(run, base.parent_path() / "gan_trainer_test_diskfull_base.log") == 0);
  const uint64_t ck_size = fs::file_size(base / "checkpoint.safetensors");
  const uint64_t metrics_size = fs::file_size(base / "metrics.jsonl");
  const std::string ck_bytes = read_text(base / "checkpoint.safetensors");
  struct Case {
    const char* name;
    std::string options;
    uint64_t limit;
    std::string expect;  // the error line ({} is the run directory)
  };
  const std::vector<Case> cases = {
      {"checkpoint", "--checkpoint-every 1 --sample-every 1000 --log-every 1000", ck_size - 1,
       "gan_train: checkpoint: {}/checkpoint.safetensors: cannot write (write: File too large); "
       "the "
       "previous file, if any, is unchanged"},
      {"sample", "--checkpoint-every 1000 --sample-every 1 --log-every 1000", 4096,
       "gan_train: image: {}/samples/step_0000005.png: cannot write (write: File too large); the "
       "previous "
       "file, if any, is unchanged"},
      {"metrics", "--checkpoint-every 1000 --sample-every 1000 --log-every 1", metrics_size + 40,
       "gan_train: {}/metrics.jsonl: cannot write (File too large); the file keeps its complete "
       "lines"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const fs::path dir = scratch(std::string("diskfull_") + c.name);
    fs::copy(base, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    const fs::path log = dir.parent_path() / (std::string("gan_trainer_test_df_") + c.name);
    const std::string args = common() + " --steps 8 " + c.options + " --out " + dir.string() +
                             " --resume " + dir.string();
    const int code = wait_exit(spawn(gan_train_bin(), split_args(args), log, c.limit));
    const std::string out = read_text(log);
    INFO(out);
    CHECK(code == 1);
    CHECK(last_line(out) == fmt::format(fmt::runtime(c.expect), dir.string()));
    CHECK(read_text(dir / "checkpoint.safetensors") == ck_bytes);  // the previous one, intact
    CHECK(temp_files(dir).empty());
    // metrics.jsonl holds whole lines only, each valid JSON.
    const std::string m = read_text(dir / "metrics.jsonl");
    CHECK((m.empty() || m.back() == '\n'));
    size_t lines = 0;
    for (size_t at = 0; at < m.size();) {
      const size_t nl = m.find('\n', at);
      CHECK_NOTHROW(nlohmann::json::parse(m.substr(at, nl - at)));
      at = nl + 1, ++lines;
    }
    CHECK(lines >= 1);
    // And the run resumes from the intact checkpoint once there is room again.
    CHECK(run_to_end(args, log) == 0);
  }
}
