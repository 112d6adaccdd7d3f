#!/bin/sh
# Sets up, builds and runs every test: the normal build, then once more under
# AddressSanitizer + UndefinedBehaviorSanitizer. Exits non-zero on any failure.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
JOBS=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug "-DCIRCC_SANITIZE=address;undefined" >/dev/null
cmake --build build-asan -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j "$JOBS" -LE slow

# A short, deterministic libFuzzer run of the parser and every file reader.
if command -v clang >/dev/null 2>&1; then
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCIRCC_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j "$JOBS" --target fuzz_parse fuzz_pt fuzz_npy fuzz_safetensors fuzz_json fuzz_tokenizer
  for f in parse:tests/data/circ pt:tests/data/pt npy:tests/data/npy safetensors:models/gpt2/tiny_random_gpt2 json:models/gpt2/tiny_random_gpt2 \
           tokenizer:tests/data/circ; do
    name=${f%%:*} seeds=${f#*:}
    corpus=$(mktemp -d)
    cp "$seeds"/* "$corpus"/ 2>/dev/null || true
    echo "fuzz_$name: 15 s"
    ./build-fuzz/tests/fuzz_$name -seed=1 -max_total_time=15 -max_len=65536 -print_final_stats=0 "$corpus" >"$corpus.log" 2>&1 \
      || { tail -40 "$corpus.log"; exit 1; }
    rm -rf "$corpus" "$corpus.log"
  done
fi
