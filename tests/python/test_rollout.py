"""Progressive rollouts on the whole stack, under continuous load from several clients, each
answer checked against Python xgboost for the version it names: a good candidate by canary and
by linear, bad candidates rolled back by the evidence (failing on some inputs, slow, scoring far
from the live model, an artifact that does not exist) with the reason on the package, an abort, a promote, and a Deploy SIGKILLed
mid-canary that the next run finishes. No client sees a failed request at any point."""
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import xgboost as xgb

from deploy import local_booster, model_tar_gz, xgboost_predict
from conftest import binary, running_stack
from test_stack_e2e import EXPECTED, ROOT, http, predict, row

ENDPOINT = "my-mlops-prod-endpoint"
ROWS = 200
# Every candidate after v2 serves v2's artifact; sagemaker-local makes some variants misbehave.
FAULTS = f"{ENDPOINT}/v3=error:40,{ENDPOINT}/v5=delay:150"
# Quick steps and a low bar for judging them; the thresholds are the defaults otherwise.
# The serving variant scales (1 to 3 instances) across every deployment.
DEPLOY_ENV = {"ROLLOUT_MIN_REQUESTS": "20", "DEPLOY_POLL_MS": "200", "DEPLOY_SCALING_MIN": "1", "DEPLOY_SCALING_MAX": "3"}


def rollout_stack(tmp_path_factory, shape="microservices"):
    """The stack these tests run on, in either shape (test_one_process_rollout.py)."""
    yield from running_stack(tmp_path_factory, "rollout-" + shape, poll_ms=300, shape=shape,
                             extra_env={"SAGEMAKER_LOCAL_ENDPOINT_FAULTS": FAULTS})


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from rollout_stack(tmp_path_factory)


def mlops_deploy(stack, *args, env=None, check=True):
    return stack.mlops_deploy(*args, env=dict(DEPLOY_ENV, **(env or {})), check=check)


def start_deploy(stack, *args):
    return subprocess.Popen([str(binary().parent / "mlops-deploy"), "deploy", *args], env=dict(stack.aws_env, **DEPLOY_ENV),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err + out
    return json.loads(out.strip().splitlines()[-1])


def package(stack, version):
    sm = stack.client("sagemaker")
    return sm.describe_model_package(ModelPackageName=f"my-mlops-prod-pkg/{version}")


def variants(stack):
    d = stack.client("sagemaker").describe_endpoint(EndpointName=ENDPOINT)
    return {v["VariantName"]: v["CurrentWeight"] for v in d["ProductionVariants"]}


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """Clients predicting random rows until stopped; every answer kept with its version."""

    def __init__(self, stack, clients=4):
        self.stack, self.answers, self.stop = stack, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def _run(self, n):
        rng = random.Random(n)
        while not self.stop.is_set():
            i = rng.randrange(ROWS)
            status, _, body = predict(self.stack, {"instances": [row(i)]})
            self.answers.append((time.time(), i, status, body))

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()

    def versions(self, since=0.0):
        return [b["model"]["model_package_version"] for t, _, s, b in self.answers if s == 200 and t >= since]


def check_answers(load, predictions):
    failed = [(s, b) for _, _, s, b in load.answers if s != 200]
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:2]}"
    for _, i, _, body in load.answers:
        version = body["model"]["model_package_version"]
        p = body["predictions"][0]["probability"]
        assert version in predictions, f"an answer from v{version}: {body['model']} at {[round(t - load.answers[0][0], 2) for t, _, _, b in load.answers if b['model'].get('model_package_version') is None][:30]}"
        assert abs(p - predictions[version][i]) < 1e-5, f"row {i}: {p} from v{version}, xgboost says {predictions[version][i]}"


def xgboost_predictions(stack, url):
    return xgboost_predict(local_booster(stack, url), [row(i) for i in range(ROWS)])


