"""Faults on the whole stack (real processes on port 0): the logger's spool on a small real
file system (tmpfs; the suite runs as root and fails loudly if it cannot mount one) filled
while the feature store is cut, then freed; a model that answers NaN and an input a 32-bit
float cannot hold; the interactions feature group deleted and created again under load; a
slow upload. Each answered interaction must be in the feature store with the prediction the
client got, and no service may report healthy while it cannot do its job."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import binary
from faults import CuttableProxy
from test_stack_e2e import feature_store, load, predict, row, wait_for_records

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from stack import Stack, metric  # noqa: E402

GROUP = "my-mlops-user-interactions-v1"


def status_of(url):
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def tmpfs(tmp_path):
    """A 6 MB file system of its own for the logger's spool."""
    mount = tmp_path / "interaction-logger"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs for the spool (the fault suite needs root): {done.stderr}"
    (mount / "filler").write_bytes(b"\0" * (1 << 20))
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder):
    """Writes `filler` (created with the file system, 1 MB already) until the file system is
    full; removing it frees at least that megabyte even when the spool filled the rest first."""
    with open(folder / "filler", "ab") as f:
        block = b"\0" * 65536
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass


def test_a_full_spool_disk_stops_the_logger_serving_and_loses_nothing(tmp_path, tmpfs):
    """Store cut, then the spool's disk filled: the logger reports NOT_SERVING (its readiness
    and metric say so) and refuses Log as retryable; buffered gateways keep answering; once
    the disk is freed the spool is reopened and the logger serves again, by itself; once the
    store is back every answered interaction arrives with the prediction its client got."""
    log = open(tmp_path / "stack.log", "w")
    stack = Stack(str(binary().parent), str(tmp_path), log=log)
    try:
        host, port = stack.sagemaker.addrs["http"].rsplit(":", 1)
        proxy = CuttableProxy(host, int(port))
        logger = stack.logger
        args = ["--listen", logger.addrs["grpc"], "--admin-listen", logger.addrs["admin"], "--spool-dir", str(tmpfs)]
        logger.stop()
        logger.env = dict(logger.env, AWS_ENDPOINT_URL_SAGEMAKER_FEATURESTORE_RUNTIME=proxy.url)
        stack.restart(logger, args)
        admin = "http://" + logger.addrs["admin"]
        proxy.down()

        acknowledged, failures = {}, []
        stop = threading.Event()
        clients = threading.Thread(target=load, args=(stack, 120, acknowledged), kwargs=dict(stop=stop, workers=4, failures=failures))
        clients.start()
        time.sleep(1.0)
        fill(tmpfs)
        wait(lambda: status_of(admin + "/readyz") == 503, 30, "the logger to stop serving on a full disk")
        assert metric(admin, "logger_spool_healthy") == 0
        time.sleep(2.0)  # answers keep coming while it cannot write (buffered in the gateway)
        during = len(acknowledged)
        os.remove(tmpfs / "filler")
        freed = time.time()
        recovered = wait(lambda: status_of(admin + "/readyz") == 200, 30, "the logger to serve again once the disk is freed")
        proxy.up()
        time.sleep(2.0)
        stop.set()
        clients.join()
        assert not failures, failures[:3]
        assert len(acknowledged) > during > 50, (during, len(acknowledged))
        assert metric(admin, "logger_spool_faults_total") >= 1
        wait(lambda: metric(stack.url, "gateway_interactions_buffered") == 0 and metric(admin, "logger_spool_depth") == 0,
             60, "the gateway's buffer and the spool to empty")
        found = wait_for_records(feature_store(stack), {k: v[0] for k, v in acknowledged.items()}, timeout=60)
        assert metric(stack.url, "gateway_interactions_dropped_total") == 0
        print(f"[faults] disk full: {len(acknowledged)} answered, {len(found)} delivered, "
              f"serving again {recovered - freed:.1f} s after the disk was freed")
    finally:
        codes = stack.stop()
        log.close()
    assert all(c == 0 for c in codes.values()), codes


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("faults")
    with open(data / "stack.log", "w") as log:
        s = Stack(str(binary().parent), str(data), log=log, poll_ms=300)
        yield s
        codes = s.stop()
    assert all(c == 0 for c in codes.values()), codes


def test_an_input_a_32_bit_float_cannot_hold_is_refused_with_its_field(stack):
    features = [63, 40, 29.01, 0, 4, 0, 2, 1]
    for body, field in (({"instances": [features[:3] + [1e300] + features[4:]]}, "instances[0][3]"),
                        ({"features": {"age": -1e39}}, "features.age")):
        status, _, problem = predict(stack, body)
        assert status == 400 and problem["field"] == field, (status, problem)
    status, _, problem = predict(stack, b"63,40,1e300,0,4,0,2,1", content_type="text/csv")
    assert status == 400 and "column 3" in problem["field"], problem


