#!/usr/bin/env python3
"""Mutation self-check of the interpreter suite (docs/interpreter.md).

Copies the source tree, builds the interpreter's test binary there once, then for each mutant
(every __syncthreads() removed in turn, plus a few classic mistakes: an unmasked tile edge, a
halved reduction tree or warp reduction) rebuilds only the kernel library and runs the
interpreted GPU tests of the mutated file. A mutant is caught when a test fails. Prints one line
per mutant and the score.

  tools/scripts/mutate_kernels.py [--only FILE.cu] [--kinds all|barrier|extra] [--seeds 1,2] [--jobs N]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The interpreted tests that exercise each kernel file (Catch test specs).
TESTS = {
    "attention.cu": "[attention][cuda],[self_attention][cuda]",
    "attention_mma.cu": "[attention flash][cuda],[self_attention flash][cuda]",
    "batchnorm.cu": "[batch_norm][cuda]",
    "loss.cu": "[bce_with_logits][cuda],[hinge_loss][cuda],[softmax_cross_entropy][cuda]",
    "reduce.cu": "[sum][cuda],[mean][cuda],[linear][cuda],[conv2d][cuda],[batch_norm][cuda]",
    # The SAGAN-sized layer sets are left to the full suite: these run in about a minute.
    "spectral_norm.cu": "op spectral_norm cuda,"
                        "spectral_norm: cuda sigma matches the Jacobi top singular value,"
                        "spectral_norm: cuda two forwards before one backward match the cpu",
}
DEFAULT_TESTS = "[cuda]~[trainer]"

# Classic mistakes beyond barrier removal: (file, pattern, replacement, description).
EXTRA = [
    ("attention.cu", "if (r < rows_valid && c < cols_valid) val =", "if (true) val =",
     "unmasked tile edge (tile loads)"),
    ("attention.cu", "if (c < a.d) dk[", "dk[", "unmasked tile edge (dK store)"),
    ("attention.cu", "if (c < a.d) dq[", "dq[", "unmasked tile edge (dQ store)"),
    ("attention.cu", "cub::WarpReduce<float>(none).Sum(s)", "cub::WarpReduce<float>(none).Sum(s, 16)",
     "halved warp reduction (row dot)"),
    ("attention_mma.cu", "if (kn < kCols)", "if (false)", "unmasked key tail (forward)"),
    ("attention_mma.cu", "if (col < a.d) dk[", "dk[", "unmasked tile edge (dK store)"),
    ("attention_mma.cu", "if (col < a.d) dq[", "dq[", "unmasked tile edge (dQ store)"),
    ("attention_mma.cu", "return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));", "return v;",
     "halved row max (2 of the 4 lanes)"),
    ("attention_mma.cu", "mma::mma_m16n8k8_tf32(e, a.hi, b.lo, e);", "",
     "3xTF32 without its hi*lo term"),
    ("attention_mma.cu", "fa(p[kk][0], p[kk][2], p[kk][1], p[kk][3])",
     "fa(p[kk][0], p[kk][1], p[kk][2], p[kk][3])", "C-to-A fragment without the k permutation"),
    ("reduce.cu", "RowReduce(tmp).Sum(v)", "RowReduce(tmp).Sum(v, kRowThreads / 2)",
     "halved block reduction"),
    ("loss.cu", "LossReduce(tmp).Sum(v)", "LossReduce(tmp).Sum(v, kThreads / 2)",
     "halved block reduction"),
    ("loss.cu", "WarpReduceF(none).Sum(v)", "WarpReduceF(none).Sum(v, 16)",
     "halved warp reduction"),
    ("spectral_norm.cu", "BlockSum(sm.reduce).Sum(v)", "BlockSum(sm.reduce).Sum(v, kThreads / 2)",
     "halved block reduction"),
    ("spectral_norm.cu", "WarpSum(none).Sum(v)", "WarpSum(none).Sum(v, 16)",
     "halved warp reduction"),
]


def mutants(only, kinds, root):
    """Mutants of the kernel files of `root` (the scratch copy: edits made to the working tree
    while the check runs do not mix with it)."""
    out = []
    kdir = os.path.join(root, "kernels")
    for name in sorted(os.listdir(kdir)):
        if not name.endswith(".cu") or (only and name != only) or kinds == "extra":
            continue
        text = open(os.path.join(kdir, name)).read()
        for m in re.finditer(r"__syncthreads\(\);", text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((name, line, "__syncthreads() removed",
                        text[:m.start()] + ";" + text[m.end():]))
    for name, pat, rep, what in EXTRA:
        if (only and name != only) or kinds == "barrier":
            continue
        text = open(os.path.join(kdir, name)).read()
        k = text.find(pat)
        if k < 0:
            print(f"mutate: pattern not found in {name}: {pat}", file=sys.stderr)
            continue
        line = text.count("\n", 0, k) + 1
        out.append((name, line, what, text[:k] + rep + text[k + len(pat):]))
    return out


def run(cmd, cwd, timeout=None, env=None):
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="mutate only this kernels/ file (e.g. attention.cu)")
    ap.add_argument("--seeds", default="1,2", help="schedule seeds each mutant is tested under")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=0, help="at most this many mutants")
    ap.add_argument("--kinds", choices=["all", "barrier", "extra"], default="all",
                    help="barrier removals, the other classic mistakes, or both")
    ap.add_argument("--keep", action="store_true", help="keep the scratch tree")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="gan_mutate_")
    src = os.path.join(work, "src")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build*", ".git", "runs"))
    build = os.path.join(work, "build")
    t0 = time.time()
    r = run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DGAN_BUILD_BENCH=OFF"],
            src)
    if r.returncode:
        sys.exit("mutate: configure failed\n" + r.stdout[-3000:])
    r = run(["cmake", "--build", build, "-j", str(a.jobs), "--target", "engine_tests_interp"], src)
    if r.returncode:
        sys.exit("mutate: the unmutated build failed\n" + r.stdout[-3000:])
    exe = os.path.join(build, "tests", "engine_tests_interp")
    print(f"mutate: baseline built in {time.time() - t0:.0f} s", flush=True)

    ms = mutants(a.only, a.kinds, src)
    if a.limit:
        ms = ms[:a.limit]
    caught = 0
    survivors = []
    for name, line, what, text in ms:
        path = os.path.join(src, "kernels", name)
        orig = open(path).read()
        open(path, "w").write(text)
        try:
            r = run(["cmake", "--build", build, "-j", str(a.jobs), "--target", "gan_kernels_interp"],
                    src)
            if r.returncode:
                verdict, why = "caught", "does not compile"
            else:
                verdict, why = "survived", ""
                for seed in a.seeds.split(","):
                    env = dict(os.environ, GAN_INTERP_SEED=seed)
                    try:
                        t = run([exe, TESTS.get(name, DEFAULT_TESTS)], src, timeout=900, env=env)
                        failed = t.returncode != 0
                    except subprocess.TimeoutExpired:
                        failed, t = True, None
                    if failed:
                        verdict = "caught"
                        why = f"seed {seed}: " + ("timeout" if t is None else
                                                  next((l.strip() for l in t.stdout.splitlines()
                                                        if "interp:" in l or "FAILED" in l),
                                                       f"exit {t.returncode}"))
                        break
        finally:
            open(path, "w").write(orig)
        caught += verdict == "caught"
        if verdict != "caught":
            survivors.append(f"{name}:{line} {what}")
        print(f"{verdict:8s} {name}:{line:<4d} {what}  {why[:160]}", flush=True)
    # Leave the kernel library unmutated.
    run(["cmake", "--build", build, "-j", str(a.jobs), "--target", "gan_kernels_interp"], src)
    print(f"\nmutation score: {caught}/{len(ms)} caught ({time.time() - t0:.0f} s)")
    for s in survivors:
        print("  survived:", s)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
