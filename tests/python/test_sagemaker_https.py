"""sagemaker-local over HTTPS, as SageMaker is: the whole stack (both shapes) on a
sagemaker-local serving TLS with scripts/dev-ca's certificate, every SDK client (the
predictor's, the logger's, the watcher's, mlops-deploy's, boto3) trusting that CA through
AWS_CA_BUNDLE. Predictions are answered and recorded with the live version; the services
reuse their connections (sagemaker-local's handshake counter barely moves over many
requests); a client that does not trust the CA is refused with a TLS error, not served."""
import json
import os
import subprocess
import time

import pytest

from conftest import ROOT, running_stack
from stack import metric, run_tool
from test_stack_e2e import EXPECTED, feature_store, http, row, wait_for_records

HANDSHAKES = "sagemaker_local_tls_handshakes_total"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sagemaker-ca")
    subprocess.run([str(ROOT / "scripts" / "dev-ca"), str(folder)], check=True, capture_output=True)
    return folder


@pytest.fixture(scope="module", params=["microservices", "one-process"])
def stack(request, tmp_path_factory, certs):
    yield from running_stack(tmp_path_factory, f"https-{request.param}", sagemaker_tls=str(certs),
                             shape=request.param)


def handshakes(stack):
    """sagemaker-local's completed handshakes so far (this read's own included)."""
    return metric(stack.sagemaker_url, HANDSHAKES, ca=stack.sagemaker_ca)


def predict(stack, n):
    status, _, raw = http("POST", stack.url + "/v1/predict", {"instances": [row(n)]})
    assert status == 200, raw
    return json.loads(raw)


def test_predictions_are_answered_and_recorded_over_https(stack):
    assert stack.sagemaker_url.startswith("https://")
    deadline = time.time() + 15
    while (body := predict(stack, 0))["model"]["model_package_version"] != 1 and time.time() < deadline:
        time.sleep(0.2)  # until the watcher (over HTTPS too) has named the live package
    assert body["model"]["model_package_version"] == 1, body
    p = body["predictions"][0]
    assert p["probability"] == pytest.approx(EXPECTED[0], abs=1e-6)
    wait_for_records(feature_store(stack), {p["interaction_id"]: p["probability"]})  # boto3, over HTTPS
    status = stack.mlops_deploy("status")  # the pipeline's tool, over HTTPS
    assert status["in_sync"] is True and status["live"][0]["version"] == 1, status


def test_the_services_reuse_their_connections(stack):
    """Many requests, hardly any handshake: the SDK clients keep their connections."""
    for n in range(5):
        predict(stack, n)  # warm: every client has its connection
    before = handshakes(stack)
    requests = 200
    for n in range(requests):
        predict(stack, n % 5)
    new = handshakes(stack) - before - 1  # less this read's own handshake
    print(f"{stack.shape}: {new:.0f} TLS handshakes with sagemaker-local over {requests} requests")
    assert new <= 3, f"{new} handshakes for {requests} requests: connections are not reused"


def test_a_client_that_does_not_trust_the_ca_is_refused(stack):
    env = {k: v for k, v in stack.aws_env.items() if k != "AWS_CA_BUNDLE"}
    out = subprocess.run([os.path.join(stack.bin_dir, "mlops-deploy"), "status"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0, out.stdout
    assert "invalid peer certificate: UnknownIssuer" in out.stderr, out.stderr
    failures = metric(stack.sagemaker_url, "sagemaker_local_tls_handshake_failures_total", ca=stack.sagemaker_ca)
    assert failures >= 1, "sagemaker-local saw no failed handshake"
    # and with the CA the same command is served
    assert run_tool(stack.bin_dir, "mlops-deploy", ["status"], stack.aws_env)["in_sync"] is True
