#include "tools/train/trainer.h"

#include <fcntl.h>
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <vector>

#include <cuda_profiler_api.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/adam.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/tensor_ops.h"
#include "kernels/common.h"
#include "models/gan.h"
#include "tools/eval/evaluate.h"
#include "tools/io/checkpoint.h"
#include "tools/io/data.h"
#include "tools/io/fileio.h"
#include "tools/io/image.h"
#include "tools/io/safetensors.h"
#include "tools/io/tfevents.h"

namespace gan::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kCheckpointName = "checkpoint.safetensors";
constexpr const char* kFormat = "gan-engine checkpoint v1";
constexpr int kFixedSamples = 64;

// Options that define the model or the data: a resumed run must use the checkpoint's.
const char* const kModelKeys[] = {"model",     "preset",    "image_size", "channels",
                                  "ngf",       "ndf",       "z_dim",      "official_attention",
                                  "data",      "fit",       "hflip",      "batch_size",
                                  "loss",      "n_dis",     "ema",        "seed",
                                  "lr_g",      "lr_d",      "beta1",      "beta2",
                                  "wgan_clip", "gp_lambda", "r1",         "r1_every"};

json to_json(const Options& o) {
  return json{{"model", o.model},
              {"preset", o.preset},
              {"image_size", o.image_size},
              {"channels", o.channels},
              {"ngf", o.ngf},
              {"ndf", o.ndf},
              {"z_dim", o.z_dim},
              {"official_attention", o.official_attention},
              {"data", o.data},
              {"fit", o.fit},
              {"hflip", o.hflip},
              {"batch_size", o.batch_size},
              {"epochs", o.epochs},
              {"steps", o.steps},
              {"lr_g", o.lr_g},
              {"lr_d", o.lr_d},
              {"beta1", o.beta1},
              {"beta2", o.beta2},
              {"loss", o.loss},
              {"n_dis", o.n_dis},
              {"ema", o.ema},
              {"wgan_clip", o.wgan_clip},
              {"gp_lambda", o.gp_lambda},
              {"r1", o.r1},
              {"r1_every", o.r1_every},
              {"seed", o.seed},
              {"out", o.out},
              {"sample_every", o.sample_every},
              {"checkpoint_every", o.checkpoint_every},
              {"log_every", o.log_every},
              {"eval_every", o.eval_every},
              {"eval_samples", o.eval_samples},
              {"eval_real", o.eval_real},
              {"device", o.device},
              {"tf32", o.tf32},
              {"cuda_graph", o.cuda_graph}};
}

void from_json_model(const json& j, Options& o) {
  o.model = j.at("model").get<std::string>();
  o.preset = j.at("preset").get<std::string>();
  o.image_size = j.at("image_size").get<int>();
  o.channels = j.at("channels").get<int>();
  o.ngf = j.at("ngf").get<int64_t>();
  o.ndf = j.at("ndf").get<int64_t>();
  o.z_dim = j.at("z_dim").get<int64_t>();
  o.official_attention = j.at("official_attention").get<bool>();
  o.data = j.at("data").get<std::string>();
  o.fit = j.at("fit").get<std::string>();
  o.hflip = j.at("hflip").get<bool>();
  o.batch_size = j.at("batch_size").get<int>();
  o.loss = j.at("loss").get<std::string>();
  o.n_dis = j.at("n_dis").get<int>();
  o.ema = j.at("ema").get<double>();
  o.seed = j.at("seed").get<uint64_t>();
  o.lr_g = j.at("lr_g").get<double>();
  o.lr_d = j.at("lr_d").get<double>();
  o.beta1 = j.at("beta1").get<double>();
  o.beta2 = j.at("beta2").get<double>();
  o.wgan_clip = j.at("wgan_clip").get<double>();
  // Penalties (absent from checkpoints written before they existed: off).
  o.gp_lambda = j.value("gp_lambda", 10.0);
  o.r1 = j.value("r1", 0.0);
  o.r1_every = j.value("r1_every", 1);
}

// One line of the resolved configuration for the start of a run.
std::string describe(const Options& o, Device dev) {
  return fmt::format(
      "gan_train: model={} preset={} image_size={} channels={} z={} ngf={} ndf={} "
      "attention={} | data={} fit={} hflip={} | batch_size={} {} n_dis={} loss={} lr_g={} "
      "lr_d={} betas=({}, {}) ema={}{} | seed={} device={} tf32={} out={}",
      o.model, o.preset, o.image_size, o.channels, o.z_dim, o.ngf, o.ndf,
      o.official_attention ? "official" : "default", o.data, o.fit, o.hflip, o.batch_size,
      o.steps > 0 ? fmt::format("steps={}", o.steps) : fmt::format("epochs={}", o.epochs), o.n_dis,
      o.loss, o.lr_g, o.lr_d, o.beta1, o.beta2, o.ema,
      (o.loss == "wgan-gp" ? fmt::format(" gp_lambda={}", o.gp_lambda) : std::string()) +
          (o.r1 > 0 ? fmt::format(" r1={} every {}", o.r1, o.r1_every) : std::string()),
      o.seed, device_name(dev), o.tf32, o.out);
}

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

