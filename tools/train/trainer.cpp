#include "tools/train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include <cuda_profiler_api.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/adam.h"
#include "engine/device.h"
#include "engine/dist.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "kernels/check.h"
#include "kernels/cpu/backend.h"
#include "models/gan.h"
#include "tools/eval/evaluate.h"
#include "tools/io/data.h"
#include "tools/io/image.h"
#include "tools/io/safetensors.h"
#include "tools/train/logging.h"

namespace gan::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kFixedSamples = 64;
constexpr int kGridColumns = 8;  // a conditional model's class grid: one row per class

// The device of the run; --device auto without a GPU shrinks the default job to a short CPU run.
Device choose_device(Options& o) {
  if (o.device == DeviceChoice::kCuda) {
    GAN_CHECK(cuda_available(), "gan_train: --device cuda but no CUDA device is available");
    return Device::CUDA;
  }
  if (o.device == DeviceChoice::kCpu) return Device::CPU;
  if (cuda_available()) return Device::CUDA;
  const std::string changed = shrink_for_cpu(o);
  std::printf(
      "gan_train: no GPU found: a CPU run instead (%s): a few minutes on two cores, announced "
      "once its first steps are timed. Use --device cpu and set --steps to train longer on the "
      "CPU.\n",
      changed.empty() ? "as configured" : changed.c_str());
  return Device::CPU;
}

data::LoaderOptions loader_options(const Options& o, Device dev) {
  data::LoaderOptions lo;
  lo.image_size = o.model.image_size, lo.channels = o.model.channels;
  lo.batch_size = o.batch_size, lo.fit = o.fit, lo.hflip = o.hflip, lo.seed = o.seed;
  lo.device = dev;
  lo.shard_rank = o.rank, lo.shard_count = o.world_size;
  return lo;
}

// The EMA generator samples with the training generator's BatchNorm statistics and u, v.
void copy_buffers(nn::Module& from, nn::Module& to) {
  auto src = from.named_buffers();
  auto dst = to.named_buffers();
  for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_from(src[i].second);
}

// Before G_ema is used: its buffers are G's (--ema-buffers copy), or its own averages with G's
// num_batches_tracked (average, StudioGAN's Ema).
void sync_ema_buffers(nn::Module& g, nn::Module& ema, const std::string& policy) {
  if (policy != "average") return copy_buffers(g, ema);
  auto src = g.named_buffers();
  auto dst = ema.named_buffers();
  for (size_t i = 0; i < src.size(); ++i)
    if (src[i].first.ends_with("num_batches_tracked")) dst[i].second.copy_from(src[i].second);
}

// One training run, its state and its phases; run() calls the phases in order.
class Training {
 public:
  explicit Training(Options o) : o_(std::move(o)), t_start_(Clock::now()) {}
  ~Training() {
    dist::set_sync_batch_norm(nullptr);
    for (LabelStage& st : stage_)
      if (st.done) {
        (void)cudaEventSynchronize(st.done);  // its pinned buffers may still be read
        (void)cudaEventDestroy(st.done);
      }
  }
  Training(const Training&) = delete;
  Training& operator=(const Training&) = delete;

  void configure();
  void prepare_outputs();
  void load_data();
  void build_models();
  void restore();
  void prepare_evaluation();
  void train();
  void announce_duration(int64_t start_step);
  Result finish();

 private:
  using Clock = std::chrono::steady_clock;
  double seconds() const { return std::chrono::duration<double>(Clock::now() - t_start_).count(); }
  TrainState state() {
    return TrainState{
        net_, o_.ema > 0 ? &ema_net_ : nullptr, *opt_g_, *opt_d_, *gen_, *loader_, step_, images_};
  }

  void iterate(int64_t start_step);
  void log_scalars();
  void write_samples();
  void write_checkpoint(const std::string& path, const st::Metadata& extra);
  void evaluate();
  bool lead() const { return o_.rank == 0; }
  int agreed_stop();
  void check_ranks_agree();
  void check_finite();

