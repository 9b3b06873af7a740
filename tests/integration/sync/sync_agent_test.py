#!/usr/bin/python3
"""The sync agent of sluice-node against a PolicySync server this test
drives message by message (python3-grpcio), with real HTTP requests to the
node's proxy to see what it enforces.

usage: sync_agent_test.py SLUICE_NODE PROTO_DIR

Cases: Hello contents; a Snapshot applied, acked and enforced; a Delta
applied; an invalid delta and a delta with the wrong from_version NACKed
with the old policy still enforced; NodeReports with the counters, per
client (exact allowed/rejected/shadow_rejected after real requests) and per
rule (shadow rejects under the SHADOW limit's id); the
first endpoint dead (the agent moves on); the control plane gone and back
(the node resumes from its version); restart with no control plane
enforces the persisted snapshot (fail-static); a corrupt or truncated
state file is ignored. Every wait is bounded; everything is on loopback.
Prints one line per case; exits 1 on the first failure.
"""
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from concurrent import futures

import sluicetest
from sluicetest import Failure, check, free_port, http_get, metric, wait_for

sluicetest.skip_unless_ready("sync_agent_test", etcd=False)
NODE, PROTO_DIR = sys.argv[1], sys.argv[2]
TMP = tempfile.mkdtemp(prefix="sluice-sync-test-")
WAIT_S = 10.0

# Python stubs of our own protos, generated here (no checked-in copies).
sluicetest.compile_protos(PROTO_DIR, TMP)
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from sluice.v1 import policy_pb2, sync_pb2, sync_pb2_grpc  # noqa: E402


# ---- the policies --------------------------------------------------------

WWW = os.path.join(TMP, "www")
os.makedirs(WWW)
for name in ("a", "b", "c", "d"):
    with open(os.path.join(WWW, name + ".txt"), "w") as f:
        f.write("file " + name + "\n")


def route(rid):
    return {"route": {"id": rid, "pathPrefix": "/" + rid,
                      "staticFiles": {"root": os.path.join(WWW, rid + ".txt")}}}


def snapshot_msg(nonce, version, resources):
    snap = json_format.ParseDict({"ruleset": "edge", "version": str(version),
                                  "resources": resources}, policy_pb2.Snapshot())
    return sync_pb2.ControlMessage(nonce=nonce, snapshot=snap)


def delta_msg(nonce, frm, to, upserts=(), removes=(), ruleset="edge"):
    d = json_format.ParseDict({"ruleset": ruleset, "fromVersion": str(frm), "toVersion": str(to),
                               "upserts": list(upserts), "removes": list(removes)},
                              policy_pb2.Delta())
    return sync_pb2.ControlMessage(nonce=nonce, delta=d)


# ---- the scripted control plane -------------------------------------------

class Stream:
    """One Sync call: what the node sent, and what to send it."""

    def __init__(self):
        self.received = queue.Queue()
        self.out = queue.Queue()
        self.ended = threading.Event()

    def send(self, msg):
        self.out.put(msg)

    def next(self, kind, timeout=WAIT_S):
        """The next NodeMessage of that kind (hello, ack, nack, report);
        other kinds are skipped (reports arrive any time)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("no %s from the node within %.0f s" % (kind, timeout))
            try:
                m = self.received.get(timeout=left)
            except queue.Empty:
                continue
            if m.WhichOneof("msg") == kind:
                return getattr(m, kind)
            if kind != "report" and m.WhichOneof("msg") not in ("report",):
                raise Failure("expected %s, got %s" % (kind, m))


class FakeControl(sync_pb2_grpc.PolicySyncServicer):
    def __init__(self, port=0):
        self.streams = queue.Queue()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        sync_pb2_grpc.add_PolicySyncServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:%d" % port)
        check(self.port, "cannot bind the fake control plane")
        self.server.start()

    def Sync(self, request_iterator, context):
        st = Stream()

        def reader():
            try:
                for m in request_iterator:
                    st.received.put(m)
            except grpc.RpcError:
                pass
            st.ended.set()

        threading.Thread(target=reader, daemon=True).start()
        self.streams.put(st)
        while context.is_active() and not st.ended.is_set():
            try:
                m = st.out.get(timeout=0.05)
            except queue.Empty:
                continue
            if m is None:
                return
            yield m

    def stream(self, timeout=WAIT_S):
        try:
            return self.streams.get(timeout=timeout)
        except queue.Empty:
            raise Failure("the node did not open a stream within %.0f s" % timeout)

    def stop(self):
        self.server.stop(0).wait(5)


# ---- the node ------------------------------------------------------------

STATE = os.path.join(TMP, "state")


class Node:
    """sluice-node in sync mode on endpoints (node id edge-test-1, reports
    every 300 ms), its state in STATE; tag names its config and log."""

    def __init__(self, endpoints, tag):
        cfg = os.path.join(TMP, "node-%s.yaml" % tag)
        with open(cfg, "w") as f:
            f.write("""node:
  id: edge-test-1
  ruleset: edge
  labels:
    region: test
