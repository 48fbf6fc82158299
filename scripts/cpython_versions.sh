#!/bin/sh
# Embedding and LD_PRELOAD smoke test against every CPython 3.x that pyenv
# holds (3.8 and later: PyMemAllocatorEx and Py_BytesMain exist there).
# For each version: build the runner against it, run an object-heavy
# snippet under the runner and under LD_PRELOAD, and check from the
# statistics file that pymalloc-rs served it. Prints which versions ran.
# A machine without pyenv's CPythons (only the system python3) tests PYTHON
# alone, with a message saying so; CI has them all and runs every one.
# usage: cpython_versions.sh LIBRARY OUTDIR [PYTHON]   (default: python3)
set -eu
lib=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
out=$2
default_python=${3:-python3}
root=${PYENV_ROOT:-$HOME/.pyenv}/versions
snippet='
import json, sys
data = {str(i): [i, str(i) * 3, (i, float(i))] for i in range(50000)}
assert json.loads(json.dumps(data))["49999"][1] == "49999" * 3
class Node:
    def __init__(self, left=None, right=None): self.left, self.right = left, right
def tree(d): return Node(tree(d - 1), tree(d - 1)) if d else Node()
tree(14)
print(sys.version.split()[0], end="")
'
# check VERSION PYTHON3 PYTHON3_CONFIG: the runner built against that
# CPython and a preloaded run of it, both served by pymalloc-rs.
check() {
  version=$1 python=$2 config=$3
  runner="$out/pymalloc-python$version"
  # shellcheck disable=SC2046
  ${CC:-gcc} -O2 -Wall $("$config" --includes) -Iinclude -o "$runner" embed/pymalloc_python.c \
    -L"$(dirname "$lib")" -lpymalloc $("$config" --embed --ldflags) -Wl,-rpath,"$(dirname "$lib")"
  for mode in runner preload; do
    stats="$out/stats.$version.$mode"
    rm -f "$stats"
    if [ $mode = runner ]; then
      got=$(PYMALLOC_STATS_FILE="$stats" "$runner" -c "$snippet")
    else
      got=$(PYMALLOC_STATS_FILE="$stats" LD_PRELOAD="$lib" "$python" -c "$snippet")
    fi
    [ "$got" = "$version" ] || { echo "FAIL $version $mode: printed '$got'" >&2; exit 1; }
    pools=$(sed -n 's/.*pools_taken=\([0-9]*\).*/\1/p' "$stats" 2>/dev/null | head -1)
    [ "${pools:-0}" -gt 0 ] || { echo "FAIL $version $mode: pymalloc-rs did not serve the run" >&2; exit 1; }
    # Preloaded, and in this runner (linked before libpython), CPython's
    # calls reach our exports; with our tables in place they serve the
    # pools directly (src/cpython.rs, follow_live_tables).
    exports=$(sed -n 's/.*object_exports=\([a-z]*\).*/\1/p' "$stats" | head -1)
    if [ "$exports" != direct ]; then
      echo "FAIL $version $mode: object exports '$exports', not serving the pools directly" >&2; exit 1
    fi
    echo "ok: CPython $version $mode: served by pymalloc-rs ($pools pools; object exports: $exports)"
  done
  # Where the exports lead as CPython's tables change (tracemalloc,
  # PYTHONMALLOC): each version writes its tables its own way.
  echo "CPython $version: where the exports lead as its tables change"
  "$python" c_tests/cpython_dispatch.py "$python" "$lib"
  ran="$ran $version"
}

mkdir -p "$out"
ran=""
for dir in "$root"/3.*; do
  [ -x "$dir/bin/python3" ] || continue
  version=$(basename "$dir")
  minor=$(echo "$version" | cut -d. -f2)
  [ "$minor" -ge 8 ] || continue
  config="$dir/bin/python3-config"
  [ -x "$config" ] || { echo "skip $version: no python3-config"; continue; }
  check "$version" "$dir/bin/python3" "$config"
done
if [ -z "$ran" ]; then
  echo "skip: no CPython 3.8+ under $root (pyenv); testing $default_python alone"
  version=$("$default_python" -c 'import sys; print(sys.version.split()[0])')
  check "$version" "$(command -v "$default_python")" "$default_python-config"
fi
[ -n "$ran" ] || { echo "FAIL: no CPython 3.8+ found" >&2; exit 1; }
echo "CPython versions tested:$ran"
