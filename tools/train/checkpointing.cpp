#include "tools/train/checkpointing.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "tools/io/checkpoint.h"
#include "tools/io/fileio.h"

namespace gan::train {

namespace fs = std::filesystem;

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {
    io::remove_pending_temp();
    ::_exit(128 + sig);
  }
  g_stop_signal = sig;
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

uint64_t u64(int64_t v) { return uint64_t(v); }

}  // namespace

StopSignals::StopSignals() {
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

StopSignals::~StopSignals() {
  sigaction(SIGINT, &old_int_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
  sigaction(SIGXFSZ, &old_xfsz_, nullptr);
}

int StopSignals::received() const { return g_stop_signal; }

void prepare_output_dir(const Options& o) {
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
}

st::File open_checkpoint(const std::string& run_dir, std::string* path_out) {
  const std::string path = (fs::path(run_dir) / kCheckpointName).string();
  GAN_CHECK(fs::exists(path),
            fmt::format("gan_train: --resume {}: no {} there", run_dir, kCheckpointName));
  st::File f = st::read_file(path);
  GAN_CHECK(f.metadata.count("format") && f.meta("format") == kCheckpointFormat,
            fmt::format("gan_train: {}: not a gan_train checkpoint (format '{}')", path,
                        f.metadata.count("format") ? f.meta("format") : ""));
  if (path_out) *path_out = path;
  return f;
}

void write_checkpoint(const std::string& path, const TrainState& s, const Options& o,
                      const st::Metadata& extra) {
  std::vector<st::Entry> e;
  ckpt::append_module(e, "G.", *s.net.g);
  ckpt::append_module(e, "D.", *s.net.d);
  if (s.ema) ckpt::append_module(e, "G_ema.", *s.ema->g);
  for (auto [prefix, opt, mod] : {std::tuple{"opt_g.", &s.opt_g, s.net.g.get()},
                                  std::tuple{"opt_d.", &s.opt_d, s.net.d.get()}}) {
    for_each_adam_state(prefix, *opt, *mod,
                        [&](const std::string& name, const nn::TorchLayout& l, const Tensor& t) {
                          e.push_back(st::from_tensor(name, ckpt::to_torch(t, l)));
                        });
    e.push_back(st::from_int64(std::string(prefix) + "step", {opt->step_count()}));
  }
  e.push_back(st::from_int64("rng.generator", {int64_t(s.gen.seed()), int64_t(s.gen.offset())}));
  const data::Position pos = s.loader.position();
  e.push_back(st::from_int64("loader.position", {pos.epoch, pos.step}));
  e.push_back(st::from_int64("train.step", {s.step}));
  e.push_back(st::from_int64("train.images", {s.images}));
  st::Metadata meta;
  meta["format"] = kCheckpointFormat;
  meta["config"] = to_json(o).dump();
  meta["step"] = std::to_string(s.step);
  meta.insert(extra.begin(), extra.end());
  st::write_file(path, e, meta);
}

void restore_checkpoint(const st::File& f, TrainState& s, bool ema) {
  ckpt::load_module(f, "G.", *s.net.g);
  ckpt::load_module(f, "D.", *s.net.d);
  if (ema && s.ema) ckpt::load_module(f, "G_ema.", *s.ema->g);
  for (auto [prefix, opt, mod] : {std::tuple{"opt_g.", &s.opt_g, s.net.g.get()},
                                  std::tuple{"opt_d.", &s.opt_d, s.net.d.get()}}) {
    for_each_adam_state(prefix, *opt, *mod,
                        [&](const std::string& name, const nn::TorchLayout& l, const Tensor& t) {
                          ckpt::from_torch(f.tensor(name), l, t);
                        });
    opt->set_step_count(f.int64s(std::string(prefix) + "step").at(0));
  }
  const auto rng = f.int64s("rng.generator");
  s.gen.set_state(u64(rng.at(0)), u64(rng.at(1)));
  const auto pos = f.int64s("loader.position");
  s.loader.set_position(pos.at(0), pos.at(1));
  s.step = f.int64s("train.step").at(0);
  s.images = f.int64s("train.images").at(0);
}

}  // namespace gan::train
