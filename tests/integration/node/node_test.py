#!/usr/bin/python3
"""sluice-node as a program: configuration errors, standalone policy file,
admin endpoints, SIGHUP reloads (good and bad files), TLS certificate
reload, SIGTERM drain, and one request through the proxy to a real backend.

usage: node_test.py SLUICE_NODE EXAMPLES_DIR

Every wait is bounded; everything listens on loopback. Prints one line per
case; exits 1 on the first failure, 0 when all pass.
"""
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import sluicetest
from sluicetest import Failure, check, metric, wait_for

NODE, EXAMPLES = sys.argv[1], sys.argv[2]
TMP = tempfile.mkdtemp(prefix="sluice-node-test-")
WAIT_S = 10.0


def write(name, text):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Node(sluicetest.NodeProc):
    """A running sluice-node; stderr goes to a file for the log checks.
    prefix=False: args is the whole command line (e.g. under ip netns exec)."""

    def __init__(self, args, prefix=True):
        super().__init__(([NODE] if prefix else []) + args,
                         os.path.join(TMP, "node-%d.log" % time.monotonic_ns()), "sluice-node",
                         timeout=WAIT_S)
        self.p = self.proc

    def stop(self):
        """kill -9 when still running (the cases end it by signal first)."""
        self.kill9()


def run_config(yaml_text, extra=()):
    """Runs --check-config on a YAML text; (exit status, stderr)."""
    path = write("c.yaml", yaml_text)
    p = subprocess.run([NODE, "--config", path, "--check-config"] + list(extra),
                       capture_output=True, text=True, timeout=WAIT_S)
    return p.returncode, p.stderr, path


# ---- cases ---------------------------------------------------------------

def case_bad_config_names_key():
    policy = os.path.join(EXAMPLES, "policy-v1.json")
    cases = [
        ("proxy:\n  listen: 127.0.0.1:0\n  listn: x\npolicy:\n  file: %s\n" % policy,
         ":3: proxy.listn: unknown key"),
        ("proxy:\n  listen: 127.0.0.1:0\n  timeouts:\n    idle_ms: soon\n",
         ":4: proxy.timeouts.idle_ms: expected an unsigned integer, got 'soon'"),
        ("tls:\n  listen: 127.0.0.1:0\n  cert: c.pem\npolicy:\n  file: %s\n" % policy,
         "tls.key: required with tls.listen"),
        ("proxy:\n  listen: 127.0.0.1:0\n", "policy.file: required without a sync section"),
        ("proxy:\n  listen: 127.0.0.1:0\npolicy:\n  file: %s\nbpf:\n  enabled: true\n" % policy,
         "bpf.interface: required when bpf.enabled is true"),
        ("proxy:\n  listen: 127.0.0.1:0\npolicy:\n  file: %s\nbpf:\n  http_ports: [80, 0]\n"
         % policy, ":6: bpf.http_ports: expected a port number 1..65535"),
    ]
    for text, want in cases:
        status, err, path = run_config(text)
        check(status == 2, "exit %d for %r (want 2)" % (status, want))
        check(want in err, "stderr %r does not name %r" % (err, want))
        if want.startswith(":"):
            check(path + want in err, "stderr %r lacks the file name" % err)
    # Flags override the file: the bad listener from the file is replaced.
    status, err, _ = run_config("proxy:\n  listen: 127.0.0.1:0\npolicy:\n  file: %s\n" % policy,
                                ["--listen", "localhost"])
    check(status == 2 and "proxy.listen: 'localhost' is not host:port" in err,
          "flag value checked: %d %r" % (status, err))
    status, err, _ = run_config("proxy:\n  listen: 127.0.0.1:0\npolicy:\n  file: %s\n"
                                % os.path.join(EXAMPLES, "policy-invalid.json"))
    check(status == 2 and "rate_limit/gold.rate: must be at least 1" in err,
          "invalid policy named: %d %r" % (status, err))
    status, err, _ = run_config("proxy:\n  listen: 127.0.0.1:0\n",
                                ["--policy", policy, "--log-level", "loud"])
    check(status == 2 and "--log-level" in err, "bad flag value: %d %r" % (status, err))


