#!/bin/sh
# Installs what circc needs to build and test on Debian 12, if it is missing.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -eu
PKGS="build-essential cmake pkg-config libcriterion-dev libomp-dev clang"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "setup: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "setup: missing packages:$missing" >&2
  echo "setup: run: sudo apt-get install -y$missing" >&2
  exit 1
fi
