"""Preloaded into CPython, the library's CPython-named exports receive every
allocation libpython makes (its calls go through the PLT). While CPython's
table for a domain is ours, they serve the pools directly (our hook code,
without libpython's wrapper); whenever CPython holds another table
(tracemalloc at run time, PYTHONMALLOC at start-up), they lead to
libpython's own functions, so CPython's dispatch stays exact
(src/ffi/routes.rs, src/cpython.rs). Each case runs in a fresh
interpreter with the library preloaded; the statistics line written at
exit says where the exports lead then.

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
def exports():
    # Where the object domain's exports lead now: the statistics report
    # (PyCore_PrintStats writes to stderr), caught in a file.
    import os, tempfile
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            lib.PyCore_PrintStats(None)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        report = caught.read().decode()
    return report.split("object:", 1)[1].split()[0]
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


def exports_at_exit(code, env=None):
    """Run `code`; the statistics line's (mem, object) exports at exit."""
    with tempfile.TemporaryDirectory() as directory:
        stats = os.path.join(directory, "stats")
        run(code, env=dict(env or {}, PYMALLOC_STATS_FILE=stats))
        line = open(stats).read()
    words = dict(word.split("=", 1) for word in line.split() if "=" in word)
    return words["mem_exports"], words["object_exports"]


# libpython comes after the library, and CPython's tables are ours: the
# exports serve the pools directly.
assert exports_at_exit("x = [str(i) for i in range(10000)]") == ("direct", "direct")
report = run("pass", env={"PYMALLOC_STATS": "1"}).stderr
assert "object:   direct" in report and "raw:      forwarded" in report, report
print("ok: the mem and object exports serve the pools directly while CPython's tables are ours")

# Our table installed: the objects CPython makes are pooled.
run("""
strings = [("s%d" % i) * 3 for i in range(20000)]
assert pooled(strings) == len(strings), pooled(strings)
""")
print("ok: objects come from the pools")

# tracemalloc installs its table at run time and removes it again: while
# it runs, every allocation passes through it (and still reaches the
# pools beneath it); afterwards the exports serve the pools directly again.
TRACED = """
import tracemalloc
tracemalloc.start()
before = tracemalloc.take_snapshot()
traced = [("t%d" % i) * 3 for i in range(20000)]
after = tracemalloc.take_snapshot()
grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
assert grown >= sum(sys.getsizeof(s) for s in traced), grown
assert pooled(traced) == len(traced)
"""
# While tracing, the exports lead to libpython (tracemalloc's table);
# stopped, our table is back, and so are the direct exports.
assert exports_at_exit(TRACED + """
assert exports() == "forwarded", exports()
tracemalloc.stop()
assert exports() == "direct", exports()
assert tracemalloc.get_traced_memory() == (0, 0)
later = [("u%d" % i) * 3 for i in range(20000)]
assert pooled(later) == len(later)
""") == ("direct", "direct")
print("ok: tracemalloc started and stopped at run time sees every allocation")

# Tracing from the start (PYTHONTRACEMALLOC): tracemalloc's table is set
# over ours before CPython's first allocation; every allocation is traced.
run("""
import tracemalloc
assert tracemalloc.is_tracing()
assert exports() == "forwarded", exports()
before = tracemalloc.get_traced_memory()[0]
kept = [("v%d" % i) * 3 for i in range(20000)]
assert tracemalloc.get_traced_memory()[0] - before >= sum(sys.getsizeof(s) for s in kept)
assert pooled(kept) == len(kept)
""", env={"PYTHONTRACEMALLOC": "1"})
print("ok: PYTHONTRACEMALLOC=1 traces every allocation from the start")

# PYTHONMALLOC=malloc: CPython replaces our tables before it starts, and
# the exports follow: no object comes from the pools.
run("""
objects = [("m%d" % i) * 3 for i in range(20000)]
assert pooled(objects) == 0, pooled(objects)
assert exports() == "forwarded", exports()
""", env={"PYTHONMALLOC": "malloc"})
print("ok: PYTHONMALLOC=malloc is followed")

# PYTHONMALLOC=debug: CPython's debug hooks serve every allocation, and
# catch a buffer overflow.
crash = run("import _testcapi; _testcapi.pymem_buffer_overflow()",
            env={"PYTHONMALLOC": "debug"}, expect_failure=True)
assert "bad trailing pad byte" in crash.stderr, crash.stderr
print("ok: PYTHONMALLOC=debug's hooks catch an overflow")
