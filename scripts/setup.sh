#!/usr/bin/env bash
# Installs the Debian packages Sluice needs (only the missing ones,
# non-interactive, idempotent) and configures + builds a meson build dir.
# Sourced by scripts/test.sh and scripts/demo.sh; usable alone:
#   bash scripts/setup.sh [BUILD_DIR [meson options...]]
set -euo pipefail

SLUICE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Build, libraries (pkg-config), test clients and benchmark peers.
SLUICE_PACKAGES=(
	build-essential meson ninja-build pkg-config python3
	libgrpc-dev libprotobuf-c-dev protobuf-c-compiler grpc-proto
	libbpf-dev bpftool clang-14 llvm-14 libclang-rt-14-dev
	liburing-dev libssl-dev libcurl4-openssl-dev libcriterion-dev
	liburcu-dev libjson-c-dev libyaml-dev libxxhash-dev
	etcd-server etcd-client python3-grpcio python3-grpc-tools python3-protobuf
	curl openssl wrk nginx haproxy iproute2
)

sluice_install_packages() {
	local missing=() p
	for p in "${SLUICE_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "setup: installing ${missing[*]}" >&2
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# sluice_build DIR [meson options...]: configure once, then build.
sluice_build() {
	local dir=$1
	shift
	if [ ! -f "$SLUICE_ROOT/$dir/build.ninja" ]; then
		meson setup "$SLUICE_ROOT/$dir" "$SLUICE_ROOT" "$@" >/dev/null
	fi
	ninja -C "$SLUICE_ROOT/$dir" >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	sluice_install_packages
	sluice_build "${1:-build}" "${@:2}"
fi
