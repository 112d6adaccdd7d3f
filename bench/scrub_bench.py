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
     medians over rounds; speed-ups are per round, then their median.
It prints the table and writes it, with the machine, into its own section of
bench/RESULTS.md (between the `bench_scrub` markers). PyTorch runs in this
process with OMP_WAIT_POLICY=PASSIVE (set before torch is imported) and its
OpenBLAS limited to the same thread count; the circc programs and the probes
run as child processes with the caller's environment.
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
import uuid

CHILD_ENV = dict(os.environ)
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


def log(msg):
    print(msg, flush=True)


def die(msg):
    print(f"scrub_bench: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(cmd, **kw):
    p = subprocess.run(cmd, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if p.returncode != 0:
        die(f"{' '.join(cmd)} exited with {p.returncode}:\n{p.stdout}")
    return p.stdout


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
    arr = lambda n, shape: f"'{n}' [{','.join(map(str, shape))}] Array {h[n][:24]}"  # noqa: E731
    shapes = dict(weight_shapes())
    lines = ["# info:" + json.dumps(INFO), arr("t.w.tok_embeds", shapes["t.w.tok_embeds"]),
             arr("t.w.pos_embeds", shapes["t.w.pos_embeds"]), "'t.bind_w' Module", "  't.logits'"]
    for i in range(L):
        uu = layer_symbols(i)
        for short in ("ln.w.bias", "ln.w.scale", "w.q", "w.k", "w.v", "w.o"):
            n = f"a{i}.{short}"
            lines.append(f"  {arr(n, shapes[n]).replace(repr(n)[1:-1], n + '_arr', 1)} ! '{n}' "
                         f"[{SYMBOLIC_SHAPE[short]}] Symbol {uu[n]}")
    for n in ("final.ln.w.bias", "final.ln.w.scale", "t.w.unembed"):  # library symbols, by name
        lines.append(f"  {arr(n, shapes[n]).replace(repr(n)[1:-1], n + '_arr', 1)} ! '{n}'")
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
    ind = lambda n, s: " " * n + s  # noqa: E731
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
