// gan_train's outputs while training: the loop's scalars copied off the device without waiting
// (AsyncScalars), metrics.jsonl written in whole lines (LineLog), TensorBoard scalars and the
// plain or live progress lines, all behind RunLog.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/device.h"
#include "engine/tensor.h"
#include "tools/io/tfevents.h"

namespace gan::train {

class AsyncScalars;  // scalars copied to pinned memory, read when they have landed
class LineLog;       // metrics.jsonl: whole lines or nothing

// The training loop's logs in one place: metrics.jsonl (appended to when resuming), TensorBoard
// events under tensorboard/, and stdout (a plain line per logged step, or a live bar).
class RunLog {
 public:
  // bar: a live progress bar instead of plain lines; eval_on: lines carry eval_s.
  RunLog(const std::string& out_dir, bool resuming, bool bar, bool eval_on, Device dev,
         int64_t total_steps);
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  // Queues the scalars of step `step` (their device copies land later; see drain()).
  void push(int64_t step, double seconds, double eval_seconds, int64_t images,
            std::vector<std::string> names, const std::vector<std::pair<Tensor, int64_t>>& scalars);
  // Writes the records whose values have arrived (all of them when wait): a metrics line,
  // TensorBoard scalars and (without the bar) a plain line each. Throws one line on a non-finite
  // loss, naming the step and whether a checkpoint (last_checkpoint) is intact in out.
  void drain(bool wait, int64_t epoch, const std::string& last_checkpoint, const std::string& out);
  // The live bar (at most every 0.1 s, and at the last step).
  void progress(int64_t step, int64_t start_step, int64_t epoch, int64_t images, double now,
                double elapsed);
  // An evaluation's results: a metrics line {step, time_s, eval_s, eval}, TensorBoard eval/*
  // scalars and a line on stdout.
  void evaluation(int64_t step, double time_s, double eval_s, const nlohmann::json& r, bool best);
  tb::Writer& tensorboard() { return tb_; }
  bool bar() const { return bar_; }
  // Flushes TensorBoard (errors reported here, not lost in a destructor); ends the bar's line.
  // Call drain(true, ...) first.
  void finish();
  // Where a non-finite loss stops the run, the message also names the first step that produced
  // one (the trainer's device-side guard).
  void set_first_nonfinite(std::function<int64_t()> f) { first_nonfinite_ = std::move(f); }

 private:
  tb::Writer tb_;
  std::unique_ptr<LineLog> metrics_;
  std::unique_ptr<AsyncScalars> async_;
  bool bar_, eval_on_;
  Device dev_;
  std::function<int64_t()> first_nonfinite_;
  int64_t total_steps_;
  double last_bar_ = -1;
  std::vector<float> latest_;  // last values shown
};

// "mm:ss" or "h:mm:ss" ("--:--" when unknown).
std::string hms(double s);
// The resident set size of this process in MiB (/proc/self/statm), 0 where unavailable.
double resident_mb();

}  // namespace gan::train
