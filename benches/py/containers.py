"""Dicts, lists and tuples built and torn down in rounds."""
from common import run


def work():
    digest = 0
    for r in range(8):
        table = {f"key{i}": (i, str(i), [i, i + r]) for i in range(50000)}
        rows = [list(v) + [k] for k, v in table.items()]
        rows.sort(key=lambda row: row[1])
        index = {row[0]: tuple(row) for row in rows}
        digest += len(index) + index[r][0]
        del table, rows, index
    return digest


run(work)
