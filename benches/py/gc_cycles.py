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


def size(node):
    return 1 + sum(size(child) for child in node.children)


def work():
    digest = 0
    for _ in range(4):
        ring = [Node() for _ in range(40000)]
        for a, b in zip(ring, ring[1:] + ring[:1]):
            a.parent = b
        del ring
        forest = [tree(6) for _ in range(20)]
        digest += sum(size(root) for root in forest)
        del forest
        gc.collect()
    return digest


run(work)
