#!/usr/bin/env bash
# The Sluice demo, on this machine. Installs what is missing, builds, then
# walks through the shared policy library with sluice-policy: validate a
# ruleset, see field-level errors, diff two versions, apply the delta, and
# decide requests (200 / 403 / 405 / 429) with the code the nodes run.
# The fleet demo (etcd, control plane, nodes) arrives with the node-sync
# issue; until then this shows what exists.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$SLUICE_ROOT"
sluice_install_packages
sluice_build build

tool=build/controlplane/sluice-policy
ex=deploy/examples
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

step "A valid ruleset" "sluice-policy validate $ex/policy-v1.json"
$tool validate $ex/policy-v1.json

step "An invalid one: every error names its resource and field" \
	"sluice-policy validate $ex/policy-invalid.json"
$tool validate $ex/policy-invalid.json || true

step "What changed from v1 to v2, as the Delta nodes receive" \
	"sluice-policy diff $ex/policy-v1.json $ex/policy-v2.json"
$tool diff $ex/policy-v1.json $ex/policy-v2.json | tee "$tmp/delta.json"

step "Apply it to v1; the result equals v2 (an empty diff)" \
	"sluice-policy apply $ex/policy-v1.json delta.json > applied.json && sluice-policy diff applied.json $ex/policy-v2.json"
$tool apply $ex/policy-v1.json "$tmp/delta.json" >"$tmp/applied.json"
$tool diff "$tmp/applied.json" $ex/policy-v2.json

step "30 requests from client acme at once (gold: 100/s, burst 20)" \
	"sluice-policy check $ex/policy-v1.json --client acme-key-1 --path /api/users --count 30"
$tool check $ex/policy-v1.json --client acme-key-1 --path /api/users --count 30

step "Client initech after v2, which lowered its limit (silver) to 3/s" \
	"sluice-policy check $ex/policy-v2.json --client initech --path /api/users --count 6"
$tool check $ex/policy-v2.json --client initech --path /api/users --count 6

step "A source on the global deny list, and the office-only /admin route" \
	"sluice-policy check $ex/policy-v1.json --source 192.0.2.7 --path /api/x; ... --source 8.8.8.8 --path /admin"
$tool check $ex/policy-v1.json --source 192.0.2.7 --path /api/x
$tool check $ex/policy-v1.json --source 8.8.8.8 --path /admin

printf '\nNext: bash scripts/test.sh runs every test; the benchmarks run with\n'
printf '  meson test -C build --benchmark --suite policy --verbose\n'
