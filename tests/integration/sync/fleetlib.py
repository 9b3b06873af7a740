"""fleetlib: a private fleet on loopback for the python sync tests and
benchmarks, the fleet layer above tests/support/sluicetest.py: sluice-control
replicas (plaintext, or mTLS from scripts/gen-certs.sh certificates) that
can be kill -9'd and restarted on their port, sluice-node processes in sync
mode, the admin API through python3-grpcio with retries across replicas,
and reading a node's fail-static state file.

Used by tests/integration/sync/{fleet_sync_test,chaos_test}.py and
bench/fleet/e2e_bench.py. Every name of sluicetest is re-exported here
(fl.free_port, fl.Etcd, fl.wait_for, ...).

Contract: that of sluicetest (bounded waits raising Failure, processes
started from the main thread under PR_SET_PDEATHSIG, skip_unless_ready()
exits 77). Temp files live in one directory (tmp, from make_tmp()); the
caller removes it on success and keeps it on failure for the logs.
configure() names the binaries once before any Control or Node.
"""
import hashlib
import os
import struct
import tempfile
import time

from sluicetest import *  # noqa: F401,F403 -- the layer re-exports the harness
from sluicetest import (WAIT_S, ControlProc, Failure, NodeProc, check, compile_protos,
                        http_get, metric, stop_proc)

TOKEN = "fleetlib-token"
BEARER = (("authorization", "Bearer " + TOKEN),)
RULESET = "edge"
PREFIX = "/sluice/v1/"

# grpc status codes on which a write is retried: the replica is down,
# starting, or the answer was lost. The write may or may not have committed.
RETRY_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


def load_protos(proto_dir, out_dir):
    """Compiles the sluice protos into out_dir and returns the modules
    (admin_pb2, admin_pb2_grpc, policy_pb2, sync_pb2)."""
    compile_protos(proto_dir, out_dir)
    from sluice.v1 import admin_pb2, admin_pb2_grpc, policy_pb2, sync_pb2
    return admin_pb2, admin_pb2_grpc, policy_pb2, sync_pb2


class Control:
    """One sluice-control replica on a fixed port: plaintext, or with pki
    (a gen-certs.sh directory) mTLS requiring client certificates. The
    process only: admin calls go through Admin, which owns its channels.
    start() after kill9()/stop() restarts it on the same port."""

    def __init__(self, tmp, etcd, port, name, pki=None):
        self.tmp, self.etcd, self.port, self.name, self.pki = tmp, etcd, port, name, pki
        self.proc = None
        self.starts = 0
        self.tokens = os.path.join(tmp, "tokens")
        with open(self.tokens, "w") as f:
            f.write(TOKEN + "\n")
        self.start()

    def start(self):
        self.starts += 1
        if self.pki:
            sec = ["--tls-cert", self.pki + "/control.pem", "--tls-key",
                   self.pki + "/control.key", "--tls-ca", self.pki + "/ca.pem",
                   "--require-client-cert"]
        else:
            sec = ["--plaintext"]
        self.p = ControlProc(
            [self.control_bin, "--listen", "127.0.0.1:%d" % self.port,
             "--etcd", self.etcd.url, "--admin-token-file", self.tokens,
             "--replica-id", self.name] + sec,
            os.path.join(self.tmp, "%s-%d.log" % (self.name, self.starts)), self.name)
        self.proc, self.log_path = self.p.proc, self.p.log_path

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.p.kill9()

    def stop(self):
        if self.proc is not None:
            self.p.stop()

    def text(self):
        return self.p.text()


class Admin:
    """PolicyAdmin calls to a set of replicas. One channel per port, made
    again after a failure so that gRPC's own reconnect backoff (which grows
    to minutes) never decides how soon a restarted replica is used. Not
    thread-safe: one Admin per thread."""

    def __init__(self, pb, ports):
        import grpc
        self.grpc = grpc
        self.admin_pb2, self.admin_pb2_grpc = pb[0], pb[1]
        self.ports = list(ports)
        self.chans = {}

    def _stub(self, port):
        if port not in self.chans:
            ch = self.grpc.insecure_channel("127.0.0.1:%d" % port)
            self.chans[port] = (ch, self.admin_pb2_grpc.PolicyAdminStub(ch))
        return self.chans[port][1]

    def drop(self, port):
        ch = self.chans.pop(port, None)
        if ch:
            ch[0].close()

    def apply_once(self, port, upserts=(), removes=(), message="test", timeout=5):
        from google.protobuf import json_format
        req = json_format.ParseDict({"ruleset": RULESET, "upserts": list(upserts),
                                     "removes": list(removes), "author": "fleetlib",
                                     "message": message}, self.admin_pb2.ApplyChangesRequest())
        return self._stub(port).ApplyChanges(req, metadata=BEARER,
                                             timeout=timeout).version.version

    def apply(self, upserts=(), removes=(), message="test", first=0, deadline_s=WAIT_S):
        """ApplyChanges, retried on RETRY_CODES across the replicas starting
        with ports[first], until deadline_s. Returns (version, attempts)."""
        deadline = time.monotonic() + deadline_s
        attempt = 0
        while True:
            port = self.ports[(first + attempt) % len(self.ports)]
            attempt += 1
            try:
                return self.apply_once(port, upserts, removes, message), attempt
            except self.grpc.RpcError as e:
                if e.code().name not in RETRY_CODES:
                    raise Failure("ApplyChanges on :%d: %s %s" % (port, e.code().name,
                                                                  e.details()))
                self.drop(port)
                if time.monotonic() > deadline:
                    raise Failure("ApplyChanges: no replica acknowledged within %.0f s "
                                  "(last: %s %s)" % (deadline_s, e.code().name, e.details()))
                time.sleep(0.02)

    def get_ruleset(self, port, version=0):
        req = self.admin_pb2.GetRulesetRequest(ruleset=RULESET, version=version)
        return self._stub(port).GetRuleset(req, metadata=BEARER, timeout=10)

    def close(self):
        for p in list(self.chans):
            self.drop(p)