  Options o_;
  const StopSignals signals_;
  const Clock::time_point t_start_;
  Device dev_ = Device::CPU;
  std::unique_ptr<dist::Communicator> comm_;  // the ranks of a data-parallel run (or just this)
  std::optional<st::File> resume_file_;
  fs::path out_;
  std::string ckpt_path_;
  std::unique_ptr<data::Loader> loader_;
  int64_t total_steps_ = 0;
  std::unique_ptr<Generator> gen_;
  models::Gan net_, ema_net_;
  std::unique_ptr<Adam> opt_g_, opt_d_;
  Tensor z_fixed_;
  std::unique_ptr<Stepper> stepper_;
  int64_t step_ = 0, images_ = 0;
  std::unique_ptr<RunLog> log_;
  Result result_;
  // --eval-every: the feature network, the real images' features, the best FD so far.
  eval::LoadedClassifier evaluator_;
  eval::Extracted eval_real_;
  std::vector<int32_t> eval_real_labels_;  // a conditional model: the real images' labels
  double best_fd_ = INFINITY;
  double loop_t0_ = 0, eval_seconds_ = 0, announce_t0_ = 0;
  int64_t loop_images0_ = 0;
  // A conditional model: the one-hot labels the iteration reads (filled before each one).
  std::vector<Tensor> real_labels_, fake_labels_;
  void fill_labels(const std::vector<data::Position>& batches);
  // On the GPU they are copied in from pinned buffers, two sets used in turn (a set is rewritten
  // once its copies, queued two iterations before, are done: no wait in practice).
  struct LabelStage {
    std::vector<Tensor> host;
    cudaEvent_t done = nullptr;
  };
  LabelStage stage_[2];
  // CUDA graphs: the static real batches and the captured iteration.
  std::vector<Tensor> reals_;
  std::unique_ptr<IterationGraph> graph_;
  size_t arena_bytes_ = 0;  // the graph's arena, from the eager first step
};

// Device, resumed configuration, defaults and validation.
void Training::configure() {
  const dist::Launch launch = dist::detect_launch();
  o_.rank = launch.rank, o_.world_size = launch.size;
  // Ranks other than 0 print nothing but errors (stderr).
  if (!lead()) GAN_CHECK(std::freopen("/dev/null", "w", stdout), "gan_train: cannot quiet stdout");
  dev_ = choose_device(o_);
  comm_ = dist::make_communicator(launch, dev_, o_.dist_backend, o_.dist_init);
  set_math_mode(parse_math_mode(o_.tf32 ? "tf32" : o_.math));
  if (o_.deterministic) set_cudnn_deterministic(true);
  if (!o_.resume.empty()) {
    std::string path;
    resume_file_ = open_checkpoint(o_.resume, &path);
    o_ = resume_options(o_, *resume_file_, path);
  }
  o_ = resolve(o_);
  set_precision(parse_precision(o_.precision));  // after resume: a run keeps its precision
  if (o_.sync_bn) dist::set_sync_batch_norm(comm_.get());
  if (launch.size > 1)
    std::printf("gan_train: %d ranks (%s, %s backend)%s\n", launch.size, launch.launcher.c_str(),
                comm_->backend(), o_.sync_bn ? ", synchronised batch norm" : "");
}

// The output directory: never overwrite another run.
void Training::prepare_outputs() {
  if (lead()) prepare_output_dir(o_);
  out_ = fs::path(o_.out);
  ckpt_path_ = (out_ / kCheckpointName).string();
}

