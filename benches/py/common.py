"""Shared by the workloads: time the work, then report RSS as JSON."""
import gc
import json
import time


def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def run(work, settle=None):
    """Time `work()` and print what it returns (a digest of its results:
    the same under every allocator, which scripts/python_instructions.sh
    checks); then collect garbage and report the resident set.
    `settle()` (for the peak workload) runs after the first reading: the
    program going on with ordinary work after its peak."""
    start = time.perf_counter()
    digest = work()
    seconds = time.perf_counter() - start
    print(f"result: {digest}")
    gc.collect()
    result = {"seconds": seconds, "rss_after_kib": rss_kib()}
    if settle is not None:
        settle()
        gc.collect()
        result["rss_settled_kib"] = rss_kib()
    print(json.dumps(result))
