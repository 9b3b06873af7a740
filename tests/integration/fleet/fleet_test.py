#!/usr/bin/python3
"""PolicySync and Fleet of the real sluice-control, driven by python3-grpcio.

A private etcd, two control-plane replicas (A and B, mTLS, certificates from
scripts/gen-certs.sh) on it, and fake nodes: Sync streams from this script
with node certificates, which keep the resources they are sent and check
them against PolicyAdmin/GetRuleset at the version they ack. Cases, in
order (each builds on the state the previous left):

  snapshot_at_0          Hello at 0 -> Snapshot equal to the ruleset
  delta_to_every_stream  one ApplyChanges -> the same Delta bytes on each stream
  coalesced              a node that does not ack gets ONE delta over 3 commits
  nack                   Nack keeps the node's version, GetNode shows the error,
                         the refused version is not pushed again, a newer one is
  reconnect_delta        reconnect with have_version -> Delta from there
  replicas               a write through A reaches a node on B; A lists it
  move_replica           a node moves A -> B and resumes from its version; A's
                         ListNodes then shows it on B
  identity_mismatch      Hello naming another node -> PERMISSION_DENIED
  watch_nodes_stats      WatchNodes: statuses then changes (from A and B);
                         WatchStats: reports, node_id forced to the stream's
  slow_watcher           a WatchNodes reader that does not read: drops counted,
                         the latest status of each node still arrives
  window_compaction      a version older than the window, compacted in etcd ->
                         Snapshot
  etcd_down              etcd killed: streams stay up, reports still flow,
                         Fleet answers; etcd back: the next commit arrives
  watch_compacted        B frozen while etcd restarts and compacts: B's watch
                         resumes from a compacted revision, re-reads, and its
                         nodes get one delta to the new head
  lease_expiry           A frozen past its lease: its node keys expire on B;
                         A thawed: re-registered under a new lease
  plaintext_any_identity development mode: Sync open, any node_id
  metrics                /metrics counters, convergence histogram, 404
  sigterm                drain: node streams end UNAVAILABLE, exit 0, lease
                         revoked (B no longer lists the node as connected)

Sanitizer builds: any sanitizer report in a control-plane log fails the run.

usage: fleet_test.py SLUICE_CONTROL GEN_CERTS PROTO_DIR
Exit 77 (skip) when /usr/bin/etcd or the grpc modules are missing.
"""
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import sluicetest
from sluicetest import expect_code, http_get, parse_metrics

sluicetest.skip_unless_ready('fleet_test')
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

WAIT_S = 10          # bound of every wait for something expected
QUIET_S = 0.6        # how long "nothing arrives" is watched (never a pass threshold)
RULESET = 'edge'

control_bin, gen_certs, proto_dir = sys.argv[1:4]

ROOT = tempfile.mkdtemp(prefix='fleet-test-')
GEN = os.path.join(ROOT, 'py')
os.makedirs(GEN)
sluicetest.compile_protos(proto_dir, GEN)
from sluice.v1 import admin_pb2, admin_pb2_grpc, fleet_pb2, fleet_pb2_grpc  # noqa: E402
from sluice.v1 import policy_pb2, sync_pb2, sync_pb2_grpc  # noqa: E402


class Control(sluicetest.ControlProc):
    """The real sluice-control; its ready line gives target and metrics."""

    def __init__(self, name, args):
        super().__init__([control_bin] + args, os.path.join(ROOT, name + '.log'), name,
                         timeout=WAIT_S)
        self.errpath = self.log_path

    def stderr(self):
        return self.text()

    def stop(self):
        """SIGTERM; not exiting within WAIT_S is a failure. The exit status."""
        return super().stop(timeout=WAIT_S, strict=True)


def read(path):
    with open(os.path.join(ROOT, 'pki', path), 'rb') as f:
        return f.read()


def creds(name):
    return grpc.ssl_channel_credentials(read('ca.pem'), read(name + '.key'), read(name + '.pem'))


