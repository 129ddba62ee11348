"""The docker-compose stack, really run: the image built locally (docker/build-image from the
test build's debug binaries, so `.ci/run` compiles the workspace once, + a debootstrap base, no
registry), `docker-compose.yml` brought up with its two
networks, a prediction found in the feature store, the gateway shown unable to reach
sagemaker-local, the logger container SIGKILLed and started again under load with every
acknowledged interaction arriving (its spool adopted by the second logger on the shared spool
volume, or by itself restarted under a new identity), and a SIGTERM stop after which every
service exited 0; and `docker-compose.one-process.yml` brought up (one `front-door` container
for the gateway, predictor and logger), a prediction recorded, a SIGTERM drain.

Needs a Docker engine and compose (scripts/test installs and starts them); fails, never skips,
without them. Progress goes to the terminal as `[compose] ...` lines while it runs."""
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY  # noqa: E402
from stack import aws_client  # noqa: E402
from test_stack_e2e import EXPECTED, ROOT, feature_store, http, load, row, wait_for_records

SERVICES = ["sagemaker-local", "registry-watcher", "predictor", "interaction-logger", "interaction-logger-2", "gateway"]
LOGGERS = ["interaction-logger", "interaction-logger-2"]
IMAGE = os.environ.get("MLOPS_IMAGE", "mlops-inference:test")
EMF_NAMESPACE = "mlops/compose-test"
ANSWERED = []  # how many 200s each test got from the gateway, for the EMF check


CAPTURE = None  # pytest's capture manager, so progress reaches the terminal while tests run


def uncaptured():
    return CAPTURE.global_and_fixture_disabled() if CAPTURE else contextlib.nullcontext()


