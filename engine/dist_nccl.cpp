// The NCCL backend of engine/dist.h. libnccl.so.2 is opened at run time (a build without NCCL
// installed still runs on one GPU and with MPI); the interpreter build uses the interpreter's host
// NCCL instead, so this code runs on CPU ranks in CI. Tensor collectives are queued on the engine
// stream (so a CUDA graph captures them); host-side ones go through MPI when the job runs under
// MPI, else through NCCL and a wait with a deadline. Start-up has a deadline. A watchdog thread
// polls NCCL's asynchronous error and the work the trainer marks (begin_work/end_work: a step, a
// graph replay) and ends the rank with a line naming it and the cause when a peer failed or the
// work has not completed within the deadline (a peer stopped). docs/distributed.md.
#include <dlfcn.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
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

// The NCCL entry points the backend uses: from libnccl.so.2, or in the interpreter build from the
// interpreter's host NCCL (kernels/interpreter/nccl_api.cpp, linked into the program).
struct Nccl {
  decltype(&::ncclGetVersion) get_version = nullptr;
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
  decltype(&::ncclGetLastError) last_error = nullptr;  // NCCL >= 2.13
  const char* from = "";
};

const Nccl& nccl() {
  static const Nccl n = [] {
    Nccl f;
    void* h = nullptr;
    if (cuda_is_interpreter()) {
      h = dlopen(nullptr, RTLD_NOW);
      f.from = "the interpreter's host NCCL";
    } else {
      h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
      if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_GLOBAL);
      f.from = "libnccl.so.2";
    }
    GAN_CHECK(h, fmt::format("dist: cannot load NCCL (libnccl.so.2: {}); install CUDA's NCCL or "
                             "put it on LD_LIBRARY_PATH",
                             dlerror()));
    auto sym = [h](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      GAN_CHECK(fn, fmt::format("dist: libnccl.so.2 has no {} (NCCL older than 2.13?)", name));
    };
    sym(f.get_version, "ncclGetVersion");
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
    sym(f.last_error, "ncclGetLastError");
    return f;
  }();
  return n;
}

// The oldest NCCL the backend accepts: ncclAvg needs 2.10.3, capture in a CUDA graph 2.9, graph
// and eager calls on one communicator 2.13 (the first step runs eager, the rest replay a graph).
constexpr int kMinVersion = 21300;

