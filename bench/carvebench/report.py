"""The report: the text table (table.txt, and stdout), its header lines
about the machine and the libraries, and the chart (chart.png)."""
import datetime
import math
import os
import shutil
import subprocess

from .workloads import fmt_scale


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
