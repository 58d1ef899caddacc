// Data parallel (engine/dist.h): the launcher's environment, the loader's shards of a global batch,
// and synchronised batch norm on ranks simulated by threads (a communicator whose collectives meet
// at a barrier) against one batch norm over the whole batch. The multi-process runs (mpirun, 1-3
// ranks, resume, faults) are tests/scripts/test_distributed.py.
#include <unistd.h>

#include <barrier>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include "engine/device.h"
#include "engine/dist.h"
#include "engine/error.h"
#include "engine/grad.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "tests/harness.h"
#include "tools/io/data.h"

using namespace gan;

namespace {

// Sets environment variables for its lifetime (and clears the launchers' others).
struct Env {
  std::vector<std::string> names;
  explicit Env(const std::vector<std::pair<const char*, const char*>>& vars) {
    for (const char* n :
         {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_RANK",
          "RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
          "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"})
      if (std::getenv(n)) saved.emplace_back(n, std::getenv(n)), unsetenv(n);
    for (auto [k, v] : vars) setenv(k, v, 1), names.emplace_back(k);
  }
  ~Env() {
    for (const auto& n : names) unsetenv(n.c_str());
    for (const auto& [k, v] : saved) setenv(k.c_str(), v.c_str(), 1);
  }
  std::vector<std::pair<std::string, std::string>> saved;
};

// W ranks as W threads of one process: each collective deposits every rank's values, waits for
// all, and reduces them in rank order (as the MPI backend does).
struct ThreadWorld {
  explicit ThreadWorld(int w) : size(w), sync(w), slots(size_t(w)) {}
  int size;
  std::barrier<> sync;
  std::vector<std::vector<float>> slots;
};

class ThreadComm final : public dist::Communicator {
 public:
  ThreadComm(ThreadWorld& w, int rank)
      : Communicator(dist::Launch{rank, w.size, rank, "threads"}), w_(w) {}
  const char* backend() const override { return "threads"; }
  int allreduces = 0;
  void allreduce(const std::vector<Tensor>& ts, Op op) override {
    ++allreduces;
    std::vector<float> mine;
    for (const Tensor& t : ts) {
      const std::vector<float> v = t.to_vector();
      mine.insert(mine.end(), v.begin(), v.end());
    }
    w_.slots[size_t(rank())] = mine;
    w_.sync.arrive_and_wait();
    for (size_t i = 0; i < mine.size(); ++i) {
      double s = 0;
      for (int r = 0; r < size(); ++r) s += w_.slots[size_t(r)][i];
      mine[i] = float(op == Op::kMean ? s / size() : s);
    }
    w_.sync.arrive_and_wait();  // everyone has read the slots
    size_t at = 0;
    for (const Tensor& t : ts) {
      t.copy_from(Tensor::from_vector(
          std::vector<float>(mine.begin() + long(at), mine.begin() + long(at + size_t(t.numel()))),
          t.shape()));
      at += size_t(t.numel());
    }
  }
  void broadcast(const std::vector<Tensor>&, int) override { FAIL("unused"); }
  int64_t max(int64_t v) override { return v; }
  std::vector<uint64_t> gather_all(uint64_t v) override { return {v}; }
  [[noreturn]] void abort(int code) override { std::_Exit(code); }

