"""The allocators: carve, its variants, glibc and the peers, and where
their libraries are."""
import glob
import os
import shutil
import subprocess
import sys

from . import REPO


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
