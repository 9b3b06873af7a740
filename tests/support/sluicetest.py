"""sluicetest: the one harness of the Python integration tests and
benchmarks. Real processes on loopback: a private etcd, sluice-control,
sluice-node; HTTP probes and Prometheus text; the sluice protos compiled
for python3-grpcio; the bootstrap protocols (health, reflection) from the
build's descriptor set.

Found through PYTHONPATH (set by each test's meson.build to
tests/support). Used by tests/integration/{rpc,fleet,sync,node} and
bench/fleet; tests/integration/sync/fleetlib.py is the fleet layer above it.

Contract:
- Every wait is bounded (WAIT_S unless told) and raises Failure when it runs
  out. Failure is an AssertionError, so tests written with `assert` and tests
  written with check() report it the same way; it is a failure, never a skip.
- Every process is started through spawn(): `setpriv --pdeathsig KILL`, so
  nothing outlives a test that meson's timeout kills. The signal follows the
  *thread* that started the process: start processes from the main thread.
- Nothing here removes files; the caller owns its temp directory.
- skip_unless_ready() exits 77 (meson skip) without /usr/bin/etcd or the
  Python gRPC packages; import grpc only after calling it.
"""
import base64
import importlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ETCD = "/usr/bin/etcd"
WAIT_S = 15.0


class Failure(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def skip_unless_ready(prog, etcd=True, modules=("grpc", "grpc_tools.protoc")):
    """Exit 77 without etcd (when etcd is true) or one of modules."""
    if etcd and not os.access(ETCD, os.X_OK):
        print("%s: skipped: no %s (Debian package etcd-server)" % (prog, ETCD))
        sys.exit(77)
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError as e:
            print("%s: skipped: %s (needs python3-grpcio, python3-grpc-tools)" % (prog, e))
            sys.exit(77)


def wait_for(what, fn, timeout=WAIT_S, step=0.05, ignore=()):
    """Polls fn() until it returns a true value, which is returned. An
    exception of a class in ignore counts as "not yet" (the last one is
    named in the Failure)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except ignore as e:
            last = e
        time.sleep(step)
    raise Failure("timed out after %g s waiting for %s%s"
                  % (timeout, what, " (last: %s)" % last if last else ""))


def expect_code(fn, code):
    """fn() must fail with the gRPC status code; returns the RpcError."""
    import grpc
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, "expected %s, got %s: %s" % (code, e.code(), e.details()))
        return e
    raise Failure("expected %s, the call succeeded" % code)


def free_port():
    """A loopback TCP port free right now (racy by nature, good enough on a
    test machine: the kernel does not hand it out again soon)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_of(addr):
    """"127.0.0.1:8080" -> 8080."""
    return int(addr.rsplit(":", 1)[1])


def http_get(addr, path, headers=None, timeout=5):
    """(status, body text) of GET http://addr/path; addr is a loopback port
    or "host:port". HTTP error statuses are returned, not raised; a
    connection failure raises OSError."""
    host = "127.0.0.1:%d" % addr if isinstance(addr, int) else addr
    req = urllib.request.Request("http://%s%s" % (host, path), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def metric(text, name, labels=""):
    """Value of one sample of Prometheus text, None when absent. labels is
    the exact label text, e.g. '{ruleset="edge"}'."""
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def parse_metrics(text):
    """Every sample of Prometheus text: {'name{labels}': value}."""
    vals = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            vals[k] = float(v)
    return vals


def spawn(argv, stdout, stderr, stdin=subprocess.DEVNULL):
    """Popen under `setpriv --pdeathsig KILL`. Not preexec_fn: that makes
    Python fork(), and fork() runs grpcio's pthread_atfork handler, which
    deadlocks (seen: the main thread stuck in __run_prefork_handlers) while
    other threads are inside gRPC calls. Without preexec_fn Python uses
    vfork, which runs no atfork handlers. setpriv execs the program, so the
    pid is the program's own."""
    return subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--"] + list(argv),
                            stdin=stdin, stdout=stdout, stderr=stderr)


def read_ready(proc, prefix, what, timeout=WAIT_S, log=None):
    """The first stdout line of proc, which must start with prefix. Reads
    the raw fd a byte at a time: a buffered read could hide the line from
    select. On a timeout or an early exit the process is killed and the
    Failure carries log() (its log text) when given."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        r, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not r:
            proc.kill()
            proc.wait()
            raise Failure("%s: no ready line within %.0f s; log: %s"
                          % (what, timeout, log() if log else ""))
        c = os.read(proc.stdout.fileno(), 1)
        if not c:
            try:
                st = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                st = proc.wait()
            raise Failure("%s exited %s before ready; log: %s"
                          % (what, st, log() if log else ""))
        line += c
    line = line.decode().strip()
    check(line.startswith(prefix), "%s ready line %r" % (what, line))
    return line


def ready_fields(line):
    """"sluice-node: ready listen=A admin=B" -> {'listen': A, 'admin': B}."""
    return dict(kv.split("=", 1) for kv in line.split()[2:])


def stop_proc(proc, timeout=WAIT_S, strict=False):
    """SIGTERM, bounded wait, then SIGKILL. Returns the exit status; with
    strict, a process that needed the SIGKILL is a Failure."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            if strict:
                raise Failure("pid %d did not exit after SIGTERM" % proc.pid)
    return proc.returncode


class Process:
    """A program with its stderr in log_path and a ready line on stdout.
    Subclasses set READY (the line's prefix)."""

    READY = ""

    def __init__(self, argv, log_path, name=None, timeout=WAIT_S):
        self.name = name or os.path.basename(argv[0])
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = spawn(argv, subprocess.PIPE, log)
        self.ready = read_ready(self.proc, self.READY, self.name, timeout, self.text)
        self.fields = ready_fields(self.ready)

    def text(self):
        """The whole log so far."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=WAIT_S + 15):
        """Exit status; a process still running after timeout is killed and
        that is a Failure."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise Failure("%s did not exit after the signal" % self.name)

    def stop(self, timeout=WAIT_S, strict=False):
        st = stop_proc(self.proc, timeout, strict)
        self._close()
        return st

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self):
        if self.proc.stdout and not self.proc.stdout.closed:
            self.proc.stdout.close()


