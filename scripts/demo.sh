#!/usr/bin/env bash
# The Sluice demo, on this machine. Installs what is missing, builds, then
# runs a small fleet on loopback in a temp dir: etcd, one sluice-control
# (nodes authenticate with certificates, the admin with a bearer token), a
# Python HTTP backend and two sluice-node in sync mode. It applies a ruleset
# through the admin API, sends traffic that gets 200s and 429s on both
# nodes, tightens a limit and shows both nodes enforce the new one, shows
# Fleet/ListNodes and Fleet/WatchStats, prints the commands to type next,
# and stops everything it started (on exit, Ctrl-C or SIGTERM).
#
#   bash scripts/demo.sh [--keep] [--build-dir DIR]
#     --keep           leave the fleet running after the tour, until Ctrl-C
#     --build-dir DIR  use the binaries of an existing meson build dir and
#                      skip package installation and the build (tests)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$SLUICE_ROOT"

keep=0
build_dir=
while [ $# -gt 0 ]; do
	case $1 in
	--keep) keep=1 ;;
	--build-dir) build_dir=${2:?--build-dir needs a directory}; shift ;;
	-h|--help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
	*) echo "demo.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
	esac
	shift
done
if [ -z "$build_dir" ]; then
	sluice_install_packages
	sluice_build build
	build_dir=build
fi

. "$SLUICE_ROOT/deploy/local-lib.sh"
local_init "$build_dir"
local_install_traps

# Colour only on a terminal: the test reads this output.
if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
step() { printf '\n%s== %s%s\n' "$B" "$1" "$N"; }
cmd() { printf '$ %s\n' "$*"; }
ms_now() { date +%s%3N; }

# The sluicectl.py options a user would type (default build dir), in
# grpcurl's order: options, then \$CP, then the method.
CTL="scripts/sluicectl.py -cacert \$PKI/ca.pem -H \"authorization: Bearer \$TOKEN\""

# burst ID COUNT: COUNT GETs of /api/hello.txt as client acme on one
# keep-alive connection (a curl URL range), as fast as the node answers.
# Prints "200=A 429=B [other=C]".
burst() {
	local id=$1 count=$2
	curl -s -o /dev/null -w '%{http_code}\n' -H 'Client-ID: acme-key-1' \
		"http://${LOCAL_NODE_LISTEN[$id]}/api/hello.txt?n=[1-$count]" |
		awk '{ n[$1]++ } END {
			printf "200=%d 429=%d", n["200"], n["429"]
			o = 0; for (c in n) if (c != "200" && c != "429") o += n[c]
			if (o) printf " other=%d", o
			printf "\n" }'
}

# traffic TAG: one burst per node, one summary line each. The test parses
# "[TAG] node-N: 200=A 429=B".
traffic() {
	local tag=$1 id
	for id in node-1 node-2; do
		printf '  [%s] %s: %s\n' "$tag" "$id" "$(burst "$id" 15)"
	done
}

# Converged when every node enforces VERSION; prints how long it took from
# the commit's acknowledgement (the nodes' /metrics are polled every 50 ms).
converge() {
	local v=$1 t0 id
	t0=$(ms_now)
	for id in node-1 node-2; do
		local_wait_version "$id" "$v" 15
	done
	printf '  both nodes enforce version %s, %d ms after the commit was acknowledged\n' "$v" $(($(ms_now) - t0))
}

t_start=$(ms_now)
step "Start a fleet on loopback (etcd, sluice-control, a backend, two nodes)"
local_start_etcd
local_gen_certs node-1 node-2
local_start_control
local_start_backend
local_start_node node-1 region=eu-west
local_start_node node-2 region=us-east
cat <<EOF
  etcd           $LOCAL_ETCD_URL
  sluice-control $LOCAL_CONTROL_ADDR (gRPC, TLS; nodes by certificate, admin by token)
                 http://$LOCAL_CONTROL_METRICS/metrics
  backend        http://127.0.0.1:$LOCAL_BACKEND_PORT (python3 http.server)
  node-1         http://${LOCAL_NODE_LISTEN[node-1]}  admin http://${LOCAL_NODE_ADMIN[node-1]}/metrics
  node-2         http://${LOCAL_NODE_LISTEN[node-2]}  admin http://${LOCAL_NODE_ADMIN[node-2]}/metrics
  files          $LOCAL_DIR
EOF

step "Apply a ruleset through the admin API (PolicyAdmin/ApplyChanges)"
local_demo_ruleset >"$LOCAL_DIR/demo-policy.json"
echo "  ruleset 'edge': /api/ -> backend; client acme (Client-ID: acme-key-1) on limit gold = 10/s, burst 10"
cmd "$CTL -d @ \$CP sluice.v1.PolicyAdmin/ApplyChanges < request.json   # {ruleset: edge, upserts: [6 resources]}"
v1=$(local_apply_ruleset "$LOCAL_DIR/demo-policy.json" "demo: initial ruleset")
echo "  committed version $v1"
converge "$v1"

step "15 requests from acme to each node, at once"
cmd "curl -s -o /dev/null -w '%{http_code}\\n' -H 'Client-ID: acme-key-1' 'http://NODE/api/hello.txt?n=[1-15]'"
traffic before
t_burst=$(ms_now)
echo "  (each node has its own buckets: burst 10 -> 10 pass, then 429 with Retry-After)"

step "Tighten limit gold to 1/s, burst 3"
change='{"ruleset": "edge", "author": "demo", "message": "gold: 1/s, burst 3",
 "upserts": [{"rateLimit": {"id": "gold", "algorithm": "TOKEN_BUCKET", "rate": 1, "unit": "SECOND", "burst": 3}}]}'
