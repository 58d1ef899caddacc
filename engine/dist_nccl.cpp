// The NCCL backend of engine/dist.h. libnccl.so.2 is opened at run time (a build without NCCL
// installed still runs on one GPU and with MPI). Tensor collectives are queued on the engine stream
// (so a CUDA graph captures them); host-side ones go through MPI when the job runs under MPI,
// else through NCCL and a wait with a deadline. A watchdog thread polls NCCL's asynchronous error
// and aborts the communicator and the process with a line naming the rank.
#include <dlfcn.h>

#include <algorithm>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "engine/device.h"
#include "engine/dist_backends.h"
#include "engine/error.h"

#if __has_include(<nccl.h>)
#include <nccl.h>
#define GAN_HAVE_NCCL_HEADER 1
#endif

namespace gan::dist::detail {

#ifndef GAN_HAVE_NCCL_HEADER

std::unique_ptr<Communicator> make_nccl(const Launch&, const std::string&) {
  throw Error("dist: this build has no nccl.h (CUDA's NCCL): the nccl backend is not available");
}

#else

namespace {

// The NCCL entry points the backend uses, from libnccl.so.2.
struct Nccl {
  decltype(&::ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&::ncclCommInitRank) init_rank = nullptr;
  decltype(&::ncclAllReduce) all_reduce = nullptr;
  decltype(&::ncclBroadcast) broadcast = nullptr;
  decltype(&::ncclAllGather) all_gather = nullptr;
  decltype(&::ncclGroupStart) group_start = nullptr;
  decltype(&::ncclGroupEnd) group_end = nullptr;
  decltype(&::ncclCommGetAsyncError) async_error = nullptr;
  decltype(&::ncclCommAbort) abort = nullptr;
  decltype(&::ncclCommDestroy) destroy = nullptr;
  decltype(&::ncclGetErrorString) error_string = nullptr;
};

const Nccl& nccl() {
  static const Nccl n = [] {
    void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_GLOBAL);
    GAN_CHECK(h, fmt::format("dist: cannot load NCCL (libnccl.so.2: {}); install CUDA's NCCL or "
                             "put it on LD_LIBRARY_PATH",
                             dlerror()));
    Nccl f;
    auto sym = [h](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      GAN_CHECK(fn, fmt::format("dist: libnccl.so.2 has no {}", name));
    };
    sym(f.get_unique_id, "ncclGetUniqueId");
    sym(f.init_rank, "ncclCommInitRank");
    sym(f.all_reduce, "ncclAllReduce");
    sym(f.broadcast, "ncclBroadcast");
    sym(f.all_gather, "ncclAllGather");
    sym(f.group_start, "ncclGroupStart");
    sym(f.group_end, "ncclGroupEnd");
    sym(f.async_error, "ncclCommGetAsyncError");
    sym(f.abort, "ncclCommAbort");
    sym(f.destroy, "ncclCommDestroy");
    sym(f.error_string, "ncclGetErrorString");
    return f;
  }();
  return n;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const Launch& l, const std::string& init) : Communicator(l) {
    int n = 0;
    GAN_CUDA_CHECK(cudaGetDeviceCount(&n));
    // One GPU per rank: the local rank's, unless the launcher left each rank one visible GPU.
    GAN_CUDA_CHECK(cudaSetDevice(l.local_rank % n));
    (void)cuda::context();
    if (init.empty() && l.size > 1) {
      GAN_CHECK(mpi_built() && mpi_launcher(l),
                fmt::format("dist: NCCL needs its peers' address: start the job with mpirun (or "
                            "srun with PMI) in a build with MPI, or give --dist-init file:PATH "
                            "(launcher: {})",
                            l.launcher));
      host_ = make_mpi(l);
      host_->set_timeout_s(timeout_s());
    }
    ncclUniqueId id{};
    if (rank() == 0) check(nccl().get_unique_id(&id), "ncclGetUniqueId");
    exchange_id(&id, init);
    check(nccl().init_rank(&comm_, size(), id, rank()), "ncclCommInitRank");
    scratch_ = Tensor::zeros(Shape{int64_t(2 * size())}, Device::CUDA, DType::F32);
    watchdog_ = std::thread([this] { watch(); });
  }
  ~NcclCommunicator() override {
    stop_ = true;
    if (watchdog_.joinable()) watchdog_.join();
    if (comm_) (void)nccl().destroy(comm_);
  }
  const char* backend() const override { return "nccl"; }
  bool graph_safe() const override { return true; }
  bool cheap_host_collectives() const override { return host_ != nullptr; }

  void allreduce(const std::vector<Tensor>& ts, Op op) override {
    allreduce_on(ts, op, cuda::stream());
  }

