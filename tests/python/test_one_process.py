"""The one-process shape (`front-door`: the gateway, the predictor and the interaction logger
in one process, calling each other in process) against the same end-to-end tests as the
microservices, imported from test_stack_e2e.py and run here on a one-process stack; and the
shape's own promise: SIGKILLed under load from several clients and restarted on its spool,
every interaction a client was answered for reaches the feature store with the prediction
the client got, and no request fails that was not in flight at the kill (or sent while the
process was down)."""
import pathlib
import sys
import threading
import time
import urllib.error

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import running_stack  # noqa: E402
# in test_stack_e2e.py's order (each test relies on what ran before it, as there)
from test_stack_e2e import (CUSTOMERS, feature_store, http, predict, row, wait_for_records,  # noqa: E402,F401,I001
                            test_predict_matches_xgboost_and_is_recorded,
                            test_bad_input_gets_a_problem_document_and_logs_nothing,
                            test_openapi_health_and_readiness)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "one-process", shape="one-process")


def test_one_process_serves_every_part(stack):
    assert stack.gateway is stack.predictor is stack.logger, "one process"
    assert stack.gateway.name == "front-door"
    assert {"http", "grpc", "admin"} <= set(stack.gateway.addrs), stack.gateway.addrs
    text = http("GET", "http://" + stack.logger.addrs["admin"] + "/metrics")[2].decode()
    for name in ("gateway_predict_requests_total", "predictor_requests_total", "logger_accepted_total"):
        assert name in text, f"{name}: every part's metrics under the names their services use"


def test_sigkill_under_load_then_restart_loses_no_acknowledged_interaction(stack):
    answered, broken = {}, []
    back = threading.Event()
    stop = time.time() + 6.0

    def client(w):
        i = w
        while time.time() < stop:
            sent_after_restart = back.is_set()
            try:
                status, _, body = predict(stack, {"instances": [row(i % 1000)]})
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                # no answer: a failure only once the restarted process listens (before that:
                # in flight at the kill, or sent while the process was down)
                if sent_after_restart:
                    broken.append(repr(e))
                time.sleep(0.05)
            else:
                if status == 200:
                    p = body["predictions"][0]
                    answered[p["interaction_id"]] = (p["probability"], ",".join(CUSTOMERS[i % 1000][1:9]))
                else:
                    broken.append((status, body))
            i += 6

    clients = [threading.Thread(target=client, args=(w,)) for w in range(6)]
    for c in clients:
        c.start()
    time.sleep(1.5)
    front, addrs = stack.gateway, dict(stack.gateway.addrs)
    before = len(answered)
    front.kill()  # SIGKILL: no drain, no flush
    time.sleep(0.5)
    stack.restart(front, ["--listen", addrs["http"], "--grpc-listen", addrs["grpc"], "--admin-listen", addrs["admin"]])
    back.set()
    for c in clients:
        c.join()
    assert before > 50 and len(answered) > before + 50, "too few answers before and after the kill to prove anything"
    assert broken == [], f"requests failed that were not in flight at the kill: {broken[:5]}"
    wait_for_records(feature_store(stack), answered)


def test_a_microservice_variable_with_no_meaning_here_is_named_at_start(tmp_path):
    """PREDICTOR_URL, LOGGER_URL and the parts' own listeners mean nothing in one process: set,
    front-door says so at start (a configuration written for the microservices is not applied
    by half in silence)."""
    import json
    import os
    import subprocess
    from conftest import binary
    env = dict(os.environ, LOG_FORMAT="json", PREDICTOR_URL="http://predictor:50051", LOGGER_LISTEN="0.0.0.0:50052",
               LOGGER_SPOOL_DIR=str(tmp_path / "spool"), AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.Popen([str(binary().parent / "front-door"), "--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
                             "--admin-listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        warned = None
        for line in proc.stdout:
            if "unused in one process" in line:
                warned = json.loads(line)
                break
            if " listening on " in line:
                break
        assert warned, "no warning before front-door listened"
        assert warned["level"] == "WARN" and "PREDICTOR_URL" in warned["variables"] and "LOGGER_LISTEN" in warned["variables"], warned
        assert "LOGGER_URL" not in warned["variables"], warned
    finally:
        proc.kill()
        proc.wait()
