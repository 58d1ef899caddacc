// The subset of NCCL's API the engine calls (engine/dist_nccl.cpp), for the interpreter build:
// ranks are processes of one machine that meet in a POSIX shared-memory segment named by the
// unique id. Collectives are stream work like the interpreter's kernels (they run when enqueued,
// or are recorded into a graph being captured and run at its replays), so the NCCL backend's own
// code runs unchanged on CPU ranks in CI: rendezvous, communication streams, graph capture,
// asynchronous errors, abort. docs/distributed.md describes it.
//
// Semantics kept from NCCL: calls between ncclGroupStart and ncclGroupEnd are issued at the
// outermost ncclGroupEnd; a collective waits for every rank to reach it; a failed peer is reported
// through ncclCommGetAsyncError (ncclRemoteError) while the collective stays blocked until the
// communicator is aborted, as a kernel would; ncclCommDestroy waits for every rank to destroy;
// ncclCommAbort returns at once and tells the peers. A non-blocking communicator (config.blocking
// = 0) initialises in the background: ncclCommGetAsyncError says ncclInProgress until every rank
// has joined. Reductions sum float32 in double in rank order, so every rank gets the same bits
// (the MPI backend's arithmetic).
//
// Fault injection for the tests: GAN_NCCL_HOST_FAULT=RANK:KIND:N makes rank RANK's N-th
// collective fail (KIND error: an asynchronous ncclSystemError) or hang (KIND hang: it never
// completes, as a stopped GPU); GAN_NCCL_HOST_VERSION=CODE is what ncclGetVersion reports.
#include <fcntl.h>
#include <nccl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/interpreter/runtime_internal.h"

namespace {

constexpr uint64_t kIdMagic = 0x3164697363636e67ull;  // "gnccsid1"
constexpr int kMaxRanks = 64;
constexpr size_t kSlotBytes = size_t(1) << 18;  // per rank and round; larger buffers in rounds

struct alignas(64) RankState {
  std::atomic<int32_t> pid;
  std::atomic<uint64_t> bytes;     // the size of the collective of its last posted round
  std::atomic<uint64_t> posted;    // the last round whose data this rank has written
  std::atomic<uint64_t> consumed;  // the last round this rank has finished reading
  std::atomic<int32_t> destroyed;
};

struct Segment {
  std::atomic<int32_t> nranks;
  std::atomic<int32_t> joined;
  std::atomic<int32_t> claimed;  // the first failure's claim (its message is being written)
  std::atomic<int32_t> failed;   // 0, or 1 + the first rank that failed or aborted
  std::atomic<int32_t> failed_code;
  char failure[200];  // written before failed is published
  RankState ranks[kMaxRanks];
};

struct IdData {
  uint64_t magic;
  uint64_t token;
};
static_assert(sizeof(IdData) <= sizeof(ncclUniqueId));

size_t segment_bytes(int nranks) {
  return (sizeof(Segment) + 4095) / 4096 * 4096 + size_t(nranks) * kSlotBytes;
}

}  // namespace

struct ncclComm {
  int rank = 0, nranks = 0;
  std::string name;
  Segment* seg = nullptr;
  size_t bytes = 0;
  uint64_t round = 0;
  long ops = 0;
  std::atomic<int> async{ncclSuccess};
  std::atomic<bool> aborted{false};
  std::thread init_thread;
  std::string error;  // the last error, for ncclGetLastError
  char* slot(int r) const {
    return reinterpret_cast<char*>(seg) + (sizeof(Segment) + 4095) / 4096 * 4096 +
           size_t(r) * kSlotBytes;
  }
};

