#!/usr/bin/python3
"""sluice-control driven by an independent client, Debian's python3-grpcio.

Starts a private etcd and the real binary (plaintext + token, then mTLS from
a YAML config file with certificates from scripts/gen-certs.sh) and checks:
health Check and Watch (NOT_SERVING while etcd is down, back after), server
reflection v1 and v1alpha, a reflection-driven dynamic client that builds its
messages from JSON (what grpcurl does), UNIMPLEMENTED for unknown methods,
the admin role by token and by certificate, and draining on SIGTERM.

The health and reflection message classes come from the build's descriptor
set (as grpcurl has them compiled in); everything about sluice.v1 is learnt
through reflection only.

usage: control_test.py SLUICE_CONTROL GEN_CERTS PROTOSET
Exit 77 (skip) when /usr/bin/etcd or the grpc module is missing.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback

import sluicetest
from sluicetest import expect_code

sluicetest.skip_unless_ready('control_test', modules=('grpc', 'google.protobuf'))
import grpc  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, json_format  # noqa: E402
from google.protobuf import message_factory  # noqa: E402

TOKEN = 'py-admin-token'
WAIT_S = 20          # bound of every wait; never a pass/fail threshold

control_bin, gen_certs, protoset = sys.argv[1:4]


class Control(sluicetest.ControlProc):
    """The real sluice-control; its ready line gives target and port."""

    def __init__(self, args, root, name):
        super().__init__([control_bin] + args, os.path.join(root, name + '.log'), name,
                         timeout=WAIT_S)

    def stderr(self):
        return self.text()

    def stop(self):
        """SIGTERM; not exiting within WAIT_S is a failure. The exit status."""
        return super().stop(timeout=WAIT_S, strict=True)


# ---- message classes for the bootstrap protocols --------------------------------

BOOT = sluicetest.BootProtos(protoset)
HealthReq, HealthResp = BOOT.HealthReq, BOOT.HealthResp
SERVING, NOT_SERVING = 1, 2


def health_check(ch, service=''):
    call = ch.unary_unary('/grpc.health.v1.Health/Check',
                          request_serializer=HealthReq.SerializeToString,
                          response_deserializer=HealthResp.FromString)
    return call(HealthReq(service=service), timeout=WAIT_S).status


def health_watch(ch, service=''):
    call = ch.unary_stream('/grpc.health.v1.Health/Watch',
                           request_serializer=HealthReq.SerializeToString,
                           response_deserializer=HealthResp.FromString)
    return call(HealthReq(service=service), timeout=120)


def Reflection(ch, version='v1'):
    return sluicetest.Reflection(BOOT, ch, version)


class DynamicClient:
    """grpcurl's way: descriptors by reflection, messages from JSON."""

    def __init__(self, ch, metadata=None):
        self.ch = ch
        self.md = metadata
        self.pool = descriptor_pool.DescriptorPool()
        self.factory = message_factory.MessageFactory(self.pool)
        self.added = set()

    def load_symbol(self, refl, symbol):
        r = refl.ask(file_containing_symbol=symbol)
        assert r.WhichOneof('message_response') == 'file_descriptor_response', r
        protos = [descriptor_pb2.FileDescriptorProto.FromString(b)
                  for b in r.file_descriptor_response.file_descriptor_proto]
        by_name = {p.name: p for p in protos}

        def add(p):
            if p.name in self.added:
                return
            for dep in p.dependency:
                assert dep in by_name or dep in self.added, f'{dep} not sent with {p.name}'
                if dep in by_name:
                    add(by_name[dep])
            self.pool.Add(p)
            self.added.add(p.name)
        for p in protos:
            add(p)

    def call_json(self, service, method, body, metadata=None):
        m = self.pool.FindServiceByName(service).methods_by_name[method]
        req_cls = self.factory.GetPrototype(m.input_type)
        resp_cls = self.factory.GetPrototype(m.output_type)
        req = json_format.Parse(body, req_cls())
        call = self.ch.unary_unary(f'/{service}/{method}',
                                   request_serializer=req_cls.SerializeToString,
                                   response_deserializer=resp_cls.FromString)
        resp = call(req, timeout=WAIT_S, metadata=metadata if metadata is not None else self.md)
        return json_format.MessageToDict(resp, preserving_proto_field_name=True)


def wait_status(watch, want):
    for r in watch:
        if r.status == want:
            return
    raise AssertionError(f'watch ended before status {want}: {watch.code()}')


BEARER = (('authorization', f'Bearer {TOKEN}'),)

# ---- the cases -----------------------------------------------------------------------


def case_health_check_and_watch_follow_etcd(ctl, etcd, root):
    ch = grpc.insecure_channel(ctl.target)
    assert health_check(ch) == SERVING
    assert health_check(ch, 'sluice.v1.PolicyAdmin') == SERVING
    expect_code(lambda: health_check(ch, 'no.Such'), grpc.StatusCode.NOT_FOUND)
    watch = health_watch(ch)
    assert next(watch).status == SERVING
    etcd.kill()
    wait_status(watch, NOT_SERVING)
    assert health_check(ch) == NOT_SERVING
    # admin writes fail UNAVAILABLE-ish while etcd is gone, the server stays up
    etcd.start()
    wait_status(watch, SERVING)
    assert health_check(ch, 'sluice.v1.PolicyAdmin') == SERVING
    watch.cancel()
    ch.close()


