#!/usr/bin/python3
"""scrub_bench.py — the causal-scrubbing benchmark of issue 13: circc's expectation program vs PyTorch (not a test).

Run by `cmake --build BUILD --target bench_scrub` with Debian's /usr/bin/python3
(python3-torch, python3-numpy; scripts/setup.sh --bench installs them). It is
the shape of REMIX day 3 (random_variables.md §3): a 2-layer attention-only
transformer (width 256, 8 heads × 32, vocabulary 50259, shortformer positions,
random weights), a 104091 × 301 random-token dataset, the per-position loss
masked to ~30% "candidate" positions, and two hypotheses estimated from the
same samples: unscrubbed, and the baseline whose model input is scrubbed
(drawn from an independent second variable over the same dataset). Steps:
  1. writes (once; WORK/manifest.json says what is there) the weights, the
     dataset, the candidate vector and the causal mask as .npy files, adds the
     circuit's tensors to a tensor store (WORK/tensors, `circc store`), and
     writes WORK/scrub.circ: a rust_circuit model file (`# info:` line,
     t.w.tok_embeds, t.w.pos_embeds, t.bind_w; model_files.md §1–3) followed
     by the day-3 circuit written by hand (DiscreteVars, Tags, Cumulants);
  2. compiles it with `circc --stream toks_int_vals --sample-batch B` for each
     B of --sample-batch (the dataset is read at run time with --data);
  3. checks each program once: its row indices (--dump-indices) against the
     sampler of random_variables.md §4.4 re-implemented here, and its
     estimates against this file's PyTorch model evaluated on exactly those
     rows (rtol 1e-4); stops with exit code 1 if either disagrees;
  4. times --rounds rounds of [peak probe, each circc program `--samples N
     --seed 11`, peak probe, PyTorch on the same N samples (batched,
     torch.no_grad)]; before each round it waits (--quiet-wait seconds in
     all) for the other jobs on the machine to go quiet. A round's peak is the
     mean of the two probes around its circc runs. Samples/s and % of peak are
     medians over rounds; speed-ups are per round, then their median;
  5. with `perf` on the PATH, profiles the largest-batch program once
     (`perf record`, self time per function, generated steps named by
     `circc --report`).
It prints the table and writes it, with the machine, into its own section of
bench/RESULTS.md (between the `bench_scrub` markers). PyTorch runs in this
process with OMP_WAIT_POLICY=PASSIVE (set before torch is imported) and its
OpenBLAS limited to the same thread count; the circc programs and the probes
run as child processes with the caller's environment.
"""
import argparse
import datetime
import json
import math
import os
import random
import re
import shutil
import subprocess
import time
import uuid

# benchlib first: its CHILD_ENV (what the programs and probes run with) is the caller's environment
from benchlib import (CHILD_ENV, CpuMeter, die, field, log, med, openblas, run,  # noqa: E402
                      set_torch_threads, wait_quiet, write_section)
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by libgomp when torch loads it
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# the day-3 model (remix_d3_data/attention_only_2.circ) and data
L, C, HEADS, DH, V, NPOS, EPS = 2, 256, 8, 32, 50259, 2048, 1e-5
ROWS, SEQ = 104091, 300          # dataset rows of SEQ + 1 tokens; the model sees tokens[0:SEQ]
CANDIDATE_FRACTION = 0.3         # tokens whose positions count in the loss
SEED = 20261206                  # weights, dataset, candidates; change it to regenerate WORK
SAMPLE_SEED = 11                 # the programs' --seed (day 3's seeder gives 11 to toks_int_var)
INFO = {"params": {"block_params": {"norm_type": "ln", "attn_bias": False, "attn_pos": True, "use_mlp": False,
                                    "mlp_act_type": "gelu", "mlp_output_bias": False},
                   "num_layers": L, "use_norm_output": True, "output_bias": False},
        "model_class": "GPTBeginEndToks", "pos_enc_type": "shortformer", "causal_mask": True, "extra": None}
# the two groups' Tags (any two distinct UUIDs make them independent, random_variables.md §1.2)
GROUP_UUID = {"toks_int_var": "6c0e4a0f-2b5d-4d1e-9a37-0f3f5b1f2c11",
              "toks_int_var_other": "2f7d9b3e-8c41-4a6e-b5d2-7e19c0a4f863"}
OUTPUTS = ("expected_loss", "expected_loss_baseline")  # scalars: the mean over positions
BY_SEQ = {"expected_loss": "expected_loss_by_seq", "expected_loss_baseline": "expected_loss_by_seq_baseline"}


# ------------------------------------------------------------ weights and data