// SIGINT and SIGTERM while training: the first one asks the loop to stop after the current step
// (it then writes a checkpoint and returns); a second one ends the process at once with
// 128 + signal, removing the temporary file of a checkpoint being written (the previous
// checkpoint stays intact: writes are atomic). SIGXFSZ is ignored, so that a file size limit
// makes writes fail with EFBIG (reported) instead of killing the process.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {
    io::remove_pending_temp();
    ::_exit(128 + sig);
  }
  g_stop_signal = sig;
}

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
    struct sigaction ign {};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGXFSZ, &ign, &old_xfsz_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGXFSZ, &old_xfsz_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int received() const { return g_stop_signal; }

 private:
  struct sigaction old_int_ {
  }, old_term_{}, old_xfsz_{};
};

std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const int64_t t = int64_t(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02d}:{:02d}", t / 3600, (t / 60) % 60, t % 60)
                   : fmt::format("{:02d}:{:02d}", t / 60, t % 60);
}

// Throws a one-line error when `dir` cannot hold files (created if missing).
void check_writable(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("gan_train: cannot create --out {}: {}", dir, ec.message()));
  const fs::path probe = fs::path(dir) / ".gan_train_write_test";
  FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f)
    throw Error(fmt::format("gan_train: cannot write to --out {}: {}", dir, std::strerror(errno)));
  std::fclose(f);
  fs::remove(probe, ec);
}

uint64_t u64(int64_t v) { return uint64_t(v); }

// The resident set size of this process in MiB (/proc/self/statm), 0 where unavailable.
double resident_mb() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  long size = 0, resident = 0;
  const int got = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  return got == 2 ? double(resident) * double(sysconf(_SC_PAGESIZE)) / (1 << 20) : 0;
}

// Calls f(entry name, PyTorch layout, state tensor) for both Adam moments of every parameter of
// module m, named prefix + "exp_avg." / "exp_avg_sq." + the parameter's state_dict name.
template <class F>
void for_each_adam_state(const std::string& prefix, Adam& opt, nn::Module& m, F&& f) {
  const auto named = m.named_parameters();
  std::map<std::string, nn::TorchLayout> lay;
  for (auto& [n, l] : m.named_layouts()) lay[n] = l;
  for (size_t i = 0; i < named.size(); ++i) {
    const auto it = lay.find(named[i].first);
    const nn::TorchLayout l = it == lay.end() ? nn::TorchLayout{} : it->second;
    f(prefix + "exp_avg." + named[i].first, l, opt.exp_avg()[i]);
    f(prefix + "exp_avg_sq." + named[i].first, l, opt.exp_avg_sq()[i]);
  }
}

}  // namespace

Options resolve(Options o) {
  auto fail = [](const std::string& m) { throw Error("gan_train: " + m); };
  if (o.model != "sagan" && o.model != "dcgan")
    fail("--model must be sagan or dcgan, got " + o.model);
  const bool sagan = o.model == "sagan";
  if (o.loss.empty()) o.loss = sagan ? "hinge" : "bce";
  if (o.loss != "bce" && o.loss != "hinge" && o.loss != "wgan" && o.loss != "wgan-gp")
    fail("--loss must be bce, hinge, wgan or wgan-gp, got " + o.loss);
  // WGAN-GP: the paper's Adam (1e-4, betas (0, 0.9)) and 5 critic steps, unless given.
  const bool gp = o.loss == "wgan-gp";
  if (o.lr_g < 0) o.lr_g = gp ? 1e-4 : sagan ? 1e-4 : 2e-4;
  if (o.lr_d < 0) o.lr_d = gp ? 1e-4 : sagan ? 4e-4 : 2e-4;
  if (o.beta1 < 0) o.beta1 = gp || sagan ? 0.0 : 0.5;
  if (o.beta2 < 0) o.beta2 = gp || sagan ? 0.9 : 0.999;
  if (o.n_dis == 0) o.n_dis = gp ? 5 : 1;
  if (o.z_dim <= 0) o.z_dim = sagan ? 128 : 100;
  if (!(o.gp_lambda >= 0)) fail(fmt::format("--gp-lambda must be >= 0, got {}", o.gp_lambda));
  if (!(o.r1 >= 0)) fail(fmt::format("--r1 must be >= 0, got {}", o.r1));
  if (o.r1_every < 1) fail(fmt::format("--r1-every must be >= 1, got {}", o.r1_every));
  if (o.image_size != 32 && o.image_size != 64 && o.image_size != 128)
    fail(fmt::format("--image-size must be 32, 64 or 128, got {}", o.image_size));
  if (o.channels != 0 && o.channels != 1 && o.channels != 3)
    fail(fmt::format("--channels must be 1 or 3, got {}", o.channels));
  if (o.batch_size < 1) fail(fmt::format("--batch-size must be >= 1, got {}", o.batch_size));
  if (o.steps < 0 || (o.steps == 0 && o.epochs < 1)) fail("give --epochs >= 1 or --steps >= 1");
  if (o.n_dis < 1) fail(fmt::format("--n-dis must be >= 1, got {}", o.n_dis));
  if (o.ema < 0 || o.ema >= 1) fail(fmt::format("--ema must be in [0, 1), got {}", o.ema));
  if (o.lr_g <= 0 || o.lr_d <= 0) fail("learning rates must be > 0");
  if (o.beta1 >= 1 || o.beta2 >= 1) fail("betas must be in [0, 1)");
  if (o.eval_every < 0 || o.eval_samples < 2 || o.eval_real < 2)
    fail("--eval-every must be >= 0, --eval-samples and --eval-real >= 2");
  if (o.sample_every < 1 || o.checkpoint_every < 1 || o.log_every < 1)
    fail("--sample-every, --checkpoint-every and --log-every must be >= 1");
  if (o.device != "auto" && o.device != "cpu" && o.device != "cuda")
    fail("--device must be auto, cpu or cuda, got " + o.device);
  (void)img::parse_fit(o.fit);  // throws on an unknown mode
  return o;
}

