#!/usr/bin/env python3
"""runner.py: the benchmark runner behind bench/run (see bench/README.md).

bench/run installs what is missing and builds carve, then runs this file,
which compiles the workloads, finds the allocators, runs every workload
under every allocator through LD_PRELOAD (interleaved, several times),
checks the results, and writes the table, the CSV and the chart. With
--callgrind it counts instructions per malloc/free pair instead.
"""
import argparse
import csv
import datetime
import glob
import hashlib
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
SRC = os.path.join(BENCH, "src")
BIN = os.path.join(BENCH, "bin")
GEN = os.path.join(BIN, "gen")
WORKLOADS_DIR = os.path.join(BENCH, "workloads")
SPAWN = os.path.join(BIN, "spawn")

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
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


# ---- allocators ------------------------------------------------------------

class Allocator:
    """A library to preload (None: glibc, nothing preloaded). carve_options,
    for a carve variant, is appended to CARVE_OPTIONS. A variant with
    everywhere=False runs only the workloads that name it in their
    `variants` (phases, purge); the others leave its cells empty."""

    def __init__(self, name, lib, note="", carve_options=None, everywhere=True):
        self.name, self.lib, self.note = name, lib, note
        self.carve_options, self.everywhere = carve_options, everywhere

    def runs(self, workload):
        return self.everywhere or self.name in workload.variants

    def is_carve(self):
        return self.name == "carve" or self.carve_options is not None

    def env(self):
        """The environment of bin/spawn, which sets LD_PRELOAD itself for
        the program it runs."""
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env["PYTHONHASHSEED"] = "0"
        env["LC_ALL"] = "C"
        if self.carve_options:
            # after the user's CARVE_OPTIONS: the later value of a key wins
            user = env.get("CARVE_OPTIONS", "").strip(",")
            env["CARVE_OPTIONS"] = user + "," + self.carve_options if user else self.carve_options
        return env

    def provides_malloc(self, reported):
        """Is `reported` (the file that provides malloc, as a workload sees
        it) this allocator's library?"""
        if self.lib is None:
            return os.path.basename(reported).startswith("libc.so")
        return os.path.realpath(reported) == os.path.realpath(self.lib)


