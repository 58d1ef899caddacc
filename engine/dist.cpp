#include "engine/dist.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "engine/device.h"
#include "engine/dist_backends.h"
#include "engine/error.h"

namespace gan::dist {

namespace {

// An integer environment variable, or -1 when unset.
int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  GAN_CHECK(*end == 0 && x >= 0 && x < (1 << 24),
            fmt::format("dist: ${} is '{}', expected a non-negative integer", name, v));
  return int(x);
}

// One rank: the identity.
class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(const Launch& l) : Communicator(l) {}
  const char* backend() const override { return "local"; }
  void allreduce(const std::vector<Tensor>&, Op) override {}
  void broadcast(const std::vector<Tensor>&, int) override {}
  int64_t max(int64_t v) override { return v; }
  std::vector<uint64_t> gather_all(uint64_t v) override { return {v}; }
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
};

thread_local Communicator* g_sync_bn = nullptr;

// About when this process started (static initialisation): the file rendezvous refuses files
// written long before it.
const std::filesystem::file_time_type g_process_start =
    std::filesystem::file_time_type::clock::now();

}  // namespace

namespace detail {

uint64_t fnv1a(const void* data, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i)
    h = (h ^ static_cast<const unsigned char*>(data)[i]) * 1099511628211ull;
  return h;
}

void select_device(const Launch& l) {
  int n = 0;
  GAN_CUDA_CHECK(cudaGetDeviceCount(&n));
  GAN_CHECK(n > 0, fmt::format("dist: rank {}: no GPU is visible", l.rank));
  // A launcher that gives each rank one GPU (CUDA_VISIBLE_DEVICES per rank) leaves one visible.
  const int d = n == 1 ? 0 : l.local_rank;
  GAN_CHECK(d < n, fmt::format("dist: rank {}: local rank {} but this node has {} GPUs: one GPU "
                               "per rank (start at most {} ranks per node, or give each rank its "
                               "GPU with CUDA_VISIBLE_DEVICES)",
                               l.rank, l.local_rank, n, n));
  GAN_CUDA_CHECK(cudaSetDevice(d));
}

}  // namespace detail

Launch detect_launch() {
  struct Source {
    const char *rank, *size, *local, *name;
  };
  // mpirun first: under Slurm, mpirun's ranks also see SLURM_* variables of the allocation.
  const Source sources[] = {
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"},
      {"PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"},
      {"RANK", "WORLD_SIZE", "LOCAL_RANK", "env"},
      {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "slurm"},
      {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "pmi"},
  };
  for (const Source& s : sources) {
    const int rank = env_int(s.rank), size = env_int(s.size);
    if (rank < 0 || size < 0) continue;
    Launch l;
    l.rank = rank, l.size = size, l.launcher = s.name;
    const int local = env_int(s.local);
    l.local_rank = local < 0 ? 0 : local;
    GAN_CHECK(size >= 1 && rank < size,
              fmt::format("dist: ${}={} is not below ${}={}", s.rank, rank, s.size, size));
    return l;
  }
  return Launch{};
}

Communicator::Communicator(const Launch& l) : launch_(l) {
  const char* t = std::getenv("GAN_DIST_TIMEOUT");
  if (t && *t) {
    char* end = nullptr;
    const double s = std::strtod(t, &end);
    GAN_CHECK(*end == 0 && s > 0,
              fmt::format("dist: $GAN_DIST_TIMEOUT is '{}', expected seconds > 0", t));
    timeout_s_ = s;
  }
}

void Communicator::wait_with_deadline(const std::function<bool()>& done, const char* what) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  for (long polls = 0; !done(); ++polls) {
    if (polls > 200)
      std::this_thread::sleep_for(std::chrono::microseconds(polls > 20000 ? 2000 : 50));
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s > timeout_s()) {
      std::fprintf(stderr,
                   "gan_train: rank %d: no answer from the other ranks in %s for %.0f s (a rank "
                   "died or hangs; $GAN_DIST_TIMEOUT); aborting the job\n",
                   rank(), what, s);
      abort(1);
    }
  }
}

bool mpi_built() { return detail::mpi_built(); }

