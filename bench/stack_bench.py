#!/usr/bin/env python3
"""End-to-end benchmark of the whole stack (release builds), printing figures, asserting nothing.

    cargo build --release --workspace && python3 bench/stack_bench.py

1. InvokeEndpoint direct (aws-sdk-rust, SigV4) vs POST /v1/predict through the gateway (which
   adds the predictor hop and durable interaction logging), at fixed concurrency.
2. The same two at a fixed 1,000 requests/s: what the gateway path adds at p50 and p99.
3. The logger alone: durable (fsynced) Log acknowledgements per second; and its spool in a
   folder of its own (LOGGER_SPOOL_DIR) against one under a root shared with other loggers
   (LOGGER_SPOOL_ROOT, what compose and the AWS template use), interleaved rounds.
4. Peak RSS (VmHWM) of every service afterwards.
After every run through the logger it prints how many interactions were still unshipped and
waits until they have shipped: a run's figures cannot hide shipping work left for later.
At 1,000 requests/s it also prints the CPU time each process spends per request, and how
many of the machine's cores that keeps busy.
The load generator (crates/loadgen) shares the machine's cores with the services.
"""
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from stack import Service, Stack  # noqa: E402

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
ROW = "63,40,29.01,0,4,0,2,1"
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))


def loadgen(env, *args):
    out = subprocess.run([str(TARGET / "loadgen"), *args, "--seconds", str(SECONDS)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(stack, run):
    """Runs `run` (a loadgen call) and returns its result with the CPU milliseconds each
    service and the load generator spent per answered request."""
    before = {s.name: cpu_seconds(s.proc.pid) for s in stack.services}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    requests = r["rps"] * SECONDS
    cost = {s.name: (cpu_seconds(s.proc.pid) - before[s.name]) * 1000 / requests for s in stack.services}
    cost["loadgen"] = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) * 1000 / requests
    return r, cost


def line(name, r):
    print(f"  {name:<44} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:>6.2f} ms  p99 {r['p99_ms']:>6.2f} ms  errors {r['errors']}")


def samples(url):
    """(series, value) of every sample at a Prometheus /metrics URL."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return [l.rsplit(" ", 1) for l in text.splitlines() if l and not l.startswith("#")]


def spool_depth(logger):
    return sum(float(v) for series, v in samples(f"http://{logger.addrs['admin']}/metrics")
               if series.startswith("logger_spool_depth"))


def drain(stack, logger=None):
    """Prints how many interactions the run left unshipped and waits for the logger to ship
    them, so that no run's figures hide shipping work left for later, or inherit it."""
    logger = logger or stack.logger
    left, start = spool_depth(logger), time.time()
    while spool_depth(logger) > 0 and time.time() - start < 120:
        time.sleep(0.1)
    print(f"  left unshipped at the end: {left:.0f} (shipped {time.time() - start:.1f} s later)")


def spool_placement(stack, env, data, rounds=3):
    """The stack's logger (its own spool folder) and a second logger whose spool lives under a
    shared root, loaded in turn: durable acks per second and p50, as ranges."""
    shared = Service("interaction-logger", [str(TARGET / "interaction-logger"), "--listen", "127.0.0.1:0",
                                            "--admin-listen", "127.0.0.1:0"],
                     dict(env, LOGGER_SPOOL_ROOT=os.path.join(data, "spools")), subprocess.DEVNULL)
    results = {"own folder (LOGGER_SPOOL_DIR)": [], "shared root (LOGGER_SPOOL_ROOT)": []}
    try:
        for _ in range(rounds):
            for (name, runs), logger in zip(results.items(), (stack.logger, shared)):
                r = loadgen(env, "log", "--url", "http://" + logger.addrs["grpc"], "--concurrency", "256")
                line(name, r)
                drain(stack, logger)
                runs.append(r)
    finally:
        shared.stop()
    for name, runs in results.items():
        rps, p50 = [r["rps"] for r in runs], [r["p50_ms"] for r in runs]
        print(f"  {name:<44} {min(rps):>8.0f}-{max(rps):.0f} acks/s, p50 {min(p50):.2f}-{max(p50):.2f} ms")


def histogram_totals(url):
    """(sum, count) of every histogram series at a /metrics URL, by series."""
    totals = {}
    for series, value in samples(url):
        name, brace, labels = series.partition("{")
        for part in ("_sum", "_count"):
            if name.endswith(part):
                key = name[: -len(part)] + brace + labels
                totals.setdefault(key, [0.0, 0.0])[part == "_count"] = float(value)
    return totals


def hop_means(stack, run):
    """Runs `run` and returns, for each timed hop, its mean milliseconds during the run."""
    urls = [stack.url + "/metrics", f"http://{stack.predictor.addrs['admin']}/metrics"]
    before = {k: v for u in urls for k, v in histogram_totals(u).items()}
    result = run()
    after = {k: v for u in urls for k, v in histogram_totals(u).items()}
    means = {}
    for series, (total, count) in after.items():
        t0, c0 = before.get(series, (0.0, 0.0))
        if count > c0:
            means[series] = (total - t0) / (count - c0) * 1000
    return result, means


def print_cost(cost, rate=None):
    services = sum(v for k, v in cost.items() if k != "loadgen")
    busy = f": at 1,000 req/s they keep {(services + cost['loadgen']) * rate / 1000:.2f} of the {os.cpu_count()} cores busy" if rate else ""
    print(f"  CPU per request through the gateway: {services:.3f} ms in the services ("
          + ", ".join(f"{k} {v:.3f}" for k, v in cost.items() if k not in ("loadgen", "registry-watcher"))
          + f"), {cost['loadgen']:.3f} ms in the load generator{busy}")


def main():
    with tempfile.TemporaryDirectory() as data:
        os.environ["LOG_FORMAT"] = "json"
        os.environ["RUST_LOG"] = "warn"
        stack = Stack(str(TARGET), data, poll_ms=5000)
        try:
            env = stack.aws_env
            body = json.dumps({"instances": [[float(v) for v in ROW.split(",")]]})
            gateway = ["http", "--url", stack.url + "/v1/predict", "--body", body]
            direct = ["invoke", "--endpoint-name", "my-mlops-prod-endpoint", "--body", ROW]
            print(f"machine: {os.cpu_count()} cores, shared by the load generator and all services; {SECONDS:.0f} s per run")
            print("\nfixed concurrency (64):")
            line("InvokeEndpoint direct (sagemaker-local)", loadgen(env, *direct, "--concurrency", "64"))
            g, cost = cpu_per_request(stack, lambda: loadgen(env, *gateway, "--concurrency", "64"))
            line("gateway end to end (predict + durable log)", g)
            print_cost(cost)
            drain(stack)
            print("\nfixed rate, 1,000 requests/s:")
            d = loadgen(env, *direct, "--rate", "1000")
            (g, cost), hops = hop_means(stack, lambda: cpu_per_request(stack, lambda: loadgen(env, *gateway, "--rate", "1000")))
            line("InvokeEndpoint direct", d)
            line("gateway end to end", g)
            print(f"  gateway path adds {g['p50_ms'] - d['p50_ms']:+.2f} ms at p50, {g['p99_ms'] - d['p99_ms']:+.2f} ms at p99")
            print_cost(cost, rate=1000)
            mean = lambda key: next((v for k, v in hops.items() if k.startswith(key)), float("nan"))
            total, invoke = mean("gateway_predict_seconds"), mean("predictor_endpoint_seconds")
            predict, log = mean('gateway_upstream_seconds{call="predict"'), mean('gateway_upstream_seconds{call="log"')
            print(f"  where the gateway's time goes (means): {total:.2f} ms in all = predictor call {predict:.2f} ms"
                  f" (its InvokeEndpoint {invoke:.2f} ms) + logger call {log:.2f} ms + the gateway's own work")
            drain(stack)
            print("\nlogger alone (one interaction per Log, fsynced before the ack):")
            r = loadgen(env, "log", "--url", "http://" + stack.logger.addrs["grpc"], "--concurrency", "256")
            line("InteractionLogger/Log", r)
            drain(stack)
            print("\nlogger spool placement, interleaved (both on this machine's local disk):")
            spool_placement(stack, env, data)
            print("\npeak RSS (VmHWM):")
            for svc in stack.services:
                print(f"  {svc.name:<20} {peak_rss_mb(svc.proc.pid):6.1f} MB")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