PEERS = [("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
         ("mimalloc", "libmimalloc.so.2", "libmimalloc2.0"),
         ("tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4")]

# carve with options: columns of their own, next to carve's. By default they
# run only the workloads that list them (Workload.variants); named in
# --allocators, they run every workload. --allocators also takes
# carve:KEY=VALUE[+KEY=VALUE...], a '+' for each comma of CARVE_OPTIONS
# (carve:decay_ms=0+purge=dontneed is CARVE_OPTIONS=decay_ms=0,purge=dontneed).
CARVE_VARIANTS = [("carve-free", "purge=free"),
                  ("carve-dontneed", "purge=dontneed"),
                  ("carve-bg", "background=1")]
ALLOCATOR_NAMES = ["carve"] + [n for n, _ in CARVE_VARIANTS] + ["glibc"] + [n for n, _, _ in PEERS]


def find_library(soname):
    """The path of a shared library, from the ldconfig cache, or else the
    multiarch directories."""
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
    out = ""
    if ldconfig:
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
        except OSError:
            pass
    for line in out.splitlines():
        parts = line.strip().split(" => ")
        if len(parts) == 2 and parts[0].split(" ")[0] == soname and os.path.exists(parts[1]):
            return parts[1]
    dirs = []
    try:
        triplet = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
        if triplet:
            dirs += ["/usr/lib/" + triplet, "/lib/" + triplet]
    except OSError:
        pass
    dirs += sorted(glob.glob("/usr/lib/*-linux-gnu*")) + ["/usr/lib", "/usr/lib64", "/lib64"]
    for d in dirs:
        path = os.path.join(d, soname)
        if os.path.exists(path):
            return path
    return None


def package_version(path):
    """'pkg version' of the Debian package that owns path, or ''."""
    try:
        real = os.path.realpath(path)
        owner = subprocess.run(["dpkg-query", "-S", real], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True)
        pkg = owner.stdout.split(":")[0].strip() if owner.returncode == 0 else ""
        if not pkg:
            return ""
        ver = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
        return "%s %s" % (pkg, ver.stdout.strip())
    except OSError:
        return ""


def carve_option_spec(name):
    """The CARVE_OPTIONS of a carve variant name, or None if it is none."""
    for n, opts in CARVE_VARIANTS:
        if name == n:
            return opts
    if name.startswith("carve:") and len(name) > len("carve:"):
        return name[len("carve:"):].replace("+", ",")
    return None


def find_allocators(wanted, workloads):
    """The columns: carve, its variants, glibc, the peers. wanted is the
    --allocators list, or None for the default set (with the variants that
    the selected workloads ask for)."""
    carve_lib = os.environ.get("CARVE_LIB") or os.path.join(REPO, ".libs", "libcarve.so")
    if not os.path.exists(carve_lib):
        sys.exit("bench: carve's library %s does not exist.\n"
                 "       Build it (bench/run without --no-build), or point CARVE_LIB at it." % carve_lib)
    carve_lib = os.path.abspath(carve_lib)
    note = "CARVE_LIB" if os.environ.get("CARVE_LIB") else "built here"
    allocs = [Allocator("carve", carve_lib, note)]
    # another build of carve (e.g. main before a change), in the same
    # interleaved runs: CARVE_BASELINE_LIB=path/to/libcarve.so
    base_lib = os.environ.get("CARVE_BASELINE_LIB")
    if base_lib:
        if not os.path.exists(base_lib):
            sys.exit("bench: CARVE_BASELINE_LIB=%s does not exist" % base_lib)
        allocs.append(Allocator("carve-base", os.path.abspath(base_lib), "CARVE_BASELINE_LIB"))
    if wanted is None:
        for name, opts in CARVE_VARIANTS:
            users = [w.name for w in workloads if name in w.variants]
            if users:
                allocs.append(Allocator(name, carve_lib, "CARVE_OPTIONS=%s; %s only" % (opts, ", ".join(users)),
                                        carve_options=opts, everywhere=False))
    else:
        for name in wanted:
            opts = carve_option_spec(name)
            if opts is not None and name not in [a.name for a in allocs]:
                allocs.append(Allocator(name, carve_lib, "CARVE_OPTIONS=" + opts, carve_options=opts))
    if wanted is None or "glibc" in wanted:
        allocs.append(Allocator("glibc", None, "the C library's malloc, nothing preloaded"))
    for name, soname, pkg in PEERS:
        if wanted is not None and name not in wanted:
            continue
        path = find_library(soname)
        if path is None:
            print("bench: %s skipped: %s not found (Debian package %s)" % (name, soname, pkg), file=sys.stderr)
            continue
        allocs.append(Allocator(name, path, package_version(path)))
    return allocs


# ---- running one program ---------------------------------------------------

current_pgid = None


class RunResult:
    """One run. resident_kib: the program's own "mean_resident_kib=" (mean
    of Rss - LazyFree: phases, purge, visible_rss), else None; visible_kib:
    its "mean_rss_kib=" (the same of Rss as top shows it, LazyFree
    included); points: its "mem POINT rss_kib=N lazyfree_kib=M" lines, as
    [(point, rss, lazyfree)]."""

    def __init__(self, time_s, rss_kib, ok, why="", result=None, resident_kib=None, points=(),
                 visible_kib=None):
        self.time_s, self.rss_kib, self.ok, self.why, self.result = time_s, rss_kib, ok, why, result
        self.resident_kib, self.points, self.visible_kib = resident_kib, list(points), visible_kib


RESIDENT_RE = re.compile(r"^mean_resident_kib=(\d+)", re.M)
VISIBLE_RE = re.compile(r"\bmean_rss_kib=(\d+)", re.M)
POINT_RE = re.compile(r"^mem (\S+) rss_kib=(-?\d+) lazyfree_kib=(-?\d+)\s*$", re.M)


def memory_report(stdout):
    """(mean resident KiB or None, [(point, rss KiB, LazyFree KiB)], mean
    visible RSS KiB or None) from a workload's output."""
    text = stdout.decode("utf-8", "replace")
    m = RESIDENT_RE.search(text)
    v = VISIBLE_RE.search(text)
    points = [(p, int(r), int(z)) for p, r, z in POINT_RE.findall(text)]
    return (int(m.group(1)) if m else None), points, (int(v.group(1)) if v else None)


def run_program(argv, alloc, stdin_path, timeout):
    """Runs argv with alloc's library preloaded, through bin/spawn (which
    measures it: see bench/tools/spawn.c). Returns (wall seconds, peak RSS
    KiB, wait status, timed out?, stdout bytes, stderr bytes); wall and
    status are None when the helper reported nothing."""
    global current_pgid
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(prefix="carve-bench-", suffix=".report") as report:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        timed_out = threading.Event()
        try:
            proc = subprocess.Popen([SPAWN, report.name, alloc.lib or "-"] + argv, stdin=stdin,
                                    stdout=out, stderr=err, env=alloc.env(), start_new_session=True)
            current_pgid = proc.pid

            def kill():
                timed_out.set()
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                proc.wait()
            finally:
                timer.cancel()
                current_pgid = None
        finally:
            if stdin_path:
                stdin.close()
        out.seek(0)
        err.seek(0)
        fields = report.read().decode().split()
        wall, rss, status = (float(fields[0]), int(fields[1]), int(fields[2])) if len(fields) == 3 \
            else (None, None, None)
        return wall, rss, status, timed_out.is_set(), out.read(), err.read()


def last_line(data):
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines()
             if ln.strip() and not ln.startswith("malloc-from: ")]
    return lines[-1].strip()[:200] if lines else ""