def cli(stack, *args):
    return stack.mlops_deploy(*args, timeout=120)


def test_a_model_that_answers_nan_gets_a_model_error_and_nothing_is_recorded(stack):
    """No answer without its record: a model whose scores are NaN (a broken base_score) is a
    model error naming the row (422), never a 200 with "probability": null; nothing reaches
    the logger. Then the good model is put back."""
    model = json.loads((ROOT / "demo" / "model" / "xgboost-model.json").read_text())
    model["learner"]["learner_model_param"]["base_score"] = "[NaN]"
    import deploy as d
    url = f"s3://faults/{time.time_ns()}/model.tar.gz"
    path = pathlib.Path(stack.data_dir) / "sagemaker-local" / "s3" / url[len("s3://"):]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(d.model_tar_gz(json.dumps(model).encode()))
    registered = cli(stack, "register", "--model-data-url", url,
                     "--features", "age,tenure_months,monthly_charges,support_calls,num_products,late_payments,satisfaction,has_contract")
    version = str(registered["version"])
    cli(stack, "approve", version, "--reason", "a poisoned model for the test")
    try:
        cli(stack, "deploy", "--poll-ms", "50")
        accepted = metric("http://" + stack.logger.addrs["admin"], "logger_accepted_total")
        for _ in range(5):
            status, _, problem = predict(stack, {"instances": [row(0), row(1)]})
            assert status == 422, (status, problem)
            assert problem["field"] == "rows[0]" and "non-finite" in problem["detail"], problem
        assert metric("http://" + stack.logger.addrs["admin"], "logger_accepted_total") == accepted, "nothing recorded"
        assert metric(stack.url, "gateway_interactions_rejected_total") == 0
    finally:
        cli(stack, "reject", version, "--reason", "answers NaN")
        cli(stack, "deploy", "--poll-ms", "50")
    status, _, body = predict(stack, {"instances": [row(0)]})
    assert status == 200 and body["predictions"][0]["probability"] is not None, body


def test_a_deleted_and_recreated_feature_group_delays_but_dead_letters_nothing(stack):
    """The interactions group vanishes under load and comes back: what the logger could not
    write waits (retried with backoff, never dead-lettered) and then arrives."""
    sm = stack.client("sagemaker")
    described = sm.describe_feature_group(FeatureGroupName=GROUP)
    acknowledged = {}
    stop = threading.Event()
    clients = threading.Thread(target=load, args=(stack, 60, acknowledged), kwargs=dict(stop=stop, workers=4))
    clients.start()
    time.sleep(0.5)
    sm.delete_feature_group(FeatureGroupName=GROUP)
    # What was stored before goes with the group (as on AWS); what is answered from now on
    # must reach the group that replaces it.
    before = set(acknowledged)
    time.sleep(2.0)
    keep = ("RecordIdentifierFeatureName", "EventTimeFeatureName", "FeatureDefinitions", "OnlineStoreConfig",
            "OfflineStoreConfig", "Description")
    config = {k: described[k] for k in keep if k in described}
    config["OfflineStoreConfig"] = {"S3StorageConfig": {"S3Uri": described["OfflineStoreConfig"]["S3StorageConfig"]["S3Uri"]}}
    sm.create_feature_group(FeatureGroupName=GROUP, **config)
    time.sleep(1.0)
    stop.set()
    clients.join()
    admin = "http://" + stack.logger.addrs["admin"]
    wait(lambda: metric(admin, "logger_spool_depth") == 0, 60, "the spool to ship once the group is back")
    assert metric(admin, "logger_dead_lettered_total") == 0
    assert metric(admin, "logger_retried_total") > 0, "the missing group was retried"
    after = {k: v[0] for k, v in acknowledged.items() if k not in before}
    assert len(after) > 50, len(after)
    wait_for_records(feature_store(stack), after, timeout=30)


def test_a_slow_upload_gets_408_and_frees_its_slot(stack):
    host, port = stack.gateway.addrs["http"].split(":")
    body = json.dumps({"instances": [row(0)]}).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:5])
        started = time.time()
        answer = sock.recv(65536).decode()
        waited = time.time() - started
    assert answer.startswith("HTTP/1.1 408"), answer
    assert 1.5 < waited < 6, waited  # GATEWAY_BODY_TIMEOUT_MS, 2 s by default
    assert "did not arrive" in answer
    status, _, ok = predict(stack, {"instances": [row(1)]})
    assert status == 200, ok
