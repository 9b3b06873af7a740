#!/usr/bin/python3
"""proxy_bench.py - benchmark suite 'proxy': sluice-node against nginx and
haproxy (and no proxy at all) on loopback, same backend, same wrk load with
10,000 rotating Client-ID values, scenarios plain / reject / tls.

Invariants: every contender runs one worker pinned to the proxy CPU, wrk and
the backend share the other CPU; contenders are interleaved run by run
(A B C A B C ...) and figures are medians; CPU per request comes from the
proxy's process-group utime+stime (also printed apart: user and system
µs/req). A contender that cannot start or misbehaves
gets no figure (never a made-up one). Every child runs in its own process
group and is killed on exit. Prints `name: value` lines; SLUICE_BENCH_RECORD=1
appends a dated row to bench/RESULTS.md. Method: bench/proxy/README.md.
"""
import argparse
import ctypes
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP = 77
N_CLIENTS = 10000
BACKEND_BODY = b"ok\n"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
PEERS = ("nginx", "haproxy")
ALL_CONTENDERS = ("direct", "nginx", "haproxy", "sluice")
ALL_SCENARIOS = ("plain", "reject", "tls")
# A run is invalid when more than this share of requests fail in a scenario
# that should not reject, or less than REJECT_MIN_FRAC are 429 in `reject`.
PLAIN_MAX_FAIL_FRAC = 0.001
REJECT_MIN_FRAC = 0.9

# Limits per scenario. plain/tls: far above the offered load (nginx burst
# absorbs two requests of one key landing in the same millisecond, which
# nginx's ms-granular accounting would otherwise reject). reject: one
# request per key per minute, so after the warm-up every request is over.
LIMITS = {
    "plain": {"nginx_rate": "1000000r/s", "nginx_opts": "burst=1000 nodelay",
              "haproxy_limit": "1000000000",
              "sluice_rate": "1000000000", "sluice_unit": "SECOND",
              "sluice_burst": "1000000000"},
    "reject": {"nginx_rate": "1r/m", "nginx_opts": "nodelay",
               "haproxy_limit": "1",
               "sluice_rate": "1", "sluice_unit": "MINUTE",
               "sluice_burst": "1"},
}
LIMITS["tls"] = LIMITS["plain"]

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, flush=True)


def note(msg):
    print("# " + msg, flush=True)


