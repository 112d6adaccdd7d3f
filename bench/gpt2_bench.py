#!/usr/bin/python3
"""gpt2_bench.py — GPT-2 small (124M) benchmark of circc against PyTorch (not a test).

Run by `cmake --build BUILD --target bench_gpt2` with Debian's /usr/bin/python3
(python3-torch, python3-numpy; scripts/setup.sh --bench installs them). Steps:
  1. writes deterministic random GPT-2 small weights in Hugging Face's layout
     (WORK/hf: config.json + model.safetensors, written by hand: no safetensors
     package) and imports them with gpt2_import, so both sides share weights;
  2. compiles the prefill programs (B=1 T=64/256/1024, B=4 T=64) and the decode
     program (one position, a key/value cache of 1024 positions, as generation
     uses) with circc;
  3. checks once that each program's logits match this file's minimal PyTorch
     GPT-2 (rtol = atol = 1e-3) and stops with exit code 1 if not;
  4. runs the GEMM benchmark (gemm_bench: circc's GEMM template vs OpenBLAS
     sgemm on the GPT-2 shapes), if given;
  5. times every case in --rounds rounds (decode: twice as many) of [peak
     probe, circc program, peak probe, PyTorch]; the prefill T=256 case also
     runs both with 1 thread for the scaling row. A round's peak and bandwidth are the mean of the two
     probes around its circc runs (the shared host's memory bandwidth drifts
     by 2x within seconds). Medians over rounds; ratios are per round (same
     conditions), then their median. Before each round it waits (--quiet-wait
     seconds in all) for the other jobs on the machine to go quiet, and it
     reports the CPU they used during the rounds.
It prints the table and writes it, with the machine, into its own section of
bench/RESULTS.md (between the `bench_gpt2` markers; run_bench.sh owns another).
PyTorch runs in this process with OMP_WAIT_POLICY=PASSIVE (set before torch is
imported) and its OpenBLAS limited to the same thread count; the circc programs
and the probes run as child processes with the caller's environment.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
import struct
import subprocess
import sys
import time

# benchlib first: its CHILD_ENV (what the programs and probes run with) is the caller's environment
from benchlib import (CpuMeter, die, field, log, med, openblas, run,  # noqa: E402
                      set_torch_threads, wait_quiet, write_section)
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by libgomp when torch loads it
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# GPT-2 small
L, C, H, V, NPOS, EPS = 12, 768, 12, 50257, 1024, 1e-5
D = C // H
SEED = 20261122  # weights and tokens; change it to regenerate WORK/hf
DECODE_T = 1024  # cache length of the decode program


# ------------------------------------------------------------ weights

def hf_shapes():
    """(name, shape) of every GPT-2 small tensor, Hugging Face names and layout
    (Conv1D weights are [in, out])."""
    out = [("wte.weight", (V, C)), ("wpe.weight", (NPOS, C))]
    for i in range(L):
        p = f"h.{i}."
        out += [(p + "ln_1.weight", (C,)), (p + "ln_1.bias", (C,)),
                (p + "attn.c_attn.weight", (C, 3 * C)), (p + "attn.c_attn.bias", (3 * C,)),
                (p + "attn.c_proj.weight", (C, C)), (p + "attn.c_proj.bias", (C,)),
                (p + "ln_2.weight", (C,)), (p + "ln_2.bias", (C,)),
                (p + "mlp.c_fc.weight", (C, 4 * C)), (p + "mlp.c_fc.bias", (4 * C,)),
                (p + "mlp.c_proj.weight", (4 * C, C)), (p + "mlp.c_proj.bias", (C,))]
    return out + [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]


def make_weights():
    """Deterministic random weights: normal std 0.02 (biases 0.01), layer
    norm scales 1 + 0.1 * normal, so every parameter matters to the check."""
    g = torch.Generator().manual_seed(SEED)
    w = {}
    for name, shape in hf_shapes():
        r = torch.randn(shape, generator=g, dtype=torch.float32)
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            w[name] = 1 + 0.1 * r
        elif name.endswith(".bias"):
            w[name] = 0.01 * r
        else:
            w[name] = 0.02 * r
    return w


def write_safetensors(path, tensors):
    """safetensors: u64 little-endian header length, JSON header (dtype,
    shape, data_offsets into the data), then the raw little-endian data."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, t in tensors.items():
        n = t.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for t in tensors.values():
            f.write(t.contiguous().numpy().astype("<f4", copy=False).tobytes())
    os.replace(tmp, path)


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if e["dtype"] != "F32":
            die(f"{path}: {name}: dtype {e['dtype']}, expected F32")
        b, end = e["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data, dtype="<f4", count=(end - b) // 4, offset=b)
                                     .reshape(e["shape"]).copy())
    return out


