# deploy/local-lib.sh - start and stop a local Sluice fleet on loopback:
# etcd, one sluice-control (mTLS for nodes, a bearer token for the admin),
# a Python HTTP backend and sluice-node processes in sync mode. Sourced by
# scripts/demo.sh and deploy/launch-local.sh (bash only; not run alone).
#
# Invariants: everything lives in one temp dir ($LOCAL_DIR); every port is
# chosen free on 127.0.0.1 (or asked as port 0 and read back from the ready
# line); every process started is recorded in LOCAL_PIDS and local_stop_all
# stops exactly those PIDs, nodes first, each with a bounded wait.
#
# Functions return non-zero with a message on stderr; callers run with
# `set -e`. Variables they set are listed at each function.
# shellcheck disable=SC2034  # LOCAL_* are read by the scripts sourcing this

LOCAL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_PY=/usr/bin/python3 # Debian's python3 has grpcio; a pyenv one on PATH may not
LOCAL_ETCD=${LOCAL_ETCD:-/usr/bin/etcd}
LOCAL_RULESET=edge
LOCAL_PIDS=()
LOCAL_PID_NAMES=()
declare -A LOCAL_NODE_LISTEN=() LOCAL_NODE_ADMIN=()
LOCAL_KEEP_DIR=${LOCAL_KEEP_DIR:-0}

local_die() {
	echo "local: $*" >&2
	return 1
}

# local_init BUILD_DIR: checks the binaries and tools, makes the temp dir.
# Sets LOCAL_BUILD, LOCAL_DIR, LOCAL_CONTROL_BIN, LOCAL_NODE_BIN.
local_init() {
	LOCAL_BUILD=$(cd "$1" && pwd) || return 1
	LOCAL_CONTROL_BIN=$LOCAL_BUILD/controlplane/sluice-control
	LOCAL_NODE_BIN=$LOCAL_BUILD/dataplane/node/sluice-node
	local f
	for f in "$LOCAL_CONTROL_BIN" "$LOCAL_NODE_BIN" "$LOCAL_ETCD" "$LOCAL_PY"; do
		[ -x "$f" ] || local_die "'$f' is missing (build first: bash scripts/setup.sh)" || return 1
	done
	[ -f "$LOCAL_BUILD/proto/sluice.protoset" ] ||
		local_die "'$LOCAL_BUILD/proto/sluice.protoset' is missing" || return 1
	"$LOCAL_PY" -c 'import grpc' 2>/dev/null ||
		local_die "python3-grpcio is not installed" || return 1
	LOCAL_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-local.XXXXXX")
}