def res_key(r):
    kind = r.WhichOneof('kind')
    return (kind, getattr(r, kind).id)


KIND_FIELD = {policy_pb2.CLIENT: 'client', policy_pb2.RATE_LIMIT: 'rate_limit',
              policy_pb2.ACCESS_LIST: 'access_list', policy_pb2.ROUTE: 'route',
              policy_pb2.UPSTREAM: 'upstream', policy_pb2.SETTINGS: 'settings'}


class Node:
    """A fake node: one Sync stream, a reader thread, and the resources it
    holds (applied from what it is sent, as a real node would)."""

    def __init__(self, target, cert, node_id=None, have=0, state=None):
        self.node_id = node_id or cert
        self.ch = (grpc.insecure_channel(target) if cert is None else
                   grpc.secure_channel(target, creds(cert)))
        self.out = queue.Queue()
        self.inq = queue.Queue()
        self.version = have
        self.state = dict(state or {})
        self.call = sync_pb2_grpc.PolicySyncStub(self.ch).Sync(self._gen())
        self.send(hello=sync_pb2.Hello(node_id=self.node_id, ruleset=RULESET, have_version=have,
                                       software_version='fleet-test/1',
                                       labels=[sync_pb2.Label(key='zone', value='z1')]))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _gen(self):
        while True:
            m = self.out.get()
            if m is None:
                return
            yield m

    def _read(self):
        try:
            for m in self.call:
                self.inq.put(m)
            self.inq.put(('end', self.call.code()))
        except grpc.RpcError as e:
            self.inq.put(('end', e.code()))

    def send(self, **kw):
        self.out.put(sync_pb2.NodeMessage(**kw))

    def recv(self, timeout=WAIT_S):
        try:
            m = self.inq.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f'{self.node_id}: nothing received in {timeout} s')
        if isinstance(m, tuple):
            raise AssertionError(f'{self.node_id}: stream ended: {m[1]}')
        return m

    def ended(self, timeout=WAIT_S):
        m = self.inq.get(timeout=timeout)
        assert isinstance(m, tuple), f'{self.node_id}: expected the end, got {m}'
        return m[1]

    def quiet(self, t=QUIET_S):
        try:
            m = self.inq.get(timeout=t)
        except queue.Empty:
            return
        raise AssertionError(f'{self.node_id}: unexpected message {m}')

    def apply(self, m):
        """Applies a push to the held state (checks from_version as a node does)."""
        if m.WhichOneof('msg') == 'snapshot':
            self.state = {res_key(r): r.SerializeToString() for r in m.snapshot.resources}
            return m.snapshot.version
        d = m.delta
        assert d.from_version == self.version, \
            f'{self.node_id}: delta from {d.from_version}, node at {self.version}'
        for k in d.removes:
            del self.state[(KIND_FIELD[k.kind], k.id)]
        for r in d.upserts:
            self.state[res_key(r)] = r.SerializeToString()
        return d.to_version

    def ack(self, m):
        v = self.apply(m)
        self.version = v
        self.send(ack=sync_pb2.Ack(ruleset=RULESET, version=v, nonce=m.nonce))
        return v

    def catch_up(self, version):
        """Acks pushes until the node holds `version` (several commits may
        arrive as one coalesced delta or as several)."""
        while self.version != version:
            self.ack(self.recv())

    def nack(self, m, error):
        v = m.delta.to_version if m.WhichOneof('msg') == 'delta' else m.snapshot.version
        self.send(nack=sync_pb2.Nack(ruleset=RULESET, version=self.version, nonce=m.nonce,
                                     error=error))
        return v

    def report(self, n):
        self.send(report=sync_pb2.NodeReport(
            node_id='someone-else', health=sync_pb2.HEALTHY, health_detail=f'report {n}',
            time_unix_ms=int(time.time() * 1000),
            applied=[sync_pb2.AppliedVersion(ruleset=RULESET, version=self.version)],
            clients=[sync_pb2.ClientCounters(client='acme', allowed=n, rejected=1)]))

    def close(self):
        self.out.put(None)
        self.call.cancel()
        self.ch.close()


