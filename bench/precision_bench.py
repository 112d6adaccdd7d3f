#!/usr/bin/env python3
"""precision_bench.py — circc --precision bf16 and int8 against fp32 (a benchmark, not a test).

Accuracy, on the bundled trained GPT-2 (models/gpt2/shakespeare_gpt2 and its
golden validation batch val4x128, models/gpt2/golden):
  max |logit - fp32 logit| over the batch, the mean loss of both and their
  difference, top-1 agreement over every position, and greedy continuation
  agreement: both decode programs generate N tokens greedily from the golden
  prompt (romeo), compared token by token.
Speed, on GPT-2 small with random weights (gpt2_import --random-config
models/gpt2/gpt2_small_config.json; values do not change the time): prefill
T = 256 and T = 1024 (logits only) and decode with 64 and 1000 past tokens
(cache 1024), each program's `--bench N` median, the precisions taking turns
in --rounds rounds, and the medians over rounds; decode also against the fp32
bandwidth bound (every fp32 weight read once plus the past keys/values, over
the DRAM read bandwidth bench/peak.c measures around the decode runs).

Writes its section of bench/RESULTS.md (--results). Needs numpy.
"""
import argparse
import json
import os
import platform
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import CpuMeter, die, field, log, med, run, write_section  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2 = os.path.join(SRC, "models", "gpt2")


def cpu_name():
    with open("/proc/cpuinfo") as f:
        text = f.read()
    name = re.search(r"model name\s*:\s*(.*)", text).group(1).strip()
    flags = re.search(r"flags\s*:\s*(.*)", text).group(1).split()
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]
    return f"{name} ({os.cpu_count()} cores; {', '.join(isa) or 'no AVX-512'})"


LOW = ("bf16", "int8")  # the reduced precisions, each against fp32


def compile_all(args, circ, store, out, extra=()):
    progs = {}
    for p in ("fp32",) + LOW:
        progs[p] = f"{out}_{p}"
        if not os.path.exists(progs[p]):
            run([args.circc, "--precision", p, "--tensors", store, circ, *extra, "-o", progs[p]])
    return progs


# ---------------------------------------------------------------- accuracy

def accuracy(args):
    work = os.path.join(args.work, "acc")
    os.makedirs(work, exist_ok=True)
    model, gold = os.path.join(GPT2, "shakespeare_gpt2"), os.path.join(GPT2, "golden", "shakespeare_gpt2")
    ids = np.load(os.path.join(gold, "val4x128_input_ids.npy"))
    B, T = ids.shape
    np.save(os.path.join(work, "ids.npy"), ids)
    np.save(os.path.join(work, "targets.npy"), ids[:, 1:])
    run([args.gpt2_import, "--seq", str(T), "--batch", str(B), "--loss", "--name", "val", model, work])
    progs = compile_all(args, os.path.join(work, "val.circ"), os.path.join(work, "store"), os.path.join(work, "val"))
    logits, loss = {}, {}
    for p, prog in progs.items():
        run([prog, "--input", f"tokens=@{work}/ids.npy", "--input", f"targets=@{work}/targets.npy",
             "--output", f"logits=@{work}/logits_{p}.npy", "--output", f"loss=@{work}/loss_{p}.npy"])
        logits[p] = np.load(f"{work}/logits_{p}.npy")
        loss[p] = float(np.load(f"{work}/loss_{p}.npy"))
    # greedy continuation with the decode programs
    prompt = np.load(os.path.join(gold, "romeo_input_ids.npy")).reshape(-1)
    n = args.greedy
    run([args.gpt2_import, "--decode", "--seq", str(len(prompt) + n), "--name", "gen", model, work])
    dec = compile_all(args, os.path.join(work, "gen_decode.circ"), os.path.join(work, "store"),
                      os.path.join(work, "dec"))
    gen = {}
    for p, prog in dec.items():
        out = run([prog, "--tokens", ",".join(str(int(t)) for t in prompt), "--greedy", "--generate", str(n),
                   "--print-ids"])
        gen[p] = [int(t) for t in out.strip().splitlines()[-1].split(",")][len(prompt):]
    acc = {}
    for p in LOW:
        d = np.abs(logits[p].astype(np.float64) - logits["fp32"])
        top1 = float((logits[p].argmax(-1) == logits["fp32"].argmax(-1)).mean())
        same = sum(a == b for a, b in zip(gen["fp32"], gen[p]))
        first = next((i for i, (a, b) in enumerate(zip(gen["fp32"], gen[p])) if a != b), n)
        acc[p] = {"max_dlogit": float(d.max()), "mean_dlogit": float(d.mean()),
                  "logit_range": float(np.abs(logits["fp32"]).max()), "loss_fp32": loss["fp32"], "loss": loss[p],
                  "top1": top1, "greedy_n": n, "greedy_same": same, "greedy_first_diff": first, "B": B, "T": T}
    return acc


