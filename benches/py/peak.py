"""A peak of ~300 MB of small objects, built and freed; then ordinary work
goes on for a while. Reports the resident set right after the peak is
freed and again after that work (the allocator may keep free memory
briefly for reuse)."""
import time

from common import run


def work():
    peak = [(i, str(i), [i], {"k": i}) for i in range(600000)]
    digest = len(peak) + peak[-1][3]["k"]
    del peak
    return digest


def settle():
    # 1 s of the kind of work a program does between peaks (the
    # allocator may keep freed arenas for reuse up to a second:
    # src/arena.rs, adaptive decay).
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        scratch = [str(i) * 2 for i in range(2000)]
        del scratch


run(work, settle)
