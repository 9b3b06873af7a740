"""fleetlib: a private fleet on loopback for the python sync tests and
benchmarks: a real etcd, real sluice-control replicas, real sluice-node
processes in sync mode (plaintext), the admin API through python3-grpcio,
HTTP probes, and reading a node's fail-static state file.

Used by tests/integration/sync/chaos_test.py and bench/fleet/e2e_bench.py
(fleet_sync_test.py keeps its own copy of the same approach).

Contract:
- Every process is started by the caller's thread with PR_SET_PDEATHSIG
  (SIGKILL, through setpriv), so nothing outlives a test killed by meson's
  timeout. The signal follows the *thread* that started the process: start
  processes from the main thread only.
- Every wait is bounded (WAIT_S unless told) and raises Failure when it runs
  out; Failure is a test failure, never a skip.
- skip_unless_ready() exits 77 without /usr/bin/etcd or python3-grpcio.
- Temp files live in one directory (Fleet.tmp); the caller removes it on
  success and keeps it on failure for the logs.
"""
import base64
import hashlib
import importlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ETCD = "/usr/bin/etcd"
WAIT_S = 15.0
TOKEN = "fleetlib-token"
BEARER = (("authorization", "Bearer " + TOKEN),)
RULESET = "edge"
PREFIX = "/sluice/v1/"

# grpc status codes on which a write is retried: the replica is down,
# starting, or the answer was lost. The write may or may not have committed.
RETRY_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def skip_unless_ready(prog):
    """Exit 77 (meson skip) without etcd or the python gRPC packages."""
    if not os.access(ETCD, os.X_OK):
        print("%s: skipped: no %s" % (prog, ETCD))
        sys.exit(77)
    try:
        importlib.import_module("grpc")
        importlib.import_module("grpc_tools.protoc")
    except ImportError as e:
        print("%s: skipped: %s (needs python3-grpcio, python3-grpc-tools)" % (prog, e))
        sys.exit(77)


def wait_for(what, fn, timeout=WAIT_S, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    raise Failure("timed out after %.0f s waiting for %s" % (timeout, what))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, headers=None, timeout=5):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def spawn(argv, stdout, stderr):
    """Popen under `setpriv --pdeathsig KILL`. Not preexec_fn: that makes
    Python fork(), and fork() runs grpcio's pthread_atfork handler, which
    deadlocks (seen: the main thread stuck in __run_prefork_handlers) while
    other threads are inside gRPC calls. Without preexec_fn Python uses
    vfork, which runs no atfork handlers."""
    return subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--"] + list(argv),
                            stdout=stdout, stderr=stderr)


def read_ready(proc, prefix, what, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        r, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not r:
            raise Failure("%s: no ready line in %.0f s" % (what, timeout))
        c = os.read(proc.stdout.fileno(), 1)
        if not c:
            raise Failure("%s exited before ready (status %r)" % (what, proc.wait()))
        line += c
    line = line.decode().strip()
    check(line.startswith(prefix), "%s ready line %r" % (what, line))
    return line


def stop_proc(proc, timeout=WAIT_S):
    """SIGTERM, bounded wait, then SIGKILL. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def load_protos(proto_dir, out_dir):
    """Compiles the sluice protos into out_dir and returns the modules."""
    from grpc_tools import protoc
    if protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out_dir,
                    "--grpc_python_out=" + out_dir, "sluice/v1/policy.proto",
                    "sluice/v1/admin.proto", "sluice/v1/sync.proto",
                    "sluice/v1/fleet.proto"]) != 0:
        raise Failure("protoc could not compile the protos in %s" % proto_dir)
    sys.path.insert(0, out_dir)
    from sluice.v1 import admin_pb2, admin_pb2_grpc, policy_pb2, sync_pb2
    return admin_pb2, admin_pb2_grpc, policy_pb2, sync_pb2


class Etcd:
    def __init__(self, tmp):
        self.client, self.peer = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.client
        peer = "http://127.0.0.1:%d" % self.peer
        self.log = open(os.path.join(tmp, "etcd.log"), "ab")
        self.proc = spawn(
            [ETCD, "--name", "n", "--data-dir", os.path.join(tmp, "etcd"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "n=" + peer, "--log-level", "warn"],
            self.log, self.log)

        def healthy():
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    return b"true" in r.read()
            except OSError:
                return False
        wait_for("etcd healthy", healthy, timeout=30)

    def _range(self, key, range_end=None):
        q = {"key": base64.b64encode(key).decode()}
        if range_end is not None:
            q["range_end"] = base64.b64encode(range_end).decode()
        req = urllib.request.Request(self.url + "/v3/kv/range", data=json.dumps(q).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read()).get("kvs", [])

    def range_prefix(self, prefix):
        """Every (key, value bytes) under prefix, read from etcd itself
        through its v3 JSON gateway (one linearizable range)."""
        k = prefix.encode()
        return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")))
                for kv in self._range(k, k[:-1] + bytes([k[-1] + 1]))]

    def mod_revision(self, key):
        """The etcd revision that last wrote key (0 when absent)."""
        kvs = self._range(key.encode())
        return int(kvs[0]["mod_revision"]) if kvs else 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Control:
    """One sluice-control replica (plaintext). The process only: admin calls
    go through Admin, which owns its channels."""

    def __init__(self, tmp, etcd, port, name):
        self.tmp, self.etcd, self.port, self.name = tmp, etcd, port, name
        self.proc = None
        self.starts = 0
        self.tokens = os.path.join(tmp, "tokens")
        with open(self.tokens, "w") as f:
            f.write(TOKEN + "\n")
        self.start()

    def start(self):
        self.starts += 1
        self.log_path = os.path.join(self.tmp, "%s-%d.log" % (self.name, self.starts))
        with open(self.log_path, "ab") as log:
            self.proc = spawn(
                [self.control_bin, "--listen", "127.0.0.1:%d" % self.port,
                 "--etcd", self.etcd.url, "--admin-token-file", self.tokens,
                 "--replica-id", self.name, "--plaintext"],
                subprocess.PIPE, log)
        read_ready(self.proc, "sluice-control: ready", self.name)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()

    def stop(self):
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc.stdout.close()

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


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
    def __init__(self, tmp, name, endpoints, workers=1):
        self.name = name
        self.tmp = tmp
        self.state = os.path.join(tmp, "state-" + name)
        self.cfg = os.path.join(tmp, name + ".yaml")
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
  plaintext: true
  state_dir: %s
  connect_timeout_ms: 1000
  backoff_min_ms: 50
  backoff_max_ms: 500
  report_interval_ms: 1000
""" % (name, RULESET, workers, ", ".join('"127.0.0.1:%d"' % p for p in endpoints),
                self.state))
        self.start()

    def start(self):
        self.log_path = os.path.join(self.tmp, "%s-%d.log" % (self.name, time.monotonic_ns()))
        with open(self.log_path, "w") as log:
            self.proc = spawn([self.node_bin, "--config", self.cfg], subprocess.PIPE, log)
        line = read_ready(self.proc, "sluice-node: ready", self.name)
        addrs = dict(kv.split("=", 1) for kv in line.split()[2:])
        self.port = int(addrs["listen"].rsplit(":", 1)[1])
        self.admin = int(addrs["admin"].rsplit(":", 1)[1])

    def get(self, path, timeout=5):
        return http_get(self.port, path, timeout=timeout)[0]

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
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        st = stop_proc(self.proc, WAIT_S + 10)
        self.proc.stdout.close()
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


def make_tmp(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def configure(control_bin, node_bin):
    Control.control_bin = control_bin
    Node.node_bin = node_bin
