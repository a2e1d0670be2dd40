"""The workloads: one Workload per benchmark program, in WORKLOADS."""
import hashlib
import os
import sys

from . import BIN, GEN, WORKLOADS_DIR

sys.path.insert(0, WORKLOADS_DIR)
import generate  # noqa: E402  (bench/workloads/generate.py)


class WrongResult(Exception):
    """The program ran to the end but its output is not the expected one."""


def fmt_scale(x):
    return ("%.6f" % x).rstrip("0").rstrip(".")


# ---- workloads -------------------------------------------------------------

class Workload:
    """One benchmark program. kind is 'c' (a program of bench/src), or one
    of the real programs: 'python', 'gcc', 'sqlite'."""

    def __init__(self, name, kind, threaded, quick_scale, binary=None, extra=(), desc="", variants=(),
                 resident=False, quick_extra=None, thread_counts=None):
        self.name, self.kind, self.threaded = name, kind, threaded
        # thread counts run when --threads is not given (default: the CPUs)
        self.thread_counts = list(thread_counts) if thread_counts else None
        self.quick_scale, self.binary, self.extra, self.desc = quick_scale, binary, list(extra), desc
        # the arguments after THREADS SCALE under --quick (default: extra)
        self.quick_extra = self.extra if quick_extra is None else list(quick_extra)
        # carve variants (CARVE_VARIANTS) that also run this workload by default
        self.variants = list(variants)
        # prints "mean_resident_kib=N" (a run without it is a FAIL)
        self.resident = resident

    def prepare(self, scale):
        """Creates the inputs this workload needs at this scale."""
        os.makedirs(GEN, exist_ok=True)
        if self.kind == "gcc":
            path = os.path.join(GEN, "big-%d.c" % self.count(scale))
            if not os.path.exists(path):
                generate.gen_c(path + ".tmp", self.count(scale))
                os.replace(path + ".tmp", path)
        elif self.kind == "sqlite":
            path = os.path.join(GEN, "work-%d.sql" % self.count(scale))
            if not os.path.exists(path):
                generate.gen_sql(path + ".tmp", self.count(scale))
                os.replace(path + ".tmp", path)

    def count(self, scale):
        if self.kind == "gcc":
            return max(10, int(300 * scale))      # functions in the C file
        return max(1000, int(200000 * scale))     # rows for sqlite

    def command(self, threads, scale, tmpdir, quick=False):
        """Returns (argv, stdin path or None)."""
        if self.kind == "c":
            return [os.path.join(BIN, self.binary), str(threads), fmt_scale(scale)] + \
                (self.quick_extra if quick else self.extra), None
        if self.kind == "python":
            return [sys.executable, os.path.join(WORKLOADS_DIR, "objects.py"), fmt_scale(scale)], None
        if self.kind == "gcc":
            src = os.path.join(GEN, "big-%d.c" % self.count(scale))
            return ["gcc", "-O2", "-c", src, "-o", os.path.join(tmpdir, "out.o")], None
        if self.kind == "sqlite":
            return ["sqlite3", ":memory:"], os.path.join(GEN, "work-%d.sql" % self.count(scale))
        raise ValueError(self.kind)

    def result(self, stdout, tmpdir):
        """The part of the output that must be the same under every allocator."""
        text = stdout.decode("utf-8", "replace")
        if self.kind == "c":
            oks = [line for line in text.splitlines() if line.startswith("ok")]
            if not oks:
                raise WrongResult("no 'ok' line in the output")
            return oks[-1]
        if self.kind == "gcc":
            obj = os.path.join(tmpdir, "out.o")
            if not os.path.exists(obj):
                raise WrongResult("gcc wrote no object file")
            with open(obj, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            os.unlink(obj)
            return "object sha256 " + digest
        if self.kind == "python" and "ok rounds=" not in text:
            raise WrongResult("no 'ok' line in the output")
        if len(text) <= 8192:
            return text
        return "%d lines, sha256 %s" % (text.count("\n"), hashlib.sha256(stdout).hexdigest())


WORKLOADS = [
    Workload("fastpath", "c", False, 0.1, "fastpath", ["all"],
             "single thread: malloc/free pairs of 16..128 bytes, then allocate-many-then-free-all"),
    Workload("larson", "c", True, 0.05, "larson", [],
             "T threads replace random slots of a shared array (16..1024 B): cross-thread frees"),
    Workload("larson_server", "c", True, 0.05, "larson_server", [],
             "the public Larson server benchmark's shape: main allocates the blocks, workers replace "
             "their slots and hand them to a successor thread every 500k operations", thread_counts=[2, 4]),
    Workload("larson_sized", "c", True, 0.05, "larson_sized", [],
             "larson_server in C++: new char[] and sized operator delete[]", thread_counts=[2, 4]),
    Workload("slot_exchange", "c", True, 0.05, "slot_exchange", [],
             "T threads swap blocks of 16..1016 B through a shared array of slots (about (T-1)/T "
             "of the frees remote)", thread_counts=[2, 4]),
    Workload("xmalloc", "c", True, 0.05, "xmalloc", [],
             "producers allocate, consumers free, through a locked ring (max(2,T) threads)"),
    Workload("cache_scratch", "c", True, 0.1, "cache", ["scratch"],
             "passive false sharing: objects from the main thread freed by workers, then reused"),
    Workload("cache_thrash", "c", True, 0.1, "cache", ["thrash"],
             "active false sharing: each thread writes its own small objects in a tight loop"),
    Workload("random_sizes", "c", True, 0.05, "random_sizes", [],
             "power-law sizes up to 64 KiB, mixed lifetimes, T threads"),
    Workload("realloc_growth", "c", True, 0.1, "realloc_growth", [],
             "string builders and vectors grown by realloc, contents checked, T threads"),
    Workload("large", "c", True, 0.05, "large", [],
             "blocks of 64 KiB..32 MiB allocated, memset and freed, T threads"),
    Workload("fragmentation", "c", False, 0.1, "fragmentation", [],
             "256 MiB of small blocks, 90% freed at random, then 100 MiB of other sizes"),
    Workload("big_heap", "c", False, 0.05, "big_heap", [],
             "1 GiB of 3.5..4 KiB blocks, then runs of 256 blocks freed and replaced at random"),
    Workload("phases", "c", False, 0.03, "phases", [],
             "grow to 1 GiB of small blocks, free 90% in long runs, pause 300 ms, regrow (3 rounds); "
             "mean resident memory", variants=["carve-free", "carve-dontneed"], resident=True,
             quick_extra=["2"]),
    Workload("purge", "c", False, 0.03, "purge", [],
             "free 1 GiB of small blocks, then one 512 MiB block: RSS and LazyFree after 300 ms "
             "and one more malloc", variants=["carve-free", "carve-dontneed"], resident=True),
    Workload("visible_rss", "c", False, 0.03, "visible_rss", [],
             "free 1 GiB of 16..1024 B blocks, then a little malloc/free every 50 ms (busy) or "
             "none (idle): RSS as top shows it over 5 s", variants=["carve-free"], resident=True,
             quick_extra=["1000"]),
    Workload("python", "python", False, 0.17, desc="python3 running bench/workloads/objects.py"),
    Workload("gcc", "gcc", False, 0.1, desc="gcc -O2 -c on a generated C file"),
    Workload("sqlite", "sqlite", False, 0.1, desc="sqlite3 :memory: on a generated SQL script"),
]
