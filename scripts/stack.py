#!/usr/bin/env python3
"""Runs the whole stack on one machine: sagemaker-local (demo world), interaction-logger,
registry-watcher, predictor and gateway, wired together with the design documents'
environment names, plus the pipeline's listener (`mlops-pipeline listen`), so that approving
a model package deploys it.

    python3 scripts/stack.py --bin-dir DIR [--gateway 127.0.0.1:8080] [--data-dir .data]

Every service listens where it is told (port 0 = any free port); each prints its address on
its first stdout line, which is how the launcher (and the tests, through `Stack`) learn it.
SIGINT/SIGTERM stops the services in reverse order, each with SIGTERM (they drain).
"""
import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCESS_KEY, SECRET_KEY, REGION = "sagemaker-local", "sagemaker-local-secret", "us-east-1"


class Service:
    def __init__(self, name, argv, env, log):
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited before it listened (code {self.proc.wait()}): {' '.join(self.argv)}")
            if " listening on " in line:
                break
            self._forward(line)
        self.addrs = dict(re.findall(r"(\w+)=(\S+)", line))
        m = re.search(r"http://(\S+)", line)
        if m:
            self.addrs.setdefault("http", m.group(1))
        # Keep reading stdout (the JSON logs) so the child never blocks on a full pipe.
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _forward(self, line):
        if hasattr(self.log, "write"):
            self.log.write(f"[{self.name}] {line}")

    def _pump(self, stream):
        for line in stream:
            self._forward(line)

    def kill(self):
        """SIGKILL: no drain, no flush."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Stack:
    def __init__(self, bin_dir, data_dir, gateway="127.0.0.1:0", sagemaker="127.0.0.1:0", log=None, extra_env=None,
                 poll_ms=500, pipeline=False, tls_dir=None, mutual_tls=False, shadow=False, shadow_fraction=1.0,
                 deploy_strategy="all-at-once", bake_secs=20):
        self.bin_dir, self.data_dir = bin_dir, data_dir
        self.log = log if log is not None else subprocess.DEVNULL
        base = dict(os.environ, LOG_FORMAT=os.environ.get("LOG_FORMAT", "json"), **(extra_env or {}))
        self.services = []
        self.sagemaker = self._start("sagemaker-local", [
            "--listen", sagemaker, "--data-dir", os.path.join(data_dir, "sagemaker-local"), "--demo",
            "--endpoint-delay-ms", "100", "--offline-flush-ms", "1000"], base)
        self.sagemaker_url = "http://" + self.sagemaker.addrs["http"]
        self.aws_env = dict(base, AWS_ENDPOINT_URL=self.sagemaker_url, AWS_ACCESS_KEY_ID=ACCESS_KEY,
                            AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
                            SAGEMAKER_ENDPOINT_NAME="my-mlops-prod-endpoint",
                            USER_INTERACTION_FG_NAME="my-mlops-user-interactions-v1",
                            MODEL_PACKAGE_GROUP="my-mlops-prod-pkg")
        # What the pipeline's stages need on one machine: the project's binaries on PATH,
        # sagemaker-local's S3 folder, one deploy lock per data dir, quick deploy polling.
        self.pipeline_env = dict(self.aws_env, PATH=os.pathsep.join([bin_dir, base.get("PATH", "")]),
                                 LOCAL_S3_ROOT=os.path.join(data_dir, "sagemaker-local", "s3"),
                                 PIPELINE_LOCK_FILE=os.path.join(data_dir, "pipeline", "deploy.lock"),
                                 PIPELINE_SOURCE_DIR=ROOT, DEPLOY_POLL_MS="100",
                                 # How an approval reaches the endpoint (mlops-deploy deploy --help).
                                 DEPLOY_STRATEGY=deploy_strategy, DEPLOY_BAKE_SECS=str(bake_secs),
                                 TRAIN_WAIT_FOR_ROWS_SECS="10",  # the offline store lags a fresh stack
                                 # A new candidate is shadowed on live traffic until decided.
                                 SHADOW_CANDIDATES=str(shadow).lower())
        self.wait_endpoint()
        # TLS on the gRPC hops when given a folder of certificates (scripts/dev-ca makes one).
        scheme = "https://" if tls_dir else "http://"

        def tls(svc):
            if not tls_dir:
                return {}
            return {"GRPC_TLS_CERT": os.path.join(tls_dir, svc + ".crt"), "GRPC_TLS_KEY": os.path.join(tls_dir, svc + ".key"),
                    "GRPC_TLS_CA": os.path.join(tls_dir, "ca.crt"), "GRPC_TLS_REQUIRE_CLIENT_CERT": str(mutual_tls).lower()}
        # The logger's dead-letter routes need a token: a new one per start.
        self.admin_token = secrets.token_urlsafe(24)
        self.watcher = self._start("registry-watcher", [
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--poll-ms", str(poll_ms)],
            dict(self.aws_env, WATCHER_SHADOW_SAVE_MS=str(max(poll_ms, 200)), **tls("registry-watcher")))
        watcher_url = scheme + self.watcher.addrs["grpc"]
        # The logger follows the watcher for the live model's baseline (drift).
        self.logger = self._start("interaction-logger", [
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--spool-dir", os.path.join(data_dir, "interaction-logger")],
            dict(self.aws_env, LOGGER_ADMIN_TOKEN=self.admin_token, REGISTRY_WATCHER_URL=watcher_url,
                 **tls("interaction-logger")))
        self.predictor = self._start("predictor", [
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--registry-watcher-url", watcher_url],
            # Mirrors live requests to a shadowed candidate whenever there is one.
            # and records the candidate's answers beside the live ones, through the logger.
            dict(self.aws_env, PREDICTOR_SHADOW_FRACTION=str(shadow_fraction),
                 LOGGER_URL=scheme + self.logger.addrs["grpc"], **tls("predictor")))
        self.gateway = self._start("gateway", [
            "--listen", gateway,
            "--predictor-url", scheme + self.predictor.addrs["grpc"],
            "--logger-url", scheme + self.logger.addrs["grpc"],
            "--registry-watcher-url", scheme + self.watcher.addrs["grpc"]], dict(self.aws_env, **tls("gateway")))
        self.url = "http://" + self.gateway.addrs["http"]
        self.wait_ready("http://" + self.watcher.addrs["admin"] + "/readyz")
        # Listening last: it deploys on approvals, and says it listens once it has its first
        # look at the registry (decisions from then on are its to act on).
        self.listener = self._start("mlops-pipeline", [
            "--poll-ms", str(poll_ms), "listen"], self.pipeline_env) if pipeline else None

    def wait_ready(self, url, timeout=30):
        """Waits for a 200 from `url` (a service's /readyz)."""
        import urllib.request
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(url, timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} never became ready")

    def _start(self, name, args, env):
        svc = Service(name, [os.path.join(self.bin_dir, name), *args], env, self.log)
        self.services.append(svc)
        return svc

    def wait_endpoint(self):
        self.wait_ready(self.sagemaker_url + "/healthz")

    def restart(self, svc, args=None):
        if args is not None:
            svc.argv = [svc.argv[0], *args]
        svc.start()

    def stop(self):
        codes = {}
        for svc in reversed(self.services):
            codes[svc.name] = svc.stop()
        return codes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--data-dir", default=".data")
    ap.add_argument("--gateway", default="127.0.0.1:8080")
    ap.add_argument("--sagemaker", default="127.0.0.1:9000")
    args = ap.parse_args()
    os.environ.setdefault("LOG_FORMAT", "pretty")
    stack = Stack(args.bin_dir, args.data_dir, gateway=args.gateway, sagemaker=args.sagemaker, log=sys.stderr, poll_ms=2000,
                  pipeline=True, shadow=True, deploy_strategy="canary", bake_secs=20)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"\nThe stack is up. Open {stack.url}\n"
          f"  API:         curl -s {stack.url}/v1/predict -H 'content-type: application/json' "
          "-d '{\"features\":{\"age\":63,\"tenure_months\":40,\"monthly_charges\":29.01}}'\n"
          f"  SageMaker:   {stack.sagemaker_url} (key {ACCESS_KEY} / {SECRET_KEY}, region {REGION})\n"
          f"  predictor:   grpc {stack.predictor.addrs['grpc']}, admin http://{stack.predictor.addrs['admin']}/metrics\n"
          f"  watcher:     grpc {stack.watcher.addrs['grpc']}, admin http://{stack.watcher.addrs['admin']}/metrics\n"
          f"  approver:    http://{stack.watcher.addrs['admin']}/shadow (a pending candidate next to the live model, on live traffic)\n"
          f"  logger:      grpc {stack.logger.addrs['grpc']}, admin http://{stack.logger.addrs['admin']}/metrics\n"
          f"  drift:       http://{stack.logger.addrs['admin']}/drift (live inputs against the live model's training baseline)\n"
          f"  dead letters: curl -H 'Authorization: Bearer {stack.admin_token}' http://{stack.logger.addrs['admin']}/dead-letters\n"
          "  pipeline:    listening: a new candidate is shadowed, approving a model package rolls it out as a canary (10% for 20 s, decided by live evidence; scripts/local mlops-pipeline run trains one)\n"
          "Ctrl-C stops it.", flush=True)
    while not stop and all(s.proc.poll() is None for s in stack.services):
        time.sleep(0.2)
    codes = stack.stop()
    print("stopped:", codes)
    sys.exit(0 if all(c == 0 for c in codes.values()) else 1)


if __name__ == "__main__":
    main()