namespace {

thread_local int tls_group_depth = 0;
thread_local std::vector<std::pair<cudaStream_t, std::function<void()>>> tls_group;
std::string g_last_error;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Whether process pid has ended (gone, or a zombie its parent has not reaped).
bool process_ended(int pid) {
  if (pid <= 0) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return true;
  const size_t close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return true;
  const char state = line[close + 2];
  return state == 'Z' || state == 'X';
}

// Records this rank's failure for the peers (the first failure wins) and as its own async error.
void fail(ncclComm* c, ncclResult_t code, const std::string& why) {
  c->error = why;
  g_last_error = why;
  int expected = 0;
  if (c->seg && c->seg->claimed.compare_exchange_strong(expected, 1)) {
    std::snprintf(c->seg->failure, sizeof c->seg->failure, "%s", why.c_str());
    c->seg->failed_code.store(code);
    c->seg->failed.store(c->rank + 1);  // publishes the message
  }
  c->async.store(code);
}

// Waits until ready(rank state) holds for every rank. A peer that failed, aborted or ended makes
// this rank's async error ncclRemoteError; from then on (and after a local failure) the wait
// blocks until the communicator is aborted, as an NCCL kernel waiting for a peer would (or, with
// block false, returns false).
template <class Ready>
bool wait_all(ncclComm* c, Ready ready, bool block = true) {
  const auto t0 = std::chrono::steady_clock::now();
  auto last_check = t0;
  for (long polls = 0;; ++polls) {
    if (c->aborted.load()) return false;
    if (!block && c->async.load() != ncclSuccess) return false;
    if (c->async.load() == ncclSuccess) {
      bool all = true;
      for (int r = 0; r < c->nranks && all; ++r) all = ready(c->seg->ranks[r]);
      if (all) return true;
      const int f = c->seg->failed.load() - 1;
      if (f >= 0 && f != c->rank) {
        c->error = std::string("rank ") + std::to_string(f) + ": " + c->seg->failure;
        g_last_error = c->error;
        c->async.store(ncclRemoteError);
      }
      if (std::chrono::steady_clock::now() - last_check > std::chrono::milliseconds(100)) {
        last_check = std::chrono::steady_clock::now();
        for (int r = 0; r < c->nranks; ++r)
          if (r != c->rank && process_ended(c->seg->ranks[r].pid.load())) {
            c->error = "rank " + std::to_string(r) + " (pid " +
                       std::to_string(c->seg->ranks[r].pid.load()) + ") has exited";
            g_last_error = c->error;
            c->async.store(ncclRemoteError);
            break;
          }
      }
    }
    if (polls > 200)
      std::this_thread::sleep_for(std::chrono::microseconds(seconds_since(t0) > 0.1 ? 1000 : 20));
  }
}

// The test's fault for this rank's next collective: 0 none, 1 error, 2 hang.
int injected_fault(ncclComm* c) {
  ++c->ops;
  const char* e = std::getenv("GAN_NCCL_HOST_FAULT");
  if (!e || !*e) return 0;
  int rank = -1;
  long at = 0;
  char kind[16] = {};
  if (std::sscanf(e, "%d:%15[a-z]:%ld", &rank, kind, &at) != 3 || rank != c->rank || at != c->ops)
    return 0;
  return std::strcmp(kind, "error") == 0 ? 1 : std::strcmp(kind, "hang") == 0 ? 2 : 0;
}

// One collective: rounds of at most kSlotBytes per rank; each rank posts its piece, waits for all
// pieces, combines them (combine(offset, length)), and waits until every rank has read them.
void exchange(ncclComm* c, const void* mine, size_t n,
              const std::function<void(size_t, size_t)>& combine) {
  switch (injected_fault(c)) {
    case 1:
      fail(c, ncclSystemError, "injected error (GAN_NCCL_HOST_FAULT)");
      (void)wait_all(c, [](const RankState&) { return false; });
      return;
    case 2:
      while (!c->aborted.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return;
    default:
      break;
  }
  size_t off = 0;
  do {
    const size_t len = std::min(kSlotBytes, n - off);
    const uint64_t r = ++c->round;
    if (len) std::memcpy(c->slot(c->rank), static_cast<const char*>(mine) + off, len);
    c->seg->ranks[c->rank].bytes.store(n, std::memory_order_relaxed);
    c->seg->ranks[c->rank].posted.store(r, std::memory_order_release);
    if (!wait_all(
            c, [r](const RankState& s) { return s.posted.load(std::memory_order_acquire) >= r; }))
      return;
    for (int k = 0; k < c->nranks; ++k)  // every rank must call the same collective
      if (c->seg->ranks[k].bytes.load(std::memory_order_relaxed) != n) {
        fail(c, ncclInvalidUsage,
             "rank " + std::to_string(c->rank) + " called a collective of " + std::to_string(n) +
                 " bytes, rank " + std::to_string(k) + " one of " +
                 std::to_string(c->seg->ranks[k].bytes.load()));
        (void)wait_all(c, [](const RankState&) { return false; });
        return;
      }
    combine(off, len);
    c->seg->ranks[c->rank].consumed.store(r, std::memory_order_release);
    if (!wait_all(
            c, [r](const RankState& s) { return s.consumed.load(std::memory_order_acquire) >= r; }))
      return;
    off += len;
  } while (off < n);
}

size_t type_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    default:
      return 8;
  }
}