@pytest.fixture(scope="module")
def v2(stack):
    out = subprocess.run(["python3", str(ROOT / "pipeline" / "train.py")], env=stack.pipeline_env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    registered = json.loads(out.stdout)
    assert registered["model_package_version"] == 2, registered
    registered["features"] = package(stack, 2)["CustomerMetadataProperties"]["features"]
    return registered


@pytest.fixture(scope="module")
def predictions(stack, v2):
    return {1: EXPECTED[:ROWS], 2: xgboost_predictions(stack, v2["model_data_url"])}


def candidate(stack, v2, predictions, url=None):
    """Registers and approves one more package (v2's artifact unless told), answering as v2."""
    out = mlops_deploy(stack, "register", "--model-data-url", url or v2["model_data_url"], "--features", v2["features"])
    version = out["version"]
    mlops_deploy(stack, "approve", str(version), "--reason", "test candidate")
    predictions[version] = predictions[2]
    return version


def test_a_good_canary_rolls_out_step_by_step_without_a_failed_request(stack, v2, predictions):
    mlops_deploy(stack, "approve", "2", "--reason", "retrained")
    with Load(stack) as load:
        proc = start_deploy(stack, "--strategy", "canary", "--canary-percent", "30", "--bake-secs", "4")
        split = wait_for(lambda: len(variants(stack)) == 2 and time.time(), what="the canary's two variants")
        out = finished(proc)
        time.sleep(0.5)
    assert out["action"] == "rolled_out" and out["to"]["version"] == 2, out.get("reason", out)
    assert len(out["steps"]) == 1 and "passed" in out["steps"][0], out
    check_answers(load, predictions)
    during = [v for t, _, s, b in load.answers if split <= t <= split + 3 for v in [b["model"]["model_package_version"]]]
    share = during.count(2) / len(during)
    assert 0.15 < share < 0.45, f"v2 answered {share:.0%} of requests during a 30% canary"
    assert load.versions()[-20:] == [2] * 20
    assert variants(stack) == {"v2": 1.0}, "single-variant on the new version"
    assert package(stack, 2)["CustomerMetadataProperties"]["rollout.decision"] == "promoted"
    assert mlops_deploy(stack, "status")["in_sync"] is True


def test_a_candidate_failing_on_some_inputs_is_rolled_back_by_the_evidence(stack, v2, predictions):
    version = candidate(stack, v2, predictions)
    assert version == 3, "FAULTS names v3"
    with Load(stack) as load:
        out = mlops_deploy(stack, "deploy", "--strategy", "canary", "--canary-percent", "30", "--bake-secs", "30")
    assert out["action"] == "rolled_back" and "error rate" in out["reason"], out
    check_answers(load, predictions)  # every failure on v3 was answered by v2
    p = package(stack, 3)
    assert p["ModelApprovalStatus"] == "Rejected" and "error rate" in p["ApprovalDescription"], p
    assert p["CustomerMetadataProperties"]["rollout.decision"].startswith("rolled_back: error rate")
    assert variants(stack) == {"v2": 1.0}
    assert mlops_deploy(stack, "status")["in_sync"] is True, "the latest Approved is the live one again"


def test_a_candidate_whose_artifact_does_not_exist_is_rolled_back(stack, v2, predictions):
    missing = v2["model_data_url"].rsplit("/", 1)[0] + "/missing/model.tar.gz"
    version = candidate(stack, v2, predictions, url=missing)
    with Load(stack) as load:
        out = mlops_deploy(stack, "deploy", "--strategy", "canary", "--bake-secs", "30")
    assert out["action"] == "rolled_back" and "could not come up" in out["reason"], out
    check_answers(load, predictions)
    assert package(stack, version)["ModelApprovalStatus"] == "Rejected"
    assert variants(stack) == {"v2": 1.0}


def test_a_slow_candidate_is_rolled_back_by_its_latency(stack, v2, predictions):
    version = candidate(stack, v2, predictions)
    assert version == 5, "FAULTS names v5"
    with Load(stack) as load:
        out = mlops_deploy(stack, "deploy", "--strategy", "canary", "--canary-percent", "30", "--bake-secs", "30")
    assert out["action"] == "rolled_back" and re.search(r"p[\d.]+ latency", out["reason"]), out
    check_answers(load, predictions)
    assert re.search(r"p[\d.]+ latency", package(stack, 5)["ApprovalDescription"])
    assert variants(stack) == {"v2": 1.0}


def test_a_candidate_scoring_far_from_the_live_model_is_rolled_back(stack, v2, predictions):
    # Trained on the same features towards other labels: it answers, fast, but not like the live model.
    names = v2["features"].split(",")
    x = np.array([[np.nan if v is None else v for v in row(i)] for i in range(1000)])
    y = (np.array(EXPECTED) < 0.2).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "seed": 1},
                        xgb.DMatrix(x, label=y, feature_names=names), num_boost_round=20)
    key = "models/far-from-live/model.tar.gz"
    path = pathlib.Path(stack.pipeline_env["LOCAL_S3_ROOT"]) / "my-mlops-artifacts" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model_tar_gz(bytes(booster.save_raw("json"))))
    version = candidate(stack, v2, predictions, url=f"s3://my-mlops-artifacts/{key}")
    predictions[version] = xgboost_predictions(stack, f"s3://my-mlops-artifacts/{key}")
    with Load(stack) as load:
        out = mlops_deploy(stack, "deploy", "--strategy", "canary", "--canary-percent", "30", "--bake-secs", "30")
    assert out["action"] == "rolled_back" and "mean score" in out["reason"], out
    check_answers(load, predictions)
    assert "mean score" in package(stack, version)["ApprovalDescription"]
    assert variants(stack) == {"v2": 1.0}


def test_a_good_candidate_rolls_out_linearly_in_three_steps(stack, v2, predictions):
    version = candidate(stack, v2, predictions)
    with Load(stack) as load:
        out = mlops_deploy(stack, "deploy", "--strategy", "linear", "--linear-step-percent", "34", "--bake-secs", "3")
    assert out["action"] == "rolled_out" and out["to"]["version"] == version, out.get("reason", out)
    assert [s["share"] for s in out["steps"]] == [0.34, 0.68], out
    check_answers(load, predictions)
    assert variants(stack) == {f"v{version}": 1.0}