std::unique_ptr<Communicator> make_communicator(const Launch& launch, Device device,
                                                const std::string& backend,
                                                const std::string& init) {
  GAN_CHECK(backend == "auto" || backend == "local" || backend == "mpi" || backend == "nccl",
            fmt::format("dist: backend must be auto, local, mpi or nccl, got '{}'", backend));
  GAN_CHECK(init.empty() || init.rfind("file:", 0) == 0,
            fmt::format("dist: init must be empty or file:PATH, got '{}'", init));
  std::string b = backend;
  if (b == "auto") b = launch.size == 1 ? "local" : device == Device::CUDA ? "nccl" : "mpi";
  if (b == "local") {
    GAN_CHECK(launch.size == 1, fmt::format("dist: the local backend is for one rank, but the "
                                            "launcher ({}) started {}",
                                            launch.launcher, launch.size));
    return std::make_unique<LocalCommunicator>(launch);
  }
  if (b == "mpi") {
    if (device == Device::CUDA && launch.size > 1) detail::select_device(launch);
    return detail::make_mpi(launch);
  }
  GAN_CHECK(device == Device::CUDA, "dist: the nccl backend needs --device cuda");
  // In the interpreter build, NCCL is the interpreter's host implementation (shared memory).
  return detail::make_nccl(launch, init);
}

void set_sync_batch_norm(Communicator* c) { g_sync_bn = c; }
Communicator* sync_batch_norm() { return g_sync_bn; }

GradReducer::GradReducer(Communicator& comm, std::vector<Var> params, size_t bucket_bytes)
    : comm_(comm), params_(std::move(params)), bucket_bytes_(bucket_bytes) {
  for (size_t i = 0; i < params_.size(); ++i) index_[params_[i].node().get()] = i;
  if (const char* kb = std::getenv("GAN_DIST_BUCKET_KB"); kb && *kb) {
    char* end = nullptr;
    const long v = std::strtol(kb, &end, 10);
    GAN_CHECK(*end == 0 && v > 0,
              fmt::format("dist: $GAN_DIST_BUCKET_KB is '{}', expected a positive integer", kb));
    bucket_bytes_ = size_t(v) << 10;
  }
  // Every rank must cut the same buckets (they are collectives): the setting is compared here,
  // the layout after the first pass.
  if (comm_.size() > 1) {
    const std::vector<uint64_t> all = comm_.gather_all(bucket_bytes_);
    for (size_t r = 0; r < all.size(); ++r)
      GAN_CHECK(all[r] == all[0],
                fmt::format("dist: rank {}'s gradient buckets are {} KiB, rank 0's {} KiB "
                            "($GAN_DIST_BUCKET_KB must be the same on every rank)",
                            r, all[r] >> 10, all[0] >> 10));
  }
  streams_ =
      std::string(comm.backend()) == "nccl" && !params_.empty() && params_[0].value().is_cuda();
  if (streams_) {
    GAN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    GAN_CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
  }
}

GradReducer::~GradReducer() {
  set_grad_ready_hook({});  // a backward pass that threw left it set
  for (cudaEvent_t e : fork_) (void)cudaEventDestroy(e);
  if (join_) (void)cudaEventDestroy(join_);
  if (stream_) (void)cudaStreamDestroy(stream_);
}

void GradReducer::begin() {
  launched_.assign(buckets_.size(), false);
  pending_.clear();
  for (const auto& b : buckets_) pending_.push_back(b.size());
  launched_early_ = 0;
  if (learning_) order_.clear();
  set_grad_ready_hook([this](GradNode& p) { ready(p); });
}

void GradReducer::ready(GradNode& p) {
  const auto it = index_.find(&p);
  if (it == index_.end()) return;  // another network's parameter
  const size_t i = it->second;
  if (learning_) {
    order_.push_back(i);
    return;
  }
  const size_t b = bucket_of_[i];
  if (--pending_[b] == 0) {
    launch(b);
    ++launched_early_;
  }
}

void GradReducer::launch(size_t b) {
  std::vector<Tensor> grads;
  for (size_t i : buckets_[b]) {
    // A parameter this pass did not reach has no gradient: it takes part as zeros (every rank
    // all-reduces the same tensors).
    if (!params_[i].grad().defined())
      params_[i].node()->grad = Tensor::zeros_like(params_[i].value());
    grads.push_back(params_[i].grad());
  }
  launched_[b] = true;
  if (!streams_) return comm_.allreduce_mean(grads);
  // The bucket's gradients were written on the engine stream up to here.
  GAN_CUDA_CHECK(cudaEventRecord(fork_[b], cuda::stream()));
  GAN_CUDA_CHECK(cudaStreamWaitEvent(stream_, fork_[b], 0));
  comm_.allreduce_on(grads, Communicator::Op::kMean, stream_);
}