def weight_shapes():
    """(name, shape) of every weight: the two embeddings (top-level circuits of
    the model file), then t.bind_w's arguments (model_files.md §1)."""
    out = [("t.w.tok_embeds", (V, C)), ("t.w.pos_embeds", (NPOS, C))]
    for i in range(L):
        out += [(f"a{i}.ln.w.bias", (C,)), (f"a{i}.ln.w.scale", (C,)),
                (f"a{i}.w.q", (HEADS, DH, C)), (f"a{i}.w.k", (HEADS, DH, C)),
                (f"a{i}.w.v", (HEADS, DH, C)), (f"a{i}.w.o", (HEADS, C, DH))]
    return out + [("final.ln.w.bias", (C,)), ("final.ln.w.scale", (C,)), ("t.w.unembed", (V, C))]


def make_weights(rng):
    """Normal weights scaled so that nothing saturates: embeddings N(0,1),
    projections and unembedding std 1/16 (attention scores and logits of
    order 1), layer-norm scales 1 + 0.1 N and biases 0.1 N, so every parameter
    matters to the check."""
    w = {}
    for name, shape in weight_shapes():
        r = rng.standard_normal(shape, dtype=np.float32)
        if name.endswith(".scale"):
            w[name] = 1 + np.float32(0.1) * r
        elif name.endswith(".bias"):
            w[name] = np.float32(0.1) * r
        elif "embeds" in name:
            w[name] = r
        else:
            w[name] = np.float32(1 / 16) * r
    return w


def make_data(rng):
    """The dataset (int64 token ids [ROWS, SEQ + 1]), the candidate vector
    (0/1 float32 over the vocabulary, ~30% ones) and the causal mask [SEQ, SEQ]
    (1 where query >= key, REMIX's t.a.c.causal_mask)."""
    toks = rng.integers(0, V, size=(ROWS, SEQ + 1), dtype=np.int64)
    cand = (rng.random(V) < CANDIDATE_FRACTION).astype(np.float32)
    mask = np.tril(np.ones((SEQ, SEQ), np.float32))
    return toks, cand, mask


def ensure_inputs(args):
    """Writes WORK/npy/*.npy and the tensor store WORK/tensors unless the
    manifest says they were written with this SEED; returns the manifest
    (name -> 64-hex hash of the stored tensors)."""
    npy, store = os.path.join(args.work, "npy"), os.path.join(args.work, "tensors")
    man_path = os.path.join(args.work, "manifest.json")
    want = {"seed": SEED, "rows": ROWS, "seq": SEQ, "vocab": V}
    try:
        with open(man_path) as f:
            man = json.load(f)
        if all(man.get(k) == v for k, v in want.items()):
            return man
    except (OSError, ValueError):
        pass
    log(f"== writing random weights and a {ROWS}×{SEQ + 1} dataset (seed {SEED}) to {npy}")
    os.makedirs(npy, exist_ok=True)
    rng = np.random.default_rng(SEED)
    arrays = make_weights(rng)
    arrays["toks_int_vals"], arrays["tok_is_induct_candidate"], arrays["t.a.c.causal_mask"] = make_data(rng)
    files = {}
    for name, a in arrays.items():
        files[name] = os.path.join(npy, name + ".npy")
        np.save(files[name], a)
    out = run([args.circc, "store", "--tensors", store] + list(files.values()))
    by_file = {f: h for h, f in (s.split() for s in out.splitlines() if s.strip())}
    # the dataset is stored too (the programs stream it with --data), so that
    # scrub.circ also compiles without --stream
    man = dict(want, hashes={n: by_file[f] for n, f in files.items()})
    with open(man_path, "w") as f:
        json.dump(man, f, indent=1)
    return man


# ------------------------------------------------------------ the circuit

def layer_symbols(i):
    """The UUIDs of layer i's weight symbols as rust_circuit's library makes
    them (model_files.md §3.7): random.Random(i).getrandbits(128) per argument,
    in the order of the b{i} module's arguments."""
    r = random.Random(i)
    names = ["w.q", "w.k", "w.v", "w.o", "ln.w.bias", "ln.w.scale"]
    return {f"a{i}.{n}": str(uuid.UUID(int=r.getrandbits(128))) for n in names}


SYMBOLIC_SHAPE = {"w.q": "4s,7s,0s", "w.k": "4s,7s,0s", "w.v": "4s,8s,0s", "w.o": "4s,0s,8s",
                  "ln.w.bias": "0s", "ln.w.scale": "0s"}


def scalar_text(x):
    """A Scalar's value as rust_circuit prints it: shortest round-trip decimal, no exponent."""
    return np.format_float_positional(x, unique=True, trim="-")


