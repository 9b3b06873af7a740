#!/usr/bin/python3
"""End to end: a private etcd, the real sluice-control, two real sluice-node
processes in sync mode, changes through the admin API (python3-grpcio,
PolicyAdmin/ApplyChanges) and real HTTP requests to both nodes.

usage: fleet_sync_test.py SLUICE_CONTROL SLUICE_NODE PROTO_DIR GEN_CERTS

Cases: a change reaches both nodes and changes their HTTP answers (and
both report the committed version); a rate limit change is enforced by
both; kill -9 of the control plane: both nodes keep enforcing, a change
committed while it is down (through a second replica) and after it comes
back is converged to with no version lost; a node restarted with no control
plane enforces its persisted snapshot; over mTLS (certificates from
scripts/gen-certs.sh) a node with its own certificate syncs, and one that
presents another node's certificate gets nothing. Exit 77 without etcd or grpcio.
Every wait is bounded (never a pass/fail threshold).
"""
import os
import shutil
import subprocess
import sys
import time

import fleetlib as fl
from fleetlib import Failure, check, free_port, http_get, metric, wait_for

fl.skip_unless_ready("fleet_sync_test")
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

CONTROL, NODE, PROTO_DIR, GEN_CERTS = sys.argv[1:5]
TMP = fl.make_tmp("sluice-fleet-sync-")
WAIT_S = fl.WAIT_S
BEARER = fl.BEARER

fl.configure(CONTROL, NODE)
fl.compile_protos(PROTO_DIR, TMP)
from sluice.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from sluice.v1 import fleet_pb2, fleet_pb2_grpc, sync_pb2  # noqa: E402


class Control(fl.Control):
    """A replica with its own channel (mTLS as the admin certificate when
    pki is given) and the PolicyAdmin and Fleet stubs on it."""

    def __init__(self, etcd, port, name, pki=None):
        super().__init__(TMP, etcd, port, name, pki)

    def start(self):
        super().start()
        if self.pki:
            def rd(n):
                with open(os.path.join(self.pki, n), "rb") as f:
                    return f.read()
            creds = grpc.ssl_channel_credentials(rd("ca.pem"), rd("admin.key"), rd("admin.pem"))
            self.channel = grpc.secure_channel("127.0.0.1:%d" % self.port, creds)
        else:
            self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        self.admin = admin_pb2_grpc.PolicyAdminStub(self.channel)
        self.fleet = fleet_pb2_grpc.FleetStub(self.channel)

    def apply(self, upserts=(), removes=(), message="test"):
        req = json_format.ParseDict({"ruleset": "edge", "upserts": list(upserts),
                                     "removes": list(removes), "author": "fleet_sync_test",
                                     "message": message}, admin_pb2.ApplyChangesRequest())
        resp = self.admin.ApplyChanges(req, metadata=BEARER, timeout=10)
        return resp.version.version

    def kill9(self):
        self.channel.close()
        super().kill9()

    def stop(self):
        self.channel.close()
        super().stop()


class Node(fl.Node):
    """A sync-mode node (backoff up to 1 s, reports every 500 ms) whose
    stop() must end in exit status 0."""

    def __init__(self, name, endpoints, tls=None):
        super().__init__(TMP, name, endpoints, tls=tls, backoff_max_ms=1000,
                         report_interval_ms=500)

    def stop(self):
        st = super().stop()
        check(st == 0, "%s exit status %d" % (self.name, st))


WWW = os.path.join(TMP, "www")
os.makedirs(WWW)
for n in ("a", "b", "c", "d"):
    with open(os.path.join(WWW, n + ".txt"), "w") as f:
        f.write("file %s\n" % n)


def route(rid, limits=()):
    r = {"id": rid, "pathPrefix": "/" + rid, "staticFiles": {"root": os.path.join(WWW, rid + ".txt")}}
    if limits:
        r["rateLimits"] = list(limits)
    return {"route": r}


