"""proxy_test.py - the node's io_uring proxy end to end: the real sluice-node
binary with a proto3 JSON policy and a YAML config, a real backend
(backend.py), and real clients (curl, raw sockets for crafted bytes, wrk).

Usage: proxy_test.py SLUICE_NODE [CASE...]. Each case prints "ok" or
"FAIL <why>"; exit 1 when any failed, 77 when a tool is missing. Asserts
check behaviour (statuses, bytes, headers, what the backend received),
never timing; every wait is bounded.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backend import BIG, Backend  # noqa: E402

NODE = None
TMP = None
BE = None
failures = []


# ---- helpers ----

class Node:
    """One sluice-node process, started with a policy and a config."""

    def __init__(self, policy, config="", listen="127.0.0.1:0", workers=2, extra=(), env=None):
        self.dir = tempfile.mkdtemp(dir=TMP)
        self.policy_path = os.path.join(self.dir, "policy.json")
        self.write_policy(policy)
        self.config_path = os.path.join(self.dir, "node.yaml")
        with open(self.config_path, "w") as f:
            f.write("admin:\n  drain_delay_ms: 0\n" + config)
        self.log_path = os.path.join(self.dir, "access.log")
        self.proc = subprocess.Popen(
            [NODE, "--config", self.config_path, "--policy", self.policy_path,
             "--listen", listen, "--admin-listen", "127.0.0.1:0", "--workers", str(workers),
             "--access-log", self.log_path, *extra],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.dir, "stderr"), "w"),
            text=True, env=dict(os.environ, **(env or {})))
        line = ""
        deadline = time.time() + 15
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if "ready" in line or not line:
                break
        m = re.search(r"listen=(\S+):(\d+)", line)
        a = re.search(r"admin=(\S+):(\d+)", line)
        if not m or not a:
            raise RuntimeError("sluice-node did not start: %r %s" % (line, self.stderr()))
        self.host = m.group(1).strip("[]")
        self.port = int(m.group(2))
        t = re.search(r"tls_listen=(\S+):(\d+)", line)
        self.tls_port = int(t.group(2)) if t else 0
        self.admin = int(a.group(2))

    def write_policy(self, policy):
        tmp = self.policy_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(policy, f)
        os.rename(tmp, self.policy_path)

    def stderr(self):
        try:
            with open(os.path.join(self.dir, "stderr")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def metrics(self):
        return curl("http://127.0.0.1:%d/metrics" % self.admin)[2].decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def curl(url, *args, timeout=10):
    """Returns (status, headers lower-cased dict, body) of the final response."""
    hfile = os.path.join(TMP, "curl_headers")
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), "-D", hfile,
                        "-o", "-", *args, url], capture_output=True)
    if r.returncode != 0:
        raise AssertionError("curl %s failed: %s" % (url, r.stderr.decode()))
    with open(hfile, "rb") as f:
        blocks = f.read().decode("latin-1").split("\r\n\r\n")
    blocks = [b for b in blocks if b.startswith("HTTP/")]
    lines = blocks[-1].split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        if ": " in l:
            k, v = l.split(": ", 1)
            headers[k.lower()] = v
    return status, headers, r.stdout


def connect(port, host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((host, port))
    return s


def read_responses(s, count, timeout=10):
    """Reads `count` responses (Content-Length, chunked or until close).
    Returns a list of (status, headers, body) and whether the peer closed."""
    s.settimeout(timeout)
    buf = b""
    out = []
    closed = False

    def more():
        nonlocal buf, closed
        d = s.recv(65536)
        if not d:
            closed = True
            return False
        buf += d
        return True

    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            if not more():
                return out, True
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for l in lines[1:]:
            k, v = l.split(": ", 1)
            headers[k.lower()] = v
        buf = rest
        if 100 <= status < 200:
            out.append((status, headers, b""))
            continue
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in buf:
                    if not more():
                        return out, True
                line, buf = buf.split(b"\r\n", 1)
                n = int(line, 16)
                while len(buf) < n + 2:
                    if not more():
                        return out, True
                if n == 0:
                    buf = buf[2:]
                    break
                body += buf[:n]
                buf = buf[n + 2:]
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(buf) < n:
                if not more():
                    return out, True
            body, buf = buf[:n], buf[n:]
        else:
            while more():
                pass
            body, buf = buf, b""
        out.append((status, headers, body))
    return out, closed


def raw(port, data, count=1, host="127.0.0.1", timeout=10):
    s = connect(port, host)
    s.sendall(data)
    try:
        return read_responses(s, count, timeout)
    finally:
        s.close()


def closed_by_peer(s, timeout=10):
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def backend_headers(rec):
    return {k.lower(): v for k, v in rec["headers"]}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---- the policy under test ----

def make_policy(be_port, down_port, hole_port, www, version=1, extra_route=False, lim_rate=10):
    res = [
        {"settings": {"id": "global", "clientIdHeader": "Client-ID"}},
        {"rateLimit": {"id": "lim10", "algorithm": "TOKEN_BUCKET", "rate": str(lim_rate),
                       "unit": "SECOND", "burst": "5"}},
        {"rateLimit": {"id": "shadow1", "algorithm": "TOKEN_BUCKET", "rate": "1",
                       "unit": "MINUTE", "burst": "1", "action": "SHADOW"}},
        {"client": {"id": "tenant-a", "keys": ["tenant-a-key"]}},
        {"accessList": {"id": "v6only", "allow": ["::1"]}},
        {"accessList": {"id": "no-v4-local", "deny": ["127.0.0.0/8"]}},
        {"upstream": {"id": "be", "endpoints": ["127.0.0.1:%d" % be_port],
                      "keepalivePoolSize": 4}},
        {"upstream": {"id": "down", "endpoints": ["127.0.0.1:%d" % down_port]}},
        {"upstream": {"id": "hole", "endpoints": ["127.0.0.1:%d" % hole_port],
                      "connectTimeoutMs": 300}},
        {"upstream": {"id": "nx", "endpoints": ["nonexistent.invalid:80"]}},
        {"route": {"id": "api", "pathPrefix": "/api/", "upstream": "be", "rewritePrefix": "/app/"}},
        {"route": {"id": "backend", "pathPrefix": "/backend", "upstream": "be",
                   "rewritePrefix": "/"}},
        {"route": {"id": "plain", "pathPrefix": "/plain", "upstream": "be"}},
        {"route": {"id": "vhost", "host": "example.test", "pathPrefix": "/", "upstream": "be",
                   "rewritePrefix": "/host/"}},
        {"route": {"id": "static", "pathPrefix": "/static/",
                   "staticFiles": {"root": www, "index": "index.html"}}},
        {"route": {"id": "docs", "pathPrefix": "/docs", "staticFiles": {"root": www + "/docs"}}},
        {"route": {"id": "robots", "pathPrefix": "/robots.txt",
                   "staticFiles": {"root": www + "/robots.txt"}}},
        {"route": {"id": "mem", "pathPrefix": "/mem",
                   "staticFiles": {"root": www, "inMemory": True}}},
        {"route": {"id": "limited", "pathPrefix": "/limited", "upstream": "be",
                   "rateLimits": ["lim10"]}},
        {"route": {"id": "shadow", "pathPrefix": "/shadow", "upstream": "be",
                   "rateLimits": ["shadow1"]}},
        {"route": {"id": "postonly", "pathPrefix": "/postonly", "upstream": "be",
                   "methods": ["POST"]}},
        {"route": {"id": "small", "pathPrefix": "/small", "upstream": "be",
                   "maxBodyBytes": "100"}},
        {"route": {"id": "office", "pathPrefix": "/office", "upstream": "be",
                   "accessLists": ["v6only"]}},
        {"route": {"id": "blocked", "pathPrefix": "/blocked", "upstream": "be",
                   "accessLists": ["no-v4-local"]}},
        {"route": {"id": "down", "pathPrefix": "/down", "upstream": "down"}},
        {"route": {"id": "hole", "pathPrefix": "/hole", "upstream": "hole"}},
        {"route": {"id": "slow", "pathPrefix": "/slow", "upstream": "be",
                   "requestTimeoutMs": 700}},
        {"route": {"id": "slowok", "pathPrefix": "/waits", "upstream": "be",
                   "requestTimeoutMs": 10000}},
        {"route": {"id": "nx", "pathPrefix": "/nx", "upstream": "nx"}},
    ]
    if extra_route:
        res.append({"route": {"id": "extra", "pathPrefix": "/extra", "upstream": "be"}})
    return {"name": "edge", "version": str(version), "resources": res}


# ---- cases ----

def case_routing_and_prefixes(n):
    cases = [
        ("/api/v1/users", "/app/v1/users"),
        ("/api/", "/app/"),
        ("/api", "/app"),
        ("/api/v1/users?q=1&r=2", "/app/v1/users?q=1&r=2"),
        ("/backend", "/"),
        ("/backend/users", "/users"),
        ("/plain/x?y=1", "/plain/x?y=1"),
    ]
    for path, want in cases:
        st, _, body = curl("http://127.0.0.1:%d%s" % (n.port, path))
        check(st == 200, "%s: status %d" % (path, st))
        got = json.loads(body)["target"]
        check(got == want, "%s forwarded as %s, want %s" % (path, got, want))
    # host exact match first, then the host-less routes
    st, _, body = curl("http://127.0.0.1:%d/x/y" % n.port, "-H", "Host: Example.Test:8080")
    check(st == 200 and json.loads(body)["target"] == "/host/x/y", "vhost: %d %r" % (st, body))
    # Case and a trailing dot do not matter, whatever the byte's place
    # in an eight-byte word.
    for host in ("EXAMPLE.TEST.", "eXaMpLe.TeSt", "EXAMPLE.test:1"):
        st, _, body = curl("http://127.0.0.1:%d/x/y" % n.port, "-H", "Host: " + host)
        check(st == 200 and json.loads(body)["target"] == "/host/x/y",
              "vhost as %s: %d %r" % (host, st, body[:80]))
    st, _, _ = curl("http://127.0.0.1:%d/nothing/here" % n.port)
    check(st == 404, "no route: %d" % st)
    st, h, _ = curl("http://127.0.0.1:%d/postonly" % n.port)
    check(st == 405 and h.get("allow") == "POST", "method: %d %r" % (st, h))
    st, _, body = curl("http://127.0.0.1:%d/postonly" % n.port, "-d", "x=1")
    check(st == 200 and json.loads(body)["body"] == "x=1", "POST allowed: %d" % st)


def case_forwarding_headers(n):
    st, h, body = curl("http://127.0.0.1:%d/plain/fwd" % n.port,
                       "-H", "X-Forwarded-For: 203.0.113.7",
                       "-H", "Forwarded: for=203.0.113.7",
                       "-H", "Via: 1.1 edge-lb",
                       "-H", "Connection: keep-alive, X-Drop-Me",
                       "-H", "X-Drop-Me: secret",
                       "-H", "TE: trailers",
                       "-H", "Proxy-Authorization: Basic Zm9v",
                       "-H", "Proxy-X: 1",
                       "-H", "Keep-Alive: timeout=5",
                       "-H", "X-Spaced:   v  ",
                       "-H", "X-Forwarded-For: 198.51.100.9",
                       "-H", "X-Keep: 1")
    check(st == 200, "status %d" % st)
    rec = json.loads(body)
    bh = backend_headers(rec)
    check(bh.get("x-forwarded-for") == "203.0.113.7, 198.51.100.9, 127.0.0.1",
          "XFF %r" % bh.get("x-forwarded-for"))
    # Kept fields pass as written; OWS around a value is not part of it.
    check(bh.get("x-spaced", "").strip(" \t") == "v", "X-Spaced %r" % bh.get("x-spaced"))
    check("proxy-x" not in bh, "Proxy-X forwarded to the upstream")
    names = [k.lower() for k, _ in rec["headers"]]
    check(names.count("x-forwarded-for") == 1 and
          names.index("host") < names.index("x-spaced") < names.index("x-keep") <
          names.index("x-forwarded-for") < names.index("forwarded") < names.index("via"),
          "field order %r" % names)
    check(bh.get("forwarded") == "for=203.0.113.7, for=127.0.0.1;proto=http",
          "Forwarded %r" % bh.get("forwarded"))
    check(bh.get("via") == "1.1 edge-lb, 1.1 sluice", "Via %r" % bh.get("via"))
    for gone in ("x-drop-me", "te", "proxy-authorization", "keep-alive", "connection"):
        check(gone not in bh, "%s forwarded to the upstream" % gone)
    check(bh.get("x-keep") == "1" and bh.get("host") == "127.0.0.1:%d" % n.port, "kept fields")
    check(h.get("via") == "1.1 sluice", "response Via %r" % h.get("via"))
    # response side
    st, h, body = curl("http://127.0.0.1:%d/plain/hop" % n.port)
    check(st == 200 and body == b"hop", "hop: %d" % st)
    for gone in ("x-secret", "keep-alive", "proxy-thing"):
        check(gone not in h, "%s relayed to the client" % gone)
    check(h.get("x-kept") == "yes", "X-Kept missing")
    # A head dripped one byte per send, after an interim 100: relayed whole.
    st, h, body = curl("http://127.0.0.1:%d/plain/drip" % n.port)
    check(st == 200 and body == b"drip" and h.get("x-drip") == "d" * 300,
          "drip: %d %r %r" % (st, body, h.get("x-drip", "")[:20]))
    # The raw head: kept fields in their order, ours appended after the
    # upstream's Via (RFC 9110 7.6.3: several Via lines are one list).
    s = connect(n.port)
    s.sendall(b"GET /plain/hop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        raw += d
    s.close()
    lines = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    check(lines[0] == "HTTP/1.1 200 OK", "status line %r" % lines[0])
    names = [l.split(":", 1)[0].lower() for l in lines[1:]]
    for gone in ("x-secret", "keep-alive", "proxy-thing"):
        check(gone not in names, "%s relayed to the client: %r" % (gone, lines))
    check(names.count("content-length") == 1 and names.count("connection") == 1, "framing %r" % lines)
    check("Via: 1.0 origin" in lines and "Via: 1.1 sluice" in lines and
          lines.index("Via: 1.0 origin") < lines.index("Via: 1.1 sluice") and
          names.index("x-kept") < names.index("x-spaced"), "order %r" % lines)


def case_static_files(n, www):
    st, h, body = curl("http://127.0.0.1:%d/static/" % n.port)
    check(st == 200 and body == b"<h1>index</h1>\n", "index: %d %r" % (st, body))
    check(h.get("content-type", "").startswith("text/html"), "index type %r" % h.get("content-type"))
    st, h, body = curl("http://127.0.0.1:%d/static/css/site.css" % n.port)
    check(st == 200 and body == b"body{}\n" and h["content-type"].startswith("text/css"),
          "css: %d %r" % (st, h))
    st, _, body = curl("http://127.0.0.1:%d/docs" % n.port)
    check(st == 200 and body == b"docs index\n", "docs dir without slash: %d %r" % (st, body))
    st, _, body = curl("http://127.0.0.1:%d/docs/guide/intro.html" % n.port)
    check(st == 200 and body == b"intro\n", "docs file: %d" % st)
    st, _, body = curl("http://127.0.0.1:%d/static/sub" % n.port)
    check(st == 200 and body == b"sub index\n", "sub dir index: %d" % st)
    st, h, body = curl("http://127.0.0.1:%d/robots.txt" % n.port)
    check(st == 200 and body == b"User-agent: *\n", "file root: %d" % st)
    st, _, _ = curl("http://127.0.0.1:%d/robots.txt/extra" % n.port)
    check(st == 404, "file root with extra path: %d" % st)
    st, _, _ = curl("http://127.0.0.1:%d/static/missing.html" % n.port)
    check(st == 404, "missing: %d" % st)
    st, h, body = curl("http://127.0.0.1:%d/static/big.bin" % n.port)
    check(st == 200 and hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest(),
          "big file (splice): %d %d bytes" % (st, len(body)))
    check(h["content-type"] == "application/octet-stream", "big type")
    st, h, body = curl("http://127.0.0.1:%d/mem/css/site.css" % n.port)
    check(st == 200 and body == b"body{}\n", "in-memory: %d" % st)
    s = connect(n.port)
    s.sendall(b"HEAD /static/css/site.css HTTP/1.1\r\nHost: a\r\n\r\n"
              b"GET /static/css/site.css HTTP/1.1\r\nHost: a\r\n\r\n")
    s.settimeout(10)
    data = b""
    while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"body{}\n"):
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    heads = data.split(b"\r\n\r\n")
    check(len(heads) == 3 and heads[1].startswith(b"HTTP/1.1 200") and heads[2] == b"body{}\n"
          and b"Content-Length: 7" in heads[0], "HEAD has no body: %r" % data)
    st, h, _ = curl("http://127.0.0.1:%d/static/css/site.css" % n.port, "-X", "DELETE")
    check(st == 405 and h.get("allow") == "GET, HEAD", "DELETE: %d" % st)
    # traversal, with crafted bytes (curl would normalize)
    for target in ["/static/../secret.txt", "/static/%2e%2e/secret.txt",
                   "/static/..%2fsecret.txt", "/static/css/../../secret.txt",
                   "/static/./css/site.css", "/docs/%2E%2E/secret.txt"]:
        out, _ = raw(n.port, b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target.encode())
        check(out and out[0][0] == 403, "traversal %s: %r" % (target, out[:1]))
    st, _, _ = curl("http://127.0.0.1:%d/static/escape/secret.txt" % n.port)
    check(st == 403, "symlink out of the root: %d" % st)
    st, _, body = curl("http://127.0.0.1:%d/static/inside" % n.port)
    check(st == 200 and body == b"body{}\n", "symlink inside the root: %d" % st)
    out, _ = raw(n.port, b"GET /static/a%00b HTTP/1.1\r\nHost: a\r\n\r\n")
    check(out and out[0][0] == 400, "NUL: %r" % out[:1])


def case_keepalive_and_pipelining(n):
    s = connect(n.port)
    reqs = (b"GET /plain/one HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /static/css/site.css HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /plain/three HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /plain/five HTTP/1.1\r\nHost: a\r\n\r\n")
    s.sendall(reqs)
    out, closed = read_responses(s, 5)
    check(len(out) == 5 and not closed, "got %d responses, closed=%s" % (len(out), closed))
    check(json.loads(out[0][2])["target"] == "/plain/one", "order 1")
    check(out[1][2] == b"body{}\n", "order 2")
    r3 = json.loads(out[2][2])
    check(r3["target"] == "/plain/three" and r3["body"] == "hello", "order 3")
    check(out[3][0] == 404, "order 4")
    check(json.loads(out[4][2])["target"] == "/plain/five", "order 5")
    # the same connection keeps serving
    s.sendall(b"GET /plain/six HTTP/1.1\r\nHost: a\r\n\r\n")
    out, _ = read_responses(s, 1)
    check(out and out[0][0] == 200, "after pipeline")
    s.sendall(b"GET /plain/last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    out, _ = read_responses(s, 1)
    check(out and out[0][1].get("connection") == "close", "Connection: close answered")
    check(closed_by_peer(s), "closed after Connection: close")
    s.close()
    # HTTP/1.0 keep-alive
    s = connect(n.port)
    s.sendall(b"GET /plain/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    out, closed = read_responses(s, 1)
    check(out[0][0] == 200 and out[0][1].get("connection") == "keep-alive", "1.0 keep-alive")
    s.sendall(b"GET /plain/b HTTP/1.0\r\n\r\n")
    out, _ = read_responses(s, 1)
    check(out[0][0] == 200 and closed_by_peer(s), "1.0 close")
    s.close()


def case_chunked_both_ways(n):
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in [b"hello ", b"chunked ", b"world"])
    out, _ = raw(n.port, b"POST /plain/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + body + b"0\r\nX-Trailer: t\r\n\r\n")
    check(out and out[0][0] == 200, "chunked request: %r" % out[:1])
    rec = json.loads(out[0][2])
    check(rec["body"] == "hello chunked world", "decoded body %r" % rec["body"])
    bh = backend_headers(rec)
    check(bh.get("transfer-encoding") == "chunked" and "content-length" not in bh,
          "re-chunked toward the upstream: %r" % bh)
    # a chunked body trickling in, split across reads
    s = connect(n.port)
    s.sendall(b"POST /plain/trickle HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r")
    time.sleep(0.1)
    s.sendall(b"\nabcd\r\n")
    time.sleep(0.1)
    s.sendall(b"3\r\nefg\r\n0\r\n\r\n")
    out, _ = read_responses(s, 1)
    s.close()
    check(out and json.loads(out[0][2])["body"] == "abcdefg", "trickled chunks: %r" % out[:1])
    # chunked response passed through to an HTTP/1.1 client
    out, _ = raw(n.port, b"GET /plain/chunked-resp HTTP/1.1\r\nHost: a\r\n\r\n")
    check(out and out[0][1].get("transfer-encoding") == "chunked" and
          out[0][2] == b"hello chunked world", "chunked response: %r" % out[:1])
    st, _, body = curl("http://127.0.0.1:%d/plain/chunked-resp" % n.port)
    check(st == 200 and body == b"hello chunked world", "curl chunked: %r" % body)
    # decoded, close-delimited to an HTTP/1.0 client
    out, closed = raw(n.port, b"GET /plain/chunked-resp HTTP/1.0\r\n\r\n")
    check(out and out[0][2] == b"hello chunked world" and
          "transfer-encoding" not in out[0][1], "1.0 client: %r" % out[:1])
    # close-delimited response
    st, h, body = curl("http://127.0.0.1:%d/plain/close-resp" % n.port)
    check(st == 200 and body == b"close-delimited body", "close-delimited: %r" % body)


def case_expect_continue(n):
    s = connect(n.port)
    s.sendall(b"POST /plain/expect HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
              b"Expect: 100-continue\r\n\r\n")
    out, _ = read_responses(s, 1)
    check(out and out[0][0] == 100, "100 Continue first: %r" % out[:1])
    s.sendall(b"hello")
    out, _ = read_responses(s, 1)
    s.close()
    check(out and out[0][0] == 200, "final: %r" % out[:1])
    rec = json.loads(out[0][2])
    check(rec["body"] == "hello" and "expect" not in backend_headers(rec), "expect body")
    # refused before the body: no 100, the final status at once
    s = connect(n.port)
    s.sendall(b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n"
              b"Expect: 100-continue\r\n\r\n")
    out, _ = read_responses(s, 1)
    s.close()
    check(out and out[0][0] == 413, "413 instead of 100: %r" % out[:1])
    st, _, body = curl("http://127.0.0.1:%d/plain/curl-expect" % n.port, "-H", "Expect: 100-continue",
                       "--data-binary", "@" + os.path.join(TMP, "www", "big.bin"))
    check(st == 200 and len(json.loads(body)["body"]) == len(BIG), "curl upload with Expect")


def case_smuggling_and_limits(n):
    cases = [
        ("CL+TE", b"POST /plain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("dup CL", b"POST /plain HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
        ("bad CL", b"POST /plain HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello", 400),
        ("CL list", b"POST /plain HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
        ("TE gzip", b"POST /plain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("TE not final", b"POST /plain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        ("obs-fold", b"GET /plain HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
        ("space before colon", b"GET /plain HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400),
        ("bare LF", b"GET /plain HTTP/1.1\nHost: a\n\n", 400),
        ("NUL in field", b"GET /plain HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400),
        ("no Host", b"GET /plain HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", b"GET /plain HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("version", b"GET /plain HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("expectation", b"GET /plain HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417),
        ("target too long", b"GET /plain/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        ("head too large", b"GET /plain HTTP/1.1\r\nHost: a\r\n" + b"X-Pad: " + b"b" * 9000 + b"\r\n\r\n", 431),
        ("body too large", b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"c" * 101, 413),
        ("chunked too large", b"POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"65\r\n" + b"c" * 101 + b"\r\n0\r\n\r\n", 413),
        ("bad chunk size", b"POST /plain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
    ]
    BE.clear()
    for name, data, want in cases:
        s = connect(n.port)
        s.sendall(data)
        out, _ = read_responses(s, 1)
        check(out and out[0][0] == want, "%s: got %r, want %d" % (name, out[:1], want))
        if name != "CONNECT":
            check(out[0][1].get("connection") == "close", "%s: no Connection: close" % name)
            check(closed_by_peer(s), "%s: connection left open" % name)
        s.close()
    check(not any(r["target"].startswith("/small") for r in BE.requests),
          "a refused body reached the upstream")
    # a body within the limit passes
    st, _, _ = curl("http://127.0.0.1:%d/small" % n.port, "--data-binary", "x" * 100)
    check(st == 200, "body at the limit: %d" % st)


def case_rate_limit_exact(n):
    cid = "client-%d" % os.getpid()
    s = connect(n.port)
    req = b"GET /limited/x HTTP/1.1\r\nHost: a\r\nClient-ID: %s\r\n\r\n" % cid.encode()
    s.sendall(req * 7)
    out, _ = read_responses(s, 7)
    statuses = [o[0] for o in out]
    check(statuses == [200] * 5 + [429] * 2, "burst 5: %r" % statuses)
    h = out[5][1]
    check(int(h.get("retry-after", "0")) >= 1, "Retry-After %r" % h.get("retry-after"))
    check(h.get("ratelimit-policy") == '"lim10";q=10;w=1', "RateLimit-Policy %r" % h.get("ratelimit-policy"))
    m = re.fullmatch(r'"lim10";r=0;t=(\d+)', h.get("ratelimit", ""))
    check(m and int(m.group(1)) >= 1, "RateLimit %r" % h.get("ratelimit"))
    ok = out[0][1].get("ratelimit", "")
    check(re.fullmatch(r'"lim10";r=4;t=\d+', ok), "RateLimit on an allowed response: %r" % ok)
    # refill: 10/s is one request per 100 ms
    time.sleep(0.35)
    s.sendall(req)
    out, _ = read_responses(s, 1)
    check(out[0][0] == 200, "after refill: %r" % out[0][0])
    s.close()
    # another client has its own bucket
    st, _, _ = curl("http://127.0.0.1:%d/limited/x" % n.port, "-H", "Client-ID: other-%d" % os.getpid())
    check(st == 200, "other client: %d" % st)
    # SHADOW only counts
    for _ in range(3):
        st, _, _ = curl("http://127.0.0.1:%d/shadow" % n.port)
        check(st == 200, "shadow: %d" % st)
    m = n.metrics()
    check(re.search(r'sluice_proxy_decisions_total\{rule="shadow1",outcome="shadow"\} [2-9]', m),
          "shadow rejects not counted")
    check(re.search(r'sluice_proxy_decisions_total\{rule="lim10",outcome="rate_limited"\} 2', m),
          "429s not counted by rule")
    # Per client: only a Client resource's requests (found by its key)
    # count under its id; the anonymous ones above do not.
    check("sluice_proxy_client_decisions_total{" not in m, "anonymous requests counted per client")
    s = connect(n.port)
    req = b"GET /limited/x HTTP/1.1\r\nHost: a\r\nClient-ID: tenant-a-key\r\n\r\n"
    s.sendall(req * 7)
    out, _ = read_responses(s, 7)
    s.close()
    check([o[0] for o in out] == [200] * 5 + [429] * 2, "tenant-a burst: %r" % [o[0] for o in out])
    for _ in range(3):
        st, _, _ = curl("http://127.0.0.1:%d/shadow" % n.port, "-H", "Client-ID: tenant-a-key")
        check(st == 200, "tenant-a shadow: %d" % st)
    m = n.metrics()
    for outcome, want in (("allow", 8), ("rate_limited", 2), ("shadow", 2)):
        got = re.search(r'^sluice_proxy_client_decisions_total\{client="tenant-a",outcome="%s"\} (\d+)$'
                        % outcome, m, re.M)
        check(got and int(got.group(1)) == want,
              "tenant-a %s: %r, want %d" % (outcome, got and got.group(1), want))
    check(re.search(r"^sluice_proxy_clients_counted 1$", m, re.M), "clients_counted")
    check(re.search(r"^sluice_proxy_client_overflow_total 0$", m, re.M), "client overflow")


def case_access_lists(n, n6):
    st, _, _ = curl("http://127.0.0.1:%d/office" % n.port)
    check(st == 403, "v4 to v6-only route: %d" % st)
    st, _, _ = curl("http://[::1]:%d/office" % n6.port)
    check(st == 200, "v6 to v6-only route: %d" % st)
    st, _, _ = curl("http://127.0.0.1:%d/blocked" % n.port)
    check(st == 403, "v4 deny: %d" % st)
    st, _, body = curl("http://[::1]:%d/blocked" % n6.port)
    check(st == 200, "v6 not in the v4 deny list: %d" % st)
    bh = backend_headers(json.loads(body))
    check(bh.get("forwarded") == 'for="[::1]";proto=http' and bh.get("x-forwarded-for") == "::1",
          "v6 forwarding fields: %r" % bh)


def case_upstream_failures(n):
    st, _, _ = curl("http://127.0.0.1:%d/down" % n.port)
    check(st == 502, "refused: %d" % st)
    st, _, _ = curl("http://127.0.0.1:%d/hole" % n.port)
    check(st == 504, "connect timeout: %d" % st)
    st, _, _ = curl("http://127.0.0.1:%d/slow" % n.port)
    check(st == 504, "read timeout: %d" % st)
    st, _, _ = curl("http://127.0.0.1:%d/nx" % n.port)
    check(st == 503, "no usable endpoint: %d" % st)
    st, _, body = curl("http://127.0.0.1:%d/waits/slowok" % n.port)
    check(st == 200, "slow but within its timeout: %d" % st)
    m = n.metrics()
    check(re.search(r'sluice_proxy_requests_total\{route="down",status="502"\} 1', m), "502 metric")


def case_upstream_keepalive_pool(n):
    before = BE.connections
    for i in range(10):
        st, _, _ = curl("http://127.0.0.1:%d/plain/pool%d" % (n.port, i))
        check(st == 200, "status %d" % st)
    opened = BE.connections - before
    check(opened <= 2, "10 sequential requests opened %d upstream connections" % opened)
    m = n.metrics()
    check(re.search(r"sluice_proxy_upstream_reuses_total [1-9]", m), "reuses not counted")


def case_slow_clients(n):
    # header timeout (1 s in this node's config): a slow head gets 408 ...
    slow = connect(n.port)
    slow.sendall(b"GET /plain/slow-head HTTP/1.1\r\nHost: a\r\n")
    body_slow = connect(n.port)
    body_slow.sendall(b"POST /plain/slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    # ... while other clients are served normally meanwhile
    for i in range(5):
        st, _, _ = curl("http://127.0.0.1:%d/plain/fast%d" % (n.port, i))
        check(st == 200, "fast client: %d" % st)
    out, _ = read_responses(slow, 1, timeout=10)
    check(out and out[0][0] == 408, "slow head: %r" % out[:1])
    check(closed_by_peer(slow), "slow head left open")
    out, _ = read_responses(body_slow, 1, timeout=10)
    check(out and out[0][0] == 408, "slow body: %r" % out[:1])
    slow.close()
    body_slow.close()
    # idle keep-alive (3 s): closed without a response
    s = connect(n.port)
    s.sendall(b"GET /plain/idle HTTP/1.1\r\nHost: a\r\n\r\n")
    out, _ = read_responses(s, 1)
    check(out[0][0] == 200, "idle first request")
    check(closed_by_peer(s, timeout=10), "idle connection not closed")
    s.close()



# ---- receiving: multishot receive over the worker's provided buffers ----
# (4 KiB buffers; bytes that arrive while a response is under way wait in
# the connection, past 8 KiB the receive stops; a ring that runs dry falls
# back to single-shot receives.)

def case_pipeline_many(n):
    # 300 pipelined requests (~45 KB) in one write: they span many receive
    # buffers, arrive while earlier responses are under way, and overflow
    # what a connection keeps before its receive stops.
    s = connect(n.port)
    reqs = []
    for i in range(300):
        if i % 50 == 25:
            reqs.append(b"POST /plain/p%d HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n"
                        b"X-Pad: %s\r\n\r\nbody%03d" % (i, b"q" * 60, i % 1000))
        else:
            reqs.append(b"GET /plain/p%d HTTP/1.1\r\nHost: a\r\nX-Pad: %s\r\n\r\n"
                        % (i, b"q" * (60 + i % 200)))
    data = b"".join(reqs)
    check(len(data) > 4 * 8192, "pipeline too short: %d" % len(data))
    s.sendall(data)
    out, closed = read_responses(s, 300, timeout=30)
    check(len(out) == 300 and not closed, "got %d of 300, closed=%s" % (len(out), closed))
    for i, (st, _, body) in enumerate(out):
        check(st == 200, "pipelined %d: status %d" % (i, st))
        rec = json.loads(body)
        check(rec["target"] == "/plain/p%d" % i, "pipelined %d answered as %s" % (i, rec["target"]))
        if i % 50 == 25:
            check(rec["body"] == "body%03d" % i, "pipelined body %d: %r" % (i, rec["body"]))
    s.sendall(b"GET /plain/after HTTP/1.1\r\nHost: a\r\n\r\n")
    out, _ = read_responses(s, 1)
    check(out and json.loads(out[0][2])["target"] == "/plain/after", "after the pipeline")
    s.close()


def case_big_head_bytewise(n):
    # A head of ~7 KB (under the 8 KiB limit, larger than one 4 KiB
    # receive buffer), one byte per write: each byte is its own receive.
    s = connect(n.port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pad = "".join(chr(ord("a") + i % 26) for i in range(7000)).encode()
    head = b"GET /plain/hugehead HTTP/1.1\r\nHost: a\r\nX-Big: " + pad + b"\r\n\r\n"
    for i in range(len(head)):
        s.send(head[i:i + 1])
    out, closed = read_responses(s, 1, timeout=20)
    check(out and out[0][0] == 200, "bytewise head: %r" % (out[:1],))
    got = backend_headers(json.loads(out[0][2])).get("x-big", "")
    check(got == pad.decode(), "X-Big arrived changed (%d bytes)" % len(got))
    # the same head in one write, then a second request right behind it in
    # the same write: both cross receive buffers
    s.sendall(head + b"GET /plain/behind HTTP/1.1\r\nHost: a\r\n\r\n")
    out, closed = read_responses(s, 2, timeout=20)
    check(len(out) == 2 and not closed, "big head + pipelined: %d" % len(out))
    check(backend_headers(json.loads(out[0][2])).get("x-big") == pad.decode(), "X-Big (2)")
    check(json.loads(out[1][2])["target"] == "/plain/behind", "behind the big head")
    s.close()


def case_recv_ring_exhausted(policy):
    # A worker whose receive ring has 4 buffers: 200 connections sending at
    # once run it dry (ENOBUFS ends their multishot receives); each must
    # still be served, in order, by the single-shot fallback.
    n = Node(policy, "proxy:\n  timeouts:\n    header_ms: 20000\n", workers=1,
             extra=("--log-level", "debug"), env={"SLUICE_PROXY_RECV_BUFS": "4"})
    conns = []
    try:
        for rnd in range(3):
            conns = [connect(n.port) for _ in range(200)]
            for i, s in enumerate(conns):
                s.sendall(b"GET /plain/r%d-%d HTTP/1.1\r\nHost: a\r\n\r\n"
                          b"GET /plain/r%d-%d-b HTTP/1.1\r\nHost: a\r\n\r\n" % (rnd, i, rnd, i))
            for i, s in enumerate(conns):
                out, closed = read_responses(s, 2, timeout=30)
                check(len(out) == 2, "round %d conn %d: %d responses" % (rnd, i, len(out)))
                t = [json.loads(o[2])["target"] for o in out]
                check(t == ["/plain/r%d-%d" % (rnd, i), "/plain/r%d-%d-b" % (rnd, i)],
                      "round %d conn %d: %r" % (rnd, i, t))
            for s in conns:
                s.close()
            conns = []
        # a big head bytewise and a pipeline on the starved ring too
        case_big_head_bytewise(n)
        case_pipeline_many(n)
        st, _, _ = curl("http://127.0.0.1:%d/plain/ring-after" % n.port)
        check(st == 200, "after the ring ran dry: %d" % st)
    finally:
        for s in conns:
            s.close()
        rc = n.stop()
        check(rc == 0, "node exit %r: %s" % (rc, n.stderr()))
    # the worker says at exit how often its ring ran dry: the fallback ran
    with open(os.path.join(n.dir, "stderr")) as f:
        err = f.read()
    check("Receive buffer ring ran dry" in err, "the 4-buffer ring never ran dry")


def case_close_with_receive_armed(n):
    # Connections closed (FIN or RST) while their receive is armed, idle or
    # with a half-sent head, and one whose client goes away with pipelined
    # requests unanswered: the node frees them (no leak: connections_open
    # returns to its earlier value) and keeps serving.
    def open_conns():
        m = n.metrics()
        return sum(int(v) for v in re.findall(r"sluice_proxy_connections_open (\d+)", m))
    base = open_conns()
    for i in range(50):
        s = connect(n.port)
        if i % 3 == 1:
            s.sendall(b"GET /plain/half HTTP/1.1\r\nHo")
        elif i % 3 == 2:
            s.sendall(b"GET /waits/slowok HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    deadline = time.time() + 15
    while time.time() < deadline and open_conns() > base:
        time.sleep(0.2)
    check(open_conns() <= base, "connections left open: %d > %d" % (open_conns(), base))
    st, _, _ = curl("http://127.0.0.1:%d/plain/still" % n.port)
    check(st == 200, "after the closes: %d" % st)

def case_connection_cap(policy):
    n = Node(policy, "proxy:\n  max_connections: 3\n", workers=1)
    try:
        held = [connect(n.port) for _ in range(3)]
        for s in held:
            s.sendall(b"GET /plain/cap HTTP/1.1\r\nHost: a\r\n\r\n")
            out, _ = read_responses(s, 1)
            check(out and out[0][0] == 200, "held connection served")
        extra = connect(n.port)
        check(closed_by_peer(extra, timeout=5), "connection over the cap not closed")
        extra.close()
        m = n.metrics()
        check(re.search(r'sluice_proxy_connections_refused_total\{reason="cap"\} [1-9]', m),
              "refusal not counted")
        held[0].close()
        time.sleep(0.3)
        st, _, _ = curl("http://127.0.0.1:%d/plain/after-cap" % n.port)
        check(st == 200, "below the cap again: %d" % st)
        for s in held[1:]:
            s.close()
    finally:
        n.stop()


def case_drain(policy):
    n = Node(policy, "proxy:\n  timeouts:\n    drain_ms: 8000\n", workers=2)
    result = {}

    def slow_request():
        try:
            result["r"] = curl("http://127.0.0.1:%d/waits/slowok" % n.port)
        except AssertionError as e:
            result["e"] = str(e)

    idle = connect(n.port)
    idle.sendall(b"GET /plain/idle HTTP/1.1\r\nHost: a\r\n\r\n")
    read_responses(idle, 1)
    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.4)
    n.proc.send_signal(signal.SIGTERM)
    t.join(15)
    check(result.get("r", (0,))[0] == 200, "in-flight request during drain: %r" % result)
    check(closed_by_peer(idle, timeout=5), "idle keep-alive connection not closed by the drain")
    idle.close()
    rc = n.proc.wait(15)
    check(rc == 0, "exit status %r: %s" % (rc, n.stderr()))
    try:
        connect(n.port).close()
        check(False, "still accepting after the drain")
    except OSError:
        pass


def case_access_log_on_sigterm(policy):
    """Each request's line exactly once, with SIGTERM right after the last
    one (the batch flushed just before must not be written again at exit,
    the batch queued by the drain must not be lost)."""
    for rnd in range(3):
        n = Node(policy, "", workers=1)
        try:
            paths = ["/plain/sigterm-%d-%d" % (rnd, i) for i in range(4)]
            for i, path in enumerate(paths):
                if i == len(paths) - 1:
                    time.sleep(0.3)  # the periodic flush writes the first ones
                s = connect(n.port)
                s.sendall(("GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                           % path).encode())
                out, _ = read_responses(s, 1)
                s.close()
                check(out and out[0][0] == 200, "request %s: %r" % (path, out))
            n.proc.send_signal(signal.SIGTERM)
            rc = n.proc.wait(15)
            check(rc == 0, "exit status %r: %s" % (rc, n.stderr()))
        finally:
            n.stop()
        with open(n.log_path) as f:
            text = f.read()
        for path in paths:
            k = len(re.findall(r"path=%s " % re.escape(path), text))
            check(k == 1, "round %d: %s logged %d times: %r" % (rnd, path, k, text[-600:]))
        check(text.count("\n") == len(paths), "round %d: %d lines for %d requests" %
              (rnd, text.count("\n"), len(paths)))


def case_swap_under_load(n, policy_args):
    if not shutil.which("wrk"):
        print("  (wrk missing: swap under load skipped)")
        return
    stop = threading.Event()
    swaps = [0]

    def swapper():
        v = 2
        while not stop.is_set():
            n.write_policy(make_policy(*policy_args, version=v, extra_route=(v % 2 == 0)))
            n.proc.send_signal(signal.SIGHUP)
            v += 1
            swaps[0] += 1
            stop.wait(0.2)

    t = threading.Thread(target=swapper)
    t.start()
    r = subprocess.run(["wrk", "-t2", "-c16", "-d4s", "http://127.0.0.1:%d/plain/load" % n.port],
                       capture_output=True, text=True, timeout=60)
    stop.set()
    t.join()
    out = r.stdout
    m = re.search(r"(\d+) requests in", out)
    check(m and int(m.group(1)) > 100, "wrk made too few requests: %s" % out)
    check("Non-2xx" not in out, "errors under snapshot swaps: %s" % out)
    check("Socket errors" not in out, "socket errors under snapshot swaps: %s" % out)
    check(swaps[0] >= 5, "only %d swaps" % swaps[0])
    # the last published version decides: /extra exists exactly when even
    st, _, _ = curl("http://127.0.0.1:%d/extra" % n.port)
    check(st in (200, 404), "after swaps: %d" % st)
    # A limit whose rate changes keeps its id: the RateLimit-Policy field
    # must follow the new snapshot (the worker caches the field's text).
    for rate, v in ((20, 1000), (10, 1001)):
        n.write_policy(make_policy(*policy_args, version=v, lim_rate=rate))
        n.proc.send_signal(signal.SIGHUP)
        want = '"lim10";q=%d;w=1' % rate
        deadline = time.monotonic() + 10
        got = None
        while time.monotonic() < deadline:
            _, h, _ = curl("http://127.0.0.1:%d/limited/rl" % n.port,
                           "-H", "Client-ID: rl-%d-%d" % (rate, time.monotonic_ns()))
            got = h.get("ratelimit-policy")
            if got == want:
                break
            time.sleep(0.1)
        check(got == want, "after reload to %d/s: RateLimit-Policy %r" % (rate, got))


def case_metrics_and_access_log(n):
    m = n.metrics()
    for fam in ("sluice_proxy_requests_total", "sluice_proxy_decisions_total",
                "sluice_proxy_request_duration_seconds_bucket", "sluice_proxy_connections_open",
                "sluice_proxy_connections_accepted_total"):
        check(fam in m, "%s missing" % fam)
    check(re.search(r'sluice_proxy_requests_total\{route="api",status="200"\} [1-9]', m),
          "api 200s not counted")
    deadline = time.time() + 5
    text = ""
    while time.time() < deadline:
        with open(n.log_path) as f:
            text = f.read()
        if "route=api" in text:
            break
        time.sleep(0.2)
    check(re.search(r"client=127\.0\.0\.1 method=GET path=/api/v1/users status=200 .*route=api",
                    text), "access log line missing: %r" % text[-500:])


def case_tls(policy):
    import ssl
    if not shutil.which("openssl"):
        print("  (openssl missing: TLS skipped)")
        return
    cert, key = os.path.join(TMP, "cert.pem"), os.path.join(TMP, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    n = Node(policy, "", extra=("--tls-listen", "127.0.0.1:0", "--tls-cert", cert,
                                "--tls-key", key))
    try:
        base = "https://127.0.0.1:%d" % n.tls_port
        st, _, body = curl(base + "/api/v1/tls", "-k")
        check(st == 200, "proxied over TLS: %d" % st)
        bh = backend_headers(json.loads(body))
        check(bh.get("forwarded") == "for=127.0.0.1;proto=https", "proto=https: %r" % bh)
        st, _, body = curl(base + "/static/big.bin", "-k")
        check(st == 200 and body == BIG, "1 MiB static file over TLS: %d bytes" % len(body))
        st, _, body = curl(base + "/plain/upload", "-k", "--data-binary",
                           "@" + os.path.join(TMP, "www", "big.bin"))
        check(st == 200 and len(json.loads(body)["body"]) == len(BIG), "upload over TLS")
        st, _, _ = curl(base + "/plain/tls12", "-k", "--tlsv1.2", "--tls-max", "1.2")
        check(st == 200, "TLS 1.2: %d" % st)
        # pipelined requests in one TLS write
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw_s = connect(n.tls_port)
        s = ctx.wrap_socket(raw_s, server_hostname="localhost")
        s.sendall(b"GET /plain/p1 HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /static/css/site.css HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /plain/p3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        out, closed = read_responses(s, 3)
        check([o[0] for o in out] == [200, 200, 200] and out[1][2] == b"body{}\n" and
              json.loads(out[2][2])["target"] == "/plain/p3", "TLS pipelining: %r" % out)
        s.close()
        # openssl s_client, a different TLS stack
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % n.tls_port,
                            "-quiet"],
                           input=b"GET /static/css/site.css HTTP/1.1\r\nHost: a\r\n"
                                 b"Connection: close\r\n\r\n",
                           capture_output=True, timeout=20)
        check(b"HTTP/1.1 200 OK" in r.stdout and r.stdout.endswith(b"body{}\n"),
              "s_client: %r" % r.stdout[-200:])
        # plaintext to the TLS port: refused, counted, nothing else disturbed
        s = connect(n.tls_port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        check(closed_by_peer(s, timeout=5), "plaintext on the TLS port not closed")
        s.close()
        m = n.metrics()
        check(re.search(r'sluice_tls_connections_total\{path="userspace"\} ([5-9]|\d\d)', m),
              "user-space path not counted: %s" % re.findall(r"sluice_tls.*", m))
        check(re.search(r"sluice_tls_handshake_failures_total [1-9]", m), "failure not counted")
        st, _, _ = curl("http://127.0.0.1:%d/plain/still-plain" % n.port)
        check(st == 200, "plaintext listener beside TLS: %d" % st)
    finally:
        rc = n.stop()
        check(rc == 0, "TLS node exit %r: %s" % (rc, n.stderr()))


# ---- main ----

def make_www(root):
    os.makedirs(root + "/css")
    os.makedirs(root + "/sub")
    os.makedirs(root + "/docs/guide")
    with open(root + "/index.html", "w") as f:
        f.write("<h1>index</h1>\n")
    with open(root + "/css/site.css", "w") as f:
        f.write("body{}\n")
    with open(root + "/sub/index.html", "w") as f:
        f.write("sub index\n")
    with open(root + "/docs/index.html", "w") as f:
        f.write("docs index\n")
    with open(root + "/docs/guide/intro.html", "w") as f:
        f.write("intro\n")
    with open(root + "/robots.txt", "w") as f:
        f.write("User-agent: *\n")
    with open(root + "/big.bin", "wb") as f:
        f.write(BIG)
    with open(os.path.join(os.path.dirname(root), "secret.txt"), "w") as f:
        f.write("secret\n")
    os.makedirs(os.path.dirname(root) + "/outside")
    with open(os.path.dirname(root) + "/outside/secret.txt", "w") as f:
        f.write("secret\n")
    os.symlink(os.path.dirname(root) + "/outside", root + "/escape")
    os.symlink("css/site.css", root + "/inside")


def run(name, fn, *args):
    if len(sys.argv) > 2 and name not in sys.argv[2:]:
        return
    t0 = time.time()
    try:
        fn(*args)
        print("ok   %-28s (%.1f s)" % (name, time.time() - t0), flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported
        failures.append(name)
        print("FAIL %-28s %s" % (name, e), flush=True)
        if not isinstance(e, AssertionError):
            traceback.print_exc()


def main():
    global NODE, TMP, BE
    if len(sys.argv) < 2:
        print("usage: proxy_test.py SLUICE_NODE [CASE...]", file=sys.stderr)
        return 2
    NODE = sys.argv[1]
    if not shutil.which("curl"):
        print("skip: curl is not installed")
        return 77
    TMP = tempfile.mkdtemp(prefix="sluice-proxy-test-")
    www = os.path.join(TMP, "www")
    make_www(www)
    BE = Backend()
    down = free_port()
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    hole_port = hole.getsockname()[1]
    # Fill the hole's accept queue so that further SYNs go unanswered.
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", hole_port))
        except BlockingIOError:
            pass
        fillers.append(f)
    time.sleep(0.2)
    policy_args = (BE.port, down, hole_port, www)
    policy = make_policy(*policy_args)
    config = ("proxy:\n  timeouts:\n    header_ms: 1000\n    body_ms: 1000\n    idle_ms: 3000\n")
    n = Node(policy, config)
    n6 = Node(policy, config, listen="[::1]:0", workers=1)
    try:
        run("routing_and_prefixes", case_routing_and_prefixes, n)
        run("forwarding_headers", case_forwarding_headers, n)
        run("static_files", case_static_files, n, www)
        run("keepalive_and_pipelining", case_keepalive_and_pipelining, n)
        run("chunked_both_ways", case_chunked_both_ways, n)
        run("expect_continue", case_expect_continue, n)
        run("smuggling_and_limits", case_smuggling_and_limits, n)
        run("rate_limit_exact", case_rate_limit_exact, n)
        run("access_lists_v4_v6", case_access_lists, n, n6)
        run("upstream_failures", case_upstream_failures, n)
        run("upstream_keepalive_pool", case_upstream_keepalive_pool, n)
        run("slow_clients", case_slow_clients, n)
        run("pipeline_many", case_pipeline_many, n)
        run("big_head_bytewise", case_big_head_bytewise, n)
        run("close_with_receive_armed", case_close_with_receive_armed, n)
        run("metrics_and_access_log", case_metrics_and_access_log, n)
        run("swap_under_load", case_swap_under_load, n, policy_args)
        run("tls", case_tls, policy)
        run("connection_cap", case_connection_cap, policy)
        run("recv_ring_exhausted", case_recv_ring_exhausted, policy)
        run("drain", case_drain, policy)
        run("access_log_on_sigterm", case_access_log_on_sigterm, policy)
    finally:
        for node in (n, n6):
            rc = node.stop()
            if rc != 0:
                failures.append("exit")
                print("FAIL node exit status %r: %s" % (rc, node.stderr()))
        BE.stop()
        for f in fillers:
            f.close()
        hole.close()
        shutil.rmtree(TMP, ignore_errors=True)
    print("%d failed" % len(failures) if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
