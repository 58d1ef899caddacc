#!/usr/bin/env python3
"""Data-parallel gan_train on CPU ranks (mpirun; docs/distributed.md), end to end.

usage: test_distributed.py GAN_TRAIN SCRATCH_DIR [--interp GAN_TRAIN_INTERP] [CASE...]

Cases (all by default):
  equal   1, 2 and 3 ranks at the same global batch reach the same state after several steps
          (DCGAN with synchronised batch norm; SAGAN with its batch-normed G; the conditional
          ResNet SAGAN, labels sharded with their images), every rank's state
          checked bitwise equal to the others' at every step (--dist-check-every 1)
  resume  a 2-rank checkpoint resumes on 1 rank and on 3 and reaches the 1-rank run's state
  stop    SIGTERM to the job: one coordinated checkpoint at the same step on every rank
  kill    a rank killed with SIGKILL ends the job within 60 s with a line naming the rank
  hang    a stopped (hung) rank ends the job within $GAN_DIST_TIMEOUT + a few seconds
  env     RANK/WORLD_SIZE without a launcher MPI can start from: one line, exit 1
  interp  (with --interp) the GPU path on the CPU interpreter, mpi backend: 2 ranks equal 1
  checkpoint_error  an exception on rank 0 while it writes a checkpoint ends the job; the last
          complete checkpoint resumes
  buckets ranks with different $GAN_DIST_BUCKET_KB are refused, naming the rank
  nccl_equal   (with --interp) the NCCL path (the interpreter's host NCCL): 2 ranks under mpirun
          and 3 ranks through a rendezvous file equal 1, graphs capturing the collectives
  nccl_faults  (with --interp) the fault matrix on the NCCL path: a rank killed or stopped during
          a replay, an exception while writing a checkpoint, a rank missing at start-up, a stale
          rendezvous file, mismatched buckets, an NCCL error and hang, an NCCL too old; every
          rank ends within 60 s with a line naming the rank and the cause
  nccl_stale_ok  (with --interp) a stale rendezvous file does not stop a whole job
Checkpoints are compared tensor by tensor (safetensors read with the standard library).
"""
import array
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

GAN_TRAIN, SCRATCH = sys.argv[1], sys.argv[2]
ARGS = sys.argv[3:]
INTERP = None
if ARGS[:1] == ["--interp"]:
    INTERP, ARGS = ARGS[1], ARGS[2:]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_mpi_yield_when_idle="1", OMPI_MCA_rmaps_base_oversubscribe="1")