proxy:
  listen: 127.0.0.1:0
  workers: 1
admin:
  listen: 127.0.0.1:0
sync:
  endpoints: [%s]
  plaintext: true
  state_dir: %s
  connect_timeout_ms: 1000
  backoff_min_ms: 50
  backoff_max_ms: 500
  report_interval_ms: 300
""" % (", ".join('"127.0.0.1:%d"' % p for p in endpoints), STATE))
        self.p = sluicetest.NodeProc([NODE, "--config", cfg],
                                     os.path.join(TMP, "node-%s.log" % tag), "node-" + tag,
                                     timeout=WAIT_S)
        self.port = self.p.port("listen")
        self.admin = self.p.port("admin")

    def get(self, path):
        return http_get(self.port, path)

    def metrics(self):
        return self.p.metrics()

    def text(self):
        return self.p.text()

    def stop(self):
        rc = self.p.stop(timeout=WAIT_S + 10, strict=True)
        # 0 after a drain; a sanitizer report would make it non-zero.
        check(rc == 0, "node exit status %d after SIGTERM; log: %s" % (rc, self.text()[-3000:]))


POLICY_A = [route("a")]
ROUTE_B = route("b")

# ---- cases ---------------------------------------------------------------


def case_hello_snapshot_ack(ctx):
    cp, node = ctx["cp"], ctx["node"]
    st = cp.stream()
    ctx["st"] = st
    hello = st.next("hello")
    check(hello.node_id == "edge-test-1", "hello node_id %r" % hello.node_id)
    check(hello.ruleset == "edge", "hello ruleset %r" % hello.ruleset)
    check(hello.have_version == 0, "hello have_version %d" % hello.have_version)
    check(hello.software_version, "hello has no software_version")
    check([(l.key, l.value) for l in hello.labels] == [("region", "test")],
          "hello labels %r" % hello.labels)
    check(node.get("/a")[0] == 404, "/a answered before any policy")
    st.send(snapshot_msg("n1", 10, POLICY_A))
    ack = st.next("ack")
    check((ack.ruleset, ack.version, ack.nonce) == ("edge", 10, "n1"), "ack %r" % ack)
    check(node.get("/a") == (200, "file a\n"), "/a after the snapshot: %r" % (node.get("/a"),))
    check(node.get("/b")[0] == 404, "/b before the delta")
    m = node.metrics()
    check(metric(m, "sluice_sync_version") == 10, "sluice_sync_version")
    check(metric(m, "sluice_sync_connected") == 1, "sluice_sync_connected")
    check(metric(m, "sluice_sync_acks_total") == 1, "sluice_sync_acks_total")
    check(http_get(node.admin, "/readyz")[0] == 200, "readyz after the snapshot")


def case_delta_applied(ctx):
    st, node = ctx["st"], ctx["node"]
    st.send(delta_msg("n2", 10, 12, upserts=[ROUTE_B]))
    ack = st.next("ack")
    check((ack.version, ack.nonce) == (12, "n2"), "ack %r" % ack)
    check(node.get("/b") == (200, "file b\n"), "/b after the delta")
    check(node.get("/a")[0] == 200, "/a after the delta")


def case_invalid_delta_nacked(ctx):
    st, node = ctx["st"], ctx["node"]
    bad = {"route": {"id": "c", "pathPrefix": "/c", "upstream": "nowhere"}}
    st.send(delta_msg("n3", 12, 13, upserts=[bad]))
    nack = st.next("nack")
    check((nack.version, nack.nonce) == (12, "n3"), "nack %r" % nack)
    check("route/c" in nack.error and "nowhere" in nack.error, "nack error %r" % nack.error)
    # A removal of something absent is invalid too.
    st.send(delta_msg("n3b", 12, 13, removes=[{"kind": "ROUTE", "id": "zzz"}]))
    nack = st.next("nack")
    check(nack.nonce == "n3b" and nack.version == 12, "nack %r" % nack)
    check(node.get("/b")[0] == 200 and node.get("/c")[0] == 404, "old policy not kept")
    check(metric(node.metrics(), "sluice_sync_version") == 12, "version moved on a NACK")


def case_wrong_from_version_nacked(ctx):
    st, node = ctx["st"], ctx["node"]
    st.send(delta_msg("n4", 11, 14, upserts=[route("c")]))
    nack = st.next("nack")
    check((nack.version, nack.nonce) == (12, "n4"), "nack %r" % nack)
    check("from_version 11" in nack.error and "version 12" in nack.error,
          "nack error %r" % nack.error)
    st.send(delta_msg("n5", 12, 14, upserts=[route("c")], ruleset="other"))
    nack = st.next("nack")
    check("'other'" in nack.error, "wrong ruleset nack %r" % nack.error)
    check(node.get("/c")[0] == 404, "/c enforced after NACKs")
    m = node.metrics()
    check(metric(m, "sluice_sync_nacks_total") == 4, "nacks_total %r" % metric(m, "sluice_sync_nacks_total"))
    check(metric(m, "sluice_policy_version", '{ruleset="edge"}') == 12, "policy version")


def case_report(ctx):
    st, node = ctx["st"], ctx["node"]
    for _ in range(3):
        node.get("/b")
    deadline = time.monotonic() + WAIT_S
    while True:
        r = st.next("report", timeout=max(deadline - time.monotonic(), 0.1))
        routes = {rc.route: rc for rc in r.routes}
        if "b" in routes and routes["b"].requests >= 4:
            break
    check(r.node_id == "edge-test-1", "report node_id")
    check([(a.ruleset, a.version) for a in r.applied] == [("edge", 12)], "applied %r" % r.applied)
    check(r.applied[0].applied_unix_ms > 0, "applied_unix_ms")
    check(r.health == sync_pb2.HEALTHY, "health %r %r" % (r.health, r.health_detail))
    check(any(s.status == 200 and s.count >= 4 for s in routes["b"].statuses),
          "route b statuses %r" % routes["b"].statuses)
    check(len(r.latency.counts) == len(r.latency.bounds_us) + 1 and r.latency.counts[-1] >= 4,
          "latency %r" % r.latency)
    check(r.time_unix_ms > 0, "time_unix_ms")


# Two clients on route d: alpha under a REJECT limit of burst 2, beta under
# a SHADOW limit of burst 1 (both one token a minute: no refill in a test).
CLIENTS = [
    {"rateLimit": {"id": "tight", "algorithm": "TOKEN_BUCKET", "rate": "1",
                   "unit": "MINUTE", "burst": "2"}},
    {"rateLimit": {"id": "peek", "algorithm": "TOKEN_BUCKET", "rate": "1",
                   "unit": "MINUTE", "burst": "1", "action": "SHADOW"}},
    {"client": {"id": "alpha", "rateLimit": "tight"}},
    {"client": {"id": "beta", "keys": ["beta-key"], "rateLimit": "peek"}},
    route("d"),
]


def case_report_client_counters(ctx):
    st, node = ctx["st"], ctx["node"]
    st.send(delta_msg("n2c", 12, 13, upserts=CLIENTS))
    check(st.next("ack").version == 13, "ack of the clients delta")
    got = [http_get(node.port, "/d", headers={"Client-ID": "alpha"})[0]
           for _ in range(5)]
    check(got == [200, 200, 429, 429, 429], "alpha statuses %r" % got)
    got = [http_get(node.port, "/d", headers={"Client-ID": "beta-key"})[0]
           for _ in range(4)]
    check(got == [200] * 4, "beta statuses %r" % got)
    # Not per client: no header, and a value no client has.
    check(node.get("/d")[0] == 200, "/d anonymous")
    check(http_get(node.port, "/d", headers={"Client-ID": "nobody"})[0] == 200,
          "/d as an unknown client")
    deadline = time.monotonic() + WAIT_S
    while True:
        r = st.next("report", timeout=max(deadline - time.monotonic(), 0.1))
        clients = {c.client: c for c in r.clients}
        if ("alpha" in clients and clients["alpha"].allowed + clients["alpha"].rejected >= 5
                and "beta" in clients and clients["beta"].allowed >= 4):
            break
    want = {"alpha": (2, 3, 0), "beta": (4, 0, 3)}
    have = {k: (c.allowed, c.rejected, c.shadow_rejected) for k, c in clients.items()}
    check(have == want, "clients %r, want %r" % (have, want))
    # Busiest first, as the proxy ranks them.
    check([c.client for c in r.clients] == ["alpha", "beta"], "client order %r" % r.clients)
    rules = {rc.rate_limit: (rc.allowed, rc.rejected, rc.shadow_rejected) for rc in r.rules}
    check(rules.get("tight") == (2, 3, 0), "rule tight %r" % (rules.get("tight"),))
    # beta's first request was within peek (it names the limit), the
    # other three were over it: shadow rejects under peek's own id.
    check(rules.get("peek") == (1, 0, 3), "rule peek %r" % (rules.get("peek"),))
    m = node.metrics()
    check(metric(m, "sluice_proxy_client_decisions_total",
                 '{client="beta",outcome="shadow"}') == 3, "beta in /metrics")
    check(metric(m, "sluice_proxy_clients_counted") == 2, "clients_counted")


def case_resume_after_control_plane_restart(ctx):
    cp, node = ctx["cp"], ctx["node"]
    cp.stop()
    wait_for("sluice_sync_connected 0", lambda: metric(node.metrics(), "sluice_sync_connected") == 0)
    check(node.get("/b")[0] == 200, "/b while the control plane is down")
    cp2 = FakeControl(ctx["port"])
    ctx["cp"] = cp2
    st = cp2.stream()
    hello = st.next("hello")
    check(hello.have_version == 13, "resumed hello have_version %d" % hello.have_version)
    st.send(delta_msg("n6", 13, 15, upserts=[route("c")]))
    check(st.next("ack").version == 15, "ack after resume")
    check(node.get("/c")[0] == 200, "/c after resume")
    check(metric(node.metrics(), "sluice_sync_reconnects_total") >= 1, "reconnects_total")
    ctx["st"] = st


def case_fail_static_restart(ctx):
    node = ctx["node"]
    ctx["cp"].stop()
    node.stop()
    # No control plane at all now: the persisted version 15 is enforced at once.
    n2 = Node([ctx["port"]], "restart")
    ctx["node"] = n2
    check(n2.get("/c") == (200, "file c\n"), "persisted /c not enforced: %r" % (n2.get("/c"),))
    check(n2.get("/b")[0] == 200 and n2.get("/a")[0] == 200, "persisted /a /b")
    m = n2.metrics()
    check(metric(m, "sluice_policy_version", '{ruleset="edge"}') == 15, "persisted version")
    check(metric(m, "sluice_sync_connected") == 0, "connected without a control plane")
    check(http_get(n2.admin, "/readyz")[0] == 200, "readyz with the persisted snapshot")
    check("Enforcing the persisted snapshot" in n2.text(), "no fail-static log line")
    # A control plane that comes back sees the persisted version in Hello.
    cp = FakeControl(ctx["port"])
    ctx["cp"] = cp
    hello = cp.stream().next("hello")
    check(hello.have_version == 15, "have_version after restart %d" % hello.have_version)
    cp.stop()
    n2.stop()


def corrupt_and_start(ctx, tag, damage):
    path = os.path.join(STATE, "edge.snapshot")
    with open(path, "rb") as f:
        good = f.read()
    with open(path, "wb") as f:
        f.write(damage(good))
    n = Node([ctx["port"]], tag)
    try:
        check(n.get("/a")[0] == 404 and n.get("/c")[0] == 404,
              "%s state file half-applied" % tag)
        check(http_get(n.admin, "/readyz")[0] == 503, "%s: readyz not 503" % tag)
        wait_for("the log line", lambda: "Ignoring the persisted snapshot" in n.text())
        return n.text()
    finally:
        n.stop()
        with open(path, "wb") as f:
            f.write(good)


def case_corrupt_state_ignored(ctx):
    def flip(b):
        b = bytearray(b)
        b[len(b) // 2] ^= 0x10
        return bytes(b)
    log = corrupt_and_start(ctx, "flipped", flip)
    check("checksum mismatch" in log, "flip not reported as checksum: " + log)
    log = corrupt_and_start(ctx, "truncated", lambda b: b[:len(b) - 7])
    check("truncated" in log, "truncation not reported: " + log)
    log = corrupt_and_start(ctx, "magic", lambda b: b"XXXXXXXX" + b[8:])
    check("bad magic" in log, "magic not reported: " + log)
    # And the restored file is good again.
    n = Node([ctx["port"]], "restored")
    try:
        check(n.get("/c")[0] == 200, "restored state file not enforced")
    finally:
        n.stop()


def main():
    dead = free_port()  # nothing listens here: the agent must move on
    port = free_port()
    cp = FakeControl(port)
    node = Node([dead, port], "main")
    ctx = {"cp": cp, "node": node, "port": port}
    cases = [case_hello_snapshot_ack, case_delta_applied, case_invalid_delta_nacked,
             case_wrong_from_version_nacked, case_report, case_report_client_counters,
             case_resume_after_control_plane_restart, case_fail_static_restart,
             case_corrupt_state_ignored]
    try:
        for c in cases:
            t = time.monotonic()
            c(ctx)
            print("ok   %-45s %.2f s" % (c.__name__[5:], time.monotonic() - t), flush=True)
    except Failure as e:
        print("FAIL %s: %s" % (c.__name__[5:], e), flush=True)
        print("---- node log ----\n" + ctx["node"].text()[-4000:], flush=True)
        return 1
    finally:
        try:
            ctx["node"].stop()
        except Failure as e:
            print("FAIL shutdown: %s" % e, flush=True)
            return 1
        try:
            ctx["cp"].stop()
        except Exception:
            pass
    shutil.rmtree(TMP, ignore_errors=True)
    return 0


sys.exit(main())
