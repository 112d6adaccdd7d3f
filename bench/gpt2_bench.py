#!/usr/bin/python3
"""gpt2_bench.py — GPT-2 small (124M) benchmark of circc against PyTorch and ONNX Runtime (not a test).

Run by `cmake --build BUILD --target bench_gpt2` with Debian's /usr/bin/python3
(python3-torch, python3-numpy, python3-onnx; node with the npm package
onnxruntime-node: scripts/setup.sh --bench installs them). Steps:
  1. writes deterministic random GPT-2 small weights in Hugging Face's layout
     (WORK/hf: config.json + model.safetensors, written by hand: no safetensors
     package) and imports them with gpt2_import, so every side shares weights;
  2. compiles the prefill programs (B=1 T=64/256/1024, B=4 T=64) and the decode
     program (one position, a key/value cache of 1024 positions, as generation
     uses) with circc; where `circc --help` lists them, also prefill T=256/1024
     and decode with `--precision bf16`, and decode with `--precision int8`;
  3. exports this file's minimal PyTorch GPT-2 with torch.onnx.export (WORK/onnx:
     prefill B=1 T=64/256/1024, and decode with the same 1024-position cache and
     mask as the circc program) for ONNX Runtime, run by bench/ort_run.js;
  4. checks once that each fp32 program's logits and ORT's match PyTorch's
     (rtol = atol = 1e-3) and stops with exit code 1 if not; bf16 and int8 logits
     (circc's and PyTorch bf16's) are compared with PyTorch fp32 and reported,
     not a stop;
  5. runs the GEMM benchmark (gemm_bench: circc's GEMM template vs OpenBLAS
     sgemm on the GPT-2 shapes), if given;
  6. times every case in --rounds rounds (decode: twice as many); a round runs,
     under each wait policy (--policies), [peak probe, circc program, peak probe,
     circc bf16 and int8 programs, PyTorch, PyTorch bf16, ONNX Runtime]; the prefill T=256
     case also runs fp32 with 1 thread for the scaling row. A round's peak and
     bandwidth are the mean of the two probes around its circc runs (the shared
     host's memory bandwidth drifts by 2x within seconds). Medians over rounds;
     ratios are per round (same conditions), then their median. Before each
     round it waits (--quiet-wait seconds in all) for the other jobs on the
     machine to go quiet, and it reports the CPU they used during the rounds.
Wait policies (every side of a round runs under the same one):
  short  circc programs and PyTorch's libgomp with GOMP_SPINCOUNT=1000 (the
         programs' own default), ONNX Runtime with allow_spinning = 0;
  spin   OMP_WAIT_POLICY=ACTIVE for circc and PyTorch, ORT allow_spinning = 1.
PyTorch (which reads the policy when torch loads libgomp) and ORT run in one
long-lived worker process each per policy (benchlib.Worker: stopped between
requests, so idle spinning threads take no CPU from the other sides); the
circc programs and the probes are child processes.
It prints the tables and writes them, with the machine, into its own section
of bench/RESULTS.md, one per CPU family (between the `bench_gpt2_intel`,
`bench_gpt2_amd`, ... markers; run_bench.sh owns another).
"""
import argparse
import datetime
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time

# benchlib first: its CHILD_ENV (what the programs and probes run with) is the caller's environment
from benchlib import (CHILD_ENV, CpuMeter, Worker, die, field, log, med, openblas, run,  # noqa: E402
                      set_torch_threads, wait_quiet, write_section)
if "--torch-worker" not in sys.argv:
    # this process only checks and exports: its threads must sleep while the others run
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by libgomp when torch loads it
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# GPT-2 small
L, C, H, V, NPOS, EPS = 12, 768, 12, 50257, 1024, 1e-5
D = C // H
SEED = 20261122  # weights and tokens; change it to regenerate WORK/hf
DECODE_T = 1024  # cache length of the decode program
ORT_VERSION = "1.31.1"  # the onnxruntime-node scripts/setup.sh --bench installs (tested with it)
POLICIES = {  # name -> (environment of circc and PyTorch, ORT allow_spinning, description)
    "short": ({"GOMP_SPINCOUNT": "1000"}, 0,
              "GOMP_SPINCOUNT=1000 for circc (its own default) and PyTorch's libgomp; ORT allow_spinning=0"),
    "spin": ({"OMP_WAIT_POLICY": "ACTIVE"}, 1, "OMP_WAIT_POLICY=ACTIVE for circc and PyTorch; ORT allow_spinning=1"),
}
LOW_TOL = 0.05  # loose bf16 and int8 check: max |logit - fp32 logit| <= 5% of max |fp32 logit| (reported, not a stop)