def model_file_text(h):
    """The model file (model_files.md §1): info line, embeddings, t.bind_w
    binding every library weight to its Array; per-layer symbols restated."""
    shapes = dict(weight_shapes())

    def arr(label, n):  # an Array node named `label` holding weight n
        return f"'{label}' [{','.join(map(str, shapes[n]))}] Array {h[n][:24]}"

    lines = ["# info:" + json.dumps(INFO), arr("t.w.tok_embeds", "t.w.tok_embeds"),
             arr("t.w.pos_embeds", "t.w.pos_embeds"), "'t.bind_w' Module", "  't.logits'"]
    for i in range(L):
        uu = layer_symbols(i)
        for short in ("ln.w.bias", "ln.w.scale", "w.q", "w.k", "w.v", "w.o"):
            n = f"a{i}.{short}"
            lines.append(f"  {arr(n + '_arr', n)} ! '{n}' [{SYMBOLIC_SHAPE[short]}] Symbol {uu[n]}")
    for n in ("final.ln.w.bias", "final.ln.w.scale", "t.w.unembed"):  # library symbols, by name
        lines.append(f"  {arr(n + '_arr', n)} ! '{n}'")
    return "\n".join(lines) + "\n"


def hypothesis_text(h, out, var):
    """One hypothesis, as the day-3 notebook builds it: the model's input is
    tokens[0:SEQ] of `var`; labels (tokens[1:SEQ+1]) and the candidate mask come
    from toks_int_var; loss = −log_softmax(logits)[label] through REMIX's nll
    Module (model_files.md §5); Cumulant over the samples, then the mean over
    positions. The first hypothesis defines the shared nodes, the second refers
    to them by name."""
    first = var == "toks_int_var"
    sfx = "" if first else "_baseline"
    t = [f"'{out}' Einsum a,->", f"  '{BY_SEQ[out]}' Cumulant", f"    'loss_on_candidates{sfx}' Einsum a,a->a",
         f"      't.loss{sfx}' Module"]
    if first:
        t += ["        'nll' Einsum ,->",
              "          'll' GeneralFunction gen_index_at_0_batch_x_c",
              "            'log_probs' GeneralFunction log_softmax",
              f"              'll.input' [{V}] Symbol b9d111e5-b793-4f63-84a0-2f8590b9f39c",
              "            'll.label' [] Symbol 74c503b9-fe2c-4f8b-9350-7351a292c351",
              "          'nll.neg' [] Scalar -1"]
    else:
        t += ["        'nll'"]
    t += [f"        't.call{sfx}' Module ! 'll.input'", "          't.bind_w'",
          f"          'idxed_embeds{sfx}' GeneralFunction gen_index_at_0_c ! 't.input'",
          "            't.w.tok_embeds'", f"            'input_toks{sfx}' [{SEQ}] Index [0:{SEQ}]",
          f"              '{var}' DiscreteVar"]
    vals = [f"                'toks_int_vals' [{ROWS},{SEQ + 1}] Array {h['toks_int_vals'][:24]}"] if first \
        else ["                'toks_int_vals'"]
    t += vals + [f"                '{var}.group' Tag {GROUP_UUID[var]}"]
    t += [f"                  'toks.probs' [{ROWS}] Scalar {scalar_text(1 / ROWS)}"] if first \
        else ["                  'toks.probs'"]
    if first:
        t += [f"          't.a.c.causal_mask' [{SEQ},{SEQ}] Array {h['t.a.c.causal_mask'][:24]} ! 'a.mask'",
              f"          't.w.pos_embeds_idxed' Index [0:{SEQ},:] ! 'a.pos_input'", "            't.w.pos_embeds'",
              f"        'true_toks' [{SEQ}] Index [1:{SEQ + 1}] ! 'll.label'", "          'toks_int_var'",
              "      'induct_candidate' GeneralFunction gen_index_at_0_c",
              f"        'tok_is_induct_candidate' [{V}] Array {h['tok_is_induct_candidate'][:24]}",
              "        'input_toks'",
              f"  'recip_seq' [] Scalar {scalar_text(1 / SEQ)}"]
    else:
        t += ["          't.a.c.causal_mask' ! 'a.mask'", "          't.w.pos_embeds_idxed' ! 'a.pos_input'",
              "        'true_toks' ! 'll.label'", "      'induct_candidate'", "  'recip_seq'"]
    return t


def write_circuit(args, man):
    text = model_file_text(man["hashes"]) + "\n# the day-3 experiment (bench/scrub_bench.py)\n"
    text += "\n".join(hypothesis_text(man["hashes"], "expected_loss", "toks_int_var")
                      + hypothesis_text(man["hashes"], "expected_loss_baseline", "toks_int_var_other")
                      + [f"'{BY_SEQ[o]}'" for o in OUTPUTS]) + "\n"
    path = os.path.join(args.work, "scrub.circ")
    with open(path, "w") as f:
        f.write(text)
    return path