void Training::load_data() {
  // A folder of images is streamed (listed now, decoded by the loader's workers as batches need
  // them), each image centre-cropped and fitted to the training size once; prepared files are
  // mapped (gan_data prepare: decoded once for every run).
  data::FolderOptions fo;
  fo.size = o_.model.image_size;
  fo.channels = o_.model.channels == 1 ? 1 : 3;
  fo.fit = img::Fit::Crop;
  fo.lazy = true;
  data::Dataset ds = data::load_auto(o_.data, true, fo);
  if (o_.model.channels == 0) o_.model.channels = ds.channels == 1 ? 1 : 3;
  if (o_.conditional && o_.model.num_classes == 0) {
    GAN_CHECK(!ds.labels.empty(), fmt::format("gan_train: --conditional: {} has no labels (IDX "
                                              "with its labels file, CIFAR-10, or a folder with "
                                              "one subfolder per class)",
                                              o_.data));
    int32_t top = 0;
    for (int32_t l : ds.labels) top = std::max(top, l);
    o_.model.num_classes = std::max(int(ds.classes.size()), int(top) + 1);
    GAN_CHECK(o_.model.num_classes >= 2,
              fmt::format("gan_train: --conditional: {} has one class only", o_.data));
  }
  if (o_.model.num_classes > 0)
    GAN_CHECK(!ds.labels.empty(),
              fmt::format("gan_train: the model is conditional but {} has no labels", o_.data));
  if (o_.model.num_classes > 0 && o_.model.class_names.empty() &&
      int(ds.classes.size()) == o_.model.num_classes)
    o_.model.class_names = ds.classes;
  GAN_CHECK(
      o_.model.class_names.empty() || int(o_.model.class_names.size()) == o_.model.num_classes,
      fmt::format("gan_train: --class-names lists {} names for {} classes",
                  o_.model.class_names.size(), o_.model.num_classes));
  loader_ = std::make_unique<data::Loader>(std::move(ds), loader_options(o_, dev_));
  GAN_CHECK(loader_->batches_per_epoch() > 0,
            fmt::format("gan_train: {}: {} images, fewer than one batch of {}", o_.data,
                        loader_->dataset().count, o_.batch_size));
  total_steps_ = o_.steps > 0 ? o_.steps : o_.epochs * loader_->batches_per_epoch() / o_.n_dis;
  GAN_CHECK(total_steps_ > 0, "gan_train: the run has no steps (more --epochs or --steps)");
  std::printf("%s\n", describe(o_, dev_).c_str());
  if (dev_ == Device::CPU) std::printf("gan_train: %s\n", kernels::cpu::describe().c_str());
  if (o_.gradient_penalty() && !o_.sagan())
    std::printf(
        "gan_train: warning: --loss wgan-gp with DCGAN's critic, which has batch norm: the WGAN-GP "
        "paper advises against it (the penalty is per sample, batch norm couples the samples); "
        "the penalty is computed exactly through it anyway\n");
  std::printf("gan_train: %lld images (%s), %lld batches per epoch, %lld generator steps\n",
              (long long)loader_->dataset().count, loader_->dataset().source.c_str(),
              (long long)loader_->batches_per_epoch(), (long long)total_steps_);
  std::fflush(stdout);
}

// Models, optimisers, the fixed sample noise and the iteration.
void Training::build_models() {
  gen_ = std::make_unique<Generator>(o_.seed, dev_);
  net_ = models::build(o_.model, *gen_);
  if (o_.ema > 0) {
    Generator g2(o_.seed, dev_);
    ema_net_ = models::build(o_.model, g2);
    auto src = net_.g->named_parameters();
    auto dst = ema_net_.g->named_parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].second.value().copy_from(src[i].second.value());
    copy_buffers(*net_.g, *ema_net_.g);
  }
  AdamOptions ag, ad;
  ag.lr = o_.lr_g, ag.beta1 = o_.beta1, ag.beta2 = o_.beta2;
  ad.lr = o_.lr_d, ad.beta1 = o_.beta1, ad.beta2 = o_.beta2;
  opt_g_ = std::make_unique<Adam>(net_.g->parameters(), ag);
  opt_d_ = std::make_unique<Adam>(net_.d->parameters(), ad);
  // Fixed noise for the sample grids: its own generator, so resuming regenerates it exactly.
  Generator fixed_gen(o_.seed ^ 0x5eed5eed5eedull, dev_);
  z_fixed_ = Tensor::empty(Shape{kFixedSamples, net_.z_dim}, dev_);
  fixed_gen.normal_(z_fixed_);
  stepper_ = std::make_unique<Stepper>(o_, net_, o_.ema > 0 ? &ema_net_ : nullptr, *opt_g_, *opt_d_,
                                       *gen_, comm_.get());
  if (const int k = o_.model.num_classes; k > 0) {
    // The class grid: row c is class c, column j the fixed noise z_j (the same in every row).
    const int cols = kGridColumns;
    const std::vector<float> z = z_fixed_.to_vector();
    std::vector<float> zg(size_t(k * cols) * size_t(net_.z_dim));
    for (int c = 0; c < k; ++c)
      for (int j = 0; j < cols; ++j)
        std::copy_n(z.begin() + j * net_.z_dim, net_.z_dim,
                    zg.begin() + (int64_t(c) * cols + j) * net_.z_dim);
    z_fixed_ = Tensor::from_vector(zg, Shape{int64_t(k) * cols, net_.z_dim}).to(dev_);
    for (int i = 0; i < o_.n_dis; ++i)
      real_labels_.push_back(Tensor::zeros(Shape{o_.batch_size, k}, dev_));
    for (int i = 0; i <= o_.n_dis; ++i)
      fake_labels_.push_back(Tensor::zeros(Shape{o_.batch_size, k}, dev_));
    stepper_->set_labels(real_labels_, fake_labels_);
  }
}

