#!/usr/bin/env bash
# launch-local.sh - a local Sluice fleet on loopback until Ctrl-C: etcd, one
# sluice-control (mTLS for nodes, bearer token for the admin), a Python
# HTTP backend and N sluice-node in sync mode, all in one temp dir, with the
# same functions as scripts/demo.sh (deploy/local-lib.sh).
#
#   bash deploy/launch-local.sh [N] [--policy FILE | --no-policy] [--build-dir DIR]
#     N                 nodes to start (default 2, at most 64): node-1..node-N
#     --policy FILE     apply this sluice.v1.Ruleset JSON (its "name" must
#                       be "edge", the ruleset the nodes enforce) instead of
#                       the demo ruleset whose /api/ goes to the backend
#     --no-policy       apply nothing: nodes stay not ready until you do
#     --build-dir DIR   binaries of an existing build; skips install and build
#
# Prints every address and an env file to source in another shell; stops
# everything it started on Ctrl-C or SIGTERM. Logs: $DIR/*.log.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup.sh"
cd "$SLUICE_ROOT"

n=2
policy=demo
build_dir=
while [ $# -gt 0 ]; do
	case $1 in
	--policy) policy=${2:?--policy needs a file}; shift ;;
	--no-policy) policy= ;;
	--build-dir) build_dir=${2:?--build-dir needs a directory}; shift ;;
	-h|--help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
	[0-9]*) n=$1 ;;
	*) echo "launch-local.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
	esac
	shift
done
if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 64 ]; then
	echo "launch-local.sh: N must be 1..64, got '$n'" >&2
	exit 2
fi
if [ -n "$policy" ] && [ "$policy" != demo ] && [ ! -r "$policy" ]; then
	echo "launch-local.sh: cannot read '$policy'" >&2
	exit 2
fi
[ "$policy" = demo ] || [ -z "$policy" ] || policy=$(cd "$(dirname "$policy")" && pwd)/$(basename "$policy")
if [ -z "$build_dir" ]; then
	sluice_install_packages
	sluice_build build
	build_dir=build
fi

. "$SLUICE_ROOT/deploy/local-lib.sh"
local_init "$build_dir"
local_install_traps

ids=()
for ((i = 1; i <= n; i++)); do ids+=("node-$i"); done
local_start_etcd
local_gen_certs "${ids[@]}"
local_start_control
local_start_backend
for id in "${ids[@]}"; do
	local_start_node "$id" "index=${id#node-}"
done

if [ -n "$policy" ]; then
	if [ "$policy" = demo ]; then
		local_demo_ruleset >"$LOCAL_DIR/demo-policy.json"
		policy=$LOCAL_DIR/demo-policy.json
	fi
	v=$(local_apply_ruleset "$policy" "launch-local.sh: $(basename "$policy")")
	for id in "${ids[@]}"; do local_wait_version "$id" "$v" 15; done
	echo "launch-local: ruleset '$LOCAL_RULESET' version $v enforced by ${#ids[@]} node(s)"
fi

cat >"$LOCAL_DIR/env" <<EOF
# source this file in another shell
export CP=$LOCAL_CONTROL_ADDR
export PKI=$LOCAL_PKI
export TOKEN=$LOCAL_TOKEN
export ETCD=$LOCAL_ETCD_URL
EOF
for id in "${ids[@]}"; do
	v=${id//-/_}
	echo "export ${v^^}=${LOCAL_NODE_LISTEN[$id]} ${v^^}_ADMIN=${LOCAL_NODE_ADMIN[$id]}" >>"$LOCAL_DIR/env"
done

cat <<EOF
launch-local: up, in $LOCAL_DIR
  etcd            $LOCAL_ETCD_URL
  sluice-control  $LOCAL_CONTROL_ADDR  metrics http://$LOCAL_CONTROL_METRICS/metrics  config $LOCAL_DIR/control.yaml
  backend         http://127.0.0.1:$LOCAL_BACKEND_PORT
EOF
for id in "${ids[@]}"; do
	printf '  %-15s http://%s  admin http://%s  config %s\n' "$id" "${LOCAL_NODE_LISTEN[$id]}" \
		"${LOCAL_NODE_ADMIN[$id]}" "$LOCAL_DIR/$id.yaml"
done
cat <<EOF

  . $LOCAL_DIR/env
  scripts/sluicectl.py -cacert \$PKI/ca.pem -H "authorization: Bearer \$TOKEN" -d '{}' \$CP sluice.v1.Fleet/ListNodes
  curl -i -H 'Client-ID: acme-key-1' http://\$NODE_1/api/hello.txt

Ctrl-C stops everything.
EOF
while :; do sleep 1; done
