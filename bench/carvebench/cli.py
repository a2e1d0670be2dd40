"""The command line: the options, compiling the workloads, and main, which
runs the suite (or --callgrind, or --report) and writes the results."""
import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys

from . import BENCH, BIN, SRC, execute
from .allocators import ALLOCATOR_NAMES, carve_option_spec, find_allocators
from .callgrind import run_callgrind
from .execute import run_suite
from .report import machine_lines, render_table, write_chart
from .results import (make_outdir, point_latest, read_results, write_csv, write_meta, write_points_csv,
                      write_runs_csv)
from .workloads import WORKLOADS


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


def rerender(outdir):
    """--report DIR: table.txt and chart.png (with chart.gp and chart.dat)
    drawn again from what a run left in DIR, with the functions that drew
    them; the table goes to stdout too."""
    if not os.path.isdir(outdir):
        sys.exit("bench: --report: %s is not a directory" % outdir)
    outdir = os.path.realpath(outdir)  # results/latest: the directory it points to
    runs, header, allocs, groups, table, problem = read_results(outdir)
    if problem:
        print("bench: " + problem, file=sys.stderr)
    text = render_table(groups, table, allocs, argparse.Namespace(runs=runs), header)
    with open(os.path.join(outdir, "table.txt"), "w") as fh:
        fh.write(text)
    chart_problem = write_chart(outdir, groups, table, allocs)
    sys.stdout.write(text)
    print("\nrewritten in %s: table.txt%s" % (os.path.relpath(outdir, os.getcwd()),
                                              "" if chart_problem else " chart.png"))
    if chart_problem:
        print("bench: " + chart_problem, file=sys.stderr)
    return 0


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
    p.add_argument("--report", metavar="DIR",
                   help="run nothing: write DIR/table.txt (and print it) and DIR/chart.png again from "
                   "DIR/runs.csv, points.csv and meta.json, e.g. results/latest")
    p.add_argument("--no-build", action="store_true", help="do not build carve (handled by bench/run)")
    p.add_argument("--no-install", action="store_true", help="install no package (handled by bench/run)")
    args = p.parse_args()

    if args.list:
        for w in WORKLOADS:
            print("%-15s %s%s" % (w.name, w.desc, "" if w.threaded else " [1 thread]"))
        return 0
    if args.report:
        return rerender(args.report)
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
        if execute.current_pgid:
            try:
                os.killpg(execute.current_pgid, signal.SIGKILL)
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
    write_meta(os.path.join(outdir, "meta.json"), args, header, allocs, groups)
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