def ensure_checkpoint(hf_dir):
    cfg = {"model_type": "gpt2", "activation_function": "gelu_new", "layer_norm_epsilon": EPS,
           "n_embd": C, "n_head": H, "n_layer": L, "n_positions": NPOS, "n_ctx": NPOS, "vocab_size": V,
           "tie_word_embeddings": True, "_comment": f"random weights of bench/gpt2_bench.py, seed {SEED}"}
    cfg_path, st_path = os.path.join(hf_dir, "config.json"), os.path.join(hf_dir, "model.safetensors")
    try:
        with open(cfg_path) as f:
            fresh = json.load(f) == cfg and os.path.exists(st_path)
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        os.makedirs(hf_dir, exist_ok=True)
        log(f"== writing random GPT-2 small weights (seed {SEED}) to {hf_dir}")
        write_safetensors(st_path, make_weights())
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=1)
    return read_safetensors(st_path)


# ------------------------------------------------------------ PyTorch GPT-2

class TorchGPT2:
    """A minimal GPT-2 forward with torch.nn.functional (tanh GELU, causal
    attention over the full square, as Hugging Face's eager GPT-2 does)."""

    def __init__(self, w):
        self.w = w
        self.mask = torch.ones(NPOS, NPOS, dtype=torch.bool).tril()

    def block_qkv(self, i, x):
        w = self.w
        h = F.layer_norm(x, (C,), w[f"h.{i}.ln_1.weight"], w[f"h.{i}.ln_1.bias"], EPS)
        qkv = F.linear(h, w[f"h.{i}.attn.c_attn.weight"].t(), w[f"h.{i}.attn.c_attn.bias"])
        B, T = x.shape[:2]
        return [t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=2)]  # [B,H,T,D]

    def block_rest(self, i, x, y):
        w = self.w
        B, T = x.shape[:2]
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, w[f"h.{i}.attn.c_proj.weight"].t(), w[f"h.{i}.attn.c_proj.bias"])
        h = F.layer_norm(x, (C,), w[f"h.{i}.ln_2.weight"], w[f"h.{i}.ln_2.bias"], EPS)
        h = F.gelu(F.linear(h, w[f"h.{i}.mlp.c_fc.weight"].t(), w[f"h.{i}.mlp.c_fc.bias"]), approximate="tanh")
        return x + F.linear(h, w[f"h.{i}.mlp.c_proj.weight"].t(), w[f"h.{i}.mlp.c_proj.bias"])

    def logits(self, x):
        x = F.layer_norm(x, (C,), self.w["ln_f.weight"], self.w["ln_f.bias"], EPS)
        return F.linear(x, self.w["wte.weight"])

    def prefill(self, tokens, cache=None):
        """tokens [B,T] -> logits [B,T,V]; cache: a list to receive (k, v) [B,H,T,D] per layer."""
        T = tokens.shape[1]
        x = self.w["wte.weight"][tokens] + self.w["wpe.weight"][:T]
        for i in range(L):
            q, k, v = self.block_qkv(i, x)
            if cache is not None:
                cache.append((k, v))
            s = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(D))
            s = s.masked_fill(~self.mask[:T, :T], float("-inf"))
            x = self.block_rest(i, x, F.softmax(s, dim=-1) @ v)
        return self.logits(x)

    def decode(self, token, pos, kc, vc):
        """One new position: token [1,1] at position pos; kc, vc [L,1,H,Tmax,D]
        hold the keys/values of positions < pos, this position's are written
        at row pos. -> logits [V]."""
        x = self.w["wte.weight"][token] + self.w["wpe.weight"][pos:pos + 1]
        for i in range(L):
            q, k, v = self.block_qkv(i, x)
            kc[i, :, :, pos:pos + 1] = k
            vc[i, :, :, pos:pos + 1] = v
            s = (q @ kc[i, :, :, :pos + 1].transpose(-2, -1)) * (1 / math.sqrt(D))
            x = self.block_rest(i, x, F.softmax(s, dim=-1) @ vc[i, :, :, :pos + 1])
        return self.logits(x)[0, 0]


