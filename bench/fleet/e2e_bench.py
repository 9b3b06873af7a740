#!/usr/bin/python3
"""End-to-end convergence: admin commit -> a probe request on every node sees
the new decision.

usage: e2e_bench.py SLUICE_CONTROL SLUICE_NODE PROTO_DIR

A private etcd, one sluice-control, three real sluice-node processes in sync
mode (one worker each) and an HTTP backend (a separate python process).
Route `probe` (/probe) proxies to the backend through AccessList `probe-acl`.
Each change flips `probe-acl` between deny 127.0.0.0/8 (probe answers 403)
and allow-all (the backend's 200), one PolicyAdmin/ApplyChanges each.

Per change: t0 is taken just before ApplyChanges is sent; one prober thread
per node polls GET /probe on a keep-alive connection (a request, then 1 ms
pause) from t0 until the node answers with the new decision; convergence =
the last node's first new answer - t0. Probers start before the commit, so
a node that applies the change before ApplyChanges returns is counted from
its own first answer. After each change: E2E_GAP_MS pause.

Prints (nearest-rank percentiles over the changes):
  e2e_convergence_p50_ms: V   e2e_convergence_p99_ms: V  (target p99 <= 300)
  e2e_convergence_max_ms, e2e_first_node_p50_ms, e2e_commit_reply_p50_ms,
  e2e_probe_requests, e2e_changes, loadavg_1m
Knobs: E2E_CHANGES (100), E2E_GAP_MS (50), E2E_WAIT_MS (10000, bound on
one change). Exit 77 without /usr/bin/etcd or python3-grpcio; exit 1 when a
change does not converge within E2E_WAIT_MS or a probe sees an unexpected
status.
"""
import http.client
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tests", "integration", "sync"))
import fleetlib as fl  # noqa: E402
from fleetlib import Failure, check, wait_for  # noqa: E402

fl.skip_unless_ready("e2e_bench")
import grpc  # noqa: E402

CHANGES = int(os.environ.get("E2E_CHANGES", "100"))
GAP_S = int(os.environ.get("E2E_GAP_MS", "50")) / 1000.0
WAIT_S = int(os.environ.get("E2E_WAIT_MS", "10000")) / 1000.0
NODES = 3

# The backend: HTTP/1.1 keep-alive, 200 "ok" to everything; prints its port.
BACKEND = r"""
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer and no Nagle: headers and body in two writes
    # would wait for the proxy's delayed ACK (40 ms) on every request.
    disable_nagle_algorithm = True
    def do_GET(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print("backend: ready port=%d" % s.server_address[1], flush=True)
s.serve_forever()
"""


class Prober(threading.Thread):
    """Polls one node for one expected status per task; reports
    (change, node, first time seen or None, requests)."""

    def __init__(self, node, results):
        super().__init__(daemon=True)
        self.node, self.results = node, results
        self.tasks = queue.Queue()
        self.conn = None

    def probe(self):
        for _ in range(2):  # one reconnect if the node closed the idle connection
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=5)
            try:
                self.conn.request("GET", "/probe")
                r = self.conn.getresponse()
                r.read()
                if r.will_close:
                    self.conn.close()
                    self.conn = None
                return r.status
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
        return None

    def run(self):
        while True:
            task = self.tasks.get()
            if task is None:
                return
            change, want, deadline = task
            seen, n, other = None, 0, None
            while time.perf_counter() < deadline:
                st = self.probe()
                n += 1
                if st == want:
                    seen = time.perf_counter()
                    break
                if st not in (200, 403):
                    other = st
                time.sleep(0.001)
            self.results.put((change, self.node.name, seen, n, other))