# ---------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup():
    # Die with the driver even if it is SIGKILLed (meson's timeout): the
    # children live in their own session, out of reach of a group kill.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Proc:
    """A child in its own process group (pgid == pid), output to files in
    the work dir. Owned by the Bench; lives until stop() or driver exit."""

    def __init__(self, name, argv, workdir, cpu):
        self.name = name
        self.out_path = os.path.join(workdir, name + ".out")
        self.err_path = os.path.join(workdir, name + ".err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                ["taskset", "-c", str(cpu)] + argv, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True,
                preexec_fn=_child_setup, cwd=workdir)
        self.pgid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def output_tail(self, n=5):
        lines = []
        for path in (self.out_path, self.err_path):
            try:
                with open(path, "r", errors="replace") as f:
                    lines += [line.rstrip() for line in f.readlines()[-n:]]
            except OSError:
                pass
        return " | ".join(line for line in lines if line)[-400:]

    def complaints(self):
        """The child's warning and error log lines, for a reason string."""
        try:
            with open(self.err_path, "r", errors="replace") as f:
                lines = [line.strip() for line in f
                         if "level=warn" in line or "level=error" in line]
        except OSError:
            return ""
        return " (%s)" % " | ".join(lines[:2])[:300] if lines else ""

    def cpu_s(self):
        """utime+stime of every live process in the group (all threads)."""
        user, system = self.cpu_split_s()
        return user + system

    def cpu_split_s(self):
        """(utime, stime) of every live process in the group, in seconds."""
        user = system = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry, "r") as f:
                    stat = f.read()
            except OSError:
                continue
            # Fields after "(comm)": state ppid pgrp ... utime(14) stime(15)
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == self.pgid:
                user += int(fields[11])
                system += int(fields[12])
        return user / TICKS_PER_S, system / TICKS_PER_S

    def stop(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        # Also any straggler of the group (nginx workers).
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(template, out_path, values):
    with open(os.path.join(HERE, template), "r") as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace("@%s@" % key, str(value))
    if "@" in "".join(line.split("#")[0] for line in text.splitlines()):
        raise RuntimeError("%s: unfilled @VAR@" % template)
    with open(out_path, "w") as f:
        f.write(text)


def http_get(port, tls, client_id, timeout_s=2.0):
    """One GET / through a contender. Returns (status, body) or raises."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout_s,
                                           context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/", headers={"Host": "bench.local",
                                          "Client-ID": client_id})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- contenders

class Contender:
    """One proxy (or none) serving one scenario. Owned by the Bench; lives
    for the scenario. `error` set means no figures for it."""

    def __init__(self, name, scenario):
        self.name = name
        self.scenario = scenario
        self.proc = None
        self.port = None
        self.error = None
        self.runs = []

    @property
    def tls(self):
        return self.scenario == "tls"

    def url(self):
        return "%s://127.0.0.1:%d/" % ("https" if self.tls else "http", self.port)

    def cpu_split_s(self):
        return self.proc.cpu_split_s() if self.proc else (0.0, 0.0)

    def wait_ready(self, ready_line=None):
        """None once GET / through the contender answers the backend's 200,
        else why not. ready_line: (prefix on stdout, word it must hold)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc and not self.proc.alive():
                return "exited with status %d: %s" % (self.proc.popen.returncode,
                                                       self.proc.output_tail())
            if ready_line:
                try:
                    with open(self.proc.out_path, "r", errors="replace") as f:
                        out = f.read()
                except OSError:
                    out = ""
                if ready_line[0] not in out:
                    time.sleep(0.1)
                    last = "no '%s' line on stdout" % ready_line[0]
                    continue
                line = out[out.index(ready_line[0]):].split("\n")[0]
                if ready_line[1] not in line.split():
                    return "ready without the proxy listener %s: '%s'%s" % (
                        ready_line[1], line.strip(), self.proc.complaints())
            try:
                status, body = http_get(self.port, self.tls, "bench-probe")
                if status == 200 and body == BACKEND_BODY:
                    return None
                last = "GET / answered %d %r" % (status, body[:60])
            except (OSError, http.client.HTTPException) as e:
                last = "GET / failed: %s" % e
            time.sleep(0.1)
        return "not ready after %.0f s (%s)" % (READY_TIMEOUT_S, last)

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="sluice-proxy-bench-")
        self.procs = []
        self.backend = None
        self.backend_port = None
        self.results = {}   # (scenario, contender) -> summary dict or error

    # -- lifecycle

    def spawn(self, name, argv, cpu):
        proc = Proc(name, argv, self.dir, cpu)
        self.procs.append(proc)
        return proc

    def cleanup(self):
        for proc in self.procs:
            proc.stop()
        self.procs = []
        if os.environ.get("BENCH_KEEP_DIR"):
            note("work dir kept: " + self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def make_cert(self):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
             "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", os.path.join(self.dir, "key.pem"),
             "-out", os.path.join(self.dir, "cert.pem")],
            check=True, timeout=30, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # haproxy takes certificate and key in one file.
        with open(os.path.join(self.dir, "combined.pem"), "w") as out:
            for part in ("cert.pem", "key.pem"):
                with open(os.path.join(self.dir, part)) as f:
                    out.write(f.read())

    def start_backend(self):
        self.backend_port = free_port()
        conf = os.path.join(self.dir, "backend.conf")
        render("nginx-backend.conf.in", conf,
               {"DIR": self.dir, "BACKEND_PORT": self.backend_port})
        self.backend = self.spawn("backend", ["nginx", "-e", os.path.join(
            self.dir, "backend-error.log"), "-p", self.dir, "-c", conf],
            self.args.load_cpu)
        probe = Contender("backend", "plain")
        probe.proc, probe.port = self.backend, self.backend_port
        return probe.wait_ready()

    # -- contenders

    def start(self, name, scenario, wrapper=()):
        """wrapper: a command sluice-node runs under (valgrind, ...); the
        node is then ready when it answers, whatever its stdout says."""
        c = Contender(name, scenario)
        limits = LIMITS[scenario]
        cpu = self.args.proxy_cpu
        if name == "direct":
            c.port = self.backend_port
            c.error = c.wait_ready()
            return c
        c.port = free_port()
        tag = "%s-%s" % (name, scenario)
        if name == "nginx":
            conf = os.path.join(self.dir, tag + ".conf")
            render("nginx-proxy.conf.in", conf, {
                "DIR": self.dir, "SCENARIO": scenario, "PORT": c.port,
                "BACKEND_PORT": self.backend_port,
                "LISTEN_OPTS": "ssl" if c.tls else "",
                "UPSTREAM_KEEPALIVE": max(64, 2 * self.args.connections),
                "NGINX_RATE": limits["nginx_rate"],
                "NGINX_LIMIT_OPTS": limits["nginx_opts"]})
            c.proc = self.spawn(tag, ["nginx", "-e", os.path.join(
                self.dir, tag + "-error.log"), "-p", self.dir, "-c", conf], cpu)
            c.error = c.wait_ready()
        elif name == "haproxy":
            conf = os.path.join(self.dir, tag + ".cfg")
            bind = "ssl crt %s" % os.path.join(self.dir, "combined.pem") if c.tls else ""
            render("haproxy.cfg.in", conf, {
                "PORT": c.port, "BACKEND_PORT": self.backend_port,
                "BIND_OPTS": bind, "HAPROXY_LIMIT": limits["haproxy_limit"]})
            c.proc = self.spawn(tag, ["haproxy", "-db", "-f", conf], cpu)
            c.error = c.wait_ready()
        elif name == "sluice":
            c.error = self.start_sluice(c, tag, limits, cpu, wrapper)
        return c

    def write_policy(self, path, limits):
        resources = [
            {"settings": {"id": "global", "clientIdHeader": "Client-ID"}},
            {"rateLimit": {"id": "bench", "algorithm": "TOKEN_BUCKET",
                           "rate": limits["sluice_rate"], "unit": limits["sluice_unit"],
                           "burst": limits["sluice_burst"]}},
            {"upstream": {"id": "backend",
                          "endpoints": ["127.0.0.1:%d" % self.backend_port],
                          "keepalivePoolSize": max(64, 2 * self.args.connections)}},
            {"route": {"id": "all", "pathPrefix": "/", "upstream": "backend"}},
        ]
        resources += [{"client": {"id": "bench-c%05d" % k, "rateLimit": "bench"}}
                      for k in range(N_CLIENTS)]
        with open(path, "w") as f:
            json.dump({"name": "bench", "version": "1", "resources": resources}, f)

    def start_sluice(self, c, tag, limits, cpu, wrapper=()):
        node = self.args.sluice_node
        if not node or not os.access(node, os.X_OK):
            return "no executable at '%s'" % node
        policy = os.path.join(self.dir, tag + ".json")
        self.write_policy(policy, limits)
        tool = self.args.sluice_policy
        if tool and os.access(tool, os.X_OK):
            r = subprocess.run([tool, "validate", policy], timeout=60,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                return "sluice-policy rejects the benchmark policy: %s" % \
                    r.stdout.decode(errors="replace").strip()[-300:]
        argv = list(wrapper) + [node, "--policy", policy, "--admin-listen", "127.0.0.1:0",
                                "--workers", "1"]
        if c.tls:
            argv += ["--tls-listen", "127.0.0.1:%d" % c.port,
                     "--tls-cert", os.path.join(self.dir, "cert.pem"),
                     "--tls-key", os.path.join(self.dir, "key.pem")]
        else:
            argv += ["--listen", "127.0.0.1:%d" % c.port]
        c.proc = self.spawn(tag, argv, cpu)
        want = "%slisten=127.0.0.1:%d" % ("tls_" if c.tls else "", c.port)
        return c.wait_ready(None if wrapper else ("sluice-node: ready", want))

    # -- load

    def wrk(self, c, seconds):
        argv = ["taskset", "-c", str(self.args.load_cpu), "wrk",
                "-t", str(self.args.threads), "-c", str(self.args.connections),
                "-d", "%ds" % seconds, "--timeout", "5s", "--latency",
                "-s", os.path.join(HERE, "rotate.lua"), c.url()]
        env = dict(os.environ, BENCH_CLIENTS=str(N_CLIENTS))
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=seconds + 30, env=env, preexec_fn=_child_setup)
        for line in r.stdout.decode(errors="replace").splitlines():
            if line.startswith("WRKJSON "):
                return json.loads(line[len("WRKJSON "):])
        raise RuntimeError("wrk against %s gave no summary (status %d): %s" % (
            c.name, r.returncode, r.stderr.decode(errors="replace")[-300:]))

    def measure(self, c):
        steal0 = cpu_steal_ticks(self.args.proxy_cpu)
        segs0 = tcp_out_segs()
        wrk0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        (usr0, sys0), back0 = c.cpu_split_s(), self.backend.cpu_s()
        w = self.wrk(c, self.args.seconds)
        (usr1, sys1), back1 = c.cpu_split_s(), self.backend.cpu_s()
        cpu0, cpu1 = usr0 + sys0, usr1 + sys1
        wrk1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        steal1 = cpu_steal_ticks(self.args.proxy_cpu)
        segs1 = tcp_out_segs()
        n = w["requests"]
        errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_timeout"]
        wall_s = w["duration_us"] / 1e6
        wrk_cpu = (wrk1.ru_utime + wrk1.ru_stime) - (wrk0.ru_utime + wrk0.ru_stime)
        return {
            "rps": n / wall_s if wall_s > 0 else 0.0,
            "p50_us": w["p50_us"], "p99_us": w["p99_us"],
            "us_per_req": (cpu1 - cpu0) * 1e6 / n if n and c.proc else None,
            # the same split by the kernel's accounting: user space, and
            # the kernel working for the process (syscalls, io_uring, the
            # TCP/IP work its sends do on loopback)
            "user_us_per_req": (usr1 - usr0) * 1e6 / n if n and c.proc else None,
            "sys_us_per_req": (sys1 - sys0) * 1e6 / n if n and c.proc else None,
            "backend_us_per_req": (back1 - back0) * 1e6 / n if n else None,
            # share of the load CPU used by wrk + backend: ~1 means the
            # load side, not the proxy, set the req/s
            "load_cpu_busy": ((back1 - back0) + wrk_cpu) / wall_s if wall_s else 0.0,
            "requests": n, "non2xx": w["non2xx"], "socket_errors": errors,
            # the share of the proxy CPU's time the hypervisor gave to
            # others: runs with a few per cent of it have long tails for
            # every contender (not used in the medians, printed to read them)
            "steal_pct": 100.0 * (steal1[0] - steal0[0]) / max(steal1[1] - steal0[1], 1),
            # TCP segments sent on the machine per request, by wrk, the
            # backend and the proxy together: 2 per hop (request and
            # response), so 2 direct and 4 through a proxy that forwards
            # (2 in `reject`); more means pure ACKs or split writes
            "segs_per_req": (segs1 - segs0) / n if n and segs0 is not None
            and segs1 is not None else None,
        }

    def check_run(self, c, run):
        """Why this run's figures do not describe the scenario, or None."""
        n = run["requests"]
        if n == 0:
            return "no request completed"
        if run["socket_errors"] > PLAIN_MAX_FAIL_FRAC * n:
            return "%d socket errors in %d requests" % (run["socket_errors"], n)
        frac = run["non2xx"] / n
        if c.scenario == "reject" and c.name != "direct":
            # Each key earns one request back per minute (1r/m), all at
            # once since the warm-up spent them together: a run that spans
            # that minute lets up to N_CLIENTS through per started minute.
            # On a slow (busy) machine that is more than 10 % of a run's
            # requests without anything being wrong.
            passed = n - run["non2xx"]
            refill = N_CLIENTS * -(-self.args.seconds // 60)
            if frac < REJECT_MIN_FRAC and passed > refill:
                return "only %.1f%% of requests answered 4xx/5xx (%d passed, " \
                       "refills allow %d)" % (100 * frac, passed, refill)
        elif frac > PLAIN_MAX_FAIL_FRAC:
            return "%.2f%% of requests answered 4xx/5xx" % (100 * frac)
        return None

    def check_rejects_are_429(self, c):
        # wrk counts every status >= 400: make sure the rejections are 429s
        # and not errors, and that unlimited keys still pass.
        try:
            status, _ = http_get(c.port, c.tls, "bench-c00000")
            if status != 429:
                return "a key over its limit got %d, not 429" % status
            status, body = http_get(c.port, c.tls, "bench-fresh-%d" % time.time_ns())
            if status != 200 or body != BACKEND_BODY:
                return "an unknown key got %d %r" % (status, body[:40])
        except (OSError, http.client.HTTPException) as e:
            return "probe failed: %s" % e
        return None

    def run_scenario(self, scenario):
        names = [n for n in self.args.contenders
                 if not (scenario == "tls" and n == "direct")]
        live = []
        for name in names:
            c = self.start(name, scenario)
            if c.error:
                self.results[(scenario, name)] = c.error
                if name == "sluice":
                    log("sluice-node: unavailable (%s)" % c.error)
                else:
                    note("%s %s: unavailable (%s)" % (scenario, name, c.error))
                c.stop()
            else:
                live.append(c)
        try:
            # Warm-up: upstream pools, TLS sessions, page cache; in `reject`
            # it also spends each key's allowance so the measured runs see
            # the steady rejecting state.
            for c in live:
                done = self.wrk(c, self.args.warmup)["requests"]
                if scenario == "reject" and c.name != "direct":
                    # Every key must have spent its allowance, whatever
                    # the machine's speed: warm up until the rotation has
                    # gone round once (bounded: 15 more warm-ups at most).
                    for _ in range(15):
                        if done >= N_CLIENTS + self.args.connections:
                            break
                        done += self.wrk(c, self.args.warmup)["requests"]
                    c.error = self.check_rejects_are_429(c)
            for i in range(self.args.runs):
                for c in live:
                    if c.error:
                        continue
                    run = self.measure(c)
                    bad = self.check_run(c, run)
                    note("%s %s run %d: %.0f req/s p50 %d us p99 %d us %s us/req "
                         "(user %s sys %s) non2xx %d/%d steal %.1f%% segs/req %s%s" % (
                             scenario, c.name, i + 1, run["rps"], run["p50_us"],
                             run["p99_us"], fmt(run["us_per_req"], 2),
                             fmt(run["user_us_per_req"], 2), fmt(run["sys_us_per_req"], 2),
                             run["non2xx"], run["requests"], run["steal_pct"],
                             fmt(run["segs_per_req"], 2), "  INVALID: " + bad if bad else ""))
                    if bad:
                        c.error = bad
                    c.runs.append(run)
        finally:
            for c in live:
                c.stop()
        for c in live:
            if c.error:
                self.results[(scenario, c.name)] = c.error
                if c.name == "sluice":
                    log("sluice-node: invalid in %s (%s)" % (scenario, c.error))
                else:
                    note("%s %s: invalid (%s)" % (scenario, c.name, c.error))
            else:
                self.results[(scenario, c.name)] = summarize(c.runs)

    # -- report

    def report(self):
        log("")
        log("# scenario contender     req/s   p50_us   p99_us  us/req  backend_us  "
            "load_cpu  non2xx%%   (medians of %d x %d s, %d conns, %d keys)" % (
                self.args.runs, self.args.seconds, self.args.connections, N_CLIENTS))
        for scenario in self.args.scenarios:
            for name in self.args.contenders:
                r = self.results.get((scenario, name))
                if r is None:
                    continue
                if isinstance(r, str):
                    log("# %-8s %-9s  unavailable: %s" % (scenario, name, r))
                    continue
                log("# %-8s %-9s %8.0f %8.0f %8.0f %7s %11s %9.2f %8.2f   (req/s %.0f-%.0f)" % (
                    scenario, name, r["rps"], r["p50_us"], r["p99_us"],
                    fmt(r["us_per_req"], 2), fmt(r["backend_us_per_req"], 2),
                    r["load_cpu_busy"], 100 * r["non2xx_frac"], r["rps_min"], r["rps_max"]))
        for scenario in self.args.scenarios:
            for name in self.args.contenders:
                r = self.results.get((scenario, name))
                if not isinstance(r, dict):
                    continue
                key = "%s_%s" % (scenario, name)
                log("%s_rps: %.0f" % (key, r["rps"]))
                log("%s_p50_us: %.0f" % (key, r["p50_us"]))
                log("%s_p99_us: %.0f" % (key, r["p99_us"]))
                if r["us_per_req"] is not None:
                    log("%s_us_per_req: %.2f" % (key, r["us_per_req"]))
                    log("%s_user_us_per_req: %.2f" % (key, r["user_us_per_req"]))
                    log("%s_sys_us_per_req: %.2f" % (key, r["sys_us_per_req"]))
                if r["segs_per_req"] is not None:
                    log("%s_tcp_segs_per_req: %.2f" % (key, r["segs_per_req"]))
                if scenario == "reject" and name != "direct":
                    log("%s_rejected_frac: %.4f" % (key, r["non2xx_frac"]))
        ratios = {}
        for scenario in self.args.scenarios:
            peers = [self.results.get((scenario, p)) for p in PEERS]
            peer_us = [p["us_per_req"] for p in peers if isinstance(p, dict)]
            peer_rps = [p["rps"] for p in peers if isinstance(p, dict)]
            peer_p99 = [p["p99_us"] for p in peers if isinstance(p, dict)]
            sl = self.results.get((scenario, "sluice"))
            sl_us = sl["us_per_req"] if isinstance(sl, dict) else None
            best_us = min(peer_us) if peer_us else None
            if best_us is None or not sl_us:
                why = "no peer figures" if best_us is None else "no sluice-node figures"
                log("ratio_vs_best_peer_%s: n/a (%s)" % (scenario, why))
                log("rps_ratio_vs_best_peer_%s: n/a (%s)" % (scenario, why))
                ratios[scenario] = ("n/a", "n/a", fmt(sl_us, 2), fmt(best_us, 2))
                continue
            cpu_ratio = best_us / sl_us
            rps_ratio = sl["rps"] / max(peer_rps)
            log("ratio_vs_best_peer_%s: %.3f" % (scenario, cpu_ratio))
            log("rps_ratio_vs_best_peer_%s: %.3f" % (scenario, rps_ratio))
            # <= 1: sluice-node's p99 is no worse than the best peer's.
            log("p99_ratio_vs_best_peer_%s: %.3f" % (scenario, sl["p99_us"] / min(peer_p99)))
            ratios[scenario] = ("%.3f" % cpu_ratio, "%.3f" % rps_ratio,
                                "%.2f" % sl_us, "%.2f" % best_us)
        self.record(ratios)

    def record(self, ratios):
        """One row under `## proxy` in bench/RESULTS.md, through bench/record.py."""
        if not os.environ.get("SLUICE_BENCH_RECORD"):
            return
        path = os.environ.get("SLUICE_BENCH_RESULTS") or "bench/RESULTS.md"
        cols = ["proxy", "%dx%ds" % (self.args.runs, self.args.seconds)]
        for scenario in ALL_SCENARIOS:
            cols += list(ratios.get(scenario, ("-", "-", "-", "-")))
        recorder = os.path.join(os.path.dirname(os.path.abspath(path)), "record.py")
        r = subprocess.run([sys.executable, recorder, path, "proxy", " | ".join(cols)])
        if r.returncode != 0:
            print("proxy_bench: recording in '%s' failed" % path, file=sys.stderr)




def fmt(v, digits):
    return "-" if v is None else "%.*f" % (digits, v)


def summarize(runs):
    def med(key):
        vals = [r[key] for r in runs if r[key] is not None]
        return statistics.median(vals) if vals else None
    n = sum(r["requests"] for r in runs)
    return {
        "rps": med("rps"), "p50_us": med("p50_us"), "p99_us": med("p99_us"),
        "us_per_req": med("us_per_req"), "backend_us_per_req": med("backend_us_per_req"),
        "user_us_per_req": med("user_us_per_req"), "sys_us_per_req": med("sys_us_per_req"),
        "load_cpu_busy": med("load_cpu_busy"), "segs_per_req": med("segs_per_req"),
        "non2xx_frac": sum(r["non2xx"] for r in runs) / n if n else 0.0,
        "rps_min": min(r["rps"] for r in runs), "rps_max": max(r["rps"] for r in runs),
    }


def cpu_steal_ticks(cpu):
    """(steal, all) ticks of one CPU so far, from /proc/stat; (0, 0) where
    the line is missing."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu%d " % cpu):
                    ticks = [int(v) for v in line.split()[1:]]
                    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks)
    except OSError:
        pass
    return 0, 0


def tcp_out_segs():
    """TCP segments this machine (network namespace) has sent so far, from
    /proc/net/snmp; None where it cannot be read."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
        return int(rows[1][rows[0].index("OutSegs")])
    except (OSError, IndexError, ValueError):
        return None


def env_int(name, default, minimum):
    try:
        v = int(os.environ.get(name, default))
    except ValueError:
        sys.exit("proxy_bench: %s must be an integer" % name)
    if v < minimum:
        sys.exit("proxy_bench: %s must be >= %d" % (name, minimum))
    return v


def env_list(name, default, allowed):
    items = [x.strip() for x in os.environ.get(name, ",".join(default)).split(",") if x.strip()]
    for x in items:
        if x not in allowed:
            sys.exit("proxy_bench: %s: unknown '%s' (known: %s)" % (name, x, ", ".join(allowed)))
    return items


def parse_args(runs=5, seconds=10):
    """The command line, and the BENCH_* environment with these defaults
    for BENCH_RUNS and BENCH_SECONDS (each tool has its own)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sluice-node", default="", help="path of the sluice-node binary")
    p.add_argument("--sluice-policy", default="", help="path of sluice-policy (validates the policy)")
    args = p.parse_args()
    # Children run in the work dir: relative paths would not resolve there.
    args.sluice_node = os.path.abspath(args.sluice_node) if args.sluice_node else ""
    args.sluice_policy = os.path.abspath(args.sluice_policy) if args.sluice_policy else ""
    args.runs = env_int("BENCH_RUNS", runs, 1)
    args.seconds = env_int("BENCH_SECONDS", seconds, 1)
    args.warmup = env_int("BENCH_WARMUP", 2, 1)
    args.connections = env_int("BENCH_CONNECTIONS", 50, 1)
    args.threads = env_int("BENCH_THREADS", 1, 1)
    args.proxy_cpu = env_int("BENCH_PROXY_CPU", 0, 0)
    args.load_cpu = env_int("BENCH_LOAD_CPU", 1, 0)
    args.scenarios = env_list("BENCH_SCENARIOS", ALL_SCENARIOS, ALL_SCENARIOS)
    args.contenders = env_list("BENCH_CONTENDERS", ALL_CONTENDERS, ALL_CONTENDERS)
    return args


def prepared_bench(args, who, tools):
    """(Bench with its certificate made and backend up, None), or (None,
    exit status) after saying why: SKIP when a tool is missing. The caller
    owns the Bench and calls cleanup()."""
    for tool in tools:
        if not shutil.which(tool):
            print("%s: skipped: '%s' not found in PATH" % (who, tool))
            return None, SKIP
    bench = Bench(args)
    bench.make_cert()
    err = bench.start_backend()
    if err:
        bench.cleanup()
        print("%s: backend nginx did not start: %s" % (who, err), file=sys.stderr)
        return None, 1
    return bench, None


def main():
    args = parse_args()
    for tool in ("wrk", "nginx", "haproxy", "openssl", "taskset"):
        if not shutil.which(tool):
            print("proxy_bench: skipped: '%s' not found in PATH" % tool)
            return SKIP
    cpus = os.sched_getaffinity(0)
    if args.proxy_cpu not in cpus or args.load_cpu not in cpus or args.proxy_cpu == args.load_cpu:
        print("proxy_bench: skipped: needs two distinct usable CPUs (proxy %d, load %d; "
              "usable %s)" % (args.proxy_cpu, args.load_cpu, sorted(cpus)))
        return SKIP

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    bench, rc = prepared_bench(args, "proxy_bench", ())
    if not bench:
        return rc
    try:
        log("proxy_cpu: %d" % args.proxy_cpu)
        log("load_cpu: %d" % args.load_cpu)
        log("runs: %d" % args.runs)
        log("seconds: %d" % args.seconds)
        log("connections: %d" % args.connections)
        log("client_ids: %d" % N_CLIENTS)
        for scenario in args.scenarios:
            bench.run_scenario(scenario)
        bench.report()
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
