#!/bin/sh
# Sets up, builds circc and runs the demo: a GPT-2-style transformer block
# written in rust_circuit's module form (layernorm, attention batched over
# heads, MLP, residuals), evaluated by circc's reference evaluator.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target circc
echo "== circc eval tests/data/circ/gpt2_block_module.circ (batch 2, 5 positions, hidden 8, 2 heads)"
./build/circc eval tests/data/circ/gpt2_block_module.circ \
  --input t.mask=@tests/data/circ/causal_mask5.npy --output b0=@build/demo_b0.npy --print
echo "== wrote build/demo_b0.npy"