# ------------------------------------------------------------ cases

MATMUL_PARAMS = L * (C * 3 * C + C * C + 2 * C * 4 * C) + V * C  # 123.5M
ALL_PARAMS = sum(math.prod(s) for _, s in hf_shapes())


def prefill_flops(B, T):
    """2 x matmul parameters per token + causal attention (QK^T and AV over j <= i)."""
    return B * (2 * MATMUL_PARAMS * T + L * 2 * C * T * (T + 1))


def decode_flops(past):
    return 2 * MATMUL_PARAMS + L * 4 * C * (past + 1)


def decode_bytes(past):
    """What one decode step must read: every weight once (one row of wpe) and
    the keys/values of the past positions."""
    return 4 * (ALL_PARAMS - NPOS * C + C) + 4 * 2 * L * past * C


class Case:
    def __init__(self, key, label, kind, B=1, T=0, past=0, threads=(2,), runs=5, torch_runs=None):
        self.key, self.label, self.kind, self.B, self.T, self.past = key, label, kind, B, T, past
        self.threads, self.runs, self.torch_runs = threads, runs, torch_runs or runs
        self.prog = self.inputs = None
        self.compile_s = self.compile_rss = None  # set for the case that built its program
        self.res = {}  # (what, threads) -> list over rounds

    def flops(self):
        return prefill_flops(self.B, self.T) if self.kind == "prefill" else decode_flops(self.past)

    def tokens(self):
        return self.B * self.T if self.kind == "prefill" else 1


def make_cases(threads, scale):
    r = lambda n: max(1, round(n * scale))  # noqa: E731
    return [
        Case("t64", "prefill B=1 T=64", "prefill", 1, 64, runs=r(6)),
        Case("t256", "prefill B=1 T=256", "prefill", 1, 256, threads=(threads, 1), runs=r(3)),
        Case("b4t64", "prefill B=4 T=64", "prefill", 4, 64, runs=r(3)),
        Case("t1024", "prefill B=1 T=1024", "prefill", 1, 1024, runs=r(1)),
        Case("d64", "decode, 64 past tokens", "decode", past=64, runs=r(20)),
        Case("d1000", "decode, 1000 past tokens", "decode", past=1000, runs=r(20)),
    ]