void set_requires_grad(nn::Module& m, bool on) {
  for (auto& [name, p] : m.named_parameters()) p.node()->requires_grad = on;
}

Stepper::Stepper(const Options& o, models::Gan& net, models::Gan* ema, Adam& opt_g, Adam& opt_d,
                 Generator& gen)
    : o_(o), net_(net), opt_g_(opt_g), opt_d_(opt_d), gen_(gen) {
  const Device dev = gen.device();
  z_ = Tensor::empty(Shape{o.batch_size, net.z_dim}, dev);
  stats_ = Tensor::zeros(Shape{kStats}, dev);
  eps_ = Tensor::empty(Shape{o.batch_size, 1, 1, 1}, dev);
  // The EMA's parameter lists, made once (not per step).
  g_params_ = net.g->parameters();
  if (ema) ema_params_ = ema->g->parameters();
}

void Stepper::use_fixed_noise(std::vector<Tensor> z, std::vector<Tensor> eps) {
  fixed_z_ = std::move(z);
  fixed_eps_ = std::move(eps);
}

void Stepper::next_z() {
  if (fixed_z_.empty()) return gen_.normal_(z_);
  z_.copy_from(fixed_z_.front().reshape(z_.shape()));
  fixed_z_.erase(fixed_z_.begin());
}

void Stepper::next_eps() {
  if (fixed_eps_.empty()) return gen_.uniform_(eps_);
  eps_.copy_from(fixed_eps_.front().reshape(eps_.shape()));
  fixed_eps_.erase(fixed_eps_.begin());
}

void Stepper::keep_scalar(int64_t i, const Var& v) {
  if (stats_.is_cuda())
    GAN_CUDA_CHECK(cudaMemcpyAsync(stats_.data<float>() + i, v.value().raw(), sizeof(float),
                                   cudaMemcpyDeviceToDevice, cuda::stream()));
  else
    stats_.data<float>()[i] = v.value().data<float>()[0];
}

namespace {

// |g| per sample over every axis but the first, and the gradient of D's output with respect to
// its input x (create_graph: a loss built from it reaches D's parameters).
Var input_gradient(models::GanNet& d, const Var& x, Var* out = nullptr) {
  const Var y = d.forward(x);
  if (out) *out = y;
  const Var ones(Tensor::full(y.shape(), 1.0, y.device(), y.value().dtype()));
  return grad({y}, {x}, {ones}, true)[0];
}

Var squared_norms(const Var& g) {
  std::vector<int> axes;
  for (int i = 1; i < g.shape().ndim; ++i) axes.push_back(i);
  return sum(mul(g, g), axes);
}

}  // namespace

void Stepper::iteration(const std::vector<Tensor>& reals, int64_t step) {
  const bool bce = o_.loss == "bce";
  const bool gp = o_.loss == "wgan-gp";
  const bool r1 = o_.r1 > 0 && step % o_.r1_every == 0;
  set_requires_grad(*net_.d, true);
  set_requires_grad(*net_.g, false);
  for (int k = 0; k < o_.n_dis; ++k) {
    GAN_NVTX("D step");
    // R1 differentiates D(real) with respect to the real images.
    const Var real(reals[size_t(k)], r1);
    next_z();
    Var fake;
    {
      NoGradGuard ng;  // G is not differentiated here (its BatchNorm statistics still move)
      fake = net_.g->forward(models::latent_input(net_, Var(z_)));
    }
    Var dr, penalty, norms;
    Var r1_grad;
    if (r1)
      r1_grad = input_gradient(*net_.d, real, &dr);
    else
      dr = net_.d->forward(real);
    const Var df = net_.d->forward(fake);
    Var loss_d;
    if (bce)
      loss_d = add(bce_with_logits(dr, 1.0), bce_with_logits(df, 0.0));
    else if (o_.loss == "hinge")
      loss_d = hinge_d_loss(dr, df);
    else
      loss_d = sub(mean(df), mean(dr));
    if (gp) {
      // Interpolates x^ = real + eps (fake - real), eps ~ U(0, 1) per sample (device noise);
      // penalty mean_i (|grad D(x^_i)| - 1)^2, weighted by lambda.
      NvtxRange nvtx_gp("gradient penalty");
      next_eps();
      Tensor xh;
      {
        NoGradGuard ng;
        xh = add(real.detach(), mul(Var(eps_), sub(fake.detach(), real.detach()))).value();
      }
      const Var g = input_gradient(*net_.d, Var(xh, true));
      norms = sqrt(squared_norms(g));
      const Var one(Tensor::full(Shape{}, 1.0, norms.device(), norms.value().dtype()));
      const Var dev = sub(norms, one);
      penalty = mean(mul(dev, dev));
      loss_d = add(loss_d, scale(penalty, o_.gp_lambda));
    }
    if (r1) {
      // R1 = gamma / 2 * mean_i |grad D(x_i)|^2 on real data; lazy: every k-th iteration, times k.
      NvtxRange nvtx_r1("R1 penalty");
      const Var sq = squared_norms(r1_grad);
      penalty = mean(sq);
      loss_d = add(loss_d, scale(penalty, 0.5 * o_.r1 * o_.r1_every));
      if (!norms.defined()) {
        NoGradGuard ng;
        norms = sqrt(sq.detach());
      }
    }
    zero_grad(opt_d_.params());
    backward(loss_d);
    opt_d_.step();
    if (o_.loss == "wgan")
      for (const Var& p : opt_d_.params()) clamp_(p.value(), -o_.wgan_clip, o_.wgan_clip);
    if (k + 1 == o_.n_dis) {
      NoGradGuard ng;
      keep_scalar(0, loss_d);
      keep_scalar(2, bce ? mean(sigmoid(dr.detach())) : mean(dr.detach()));
      keep_scalar(3, bce ? mean(sigmoid(df.detach())) : mean(df.detach()));
      if (penalty.defined()) {
        keep_scalar(4, penalty.detach());
        keep_scalar(5, mean(norms.detach()));
      }
    }
  }
  {
    // ---- generator (D's parameters need no gradient here)
    GAN_NVTX("G step");
    set_requires_grad(*net_.d, false);
    set_requires_grad(*net_.g, true);
    next_z();
    const Var fake = net_.g->forward(models::latent_input(net_, Var(z_)));
    const Var out_fake = net_.d->forward(fake);
    const Var loss_g = bce ? bce_with_logits(out_fake, 1.0) : hinge_g_loss(out_fake);
    zero_grad(opt_g_.params());
    backward(loss_g);
    opt_g_.step();
    keep_scalar(1, loss_g);
  }
  if (!ema_params_.empty()) {
    GAN_NVTX("EMA");
    for (size_t i = 0; i < ema_params_.size(); ++i)
      lerp_(ema_params_[i].value(), g_params_[i].value(), 1.0 - o_.ema);
  }
}