def case_reflection_lists_and_describes(ctl, etcd, root):
    ch = grpc.insecure_channel(ctl.target)
    for version in ('v1', 'v1alpha'):
        refl = Reflection(ch, version)
        services = refl.services()
        for s in ('grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection',
                  'grpc.reflection.v1alpha.ServerReflection', 'sluice.v1.PolicyAdmin'):
            assert s in services, f'{version}: {s} not in {services}'
        r = refl.ask(file_containing_symbol='sluice.v1.PolicyAdmin')
        names = [descriptor_pb2.FileDescriptorProto.FromString(b).name
                 for b in r.file_descriptor_response.file_descriptor_proto]
        assert names[0] == 'sluice/v1/admin.proto', names
        assert 'sluice/v1/policy.proto' in names, 'transitive import missing'
        r = refl.ask(file_by_filename='sluice/v1/fleet.proto')
        names = {descriptor_pb2.FileDescriptorProto.FromString(b).name
                 for b in r.file_descriptor_response.file_descriptor_proto}
        assert names == {'sluice/v1/fleet.proto', 'sluice/v1/sync.proto',
                         'sluice/v1/policy.proto'}, names
        r = refl.ask(file_containing_symbol='sluice.v1.RateLimit')
        assert r.WhichOneof('message_response') == 'file_descriptor_response'
        r = refl.ask(file_containing_symbol='no.such.Symbol')
        assert r.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        r = refl.ask(all_extension_numbers_of_type='sluice.v1.Resource')
        assert r.all_extension_numbers_response.base_type_name == 'sluice.v1.Resource'
        refl.close()
    ch.close()


def case_dynamic_client_calls_admin_with_json(ctl, etcd, root):
    ch = grpc.insecure_channel(ctl.target)
    refl = Reflection(ch)
    dyn = DynamicClient(ch, BEARER)
    dyn.load_symbol(refl, 'sluice.v1.PolicyAdmin')
    refl.close()
    svc = dyn.pool.FindServiceByName('sluice.v1.PolicyAdmin')
    assert {m.name for m in svc.methods} >= {'ListRulesets', 'ApplyChanges', 'Validate'}
    out = dyn.call_json('sluice.v1.PolicyAdmin', 'ApplyChanges', '''{
        "ruleset": "pydemo", "author": "control_test", "message": "first",
        "upserts": [{"upstream": {"id": "app", "endpoints": ["127.0.0.1:8080"]}}]}''')
    version = int(out['version']['version'])
    assert version > 0, out
    out = dyn.call_json('sluice.v1.PolicyAdmin', 'ListRulesets', '{}')
    heads = {r['ruleset']: int(r['version']) for r in out['rulesets']}
    assert heads.get('pydemo') == version, heads
    # a validation error comes back as data naming the field
    out = dyn.call_json('sluice.v1.PolicyAdmin', 'Validate', '''{
        "ruleset": "pydemo",
        "upserts": [{"route": {"id": "api", "pathPrefix": "api", "upstream": "app"}}]}''')
    assert not out.get('valid', False) and any('route/api' in e for e in out['errors']), out
    # the same call by hand-built bytes: no token -> UNAUTHENTICATED
    expect_code(lambda: dyn.call_json('sluice.v1.PolicyAdmin', 'ListRulesets', '{}',
                                      metadata=()), grpc.StatusCode.UNAUTHENTICATED)
    ch.close()


def case_unknown_method_is_unimplemented(ctl, etcd, root):
    ch = grpc.insecure_channel(ctl.target)
    call = ch.unary_unary('/sluice.v1.Nope/Missing')
    for _ in range(3):
        e = expect_code(lambda: call(b'', timeout=WAIT_S), grpc.StatusCode.UNIMPLEMENTED)
        assert 'Missing' in e.details()
    ch.close()


def case_plaintext_tokens(ctl, etcd, root):
    ch = grpc.insecure_channel(ctl.target)
    lr = ch.unary_unary('/sluice.v1.PolicyAdmin/ListRulesets')
    expect_code(lambda: lr(b'', timeout=WAIT_S), grpc.StatusCode.UNAUTHENTICATED)
    expect_code(lambda: lr(b'', timeout=WAIT_S,
                           metadata=(('authorization', 'Bearer wrong'),)),
                grpc.StatusCode.UNAUTHENTICATED)
    expect_code(lambda: lr(b'', timeout=WAIT_S, metadata=(('authorization', TOKEN),)),
                grpc.StatusCode.UNAUTHENTICATED)
    lr(b'', timeout=WAIT_S, metadata=BEARER)
    ch.close()


