#!/usr/bin/env python3
"""End-to-end benchmark of the whole stack (release builds), printing figures, asserting nothing.

    cargo build --release --workspace && pip install -r bench/requirements.txt && python3 bench/stack_bench.py

Everything runs on this machine at once, the load generator (tools/loadgen) included, against
one sagemaker-local. Two copies of the inference services run side by side: one with
batching on (the defaults: rows of concurrent predictions share InvokeEndpoint calls,
interactions of concurrent requests share Log calls, the logger ships by BatchWriteRecord),
one with batching off (one InvokeEndpoint per prediction, one Log call per request, one
PutRecord per interaction). Next to them, the Flask reference app (bench/flask_reference:
gunicorn 2 workers x 8 threads, boto3, InvokeEndpoint then PutRecord then the answer). The
machine is noisy, so every comparison runs interleaved, BENCH_ROUNDS rounds (default 3), and
prints ranges.

1. 64 concurrent clients: InvokeEndpoint direct, the gateway with batching on and off, the
   Flask reference. For the gateway: CPU per request in each service, rows per
   InvokeEndpoint, requests per Log call, entries per BatchWriteRecord, and the logger's
   unshipped backlog during the run (sampled each second) and after it (how long it took to
   ship). No run's figures hide shipping work left for later: each waits for the backlog.
2. 1,000 requests/s: what the gateway path adds at p50 and p99 over InvokeEndpoint direct in
   the same round, batching on and off; CPU per request; where the gateway's time goes.
3. One request at a time: p50 with batching on and off.
4. The logger alone: durable (fsynced) Log acknowledgements per second.
5. Sustained: BENCH_SUSTAINED_SECONDS (default 60) at 64 concurrent through the gateway
   (batching on): intake and the unshipped backlog every 5 s, and after.
6. Peak RSS (VmHWM) of every process.
7. The Open Inference Protocol beside /v1/predict, through the same gateway (batching on), at
   64 concurrent and at 1,000 requests/s: JSON and binary-tensor REST, and gRPC ModelInfer
   (raw FP32 contents, as tritonclient sends); CPU per request in each service.
8. Tracing at 1,000 requests/s: the services with traces off (no OTEL_* variables) against a
   copy exporting by OTLP to a receiver in this process at 10% sampling; CPU per request per
   service, interleaved.
9. Runtime shape: the same services with one tokio worker thread each (TOKIO_WORKER_THREADS=1)
   against the default (one per core), at 1,000 requests/s and at 64 concurrent, interleaved.
10. The two shapes: the one-process `front-door` against the microservices, at 1,000 requests/s
    and at 64 concurrent, interleaved, beside InvokeEndpoint direct (and Flask at 64): added
    latency, throughput, CPU per request, peak RSS.
11. HTTPS: a second sagemaker-local serving TLS (scripts/dev-ca's certificate, the services and
    loadgen trusting its CA by AWS_CA_BUNDLE) beside the plain-HTTP one, at 1,000 requests/s:
    InvokeEndpoint direct and the gateway path (the one-process shape, which leaves the two
    cores room enough for latency to mean something) on each, interleaved; the TLS handshakes
    sagemaker-local counted during each run (connections reused, or one per request).
12. Against another build (only with BENCH_BASELINE_DIR, the release directory of another
    build, e.g. an older commit's): its gateway, predictor and logger beside this build's, on
    the same sagemaker-local and watcher, at 64 concurrent and at 1,000 requests/s, each first
    in every other round; CPU per request and its change in the same round.

BENCH_ONLY (e.g. "7,8") runs only those sections; BENCH_TRACE_RATIO (default 0.1) is section
8's sampling ratio (0: every request unsampled, the cost of tracing's unsampled path alone).
"""
import hashlib
import http.server
import json
import os
import pathlib
import re
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from stack import Stack, metric  # noqa: E402

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
ROW = "63,40,29.01,0,4,0,2,1"
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SUSTAINED = float(os.environ.get("BENCH_SUSTAINED_SECONDS", "60"))
TRACE_RATIO = os.environ.get("BENCH_TRACE_RATIO", "0.1")
BASELINE = os.environ.get("BENCH_BASELINE_DIR")
ONLY = {x.strip() for x in os.environ.get("BENCH_ONLY", "").split(",") if x.strip()}
MODEL = "my-mlops-prod-endpoint"  # the OIP model's name is the endpoint's


def want(section):
    return not ONLY or section in ONLY