// The checkpoint's state when resuming; then the logs (appended to when resuming).
void Training::restore() {
  if (resume_file_) {
    TrainState s = state();
    restore_checkpoint(*resume_file_, s, o_.ema > 0);
    step_ = s.step, images_ = s.images;
    stepper_->set_steps_done(step_);
    resume_file_.reset();
    std::printf("gan_train: resumed %s at step %lld\n", o_.resume.c_str(), (long long)step_);
  }
  if (!lead()) return;  // rank 0 writes the outputs
  const bool bar = o_.progress == 1 || (o_.progress == -1 && isatty(STDOUT_FILENO));
  log_ = std::make_unique<RunLog>(out_.string(), !o_.resume.empty(), bar, o_.eval_every > 0, dev_,
                                  total_steps_);
  log_->set_first_nonfinite([this] { return stepper_->first_nonfinite_step(); });
}

// --eval-every: the classifier and the real images' features, once.
void Training::prepare_evaluation() {
  if (o_.eval_every <= 0 || !lead()) return;
  const std::string cls_path =
      o_.eval_classifier.empty() ? eval::default_classifier_path(nullptr) : o_.eval_classifier;
  evaluator_ = eval::load_classifier(cls_path, dev_);
  const auto real =
      eval::fit_dataset(std::shared_ptr<const data::Dataset>(std::shared_ptr<const data::Dataset>(),
                                                             &loader_->dataset()),
                        o_.model.image_size, o_.fit, o_.eval_real);
  if (o_.model.num_classes > 0) eval_real_labels_ = real->labels;
  eval_real_ = eval::cached_extract(
      *evaluator_.net, eval::file_digest(cls_path), real,
      fmt::format("train fit={}@{}", img::fit_name(o_.fit), o_.model.image_size), 250, dev_,
      eval::default_cache_dir());
  const std::string best_path = (out_ / "best.safetensors").string();
  if (!o_.resume.empty() && fs::exists(best_path)) {
    const st::File b = st::read_file(best_path);
    if (b.metadata.count("eval_fd")) best_fd_ = std::stod(b.metadata.at("eval_fd"));
  }
  std::printf(
      "gan_train: evaluating every %lld steps: %lld samples against %lld real images (%s)\n",
      (long long)o_.eval_every, (long long)o_.eval_samples, (long long)eval_real_.features.rows,
      evaluator_.net->describe().c_str());
}