# Stop on exit, Ctrl-C or SIGTERM. INT/TERM only exit: the EXIT trap does
# the work once, whichever way the script ends.
local_install_traps() {
	trap local_stop_all EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# A free TCP port on 127.0.0.1 (bind to port 0, read it back, close). Only
# etcd needs this: our binaries take port 0 and report the real one.
local_free_port() {
	"$LOCAL_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# local_spawn NAME CMD...: background process, stdout to NAME.out, stderr to
# NAME.log in LOCAL_DIR. Sets LOCAL_LAST_PID.
local_spawn() {
	local name=$1
	shift
	"$@" >"$LOCAL_DIR/$name.out" 2>"$LOCAL_DIR/$name.log" &
	LOCAL_LAST_PID=$!
	LOCAL_PIDS+=("$LOCAL_LAST_PID")
	LOCAL_PID_NAMES+=("$name")
}

# True while PID runs. Not `kill -0`: that also succeeds on a child that
# exited but is not reaped yet (a zombie), which is what ours are until the
# `wait` in local_stop_all.
local_alive() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[ "${s%% *}" != Z ]
}

# local_wait_for WHAT TIMEOUT_S PID CMD...: polls CMD until it succeeds;
# fails early if PID (when not empty) has exited.
local_wait_for() {
	local what=$1 timeout=$2 pid=$3
	shift 3
	local deadline=$((SECONDS + timeout))
	until "$@" 2>/dev/null; do
		if [ -n "$pid" ] && ! local_alive "$pid"; then
			local_die "$what: the process exited (logs in $LOCAL_DIR)"
			return 1
		fi
		[ $SECONDS -lt $deadline ] || { local_die "timed out waiting for $what"; return 1; }
		sleep 0.05
	done
}

# local_ready_line NAME PREFIX: waits for the ready line on NAME.out and
# prints it.
local_ready_line() {
	local name=$1 prefix=$2
	local_wait_for "$name ready" 20 "$LOCAL_LAST_PID" grep -q "^$prefix" "$LOCAL_DIR/$name.out" || {
		tail -n 20 "$LOCAL_DIR/$name.log" >&2
		return 1
	}
	grep -m1 "^$prefix" "$LOCAL_DIR/$name.out"
}

# "listen=127.0.0.1:1234 admin=..." -> the value of KEY.
local_field() {
	local line=$1 key=$2 kv
	for kv in $line; do
		[ "${kv%%=*}" = "$key" ] && { echo "${kv#*=}"; return 0; }
	done
	return 1
}

# local_start_etcd: one member, data in LOCAL_DIR/etcd. Sets LOCAL_ETCD_URL.
local_start_etcd() {
	local client peer
	client=$(local_free_port) && peer=$(local_free_port) || return 1
	LOCAL_ETCD_URL=http://127.0.0.1:$client
	local_spawn etcd "$LOCAL_ETCD" --name sluice-local --data-dir "$LOCAL_DIR/etcd" \
		--listen-client-urls "$LOCAL_ETCD_URL" --advertise-client-urls "$LOCAL_ETCD_URL" \
		--listen-peer-urls "http://127.0.0.1:$peer" \
		--initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "sluice-local=http://127.0.0.1:$peer" --log-level warn
	local_wait_for "etcd healthy" 20 "$LOCAL_LAST_PID" \
		sh -c "curl -fsS --max-time 1 '$LOCAL_ETCD_URL/health' | grep -q true"
}

# local_gen_certs NODE_ID...: the test PKI (scripts/gen-certs.sh) in
# LOCAL_DIR/pki, plus an admin token. Sets LOCAL_PKI, LOCAL_TOKEN,
# LOCAL_TOKEN_FILE.
local_gen_certs() {
	LOCAL_PKI=$LOCAL_DIR/pki
	bash "$LOCAL_ROOT/scripts/gen-certs.sh" "$LOCAL_PKI" "$@" >/dev/null
	LOCAL_TOKEN=$(openssl rand -hex 16)
	LOCAL_TOKEN_FILE=$LOCAL_DIR/admin.token
	(umask 077 && printf '# admin bearer tokens, one per line\n%s\n' "$LOCAL_TOKEN" >"$LOCAL_TOKEN_FILE")
}

# local_start_control: TLS with client certificates verified against the
# test CA (nodes prove their id with them); without --require-client-cert,
# so an admin may come with the bearer token over server-authenticated TLS.
# Writes the same settings as a config file (control.yaml) for reference.
# Sets LOCAL_CONTROL_ADDR, LOCAL_CONTROL_METRICS.
local_start_control() {
	cat >"$LOCAL_DIR/control.yaml" <<-EOF
		# written by deploy/local-lib.sh; see deploy/control.yaml
		listen: "127.0.0.1:0"
		etcd: ["$LOCAL_ETCD_URL"]
		tls_cert: $LOCAL_PKI/control.pem
		tls_key: $LOCAL_PKI/control.key
		tls_ca: $LOCAL_PKI/ca.pem
		admin_token_file: $LOCAL_TOKEN_FILE
		metrics_listen: "127.0.0.1:0"
		replica_id: control-1
		workers: 2
		log_level: info
	EOF
	local_spawn control "$LOCAL_CONTROL_BIN" --config "$LOCAL_DIR/control.yaml"
	local line
	line=$(local_ready_line control "sluice-control: ready") || return 1
	LOCAL_CONTROL_ADDR=$(local_field "$line" listen)
	LOCAL_CONTROL_METRICS=$(local_field "$line" metrics) || LOCAL_CONTROL_METRICS=
}

# local_start_backend: python3 http.server on a free port, serving
# LOCAL_DIR/www (api/hello.txt). Sets LOCAL_BACKEND_PORT.
local_start_backend() {
	mkdir -p "$LOCAL_DIR/www/api"
	echo "hello from the backend" >"$LOCAL_DIR/www/api/hello.txt"
	# -u: the "Serving HTTP on ... port N" line must not sit in a buffer.
	local_spawn backend "$LOCAL_PY" -u -m http.server --bind 127.0.0.1 \
		--directory "$LOCAL_DIR/www" 0
	local line
	line=$(local_ready_line backend "Serving HTTP") || return 1
	LOCAL_BACKEND_PORT=$(sed -n 's/.* port \([0-9]*\).*/\1/p' <<<"$line")
	[ -n "$LOCAL_BACKEND_PORT" ] || local_die "backend: no port in '$line'"
}

# local_start_node ID [LABEL=VALUE...]: sluice-node in sync mode with its
# own certificate (CN = ID), state dir and ports. Sets
# LOCAL_NODE_LISTEN[ID], LOCAL_NODE_ADMIN[ID].
local_start_node() {
	local id=$1 kv labels=""
	shift
	for kv in "$@"; do labels+="    ${kv%%=*}: ${kv#*=}"$'\n'; done
	[ -n "$labels" ] || labels="    site: local"$'\n'
	mkdir -p "$LOCAL_DIR/state-$id"
	cat >"$LOCAL_DIR/$id.yaml" <<-EOF
		# written by deploy/local-lib.sh; deploy/node-sync.yaml explains each key
		node:
		  id: $id
		  ruleset: $LOCAL_RULESET
		  labels:
		$labels
		proxy:
		  listen: "127.0.0.1:0"
		  workers: 1
		  timeouts:
		    drain_ms: 2000
		admin:
		  listen: "127.0.0.1:0"
		log:
		  level: info
		sync:
		  endpoints: ["$LOCAL_CONTROL_ADDR"]
		  tls:
		    ca: $LOCAL_PKI/ca.pem
		    cert: $LOCAL_PKI/$id.pem
		    key: $LOCAL_PKI/$id.key
		    server_name: sluice-control
		  state_dir: $LOCAL_DIR/state-$id
		  connect_timeout_ms: 2000
		  backoff_min_ms: 100
		  backoff_max_ms: 2000
		  report_interval_ms: ${LOCAL_REPORT_MS:-1000}
	EOF
	local_spawn "$id" "$LOCAL_NODE_BIN" --config "$LOCAL_DIR/$id.yaml"
	local line
	line=$(local_ready_line "$id" "sluice-node: ready") || return 1
	LOCAL_NODE_LISTEN[$id]=$(local_field "$line" listen)
	LOCAL_NODE_ADMIN[$id]=$(local_field "$line" admin)
}

# local_ctl ARGS...: sluicectl.py (grpcurl-style) against the control
# plane with the CA and the admin token.
local_ctl() {
	"$LOCAL_PY" "$LOCAL_ROOT/scripts/sluicectl.py" -protoset "$LOCAL_BUILD/proto/sluice.protoset" \
		-cacert "$LOCAL_PKI/ca.pem" -H "authorization: Bearer $LOCAL_TOKEN" \
		"$LOCAL_CONTROL_ADDR" "$@"
}

# local_demo_ruleset: the demo's ruleset (proto3 JSON sluice.v1.Ruleset):
# /api/ proxied to the backend; client acme (Client-ID: acme-key-1) on the
# gold limit, 10/s with a burst of 10; anonymous callers 20/s per address.
local_demo_ruleset() {
	cat <<-EOF
		{
		  "name": "$LOCAL_RULESET",
		  "resources": [
		    { "settings": { "id": "global", "clientIdHeader": "Client-ID",
		                    "defaultRateLimit": "anonymous" } },
		    { "rateLimit": { "id": "anonymous", "algorithm": "TOKEN_BUCKET",
		                     "rate": "20", "unit": "SECOND", "burst": "20" } },
		    { "rateLimit": { "id": "gold", "algorithm": "TOKEN_BUCKET",
		                     "rate": "10", "unit": "SECOND", "burst": "10" } },
		    { "client": { "id": "acme", "keys": ["acme-key-1"], "rateLimit": "gold" } },
		    { "upstream": { "id": "backend", "endpoints": ["127.0.0.1:$LOCAL_BACKEND_PORT"],
		                    "connectTimeoutMs": 500 } },
		    { "route": { "id": "api", "pathPrefix": "/api/", "upstream": "backend",
		                 "methods": ["GET", "HEAD"] } }
		  ]
		}
	EOF
}

# local_apply_ruleset FILE MESSAGE: every resource of a Ruleset JSON file as
# one PolicyAdmin/ApplyChanges (upserts). Prints the new version.
local_apply_ruleset() {
	local file=$1 msg=$2 out
	out=$("$LOCAL_PY" -c '
import json, sys
rs = json.load(open(sys.argv[1]))
print(json.dumps({"ruleset": rs["name"], "author": sys.argv[2], "message": sys.argv[3],
                  "upserts": rs["resources"]}))' "$file" "${USER:-local}" "$msg" |
		local_ctl -d @ sluice.v1.PolicyAdmin/ApplyChanges) || return 1
	local_json_version <<<"$out"
}

# Reads an ApplyChanges reply (VersionInfo) on stdin, prints its version.
local_json_version() {
	"$LOCAL_PY" -c 'import json, sys; print(json.load(sys.stdin)["version"]["version"])'
}

# local_node_version ID: the version the node enforces (sluice_sync_version).
local_node_version() {
	curl -fsS --max-time 2 "http://${LOCAL_NODE_ADMIN[$1]}/metrics" |
		sed -n 's/^sluice_sync_version \([0-9.e+]*\)$/\1/p' | head -n1 | cut -d. -f1
}

local_node_at_version() { # ID VERSION
	[ "$(local_node_version "$1")" = "$2" ]
}

# local_wait_version ID VERSION [TIMEOUT_S]: until the node enforces VERSION.
local_wait_version() {
	local_wait_for "$1 at version $2" "${3:-15}" "" local_node_at_version "$1" "$2"
}

# local_stop_all: SIGTERM to every recorded PID in reverse start order
# (nodes drain before their control plane and etcd go), at most 10 s each,
# then SIGKILL. Removes LOCAL_DIR unless LOCAL_KEEP_DIR=1.
local_stop_all() {
	local i pid deadline
	# Runs as the EXIT trap, maybe under `set -e`: `wait` returns the
	# child's status (143 for a process SIGTERM ends), which must not cut
	# the loop short and leave the rest running.
	set +e
	trap - INT TERM
	for ((i = ${#LOCAL_PIDS[@]} - 1; i >= 0; i--)); do
		pid=${LOCAL_PIDS[$i]}
		if kill -TERM "$pid" 2>/dev/null; then
			deadline=$((SECONDS + 10))
			while local_alive "$pid" && [ $SECONDS -lt $deadline ]; do
				sleep 0.05
			done
			if local_alive "$pid"; then
				echo "local: ${LOCAL_PID_NAMES[$i]} (pid $pid) ignored SIGTERM for 10 s, killing it" >&2
				kill -KILL "$pid" 2>/dev/null
			fi
		fi
		wait "$pid" 2>/dev/null
	done
	LOCAL_PIDS=()
	LOCAL_PID_NAMES=()
	if [ -n "${LOCAL_DIR:-}" ] && [ -d "$LOCAL_DIR" ]; then
		if [ "$LOCAL_KEEP_DIR" = 1 ]; then
			echo "local: logs and state kept in $LOCAL_DIR" >&2
		else
			rm -rf "$LOCAL_DIR"
		fi
	fi
}