class Admin:
    def __init__(self, target):
        self.ch = grpc.secure_channel(target, creds('admin'))
        self.policy = admin_pb2_grpc.PolicyAdminStub(self.ch)
        self.fleet = fleet_pb2_grpc.FleetStub(self.ch)
        self.n = 0

    def apply(self, upserts=(), removes=()):
        self.n += 1
        rq = admin_pb2.ApplyChangesRequest(ruleset=RULESET, author='fleet-test',
                                           message=f'change {self.n}')
        for u in upserts:
            rq.upserts.append(json_format.ParseDict(u, policy_pb2.Resource()))
        for kind, rid in removes:
            rq.removes.append(policy_pb2.ResourceKey(kind=kind, id=rid))
        return self.policy.ApplyChanges(rq, timeout=WAIT_S).version.version

    def ruleset(self, version=0):
        rs = self.policy.GetRuleset(admin_pb2.GetRulesetRequest(ruleset=RULESET,
                                                                version=version),
                                    timeout=WAIT_S)
        return {res_key(r): r.SerializeToString() for r in rs.resources}

    def node(self, node_id):
        return self.fleet.GetNode(fleet_pb2.GetNodeRequest(node_id=node_id), timeout=WAIT_S)

    def nodes(self):
        return {n.node_id: n for n in
                self.fleet.ListNodes(fleet_pb2.ListNodesRequest(), timeout=WAIT_S).nodes}

    def close(self):
        self.ch.close()


def limit(i, rate=5):
    return {'rateLimit': {'id': f'rl-{i}', 'algorithm': 'TOKEN_BUCKET', 'rate': str(rate),
                          'unit': 'SECOND', 'burst': '5'}}


def pump(call, q):
    """Moves a server stream's messages into q until it ends."""
    try:
        for m in call:
            q.put(m)
    except grpc.RpcError:
        pass


def eventually(fn, what):
    """fn() true within WAIT_S; assertion and gRPC errors count as "not yet"."""
    sluicetest.wait_for(what, fn, timeout=WAIT_S, ignore=(AssertionError, grpc.RpcError))


def push_version(m):
    return m.delta.to_version if m.WhichOneof('msg') == 'delta' else m.snapshot.version


def scrape(control):
    st, text = http_get(control.metrics, '/metrics')
    assert st == 200, f'/metrics status {st}'
    return parse_metrics(text)


# ---- the cases --------------------------------------------------------------------

