"""objects.py: an object-heavy Python program, run under each allocator.

Builds and throws away many small objects (records as dicts, class
instances linked into trees, tuples, lists), builds strings, keeps a cache
with mixed lifetimes and grows big lists and dicts (whose storage comes
from malloc directly: CPython serves only objects of 512 bytes and less
from its own pools). Prints checksums that must not depend on the
allocator (the runner compares them with the glibc run).

usage: python3 objects.py [SCALE]
"""
import random
import sys


class Node:
    def __init__(self, key, payload):
        self.key = key
        self.payload = payload
        self.children = []

    def weight(self):
        total, stack = 0, [self]
        while stack:
            node = stack.pop()
            total += node.key + len(node.payload)
            stack.extend(node.children)
        return total


def make_tree(rng, size):
    nodes = [Node(0, "root")]
    for i in range(1, size):
        node = Node(i, "n%d-%s" % (i, "x" * rng.randrange(0, 40)))
        nodes[rng.randrange(len(nodes))].children.append(node)
        nodes.append(node)
    return nodes[0]


def records(rng, count):
    out = []
    for i in range(count):
        out.append({
            "id": i,
            "name": "user%05d" % rng.randrange(100000),
            "score": rng.random(),
            "tags": [rng.randrange(50) for _ in range(rng.randrange(1, 12))],
            "pos": (rng.randrange(1000), rng.randrange(1000)),
        })
    return out


def one_round(rng, cache, r):
    h = 0
    recs = records(rng, 12000)
    by_tag = {}
    for rec in recs:
        for tag in rec["tags"]:
            by_tag.setdefault(tag, []).append(rec["id"])
    h += sum(len(v) * k for k, v in by_tag.items())
    recs.sort(key=lambda rec: (rec["name"], rec["id"]))
    h += sum(rec["id"] * (i + 1) for i, rec in enumerate(recs[:1000]))

    tree = make_tree(rng, 8000)
    h += tree.weight()

    parts = []
    for rec in recs[::7]:
        parts.append("%s:%d:%s" % (rec["name"], rec["id"], ",".join(map(str, rec["tags"]))))
    text = ";".join(parts)
    words = text.replace(",", " ").replace(";", " ").replace(":", " ").split()
    h += len(text) + len(words) + sum(len(w) for w in set(words))

    # a cache: entries of mixed lifetimes, old ones evicted
    for i in range(6000):
        key = (r * 6000 + i) % 50000
        cache[key] = [key] * rng.randrange(1, 200)
        if len(cache) > 20000:
            for old in list(cache)[:5000]:
                del cache[old]
    h += sum(len(v) for v in cache.values())

    # a big list and a big dict built and dropped
    big = [(i, str(i)) for i in range(60000)]
    index = {s: i for i, s in big}
    h += sum(index[str(i)] for i in range(0, 60000, 97))
    return h


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    rounds = max(1, int(6 * scale))
    rng = random.Random(20240611)
    cache = {}
    total = 0
    for r in range(rounds):
        h = one_round(rng, cache, r)
        total = (total * 1000003 + h) % (1 << 61)
        print("round %d: %d" % (r, h))
    print("ok rounds=%d checksum=%x" % (rounds, total))


if __name__ == "__main__":
    main()
