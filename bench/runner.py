#!/usr/bin/env python3
"""runner.py: the benchmark runner behind bench/run (see bench/README.md).

bench/run installs what is missing and builds carve, then runs this file,
which compiles the workloads, finds the allocators, runs every workload
under every allocator through LD_PRELOAD (interleaved, several times),
checks the results, and writes the table, the CSV and the chart. With
--callgrind it counts instructions per malloc/free pair instead; with
--report it draws a results directory's table and chart again.

The code is the package carvebench/, next to this file (its __init__.py
lists the modules); this file only starts it.
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from carvebench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
