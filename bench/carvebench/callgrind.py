"""The --callgrind mode: instructions per malloc/free pair, under
callgrind."""
import csv
import os
import shutil
import sys

from . import BIN
from .execute import Progress, last_line, run_program
from .report import ratio
from .results import point_latest


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