def compile_program(args, circ, batch):
    """circc scrub.circ --stream toks_int_vals --sample-batch B -o scrub_bB (without --stream if --no-stream);
    returns (path, compile seconds, the batch graph's arena bytes, {step number: "kind 'name'"} of the
    batch graph), the last two from --report."""
    prog = os.path.join(args.work, f"scrub_b{batch}")
    cmd = [args.circc, circ, "--tensors", os.path.join(args.work, "tensors"), "--sample-batch", str(batch)]
    cmd += [] if args.no_stream else ["--stream", "toks_int_vals"]
    cmd += sum((["--output", n] for n in OUTPUTS + tuple(BY_SEQ.values())), [])
    log(f"== compiling {os.path.basename(prog)}: {' '.join(cmd[1:])}")
    report = run(cmd + ["--report"])
    arenas = [int(x) for x in re.findall(r"memplan: arena (\d+) bytes", report)]
    # the plans in --report: the post graph's (few steps), then the batch graph's
    plans = re.split(r"^plan: ", report, flags=re.M)[1:]
    batch_plan = max(plans, key=len)
    steps = {int(m.group(1)): f"{m.group(2)} '{m.group(3)}'"
             for m in re.finditer(r"^\s*step\s+(\d+) (\w+)\s+'([^']*)'", batch_plan, re.M)}
    t0 = time.perf_counter()
    run(cmd + ["-o", prog])
    return prog, time.perf_counter() - t0, max(arenas), steps


# ------------------------------------------------------------ the sampler (random_variables.md §4.4)

MASK64, GAMMA = (1 << 64) - 1, 0x9E3779B97F4A7C15


def mix64(z):
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def sample_rows(seed, tag_uuid, n, size):
    """Rows of a uniform Tag group in samples 0..n-1: key from the UUID's
    bytes (big-endian halves), SplitMix64 stream keyed by seed and group,
    row = high half of h × size."""
    b = uuid.UUID(tag_uuid).bytes
    key = mix64(int.from_bytes(b[:8], "big") ^ mix64(int.from_bytes(b[8:], "big")))
    stream = mix64((seed & MASK64) ^ key)
    return np.array([(mix64((stream + (s + 1) * GAMMA) & MASK64) * size) >> 64 for s in range(n)], np.int64)


# ------------------------------------------------------------ PyTorch

class TorchScrub:
    """The same model and loss in torch.nn.functional. The attention is
    rust_circuit's (model_files.md §3.4, §4): the layer norm's output plus the
    positions feeds queries and keys only (shortformer), values take the
    layer norm's output alone; scores = q·k/√32 where the mask is 1, −10000
    where it is 0; the residual is the embeddings without positions."""

    def __init__(self, npy):
        ld = lambda n: torch.from_numpy(np.load(os.path.join(npy, n + ".npy")))  # noqa: E731
        self.tok, self.pos, self.unembed = ld("t.w.tok_embeds"), ld("t.w.pos_embeds")[:SEQ], ld("t.w.unembed")
        self.layers = []
        for i in range(L):
            self.layers.append({
                "ln": (ld(f"a{i}.ln.w.scale"), ld(f"a{i}.ln.w.bias")),
                # [HEADS, DH, C] -> [HEADS·DH, C]: one linear for all heads
                "q": ld(f"a{i}.w.q").reshape(HEADS * DH, C), "k": ld(f"a{i}.w.k").reshape(HEADS * DH, C),
                "v": ld(f"a{i}.w.v").reshape(HEADS * DH, C),
                "o": ld(f"a{i}.w.o").permute(1, 0, 2).reshape(C, HEADS * DH)})  # [C, HEADS·DH]
        self.final_ln = (ld("final.ln.w.scale"), ld("final.ln.w.bias"))
        self.cand = ld("tok_is_induct_candidate")
        self.causal = ld("t.a.c.causal_mask") > 0
        self.toks = np.load(os.path.join(npy, "toks_int_vals.npy"), mmap_mode="r")

    def logits(self, toks):
        """toks [B, SEQ] -> logits [B, SEQ, V]."""
        B = toks.shape[0]
        x = self.tok[toks]
        for lw in self.layers:
            h = F.layer_norm(x, (C,), lw["ln"][0], lw["ln"][1], EPS)
            qk = h + self.pos
            heads = lambda t: t.view(B, SEQ, HEADS, DH).transpose(1, 2)  # noqa: E731
            q, k, v = heads(F.linear(qk, lw["q"])), heads(F.linear(qk, lw["k"])), heads(F.linear(h, lw["v"]))
            s = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(DH))
            s = s.masked_fill(~self.causal, -10000.0)
            y = (F.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, SEQ, HEADS * DH)
            x = x + F.linear(y, lw["o"])
        return F.linear(F.layer_norm(x, (C,), self.final_ln[0], self.final_ln[1], EPS), self.unembed)

    def estimate(self, rows, rows_other, batch):
        """The two hypotheses' expected per-position losses [2, SEQ] (float64)
        over the samples (rows[s], rows_other[s]), `batch` samples at a time:
        both hypotheses in one forward of 2·batch sequences."""
        sums = torch.zeros(2, SEQ, dtype=torch.float64)
        with torch.no_grad():
            for s0 in range(0, len(rows), batch):
                ta = torch.from_numpy(self.toks[rows[s0:s0 + batch]])
                tb = torch.from_numpy(self.toks[rows_other[s0:s0 + batch]])
                n = ta.shape[0]
                labels = ta[:, 1:].repeat(2, 1)  # both hypotheses: toks_int_var's next tokens
                logits = self.logits(torch.cat([ta[:, :SEQ], tb[:, :SEQ]]))
                loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), reduction="none")
                sums += (loss.view(2, n, SEQ) * self.cand[ta[:, :SEQ]]).double().sum(1)
        return sums / len(rows)


