#!/usr/bin/python3
"""Chaos: 500 admin writes while the control-plane replicas are kill -9'd and
restarted at random; then every acknowledged write must be in etcd and every
node must end on etcd's head with identical content.

usage: chaos_test.py SLUICE_CONTROL SLUICE_NODE PROTO_DIR

Real etcd, two sluice-control replicas (A, B), three sluice-node processes in
sync mode whose endpoint list is both replicas (backoff 50..500 ms).

- Writer thread: write i (0..499) upserts Client `c<i>` (a resource no other
  write touches) and RateLimit `counter` with rate i+1, through
  PolicyAdmin/ApplyChanges on replica A for even i and B for odd i; on
  UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED it retries the same write on
  the other replica (an ambiguous failure may have committed: the retry then
  commits it again, which is harmless). Every version the server
  ACKNOWLEDGED is recorded.
- Chaos (main thread, so that PR_SET_PDEATHSIG follows the processes): at
  random intervals kill -9 one replica, or both at once, and restart it
  after a random pause; at most CHAOS_MAX_KILLS kills, within CHAOS_MAX_S.
- Traffic thread: GET /alive on every node all along; the nodes must keep
  answering 200 whatever the control planes do.

Then, with both replicas up, one last write adds route `final` with a
limit of 2 per minute, and:
1. acknowledged versions increase strictly (one writer, sequential writes);
2. etcd itself: the head key was last written by that version, and a
   range over the ruleset's res/ keys holds exactly c0..c499 (each with
   its own content), `counter` rate 500, route `final`;
3. GetRuleset at head on both replicas = that version and the same content
   hash as etcd's keys;
4. every node reports that version, has persisted it (state file header
   and Snapshot), and the Snapshot's canonical hash equals etcd's;
5. every node answers /final 200, 200, 429 (the last write is enforced).

CHAOS_SEED fixes the random schedule (printed on every run). Whole test is
bounded: writes 100 s, chaos CHAOS_MAX_S, each convergence wait 30 s.
"""
import os
import random
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fleetlib as fl  # noqa: E402
from fleetlib import Failure, check, wait_for  # noqa: E402

fl.skip_unless_ready("chaos_test")
import grpc  # noqa: E402

WRITES = int(os.environ.get("CHAOS_WRITES", "500"))
MAX_KILLS = int(os.environ.get("CHAOS_MAX_KILLS", "24"))
CHAOS_MAX_S = float(os.environ.get("CHAOS_MAX_S", "80"))
WRITES_MAX_S = 100.0
CONVERGE_S = 30.0
SEED = int(os.environ.get("CHAOS_SEED", str(int(time.time() * 1000) % 1000000)))


class Writer(threading.Thread):
    def __init__(self, pb, ports):
        super().__init__(daemon=True)
        self.pb, self.ports = pb, ports
        self.acked = []     # (i, version, attempts), in order
        self.error = None
        self.stop = False

    def run(self):
        admin = fl.Admin(self.pb, self.ports)
        deadline = time.monotonic() + WRITES_MAX_S
        try:
            for i in range(WRITES):
                if self.stop:
                    raise Failure("stopped at write %d" % i)
                ups = [{"client": {"id": "c%d" % i, "keys": ["key-%d" % i],
                                   "priority": i % 7}},
                       {"rateLimit": {"id": "counter", "algorithm": "TOKEN_BUCKET",
                                      "rate": str(i + 1), "unit": "SECOND",
                                      "burst": str(i + 1), "action": "SHADOW"}}]
                v, attempts = admin.apply(ups, message="chaos write %d" % i, first=i % 2,
                                          deadline_s=max(deadline - time.monotonic(), 1))
                self.acked.append((i, v, attempts))
                # Paced a little so the writes span several kills.
                time.sleep(0.015)
        except (Failure, grpc.RpcError) as e:
            self.error = "write %d: %s" % (len(self.acked), e)
        finally:
            admin.close()


class Traffic(threading.Thread):
    """GET /alive on every node, round robin, until told to stop."""

    def __init__(self, nodes):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.requests = 0
        self.bad = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for n in self.nodes:
                try:
                    st = n.get("/alive", timeout=5)
                except OSError as e:
                    st = repr(e)
                self.requests += 1
                if st != 200:
                    self.bad.append((n.name, st))
            self.halt.wait(0.03)


