#include "tools/train/logging.h"

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

#include <cuda_runtime_api.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "kernels/check.h"

namespace gan::train {

using json = nlohmann::json;

// Scalars (one-element device tensors) copied to pinned host memory when a step is logged and
// read when the copy has landed: the training loop never waits for them. The pinned buffers and
// their events form a ring made once (allocating or freeing pinned memory synchronises the
// device); when every slot is in flight the oldest is waited for.
class AsyncScalars {
 public:
  struct Record {
    int64_t step = 0;
    double seconds = 0;       // wall time since the start when logged
    double eval_seconds = 0;  // of which spent evaluating (--eval-every)
    int64_t images = 0;       // real images consumed by then
    std::vector<std::string> names;
    std::vector<float> values;
  };

  static constexpr int kSlots = 16;

  AsyncScalars() = default;
  AsyncScalars(const AsyncScalars&) = delete;
  AsyncScalars& operator=(const AsyncScalars&) = delete;
  ~AsyncScalars() {
    for (Slot& s : slots_)
      if (s.event) (void)cudaEventDestroy(s.event);
  }

  // scalars: (tensor, element index) pairs.
  void push(int64_t step, double seconds, double eval_seconds, int64_t images,
            std::vector<std::string> names,
            const std::vector<std::pair<Tensor, int64_t>>& scalars) {
    Record rec;
    rec.step = step, rec.seconds = seconds, rec.eval_seconds = eval_seconds, rec.images = images;
    rec.names = std::move(names);
    if (scalars.empty() || !scalars[0].first.is_cuda()) {
      for (const auto& [t, k] : scalars) rec.values.push_back(t.data<float>()[k]);
      done_.push_back(std::move(rec));
      return;
    }
    const int64_t n = int64_t(scalars.size());
    if (slots_.empty() || slots_[0].host.numel() < n) make_ring(n);
    if (in_flight_ == kSlots) finish_oldest();  // every slot busy: wait for the oldest
    Slot& s = slots_[size_t((head_ + in_flight_) % kSlots)];
    for (int64_t i = 0; i < n; ++i) {
      const auto& [t, k] = scalars[size_t(i)];
      GAN_CUDA_CHECK(cudaMemcpyAsync(s.host.data<float>() + i, t.data<float>() + k, sizeof(float),
                                     cudaMemcpyDeviceToHost, cuda::stream()));
    }
    GAN_CUDA_CHECK(cudaEventRecord(s.event, cuda::stream()));
    s.rec = std::move(rec);
    ++in_flight_;
  }

  // Records whose values have arrived, oldest first (all of them when wait).
  std::vector<Record> ready(bool wait) {
    while (in_flight_ > 0) {
      Slot& s = slots_[size_t(head_)];
      if (!wait) {
        const cudaError_t e = cudaEventQuery(s.event);
        if (e == cudaErrorNotReady) break;
        GAN_CUDA_CHECK(e);
      }
      finish_oldest();
    }
    std::vector<Record> out = std::move(done_);
    done_.clear();
    return out;
  }

 private:
  struct Slot {
    Record rec;
    Tensor host;
    cudaEvent_t event = nullptr;
  };

  void make_ring(int64_t n) {
    while (in_flight_ > 0) finish_oldest();  // nothing in flight while the ring is replaced
    for (Slot& s : slots_)
      if (s.event) GAN_CUDA_CHECK(cudaEventDestroy(s.event));
    slots_.assign(kSlots, Slot{});
    for (Slot& s : slots_) {
      s.host = Tensor::empty_pinned(Shape{std::max<int64_t>(n, 64)});
      GAN_CUDA_CHECK(cudaEventCreateWithFlags(&s.event, cudaEventDisableTiming));
    }
    head_ = 0;
  }

