"""backend.py - the upstream for the proxy tests: a small threaded HTTP/1.1
server on raw sockets that records every request it receives (method,
target, header lines as sent, decoded body) and answers by path:

  .../chunked-resp   chunked response in three chunks
  .../close-resp     no Content-Length, body ends when the connection closes
  .../hop            response carrying hop-by-hop fields the proxy must drop
  .../big            1 MiB body
  .../drip           a 100 Continue, then the head, one byte per send
  .../slow           answers after 3 s;  .../slowok  after 1 s
  anything else      200, JSON echo of the request

Keep-alive, Content-Length and chunked request bodies are supported; the
parser is deliberately simple (the proxy in front is what is tested).
"""
import json
import socket
import threading
import time

BIG = bytes((i * 7 + 3) & 0xFF for i in range(1 << 20))


class Backend:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def clear(self):
        with self.lock:
            self.requests = []

    def last(self):
        with self.lock:
            return self.requests[-1] if self.requests else None

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_until(c, buf, marker):
        while marker not in buf:
            d = c.recv(65536)
            if not d:
                return None
            buf += d
        return buf

    def _read_n(self, c, buf, n):
        while len(buf) < n:
            d = c.recv(65536)
            if not d:
                return None
            buf += d
        return buf

    def _serve(self, c):
        buf = b""
        try:
            while True:
                buf = self._read_until(c, buf, b"\r\n\r\n")
                if buf is None:
                    return
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = [tuple(x.split(": ", 1)) for x in lines[1:]]
                hl = {k.lower(): v for k, v in headers}
                body = b""
                if hl.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        buf = self._read_until(c, buf, b"\r\n")
                        if buf is None:
                            return
                        size_line, buf = buf.split(b"\r\n", 1)
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            buf = self._read_until(c, buf, b"\r\n")
                            # trailers end with an empty line
                            while not buf.startswith(b"\r\n"):
                                _, buf = buf.split(b"\r\n", 1)
                                buf = self._read_until(c, buf, b"\r\n")
                            buf = buf[2:]
                            break
                        buf = self._read_n(c, buf, size + 2)
                        if buf is None:
                            return
                        body += buf[:size]
                        buf = buf[size + 2:]
                elif "content-length" in hl:
                    n = int(hl["content-length"])
                    buf = self._read_n(c, buf, n)
                    if buf is None:
                        return
                    body, buf = buf[:n], buf[n:]
                rec = {"method": method, "target": target, "version": version,
                       "headers": headers, "body": body.decode("latin-1")}
                with self.lock:
                    self.requests.append(rec)
                if not self._respond(c, rec, hl):
                    return
        except (OSError, ValueError):
            pass
        finally:
            c.close()

    def _respond(self, c, rec, hl):
        t = rec["target"]
        if "/slowok" in t:
            time.sleep(1)
        elif "/slow" in t:
            time.sleep(3)
        if "/chunked-resp" in t:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n"
                      b"6\r\nhello \r\n8\r\nchunked \r\n5\r\nworld\r\n0\r\n\r\n")
            return True
        if "/close-resp" in t:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                      b"Connection: close\r\n\r\nclose-delimited body")
            return False
        if "/hop" in t:
            body = b"hop"
            c.sendall(b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\n"
                      b"Keep-Alive: timeout=5\r\nProxy-Thing: x\r\nVia: 1.0 origin\r\n"
                      b"X-Kept: yes\r\nX-Spaced:  v \r\nContent-Length: 3\r\n\r\n" + body)
            return True
        if "/drip" in t:
            head = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Drip: " +
                    b"d" * 300 + b"\r\nContent-Length: 4\r\n\r\n")
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for k in range(len(head)):
                c.sendall(head[k:k + 1])
                time.sleep(0.001)
            c.sendall(b"drip")
            return True
        if "/big" in t:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG)
            return True
        body = json.dumps(rec).encode()
        close = hl.get("connection", "").lower() == "close"
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n%s\r\n" % (len(body), b"Connection: close\r\n" if close else b"")
                  + body)
        return not close

    def stop(self):
        self.stopping = True
        self.sock.close()
