#!/usr/bin/env bash
# Runs every test of Sluice on this machine, installing what is missing:
#   1. build/       : all suites (unit, integration, bpf, fuzz replay)
#   2. build-asan/  : unit suite under AddressSanitizer + UBSan
#   3. build-tsan/  : the concurrency tests under ThreadSanitizer
#   4. build-fuzz/  : libFuzzer targets for a bounded time (clang)
# Ends with one line "N passed, N failed, N skipped" over every test meson
# ran, and exits non-zero when any failed or none ran.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$SLUICE_ROOT"
# setup.sh turns on errexit; here every step runs and failures are counted.
set +e

sluice_install_packages || { echo "setup: package installation failed" >&2; exit 1; }

status=0
build_failures=0
run_suites() { # DIR MESON_SETUP_OPTS... -- MESON_TEST_OPTS...
	local dir=$1; shift
	local setup=() args=()
	while [ $# -gt 0 ] && [ "$1" != "--" ]; do setup+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	args=("$@")
	rm -f "$dir/meson-logs/testlog.json"
	echo "== $dir: build" >&2
	if ! sluice_build "$dir" "${setup[@]}"; then
		echo "== $dir: BUILD FAILED" >&2
		ninja -C "$dir" 2>&1 | tail -40 >&2
		build_failures=$((build_failures + 1))
		status=1
		return
	fi
	echo "== $dir: meson test ${args[*]}" >&2
	meson test -C "$dir" --print-errorlogs --num-processes 2 "${args[@]}" || status=1
}

run_suites build --
run_suites build-asan -Db_sanitize=address,undefined -Db_lundef=false -- --suite unit
run_suites build-tsan -Db_sanitize=thread -Db_lundef=false -- --suite tsan
CC=clang-14 run_suites build-fuzz -Dfuzz=true -Db_lundef=false -- --suite fuzz

# Count what meson ran, over every build dir; a build that failed counts as
# one failed test, so the line never reads green when something did not run.
/usr/bin/env python3 - "$build_failures" build build-asan build-tsan build-fuzz <<'PY' || status=1
import json, os, sys
passed = skipped = 0
failed = int(sys.argv[1])
for d in sys.argv[2:]:
    log = os.path.join(d, 'meson-logs', 'testlog.json')
    if not os.path.exists(log):
        continue
    for line in open(log):
        r = json.loads(line).get('result')
        if r in ('OK', 'EXPECTEDFAIL'):
            passed += 1
        elif r == 'SKIP':
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
PY
exit $status
