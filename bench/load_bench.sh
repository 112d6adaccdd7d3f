#!/bin/sh
# load_bench.sh — issue 17's "no collapse under load" benchmark (not a test):
# GPT-2 small (124M, random weights from gpt2_import --random-config) compiled
# for prefill T=256 and for decode (one position, a cache of 256), timed with
# --bench with 1 and 2 threads, quiet and with a busy loop on one core, under
#   circc:   what programs choose (rt_team.c's adaptive barrier; rt_wait_policy:
#            GOMP_SPINCOUNT=1000 for libgomp's own waits)
#   libgomp: libgomp's default spin (GOMP_SPINCOUNT=300000), which circc's
#            barrier then follows too
# in ROUNDS rounds (default 3) of alternating order; medians over rounds. The
# target: loaded, 2 threads at least 0.9x as fast as 1 thread; quiet, circc's
# policy within 3% of libgomp's.
#
#   sh bench/load_bench.sh BUILD/circc BUILD/models/gpt2_import WORK [bench/RESULTS.md]
#
# With a RESULTS file the table replaces the section between the
# bench_load_VENDOR markers (intel, amd, ...: one section per CPU family;
# appended if absent).
set -eu
[ $# -ge 3 ] || { sed -n '2,16p' "$0"; exit 2; }
CIRCC=$1 IMPORT=$2 WORK=$3 RESULTS=${4:-}
ROUNDS=${ROUNDS:-3}
src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"
if [ ! -x "$WORK/prefill" ] || [ ! -x "$WORK/decode" ]; then
  "$IMPORT" --random-config "$src/models/gpt2/gpt2_small_config.json" --seq 256 --decode --name gpt2 "$WORK" >&2
  "$CIRCC" --tensors "$WORK/store" "$WORK/gpt2.circ" -o "$WORK/prefill" >&2
  "$CIRCC" --tensors "$WORK/store" "$WORK/gpt2_decode.circ" -o "$WORK/decode" >&2
fi
busy=
stop_busy() { [ -n "$busy" ] && kill "$busy" 2>/dev/null; busy=; }
trap stop_busy EXIT
# time PROG THREADS POLICY: the median ms of --bench
time_it() {
  runs=8
  [ "$1" = decode ] && runs=200
  if [ "$3" = libgomp ]; then env GOMP_SPINCOUNT=300000 "$WORK/$1" --threads "$2" --bench $runs
  else env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY "$WORK/$1" --threads "$2" --bench $runs; fi |
    sed -n 's/.*median \([0-9.]*\) ms.*/\1/p'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
: >"$WORK/times"
for r in $(seq "$ROUNDS"); do
  for load in quiet busy; do
    [ $load = busy ] && { sh -c 'while :; do :; done' & busy=$!; sleep 0.5; }
    for prog in prefill decode; do
      for policy in circc libgomp; do
        for t in 1 2; do echo "$load $prog $policy $t $(time_it $prog $t $policy)" >>"$WORK/times"; done
      done
    done
    stop_busy
  done
done
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
vendor=$(sed -n 's/^vendor_id[[:space:]]*: *//p' /proc/cpuinfo | head -1)
case $vendor in GenuineIntel) vendor=intel ;; AuthenticAMD) vendor=amd ;; esac
marker=bench_load_$vendor
table=$(
  echo "| load | program | policy | 1 thread (ms) | 2 threads (ms) | 2 threads speed / 1 thread |"
  echo "| --- | --- | --- | ---: | ---: | ---: |"
  for load in quiet busy; do
    for prog in prefill decode; do
      for policy in circc libgomp; do
        one=$(awk -v l=$load -v p=$prog -v q=$policy '$1==l && $2==p && $3==q && $4==1 { print $5 }' "$WORK/times" | median)
        two=$(awk -v l=$load -v p=$prog -v q=$policy '$1==l && $2==p && $3==q && $4==2 { print $5 }' "$WORK/times" | median)
        awk -v l=$load -v p=$prog -v q=$policy -v a="$one" -v b="$two" \
          'BEGIN { printf "| %s | %s | %s | %.2f | %.2f | %.2fx |\n", l, p, q, a, b, a / b }'
      done
    done
  done)
section="<!-- $marker: begin -->
## Under load: 2 threads vs 1 with a busy loop on one core (bench/load_bench.sh; $(echo "$vendor" | tr a-z A-Z))

GPT-2 small, random weights; prefill T=256 and decode with a 256-position cache; medians of
$ROUNDS rounds of --bench (8 prefill runs, 200 decode steps). \`circc\`: programs' own wait policy
(GOMP_SPINCOUNT=1000 unless the user sets one); \`libgomp\`: libgomp's default spin (300000).
Machine: $cpu (lscpu), $(nproc) logical CPUs, $(date -u +%Y-%m-%d).

$table
<!-- $marker: end -->"
echo "$section"
if [ -n "$RESULTS" ]; then
  if grep -q "<!-- $marker: begin -->" "$RESULTS"; then
    awk -v s="$section" -v m="$marker" '$0 == "<!-- " m ": begin -->" { print s; skip = 1 } !skip { print }
      $0 == "<!-- " m ": end -->" { skip = 0 }' "$RESULTS" >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
  else
    printf '\n%s\n' "$section" >>"$RESULTS"
  fi
fi