def standalone_config(policy_path, extra=""):
    return write("node.yaml",
                 "node:\n  id: test-node\n"
                 "proxy:\n  listen: 127.0.0.1:0\n  workers: 1\n"
                 "admin:\n  listen: 127.0.0.1:0\n  drain_delay_ms: 1500\n"
                 "policy:\n  file: %s\n%s" % (policy_path, extra))


def case_standalone_reload_and_drain():
    policy = os.path.join(TMP, "policy.json")
    shutil.copy(os.path.join(EXAMPLES, "policy-v1.json"), policy)
    node = Node(["--config", standalone_config(policy)])
    try:
        check("admin" in node.addrs, "ready line names the admin address: " + node.ready)
        check(node.port("admin") != 0, "a real admin port, not 0")

        status, body = node.admin("/healthz")
        check(status == 200, "/healthz %d" % status)
        status, body = node.admin("/readyz")
        check(status == 200 and body == "ready\n", "/readyz %d %r" % (status, body))
        status, _ = node.admin("/nope")
        check(status == 404, "unknown admin path %d" % status)

        m = node.metrics()
        check(metric(m, "sluice_policy_version", '{ruleset="edge"}') == 1, "version 1:\n" + m)
        check(metric(m, "sluice_policy_resources", '{ruleset="edge"}') == 13, "13 resources")
        check(metric(m, "sluice_policy_reloads_total", '{result="ok"}') == 1, "one load")
        check(metric(m, "sluice_policy_snapshot_swaps_total") == 1, "one swap")
        check(metric(m, "sluice_node_info", '{node_id="test-node",version="0.1.0"}') == 1,
              "node info")
        check(metric(m, "sluice_node_uptime_seconds") >= 0, "uptime")

        # A new file: the version changes after SIGHUP.
        shutil.copy(os.path.join(EXAMPLES, "policy-v2.json"), policy)
        node.signal(signal.SIGHUP)
        m = wait_for("version 2", lambda: (lambda t: t if metric(
            t, "sluice_policy_version", '{ruleset="edge"}') == 2 else None)(node.metrics()))
        check(metric(m, "sluice_policy_snapshot_swaps_total") == 2, "second swap")
        check(metric(m, "sluice_policy_reloads_total", '{result="ok"}') == 2, "two loads")
        check(metric(m, "sluice_policy_resources", '{ruleset="edge"}') == 12, "12 resources")

        # The same file again: a load, no swap.
        node.signal(signal.SIGHUP)
        m = wait_for("third load", lambda: (lambda t: t if metric(
            t, "sluice_policy_reloads_total", '{result="ok"}') == 3 else None)(node.metrics()))
        check(metric(m, "sluice_policy_snapshot_swaps_total") == 2, "unchanged: no swap")

        # A bad file: the old version stays, the failure is counted and
        # logged naming the field.
        shutil.copy(os.path.join(EXAMPLES, "policy-invalid.json"), policy)
        node.signal(signal.SIGHUP)
        m = wait_for("a failed reload", lambda: (lambda t: t if metric(
            t, "sluice_policy_reloads_total", '{result="failed"}') == 1 else None)(node.metrics()))
        check(metric(m, "sluice_policy_version", '{ruleset="edge"}') == 2, "kept version 2")
        check(metric(m, "sluice_policy_snapshot_swaps_total") == 2, "no swap on failure")
        log = node.text()
        check("route/api.path_prefix: must start with '/'" in log, "log names the field:\n" + log)
        check("keeping the current one" in log, "log says the old policy stays")
        status, _ = node.admin("/readyz")
        check(status == 200, "still ready after a bad reload")

        # Another ruleset's file is refused too.
        with open(os.path.join(EXAMPLES, "policy-v1.json")) as f:
            other = json.load(f)
        other["name"] = "other"
        with open(policy, "w") as f:
            json.dump(other, f)
        node.signal(signal.SIGHUP)
        wait_for("second failed reload", lambda: metric(
            node.metrics(), "sluice_policy_reloads_total", '{result="failed"}') == 2)
        check("ruleset 'other' in the file, this node enforces 'edge'" in node.text(),
              "ruleset mismatch logged")

        # SIGTERM: readyz turns 503 during the drain delay, then exit 0.
        node.signal(signal.SIGTERM)
        status, body = wait_for("readyz 503", lambda: (lambda r: r if r[0] == 503 else None)(
            node.admin("/readyz")))
        check("draining" in body, "503 body says draining: %r" % body)
        status, _ = node.admin("/healthz")
        check(status == 200, "healthz stays 200 while draining")
        check(node.wait() == 0, "exit status %s after SIGTERM" % node.p.returncode)
    finally:
        node.stop()


