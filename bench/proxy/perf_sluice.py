#!/usr/bin/python3
"""perf_sluice.py - sluice-node's own cost per request under the proxy
benchmark's load, from hardware counters: `perf stat` attached to the node
for the length of one wrk run (same backend, policy, pinning and rotating
Client-IDs as proxy_bench.py, which it reuses).

Prints, per scenario, `<scenario>_<metric>_per_req: V` for cycles,
instructions, task-clock (µs) and io_uring_enter calls, after a warm-up.
Cycles per request move far less with the machine's load than req/s or
process CPU time, so this is the tool for comparing two builds of the
request path; the benchmark with peers remains proxy_bench.py.

Usage: perf_sluice.py --sluice-node build/dataplane/node/sluice-node
PERF_RECORD=/path/prefix also records a call-graph profile per scenario
(`perf report -i PREFIX.<scenario>`). PERF_EVENTS=ev1,ev2 counts more
events per request (tracepoints such as io_uring:io_uring_submit_req).
Environment: BENCH_SECONDS (default 5), BENCH_RUNS (default 1),
BENCH_SCENARIOS (default plain,reject,tls), BENCH_CONNECTIONS (50).
Needs perf with access to the counters (root, or perf_event_paranoid <= 1);
otherwise it prints why and exits 77.
"""
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_bench as pb  # noqa: E402

EVENTS = ["cycles", "instructions", "task-clock", "context-switches",
          "syscalls:sys_enter_io_uring_enter"]


def perf_during_wrk(bench, c, seconds):
    pid = c.proc.popen.pid
    events = EVENTS + [e for e in os.environ.get("PERF_EVENTS", "").split(",") if e]
    argv = ["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", str(pid)]
    record = os.environ.get("PERF_RECORD")
    rec = None
    if record:  # a profile as well: perf record -g into PERF_RECORD.<scenario>
        rec = subprocess.Popen(
            ["perf", "record", "-q", "-g", "-o", "%s.%s" % (record, c.scenario),
             "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=pb._child_setup)
    perf = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pb._child_setup)
    try:
        res = bench.wrk(c, seconds)
    finally:
        perf.send_signal(2)
        _, err = perf.communicate(timeout=30)
        if rec:
            rec.send_signal(2)
            rec.wait(timeout=60)
    counts = {}
    for line in err.decode(errors="replace").splitlines():
        parts = line.split(",")
        if len(parts) < 3:
            continue
        try:
            v = float(parts[0])
        except ValueError:
            continue
        counts[parts[2]] = v
    return res, counts


def add_run(per, res, counts):
    """Adds one wrk run with perf counts to per (name -> list): every
    event per request (task-clock in µs), req/s and p99. False when the run
    has no counts or no requests."""
    reqs = res["requests"]
    if not counts or reqs <= 0:
        return False
    for ev, v in counts.items():
        name = re.sub(r"[^a-z0-9]+", "_", ev.split(":")[-1].lower()).strip("_")
        if ev == "task-clock":
            v = v * 1000.0  # ms -> µs
        per.setdefault(name, []).append(v / reqs)
    per.setdefault("p99_us", []).append(float(res["p99_us"]))
    per.setdefault("rps", []).append(reqs / max(res["duration_us"] / 1e6, 1e-9))
    return True


def main():
    args = pb.parse_args(runs=1, seconds=5)
    bench, rc = pb.prepared_bench(args, "perf_sluice", (
        "wrk", "nginx", "openssl", "taskset", "perf"))
    if not bench:
        return rc
    try:
        for scenario in args.scenarios:
            c = bench.start("sluice", scenario)
            if c.error:
                print("perf_sluice: sluice-node unavailable (%s)" % c.error)
                return 1
            for _ in range(16 if scenario == "reject" else 1):
                bench.wrk(c, args.warmup)
            per = {}
            for _ in range(args.runs):
                res, counts = perf_during_wrk(bench, c, args.seconds)
                if not add_run(per, res, counts):
                    print("perf_sluice: skipped: perf gave no counts (permissions?)")
                    return pb.SKIP
            for name, vals in sorted(per.items()):
                suffix = "" if name in ("rps", "p99_us") else "_per_req"
                print("%s_%s%s: %.3f" % (scenario, name, suffix, statistics.median(vals)))
            c.stop()
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
