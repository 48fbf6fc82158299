#!/bin/sh
# The Debian/Ubuntu packages the tests and the benchmarks need, installed
# with apt-get when missing (through sudo unless run as root). .ci/run
# calls it for the tests; run it by hand once before `make bench`,
# `make bench-instructions` or `make bench-python`. No Makefile target
# installs anything.
# usage: install_deps.sh [tests|bench|all]   (default: all)
#   tests  what `make check` needs besides Rust and CPython: the C compilers,
#          pkg-config, binutils (readelf) and valgrind
#   bench  the peer allocators the benchmarks compare against: mimalloc,
#          jemalloc and tcmalloc (and valgrind, for the instruction counts)
set -eu
tests="gcc g++ pkg-config binutils valgrind"
bench="valgrind libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4"
case "${1:-all}" in
  tests) wanted=$tests ;;
  bench) wanted=$bench ;;
  all) wanted="$tests $bench" ;;
  *) echo "usage: $0 [tests|bench|all]" >&2; exit 2 ;;
esac
if ! command -v dpkg >/dev/null || ! command -v apt-get >/dev/null; then
  echo "install_deps: not a Debian-like system (no dpkg/apt-get); install these by other means:" >&2
  echo "  $wanted" >&2
  exit 1
fi
missing=""
for package in $wanted; do
  case " $missing " in *" $package "*) continue ;; esac
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -z "$missing" ]; then
  echo "install_deps: all installed:" $wanted
  exit 0
fi
echo "install_deps: installing:$missing"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# shellcheck disable=SC2086
$sudo apt-get install -y -q $missing