def case_sigint_exits_zero_and_bad_start_policy_fails():
    node = Node(["--policy", os.path.join(EXAMPLES, "policy-v1.json"),
                 "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
    try:
        node.signal(signal.SIGINT)
        check(node.wait() == 0, "exit status %s after SIGINT" % node.p.returncode)
    finally:
        node.stop()
    # A bad policy at start-up: no ready line, exit 1, the field in the log.
    p = subprocess.run([NODE, "--policy", os.path.join(EXAMPLES, "policy-invalid.json"),
                        "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                       timeout=WAIT_S)
    check(p.returncode == 1, "bad start-up policy exit %d" % p.returncode)
    check("ready" not in p.stdout, "no ready line")
    check("access_list/office.allow[0]" in p.stderr, "start-up error names the field")


def make_cert(name, cn):
    crt, key = os.path.join(TMP, name + ".crt"), os.path.join(TMP, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=" + cn,
                    "-keyout", key, "-out", crt], check=True, capture_output=True,
                   timeout=WAIT_S)
    return crt, key


def case_tls_reload_counted():
    if not shutil.which("openssl"):
        return "no openssl command"
    crt, key = make_cert("a", "node-a")
    try:
        node = Node(["--policy", os.path.join(EXAMPLES, "policy-v1.json"),
                     "--tls-listen", "127.0.0.1:0", "--tls-cert", crt, "--tls-key", key,
                     "--admin-listen", "127.0.0.1:0"])
    except Failure as e:
        if 'Failed to create the proxy' in str(e) and 'Operation not supported' in str(e):
            return "the proxy does not terminate TLS yet"
        raise
    try:
        m = node.metrics()
        check(metric(m, "sluice_tls_reloads_total", '{result="ok"}') == 0, "tls metrics:\n" + m)
        check(metric(m, "sluice_tls_connections_total", '{path="userspace"}') is not None,
              "path label")
        # A new pair under the same names: reloaded; then garbage: refused.
        crt2, key2 = make_cert("b", "node-b")
        shutil.copy(crt2, crt)
        shutil.copy(key2, key)
        node.signal(signal.SIGHUP)
        wait_for("tls reload ok", lambda: metric(
            node.metrics(), "sluice_tls_reloads_total", '{result="ok"}') == 1)
        write("a.key", "not a key\n")
        node.signal(signal.SIGHUP)
        wait_for("tls reload failed", lambda: metric(
            node.metrics(), "sluice_tls_reloads_total", '{result="failed"}') == 1)
        check("Failed to reload the TLS certificate" in node.text(), "tls failure logged")
        if "tls_listen" in node.addrs:
            p = subprocess.run(["openssl", "s_client", "-connect",
                                "127.0.0.1:%d" % node.port("tls_listen"), "-brief"],
                               input="", capture_output=True, text=True, timeout=WAIT_S)
            check("node-b" in p.stdout + p.stderr, "the reloaded certificate is served: %s"
                  % (p.stdout + p.stderr))
        node.signal(signal.SIGTERM)
        check(node.wait() == 0, "exit after TLS run")
    finally:
        node.stop()


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = ("backend saw %s" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def case_request_through_proxy():
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    policy = write("e2e.json", json.dumps({
        "name": "e2e", "version": "7",
        "resources": [
            {"upstream": {"id": "be", "endpoints": ["127.0.0.1:%d" % backend.server_port]}},
            {"route": {"id": "api", "pathPrefix": "/api/", "upstream": "be",
                       "rewritePrefix": "/app/"}},
        ]}))
    access_log = os.path.join(TMP, "access.log")
    node = Node(["--policy", policy, "--listen", "127.0.0.1:0", "--admin-listen",
                 "127.0.0.1:0", "--workers", "1", "--access-log", access_log])
    try:
        if "listen" not in node.addrs:
            return "the proxy is not built yet (%s)" % node.ready
        p = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}",
                            "http://127.0.0.1:%d/api/x?q=1" % node.port("listen")],
                           capture_output=True, text=True, timeout=WAIT_S)
        body, _, code = p.stdout.rpartition("\n")
        check(code == "200", "curl through the node: %r %r" % (p.stdout, p.stderr))
        check(body == "backend saw /app/x?q=1", "prefix rewritten: %r" % body)
        # The node opened the file and handed its fd to the proxy.
        line = wait_for("an access log line", lambda: open(access_log).read())
        check("route=api" in line and "status=200" in line, "access log: %r" % line)
        m = node.metrics()
        check(metric(m, "sluice_node_ready") == 1, "ready with the proxy running")
        check(metric(m, "sluice_proxy_requests_total", '{route="api",status="200"}') == 1,
              "the proxy's families are in /metrics:\n" + m)
        node.signal(signal.SIGTERM)
        check(node.wait() == 0, "exit after proxying")
    finally:
        node.stop()
        backend.shutdown()


def case_idle_buckets_swept_in_steps():
    """The main thread sweeps the limiter in small steps, a full pass per
    sweep interval: buckets left idle past idle_ttl_s go within about one
    interval, counted in sluice_limiter_buckets_swept_total."""
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    policy = write("sweep.json", json.dumps({
        "name": "sweep", "version": "1",
        "resources": [
            {"settings": {"id": "global", "defaultRateLimit": "per-key"}},
            {"rateLimit": {"id": "per-key", "algorithm": "TOKEN_BUCKET", "rate": "100",
                           "unit": "SECOND", "burst": "100"}},
            {"upstream": {"id": "be", "endpoints": ["127.0.0.1:%d" % backend.server_port]}},
            {"route": {"id": "api", "pathPrefix": "/", "upstream": "be"}},
        ]}))
    node = Node(["--config", standalone_config(
        policy, "limiter:\n  idle_ttl_s: 1\n  sweep_interval_s: 2\n")])
    try:
        if "listen" not in node.addrs:
            return "the proxy is not built yet (%s)" % node.ready
        for k in range(3):
            p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "http://127.0.0.1:%d/x" % node.port("listen")],
                               capture_output=True, text=True, timeout=WAIT_S)
            check(p.stdout == "200", "request %d: %r" % (k, p.stdout))
        m = node.metrics()
        check(metric(m, "sluice_limiter_buckets") == 1, "one bucket (the source's):\n" + m)
        # Idle after 1 s, a pass every 2 s: gone within a few seconds.
        m = wait_for("the bucket swept", lambda: (lambda t: t if metric(
            t, "sluice_limiter_buckets") == 0 else None)(node.metrics()))
        check(metric(m, "sluice_limiter_buckets_swept_total") == 1, "swept once:\n" + m)
        node.signal(signal.SIGTERM)
        check(node.wait() == 0, "exit after the sweep")
    finally:
        node.stop()
        backend.shutdown()