std::string version_string(int v) {
  return v >= 10000 ? fmt::format("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
                    : fmt::format("{}.{}.{}", v / 1000, v / 100 % 10, v % 100);
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const Launch& l, const std::string& init) : Communicator(l) {
    select_device(l);
    (void)cuda::context();
    GAN_CUDA_CHECK(cudaGetDevice(&device_));
    int version = 0;
    GAN_CHECK(nccl().get_version(&version) == ncclSuccess, "dist: ncclGetVersion failed");
    GAN_CHECK(version >= kMinVersion,
              fmt::format("dist: NCCL {} ({}) is too old: the nccl backend needs 2.13 or newer "
                          "(ncclAvg, collectives captured in CUDA graphs and mixed with eager "
                          "ones)",
                          version_string(version), nccl().from));
    version_ = version;
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
    init_with_deadline(id);
    if (rank() == 0 && !init.empty() && size() > 1)
      (void)std::remove(init.substr(5).c_str());  // every rank holds the id now
    // 8 bytes of this rank's value, then 8 per rank gathered.
    scratch_ = Tensor::zeros(Shape{int64_t(2 * (size() + 1))}, Device::CUDA, DType::F32);
    GAN_CUDA_CHECK(cudaMallocHost(&pinned_, sizeof(uint64_t) * size_t(size() + 1)));
    watchdog_ = std::thread([this] { watch(); });  // before the first collective
    try {
      check_one_gpu_per_rank();
    } catch (...) {
      stop_ = true;
      watchdog_.join();
      throw;
    }
  }
  ~NcclCommunicator() override {
    stop_ = true;
    if (watchdog_.joinable()) watchdog_.join();
    if (comm_) {
      // ncclCommDestroy waits for the other ranks: a rank that leaves by an exception (its peers
      // still inside a step) aborts instead, which also tells the peers (a remote error). First,
      // so that nothing below waits on work stuck on a dead peer.
      std::lock_guard<std::mutex> lock(call_mu_);
      aborted_ = true;
      if (std::uncaught_exceptions() > uncaught_at_start_)
        (void)nccl().abort(comm_);
      else
        (void)nccl().destroy(comm_);
    }
    for (cudaEvent_t e : free_events_) (void)cudaEventDestroy(e);
    for (Work& w : pending_)
      if (w.event) (void)cudaEventDestroy(w.event);
    if (pinned_) (void)cudaFreeHost(pinned_);
  }
  const char* backend() const override { return "nccl"; }
  bool graph_safe() const override { return true; }
  bool cheap_host_collectives() const override { return host_ != nullptr; }
  int nccl_version() const { return version_; }

  void allreduce(const std::vector<Tensor>& ts, Op op) override {
    allreduce_on(ts, op, cuda::stream());
  }

  void allreduce_on(const std::vector<Tensor>& ts, Op op, cudaStream_t stream) override {
    for (const Tensor& t : ts)  // before the group opens: a throw must not leave it open
      GAN_CHECK(t.defined() && t.is_cuda() && t.dtype() == DType::F32,
                "dist: nccl allreduce takes cuda f32 tensors, got " +
                    (t.defined() ? t.str() : std::string("an undefined tensor")));
    std::lock_guard<std::mutex> lock(call_mu_);
    Group g(*this);
    for (const Tensor& t : ts)
      check(nccl().all_reduce(t.raw(), t.raw(), size_t(t.numel()), ncclFloat32,
                              op == Op::kMean ? ncclAvg : ncclSum, comm_, stream),
            "ncclAllReduce");
    g.end();
  }

  void broadcast(const std::vector<Tensor>& ts, int root) override {
    for (const Tensor& t : ts)
      GAN_CHECK(t.defined() && t.is_cuda(),
                "dist: nccl broadcast takes cuda tensors, got " +
                    (t.defined() ? t.str() : std::string("an undefined tensor")));
    std::optional<WorkWatch> watch;
    if (!cuda::capturing()) watch.emplace(*this, "a broadcast");
    std::lock_guard<std::mutex> lock(call_mu_);
    Group g(*this);
    for (const Tensor& t : ts)
      check(nccl().broadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, comm_, cuda::stream()),
            "ncclBroadcast");
    g.end();
  }

  int64_t max(int64_t v) override {
    if (host_) return host_->max(v);
    // Through the device: every rank's value gathered (raw bytes), the largest taken here.
    const std::vector<uint64_t> all = gather_all(uint64_t(v));
    int64_t m = v;
    for (uint64_t x : all) m = std::max<int64_t>(m, int64_t(x));
    return m;
  }

  // Without MPI: through the device, the copies to and from pinned memory (asynchronous, so the
  // wait below has its deadline).
  std::vector<uint64_t> gather_all(uint64_t v) override {
    if (host_) return host_->gather_all(v);
    GAN_CHECK(!cuda::capturing(), "dist: gather_all cannot run inside a CUDA graph capture");
    WorkWatch watch(*this, "a host collective (gather)");  // the device's side of it
    pinned_[0] = v;
    GAN_CUDA_CHECK(
        cudaMemcpyAsync(scratch_.raw(), pinned_, 8, cudaMemcpyHostToDevice, cuda::stream()));
    {
      std::lock_guard<std::mutex> lock(call_mu_);
      check(nccl().all_gather(scratch_.raw(), static_cast<char*>(scratch_.raw()) + 8, 8, ncclUint8,
                              comm_, cuda::stream()),
            "ncclAllGather");
    }
    GAN_CUDA_CHECK(cudaMemcpyAsync(pinned_ + 1, static_cast<char*>(scratch_.raw()) + 8,
                                   8 * size_t(size()), cudaMemcpyDeviceToHost, cuda::stream()));
    wait_stream("gather");
    return std::vector<uint64_t>(pinned_ + 1, pinned_ + 1 + size());
  }

  void begin_work(const char* what) override {
    std::lock_guard<std::mutex> lock(work_mu_);
    pending_.push_back(Work{std::chrono::steady_clock::now(), what, nullptr});
  }

  void end_work() override {
    cudaEvent_t e = nullptr;
    {
      std::lock_guard<std::mutex> lock(work_mu_);
      if (!free_events_.empty()) e = free_events_.back(), free_events_.pop_back();
    }
    if (!e) GAN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    GAN_CUDA_CHECK(cudaEventRecord(e, cuda::stream()));
    std::lock_guard<std::mutex> lock(work_mu_);
    for (auto it = pending_.rbegin(); it != pending_.rend(); ++it)
      if (!it->event) {
        it->event = e;
        return;
      }
    free_events_.push_back(e);
  }

  void cancel_work() override {
    std::lock_guard<std::mutex> lock(work_mu_);
    for (auto it = pending_.rbegin(); it != pending_.rend(); ++it)
      if (!it->event) {
        pending_.erase(std::next(it).base());
        return;
      }
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    call_mu_.lock();  // held until the process ends: nothing touches the communicator again
    if (!aborted_.exchange(true) && comm_) (void)nccl().abort(comm_);
    if (host_) host_->abort(code);  // MPI_Abort: this is the thread that initialised MPI
    std::_Exit(code);
  }

 private:
  struct Work {
    std::chrono::steady_clock::time_point t0;
    const char* what;
    cudaEvent_t event;  // recorded after the work (null while it is being enqueued)
  };

  // ncclGroupStart .. ncclGroupEnd, closed also when a call inside throws.
  struct Group {
    explicit Group(NcclCommunicator& c) : c_(c) {
      c_.check(nccl().group_start(), "ncclGroupStart");
    }
    void end() {
      open_ = false;
      c_.check(nccl().group_end(), "ncclGroupEnd");
    }
    ~Group() {
      if (open_) (void)nccl().group_end();
    }
    NcclCommunicator& c_;
    bool open_ = true;
  };

  void check(ncclResult_t r, const char* what) {
    if (r == ncclSuccess) return;
    const char* detail = nccl().last_error ? nccl().last_error(comm_) : "";
    throw Error(fmt::format("dist: rank {}: {} failed: {}{}{}", rank(), what,
                            nccl().error_string(r), detail && *detail ? ": " : "",
                            detail ? detail : ""));
  }

  // Rank 0's unique id to every rank: by MPI, or through the file of init (written atomically by
  // rank 0, waited for by the others, removed once every rank has joined).
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

  // ncclCommInitRank waits for every rank without a deadline: it runs on a helper thread while
  // this one waits up to timeout_s(). Past it the rank ends (the helper is still inside NCCL, so
  // nothing of NCCL's is touched: process exit releases it).
  void init_with_deadline(const ncclUniqueId& id) {
    struct Init {
      std::atomic<bool> done{false};
      ncclResult_t result = ncclSuccess;
      ncclComm_t comm = nullptr;
    };
    auto st = std::make_shared<Init>();
    const int n = size(), r = rank(), dev = device_;
    std::thread([st, n, r, id, dev] {
      (void)cudaSetDevice(dev);  // the communicator belongs to this rank's GPU
      st->result = nccl().init_rank(&st->comm, n, id, r);
      st->done.store(true, std::memory_order_release);
    }).detach();
    const auto t0 = std::chrono::steady_clock::now();
    while (!st->done.load(std::memory_order_acquire)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s > timeout_s()) {
        std::fprintf(stderr,
                     "gan_train: rank %d: NCCL start-up: not all %d ranks joined within %.0f s "
                     "(a rank is missing, or its rendezvous id is stale; $GAN_DIST_TIMEOUT); "
                     "ending this rank\n",
                     r, n, s);
        std::fflush(stdout);
        std::fflush(stderr);
        if (host_) host_->abort(1);
        std::_Exit(1);
      }
    }
    comm_ = st->comm;
    check(st->result, "ncclCommInitRank");
  }

  // NCCL does not support two ranks on one GPU (it may hang): each rank's GPU (its UUID on its
  // host) must differ. The interpreter's device is each process's own.
  void check_one_gpu_per_rank() {
    if (size() == 1 || cuda_is_interpreter()) return;
    int dev = 0;
    GAN_CUDA_CHECK(cudaGetDevice(&dev));
    cudaDeviceProp p{};
    GAN_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    char host[256] = {};
    (void)gethostname(host, sizeof host - 1);
    const uint64_t h = fnv1a(&p.uuid, sizeof p.uuid, fnv1a(host, std::strlen(host)));
    const std::vector<uint64_t> all = gather_all(h);
    for (int a = 0; a < size(); ++a)
      for (int b = a + 1; b < size(); ++b)
        GAN_CHECK(all[size_t(a)] != all[size_t(b)],
                  fmt::format("dist: ranks {} and {} share one GPU (NCCL needs one GPU per rank: "
                              "start at most as many ranks per node as it has GPUs)",
                              a, b));
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

  // Ends this process from the watchdog: the communicator is aborted (which tells the peers)
  // unless the training thread is inside an NCCL call (then the process exit alone releases it),
  // and the process exits without MPI (this thread may not call it); mpirun then ends the job.
  [[noreturn]] void fail_from_watchdog(const std::string& why) {
    std::fprintf(stderr, "gan_train: rank %d: %s; aborting\n", rank(), why.c_str());
    std::fflush(stderr);
    std::fflush(stdout);
    // ncclCommAbort may itself block (a stuck device): the process ends regardless.
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::seconds(10));
      std::_Exit(1);
    }).detach();
    if (call_mu_.try_lock() && !aborted_.exchange(true)) (void)nccl().abort(comm_);
    std::_Exit(1);
  }

  // NCCL reports a peer's failure asynchronously, and a stopped peer shows only as work that
  // never completes: either ends this rank with a line, not a hang.
  void watch() {
    (void)cudaSetDevice(device_);
    cudaStreamCaptureMode relaxed = cudaStreamCaptureModeRelaxed;  // queries during a capture
    (void)cudaThreadExchangeStreamCaptureMode(&relaxed);
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (aborted_) return;  // abort() is ending the process; the communicator is gone
      ncclResult_t r = ncclSuccess;
      if (nccl().async_error(comm_, &r) == ncclSuccess && r != ncclSuccess && r != ncclInProgress) {
        const char* detail = nccl().last_error ? nccl().last_error(comm_) : "";
        fail_from_watchdog(fmt::format("NCCL error: {}{}{} (another rank failed?)",
                                       nccl().error_string(r), detail && *detail ? ": " : "",
                                       detail ? detail : ""));
      }
      std::unique_lock<std::mutex> lock(work_mu_);
      while (!pending_.empty() && pending_.front().event) {
        const cudaError_t e = cudaEventQuery(pending_.front().event);
        if (e == cudaErrorNotReady) break;
        if (e != cudaSuccess)
          fail_from_watchdog(fmt::format("CUDA error during {}: {}", pending_.front().what,
                                         cudaGetErrorString(e)));
        free_events_.push_back(pending_.front().event);
        pending_.pop_front();
      }
      if (pending_.empty()) continue;
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - pending_.front().t0)
              .count();
      if (s > timeout_s())
        fail_from_watchdog(
            fmt::format("{} has not completed in {:.0f} s (another rank stopped, hangs or died; "
                        "$GAN_DIST_TIMEOUT)",
                        pending_.front().what, s));
    }
  }

  ncclComm_t comm_ = nullptr;  // set before the watchdog starts, never changed while it runs
  int version_ = 0, device_ = 0;
  std::unique_ptr<Communicator> host_;
  Tensor scratch_;
  uint64_t* pinned_ = nullptr;
  std::mutex call_mu_;  // held by the training thread around NCCL calls
  std::mutex work_mu_;
  std::deque<Work> pending_;
  std::vector<cudaEvent_t> free_events_;
  std::atomic<bool> stop_{false}, aborted_{false};
  const int uncaught_at_start_ = std::uncaught_exceptions();
  std::thread watchdog_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl(const Launch& launch, const std::string& init) {
  return std::make_unique<NcclCommunicator>(launch, init);
}

#endif

}  // namespace gan::dist::detail