def policy_env(policy):
    env = {k: v for k, v in CHILD_ENV.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(POLICIES[policy][0])
    return env


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
    attention over the full square, as Hugging Face's eager GPT-2 does). With
    bf16 weights every tensor is bf16 and the linear layers are matmuls (oneDNN's
    bf16 GEMM; F.linear's addmm path is ~2x slower in bf16 on PyTorch 1.13)."""

    def __init__(self, w):
        self.w = w
        self.bf16 = w["wte.weight"].dtype == torch.bfloat16
        self.mask = torch.ones(NPOS, NPOS, dtype=torch.bool).tril()

    def linear(self, x, name):
        """x @ the Conv1D weight name.weight ([in, out]) + name.bias."""
        w, b = self.w[name + ".weight"], self.w[name + ".bias"]
        return x @ w + b if self.bf16 else F.linear(x, w.t(), b)

    def block_qkv(self, i, x):
        w = self.w
        h = F.layer_norm(x, (C,), w[f"h.{i}.ln_1.weight"], w[f"h.{i}.ln_1.bias"], EPS)
        qkv = self.linear(h, f"h.{i}.attn.c_attn")
        B, T = x.shape[:2]
        return [t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=2)]  # [B,H,T,D]

    def block_rest(self, i, x, y):
        w = self.w
        B, T = x.shape[:2]
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + self.linear(y, f"h.{i}.attn.c_proj")
        h = F.layer_norm(x, (C,), w[f"h.{i}.ln_2.weight"], w[f"h.{i}.ln_2.bias"], EPS)
        h = F.gelu(self.linear(h, f"h.{i}.mlp.c_fc"), approximate="tanh")
        return x + self.linear(h, f"h.{i}.mlp.c_proj")

    def logits(self, x):
        x = F.layer_norm(x, (C,), self.w["ln_f.weight"], self.w["ln_f.bias"], EPS)
        return x @ self.w["wte.weight"].t() if self.bf16 else F.linear(x, self.w["wte.weight"])

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


class OnnxPrefill(torch.nn.Module):
    """TorchGPT2.prefill for torch.onnx.export: tokens [1,T] -> logits [1,T,V]
    (the weights become the ONNX file's initializers)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model.prefill(tokens)


class OnnxDecode(torch.nn.Module):
    """The circc decode program's computation for torch.onnx.export, with the
    same inputs: token [1] and pos [1] int64, kv_mask [Tmax] (1 for j < pos),
    past_k and past_v [L,H,Tmax,D] -> logits [V]. The cached keys' scores
    (masked to -inf where kv_mask is 0) and the new key's score share one
    softmax; the cache is not written (the new key and value join the sums)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, token, pos, kv_mask, past_k, past_v):
        m, w = self.model, self.model.w
        x = (w["wte.weight"][token] + w["wpe.weight"][pos]).view(1, 1, C)
        keep = (kv_mask > 0).view(1, 1, 1, DECODE_T)
        for i in range(L):
            q, k, v = m.block_qkv(i, x)  # [1,H,1,D]
            past = (q @ past_k[i].transpose(-2, -1)) * (1 / math.sqrt(D))  # [1,H,1,Tmax]
            past = past.masked_fill(~keep, float("-inf"))
            own = (q * k).sum(-1, keepdim=True) * (1 / math.sqrt(D))  # [1,H,1,1]
            p = F.softmax(torch.cat([past, own], dim=-1), dim=-1)
            y = p[..., :DECODE_T] @ past_v[i] + p[..., DECODE_T:] * v
            x = m.block_rest(i, x, y)
        return m.logits(x)[0, 0]


# ------------------------------------------------------------ cases

MATMUL_PARAMS = L * (C * 3 * C + C * C + 2 * C * 4 * C) + V * C  # 123.5M
ALL_PARAMS = sum(math.prod(s) for _, s in hf_shapes())


def prefill_flops(B, T):
    """2 x matmul parameters per token + causal attention (QK^T and AV over j <= i)."""
    return B * (2 * MATMUL_PARAMS * T + L * 2 * C * T * (T + 1))


def decode_flops(past):
    return 2 * MATMUL_PARAMS + L * 4 * C * (past + 1)


# bytes per matmul weight as each --precision stores it (int8: 32 int8 per fp16 scale)
WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1 + 2 / 32}


def decode_bytes(past, precision="fp32", cache_bytes=4):
    """What one decode step must read: every weight once (one row of wpe) and
    the keys/values of the past positions; the matmul weights at the
    precision's bytes per weight, the rest fp32, the keys/values at
    cache_bytes each (4: fp32 program inputs; 2: a program that stores them as
    bf16). The bandwidth bound of the issue's targets is the fp32 one."""
    return (4 * (ALL_PARAMS - NPOS * C + C - MATMUL_PARAMS) + WEIGHT_BYTES[precision] * MATMUL_PARAMS
            + cache_bytes * 2 * L * past * C)


def cache_bytes(prog):
    """Bytes per cached key/value element of a decode program: 2 where its
    --info lists past_k and past_v as stored as bf16, else 4."""
    info = subprocess.run([prog, "--info"], capture_output=True, text=True, check=True).stdout
    stored = [ln for ln in info.splitlines() if ln.split()[:1] in (["past_k"], ["past_v"]) and "stored as bf16" in ln]
    return 2 if len(stored) == 2 else 4


class Case:
    def __init__(self, key, label, kind, B=1, T=0, past=0, threads=(2,), runs=5, onnx=None, bf16=False,
                 int8=False):
        self.key, self.label, self.kind, self.B, self.T, self.past = key, label, kind, B, T, past
        self.threads, self.runs = threads, runs
        self.onnx = onnx  # name of the ONNX model for ORT (None: no ORT row)
        self.bf16 = bf16  # PyTorch bf16 and (if circc has --precision bf16) circc bf16 rows
        self.precisions = [p for p, want in (("bf16", bf16), ("int8", int8)) if want]
        self.prog = self.inputs = self.want_top = None
        self.low = {}  # precision -> its circc program (those circc has)
        self.cache = {}  # precision -> bytes per key/value element its decode program stores
        self.compile_s = self.compile_rss = None  # set for the case that built its program
        self.acc = {}  # side -> (max |logit - PyTorch fp32 logit|, greedy agreement): the bf16 and int8 sides
        self.res = {}  # (policy, what, threads) -> list over rounds

    def flops(self):
        return prefill_flops(self.B, self.T) if self.kind == "prefill" else decode_flops(self.past)

    def tokens(self):
        return self.B * self.T if self.kind == "prefill" else 1


def make_cases(threads, scale):
    r = lambda n: max(1, round(n * scale))  # noqa: E731
    return [
        Case("t64", "prefill B=1 T=64", "prefill", 1, 64, runs=r(6), onnx="t64"),
        Case("t256", "prefill B=1 T=256", "prefill", 1, 256, threads=(threads, 1), runs=r(3), onnx="t256", bf16=True),
        Case("b4t64", "prefill B=4 T=64", "prefill", 4, 64, runs=r(3)),
        Case("t1024", "prefill B=1 T=1024", "prefill", 1, 1024, runs=r(1), onnx="t1024", bf16=True),
        Case("d64", "decode, 64 past tokens", "decode", past=64, runs=r(20), onnx="decode", bf16=True, int8=True),
        Case("d1000", "decode, 1000 past tokens", "decode", past=1000, runs=r(20), onnx="decode", bf16=True,
             int8=True),
    ]