def case_kernel_enforcer_follows_the_node():
    """bpf.enabled: the node loads and attaches the TC program to the
    interface of its own network namespace, its maps follow the policy
    (SIGHUP), and SIGTERM leaves the interface as it found it."""
    if os.geteuid() != 0:
        return "needs root to load BPF programs (CI runs as root)"
    ns = "sluice-nt-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=WAIT_S)
    in_ns = ["ip", "netns", "exec", ns]
    node = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=WAIT_S)
        def ruleset(version, kernel_clients):
            res = [{"rateLimit": {"id": "k", "algorithm": "TOKEN_BUCKET", "rate": "5",
                                  "unit": "SECOND", "burst": "5", "enforce": "BOTH"}},
                   {"upstream": {"id": "be", "endpoints": ["127.0.0.1:9"]}},
                   {"route": {"id": "all", "pathPrefix": "/", "upstream": "be"}}]
            res += [{"client": {"id": "c%d" % i, "rateLimit": "k"}}
                    for i in range(kernel_clients)]
            return json.dumps({"name": "k", "version": str(version), "resources": res})
        policy = write("bpf-policy.json", ruleset(1, 1))
        cfg = write("bpf.yaml",
                    "proxy:\n  listen: 127.0.0.1:0\n  workers: 1\n"
                    "admin:\n  listen: 127.0.0.1:0\n"
                    "policy:\n  file: %s\n"
                    "bpf:\n  enabled: true\n  interface: lo\n  http_ports: [8080]\n" % policy)
        node = Node(in_ns + [NODE, "--config", cfg], prefix=False)

        def scrape():
            p = subprocess.run(in_ns + ["curl", "-s", "http://127.0.0.1:%d/metrics"
                                        % node.port("admin")],
                               capture_output=True, text=True, timeout=WAIT_S)
            return p.stdout
        m = scrape()
        check(metric(m, "sluice_bpf_attached") == 1, "attached:\n" + m + node.text())
        clients = metric(m, "sluice_bpf_kernel_clients")
        check(clients == 1, "one kernel client from the policy:\n" + m)
        tc = subprocess.run(["ip", "netns", "exec", ns, "tc", "filter", "show", "dev", "lo",
                             "ingress"], capture_output=True, text=True, timeout=WAIT_S).stdout
        check("bpf" in tc, "a bpf filter at lo ingress: %r" % tc)
        write("bpf-policy.json", ruleset(2, 3))
        node.signal(signal.SIGHUP)
        wait_for("three kernel clients after SIGHUP",
                 lambda: metric(scrape(), "sluice_bpf_kernel_clients") == 3)
        node.signal(signal.SIGTERM)
        check(node.wait() == 0, "exit 0 after SIGTERM")
        tc = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", "lo"],
                            capture_output=True, text=True, timeout=WAIT_S).stdout
        check("clsact" not in tc, "the clsact hook it created is gone: %r" % tc)
    finally:
        if node:
            node.stop()
        subprocess.run(["ip", "netns", "del", ns], timeout=WAIT_S)


def main():
    cases = [case_bad_config_names_key, case_standalone_reload_and_drain,
             case_sigint_exits_zero_and_bad_start_policy_fails, case_tls_reload_counted,
             case_request_through_proxy, case_idle_buckets_swept_in_steps,
             case_kernel_enforcer_follows_the_node]
    failed = 0
    try:
        for c in cases:
            try:
                skipped = c()
                if skipped:
                    print("skip %s: %s" % (c.__name__[5:], skipped))
                else:
                    print("ok   %s" % c.__name__[5:])
            except Failure as e:
                failed += 1
                print("FAIL %s: %s" % (c.__name__[5:], e))
            sys.stdout.flush()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