def run_workload(w, alloc, threads, scale, timeout, tmpdir, quick=False):
    argv, stdin_path = w.command(threads, scale, tmpdir, quick)
    try:
        wall, rss, status, timed_out, out, err = run_program(argv, alloc, stdin_path, timeout)
    except OSError as e:
        return RunResult(None, None, False, "cannot run %s: %s" % (argv[0], e))
    if timed_out:
        return RunResult(None, None, False, "timeout after %ds" % timeout)
    if status is None:
        return RunResult(None, None, False, "bin/spawn reported nothing: %s" % last_line(err))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signame = signal.Signals(sig).name
        except ValueError:
            signame = "signal %d" % sig
        return RunResult(wall, rss, False, "crashed (%s) %s" % (signame, last_line(err)))
    code = os.WEXITSTATUS(status)
    if code != 0:
        return RunResult(wall, rss, False, "exit status %d: %s" % (code, last_line(err)))
    if w.kind == "c":
        reported = [ln[len("malloc-from: "):] for ln in err.decode("utf-8", "replace").splitlines()
                    if ln.startswith("malloc-from: ")]
        if not reported or not alloc.provides_malloc(reported[0]):
            return RunResult(wall, rss, False, "malloc not from %s (LD_PRELOAD not effective?): %s"
                             % (alloc.lib or "libc", reported[0] if reported else "not reported"))
    try:
        result = w.result(out, tmpdir)
    except WrongResult as e:
        return RunResult(wall, rss, False, "wrong result: %s" % e)
    resident, points, visible = memory_report(out) if w.kind == "c" else (None, [], None)
    if w.resident and resident is None:
        return RunResult(wall, rss, False, "wrong result: no 'mean_resident_kib=' line in the output")
    return RunResult(wall, rss, True, result=result, resident_kib=resident, points=points,
                     visible_kib=visible)


# ---- progress --------------------------------------------------------------

class Progress:
    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.time()
        self.tty = sys.stderr.isatty()

    def elapsed(self):
        s = int(time.time() - self.start)
        return "%d:%02d" % (s // 60, s % 60)

    def begin(self, text):
        if self.tty:
            line = "[%3d/%d %s] %s" % (self.done + 1, self.total, self.elapsed(), text)
            sys.stderr.write("\r\x1b[K" + line[:max(20, shutil.get_terminal_size().columns - 1)])
            sys.stderr.flush()

    def end(self, text, outcome):
        self.done += 1
        if not self.tty:
            sys.stderr.write("[%3d/%d %s] %s: %s\n" % (self.done, self.total, self.elapsed(), text, outcome))
            sys.stderr.flush()

    def note(self, text):
        """A line that stays (a workload finished)."""
        if self.tty:
            sys.stderr.write("\r\x1b[K")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self):
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


# ---- the suite -------------------------------------------------------------

class Cell:
    """All runs of one workload, thread count and allocator."""

    def __init__(self):
        self.runs = []

    def good(self):
        return [r for r in self.runs if r.ok]

    def failures(self):
        return [r for r in self.runs if not r.ok]

    def median_time(self):
        g = self.good()
        return statistics.median(r.time_s for r in g) if g else None

    def median_rss(self):
        g = self.good()
        return statistics.median(r.rss_kib for r in g) if g else None

    def median_resident(self):
        """Median of the runs' mean resident memory (KiB), when they report it."""
        vals = [r.resident_kib for r in self.good() if r.resident_kib is not None]
        return statistics.median(vals) if vals else None

    def median_visible(self):
        """Median of the runs' mean RSS as top shows it (KiB), when they report it."""
        vals = [r.visible_kib for r in self.good() if r.visible_kib is not None]
        return statistics.median(vals) if vals else None

    def median_points(self):
        """[(point, median Rss KiB, median LazyFree KiB)] in the program's order."""
        order, vals = [], {}
        for r in self.good():
            for p, rss, lazy in r.points:
                if p not in vals:
                    order.append(p)
                    vals[p] = []
                vals[p].append((rss, lazy))
        return [(p, statistics.median(v[0] for v in vals[p]), statistics.median(v[1] for v in vals[p]))
                for p in order]


def first_difference(got, want):
    got_lines, want_lines = got.splitlines(), want.splitlines()
    for i in range(max(len(got_lines), len(want_lines))):
        g = got_lines[i] if i < len(got_lines) else "(end of output)"
        w = want_lines[i] if i < len(want_lines) else "(end of output)"
        if g != w:
            return "line %d is %r, under glibc %r" % (i + 1, g[:100], w[:100])
    return "output differs from glibc's"


def check_results(cells, allocs, reference):
    """Marks runs whose result differs from the reference (glibc's)."""
    for a in allocs:
        for r in cells[a.name].runs:
            if r.ok and reference is not None and r.result != reference:
                r.ok = False
                r.why = "wrong result: " + first_difference(r.result, reference)