def make_tokens():
    return np.random.default_rng(SEED).integers(0, V, size=NPOS * 4, dtype=np.int64)


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
    """circc's fp32 programs, and its bf16 and int8 ones where circc has them; the decode cases share one of each."""
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
        c.low = {p: f"{c.prog}_{p}" for p in c.precisions if p in args.precisions}
        if c.prog not in built:
            built.add(c.prog)
            t0 = time.time()
            run([args.gpt2_import] + imp + [hf, out])
            t1 = time.time()
            cmd = [args.circc, "--tensors", os.path.join(out, "store"), circ, "--output", "logits"]
            c.compile_s, c.compile_rss = run_measured(cmd + ["-o", c.prog])
            log(f"== {c.label}: imported in {t1 - t0:.1f} s, compiled in {c.compile_s:.1f} s "
                f"(peak memory {c.compile_rss / 1e6:.0f} MB) -> {c.prog}")
            for p, prog in c.low.items():
                s, rss = run_measured(cmd + ["--precision", p, "-o", prog])
                log(f"== {c.label}: {p} compiled in {s:.1f} s (peak memory {rss / 1e6:.0f} MB) -> {prog}")
        if c.kind == "decode":
            c.cache = {p: cache_bytes(prog) for p, prog in c.low.items()}
        c.inputs = write_inputs(args.work, c, tokens_all)


def inputs_dir(work, c):
    return os.path.join(work, "inputs_" + c.key)


def save_input(d, name, a):
    """name.npy for the circc programs, name.bin (raw little-endian) for ort_run.js."""
    np.save(os.path.join(d, name + ".npy"), a)
    a.astype(a.dtype.newbyteorder("<"), copy=False).tofile(os.path.join(d, name + ".bin"))


def write_inputs(work, c, tokens_all):
    """The case's inputs: token ids (and for decode the position, masks and the
    cache filled later by check_case); returns the programs' [--input ...] args."""
    d = inputs_dir(work, c)
    os.makedirs(d, exist_ok=True)
    if c.kind == "prefill":
        ids = tokens_all[:c.B * c.T].reshape(c.B, c.T)
        save_input(d, "tokens", ids if c.B > 1 else ids[0])
        return ["--input", f"tokens=@{d}/tokens.npy"]
    p = c.past
    mask = np.zeros(DECODE_T, np.float32)
    mask[:p] = 1  # the cached keys the new token attends to (j < pos)
    save_input(d, "token", tokens_all[p:p + 1])
    save_input(d, "pos", np.array([p], np.int64))
    save_input(d, "kv_mask", mask)
    return sum((["--input", f"{n}=@{d}/{n}.npy"] for n in ("token", "pos", "kv_mask", "past_k", "past_v")), [])


def ort_request(args, c, threads, runs, save=None):
    d = inputs_dir(args.work, c)
    spec = lambda n, t, dims: {"type": t, "dims": dims, "file": os.path.join(d, n + ".bin")}  # noqa: E731
    if c.kind == "prefill":
        inputs = {"tokens": spec("tokens", "int64", [1, c.T])}
    else:
        inputs = {"token": spec("token", "int64", [1]), "pos": spec("pos", "int64", [1]),
                  "kv_mask": spec("kv_mask", "float32", [DECODE_T]),
                  "past_k": spec("past_k", "float32", [L, H, DECODE_T, D]),
                  "past_v": spec("past_v", "float32", [L, H, DECODE_T, D])}
    return {"model": onnx_path(args, c), "threads": threads, "runs": runs, "save": save, "inputs": inputs}


def torch_request(c, threads, runs, dtype, save=None):
    return {"kind": c.kind, "B": c.B, "T": c.T, "past": c.past, "threads": threads, "runs": runs,
            "dtype": dtype, "save": save}


def decode_cache(model, tokens_all, past):
    """PyTorch's keys/values of the first `past` tokens in [L,1,H,DECODE_T,D] caches (the model's dtype)."""
    cache = []
    with torch.no_grad():
        model.prefill(torch.from_numpy(tokens_all[:past]).view(1, past), cache)
    dt = cache[0][0].dtype
    kc, vc = torch.zeros(L, 1, H, DECODE_T, D, dtype=dt), torch.zeros(L, 1, H, DECODE_T, D, dtype=dt)
    for i, (k, v) in enumerate(cache):
        kc[i, :, :, :past], vc[i, :, :, :past] = k, v
    return kc, vc


# ------------------------------------------------------------ ONNX

def onnx_path(args, c):
    return os.path.join(args.work, "onnx", f"gpt2_{c.onnx}_{SEED}.onnx")


def export_onnx(args, cases, model):
    """torch.onnx.export of the prefill shapes and the decode step (once: the
    file names carry the seed of the weights)."""
    os.makedirs(os.path.join(args.work, "onnx"), exist_ok=True)
    for c in cases:
        path = onnx_path(args, c)
        if c.onnx is None or os.path.exists(path):
            continue
        t0 = time.time()
        if c.kind == "prefill":
            m, x, names = OnnxPrefill(model), (torch.zeros(1, c.T, dtype=torch.int64),), ["tokens"]
        else:
            m = OnnxDecode(model)
            x = (torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), torch.zeros(DECODE_T),
                 torch.zeros(L, H, DECODE_T, D), torch.zeros(L, H, DECODE_T, D))
            names = ["token", "pos", "kv_mask", "past_k", "past_v"]
        with torch.no_grad():
            torch.onnx.export(m, x, path + ".tmp", input_names=names, output_names=["logits"], opset_version=14,
                              do_constant_folding=True)
        os.replace(path + ".tmp", path)
        log(f"== {c.label}: exported {path} in {time.time() - t0:.1f} s ({os.path.getsize(path) / 1e6:.0f} MB)")


# ------------------------------------------------------------ checks

def compare(got, want):
    """(max |got - want|, greedy agreement: the share of positions whose argmax logit is the same)."""
    err = np.abs(got.astype(np.float64) - want)
    g = got.reshape(-1, V).argmax(axis=1) == want.reshape(-1, V).argmax(axis=1)
    return float(err.max()), float(g.mean())


def check_exact(c, who, got, want):
    """got = want within rtol = atol = 1e-3, else exit 1."""
    if got.shape != want.shape:
        die(f"{c.label}: {who} logits have shape {got.shape}, PyTorch's {want.shape}")
    err = np.abs(got.astype(np.float64) - want)
    bad = err > 1e-3 + 1e-3 * np.abs(want)
    if bad.any():
        i = np.unravel_index(np.argmax(err), err.shape)
        die(f"{c.label}: {who} logits differ from PyTorch's in {int(bad.sum())} of {bad.size} elements "
            f"(worst at {tuple(int(x) for x in i)}: {who} {got[i]:.6g}, PyTorch {want[i]:.6g})")
    log(f"== {c.label}: {who} logits = PyTorch's (max |diff| {err.max():.2e}, max |logit| {np.abs(want).max():.3g})")


