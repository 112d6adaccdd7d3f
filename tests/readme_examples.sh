#!/bin/sh
# readme_examples.sh — runs, exactly as the README writes them, its
# `./build/circc eval` examples whose files are all in the repository (paths
# under tests/data), from the repository root with ./build/circc standing for
# the circc under test: each must exit 0 with nothing on stderr, and a value
# the README gives after the last ':' of its comment must be in the output.
# The gpt2_block_module example must print b0 [2,5,8] (10 rows of 8 values).
# usage: readme_examples.sh CIRCC REPO_DIR
set -u
circc=$1 repo=$2
cd "$repo" || exit 1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0 n=0
grep '^\./build/circc eval .*tests/data/' README.md >"$out/lines"
while IFS= read -r line; do
  n=$((n + 1))
  cmd=${line%%#*}
  want=
  case $line in *'#'*:*) want=$(printf '%s\n' "${line##*:}" | tr -d ' ') ;; esac
  # shellcheck disable=SC2086
  set -- ${cmd#./build/circc }
  "$circc" "$@" >"$out/stdout" 2>"$out/stderr"
  code=$?
  if [ $code -ne 0 ] || [ -s "$out/stderr" ]; then
    echo "FAIL: $line: exit $code"; cat "$out/stderr"; status=1
  elif [ -n "$want" ] && ! grep -q -- "$want" "$out/stdout"; then
    echo "FAIL: $line: no '$want' in the output"; cat "$out/stdout"; status=1
  else
    echo "ok: $line"
  fi
  case $line in
  *gpt2_block_module.circ*)
    if [ "$(head -n 1 "$out/stdout")" != "b0 [2,5,8] float32" ] || [ "$(grep -c '^ *\[*\[*\[[-0-9]' "$out/stdout")" != 10 ]; then
      echo "FAIL: $line: expected b0 [2,5,8] float32 and 10 rows"; cat "$out/stdout"; status=1
    fi ;;
  esac
done <"$out/lines"
[ "$n" -ge 2 ] || { echo "FAIL: found $n README examples, expected at least 2"; status=1; }
exit $status