# ------------------------------------------------------------ check

def run_estimate(args, prog, n, tag):
    """Runs prog --samples n --seed 11; returns (wall seconds, {output: value},
    {output: standard error}, indices [n, G])."""
    d = os.path.join(args.work, "out_" + tag)
    os.makedirs(d, exist_ok=True)
    cmd = [prog, "--samples", str(n), "--seed", str(SAMPLE_SEED), "--threads", str(args.threads),
           "--dump-indices", f"{d}/idx.npy"]
    cmd += [] if args.no_stream else ["--data", f"toks_int_vals=@{args.work}/npy/toks_int_vals.npy"]
    for o in OUTPUTS + tuple(BY_SEQ.values()):
        cmd += ["--output", f"{o}=@{d}/{o}.npy", "--output-se", f"{o}=@{d}/{o}.se.npy"]
    t0 = time.perf_counter()
    run(cmd)
    dt = time.perf_counter() - t0
    val = {o: np.load(f"{d}/{o}.npy").astype(np.float64) for o in OUTPUTS + tuple(BY_SEQ.values())}
    se = {o: np.load(f"{d}/{o}.se.npy").astype(np.float64) for o in OUTPUTS + tuple(BY_SEQ.values())}
    return dt, val, se, np.load(f"{d}/idx.npy")


def group_columns(idx, n):
    """The column of each group in --dump-indices, found by matching each
    column with the §4.4 sampler's rows of each group: every group must have
    exactly its own column (this checks the sampler too)."""
    cols = {}
    for var, u in GROUP_UUID.items():
        want = sample_rows(SAMPLE_SEED, u, n, ROWS)
        hit = [j for j in range(idx.shape[1]) if np.array_equal(idx[:, j], want)]
        if len(hit) != 1:
            die(f"--dump-indices: no column holds the rows random_variables.md §4.4 gives group '{var}.group' "
                f"(seed {SAMPLE_SEED}: first rows {want[:4].tolist()}; the file's first row {idx[0].tolist()})")
        cols[var] = hit[0]
    return cols


def check_program(args, prog, model):
    """circc's estimates = PyTorch's on the same rows (rtol 1e-4), else exit 1."""
    n = args.check_samples
    _, got, _, idx = run_estimate(args, prog, n, "check")
    if idx.shape != (n, len(GROUP_UUID)):
        die(f"{prog}: --dump-indices has shape {idx.shape}, expected {(n, len(GROUP_UUID))}")
    cols = group_columns(idx, n)
    want = model.estimate(idx[:, cols["toks_int_var"]], idx[:, cols["toks_int_var_other"]], args.torch_batch).numpy()
    for h, out in enumerate(OUTPUTS):
        for name, w in ((BY_SEQ[out], want[h]), (out, want[h].mean())):
            g = got[name]
            if np.shape(g) != np.shape(w):
                die(f"{prog}: {name} has shape {np.shape(g)}, PyTorch's {np.shape(w)}")
            err = np.abs(g - w)
            bad = err > 1e-4 * np.abs(w) + 1e-6
            if np.any(bad):
                i = int(np.argmax(err)) if np.ndim(err) else 0
                die(f"{prog}: {name} differs from PyTorch's in {int(np.sum(bad))} of {np.size(bad)} elements "
                    f"(worst at {i}: circc {np.ravel(g)[i]:.8g}, PyTorch {np.ravel(w)[i]:.8g})")
    log(f"== {os.path.basename(prog)}: {n} samples: rows = random_variables.md §4.4's; estimates = PyTorch's "
        f"(expected_loss {got['expected_loss']:.6f} vs {want[0].mean():.6f}, baseline "
        f"{got['expected_loss_baseline']:.6f} vs {want[1].mean():.6f})")