class ControlProc(Process):
    """The real sluice-control: argv[0] is the binary. target and port come
    from the ready line's listen=, metrics from metrics= (None without)."""

    READY = "sluice-control: ready listen="

    def __init__(self, argv, log_path, name=None, timeout=WAIT_S):
        super().__init__(argv, log_path, name, timeout)
        self.target = self.fields["listen"]
        self.port = port_of(self.target)
        self.metrics = self.fields.get("metrics")


class NodeProc(Process):
    """The real sluice-node: argv is the whole command line (the binary may
    come after a wrapper such as `ip netns exec`). addrs are the ready
    line's fields (listen=, admin=, tls_listen=)."""

    READY = "sluice-node: ready"

    def __init__(self, argv, log_path, name=None, timeout=WAIT_S):
        super().__init__(argv, log_path, name, timeout)
        self.addrs = self.fields

    def port(self, field):
        return port_of(self.addrs[field])

    def admin(self, path):
        return http_get(self.port("admin"), path)

    def metrics(self):
        """The admin endpoint's /metrics text; a non-200 is a Failure."""
        st, body = self.admin("/metrics")
        check(st == 200, "%s /metrics status %d" % (self.name, st))
        return body


class Etcd:
    """A private single-member etcd on free loopback ports with its data in
    tmp/etcd, as PLATFORM.md starts it. kill() then start() again is a
    restart on the same ports and data."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.client, self.peer = free_port(), free_port()
        self.url = "http://127.0.0.1:%d" % self.client
        self.proc = None

    def start(self, timeout=30):
        peer = "http://127.0.0.1:%d" % self.peer
        with open(os.path.join(self.tmp, "etcd.log"), "ab") as log:
            self.proc = spawn(
                [ETCD, "--name", "n", "--data-dir", os.path.join(self.tmp, "etcd"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", "n=" + peer, "--log-level", "warn"],
                log, log)

        def healthy():
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    return b"true" in r.read()
            except OSError:
                return False
        wait_for("etcd healthy", healthy, timeout=timeout)
        return self

    def kill(self):
        """kill -9; a no-op when not running."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def post(self, path, body, timeout=10):
        """One call of etcd's v3 JSON gateway, e.g. post('/v3/kv/range', {...})."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def _range(self, key, range_end=None):
        q = {"key": base64.b64encode(key).decode()}
        if range_end is not None:
            q["range_end"] = base64.b64encode(range_end).decode()
        return self.post("/v3/kv/range", q).get("kvs", [])

    def range_prefix(self, prefix):
        """Every (key, value bytes) under prefix (one linearizable range)."""
        k = prefix.encode()
        return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")))
                for kv in self._range(k, k[:-1] + bytes([k[-1] + 1]))]

    def mod_revision(self, key):
        """The etcd revision that last wrote key (0 when absent)."""
        kvs = self._range(key.encode())
        return int(kvs[0]["mod_revision"]) if kvs else 0


def compile_protos(proto_dir, out_dir):
    """Compiles every proto/sluice/v1/*.proto for python3-grpcio into
    out_dir (no checked-in stubs) and puts out_dir on sys.path, so that
    `from sluice.v1 import admin_pb2` works afterwards."""
    from grpc_tools import protoc
    protos = sorted(os.path.join("sluice/v1", p)
                    for p in os.listdir(os.path.join(proto_dir, "sluice/v1"))
                    if p.endswith(".proto"))
    if protoc.main(["protoc", "-I" + proto_dir, "--python_out=" + out_dir,
                    "--grpc_python_out=" + out_dir] + protos) != 0:
        raise Failure("protoc could not compile the protos in %s" % proto_dir)
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)


class BootProtos:
    """Message classes of the bootstrap protocols (grpc/health, grpc/
    reflection) from the build's descriptor set, as grpcurl has them compiled
    in; everything about sluice.v1 is then learnt through reflection."""

    def __init__(self, protoset):
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        with open(protoset, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        self.pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            if fd.name.startswith("grpc/"):
                self.pool.Add(fd)
        self.factory = message_factory.MessageFactory(self.pool)
        self.HealthReq = self.cls("grpc.health.v1.HealthCheckRequest")
        self.HealthResp = self.cls("grpc.health.v1.HealthCheckResponse")
        self.ReflReq = self.cls("grpc.reflection.v1.ServerReflectionRequest")
        self.ReflResp = self.cls("grpc.reflection.v1.ServerReflectionResponse")

    def cls(self, name):
        return self.factory.GetPrototype(self.pool.FindMessageTypeByName(name))


class Reflection:
    """One server reflection stream (v1 or v1alpha, same messages), one
    request at a time. close() half-closes and expects OK."""

    def __init__(self, boot, ch, version="v1", timeout=60):
        import queue
        self.boot = boot
        self.q = queue.Queue()
        call = ch.stream_stream("/grpc.reflection.%s.ServerReflection/ServerReflectionInfo"
                                % version,
                                request_serializer=boot.ReflReq.SerializeToString,
                                response_deserializer=boot.ReflResp.FromString)
        self.responses = call(iter(self.q.get, None), timeout=timeout)

    def ask(self, **kw):
        self.q.put(self.boot.ReflReq(host="", **kw))
        return next(self.responses)

    def close(self):
        import grpc
        self.q.put(None)
        for _ in self.responses:
            pass
        check(self.responses.code() == grpc.StatusCode.OK,
              "reflection stream ended %s" % self.responses.code())

    def services(self):
        r = self.ask(list_services="*")
        return sorted(s.name for s in r.list_services_response.service)
