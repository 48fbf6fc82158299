"""PyMem_* and calloc traffic, which the object heap's fast paths do not
see (CPython 3.11): str.split's result (a list created at its size: its
items array is PyMem_Calloc'ed), list slices (PyMem_Malloc), lists grown
by append (PyMem_Realloc), sets past five entries (PyMem_Malloc'ed
tables), instance attribute values (PyMem_Malloc) and bytes(n)
(PyObject_Calloc, half of them above 512 bytes). Small dicts are left out:
their keys come from the object heap in 3.11. The strings are single
characters and the ints small, which CPython caches, so that few
object-heap requests come in between."""
from common import run


class Record:
    def __init__(self, a, b, c):
        self.a, self.b, self.c = a, b, c


def work():
    line = ",".join("abcdefghijklmnop")
    sizes = [16 + 4 * i for i in range(250)]
    digest = 0
    for _ in range(800):
        total = 0
        for r in range(250):
            fields = line.split(",")
            head = fields[: 6 + r % 10]
            tags = set(head)
            grown = []
            for f in head:
                grown.append(f)
            record = Record(fields, grown, tags)
            blank = bytes(sizes[r])
            total = (total + len(record.c) + len(record.b) + blank[-1]) % 251
        digest = (digest * 31 + total) % 1000003
    return digest


run(work)