# ------------------------------------------------------------ timing

def flops_per_sample():
    """Both hypotheses' model FLOPs for one sample: per sequence the
    unembedding (2·SEQ·C·V), the q, k, v, o projections (4 · 2·SEQ·C·C per
    layer) and causal attention (QKᵀ and AV over keys j ≤ i: 2·C·SEQ·(SEQ+1)
    per layer), as gpt2_bench.py counts; layer norms and the log-softmax are
    not counted."""
    per_seq = 2 * SEQ * C * V + L * (4 * 2 * SEQ * C * C + 2 * C * SEQ * (SEQ + 1))
    return 2 * per_seq


def probe(args):
    out = run([args.peak, "--threads", str(args.threads), "--seconds", "0.1", "--reps", "3"])
    fma = {int(field("threads", s)): field("gflops", s) for s in out.splitlines() if s.startswith("fma ")}
    return {"fma": fma[args.threads], "isa": re.search(r"isa=(\S+)", out).group(1)}


def bench(args, progs, model):
    """--rounds rounds of [probe, every circc program, probe, PyTorch]; returns
    the per-round results: {"circc": {B: [s]}, "torch": [s], "peak": [GFLOP/s],
    "others": [cores], "est": {B: (values, se)} of the last round}."""
    n = args.samples
    rows = sample_rows(SAMPLE_SEED, GROUP_UUID["toks_int_var"], n, ROWS)
    rows_other = sample_rows(SAMPLE_SEED, GROUP_UUID["toks_int_var_other"], n, ROWS)
    res = {"circc": {b: [] for b in progs}, "torch": [], "peak": [], "others": [], "est": {}}
    meter = CpuMeter()
    for r in range(args.rounds):
        wait_quiet(args)
        meter.start()
        before = probe(args)
        for b, (prog, _, _, _) in progs.items():
            dt, val, se, _ = run_estimate(args, prog, n, f"b{b}")
            res["circc"][b].append(dt)
            res["est"][b] = (val, se)
        after = probe(args)
        set_torch_threads(torch, args.threads)
        t0 = time.perf_counter()
        want = model.estimate(rows, rows_other, args.torch_batch)
        res["torch"].append(time.perf_counter() - t0)
        set_torch_threads(torch, 1)
        time.sleep(0.2)  # let OpenBLAS's workers stop spinning before the next child runs
        res["peak"].append((before["fma"] + after["fma"]) / 2)
        res["others"].append(meter.others())
        res["isa"], res["torch_est"] = before["isa"], want.mean(1).numpy()
        log(f"== round {r + 1}: peak {res['peak'][-1]:.0f} GFLOP/s; "
            + "; ".join(f"circc B={b} {n / res['circc'][b][-1]:.2f} samples/s" for b in progs)
            + f"; PyTorch {n / res['torch'][-1]:.2f} samples/s; other jobs {res['others'][-1]:.2f} cores")
    return res


# ------------------------------------------------------------ profile

