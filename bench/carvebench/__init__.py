"""carvebench: the benchmark runner behind bench/run (see bench/README.md).

bench/run installs what is missing and builds carve, then runs
bench/runner.py, which calls cli.main: it compiles the workloads, finds the
allocators, runs every workload under every allocator through LD_PRELOAD
(interleaved, several times), checks the results, and writes the table, the
CSV and the chart. With --callgrind it counts instructions per malloc/free
pair instead; with --report it draws the table and the chart again from a
results directory's CSV.

  workloads.py   the Workload class and the WORKLOADS list
  allocators.py  Allocator, PEERS, CARVE_VARIANTS, finding the libraries
  execute.py     running one program (RunResult), progress, Cell, the suite
  report.py      the text table, the header lines, the chart
  results.py     the results directory: its CSV files, meta.json, reading them back
  callgrind.py   the --callgrind mode
  cli.py         the options, and main
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
SRC = os.path.join(BENCH, "src")
BIN = os.path.join(BENCH, "bin")
GEN = os.path.join(BIN, "gen")
WORKLOADS_DIR = os.path.join(BENCH, "workloads")
SPAWN = os.path.join(BIN, "spawn")