# Runs argv[1:] and prints its peak resident memory. A child of this process
# would count the memory the fork copied (PyTorch's) in its peak: a fresh
# interpreter starts it instead.
MEASURE = ("import os, subprocess, sys\n"
           "p = subprocess.Popen(sys.argv[1:])\n"
           "_, status, usage = os.wait4(p.pid, 0)\n"
           "print(f'maxrss_kib {usage.ru_maxrss}', flush=True)\n"
           "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_measured(cmd):
    """run(cmd), and its wall time in s and peak resident memory in bytes (the
    process and the children it waited for: circc and its C compiler)."""
    t0 = time.time()
    out = run([sys.executable, "-c", MEASURE] + cmd)
    m = re.search(r"^maxrss_kib (\d+)$", out, re.M)
    if not m:
        die(f"{' '.join(cmd)}: no peak memory in:\n{out}")
    return time.time() - t0, int(m.group(1)) * 1024


def build_programs(args, cases, tokens_all):
    out = os.path.join(args.work, "import")
    hf = os.path.join(args.work, "hf")
    built = set()
    for c in cases:
        name = f"gpt2_{c.key}"
        if c.kind == "prefill":
            imp = ["--seq", str(c.T), "--name", name] + (["--batch", str(c.B)] if c.B > 1 else [])
            circ = os.path.join(out, name + ".circ")
        else:
            imp = ["--seq", str(DECODE_T), "--decode", "--name", "gpt2_dec"]
            circ = os.path.join(out, "gpt2_dec_decode.circ")
        c.prog = os.path.join(args.work, "prog_" + (c.key if c.kind == "prefill" else "decode"))
        if c.prog not in built:  # the decode cases share one program
            built.add(c.prog)
            t0 = time.time()
            run([args.gpt2_import] + imp + [hf, out])
            t1 = time.time()
            c.compile_s, c.compile_rss = run_measured(
                [args.circc, "--tensors", os.path.join(out, "store"), circ, "--output", "logits", "-o", c.prog])
            log(f"== {c.label}: imported in {t1 - t0:.1f} s, compiled in {c.compile_s:.1f} s "
                f"(peak memory {c.compile_rss / 1e6:.0f} MB) -> {c.prog}")
        c.inputs = write_inputs(args.work, c, tokens_all)


def write_inputs(work, c, tokens_all):
    """The case's .npy inputs: token ids (and for decode the position, masks
    and the cache filled later by check_case); returns [--input ...] args."""
    d = os.path.join(work, "inputs_" + c.key)
    os.makedirs(d, exist_ok=True)
    if c.kind == "prefill":
        ids = tokens_all[:c.B * c.T].reshape(c.B, c.T)
        np.save(os.path.join(d, "tokens.npy"), ids if c.B > 1 else ids[0])
        return ["--input", f"tokens=@{d}/tokens.npy"]
    p = c.past
    mask = np.zeros(DECODE_T, np.float32)
    mask[:p] = 1  # the cached keys the new token attends to (j < pos)
    np.save(os.path.join(d, "token.npy"), tokens_all[p:p + 1])
    np.save(os.path.join(d, "pos.npy"), np.array([p], np.int64))
    np.save(os.path.join(d, "kv_mask.npy"), mask)
    return sum((["--input", f"{n}=@{d}/{n}.npy"] for n in
                ("token", "pos", "kv_mask", "past_k", "past_v")), [])


def decode_cache(model, tokens_all, past):
    """PyTorch's keys/values of the first `past` tokens in [L,1,H,DECODE_T,D] caches."""
    kc, vc = torch.zeros(L, 1, H, DECODE_T, D), torch.zeros(L, 1, H, DECODE_T, D)
    cache = []
    with torch.no_grad():
        model.prefill(torch.from_numpy(tokens_all[:past]).view(1, past), cache)
    for i, (k, v) in enumerate(cache):
        kc[i, :, :, :past], vc[i, :, :, :past] = k, v
    return kc, vc


def check_case(args, c, model, tokens_all):
    """circc's logits = PyTorch's (rtol = atol = 1e-3), else exit 1."""
    d = os.path.join(args.work, "inputs_" + c.key)
    with torch.no_grad():
        if c.kind == "prefill":
            ids = torch.from_numpy(tokens_all[:c.B * c.T]).view(c.B, c.T)
            want = model.prefill(ids)
            want = (want if c.B > 1 else want[0]).numpy()
        else:
            kc, vc = decode_cache(model, tokens_all, c.past)
            np.save(os.path.join(d, "past_k.npy"), kc[:, 0].numpy())
            np.save(os.path.join(d, "past_v.npy"), vc[:, 0].numpy())
            tok = torch.from_numpy(tokens_all[c.past:c.past + 1]).view(1, 1)
            want = model.decode(tok, c.past, kc, vc).numpy()
            if c.past <= 256:  # the cached step = row `past` of a prefill (PyTorch against itself)
                full = model.prefill(torch.from_numpy(tokens_all[:c.past + 1]).view(1, -1))[0, -1].numpy()
                if not np.allclose(want, full, rtol=1e-4, atol=1e-4):
                    die(f"{c.label}: PyTorch's decode step differs from its prefill")
    got_path = os.path.join(d, "circc_logits.npy")
    run([c.prog, "--threads", str(args.threads)] + c.inputs + ["--output", f"logits=@{got_path}"])
    got = np.load(got_path)
    if got.shape != want.shape:
        die(f"{c.label}: circc logits have shape {got.shape}, PyTorch's {want.shape}")
    err = np.abs(got.astype(np.float64) - want)
    bad = err > 1e-3 + 1e-3 * np.abs(want)
    if bad.any():
        i = np.unravel_index(np.argmax(err), err.shape)
        die(f"{c.label}: circc logits differ from PyTorch's in {int(bad.sum())} of {bad.size} elements "
            f"(worst at {tuple(int(x) for x in i)}: circc {got[i]:.6g}, PyTorch {want[i]:.6g})")
    log(f"== {c.label}: circc logits = PyTorch's (max |diff| {err.max():.2e}, max |logit| {np.abs(want).max():.3g})")


# ------------------------------------------------------------ timing

def probe(args):
    out = run([args.peak, "--threads", str(args.threads), "--seconds", "0.1", "--reps", "3"])
    lines = out.splitlines()
    fma = {int(field("threads", s)): field("gflops", s) for s in lines if s.startswith("fma ")}
    read = [field("gbs", s) for s in lines if s.startswith("read ")][0]
    isa = re.search(r"isa=(\S+)", out).group(1)
    return {"fma": fma, "read": read, "isa": isa}


def time_circc(c, threads):
    out = run([c.prog, "--threads", str(threads), "--bench", str(c.runs)] + c.inputs)
    m = re.search(r"(\d+) threads?: median ([0-9.eE+-]+) ms", out)
    if not m:
        die(f"{c.prog}: no bench line in:\n{out}")
    if int(m.group(1)) != threads:
        die(f"{c.prog}: ran with {m.group(1)} threads, asked for {threads}")
    return float(m.group(2))


def time_torch(model, c, threads, tokens_all, cache):
    set_torch_threads(torch, threads)
    with torch.no_grad():
        if c.kind == "prefill":
            ids = torch.from_numpy(tokens_all[:c.B * c.T]).view(c.B, c.T)
            f = lambda: model.prefill(ids)  # noqa: E731
        else:
            kc, vc = cache
            tok = torch.from_numpy(tokens_all[c.past:c.past + 1]).view(1, 1)
            f = lambda: model.decode(tok, c.past, kc, vc)  # noqa: E731
        f()  # warm-up, as the programs' --bench does
        ts = []
        for _ in range(c.torch_runs):
            t0 = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t0) * 1e3)
    set_torch_threads(torch, 1)
    time.sleep(0.2)  # let OpenBLAS's workers stop spinning before the next child runs
    return statistics.median(ts)