// The loop: an iteration, then logging, samples, evaluation and checkpoints when due; a stop
// signal ends it after the step with a checkpoint.
void Training::train() {
  const int64_t start_step = step_;
  loop_images0_ = images_;
  loop_t0_ = seconds();
  const bool profile = dev_ == Device::CUDA && o_.profile_from > 0;
  while (step_ < total_steps_) {
    if (profile && step_ + 1 == o_.profile_from) GAN_CUDA_CHECK(cudaProfilerStart());
    if (o_.inject_nan_at > 0 && step_ + 1 == o_.inject_nan_at)
      opt_d_->params()[0].value().fill_(std::nan(""));  // fault injection for the tests
    {
      // The NCCL watchdog ends this rank if the step's work (collectives with the other ranks)
      // does not complete in time: a stopped peer is otherwise noticed by nobody.
      dist::WorkWatch watch(*comm_, "the training step");
      iterate(start_step);
    }
    ++step_;
    if (profile && step_ == o_.profile_to) GAN_CUDA_CHECK(cudaProfilerStop());
    if (o_.announce_duration && lead()) announce_duration(start_step);

    if (o_.dist_check_every > 0 && step_ % o_.dist_check_every == 0) check_ranks_agree();
    const bool stop = agreed_stop() != 0 && step_ < total_steps_;
    const bool checkpoint = step_ % o_.checkpoint_every == 0 || step_ == total_steps_ || stop;
    if (!lead()) {
      if (checkpoint) check_finite();  // as rank 0 does before it writes
      if (stop) break;
      continue;
    }
    if (step_ % o_.log_every == 0 || step_ == total_steps_) log_scalars();
    log_->drain(false, loader_->epoch(), result_.checkpoint, o_.out);
    const double now = seconds();
    log_->progress(step_, start_step, loader_->epoch(), images_ - loop_images0_, now,
                   now - loop_t0_);
    if (step_ % o_.sample_every == 0 || step_ == total_steps_) write_samples();
    if (o_.eval_every > 0 && (step_ % o_.eval_every == 0 || step_ == total_steps_)) evaluate();
    if (checkpoint) write_checkpoint(ckpt_path_, {});
    if (stop) break;
  }
  if (log_) {
    log_->drain(true, loader_->epoch(), result_.checkpoint, o_.out);
    log_->finish();
  }
  graph_.reset();
  if (dev_ == Device::CUDA) cuda::synchronize();
  // Every rank waits here for rank 0's last outputs: if writing them fails, rank 0 ends the job
  // (or aborts its communicator) and no rank exits 0.
  if (o_.world_size > 1) (void)comm_->max(0);
}

// The CPU fallback's announcement: steps 10 to 30 timed (after the warm-up's convolution timing),
// the whole run's duration printed from them.
void Training::announce_duration(int64_t start_step) {
  const int64_t done = step_ - start_step;
  if (done == 10) announce_t0_ = seconds();
  if (done != 30 || step_ >= total_steps_) return;
  const double per_step = (seconds() - announce_t0_) / 20;
  const double left = per_step * double(total_steps_ - step_);
  const double total = seconds() - loop_t0_ + left;
  std::printf(
      "gan_train: this CPU run takes about %.0f min %02.0f s (%lld steps at %.1f it/s; "
      "samples every %lld steps in %s)\n",
      std::floor(total / 60), std::fmod(total, 60.0), (long long)total_steps_, 1.0 / per_step,
      (long long)o_.sample_every, (out_ / "samples").c_str());
  std::fflush(stdout);
}

// One iteration: eager, or on CUDA (unless lazy R1 changes the iteration between steps) the
// first one eager (it makes the cuDNN plans and sizes the workspaces), the second captured as a
// CUDA graph once, every later one a replay of it on static real batches.
void Training::iterate(int64_t start_step) {
  const bool use_graph =
      o_.cuda_graph && dev_ == Device::CUDA && o_.r1_every == 1 && comm_->graph_safe();
  if (step_ == start_step && o_.cuda_graph && dev_ == Device::CUDA && !comm_->graph_safe())
    std::printf("gan_train: the %s backend runs outside CUDA graphs: every step eager\n",
                comm_->backend());
  if (step_ == start_step && o_.cuda_graph && dev_ == Device::CUDA && o_.r1_every > 1)
    std::printf("gan_train: --r1-every %d: CUDA graphs off (the iteration differs between steps)\n",
                o_.r1_every);
  std::vector<data::Position> positions;  // the batches this iteration reads, for their labels
  if (!fake_labels_.empty()) {
    data::Position p = loader_->position();
    for (int k = 0; k < o_.n_dis; ++k) {
      positions.push_back(p);
      if (++p.step == loader_->batches_per_epoch()) p = {p.epoch + 1, 0};
    }
    fill_labels(positions);
  }
  if (!use_graph) {
    std::vector<Tensor> batch;
    for (int k = 0; k < o_.n_dis; ++k) batch.push_back(loader_->next());
    for (const Tensor& b : batch) images_ += b.shape()[0] * o_.world_size;
    stepper_->iteration(batch, step_);
    return;
  }
  const models::ModelConfig& m = o_.model;
  while (int(reals_.size()) < o_.n_dis)
    reals_.push_back(
        Tensor::empty(Shape{o_.batch_size, m.image_size, m.image_size, m.channels}, dev_));
  for (int k = 0; k < o_.n_dis; ++k) {
    loader_->next_into(reals_[size_t(k)]);
    images_ += int64_t(o_.batch_size) * o_.world_size;
  }
  if (step_ == start_step) {  // eager; its allocations size the graph's arena
    cuda::AllocationTrace trace;
    cuda::begin_allocation_trace(&trace);
    try {
      stepper_->iteration(reals_, step_);
    } catch (...) {
      cuda::begin_allocation_trace(nullptr);
      throw;
    }
    cuda::begin_allocation_trace(nullptr);
    arena_bytes_ = cuda::arena_bytes_for(trace);
    return;
  }
  if (!graph_)
    graph_ = std::make_unique<IterationGraph>(
        std::vector<nn::Module*>{net_.g.get(), net_.d.get()},
        [&] { stepper_->iteration(reals_, step_); }, arena_bytes_);
  graph_->replay();
}

