#!/usr/bin/env bash
# gen-certs.sh DIR [NODE_ID...] - test PKI for both planes, openssl CLI only.
#
# Makes in DIR (created if missing), all EC P-256, signed by one test CA:
#   ca.pem ca.key                 the test CA
#   server.pem server.key         node TLS listener: localhost, 127.0.0.1, ::1
#   control.pem control.key       control-plane gRPC server: same names plus
#                                 sluice-control
#   NODE_ID.pem NODE_ID.key       node client certs, CN=NODE_ID (default
#                                 node-1 node-2)
#   admin.pem admin.key           admin client cert, OU=admin, CN=admin
# Idempotent: existing files are kept, missing ones made with the existing CA.
# Every file is written to a temporary name and renamed, so a reader never
# sees half a file. Test use only: keys are unencrypted.
set -euo pipefail

if [ $# -lt 1 ]; then
	echo "usage: $0 DIR [NODE_ID...]" >&2
	exit 2
fi
dir=$1
shift
nodes=("$@")
[ ${#nodes[@]} -gt 0 ] || nodes=(node-1 node-2)
days=3650

mkdir -p "$dir"
work=$(mktemp -d "$dir/.gen.XXXXXX")
trap 'rm -rf "$work"' EXIT
umask 077

for n in "${nodes[@]}" ; do
	case $n in
	''|*/*|.*|*[!A-Za-z0-9._-]*)
		echo "$0: bad node id '$n'" >&2
		exit 2 ;;
	esac
done

newkey() { # OUT
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# A serial from 64 random bits, so that two certificates for the same name
# (a reload test's old and new pair) are told apart.
serial() {
	echo "0x$(openssl rand -hex 8)"
}

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
	newkey "$work/ca.key"
	openssl req -new -x509 -key "$work/ca.key" -out "$work/ca.pem" -days "$days" \
		-subj "/O=Sluice Test/CN=Sluice Test CA" -set_serial "$(serial)" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash"
	mv "$work/ca.key" "$dir/ca.key"
	mv "$work/ca.pem" "$dir/ca.pem"
fi

leaf() { # NAME SUBJECT EKU SAN(or empty)
	local name=$1 subj=$2 eku=$3 san=$4
	[ -s "$dir/$name.pem" ] && [ -s "$dir/$name.key" ] && return 0
	newkey "$work/$name.key"
	openssl req -new -key "$work/$name.key" -out "$work/$name.csr" -subj "$subj"
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$eku"
		echo "authorityKeyIdentifier=keyid"
		[ -z "$san" ] || echo "subjectAltName=$san"
	} > "$work/$name.ext"
	openssl x509 -req -in "$work/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
		-set_serial "$(serial)" -days "$days" -extfile "$work/$name.ext" \
		-out "$work/$name.pem" 2>/dev/null
	mv "$work/$name.key" "$dir/$name.key"
	mv "$work/$name.pem" "$dir/$name.pem"
}

names="DNS:localhost,IP:127.0.0.1,IP:::1"
leaf server "/O=Sluice Test/CN=localhost" serverAuth "$names"
leaf control "/O=Sluice Test/CN=sluice-control" serverAuth "DNS:sluice-control,$names"
for n in "${nodes[@]}"; do
	leaf "$n" "/O=Sluice Test/OU=node/CN=$n" clientAuth ""
done
leaf admin "/O=Sluice Test/OU=admin/CN=admin" clientAuth ""

# Certificates are public; only keys stay owner-only.
chmod 644 "$dir"/*.pem
