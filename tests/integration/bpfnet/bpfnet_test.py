#!/usr/bin/python3
"""Real traffic through the TC ingress enforcer (suite 'bpf', root only).

Two network namespaces joined by a veth pair; the enforcer (node_bpf, driven
by bpfnet_driver) is attached to the server side's veth ingress, a plain
HTTP server (python3 http.server) listens behind it, and the client side
runs curl and bounded wrk runs. Shows, with real packets:
  1. a kernel-limited client gets its burst, then is throttled (drops in the
     per-reason counters, in client_stats and in ring buffer events), while
     an unlimited client passes; wrk figures for both;
  2. a source CIDR denied by the policy cannot even connect, another source
     still can;
  3. escalation: after N proxy rejections of a source (fed through the
     proxy's hook) the kernel drops it, and lets it in again once the TTL
     has passed; the expired entry is then swept;
  4. detach leaves the interface clean: no filter, no clsact qdisc (we made
     it).
Namespaces, the server and the driver are removed even on failure. Exit 77
(skip) with the reason when not root or a tool is missing.

usage: bpfnet_test.py DRIVER
"""
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

PORT = 8080
CLIENT = "10.201.0.1"
CLIENT2 = "10.201.0.3"   # a second client address, denied by policy v2
SERVER = "10.201.0.2"
TTL_S = 2
REJECTS = 5

failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def sh(*args, check_rc=True, timeout=20, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check_rc and r.returncode != 0:
        raise RuntimeError("%s: rc=%d %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return r


def policy(path, deny=None, escalate=False):
    settings = {"id": "global"}
    res = [
        {"rateLimit": {"id": "tight", "algorithm": "TOKEN_BUCKET", "rate": "1",
                       "unit": "MINUTE", "burst": "3", "enforce": "KERNEL"}},
        {"client": {"id": "limited", "keys": ["limited-key"], "rateLimit": "tight"}},
        {"client": {"id": "free", "keys": ["free-key"]}},
    ]
    if deny:
        settings["accessLists"] = ["blocked"]
        res.append({"accessList": {"id": "blocked", "deny": deny}})
    if escalate:
        settings.update({"escalationRejects": REJECTS, "escalationWindowMs": 5000,
                         "escalationTtlS": TTL_S})
    res.insert(0, {"settings": settings})
    with open(path, "w") as f:
        json.dump({"name": "edge", "version": "1", "resources": res}, f)
    return path


class Driver:
    """bpfnet_driver in the server namespace: one command, one answer line."""

    def __init__(self, exe, ns, ifname, log):
        self.p = subprocess.Popen(
            ["nsenter", "--net=/var/run/netns/" + ns, exe, ifname, str(PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)

    def cmd(self, line, timeout=10):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            raise RuntimeError("driver: no answer to %r" % line)
        out = self.p.stdout.readline().strip()
        if not out:
            raise RuntimeError("driver exited during %r" % line)
        return out

    def ok(self, line):
        out = self.cmd(line)
        if out != "ok":
            raise RuntimeError("driver: %s -> %s" % (line, out))

    def report(self):
        return json.loads(self.cmd("report"))

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.flush()
                self.p.wait(timeout=5)
            except Exception:
                self.p.kill()
                self.p.wait()


def curl(ns, key, source=None, max_time=2):
    """HTTP status as a string, or 'timeout'/'error N'."""
    args = ["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
            "--max-time", str(max_time), "--connect-timeout", str(max_time),
            "-H", "Client-ID: " + key]
    if source:
        args += ["--interface", source]
    r = sh(*(args + ["http://%s:%d/" % (SERVER, PORT)]), check_rc=False, timeout=max_time + 10)
    if r.returncode == 0:
        return r.stdout.strip()
    return "timeout" if r.returncode == 28 else "error %d" % r.returncode


def wrk(ns, key, seconds):
    r = sh("timeout", str(seconds + 10), "ip", "netns", "exec", ns, "wrk", "-t1", "-c4",
           "-d%ds" % seconds, "--timeout", "1s", "-H", "Client-ID: " + key,
           "http://%s:%d/" % (SERVER, PORT), check_rc=False, timeout=seconds + 20)
    m = re.search(r"(\d+) requests in", r.stdout)
    return (int(m.group(1)) if m else -1), r.stdout


def wait_for(pred, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def main():
    if os.geteuid() != 0:
        print("bpfnet_test: skipped: needs root (netns, CAP_BPF, CAP_NET_ADMIN)")
        return 77
    for tool in ("ip", "tc", "nsenter", "curl", "wrk"):
        if not shutil.which(tool):
            print("bpfnet_test: skipped: '%s' not found" % tool)
            return 77
    driver_exe = sys.argv[1]
    tag = "sbpfn-%d" % os.getpid()
    ns_c, ns_s = tag + "-c", tag + "-s"
    tmp = tempfile.mkdtemp(prefix="bpfnet-")
    server = driver = None
    log = open(os.path.join(tmp, "driver.log"), "w")
    try:
        sh("ip", "netns", "add", ns_c)
        sh("ip", "netns", "add", ns_s)
        sh("ip", "-n", ns_c, "link", "add", "bpfn0", "type", "veth", "peer", "name", "bpfn1",
           "netns", ns_s)
        sh("ip", "-n", ns_c, "addr", "add", CLIENT + "/24", "dev", "bpfn0")
        sh("ip", "-n", ns_c, "addr", "add", CLIENT2 + "/24", "dev", "bpfn0")
        sh("ip", "-n", ns_s, "addr", "add", SERVER + "/24", "dev", "bpfn1")
        for ns, dev in ((ns_c, "bpfn0"), (ns_s, "bpfn1")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        with open(os.path.join(tmp, "index.html"), "w") as f:
            f.write("hello\n")
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns_s, "/usr/bin/python3", "-m", "http.server", str(PORT),
             "--bind", SERVER, "--directory", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: curl(ns_c, "x", max_time=1) == "200", 10):
            raise RuntimeError("the HTTP server did not come up")

        # ---- attach with policy v1 ----------------------------------------
        driver = Driver(driver_exe, ns_s, "bpfn1", log)
        driver.ok("load " + policy(os.path.join(tmp, "v1.json")))
        driver.ok("start")
        out = sh("ip", "netns", "exec", ns_s, "tc", "filter", "show", "dev", "bpfn1",
                 "ingress").stdout
        check("bpf" in out, "attached: tc filter show lists our bpf filter")
        rep = driver.report()
        check(rep["attached"] and rep["kernel_clients"] == 1,
              "one kernel-limited client installed (%d)" % rep["kernel_clients"])

        # ---- 1. throttling ------------------------------------------------
        codes = [curl(ns_c, "free-key") for _ in range(5)]
        check(codes == ["200"] * 5, "unlimited client passes: %s" % codes)
        codes = [curl(ns_c, "limited-key") for _ in range(3)]
        check(codes == ["200"] * 3, "limited client gets its burst of 3: %s" % codes)
        code = curl(ns_c, "limited-key", max_time=2)
        check(code == "timeout", "4th request of the limited client is dropped: %s" % code)
        n_lim, out_lim = wrk(ns_c, "limited-key", 3)
        n_free, out_free = wrk(ns_c, "free-key", 3)
        print("wrk 3 s, 4 connections: limited-key %d requests, free-key %d requests"
              % (n_lim, n_free))
        check(n_lim == 0, "wrk as the limited client completes no request (%d)" % n_lim)
        check(n_free > 100, "wrk as the unlimited client is served (%d)" % n_free)
        # The ring consumer polls every 100 ms.
        rep = wait_for(lambda: (lambda r: r if r["events_by_reason"]["rate"] >= 1 else None)(
            driver.report()), 3) or driver.report()
        print("report:", json.dumps(rep))
        st = rep["client_stats"].get("limited", {})
        check(rep["dropped_rate"] >= 5, "RATE drops counted: %d" % rep["dropped_rate"])
        check(rep["packets"]["allowed"] >= 3, "ALLOWED counted: %d" % rep["packets"]["allowed"])
        check(rep["packets"]["unknown_client"] >= 5 + n_free,
              "unlimited client's requests pass as unknown to the kernel: %d"
              % rep["packets"]["unknown_client"])
        check(st.get("drops", 0) >= 5 and st.get("requests", 0) >= 8,
              "client_stats entry of 'limited': %s" % st)
        check("free" not in rep["client_stats"], "no client_stats entry for 'free'")
        check(rep["events_by_reason"]["rate"] >= 1 and rep["events_lost"] == 0,
              "ring buffer events for the drops: %d (lost %d)"
              % (rep["events_by_reason"]["rate"], rep["events_lost"]))

        # ---- 2. denied source CIDR ----------------------------------------
        driver.ok("load " + policy(os.path.join(tmp, "v2.json"), deny=[CLIENT2 + "/32"],
                                   escalate=True))
        code = curl(ns_c, "free-key", source=CLIENT2, max_time=2)
        check(code == "timeout", "denied source %s cannot connect: %s" % (CLIENT2, code))
        code = curl(ns_c, "free-key", source=CLIENT)
        check(code == "200", "another source still can: %s" % code)
        rep = driver.report()
        check(rep["dropped_deny"] >= 1, "DENY drops counted: %d" % rep["dropped_deny"])

        # ---- 3. escalation ------------------------------------------------
        for _ in range(REJECTS - 1):
            driver.ok("reject %s 429" % CLIENT)
        check(curl(ns_c, "free-key", source=CLIENT) == "200",
              "%d rejections: still under the threshold" % (REJECTS - 1))
        driver.ok("reject %s 429" % CLIENT)
        t_escalated = time.monotonic()
        rep = wait_for(lambda: (lambda r: r if r["escalations"] >= 1 else None)(
            driver.report()), 2) or driver.report()
        check(rep["escalations"] == 1, "escalated once: %d" % rep["escalations"])
        code = curl(ns_c, "free-key", source=CLIENT, max_time=1)
        check(code == "timeout", "escalated source is dropped in the kernel: %s" % code)
        while time.monotonic() < t_escalated + TTL_S + 0.3:
            time.sleep(0.05)
        code = curl(ns_c, "free-key", source=CLIENT)
        check(code == "200", "after the %d s TTL it is let in again: %s" % (TTL_S, code))
        rep = wait_for(lambda: (lambda r: r if r["deny_expired"] >= 1 else None)(
            driver.report()), 3) or driver.report()
        check(rep["deny_expired"] == 1, "the expired entry was swept: %d" % rep["deny_expired"])

        # ---- 4. detach ----------------------------------------------------
        driver.ok("stop")
        out = sh("ip", "netns", "exec", ns_s, "tc", "filter", "show", "dev", "bpfn1",
                 "ingress").stdout
        check(out.strip() == "", "after stop: tc filter show is empty (%r)" % out)
        out = sh("ip", "netns", "exec", ns_s, "tc", "qdisc", "show", "dev", "bpfn1").stdout
        check("clsact" not in out, "after stop: no clsact qdisc left (%r)" % out.strip())
        check(curl(ns_c, "limited-key") == "200", "after stop: nothing is enforced")
    except Exception as e:  # setup or driver failure: report, then clean up
        failures.append("exception: %s" % e)
        print("FAIL  exception:", e, flush=True)
    finally:
        if driver:
            driver.close()
        if server and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        for ns in (ns_c, ns_s):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        log.close()
        with open(os.path.join(tmp, "driver.log")) as f:
            text = f.read()
        if text:
            print("driver log:\n" + text)
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