def converge(nodes, version, what):
    """Both nodes report `version` and answer as `fn` says."""
    for n in nodes:
        wait_for("%s at version %d (%s)" % (n.name, version, what), lambda: n.version() == version)


# ---- cases ---------------------------------------------------------------

def case_change_reaches_both_nodes(ctx):
    cp, nodes = ctx["cp"], ctx["nodes"]
    for n in nodes:
        check(n.get("/a") == 404, "%s answers /a before any policy" % n.name)
    v1 = cp.apply([route("a")], message="route a")
    t0 = time.monotonic()
    for n in nodes:
        wait_for("%s serves /a" % n.name, lambda: n.get("/a") == 200)
    print("     v%d served by both nodes %.0f ms after the commit" % (v1, (time.monotonic() - t0) * 1000))
    converge(nodes, v1, "route a")
    v2 = cp.apply([route("b")], message="route b")
    for n in nodes:
        wait_for("%s serves /b" % n.name, lambda: n.get("/b") == 200)
    converge(nodes, v2, "route b")
    ctx["version"] = v2


def case_limit_change_enforced(ctx):
    cp, nodes = ctx["cp"], ctx["nodes"]
    limit = {"rateLimit": {"id": "tight", "algorithm": "TOKEN_BUCKET", "rate": "1",
                           "unit": "MINUTE", "burst": "3"}}
    v = cp.apply([limit, route("c", ["tight"])], message="limit on c")
    converge(nodes, v, "limit on c")
    for n in nodes:
        codes = [n.get("/c") for _ in range(5)]
        check(codes == [200, 200, 200, 429, 429], "%s: /c answers %r" % (n.name, codes))
    ctx["version"] = v


def case_reports_reach_the_control_plane(ctx):
    """The node's NodeReports come out of Fleet/WatchStats with the HTTP
    counters just made, and Fleet/GetNode shows the acked version."""
    cp, n = ctx["cp"], ctx["nodes"][0]
    for _ in range(4):
        n.get("/a")
    stream = cp.fleet.WatchStats(fleet_pb2.WatchStatsRequest(node_id=n.name), metadata=BEARER,
                                 timeout=WAIT_S)
    got = None
    try:
        for r in stream:
            routes = {rc.route: rc for rc in r.routes}
            if "a" in routes and routes["a"].requests >= 4:
                got = r
                break
    finally:
        stream.cancel()
    check(got is not None, "no report with route a counters")
    check(got.node_id == n.name, "report node_id %r" % got.node_id)
    check([(a.ruleset, a.version) for a in got.applied] == [("edge", ctx["version"])],
          "report applied %r" % got.applied)
    check(got.health == sync_pb2.HEALTHY, "report health %r" % got.health)
    check(got.latency.counts and got.latency.counts[-1] >= 4, "report latency %r" % got.latency)
    st = cp.fleet.GetNode(fleet_pb2.GetNodeRequest(node_id=n.name), metadata=BEARER, timeout=10)
    check(st.connected and st.acked_version == ctx["version"] and st.ruleset == "edge",
          "GetNode %r" % st)


def case_kill9_control_plane(ctx):
    nodes = ctx["nodes"]
    ctx["cp"].kill9()
    for n in nodes:
        wait_for("%s sees the stream gone" % n.name,
                 lambda: metric(http_get(n.admin, "/metrics")[1], "sluice_sync_connected") == 0)
        check(n.get("/b") == 200 and n.get("/c") == 429, "%s stopped enforcing" % n.name)
    # A change committed while the nodes' control plane is down, through
    # another replica on the same etcd (not among the nodes' endpoints).
    other = Control(ctx["etcd"], free_port(), "cp-other")
    v_down = other.apply([route("d")], message="while cp1 is down")
    other.stop()
    time.sleep(0.3)
    for n in nodes:
        check(n.get("/d") == 404, "%s got /d with no control plane" % n.name)
    cp = Control(ctx["etcd"], ctx["cp_port"], "cp1-restarted")
    ctx["cp"] = cp
    converge(nodes, v_down, "after restart")
    for n in nodes:
        check(n.get("/d") == 200 and n.get("/b") == 200, "%s after restart" % n.name)
    v = cp.apply(removes=[{"kind": "ROUTE", "id": "b"}], message="remove b")
    converge(nodes, v, "remove b")
    for n in nodes:
        check(n.get("/b") == 404, "%s still serves the removed /b" % n.name)
    ctx["version"] = v


