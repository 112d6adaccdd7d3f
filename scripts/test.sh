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

# A short, deterministic libFuzzer run of the whole front end (text to a
# memory plan) and of every file reader; each target's budget in seconds (the
# tokenizer's gives it >= 10^4 inputs). UBSan reports abort in fuzz builds. A
# failure prints the log's end and the failing input (base64), and keeps both
# in build-fuzz/artifacts.
if command -v clang >/dev/null 2>&1; then
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCIRCC_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j "$JOBS" --target fuzz_frontend fuzz_parse fuzz_pt fuzz_npy fuzz_safetensors fuzz_json fuzz_tokenizer
  mkdir -p build-fuzz/artifacts
  for f in frontend:60:tests/data/circ:tests/errors parse:15:tests/data/circ pt:15:tests/data/pt npy:15:tests/data/npy \
           safetensors:15:models/gpt2/tiny_random_gpt2 json:15:models/gpt2/tiny_random_gpt2 tokenizer:40:tests/data/circ; do
    name=${f%%:*} rest=${f#*:}
    secs=${rest%%:*} seeds=${rest#*:}
    corpus=$(mktemp -d)
    for dir in $(echo "$seeds" | tr : ' '); do cp "$dir"/* "$corpus"/ 2>/dev/null || true; done
    log=build-fuzz/artifacts/fuzz_$name.log
    echo "fuzz_$name: $secs s"
    if ! ./build-fuzz/tests/fuzz_$name -seed=1 -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 \
         -artifact_prefix=build-fuzz/artifacts/fuzz_$name- -print_final_stats=1 "$corpus" >"$log" 2>&1; then
      tail -40 "$log"
      for a in build-fuzz/artifacts/fuzz_$name-*; do
        [ -f "$a" ] && { echo "failing input $a (base64):"; base64 "$a"; }
      done
      exit 1
    fi
    grep -m1 '^stat::number_of_executed_units' "$log" || true
    rm -rf "$corpus" "$log"
  done
fi