class Node:
    """A sluice-node in sync mode (ruleset RULESET) on endpoints, with its
    state directory in tmp. tls = (pki, cert name) for mTLS to the control
    plane (server name sluice-control), else plaintext. start() after stop()
    restarts it on the same configuration and state."""

    def __init__(self, tmp, name, endpoints, workers=1, tls=None, backoff_max_ms=500,
                 report_interval_ms=1000):
        self.name = name
        self.tmp = tmp
        self.state = os.path.join(tmp, "state-" + name)
        self.cfg = os.path.join(tmp, name + ".yaml")
        if tls:
            pki, cert = tls
            sec = ("  tls:\n    ca: %s/ca.pem\n    cert: %s/%s.pem\n    key: %s/%s.key\n"
                   "    server_name: sluice-control\n" % (pki, pki, cert, pki, cert))
        else:
            sec = "  plaintext: true\n"
        with open(self.cfg, "w") as f:
            f.write("""node:
  id: %s
  ruleset: %s
  labels: {role: test}
proxy:
  listen: 127.0.0.1:0
  workers: %d
admin:
  listen: 127.0.0.1:0
sync:
  endpoints: [%s]
%s  state_dir: %s
  connect_timeout_ms: 1000
  backoff_min_ms: 50
  backoff_max_ms: %d
  report_interval_ms: %d
""" % (name, RULESET, workers, ", ".join('"127.0.0.1:%d"' % p for p in endpoints), sec,
                self.state, backoff_max_ms, report_interval_ms))
        self.start()

    def start(self):
        self.p = NodeProc([self.node_bin, "--config", self.cfg],
                          os.path.join(self.tmp, "%s-%d.log" % (self.name, time.monotonic_ns())),
                          self.name)
        self.proc, self.log_path = self.p.proc, self.p.log_path
        self.port = self.p.port("listen")
        self.admin = self.p.port("admin")

    def get(self, path, timeout=5, client=None):
        """The HTTP status of GET path on the proxy (Client-ID: client)."""
        return http_get(self.port, path, {"Client-ID": client} if client else None,
                        timeout=timeout)[0]

    def metrics(self):
        st, body = http_get(self.admin, "/metrics")
        return body if st == 200 else ""

    def version(self):
        v = metric(self.metrics(), "sluice_sync_version")
        return int(v) if v is not None else None

    def state_file(self):
        """(header version, packed Snapshot payload) of the persisted state
        file (layout: dataplane/sync/README.md), or None while absent."""
        path = os.path.join(self.state, RULESET + ".snapshot")
        try:
            with open(path, "rb") as f:
                b = f.read()
        except FileNotFoundError:
            return None
        check(len(b) >= 48 and b[:8] == b"SLCSNAP\0", "%s: bad state file magic" % self.name)
        fmt, hlen, version, plen, _at, _sum = struct.unpack_from("<IIQQQQ", b, 8)
        check(fmt == 1 and hlen == 48 and len(b) == 48 + plen,
              "%s: state file format %d, header %d, %d bytes for payload %d"
              % (self.name, fmt, hlen, len(b), plen))
        return version, b[48:]

    def text(self):
        return self.p.text()

    def stop(self):
        """SIGTERM, bounded wait (then SIGKILL); the exit status."""
        st = stop_proc(self.proc, WAIT_S + 10)
        self.p._close()
        return st


def resource_hash(resources):
    """Canonical content hash of a list of policy Resource messages: each
    resource serialized deterministically, the encodings sorted (order of
    resources carries no meaning), length-prefixed, SHA-256."""
    encs = sorted(r.SerializeToString(deterministic=True) for r in resources)
    h = hashlib.sha256()
    for e in encs:
        h.update(struct.pack("<Q", len(e)))
        h.update(e)
    return h.hexdigest()


def setup(argv, prefix):
    """For a script run as `SCRIPT SLUICE_CONTROL SLUICE_NODE PROTO_DIR`:
    names the binaries, makes the temp directory and compiles the protos.
    Returns (ctx, pb): ctx = {"tmp", "nodes": [], "cps": []} for the
    caller to fill (print_logs, teardown), pb as load_protos."""
    control, node, proto_dir = argv[1:4]
    configure(control, node)
    tmp = make_tmp(prefix)
    return {"tmp": tmp, "nodes": [], "cps": []}, load_protos(proto_dir, tmp)


def print_logs(ctx, tail=2000):
    """After a failure: the last tail characters of every node's and
    replica's log in ctx (a dict with "nodes", "cps", "tmp"), and where the
    logs are kept."""
    for p in ctx["nodes"] + ctx["cps"]:
        print("---- %s log ----\n%s" % (p.name, p.text()[-tail:]))
    print("logs kept in %s" % ctx["tmp"], flush=True)


def teardown(ctx):
    """Stops every node, replica and the etcd in ctx (bounded). Returns
    [(node name, exit status)] of the nodes that did not exit 0."""
    bad = []
    for n in ctx["nodes"]:
        st = n.stop()
        if st != 0:
            bad.append((n.name, st))
    for cp in ctx["cps"]:
        cp.stop()
    if "etcd" in ctx:
        ctx["etcd"].kill()
    return bad


def make_tmp(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def configure(control_bin, node_bin):
    Control.control_bin = control_bin
    Node.node_bin = node_bin