  void finish_oldest() {
    Slot& s = slots_[size_t(head_)];
    GAN_CUDA_CHECK(cudaEventSynchronize(s.event));
    const float* h = s.host.data<float>();
    s.rec.values.assign(h, h + s.rec.names.size());
    done_.push_back(std::move(s.rec));
    head_ = (head_ + 1) % kSlots;
    --in_flight_;
  }

  std::vector<Slot> slots_;
  int head_ = 0, in_flight_ = 0;
  std::vector<Record> done_;  // finished, not yet handed out
};

// metrics.jsonl: whole lines appended with write(2); a failed write (disk full, file size limit)
// truncates the file back to its last complete line and throws one line naming it.
class LineLog {
 public:
  LineLog(std::string path, bool append) : path_(std::move(path)) {
    fd_ =
        ::open(path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
    if (fd_ < 0)
      throw Error(fmt::format("gan_train: {}: cannot open ({})", path_, std::strerror(errno)));
    const off_t end = ::lseek(fd_, 0, SEEK_END);
    good_ = end < 0 ? 0 : end;
  }
  ~LineLog() {
    if (fd_ >= 0) ::close(fd_);
  }
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;

  void write_line(const std::string& line) {
    const std::string s = line + "\n";
    size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::write(fd_, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        (void)!::ftruncate(fd_, good_);  // no partial line stays behind
        throw Error(
            fmt::format("gan_train: {}: cannot write ({}); the file keeps its complete "
                        "lines",
                        path_, std::strerror(err)));
      }
      done += size_t(n);
    }
    good_ += off_t(s.size());
  }

 private:
  std::string path_;
  int fd_ = -1;
  off_t good_ = 0;
};

std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const int64_t t = int64_t(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02d}:{:02d}", t / 3600, (t / 60) % 60, t % 60)
                   : fmt::format("{:02d}:{:02d}", t / 60, t % 60);
}

double resident_mb() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long size = 0, resident = 0;
  const int got = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  return got == 2 ? double(resident) * double(sysconf(_SC_PAGESIZE)) / (1 << 20) : 0;
}

RunLog::RunLog(const std::string& out_dir, bool resuming, bool bar, bool eval_on, Device dev,
               int64_t total_steps)
    : tb_(out_dir + "/tensorboard"),
      metrics_(std::make_unique<LineLog>(out_dir + "/metrics.jsonl", resuming)),
      async_(std::make_unique<AsyncScalars>()),
      bar_(bar),
      eval_on_(eval_on),
      dev_(dev),
      total_steps_(total_steps) {}

RunLog::~RunLog() = default;

void RunLog::push(int64_t step, double seconds, double eval_seconds, int64_t images,
                  std::vector<std::string> names,
                  const std::vector<std::pair<Tensor, int64_t>>& scalars) {
  async_->push(step, seconds, eval_seconds, images, std::move(names), scalars);
}

void RunLog::drain(bool wait, int64_t epoch, const std::string& last_checkpoint,
                   const std::string& out) {
  for (const auto& r : async_->ready(wait)) {
    json j;
    j["step"] = r.step;
    for (size_t i = 0; i < r.names.size(); ++i) j[r.names[i]] = r.values[i];
    const double ips = r.seconds > 0 ? double(r.images) / r.seconds : 0;
    j["images_per_s"] = ips;
    j["time_s"] = r.seconds;
    if (eval_on_) j["eval_s"] = r.eval_seconds;  // time_s - eval_s: training time
    // Memory, for long runs (docs/reliability.md): the process's resident set, and on CUDA what
    // the stream-ordered pool holds from the driver. Neither synchronises.
    j["rss_mb"] = resident_mb();
    if (dev_ == Device::CUDA) j["pool_mb"] = double(cuda::pool_reserved_bytes()) / (1 << 20);
    metrics_->write_line(j.dump());
    std::map<std::string, double> sc;
    for (size_t i = 0; i < r.names.size(); ++i) sc[r.names[i]] = r.values[i];
    sc["images_per_s"] = ips;
    tb_.add_scalars(sc, r.step);
    latest_ = r.values;
    if (!std::isfinite(r.values[0]) || !std::isfinite(r.values[1]))
      throw Error(fmt::format(
          "gan_train: non-finite loss at step {} (loss_d {}, loss_g {}{}): "
          "stopped; the last good checkpoint{} is intact in {}",
          r.step, r.values[0], r.values[1],
          first_nonfinite_ ? fmt::format("; the first non-finite step was {}", first_nonfinite_())
                           : "",
          last_checkpoint.empty() ? " (none written yet)" : "", out));
    if (!bar_)
      std::printf(
          "step %7lld/%lld  epoch %lld  %8.1f img/s  loss_d %.4f  loss_g %.4f  D(x) "
          "%.3f  D(G(z)) %.3f\n",
          (long long)r.step, (long long)total_steps_, (long long)(epoch + 1), ips, r.values[0],
          r.values[1], r.values[2], r.values[3]);
  }
  std::fflush(stdout);
}