cmd "$CTL -d '$(tr -s ' \n' ' ' <<<"$change" | sed 's/ $//')' \$CP sluice.v1.PolicyAdmin/ApplyChanges"
v2=$(local_ctl -d "$change" sluice.v1.PolicyAdmin/ApplyChanges | local_json_version)
echo "  committed version $v2 (versions are etcd revisions: node registrations count too)"
converge "$v2"
# A bucket keeps what it used across policy changes (lib/limiter.h), and
# the first burst used 1 s of gold's old 10/s: wait that out so the counts
# below show the new limit alone.
wait_ms=$((t_burst + 1100 - $(ms_now)))
[ $wait_ms -le 0 ] || sleep "$(printf '0.%03d' "$wait_ms")"

step "The same 15 requests per node under the new limit"
traffic after
echo "  (burst 3 -> 3 pass on each node); one more, with its headers:"
cmd "curl -si -H 'Client-ID: acme-key-1' http://NODE-1/api/hello.txt"
curl -si -H 'Client-ID: acme-key-1' "http://${LOCAL_NODE_LISTEN[node-1]}/api/hello.txt" |
	tr -d '\r' | grep -iE '^(HTTP/|retry-after|ratelimit)' | sed 's/^/  /'

step "The fleet as the control plane sees it (Fleet/ListNodes)"
cmd "$CTL -d '{}' \$CP sluice.v1.Fleet/ListNodes"
local_ctl -d '{}' sluice.v1.Fleet/ListNodes | "$LOCAL_PY" -c '
import json, sys
for n in json.load(sys.stdin).get("nodes", []):
    labels = ",".join("%s=%s" % (l.get("key"), l.get("value")) for l in n.get("labels", []))
    print("  %-7s connected=%-5s ruleset=%s acked=%s head=%s health=%s via=%s labels=%s" % (
        n.get("nodeId"), str(n.get("connected", False)).lower(), n.get("ruleset"),
        n.get("ackedVersion", 0), n.get("headVersion", 0), n.get("health", "?"),
        n.get("controlPlane", "?"), labels))'

step "Node reports as they stream in, for 3 s (Fleet/WatchStats)"
cmd "$CTL -max-time 3 -d '{}' \$CP sluice.v1.Fleet/WatchStats"
local_ctl -max-time 3 -d '{}' sluice.v1.Fleet/WatchStats | "$LOCAL_PY" -c '
import json, sys
# sluicectl prints one indented JSON object per message: split them.
dec, buf = json.JSONDecoder(), ""
def show(r):
    applied = ",".join("%s@%s" % (a.get("ruleset"), a.get("version")) for a in r.get("applied", []))
    routes = " ".join("%s:%s=%s" % (rc.get("route"), s.get("status"), s.get("count"))
                      for rc in r.get("routes", []) for s in rc.get("statuses", []))
    rules = " ".join("%s:allowed=%s,rejected=%s" % (x.get("rateLimit"), x.get("allowed", 0), x.get("rejected", 0))
                     for x in r.get("rules", []))
    print("  %-7s %s %s  %s  %s" % (r.get("nodeId"), applied, r.get("health", "?"), routes, rules), flush=True)
for line in sys.stdin:
    buf += line
    while buf.strip():
        try:
            obj, end = dec.raw_decode(buf.lstrip())
        except ValueError:
            break
        buf = buf.lstrip()[end:]
        show(obj)'

elapsed_ms=$(($(ms_now) - t_start))
step "Next: commands to type (the fleet is up while this script runs; --keep holds it)"
cat <<EOF
  export CP=$LOCAL_CONTROL_ADDR PKI=$LOCAL_PKI TOKEN=$LOCAL_TOKEN

  # grpcurl (not packaged in Debian 12):
  grpcurl -cacert \$PKI/ca.pem \$CP list
  grpcurl -cacert \$PKI/ca.pem -H "authorization: Bearer \$TOKEN" -d '{"ruleset": "edge"}' \$CP sluice.v1.PolicyAdmin/GetHistory
  grpcurl -cacert \$PKI/ca.pem -H "authorization: Bearer \$TOKEN" -d '{"ruleset": "edge", "toVersion": $v1, "author": "me"}' \$CP sluice.v1.PolicyAdmin/Rollback
  grpcurl -cacert \$PKI/ca.pem -H "authorization: Bearer \$TOKEN" -d '{}' \$CP sluice.v1.Fleet/WatchNodes
  grpcurl -cacert \$PKI/ca.pem -H "authorization: Bearer \$TOKEN" -d '{"node_id": "node-1"}' \$CP sluice.v1.Fleet/WatchStats

  # the same with scripts/sluicectl.py (python3-grpcio, server reflection):
  $CTL \$CP list
  $CTL -d '{"ruleset": "edge"}' \$CP sluice.v1.PolicyAdmin/GetHistory
  $CTL -d '{"ruleset": "edge", "toVersion": $v1, "author": "me"}' \$CP sluice.v1.PolicyAdmin/Rollback
  $CTL -d '{}' \$CP sluice.v1.Fleet/WatchNodes
  $CTL -d '{"node_id": "node-1"}' \$CP sluice.v1.Fleet/WatchStats

  curl -si -H 'Client-ID: acme-key-1' http://${LOCAL_NODE_LISTEN[node-1]}/api/hello.txt
  curl -s http://${LOCAL_NODE_ADMIN[node-1]}/metrics | grep sluice_sync_
  curl -s http://$LOCAL_CONTROL_METRICS/metrics | grep sluice_control_
  bash deploy/launch-local.sh 3     # a fleet of your own, until Ctrl-C
EOF
printf '\ndemo: done in %d.%01d s\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100))

if [ "$keep" = 1 ]; then
	printf '\n%sThe fleet keeps running (--keep). Ctrl-C stops everything.%s\n' "$B" "$N"
	while :; do sleep 1; done
fi