def check_low(c, who, got, want):
    """Records a bf16 or int8 side's accuracy against PyTorch fp32 (not a stop)."""
    if got.shape != want.shape:
        die(f"{c.label}: {who} logits have shape {got.shape}, PyTorch's {want.shape}")
    c.acc[who] = compare(got, want)
    top = float(np.abs(want).max())
    note = "" if c.acc[who][0] <= LOW_TOL * top else f" -- more than {LOW_TOL:.0%} of max |logit| {top:.3g}"
    log(f"== {c.label}: {who} vs PyTorch fp32: max |diff| {c.acc[who][0]:.3g}, greedy agreement "
        f"{c.acc[who][1]:.1%}{note}")


def check_case(args, c, model, tokens_all, torch_w, ort_w):
    """circc's and ORT's logits = PyTorch's (rtol = atol = 1e-3), else exit 1;
    the bf16 and int8 sides' differences are recorded in c.acc."""
    d = inputs_dir(args.work, c)
    with torch.no_grad():
        if c.kind == "prefill":
            ids = torch.from_numpy(tokens_all[:c.B * c.T]).view(c.B, c.T)
            want = model.prefill(ids)
            want = (want if c.B > 1 else want[0]).numpy()
        else:
            kc, vc = decode_cache(model, tokens_all, c.past)
            save_input(d, "past_k", kc[:, 0].numpy())
            save_input(d, "past_v", vc[:, 0].numpy())
            tok = torch.from_numpy(tokens_all[c.past:c.past + 1]).view(1, 1)
            want = model.decode(tok, c.past, kc, vc).numpy()
            if c.past <= 256:  # the cached step = row `past` of a prefill (PyTorch against itself)
                full = model.prefill(torch.from_numpy(tokens_all[:c.past + 1]).view(1, -1))[0, -1].numpy()
                if not np.allclose(want, full, rtol=1e-4, atol=1e-4):
                    die(f"{c.label}: PyTorch's decode step differs from its prefill")
    got_path = os.path.join(d, "circc_logits.npy")
    c.want_top = float(np.abs(want).max())
    run([c.prog, "--threads", str(args.threads)] + c.inputs + ["--output", f"logits=@{got_path}"])
    check_exact(c, "circc", np.load(got_path), want)
    if ort_w and c.onnx:
        got_path = os.path.join(d, "ort_logits.bin")
        r = ort_w.ask(ort_request(args, c, args.threads, 1, got_path))
        if r["load_ms"] is not None:
            log(f"== {c.label}: ORT session created in {r['load_ms'] / 1e3:.1f} s")
        check_exact(c, "ORT", np.fromfile(got_path, dtype="<f4").reshape(want.shape), want)
    if c.bf16:
        got_path = os.path.join(d, "torch_bf16_logits.npy")
        torch_w.ask(torch_request(c, args.threads, 1, "bf16", got_path))
        check_low(c, "PyTorch bf16", np.load(got_path), want)
    for p, prog in c.low.items():
        got_path = os.path.join(d, f"circc_{p}_logits.npy")
        run([prog, "--threads", str(args.threads)] + c.inputs + ["--output", f"logits=@{got_path}"])
        check_low(c, f"circc {p}", np.load(got_path), want)


# ------------------------------------------------------------ PyTorch worker

def torch_worker(work):
    """--torch-worker: PyTorch's side of the rounds in a process of its own
    (its libgomp reads the wait policy from the environment it was started
    with). Answers each torch_request on stdin with {"ms": median ms}: one
    warm-up run, then the timed runs; "save" writes the warm-up's logits
    (float32 .npy)."""
    w = read_safetensors(os.path.join(work, "hf", "model.safetensors"))
    models = {"fp32": TorchGPT2(w)}
    tokens_all = make_tokens()
    caches = {}
    for line in sys.stdin:
        q = json.loads(line)
        if q["dtype"] not in models:
            models[q["dtype"]] = TorchGPT2({k: v.to(torch.bfloat16) for k, v in w.items()})
        model = models[q["dtype"]]
        set_torch_threads(torch, q["threads"])
        with torch.no_grad():
            if q["kind"] == "prefill":
                ids = torch.from_numpy(tokens_all[:q["B"] * q["T"]]).view(q["B"], q["T"])
                f = lambda: model.prefill(ids)  # noqa: E731
            else:
                p = q["past"]
                if (q["dtype"], p) not in caches:
                    caches[(q["dtype"], p)] = decode_cache(model, tokens_all, p)
                kc, vc = caches[(q["dtype"], p)]
                tok = torch.from_numpy(tokens_all[p:p + 1]).view(1, 1)
                f = lambda: model.decode(tok, p, kc, vc)  # noqa: E731
            y = f()
            if q["save"]:
                np.save(q["save"], (y[0] if q["kind"] == "prefill" else y).float().numpy())
            ts = []
            for _ in range(q["runs"]):
                t0 = time.perf_counter()
                f()
                ts.append((time.perf_counter() - t0) * 1e3)
        sys.stdout.write(json.dumps({"ms": med(ts)}) + "\n")
        sys.stdout.flush()


# ------------------------------------------------------------ timing

def probe(args):
    out = run([args.peak, "--threads", str(args.threads), "--seconds", "0.1", "--reps", "3"])
    lines = out.splitlines()
    fma = {int(field("threads", s)): field("gflops", s) for s in lines if s.startswith("fma ")}
    read = [field("gbs", s) for s in lines if s.startswith("read ")][0]
    isa = re.search(r"isa=(\S+)", out).group(1)
    return {"fma": fma, "read": read, "isa": isa}


def time_circc(prog, c, threads, env):
    out = run([prog, "--threads", str(threads), "--bench", str(c.runs)] + c.inputs, env=env)
    m = re.search(r"(\d+) threads?: median ([0-9.eE+-]+) ms", out)
    if not m:
        die(f"{prog}: no bench line in:\n{out}")
    if int(m.group(1)) != threads:
        die(f"{prog}: ran with {m.group(1)} threads, asked for {threads}")
    return float(m.group(2))