void RunLog::progress(int64_t step, int64_t start_step, int64_t epoch, int64_t images, double now,
                      double elapsed) {
  if (!bar_ || (now - last_bar_ < 0.1 && step != total_steps_)) return;
  last_bar_ = now;
  const double its = elapsed > 0 ? double(step - start_step) / elapsed : 0;
  const double eta = its > 0 ? double(total_steps_ - step) / its : -1;
  std::printf(
      "\r[%lld/%lld] epoch %lld | %.2f it/s %.0f img/s | ETA %s | loss_d %s "
      "loss_g %s   ",
      (long long)step, (long long)total_steps_, (long long)(epoch + 1), its,
      elapsed > 0 ? double(images) / elapsed : 0.0, hms(eta).c_str(),
      latest_.empty() ? "-" : fmt::format("{:.4f}", latest_[0]).c_str(),
      latest_.size() < 2 ? "-" : fmt::format("{:.4f}", latest_[1]).c_str());
  std::fflush(stdout);
}

void RunLog::evaluation(int64_t step, double time_s, double eval_s, const json& r, bool best) {
  // time_s as the other lines (since the loop started, evaluations included); eval_s: the part
  // spent evaluating, for comparisons at equal training time.
  metrics_->write_line(
      json{{"step", step}, {"time_s", time_s}, {"eval_s", eval_s}, {"eval", r}}.dump());
  std::map<std::string, double> sc;
  for (const char* k : {"fd", "kid_mean", "precision", "recall", "density", "coverage", "is_mean"})
    if (r.contains(k)) sc[std::string("eval/") + k] = r[k].get<double>();
  std::string cond;  // a conditional model's per-class metrics
  if (r.contains("conditional")) {
    const json& c = r["conditional"];
    if (c.contains("class_accuracy")) {
      sc["eval/class_accuracy"] = c["class_accuracy"].get<double>();
      cond += fmt::format("  class accuracy {:.3f}", c["class_accuracy"].get<double>());
    }
    if (c["intra_fd_mean"].is_number()) {
      sc["eval/intra_fd_mean"] = c["intra_fd_mean"].get<double>();
      cond += fmt::format("  intra-class FD {:.3f}", c["intra_fd_mean"].get<double>());
    }
  }
  tb_.add_scalars(sc, step);
  std::printf(
      "%seval step %lld: FD %.3f  KID %.4f  precision %.3f  recall %.3f  density %.3f  "
      "coverage %.3f  IS %.3f%s%s\n",
      bar_ ? "\n" : "", (long long)step, r["fd"].get<double>(), r["kid_mean"].get<double>(),
      r["precision"].get<double>(), r["recall"].get<double>(), r["density"].get<double>(),
      r["coverage"].get<double>(), r["is_mean"].get<double>(), cond.c_str(),
      best ? "  (best so far)" : "");
}

void RunLog::finish() {
  tb_.flush();
  if (bar_) std::printf("\n");
}

}  // namespace gan::train