# ------------------------------------------------------------------- speed

def inputs_from_info(prog, d, past, T):
    """Decode inputs from the program's --info: token, pos, kv_mask (1 for the
    past positions), past_k/past_v random (their values do not change the time)."""
    info = run([prog, "--info"])
    info = info[info.index("\ninputs:\n"):info.index("\noutputs:\n")]
    rng = np.random.default_rng(1)
    args = []
    for name, shape in re.findall(r"^  (\w+) \[([0-9,]*)\] (?:float32|int64)$", info, re.M):
        shape = [int(s) for s in shape.split(",") if s]
        if name == "tokens":  # prefill
            a = rng.integers(0, 50257, shape).astype(np.int64)
        elif name == "token":
            a = np.array([464], np.int64)
        elif name == "pos":
            a = np.array([past], np.int64)
        elif name == "kv_mask":
            a = (np.arange(T) < past).astype(np.float32)
        else:
            a = rng.standard_normal(shape).astype(np.float32) * 0.5
        np.save(os.path.join(d, f"{name}.npy"), a.reshape(shape))
        args += ["--input", f"{name}=@{d}/{name}.npy"]
    return args


def bench_ms(prog, inputs, n, threads):
    out = run([prog, *inputs, "--bench", str(n), "--threads", str(threads)])
    return float(re.search(r"median ([0-9.eE+-]+) ms", out).group(1))


