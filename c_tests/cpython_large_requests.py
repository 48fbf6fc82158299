"""Where the hook tables send requests above 512 bytes, told apart by
CPython's own count of the blocks its pymalloc handed out
(sys.getallocatedblocks(): its pool blocks plus the large requests it passed
on to the raw domain).

* Installed before the interpreter starts (the runner's PyCore_InstallHooks
  before Py_BytesMain; the preload's constructor), the tables replace
  CPython's allocator, as CPython's contract for PyMem_SetAllocator allows
  then: large requests go straight to the raw domain, pymalloc never sees a
  request, and the count stays 0.
* Installed into a running interpreter, they wrap pymalloc, which may hold
  blocks: large requests pass through it, and it counts each one.

usage: cpython_large_requests.py PYTHON LIBPYMALLOC RUNNER
"""
import os
import subprocess
import sys

python, library, runner = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3]

MEASURE = """
import sys
before = sys.getallocatedblocks()
kept = [bytes(4000 + i) for i in range(100)]
after = sys.getallocatedblocks()
print(before, after)
"""

INSTALL_AT_RUN_TIME = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
assert lib.PyCore_InstallHooks() == 0
""" + MEASURE


def counts(command, code, env):
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PYMALLOC", "PYTHONMALLOC", "LD_PRELOAD", "PYTHONDEVMODE"))}
    environment.update(env)
    done = subprocess.run(command + ["-c", code, library], env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    before, after = map(int, done.stdout.split())
    return before, after


for label, command, env in [
    ("runner", [runner], {}),
    ("preload", [python], {"LD_PRELOAD": library}),
]:
    before, after = counts(command, MEASURE, env)
    assert (before, after) == (0, 0), \
        f"{label}: pymalloc counted {before} blocks, then {after} after 100 large requests: " \
        "the tables installed before start-up should send large requests to the raw domain"
    print(f"{label}: installed before start-up, large requests bypass pymalloc (count {after})")

before, after = counts([python], INSTALL_AT_RUN_TIME, {})
assert after - before >= 100, \
    f"installed at run time: pymalloc counted {before}, then {after} after 100 large requests: " \
    "the tables should wrap pymalloc, which holds blocks from before"
print(f"run-time install: large requests pass through pymalloc (+{after - before} blocks)")