def loadgen(env, *args, seconds=None):
    out = subprocess.run([str(TARGET / "loadgen"), *args, "--seconds", str(seconds or SECONDS)], env=env,
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


def samples(url):
    """(series, value) of every sample at a Prometheus /metrics URL."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return [l.rsplit(" ", 1) for l in text.splitlines() if l and not l.startswith("#")]


class Services:
    """One copy of the inference services (logger, predictor, gateway) on the stack's
    sagemaker-local and registry-watcher; `batching` False turns every batching off."""

    def __init__(self, stack, data, name, batching, extra_env=None, headers=(), shape="microservices"):
        env = dict(stack.aws_env, **(extra_env or {}))
        self.headers = list(headers)
        if not batching:
            env.update(PREDICTOR_BATCHING="false", GATEWAY_LOG_CONCURRENCY="0", LOGGER_SHIP_BATCH_WRITE="false")
        self.name, self.env = name, env
        # Drift only when the copy is given the watcher (evidence_bench's "drift" copies).
        self.logger, self.predictor, self.gateway = stack.start_front(
            os.path.join(data, name + "-spool"), env=env, drift="REGISTRY_WATCHER_URL" in env or shape != "microservices",
            shape=shape)
        self.url = "http://" + self.gateway.addrs["http"]
        # one process in the one-process shape (front-door plays all three)
        self.processes = list(dict.fromkeys([self.gateway, self.predictor, self.logger]))
        stack.wait_ready(self.url + "/readyz")

    def admin(self, svc):
        return f"http://{svc.addrs['admin']}/metrics"

    def spool_depth(self):
        return metric(self.admin(self.logger), "logger_spool_depth")

    def drain(self, timeout=300):
        """Waits until the logger has shipped everything; returns (left at the start, seconds)."""
        left, start = self.spool_depth(), time.time()
        while self.spool_depth() > 0 and time.time() - start < timeout:
            time.sleep(0.1)
        return left, time.time() - start

    def counters(self):
        """The batching figures' raw counters."""
        p, l, g = self.admin(self.predictor), self.admin(self.logger), self.url + "/metrics"
        return {
            "rows": metric(p, "predictor_invocation_rows_sum"), "invocations": metric(p, "predictor_invocation_rows_count"),
            "log_requests": metric(g, "gateway_log_call_requests_sum"), "log_calls": metric(g, "gateway_upstream_seconds_count{call=\"log\""),
            "entries": metric(l, "logger_batch_write_entries_sum"), "batch_writes": metric(l, "logger_batch_write_entries_count"),
            "puts": metric(l, "logger_ship_calls_total{operation=\"PutRecord\""),
        }

    def stop(self):
        for svc in self.processes:
            svc.stop()


class Flask:
    """The Flask reference app under gunicorn on 127.0.0.1:0."""

    def __init__(self, env):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "2", "--threads", "8", "--worker-class", "gthread",
             "--bind", "127.0.0.1:0", "--chdir", str(ROOT / "bench" / "flask_reference"), "--log-level", "info",
             "app:app"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        for line in self.proc.stderr:
            m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = m.group(1)
                break
        if port is None:
            raise RuntimeError(f"gunicorn did not start (exit code {self.proc.poll()}); pip install -r bench/requirements.txt")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        # One real prediction, or a loud failure (a worker that cannot boot is retried forever).
        request = urllib.request.Request(self.url + "/v1/predict", headers={"content-type": "application/json"},
                                         data=json.dumps({"instances": [[float(v) for v in ROW.split(",")]]}).encode())
        for _ in range(100):
            try:
                json.loads(urllib.request.urlopen(request, timeout=5).read())["predictions"][0]["score"]
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("the Flask reference app does not answer predictions")

    def workers(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def under_load(pids, sample, run):
    """Runs `run` (a loadgen call) and returns (its result, CPU seconds per pid, samples of
    `sample()` taken each second meanwhile)."""
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    seen, done = [], threading.Event()

    def watch():
        while not done.wait(1.0):
            seen.append(sample())
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        r = run()
    finally:
        done.set()
        watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
    cpu["loadgen"] = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return r, cpu, seen


def fmt(r):
    return f"{r['rps']:>7.0f} req/s  p50 {r['p50_ms']:>6.2f} ms  p99 {r['p99_ms']:>6.2f} ms  errors {r['errors']}"


def span(values, f="{:.0f}"):
    lo, hi = f.format(min(values)), f.format(max(values))
    return lo if lo == hi else f"{lo} to {hi}" if min(values) < 0 or "+" in f else f"{lo}-{hi}"


def histogram_totals(urls):
    """(sum, count) of every histogram series at the /metrics URLs, by series."""
    totals = {}
    for url in urls:
        for series, value in samples(url):
            name, brace, labels = series.partition("{")
            for part in ("_sum", "_count"):
                if name.endswith(part):
                    key = name[: -len(part)] + brace + labels
                    totals.setdefault(key, [0.0, 0.0])[part == "_count"] = float(value)
    return totals


def front_door(svc, data):
    """loadgen targets for one row through `svc`'s gateway, by API."""
    row = [float(v) for v in ROW.split(",")]
    infer = f"{svc.url}/v2/models/{MODEL}/infer"
    tensor = {"name": "features", "shape": [1, len(row)], "datatype": "FP32"}
    header = json.dumps({"inputs": [dict(tensor, parameters={"binary_data_size": 4 * len(row)})],
                         "outputs": [{"name": "probability", "parameters": {"binary_data": True}}]}).encode()
    binary = os.path.join(data, "oip-binary-request")
    pathlib.Path(binary).write_bytes(header + struct.pack(f"<{len(row)}f", *row))
    return {
        "/v1/predict JSON": ["http", "--url", svc.url + "/v1/predict", "--body", json.dumps({"instances": [row]})],
        "/v2 infer JSON": ["http", "--url", infer, "--body", json.dumps({"inputs": [dict(tensor, data=[row])]})],
        "/v2 infer binary": ["http", "--url", infer, "--body-file", binary, "--content-type", "application/octet-stream",
                             "--header", f"inference-header-content-length: {len(header)}"],
        "gRPC ModelInfer": ["oip-grpc", "--url", "http://" + svc.gateway.addrs["grpc"], "--model", MODEL, "--row", ROW],
    }


class OtlpSink:
    """An OTLP/HTTP traces receiver on 127.0.0.1:0 that counts what it is sent (and keeps none)."""

    def __init__(self):
        sink = self
        self.requests = self.bytes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                self.rfile.read(n)
                sink.requests, sink.bytes = sink.requests + 1, sink.bytes + n
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


SERVICES = ("gateway", "predictor", "interaction-logger")


def per_service(r):
    """A run's CPU ms per request in each inference service, as one line's part."""
    return ", ".join(f"{k} {r['cpu'][k]:.3f}" for k in SERVICES)


def gateway_run(svc, stack, args, seconds=None, request=None):
    """One loadgen run through `svc`'s gateway (`request`: a loadgen target, by default one
    row to /v1/predict): the result, CPU ms per request by process, the batching figures, the
    mean time of each hop, and the backlog during and after."""
    urls = [svc.url + "/metrics", svc.admin(svc.predictor)]
    h0 = histogram_totals(urls)
    c0 = svc.counters()
    pids = {p.name: p.proc.pid for p in svc.processes}
    pids["sagemaker-local"] = stack.sagemaker.proc.pid
    body = json.dumps({"instances": [[float(v) for v in ROW.split(",")]]})
    header_args = [a for h in svc.headers for a in ("--header", h)]
    request = request or ["http", "--url", svc.url + "/v1/predict", "--body", body, *header_args]
    r, cpu, backlog = under_load(pids, svc.spool_depth, lambda: loadgen(svc.env, *request, *args, seconds=seconds))
    h1 = histogram_totals(urls)
    left, took = svc.drain()
    c1 = svc.counters()
    hops = {}
    for series, (total, count) in h1.items():
        t0, n0 = h0.get(series, (0.0, 0.0))
        if count > n0:
            hops[series] = (total - t0) / (count - n0) * 1000
    mean = lambda key: next((v for k, v in hops.items() if k.startswith(key)), float("nan"))
    r["hops"] = (mean("gateway_predict_seconds"), mean('gateway_upstream_seconds{call="predict"'),
                 mean("predictor_endpoint_seconds"), mean('gateway_upstream_seconds{call="log"'))
    d = {k: c1[k] - c0[k] for k in c0}
    n = max(r["rps"] * (seconds or SECONDS), 1)
    r["cpu"] = {k: v * 1000 / n for k, v in cpu.items()}
    r["cpu_services"] = sum(v for k, v in r["cpu"].items() if k != "loadgen")
    r["rows_per_invoke"] = d["rows"] / max(d["invocations"], 1)
    r["requests_per_log"] = d["log_requests"] / max(d["log_calls"], 1) if d["log_requests"] else 1.0
    r["entries_per_write"] = d["entries"] / d["batch_writes"] if d["batch_writes"] else (1.0 if d["puts"] else 0.0)
    r["backlog_max"] = max(backlog, default=0)
    r["backlog"] = backlog
    r["left"], r["shipped_after"] = left, took
    return r


def flask_run(flask, env, args):
    pids = {"gunicorn": flask.proc.pid, **{f"worker{n}": p for n, p in enumerate(flask.workers())}}
    body = json.dumps({"instances": [[float(v) for v in ROW.split(",")]]})
    r, cpu, _ = under_load(pids, lambda: 0, lambda: loadgen(env, "http", "--url", flask.url + "/v1/predict",
                                                             "--body", body, *args))
    n = max(r["rps"] * SECONDS, 1)
    r["cpu_services"] = sum(v for k, v in cpu.items() if k != "loadgen") * 1000 / n
    return r


def print_gateway(name, r):
    print(f"  {name:<30} {fmt(r)}")
    parts = ", ".join(f"{k} {v:.3f}" for k, v in r["cpu"].items() if k != "loadgen")
    print(f"  {'':<30} CPU/request {r['cpu_services']:.3f} ms ({parts}; loadgen {r['cpu']['loadgen']:.3f})")
    print(f"  {'':<30} rows/InvokeEndpoint {r['rows_per_invoke']:.1f}, requests/Log call {r['requests_per_log']:.1f},"
          f" entries/BatchWriteRecord {r['entries_per_write']:.1f}; backlog during the run max {r['backlog_max']:.0f},"
          f" at the end {r['left']:.0f} (shipped {r['shipped_after']:.1f} s later)")
    total, predict, invoke, log = r["hops"]
    print(f"  {'':<30} where the time goes (means): {total:.2f} ms in the gateway = predictor call {predict:.2f} ms"
          f" (its InvokeEndpoint {invoke:.2f} ms) + Log call {log:.2f} ms + the gateway's own work")


def front_cpu(r):
    """A run's CPU ms per request in the front door's own processes (not sagemaker-local's)."""
    return sum(v for k, v in r["cpu"].items() if k not in ("loadgen", "sagemaker-local"))


def side_by_side(stack, env, direct, args, copies, describe, after_round=None):
    """ROUNDS rounds of InvokeEndpoint direct, then each of `copies` ((name, Services) pairs,
    each first in every other round), under loadgen `args`; prints every run (`describe(r)`
    after its figures), calls `after_round` at each round's end, and returns the runs by name
    ("direct" included)."""
    seen = {"direct": [], **{name: [] for name, _ in copies}}
    for n in range(ROUNDS):
        d = loadgen(env, *direct, *args)
        seen["direct"].append(d)
        print(f"  {'InvokeEndpoint direct':<22} {fmt(d)}")
        for name, svc in copies[::1 if n % 2 == 0 else -1]:
            r = gateway_run(svc, stack, args)
            seen[name].append(r)
            print(f"  {name:<22} {fmt(r)}  {describe(r)}")
        if after_round:
            after_round()
    return seen


def shapes(stack, data, env, extra, micro, flask, direct):
    """Section 10: the one-process shape against the microservices, both batching, interleaved
    (each first in every other round), beside InvokeEndpoint direct and the Flask reference."""
    print("\n10. the two shapes: one process (front-door) and the microservices")
    single = Services(stack, data, "one-process", batching=True, shape="one-process")
    extra.append(single)
    for label, args in (("1,000 requests/s", ["--rate", "1000"]), ("64 concurrent", ["--concurrency", "64"])):
        print(f" {label}")
        flask_runs = []

        def with_flask():
            if "--concurrency" in args:
                flask_runs.append(flask_run(flask, env, args))
                print(f"  {'Flask reference':<22} {fmt(flask_runs[-1])}")
        seen = side_by_side(stack, env, direct, args, [("microservices", micro), ("one process", single)],
                            lambda r: f"CPU/request {front_cpu(r):.3f} ms front door, {r['cpu_services']:.3f} with sagemaker-local",
                            after_round=with_flask)
        seen["flask"] = flask_runs
        for name in ("microservices", "one process"):
            rs = seen[name]
            p50 = [r["p50_ms"] - d["p50_ms"] for r, d in zip(rs, seen["direct"])]
            p99 = [r["p99_ms"] - d["p99_ms"] for r, d in zip(rs, seen["direct"])]
            line = (f"  {name:<14} {span([r['rps'] for r in rs])} req/s, adds {span(p50, '{:+.2f}')} ms at p50 and"
                    f" {span(p99, '{:+.2f}')} ms at p99 over direct; CPU/request {span([front_cpu(r) for r in rs], '{:.3f}')} ms"
                    f" front door, {span([r['cpu_services'] for r in rs], '{:.3f}')} with sagemaker-local")
            if seen["flask"]:
                share = [r["rps"] / max(d["rps"], 1) for r, d in zip(rs, seen["direct"])]
                flask_x = [r["rps"] / max(f["rps"], 1) for r, f in zip(rs, seen["flask"])]
                line += f"; {span([100 * x for x in share])}% of direct, {span(flask_x, '{:.1f}')}x Flask (same round)"
            print(line)
    print(f"  peak RSS of front-door: {peak_rss_mb(single.gateway.proc.pid):.1f} MB")


def against_baseline(stack, data, extra, on, direct):
    """Section 12: this build's microservices against BASELINE's binaries, interleaved."""
    print(f"\n12. this build's microservices against {BASELINE}'s")
    ours = stack.bin_dir
    stack.bin_dir = BASELINE
    try:
        base = Services(stack, data, "baseline", batching=True)
    finally:
        stack.bin_dir = ours
    extra.append(base)
    for label, args in (("64 concurrent", ["--concurrency", "64"]), ("1,000 requests/s", ["--rate", "1000"])):
        print(f" {label}")
        seen = side_by_side(stack, stack.aws_env, direct, args, [("baseline", base), ("this build", on)],
                            lambda r: f"CPU/request {r['cpu_services']:.3f} ms ({per_service(r)})")
        for name in ("baseline", "this build"):
            rs = seen[name]
            print(f"  {name:<12} {span([r['rps'] for r in rs])} req/s"
                  f" ({span([100 * r['rps'] / max(d['rps'], 1) for r, d in zip(rs, seen['direct'])])}% of direct),"
                  f" adds {span([r['p50_ms'] - d['p50_ms'] for r, d in zip(rs, seen['direct'])], '{:+.2f}')} ms at p50 and"
                  f" {span([r['p99_ms'] - d['p99_ms'] for r, d in zip(rs, seen['direct'])], '{:+.2f}')} ms at p99;"
                  f" CPU/request {span([front_cpu(r) for r in rs], '{:.3f}')} ms front door,"
                  f" {span([r['cpu_services'] for r in rs], '{:.3f}')} with sagemaker-local")
        change = [front_cpu(a) - front_cpu(b) for a, b in zip(seen["this build"], seen["baseline"])]
        print(f"  this build changes the front door's CPU/request by {span(change, '{:+.3f}')} ms (same round)")


def https(stack, data, direct):
    """Section 11: the gateway path and InvokeEndpoint direct on sagemaker-local over HTTP and
    over HTTPS, interleaved (each scheme first in every other round), with the handshakes."""
    print("\n11. sagemaker-local over HTTPS against HTTP, at 1,000 requests/s")
    certs = os.path.join(data, "sagemaker-ca")
    subprocess.run([str(ROOT / "scripts" / "dev-ca"), certs], check=True, capture_output=True)
    secure = Stack(str(TARGET), os.path.join(data, "https"), poll_ms=5000, sagemaker_tls=certs)
    copies = [secure]
    try:
        on = Services(stack, data, "front-door-http", batching=True, shape="one-process")
        copies.append(on)
        gateway = Services(secure, data, "front-door-https", batching=True, shape="one-process")
        copies.append(gateway)

        def handshakes(st):  # less the read's own handshake, over HTTPS
            return metric(st.sagemaker_url, "sagemaker_local_tls_handshakes_total", ca=st.sagemaker_ca) - (1 if st.sagemaker_ca else 0)
        seen = {"http": [], "https": []}
        for n in range(ROUNDS):
            for scheme, st, svc in (("http", stack, on), ("https", secure, gateway))[::1 if n % 2 == 0 else -1]:
                h0 = handshakes(st)
                d = loadgen(st.aws_env, *direct, "--rate", "1000")
                h1 = handshakes(st)
                r = gateway_run(svc, st, ["--rate", "1000"])
                h2 = handshakes(st)
                seen[scheme].append((d, r, h1 - h0, h2 - h1))
                print(f"  {scheme:<5} direct  {fmt(d)}  handshakes {h1 - h0:.0f}")
                print(f"  {scheme:<5} gateway {fmt(r)}  handshakes {h2 - h1:.0f}, CPU/request {r['cpu_services']:.3f} ms"
                      f" (front-door {r['cpu']['front-door']:.3f}, sagemaker-local {r['cpu']['sagemaker-local']:.3f})")
        for scheme, runs in seen.items():
            added = [r["p50_ms"] - d["p50_ms"] for d, r, _, _ in runs]
            print(f"  {scheme:<5} direct p50 {span([d['p50_ms'] for d, _, _, _ in runs], '{:.2f}')} ms; the gateway path adds"
                  f" {span(added, '{:+.2f}')} ms at p50, {span([r['p99_ms'] - d['p99_ms'] for d, r, _, _ in runs], '{:+.2f}')} ms"
                  f" at p99; CPU/request {span([r['cpu_services'] for _, r, _, _ in runs], '{:.3f}')} ms (front-door"
                  f" {span([r['cpu']['front-door'] for _, r, _, _ in runs], '{:.3f}')}, sagemaker-local"
                  f" {span([r['cpu']['sagemaker-local'] for _, r, _, _ in runs], '{:.3f}')}); handshakes per run:"
                  f" direct {span([h for _, _, h, _ in runs])}, gateway {span([h for _, _, _, h in runs])}")
        diff = [(b[1]["p50_ms"] - b[0]["p50_ms"]) - (a[1]["p50_ms"] - a[0]["p50_ms"]) for a, b in zip(seen["http"], seen["https"])]
        print(f"  HTTPS changes the gateway path's added p50 by {span(diff, '{:+.2f}')} ms (same round)")
    finally:
        for c in reversed(copies):
            c.stop()


def main():
    print(f"machine: {os.cpu_count()} cores, shared by the load generator and every process; "
          f"{SECONDS:.0f} s per run, {ROUNDS} interleaved rounds")
    with tempfile.TemporaryDirectory() as data:
        os.environ["LOG_FORMAT"] = "json"
        os.environ["RUST_LOG"] = "warn"
        stack = Stack(str(TARGET), data, poll_ms=5000)
        extra = []
        try:
            env = stack.aws_env
            on = Services(stack, data, "on", batching=True)
            extra.append(on)
            off = Services(stack, data, "off", batching=False)
            extra.append(off)
            flask = Flask(env)
            extra.append(flask)
            # A third copy with an API key required and a (never reached) per-key limit: what
            # checking the key and taking a token cost.
            key = "bench-" + "k" * 40
            keys_doc = json.dumps({"keys": [{"name": "bench", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                                             "per_second": 1_000_000, "burst": 1_000_000}]})
            keyed = Services(stack, data, "keys", batching=True, extra_env={"GATEWAY_API_KEYS": keys_doc},
                             headers=[f"authorization: Bearer {key}"])
            extra.append(keyed)
            direct = ["invoke", "--endpoint-name", "my-mlops-prod-endpoint", "--body", ROW]

            if want("1"):
                print("\n1. 64 concurrent clients")
                runs = {"direct": [], "on": [], "off": [], "flask": []}
                for n in range(ROUNDS):
                    print(f" round {n + 1}")
                    d = loadgen(env, *direct, "--concurrency", "64")
                    print(f"  {'InvokeEndpoint direct':<30} {fmt(d)}")
                    runs["direct"].append(d)
                    for name, svc in (("on", on), ("off", off)):
                        r = gateway_run(svc, stack, ["--concurrency", "64"])
                        print_gateway(f"gateway, batching {name}", r)
                        runs[name].append(r)
                    f = flask_run(flask, env, ["--concurrency", "64"])
                    print(f"  {'Flask reference':<30} {fmt(f)}  CPU/request {f['cpu_services']:.3f} ms")
                    runs["flask"].append(f)
                    print(f"  {'':<30} gateway (batching on) / Flask: {runs['on'][-1]['rps'] / max(f['rps'], 1):.1f}x")
                print(" ranges:")
                for name, label in (("direct", "InvokeEndpoint direct"), ("on", "gateway, batching on"),
                                    ("off", "gateway, batching off"), ("flask", "Flask reference")):
                    rs = runs[name]
                    cpu = f", CPU/request {span([r['cpu_services'] for r in rs], '{:.3f}')} ms" if "cpu_services" in rs[0] else ""
                    print(f"  {label:<30} {span([r['rps'] for r in rs])} req/s, p50 {span([r['p50_ms'] for r in rs], '{:.2f}')} ms{cpu}")
                ratios = [a["rps"] / max(b["rps"], 1) for a, b in zip(runs["on"], runs["flask"])]
                print(f"  gateway (batching on) / Flask, same round: {span(ratios, '{:.1f}')}x")

            if want("2"):
                print("\n2. 1,000 requests/s")
                added = {"on": [], "off": []}
                for n in range(ROUNDS):
                    print(f" round {n + 1}")
                    d = loadgen(env, *direct, "--rate", "1000")
                    print(f"  {'InvokeEndpoint direct':<30} {fmt(d)}")
                    for name, svc in (("on", on), ("off", off)):
                        r = gateway_run(svc, stack, ["--rate", "1000"])
                        print_gateway(f"gateway, batching {name}", r)
                        added[name].append((r["p50_ms"] - d["p50_ms"], r["p99_ms"] - d["p99_ms"], r["cpu_services"]))
                for name in ("on", "off"):
                    a = added[name]
                    print(f"  batching {name:<4} the gateway path adds {span([x[0] for x in a], '{:+.2f}')} ms at p50,"
                          f" {span([x[1] for x in a], '{:+.2f}')} ms at p99; CPU/request {span([x[2] for x in a], '{:.3f}')} ms")

                print("\n2b. API keys and rate limiting at 1,000 requests/s (batching on both)")
                cost = {"open": [], "keys": []}
                for n in range(ROUNDS):
                    for name, svc in (("open", on), ("keys", keyed)):
                        r = gateway_run(svc, stack, ["--rate", "1000"])
                        cost[name].append((r["p50_ms"], r["p99_ms"], r["cpu"]["gateway"]))
                        print(f"  {'gateway, ' + ('key checked + limited' if name == 'keys' else 'open'):<30} {fmt(r)}  gateway CPU/request {r['cpu']['gateway']:.3f} ms")
                for name in ("open", "keys"):
                    c = cost[name]
                    print(f"  {name:<5} p50 {span([x[0] for x in c], '{:.2f}')} ms, p99 {span([x[1] for x in c], '{:.2f}')} ms,"
                          f" gateway CPU/request {span([x[2] for x in c], '{:.3f}')} ms")
                added = [k[0] - o[0] for k, o in zip(cost["keys"], cost["open"])]
                print(f"  keys add {span(added, '{:+.2f}')} ms at p50 (same round)")

            if want("3"):
                print("\n3. one request at a time")
                p50 = {"on": [], "off": []}
                for n in range(ROUNDS):
                    for name, svc in (("on", on), ("off", off)):
                        r = gateway_run(svc, stack, ["--concurrency", "1"])
                        p50[name].append(r["p50_ms"])
                for name in ("on", "off"):
                    print(f"  gateway, batching {name:<4} p50 {span(p50[name], '{:.3f}')} ms (median {statistics.median(p50[name]):.3f})")

            if want("4"):
                print("\n4. the logger alone (one interaction per Log call, fsynced before the ack)")
                for n in range(ROUNDS):
                    r = loadgen(env, "log", "--url", "http://" + on.logger.addrs["grpc"], "--concurrency", "256")
                    left, took = on.drain()
                    print(f"  {'InteractionLogger/Log':<30} {fmt(r)}; left unshipped {left:.0f}, shipped {took:.1f} s later")

            if want("5"):
                print(f"\n5. sustained: {SUSTAINED:.0f} s at 64 concurrent through the gateway (batching on)")
                r = gateway_run(on, stack, ["--concurrency", "64"], seconds=SUSTAINED)
                print_gateway("gateway, batching on", r)
                every = r["backlog"][4::5]
                print(f"  backlog every 5 s: {', '.join(f'{b:.0f}' for b in every)}; intake {r['rps']:.0f}/s, so one"
                      f" second of intake is {r['rps']:.0f}")

            if want("7"):
                print("\n7. the Open Inference Protocol beside /v1/predict (one gateway, batching on)")
                doors = front_door(on, data)
                for label, args in (("64 concurrent", ["--concurrency", "64"]), ("1,000 requests/s", ["--rate", "1000"])):
                    print(f" {label}")
                    seen = {name: [] for name in doors}
                    for n in range(ROUNDS):
                        print(f"  round {n + 1}")
                        for name, request in doors.items():
                            r = gateway_run(on, stack, args, request=request)
                            seen[name].append(r)
                            print(f"   {name:<18} {fmt(r)}  CPU/request: gateway {r['cpu']['gateway']:.3f} ms,"
                                  f" all services {r['cpu_services']:.3f} ms")
                    print("  ranges:")
                    base = seen["/v1/predict JSON"]
                    for name, rs in seen.items():
                        vs = [r["cpu"]["gateway"] - b["cpu"]["gateway"] for r, b in zip(rs, base)]
                        print(f"   {name:<18} {span([r['rps'] for r in rs])} req/s, p50 {span([r['p50_ms'] for r in rs], '{:.2f}')} ms,"
                              f" p99 {span([r['p99_ms'] for r in rs], '{:.2f}')} ms; gateway CPU/request"
                              f" {span([r['cpu']['gateway'] for r in rs], '{:.3f}')} ms ({span(vs, '{:+.3f}')} vs /v1/predict, same round)")

            if want("8"):
                print(f"\n8. tracing at 1,000 requests/s: off (no OTEL_* variables) and on (OTLP/HTTP, ratio {TRACE_RATIO})")
                sink = OtlpSink()
                extra.append(sink)
                traced = Services(stack, data, "traced", batching=True, extra_env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": TRACE_RATIO, "OTEL_BSP_SCHEDULE_DELAY": "1000"})
                extra.append(traced)
                cost = {"off": [], "on": []}
                for n in range(ROUNDS):
                    print(f" round {n + 1}")
                    # each copy first in every other round: no order effect in the difference
                    for name, svc in (("off", on), ("on", traced))[::1 if n % 2 == 0 else -1]:
                        sent = sink.requests
                        r = gateway_run(svc, stack, ["--rate", "1000"])
                        cost[name].append(r)
                        exports = f"; {sink.requests - sent} OTLP exports received" if name == "on" else ""
                        print(f"  traces {name:<4} {fmt(r)}  CPU/request {per_service(r)} ms{exports}")
                for k in SERVICES:
                    added = [a["cpu"][k] - b["cpu"][k] for a, b in zip(cost["on"], cost["off"])]
                    print(f"  {k:<20} off {span([r['cpu'][k] for r in cost['off']], '{:.3f}')} ms, on"
                          f" {span([r['cpu'][k] for r in cost['on']], '{:.3f}')} ms: tracing adds {span(added, '{:+.3f}')} ms per request (same round)")
                print(f"  the receiver got {sink.requests} exports, {sink.bytes / 1e6:.1f} MB")

            if want("9"):
                print("\n9. runtime shape: one tokio worker per service (TOKIO_WORKER_THREADS=1) against one per core")
                single = Services(stack, data, "one-worker", batching=True, extra_env={"TOKIO_WORKER_THREADS": "1"})
                extra.append(single)
                for label, args in (("1,000 requests/s", ["--rate", "1000"]), ("64 concurrent", ["--concurrency", "64"])):
                    print(f" {label}")
                    seen = {"per core": [], "one": []}
                    for n in range(ROUNDS):
                        for name, svc in (("per core", on), ("one", single)):
                            r = gateway_run(svc, stack, args)
                            seen[name].append(r)
                            print(f"  workers {name:<9} {fmt(r)}  CPU/request {r['cpu_services']:.3f} ms ({per_service(r)})")
                    for name, rs in seen.items():
                        print(f"  workers {name:<9} {span([r['rps'] for r in rs])} req/s, p50 {span([r['p50_ms'] for r in rs], '{:.2f}')} ms,"
                              f" p99 {span([r['p99_ms'] for r in rs], '{:.2f}')} ms, CPU/request {span([r['cpu_services'] for r in rs], '{:.3f}')} ms")
                    saved = [b["cpu_services"] - a["cpu_services"] for a, b in zip(seen["per core"], seen["one"])]
                    print(f"  one worker changes CPU/request by {span(saved, '{:+.3f}')} ms (same round)")

            if want("10"):
                shapes(stack, data, env, extra, on, flask, direct)

            if want("11"):
                https(stack, data, direct)

            if want("12"):
                if BASELINE:
                    against_baseline(stack, data, extra, on, direct)
                else:
                    print("\n12. against another build: skipped (set BENCH_BASELINE_DIR to its release directory)")

            if want("6"):
                print("\n6. peak RSS (VmHWM)")
                for svc in stack.services + [p for e in extra if isinstance(e, Services) for p in e.processes]:
                    print(f"  {svc.name:<20} {peak_rss_mb(svc.proc.pid):6.1f} MB")
                for n, pid in enumerate(flask.workers()):
                    print(f"  {'flask worker ' + str(n):<20} {peak_rss_mb(pid):6.1f} MB")
        finally:
            for e in reversed(extra):
                e.stop()
            stack.stop()


if __name__ == "__main__":
    main()
