// Data-parallel training (docs/distributed.md): which rank this process is, and the collectives the
// trainer and synchronised batch norm use.
//
// A rank learns its place from its launcher's environment (detect_launch): OpenMPI's mpirun
// (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK), Slurm's srun (SLURM_PROCID/NTASKS/LOCALID), PMI
// (PMI_RANK/PMI_SIZE) or the variables torchrun-style launchers set (RANK, WORLD_SIZE,
// LOCAL_RANK). Without any of them it is rank 0 of 1 and nothing below communicates.
//
// Backends (make_communicator):
//   "local" - one rank: every collective is the identity;
//   "mpi"   - MPI (built when CMake finds it): host-side collectives on CPU tensors, and on CUDA
//             tensors through host copies (so not inside a CUDA graph); the CPU ranks of CI;
//   "nccl"  - NCCL on the engine stream (capturable in a CUDA graph), libnccl.so.2 loaded at run
//             time; its unique id travels by MPI when the job started under MPI, else through a
//             file on a shared filesystem (init "file:PATH").
// Every rank must call the same collectives in the same order with the same shapes.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <cuda_runtime_api.h>

#include "engine/autograd.h"
#include "engine/tensor.h"

namespace gan::dist {

struct Launch {
  int rank = 0, size = 1, local_rank = 0;
  std::string launcher = "none";  // "mpirun", "slurm", "pmi", "env" or "none"
};
// From the environment; malformed values are an error naming the variable.
Launch detect_launch();

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return launch_.rank; }
  int size() const { return launch_.size; }
  int local_rank() const { return launch_.local_rank; }
  const Launch& launch() const { return launch_; }
  virtual const char* backend() const = 0;
  // Whether the tensor collectives can be captured in a CUDA graph (NCCL).
  virtual bool graph_safe() const { return size() == 1; }
  // Whether max() and gather_all() run on the host without waiting for the device (not so for
  // NCCL without MPI: they synchronise the engine stream).
  virtual bool cheap_host_collectives() const { return true; }

  // In place, f32 tensors of the same shapes on every rank, all on one device: the sum or the
  // mean over ranks. Every rank ends with bitwise the same values.
  enum class Op { kSum, kMean };
  virtual void allreduce(const std::vector<Tensor>& ts, Op op) = 0;
  // The same queued on `stream` instead of the engine stream where the backend queues work on
  // streams (NCCL); host backends ignore the stream (and synchronise the engine stream).
  virtual void allreduce_on(const std::vector<Tensor>& ts, Op op, cudaStream_t stream) {
    (void)stream;
    allreduce(ts, op);
  }
  void allreduce_sum(const std::vector<Tensor>& ts) { allreduce(ts, Op::kSum); }
  void allreduce_mean(const std::vector<Tensor>& ts) { allreduce(ts, Op::kMean); }
  // In place: root's values on every rank.
  virtual void broadcast(const std::vector<Tensor>& ts, int root) = 0;
  // Host values (synchronise): the largest v of all ranks; every rank's v in rank order.
  virtual int64_t max(int64_t v) = 0;
  virtual std::vector<uint64_t> gather_all(uint64_t v) = 0;
  // Ends every rank of the job with `code` (after this rank printed why); never returns.
  [[noreturn]] virtual void abort(int code) = 0;

  // Device work the other ranks take part in (a training step, a graph replay), marked by the
  // trainer around enqueuing it: the NCCL backend's watchdog ends the rank with a line naming
  // `what` when the work has not completed timeout_s() after begin_work (a peer stopped or
  // hangs: nothing else would notice). Host backends wait with a deadline themselves. Use
  // WorkWatch.
  virtual void begin_work(const char* what) { (void)what; }
  virtual void end_work() {}
  virtual void cancel_work() {}  // the newest begin_work's work was not enqueued (it threw)

  // Seconds a collective may wait for the other ranks before the job is aborted with a line
  // naming this rank and the collective (a rank that died or hangs): $GAN_DIST_TIMEOUT, default
  // 600 (an evaluation on rank 0 runs while the others wait).
  double timeout_s() const { return timeout_s_; }
  void set_timeout_s(double s) { timeout_s_ = s; }

 protected:
  explicit Communicator(const Launch& l);
  // Polls done() (spinning briefly, then sleeping between polls) until it returns true; past
  // timeout_s() prints "rank R: no answer from the other ranks in <what> ..." and aborts the job.
  void wait_with_deadline(const std::function<bool()>& done, const char* what);
  Launch launch_;
  double timeout_s_ = 600;
};