def bracket(a, b):
    """The machine during a round's circc runs: the mean of the probes right before and after them."""
    return {"fma": {t: (a["fma"][t] + b["fma"][t]) / 2 for t in a["fma"]}, "read": (a["read"] + b["read"]) / 2,
            "isa": a["isa"]}


def rounds(args, c):
    """Decode runs twice the rounds: a round is short, and the bandwidth it is
    compared with moves more between probes than the FMA peak does."""
    return args.rounds * (2 if c.kind == "decode" else 1)


def bench_cases(args, cases, model, tokens_all):
    meter = CpuMeter()
    for c in cases:
        cache = decode_cache(model, tokens_all, c.past) if c.kind == "decode" else None
        for r in range(rounds(args, c)):
            wait_quiet(args)
            meter.start()
            # the probes bracket the circc runs alone, so that the machine they
            # measure is the one the program ran on; PyTorch runs after them
            before = probe(args)
            ms = {t: time_circc(c, t) for t in c.threads}
            after = probe(args)
            tms = {t: time_torch(model, c, t, tokens_all, cache) for t in c.threads}
            line = []
            for t in c.threads:
                c.res.setdefault(("circc", t), []).append(ms[t])
                c.res.setdefault(("torch", t), []).append(tms[t])
                line.append(f"{t} thr: circc {ms[t]:.2f} ms, PyTorch {tms[t]:.2f} ms")
            c.res.setdefault("others", []).append(meter.others())
            p = bracket(before, after)
            c.res.setdefault("probe", []).append(p)
            line.insert(0, f"round {r + 1}: peak {p['fma'][args.threads]:.0f} GFLOP/s, read {p['read']:.1f} GB/s")
            line.append(f"other jobs {c.res['others'][-1]:.2f} cores")
            log(f"== {c.label}, " + "; ".join(line))


