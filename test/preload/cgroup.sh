#!/bin/sh
# carve in a memory-limited cgroup: a program whose live memory stays well
# under the limit but which touches more than the limit over time (small
# blocks freed, then large blocks). With the plain policy the lazily freed
# pages (MADV_FREE) stay charged, so the cgroup hits its limit; with carve's
# cgroup-aware policy (the default) it must stay under it.
# Needs root and a writable cgroup memory controller (v1 or v2); skips
# (exit 77) with a message otherwise.
set -u
. "$(dirname "$0")/common.sh"
require_lib

limit_mib=256
src="$CARVE_SRCDIR/test/progs/cgroup_churn.c"
prog="$TMP/cgroup_churn"
cc -O2 -o "$prog" "$src" || fail "cannot compile $src"

if [ -d /sys/fs/cgroup/memory ] && [ -w /sys/fs/cgroup/memory ]; then
    version=1
    cg=/sys/fs/cgroup/memory/carve-test-$$
elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
    version=2
    echo +memory > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
    cg=/sys/fs/cgroup/carve-test-$$
else
    skip "no writable cgroup memory controller here"
fi
mkdir "$cg" 2>/dev/null || skip "cannot create a cgroup under $(dirname "$cg") (not root, or delegated elsewhere)"
cleanup_cg() { rmdir "$cg" 2>/dev/null; }
trap 'cleanup_cg; cleanup' EXIT

# Runs the program in the cgroup and prints "<hits> <peak MiB>".
run_in_cgroup() {
    opts="$1"
    if [ $version = 1 ]; then
        echo $((limit_mib << 20)) > "$cg/memory.limit_in_bytes" || skip "cannot set a v1 memory limit"
        echo 0 > "$cg/memory.max_usage_in_bytes"
        echo 0 > "$cg/memory.failcnt"
    else
        echo $((limit_mib << 20)) > "$cg/memory.max" || skip "cannot set memory.max"
        [ -f "$cg/memory.peak" ] && echo 0 > "$cg/memory.peak" 2>/dev/null
        before=$(awk '$1=="max"{print $2}' "$cg/memory.events")
    fi
    sh -c "echo \$\$ > '$cg/cgroup.procs' && CARVE_OPTIONS='$opts' LD_PRELOAD='$CARVE_LIB' exec '$prog' 180" \
        > "$TMP/out" 2>&1 || { cat "$TMP/out"; fail "the program failed under CARVE_OPTIONS=$opts"; }
    grep -q done "$TMP/out" || fail "the program did not finish under CARVE_OPTIONS=$opts"
    if [ $version = 1 ]; then
        echo "$(cat "$cg/memory.failcnt") $(( $(cat "$cg/memory.max_usage_in_bytes") >> 20 ))"
    else
        after=$(awk '$1=="max"{print $2}' "$cg/memory.events")
        peak=0
        [ -f "$cg/memory.peak" ] && peak=$(( $(cat "$cg/memory.peak") >> 20 ))
        echo "$((after - before)) $peak"
    fi
}

set -- $(run_in_cgroup "cgroup=0")
plain_hits=$1 plain_peak=$2
set -- $(run_in_cgroup "")
aware_hits=$1 aware_peak=$2
echo "cgroup v$version, limit $limit_mib MiB"
echo "plain policy (cgroup=0): limit hit $plain_hits times, peak $plain_peak MiB"
echo "cgroup-aware (default):  limit hit $aware_hits times, peak $aware_peak MiB"
[ "$aware_hits" -eq 0 ] || fail "carve reached the cgroup limit with its cgroup-aware policy"
[ "$plain_hits" -gt 0 ] || echo "note: the plain policy did not reach the limit on this kernel either"
pass