def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    k = max(1, -(-len(sorted_vals) * p // 100))
    return sorted_vals[int(k) - 1]


def run(ctx, pb):
    tmp = ctx["tmp"]
    ctx["backend"] = be = fl.spawn([sys.executable, "-c", BACKEND], subprocess.PIPE,
                                   open(os.path.join(tmp, "backend.log"), "ab"))
    be_port = int(fl.read_ready(be, "backend: ready", "backend").split("=")[1])
    etcd = ctx["etcd"] = fl.Etcd(tmp).start()
    port = fl.free_port()
    ctx["cps"] = [fl.Control(tmp, etcd, port, "cp")]
    nodes = ctx["nodes"]
    for k in range(NODES):
        nodes.append(fl.Node(tmp, "node-%d" % (k + 1), [port]))

    admin = fl.Admin(pb, [port])
    allow = {"accessList": {"id": "probe-acl"}}
    deny = {"accessList": {"id": "probe-acl", "deny": ["127.0.0.0/8"]}}
    v0, _ = admin.apply([{"upstream": {"id": "backend", "endpoints": ["127.0.0.1:%d" % be_port]}},
                         allow,
                         {"route": {"id": "probe", "pathPrefix": "/probe", "upstream": "backend",
                                    "accessLists": ["probe-acl"]}}], message="e2e setup")
    for n in nodes:
        wait_for("%s at v%d" % (n.name, v0), lambda: n.version() == v0, timeout=30)
        check(n.get("/probe") == 200, "%s: /probe does not answer 200 through the backend"
              % n.name)

    results = queue.Queue()
    probers = ctx["probers"] = [Prober(n, results) for n in nodes]
    for p in probers:
        p.start()
    conv, first, reply, by_want = [], [], [], {403: [], 200: []}
    requests = 0
    for c in range(1, CHANGES + 1):
        want, res = (403, deny) if c % 2 else (200, allow)
        t0 = time.perf_counter()
        for p in probers:
            p.tasks.put((c, want, t0 + WAIT_S))
        admin.apply_once(port, [res], message="e2e change %d" % c, timeout=WAIT_S)
        reply.append((time.perf_counter() - t0) * 1000)
        seen = []
        for _ in probers:
            ch, name, t, nreq, other = results.get(timeout=WAIT_S + 5)
            check(ch == c, "prober answer for change %d during change %d" % (ch, c))
            check(other is None, "change %d: %s answered /probe with %r" % (c, name, other))
            check(t is not None, "change %d: %s did not answer %d within %.0f s (version %r)"
                  % (c, name, want, WAIT_S, [n.version() for n in nodes if n.name == name]))
            seen.append(t)
            requests += nreq
        conv.append((max(seen) - t0) * 1000)
        by_want[want].append(conv[-1])
        first.append((min(seen) - t0) * 1000)
        time.sleep(GAP_S)

    s = sorted(conv)
    print("e2e_convergence_p50_ms: %.1f" % pct(s, 50))
    print("e2e_convergence_p99_ms: %.1f" % pct(s, 99))
    print("e2e_convergence_max_ms: %.1f" % s[-1])
    print("e2e_first_node_p50_ms: %.1f" % pct(sorted(first), 50))
    # Which way the decision flipped: to 403 is decided by the node alone,
    # to 200 also needs the backend's answer through the proxy.
    print("e2e_convergence_p50_ms_to_deny: %.1f" % pct(sorted(by_want[403]), 50))
    print("e2e_convergence_p50_ms_to_allow: %.1f" % pct(sorted(by_want[200]), 50))
    print("e2e_commit_reply_p50_ms: %.1f" % pct(sorted(reply), 50))
    print("e2e_probe_requests: %d" % requests)
    print("e2e_changes: %d" % len(conv))
    with open("/proc/loadavg") as f:
        print("loadavg_1m: %s" % f.read().split()[0], flush=True)
    admin.close()
    if os.environ.get("SLUICE_BENCH_RECORD"):
        path = os.environ.get("SLUICE_BENCH_RESULTS") or "bench/RESULTS.md"
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(path)),
                                                     "record.py"), path, "e2e",
                        "e2e | %d | %.1f | %.1f | %.1f" % (len(conv), pct(s, 50), pct(s, 99),
                                                            pct(sorted(reply), 50))])


def main():
    ctx, pb = fl.setup(sys.argv, "sluice-e2e-")
    tmp = ctx["tmp"]
    ctx["probers"] = []
    ok = False
    try:
        run(ctx, pb)
        ok = True
    except (Failure, grpc.RpcError, queue.Empty) as e:
        print("FAIL e2e_bench: %s" % (e or "a prober did not answer"), flush=True)
        fl.print_logs(ctx)
    finally:
        for p in ctx["probers"]:
            p.tasks.put(None)
        fl.teardown(ctx)
        if "backend" in ctx:
            ctx["backend"].kill()
            ctx["backend"].wait()
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


sys.exit(main())