def case_mtls_roles(ctl, etcd, root):
    pki = os.path.join(root, 'pki')

    def read(n):
        return open(os.path.join(pki, n), 'rb').read()

    opts = (('grpc.ssl_target_name_override', 'localhost'),)

    def chan(cert=None):
        creds = grpc.ssl_channel_credentials(
            root_certificates=read('ca.pem'),
            private_key=read(cert + '.key') if cert else None,
            certificate_chain=read(cert + '.pem') if cert else None)
        return grpc.secure_channel(ctl.target, creds, options=opts)

    node, admin, anon = chan('node-1'), chan('admin'), chan()

    def lr(ch, md=None):
        return ch.unary_unary('/sluice.v1.PolicyAdmin/ListRulesets')(b'', timeout=WAIT_S,
                                                                     metadata=md)
    expect_code(lambda: lr(node), grpc.StatusCode.PERMISSION_DENIED)
    lr(admin)
    expect_code(lambda: lr(anon), grpc.StatusCode.UNAUTHENTICATED)
    lr(anon, BEARER)
    # health and reflection need no credential (this replica may still be
    # catching up with etcd's restart of the first case: watch for SERVING)
    watch = health_watch(anon)
    wait_status(watch, SERVING)
    watch.cancel()
    assert health_check(anon) == SERVING
    refl = Reflection(anon)
    assert 'sluice.v1.PolicyAdmin' in refl.services()
    refl.close()
    # a plaintext client gets nowhere
    plain = grpc.insecure_channel(ctl.target)
    expect_code(lambda: health_check(plain), grpc.StatusCode.UNAVAILABLE)
    for c in (node, admin, anon, plain):
        c.close()


def case_sigterm_drains(ctl, etcd, root):
    ch = grpc.insecure_channel(ctl.target)
    watch = health_watch(ch)
    assert next(watch).status == SERVING
    ctl.proc.send_signal(signal.SIGTERM)
    statuses = []
    try:
        for r in watch:
            statuses.append(r.status)
    except grpc.RpcError:
        pass
    assert watch.code() == grpc.StatusCode.UNAVAILABLE, watch.code()
    assert NOT_SERVING in statuses, f'no NOT_SERVING before the end: {statuses}'
    assert ctl.stop() == 0
    log = ctl.stderr()
    assert 'PLAINTEXT MODE' in log and 'level=warn' in log, 'no loud plaintext warning'
    assert 'msg="draining"' in log and 'msg="stopped"' in log, log
    ch.close()


def main():
    root = tempfile.mkdtemp(prefix='control_test.')
    etcd = sluicetest.Etcd(root)
    ctls = []
    failed = 0
    try:
        etcd.start()
        token_file = os.path.join(root, 'tokens')
        with open(token_file, 'w') as f:
            f.write(f'# test\n{TOKEN}\n')
        subprocess.run(['bash', gen_certs, os.path.join(root, 'pki'), 'node-1'], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        plain = Control(['--plaintext', '--listen', '127.0.0.1:0', '--etcd', etcd.url,
                         '--admin-token-file', token_file, '--prefix', '/pytest/'],
                        root, 'plain')
        ctls.append(plain)
        pki = os.path.join(root, 'pki')
        cfg = os.path.join(root, 'control.yaml')
        with open(cfg, 'w') as f:
            f.write(f'listen: "127.0.0.1:0"\n'
                    f'etcd:\n  - {etcd.url}\n'
                    f'prefix: /pytest/\n'
                    f'tls_cert: {pki}/control.pem\n'
                    f'tls_key: {pki}/control.key\n'
                    f'tls_ca: {pki}/ca.pem\n'
                    f'admin_token_file: {token_file}\n'
                    f'log_level: debug\n')
        mtls = Control(['--config', cfg, '--log-level', 'info'], root, 'mtls')
        ctls.append(mtls)
        cases = [
            (case_health_check_and_watch_follow_etcd, plain),
            (case_reflection_lists_and_describes, plain),
            (case_dynamic_client_calls_admin_with_json, plain),
            (case_unknown_method_is_unimplemented, plain),
            (case_plaintext_tokens, plain),
            (case_mtls_roles, mtls),
            (case_sigterm_drains, plain),
        ]
        for fn, ctl in cases:
            try:
                fn(ctl, etcd, root)
                print(f'ok   {fn.__name__}')
            except Exception:
                failed += 1
                print(f'FAIL {fn.__name__}')
                traceback.print_exc()
                print(ctl.stderr()[-3000:])
        # a clean drain exits 0 (under ASan: also no leak, no UB report)
        for c in ctls:
            rc = c.stop()
            if rc != 0:
                failed += 1
                print(f'FAIL exit status {rc}\n{c.stderr()[-3000:]}')
        print(f'{len(cases) - failed}/{len(cases)} passed')
        return 1 if failed else 0
    finally:
        for c in ctls:
            try:
                if c.proc.poll() is None:
                    c.proc.kill()
                    c.proc.wait()
            except Exception:
                traceback.print_exc()
        etcd.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
