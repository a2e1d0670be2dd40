"""The results directory: results/<date-time>/, its CSV files and
meta.json, and reading them back for --report."""
import csv
import datetime
import json
import os
import sys

from . import REPO
from .allocators import Allocator, carve_option_spec
from .execute import Cell, RunResult
from .workloads import WORKLOADS, Workload


# ---- the results directory -------------------------------------------------

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


# ---- CSV -------------------------------------------------------------------

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
    """runs.csv: every run, its checks done (ok and why are final). The last
    two columns came later, at the end so that the others stay where they
    were: mean_rss_kib (the run's mean RSS as top shows it) and time_exact_s
    (time_s unrounded), which --report reads to draw the same table."""
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["workload", "allocator", "threads", "run", "time_s", "peak_rss_kib", "ok", "why",
                      "mean_resident_kib", "mean_rss_kib", "time_exact_s"])
        for w, t in groups:
            for a in allocs:
                c = table[(w.name, t)].get(a.name)
                for i, r in enumerate(c.runs if c is not None else []):
                    out.writerow([w.name, a.name, t, i + 1,
                                  "" if r.time_s is None else "%.4f" % r.time_s,
                                  "" if r.rss_kib is None else r.rss_kib, int(r.ok), r.why,
                                  "" if r.resident_kib is None else r.resident_kib,
                                  "" if r.visible_kib is None else r.visible_kib,
                                  "" if r.time_s is None else repr(r.time_s)])


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


def write_meta(path, args, header_lines, allocs, groups):
    """meta.json: what the table needs besides the runs, for --report: the
    runs per cell, the header lines (machine, libraries), the columns in
    their order and the rows (workload, threads)."""
    meta = {"runs": args.runs,
            "header": list(header_lines),
            "allocators": [{"name": a.name, "lib": a.lib, "note": a.note, "carve_options": a.carve_options,
                            "everywhere": a.everywhere} for a in allocs],
            "groups": [{"workload": w.name, "threads": t, "threaded": w.threaded} for w, t in groups]}
    with open(path, "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")


# ---- reading it back (--report) --------------------------------------------

def stand_in(name, threaded):
    """A Workload for the table's rows: only its name and threaded are read."""
    return Workload(name, "c", threaded, 1.0)


def merge_order(lists):
    """One order for the names of several lists, each a part of it in its
    order: a new name goes before the next name of its list already placed,
    or else after the one before it."""
    order = []
    for names in lists:
        for i, n in enumerate(names):
            if n in order:
                continue
            later = [m for m in names[i + 1:] if m in order]
            if later:
                order.insert(order.index(later[0]), n)
            else:
                order.insert(order.index(names[i - 1]) + 1 if i else len(order), n)
    return order


def number(text, kind=int):
    return kind(text) if text not in (None, "") else None


def read_results(outdir):
    """A results directory read back: (runs per cell, header lines,
    allocators, groups, table, a problem to report or None), the structures
    run_suite returns, from runs.csv and points.csv, with meta.json for the
    rest. A directory written before meta.json (and the last two columns of
    runs.csv) existed still reads: the header from its table.txt, the
    columns in the order of runs.csv, times rounded to 0.1 ms, no mean RSS
    as top shows it."""
    runs_path = os.path.join(outdir, "runs.csv")
    if not os.path.exists(runs_path):
        sys.exit("bench: no %s (--report takes a results directory of bench/run, not of --callgrind)"
                 % runs_path)
    points = {}
    points_path = os.path.join(outdir, "points.csv")
    if os.path.exists(points_path):
        with open(points_path, newline="") as fh:
            for p in csv.DictReader(fh):
                key = (p["workload"], p["allocator"], int(p["threads"]), int(p["run"]))
                points.setdefault(key, []).append((p["point"], int(p["rss_kib"]), int(p["lazyfree_kib"])))
    table, keys = {}, []
    with open(runs_path, newline="") as fh:
        for row in csv.DictReader(fh):
            w, a, t = row["workload"], row["allocator"], int(row["threads"])
            if (w, t) not in table:
                table[(w, t)] = {}
                keys.append((w, t))
            exact = row.get("time_exact_s") or row["time_s"]
            r = RunResult(number(exact, float), number(row["peak_rss_kib"]), row["ok"] == "1", row["why"],
                          resident_kib=number(row.get("mean_resident_kib")),
                          points=points.get((w, a, t, int(row["run"])), ()),
                          visible_kib=number(row.get("mean_rss_kib")))
            table[(w, t)].setdefault(a, Cell()).runs.append(r)
    meta_path = os.path.join(outdir, "meta.json")
    problem = None
    if os.path.exists(meta_path):
        with open(meta_path) as fh:
            meta = json.load(fh)
        runs, header = meta["runs"], meta["header"]
        allocs = [Allocator(a["name"], a["lib"], a["note"], a["carve_options"], a["everywhere"])
                  for a in meta["allocators"]]
        groups = [(stand_in(g["workload"], g["threaded"]), g["threads"]) for g in meta["groups"]]
    else:
        problem = ("%s has no meta.json (written before --report existed): times rounded to 0.1 ms, "
                   "no mean RSS as top shows it" % os.path.relpath(outdir, os.getcwd()))
        runs, header = max([len(c.runs) for cells in table.values() for c in cells.values()] or [1]), []
        try:  # the header of the table.txt there, which is about to be replaced
            with open(os.path.join(outdir, "table.txt")) as fh:
                for line in fh:
                    if not line.strip():
                        break
                    header.append(line.rstrip("\n"))
        except OSError:
            pass
        allocs = [Allocator(n, None, carve_options=carve_option_spec(n))
                  for n in merge_order([list(table[k]) for k in keys])]
        threaded = {w.name: w.threaded for w in WORKLOADS}
        groups = [(stand_in(w, threaded.get(w, t > 1)), t) for w, t in keys]
    for w, t in groups:
        if "carve" not in table.get((w.name, t), {}):
            sys.exit("bench: %s has no run of carve for %s t=%d" % (runs_path, w.name, t))
    return runs, header, allocs, groups, table, problem