def run_suite(args, workloads, allocs, thread_list, outdir):
    groups = []
    for w in workloads:
        mine = w.thread_counts if w.thread_counts and not args.threads else thread_list
        for t in (mine if w.threaded else [1]):
            groups.append((w, t))
    total = sum(len([a for a in allocs if a.runs(w)]) * args.runs for w, _ in groups)
    progress = Progress(total)
    glibc = next((a for a in allocs if a.name == "glibc"), None)
    table = {}
    tmpdir = tempfile.mkdtemp(prefix="carve-bench-")
    try:
        for w, t in groups:
            scale = (w.quick_scale if args.quick else 1.0) * args.scale
            w.prepare(scale)
            here = [a for a in allocs if a.runs(w)]
            cells = {a.name: Cell() for a in here}
            reference = None
            if glibc is None:  # the reference output still comes from glibc
                progress.note("%s: reference run under glibc" % w.name)
                ref = run_workload(w, Allocator("glibc", None), t, scale, args.timeout, tmpdir, args.quick)
                reference = ref.result if ref.ok else None
            for run in range(args.runs):
                for a in here:
                    label = "%s t=%d %s run %d/%d" % (w.name, t, a.name, run + 1, args.runs)
                    progress.begin(label)
                    r = run_workload(w, a, t, scale, args.timeout, tmpdir, args.quick)
                    cells[a.name].runs.append(r)
                    progress.end(label, ("%.3fs %dMiB%s" % (r.time_s, r.rss_kib // 1024,
                                                             "" if r.resident_kib is None else
                                                             " resident %dMiB" % (r.resident_kib // 1024)))
                                 if r.ok else "FAIL " + r.why)
            if glibc is not None:
                glibc_results = {r.result for r in cells["glibc"].good()}
                if len(glibc_results) > 1:
                    for r in cells["glibc"].good():
                        r.ok, r.why = False, "results differ between glibc runs (workload not deterministic)"
                elif glibc_results:
                    reference = glibc_results.pop()
            check_results(cells, here, reference)
            table[(w.name, t)] = cells
            progress.note(summary_line(w.name, t, here, cells))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        progress.close()
    return groups, table


def summary_line(name, threads, allocs, cells):
    parts = []
    for a in allocs:
        c = cells[a.name]
        if c.failures():
            parts.append("%s FAIL" % a.name)
        else:
            parts.append("%s %.3fs" % (a.name, c.median_time()))
    return "%-15s t=%-3d %s" % (name, threads, "  ".join(parts))


# ---- reporting -------------------------------------------------------------

def ratio(other, carve):
    if other is None or carve is None or carve <= 0:
        return None
    return other / carve


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def cell_text(cell, value, carve_value, unit_fmt, is_carve):
    if cell is None:
        return "-"  # this allocator does not run this workload
    fails = cell.failures()
    if fails:
        return "FAIL %d/%d" % (len(fails), len(cell.runs))
    if value is None:
        return "-"
    text = unit_fmt % value
    if not is_carve:
        r = ratio(value, carve_value)
        text += " (%s)" % ("%.2f" % r if r is not None else "-")
    return text


def mib(kib):
    return None if kib is None else kib / 1024.0


def render_table(groups, table, allocs, args, header_lines):
    lines = list(header_lines)
    width = max(16, max(len(w.name) for w, _ in groups) + 1)
    colw = [max(14, len(a.name) + 2) for a in allocs]

    def widths(rows):
        """Column widths: at least colw, and one space more than the widest cell."""
        return [max([colw[i]] + [len(r[i]) + 1 for r in rows]) for i in range(len(allocs))]

    def section(title, metric, unit_fmt, explain, rows):
        lines.append("")
        lines.append(title)
        lines.extend(explain)
        ratios = {a.name: [] for a in allocs}
        texts = []
        for w, t in rows:
            cells = table[(w.name, t)]
            carve_cell = cells["carve"]
            carve_value = metric(carve_cell) if not carve_cell.failures() else None
            row = []
            for a in allocs:
                c = cells.get(a.name)
                value = metric(c) if c is not None and not c.failures() else None
                row.append(cell_text(c, value, carve_value, unit_fmt, a.name == "carve"))
                if value is not None:
                    ratios[a.name].append(ratio(value, carve_value))
            texts.append(row)
        means = []
        for a in allocs:
            g = geomean(ratios[a.name]) if a.name != "carve" else None
            means.append(("(%.2f)" % g) if g is not None else "")
        cw = widths(texts + [means])
        head = "%-*s %7s " % (width, "workload", "threads")
        head += "".join("%*s" % (cw[i], a.name) for i, a in enumerate(allocs))
        lines.append(head)
        lines.append("-" * len(head))
        for (w, t), row in zip(rows, texts):
            lines.append("%-*s %7d " % (width, w.name, t) + "".join("%*s" % (cw[i], x) for i, x in enumerate(row)))
        lines.append("-" * len(head))
        lines.append("%-*s %7s " % (width, "geometric mean", "") +
                     "".join("%*s" % (cw[i], x) for i, x in enumerate(means)))

    section("Wall time: median of %d runs, seconds" % args.runs,
            lambda c: c.median_time(), "%.3f",
            ["(ratio) = other / carve: > 1 means carve is faster, < 1 means carve is slower"], groups)
    section("Peak RSS: median of %d runs, MiB" % args.runs,
            lambda c: mib(c.median_rss()), "%.1f",
            ["(ratio) = other / carve: > 1 means carve uses less memory, < 1 means more"], groups)
    resident_rows = [(w, t) for w, t in groups
                     if any(c.median_resident() is not None for c in table[(w.name, t)].values())]
    if resident_rows:
        section("Mean resident memory (RSS minus LazyFree): median of %d runs, MiB" % args.runs,
                lambda c: mib(c.median_resident()), "%.1f",
                ["phases: time average over the run, sampled every 50 ms (less often when a read of",
                 "smaps_rollup is slow); purge: after the 300 ms wait and one more 1 MiB malloc/free,",
                 "mean of its two parts. LazyFree (MADV_FREE'd, not yet taken by the kernel) is left",
                 "out: the kernel takes it back, without writing it anywhere, whenever it needs memory.",
                 "(ratio) = other / carve: > 1 means carve holds less memory, < 1 means more"],
                resident_rows)
    visible_rows = [(w, t) for w, t in groups
                    if any(c.median_visible() is not None for c in table[(w.name, t)].values())]
    if visible_rows:
        section("Mean RSS as top and ps show it (LazyFree included): median of %d runs, MiB"
                % args.runs, lambda c: mib(c.median_visible()), "%.1f",
                ["the same times as the table above, with what was given back with MADV_FREE and",
                 "not yet taken by the kernel counted: what monitoring and OOM scripts read.",
                 "visible_rss: Rss 2 s after the frees (busy) and 5 s after (idle), mean of the two.",
                 "(ratio) = other / carve: > 1 means carve shows less memory, < 1 means more"],
                visible_rows)

    for w, t in groups:
        cells = table[(w.name, t)]
        per_alloc = {a.name: cells[a.name].median_points() for a in allocs if a.name in cells}
        order = []
        for pts in per_alloc.values():
            for p, _, _ in pts:
                if p not in order:
                    order.append(p)
        if not order:
            continue
        lines.append("")
        lines.append("%s%s: Rss / LazyFree at each point, MiB (median of %d runs)"
                     % (w.name, " t=%d" % t if w.threaded else "", args.runs))
        lines.append("Rss - LazyFree is what the process really holds (see the README)")
        pw = max(14, max(len(p) for p in order) + 1)
        texts = []
        for p in order:
            row = []
            for i, a in enumerate(allocs):
                c = cells.get(a.name)
                got = [(r, z) for q, r, z in per_alloc.get(a.name, []) if q == p]
                if c is None:
                    text = "-"
                elif c.failures():
                    text = "FAIL %d/%d" % (len(c.failures()), len(c.runs))
                elif not got:
                    text = "-"
                else:
                    text = "%.0f / %.0f" % (got[0][0] / 1024.0, got[0][1] / 1024.0)
                row.append(text)
            texts.append(row)
        cw = widths(texts)
        head = "%-*s" % (pw, "point") + "".join("%*s" % (cw[i], a.name) for i, a in enumerate(allocs))
        lines.append(head)
        lines.append("-" * len(head))
        for p, row in zip(order, texts):
            lines.append("%-*s" % (pw, p) + "".join("%*s" % (cw[i], x) for i, x in enumerate(row)))

    failed = [(w, t, a, c) for w, t in groups for a in allocs
              for c in [table[(w.name, t)].get(a.name)] if c is not None and c.failures()]
    if failed:
        lines.append("")
        lines.append("Failures (FAIL k/n: k of the n runs crashed, timed out or gave a wrong result):")
        for w, t, a, c in failed:
            lines.append("  %s t=%d %s: %d/%d, first: %s" % (w.name, t, a.name, len(c.failures()),
                                                             len(c.runs), c.failures()[0].why))
    return "\n".join(lines) + "\n"


def write_csv(path, groups, table, allocs):
    """results.csv: one row per workload, thread count and allocator that
    ran it; median_mean_resident_kib only for the workloads that report it."""
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["workload", "allocator", "threads", "median_time_s", "median_peak_rss_kib",
                      "runs", "failures", "median_mean_resident_kib", "median_mean_rss_kib"])
        for w, t in groups:
            for a in allocs:
                c = table[(w.name, t)].get(a.name)
                if c is None:
                    continue
                mt, mr, mres = c.median_time(), c.median_rss(), c.median_resident()
                mvis = c.median_visible()
                out.writerow([w.name, a.name, t, "" if mt is None else "%.4f" % mt,
                              "" if mr is None else "%d" % mr, len(c.runs), len(c.failures()),
                              "" if mres is None else "%d" % mres,
                              "" if mvis is None else "%d" % mvis])


def write_runs_csv(path, groups, table, allocs):
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["workload", "allocator", "threads", "run", "time_s", "peak_rss_kib", "ok", "why",
                      "mean_resident_kib"])
        for w, t in groups:
            for a in allocs:
                c = table[(w.name, t)].get(a.name)
                for i, r in enumerate(c.runs if c is not None else []):
                    out.writerow([w.name, a.name, t, i + 1,
                                  "" if r.time_s is None else "%.4f" % r.time_s,
                                  "" if r.rss_kib is None else r.rss_kib, int(r.ok), r.why,
                                  "" if r.resident_kib is None else r.resident_kib])


def write_points_csv(path, groups, table, allocs):
    """points.csv: every run's "mem POINT" lines (purge), when there are any.
    Returns whether it wrote the file."""
    rows = []
    for w, t in groups:
        for a in allocs:
            c = table[(w.name, t)].get(a.name)
            for i, r in enumerate(c.runs if c is not None else []):
                for p, rss, lazy in r.points:
                    rows.append([w.name, a.name, t, i + 1, p, rss, lazy, rss - lazy])
    if not rows:
        return False
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["workload", "allocator", "threads", "run", "point", "rss_kib", "lazyfree_kib",
                      "resident_kib"])
        out.writerows(rows)
    return True