// begin_work on construction, end_work when the work was enqueued without throwing.
class WorkWatch {
 public:
  WorkWatch(Communicator& c, const char* what) : c_(c) { c_.begin_work(what); }
  ~WorkWatch() noexcept(false) {
    if (std::uncaught_exceptions() == uncaught_)
      c_.end_work();
    else
      c_.cancel_work();
  }
  WorkWatch(const WorkWatch&) = delete;
  WorkWatch& operator=(const WorkWatch&) = delete;

 private:
  Communicator& c_;
  const int uncaught_ = std::uncaught_exceptions();
};

// Gradient all-reduce overlapped with the backward pass, in buckets (as PyTorch's DDP): made for
// one network's parameters; begin() before backward() and finish() after it, then the gradients
// are the mean over ranks. The first pass learns the order in which the gradients become final
// (autograd's grad-ready hook), cuts it into buckets of about bucket_bytes ($GAN_DIST_BUCKET_KB
// overrides; every rank must have the same, checked at construction) and all-reduces them in
// finish() (eagerly: NCCL connects then, not during a graph capture); later passes all-reduce each
// bucket as soon as its last gradient is final: with NCCL on a communication stream that forks
// from the engine stream and joins it again in finish() (a CUDA graph captures both), with MPI at
// once. Every rank runs the same tape, so the buckets complete in the same order everywhere (the
// layout's hash is compared after the first pass). A parameter a pass did not reach takes part
// with a zero gradient.
class GradReducer {
 public:
  static constexpr size_t kDefaultBucketBytes = size_t(4) << 20;
  GradReducer(Communicator& comm, std::vector<Var> params,
              size_t bucket_bytes = kDefaultBucketBytes);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;
  void begin();
  void finish();
  // Buckets once learned (0 before), and how many were launched during the last backward pass
  // (before finish()).
  size_t buckets() const { return buckets_.size(); }
  size_t launched_early() const { return launched_early_; }

 private:
  void ready(GradNode& p);
  void launch(size_t b);
  void check_layout();
  Communicator& comm_;
  std::vector<Var> params_;
  std::unordered_map<const GradNode*, size_t> index_;  // parameter node -> position in params_
  size_t bucket_bytes_;
  bool learning_ = true;
  std::vector<size_t> order_;                 // parameter indices in ready order (first pass)
  std::vector<std::vector<size_t>> buckets_;  // parameter indices
  std::vector<size_t> bucket_of_;             // per parameter
  std::vector<size_t> pending_;               // per bucket: gradients not final yet
  std::vector<bool> launched_;
  size_t launched_early_ = 0;
  bool streams_ = false;  // NCCL on CUDA tensors: the communication stream
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> fork_;  // per bucket
  cudaEvent_t join_ = nullptr;
};

// backend: "auto" (nccl for a CUDA run of several ranks, mpi for a CPU one, local for one rank),
// "local", "mpi" or "nccl"; init: how NCCL finds its peers ("" : by MPI when the job runs under
// mpirun or srun with PMI and MPI is built in; "file:PATH": rank 0 writes its unique id to PATH,
// which the others read). One-line errors: a backend that is not built, a launcher size that
// does not match MPI's, no GPU for NCCL.
std::unique_ptr<Communicator> make_communicator(const Launch& launch, Device device,
                                                const std::string& backend = "auto",
                                                const std::string& init = "");
// Whether MPI is compiled in (CMake found it).
bool mpi_built();
// When this process is one of several ranks under MPI: ends every rank with `code` (the caller
// printed why first). Otherwise returns.
void abort_job(int code);

// Synchronised batch norm: while set (on the calling thread), batch_norm in training mode reduces
// its statistics (and their gradients) over the ranks of this communicator (null: per-rank
// statistics, the default). Every rank's batch has the same number of rows.
void set_sync_batch_norm(Communicator* c);
Communicator* sync_batch_norm();

// The rendezvous of --dist-init file:PATH: rank 0 replaces path with n bytes (atomically: a
// temporary file renamed), every other rank waits up to timeout_s for the file and reads them
// into data. A file written more than timeout_s before this process started cannot be this job's
// (its rank 0 would have given up by then): it is left by an earlier job, and waited past; the
// error at the deadline says so. Rank 0 removes the file once every rank has joined.
void file_rendezvous(int rank, const std::string& path, void* data, size_t n, double timeout_s);

// FNV-1a of the bytes of the tensors (host copies: synchronises), for the cross-rank checks.
uint64_t checksum(const std::vector<Tensor>& ts);

}  // namespace gan::dist
