#!/usr/bin/env bash
# demo_test.sh SOURCE_ROOT BUILD_DIR - runs scripts/demo.sh the way a user
# does (real etcd, sluice-control, backend, two sluice-node, curl, the
# admin API through sluicectl.py) but on BUILD_DIR's binaries, and checks
# what it printed: both nodes answered 200s and 429s under the first limit,
# both enforced the tightened limit after the change, Fleet/ListNodes and
# Fleet/WatchStats showed both nodes at the new version, and nothing it
# started outlives it. Then runs it with --keep, interrupts it like Ctrl-C
# and checks the same clean-up. Exit 77 without etcd or python3-grpcio.
# shellcheck disable=SC2015  # `check && ok || fail`: ok always succeeds
set -uo pipefail

root=${1:?usage: demo_test.sh SOURCE_ROOT BUILD_DIR}
build=${2:?usage: demo_test.sh SOURCE_ROOT BUILD_DIR}
if [ ! -x /usr/bin/etcd ]; then
	echo "demo_test: skipped: no /usr/bin/etcd (etcd-server)"
	exit 77
fi
if ! /usr/bin/python3 -c 'import grpc' 2>/dev/null; then
	echo "demo_test: skipped: no python3-grpcio for /usr/bin/python3"
	exit 77
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
failures=0
fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}
ok() { echo "ok   $*"; }

# No process of ours may still have the demo's temp dir on its command line.
leftovers() {
	local dir=$1
	[ -n "$dir" ] || return 1
	pgrep -af -- "$dir" || true
}

# ---- 1: the whole demo, uninterrupted ------------------------------------
t0=$(date +%s%N)
# `timeout` bounds a hang; the demo itself finishes in ~10 s here.
timeout -s TERM 120 bash "$root/scripts/demo.sh" --build-dir "$build" >"$out" 2>&1
rc=$?
dt_ms=$((($(date +%s%N) - t0) / 1000000))
echo "demo: exit $rc after $dt_ms ms"
if [ $rc -ne 0 ]; then
	fail "demo exited $rc"
	cat "$out"
	exit 1
fi

dir=$(sed -n 's/^  files *//p' "$out")
[ -n "$dir" ] || fail "no 'files' line naming the temp dir"

# "[TAG] node-N: 200=A 429=B" (and no other statuses).
counts() { # TAG NODE -> "A B" or nothing
	sed -n "s/^  \[$1\] $2: 200=\([0-9]*\) 429=\([0-9]*\)\$/\1 \2/p" "$out"
}
read -ra versions <<<"$(sed -n 's/^  both nodes enforce version \([0-9]*\),.*/\1/p' "$out" | tr '\n' ' ')"
if [ ${#versions[@]} -ne 2 ] || [ "${versions[1]}" -le "${versions[0]}" ]; then
	fail "expected two increasing converged versions, got '${versions[*]}'"
	versions=(0 0)
else
	ok "both nodes converged to v${versions[0]} then v${versions[1]}"
fi
v2=${versions[1]}

for id in node-1 node-2; do
	read -r a b <<<"$(counts before "$id")"
	read -r c d <<<"$(counts after "$id")"
	if [ -z "${a:-}" ] || [ -z "${c:-}" ]; then
		fail "$id: missing or odd traffic lines: $(grep "] $id:" "$out" | tr '\n' ';')"
		continue
	fi
	# gold = 10/s burst 10: 15 requests in well under a second pass 10
	# (one more per 100 ms they take), the rest are 429.
	if [ $((a + b)) -eq 15 ] && [ "$a" -ge 10 ] && [ "$a" -le 12 ] && [ "$b" -ge 3 ]; then
		ok "$id before the change: 200=$a 429=$b"
	else
		fail "$id before the change: 200=$a 429=$b (want 10..12 of 15 passed, the rest 429)"
	fi
	# gold = 1/s burst 3 after the change: 3 pass (4 if the burst took >1 s).
	if [ $((c + d)) -eq 15 ] && [ "$c" -ge 3 ] && [ "$c" -le 4 ]; then
		ok "$id after the change: 200=$c 429=$d"
	else
		fail "$id after the change: 200=$c 429=$d (want 3..4 of 15 passed)"
	fi
done

grep -q '^  HTTP/1.1 429' "$out" && grep -qi '^  retry-after: [0-9]' "$out" &&
	grep -qi '^  ratelimit: "gold"' "$out" &&
	ok "a 429 with Retry-After and RateLimit headers" ||
	fail "no 429 with Retry-After and RateLimit headers shown"

for id in node-1 node-2; do
	grep -qE "^  $id +connected=true +ruleset=edge acked=$v2 head=$v2 health=HEALTHY" "$out" &&
		ok "ListNodes: $id connected at v$v2" ||
		fail "ListNodes: no '$id connected ... acked=$v2' line"
	grep -qE "^  $id +edge@$v2 HEALTHY .*api:200=" "$out" &&
		ok "WatchStats: a report of $id at v$v2 with route counters" ||
		fail "WatchStats: no report of $id at v$v2"
done

grep -q 'sluice.v1.Fleet/WatchStats' "$out" && grep -q '^  grpcurl ' "$out" &&
	grep -q '^  scripts/sluicectl.py ' "$out" &&
	ok "next commands printed (grpcurl and sluicectl.py)" ||
	fail "the next commands are missing"

if [ -n "$dir" ] && [ -e "$dir" ]; then
	fail "temp dir $dir left behind"
fi
left=$(leftovers "$dir")
[ -z "$left" ] && ok "nothing left running" || fail "left running: $left"

# ---- 2: --keep, then Ctrl-C -----------------------------------------------
# A non-interactive shell starts background jobs with SIGINT ignored, and
# an ignored signal cannot be trapped: restore the default first, as a
# terminal's foreground job has it.
keep_out=$(mktemp)
trap 'rm -f "$out" "$keep_out"' EXIT
/usr/bin/python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' bash "$root/scripts/demo.sh" --keep --build-dir "$build" \
	>"$keep_out" 2>&1 &
pid=$!
deadline=$((SECONDS + 120))
until grep -q 'The fleet keeps running' "$keep_out"; do
	if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
		break
	fi
	sleep 0.2
done
if ! grep -q 'The fleet keeps running' "$keep_out"; then
	fail "--keep: the demo did not reach its waiting state"
	tail -n 30 "$keep_out"
	kill -TERM "$pid" 2>/dev/null
	wait "$pid"
	exit 1
fi
kdir=$(sed -n 's/^  files *//p' "$keep_out")
sleep 1
[ -n "$(leftovers "$kdir")" ] && ok "--keep: the fleet is still up after the tour" ||
	fail "--keep: the fleet is gone before Ctrl-C"
kill -INT "$pid"
deadline=$((SECONDS + 60))
while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
	fail "--keep: still running 60 s after SIGINT"
	kill -TERM "$pid"
fi
wait "$pid"
rc=$?
left=$(leftovers "$kdir")
if [ -z "$left" ] && [ ! -e "$kdir" ]; then
	ok "--keep + Ctrl-C: exit $rc, everything stopped, temp dir removed"
else
	fail "--keep + Ctrl-C: left running '$left', dir $(ls -d "$kdir" 2>/dev/null)"
fi

if [ $failures -ne 0 ]; then
	echo "---- demo output ----"
	cat "$out"
	exit 1
fi
echo "demo_test: all checks passed"