void GradReducer::finish() {
  set_grad_ready_hook({});
  if (learning_) {
    // Buckets from the learned order; parameters no entry used go last, in their own order.
    std::vector<bool> seen(params_.size(), false);
    for (size_t i : order_) seen[i] = true;
    for (size_t i = 0; i < params_.size(); ++i)
      if (!seen[i]) order_.push_back(i);
    bucket_of_.assign(params_.size(), 0);
    size_t bytes = 0;
    for (size_t i : order_) {
      if (buckets_.empty() || bytes >= bucket_bytes_) buckets_.emplace_back(), bytes = 0;
      buckets_.back().push_back(i);
      bucket_of_[i] = buckets_.size() - 1;
      bytes += params_[i].grad().nbytes();
    }
    if (streams_)
      for (size_t b = 0; b < buckets_.size(); ++b) {
        fork_.emplace_back();
        GAN_CUDA_CHECK(cudaEventCreateWithFlags(&fork_.back(), cudaEventDisableTiming));
      }
    learning_ = false;
    check_layout();
    // The first pass all-reduces through the same buckets and streams as the later ones, so
    // NCCL sets up its connections here, eagerly, not inside a CUDA graph capture.
    launched_.assign(buckets_.size(), false);
  }
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (!launched_[b]) launch(b);
  if (streams_) {
    GAN_CUDA_CHECK(cudaEventRecord(join_, stream_));
    GAN_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(), join_, 0));
  }
}

void GradReducer::check_layout() {
  if (comm_.size() == 1) return;
  uint64_t h = detail::kFnvOffset;
  auto mix = [&h](uint64_t v) { h = detail::fnv1a(&v, sizeof v, h); };
  for (const auto& bucket : buckets_) {
    mix(bucket.size());
    for (size_t i : bucket) mix(uint64_t(params_[i].value().numel()) << 20 | i);
  }
  const std::vector<uint64_t> all = comm_.gather_all(h);
  for (size_t r = 0; r < all.size(); ++r)
    GAN_CHECK(all[r] == all[0],
              fmt::format("dist: rank {} cut its gradients into other buckets than rank 0 (the "
                          "networks or their backward order differ between ranks)",
                          r));
}

void file_rendezvous(int rank, const std::string& path, void* data, size_t n, double timeout_s) {
  if (rank == 0) {
    const std::string tmp = fmt::format("{}.tmp{}", path, ::getpid());
    {
      std::ofstream f(tmp, std::ios::binary);
      f.write(static_cast<const char*>(data), std::streamsize(n));
      GAN_CHECK(f.good(), fmt::format("dist: cannot write {}", tmp));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    GAN_CHECK(!ec, fmt::format("dist: cannot rename {} to {}: {}", tmp, path, ec.message()));
    return;
  }
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const auto oldest =
      g_process_start - std::chrono::duration_cast<std::filesystem::file_time_type::duration>(
                            std::chrono::duration<double>(timeout_s));
  bool stale = false;
  for (;;) {
    std::error_code ec, ec2;
    const auto size = std::filesystem::file_size(path, ec);
    const auto written = std::filesystem::last_write_time(path, ec2);
    if (!ec && !ec2 && written < oldest) {
      stale = true;
    } else if (!ec && !ec2 && size == n) {
      std::ifstream f(path, std::ios::binary);
      f.read(static_cast<char*>(data), std::streamsize(n));
      if (f.good()) return;
    }
    GAN_CHECK(std::chrono::duration<double>(Clock::now() - t0).count() < timeout_s,
              stale ? fmt::format("dist: rank {}: {} is older than this job (left by an earlier "
                                  "one: remove it) and rank 0 wrote no new one within {:g} s",
                                  rank, path, timeout_s)
                    : fmt::format("dist: rank {}: rank 0 wrote no {} within {:g} s", rank, path,
                                  timeout_s));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

uint64_t checksum(const std::vector<Tensor>& ts) {
  uint64_t h = detail::kFnvOffset;
  auto mix = [&h](const unsigned char* p, size_t n) { h = detail::fnv1a(p, n, h); };
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (t.dtype() == DType::F64 && !t.is_cuda()) {
      mix(reinterpret_cast<const unsigned char*>(t.data<double>()), t.nbytes());
      continue;
    }
    const std::vector<float> v = t.to_vector();
    mix(reinterpret_cast<const unsigned char*>(v.data()), v.size() * sizeof(float));
  }
  return h;
}

}  // namespace gan::dist