def bracket(a, b):
    """The machine during a round's circc runs: the mean of the probes right before and after them."""
    return {"fma": {t: (a["fma"][t] + b["fma"][t]) / 2 for t in a["fma"]}, "read": (a["read"] + b["read"]) / 2,
            "isa": a["isa"]}


def rounds(args, c):
    """Decode runs twice the rounds: a round is short, and the bandwidth it is
    compared with moves more between probes than the FMA peak does."""
    return args.rounds * (2 if c.kind == "decode" else 1)


def bench_round(args, c, pol, torch_w, ort_w, meter):
    """One round of case c under wait policy pol: every side, same inputs, same threads."""
    env, n = policy_env(pol), args.threads
    wait_quiet(args)
    meter.start()
    # the probes bracket the fp32 circc runs alone, so that the machine they
    # measure is the one the program ran on; the other sides run after them
    before = probe(args)
    got = {("circc", t): time_circc(c.prog, c, t, env) for t in c.threads}
    after = probe(args)
    for p, prog in c.low.items():
        got[("circc_" + p, n)] = time_circc(prog, c, n, env)
    for t in c.threads:
        got[("torch", t)] = torch_w.ask(torch_request(c, t, c.runs, "fp32"))["ms"]
    if c.bf16:
        got[("torch_bf16", n)] = torch_w.ask(torch_request(c, n, c.runs, "bf16"))["ms"]
    if ort_w and c.onnx:
        for t in c.threads:
            got[("ort", t)] = ort_w.ask(ort_request(args, c, t, c.runs))["ms"]
    for (what, t), ms in got.items():
        c.res.setdefault((pol, what, t), []).append(ms)
    c.res.setdefault((pol, "others"), []).append(meter.others())
    p = bracket(before, after)
    c.res.setdefault((pol, "probe"), []).append(p)
    return (f"peak {p['fma'][n]:.0f} GFLOP/s, read {p['read']:.1f} GB/s; "
            + ", ".join(f"{what} {t} thr {ms:.2f} ms" for (what, t), ms in got.items())
            + f"; other jobs {c.res[(pol, 'others')][-1]:.2f} cores")


def bench_cases(args, cases, torch_ws, ort_ws):
    meter = CpuMeter([w.p.pid for w in list(torch_ws.values()) + list(ort_ws.values())])
    for c in cases:
        for r in range(rounds(args, c)):
            # the policies take turns going first
            for pol in args.policies[r % len(args.policies):] + args.policies[:r % len(args.policies)]:
                line = bench_round(args, c, pol, torch_ws[pol], ort_ws.get(pol), meter)
                log(f"== {c.label}, round {r + 1}, {pol}: {line}")


# ------------------------------------------------------------ report

def verdict(value, goal, higher_better=True):
    ok = value >= goal if higher_better else value <= goal
    return "yes" if ok else "**no**"


def ratio(c, pol, slow, fast, t, t2=None):
    """Median over rounds of res[slow] / res[fast] (fast's speed-up over slow), or None if either is missing."""
    a, b = c.res.get((pol, slow, t)), c.res.get((pol, fast, t if t2 is None else t2))
    return med([x / y for x, y in zip(a, b)]) if a and b else None


def fmt(x, spec=".2f", unit="×"):
    return "–" if x is None else f"{x:{spec}}{unit}"


class Heads:
    """The headline checks: (policy, check, measured, target, met) rows."""

    def __init__(self):
        self.rows = []

    def add(self, pol, label, value, goal, shown, higher_better=True, unit="×", skipped=None, applies=None):
        """Adds a check and returns its short form for the targets column;
        applies: why the target does not apply to this machine (the value is
        still shown), or None."""
        op = "≥" if higher_better else "≤"
        if value is None:
            self.rows.append((pol, label, skipped or "not measured", f"{op} {goal}{unit}", "skipped"))
            return f"{op} {goal}{unit} {shown}: skipped"
        v = applies or verdict(value, goal, higher_better)
        self.rows.append((pol, label, f"{value:.2f}{unit}" if unit == "×" else f"{value:.1f}{unit}",
                          f"{op} {goal}{unit}", v))
        return f"{op} {goal}{unit} {shown}: {v}"


def report_rows(args, cases, heads):
    """Markdown rows of the fp32 table."""
    rows, n = [], args.threads
    for pol in args.policies:
        for c in cases:
            probes = c.res[(pol, "probe")]
            for t in c.threads:
                cm = c.res[(pol, "circc", t)]
                ms = med(cm)
                gf = c.flops() / ms * 1e-6
                pct = med([c.flops() / m * 1e-6 / p["fma"][t] * 100 for m, p in zip(cm, probes)])
                vs_torch, vs_ort = ratio(c, pol, "torch", "circc", t), ratio(c, pol, "ort", "circc", t)
                targets = []
                if c.kind == "prefill" and t == n and c.B == 1:
                    targets.append(heads.add(pol, f"{c.label}: circc vs PyTorch", vs_torch, 1.3, "PyTorch"))
                    targets.append(heads.add(pol, f"{c.label}: circc vs ORT", vs_ort, 1.2, "ORT",
                                             skipped=args.ort_skipped))
                    if c.T == 256:
                        targets.append(heads.add(pol, f"{c.label}: % of measured peak", pct, 65, "of peak",
                                                 unit="%"))
                bound = ""
                if c.kind == "decode":
                    bms = [decode_bytes(c.past) / (p["read"] * 1e9) * 1e3 for p in probes]
                    r = med([m / b for m, b in zip(cm, bms)])
                    bound = f"{med(bms):.1f} ms; circc {r:.2f}×"
                    targets.append(heads.add(pol, f"{c.label}: circc / bandwidth bound", r, 1.15, "bound",
                                             higher_better=False))
                if t != n:
                    scale = ratio(c, pol, "circc", "circc", t, n)
                    tscale = ratio(c, pol, "torch", "torch", t, n)
                    targets.append(heads.add(pol, f"{c.label}: {n} threads vs 1", scale, 1.8,
                                             f"{n} threads vs 1 (PyTorch {fmt(tscale)})"))
                pct_s = f"{pct:.1f}" if c.kind == "prefill" else "–"
                ort_ms = c.res.get((pol, "ort", t))
                rows.append(f"| {pol} | {c.label} | {t} | {med(c.res[(pol, 'others')]):.2f} | {ms:.2f} | "
                            f"{c.tokens() / ms * 1e3:.0f} | {gf:.1f} | {pct_s} | {med(c.res[(pol, 'torch', t)]):.2f} | "
                            f"{fmt(vs_torch)} | {fmt(med(ort_ms) if ort_ms else None, '.2f', '')} | {fmt(vs_ort)} | "
                            f"{bound or '–'} | " + ("; ".join(targets) or "–") + " |")
    return rows


