"""Run with `LD_PRELOAD=libpymalloc.so python3 -X tracemalloc`: tracemalloc
must trace allocations that pymalloc-rs serves (its hooks wrap ours)."""
import ctypes
import sys
import tracemalloc

library = ctypes.CDLL(sys.argv[1])
library.PyCore_IsPooled.argtypes = [ctypes.c_void_p]

assert tracemalloc.is_tracing(), "run with -X tracemalloc"
before = tracemalloc.take_snapshot()
strings = [("payload-%d" % i) * 4 for i in range(20000)]  # the traced line
after = tracemalloc.take_snapshot()
pooled = sum(library.PyCore_IsPooled(id(s)) for s in strings)
assert pooled == len(strings), f"only {pooled} of {len(strings)} strings come from pymalloc-rs"
grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
expected = sum(sys.getsizeof(s) for s in strings)
assert grown >= expected, f"tracemalloc saw {grown} bytes, expected at least {expected}"
top = after.compare_to(before, "lineno")[0]
source = open(__file__).read().splitlines()[top.traceback[0].lineno - 1]
assert source.endswith("# the traced line"), top
print(f"ok: tracemalloc traced {grown} bytes of {len(strings)} pooled strings to their line")
