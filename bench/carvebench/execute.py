"""Running the workloads: one program under one allocator (RunResult), the
progress lines, and the suite (Cell: all runs of one workload, thread count
and allocator)."""
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

from . import SPAWN
from .allocators import Allocator
from .workloads import WrongResult


# ---- running one program ---------------------------------------------------

# the process group of the program running now, for the signal handler of
# cli.main (which reads it as execute.current_pgid: it lives here only)
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
