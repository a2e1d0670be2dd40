# git.sh: under carve, git makes a repository of 300 commits, packs it with
# git gc and checks it with git fsck; the tree and commit hashes, and fsck's
# verdict, must match a plain run.
. "$(dirname "$0")/common.sh"
need_prog git
check_preload

# No user or system configuration, fixed identities and dates: the same
# commands give the same hashes.
export HOME="$TMP/home"
mkdir -p "$HOME"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="Carve Test" GIT_AUTHOR_EMAIL="carve@example.invalid"
export GIT_COMMITTER_NAME="Carve Test" GIT_COMMITTER_EMAIL="carve@example.invalid"
export LC_ALL=C TZ=UTC
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY

# build.sh: everything below runs with or without carve as a whole (every
# git process it starts inherits LD_PRELOAD). It prints the history's
# commit and tree hashes, fsck's status and a listing of the final tree.
cat >"$TMP/build.sh" <<'SH'
set -e
repo="$TMP/repo-$CARVE_RUN"
rm -rf "$repo"
git init -q -b main "$repo" 2>/dev/null || git init -q "$repo"
cd "$repo"
git config core.autocrlf false
git config gc.auto 0
git config core.fsync none
git config maintenance.auto false
mkdir -p src doc
k=0
while [ $k -lt 60 ]; do
    echo "/* file $k */" >"src/file$k.c"
    k=$((k + 1))
done
git add -A
i=0
while [ $i -lt 300 ]; do
    export GIT_AUTHOR_DATE="@$((1700000000 + i * 60)) +0000"
    export GIT_COMMITTER_DATE="$GIT_AUTHOR_DATE"
    # Change a few files each time, add one now and then, delete some.
    j=0
    while [ $j -lt 4 ]; do
        f="src/file$(( (i * 7 + j * 13) % 60 )).c"
        printf '/* commit %d change %d */\nint f%d_%d(void) { return %d; }\n' \
            $i $j $i $j $((i * j)) >>"$f"
        j=$((j + 1))
    done
    if [ $((i % 5)) -eq 0 ]; then
        seq 1 $((i * 10 + 1)) | sed "s/^/line $i: /" >"doc/notes$i.txt"
        git add "doc/notes$i.txt"
    fi
    if [ $((i % 17)) -eq 16 ] && [ -f "doc/notes$((i - 16)).txt" ]; then
        git rm -q "doc/notes$((i - 16)).txt"
    fi
    git commit -q -a -m "commit $i" -m "body of commit $i"
    i=$((i + 1))
done
git gc -q --aggressive --prune=now
fsck_status=0
git fsck --full --strict --no-progress >"$TMP/fsck-$CARVE_RUN.out" 2>&1 || fsck_status=$?
echo "fsck status $fsck_status"
git count-objects -v | grep -E '^(count|in-pack|packs):'
git log --format='%H %T %s'
git ls-tree -r -l HEAD
SH

export TMP
run_both git sh "$TMP/build.sh"
head -n 5 "$TMP/git.carve"
grep -q '^fsck status 0$' "$TMP/git.carve" || {
    cat "$TMP/fsck-carve.out" >&2
    fail "git fsck failed on the repository made with carve"
}
[ "$(grep -c ' commit [0-9]*$' "$TMP/git.carve")" -eq 300 ] ||
    fail "expected 300 commits in git log"
pass "300 commits, gc and fsck give the same hashes"