// A conditional model's labels for this iteration: the real batches' own (from the loader's pure
// batch order) and, for the fakes, classes drawn uniformly by a hash of (seed, step, batch, row of
// the global batch): host-side, deterministic, so a resumed run and every rank draw the same, and
// nothing random runs inside the (captured) step.
void Training::fill_labels(const std::vector<data::Position>& batches) {
  const int k = o_.model.num_classes;
  LabelStage& st = stage_[step_ % 2];
  if (dev_ == Device::CUDA) {
    if (!st.done) GAN_CUDA_CHECK(cudaEventCreateWithFlags(&st.done, cudaEventDisableTiming));
    GAN_CUDA_CHECK(cudaEventSynchronize(st.done));
  }
  size_t slot = 0;
  auto put = [&](const Tensor& dst, const std::vector<int32_t>& y) {
    const Tensor h = models::one_hot(y, k, Device::CPU);
    if (dev_ == Device::CPU) return dst.copy_from(h);
    if (st.host.size() <= slot) st.host.push_back(Tensor::empty_pinned(dst.shape()));
    const Tensor& pinned = st.host[slot++];
    std::memcpy(pinned.raw(), h.raw(), h.nbytes());
    dst.copy_from(pinned);  // queued on the stream, after the previous iteration
  };
  for (size_t i = 0; i < batches.size(); ++i)
    put(real_labels_[i], loader_->batch_labels(batches[i].epoch, batches[i].step));
  for (size_t f = 0; f < fake_labels_.size(); ++f) {
    std::vector<int32_t> y(size_t(o_.batch_size));
    for (int r = 0; r < o_.batch_size; ++r) {
      const uint64_t row = uint64_t(o_.rank) * uint64_t(o_.batch_size) + uint64_t(r);
      uint64_t h = data::mix64(o_.seed ^ 0xfa4e1abe15ull);
      h = data::mix64(h ^ uint64_t(step_));
      h = data::mix64(h ^ (uint64_t(f) << 32 | row));
      y[size_t(r)] = int32_t(h % uint64_t(k));
    }
    put(fake_labels_[f], y);
  }
  if (dev_ == Device::CUDA) GAN_CUDA_CHECK(cudaEventRecord(st.done, cuda::stream()));
}