def chaos(cps, writer, rng):
    """Kills and restarts replicas until the writer is done or a bound is hit.
    Returns the list of events, e.g. [(t, 'kill', 'cp-a'), ...]."""
    events = []
    t0 = time.monotonic()
    kills = 0
    while writer.is_alive() and kills < MAX_KILLS and time.monotonic() - t0 < CHAOS_MAX_S:
        time.sleep(rng.uniform(0.2, 1.0))
        if not writer.is_alive():
            break
        victims = list(cps) if rng.random() < 0.2 else [rng.choice(cps)]
        for cp in victims:
            cp.kill9()
            kills += 1
            events.append((time.monotonic() - t0, "kill", cp.name))
        time.sleep(rng.uniform(0.05, 0.8))
        for cp in victims:
            cp.start()
            events.append((time.monotonic() - t0, "start", cp.name))
    return events


def decode_resources(pb, kvs, base):
    """etcd (key, value) pairs under base -> {(kind, id): Resource}."""
    policy_pb2 = pb[2]
    out = {}
    for k, v in kvs:
        kind, rid = k[len(base):].split("/", 1)
        r = policy_pb2.Resource()
        r.ParseFromString(v)
        out[(kind, rid)] = r
    return out


def run(ctx, pb):
    tmp = ctx["tmp"]
    etcd = ctx["etcd"] = fl.Etcd(tmp).start()
    ports = [fl.free_port(), fl.free_port()]
    cps = ctx["cps"] = [fl.Control(tmp, etcd, ports[0], "cp-a"),
                        fl.Control(tmp, etcd, ports[1], "cp-b")]
    nodes = ctx["nodes"]
    for k in range(3):
        nodes.append(fl.Node(tmp, "node-%d" % (k + 1), ports))

    www = os.path.join(tmp, "www")
    os.makedirs(www)
    for f in ("alive", "final"):
        with open(os.path.join(www, f + ".txt"), "w") as fh:
            fh.write(f + "\n")

    def route(rid, limits=()):
        r = {"id": rid, "pathPrefix": "/" + rid,
             "staticFiles": {"root": os.path.join(www, rid + ".txt")}}
        if limits:
            r["rateLimits"] = list(limits)
        return {"route": r}

    admin = fl.Admin(pb, ports)
    v0, _ = admin.apply([route("alive")], message="before the chaos")
    for n in nodes:
        wait_for("%s at v%d" % (n.name, v0), lambda: n.version() == v0, timeout=CONVERGE_S)
        check(n.get("/alive") == 200, "%s does not serve /alive" % n.name)
    print("     seed %d; fleet up at v%d" % (SEED, v0), flush=True)

    # ---- the chaos ----
    traffic = Traffic(nodes)
    writer = Writer(pb, ports)
    t0 = time.monotonic()
    traffic.start()
    writer.start()
    try:
        events = chaos(cps, writer, random.Random(SEED))
    except BaseException:
        writer.stop = True
        traffic.halt.set()
        raise
    writer.join(WRITES_MAX_S + 10)
    writer.stop = True
    t_writes = time.monotonic() - t0
    kills = sum(1 for e in events if e[1] == "kill")
    retried = sum(1 for a in writer.acked if a[2] > 1)
    print("     %d writes acknowledged in %.1f s (%d needed a retry); %d kill -9 of "
          "replicas: %s" % (len(writer.acked), t_writes, retried, kills,
                            " ".join("%.1f:%s:%s" % e for e in events)), flush=True)
    check(writer.error is None, "writer: %s" % writer.error)
    check(len(writer.acked) == WRITES, "only %d of %d writes acknowledged"
          % (len(writer.acked), WRITES))
    check(kills >= 2, "the chaos killed only %d replicas" % kills)
    for cp in cps:
        check(cp.alive(), "%s died outside the chaos (log %s)" % (cp.name, cp.log_path))

    # 1. One writer, sequential: each acknowledged version is newer.
    vs = [a[1] for a in writer.acked]
    bad = [(a, b) for a, b in zip(writer.acked, writer.acked[1:]) if b[1] <= a[1]]
    check(not bad, "acknowledged versions do not increase: %r" % bad[:3])

    # The last write, everything up: what every node must end up enforcing.
    limit = {"rateLimit": {"id": "final-limit", "algorithm": "TOKEN_BUCKET", "rate": "1",
                           "unit": "MINUTE", "burst": "2"}}
    v_final, _ = admin.apply([limit, route("final", ["final-limit"])], message="final",
                             deadline_s=CONVERGE_S)
    check(v_final > vs[-1], "final version %d not after %d" % (v_final, vs[-1]))

    # 2. etcd holds every acknowledged write; its head is the final write.
    head_key = fl.PREFIX + "rulesets/%s/head" % fl.RULESET
    check(etcd.mod_revision(head_key) == v_final, "etcd %s written at revision %d, the final "
          "write acknowledged version %d" % (head_key, etcd.mod_revision(head_key), v_final))
    base = fl.PREFIX + "rulesets/%s/res/" % fl.RULESET
    res = decode_resources(pb, etcd.range_prefix(base), base)
    clients = {rid for (kind, rid) in res if kind == "client"}
    missing = sorted({"c%d" % a[0] for a in writer.acked} - clients, key=lambda s: int(s[1:]))
    check(not missing, "acknowledged writes missing in etcd: %s" % missing[:10])
    check(len(clients) == WRITES, "etcd has %d clients, expected %d" % (len(clients), WRITES))
    for a in writer.acked:
        c = res[("client", "c%d" % a[0])].client
        check(list(c.keys) == ["key-%d" % a[0]] and c.priority == a[0] % 7,
              "etcd client c%d content %r" % (a[0], c))
    counter = res.get(("rate_limit", "counter"))
    check(counter is not None and counter.rate_limit.rate == WRITES,
          "etcd counter %r, expected rate %d" % (counter, WRITES))
    check(("route", "final") in res and ("route", "alive") in res, "etcd routes %r"
          % sorted(k for k in res if k[0] == "route"))
    want = fl.resource_hash(res.values())

    # 3. Both replicas' head = etcd.
    for cp in cps:
        def head():
            rs = admin.get_ruleset(cp.port)
            return rs if rs.version == v_final else None
        rs = wait_for("%s head at v%d" % (cp.name, v_final), head, timeout=CONVERGE_S)
        got = fl.resource_hash(rs.resources)
        check(got == want, "%s GetRuleset hash %s != etcd %s (%d vs %d resources)"
              % (cp.name, got[:12], want[:12], len(rs.resources), len(res)))

    # 4. Every node on the head, persisted, identical content.
    hashes = {}
    for n in nodes:
        wait_for("%s at v%d" % (n.name, v_final), lambda: n.version() == v_final,
                 timeout=CONVERGE_S)
        sf = wait_for("%s persisted v%d" % (n.name, v_final),
                      lambda: (lambda s: s if s and s[0] == v_final else None)(n.state_file()),
                      timeout=CONVERGE_S)
        snap = pb[2].Snapshot()
        snap.ParseFromString(sf[1])
        check(snap.version == v_final and snap.ruleset == fl.RULESET,
              "%s state file Snapshot %s v%d" % (n.name, snap.ruleset, snap.version))
        hashes[n.name] = fl.resource_hash(snap.resources)
        check(hashes[n.name] == want, "%s content hash %s != etcd head %s (%d vs %d resources)"
              % (n.name, hashes[n.name][:12], want[:12], len(snap.resources), len(res)))
    print("     etcd, both replicas and %d nodes at v%d, %d resources, sha256 %s"
          % (len(nodes), v_final, len(res), want[:16]), flush=True)

    # 5. The last write is enforced on every node.
    traffic.halt.set()
    traffic.join(10)
    for n in nodes:
        codes = [n.get("/final") for _ in range(3)]
        check(codes == [200, 200, 429], "%s: /final answers %r" % (n.name, codes))
        check(n.proc.poll() is None, "%s exited" % n.name)
        m = n.metrics()
        print("     %s: connects %s, reconnects %s, acks %s, nacks %s"
              % (n.name, fl.metric(m, "sluice_sync_connects_total"),
                 fl.metric(m, "sluice_sync_reconnects_total"),
                 fl.metric(m, "sluice_sync_acks_total"), fl.metric(m, "sluice_sync_nacks_total")),
              flush=True)
        check(fl.metric(m, "sluice_sync_nacks_total") == 0, "%s NACKed something" % n.name)
    check(traffic.requests > 0 and not traffic.bad,
          "/alive failed %d of %d times during the chaos: %r"
          % (len(traffic.bad), traffic.requests, traffic.bad[:5]))
    print("     /alive answered 200 to all %d requests during the chaos" % traffic.requests)
    admin.close()


def main():
    ctx, pb = fl.setup(sys.argv, "sluice-chaos-")
    tmp = ctx["tmp"]
    t = time.monotonic()
    ok = False
    try:
        run(ctx, pb)
        ok = True
        print("ok   chaos %.1f s" % (time.monotonic() - t), flush=True)
    except (Failure, grpc.RpcError) as e:
        print("FAIL chaos (seed %d): %s" % (SEED, e), flush=True)
        fl.print_logs(ctx)
    finally:
        for name, st in fl.teardown(ctx):
            print("FAIL %s exit status %d" % (name, st))
            ok = False
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


sys.exit(main())