COLORS = {"glibc": "#4477aa", "jemalloc": "#ee6677", "mimalloc": "#228833", "tcmalloc": "#ccbb44",
          "carve-dontneed": "#777777", "carve-bg": "#bbbbbb", "carve-free": "#999999"}


def write_chart(outdir, groups, table, allocs):
    """chart.png: two panels (time ratio, RSS ratio), and a third (mean
    resident ratio) when a workload reports it; one group of bars per
    workload, one bar per allocator, relative to carve (the line at 1)."""
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        return "gnuplot not found: no chart (apt-get install gnuplot-nox)"
    others = [a for a in allocs if a.name != "carve"]
    if not others:
        return "no allocator besides carve: no chart"
    metrics = [lambda c: c.median_time(), lambda c: c.median_rss()]
    has_resident = any(c.median_resident() is not None for w, t in groups for c in table[(w.name, t)].values())
    if has_resident:
        metrics.append(lambda c: c.median_resident())
    nm = len(metrics)
    labels, rows, fails = [], [], []
    for x, (w, t) in enumerate(groups):
        cells = table[(w.name, t)]
        carve = cells["carve"]
        labels.append(w.name if not w.threaded else "%s (%dT)" % (w.name, t))
        row = [str(x)]
        if carve.failures():
            fails.append((x, None, "carve FAIL"))
        for j, a in enumerate(others):
            c = cells.get(a.name)
            if c is None or carve.failures() or c.failures():
                row += ["NaN"] * nm
                if c is not None and c.failures() and not carve.failures():
                    fails.append((x, j, "FAIL"))
            else:
                for m in metrics:
                    r = ratio(m(c), m(carve))
                    row.append("NaN" if r is None else "%.5f" % r)
        rows.append(row)
    # the geometric means, as a last group
    x = len(groups)
    labels.append("geometric mean")
    row = [str(x)]
    for a in others:
        for m in metrics:
            rs = []
            for w, t in groups:
                cells = table[(w.name, t)]
                c = cells.get(a.name)
                if c is not None and not cells["carve"].failures() and not c.failures():
                    rs.append(ratio(m(c), m(cells["carve"])))
            g = geomean(rs)
            row.append("NaN" if g is None else "%.5f" % g)
    rows.append(row)

    dat = os.path.join(outdir, "chart.dat")
    names = ["time", "rss", "resident"][:nm]
    with open(dat, "w") as fh:
        fh.write("# x " + " ".join("%s_%s" % (a.name, k) for a in others for k in names) + "\n")
        for row in rows:
            fh.write(" ".join(row) + "\n")
    n = len(others)
    width = 0.8 / n
    xtics = ", ".join('"%s" %d' % (lab.replace('"', "'"), i) for i, lab in enumerate(labels))
    gp = ["set terminal pngcairo size 1500,%d font 'sans,10'" % (1000 if nm == 2 else 1400),
          "set output '%s'" % os.path.join(outdir, "chart.png"),
          "set datafile missing 'NaN'",
          "set termoption noenhanced",
          "set style fill solid 0.85 border -1",
          "set arrow from %f, graph 0 to %f, graph 1 nohead dashtype 2" % (len(groups) - 0.5, len(groups) - 0.5),
          "set logscale y 2",
          "set format y '%g'",
          "set grid ytics",
          "set key outside right top",
          "set xtics (%s) rotate by -30" % xtics,
          "set xrange [-0.6:%f]" % (len(labels) - 0.4),
          "set bmargin 6",
          "set multiplot layout %d,1 title 'carve against other allocators: ratio other / carve "
          "(log scale; the line at 1 is carve)'" % nm]
    for x_, j, text in fails:
        pos = x_ if j is None else x_ + (j - (n - 1) / 2.0) * width
        gp.append("set label '%s' at %f, first 1 center rotate by 90 front textcolor rgb 'red' font ',8'"
                  % (text, pos))

    def plot(k, title, ylabel):
        gp.append("set title '%s'" % title)
        gp.append("set ylabel '%s'" % ylabel)
        parts = []
        for j, a in enumerate(others):
            off = (j - (n - 1) / 2.0) * width
            col = 2 + nm * j + k
            color = " lc rgb '%s'" % COLORS[a.name] if a.name in COLORS else ""
            parts.append("'%s' using ($1+%f):(1):($1+%f):($1+%f):(1):(column(%d)) with boxxyerror title '%s'%s"
                         % (dat, off, off - width / 2, off + width / 2, col, a.name, color))
        parts.append("1 with lines lw 2 lc rgb 'black' title 'carve'")
        gp.append("plot " + ", \\\n     ".join(parts))

    plot(0, "wall time, other / carve  (> 1: carve is faster)", "time ratio")
    plot(1, "peak RSS, other / carve  (> 1: carve uses less memory)", "RSS ratio")
    if has_resident:
        plot(2, "mean resident memory (RSS - LazyFree), other / carve  (> 1: carve holds less; "
             "phases, purge, visible_rss)", "resident ratio")
    gp.append("unset multiplot")
    script = os.path.join(outdir, "chart.gp")
    with open(script, "w") as fh:
        fh.write("\n".join(gp) + "\n")
    res = subprocess.run([gnuplot, script], capture_output=True, text=True)
    if res.returncode != 0 or not os.path.exists(os.path.join(outdir, "chart.png")):
        return "gnuplot failed: %s" % (res.stderr.strip().splitlines() or ["?"])[-1]
    return None


