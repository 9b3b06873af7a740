#!/usr/bin/python3
"""cold_start.py - the latency of a proxy's first seconds of traffic: each
round starts a fresh contender and puts proxy_bench.py's load on it at once
(no warm-up: 10,000 rotating Client-IDs, every one new to the proxy), then
runs the same load again on the now warm process.

Prints, per scenario and contender, the medians over the rounds:
`<scenario>_<contender>_cold_p99_us`, `..._cold_max_us`, and the same for
the warm run. A proxy that does first-time work in the request path (page
faults on a large table, say) shows it here and nowhere in proxy_bench.py,
whose warm-up hides it.

Usage: cold_start.py --sluice-node build/dataplane/node/sluice-node
Environment: BENCH_SECONDS (default 3), BENCH_RUNS (rounds, default 3),
BENCH_SCENARIOS (default plain,reject,tls), BENCH_CONTENDERS (default
nginx,haproxy,sluice; `direct` is left out, it has no proxy to start).
Exits 77 when wrk, nginx, haproxy, openssl or taskset is missing.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_bench as pb  # noqa: E402


def main():
    args = pb.parse_args(runs=3, seconds=3)
    bench, rc = pb.prepared_bench(args, "cold_start", (
        "wrk", "nginx", "haproxy", "openssl", "taskset"))
    if not bench:
        return rc
    names = [n for n in args.contenders if n != "direct"]
    try:
        for scenario in args.scenarios:
            got = {}
            for rnd in range(args.runs):
                for name in names:
                    c = bench.start(name, scenario)
                    if c.error:
                        print("# %s %s unavailable: %s" % (scenario, name, c.error))
                        continue
                    try:
                        for phase in ("cold", "warm"):
                            r = bench.wrk(c, args.seconds)
                            for k in ("p99_us", "max_us"):
                                got.setdefault((name, phase, k), []).append(r[k])
                            print("# %s %s round %d %s: %.0f req/s p99 %d us max %d us" % (
                                scenario, name, rnd + 1, phase,
                                r["requests"] / max(r["duration_us"] / 1e6, 1e-9),
                                r["p99_us"], r["max_us"]), flush=True)
                    finally:
                        c.stop()
            for (name, phase, k), vals in sorted(got.items()):
                print("%s_%s_%s_%s: %.0f" % (scenario, name, phase, k, statistics.median(vals)))
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
