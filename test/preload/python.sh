# python.sh: python3 builds and drops big dicts and lists (millions of small
# objects) under carve; its checksums must match a plain run.
. "$(dirname "$0")/common.sh"
need_prog python3
check_preload

cat >"$TMP/churn.py" <<'PY'
import gc
import zlib

def crc(text, value=0):
    return zlib.crc32(text.encode(), value)

total = 0
# Big dicts of strings to tuples, built and dropped several times.
for rnd in range(2):
    d = {}
    for i in range(300000):
        k = "key-%d-%d" % (rnd, (i * 7919) % 1000003)
        d[k] = (i, str(i * rnd), [i] * (i % 5))
    s = 0
    for k in sorted(d):
        v = d[k]
        s = crc(k, s)
        s = crc(v[1], s) ^ len(v[2])
    total = crc("%d:%d:%d" % (rnd, len(d), s), total)
    # Delete most of it piecemeal, then the rest at once.
    for i, k in enumerate(list(d)):
        if i % 3:
            del d[k]
    total = crc(str(len(d)), total)
    del d
    gc.collect()

# Lists of lists and of small objects, grown and sliced.
class Point:
    __slots__ = ("x", "y")
    def __init__(self, x, y):
        self.x = x
        self.y = y

rows = [[j * i % 97 for j in range(20)] for i in range(60000)]
total = crc(str(sum(map(sum, rows))), total)
points = [Point(i, -i) for i in range(600000)]
total = crc(str(sum(p.x + 2 * p.y for p in points[::7])), total)
del points[::2]
points.extend(Point(i, i) for i in range(200000))
total = crc(str(len(points)) + str(sum(p.y for p in points)), total)
del rows, points

# Strings concatenated and split, bytes grown in place.
text = " ".join(str(i * i) for i in range(300000))
words = text.split()
total = crc("%d %d %s" % (len(text), len(words), words[123456]), total)
buf = bytearray()
for i in range(200000):
    buf += b"%d," % i
total = zlib.crc32(bytes(buf), total)

# A set and a dict of frozensets.
st = {i * 2654435761 % 4294967296 for i in range(300000)}
total = crc(str(len(st)) + str(sum(st) % 1000000007), total)
fs = {frozenset((i, i + 1, i % 13)): i for i in range(100000)}
total = crc(str(len(fs)) + str(sum(fs.values())), total)

print("objects churned, checksum %08x" % total)
PY

export PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1
run_both python python3 "$TMP/churn.py"
cat "$TMP/python.carve"
pass
