#!/usr/bin/env python3
"""Data-parallel gan_train on CPU ranks (mpirun; docs/distributed.md), end to end.

usage: test_distributed.py GAN_TRAIN SCRATCH_DIR [--interp GAN_TRAIN_INTERP] [CASE...]

Cases (all by default):
  equal   1, 2 and 3 ranks at the same global batch reach the same state after several steps
          (DCGAN with synchronised batch norm; SAGAN with its batch-normed G), every rank's state
          checked bitwise equal to the others' at every step (--dist-check-every 1)
  resume  a 2-rank checkpoint resumes on 1 rank and on 3 and reaches the 1-rank run's state
  stop    SIGTERM to the job: one coordinated checkpoint at the same step on every rank
  kill    a rank killed with SIGKILL ends the job within 60 s with a line naming the rank
  hang    a stopped (hung) rank ends the job within $GAN_DIST_TIMEOUT + a few seconds
  env     RANK/WORLD_SIZE without a launcher MPI can start from: one line, exit 1
  interp  (with --interp) the GPU path on the CPU interpreter: 2 ranks equal 1 (DCGAN)
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


def run(ranks, args, out, check=True, binary=None, **kw):
    if "--device" not in args:
        args = args + ["--device", "cpu"]
    cmd = [binary or GAN_TRAIN] + COMMON + args + ["--out", out, "--checkpoint-every", "1000"]
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
    for model, extra, steps, n_dis in (("dcgan", ["--sync-bn"], 3, 1),
                                       ("sagan", ["--sync-bn", "--ema", "0.99", "--n-dis", "2"], 2, 2)):
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
    args = ["--model", "dcgan", "--steps", "2", "--sync-bn", "--device", "cuda"]
    ref = dir_("interp_1")
    run(1, args + ["--batch-size", "8"], ref, binary=INTERP)
    out = dir_("interp_2")
    r = run(2, args + ["--batch-size", "4"], out, binary=INTERP)
    if r.returncode == 0:
        compare(f"{ref}/checkpoint.safetensors", f"{out}/checkpoint.safetensors",
                "interpreter: 2 ranks vs 1", 2)


CASES = {"equal": case_equal, "resume": case_resume, "stop": case_stop, "kill": case_kill,
         "hang": case_hang, "env": case_env, "interp": case_interp}
if __name__ == "__main__":
    if shutil.which("mpirun") is None:
        print("mpirun not found: install openmpi-bin (tools/scripts/setup.sh does)")
        sys.exit(1)
    os.makedirs(SCRATCH, exist_ok=True)
    for name in ARGS or list(CASES):
        CASES[name]()
    print("FAILED:" if failures else "passed", len(failures) or "")
    sys.exit(1 if failures else 0)