// Enqueues work on stream now, or at the outermost ncclGroupEnd.
ncclResult_t issue(ncclComm* c, cudaStream_t stream, const char* what, std::function<void()> work) {
  if (!c) return ncclInvalidArgument;
  if (c->aborted.load()) return ncclInvalidUsage;
  if (c->async.load() == ncclInProgress) return ncclInvalidUsage;  // still initialising
  auto run = [stream, what, work = std::move(work)] {
    (void)gan::interp::submit(stream, what, [work] {
      work();
      return cudaSuccess;
    });
  };
  if (tls_group_depth > 0)
    tls_group.emplace_back(stream, std::move(run));
  else
    run();
  return ncclSuccess;
}

// Joins the segment: maps it, registers this rank, waits for all ranks.
void join(ncclComm* c) {
  const int fd = shm_open(c->name.c_str(), O_CREAT | O_RDWR, 0600);
  if (fd < 0 || ftruncate(fd, off_t(c->bytes)) != 0) {
    if (fd >= 0) close(fd);
    fail(c, ncclSystemError,
         "cannot create shared memory " + c->name + ": " + std::strerror(errno));
    return;
  }
  void* p = mmap(nullptr, c->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    fail(c, ncclSystemError, "cannot map " + c->name + ": " + std::strerror(errno));
    return;
  }
  c->seg = static_cast<Segment*>(p);
  int32_t expected = 0;
  if (!c->seg->nranks.compare_exchange_strong(expected, c->nranks) && expected != c->nranks) {
    fail(c, ncclInvalidArgument,
         "rank " + std::to_string(c->rank) + " was given " + std::to_string(c->nranks) +
             " ranks, another rank " + std::to_string(expected));
    shm_unlink(c->name.c_str());
    return;
  }
  c->seg->ranks[c->rank].pid.store(int32_t(getpid()));
  if (c->seg->joined.fetch_add(1) + 1 == c->nranks) shm_unlink(c->name.c_str());
  while (!c->aborted.load() && c->seg->joined.load() < c->nranks)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (c->aborted.load()) return;
  if (const char* e = std::getenv("GAN_NCCL_HOST_FAULT");
      e && std::atoi(e) == c->rank && std::strstr(e, ":inithang"))
    while (!c->aborted.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  int in_progress = ncclInProgress;
  c->async.compare_exchange_strong(in_progress, ncclSuccess);  // unless aborted or failed meanwhile
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return ncclInvalidArgument;
  const char* v = std::getenv("GAN_NCCL_HOST_VERSION");
  *version = v && *v ? std::atoi(v) : NCCL_VERSION_CODE;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error";
    case ncclSystemError:
      return "unhandled system error";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  return comm && !comm->error.empty() ? comm->error.c_str() : g_last_error.c_str();
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return ncclInvalidArgument;
  std::memset(id, 0, sizeof *id);
  std::random_device rd;
  IdData d{kIdMagic, (uint64_t(rd()) << 32 | rd()) ^ uint64_t(getpid()) ^
                         uint64_t(std::chrono::steady_clock::now().time_since_epoch().count())};
  std::memcpy(id, &d, sizeof d);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t* config) {
  if (!comm || nranks < 1 || nranks > kMaxRanks || rank < 0 || rank >= nranks)
    return ncclInvalidArgument;
  IdData d;
  std::memcpy(&d, &id, sizeof d);
  if (d.magic != kIdMagic) {
    g_last_error = "the unique id was not made by ncclGetUniqueId";
    return ncclInvalidArgument;
  }
  auto* c = new ncclComm;
  c->rank = rank;
  c->nranks = nranks;
  char name[64];
  std::snprintf(name, sizeof name, "/gan-nccl-%016llx", (unsigned long long)d.token);
  c->name = name;
  c->bytes = segment_bytes(nranks);
  c->async.store(ncclInProgress);
  *comm = c;
  const bool blocking = !config || config->blocking != 0;
  if (!blocking) {
    c->init_thread = std::thread([c] { join(c); });
    return ncclInProgress;
  }
  join(c);
  return ncclResult_t(c->async.load());
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* err) {
  if (!comm || !err) return ncclInvalidArgument;
  *err = ncclResult_t(comm->async.load());
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++tls_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (tls_group_depth == 0) return ncclInvalidUsage;
  if (--tls_group_depth > 0) return ncclSuccess;
  auto calls = std::move(tls_group);
  tls_group.clear();
  for (auto& [stream, run] : calls) run();
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (type != ncclFloat32 || (op != ncclSum && op != ncclAvg)) {
    g_last_error = "the interpreter's NCCL reduces float32 by sum or average only";
    return ncclInvalidArgument;
  }
  return issue(comm, stream, "ncclAllReduce", [=] {
    std::vector<float> mine(static_cast<const float*>(send),
                            static_cast<const float*>(send) + count);
    const double scale = op == ncclAvg ? 1.0 / comm->nranks : 1.0;
    exchange(comm, mine.data(), count * 4, [&](size_t off, size_t len) {
      for (size_t i = 0; i < len / 4; ++i) {
        double s = 0;
        for (int r = 0; r < comm->nranks; ++r)
          s += reinterpret_cast<const float*>(comm->slot(r))[i];
        static_cast<float*>(recv)[off / 4 + i] = float(s * scale);
      }
    });
  });
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
  if (comm && (root < 0 || root >= comm->nranks)) return ncclInvalidArgument;
  const size_t bytes = count * type_bytes(type);
  return issue(comm, stream, "ncclBroadcast", [=] {
    std::vector<char> mine(static_cast<const char*>(send), static_cast<const char*>(send) + bytes);
    exchange(comm, mine.data(), bytes, [&](size_t off, size_t len) {
      std::memcpy(static_cast<char*>(recv) + off, comm->slot(root), len);
    });
  });
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = count * type_bytes(type);
  return issue(comm, stream, "ncclAllGather", [=] {
    std::vector<char> mine(static_cast<const char*>(send), static_cast<const char*>(send) + bytes);
    exchange(comm, mine.data(), bytes, [&](size_t off, size_t len) {
      for (int r = 0; r < comm->nranks; ++r)
        std::memcpy(static_cast<char*>(recv) + size_t(r) * bytes + off, comm->slot(r), len);
    });
  });
}

// Returns at once; the peers see this rank's failure. The mapping stays until the process ends
// (another thread may still be waiting in it).
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  if (comm->seg && !comm->aborted.load()) fail(comm, ncclRemoteError, "aborted its communicator");
  comm->aborted.store(true);
  shm_unlink(comm->name.c_str());  // no rank can join any more (the name may be gone already)
  if (comm->init_thread.joinable()) comm->init_thread.detach();
  return ncclSuccess;
}

// Waits until every rank has destroyed its communicator (or one failed), then frees it.
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  if (comm->init_thread.joinable()) comm->init_thread.join();
  if (comm->seg && !comm->aborted.load()) {
    comm->seg->ranks[comm->rank].destroyed.store(1);
    (void)wait_all(
        comm, [](const RankState& s) { return s.destroyed.load() != 0; }, false);
  }
  if (comm->aborted.load()) return ncclSuccess;  // leaked: see ncclCommAbort
  if (comm->seg) munmap(comm->seg, comm->bytes);
  delete comm;
  return ncclSuccess;
}

}  // extern "C"