# ------------------------------------------------------------ report

def verdict(value, goal, higher_better=True):
    ok = value >= goal if higher_better else value <= goal
    return "yes" if ok else "**no**"


def report_rows(args, cases):
    """Markdown rows of the GPT-2 table and the list of (label, ratio, target, met) headline checks."""
    rows, heads = [], []
    n = args.threads
    for c in cases:
        probes = c.res["probe"]
        for t in c.threads:
            cm, tm = c.res[("circc", t)], c.res[("torch", t)]
            ms, tms = med(cm), med(tm)
            gf = c.flops() / ms * 1e-6
            pct = med([c.flops() / m * 1e-6 / p["fma"][t] * 100 for m, p in zip(cm, probes)])
            speed = med([b / a for a, b in zip(cm, tm)])
            targets = []
            if c.kind == "prefill" and t == n and c.B == 1:
                goal = 2.0 if c.T >= 1024 else 1.2
                targets.append((f"≥ {goal}× PyTorch", verdict(speed, goal)))
                heads.append((f"{c.label}: speed-up vs PyTorch", f"{speed:.2f}×", f"≥ {goal}×", verdict(speed, goal)))
                if c.T == 256:
                    targets.append(("≥ 65% of peak", verdict(pct, 65)))
                    heads.append((f"{c.label}: % of measured peak", f"{pct:.1f}%", "≥ 65%", verdict(pct, 65)))
            bound = ""
            if c.kind == "decode":
                bms = [decode_bytes(c.past) / (p["read"] * 1e9) * 1e3 for p in probes]
                ratio = med([m / b for m, b in zip(cm, bms)])
                bound = f"{med(bms):.1f} ms; circc {ratio:.2f}×"
                targets.append(("≤ 1.15× bound", verdict(ratio, 1.15, False)))
                heads.append((f"{c.label}: circc / bandwidth bound", f"{ratio:.2f}×", "≤ 1.15×",
                              verdict(ratio, 1.15, False)))
            if t != n:
                scale = med([a / b for a, b in zip(cm, c.res[("circc", n)])])
                tscale = med([a / b for a, b in zip(tm, c.res[("torch", n)])])
                targets.append((f"{n} threads ≥ 1.8× faster: {scale:.2f}× (PyTorch {tscale:.2f}×)",
                                verdict(scale, 1.8)))
                heads.append((f"{c.label}: {n} threads vs 1", f"{scale:.2f}×", "≥ 1.8×", verdict(scale, 1.8)))
            pct_s = f"{pct:.1f}" if c.kind == "prefill" else "–"
            rows.append(f"| {c.label} | {t} | {med(c.res['others']):.2f} | {ms:.2f} | {c.tokens() / ms * 1e3:.0f} | {gf:.1f} | {pct_s} | "
                        f"{tms:.2f} | {speed:.2f}× | {bound or '–'} | "
                        + ("; ".join(f"{a}: {b}" for a, b in targets) or "–") + " |")
    return rows, heads


def compile_heads(cases):
    """Headline rows for circc's compile time and peak memory (worst over the programs built)."""
    built = [c for c in cases if c.compile_s is not None]
    if not built:
        return []
    slow = max(built, key=lambda c: c.compile_s)
    big = max(built, key=lambda c: c.compile_rss)
    weights = 4 * ALL_PARAMS
    return [(f"circc compile time, slowest program ({slow.label}; emission + C compiler)", f"{slow.compile_s:.1f} s",
             "< 30 s", verdict(slow.compile_s, 30, False)),
            (f"circc peak memory / weights ({weights / 1e6:.0f} MB), largest ({big.label})",
             f"{big.compile_rss / weights:.2f}×", "< 2×", verdict(big.compile_rss / weights, 2, False))]


