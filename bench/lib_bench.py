#!/usr/bin/python3
"""lib_bench.py — per-call cost of a circc program from Python: subprocess + .npy files vs the --emit lib library (not a test).

Run by `cmake --build BUILD --target bench_lib` with Debian's /usr/bin/python3
(python3-numpy only). Steps:
  1. imports the 4-layer shakespeare_gpt2 (models/gpt2; n_embd 128, vocabulary
     50257) at --seq T with gpt2_import and compiles it with circc twice: an
     executable and a library (--emit lib), loaded with python/circc.py;
  2. checks once that both give the same logits (bit for bit) and stops with
     exit code 1 if not;
  3. in --rounds rounds (each after waiting, within --quiet-wait seconds in
     all, for the machine to go quiet) makes --calls calls of each of three
     ways, interleaved call by call in a shuffled order so they share the
     machine's conditions:
       run: the library's run function called directly through ctypes on
         buffers set up once (the model's own time, no Python conversions);
       library: m(tokens=ids) through python/circc.py, which checks and
         converts the input and returns every output in fresh arrays;
       subprocess: np.save the tokens, run the executable with --input and
         --output logits=@FILE (hidden states are not written), np.load them;
     and, after the rounds, python/circc.py's own work per call: m(tokens=ids)
     on a second Model whose run function is swapped for a C call that does
     nothing (libc's sched_yield, which returns 0), as the run's noise hides it;
  4. reports, as medians over rounds of each round's median, the time per
     call of each way and its overhead: its per-call difference from the
     bare run of the same iteration.
It prints the table and writes it, with the CPU (lscpu's model name), into
its own section of bench/RESULTS.md (between the `bench_lib` markers).
"""
import argparse
import ctypes
import datetime
import os
import random
import subprocess
import sys
import time

# benchlib first: its CHILD_ENV (what the programs run with) is the caller's environment
from benchlib import CHILD_ENV, CpuMeter, die, log, med, run, wait_quiet, write_section  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import circc  # noqa: E402

MODEL = os.path.join(HERE, "..", "models", "gpt2", "shakespeare_gpt2")
GOLDEN_IDS = os.path.join(HERE, "..", "models", "gpt2", "golden", "shakespeare_gpt2", "romeo_input_ids.npy")


def cpu_model():
    out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def build(args):
    work = args.work
    os.makedirs(work, exist_ok=True)
    run([args.gpt2_import, "--seq", str(args.seq), "--name", "gpt2", MODEL, work])
    circ, store = os.path.join(work, "gpt2.circ"), os.path.join(work, "store")
    run([args.circc, "--tensors", store, circ, "-o", os.path.join(work, "gpt2")])
    run([args.circc, "--tensors", store, circ, "--emit", "lib", "-o", os.path.join(work, "gpt2.so")])


def tokens(seq):
    """The golden prompt's first seq tokens (repeated if it is shorter)."""
    ids = np.load(GOLDEN_IDS).reshape(-1)
    return np.resize(ids, seq).astype(np.int64)


