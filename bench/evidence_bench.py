#!/usr/bin/env python3
"""What shadowing a candidate and tracking drift cost the hot path at 1,000 requests/s (release
builds), printing figures, asserting nothing.

    cargo build --release --workspace && python3 bench/evidence_bench.py

One sagemaker-local and one registry-watcher; a candidate (v2: the demo model under another
artifact, registered PendingManualApproval) shadowed on `my-mlops-prod-endpoint-shadow` by
`mlops-deploy shadow`. Five copies of the inference services side by side, run interleaved
BENCH_ROUNDS rounds (default 3) of BENCH_SECONDS (default 10) at 1,000 requests/s each:

- off:    no mirroring (PREDICTOR_SHADOW_FRACTION=0), no drift (the logger follows no watcher)
- drift:  the logger tracks drift against the live model's baseline
- shadow: the predictor mirrors every request (fraction 1) to the candidate
- shadow/4: a quarter of them (fraction 0.25, the AWS template's default)
- both:   drift and shadow (fraction 1)

For each: p50/p99 against `off` in the same round, and CPU per request by process. On this
machine the candidate's inferences run in the same sagemaker-local as the live model's
(on AWS the shadow endpoint has instances of its own), so its CPU is printed apart from the
predictor's (the mirroring itself: queue, worker, reports) and the watcher's (the comparison).
"""
import json
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
from stack import Stack  # noqa: E402
from stack_bench import ROUNDS, SECONDS, TARGET, Services, cpu_seconds, fmt, gateway_run, loadgen, span  # noqa: E402

ROW = "63,40,29.01,0,4,0,2,1"
FEATURES = "age,tenure_months,monthly_charges,support_calls,num_products,late_payments,satisfaction,has_contract"


def deploy_cli(stack, *args):
    return stack.mlops_deploy(*args, env={"SHADOW_CANDIDATES": "true", "DEPLOY_POLL_MS": "100"})


def main():
    print(f"machine: {os.cpu_count()} cores, shared by the load generator and every process; "
          f"{SECONDS:.0f} s per run at 1,000 requests/s, {ROUNDS} interleaved rounds")
    with tempfile.TemporaryDirectory() as data:
        os.environ["LOG_FORMAT"] = "json"
        os.environ["RUST_LOG"] = "warn"
        stack = Stack(str(TARGET), data, poll_ms=1000)
        copies = {}
        try:
            live = deploy_cli(stack, "status")["live"][0]["arn"]
            sm = stack.client("sagemaker")
            url = sm.describe_model_package(ModelPackageName=live)["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
            # The candidate: the same model under another artifact (the watcher tells packages
            # apart by their artifact).
            s3 = pathlib.Path(data) / "sagemaker-local" / "s3"
            candidate = s3 / "bench" / "candidate" / "model.tar.gz"
            candidate.parent.mkdir(parents=True)
            candidate.write_bytes((s3 / url[len("s3://"):]).read_bytes())
            deploy_cli(stack, "register", "--model-data-url", "s3://bench/candidate/model.tar.gz", "--features", FEATURES)
            print("shadow:", deploy_cli(stack, "shadow")["action"])
            import time
            import urllib.request
            for _ in range(100):
                view = json.loads(urllib.request.urlopen(f"http://{stack.watcher.addrs['admin']}/shadow.json").read())
                if view["shadowing"]:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"the watcher never saw the candidate shadowed: {view}")
            watcher = "http://" + stack.watcher.addrs["grpc"]
            variants = {
                "off": {"PREDICTOR_SHADOW_FRACTION": "0"},
                "drift": {"PREDICTOR_SHADOW_FRACTION": "0", "REGISTRY_WATCHER_URL": watcher},
                "shadow": {"PREDICTOR_SHADOW_FRACTION": "1"},
                "shadow/4": {"PREDICTOR_SHADOW_FRACTION": "0.25"},
                "both": {"PREDICTOR_SHADOW_FRACTION": "1", "REGISTRY_WATCHER_URL": watcher},
            }
            for name, env in variants.items():
                copies[name] = Services(stack, data, name, batching=True, extra_env=env)
            direct = ["invoke", "--endpoint-name", "my-mlops-prod-endpoint", "--body", ROW]
            results = {name: [] for name in variants}
            for n in range(ROUNDS):
                print(f" round {n + 1}")
                d = loadgen(stack.aws_env, *direct, "--rate", "1000")
                print(f"  {'InvokeEndpoint direct':<28} {fmt(d)}")
                for name, svc in copies.items():
                    w0 = cpu_seconds(stack.watcher.proc.pid)
                    r = gateway_run(svc, stack, ["--rate", "1000"])
                    r["cpu"]["registry-watcher"] = (cpu_seconds(stack.watcher.proc.pid) - w0) * 1000 / max(r["rps"] * SECONDS, 1)
                    results[name].append(r)
                    parts = ", ".join(f"{k} {v:.3f}" for k, v in r["cpu"].items() if k != "loadgen")
                    print(f"  {'gateway, ' + name:<28} {fmt(r)}\n  {'':<28} CPU/request ms: {parts}")
            print(" against `off` in the same round (p50, p99 added; CPU per request by process, ms):")
            off = results["off"]
            for name in ("drift", "shadow", "shadow/4", "both"):
                rs = results[name]
                dp50 = [r["p50_ms"] - o["p50_ms"] for r, o in zip(rs, off)]
                dp99 = [r["p99_ms"] - o["p99_ms"] for r, o in zip(rs, off)]
                line = f"  {name:<7} p50 {span(dp50, '{:+.2f}')} ms, p99 {span(dp99, '{:+.2f}')} ms"
                for proc in ("gateway", "predictor", "interaction-logger", "sagemaker-local", "registry-watcher"):
                    d = [r["cpu"].get(proc, 0) - o["cpu"].get(proc, 0) for r, o in zip(rs, off)]
                    line += f"; {proc} {span(d, '{:+.3f}')}"
                print(line)
            for name, rs in results.items():
                print(f"  {name:<7} p50 {span([r['p50_ms'] for r in rs], '{:.2f}')} ms, p99 {span([r['p99_ms'] for r in rs], '{:.2f}')} ms,"
                      f" services CPU/request {span([r['cpu_services'] for r in rs], '{:.3f}')} ms")
            view = json.loads(__import__("urllib.request").request.urlopen(
                f"http://{stack.watcher.addrs['admin']}/shadow.json", timeout=5).read())
            s = (view.get("comparison") or {}).get("summary") or {}
            print(f" the comparison gathered meanwhile: {s.get('rows')} rows, mean |diff| {s.get('mean_abs_diff')},"
                  f" candidate p50 {s.get('candidate', {}).get('latency_p50_ms')} ms vs live {s.get('live', {}).get('latency_p50_ms')} ms")
        finally:
            for svc in copies.values():
                svc.stop()
            stack.stop()


if __name__ == "__main__":
    main()
