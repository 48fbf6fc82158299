"""Preloaded into CPython, the library's CPython-named exports receive every
allocation libpython makes (its calls go through the PLT); their routes
lead straight back to libpython's own functions (src/ffi/routes.rs), so
CPython's dispatch stays exact: the pools serve it through the hook tables
we install, and CPython is followed whenever it installs another table:
tracemalloc at run time, PYTHONMALLOC at start-up. Each case runs in a
fresh interpreter with the library preloaded.

usage: cpython_dispatch.py PYTHON LIBPYMALLOC
"""
import os
import subprocess
import sys
import tempfile

python, library = sys.argv[1], os.path.abspath(sys.argv[2])

POOLED = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.PyCore_IsPooled.argtypes = [ctypes.c_void_p]
def pooled(objects):
    return sum(lib.PyCore_IsPooled(id(o)) for o in objects)
"""


def run(code, *, env=None, expect_failure=False):
    environment = dict(os.environ, LD_PRELOAD=library, PYMALLOC_CPYTHON="1")
    environment.pop("PYTHONMALLOC", None)
    environment.update(env or {})
    done = subprocess.run([python, "-c", POOLED + code, library], env=environment,
                          capture_output=True, text=True, timeout=120)
    if expect_failure:
        assert done.returncode != 0, f"expected a failure:\n{done.stdout}{done.stderr}"
    else:
        assert done.returncode == 0, f"failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    return done


# libpython comes after the library: the CPython-named exports lead to it.
with tempfile.TemporaryDirectory() as directory:
    stats = os.path.join(directory, "stats")
    run("x = [str(i) for i in range(10000)]", env={"PYMALLOC_STATS_FILE": stats})
    line = open(stats).read()
    assert "mem_exports=libpython" in line and "object_exports=libpython" in line, line
    report = run("pass", env={"PYMALLOC_STATS": "1"}).stderr
    assert "object:   forwarded" in report, report
print("ok: the mem and object exports lead to libpython's functions")

# Our table installed: the objects CPython makes are pooled.
run("""
strings = [("s%d" % i) * 3 for i in range(20000)]
assert pooled(strings) == len(strings), pooled(strings)
""")
print("ok: objects come from the pools")

# tracemalloc installs its table at run time and removes it again: while
# it runs, every allocation passes through it (and still reaches the
# pools beneath it); afterwards the exports serve the pools directly again.
run("""
import tracemalloc
tracemalloc.start()
before = tracemalloc.take_snapshot()
traced = [("t%d" % i) * 3 for i in range(20000)]
after = tracemalloc.take_snapshot()
grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
assert grown >= sum(sys.getsizeof(s) for s in traced), grown
assert pooled(traced) == len(traced)
tracemalloc.stop()
assert tracemalloc.get_traced_memory() == (0, 0)
later = [("u%d" % i) * 3 for i in range(20000)]
assert pooled(later) == len(later)
""")
print("ok: tracemalloc started and stopped at run time sees every allocation")

# PYTHONMALLOC=malloc: CPython replaces our tables before it starts, and
# the exports follow: no object comes from the pools.
run("""
objects = [("m%d" % i) * 3 for i in range(20000)]
assert pooled(objects) == 0, pooled(objects)
""", env={"PYTHONMALLOC": "malloc"})
print("ok: PYTHONMALLOC=malloc is followed")

# PYTHONMALLOC=debug: CPython's debug hooks serve every allocation, and
# catch a buffer overflow.
crash = run("import _testcapi; _testcapi.pymem_buffer_overflow()",
            env={"PYTHONMALLOC": "debug"}, expect_failure=True)
assert "bad trailing pad byte" in crash.stderr, crash.stderr
print("ok: PYTHONMALLOC=debug's hooks catch an overflow")