def via_subprocess(exe, ids, work, threads):
    t_in, t_out = os.path.join(work, "tokens.npy"), os.path.join(work, "logits.npy")
    np.save(t_in, ids)
    subprocess.run([exe, "--threads", str(threads), "--input", f"tokens=@{t_in}", "--output", f"logits=@{t_out}"],
                   env=CHILD_ENV, check=True)
    return np.load(t_out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--circc", required=True)
    ap.add_argument("--gpt2-import", required=True)
    ap.add_argument("--work", required=True, help="scratch dir (the import, the program and the library: ~60 MB)")
    ap.add_argument("--results", help="markdown file to update (default: no file)")
    ap.add_argument("--seq", type=int, default=16, help="tokens per call (default 16)")
    ap.add_argument("--threads", type=int, default=1, help="threads of the model (default 1: the figure is the overhead)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=40, help="calls of each way per round")
    ap.add_argument("--quiet-wait", type=float, default=60,
                    help="seconds in all to wait for a quiet machine before rounds")
    args = ap.parse_args()
    args.quiet_budget = args.quiet_wait
    build(args)
    exe, ids = os.path.join(args.work, "gpt2"), tokens(args.seq)
    m = circc.load(os.path.join(args.work, "gpt2.so"), threads=args.threads)
    want = via_subprocess(exe, ids, args.work, args.threads)
    got = m(tokens=ids)["logits"]
    if got.shape != want.shape or not np.array_equal(got, want):
        die(f"the library's logits differ from the executable's (max |diff| {np.max(np.abs(got - want)):.3g})")

    # the bare run: the loader's ctypes function and context, on pointer arrays of buffers made once
    bufs = {t.name: np.empty(t.shape, t.dtype) for t in m.outputs}
    c_in = (ctypes.c_void_p * 1)(ids.ctypes.data)
    c_out = (ctypes.c_void_p * len(bufs))(*[b.ctypes.data for b in bufs.values()])

    def bare():
        if m._fn["run"](m._ctx, c_in, c_out, None):
            die("the bare run failed")
    ways = {"run": bare, "library": lambda: m(tokens=ids),
            "subprocess": lambda: via_subprocess(exe, ids, args.work, args.threads)}
    rows = {w: [] for w in ways}
    over = {w: [] for w in ways}
    meter = CpuMeter()
    others = []
    rng = random.Random(1)
    for r in range(args.rounds):
        wait_quiet(args)
        meter.start()
        ts = {w: [] for w in ways}
        for _ in range(args.calls):
            order = list(ways)
            rng.shuffle(order)   # no way always follows the subprocess (cold caches)
            for w in order:
                t = time.perf_counter()
                ways[w]()
                ts[w].append((time.perf_counter() - t) * 1e3)
        others.append(meter.others())
        for w in ways:
            rows[w].append(med(ts[w]))
            over[w].append(med([a - b for a, b in zip(ts[w], ts["run"])]))
        log(f"round {r + 1}: " + ", ".join(f"{w} {rows[w][-1]:.3f} ms" for w in ways) + " per call")

    # the loader's own work: the same call with the run swapped for a C function returning 0
    noop = circc.load(os.path.join(args.work, "gpt2.so"))
    noop._fn["run"] = ctypes.CDLL(None).sched_yield
    noop(tokens=ids)
    own = []
    for _ in range(5 * args.calls):
        t = time.perf_counter()
        noop(tokens=ids)
        own.append((time.perf_counter() - t) * 1e3)

    cpu = cpu_model()
    body = [
        "## From Python: subprocess + .npy vs the --emit lib library",
        "",
        f"{datetime.date.today()}, {cpu}, {args.threads} thread{'s' if args.threads > 1 else ''}, `bench/lib_bench.py` (`cmake --build BUILD "
        f"--target bench_lib`): the 4-layer shakespeare_gpt2 at T={args.seq}, medians over {args.rounds} rounds of "
        f"{args.calls} calls each; other processes used {med(others):.2f} cores meanwhile.",
        "",
        "| way | ms per call | overhead (ms per call beyond the run) |",
        "|---|---:|---:|",
        f"| the model's run (the library's run function through bare ctypes) | {med(rows['run']):.3f} | — |",
    ]
    for way, label in (("library", "library through python/circc.py (every output)"),
                       ("subprocess", "subprocess + .npy files (logits only)")):
        body.append(f"| {label} | {med(rows[way]):.3f} | {med(over[way]):.3f} |")
    body.append(f"| python/circc.py's own work (the run swapped for a no-op C call) | {med(own):.3f} | {med(own):.3f} |")
    body.append("")
    log("\n".join(body))
    if args.results:
        write_section(args.results, "bench_lib", body)
        log(f"wrote {args.results}")


if __name__ == "__main__":
    main()