def test_rejecting_mid_rollout_rolls_back_and_promote_finishes_at_once(stack, v2, predictions):
    live = max(v for v in predictions if variants(stack).get(f"v{v}") == 1.0)
    aborted = candidate(stack, v2, predictions)
    with Load(stack) as load:
        proc = start_deploy(stack, "--strategy", "canary", "--bake-secs", "120")
        wait_for(lambda: len(variants(stack)) == 2, what="the canary")
        assert mlops_deploy(stack, "status")["rollout"]["candidate"]["version"] == aborted
        # The approver's page shows the rollout and each variant's evidence as it comes in.
        page = "http://" + stack.watcher.addrs["admin"] + "/shadow"
        seen = wait_for(lambda: (r := json.loads(http("GET", page + ".json")[2])["rollout"]) and r["candidate"]["requests"] > 0
                        and r["live"]["requests"] > 0 and r, what="the rollout's evidence on the approver's page")
        assert seen["version"] == aborted and seen["verdict"] in ("waiting", "pass"), seen
        assert f"Rolling out v{aborted}" in http("GET", page)[2].decode()
        started = time.time()
        mlops_deploy(stack, "rollout", "abort", "--reason", "looks wrong to me")
        out = finished(proc)
        assert time.time() - started < 30, "not the whole bake"
        assert out["action"] == "rolled_back" and "looks wrong to me" in out["reason"], out
        assert variants(stack) == {f"v{live}": 1.0}

        promoted = candidate(stack, v2, predictions)
        proc = start_deploy(stack, "--strategy", "linear", "--bake-secs", "120")
        wait_for(lambda: len(variants(stack)) == 2, what="the first linear step")
        started = time.time()
        mlops_deploy(stack, "rollout", "promote", "--reason", "urgent fix")
        out = finished(proc)
        assert time.time() - started < 30
    assert out["action"] == "rolled_out" and out["steps"][-1].get("promoted") == "urgent fix", out.get("reason", out)
    check_answers(load, predictions)
    assert package(stack, aborted)["ModelApprovalStatus"] == "Rejected"
    assert variants(stack) == {f"v{promoted}": 1.0}


def test_a_deploy_killed_mid_canary_is_finished_by_the_next_run(stack, v2, predictions):
    version = candidate(stack, v2, predictions)
    with Load(stack) as load:
        proc = start_deploy(stack, "--strategy", "canary", "--bake-secs", "120")
        wait_for(lambda: len(variants(stack)) == 2, what="the canary")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(variants(stack)) == 2, "left split"
        out = mlops_deploy(stack, "deploy", "--strategy", "canary", "--bake-secs", "3")
    assert out["action"] == "rolled_out" and out["to"]["version"] == version, out.get("reason", out)
    check_answers(load, predictions)
    assert variants(stack) == {f"v{version}": 1.0}


def descendants(pid):
    """The processes below `pid`, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_the_listener_resumes_a_rollout_whose_deploy_was_killed(stack, v2, predictions):
    """The local listener deploys an approval as a canary; its Deploy is SIGKILLed mid-bake (a
    lost build); the listener sees the split endpoint with nobody deploying and finishes it."""
    env = dict(stack.pipeline_env, **DEPLOY_ENV, DEPLOY_STRATEGY="canary", DEPLOY_BAKE_SECS="8")
    listener = subprocess.Popen([str(binary().parent / "mlops-pipeline"), "--poll-ms", "300", "listen"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    threading.Thread(target=lambda: output.extend(iter(listener.stdout.readline, "")), daemon=True).start()
    try:
        wait_for(lambda: any("listening" in line for line in output), what="the listener")
        with Load(stack) as load:
            version = candidate(stack, v2, predictions)
            wait_for(lambda: len(variants(stack)) == 2, what="the listener's canary")
            deploys = [p for p in descendants(listener.pid)
                       if b"mlops-deploy\0deploy" in open(f"/proc/{p}/cmdline", "rb").read()]
            assert deploys, "the listener's Deploy is running"
            for p in deploys:
                os.kill(p, signal.SIGKILL)
            wait_for(lambda: variants(stack) == {f"v{version}": 1.0}, timeout=90, what="the listener to finish the rollout")
        check_answers(load, predictions)
        assert any("the endpoint is in a rollout no Deploy is running" in line for line in output), "".join(output)
    finally:
        listener.terminate()
        listener.wait(timeout=30)


def test_scaling_followed_every_deployment(stack):
    """SageMaker refuses an update that removes a registered variant: each deployment above
    deregistered the retiring one first and registered the one serving alone after."""
    aas = stack.client("application-autoscaling")
    (serving,) = variants(stack)
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        (f"endpoint/{ENDPOINT}/variant/{serving}", 1, 3)], targets
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["ResourceId"] == f"endpoint/{ENDPOINT}/variant/{serving}" and policy["PolicyType"] == "TargetTrackingScaling"
    spec = policy["TargetTrackingScalingPolicyConfiguration"]
    assert spec["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
