"""Evidence for the approver, on the whole stack with the pipeline's listener: a candidate
registered PendingManualApproval is shadowed on its own endpoint by itself, the predictor
mirrors live requests to it off the answer path, and the registry-watcher's comparison (page,
JSON, metrics, and the copy stored with the package that `mlops-deploy status` reads) says
exactly what Python xgboost says about the same rows. A slow or failing candidate leaves live
answers alone; approving ends the shadow and deploys, rejecting ends it and removes its model."""
import json
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import xgboost as xgb

from deploy import local_booster
from conftest import binary, running_stack, stack_running
from test_stack_e2e import ROOT, feature_store, metric, predict, records, row

SHADOW = "my-mlops-prod-endpoint-shadow"


def shadow_stack(tmp_path_factory, shape="microservices"):
    """The stack these tests run on, in either shape (test_one_process_shadow.py)."""
    yield from running_stack(tmp_path_factory, "shadow-" + shape, poll_ms=200, pipeline=True, shadow=True,
                             shape=shape)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from shadow_stack(tmp_path_factory)


def cli(stack, *args):
    return stack.mlops_deploy(*args, timeout=120)


def train_candidate(stack, rounds):
    """pipeline/train.py (the Train stage's step) with `rounds` boosting rounds: a model that
    differs from the live one in a known way, registered PendingManualApproval."""
    env = dict(stack.pipeline_env, TRAIN_ROUNDS=str(rounds), TRAIN_MAX_DEPTH="2")
    out = subprocess.run(["python3", str(ROOT / "pipeline" / "train.py")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def booster(stack, url):
    return local_booster(stack, url)


def scores(b, rows):
    x = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    return b.predict(xgb.DMatrix(x, feature_names=b.feature_names)).astype(np.float64)


def view(stack):
    return json.loads(urllib.request.urlopen(f"http://{stack.watcher.addrs['admin']}/shadow.json", timeout=5).read())


def wait(what, predicate, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def shadowed(stack, version):
    """Waits until the candidate is shadowed and the predictor mirrors to it (one-row requests
    until the predictor has mirrored one); returns the rows sent that were mirrored."""
    wait(f"v{version} shadowed", lambda: view(stack)["shadowing"] and view(stack)["candidate"]["version"] == version)
    predictor = "http://" + stack.predictor.addrs["admin"]
    before = metric(predictor, "predictor_shadow_mirrored_total")
    for _ in range(200):
        status, _, _ = predict(stack, {"instances": [row(999)]})
        assert status == 200
        if metric(predictor, "predictor_shadow_mirrored_total") > before:
            return [row(999)]
        time.sleep(0.05)
    raise AssertionError("the predictor never mirrored a request")


def package(stack, version):
    sm = stack.client("sagemaker")
    return sm, sm.describe_model_package(ModelPackageName=f"my-mlops-prod-pkg/{version}")


def test_the_comparison_of_a_shadowed_candidate_is_what_xgboost_says(stack):
    candidate = train_candidate(stack, rounds=6)
    assert candidate["model_package_version"] == 2
    sent = shadowed(stack, 2)
    # Train's figures for both models on the same rows are on the approver's page too.
    live = candidate["live_model"]
    assert live["version"] == 1 and view(stack)["against_live"].startswith(
        f"on the same {candidate['rows']['validation']} validation rows, live v1: AUC {candidate['validation_auc']:.4f} vs {live['auc']:.4f}")
    # 120 live requests of 1 to 4 rows from 8 clients at once: each answer is the live model's.
    requests = [[row(i) for i in range(start, start + 1 + start % 4)] for start in range(0, 600, 5)]
    answers, ids = [None] * len(requests), [None] * len(requests)

    def client(k):
        for j in range(k, len(requests), 8):
            status, _, body = predict(stack, {"instances": requests[j]})
            assert status == 200, body
            answers[j] = [p["probability"] for p in body["predictions"]]
            ids[j] = [p["interaction_id"] for p in body["predictions"]]
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    sent += [r for req in requests for r in req]
    live_model = booster(stack, package(stack, 1)[1]["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
    cand_model = booster(stack, candidate["model_data_url"])
    live, cand = scores(live_model, sent), scores(cand_model, sent)
    np.testing.assert_allclose([p for a in answers for p in a], live[1:], atol=1e-6)
    diff = cand - live
    assert np.abs(diff).mean() > 0.01, "the candidate must differ from the live model for the test to mean anything"

    c = wait("every mirrored row compared", lambda: (v := view(stack)["comparison"]) and v["summary"]["rows"] == len(sent) and v)
    s = c["summary"]
    assert c["version"] == 2 and s["requests"] == len(requests) + 1
    assert s["mean_diff"] == pytest.approx(diff.mean(), abs=1e-6)
    assert s["mean_abs_diff"] == pytest.approx(np.abs(diff).mean(), abs=1e-6)
    assert s["agreement"] == pytest.approx(((live >= 0.5) == (cand >= 0.5)).mean(), abs=1e-12)
    # Quantiles come from 10-bins-per-decade histograms: within 13% of the exact value.
    for key, q in (("abs_diff_p50", 0.5), ("abs_diff_p99", 0.99)):
        exact = np.sort(np.abs(diff))[int(np.ceil(q * len(diff))) - 1]
        assert s[key] == pytest.approx(exact, rel=0.13), key
    assert s["candidate"]["errors"] == 0 and s["live"]["errors"] == 0
    assert s["candidate"]["latency_p50_ms"] > 0 and s["live"]["latency_p50_ms"] > 0
    assert sum(s["live_scores"]) == sum(s["candidate_scores"]) == len(sent)

    # The same figures: as metrics, on the approver's page, and stored with the package,
    # where `mlops-deploy status` (and the pipeline's gate) read them.
    admin = "http://" + stack.watcher.addrs["admin"]
    assert metric(admin, 'watcher_shadow_rows{candidate="2"}') == len(sent)
    assert metric(admin, 'watcher_shadow_agreement{candidate="2"}') == pytest.approx(s["agreement"])
    page = urllib.request.urlopen(admin + "/shadow", timeout=5).read().decode()
    assert "Candidate v2" in page and page.count("<rect") == 40 and "<script" not in page
    status = wait("the comparison stored", lambda: (st := cli(stack, "status"))["candidate"]["comparison"]
                  and st["candidate"]["comparison"]["rows"] == len(sent) and st)
    assert status["candidate"]["shadowed"] is True and status["candidate"]["version"] == 2
    assert status["candidate"]["comparison"]["mean_diff"] == pytest.approx(s["mean_diff"], abs=1e-9)
    metadata = package(stack, 2)[1]["CustomerMetadataProperties"]
    assert f"rows={len(sent)} " in metadata["shadow.summary"]
    assert all(len(v) <= 256 for v in metadata.values()) and len(metadata) <= 50

    # Each mirrored row's candidate answer is recorded beside the live one in the feature store.
    live_ids = [i for req in ids for i in req]
    fs = feature_store(stack)
    found = wait("the shadow records shipped", lambda: len(f := records(fs, [i + ".shadow" for i in live_ids])) == len(live_ids) and f)
    live_records = records(fs, live_ids)
    for k, i in enumerate(live_ids):
        r, l = found[i + ".shadow"], live_records[i]
        assert r["source"] == "shadow" and r["shadow_of"] == i, r
        assert float(r["prediction"]) == pytest.approx(cand[k + 1], abs=1e-6), r
        assert float(r["live_prediction"]) == float(l["prediction"]) == pytest.approx(live[k + 1], abs=1e-6)
        assert (r["model_package_version"], r["live_model_package_version"], l["model_package_version"]) == ("2", "1", "1")
        assert r["features_csv"] == l["features_csv"] and r["endpoint_name"] == SHADOW and r["variant_name"] == "v2"


def exists(call, **kw):
    try:
        call(**kw)
        return True
    except Exception as e:  # sagemaker-local answers ValidationException, as SageMaker does
        assert "ValidationException" in str(e), e
        return False


def test_approving_ends_the_shadow_and_deploys_a_newer_candidate_takes_over_rejecting_removes_it(stack):
    sm, _ = package(stack, 2)
    config = sm.describe_endpoint(EndpointName=SHADOW)["EndpointConfigName"]
    assert exists(sm.describe_model, ModelName=f"{SHADOW}-v2")
    cli(stack, "approve", "2", "--reason", "the shadow comparison looked right")
    wait("v2 live and the shadow gone", lambda: (st := cli(stack, "status"))["in_sync"]
         and [v["version"] for v in st["live"]] == [2] and st["candidate"] is None and st)
    wait("the shadow endpoint deleted", lambda: not exists(sm.describe_endpoint, EndpointName=SHADOW))
    wait("its config and model deleted", lambda: not exists(sm.describe_endpoint_config, EndpointConfigName=config)
         and not exists(sm.describe_model, ModelName=f"{SHADOW}-v2"))
    assert exists(sm.describe_model, ModelName="my-mlops-prod-endpoint-v2"), "the live endpoint's model"
    v2 = package(stack, 2)[1]
    assert v2["ModelApprovalStatus"] == "Approved"
    assert "shadow.summary" in v2["CustomerMetadataProperties"], "the evidence stays with the approved package"
    assert view(stack)["candidate"] is None and view(stack)["shadowing"] is False

    train_candidate(stack, rounds=3)
    shadowed(stack, 3)
    assert exists(sm.describe_model, ModelName=f"{SHADOW}-v3")
    # A newer candidate registered while v3 waits takes the shadow over; v3's model goes.
    train_candidate(stack, rounds=2)
    shadowed(stack, 4)
    wait("v3's shadow model removed", lambda: not exists(sm.describe_model, ModelName=f"{SHADOW}-v3"))
    cli(stack, "reject", "4", "--reason", "not better")
    wait("the rejected candidate's shadow removed", lambda: not exists(sm.describe_endpoint, EndpointName=SHADOW))
    wait("its model removed", lambda: not exists(sm.describe_model, ModelName=f"{SHADOW}-v4"))
    assert [v["version"] for v in cli(stack, "status")["live"]] == [2], "rejecting a candidate leaves the live model"


def test_the_pipelines_gate_shows_the_comparison_while_it_waits(stack):
    """`mlops-pipeline run`: Train registers v5, the candidate is shadowed, and the gate prints
    the comparison as live traffic moves it; approving there deploys."""
    import re
    env = dict(stack.pipeline_env, PIPELINE_POLL_MS="200", PIPELINE_APPROVE_COMMAND="mlops-deploy",
               TRAIN_ROUNDS="4", TRAIN_MAX_DEPTH="2")
    run = subprocess.Popen([str(binary().parent / "mlops-pipeline"), "run", "--once"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    threading.Thread(target=lambda: [lines.append(line) for line in run.stdout], daemon=True).start()
    try:
        wait("the gate", lambda: any("Approval gate: v5" in line for line in lines))
        sent = len(shadowed(stack, 5))
        for i in range(40):
            assert predict(stack, {"instances": [row(i)]})[0] == 200
        sent += 40
        shown = wait("the comparison at the gate", lambda: [int(m.group(1)) for line in lines
                     if (m := re.search(r"shadow v5 on live traffic: (\d+) rows", line))
                     and int(m.group(1)) == sent])
        assert shown
        cli(stack, "approve", "5", "--reason", "the gate's comparison")
        assert run.wait(timeout=120) == 0, "".join(lines)
    finally:
        run.kill()
    assert any("Deploy succeeded" in line for line in lines), "".join(lines)
    assert [v["version"] for v in cli(stack, "status")["live"]] == [5]


def test_a_candidate_that_cannot_load_does_not_block_the_next_ones_shadow(stack):
    """v6's artifact does not exist: its shadow endpoint fails (SageMaker would leave it
    Failed, refusing updates). v7, registered next, is shadowed anyway: the failed endpoint is
    deleted and created again, and v7 is compared on live traffic."""
    sm, _ = package(stack, 5)
    features = "age,tenure_months,monthly_charges,support_calls,num_products,late_payments,satisfaction,has_contract"
    cli(stack, "register", "--model-data-url", "s3://nowhere/missing/model.tar.gz", "--features", features)
    wait("v6's shadow endpoint failed", lambda: exists(sm.describe_endpoint, EndpointName=SHADOW)
         and sm.describe_endpoint(EndpointName=SHADOW)["EndpointStatus"] == "Failed")
    train_candidate(stack, rounds=3)
    mirrored = shadowed(stack, 7)
    assert mirrored, "v7 is shadowed and compared"
    assert sm.describe_endpoint(EndpointName=SHADOW)["EndpointStatus"] == "InService"
    cli(stack, "reject", "7", "--reason", "cleaning up")
    cli(stack, "reject", "6", "--reason", "its artifact is missing")
    wait("the shadow removed", lambda: not exists(sm.describe_endpoint, EndpointName=SHADOW))


@pytest.mark.parametrize("fault", ["delay:2500", "error"])
def test_a_slow_or_failing_candidate_leaves_live_answers_alone(tmp_path_factory, fault):
    env = {"SAGEMAKER_LOCAL_ENDPOINT_FAULTS": f"{SHADOW}={fault}", "PREDICTOR_SHADOW_TIMEOUT_MS": "10000",
           "PREDICTOR_SHADOW_QUEUE": "8"}
    with stack_running(tmp_path_factory, "shadow-fault", poll_ms=200, pipeline=True, shadow=True, extra_env=env) as stack:
        train_candidate(stack, rounds=3)
        wait("v2 shadowed", lambda: view(stack)["shadowing"])
        latencies = []
        for i in range(150):
            started = time.time()
            status, _, body = predict(stack, {"instances": [row(i)]})
            latencies.append(time.time() - started)
            assert status == 200, body
        # Not a timing target: a live answer that waited for the candidate would take 2.5 s.
        assert max(latencies) < 1.5, sorted(latencies)[-5:]
        predictor = "http://" + stack.predictor.addrs["admin"]
        mirrored = metric(predictor, "predictor_shadow_mirrored_total")
        assert mirrored >= 1
        s = wait("outcomes reported", lambda: (c := view(stack)["comparison"]) and c["summary"]["requests"] >= mirrored
                 and c["summary"], timeout=30)
        if fault == "error":
            assert s["candidate"]["errors"] == s["requests"] and s["candidate"]["error_rate"] == 1.0 and s["rows"] == 0
            assert s["live"]["errors"] == 0
        else:
            # The queue of 8 fills while two calls take 2.5 s each: the rest is dropped, counted.
            assert metric(predictor, 'predictor_shadow_skipped_total{reason="queue_full"}') > 0
            assert s["candidate"]["latency_p50_ms"] > 2000 > 100 > s["live"]["latency_p50_ms"]
            assert s["candidate"]["errors"] == 0 and s["rows"] == s["requests"]
