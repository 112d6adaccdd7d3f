'use strict';
// ort_run.js — the ONNX Runtime peer of bench/gpt2_bench.py (not a test).
//
//   node ort_run.js NODE_MODULES_DIR ALLOW_SPINNING(0|1)
//
// loads onnxruntime-node from NODE_MODULES_DIR (scripts/setup.sh --bench
// installs it there) and answers each JSON line on stdin with one JSON line on
// stdout. A request
//   {"model": "x.onnx", "threads": N, "runs": R, "save": "out.bin" or null,
//    "inputs": {"name": {"type": "int64" | "float32", "dims": [...], "file": "raw.bin"}}}
// runs the model (one session per model and thread count, kept for the later
// requests) once as a warm-up, writes its first output there as raw
// little-endian float32 if save is given, then times R runs and answers
// {"ms": median, "runs": [ms...], "load_ms": ms to create the session or null,
// "version": ORT's version}; a failure answers {"error": "..."}.
// Sessions: CPU execution provider, all graph optimizations, intra_op_num_threads
// = N, one inter-op thread, session.intra_op.allow_spinning = ALLOW_SPINNING.
const fs = require('fs');
const path = require('path');
const readline = require('readline');

const [modulesDir, spin] = process.argv.slice(2);
if (!modulesDir || (spin !== '0' && spin !== '1')) {
  process.stderr.write('usage: node ort_run.js NODE_MODULES_DIR ALLOW_SPINNING(0|1)\n');
  process.exit(2);
}
const ort = require(path.join(path.resolve(modulesDir), 'onnxruntime-node'));
const sessions = new Map();

async function session(model, threads) {
  const key = `${model}\t${threads}`;
  if (sessions.has(key)) return [sessions.get(key), null];
  const t0 = process.hrtime.bigint();
  const s = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    extra: { session: { intra_op: { allow_spinning: spin }, inter_op: { allow_spinning: spin } } },
  });
  sessions.set(key, s);
  return [s, Number(process.hrtime.bigint() - t0) / 1e6];
}

function tensor(spec) {
  // a copy into a fresh ArrayBuffer: readFileSync's buffer may be unaligned for a typed array
  const bytes = new Uint8Array(fs.readFileSync(spec.file)).buffer;
  const types = { int64: BigInt64Array, float32: Float32Array };
  if (!types[spec.type]) throw new Error(`${spec.file}: unknown type ${spec.type}`);
  return new ort.Tensor(spec.type, new types[spec.type](bytes), spec.dims);
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function serve(req) {
  const [s, loadMs] = await session(req.model, req.threads);
  const feeds = {};
  for (const [name, spec] of Object.entries(req.inputs)) feeds[name] = tensor(spec);
  const first = await s.run(feeds);
  if (req.save) {
    const y = first[s.outputNames[0]].data;
    fs.writeFileSync(req.save, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  }
  const runs = [];
  for (let i = 0; i < req.runs; i++) {
    const t0 = process.hrtime.bigint();
    await s.run(feeds);
    runs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { ms: median(runs), runs, load_ms: loadMs, version: ort.env.versions.node };
}

(async () => {
  for await (const line of readline.createInterface({ input: process.stdin })) {
    let out;
    try {
      out = await serve(JSON.parse(line));
    } catch (e) {
      out = { error: String((e && e.stack) || e) };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
})();
