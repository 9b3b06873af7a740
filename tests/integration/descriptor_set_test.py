#!/usr/bin/python3
"""The embedded descriptor set is complete: every sluice/v1 file, grpc health
and both reflection versions, with every service and method DESIGN.md names.

Uses Debian's python3-protobuf, an implementation independent of protobuf-c.
usage: descriptor_set_test.py PROTOSET DUMP_EXE"""
import subprocess
import sys

from google.protobuf import descriptor_pb2, descriptor_pool

protoset_path, dump_exe = sys.argv[1:3]
built = open(protoset_path, 'rb').read()
embedded = subprocess.run([dump_exe], check=True, stdout=subprocess.PIPE).stdout
assert embedded == built, 'embedded descriptor set differs from the built one'

fds = descriptor_pb2.FileDescriptorSet.FromString(embedded)
files = {f.name for f in fds.file}
for name in ['sluice/v1/policy.proto', 'sluice/v1/sync.proto', 'sluice/v1/admin.proto',
             'sluice/v1/fleet.proto', 'grpc/health/v1/health.proto',
             'grpc/reflection/v1/reflection.proto',
             'grpc/reflection/v1alpha/reflection.proto']:
    assert name in files, f'{name} missing from the descriptor set'

# Every import resolves inside the set: a pool accepts the files in order.
pool = descriptor_pool.DescriptorPool()
for f in fds.file:
    pool.Add(f)

want = {
    'sluice.v1.PolicySync': {'Sync'},
    'sluice.v1.PolicyAdmin': {'ListRulesets', 'GetRuleset', 'Validate', 'ApplyChanges',
                              'GetHistory', 'Diff', 'Rollback'},
    'sluice.v1.Fleet': {'ListNodes', 'GetNode', 'WatchNodes', 'WatchStats'},
    'grpc.health.v1.Health': {'Check', 'Watch'},
    'grpc.reflection.v1.ServerReflection': {'ServerReflectionInfo'},
    'grpc.reflection.v1alpha.ServerReflection': {'ServerReflectionInfo'},
}
for svc, methods in want.items():
    d = pool.FindServiceByName(svc)
    got = {m.name for m in d.methods}
    assert got == methods, f'{svc}: methods {sorted(got)} != {sorted(methods)}'

sync = pool.FindServiceByName('sluice.v1.PolicySync').methods_by_name['Sync']
assert sync.client_streaming and sync.server_streaming, 'Sync must be bidirectional'
for m in ('WatchNodes', 'WatchStats'):
    md = pool.FindServiceByName('sluice.v1.Fleet').methods_by_name[m]
    assert md.server_streaming and not md.client_streaming, f'{m} must be a server stream'

# The policy model has every kind DESIGN.md lists.
res = pool.FindMessageTypeByName('sluice.v1.Resource')
assert [f.name for f in res.oneofs_by_name['kind'].fields] == [
    'client', 'rate_limit', 'access_list', 'route', 'upstream', 'settings']
delta = pool.FindMessageTypeByName('sluice.v1.Delta')
assert {f.name for f in delta.fields} == {'ruleset', 'from_version', 'to_version', 'upserts',
                                          'removes'}
print(f'descriptor set ok: {len(fds.file)} files, {len(embedded)} bytes')