def profile(args, prog, steps):
    """Where a program's time goes: `perf record` of one estimate, self time
    by function, the generated step functions named by --report's plan and
    the rest grouped; returns [(share %, what)] largest first, or None without perf."""
    perf = shutil.which("perf")
    if not perf:
        return None
    data = os.path.join(args.work, "perf.data")
    cmd = [prog, "--samples", str(args.profile_samples), "--seed", str(SAMPLE_SEED), "--threads", str(args.threads)]
    cmd += [] if args.no_stream else ["--data", f"toks_int_vals=@{args.work}/npy/toks_int_vals.npy"]
    log(f"== perf record of {os.path.basename(prog)} --samples {args.profile_samples}")
    p = subprocess.run([perf, "record", "-q", "-F", "999", "-o", data, "--"] + cmd, env=CHILD_ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        log(f"perf record failed ({p.stderr.strip().splitlines()[-1:]}); no profile")
        return None
    out = run([perf, "report", "-i", data, "--no-children", "--sort", "dso,symbol", "--stdio"])
    share = {}
    for m in re.finditer(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", out, re.M):
        pct, dso, space, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        st = re.match(r"pass\d+_step_(\d+)", sym)
        if st:
            what = f"generated step: {steps.get(int(st.group(1)), 'step ' + st.group(1))}"
        elif sym.startswith("circc_gemm"):
            what = "GEMM kernel (all matmuls; the unembedding is 95% of their FLOPs)"
        elif sym.startswith("circc_attn"):
            what = "attention kernel"
        elif dso.startswith("libgomp"):
            what = "OpenMP runtime (threads waiting at barriers: serial and short steps)"
        elif space == "k":
            what = "Linux kernel (page faults of the arena, thread wake-ups)"
        else:
            what = "other (start-up, sampler, reduction, libc, layer norm)"
        share[what] = share.get(what, 0) + pct
    return sorted(((v, k) for k, v in share.items()), reverse=True)


# ------------------------------------------------------------ report

def verdict(value, goal):
    return "yes" if value >= goal else "**no**"


def machine(args):
    cpu = "?"
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        cpu = re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except (OSError, AttributeError):
        pass
    ob = openblas()
    cc = subprocess.run([os.environ.get("CC", "gcc"), "--version"], stdout=subprocess.PIPE, text=True)
    return [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
            f"- machine: {cpu} (lscpu), {os.cpu_count()} logical CPUs, **shared with other jobs** (absolute "
            f"times are noisy, compare the same-round ratios); load average (1/5/15 min) at start: "
            f"{' '.join(args.load)}, at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}",
            f"- circc programs: C compiler {cc.stdout.splitlines()[0] if cc.stdout else '?'}",
            f"- PyTorch {torch.__version__} (Debian python3-torch, /usr/bin/python3), OMP_WAIT_POLICY=PASSIVE, "
            f"torch.set_num_threads and openblas_set_num_threads = {args.threads}; BLAS: "
            f"{ob.openblas_get_config().decode() if ob else 'not found'}"]


def report(args, progs, res, prof, t_start):
    n, fl = args.samples, flops_per_sample()
    tps = [n / t for t in res["torch"]]
    rows, heads = [], []
    for b, (prog, comp_s, arena, _) in progs.items():
        ts = res["circc"][b]
        sps = [n / t for t in ts]
        pct = [s * fl / 1e9 / p * 100 for s, p in zip(sps, res["peak"])]
        ratios = [tt / t for t, tt in zip(ts, res["torch"])]
        speed = med(ratios)
        val, se = res["est"][b]
        pm = lambda o: f"{val[o]:.5f} ± " + ("n/a" if np.isnan(se[o]) else f"{se[o]:.5f}")  # noqa: E731
        rows.append(f"| circc `--sample-batch {b}` | {med(ts):.2f} | {med(sps):.2f} | {med(sps) * fl / 1e9:.1f} | "
                    f"{med(pct):.1f} | {speed:.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | {pm('expected_loss')} | {pm('expected_loss_baseline')} | "
                    f"{arena / 2**20:.0f} MiB, compile {comp_s:.1f} s |")
        heads.append((f"circc B={b}: samples/s vs PyTorch", f"{speed:.2f}×", "≥ 3×", verdict(speed, 3)))
        heads.append((f"circc B={b}: % of measured peak", f"{med(pct):.1f}%", "≥ 50%", verdict(med(pct), 50)))
    tpct = med([s * fl / 1e9 / p * 100 for s, p in zip(tps, res["peak"])])
    te = res["torch_est"]
    rows.append(f"| PyTorch, batches of {args.torch_batch} | {med(res['torch']):.2f} | {med(tps):.2f} | "
                f"{med(tps) * fl / 1e9:.1f} | {tpct:.1f} | 1× | {te[0]:.5f} | {te[1]:.5f} | – |")
    body = ["## Causal scrubbing, REMIX day-3 shape: circc's expectation program vs PyTorch", "",
            "Generated by `bench/scrub_bench.py` (`cmake --build BUILD --target bench_scrub`); rerun to refresh.", ""]
    body += machine(args)
    body += [f"- peak probe (bench/peak.c, {res['isa']}): {args.threads}-thread FMA "
             f"{min(res['peak']):.0f}–{max(res['peak']):.0f} GFLOP/s over the rounds (mean of the probes around "
             "each round's circc runs)",
             f"- workload: 2-layer attention-only transformer (width {C}, {HEADS} heads × {DH}, vocabulary {V}, "
             f"shortformer positions, random weights, seed {SEED}) written as a rust_circuit model file plus the "
             f"day-3 circuit; dataset {ROWS}×{SEQ + 1} random int64 tokens "
             + ("linked into the programs (`--no-stream`); " if args.no_stream else
                "streamed (`circc --stream`, `./prog --data`); ")
             + f"loss masked to candidate tokens (~{CANDIDATE_FRACTION:.0%}); two hypotheses in one program "
             "(unscrubbed; baseline with the model input from an independent DiscreteVar), common random numbers; "
             f"one sample = both hypotheses = {fl / 1e9:.2f} GFLOP (unembedding {2 * 2 * SEQ * C * V / 1e9:.2f})",
             f"- method: circc's row indices checked against random_variables.md §4.4 and its estimates against "
             f"PyTorch on the same rows ({args.check_samples} samples, rtol 1e-4) before timing; {args.rounds} rounds "
             f"of [peak probe, each program `--samples {n} --seed {SAMPLE_SEED} --threads {args.threads}` (wall "
             f"time of the whole run: start-up, the dataset, sampling, reduction), peak probe, PyTorch "
             f"on the same {n} samples (`torch.no_grad`, both hypotheses in one batch, cross_entropy on the "
             "logits, sums in float64)]; medians over rounds; speed-ups per round, then their median; before each "
             f"round the harness waits (at most {args.quiet_wait:.0f} s in all) for a second in which other jobs "
             f"use < 0.5 core (other jobs during the rounds: median {med(res['others']):.2f} cores)",
             f"- total harness time: {(time.time() - t_start) / 60:.1f} min", "",
             f"| program | s for {n} samples | samples/s | GFLOP/s | % of peak | speed-up vs PyTorch (rounds' range) | "
             "expected loss ± se | baseline ± se | arena, compile |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"] + rows
    body += ["", "Against the targets of issue 13:", "", "| check | measured | target | met |",
             "| --- | ---: | ---: | --- |"] + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in heads]
    if prof:
        b, shares = prof
        body += ["", f"Where circc's time goes (`perf record` of `--sample-batch {b}` with `--samples "
                 f"{args.profile_samples}`, self time of each function, shares of all samples; steps named by "
                 "`circc --report`; a step's share includes the row kernels inlined into it):", "",
                 "| share | where |", "| ---: | --- |"]
        body += [f"| {v:.1f}% | {k} |" for v, k in shares if v >= 0.5]
        lsm = sum(v for v, k in shares if "log_probs" in k) / 100
        if 0 < lsm < 1:
            sps = med([n / t for t in res["circc"][b]]) / (1 - lsm)
            body += ["", f"Without its log-softmax steps (the logits written, re-read and rewritten: {lsm:.0%} of the "
                     f"time) this program would reach {sps:.1f} samples/s ({sps / med(tps):.2f}× PyTorch, "
                     f"{med([sps * fl / 1e9 / p * 100 for p in res['peak']]):.0f}% of peak). The FLOP count "
                     "includes the ~70% of positions whose loss weight is 0: their logits are computed, then "
                     "multiplied by 0 (as in PyTorch)."]
    return body


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--circc", required=True)
    ap.add_argument("--peak", required=True, help="the peak probe (bench/peak.c)")
    ap.add_argument("--work", required=True, help="scratch dir (weights, dataset, store, programs: ~1 GB)")
    ap.add_argument("--results", help="markdown file to update (default: no file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=128, help="samples per timed estimate (default 128)")
    ap.add_argument("--check-samples", type=int, default=64, help="samples of the PyTorch check (default 64)")
    ap.add_argument("--sample-batch", default="4,8", help="circc --sample-batch values, one program each")
    ap.add_argument("--torch-batch", type=int, default=4,
                    help="samples per PyTorch forward (default 4: 1, 2, 4 and 8 measured within 5%%, 4 best)")
    ap.add_argument("--profile-samples", type=int, default=32,
                    help="samples of the perf profile of the largest-batch program (0: no profile; needs perf)")
    ap.add_argument("--no-stream", action="store_true",
                    help="link the dataset into the programs instead of streaming it (circc --stream, ./prog --data)")
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="seconds the run may spend in all waiting for the other jobs to go quiet (default 120)")
    args = ap.parse_args()
    args.load = open("/proc/loadavg").read().split()[:3]
    args.quiet_budget = args.quiet_wait
    t_start = time.time()
    os.makedirs(args.work, exist_ok=True)
    try:
        batches = [int(b) for b in args.sample_batch.split(",")]
    except ValueError:
        die(f"--sample-batch {args.sample_batch}: expected comma-separated whole numbers")

    man = ensure_inputs(args)
    circ = write_circuit(args, man)
    progs = {b: compile_program(args, circ, b) for b in batches}
    model = TorchScrub(os.path.join(args.work, "npy"))
    set_torch_threads(torch, args.threads)
    for prog, _, _, _ in progs.values():
        check_program(args, prog, model)
    res = bench(args, progs, model)
    prof = None
    if args.profile_samples:
        b = max(progs)
        shares = profile(args, progs[b][0], progs[b][3])
        prof = (b, shares) if shares else None
    body = report(args, progs, res, prof, t_start)
    log("")
    log("\n".join(body))
    if args.results:
        write_section(args.results, "bench_scrub", body)
        log(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
