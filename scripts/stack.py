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
import json
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


def urlopen(url, timeout=5, ca=None):
    """GET `url`; an https one trusting the PEM CA file `ca` (sagemaker-local over HTTPS)."""
    import ssl
    import urllib.request
    context = ssl.create_default_context(cafile=ca) if ca else None
    return urllib.request.urlopen(url, timeout=timeout, context=context)


def metric(url, name, ca=None):
    """The sum of the samples of every series whose name starts with `name`, from a process's
    Prometheus text at `url` (its `/metrics`, appended when `url` does not end with it)."""
    if not url.endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    text = urlopen(url, ca=ca).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def aws_client(service, env):
    """A boto3 client for `service` with the AWS endpoint, region and keys in `env`."""
    import boto3
    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], verify=env.get("AWS_CA_BUNDLE"))


def run_tool(bin_dir, tool, args, env, check=True, timeout=300):
    """Runs one of the pipeline's tools (`mlops-deploy ...`) and returns its result, the JSON
    on its last stdout line; with `check`, a failure is an AssertionError with its output."""
    out = subprocess.run([os.path.join(str(bin_dir), tool), *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert out.returncode == 0, f"{tool} {' '.join(args)}: {out.stderr}{out.stdout}"
    return json.loads(out.stdout.strip().splitlines()[-1])


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
        m = re.search(r"https?://(\S+)", line)
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
                 deploy_strategy="all-at-once", bake_secs=20, shape="microservices", sagemaker_tls=None):
        self.bin_dir, self.data_dir, self.shape = bin_dir, data_dir, shape
        self.log = log if log is not None else subprocess.DEVNULL
        base = dict(os.environ, LOG_FORMAT=os.environ.get("LOG_FORMAT", "json"), **(extra_env or {}))
        self.services = []
        # sagemaker-local over HTTPS when given a scripts/dev-ca folder (its sagemaker-local
        # certificate; every client trusts the folder's CA through AWS_CA_BUNDLE).
        self.sagemaker_ca = os.path.join(sagemaker_tls, "ca.crt") if sagemaker_tls else None
        https = ["--tls-cert", os.path.join(sagemaker_tls, "sagemaker-local.crt"),
                 "--tls-key", os.path.join(sagemaker_tls, "sagemaker-local.key")] if sagemaker_tls else []
        self.sagemaker = self._start("sagemaker-local", [
            "--listen", sagemaker, "--data-dir", os.path.join(data_dir, "sagemaker-local"), "--demo",
            "--endpoint-delay-ms", "100", "--offline-flush-ms", "1000", *https], base)
        self.sagemaker_url = ("https://" if sagemaker_tls else "http://") + self.sagemaker.addrs["http"]
        if sagemaker_tls:
            base["AWS_CA_BUNDLE"] = self.sagemaker_ca
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
        self.tls_dir, self.mutual_tls = tls_dir, mutual_tls
        tls = self.tls
        # The logger's dead-letter routes need a token: a new one per start.
        self.admin_token = secrets.token_urlsafe(24)
        self.watcher = self._start("registry-watcher", [
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--poll-ms", str(poll_ms)],
            dict(self.aws_env, WATCHER_SHADOW_SAVE_MS=str(max(poll_ms, 200)), **tls("registry-watcher")))
        self.logger, self.predictor, self.gateway = self.start_front(
            os.path.join(data_dir, "interaction-logger"), gateway=gateway,
            logger_env=dict(LOGGER_ADMIN_TOKEN=self.admin_token),
            # Mirrors live requests to a shadowed candidate whenever there is one, and records
            # the candidate's answers beside the live ones, through the logger.
            predictor_env=dict(PREDICTOR_SHADOW_FRACTION=str(shadow_fraction)))
        self.url = "http://" + self.gateway.addrs["http"]
        self.wait_ready("http://" + self.watcher.addrs["admin"] + "/readyz")
        # Listening last: it deploys on approvals, and says it listens once it has its first
        # look at the registry (decisions from then on are its to act on).
        self.listener = self._start("mlops-pipeline", [
            "--poll-ms", str(poll_ms), "listen"], self.pipeline_env) if pipeline else None

    @property
    def scheme(self):
        return "https://" if self.tls_dir else "http://"

    def tls(self, svc):
        """The GRPC_TLS_* of service `svc`, when the stack runs with certificates."""
        if not self.tls_dir:
            return {}
        return {"GRPC_TLS_CERT": os.path.join(self.tls_dir, svc + ".crt"),
                "GRPC_TLS_KEY": os.path.join(self.tls_dir, svc + ".key"),
                "GRPC_TLS_CA": os.path.join(self.tls_dir, "ca.crt"),
                "GRPC_TLS_REQUIRE_CLIENT_CERT": str(self.mutual_tls).lower()}

    def start_front(self, spool_dir, gateway="127.0.0.1:0", env=None, logger_env=None, predictor_env=None,
                    drift=True, shape=None):
        """An interaction logger (spooling in `spool_dir`, following the watcher for drift
        unless `drift` is False), a predictor and a gateway on this stack's sagemaker-local and
        watcher, with `env` on top of the stack's: the stack's own front, and the benchmarks'
        extra copies side by side, in the stack's shape or `shape`. Returns the three services;
        in the one-process shape, the one `front-door` process three times (its admin port is
        the logger's)."""
        scheme, tls = self.scheme, self.tls
        env = dict(self.aws_env, **(env or {}))
        watcher_url = scheme + self.watcher.addrs["grpc"]
        host, port = gateway.rsplit(":", 1)
        grpc_listen = f"{host}:{'0' if port == '0' else '8081'}"
        if (shape or self.shape) == "one-process":
            if self.tls_dir or not drift:
                raise ValueError("the one-process shape runs without tls_dir (no gRPC hops to secure) and with drift")
            front = self._start("front-door", [
                "--listen", gateway, "--grpc-listen", grpc_listen, "--admin-listen", "127.0.0.1:0"],
                dict(env, LOGGER_SPOOL_DIR=spool_dir, REGISTRY_WATCHER_URL=watcher_url,
                     **(logger_env or {}), **(predictor_env or {})))
            return front, front, front
        # The logger follows the watcher for the live model's baseline (drift).
        logger = self._start("interaction-logger", [
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--spool-dir", spool_dir],
            dict(env, **({"REGISTRY_WATCHER_URL": watcher_url} if drift else {}), **(logger_env or {}),
                 **tls("interaction-logger")))
        # LOGGER_URL: where a shadowed candidate's answers are recorded (nothing without one).
        predictor = self._start("predictor", [
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--registry-watcher-url", watcher_url],
            dict(env, LOGGER_URL=scheme + logger.addrs["grpc"], **(predictor_env or {}), **tls("predictor")))
        # The OIP gRPC API beside the HTTP port: 8081 beside a fixed 8080, any free port beside 0.
        front = self._start("gateway", [
            "--listen", gateway, "--grpc-listen", grpc_listen,
            "--predictor-url", scheme + predictor.addrs["grpc"],
            "--logger-url", scheme + logger.addrs["grpc"],
            "--registry-watcher-url", watcher_url], dict(env, **tls("gateway")))
        return logger, predictor, front

    def wait_ready(self, url, timeout=30):
        """Waits for a 200 from `url` (a service's /readyz; sagemaker-local's, over HTTPS too)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if urlopen(url, timeout=1, ca=self.sagemaker_ca).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} never became ready")

    def client(self, service):
        """A boto3 client for `service` on this stack's sagemaker-local."""
        return aws_client(service, self.aws_env)

    def mlops_deploy(self, *args, env=None, check=True, timeout=300):
        """`mlops-deploy ARGS` against this stack (its environment, plus `env`): the result."""
        return run_tool(self.bin_dir, "mlops-deploy", args, dict(self.aws_env, **(env or {})), check, timeout)

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
    ap.add_argument("--shape", choices=["microservices", "one-process"], default="microservices",
                    help="the front door as three processes, or as one (front-door)")
    args = ap.parse_args()
    os.environ.setdefault("LOG_FORMAT", "pretty")
    stack = Stack(args.bin_dir, args.data_dir, gateway=args.gateway, sagemaker=args.sagemaker, log=sys.stderr, poll_ms=2000,
                  pipeline=True, shadow=True, deploy_strategy="canary", bake_secs=20, shape=args.shape)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"\nThe stack is up. Open {stack.url}\n"
          f"  API:         curl -s {stack.url}/v1/predict -H 'content-type: application/json' "
          "-d '{\"features\":{\"age\":63,\"tenure_months\":40,\"monthly_charges\":29.01}}'\n"
          f"  SageMaker:   {stack.sagemaker_url} (key {ACCESS_KEY} / {SECRET_KEY}, region {REGION})\n"
          + (f"  front door:  one process (front-door): OIP grpc {stack.gateway.addrs['grpc']}, admin http://{stack.logger.addrs['admin']}/metrics\n"
             if args.shape == "one-process" else
             f"  predictor:   grpc {stack.predictor.addrs['grpc']}, admin http://{stack.predictor.addrs['admin']}/metrics\n") +
          f"  watcher:     grpc {stack.watcher.addrs['grpc']}, admin http://{stack.watcher.addrs['admin']}/metrics\n"
          f"  approver:    http://{stack.watcher.addrs['admin']}/shadow (a pending candidate next to the live model, on live traffic)\n"
          + ("" if args.shape == "one-process" else
             f"  logger:      grpc {stack.logger.addrs['grpc']}, admin http://{stack.logger.addrs['admin']}/metrics\n") +
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