// The step's scalars (losses, D outputs, penalty, attention gammas, spectral norms' sigmas),
// copied off the device without waiting.
void Training::log_scalars() {
  const Tensor& stats = stepper_->stats();
  std::vector<std::string> names = {"loss_d", "loss_g", "D_x", "D_G_z"};
  std::vector<std::pair<Tensor, int64_t>> vals;
  for (int64_t i = 0; i < 4; ++i) vals.emplace_back(stats, i);
  if (o_.has_penalty()) {  // of the last iteration that computed them
    names.push_back(o_.gradient_penalty() ? "gradient_penalty" : "r1_penalty");
    vals.emplace_back(stats, 4);
    names.push_back("grad_norm");
    vals.emplace_back(stats, 5);
  }
  for (auto [prefix, g] : {std::pair{"G", net_.g.get()}, std::pair{"D", net_.d.get()}}) {
    const auto attn = g->attention_layers();
    for (size_t i = 0; i < attn.size(); ++i) {
      names.push_back(fmt::format("{}.gamma.{}", prefix, i));
      vals.emplace_back(attn[i]->gamma().value(), 0);
    }
  }
  for (auto [prefix, g] : {std::pair{"G", net_.g.get()}, std::pair{"D", net_.d.get()}}) {
    const auto sn = g->spectral_norm_layers();
    const auto sn_names = g->spectral_norm_names();
    for (size_t i = 0; i < sn.size(); ++i) {
      names.push_back(fmt::format("{}.sigma.{}", prefix, sn_names[i]));
      vals.emplace_back(sn[i]->sn_state()->sigma, 0);
    }
  }
  log_->push(step_, seconds() - loop_t0_, eval_seconds_, images_ - loop_images0_, std::move(names),
             vals);
}

void Training::write_samples() {
  models::GanNet& G = o_.ema > 0 ? *ema_net_.g : *net_.g;
  if (o_.ema > 0) sync_ema_buffers(*net_.g, *ema_net_.g, o_.ema_buffers);
  NoGradGuard ng;
  G.eval();
  Var labels;
  if (const int k = o_.model.num_classes; k > 0) {  // the class grid
    std::vector<int32_t> y;
    for (int c = 0; c < k; ++c) y.insert(y.end(), kGridColumns, c);
    labels = Var(models::one_hot(y, k, dev_));
  }
  const Tensor imgs = G.forward(models::latent_input(net_, Var(z_fixed_)), labels).value();
  G.train();
  const img::Image grid = img::make_grid(imgs, kGridColumns);
  img::write_png_atomic((out_ / "samples" / fmt::format("step_{:07d}.png", step_)).string(), grid);
  img::write_png_atomic((out_ / "samples" / "latest.png").string(), grid);
  log_->tensorboard().add_image("samples", grid, step_);
}

// Never replaces a good checkpoint with a diverged state: this step's losses are checked first.
void Training::check_finite() {
  if (step_ == 0) return;
  const std::vector<float> sv = stepper_->stats().to_vector();
  const float ld = sv[0], lg = sv[1];
  if (!std::isfinite(ld) || !std::isfinite(lg))
    throw Error(
        fmt::format("gan_train: non-finite loss at step {} (loss_d {}, loss_g {}; the first "
                    "non-finite step was {}): stopped; the last good checkpoint is intact in {}",
                    step_, ld, lg, stepper_->first_nonfinite_step(), o_.out));
}

// The first stop signal any rank received (every rank stops after the same step): each step when
// host collectives cost no device sync, else at the logging steps.
int Training::agreed_stop() {
  const int mine = signals_.received();
  if (o_.world_size == 1) return mine;
  if (!comm_->cheap_host_collectives() && step_ % o_.log_every != 0) return 0;
  return int(comm_->max(mine));
}

// --dist-check-every: every rank's parameters, optimiser state, buffers (spectral-norm vectors;
// batch-norm statistics with --sync-bn, else they are each rank's own) and EMA hashed and compared;
// a difference stops the run.
void Training::check_ranks_agree() {
  if (o_.world_size == 1) return;
  std::vector<Tensor> ts;
  for (nn::Module* m : {net_.g.get(), net_.d.get()}) {
    for (auto& [name, p] : m->named_parameters()) ts.push_back(p.value());
    for (auto& [name, b] : m->named_buffers())  // per-rank batch norm: statistics differ
      if (o_.sync_bn || !(name.ends_with("running_mean") || name.ends_with("running_var")))
        ts.push_back(b);
  }
  for (Adam* a : {opt_g_.get(), opt_d_.get()}) {
    for (const Tensor& t : a->exp_avg()) ts.push_back(t);
    for (const Tensor& t : a->exp_avg_sq()) ts.push_back(t);
  }
  if (o_.ema > 0)
    for (auto& [name, p] : ema_net_.g->named_parameters()) ts.push_back(p.value());
  const std::vector<uint64_t> all = comm_->gather_all(dist::checksum(ts));
  std::string differ;
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0]) differ += fmt::format(" {}", r);
  GAN_CHECK(differ.empty(), fmt::format("gan_train: step {}: the state of rank(s){} differs from "
                                        "rank 0's (--dist-check-every)",
                                        step_, differ));
}

