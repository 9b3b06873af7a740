#!/usr/bin/python3
"""sluicectl - a grpcurl-style client for sluice-control, on Debian's
python3-grpcio (Debian 12 packages no grpcurl).

Like grpcurl it learns every service and message from the server's
reflection service and speaks proto3 JSON; only the reflection protocol's
own messages are read from the build's descriptor set to bootstrap.

    sluicectl.py [-plaintext | -cacert CA [-cert C -key K]] [-H 'k: v']...
                 [-d JSON | -d @] [-max-time S] ADDR list [SERVICE]
    sluicectl.py ... ADDR SERVICE/METHOD

`-d @` reads the request from stdin. Unary replies are printed as one JSON
object; server streams print one object per message until the stream ends,
-max-time passes or the user interrupts.
"""
import argparse
import json
import os
import queue
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PROTOSET = os.path.join(ROOT, 'build', 'proto', 'sluice.protoset')


def fail(msg):
    print(f'sluicectl: {msg}', file=sys.stderr)
    sys.exit(1)


class Reflection:
    """One reflection stream; the server answers requests in order."""

    def __init__(self, channel, protoset, metadata):
        pool = descriptor_pool.DescriptorPool()
        fds = descriptor_pb2.FileDescriptorSet.FromString(open(protoset, 'rb').read())
        for f in fds.file:
            pool.Add(f)
        factory = message_factory.MessageFactory(pool)
        self.req_cls = factory.GetPrototype(
            pool.FindMessageTypeByName('grpc.reflection.v1.ServerReflectionRequest'))
        resp_cls = factory.GetPrototype(
            pool.FindMessageTypeByName('grpc.reflection.v1.ServerReflectionResponse'))
        self.q = queue.Queue()
        call = channel.stream_stream('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo',
                                     request_serializer=self.req_cls.SerializeToString,
                                     response_deserializer=resp_cls.FromString)
        self.replies = call(iter(self.q.get, None), metadata=metadata, timeout=30)

    def ask(self, **kw):
        self.q.put(self.req_cls(host='', **kw))
        r = next(self.replies)
        if r.WhichOneof('message_response') == 'error_response':
            fail(f'reflection: {r.error_response.error_message}')
        return r

    def close(self):
        self.q.put(None)


def load_pool(refl, symbol):
    pool = descriptor_pool.DescriptorPool()
    r = refl.ask(file_containing_symbol=symbol)
    protos = {p.name: p for p in (descriptor_pb2.FileDescriptorProto.FromString(b)
                                  for b in r.file_descriptor_response.file_descriptor_proto)}
    added = set()

    def add(name):
        if name in added:
            return
        if name not in protos:
            fail(f'reflection did not send {name}')
        for dep in protos[name].dependency:
            add(dep)
        pool.Add(protos[name])
        added.add(name)
    for name in protos:
        add(name)
    return pool


def main():
    ap = argparse.ArgumentParser(prog='sluicectl.py', description=__doc__.split('\n')[0])
    ap.add_argument('-plaintext', action='store_true')
    ap.add_argument('-cacert')
    ap.add_argument('-cert')
    ap.add_argument('-key')
    ap.add_argument('-H', action='append', default=[], dest='headers')
    ap.add_argument('-d', dest='data', default='{}')
    ap.add_argument('-max-time', dest='max_time', type=float, default=None)
    ap.add_argument('-protoset', default=DEFAULT_PROTOSET)
    ap.add_argument('addr')
    ap.add_argument('what', nargs='+')
    a = ap.parse_args()

    if a.plaintext:
        channel = grpc.insecure_channel(a.addr)
    else:
        read = lambda p: open(p, 'rb').read() if p else None
        creds = grpc.ssl_channel_credentials(read(a.cacert), read(a.key), read(a.cert))
        channel = grpc.secure_channel(a.addr, creds)
    metadata = []
    for h in a.headers:
        k, sep, v = h.partition(':')
        if not sep:
            fail(f'-H {h!r}: expected "name: value"')
        metadata.append((k.strip().lower(), v.strip()))

    refl = Reflection(channel, a.protoset, metadata)
    try:
        if a.what[0] == 'list':
            if len(a.what) == 1:
                r = refl.ask(list_services='*')
                print('\n'.join(sorted(s.name for s in r.list_services_response.service)))
            else:
                pool = load_pool(refl, a.what[1])
                for m in pool.FindServiceByName(a.what[1]).methods:
                    print(f'{a.what[1]}.{m.name}')
            return 0
        service, _, method = a.what[0].rpartition('/' if '/' in a.what[0] else '.')
        if not service:
            fail(f'{a.what[0]}: expected SERVICE/METHOD')
        pool = load_pool(refl, service)
    finally:
        refl.close()

    m = pool.FindServiceByName(service).methods_by_name.get(method)
    if m is None:
        fail(f'{service} has no method {method}')
    factory = message_factory.MessageFactory(pool)
    req_cls = factory.GetPrototype(m.input_type)
    resp_cls = factory.GetPrototype(m.output_type)
    body = sys.stdin.read() if a.data == '@' else a.data
    try:
        req = json_format.Parse(body, req_cls())
    except json_format.ParseError as e:
        fail(f'request: {e}')
    show = lambda r: print(json.dumps(json_format.MessageToDict(r), indent=2), flush=True)
    kind = (m.client_streaming, m.server_streaming)
    try:
        if kind == (False, False):
            call = channel.unary_unary(f'/{service}/{method}', request_serializer=req_cls.SerializeToString,
                                       response_deserializer=resp_cls.FromString)
            show(call(req, metadata=metadata, timeout=a.max_time or 30))
        elif kind == (False, True):
            call = channel.unary_stream(f'/{service}/{method}', request_serializer=req_cls.SerializeToString,
                                        response_deserializer=resp_cls.FromString)
            for r in call(req, metadata=metadata, timeout=a.max_time):
                show(r)
        else:
            fail(f'{service}/{method}: client streams are not supported here')
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and kind[1]:
            return 0  # -max-time ended a watch, as intended
        print(f'ERROR:\n  Code: {e.code().name}\n  Message: {e.details()}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
