"""Requests on both sides of the 512-byte threshold, so that the pools and
the system allocator behind them both work: a string grown by += (resized
in place from a few bytes to 3 KB), slices of it joined by str.join,
lists grown by append past 64 items (their item arrays leave the pools)
and bytes concatenation."""
from common import run


def grown_text(length):
    text = ""
    for i in range(length):
        text += "ab" if i % 3 else "cdefgh"
    return text


def work():
    digest = 0
    for r in range(1000):
        text = grown_text(1000)
        pieces = [text[: 5 + (i * 37) % 1500] for i in range(200)]
        joined = "-".join(pieces)
        numbers = []
        for i in range(100 + r):
            numbers.append(i)
        blob = b""
        for piece in pieces[:80]:
            blob = blob + piece[:40].encode() + b"."
        digest = (digest * 31 + len(text) + len(joined) + len(numbers) + len(blob)) % 1000003
    return digest


run(work)