def gemm_section(out):
    """Markdown table of gemm_bench's output: circc vs OpenBLAS per shape."""
    lines = out.splitlines()
    res = {}
    for s in lines:
        m = re.match(r"(gemm|sgemm) M=(\d+) N=(\d+) K=(\d+) b=(\w+) threads=(\d+).* gflops=([0-9.]+)", s)
        if m:
            key = tuple(int(m.group(i)) for i in (2, 3, 4)) + (m.group(5),)
            who, t, g = m.group(1), int(m.group(6)), float(m.group(7))
            cur = res.setdefault(key, {})
            cur[(who, t)] = max(cur.get((who, t), 0), g)  # circc: the better of the row / column split
    ob = next((s for s in lines if s.startswith("openblas ")), None)
    if ob is None:
        return ["The GEMM comparison was skipped: gemm_bench was built without OpenBLAS (CMake did not find it)."], []
    nt = max(t for v in res.values() for (_, t) in v)
    rows = [f"GEMM only (`gemm_bench`, best of its repetitions, GFLOP/s): circc's `templates/gemm_f32.h` vs "
            f"OpenBLAS `cblas_sgemm` ({ob[len('openblas '):]}), run right after each other per shape. "
            "b=trans: B given as N×K (the tied unembedding). circc's threaded figure is the better of its row "
            "and column splits.", "",
            f"| M×N×K | b | circc 1 thr | OpenBLAS 1 thr | circc {nt} thr | OpenBLAS {nt} thr | "
            f"circc / OpenBLAS ({nt} thr) | target (M ≥ 64: ≥ 1) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    heads, worst = [], None
    for (M, N, K, b), v in res.items():
        r = v.get(("gemm", nt), 0) / v[("sgemm", nt)] if ("sgemm", nt) in v else None
        tgt = "–"
        if M >= 64 and r is not None:
            tgt = verdict(r, 1.0)
            worst = r if worst is None else min(worst, r)
        rows.append(f"| {M}×{N}×{K} | {b} | {v.get(('gemm', 1), 0):.1f} | {v.get(('sgemm', 1), 0):.1f} | "
                    f"{v.get(('gemm', nt), 0):.1f} | {v.get(('sgemm', nt), 0):.1f} | "
                    f"{'–' if r is None else f'{r:.2f}×'} | {tgt} |")
    if worst is not None:
        heads.append(("GEMM, GPT-2 shapes M ≥ 64: worst circc / OpenBLAS", f"{worst:.2f}×", "≥ 1×",
                      verdict(worst, 1.0)))
    return rows, heads


def machine(args, probes):
    cpu = fam = mod = "?"
    with open("/proc/cpuinfo") as f:
        for s in f:
            k, _, v = s.partition(":")
            k, v = k.strip(), v.strip()
            if k == "model name" and cpu == "?":
                cpu = v
            elif k == "cpu family" and fam == "?":
                fam = v
            elif k == "model" and mod == "?":
                mod = v
    ob = openblas()
    obs = ob.openblas_get_config().decode() if ob else "not found"
    cc = subprocess.run([os.environ.get("CC", "gcc"), "--version"], stdout=subprocess.PIPE, text=True)
    fma_n = max(p["fma"][args.threads] for p in probes)
    read = [p["read"] for p in probes]
    return [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
            f"- machine: {cpu} (CPU family {fam}, model {mod}), {os.cpu_count()} logical CPUs, "
            f"**shared with other jobs** (a 2-core machine other agents were using: absolute times are noisy, "
            f"compare the same-run ratios); load average (1/5/15 min) at start: {' '.join(args.load)}, at the end: "
            f"{' '.join(open('/proc/loadavg').read().split()[:3])}",
            f"- peak probe (bench/peak.c, {probes[0]['isa']}): {args.threads}-thread FMA up to {fma_n:.0f} GFLOP/s, "
            f"DRAM read {min(read):.1f}–{max(read):.1f} GB/s over the rounds",
            f"- circc programs: C compiler {cc.stdout.splitlines()[0] if cc.stdout else '?'}",
            f"- PyTorch {torch.__version__} (Debian python3-torch, /usr/bin/python3), OMP_WAIT_POLICY=PASSIVE, "
            f"torch.set_num_threads and openblas_set_num_threads = the row's threads; BLAS: {obs}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--circc", required=True)
    ap.add_argument("--gpt2-import", required=True)
    ap.add_argument("--peak", required=True, help="the peak probe (bench/peak.c)")
    ap.add_argument("--gemm-bench", help="gemm_bench to run for the GEMM table (omit to skip it)")
    ap.add_argument("--work", required=True, help="scratch dir (weights, imports, programs: ~3 GB)")
    ap.add_argument("--results", help="markdown file to update (default: no file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the runs per round of every case")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="seconds the run may spend in all waiting for the other jobs to go quiet (default 120)")
    ap.add_argument("--cases", help="comma-separated subset of t64,t256,b4t64,t1024,d64,d1000")
    args = ap.parse_args()
    args.load = open("/proc/loadavg").read().split()[:3]
    args.quiet_budget = args.quiet_wait
    t_start = time.time()
    os.makedirs(args.work, exist_ok=True)
    cases = make_cases(args.threads, args.scale)
    if args.cases:
        want = args.cases.split(",")
        cases = [c for c in cases if c.key in want]
        if not cases:
            die(f"--cases {args.cases}: no such case")

    weights = ensure_checkpoint(os.path.join(args.work, "hf"))
    model = TorchGPT2(weights)
    tokens_all = np.random.default_rng(SEED).integers(0, V, size=NPOS * 4, dtype=np.int64)
    build_programs(args, cases, tokens_all)
    set_torch_threads(torch, args.threads)
    for c in cases:
        check_case(args, c, model, tokens_all)

    gemm_rows, gemm_heads = [], []
    if args.gemm_bench:
        log(f"== GEMM: {args.gemm_bench} --reps 10")
        out = run([args.gemm_bench, "--reps", "10"])
        log(out.rstrip())
        gemm_rows, gemm_heads = gemm_section(out)

    bench_cases(args, cases, model, tokens_all)

    rows, heads = report_rows(args, cases)
    heads += compile_heads(cases) + gemm_heads
    probes = [p for c in cases for p in c.res["probe"]]
    body = ["## GPT-2 small (124M): circc vs PyTorch", "",
            "Generated by `bench/gpt2_bench.py` (`cmake --build BUILD --target bench_gpt2`); rerun to refresh.", ""]
    body += machine(args, probes)
    body += [f"- method: the same deterministic random weights (seed {SEED}) and tokens for both; circc's logits "
             "checked against PyTorch's (rtol = atol = 1e-3) before timing; per case "
             f"{args.rounds} rounds (decode: {2 * args.rounds}) of [peak probe, circc program `--bench N`, peak "
             "probe, PyTorch N runs after a warm-up]; a round's peak FLOP/s and DRAM bandwidth are the mean of the two probes around its circc "
             "runs; ms = median over rounds of each round's median; ratios are taken per round, then the "
             "median. "
             "Before each round the harness waits (at most "
             f"{args.quiet_wait:.0f} s in all) for a second in which other jobs use < 0.5 core; "
             "`other jobs` = the median over rounds of the CPU other processes used during the round. "
             "GFLOP/s count 2 × 123.5M matmul parameters per token plus causal attention. Decode: one program "
             f"with a {DECODE_T}-position cache (as generation uses), the new token at position 64 / 1000; its "
             "bandwidth bound = (all weights + the past keys/values, in bytes) / the probe's DRAM read GB/s. "
             "Compile: the wall time of `circc ... -o PROGRAM` (C emission and the C compiler) and its peak "
             "resident memory (circc and the compiler processes it waits for) against the fp32 weights.",
             f"- total harness time: {(time.time() - t_start) / 60:.1f} min", "",
             "| case | threads | other jobs (cores) | circc ms | tokens/s | GFLOP/s | % of peak | PyTorch ms | speed-up vs PyTorch "
             "| bandwidth bound | targets |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"] + rows
    body += ["", "Headline ratios against the targets of the performance brief:", "",
             "| check | measured | target | met |", "| --- | ---: | ---: | --- |"]
    body += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in heads]
    if gemm_rows:
        body += ["", "### GEMM kernel vs OpenBLAS", ""] + gemm_rows
    log("")
    log("\n".join(body))
    if args.results:
        write_section(args.results, "bench_gpt2", body)
        log(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
