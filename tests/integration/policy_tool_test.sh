#!/usr/bin/env bash
# sluice-policy end to end on the example policies: validate, refuse with
# field-naming errors, diff, apply (the round trip must reproduce the
# target), refuse a stale delta, and decide requests.
# usage: policy_tool_test.sh SLUICE_POLICY EXAMPLES_DIR
set -uo pipefail
tool=$1 ex=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
# expect_out NAME PATTERN FILE: FILE matches the extended regex PATTERN.
expect_out() { grep -Eq -- "$2" "$3" || { fail "$1: no match for '$2' in:"; sed 's/^/    /' "$3" >&2; }; }

# validate
"$tool" validate "$ex/policy-v1.json" >"$tmp/out" 2>&1 || fail "validate v1 exit $?"
expect_out validate_v1 "ruleset 'edge' version 1 is valid: 13 resources" "$tmp/out"
expect_out validate_v1_kinds "2 client, 4 rate_limit, 2 access_list, 3 route, 1 upstream, 1 settings" "$tmp/out"

"$tool" validate "$ex/policy-invalid.json" >"$tmp/out" 2>&1
[ $? -eq 1 ] || fail "validate invalid: want exit 1"
expect_out invalid_rate "rate_limit/gold\.rate: " "$tmp/out"
expect_out invalid_cidr "access_list/office\.allow\[0\]: .*host bits" "$tmp/out"
expect_out invalid_path "route/api\.path_prefix: must start with '/'" "$tmp/out"

echo '{"name": "edge", "resources": [{"client": {"id": "x", "bogus": 1}}]}' >"$tmp/unknown.json"
"$tool" validate "$tmp/unknown.json" >"$tmp/out" 2>&1 && fail "unknown field accepted"
expect_out unknown_field "resources\[0\]\.client\.bogus: unknown field" "$tmp/out"

echo '{"name": "edge", "resources": [{"client": {"id": "x", "rateLimit": "nope"}}]}' >"$tmp/dangling.json"
"$tool" validate "$tmp/dangling.json" >"$tmp/out" 2>&1 && fail "dangling reference accepted"
expect_out dangling "client/x\.rate_limit: rate_limit/nope does not exist" "$tmp/out"

# diff and apply: apply(v1, diff(v1, v2)) == v2
"$tool" diff "$ex/policy-v1.json" "$ex/policy-v2.json" >"$tmp/delta.json" 2>"$tmp/err" ||
	fail "diff exit $?: $(cat "$tmp/err")"
expect_out delta_versions '"fromVersion": "1"' "$tmp/delta.json"
expect_out delta_to '"toVersion": "2"' "$tmp/delta.json"
expect_out delta_remove '"kind": "ROUTE"' "$tmp/delta.json"
expect_out delta_upsert '"id": "silver"' "$tmp/delta.json"
n_upserts=$(grep -c '"id":' "$tmp/delta.json")
[ "$n_upserts" -eq 4 ] || fail "delta should name 3 upserts + 1 remove, names $n_upserts ids"

"$tool" apply "$ex/policy-v1.json" "$tmp/delta.json" >"$tmp/applied.json" 2>"$tmp/err" ||
	fail "apply exit $?: $(cat "$tmp/err")"
"$tool" diff "$tmp/applied.json" "$ex/policy-v2.json" >"$tmp/empty.json" 2>"$tmp/err" ||
	fail "diff applied exit $?: $(cat "$tmp/err")"
grep -q '"upserts"\|"removes"' "$tmp/empty.json" && fail "apply(v1, diff(v1, v2)) != v2: $(cat "$tmp/empty.json")"

sed 's/"fromVersion": "1"/"fromVersion": "7"/' "$tmp/delta.json" >"$tmp/stale.json"
"$tool" apply "$ex/policy-v1.json" "$tmp/stale.json" >"$tmp/out" 2>&1 && fail "stale delta applied"
expect_out stale "from_version" "$tmp/out"

# decisions
"$tool" check "$ex/policy-v1.json" --client acme-key-1 --path /api/users --count 30 >"$tmp/out" 2>&1 ||
	fail "check exit $?"
expect_out burst "^requests 1-20: 200 route/api client/acme$" "$tmp/out"
expect_out limited "^requests 21-30: 429 by rate_limit/gold" "$tmp/out"

"$tool" check "$ex/policy-v1.json" --client acme-key-1 --path /api/users --count 40 \
	--interval-ms 10 >"$tmp/out" 2>&1 || fail "check paced exit $?"
expect_out paced "^requests 1-40: 200 " "$tmp/out"

"$tool" check "$ex/policy-v1.json" --source 192.0.2.7 --path /api/x >"$tmp/out" 2>&1
expect_out deny "^requests 1-1: 403 by access_list/blocklist" "$tmp/out"
"$tool" check "$ex/policy-v1.json" --source 8.8.8.8 --path /admin/users >"$tmp/out" 2>&1
expect_out not_allowed "^requests 1-1: 403 by access_list/office" "$tmp/out"
"$tool" check "$ex/policy-v1.json" --source 10.1.2.3 --path /admin/users >"$tmp/out" 2>&1
expect_out allowed "^requests 1-1: 200 route/admin" "$tmp/out"
"$tool" check "$ex/policy-v1.json" --method DELETE --path /api/x >"$tmp/out" 2>&1
expect_out method "^requests 1-1: 405" "$tmp/out"
"$tool" check "$ex/policy-v1.json" --source 10.9.9.9 --path /index.html --count 8 >"$tmp/out" 2>&1
expect_out anonymous "^requests 6-8: 429 by rate_limit/anonymous" "$tmp/out"

if [ $fails -ne 0 ]; then
	echo "$fails check(s) failed" >&2
	exit 1
fi
echo "policy_tool: all checks passed"