def main():
    subprocess.run(['bash', gen_certs, os.path.join(ROOT, 'pki'), 'node-1', 'node-2',
                    'node-3'], check=True, stdout=subprocess.DEVNULL)
    etcd = sluicetest.Etcd(ROOT)
    etcd.start()

    controls = []

    def control(name, tls=True):
        pki = os.path.join(ROOT, 'pki')
        sec = (['--tls-cert', f'{pki}/control.pem', '--tls-key', f'{pki}/control.key',
                '--tls-ca', f'{pki}/ca.pem'] if tls else ['--plaintext'])
        c = Control(name, ['--listen', '127.0.0.1:0', '--etcd', etcd.url,
                           '--etcd-timeout-ms', '1000', '--node-lease-ttl', '3',
                           '--sync-window', '6', '--metrics-listen', '127.0.0.1:0',
                           '--log-level', 'info'] + sec)
        controls.append(c)
        return c

    ctl_a = control('control-a')
    ctl_b = control('control-b')
    admin = Admin(ctl_a.target)
    admin_b = Admin(ctl_b.target)
    nodes = []
    failures = []

    def case(name):
        def deco(fn):
            t0 = time.monotonic()
            try:
                fn()
                print(f'ok   {name} ({time.monotonic() - t0:.2f} s)')
            except Exception:
                failures.append(name)
                print(f'FAIL {name}')
                traceback.print_exc()
            return fn
        return deco

    try:
        v1 = admin.apply([limit(1), limit(2)])
        n1 = Node(ctl_a.target, 'node-1')
        nodes.append(n1)

        @case('snapshot_at_0')
        def _():
            m = n1.recv()
            assert m.WhichOneof('msg') == 'snapshot', m
            assert m.nonce
            assert m.snapshot.version == v1 and m.snapshot.ruleset == RULESET
            assert n1.ack(m) == v1
            assert n1.state == admin.ruleset(v1), 'snapshot differs from GetRuleset'
            eventually(lambda: admin.node('node-1').acked_version == v1, 'ack in GetNode')

        n2 = Node(ctl_a.target, 'node-2')
        nodes.append(n2)
        state = {}

        @case('delta_to_every_stream')
        def _():
            n2.ack(n2.recv())
            v2 = admin.apply([limit(3)], [(policy_pb2.RATE_LIMIT, 'rl-1')])
            m1, m2 = n1.recv(), n2.recv()
            for m in (m1, m2):
                assert m.WhichOneof('msg') == 'delta', m
                assert (m.delta.from_version, m.delta.to_version) == (v1, v2)
            assert m1.nonce != m2.nonce, 'nonces must differ per push'
            assert m1.delta.SerializeToString() == m2.delta.SerializeToString()
            n1.ack(m1)
            n2.ack(m2)
            assert n1.state == n2.state == admin.ruleset(v2)
            state['v2'] = v2

        @case('coalesced')
        def _():
            v3 = admin.apply([limit(4)])
            m3 = n1.recv()                       # not acked for now
            assert push_version(m3) == v3
            n2.ack(n2.recv())
            v4 = admin.apply([limit(5)])
            n2.ack(n2.recv())
            v5 = admin.apply([limit(4, rate=7)], [(policy_pb2.RATE_LIMIT, 'rl-2')])
            n2.ack(n2.recv())
            n1.quiet()                           # one push in flight, nothing more
            eventually(lambda: admin.node('node-1').lag_versions == 3, 'lag of 3')
            n1.ack(m3)
            m = n1.recv()
            assert m.WhichOneof('msg') == 'delta'
            assert (m.delta.from_version, m.delta.to_version) == (v3, v5), m.delta
            ids = sorted(r.rate_limit.id for r in m.delta.upserts)
            assert ids == ['rl-4', 'rl-5'], ids
            assert [k.id for k in m.delta.removes] == ['rl-2']
            n1.ack(m)
            n1.quiet()
            assert n1.state == admin.ruleset(v5) == n2.state
            state['v5'] = v5

        @case('nack')
        def _():
            v6 = admin.apply([limit(6)])
            m = n1.recv()
            before_ms = int(time.time() * 1000)
            assert n1.nack(m, 'route/x: upstream unreachable') == v6
            n2.ack(n2.recv())

            def shown():
                st = admin.node('node-1')
                return (st.last_nack_error == 'route/x: upstream unreachable' and
                        st.last_nack_version == v6 and st.acked_version == state['v5'] and
                        st.head_version == v6 and st.connected and
                        before_ms - 1000 <= st.last_nack_unix_ms <= int(time.time() * 1000) + 1000)
            eventually(shown, 'the nack in GetNode')
            n1.quiet()                            # the refused version is not re-sent
            v7 = admin.apply([limit(7)])
            m = n1.recv()
            assert (m.delta.from_version, m.delta.to_version) == (state['v5'], v7)
            n1.ack(m)
            n2.ack(n2.recv())
            assert n1.state == admin.ruleset(v7)
            state['v7'] = v7

        @case('reconnect_delta')
        def _():
            n2.close()
            nodes.remove(n2)
            n2b = Node(ctl_a.target, 'node-2', have=state['v5'],
                       state=admin.ruleset(state['v5']))
            nodes.append(n2b)
            m = n2b.recv()
            assert m.WhichOneof('msg') == 'delta', m
            assert (m.delta.from_version, m.delta.to_version) == (state['v5'], state['v7'])
            n2b.ack(m)
            assert n2b.state == admin.ruleset(state['v7'])
            state['n2'] = n2b

        @case('replicas')
        def _():
            n3 = Node(ctl_b.target, 'node-3')
            nodes.append(n3)
            m = n3.recv()
            assert m.WhichOneof('msg') == 'snapshot' and m.snapshot.version == state['v7']
            n3.ack(m)
            v8 = admin.apply([limit(8)])             # through replica A
            m = n3.recv()
            assert (m.delta.from_version, m.delta.to_version) == (state['v7'], v8)
            n3.ack(m)
            n1.ack(n1.recv())
            state['n2'].ack(state['n2'].recv())
            assert n3.state == admin_b.ruleset(v8)

            def listed():
                ns = admin.nodes()
                return ('node-3' in ns and ns['node-3'].control_plane == ctl_b.target and
                        ns['node-3'].connected and ns['node-3'].acked_version == v8 and
                        ns['node-1'].control_plane == ctl_a.target)
            eventually(listed, 'A listing node-3 on B')
            assert set(admin_b.nodes()) >= {'node-1', 'node-2', 'node-3'}
            state['v8'] = v8
            state['n3'] = n3

        @case('move_replica')
        def _():
            n1.close()
            nodes.remove(n1)
            n1b = Node(ctl_b.target, 'node-1', have=n1.version, state=n1.state)
            nodes.append(n1b)
            n1b.quiet()                               # already at the head
            v9 = admin.apply([limit(9)])
            m = n1b.recv()
            assert (m.delta.from_version, m.delta.to_version) == (state['v8'], v9)
            n1b.ack(m)
            state['n2'].ack(state['n2'].recv())
            state['n3'].ack(state['n3'].recv())
            eventually(lambda: admin.node('node-1').control_plane == ctl_b.target and
                       admin.node('node-1').acked_version == v9 and
                       admin.node('node-1').connected, 'node-1 shown on B by A')
            state['n1'] = n1b
            state['v9'] = v9

        @case('identity_mismatch')
        def _():
            bad = Node(ctl_a.target, 'node-3', node_id='node-2')
            assert bad.ended() == grpc.StatusCode.PERMISSION_DENIED
            bad.close()
            # an admin certificate is not a node certificate
            bad = Node(ctl_a.target, 'admin', node_id='admin')
            assert bad.ended() == grpc.StatusCode.PERMISSION_DENIED
            bad.close()
            with grpc.insecure_channel(ctl_a.target) as ch:
                # a plaintext call to a TLS port
                expect_code(lambda: fleet_pb2_grpc.FleetStub(ch).ListNodes(
                    fleet_pb2.ListNodesRequest(), timeout=WAIT_S), grpc.StatusCode.UNAVAILABLE)
            expect_code(lambda: admin.node('no-such-node'), grpc.StatusCode.NOT_FOUND)
            other = admin.fleet.ListNodes(fleet_pb2.ListNodesRequest(ruleset='other'),
                                          timeout=WAIT_S)
            assert not other.nodes, other
            n2ch = grpc.secure_channel(ctl_a.target, creds('node-2'))
            # a node certificate may not list the fleet
            expect_code(lambda: fleet_pb2_grpc.FleetStub(n2ch).ListNodes(
                fleet_pb2.ListNodesRequest(), timeout=WAIT_S), grpc.StatusCode.PERMISSION_DENIED)
            n2ch.close()

        @case('watch_nodes_stats')
        def _():
            got_nodes, got_stats = queue.Queue(), queue.Queue()
            wn = admin.fleet.WatchNodes(fleet_pb2.WatchNodesRequest(ruleset=RULESET))
            ws = admin.fleet.WatchStats(fleet_pb2.WatchStatsRequest(node_id='node-2'))

            for call, q in ((wn, got_nodes), (ws, got_stats)):
                threading.Thread(target=pump, args=(call, q), daemon=True).start()
            initial = set()
            deadline = time.monotonic() + WAIT_S
            while initial != {'node-1', 'node-2', 'node-3'} and time.monotonic() < deadline:
                initial.add(got_nodes.get(timeout=WAIT_S).node_id)
            assert initial == {'node-1', 'node-2', 'node-3'}, initial
            n2 = state['n2']
            n2.report(41)
            state['n3'].report(99)                   # filtered out (node-3 on B anyway)
            r = got_stats.get(timeout=WAIT_S)
            assert r.node_id == 'node-2', r.node_id  # the stream's identity, not the claim
            assert r.clients[0].allowed == 41 and r.health_detail == 'report 41'
            # a change on A and one on B both reach A's watcher
            v10 = admin.apply([limit(10)])
            for n in (n2, state['n1'], state['n3']):
                n.ack(n.recv())
            seen = {}
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline and not (
                    seen.get('node-2') == v10 and seen.get('node-3') == v10):
                try:
                    st = got_nodes.get(timeout=0.5)
                except queue.Empty:
                    continue
                seen[st.node_id] = st.acked_version
            assert seen.get('node-2') == v10 and seen.get('node-3') == v10, seen
            wn.cancel()
            ws.cancel()
            state['v10'] = v10

        @case('slow_watcher')
        def _():
            # a WatchNodes subscriber that does not read: its stream fills,
            # statuses are dropped (counted) and coalesced, memory stays
            # bounded, and once it reads it gets each node's latest status
            # no BDP probing: the HTTP/2 window stays at 64 KiB, so a reader
            # that does not read pushes back on the server for real
            slow_ch = grpc.secure_channel(ctl_a.target, creds('admin'),
                                          options=[('grpc.http2.bdp_probe', 0)])
            wn = fleet_pb2_grpc.FleetStub(slow_ch).WatchNodes(fleet_pb2.WatchNodesRequest())
            n2 = state['n2']
            before = scrape(ctl_a)['sluice_control_watch_dropped_total{stream="watch_nodes"}']
            last = None
            for i in range(4000):
                last = f'burst {i}'
                n2.send(report=sync_pb2.NodeReport(health=sync_pb2.DEGRADED,
                                                   health_detail=last))
            eventually(lambda: admin.node('node-2').health_detail == last, 'the last report')
            dropped = scrape(ctl_a)['sluice_control_watch_dropped_total{stream="watch_nodes"}']
            assert dropped > before, (before, dropped)
            got = queue.Queue()
            threading.Thread(target=pump, args=(wn, got), daemon=True).start()
            deadline = time.monotonic() + WAIT_S
            seen = 0
            while time.monotonic() < deadline:
                st = got.get(timeout=WAIT_S)
                seen += 1
                if st.node_id == 'node-2' and st.health_detail == last:
                    break
            else:
                raise AssertionError('the latest status never arrived')
            assert seen < 4000, seen
            print(f'     slow watcher: {dropped - before:.0f} dropped, {seen} received '
                  'before the latest status')
            wn.cancel()
            slow_ch.close()
            n2.report(0)                                # healthy again

        @case('window_compaction')
        def _():
            # window 6: after 6 more commits v10 has left B's window and etcd
            # compacts past it
            n3 = state['n3']
            last = None
            for i in range(11, 17):
                last = admin.apply([limit(i)])
                for n in (state['n2'], state['n1'], n3):
                    n.ack(n.recv())
            etcd.post('/v3/kv/compaction', {'revision': str(last), 'physical': True})
            try:
                admin.policy.GetRuleset(admin_pb2.GetRulesetRequest(ruleset=RULESET,
                                                                    version=state['v10']),
                                        timeout=WAIT_S)
                raise AssertionError('v10 still readable after compaction')
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.OUT_OF_RANGE,
                                    grpc.StatusCode.FAILED_PRECONDITION,
                                    grpc.StatusCode.NOT_FOUND), e.code()
            old = Node(ctl_b.target, 'node-3', have=state['v10'])
            nodes.append(old)
            assert n3.ended() == grpc.StatusCode.ABORTED
            m = old.recv()
            assert m.WhichOneof('msg') == 'snapshot' and m.snapshot.version == last, m
            old.ack(m)
            assert old.state == admin.ruleset(last)
            state['n3'] = old
            state['last'] = last

        @case('etcd_down')
        def _():
            n2 = state['n2']
            ws = admin.fleet.WatchStats(fleet_pb2.WatchStatsRequest())
            got = queue.Queue()
            threading.Thread(target=pump, args=(ws, got), daemon=True).start()
            time.sleep(0.2)
            etcd.kill()
            time.sleep(1.5)
            n2.report(7)
            r = got.get(timeout=WAIT_S)
            assert r.node_id == 'node-2' and r.clients[0].allowed == 7
            st = admin.node('node-2')                 # served from memory
            assert st.connected and st.acked_version == state['last']
            n2.quiet(0.2)
            etcd.start()
            eventually(lambda: admin.policy.ListRulesets(admin_pb2.ListRulesetsRequest(),
                                                         timeout=2) is not None,
                       'etcd back for the admin API')
            v = admin.apply([limit(30)])
            for n in (n2, state['n1'], state['n3']):
                m = n.recv()
                assert (m.delta.from_version, m.delta.to_version) == (state['last'], v)
                n.ack(m)
            ws.cancel()
            state['last'] = v

        @case('watch_compacted')
        def _():
            # B frozen while etcd restarts and compacts: its watch resumes
            # from a compacted revision, re-reads, and its nodes catch up
            os.kill(ctl_b.proc.pid, signal.SIGSTOP)
            try:
                etcd.kill()
                etcd.start()
                admin.apply([limit(31)])
                v = admin.apply([limit(32)])
                rev = int(etcd.post('/v3/kv/range', {'key': 'eA=='})['header']['revision'])
                etcd.post('/v3/kv/compaction', {'revision': str(rev), 'physical': True})
            finally:
                os.kill(ctl_b.proc.pid, signal.SIGCONT)
            for n in (state['n1'], state['n3']):
                m = n.recv()
                assert m.WhichOneof('msg') == 'delta', m
                assert (m.delta.from_version, m.delta.to_version) == (state['last'], v), m
                n.ack(m)
                assert n.state == admin.ruleset(v)
            state['n2'].catch_up(v)
            eventually(lambda: scrape(ctl_b)['sluice_control_reloads_total'] >= 1,
                       'a reload on B')
            state['last'] = v

        @case('lease_expiry')
        def _():
            # A frozen past its 3 s lease: its node keys expire and B stops
            # listing node-2; A thawed: a new lease, node-2 written again
            os.kill(ctl_a.proc.pid, signal.SIGSTOP)
            try:
                eventually(lambda: 'node-2' not in admin_b.nodes(), 'node-2 expired on B')
            finally:
                os.kill(ctl_a.proc.pid, signal.SIGCONT)
            eventually(lambda: 'node-2' in admin_b.nodes() and
                       admin_b.nodes()['node-2'].control_plane == ctl_a.target and
                       admin_b.nodes()['node-2'].acked_version == state['last'],
                       'node-2 registered again')
            v = admin.apply([limit(33)])
            for n in (state['n1'], state['n2'], state['n3']):
                n.catch_up(v)
            state['last'] = v

        @case('plaintext_any_identity')
        def _():
            # development mode: no certificate, so no identity to check;
            # the fleet's keys from a YAML config file this time
            cfg = os.path.join(ROOT, 'dev.yaml')
            with open(cfg, 'w') as f:
                f.write(f'listen: "127.0.0.1:0"\netcd:\n  - {etcd.url}\nplaintext: true\n'
                        'replica_id: dev-replica\nsync_window: 2\nnode_lease_ttl: 5\n'
                        'metrics_listen: "127.0.0.1:0"\n')
            dev = Control('control-dev', ['--config', cfg])
            controls.append(dev)
            try:
                assert 'PLAINTEXT MODE' in dev.stderr()
                assert dev.metrics
                n = Node(dev.target, None, node_id='any-name-goes')
                m = n.recv()
                assert m.WhichOneof('msg') == 'snapshot' and m.snapshot.version == state['last']
                n.ack(m)
                assert n.state == admin.ruleset(state['last'])
                eventually(lambda: admin.node('any-name-goes').control_plane == 'dev-replica',
                           'the dev node listed by A')
                n.close()
            finally:
                assert dev.stop() == 0

        @case('metrics')
        def _():
            a = scrape(ctl_a)
            assert a['sluice_control_sync_pushes_total{kind="delta"}'] >= 8, a
            assert a['sluice_control_sync_pushes_total{kind="snapshot"}'] >= 2, a
            assert a['sluice_control_sync_acks_total'] >= 10, a
            assert a['sluice_control_sync_nacks_total'] == 1, a
            assert a['sluice_control_connected_nodes'] == 1, a   # node-2
            assert a['sluice_control_sync_hello_refused_total'] >= 1, a
            assert a['sluice_control_convergence_seconds_count'] >= 5, a
            assert a['sluice_control_registry_lease_held'] == 1, a
            # etcd latency: the registry's calls and the admin store's
            # (every ApplyChanges through A made at least one store call)
            assert a['sluice_control_etcd_request_seconds_count{op="registry"}'] >= 1, a
            assert a['sluice_control_etcd_request_seconds_count{op="store"}'] >= 5, a
            # one encoding per (from, to) or snapshot, shared by the streams
            pushes = (a['sluice_control_sync_pushes_total{kind="delta"}'] +
                      a['sluice_control_sync_pushes_total{kind="snapshot"}'])
            assert a['sluice_control_sync_bodies_built_total'] < pushes, a
            b = scrape(ctl_b)
            assert b['sluice_control_connected_nodes'] == 2, b   # node-1, node-3
            st, _ = http_get(ctl_a.metrics, '/nope')
            assert st == 404, st

        @case('sigterm')
        def _():
            n2 = state['n2']
            assert ctl_a.stop() == 0, ctl_a.stderr()
            assert n2.ended() == grpc.StatusCode.UNAVAILABLE
            # A revoked its lease: B no longer lists node-2 as connected
            eventually(lambda: 'node-2' not in admin_b.nodes() or
                       not admin_b.nodes()['node-2'].connected, 'node-2 gone from B')
    finally:
        for n in nodes:
            n.close()
        admin.close()
        admin_b.close()
        for c in (ctl_a, ctl_b):
            if c.proc.poll() is None and c.stop() != 0:
                failures.append(f'{c.errpath}: exit {c.proc.returncode}')
        etcd.kill()
    # sanitizer builds: a report in a log fails the run even if the
    # process limped on
    for c in controls:
        log = c.stderr()
        if 'Sanitizer' in log or 'runtime error:' in log:
            failures.append(f'sanitizer report in {os.path.basename(c.errpath)}')
            print(log[-8000:])
    if failures:
        print('--- control-a log ---\n' + ctl_a.stderr()[-6000:])
        print('--- control-b log ---\n' + ctl_b.stderr()[-6000:])
        print(f'fleet_test: FAILED: {", ".join(failures)}')
        return 1
    print('fleet_test: all cases passed')
    return 0


if __name__ == '__main__':
    try:
        rc = main()
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    sys.exit(rc)