def make_outdir():
    root = os.path.join(REPO, "results")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = os.path.join(root, stamp)
    n = 1
    while os.path.exists(outdir):
        n += 1
        outdir = os.path.join(root, "%s-%d" % (stamp, n))
    os.makedirs(outdir)
    return outdir


def point_latest(outdir):
    """results/latest -> this run (once it is complete)."""
    link = os.path.join(os.path.dirname(outdir), "latest")
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.basename(outdir), tmp)
    os.replace(tmp, link)


def machine_lines(allocs, thread_list, args):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines = ["carve benchmark, %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
             "machine: %d CPUs (%s), %s" % (len(os.sched_getaffinity(0)), cpu or "?", os.uname().release),
             "runs: %d per cell, interleaved; threads: %s; scale: %s%s"
             % (args.runs, ",".join(map(str, thread_list)), fmt_scale(args.scale),
                " (--quick: small scales)" if args.quick else "")]
    namew = max([9] + [len(a.name) for a in allocs])
    for a in allocs:
        lines.append("  %-*s %s%s" % (namew, a.name, a.lib or "(no LD_PRELOAD)",
                                      "  [%s]" % a.note if a.note else ""))
    return lines


# ---- callgrind -------------------------------------------------------------

def callgrind_ir(path):
    with open(path) as fh:
        for line in fh:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise ValueError("no totals in " + path)