 private:
  ThreadWorld& w_;
};

// Runs body(rank, communicator) on W threads, the ranks of one ThreadWorld; an exception on any
// rank fails the test with its message.
void on_ranks(int W, const std::function<void(int, ThreadComm&)>& body) {
  ThreadWorld world(W);
  std::vector<std::string> errors(size_t(W), "");
  std::vector<std::thread> threads;
  for (int r = 0; r < W; ++r)
    threads.emplace_back([&, r] {
      try {
        ThreadComm comm(world, r);
        body(r, comm);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) REQUIRE(e.empty());
}

Tensor rows(const Tensor& t, int64_t r0, int64_t n) {
  const int64_t row = t.numel() / t.shape()[0];
  const std::vector<float> v = t.to_vector();
  Shape s = t.shape();
  s.dims[0] = n;
  return Tensor::from_vector(std::vector<float>(v.begin() + r0 * row, v.begin() + (r0 + n) * row),
                             s);
}

}  // namespace

TEST_CASE("dist: the launcher's environment names the rank", "[dist][cpu]") {
  {
    Env e({});
    const dist::Launch l = dist::detect_launch();
    CHECK(l.rank == 0);
    CHECK(l.size == 1);
    CHECK(l.launcher == "none");
  }
  struct Case {
    std::vector<std::pair<const char*, const char*>> env;
    int rank, size, local;
    const char* launcher;
  };
  const Case cases[] = {
      // mpirun inside a Slurm allocation: mpirun's variables win.
      {{{"OMPI_COMM_WORLD_RANK", "2"},
        {"OMPI_COMM_WORLD_SIZE", "4"},
        {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
        {"SLURM_PROCID", "9"},
        {"SLURM_NTASKS", "16"}},
       2,
       4,
       0,
       "mpirun"},
      {{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}}, 5, 8, 1, "slurm"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}}, 1, 2, 1, "env"},
      {{{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}}, 3, 4, 0, "pmi"},
  };
  for (const Case& c : cases) {
    Env e(c.env);
    const dist::Launch l = dist::detect_launch();
    CHECK(l.rank == c.rank);
    CHECK(l.size == c.size);
    CHECK(l.local_rank == c.local);
    CHECK(l.launcher == c.launcher);
  }
  {
    Env e({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
    CHECK_THROWS_WITH(dist::detect_launch(), "dist: $RANK=2 is not below $WORLD_SIZE=2");
  }
  {
    Env e({{"RANK", "x"}, {"WORLD_SIZE", "2"}});
    CHECK_THROWS_WITH(dist::detect_launch(), "dist: $RANK is 'x', expected a non-negative integer");
  }
}

TEST_CASE("dist: one rank communicates nothing; bad backends are one-line errors", "[dist][cpu]") {
  auto c = dist::make_communicator(dist::Launch{}, Device::CPU);
  CHECK(std::string(c->backend()) == "local");
  const Tensor t = Tensor::from_vector(std::vector<float>{1.f, 2.f}, Shape{2});
  c->allreduce_mean({t});
  CHECK(t.to_vector() == std::vector<float>{1.f, 2.f});
  CHECK(c->max(7) == 7);
  CHECK_THROWS_WITH(dist::make_communicator(dist::Launch{}, Device::CPU, "gloo"),
                    "dist: backend must be auto, local, mpi or nccl, got 'gloo'");
  CHECK_THROWS_WITH(dist::make_communicator(dist::Launch{0, 2, 0, "env"}, Device::CPU, "local"),
                    "dist: the local backend is for one rank, but the launcher (env) started 2");
  CHECK_THROWS_WITH(dist::make_communicator(dist::Launch{}, Device::CPU, "nccl"),
                    "dist: the nccl backend needs --device cuda");
  CHECK_THROWS_WITH(dist::make_communicator(dist::Launch{}, Device::CPU, "auto", "tcp://x"),
                    "dist: init must be empty or file:PATH, got 'tcp://x'");
}

TEST_CASE("dist: each rank's loader yields its rows of the global batch", "[dist][cpu]") {
  auto ds = std::make_shared<data::Dataset>();
  ds->count = 50, ds->height = ds->width = 6, ds->channels = 1, ds->source = "synthetic";
  ds->pixels.resize(size_t(ds->count) * 36);
  for (size_t i = 0; i < ds->pixels.size(); ++i) ds->pixels[i] = uint8_t((i * 37 + i / 36) % 251);
  data::LoaderOptions lo;
  lo.image_size = 6, lo.channels = 1, lo.hflip = true, lo.seed = 11, lo.device = Device::CPU;
  const int W = 3, B = 4;
  lo.batch_size = B * W;
  const data::Loader whole(ds, lo);
  for (int r = 0; r < W; ++r) {
    data::LoaderOptions so = lo;
    so.batch_size = B, so.shard_rank = r, so.shard_count = W;
    data::Loader shard(ds, so);
    REQUIRE(shard.batches_per_epoch() == whole.batches_per_epoch());  // 50 / 12 = 4
    for (int64_t epoch : {0, 1})
      for (int64_t step = 0; step < shard.batches_per_epoch(); ++step)
        REQUIRE(shard.batch(epoch, step).to_vector() ==
                rows(whole.batch(epoch, step), r * B, B).to_vector());
    // The threaded path too.
    shard.set_position(1, 2);
    CHECK(shard.next().to_vector() == rows(whole.batch(1, 2), r * B, B).to_vector());
  }
  data::LoaderOptions bad = lo;
  bad.shard_rank = 3, bad.shard_count = 3;
  CHECK_THROWS_WITH(data::Loader(ds, bad), "data: loader: invalid shard 3 of 3 (drop_last true)");
}

TEST_CASE("dist: synchronised batch norm on 3 ranks equals batch norm over the whole batch",
          "[dist][cpu]") {
  const int W = 3;
  const int64_t N = 4, H = 3, Wd = 2, C = 5;  // per rank (N, H, W, C)
  for (Activation act : {Activation::kNone, Activation::kLeakyRelu}) {
    CAPTURE(int(act));
    Generator g(3);
    Tensor x = Tensor::empty(Shape{N * W, H, Wd, C}), w = Tensor::empty(Shape{N * W, H, Wd, C});
    g.normal_(x, 0.5, 2.0);
    g.normal_(w);
    Tensor gamma = Tensor::empty(Shape{C}), beta = Tensor::empty(Shape{C});
    g.normal_(gamma, 1.0, 0.3);
    g.normal_(beta, 0.0, 0.3);
    // Reference: one batch norm over all N W rows; loss sum(y * w).
    const Var xr(x.clone(), true), gr = parameter(gamma.clone()), br = parameter(beta.clone());
    const Tensor rm = Tensor::zeros(Shape{C}), rv = Tensor::full(Shape{C}, 1.0);
    const Var yr = batch_norm(xr, gr, br, rm, rv, true, 0.1, 1e-5, act, 0.2);
    backward(sum(mul(yr, Var(w))));

    std::vector<Tensor> y(W), dx(W), dgamma(W), dbeta(W), rms(W), rvs(W);
    on_ranks(W, [&](int r, ThreadComm& comm) {
      dist::set_sync_batch_norm(&comm);  // per thread: each rank its own
      const Var xs(rows(x, r * N, N), true), gs = parameter(gamma.clone()),
                                             bs = parameter(beta.clone());
      rms[size_t(r)] = Tensor::zeros(Shape{C}), rvs[size_t(r)] = Tensor::full(Shape{C}, 1.0);
      const Var ys =
          batch_norm(xs, gs, bs, rms[size_t(r)], rvs[size_t(r)], true, 0.1, 1e-5, act, 0.2);
      y[size_t(r)] = ys.value();
      backward(sum(mul(ys, Var(rows(w, r * N, N)))));
      dx[size_t(r)] = xs.grad(), dgamma[size_t(r)] = gs.grad(), dbeta[size_t(r)] = bs.grad();
      dist::set_sync_batch_norm(nullptr);
    });
    std::vector<double> sum_dg(C, 0), sum_db(C, 0);
    for (int r = 0; r < W; ++r) {
      const auto close = [](const std::vector<float>& a, const std::vector<float>& b, double tol) {
        REQUIRE(a.size() == b.size());
        for (size_t i = 0; i < a.size(); ++i) REQUIRE(std::abs(a[i] - b[i]) <= tol);
      };
      close(y[size_t(r)].to_vector(), rows(yr.value(), r * N, N).to_vector(), 2e-6);
      close(dx[size_t(r)].to_vector(), rows(xr.grad(), r * N, N).to_vector(), 2e-5);
      close(rms[size_t(r)].to_vector(), rm.to_vector(), 1e-6);
      close(rvs[size_t(r)].to_vector(), rv.to_vector(), 1e-6);
      for (int64_t c = 0; c < C; ++c) {
        sum_dg[size_t(c)] += dgamma[size_t(r)].to_vector()[size_t(c)];
        sum_db[size_t(c)] += dbeta[size_t(r)].to_vector()[size_t(c)];
      }
    }
    // Parameter gradients stay each rank's share: their sum is the whole batch's.
    for (int64_t c = 0; c < C; ++c) {
      CHECK(sum_dg[size_t(c)] == Approx(gr.grad().to_vector()[size_t(c)]).margin(1e-4));
      CHECK(sum_db[size_t(c)] == Approx(br.grad().to_vector()[size_t(c)]).margin(1e-4));
    }
  }
}

TEST_CASE("dist: grad() (a gradient penalty) refuses synchronised batch norm in one line",
          "[dist][cpu]") {
  // A communicator of one rank is not synchronised at all; fake a second rank's view.
  struct Two final : dist::Communicator {
    Two() : Communicator(dist::Launch{0, 2, 0, "test"}) {}
    const char* backend() const override { return "test"; }
    void allreduce(const std::vector<Tensor>& ts, Op) override {
      for (const Tensor& t : ts) t.copy_from(scaled_copy(t));
    }
    static Tensor scaled_copy(const Tensor& t) {  // as if the other rank had the same values
      std::vector<float> v = t.to_vector();
      for (float& f : v) f *= 2;
      return Tensor::from_vector(v, t.shape());
    }
    void broadcast(const std::vector<Tensor>&, int) override {}
    int64_t max(int64_t v) override { return v; }
    std::vector<uint64_t> gather_all(uint64_t v) override { return {v, v}; }
    [[noreturn]] void abort(int code) override { std::_Exit(code); }
  } two;
  dist::set_sync_batch_norm(&two);
  Generator g(1);
  Tensor x = Tensor::empty(Shape{6, 3});
  g.normal_(x);
  const Var xv(x, true);
  const Var y =
      batch_norm(xv, parameter(Tensor::full(Shape{3}, 1.0)), parameter(Tensor::zeros(Shape{3})),
                 Tensor::zeros(Shape{3}), Tensor::full(Shape{3}, 1.0), true);
  CHECK_THROWS_WITH(grad({sum(mul(y, y))}, {xv}, {}, true),
                    Catch::Contains("grad() does not go through synchronised batch norm"));
  backward(sum(mul(y, y)));  // backward() does
  CHECK(xv.grad().numel() == 18);
  dist::set_sync_batch_norm(nullptr);
}

TEST_CASE("dist: backward reports each parameter once, when its gradient is final", "[dist][cpu]") {
  // A small MLP whose first weight is used twice (the second use runs first in backward).
  Generator g(5);
  auto param = [&](Shape s) {
    Tensor t = Tensor::empty(s);
    g.normal_(t);
    return parameter(t);
  };
  const Var w1 = param(Shape{4, 6}), b1 = param(Shape{6}), w2 = param(Shape{6, 3}),
            unused = param(Shape{2});
  Tensor xt = Tensor::empty(Shape{5, 4});
  g.normal_(xt);
  const Var x(xt);
  const Var h = relu(add(matmul(x, w1), b1));
  const Var y = add(matmul(h, w2), sum(matmul(x, w1)));  // w1 again, through another path
  std::vector<std::pair<GradNode*, std::vector<float>>> seen;
  set_grad_ready_hook([&](GradNode& p) { seen.emplace_back(&p, p.grad.to_vector()); });
  zero_grad({w1, b1, w2, unused});
  backward(sum(mul(y, y)));
  set_grad_ready_hook({});
  REQUIRE(seen.size() == 3);  // `unused` takes part in no entry
  for (const Var& p : {w1, b1, w2}) {
    int n = 0;
    for (const auto& [node, values] : seen)
      if (node == p.node().get()) {
        ++n;
        CHECK(values == p.grad().to_vector());  // nothing was added after the report
      }
    CHECK(n == 1);
  }
  CHECK(seen.back().first == w1.node().get());  // its first use is backward's last entry
}

TEST_CASE("dist: bucketed all-reduce gives what one all-reduce after backward gives",
          "[dist][cpu]") {
  const int W = 2;
  std::vector<std::vector<std::vector<float>>> grads(W), local(W);
  std::vector<size_t> buckets(W), early(W), first_pass_calls(W), first_pass_buckets(W);
  on_ranks(W, [&](int r, ThreadComm& comm) {
    Generator g(9);  // the same weights on every rank
    std::vector<Var> ps;
    for (Shape s : {Shape{4, 8}, Shape{8}, Shape{8, 8}, Shape{8}, Shape{8, 2}}) {
      Tensor t = Tensor::empty(s);
      g.normal_(t);
      ps.push_back(parameter(t));
    }
    dist::GradReducer red(comm, ps, 64);  // 64 bytes: one or two tensors per bucket
    Generator data(100 + uint64_t(r));    // each rank its own batch
    for (int pass = 0; pass < 3; ++pass) {
      Tensor xt = Tensor::empty(Shape{3, 4});
      data.normal_(xt);
      const auto loss = [&] {
        Var h = Var(xt);
        for (size_t i = 0; i + 1 < ps.size(); i += 2) h = tanh(add(matmul(h, ps[i]), ps[i + 1]));
        const Var y = matmul(h, ps.back());
        return sum(mul(y, y));
      };
      zero_grad(ps);
      backward(loss());  // this rank's own gradients
      local[size_t(r)].clear();
      for (const Var& p : ps) local[size_t(r)].push_back(p.grad().to_vector());
      zero_grad(ps);
      red.begin();
      backward(loss());
      red.finish();
      if (pass == 0)  // the learning pass all-reduces through its buckets (NCCL connects)
        first_pass_calls[size_t(r)] = size_t(comm.allreduces),
        first_pass_buckets[size_t(r)] = red.buckets();
    }
    for (const Var& p : ps) grads[size_t(r)].push_back(p.grad().to_vector());
    buckets[size_t(r)] = red.buckets(), early[size_t(r)] = red.launched_early();
  });
  CHECK(buckets[0] >= 3);
  CHECK(first_pass_calls[0] == first_pass_buckets[0]);
  CHECK(early[0] == buckets[0]);  // every bucket launched during backward
  CHECK(grads[0] == grads[1]);    // bitwise the same on both
  for (size_t p = 0; p < grads[0].size(); ++p)
    for (size_t i = 0; i < grads[0][p].size(); ++i)
      REQUIRE(grads[0][p][i] ==
              Approx((double(local[0][p][i]) + local[1][p][i]) / 2).epsilon(1e-6).margin(1e-7));
}

TEST_CASE("dist: the file rendezvous hands rank 0's bytes to the others, or says it waited",
          "[dist][cpu]") {
  const std::string path =
      (std::filesystem::temp_directory_path() / fmt::format("gan_rdv_{}", ::getpid())).string();
  std::filesystem::remove(path);
  std::vector<unsigned char> sent(128), got1(128, 0), got2(128, 0);
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<unsigned char>(i * 7 + 3);
  std::thread r1([&] { dist::file_rendezvous(1, path, got1.data(), got1.size(), 10); });
  std::thread r2([&] { dist::file_rendezvous(2, path, got2.data(), got2.size(), 10); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the others wait first
  dist::file_rendezvous(0, path, sent.data(), sent.size(), 10);
  r1.join();
  r2.join();
  CHECK(got1 == sent);
  CHECK(got2 == sent);
  std::filesystem::remove(path);
  CHECK_THROWS_WITH(dist::file_rendezvous(1, path, got1.data(), got1.size(), 0.1),
                    fmt::format("dist: rank 1: rank 0 wrote no {} within 0.1 s", path));
}

TEST_CASE("dist: a parameter no pass reaches takes part in the all-reduce as zeros",
          "[dist][cpu]") {
  const int W = 2;
  std::vector<std::vector<float>> used(W), unused(W);
  on_ranks(W, [&](int r, ThreadComm& comm) {
    const Var w = parameter(Tensor::from_vector(std::vector<float>{1, 2, 3}, Shape{3}));
    const Var idle = parameter(Tensor::from_vector(std::vector<float>{5, 6}, Shape{2}));
    dist::GradReducer red(comm, {w, idle}, 4);  // one parameter per bucket
    for (int pass = 0; pass < 2; ++pass) {
      zero_grad({w, idle});
      red.begin();
      backward(scale(sum(w), double(r + 1)));  // rank r's gradient is r + 1
      red.finish();
    }
    used[size_t(r)] = w.grad().to_vector();
    if (!idle.grad().defined()) throw std::runtime_error("the idle parameter has no gradient");
    unused[size_t(r)] = idle.grad().to_vector();
  });
  for (int r = 0; r < W; ++r) {
    CHECK(used[size_t(r)] == std::vector<float>{1.5f, 1.5f, 1.5f});
    CHECK(unused[size_t(r)] == std::vector<float>{0, 0});
  }
}

// The NCCL backend at world size 1: on a GPU the real libnccl (one rank: NCCL copies memory), in
// the interpreter its host NCCL. Multi-rank runs and faults: tests/scripts/test_distributed.py.
TEST_CASE("dist: the nccl backend at one rank: collectives, graphs, a bad tensor closes its group",
          "[dist][cuda]") {
  GAN_REQUIRE_GPU();
  Env env({});
  std::unique_ptr<dist::Communicator> c =
      dist::make_communicator(dist::Launch{}, Device::CUDA, "nccl");
  CHECK(std::string(c->backend()) == "nccl");
  CHECK(c->graph_safe());
  Tensor t = Tensor::from_vector(std::vector<float>{1, -2, 3.5f}, Shape{3}).to(Device::CUDA);
  // A CPU tensor is refused before the group opens; the next call must still run.
  CHECK_THROWS_WITH(c->allreduce_sum({t, Tensor::from_vector(std::vector<float>{1}, Shape{1})}),
                    Catch::Contains("dist: nccl allreduce takes cuda f32 tensors"));
  c->allreduce_mean({t});
  c->broadcast({t}, 0);
  CHECK(t.to_vector() == std::vector<float>{1, -2, 3.5f});
  // Larger than the host NCCL's 256 KiB rounds: every round's values come back in place.
  std::vector<float> big(300000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = float(i % 1013) - 500.0f;
  Tensor tb = Tensor::from_vector(big, Shape{int64_t(big.size())}).to(Device::CUDA);
  c->allreduce_mean({tb});
  c->broadcast({tb}, 0);
  CHECK(tb.to_vector() == big);
  CHECK(c->gather_all(42) == std::vector<uint64_t>{42});
  CHECK(c->max(-7) == -7);
  {
    dist::WorkWatch w(*c, "a test step");
    c->allreduce_sum({t});
  }
  // Captured into a CUDA graph and replayed.
  cudaStream_t s = cuda::stream();
  REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
  c->allreduce_sum({t});
  cudaGraph_t g = nullptr;
  REQUIRE(cudaStreamEndCapture(s, &g) == cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, g, 0) == cudaSuccess);
  for (int i = 0; i < 2; ++i) REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  cuda::synchronize();
  CHECK(t.to_vector() == std::vector<float>{1, -2, 3.5f});
  (void)cudaGraphExecDestroy(exec);
  (void)cudaGraphDestroy(g);
  c.reset();
  if (cuda_is_interpreter()) {  // the version check, with the host NCCL reporting 2.12.3
    setenv("GAN_NCCL_HOST_VERSION", "21203", 1);
    CHECK_THROWS_WITH(
        dist::make_communicator(dist::Launch{}, Device::CUDA, "nccl"),
        Catch::Contains("dist: NCCL 2.12.3 (the interpreter's host NCCL) is too old"));
    unsetenv("GAN_NCCL_HOST_VERSION");
  }
}