IterationGraph::IterationGraph(const std::vector<nn::Module*>& modules,
                               const std::function<void()>& body) {
  for (nn::Module* m : modules)
    for (auto& [name, b] : m->named_buffers())
      if (name.ends_with("num_batches_tracked")) counters_.emplace_back(b, b.data<double>()[0]);
  cudaStream_t st = cuda::stream();
  GAN_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  try {
    body();
  } catch (...) {
    cudaGraph_t g = nullptr;
    (void)cudaStreamEndCapture(st, &g);
    if (g) (void)cudaGraphDestroy(g);
    throw;
  }
  cudaGraph_t g = nullptr;
  GAN_CUDA_CHECK(cudaStreamEndCapture(st, &g));
  cudaError_t e = cudaGraphGetNodes(g, nullptr, &nodes_);
  if (e == cudaSuccess) e = cudaGraphInstantiate(&exec_, g, 0);
  (void)cudaGraphDestroy(g);
  GAN_CUDA_CHECK(e);
  for (auto& [t, before] : counters_) {  // the capture ran nothing: undo, keep the delta
    const double after = t.data<double>()[0];
    t.data<double>()[0] = before;
    before = after - before;
  }
}

IterationGraph::~IterationGraph() {
  if (exec_) (void)cudaGraphExecDestroy(exec_);
}

void IterationGraph::replay() {
  GAN_CUDA_CHECK(cudaGraphLaunch(exec_, cuda::stream()));
  for (auto& [t, delta] : counters_) t.data<double>()[0] += delta;
}

