"""Cyclic garbage: rings and trees with parent links, left to the GC."""
import gc

from common import run


class Node:
    def __init__(self, parent=None):
        self.parent = parent
        self.children = []
        self.payload = {"depth": 0 if parent is None else parent.payload["depth"] + 1}


def tree(depth, parent=None):
    node = Node(parent)
    if depth:
        node.children = [tree(depth - 1, node) for _ in range(3)]
    return node


def work():
    digest = 0
    for _ in range(4):
        ring = [Node() for _ in range(40000)]
        for a, b in zip(ring, ring[1:] + ring[:1]):
            a.parent = b
        del ring
        forest = [tree(6) for _ in range(20)]
        leaf = forest[-1]
        while leaf.children:
            leaf = leaf.children[-1]
        digest += len(forest) + leaf.payload["depth"]
        del forest, leaf
        gc.collect()
    return digest


run(work)
