#!/bin/sh
# Sets up, builds circc and runs the demo: the makemore MLP (Bengio et al.
# 2003, trained on names.txt) is written as a rust_circuit circuit, compiled by
# circc into a standalone OpenMP program, checked on the whole dev set against
# PyTorch's loss, and then samples new names.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS" --target circc model_circuits scalar_npy
gen=build/models/mlp
mkdir -p build/demo
echo "== circc $gen/mlp.circ -o build/demo/mlp      (makemore MLP, all 22655 dev examples in one batch)"
./build/circc --tensors $gen/store $gen/mlp.circ --vocab ".abcdefghijklmnopqrstuvwxyz" -o build/demo/mlp
./build/demo/mlp --info | sed -n '5,12p'
./build/models/scalar_npy 2.1632766723632812 build/demo/loss_pytorch.npy
echo "== dev loss vs PyTorch's 2.1632766723632812"
./build/demo/mlp --input contexts=@models/mlp/golden/dev_contexts.npy --input targets=@models/mlp/golden/dev_targets.npy \
  --check loss=@build/demo/loss_pytorch.npy --rtol 1e-5 --atol 0
./build/demo/mlp --input contexts=@models/mlp/golden/dev_contexts.npy --input targets=@models/mlp/golden/dev_targets.npy --bench 10
echo "== ./build/demo/mlp --sample 10 --seed 1"
./build/demo/mlp --sample 10 --seed 1