void Training::write_checkpoint(const std::string& path, const st::Metadata& extra) {
  check_finite();
  if (o_.inject_checkpoint_error_at > 0 && step_ == o_.inject_checkpoint_error_at)
    throw Error(fmt::format("gan_train: {}: injected checkpoint write error at step {} (tests)",
                            path, step_));
  if (o_.ema > 0 && o_.ema_buffers == "average")  // G_ema's own statistics are what it stores
    sync_ema_buffers(*net_.g, *ema_net_.g, o_.ema_buffers);
  train::write_checkpoint(path, state(), o_, extra);
  if (path == ckpt_path_) result_.checkpoint = ckpt_path_;
}

// Samples of G (G_ema with --ema) against the real features; a new best FD keeps its state in
// best.safetensors.
void Training::evaluate() {
  const double e0 = seconds();
  if (o_.ema > 0) sync_ema_buffers(*net_.g, *ema_net_.g, o_.ema_buffers);
  const auto fake = eval::sample(o_.ema > 0 ? ema_net_ : net_, o_.eval_samples, 250,
                                 o_.seed ^ 0xe7a1e7a1ull, dev_);
  eval::MetricOptions mo;
  mo.device = dev_, mo.seed = o_.seed;
  mo.kid_subsets = 10;           // of 1000: a tenth of gan_eval's cost, enough to follow the trend
  mo.kid_shrink_subsets = true;  // --eval-samples may be fewer than 1000 (said in the JSON)
  const eval::Extracted fake_features = eval::extract(*evaluator_.net, fake, 250, dev_);
  json r = eval::evaluate(eval_real_, fake_features, mo);
  r.erase("real_class_histogram");
  if (o_.model.num_classes > 0)
    r["conditional"] = eval::conditional_metrics(eval_real_, eval_real_labels_, fake_features,
                                                 fake->labels, o_.model.num_classes);
  eval_seconds_ += seconds() - e0;
  const double fd = r["fd"].get<double>();
  log_->evaluation(step_, seconds() - loop_t0_, eval_seconds_, r, fd < best_fd_);
  if (fd < best_fd_) {
    best_fd_ = fd;
    write_checkpoint((out_ / "best.safetensors").string(), {{"eval_fd", fmt::format("{:.17g}", fd)},
                                                            {"eval_step", std::to_string(step_)}});
  }
}

Result Training::finish() {
  const double el = seconds() - loop_t0_;
  result_.steps = step_;
  result_.images_per_s = el > 0 ? double(images_ - loop_images0_) / el : 0;
  if (step_ < total_steps_) {  // stopped by a signal
    result_.stop_signal = signals_.received();
    std::fflush(stdout);
    std::fprintf(stderr,
                 "gan_train: stopped by %s after step %lld of %lld; checkpoint %s; resume with: "
                 "gan_train --resume %s\n",
                 result_.stop_signal == SIGINT ? "SIGINT" : "SIGTERM", (long long)step_,
                 (long long)total_steps_, result_.checkpoint.c_str(), o_.out.c_str());
    return result_;
  }
  std::printf("gan_train: done: %lld steps, %.1f images/s; samples in %s, checkpoint %s\n",
              (long long)step_, result_.images_per_s, (out_ / "samples").c_str(),
              result_.checkpoint.c_str());
  std::fflush(stdout);
  return result_;
}

}  // namespace

Result run(Options o) {
  // The run sets the process's precision (--precision, or the checkpoint's); the caller's comes
  // back afterwards, also when the run throws.
  const PrecisionScope keep(precision());
  Training t(std::move(o));
  t.configure();
  t.prepare_outputs();
  t.load_data();
  t.build_models();
  t.restore();
  t.prepare_evaluation();
  t.train();
  return t.finish();
}

}  // namespace gan::train