  void allreduce_on(const std::vector<Tensor>& ts, Op op, cudaStream_t stream) override {
    check(nccl().group_start(), "ncclGroupStart");
    for (const Tensor& t : ts) {
      GAN_CHECK(t.is_cuda() && t.dtype() == DType::F32,
                "dist: nccl allreduce takes cuda f32 tensors, got " + t.str());
      check(nccl().all_reduce(t.raw(), t.raw(), size_t(t.numel()), ncclFloat32,
                              op == Op::kMean ? ncclAvg : ncclSum, comm_, stream),
            "ncclAllReduce");
    }
    check(nccl().group_end(), "ncclGroupEnd");
  }

  void broadcast(const std::vector<Tensor>& ts, int root) override {
    check(nccl().group_start(), "ncclGroupStart");
    for (const Tensor& t : ts) {
      GAN_CHECK(t.is_cuda(), "dist: nccl broadcast takes cuda tensors, got " + t.str());
      check(nccl().broadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, comm_, cuda::stream()),
            "ncclBroadcast");
    }
    check(nccl().group_end(), "ncclGroupEnd");
  }

  int64_t max(int64_t v) override {
    if (host_) return host_->max(v);
    // Through the device: every rank's value gathered (raw bytes), the largest taken here.
    const std::vector<uint64_t> all = gather_all(uint64_t(v));
    int64_t m = v;
    for (uint64_t x : all) m = std::max<int64_t>(m, int64_t(x));
    return m;
  }

  std::vector<uint64_t> gather_all(uint64_t v) override {
    if (host_) return host_->gather_all(v);
    std::vector<uint64_t> out(static_cast<size_t>(size()));
    Tensor mine = Tensor::empty(Shape{2}, Device::CUDA);
    GAN_CUDA_CHECK(cudaMemcpyAsync(mine.raw(), &v, 8, cudaMemcpyHostToDevice, cuda::stream()));
    check(nccl().all_gather(mine.raw(), scratch_.raw(), 8, ncclUint8, comm_, cuda::stream()),
          "ncclAllGather");
    GAN_CUDA_CHECK(cudaMemcpyAsync(out.data(), scratch_.raw(), 8 * out.size(),
                                   cudaMemcpyDeviceToHost, cuda::stream()));
    wait_stream("gather");
    return out;
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    if (comm_) (void)nccl().abort(comm_);
    comm_ = nullptr;
    if (host_) host_->abort(code);
    std::_Exit(code);
  }

 private:
  void check(ncclResult_t r, const char* what) {
    if (r == ncclSuccess) return;
    throw Error(fmt::format("dist: rank {}: {} failed: {}", rank(), what, nccl().error_string(r)));
  }

  // Rank 0's unique id to every rank: by MPI, or through the file of init (written atomically by
  // rank 0, waited for by the others; the path must be new for each job).
  void exchange_id(ncclUniqueId* id, const std::string& init) {
    static_assert(sizeof(ncclUniqueId) % sizeof(float) == 0);
    if (size() == 1) return;
    if (host_) {
      Tensor t = Tensor::empty(Shape{int64_t(sizeof(ncclUniqueId) / sizeof(float))});
      std::memcpy(t.raw(), id, sizeof(ncclUniqueId));
      host_->broadcast({t}, 0);
      std::memcpy(id, t.raw(), sizeof(ncclUniqueId));
      return;
    }
    file_rendezvous(rank(), init.substr(5), id, sizeof(ncclUniqueId), timeout_s());
  }

  // The engine stream's work done, or the job aborted past the deadline or on an NCCL error.
  void wait_stream(const char* what) {
    wait_with_deadline(
        [] {
          const cudaError_t e = cudaStreamQuery(cuda::stream());
          if (e != cudaErrorNotReady) GAN_CUDA_CHECK(e);
          return e == cudaSuccess;
        },
        what);
  }

  // NCCL reports a peer's failure asynchronously: end this rank with a line, not a hang.
  void watch() {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      ncclResult_t r = ncclSuccess;
      if (!comm_ || nccl().async_error(comm_, &r) != ncclSuccess) continue;
      if (r != ncclSuccess && r != ncclInProgress) {
        std::fprintf(stderr,
                     "gan_train: rank %d: NCCL error: %s (another rank failed?); aborting\n",
                     rank(), nccl().error_string(r));
        abort(1);
      }
    }
  }

  ncclComm_t comm_ = nullptr;
  std::unique_ptr<Communicator> host_;
  Tensor scratch_;
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl(const Launch& launch, const std::string& init) {
  return std::make_unique<NcclCommunicator>(launch, init);
}

#endif

}  // namespace gan::dist::detail