def case_restart_node_without_control_plane(ctx):
    ctx["cp"].stop()
    n = ctx["nodes"][0]
    n.stop()
    n.start()
    check(n.get("/d") == 200 and n.get("/b") == 404, "persisted snapshot not enforced")
    check(n.version() == ctx["version"], "persisted version %r" % n.version())
    check("Enforcing the persisted snapshot" in n.text(), "no fail-static log line")
    cp = Control(ctx["etcd"], ctx["cp_port"], "cp1-third")
    ctx["cp"] = cp
    v = cp.apply([route("b")], message="b again")
    converge(ctx["nodes"], v, "after the node restart")


def case_mtls(ctx):
    pki = os.path.join(TMP, "pki")
    subprocess.run(["bash", GEN_CERTS, pki, "node-tls", "node-other"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    port = free_port()
    cp = Control(ctx["etcd"], port, "cp-tls", pki)
    ctx["cp_tls"] = cp
    good = Node("node-tls", [port], (pki, "node-tls"))
    ctx["nodes"].append(good)
    # Speaks as node-impostor with node-other's certificate.
    bad = Node("node-impostor", [port], (pki, "node-other"))
    ctx["nodes"].append(bad)
    v = cp.apply([route("a"), route("c")], message="over mTLS")
    wait_for("node-tls at version %d" % v, lambda: good.version() == v)
    check(good.get("/a") == 200, "node-tls does not serve /a")
    # The control plane refuses it by identity (PERMISSION_DENIED = 7), not
    # by a TLS failure: its certificate is valid, just not this node's.
    wait_for("the impostor refused", lambda: "status=7" in bad.text())
    check(bad.version() == 0 and bad.get("/a") == 404, "an impostor node got the policy")
    st, body = http_get(bad.admin, "/metrics")
    check(metric(body, "sluice_sync_acks_total") == 0, "impostor acked something")


def main():
    etcd = fl.Etcd(TMP).start()
    cp_port = free_port()
    ctx = {"etcd": etcd, "cp_port": cp_port, "nodes": []}
    cases = [case_change_reaches_both_nodes, case_limit_change_enforced,
             case_reports_reach_the_control_plane, case_kill9_control_plane,
             case_restart_node_without_control_plane, case_mtls]
    c = None
    try:
        ctx["cp"] = Control(etcd, cp_port, "cp1")
        ctx["nodes"] = [Node("node-1", [cp_port]), Node("node-2", [cp_port])]
        for c in cases:
            t = time.monotonic()
            c(ctx)
            print("ok   %-40s %.2f s" % (c.__name__[5:], time.monotonic() - t), flush=True)
    except (Failure, grpc.RpcError) as e:
        print("FAIL %s: %s" % (c.__name__[5:] if c else "setup", e), flush=True)
        for n in ctx["nodes"]:
            print("---- %s log ----\n%s" % (n.name, n.text()[-3000:]))
        if "cp" in ctx:
            with open(ctx["cp"].log_path, "rb") as f:
                print("---- control plane log ----\n" + f.read().decode(errors="replace")[-3000:])
        return 1
    finally:
        for n in ctx["nodes"]:
            try:
                n.stop()
            except Failure as e:
                print("FAIL shutdown: %s" % e)
                return 1
        for k in ("cp", "cp_tls"):
            if k in ctx:
                ctx[k].stop()
        etcd.kill()
    shutil.rmtree(TMP, ignore_errors=True)
    return 0


sys.exit(main())
