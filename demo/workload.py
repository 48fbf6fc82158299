"""An object-heavy Python workload: the kind of program pymalloc exists for.

Builds and tears down dicts, lists, tuples and strings, round-trips JSON,
runs a small class-based simulation, and makes cyclic garbage for the GC.
Prints one line: the seconds it took.
"""
import gc
import json
import time


def containers(rounds=6):
    for r in range(rounds):
        table = {f"key{i}": (i, str(i), [i, i + r]) for i in range(60000)}
        rows = [list(v) + [k] for k, v in table.items()]
        rows.sort(key=lambda row: row[1])
        del table, rows


def strings():
    parts = []
    for i in range(150000):
        parts.append("item-" + str(i) + "-" * (i % 7))
    text = ",".join(parts)
    return len(text.split(","))


def json_round_trips():
    records = [{"id": i, "name": f"user{i}", "tags": ["a", "b", str(i % 10)],
                "score": i * 0.5} for i in range(20000)]
    for _ in range(3):
        records = json.loads(json.dumps(records))
    return len(records)


class Task:
    __slots__ = ("ident", "priority", "work", "next")

    def __init__(self, ident, priority, work, next_task):
        self.ident, self.priority, self.work, self.next = ident, priority, work, next_task


class Scheduler:
    """A tiny richards-like scheduler: tasks hand packets to each other."""

    def __init__(self, count):
        self.head = None
        for i in range(count):
            self.head = Task(i, i % 5, [], self.head)

    def run(self, steps):
        task = self.head
        for step in range(steps):
            task.work.append((step, task.ident))
            if len(task.work) > 8:
                task.work = task.work[4:]
            task = task.next or self.head
        return step


def cycles(count=60000):
    class Node:
        def __init__(self):
            self.peer = None

    for _ in range(3):
        nodes = [Node() for _ in range(count)]
        for a, b in zip(nodes, nodes[1:] + nodes[:1]):
            a.peer = b
        del nodes
        gc.collect()


def main():
    start = time.perf_counter()
    containers()
    strings()
    json_round_trips()
    Scheduler(500).run(400000)
    cycles()
    print(f"{time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
