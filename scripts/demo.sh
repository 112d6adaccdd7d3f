#!/bin/sh
# Sets up, builds circc and runs the demo:
#  1. GPT-2: two small GPT-2s trained on tiny shakespeare (Hugging Face
#     checkpoints; one with characters, one with GPT-2's BPE tokenizer) are
#     imported as rust_circuit circuits, compiled by circc into standalone
#     OpenMP programs with a KV cache, and write Shakespeare;
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
./build/models/gpt2_import --decode models/gpt2/shakespeare_char_gpt2 build/demo/char
./build/circc -D SEQ=256 --tensors build/demo/char/store build/demo/char/gpt2_decode.circ \
  --lm chars:models/gpt2/shakespeare_char_gpt2/vocab_chars.json -o build/demo/shakespeare
echo "== ./build/demo/shakespeare --text \"ROMEO:\" --generate 240 --top-k 40 --seed 1"
./build/demo/shakespeare --text "ROMEO:" --generate 240 --top-k 40 --seed 1
echo
echo "== GPT-2 (4 layers, 128 wide, GPT-2's BPE vocabulary, trained on tiny shakespeare)"
./build/models/gpt2_import --decode models/gpt2/shakespeare_gpt2 build/demo/bpe
./build/circc -D SEQ=256 --tensors build/demo/bpe/store build/demo/bpe/gpt2_decode.circ \
  --lm gpt2-bpe:tests/data/gpt2_bpe -o build/demo/shakespeare_bpe
echo "== ./build/demo/shakespeare_bpe --text \"JULIET:\" --generate 100 --top-k 40 --seed 1"
./build/demo/shakespeare_bpe --text "JULIET:" --generate 100 --top-k 40 --seed 1
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