Result run(Options o) {
  const StopSignals signals;
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(clock::now() - t_start).count(); };

  // ---- device; the CPU fallback of the default job
  Device dev = Device::CPU;
  if (o.device == "cuda") {
    GAN_CHECK(cuda_available(), "gan_train: --device cuda but no CUDA device is available");
    dev = Device::CUDA;
  } else if (o.device == "auto") {
    dev = cuda_available() ? Device::CUDA : Device::CPU;
    if (dev == Device::CPU) {
      std::string changed;
      auto shrink = [&](const char* key, auto& field, auto value) {
        if (!o.given.count(key)) {
          field = value;
          changed += fmt::format(" {}={}", key, value);
        }
      };
      shrink("steps", o.steps, int64_t(20));
      shrink("batch_size", o.batch_size, 8);
      shrink("image_size", o.image_size, 32);
      shrink("sample_every", o.sample_every, int64_t(20));
      shrink("checkpoint_every", o.checkpoint_every, int64_t(20));
      shrink("log_every", o.log_every, int64_t(5));
      std::printf(
          "gan_train: no GPU found: running a short CPU run instead (%s). Use --device cpu and "
          "set --steps to train longer on the CPU.\n",
          changed.empty() ? "as configured" : changed.substr(1).c_str());
    }
  }
  if (o.tf32) set_allow_tf32(true);

  // ---- resume: the checkpoint's configuration, checked against explicit options
  std::unique_ptr<st::File> ck;
  if (!o.resume.empty()) {
    const std::string path = (fs::path(o.resume) / kCheckpointName).string();
    GAN_CHECK(fs::exists(path),
              fmt::format("gan_train: --resume {}: no {} there", o.resume, kCheckpointName));
    ck = std::make_unique<st::File>(st::read_file(path));
    GAN_CHECK(ck->metadata.count("format") && ck->meta("format") == kFormat,
              fmt::format("gan_train: {}: not a gan_train checkpoint (format '{}')", path,
                          ck->metadata.count("format") ? ck->meta("format") : ""));
    json saved;
    try {
      saved = json::parse(ck->meta("config"));
      Options from = o;
      from_json_model(saved, from);
      const json cur = to_json(o);
      for (const char* key : kModelKeys) {
        const json was = saved.contains(key) ? saved.at(key) : json();
        if (o.given.count(key) && cur.at(key) != was)
          throw Error(fmt::format("gan_train: --{} {} does not match the checkpoint's {} ({})", key,
                                  cur.at(key).dump(), was.dump(), path));
      }
      o = from;
      if (!o.given.count("out")) o.out = o.resume;
      if (!o.given.count("steps") && !o.given.count("epochs")) {
        o.steps = saved.at("steps").get<int64_t>();
        o.epochs = saved.at("epochs").get<int>();
      }
    } catch (const json::exception& e) {
      throw Error(fmt::format("gan_train: {}: corrupt configuration in the checkpoint ({})", path,
                              e.what()));
    }
  }
  o = resolve(o);

  // ---- output directory: never overwrite another run
  check_writable(o.out);
  const fs::path out(o.out);
  if (o.resume.empty() && fs::exists(out / kCheckpointName))
    throw Error(
        fmt::format("gan_train: --out {} already holds a run ({}); use --resume {} or "
                    "another --out",
                    o.out, kCheckpointName, o.out));
  fs::create_directories(out / "samples");
  // Temporary files of writes a killed process left behind (kill -9 during a checkpoint).
  const int stale =
      io::remove_stale_temps(out.string()) + io::remove_stale_temps((out / "samples").string());
  if (stale > 0)
    std::printf("gan_train: removed %d temporary file(s) an interrupted run left in %s\n", stale,
                o.out.c_str());

  // ---- data
  data::Dataset ds = data::load_auto(o.data);
  if (o.channels == 0) o.channels = ds.channels == 1 ? 1 : 3;
  data::LoaderOptions lo;
  lo.image_size = o.image_size, lo.channels = o.channels, lo.batch_size = o.batch_size;
  lo.fit = img::parse_fit(o.fit), lo.hflip = o.hflip, lo.seed = o.seed, lo.device = dev;
  data::Loader loader(std::move(ds), lo);
  GAN_CHECK(loader.batches_per_epoch() > 0,
            fmt::format("gan_train: {}: {} images, fewer than one batch of {}", o.data,
                        loader.dataset().count, o.batch_size));
  const int64_t d_batches_per_step = o.n_dis;
  const int64_t total_steps =
      o.steps > 0 ? o.steps : o.epochs * loader.batches_per_epoch() / d_batches_per_step;
  GAN_CHECK(total_steps > 0, "gan_train: the run has no steps (more --epochs or --steps)");
  std::printf("%s\n", describe(o, dev).c_str());
  if (o.loss == "wgan-gp" && o.model == "dcgan")
    std::printf(
        "gan_train: warning: --loss wgan-gp with DCGAN's critic, which has batch norm: the WGAN-GP "
        "paper advises against it (the penalty is per sample, batch norm couples the samples); "
        "the penalty is computed exactly through it anyway\n");
  std::printf("gan_train: %lld images (%s), %lld batches per epoch, %lld generator steps\n",
              (long long)loader.dataset().count, loader.dataset().source.c_str(),
              (long long)loader.batches_per_epoch(), (long long)total_steps);
  std::fflush(stdout);

  // ---- models and optimisers
  Generator gen(o.seed, dev);
  models::ModelConfig mc;
  mc.model = o.model, mc.preset = o.preset, mc.image_size = o.image_size;
  mc.channels = o.channels, mc.z_dim = o.z_dim, mc.ngf = o.ngf, mc.ndf = o.ndf;
  mc.official_attention = o.official_attention;
  models::Gan net = models::build(mc, gen);
  models::Gan ema_net;
  if (o.ema > 0) {
    Generator g2(o.seed, dev);
    ema_net = models::build(mc, g2);
    auto src = net.g->named_parameters();
    auto dst = ema_net.g->named_parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].second.value().copy_from(src[i].second.value());
  }
  AdamOptions ag, ad;
  ag.lr = o.lr_g, ag.beta1 = o.beta1, ag.beta2 = o.beta2;
  ad.lr = o.lr_d, ad.beta1 = o.beta1, ad.beta2 = o.beta2;
  Adam opt_g(net.g->parameters(), ag), opt_d(net.d->parameters(), ad);

  // Fixed noise for the sample grids: its own generator, so resuming regenerates it exactly.
  Generator fixed_gen(o.seed ^ 0x5eed5eed5eedull, dev);
  Tensor z_fixed = Tensor::empty(Shape{kFixedSamples, net.z_dim}, dev);
  fixed_gen.normal_(z_fixed);
  Stepper stepper(o, net, o.ema > 0 ? &ema_net : nullptr, opt_g, opt_d, gen);
  // This iteration's loss_d, loss_g, D(x), D(G(z)), in persistent device memory: the same buffer
  // for eager steps and CUDA-graph replays.
  const Tensor& stats = stepper.stats();

  int64_t step = 0, images = 0;
  if (ck) {
    ckpt::load_module(*ck, "G.", *net.g);
    ckpt::load_module(*ck, "D.", *net.d);
    if (o.ema > 0) ckpt::load_module(*ck, "G_ema.", *ema_net.g);
    for (auto [prefix, opt, mod] :
         {std::tuple{"opt_g.", &opt_g, net.g.get()}, std::tuple{"opt_d.", &opt_d, net.d.get()}}) {
      for_each_adam_state(prefix, *opt, *mod,
                          [&](const std::string& name, const nn::TorchLayout& l, const Tensor& t) {
                            ckpt::from_torch(ck->tensor(name), l, t);
                          });
      opt->set_step_count(ck->int64s(std::string(prefix) + "step").at(0));
    }
    const auto rng = ck->int64s("rng.generator");
    gen.set_state(u64(rng.at(0)), u64(rng.at(1)));
    const auto pos = ck->int64s("loader.position");
    loader.set_position(pos.at(0), pos.at(1));
    step = ck->int64s("train.step").at(0);
    images = ck->int64s("train.images").at(0);
    std::printf("gan_train: resumed %s at step %lld\n", o.resume.c_str(), (long long)step);
  }

  // ---- outputs
  tb::Writer tbw((out / "tensorboard").string());
  const bool resuming = bool(ck);
  LineLog metrics((out / "metrics.jsonl").string(), resuming);
  const bool bar = o.progress == 1 || (o.progress == -1 && isatty(STDOUT_FILENO));
  const auto attn = net.g->attention_layers();
  const auto dattn = net.d->attention_layers();
  const auto g_sn = net.g->spectral_norm_layers();
  const auto d_sn = net.d->spectral_norm_layers();
  const auto g_sn_names = net.g->spectral_norm_names();
  const auto d_sn_names = net.d->spectral_norm_names();

  Result result;
  const std::string ckpt_path = (out / kCheckpointName).string();

  auto write_samples = [&] {
    models::GanNet& G = o.ema > 0 ? *ema_net.g : *net.g;
    if (o.ema > 0) {  // the EMA generator uses the current BatchNorm statistics and u, v
      auto src = net.g->named_buffers();
      auto dst = ema_net.g->named_buffers();
      for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_from(src[i].second);
    }
    NoGradGuard ng;
    G.eval();
    const Tensor imgs = G.forward(models::latent_input(net, Var(z_fixed))).value();
    G.train();
    const img::Image grid = img::make_grid(imgs, 8);
    img::write_png_atomic((out / "samples" / fmt::format("step_{:07d}.png", step)).string(), grid);
    img::write_png_atomic((out / "samples" / "latest.png").string(), grid);
    tbw.add_image("samples", grid, step);
  };

  auto write_checkpoint = [&](const std::string& path, const st::Metadata& extra) {
    // Never replace a good checkpoint with a diverged state: check this step's losses first.
    if (step > 0) {
      const std::vector<float> sv = stats.to_vector();
      const float ld = sv[0], lg = sv[1];
      if (!std::isfinite(ld) || !std::isfinite(lg))
        throw Error(
            fmt::format("gan_train: non-finite loss at step {} (loss_d {}, loss_g {}): "
                        "stopped; the last good checkpoint is intact in {}",
                        step, ld, lg, o.out));
    }
    std::vector<st::Entry> e;
    ckpt::append_module(e, "G.", *net.g);
    ckpt::append_module(e, "D.", *net.d);
    if (o.ema > 0) ckpt::append_module(e, "G_ema.", *ema_net.g);
    for (auto [prefix, opt, mod] :
         {std::tuple{"opt_g.", &opt_g, net.g.get()}, std::tuple{"opt_d.", &opt_d, net.d.get()}}) {
      for_each_adam_state(prefix, *opt, *mod,
                          [&](const std::string& name, const nn::TorchLayout& l, const Tensor& t) {
                            e.push_back(st::from_tensor(name, ckpt::to_torch(t, l)));
                          });
      e.push_back(st::from_int64(std::string(prefix) + "step", {opt->step_count()}));
    }
    e.push_back(st::from_int64("rng.generator", {int64_t(gen.seed()), int64_t(gen.offset())}));
    const data::Position pos = loader.position();
    e.push_back(st::from_int64("loader.position", {pos.epoch, pos.step}));
    e.push_back(st::from_int64("train.step", {step}));
    e.push_back(st::from_int64("train.images", {images}));
    st::Metadata meta;
    meta["format"] = kFormat;
    meta["config"] = to_json(o).dump();
    meta["step"] = std::to_string(step);
    meta.insert(extra.begin(), extra.end());
    st::write_file(path, e, meta);
    if (path == ckpt_path) result.checkpoint = ckpt_path;
  };

  // ---- evaluation (--eval-every): the classifier and the real images' features, once.
  eval::LoadedClassifier evaluator;
  eval::Extracted eval_real;
  const std::string best_path = (out / "best.safetensors").string();
  double best_fd = INFINITY;
  if (o.eval_every > 0) {
    const std::string cls_path =
        o.eval_classifier.empty() ? eval::default_classifier_path(nullptr) : o.eval_classifier;
    evaluator = eval::load_classifier(cls_path, dev);
    const auto real =
        eval::fit_dataset(std::shared_ptr<const data::Dataset>(
                              std::shared_ptr<const data::Dataset>(), &loader.dataset()),
                          o.image_size, img::parse_fit(o.fit), o.eval_real);
    eval_real = eval::cached_extract(*evaluator.net, eval::file_digest(cls_path), real,
                                     fmt::format("train fit={}@{}", o.fit, o.image_size), 250, dev,
                                     eval::default_cache_dir());
    if (resuming && fs::exists(best_path)) {
      const st::File b = st::read_file(best_path);
      if (b.metadata.count("eval_fd")) best_fd = std::stod(b.metadata.at("eval_fd"));
    }
    std::printf(
        "gan_train: evaluating every %lld steps: %lld samples against %lld real images (%s)\n",
        (long long)o.eval_every, (long long)o.eval_samples, (long long)eval_real.features.rows,
        evaluator.net->describe().c_str());
  }
  double train_t0 = 0, eval_seconds = 0;  // the loop's start; time spent evaluating
  auto run_eval = [&] {
    const double e0 = seconds();
    models::Gan& G = o.ema > 0 ? ema_net : net;
    if (o.ema > 0) {  // the EMA generator uses the current BatchNorm statistics and u, v
      auto src = net.g->named_buffers();
      auto dst = ema_net.g->named_buffers();
      for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_from(src[i].second);
    }
    const auto fake = eval::sample(G, o.eval_samples, 250, o.seed ^ 0xe7a1e7a1ull, dev);
    eval::MetricOptions mo;
    mo.device = dev, mo.seed = o.seed;
    mo.kid_subsets = 10;  // of 1000: a tenth of gan_eval's cost, enough to follow the trend
    json r = eval::evaluate(eval_real, eval::extract(*evaluator.net, fake, 250, dev), mo);
    r.erase("real_class_histogram");
    eval_seconds += seconds() - e0;
    // time_s as the other lines (since the loop started, evaluations included); eval_s: the part
    // spent evaluating, for comparisons at equal training time.
    metrics.write_line(json{
        {"step", step},
        {"time_s", seconds() - train_t0},
        {"eval_s", eval_seconds},
        {"eval", r}}.dump());
    std::map<std::string, double> sc;
    for (const char* k :
         {"fd", "kid_mean", "precision", "recall", "density", "coverage", "is_mean"})
      if (r.contains(k)) sc[std::string("eval/") + k] = r[k].get<double>();
    tbw.add_scalars(sc, step);
    const double fd = r["fd"].get<double>();
    std::printf(
        "%seval step %lld: FD %.3f  KID %.4f  precision %.3f  recall %.3f  density %.3f  "
        "coverage %.3f  IS %.3f%s\n",
        bar ? "\n" : "", (long long)step, fd, r["kid_mean"].get<double>(),
        r["precision"].get<double>(), r["recall"].get<double>(), r["density"].get<double>(),
        r["coverage"].get<double>(), r["is_mean"].get<double>(),
        fd < best_fd ? "  (best so far)" : "");
    if (fd < best_fd) {
      best_fd = fd;
      write_checkpoint(best_path, {{"eval_fd", fmt::format("{:.17g}", fd)},
                                   {"eval_step", std::to_string(step)}});
    }
  };

  AsyncScalars async;
  double last_bar = -1;
  std::vector<float> latest;  // last values shown
  auto emit = [&](bool wait) {
    for (const auto& r : async.ready(wait)) {
      json j;
      j["step"] = r.step;
      for (size_t i = 0; i < r.names.size(); ++i) j[r.names[i]] = r.values[i];
      const double ips = r.seconds > 0 ? double(r.images) / r.seconds : 0;
      j["images_per_s"] = ips;
      j["time_s"] = r.seconds;
      if (o.eval_every > 0) j["eval_s"] = r.eval_seconds;  // time_s - eval_s: training time
      // Memory, for long runs (docs/reliability.md): the process's resident set, and on CUDA what
      // the stream-ordered pool holds from the driver. Neither synchronises.
      j["rss_mb"] = resident_mb();
      if (dev == Device::CUDA) j["pool_mb"] = double(cuda::pool_reserved_bytes()) / (1 << 20);
      metrics.write_line(j.dump());
      std::map<std::string, double> sc;
      for (size_t i = 0; i < r.names.size(); ++i) sc[r.names[i]] = r.values[i];
      sc["images_per_s"] = ips;
      tbw.add_scalars(sc, r.step);
      latest = r.values;
      if (!std::isfinite(r.values[0]) || !std::isfinite(r.values[1]))
        throw Error(
            fmt::format("gan_train: non-finite loss at step {} (loss_d {}, loss_g {}): "
                        "stopped; the last good checkpoint{} is intact in {}",
                        r.step, r.values[0], r.values[1],
                        result.checkpoint.empty() ? " (none written yet)" : "", o.out));
      if (!bar)
        std::printf(
            "step %7lld/%lld  epoch %lld  %8.1f img/s  loss_d %.4f  loss_g %.4f  D(x) "
            "%.3f  D(G(z)) %.3f\n",
            (long long)r.step, (long long)total_steps, (long long)(loader.epoch() + 1), ips,
            r.values[0], r.values[1], r.values[2], r.values[3]);
    }
    std::fflush(stdout);
  };

  const int64_t start_step = step;
  const int64_t start_images = images;
  const double t0 = seconds();
  train_t0 = t0;
  // CUDA graph: the first iteration runs eagerly (it makes the cuDNN plans and sizes the
  // workspaces), the second is captured once and every later one replays it.
  std::vector<Tensor> reals;
  std::unique_ptr<IterationGraph> graph;
  // Lazy R1 changes the iteration from step to step: no single graph can replay it.
  const bool use_graph = o.cuda_graph && dev == Device::CUDA && o.r1_every == 1;
  if (o.cuda_graph && dev == Device::CUDA && o.r1_every > 1)
    std::printf("gan_train: --r1-every %d: CUDA graphs off (the iteration differs between steps)\n",
                o.r1_every);
  for (int k = 0; use_graph && k < o.n_dis; ++k)
    reals.push_back(
        Tensor::empty(Shape{o.batch_size, o.image_size, o.image_size, o.channels}, dev));
  const bool profile = dev == Device::CUDA && o.profile_from > 0;

  while (step < total_steps) {
    if (profile && step + 1 == o.profile_from) GAN_CUDA_CHECK(cudaProfilerStart());
    if (o.inject_nan_at > 0 && step + 1 == o.inject_nan_at)
      opt_d.params()[0].value().fill_(std::nan(""));  // fault injection for the tests
    if (!use_graph) {
      std::vector<Tensor> batch;
      for (int k = 0; k < o.n_dis; ++k) batch.push_back(loader.next());
      for (const Tensor& b : batch) images += b.shape()[0];
      stepper.iteration(batch, step);
    } else {
      for (int k = 0; k < o.n_dis; ++k) {
        loader.next_into(reals[size_t(k)]);
        images += o.batch_size;
      }
      if (step == start_step) {
        stepper.iteration(reals, step);
      } else {
        if (!graph)
          graph =
              std::make_unique<IterationGraph>(std::vector<nn::Module*>{net.g.get(), net.d.get()},
                                               [&] { stepper.iteration(reals, step); });
        graph->replay();
      }
    }
    ++step;
    if (profile && step == o.profile_to) GAN_CUDA_CHECK(cudaProfilerStop());

    // ---- logging (asynchronous), samples, checkpoints
    if (step % o.log_every == 0 || step == total_steps) {
      std::vector<std::string> names = {"loss_d", "loss_g", "D_x", "D_G_z"};
      std::vector<std::pair<Tensor, int64_t>> vals;
      for (int64_t i = 0; i < 4; ++i) vals.emplace_back(stats, i);
      if (o.loss == "wgan-gp" || o.r1 > 0) {  // of the last iteration that computed them
        names.push_back(o.loss == "wgan-gp" ? "gradient_penalty" : "r1_penalty");
        vals.emplace_back(stats, 4);
        names.push_back("grad_norm");
        vals.emplace_back(stats, 5);
      }
      for (size_t i = 0; i < attn.size(); ++i) {
        names.push_back(fmt::format("G.gamma.{}", i));
        vals.emplace_back(attn[i]->gamma().value(), 0);
      }
      for (size_t i = 0; i < dattn.size(); ++i) {
        names.push_back(fmt::format("D.gamma.{}", i));
        vals.emplace_back(dattn[i]->gamma().value(), 0);
      }
      for (size_t i = 0; i < g_sn.size(); ++i) {
        names.push_back("G.sigma." + g_sn_names[i]);
        vals.emplace_back(g_sn[i]->sn_state()->sigma, 0);
      }
      for (size_t i = 0; i < d_sn.size(); ++i) {
        names.push_back("D.sigma." + d_sn_names[i]);
        vals.emplace_back(d_sn[i]->sn_state()->sigma, 0);
      }
      async.push(step, seconds() - t0, eval_seconds, images - start_images, std::move(names), vals);
    }
    emit(false);
    if (bar) {
      const double now = seconds();
      if (now - last_bar >= 0.1 || step == total_steps) {
        last_bar = now;
        const double el = now - t0;
        const double its = el > 0 ? double(step - start_step) / el : 0;
        const double eta = its > 0 ? double(total_steps - step) / its : -1;
        std::printf(
            "\r[%lld/%lld] epoch %lld | %.2f it/s %.0f img/s | ETA %s | loss_d %s "
            "loss_g %s   ",
            (long long)step, (long long)total_steps, (long long)(loader.epoch() + 1), its,
            el > 0 ? double(images - start_images) / el : 0.0, hms(eta).c_str(),
            latest.empty() ? "-" : fmt::format("{:.4f}", latest[0]).c_str(),
            latest.size() < 2 ? "-" : fmt::format("{:.4f}", latest[1]).c_str());
        std::fflush(stdout);
      }
    }
    if (step % o.sample_every == 0 || step == total_steps) write_samples();
    const bool stop = signals.received() != 0 && step < total_steps;
    if (o.eval_every > 0 && (step % o.eval_every == 0 || step == total_steps)) run_eval();
    if (step % o.checkpoint_every == 0 || step == total_steps || stop)
      write_checkpoint(ckpt_path, {});
    if (stop) break;
  }
  emit(true);
  tbw.flush();  // errors reported here, not lost in the destructor
  graph.reset();
  if (bar) std::printf("\n");
  if (dev == Device::CUDA) cuda::synchronize();
  const double el = seconds() - t0;
  result.steps = step;
  result.images_per_s = el > 0 ? double(images - start_images) / el : 0;
  if (step < total_steps) {  // stopped by a signal
    result.stop_signal = signals.received();
    std::fflush(stdout);
    std::fprintf(stderr,
                 "gan_train: stopped by %s after step %lld of %lld; checkpoint %s; resume with: "
                 "gan_train --resume %s\n",
                 result.stop_signal == SIGINT ? "SIGINT" : "SIGTERM", (long long)step,
                 (long long)total_steps, result.checkpoint.c_str(), o.out.c_str());
    return result;
  }
  std::printf("gan_train: done: %lld steps, %.1f images/s; samples in %s, checkpoint %s\n",
              (long long)step, result.images_per_s, (out / "samples").c_str(),
              result.checkpoint.c_str());
  std::fflush(stdout);
  return result;
}

}  // namespace gan::train
