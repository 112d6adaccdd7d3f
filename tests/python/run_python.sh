#!/bin/sh
# run_python.sh — runs a Python test with the first of Debian's /usr/bin/python3
# and the python3 on PATH that imports numpy (scripts/setup.sh installs
# python3-numpy); with neither, says so and exits 77, which ctest reports as
# skipped (SKIP_RETURN_CODE).
# usage: run_python.sh SCRIPT ARGS...
for py in /usr/bin/python3 python3; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import numpy' >/dev/null 2>&1; then
    exec "$py" "$@"
  fi
done
echo "run_python.sh: no python3 with numpy (Debian: apt-get install python3-numpy, or sh scripts/setup.sh); skipping" >&2
exit 77
