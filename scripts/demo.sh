#!/bin/sh
# Sets up, builds circc and runs the demo:
#  1. GPT-2: a character-level GPT-2 trained on tiny shakespeare (Hugging Face
#     checkpoint) is imported as a rust_circuit circuit, compiled by circc into a
#     standalone OpenMP program with a KV cache, and writes Shakespeare;
#  2. the makemore MLP (names.txt) is compiled, checked on the whole dev set
#     against PyTorch's loss, and samples new names.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS" --target circc model_circuits scalar_npy gpt2_import
mkdir -p build/demo

echo "== GPT-2 (6 layers, 256 wide, character vocabulary, trained on tiny shakespeare)"
./build/models/gpt2_import --decode --seq 256 models/gpt2/shakespeare_char_gpt2 build/demo/char
./build/circc --tensors build/demo/char/store build/demo/char/gpt2_decode.circ \
  --lm chars:models/gpt2/shakespeare_char_gpt2/vocab_chars.json -o build/demo/shakespeare
echo "== ./build/demo/shakespeare --text \"ROMEO:\" --generate 240 --top-k 40 --seed 1"
./build/demo/shakespeare --text "ROMEO:" --generate 240 --top-k 40 --seed 1
echo

gen=build/models/mlp
echo "== makemore MLP: circc $gen/mlp.circ -o build/demo/mlp   (all 22655 dev examples in one batch)"
./build/circc --tensors $gen/store $gen/mlp.circ --vocab ".abcdefghijklmnopqrstuvwxyz" -o build/demo/mlp
./build/models/scalar_npy 2.1632766723632812 build/demo/loss_pytorch.npy
echo "== dev loss vs PyTorch's 2.1632766723632812"
./build/demo/mlp --input contexts=@models/mlp/golden/dev_contexts.npy --input targets=@models/mlp/golden/dev_targets.npy \
  --check loss=@build/demo/loss_pytorch.npy --rtol 1e-5 --atol 0
echo "== ./build/demo/mlp --sample 10 --seed 1"
./build/demo/mlp --sample 10 --seed 1