def say(msg):
    """Progress for the person watching, printed past pytest's output capture."""
    with uncaptured():
        print(f"[compose {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(argv, check=True, timeout=600, quiet=True, env=None):
    out = subprocess.run(argv, capture_output=quiet, text=True, timeout=timeout, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def compose_command():
    if run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("no `docker compose` and no docker-compose: scripts/test installs Debian's docker-compose")


class Compose:
    """One compose project (a unique name, so a developer's own stack is left alone) of the
    compose file `file` and its `services`."""

    def __init__(self, file="docker-compose.yml", services=SERVICES, suffix=""):
        self.project, self.services = f"mlopstest{os.getpid()}{suffix}", services
        self.argv = [*compose_command(), "-p", self.project,
                     "-f", str(ROOT / file), "-f", str(ROOT / "tests/python/compose-observe.yml")]
        self.ids = {}
        self.env = dict(os.environ, MLOPS_IMAGE=IMAGE, GATEWAY_PUBLISH="127.0.0.1:", GATEWAY_GRPC_PUBLISH="127.0.0.1:", WATCHER_POLL_MS="500",
                        METRICS_EMF_NAMESPACE=EMF_NAMESPACE, METRICS_EMF_INTERVAL_SECS="3")

    def __call__(self, *args, **kw):
        return run([*self.argv, *args], env=self.env, **kw)

    def container(self, service):
        """The service's container id (stable: the test restarts containers, never recreates them)."""
        if service not in self.ids:
            self.ids[service] = self("ps", "-q", service).stdout.strip()
            assert self.ids[service], f"no container for {service}"
        return self.ids[service]

    def inspect(self, service):
        return json.loads(run(["docker", "inspect", self.container(service)]).stdout)[0]

    def published(self, service, port):
        return self("port", service, str(port)).stdout.strip()

    def exec(self, service, *argv):
        return run(["docker", "exec", self.container(service), *argv], check=False)

    def log_lines(self, service, tail="all"):
        """The service's last JSON log lines (stdout and stderr), parsed."""
        out = run(["docker", "logs", "--tail", str(tail), self.container(service)])
        return [json.loads(line) for line in (out.stdout + out.stderr).splitlines() if line.startswith("{")]

    def wait_healthy(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            states = {s: self.inspect(s)["State"] for s in self.services}
            health = {s: st.get("Health", {}).get("Status", st["Status"]) for s, st in states.items()}
            if all(h == "healthy" for h in health.values()):
                return
            dead = [s for s, st in states.items() if st["Status"] == "exited"]
            assert not dead, f"{dead} exited while starting:\n" + self("logs", "--tail", "30", *dead).stdout
            time.sleep(1)
        raise AssertionError(f"not healthy after {timeout}s: {health}")


@pytest.fixture(scope="module")
def image(pytestconfig):
    global CAPTURE
    CAPTURE = pytestconfig.pluginmanager.getplugin("capturemanager")
    if run(["docker", "info"], check=False).returncode != 0:
        pytest.fail("no Docker engine answers (`docker info` failed): scripts/test installs docker.io and starts dockerd")
    say(f"building image {IMAGE} with docker/build-image (the tests' debug binaries + debootstrap base, no registry)")
    with uncaptured():
        run([str(ROOT / "docker/build-image"), IMAGE], quiet=False, timeout=1800,
            env=dict(os.environ, MLOPS_IMAGE_PROFILE="debug"))
    return IMAGE


@pytest.fixture(scope="module")
def compose(image):
    yield from compose_up(Compose())


def compose_up(c, front="gateway"):
    """Brings `c` up, healthy, with `c.stack` (the front door's URL, the feature store) for the
    tests; down (volumes too) at the end."""
    say(f"docker compose up (project {c.project}): {', '.join(c.services)}; waiting for every healthcheck")
    try:
        c("up", "-d", "--no-build", timeout=300)
        c.wait_healthy()
        gateway, sagemaker = c.published(front, 8080), c.published("sagemaker-local", 9000)
        say(f"stack healthy: gateway on http://{gateway}, sagemaker-local (observation port) on http://{sagemaker}")
        aws = dict(AWS_ENDPOINT_URL=f"http://{sagemaker}", AWS_REGION=REGION, AWS_ACCESS_KEY_ID=ACCESS_KEY,
                   AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        c.stack = SimpleNamespace(url=f"http://{gateway}", sagemaker_url=f"http://{sagemaker}",
                                  client=lambda service: aws_client(service, aws))
        yield c
    finally:
        logs = c("logs", "--no-color", "--tail", "40", check=False).stdout
        (pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"{c.project}.log").write_text(logs)
        say("docker compose down -v (containers, networks, volumes)")
        c("down", "-v", "--remove-orphans", check=False, timeout=120)


def test_prediction_through_the_containers_is_recorded(compose):
    say("predicting through the gateway; looking the interaction up in the feature store")
    status, _, raw = http("POST", compose.stack.url + "/v1/predict", {"instances": [row(0)]})
    assert status == 200, raw
    body = json.loads(raw)
    p = body["predictions"][0]
    assert abs(p["probability"] - EXPECTED[0]) <= 1e-6, (p, EXPECTED[0])
    assert body["model"]["model_package_version"] == 1, body
    ANSWERED.append(1)
    found = wait_for_records(feature_store(compose.stack), {p["interaction_id"]: p["probability"]})
    assert found[p["interaction_id"]]["model_package_version"] == "1", found


def test_gateway_cannot_reach_sagemaker(compose):
    say("checking the network split: the gateway must not reach sagemaker-local; the three bridges must")
    networks = {s: set(compose.inspect(s)["NetworkSettings"]["Networks"]) for s in SERVICES}
    prod, inference = f"{compose.project}_prod", f"{compose.project}_inference"
    assert networks["sagemaker-local"] == {prod}, networks
    assert networks["gateway"] == {inference}, networks
    for bridge in ("predictor", "interaction-logger", "registry-watcher"):
        assert networks[bridge] == {prod, inference}, networks
        ok = compose.exec(bridge, "mlops-healthcheck", "http://sagemaker-local:9000/healthz")
        assert ok.returncode == 0, (bridge, ok.stdout, ok.stderr)

    by_name = compose.exec("gateway", "mlops-healthcheck", "http://sagemaker-local:9000/healthz")
    assert by_name.returncode == 1 and "cannot resolve" in by_name.stderr, (by_name.stdout, by_name.stderr)
    ip = compose.inspect("sagemaker-local")["NetworkSettings"]["Networks"][prod]["IPAddress"]
    by_ip = compose.exec("gateway", "mlops-healthcheck", f"http://{ip}:9000/healthz")
    assert by_ip.returncode == 1 and "connect" in by_ip.stderr, (by_ip.stdout, by_ip.stderr)
    say(f"gateway -> sagemaker-local: by name: {by_name.stderr.strip()}; by IP: {by_ip.stderr.strip()}")


def test_logger_container_killed_mid_load_loses_nothing(compose):
    acknowledged, failures = {}, []
    say("sending predictions continuously (4 clients, 10 s); SIGKILL the interaction-logger container at 2 s")
    t = threading.Thread(target=load, args=(compose.stack, 10.0, acknowledged), kwargs={"workers": 4, "failures": failures})
    t.start()
    time.sleep(2.0)
    logger = compose.container("interaction-logger")
    run(["docker", "kill", "--signal", "KILL", logger])
    state = compose.inspect("interaction-logger")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137, state
    before = len(acknowledged)
    time.sleep(2.0)
    say(f"logger down ({len(acknowledged) - before} predictions answered meanwhile); docker start")
    run(["docker", "start", logger])
    t.join()
    say(f"{len(acknowledged)} acknowledged, {len(failures)} failed; waiting for every one in the feature store")
    assert not failures, f"predictions failed while the logger was down: {failures[:5]}"
    ANSWERED.append(len(acknowledged))
    assert len(acknowledged) > 200, "the load generator got too few answers to prove anything"
    wait_for_records(feature_store(compose.stack), acknowledged, timeout=120)
    adoptions = [(svc, line) for svc in LOGGERS for line in compose.log_lines(svc)
                 if line.get("message") == "adopting the spool of a logger that is gone"]
    assert len(adoptions) == 1, adoptions
    say(f"every acknowledged interaction arrived; the killed logger's spool was adopted by {adoptions[0][0]} "
        f"({adoptions[0][1].get('pending')} pending)")


def test_sigterm_stops_every_service_after_draining(compose):
    say("docker compose stop (SIGTERM, 30 s grace); every service must exit 0 after draining")
    compose("stop", "-t", "30", timeout=180)
    for service in SERVICES:
        state = compose.inspect(service)["State"]
        lines = compose.log_lines(service)
        assert state["Status"] == "exited" and state["ExitCode"] == 0 and not state["OOMKilled"], (service, state, lines)
        assert any(line.get("message") == "SIGTERM: shutting down" for line in lines), (service, lines)
    for svc in LOGGERS:
        logger = [line for line in compose.log_lines(svc) if line.get("message") == "interaction-logger stopped"]
        assert logger and logger[-1]["pending"] == 0, (svc, logger)
    gateway = [line for line in compose.log_lines("gateway") if line.get("message") == "gateway stopped"]
    assert gateway and gateway[-1]["buffered"] == 0, gateway
    say("all six exited 0; the loggers' spools and the gateway's retry buffer were empty")


def test_metrics_reached_stdout_as_cloudwatch_emf(compose):
    """What CloudWatch would make of the gateway's EMF lines: the per-interval increases of
    `gateway_predict_requests_total{status=200}` add up to the answers the tests counted."""
    assert compose.inspect("gateway")["State"]["Status"] == "exited", "runs after the SIGTERM test"
    for service in SERVICES[1:]:
        docs = [d for d in compose.log_lines(service) if "_aws" in d]
        assert docs, f"{service} printed no EMF document"
        assert {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in docs} == {EMF_NAMESPACE}
        assert all(d["service"] == service.removesuffix("-2") for d in docs)
    gateway = [d for d in compose.log_lines("gateway") if "_aws" in d and d.get("status") == "200"]
    sent = sum(d["gateway_predict_requests_total"] for d in gateway)
    say(f"gateway EMF: {len(gateway)} intervals, {sent:.0f} successful predictions (the tests counted {sum(ANSWERED)})")
    assert sent == sum(ANSWERED), (sent, ANSWERED)
    logger = [d for d in compose.log_lines("interaction-logger") if "_aws" in d and "logger_spool_depth" in d]
    assert logger[-1]["logger_spool_depth"] == 0, logger[-1]


def test_the_one_process_compose_file_runs_the_front_door_in_one_container(image):
    """docker-compose.one-process.yml: sagemaker-local, the watcher and one `front-door`
    container; a prediction is recorded, and SIGTERM drains it (spool and buffer empty, exit 0)."""
    services = ["sagemaker-local", "registry-watcher", "front-door"]
    with contextlib.contextmanager(compose_up)(Compose("docker-compose.one-process.yml", services, "one"),
                                               front="front-door") as c:
        status, _, raw = http("POST", c.stack.url + "/v1/predict", {"instances": [row(0)]})
        assert status == 200, raw
        p = json.loads(raw)["predictions"][0]
        assert abs(p["probability"] - EXPECTED[0]) <= 1e-6, (p, EXPECTED[0])
        wait_for_records(feature_store(c.stack), {p["interaction_id"]: p["probability"]})
        say("one-process: recorded; docker compose stop")
        c("stop", "-t", "30", timeout=180)
        state = c.inspect("front-door")["State"]
        lines = c.log_lines("front-door")
        assert state["Status"] == "exited" and state["ExitCode"] == 0, (state, lines[-5:])
        stopped = {line["message"]: line for line in lines if line.get("message") in ("gateway stopped", "interaction-logger stopped")}
        assert stopped["gateway stopped"]["buffered"] == 0 and stopped["interaction-logger stopped"]["pending"] == 0, stopped
        say("one-process: exited 0, its spool and buffer empty")
        # EMF: each part's series under its own service's name, as the microservices publish
        # them (the template's alarms and dashboard name them so in either shape).
        docs = [d for d in lines if "_aws" in d]
        answered = [d for d in docs if "gateway_predict_requests_total" in d and d.get("status") == "200"]
        assert {d["service"] for d in answered} == {"gateway"}, answered[:2]
        assert sum(d["gateway_predict_requests_total"] for d in answered) == 1, answered
        spool = [d for d in docs if "logger_spool_depth" in d]
        assert spool and {d["service"] for d in spool} == {"interaction-logger"}, spool[:2]
        assert spool[-1]["logger_spool_depth"] == 0, spool[-1]
        assert {d["service"] for d in docs if any(k.startswith("predictor_") for k in d)} == {"predictor"}