DATA = os.environ.get("GAN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
COMMON = ["--image-size", "32", "--ngf", "8", "--ndf", "8", "--log-every", "1", "--progress", "0",
          "--sample-every", "1000", "--data", DATA,
          "--seed", "7"]
failures = []


def fail(msg):
    print("FAIL:", msg)
    failures.append(msg)


def load(path):
    """safetensors -> {name: array}."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = array.array({"F32": "f", "F64": "d", "I64": "q"}[v["dtype"]], b[8 + n + s:8 + n + e])
    return out


def compare(ref_path, other_path, what, steps, lr=4e-4):
    """Every tensor within 1e-4 of its scale (float rounding of sums in another order). A
    parameter whose gradients are at rounding level (its Adam second moment below 1e-12, e.g. a
    bias before batch norm) moves by that noise scaled up by Adam, at most about lr per step."""
    a, b = load(ref_path), load(other_path)
    if set(a) != set(b):
        return fail(f"{what}: different tensors: {sorted(set(a) ^ set(b))[:5]}")
    worst, noise = (0.0, ""), (0.0, "", 0)
    for k in a:
        if k.startswith("opt_") and ".exp_avg" in k:
            continue  # moments of rounding-level gradients are rounding noise; the params show it
        diff = max((abs(x - y) for x, y in zip(a[k], b[k])), default=0.0)
        scale = max(1.0, max((abs(x) for x in a[k]), default=0.0))
        tol = 1e-4 * scale
        name = k.split(".", 1)[1] if k[:2] in ("G.", "D.") else None
        sq = a.get(f"opt_{k[0].lower()}.exp_avg_sq.{name}") if name else None
        rounding = sq is not None and max(sq) < 1e-12
        if rounding:
            tol = 1.5 * lr * steps
            noise = max(noise, (diff, k, noise[2] + 1))
        else:
            worst = max(worst, (diff / scale, k))
        if diff > tol:
            fail(f"{what}: {k} differs by {diff:.3g} (tolerance {tol:.3g})")
    print(f"{what}: {len(a)} tensors, largest difference {worst[0]:.3g} of scale ({worst[1]})" +
          (f"; parameters with rounding-level gradients: {noise[2]}, largest difference "
           f"{noise[0]:.3g} ({noise[1]})" if noise[2] else ""))


def run(ranks, args, out, check=True, binary=None, extra_tail=None, **kw):
    if "--device" not in args:
        args = args + ["--device", "cpu"]
    cmd = [binary or GAN_TRAIN] + COMMON + args + ["--out", out] + \
        (extra_tail or ["--checkpoint-every", "1000"])
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", str(ranks)] + cmd + ["--dist-check-every", "1"]
    kw.setdefault("env", ENV)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        fail(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def dir_(name):
    d = os.path.join(SCRATCH, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def case_equal():
    # The conditional ResNet SAGAN: labels stay with their images on every shard (real batches)
    # and fake labels are drawn per row of the global batch, so the ranks condition as one does;
    # its conditional batch norm is synchronised like any other. Its learning rates are tiny: at
    # 2e-4 Adam turns the rounding differences of the gradients' other summation order into steps
    # of up to lr for elements whose gradient is near 0 (unconditional too: 6e-4 in the running
    # means after two iterations), which would hide nothing but exceed the tolerance; a label on
    # the wrong row moves the batch statistics after the first cBN by far more.
    for model, extra, steps, n_dis in (("dcgan", ["--sync-bn"], 3, 1),
                                       ("sagan", ["--sync-bn", "--ema", "0.99", "--n-dis", "2"], 2, 2),
                                       ("sagan-resnet", ["--conditional", "--sync-bn", "--n-dis", "2",
                                                         "--lr-g", "1e-6", "--lr-d", "1e-6"], 2, 2)):
        args = ["--model", model, "--steps", str(steps)] + extra
        ref = dir_(f"{model}_1")
        run(1, args + ["--batch-size", "12"], ref)
        for ranks in (2, 3):
            out = dir_(f"{model}_{ranks}")
            # Small buckets: the gradients all-reduced in several buckets during backward.
            r = run(ranks, args + ["--batch-size", str(12 // ranks)], out,
                    env=dict(ENV, GAN_DIST_BUCKET_KB="8"))
            if r.returncode == 0:
                if "batch_size=%d x %d ranks (global 12)" % (12 // ranks, ranks) not in r.stdout:
                    fail(f"{model} {ranks} ranks: the configuration line does not say the ranks")
                compare(f"{ref}/checkpoint.safetensors", f"{out}/checkpoint.safetensors",
                        f"{model}: {ranks} ranks vs 1", steps * n_dis)


def case_resume():
    args = ["--model", "dcgan", "--sync-bn"]
    ref = dir_("resume_ref")
    run(1, args + ["--steps", "4", "--batch-size", "12"], ref)
    two = dir_("resume_2")
    run(2, args + ["--steps", "2", "--batch-size", "6"], two)
    for ranks in (1, 3):
        out = dir_(f"resume_on_{ranks}")
        shutil.copytree(two, out)
        r = run(ranks, ["--resume", out, "--steps", "4"], out)
        if r.returncode == 0:
            compare(f"{ref}/checkpoint.safetensors", f"{out}/checkpoint.safetensors",
                    f"2-rank checkpoint resumed on {ranks}", 4)


def rank_pid(out, rank, deadline):
    """The pid of gan_train rank `rank` of the job writing to `out`."""
    while time.time() < deadline:
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                with open(f"/proc/{p}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"gan_train") and out.encode() in cmd and \
                    f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
                return int(p)
        time.sleep(0.1)
    return None


def start_long_job(name, extra_env=None):
    out = dir_(name)
    # A log line every 10 steps: once mpirun has its SIGTERM it stops reading the ranks' output,
    # and a rank logging every step (a thousand steps a second on the CPU backend) would block on
    # the full pipe before it reaches its checkpoint.
    common = list(COMMON)
    common[common.index("--log-every") + 1] = "10"
    cmd = ["mpirun", "--oversubscribe", "-np", "2", GAN_TRAIN] + common + [
        "--model", "dcgan", "--steps", "1000000", "--batch-size", "4", "--checkpoint-every", "5",
        "--device", "cpu",
        "--out", out]
    log = open(os.path.join(SCRATCH, name + ".log"), "w+")
    p = subprocess.Popen(cmd, env=dict(ENV, **(extra_env or {})), stdout=log,
                         stderr=subprocess.STDOUT)
    # Until rank 0 has trained a few steps (its log lines).
    deadline = time.time() + 60
    while time.time() < deadline and p.poll() is None:
        log.seek(0)
        if log.read().count("\nstep ") >= 8:
            break
        time.sleep(0.2)
    return p, out, log


def finish(p, log, limit, what):
    t0 = time.time()
    try:
        rc = p.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        fail(f"{what}: the job still ran {limit} s later")
        return None, ""
    log.seek(0)
    text = log.read()
    print(f"{what}: the job ended {time.time() - t0:.1f} s later with exit {rc}")
    return rc, text


def checkpoint_intact(out, what):
    path = os.path.join(out, "checkpoint.safetensors")
    if os.path.exists(path):
        try:
            load(path)
        except Exception as e:  # noqa: BLE001
            fail(f"{what}: the checkpoint is damaged: {e}")
    leftovers = [f for f in os.listdir(out) if ".tmp" in f]
    if leftovers:
        print(f"{what}: temporary files left (removed by the next run): {leftovers}")


def case_stop():
    p, out, log = start_long_job("stop")
    p.send_signal(signal.SIGTERM)
    rc, text = finish(p, log, 60, "SIGTERM")
    if rc is None:
        return
    if "stopped by SIGTERM after step" not in text:
        fail(f"SIGTERM: no coordinated stop line:\n{text[-1500:]}")
    checkpoint_intact(out, "SIGTERM")
    ck = load(os.path.join(out, "checkpoint.safetensors"))
    if "opt_g.step" in ck:
        print(f"SIGTERM: checkpoint at Adam step {ck['opt_g.step'][0]}")


def fault(name, sig, limit, expect, extra_env=None):
    """Rank 1 of a running 2-rank job gets `sig`: the job must end within `limit` seconds,
    non-zero, its output holding `expect`, and the checkpoint must load."""
    p, out, log = start_long_job(name, extra_env)
    pid = rank_pid(out, 1, time.time() + 30)
    if pid is None:
        p.kill()
        return fail(f"{name}: rank 1 not found")
    os.kill(pid, sig)
    rc, text = finish(p, log, limit, f"{name}: rank 1 got {signal.Signals(sig).name}")
    try:
        os.kill(pid, signal.SIGKILL)  # a stopped rank outlives the job
    except ProcessLookupError:
        pass
    if rc is None:
        return
    if rc == 0:
        fail(f"{name}: the job exited 0")
    if expect not in text:
        fail(f"{name}: no line with '{expect}':\n{text[-1500:]}")
    checkpoint_intact(out, name)


def case_kill():
    fault("kill", signal.SIGKILL, 60, "rank 1")  # mpirun names the rank that died


def case_hang():
    fault("hang", signal.SIGSTOP, 45, "rank 0: no answer from the other ranks",
          {"GAN_DIST_TIMEOUT": "5"})


def case_env():
    out = dir_("env")
    r = subprocess.run([GAN_TRAIN] + COMMON + ["--model", "dcgan", "--steps", "1", "--out", out,
                                                "--device", "cpu"],
                       env=dict(ENV, RANK="1", WORLD_SIZE="2"), capture_output=True, text=True,
                       timeout=60)
    lines = r.stderr.strip().splitlines()
    if r.returncode != 1 or len(lines) != 1 or "MPI cannot start from it" not in r.stderr:
        fail(f"RANK/WORLD_SIZE without a launcher: exit {r.returncode}, stderr {r.stderr!r}")
    else:
        print("env:", lines[0])


def case_interp():
    if not INTERP:
        return
    # The mpi backend on CUDA tensors: host copies, every step eager (not graph-safe).
    args = ["--model", "dcgan", "--steps", "2", "--sync-bn", "--device", "cuda",
            "--dist-backend", "mpi"]
    ref = dir_("interp_1")
    r = run(1, args + ["--batch-size", "8"], ref, binary=INTERP)
    # One rank on the mpi backend: eager too (its host path would throw inside a capture).
    if r.returncode == 0 and "the mpi backend runs outside CUDA graphs" not in r.stdout:
        fail("interpreter, mpi backend, 1 rank: the job did not say its steps run eager")
    out = dir_("interp_2")
    r = run(2, args + ["--batch-size", "4"], out, binary=INTERP)
    if r.returncode == 0:
        compare(f"{ref}/checkpoint.safetensors", f"{out}/checkpoint.safetensors",
                "interpreter, mpi backend: 2 ranks vs 1", 2)
        if "the mpi backend runs outside CUDA graphs" not in r.stdout:
            fail("interpreter, mpi backend: the job did not say its steps run eager")


def case_checkpoint_error():
    """An exception on rank 0 while it writes a checkpoint (mpi backend): every rank ends, the
    last complete checkpoint is intact and resumes."""
    out = dir_("ckpt_error")
    t0 = time.time()
    r = run(2, ["--model", "dcgan", "--steps", "40", "--batch-size", "4",
                "--inject-checkpoint-error-at", "20"], out, check=False, timeout=120,
            extra_tail=["--checkpoint-every", "10"])
    print(f"mpi checkpoint error: the job ended {time.time() - t0:.1f} s later with exit "
          f"{r.returncode}")
    if r.returncode == 0 or "injected checkpoint write error at step 20" not in r.stderr:
        return fail(f"mpi checkpoint error: exit {r.returncode}, stderr {r.stderr[-1500:]!r}")
    resume_after_fault(out, "mpi checkpoint error", 10)


def resume_after_fault(out, what, step, binary=None, device="cpu"):
    checkpoint_intact(out, what)
    ck = load(os.path.join(out, "checkpoint.safetensors"))
    if ck["opt_g.step"][0] != step:
        return fail(f"{what}: the checkpoint is at Adam step {ck['opt_g.step'][0]}, not {step}")
    r = run(1, ["--resume", out, "--steps", str(step + 2), "--device", device], out, binary=binary)
    if r.returncode == 0:
        print(f"{what}: the step-{step} checkpoint resumes")


def case_buckets():
    """Ranks with different $GAN_DIST_BUCKET_KB (mpi backend): refused at start, naming the rank."""
    out = dir_("buckets")
    cmd = ["mpirun", "--oversubscribe", "-np", "1", "-x", "GAN_DIST_BUCKET_KB=4096", GAN_TRAIN] + \
        COMMON + ["--model", "dcgan", "--steps", "3", "--batch-size", "4", "--device", "cpu",
                  "--out", out, ":", "-np", "1", "-x", "GAN_DIST_BUCKET_KB=8", GAN_TRAIN] + COMMON + \
        ["--model", "dcgan", "--steps", "3", "--batch-size", "4", "--device", "cpu", "--out", out]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    expect = "rank 1's gradient buckets are 8 KiB, rank 0's 4096 KiB"
    print(f"mpi mismatched buckets: ended {time.time() - t0:.1f} s later with exit {r.returncode}")
    if r.returncode == 0 or expect not in r.stderr:
        fail(f"mpi mismatched buckets: exit {r.returncode}, stderr {r.stderr[-1500:]!r}")


# The NCCL code path on CPU ranks: gan_train's interpreter build, whose NCCL is the interpreter's
# host implementation (shared memory between the rank processes). Ranks are started by mpirun (the
# unique id then travels by MPI) or as plain processes with RANK/WORLD_SIZE and --dist-init
# file:PATH, each watched separately: every rank must end by itself.
NCCL_ARGS = ["--model", "dcgan", "--sync-bn", "--device", "cuda", "--dist-backend", "nccl"]


def start_ranks(n, args, out, rdv, env=None, ranks=None, per_rank_env=None):
    procs = []
    for k in (range(n) if ranks is None else ranks):
        e = dict(ENV, RANK=str(k), WORLD_SIZE=str(n), LOCAL_RANK=str(k), **(env or {}))
        e.update((per_rank_env or {}).get(k, {}))
        cmd = [INTERP] + COMMON + NCCL_ARGS + args + ["--out", out, "--dist-init", f"file:{rdv}"]
        log = open(os.path.join(SCRATCH, f"{os.path.basename(out)}.rank{k}.log"), "w+")
        procs.append((k, subprocess.Popen(cmd, env=e, stdout=log, stderr=subprocess.STDOUT), log))
    return procs


ended = {}


def wait_ranks(procs, limit, what):
    """Every rank's (exit, seconds, output); a rank still running after `limit` s is a failure.
    The time each rank ended goes into `ended` (the poll of its exit, every 0.1 s)."""
    t0, res = time.time(), {}
    while time.time() - t0 < limit and any(p.poll() is None for _, p, _ in procs):
        for k, p, _ in procs:
            if p.poll() is not None and k not in ended:
                ended[k] = time.time()
        time.sleep(0.1)
    for k, p, _ in procs:
        if p.poll() is not None and k not in ended:
            ended[k] = time.time()
    for k, p, log in procs:
        try:
            rc = p.wait(timeout=max(0.1, limit - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            fail(f"{what}: rank {k} still ran {limit} s later")
            rc = None
        log.seek(0)
        res[k] = (rc, time.time() - t0, log.read())
    return res


def case_nccl_equal():
    if not INTERP:
        return
    ref = dir_("nccl_1")
    run(1, NCCL_ARGS + ["--steps", "3", "--batch-size", "12"], ref, binary=INTERP)
    # 2 ranks under mpirun (the id by MPI); the graph (steps 2 and 3) holds the collectives.
    out = dir_("nccl_2")
    r = run(2, NCCL_ARGS + ["--steps", "3", "--batch-size", "6"], out, binary=INTERP,
            env=dict(ENV, GAN_DIST_BUCKET_KB="8"))
    if r.returncode == 0:
        if "nccl backend" not in r.stdout:
            fail("nccl 2 ranks: the job did not say it runs the nccl backend")
        compare(f"{ref}/checkpoint.safetensors", f"{out}/checkpoint.safetensors",
                "nccl path: 2 ranks (mpirun) vs 1", 3)
    # 3 ranks from the environment, the id through a file.
    out = dir_("nccl_3")
    rdv = os.path.join(SCRATCH, "nccl_3.id")
    res = wait_ranks(start_ranks(3, ["--steps", "3", "--batch-size", "4", "--checkpoint-every",
                                     "1000", "--dist-check-every", "1"], out, rdv,
                                 env={"GAN_DIST_BUCKET_KB": "8"}), 400, "nccl 3 ranks")
    if all(rc == 0 for rc, _, _ in res.values()):
        compare(f"{ref}/checkpoint.safetensors", f"{out}/checkpoint.safetensors",
                "nccl path: 3 ranks (file rendezvous) vs 1", 3)
        if os.path.exists(rdv):
            fail("nccl 3 ranks: the rendezvous file was not removed after start-up")
        if shm_segments() - SHM_BEFORE:
            fail(f"nccl 3 ranks: shared memory left: {shm_segments() - SHM_BEFORE}")
    else:
        fail(f"nccl 3 ranks: exits {[v[0] for v in res.values()]}: {res[0][2][-1500:]}")


def nccl_fault(name, n, args, limit, expects, act=None, env=None, ranks=None, per_rank_env=None,
               stale=False):
    """A fault on the NCCL path: every rank started must end within `limit` s, non-zero, its
    output holding expects[rank]."""
    out = dir_(name)
    rdv = os.path.join(SCRATCH, name + ".id")
    if os.path.exists(rdv):
        os.remove(rdv)
    if stale:
        with open(rdv, "wb") as f:
            f.write(b"\0" * 128)
        os.utime(rdv, (time.time() - 7200, time.time() - 7200))
    ended.clear()
    procs = start_ranks(n, args, out, rdv, env=dict({"GAN_DIST_TIMEOUT": "8"}, **(env or {})),
                        ranks=ranks, per_rank_env=per_rank_env)
    t_fault = (act(procs, out) if act else None) or time.time()
    res = wait_ranks(procs, limit, name)
    for k, (rc, secs, text) in res.items():
        if rc is None:
            continue
        want = expects.get(k, "\0")
        want = want if isinstance(want, tuple) else (want,)
        line = next((l for l in text.splitlines() if any(w in l for w in want)), None)
        print(f"{name}: rank {k} ended {ended[k] - t_fault:.1f} s after the "
              f"{'fault' if act else 'start'}, exit {rc}: "
              f"{line or text[-300:]!r}")
        if rc == 0:
            fail(f"{name}: rank {k} exited 0")
        elif k in expects and line is None:
            fail(f"{name}: rank {k} has no line with {expects[k]!r}:\n{text[-1500:]}")
    if os.path.isdir(out):
        checkpoint_intact(out, name)
    # Shared-memory segments of communicators that never completed start-up (ranks that ended
    # before every rank joined) are left in /dev/shm, as a crashed process leaves any segment.
    for f in shm_segments() - SHM_BEFORE:
        os.remove(os.path.join("/dev/shm", f))
    return out


def shm_segments():
    try:
        return {f for f in os.listdir("/dev/shm") if f.startswith("gan-nccl-")}
    except OSError:
        return set()


SHM_BEFORE = shm_segments()


def wait_steps(procs, out, steps):
    """Until rank 0 has logged `steps` steps (the graph replays from step 3)."""
    log = procs[0][2]
    deadline = time.time() + 120
    while time.time() < deadline and procs[0][1].poll() is None:
        log.seek(0)
        if log.read().count("\nstep ") >= steps:
            return True
        time.sleep(0.2)
    return False


LONG = ["--steps", "1000000", "--batch-size", "4", "--checkpoint-every", "5"]


def case_nccl_faults():
    if not INTERP:
        return
    # A rank killed during a graph replay: the others see it gone.
    def kill1(procs, out):
        if not wait_steps(procs, out, 6):
            fail("nccl_kill: rank 0 logged no 6 steps")
        procs[1][1].kill()
        return time.time()
    nccl_fault("nccl_kill", 2, LONG, 60, {0: "rank 1 (pid"}, act=kill1)

    # A rank stopped during a replay: the others' watchdog ends them; the stopped rank, once
    # continued, finds its peer gone and ends too.
    def stop1(procs, out):
        if not wait_steps(procs, out, 6):
            fail("nccl_stop: rank 0 logged no 6 steps")
        procs[1][1].send_signal(signal.SIGSTOP)
        t = time.time()
        try:
            procs[0][1].wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        ended[0] = time.time()
        procs[1][1].send_signal(signal.SIGCONT)
        return t
    nccl_fault("nccl_stop", 2, LONG, 90, {0: "the training step has not completed in",
                                          1: ("has not completed in", "rank 0: aborted")},
               act=stop1)

    # An exception on rank 0 while writing a checkpoint: its communicator is aborted (not
    # destroyed, which would wait for the others), the peer ends at once (the deadline is long
    # here: only the abort can end it in time); the step-5 checkpoint resumes.
    out = nccl_fault("nccl_ckpt_error", 2, ["--steps", "20", "--batch-size", "4",
                                            "--checkpoint-every", "5",
                                            "--inject-checkpoint-error-at", "10"], 30,
                     {0: "injected checkpoint write error", 1: "rank 0: aborted its communicator"},
                     env={"GAN_DIST_TIMEOUT": "100"})
    resume_after_fault(out, "nccl checkpoint error", 5, binary=INTERP, device="cuda")

    # A rank missing at start-up.
    nccl_fault("nccl_missing", 3, ["--steps", "3", "--batch-size", "4"], 60,
               {0: "NCCL start-up: not all 3 ranks joined", 1: "NCCL start-up: not all 3 ranks"},
               ranks=[0, 1])
    # A stale rendezvous file and no rank 0: refused, saying so.
    nccl_fault("nccl_stale", 2, ["--steps", "3", "--batch-size", "4"], 60,
               {1: "is older than this job"}, ranks=[1], stale=True)
    # Mismatched bucket settings: refused before the first step.
    nccl_fault("nccl_buckets", 2, ["--steps", "3", "--batch-size", "4"], 60,
               {0: "rank 1's gradient buckets are 8 KiB", 1: "rank 1's gradient buckets are 8 KiB"},
               per_rank_env={1: {"GAN_DIST_BUCKET_KB": "8"}})
    # An NCCL error on rank 1 (injected into its 150th collective, in a replay) and a hang there.
    nccl_fault("nccl_error", 2, LONG, 60, {1: "injected error", 0: "rank 1: injected error"},
               env={"GAN_NCCL_HOST_FAULT": "1:error:150"})
    nccl_fault("nccl_hang", 2, LONG, 60, {0: ("has not completed in", "rank 1: aborted"),
                                          1: "has not completed in"},
               env={"GAN_NCCL_HOST_FAULT": "1:hang:150"})
    # An NCCL older than the backend needs: one line.
    out = dir_("nccl_old")
    r = run(1, NCCL_ARGS + ["--steps", "1", "--batch-size", "4"], out, check=False, binary=INTERP,
            env=dict(ENV, GAN_NCCL_HOST_VERSION="21203"))
    if r.returncode == 0 or "NCCL 2.12.3 (the interpreter's host NCCL) is too old" not in r.stderr:
        fail(f"old NCCL: exit {r.returncode}, stderr {r.stderr!r}")


def case_nccl_stale_ok():
    """A stale rendezvous file does not stop a whole job: rank 0 replaces it."""
    if not INTERP:
        return
    out = dir_("nccl_stale_ok")
    rdv = os.path.join(SCRATCH, "nccl_stale_ok.id")
    with open(rdv, "wb") as f:
        f.write(b"\0" * 128)
    os.utime(rdv, (time.time() - 7200, time.time() - 7200))
    res = wait_ranks(start_ranks(2, ["--steps", "2", "--batch-size", "4"], out, rdv), 300,
                     "nccl stale file, whole job")
    if any(rc != 0 for rc, _, _ in res.values()):
        fail(f"nccl stale file, whole job: exits {[v[0] for v in res.values()]}: "
             f"{res[1][2][-1500:]}")
    else:
        print("nccl stale file, whole job: trained (rank 0 replaced the file)")


CASES = {"equal": case_equal, "resume": case_resume, "stop": case_stop, "kill": case_kill,
         "hang": case_hang, "env": case_env, "interp": case_interp,
         "checkpoint_error": case_checkpoint_error, "buckets": case_buckets,
         "nccl_equal": case_nccl_equal, "nccl_faults": case_nccl_faults,
         "nccl_stale_ok": case_nccl_stale_ok}
if __name__ == "__main__":
    if shutil.which("mpirun") is None:
        print("mpirun not found: install openmpi-bin (tools/scripts/setup.sh does)")
        sys.exit(1)
    os.makedirs(SCRATCH, exist_ok=True)
    for name in ARGS or list(CASES):
        CASES[name]()
    print("FAILED:" if failures else "passed", len(failures) or "")
    sys.exit(1 if failures else 0)
