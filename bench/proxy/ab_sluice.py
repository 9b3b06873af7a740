#!/usr/bin/python3
"""ab_sluice.py - two builds (or two settings) of sluice-node under the
proxy benchmark's load, measured in alternation: A B A B ... within one
backend, each node started once per scenario, `perf stat` attached for each
wrk run (task-clock µs and io_uring_enter calls per request, as
perf_sluice.py). On a shared, noisy machine the per-round ratio B/A is far
steadier than either figure alone: both runs of a round see the same
neighbours. Prints per scenario the medians and the median of the per-round
ratios (< 1: B spends less CPU per request).

Usage: ab_sluice.py A_NODE[::VAR=VAL,...] B_NODE[::VAR=VAL,...]
  e.g. ab_sluice.py old/sluice-node new/sluice-node
       ab_sluice.py new/sluice-node::SLUICE_PROXY_RECV_BUFS=0 new/sluice-node
Environment: BENCH_ROUNDS (default 8), BENCH_SECONDS (default 3),
BENCH_SCENARIOS (default plain,reject,tls), BENCH_CONNECTIONS (50).
Exits 77 when perf, wrk, nginx, openssl or taskset is missing.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perf_sluice as ps  # noqa: E402
import proxy_bench as pb  # noqa: E402


def parse_spec(spec):
    path, _, envs = spec.partition("::")
    env = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
    return os.path.abspath(path), env


def start(bench, scenario, path, env):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    bench.args.sluice_node = path
    try:
        return bench.start("sluice", scenario)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    specs = [parse_spec(a) for a in sys.argv[1:]]
    sys.argv = sys.argv[:1]
    args = pb.parse_args(seconds=3)
    rounds = pb.env_int("BENCH_ROUNDS", 8, 1)
    bench, rc = pb.prepared_bench(args, "ab_sluice", (
        "wrk", "nginx", "openssl", "taskset", "perf"))
    if not bench:
        return rc
    try:
        for scenario in args.scenarios:
            cs = [start(bench, scenario, p, e) for p, e in specs]
            for c in cs:
                if c.error:
                    print("ab_sluice: sluice-node unavailable (%s)" % c.error)
                    return 1
                for _ in range(16 if scenario == "reject" else 1):
                    bench.wrk(c, args.warmup)
            per = [{}, {}]
            for r in range(rounds):
                order = (0, 1) if r % 2 == 0 else (1, 0)
                for i in order:
                    res, counts = ps.perf_during_wrk(bench, cs[i], args.seconds)
                    if not ps.add_run(per[i], res, counts):
                        print("ab_sluice: skipped: perf gave no counts")
                        return pb.SKIP
                print("# %s round %d: A %.2f B %.2f us/req" % (
                    scenario, r + 1, per[0]["task_clock"][-1], per[1]["task_clock"][-1]),
                    flush=True)
            for name in sorted(per[0]):
                a, b = per[0][name], per[1][name]
                ratios = [y / x for x, y in zip(a, b) if x > 0]
                print("%s_%s: A %.3f B %.3f ratio_B_over_A %.3f (rounds %d)" % (
                    scenario, name, statistics.median(a), statistics.median(b),
                    statistics.median(ratios) if ratios else float("nan"), len(ratios)),
                    flush=True)
            for c in cs:
                c.stop()
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