def vs_fp32_bound(c, pol, what):
    """Median over rounds of side what's decode time / the fp32 bandwidth bound
    (each round's probe), or None if it did not run."""
    got = c.res.get((pol, what, c.threads[0]))
    if not got:
        return None
    return med([m / (decode_bytes(c.past) / (p["read"] * 1e9) * 1e3) for m, p in zip(got, c.res[(pol, "probe")])])


def floor_text(c, precision):
    """The least a decode step in this precision can take, as a share of the fp32 bound (bytes / fp32 bytes)."""
    return f"floor {decode_bytes(c.past, precision, c.cache.get(precision, 4)) / decode_bytes(c.past):.2f}×"


def bf16_rows(args, cases, heads):
    """Markdown rows of the bf16 table (circc bf16 only where circc has --precision bf16)."""
    rows, n = [], args.threads
    skip = None if "bf16" in args.precisions else "skipped: `circc --help` has no --precision bf16"
    # issue 17's bf16 targets are for machines with AMX tiles
    amx = None if "amx_bf16" in cpu_flags() else "n/a (no AMX)"
    for pol in args.policies:
        for c in cases:
            if not c.bf16:
                continue
            cb, tb = c.res.get((pol, "circc_bf16", n)), c.res[(pol, "torch_bf16", n)]
            vs_fp32 = ratio(c, pol, "circc", "circc_bf16", n)
            vs_torch = ratio(c, pol, "torch_bf16", "circc_bf16", n)
            fp32_vs_torch = ratio(c, pol, "torch_bf16", "circc", n)
            targets, bound = [], "–"
            if c.kind == "prefill":
                targets.append(heads.add(pol, f"{c.label} bf16: circc bf16 vs circc fp32", vs_fp32, 3, "circc fp32",
                                         skipped=skip, applies=amx))
                targets.append(heads.add(pol, f"{c.label} bf16: circc bf16 vs PyTorch bf16", vs_torch, 1.2,
                                         "PyTorch bf16", skipped=skip, applies=amx))
            else:
                r = vs_fp32_bound(c, pol, "circc_bf16")
                bound = f"{fmt(r)} ({floor_text(c, 'bf16')})"
                targets.append(heads.add(pol, f"{c.label} bf16: circc bf16 / fp32 bandwidth bound", r, 0.55,
                                         "fp32 bound", higher_better=False, skipped=skip, applies=amx))
            rows.append(f"| {pol} | {c.label} | {n} | {fmt(med(cb), '.2f', '') if cb else 'skipped'} | "
                        f"{fmt(vs_fp32)} | {med(tb):.2f} | {fmt(vs_torch)} | {fmt(fp32_vs_torch)} | {bound} | "
                        + "; ".join(targets) + " |")
    return rows


def int8_rows(args, cases, heads):
    """Markdown rows of the int8 table (decode; circc int8 only where circc has --precision int8)."""
    rows, n = [], args.threads
    skip = None if "int8" in args.precisions else "skipped: `circc --help` has no --precision int8"
    for pol in args.policies:
        for c in cases:
            if "int8" not in c.precisions:
                continue
            ci = c.res.get((pol, "circc_int8", n))
            r = vs_fp32_bound(c, pol, "circc_int8")
            target = heads.add(pol, f"{c.label} int8: circc int8 / fp32 bandwidth bound", r, 0.35, "fp32 bound",
                               higher_better=False, skipped=skip)
            rows.append(f"| {pol} | {c.label} | {n} | {fmt(med(ci), '.2f', '') if ci else 'skipped'} | "
                        f"{fmt(ratio(c, pol, 'circc', 'circc_int8', n))} | {fmt(ratio(c, pol, 'circc_bf16', 'circc_int8', n))} | "
                        f"{fmt(r)} ({floor_text(c, 'int8')}) | {target} |")
    return rows


def accuracy_rows(cases):
    rows = []
    for c in cases:
        for who, (err, agree) in c.acc.items():
            rows.append(f"| {c.label} | {who} | {err:.3g} | {c.want_top:.3g} | "
                        f"{'yes' if err <= LOW_TOL * c.want_top else '**no**'} | {agree:.1%} |")
    return rows


def compile_heads(cases, heads):
    """Headline rows for circc's compile time and peak memory (worst over the fp32 programs built)."""
    built = [c for c in cases if c.compile_s is not None]
    if not built:
        return
    slow = max(built, key=lambda c: c.compile_s)
    big = max(built, key=lambda c: c.compile_rss)
    weights = 4 * ALL_PARAMS
    heads.rows += [("–", f"circc compile time, slowest program ({slow.label}; emission + C compiler)",
                    f"{slow.compile_s:.1f} s", "< 30 s", verdict(slow.compile_s, 30, False)),
                   ("–", f"circc peak memory / weights ({weights / 1e6:.0f} MB), largest ({big.label})",
                    f"{big.compile_rss / weights:.2f}×", "< 2×", verdict(big.compile_rss / weights, 2, False))]