def speed(args):
    work = os.path.join(args.work, "speed")
    os.makedirs(work, exist_ok=True)
    cfg_path = os.path.join(GPT2, "gpt2_small_config.json")
    cfg = json.load(open(cfg_path))
    L, C, V, NPOS = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    cases = []  # (key, label, progs, inputs, runs, past)
    for T in (256, 1024):
        out = os.path.join(work, f"p{T}")
        if not os.path.exists(os.path.join(out, "gpt2.circ")):
            run([args.gpt2_import, "--seq", str(T), "--random-config", cfg_path, out])
        progs = compile_all(args, os.path.join(out, "gpt2.circ"), os.path.join(out, "store"), out,
                             ["--output", "logits"])
        d = os.path.join(work, f"in_p{T}")
        os.makedirs(d, exist_ok=True)
        cases.append((f"p{T}", f"prefill T = {T}", progs, inputs_from_info(progs["fp32"], d, 0, T),
                      args.runs if T == 256 else max(2, args.runs // 3), 0))
    out = os.path.join(work, "dec")
    if not os.path.exists(os.path.join(out, "gpt2_decode.circ")):
        run([args.gpt2_import, "--seq", "1024", "--decode", "--random-config", cfg_path, out])
    dec = compile_all(args, os.path.join(out, "gpt2_decode.circ"), os.path.join(out, "store"), out)
    for past in (64, 1000):
        d = os.path.join(work, f"in_d{past}")
        os.makedirs(d, exist_ok=True)
        cases.append((f"d{past}", f"decode, {past} past tokens", dec, inputs_from_info(dec["fp32"], d, past, 1024),
                      args.runs * 4, past))
    params = V * C + NPOS * C + L * (12 * C * C + 13 * C) + 2 * C
    res = {c[0]: {"fp32": [], "bw": [], **{p: [] for p in LOW}} for c in cases}
    meter = CpuMeter()
    meter.start()
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for key, label, progs, inputs, runs, past in cases:
            if past:
                res[key]["bw"].append(field("gbs", run([args.peak, "--threads", str(args.threads), "--seconds", "0.1",
                                                          "--reps", "3"])))
            order = ("fp32",) + LOW
            for p in order[r % len(order):] + order[:r % len(order)]:  # each goes first in turn
                res[key][p].append(bench_ms(progs[p], inputs, runs, args.threads))
            log(f"round {r + 1}: {label}: " + ", ".join(f"{p} {res[key][p][-1]:.2f} ms" for p in order))
        loads.append(os.getloadavg()[0])
    rows = []
    for key, label, progs, inputs, runs, past in cases:
        row = {"label": label, "fp32": med(res[key]["fp32"]), **{p: med(res[key][p]) for p in LOW}}
        if past:
            fp32_bytes = 4 * (params - NPOS * C + C) + 4 * 2 * L * past * C
            bw = med(res[key]["bw"])
            row["bound"] = fp32_bytes / (bw * 1e9) * 1e3
            row["bw"] = bw
        rows.append(row)
    return rows, {"others": meter.others(), "loads": loads}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--circc", required=True)
    ap.add_argument("--gpt2-import", required=True)
    ap.add_argument("--peak", required=True, help="bench/peak.c's binary (DRAM read bandwidth)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--results", help="bench/RESULTS.md: write this script's section there")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=6, help="--bench N of prefill T = 256 (T = 1024: N/3; decode: 4N)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--greedy", type=int, default=100, help="tokens of the greedy continuation")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    acc = accuracy(args)
    log(json.dumps(acc))
    body = ["## --precision bf16 and int8 vs fp32 (bench/precision_bench.py)", "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPU: {cpu_name()} (lscpu's model name); "
            f"host {platform.node()}; {args.threads} thread{'s' if args.threads > 1 else ''}.", "",
            f"Accuracy, models/gpt2/shakespeare_gpt2 on its validation batch val4x128 ({acc['bf16']['B']} x "
            f"{acc['bf16']['T']} tokens; \\|logits\\| up to {acc['bf16']['logit_range']:.1f}):", "",
            "| | " + " | ".join(LOW) + " |", "| --- |" + " --- |" * len(LOW),
            "| max \\|logit − fp32 logit\\| (mean) | "
            + " | ".join(f"{acc[p]['max_dlogit']:.4f} ({acc[p]['mean_dlogit']:.5f})" for p in LOW) + " |",
            f"| mean loss (fp32 {acc['bf16']['loss_fp32']:.6f}) / difference | "
            + " | ".join(f"{acc[p]['loss']:.6f} / {acc[p]['loss'] - acc[p]['loss_fp32']:+.2e}" for p in LOW) + " |",
            "| top-1 agreement, every position | " + " | ".join(f"{100 * acc[p]['top1']:.2f}%" for p in LOW) + " |",
            f"| greedy continuation of the romeo prompt, {args.greedy} tokens | "
            + " | ".join(f"{acc[p]['greedy_same']} equal"
                         + (f"; first difference at token {acc[p]['greedy_first_diff']}"
                            if acc[p]["greedy_same"] < acc[p]["greedy_n"] else "") for p in LOW) + " |",
            ""]
    if not args.skip_speed:
        rows, load = speed(args)
        body += [f"Speed, GPT-2 small (random weights), {args.threads} thread{'s' if args.threads > 1 else ''}, "
                 f"median of {args.rounds} rounds (the precisions taking turns; other processes used "
                 f"{load['others']:.2f} cores on average, load average {min(load['loads']):.1f}–{max(load['loads']):.1f}):",
                 "",
                 "| case | fp32 ms | " + " | ".join(f"{p} ms (fp32 / {p})" for p in LOW) + " | "
                 + " | ".join(f"{p} / fp32 bandwidth bound" for p in LOW) + " |",
                 "| --- | --- |" + " --- |" * (2 * len(LOW))]
        for r in rows:
            bound = [f"{r[p] / r['bound']:.2f}× (bound {r['bound']:.1f} ms at {r['bw']:.1f} GB/s)" if "bound" in r
                     else "" for p in LOW]
            body.append(f"| {r['label']} | {r['fp32']:.1f} | "
                        + " | ".join(f"{r[p]:.1f} ({r['fp32'] / r[p]:.2f}×)" for p in LOW) + " | "
                        + " | ".join(bound) + " |")
        body.append("")
    print("\n".join(body))
    if args.results:
        write_section(args.results, "precision_bench", body)


if __name__ == "__main__":
    main()
