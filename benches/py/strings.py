"""String building: concatenation, formatting, join and split."""
from common import run


def work():
    digest = 0
    for r in range(4):
        parts = []
        for i in range(60000):
            parts.append("item-" + str(i) + "-" * (i % 7))
            parts.append(f"{i:08d}:{r}")
            parts.append("{}/{}".format(i, r).upper())
        text = ",".join(parts)
        words = text.split(",")
        assert len(words) == len(parts)
        digest += len(text)
        del parts, text, words
    return digest


run(work)