def run_callgrind(args, allocs, outdir):
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("bench: valgrind not found (apt-get install valgrind)")
    n = args.pairs or (100000 if args.quick else 1000000)
    binary = os.path.join(BIN, "fastpath")
    progress = Progress(2 * len(allocs))
    rows = []
    for a in allocs:
        irs, why = [], ""
        for count in (n, 2 * n):
            label = "callgrind %s, %d pairs" % (a.name, count)
            progress.begin(label)
            out_file = os.path.join(outdir, "callgrind.%s.%d.out" % (a.name, count))
            argv = [valgrind, "--tool=callgrind", "--trace-children=no",
                    "--callgrind-out-file=" + out_file, binary, "1", "1", "pairs", str(count)]
            wall, rss, status, timed_out, out, err = run_program(argv, a, None, args.timeout)
            errtext = err.decode("utf-8", "replace")
            reported = [ln[len("malloc-from: "):] for ln in errtext.splitlines() if ln.startswith("malloc-from: ")]
            if timed_out:
                why = "timeout after %ds" % args.timeout
            elif status is None or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                why = "valgrind failed (status %d): %s" % (status, last_line(err))
            elif not reported or not a.provides_malloc(reported[0]):
                why = "malloc not from %s under valgrind: %s" % (a.lib or "libc",
                                                                  reported[0] if reported else "not reported")
            elif ("ok pairs=%d " % count) not in out.decode("utf-8", "replace"):
                why = "wrong result: %s" % last_line(out)
            else:
                try:
                    irs.append(callgrind_ir(out_file))
                except (OSError, ValueError) as e:
                    why = str(e)
            progress.end(label, why or "Ir %d" % irs[-1])
            if why:
                break
        per_pair = (irs[1] - irs[0]) / n if len(irs) == 2 else None
        rows.append((a, irs, per_pair, why))
    progress.close()
    carve = rows[0][2]
    lines = ["Instructions per malloc/free pair (fastpath pairs mode under callgrind)",
             "= (Ir(2N) - Ir(N)) / N with N = %d, which cancels start-up costs;" % n,
             "ratio = other / carve: > 1 means carve executes fewer instructions",
             "",
             "%-10s %14s %14s %12s %8s" % ("allocator", "Ir(N)", "Ir(2N)", "instr/pair", "ratio"),
             "-" * 62]
    for a, irs, per_pair, why in rows:
        if per_pair is None:
            lines.append("%-10s FAIL: %s" % (a.name, why))
            continue
        r = ratio(per_pair, carve)
        lines.append("%-10s %14d %14d %12.1f %8s" % (a.name, irs[0], irs[1], per_pair,
                                                      "%.2f" % r if r is not None else "-"))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "callgrind.txt"), "w") as fh:
        fh.write(text)
    with open(os.path.join(outdir, "callgrind.csv"), "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["allocator", "pairs", "ir_n", "ir_2n", "instructions_per_pair", "failure"])
        for a, irs, per_pair, why in rows:
            out.writerow([a.name, n, irs[0] if irs else "", irs[1] if len(irs) > 1 else "",
                          "" if per_pair is None else "%.2f" % per_pair, why])
    sys.stdout.write(text)
    point_latest(outdir)
    print("\nresults in %s" % os.path.relpath(outdir, os.getcwd()))
    return 0 if rows[0][2] is not None else 1


# ---- main ------------------------------------------------------------------

def compile_workloads():
    """bench/src/*.c, *.cc and bench/tools/spawn.c into bench/bin/, when stale."""
    os.makedirs(BIN, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    cxx = os.environ.get("CXX", "c++")
    common = os.path.join(SRC, "common.h")
    sources = sorted(glob.glob(os.path.join(SRC, "*.c")) + glob.glob(os.path.join(SRC, "*.cc"))) + \
        [os.path.join(BENCH, "tools", "spawn.c")]
    for src in sources:
        name, ext = os.path.splitext(os.path.basename(src))
        exe = os.path.join(BIN, name)
        # a .cc workload may include a .c one of the same directory
        deps = [src, common] + (glob.glob(os.path.join(SRC, "*.c")) if ext == ".cc" else [])
        if os.path.exists(exe) and os.path.getmtime(exe) >= max(os.path.getmtime(d) for d in deps):
            continue
        if ext == ".cc":
            cmd = [cxx, "-O2", "-fsized-deallocation", "-pthread", "-o", exe, src]
        else:
            cmd = [cc, "-O2", "-pthread", "-o", exe, src]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit("bench: compiling %s failed:\n%s\n%s" % (src, " ".join(cmd), res.stderr))


def parse_list(text, known, what):
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in known]
    if bad:
        sys.exit("bench: unknown %s: %s (known: %s)" % (what, ", ".join(bad), ", ".join(known)))
    return items


def main():
    p = argparse.ArgumentParser(prog="bench/run", description="Benchmark carve against glibc, jemalloc, "
                                "mimalloc and tcmalloc (see bench/README.md).")
    p.add_argument("--runs", type=int, help="runs per workload and allocator (default 5; --quick: 2)")
    p.add_argument("--threads", help="thread counts, e.g. 4 or 1,2,4 (default: the number of CPUs)")
    p.add_argument("--quick", action="store_true", help="small scales and 2 runs: a smoke test")
    p.add_argument("--only", help="comma-separated workloads to run")
    p.add_argument("--allocators", help="comma-separated allocators to compare carve with "
                   "(glibc,jemalloc,mimalloc,tcmalloc; carve-free, carve-dontneed, carve-bg, or carve:KEY=VALUE[+KEY=VALUE] "
                   "for carve with CARVE_OPTIONS; carve always runs)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every workload's size (default 1)")
    p.add_argument("--timeout", type=int, help="seconds before a run counts as a FAIL (default 300; --quick: 60)")
    p.add_argument("--callgrind", action="store_true",
                   help="count instructions per malloc/free pair under callgrind instead")
    p.add_argument("--pairs", type=int, help="N for --callgrind (default 1000000; --quick: 100000)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--no-build", action="store_true", help="do not build carve (handled by bench/run)")
    p.add_argument("--no-install", action="store_true", help="install no package (handled by bench/run)")
    args = p.parse_args()

    if args.list:
        for w in WORKLOADS:
            print("%-15s %s%s" % (w.name, w.desc, "" if w.threaded else " [1 thread]"))
        return 0
    args.runs = args.runs if args.runs is not None else (2 if args.quick else 5)
    args.timeout = args.timeout if args.timeout is not None else (60 if args.quick else 300)
    if args.runs < 1 or args.scale <= 0 or args.timeout < 1:
        sys.exit("bench: --runs, --scale and --timeout must be positive")
    try:
        thread_list = ([int(x) for x in args.threads.split(",") if x.strip()] if args.threads
                       else [len(os.sched_getaffinity(0))])
    except ValueError:
        sys.exit("bench: --threads takes numbers, e.g. 4 or 1,2,4")
    if not thread_list or min(thread_list) < 1:
        sys.exit("bench: --threads takes positive numbers")
    thread_list = list(dict.fromkeys(thread_list))  # once each, in the order given
    names = [w.name for w in WORKLOADS]
    workloads = WORKLOADS
    if args.only:
        only = parse_list(args.only, names, "workload")
        workloads = [w for w in WORKLOADS if w.name in only]
    wanted = None
    if args.allocators:
        items = [x.strip() for x in args.allocators.split(",") if x.strip()]
        wanted = parse_list(",".join(x for x in items if carve_option_spec(x) is None), ALLOCATOR_NAMES,
                            "allocator") + [x for x in items if carve_option_spec(x) is not None]

    compile_workloads()
    allocs = find_allocators(wanted, [] if args.callgrind else workloads)
    for tool in ["gcc"] * any(w.kind == "gcc" for w in workloads) + ["sqlite3"] * any(
            w.kind == "sqlite" for w in workloads):
        if shutil.which(tool) is None:
            sys.exit("bench: %s not found (bench/run installs it; or leave its workload out with --only)" % tool)
    outdir = make_outdir()

    def interrupted(signum, frame):
        if current_pgid:
            try:
                os.killpg(current_pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.stderr.write("\nbench: interrupted\n")
        os._exit(130)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)

    if args.callgrind:
        return run_callgrind(args, allocs, outdir)

    header = machine_lines(allocs, thread_list, args)
    for line in header:
        print(line, file=sys.stderr)
    groups, table = run_suite(args, workloads, allocs, thread_list, outdir)
    text = render_table(groups, table, allocs, args, header)
    with open(os.path.join(outdir, "table.txt"), "w") as fh:
        fh.write(text)
    write_csv(os.path.join(outdir, "results.csv"), groups, table, allocs)
    write_runs_csv(os.path.join(outdir, "runs.csv"), groups, table, allocs)
    points = write_points_csv(os.path.join(outdir, "points.csv"), groups, table, allocs)
    chart_problem = write_chart(outdir, groups, table, allocs)
    point_latest(outdir)
    sys.stdout.write("\n" + text)
    rel = os.path.relpath(outdir, os.getcwd())
    print("\nresults in %s: table.txt results.csv runs.csv%s%s" % (rel, " points.csv" if points else "",
                                                               "" if chart_problem else " chart.png"))
    if chart_problem:
        print("bench: " + chart_problem, file=sys.stderr)
    carve_failed = any(c.failures() for w, t in groups for a in allocs if a.is_carve()
                       for c in [table[(w.name, t)].get(a.name)] if c is not None)
    if carve_failed:
        print("bench: carve FAILED at least one workload (see Failures above)", file=sys.stderr)
    return 1 if carve_failed else 0


if __name__ == "__main__":
    sys.exit(main())