def gemm_section(out):
    """Markdown table of gemm_bench's output: circc vs OpenBLAS per shape (circc
    with B as given, packed as it runs, and pre-packed, as programs store weights)."""
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
            "b=trans: B given as N×K (the tied unembedding). circc: B as given (packed while the product runs) and "
            "pre-packed (the layout programs store their weights in, `circc_gemm_f32_packed_rows`); its threaded "
            "figures are the better of its row and column splits; the ratio and target use the pre-packed figure "
            "where there is one.", "",
            f"| M×N×K | b | circc 1 thr | circc pre-packed 1 thr | OpenBLAS 1 thr | circc {nt} thr | "
            f"circc pre-packed {nt} thr | OpenBLAS {nt} thr | circc / OpenBLAS ({nt} thr) | target (M ≥ 64: ≥ 1) |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    heads, worst = [], None
    for (M, N, K, b), v in res.items():
        if b == "packed":
            continue
        pk = res.get((M, N, K, "packed"), {})
        best = pk.get(("gemm", nt)) or v.get(("gemm", nt), 0)
        r = best / v[("sgemm", nt)] if ("sgemm", nt) in v else None
        tgt = "–"
        if M >= 64 and r is not None:
            tgt = verdict(r, 1.0)
            worst = r if worst is None else min(worst, r)
        g = lambda d, who, t: f"{d[(who, t)]:.1f}" if (who, t) in d else "–"  # noqa: E731
        rows.append(f"| {M}×{N}×{K} | {b} | {g(v, 'gemm', 1)} | {g(pk, 'gemm', 1)} | {g(v, 'sgemm', 1)} | "
                    f"{g(v, 'gemm', nt)} | {g(pk, 'gemm', nt)} | {g(v, 'sgemm', nt)} | "
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
    flags = cpu_flags()
    isa = ", ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags) or "no AVX-512"
    ob = openblas()
    obs = ob.openblas_get_config().decode() if ob else "not found"
    cc = subprocess.run([os.environ.get("CC", "gcc"), "--version"], stdout=subprocess.PIPE, text=True)
    fma_n = max(p["fma"][args.threads] for p in probes)
    read = [p["read"] for p in probes]
    return [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
            f"- machine: {cpu} (CPU family {fam}, model {mod}; {isa}), {os.cpu_count()} logical CPUs, "
            f"**shared with other jobs** (a 2-core machine other agents were using: absolute times are noisy, "
            f"compare the same-run ratios); load average (1/5/15 min) at start: {' '.join(args.load)}, at the end: "
            f"{' '.join(open('/proc/loadavg').read().split()[:3])}",
            f"- peak probe (bench/peak.c, {probes[0]['isa']}): {args.threads}-thread FMA up to {fma_n:.0f} GFLOP/s, "
            f"DRAM read {min(read):.1f}–{max(read):.1f} GB/s over the rounds",
            f"- circc programs: C compiler {cc.stdout.splitlines()[0] if cc.stdout else '?'}; lower precisions: "
            + (", ".join(f"`circc --precision {p}`" for p in args.precisions) or "skipped (`circc --help` has no --precision)"),
            f"- PyTorch {torch.__version__} (Debian python3-torch, /usr/bin/python3), one worker process per wait "
            f"policy, torch.set_num_threads and openblas_set_num_threads = the row's threads; BLAS: {obs}; bf16: "
            "bf16 weights and activations, matmuls through oneDNN",
            "- ONNX Runtime: " + (args.ort_skipped or
                                  f"onnxruntime-node {args.ort_version} (npm; CPU execution provider, all graph "
                                  "optimizations, intra_op_num_threads = the row's threads, one inter-op thread) "
                                  f"under node {args.node_version}, bench/ort_run.js; models from torch.onnx.export "
                                  "(opset 14) of the PyTorch model above"),
            "- wait policies: " + "; ".join(f"{p}: {POLICIES[p][2]}" for p in args.policies)]


def cpu_flags():
    """The first CPU's flags in /proc/cpuinfo, as a set."""
    with open("/proc/cpuinfo") as f:
        return set(next((s.partition(":")[2].split() for s in f if s.startswith("flags")), []))


def cpu_vendor():
    """intel, amd or the CPU's vendor_id: bench/RESULTS.md keeps one section per CPU family."""
    with open("/proc/cpuinfo") as f:
        v = next((s.partition(":")[2].strip() for s in f if s.startswith("vendor_id")), "unknown")
    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(v, re.sub(r"\W", "", v).lower())


def start_workers(args):
    """A PyTorch worker and (if ORT is usable) an ORT worker per wait policy."""
    torch_ws, ort_ws = {}, {}
    for pol in args.policies:
        torch_ws[pol] = Worker(f"PyTorch worker ({pol})", [sys.executable, os.path.abspath(__file__),
                                                           "--torch-worker", "--work", args.work], policy_env(pol))
        if not args.ort_skipped:
            ort_ws[pol] = Worker(f"ORT worker ({pol})",
                                 [args.node, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ort_run.js"),
                                  args.ort_modules, str(POLICIES[pol][1])], policy_env(pol))
    return torch_ws, ort_ws


def find_ort(args):
    """Sets args.node, args.ort_version and args.node_version, or args.ort_skipped to why ORT is not run."""
    args.ort_skipped = None
    args.node = shutil.which(args.node or "node")
    pkg = os.path.join(args.ort_modules or "", "onnxruntime-node", "package.json")
    if not args.node:
        args.ort_skipped = "skipped: no node (scripts/setup.sh --bench installs nodejs)"
    elif not args.ort_modules or not os.path.exists(pkg):
        args.ort_skipped = (f"skipped: no onnxruntime-node in {args.ort_modules} "
                            "(scripts/setup.sh --bench DIR installs it into DIR/node_modules)")
    else:
        args.ort_version = json.load(open(pkg))["version"]
        args.node_version = run([args.node, "--version"]).strip()
    if args.ort_skipped:
        log(f"== ONNX Runtime {args.ort_skipped}")


def main():
    if "--torch-worker" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--torch-worker", action="store_true")
        ap.add_argument("--work", required=True)
        torch_worker(ap.parse_args().work)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--circc", required=True)
    ap.add_argument("--gpt2-import", required=True)
    ap.add_argument("--peak", required=True, help="the peak probe (bench/peak.c)")
    ap.add_argument("--gemm-bench", help="gemm_bench to run for the GEMM table (omit to skip it)")
    ap.add_argument("--work", required=True, help="scratch dir (weights, imports, programs, ONNX files: ~5 GB)")
    ap.add_argument("--results", help="markdown file to update (default: no file)")
    ap.add_argument("--ort-modules", help="node_modules holding onnxruntime-node (scripts/setup.sh --bench); "
                    "without it ORT is skipped")
    ap.add_argument("--node", help="node executable (default: node on PATH)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per case (decode: twice as many), each under every policy (default 3)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the runs per round of every case")
    ap.add_argument("--policies", default="short,spin", help="comma-separated wait policies: short, spin (default both)")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="seconds the run may spend in all waiting for the other jobs to go quiet (default 120)")
    ap.add_argument("--cases", help="comma-separated subset of t64,t256,b4t64,t1024,d64,d1000")
    args = ap.parse_args()
    args.policies = args.policies.split(",")
    if not args.policies or any(p not in POLICIES for p in args.policies):
        die(f"--policies {','.join(args.policies)}: each must be one of {', '.join(POLICIES)}")
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
    m = re.search(r"--precision (\S+)", run([args.circc, "--help"]))
    args.precisions = [p for p in (m.group(1).split("|") if m else []) if p in WEIGHT_BYTES and p != "fp32"]
    for p in ("bf16", "int8"):
        if p not in args.precisions:
            log(f"== circc {p} rows skipped: `circc --help` has no --precision {p}")
    find_ort(args)

    weights = ensure_checkpoint(os.path.join(args.work, "hf"))
    model = TorchGPT2(weights)
    tokens_all = make_tokens()
    build_programs(args, cases, tokens_all)
    if not args.ort_skipped:
        export_onnx(args, cases, model)
    set_torch_threads(torch, args.threads)
    torch_ws, ort_ws = start_workers(args)
    first = args.policies[0]
    for c in cases:
        check_case(args, c, model, tokens_all, torch_ws[first], ort_ws.get(first))
    del model, weights  # the workers hold their own copies

    heads = Heads()
    gemm_rows, gemm_heads = [], []
    if args.gemm_bench:
        log(f"== GEMM: {args.gemm_bench} --reps 10")
        out = run([args.gemm_bench, "--reps", "10"])
        log(out.rstrip())
        gemm_rows, gemm_heads = gemm_section(out)

    bench_cases(args, cases, torch_ws, ort_ws)
    for w in list(torch_ws.values()) + list(ort_ws.values()):
        w.close()

    rows = report_rows(args, cases, heads)
    brows = bf16_rows(args, cases, heads)
    irows = int8_rows(args, cases, heads)
    compile_heads(cases, heads)
    heads.rows += [("–",) + h for h in gemm_heads]
    probes = [p for c in cases for pol in args.policies for p in c.res[(pol, "probe")]]
    vendor = cpu_vendor()
    body = [f"## GPT-2 small (124M): circc vs PyTorch and ONNX Runtime ({vendor.upper() if len(vendor) < 6 else vendor})", "",
            "Generated by `bench/gpt2_bench.py` (`cmake --build BUILD --target bench_gpt2`); rerun to refresh.", ""]
    body += machine(args, probes)
    body += [f"- method: the same deterministic random weights (seed {SEED}), tokens and thread count for every "
             "side; circc's and ORT's logits checked against PyTorch's (rtol = atol = 1e-3) before timing, the bf16 "
             "and int8 sides' compared with PyTorch fp32 (below); per case "
             f"{args.rounds} rounds (decode: {2 * args.rounds}), each under every wait policy (the policies take "
             "turns going first), of [peak probe, circc program `--bench N`, peak probe, circc bf16 and int8 programs, "
             "PyTorch N runs, PyTorch bf16, ORT N runs], every side after one warm-up run; a round's peak FLOP/s "
             "and DRAM bandwidth are the mean of the two probes around its circc runs; ms = median over rounds of "
             "each round's median; ratios (speed-ups: the peer's time / circc's) are taken per round, then the "
             "median. Before each round the harness waits (at most "
             f"{args.quiet_wait:.0f} s in all) for a second in which other jobs use < 0.5 core; "
             "`other jobs` = the median over rounds of the CPU other processes used during the round. "
             "GFLOP/s count 2 × 123.5M matmul parameters per token plus causal attention. Decode: one program "
             f"with a {DECODE_T}-position cache (as generation uses), the new token at position 64 / 1000 (ORT: "
             "an export of the same computation, same inputs); its bandwidth bound = (all fp32 weights + the past "
             "keys/values, in bytes) / the probe's DRAM read GB/s. Compile: the wall time of `circc ... -o "
             "PROGRAM` (C emission and the C compiler) and its peak resident memory (circc and the compiler "
             "processes it waits for) against the fp32 weights.",
             f"- total harness time: {(time.time() - t_start) / 60:.1f} min", "",
             "| policy | case | threads | other jobs (cores) | circc ms | tokens/s | GFLOP/s | % of peak | PyTorch ms "
             "| circc vs PyTorch | ORT ms | circc vs ORT | bandwidth bound | targets |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"] + rows
    body += ["", "bf16 (same rounds; speed-ups per round, then the median):", "",
             "| policy | case | threads | circc bf16 ms | circc bf16 vs circc fp32 | PyTorch bf16 ms "
             "| circc bf16 vs PyTorch bf16 | circc fp32 vs PyTorch bf16 | circc bf16 / fp32 bandwidth bound | targets |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"] + brows
    body += ["", "int8 weights (`--precision int8`, decode; same rounds). The floor is the least the step can take: "
             "its own bytes (int8 matmul weights with their scales, the rest fp32; past keys/values at the "
             "bytes the program stores them in: bf16 where its --info says so, else fp32) over the fp32 bound's bytes:", "",
             "| policy | case | threads | circc int8 ms | circc int8 vs circc fp32 | circc int8 vs circc bf16 "
             "| circc int8 / fp32 bandwidth bound | targets |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"] + irows
    body += ["", f"bf16 and int8 accuracy against PyTorch fp32 (checked once, before timing; a loose check, not a stop: "
             f"max |logit − fp32 logit| ≤ {LOW_TOL:.0%} of max |fp32 logit|; greedy agreement = the share of "
             "positions whose argmax is the same):", "",
             "| case | side | max abs diff | max abs fp32 logit | within the loose check | greedy agreement |",
             "| --- | --- | ---: | ---: | --- | ---: |"] + accuracy_rows(cases)
    body += ["", "Headline checks against the targets of issue 17 (and the earlier briefs' scaling, decode, compile "
             "and GEMM checks):", "",
             "| policy | check | measured | target | met |", "| --- | --- | ---: | ---: | --- |"]
    body += [f"| {p} | {a} | {b} | {c} | {d} |" for p, a, b, c, d in heads.rows]
    if gemm_rows:
        body += ["", "### GEMM kernel vs OpenBLAS", ""] + gemm_rows
    log("")
    log("\n".join(body))
    if args.results:
        write_section(args.results, f"bench_gpt2_{vendor}", body)
        log(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
