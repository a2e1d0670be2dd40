#!/bin/sh
# man.sh: carve(3) documents every option of src/options.c's table and no
# other, and both man pages format without warnings (test/check-man); the
# checker catches an option missing from the page.
dir=$(dirname "$0")
command -v python3 >/dev/null 2>&1 || { echo "SKIP: no python3"; exit 77; }
"$dir/check-man" --self-test || exit 1
exec "$dir/check-man" --root "$dir/.."
