"""Nested records through json.dumps and json.loads."""
import json

from common import run


def work():
    records = [{"id": i, "name": f"user{i}", "tags": ["a", "b", str(i % 10)],
                "score": i * 0.5, "address": {"street": f"{i} Main St", "zip": i % 99999}}
               for i in range(20000)]
    for _ in range(5):
        records = json.loads(json.dumps(records))
    return len(records) + records[-1]["address"]["zip"]


run(work)
