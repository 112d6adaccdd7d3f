# expect.sh — sourced by the GPT-2 test scripts (which set $work):
# expect CODE CMD...: runs CMD, keeps its stdout in $work/out.txt and its
# stderr in $work/err.txt (and prints the latter); fails the test unless CMD
# exits with CODE.
expect() {
  code=$1
  shift
  set +e
  "$@" > "$work/out.txt" 2> "$work/err.txt"
  got=$?
  set -e
  cat "$work/err.txt"
  if [ $got -ne "$code" ]; then
    echo "FAIL: $*: expected exit $code, got $got" >&2
    exit 1
  fi
}
