// The MPI backend of engine/dist.h. Collectives are non-blocking MPI calls waited on with a
// deadline, so that a rank that died or hangs ends the job (MPI_Abort) instead of blocking it.
// Sums are taken over the ranks' values gathered in rank order (in double), so every rank gets
// bitwise the same result whatever algorithm the MPI library picks.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "engine/device.h"
#include "engine/dist_backends.h"
#include "engine/error.h"

#ifdef GAN_HAVE_MPI
#include <mpi.h>
#endif

namespace gan::dist {

namespace detail {

bool mpi_launcher(const Launch& l) {
  return l.launcher == "mpirun" || l.launcher == "pmi" ||
         (l.launcher == "slurm" && (std::getenv("PMIX_RANK") || std::getenv("PMI_RANK")));
}

#ifndef GAN_HAVE_MPI

bool mpi_built() { return false; }

std::unique_ptr<Communicator> make_mpi(const Launch& launch) {
  throw Error(fmt::format(
      "dist: {} ranks need MPI, but this build has none (install libopenmpi-dev and rebuild; "
      "GPU runs can use the nccl backend with --dist-init file:PATH)",
      launch.size));
}

#else

bool mpi_built() { return true; }

namespace {

void finalize_at_exit() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Finalize();
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const Launch& l) : Communicator(l) {
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
      int provided = 0;
      GAN_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
                "dist: MPI_Init_thread failed");
      std::atexit(finalize_at_exit);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    int r = 0, s = 0;
    MPI_Comm_rank(comm_, &r);
    MPI_Comm_size(comm_, &s);
    GAN_CHECK(
        r == l.rank && s == l.size,
        fmt::format("dist: MPI says rank {} of {}, the launcher ({}) rank {} of {}: start the "
                    "job with mpirun, or srun with PMI",
                    r, s, l.launcher, l.rank, l.size));
  }
  ~MpiCommunicator() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&comm_);
  }
  const char* backend() const override { return "mpi"; }
  // Host copies of CUDA tensors: never inside a CUDA graph, not even for one rank.
  bool graph_safe() const override { return false; }

  void allreduce(const std::vector<Tensor>& ts, Op op) override {
    std::vector<float> mine;
    for (const Tensor& t : ts) {
      GAN_CHECK(t.dtype() == DType::F32, "dist: allreduce takes f32 tensors, got " + t.str());
      const std::vector<float> v = host_values(t);
      mine.insert(mine.end(), v.begin(), v.end());
    }
    const size_t n = mine.size();
    GAN_CHECK(n * size_t(size()) < size_t(1) << 31,
              fmt::format("dist: allreduce of {} values over {} ranks is too large", n, size()));
    std::vector<float> all(n * size_t(size()));
    MPI_Request req;
    check(
        MPI_Iallgather(mine.data(), int(n), MPI_FLOAT, all.data(), int(n), MPI_FLOAT, comm_, &req),
        "allreduce");
    wait(req, "allreduce");
    const double scale = op == Op::kMean ? 1.0 / size() : 1.0;
    for (size_t i = 0; i < n; ++i) {
      double s = 0;
      for (int r = 0; r < size(); ++r) s += all[size_t(r) * n + i];
      mine[i] = float(s * scale);
    }
    size_t at = 0;
    for (const Tensor& t : ts) {
      write_back(t, mine.data() + at);
      at += size_t(t.numel());
    }
  }

  void broadcast(const std::vector<Tensor>& ts, int root) override {
    std::vector<unsigned char> bytes;
    for (const Tensor& t : ts) {
      const std::vector<float> v = host_values(t);
      const auto* p = reinterpret_cast<const unsigned char*>(v.data());
      bytes.insert(bytes.end(), p, p + v.size() * sizeof(float));
    }
    GAN_CHECK(bytes.size() < size_t(1) << 31, "dist: broadcast too large");
    MPI_Request req;
    check(MPI_Ibcast(bytes.data(), int(bytes.size()), MPI_BYTE, root, comm_, &req), "broadcast");
    wait(req, "broadcast");
    size_t at = 0;
    for (const Tensor& t : ts) {
      write_back(t, reinterpret_cast<const float*>(bytes.data() + at));
      at += t.nbytes();
    }
  }

  int64_t max(int64_t v) override {
    int64_t out = 0;
    MPI_Request req;
    check(MPI_Iallreduce(&v, &out, 1, MPI_INT64_T, MPI_MAX, comm_, &req), "max");
    wait(req, "max");
    return out;
  }

  std::vector<uint64_t> gather_all(uint64_t v) override {
    std::vector<uint64_t> out(static_cast<size_t>(size()));
    MPI_Request req;
    check(MPI_Iallgather(&v, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, comm_, &req), "gather");
    wait(req, "gather");
    return out;
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  static std::vector<float> host_values(const Tensor& t) {
    if (t.is_cuda())
      GAN_CHECK(!cuda::capturing(),
                "dist: the mpi backend cannot run inside a CUDA graph capture (use nccl)");
    if (!t.is_cuda() && t.dtype() == DType::F32)
      return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
    GAN_CHECK(t.dtype() == DType::F32, "dist: f32 tensors only, got " + t.str());
    return t.to_vector();  // synchronises the engine stream
  }
  static void write_back(const Tensor& t, const float* v) {
    if (!t.is_cuda()) {
      std::memcpy(t.raw(), v, t.nbytes());
      return;
    }
    GAN_CUDA_CHECK(cudaMemcpyAsync(t.raw(), v, t.nbytes(), cudaMemcpyHostToDevice, cuda::stream()));
    cuda::synchronize();  // v is the caller's host buffer
  }
  void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    std::fprintf(stderr, "gan_train: rank %d: MPI %s failed: %.*s; aborting the job\n", rank(),
                 what, len, msg);
    abort(1);
  }
  // Tests the request until it completes; past the deadline the job is aborted.
  void wait(MPI_Request& req, const char* what) {
    wait_with_deadline(
        [&] {
          int done = 0;
          check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
          return done != 0;
        },
        what);
  }
  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi(const Launch& launch) {
  GAN_CHECK(launch.size == 1 || mpi_launcher(launch),
            fmt::format("dist: {} ranks from the {} launcher: MPI cannot start from it (use "
                        "mpirun, srun with PMI, or the nccl backend with --dist-init file:PATH)",
                        launch.size, launch.launcher));
  return std::make_unique<MpiCommunicator>(launch);
}

#endif

}  // namespace detail

void abort_job(int code) {
#ifdef GAN_HAVE_MPI
  int init = 0, fin = 0, size = 1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size <= 1) return;
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
#endif
  (void)code;
}

}  // namespace gan::dist
