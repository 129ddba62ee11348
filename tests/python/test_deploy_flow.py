"""The model deployment flow on the whole stack, step by step with `mlops-deploy` (no listener:
the stack here does not deploy on approval, so each step can be checked): train and register
v2 (pipeline/train.py, the Train stage's step), approve it, deploy it while clients keep
predicting, reject it and roll back, and the watcher riding out a SageMaker outage."""
import json
import subprocess
import threading
import time

import pytest

from deploy import local_booster, xgboost_predict
from conftest import running_stack
from test_stack_e2e import EXPECTED, ROOT, feature_store, http, predict, records, row

ROW0 = row(0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "deploy", poll_ms=300)


def cli(stack, *args, check=True):
    return stack.mlops_deploy(*args, check=check, timeout=120)


def registry(stack):
    return json.loads(http("GET", stack.url + "/v1/model")[2])["registry"]


def wait_registry(stack, predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = registry(stack)
        if r and predicate(r):
            return r
        time.sleep(0.05)
    raise AssertionError(f"registry never matched: {registry(stack)}")


def model_prediction(stack, url):
    """What the model at `url` predicts for row 0, by xgboost itself."""
    return xgboost_predict(local_booster(stack, url), [ROW0])[0]


@pytest.fixture(scope="module")
def v2(stack):
    out = subprocess.run(["python3", str(ROOT / "pipeline" / "train.py")], env=stack.pipeline_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    registered = json.loads(out.stdout)
    assert registered["model_package_version"] == 2, registered
    assert registered["rows"]["training"] + registered["rows"]["validation"] == 1000, registered
    registered["p"] = model_prediction(stack, registered["model_data_url"])
    assert abs(registered["p"] - EXPECTED[0]) > 1e-4, "v2 must answer differently from v1 for the test to tell them apart"
    return registered


def test_register_then_approve_goes_out_of_sync(stack, v2):
    r = wait_registry(stack, lambda r: r["in_sync"])
    assert r["latest_approved_version"] == 1 and [v["model_package_version"] for v in r["live"]] == [1]
    assert cli(stack, "status")["in_sync"] is True
    cli(stack, "approve", "2", "--reason", "retrained on the feature store")
    r = wait_registry(stack, lambda r: not r["in_sync"], timeout=3)  # within one poll (300 ms)
    assert r["latest_approved_version"] == 2 and [v["model_package_version"] for v in r["live"]] == [1]


def test_deploy_under_load_switches_without_a_failed_request(stack, v2):
    answers, stop = [], threading.Event()

    def client(n):
        while not stop.is_set():
            status, _, body = predict(stack, {"instances": [ROW0]})
            answers.append((n, status, body))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    out = cli(stack, "deploy", "--poll-ms", "50")
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert out["action"] == "updated" and out["to"]["version"] == 2, out

    failed = [(s, b) for _, s, b in answers if s != 200]
    assert not failed, failed[:3]
    seen = {n: [] for n in range(4)}
    for n, _, body in answers:
        p, version = body["predictions"][0]["probability"], body["model"].get("model_package_version")
        actual = 1 if abs(p - EXPECTED[0]) < 1e-6 else 2 if abs(p - v2["p"]) < 1e-6 else None
        assert actual is not None, p
        assert version in (actual, None), f"answer from v{actual} tagged v{version}"
        seen[n].append(actual)
    for n, versions in seen.items():
        assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions), f"client {n}: answers switch once, from v1 to v2"
    wait_registry(stack, lambda r: r["in_sync"] and r["latest_approved_version"] == 2)

    # The logged interactions carry the version that answered.
    tagged = {b["predictions"][0]["interaction_id"]: b["model"].get("model_package_version") for _, _, b in answers}
    deadline = time.time() + 30
    while time.time() < deadline and len(found := records(feature_store(stack), list(tagged))) < len(tagged):
        time.sleep(0.5)
    assert len(found) == len(tagged)
    for iid, version in tagged.items():
        assert found[iid].get("model_package_version") == (str(version) if version else None), (iid, found[iid], version)
    assert cli(stack, "deploy")["action"] == "none", "deploying again changes nothing"


def test_reject_and_deploy_rolls_back(stack, v2):
    cli(stack, "reject", "2", "--reason", "worse on the holdout")
    out = cli(stack, "deploy", "--poll-ms", "50")
    assert out["action"] == "updated" and out["to"]["version"] == 1, out
    status, _, body = predict(stack, {"instances": [ROW0]})
    assert status == 200 and abs(body["predictions"][0]["probability"] - EXPECTED[0]) < 1e-6
    r = wait_registry(stack, lambda r: r["in_sync"] and r["latest_approved_version"] == 1)
    assert [v["model_package_version"] for v in r["live"]] == [1]


def test_watcher_serves_its_last_status_through_a_sagemaker_outage(stack):
    before = wait_registry(stack, lambda r: r["in_sync"])
    listen = stack.sagemaker.addrs["http"]
    args = stack.sagemaker.argv[1:]
    stack.sagemaker.stop()
    try:
        r = wait_registry(stack, lambda r: r["last_poll_failed"], timeout=5)
        assert r["latest_approved_version"] == before["latest_approved_version"] and r["in_sync"], r
        assert "last_error" not in r and "Connection" not in json.dumps(r), "the public page shows no AWS error text"
        assert http("GET", "http://" + stack.watcher.addrs["admin"] + "/readyz")[0] == 200
    finally:
        i = args.index("--listen")
        args[i + 1] = listen
        stack.restart(stack.sagemaker, args)
    wait_registry(stack, lambda r: not r["last_poll_failed"] and r["in_sync"], timeout=10)
