#!/bin/sh
# The Python packaging tools `make wheel` uses, from PyPI, in a virtual
# environment of their own (target/wheel-tools): no change to the system's
# Python. .ci/run calls this before `make check`; run it once by hand
# before `make wheel`.
# usage: python_tools.sh [PYTHON]   (default: python3)
set -eu
cd "$(dirname "$0")/.."
python=${1:-python3}
venv=target/wheel-tools
# hatchling: the wheel's build backend (pyproject.toml, python/hatch_build.py).
# The bounds follow the hook API python/hatch_build.py uses.
requirements="hatchling>=1.27,<2"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$requirements"
echo "python_tools: $("$venv/bin/python" -m pip show hatchling | sed -n 's/^Version: /hatchling /p') in $venv"
