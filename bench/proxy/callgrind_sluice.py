#!/usr/bin/python3
"""callgrind_sluice.py - sluice-node's user-space instructions per request
under the proxy benchmark's load (same backend, policy and rotating
Client-IDs as proxy_bench.py, which it reuses), counted by valgrind's
callgrind in the worker thread only.

Instruction counts do not drift with the machine's load the way CPU time
does, so this is the tool for comparing two builds of the request path on a
busy machine; the kernel's share (most of a request) is not in it, and the
peer ratios come from proxy_bench.py only.

Usage: callgrind_sluice.py --sluice-node build/dataplane/node/sluice-node
Prints, per scenario, `<scenario>_user_instructions_per_req: N` and the
requests counted; CALLGRIND_OUT=prefix keeps the profile of each scenario
(`callgrind_annotate --inclusive=yes PREFIX.<scenario>` shows where they go).
Environment: BENCH_SECONDS (default 10), BENCH_SCENARIOS (plain,reject,tls),
BENCH_CONNECTIONS (10: the node runs ~50x slower under callgrind).
Exits 77 when valgrind, wrk, nginx, openssl or taskset is missing.
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_bench as pb  # noqa: E402


def totals(out_file):
    """(instructions in the worker, requests it parsed), read from the
    callgrind file itself: its totals line, and the calls of
    http_parse_request, once per request head (a head split over receives
    would add a call; this load sends each head in one segment)."""
    total = calls = 0
    names = {}
    target = None
    with open(out_file, errors="replace") as f:
        for line in f:
            if line.startswith("totals:"):
                total = int(line.split()[1])
            elif line.startswith(("fn=(", "cfn=(")):
                # "cfn=(12) name" names id 12 the first time, "cfn=(12)" after.
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                target = line.startswith("cfn=") and \
                    names.get(m.group(1)) == "http_parse_request"
            elif line.startswith("calls=") and target:
                calls += int(line[6:].split()[0])
                target = None
    return total, calls


def run_scenario(bench, scenario, seconds, keep):
    out = keep + "." + scenario if keep else os.path.join(bench.dir, "cg." + scenario)
    # Ready when it answers: under valgrind 3.19 the node serves but never
    # prints its ready line. The worker blocks in io_uring_enter, which
    # valgrind does not treat as a blocking syscall, so it keeps valgrind's
    # thread lock there and the main thread, waiting for the workers to
    # report ready, never runs (the same hang as liburing issue 657; with
    # --fair-sched=yes it gets through).
    c = bench.start("sluice", scenario, wrapper=[
        "valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
        "--collect-atstart=no", "--toggle-collect=proxy_worker_main"])
    if c.error:
        return "sluice-node under callgrind: %s" % c.error
    if scenario == "reject":
        # Spend every key's one request a minute first (as proxy_bench
        # does), then count from zero.
        for _ in range(3):
            bench.wrk(c, 2)
        subprocess.run(["callgrind_control", "-z", str(c.proc.popen.pid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    bench.wrk(c, seconds)
    # callgrind writes its file at exit; ask for a dump instead of relying
    # on a clean exit under valgrind.
    subprocess.run(["callgrind_control", "-d", str(c.proc.popen.pid)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    time.sleep(1)
    c.proc.popen.kill()
    c.proc.popen.wait(timeout=30)
    dumps = sorted(f for f in os.listdir(os.path.dirname(out) or ".")
                   if f.startswith(os.path.basename(out) + "."))
    if not dumps:
        return "callgrind wrote no dump"
    total, calls = totals(os.path.join(os.path.dirname(out) or ".", dumps[-1]))
    if not calls:
        return "no request counted in the profile"
    print("%s_user_instructions_per_req: %d" % (scenario, total // calls))
    print("%s_requests_counted: %d" % (scenario, calls))
    return None


def main():
    args = pb.parse_args()
    args.connections = pb.env_int("BENCH_CONNECTIONS", 10, 1)
    seconds = pb.env_int("BENCH_SECONDS", 10, 1)
    keep = os.environ.get("CALLGRIND_OUT")
    pb.READY_TIMEOUT_S = 120.0  # valgrind starts the node far more slowly
    bench, rc = pb.prepared_bench(args, "callgrind_sluice", (
        "valgrind", "callgrind_annotate", "callgrind_control", "wrk", "nginx", "openssl",
        "taskset"))
    if not bench:
        return rc
    try:
        for scenario in args.scenarios:
            err = run_scenario(bench, scenario, seconds, keep)
            if err:
                print("callgrind_sluice: %s: %s" % (scenario, err), file=sys.stderr)
                return 1
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
