"""The model pipeline on the whole stack, under continuous load from four clients:
`mlops-pipeline` runs the Train buildspec against sagemaker-local (the training feature group's
offline store -> XGBoost -> a package PendingManualApproval with its evaluation), nothing is
deployed while it waits at the gate, approving it (through the gate's printed command, and by
a plain boto3 UpdateModelPackage while only the stack's listener runs) puts it on the
gateway's answers, rejecting it rolls back by itself, and a Train that cannot train stops the
pipeline with the reason and deploys nothing. No request fails at any point."""
import json
import pathlib
import re
import shlex
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import xgboost as xgb

from deploy import local_booster, xgboost_predict
from conftest import binary, running_stack
from test_stack_e2e import FEATURES, ROOT, http, predict, row

GROUP = "my-mlops-prod-pkg"
ROWS = [row(i) for i in range(4)]


def pipeline_stack(tmp_path_factory, shape="microservices"):
    """The stack these tests run on, in either shape (test_one_process_pipeline.py)."""
    yield from running_stack(tmp_path_factory, "pipeline-" + shape, poll_ms=300, pipeline=True, shape=shape)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from pipeline_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def sm(stack):
    return stack.client("sagemaker")


class Load:
    """Four clients predicting the four rows in turn until stopped; every answer is kept."""

    def __init__(self, stack):
        self.stack, self.answers, self.stop_event = stack, [], threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,)) for n in range(4)]
        for t in self.threads:
            t.start()

    def client(self, n):
        i = n
        while not self.stop_event.is_set():
            status, _, body = predict(self.stack, {"instances": [ROWS[i % len(ROWS)]]})
            self.answers.append((time.time(), i % len(ROWS), status, body))
            i += 1

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join()


@pytest.fixture(scope="module")
def load(stack):
    clients = Load(stack)
    yield clients
    clients.stop()


class Runner:
    """`mlops-pipeline` in the background, its output collected line by line."""

    def __init__(self, stack, *args, env=None):
        self.lines = []
        self.proc = subprocess.Popen([str(binary().parent / "mlops-pipeline"), *args], cwd=ROOT,
                                     env=dict(stack.pipeline_env, **(env or {})), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def wait_line(self, pattern, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in:\n{self.output()}")

    def wait(self, timeout=120):
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code

    def output(self):
        return "".join(self.lines)


def describe(sm, version):
    return sm.describe_model_package(ModelPackageName=f"{GROUP}/{version}")


def s3_file(stack, url):
    return pathlib.Path(stack.pipeline_env["LOCAL_S3_ROOT"]) / url[len("s3://"):]


def live_auc_on_the_validation_rows(stack, sm):
    """v1's AUC on the rows Train held out, computed here: the split Train documents (a hash
    of the record id), xgboost's predictions, and AUC as the share of (positive, negative)
    pairs ranked right (ties half)."""
    sys.path.insert(0, str(ROOT / "pipeline"))
    import train
    described = sm.describe_feature_group(FeatureGroupName=stack.pipeline_env.get("TRAINING_FG_NAME", "my-mlops-feature-group-v2"))
    id_name, time_name = described["RecordIdentifierFeatureName"], described["EventTimeFeatureName"]
    rows = train.latest_per_id(train.local_offline_rows(stack.pipeline_env["LOCAL_S3_ROOT"], described), id_name, time_name)
    val = [r for r in rows if r.get("churned") not in (None, "") and train.is_validation(r[id_name], 20)]
    booster = local_booster(stack, describe(sm, 1)["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
    names = booster.feature_names
    x = np.array([[np.nan if r.get(f) in (None, "") else float(r[f]) for f in names] for r in val])
    p = booster.predict(xgb.DMatrix(x, feature_names=names))
    y = [int(float(r["churned"])) for r in val]
    pos = [s for s, label in zip(p, y) if label == 1]
    neg = [s for s, label in zip(p, y) if label == 0]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


def xgboost_scores(stack, sm, version):
    """What xgboost itself predicts for ROWS with the model package `version` holds."""
    url = describe(sm, version)["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    return xgboost_predict(local_booster(stack, url), ROWS)


def live_versions(stack):
    registry = json.loads(http("GET", stack.url + "/v1/model")[2])["registry"]
    return registry and registry["in_sync"] and [v["model_package_version"] for v in registry["live"]]


def wait_live(stack, version, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if live_versions(stack) == [version]:
            return
        time.sleep(0.05)
    raise AssertionError(f"v{version} never went live: {live_versions(stack)}")


def answers_tagged(load, version, since):
    return [a for a in load.answers if a[0] >= since and a[2] == 200 and a[3]["model"].get("model_package_version") == version]


def check_answers(stack, sm, load):
    """No request failed, and every answer is what xgboost gives for its row with the model
    its tag names (an untagged answer — the moment between a switch and the watcher's poll —
    must still come from a registered model)."""
    failed = [(s, b) for _, _, s, b in load.answers if s != 200]
    assert not failed, failed[:3]
    versions = {int(p["ModelPackageVersion"]) for p in sm.list_model_packages(ModelPackageGroupName=GROUP, MaxResults=100)["ModelPackageSummaryList"]}
    scores = {v: xgboost_scores(stack, sm, v) for v in versions}
    for _, i, _, body in load.answers:
        p, tag = body["predictions"][0]["probability"], body["model"].get("model_package_version")
        if tag is not None:
            assert abs(p - scores[tag][i]) < 1e-6, (tag, i, p, scores[tag][i])
        else:
            assert any(abs(p - s[i]) < 1e-6 for s in scores.values()), (i, p)


def test_train_registers_pending_and_the_gate_deploys_on_approval(stack, sm, load):
    started = time.time()
    runner = Runner(stack, "--poll-ms", "200", "run", "--once")
    approve = runner.wait_line(r"Approve: (mlops-deploy approve (\d+) .*)")
    version = int(approve.group(2))
    assert version == 2, runner.output()
    train_seconds = time.time() - started

    # The package as boto3 reads it: pending, with its evaluation and what it expects.
    d = describe(sm, version)
    assert d["ModelApprovalStatus"] == "PendingManualApproval"
    meta = d["CustomerMetadataProperties"]
    assert meta["features"].split(",") == FEATURES
    assert 0.5 < float(meta["validation_auc"]) <= 1 and 0 < float(meta["validation_accuracy"]) <= 1
    assert int(meta["training_rows"]) + int(meta["validation_rows"]) == 1000
    assert re.fullmatch(r"[0-9a-f]{40}", meta["source_commit"]), meta
    report = s3_file(stack, d["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"])
    evaluation = json.loads(report.read_text())
    assert f"{evaluation['binary_classification_metrics']['auc']['value']:.6f}" == meta["validation_auc"]
    # ... and the gate shows it next to the live model.
    assert re.search(r"validation AUC\s+" + re.escape(meta["validation_auc"]), runner.output()), runner.output()
    assert "live v1" in runner.output()
    # The live v1 scored on the candidate's very validation rows, equal to what xgboost says here.
    assert meta["live.version"] == "1", meta
    v1_auc = live_auc_on_the_validation_rows(stack, sm)
    assert abs(float(meta["live.validation_auc"]) - v1_auc) < 1e-6, (meta["live.validation_auc"], v1_auc)
    assert (f"candidate v2 on the same {meta['validation_rows']} validation rows, live v1: "
            f"AUC {float(meta['validation_auc']):.4f} vs {v1_auc:.4f}") in runner.output(), runner.output()

    # Pending: nothing changes while the listener polls several times.
    time.sleep(1.5)
    assert live_versions(stack) == [1]
    assert not answers_tagged(load, version, started)

    # The person runs the command the gate printed.
    approved = subprocess.run(shlex.split(approve.group(1).replace('"..."', '"better AUC"')),
                              env=stack.pipeline_env, capture_output=True, text=True, timeout=60)
    assert approved.returncode == 0, approved.stderr
    assert runner.wait() == 0, runner.output()
    out = runner.output()
    assert "decision: v2 Approved" in out and "Deploy succeeded" in out, out
    deployed = time.time()
    wait_live(stack, version, timeout=2)  # one watcher poll is 300 ms
    time.sleep(0.5)
    assert answers_tagged(load, version, deployed), "the gateway answers with the approved version"
    check_answers(stack, sm, load)
    print(f"\n[pipeline] train + register: {train_seconds:.1f} s; approve -> deployed: {deployed - started - train_seconds:.1f} s")


def test_a_registry_approval_deploys_by_itself_and_a_rejection_rolls_back(stack, sm, load):
    train = Runner(stack, "stage", "train")
    assert train.wait() == 0, train.output()
    version = int(train.wait_line(r"registered v(\d+)").group(1))
    assert version == 3 and describe(sm, version)["ModelApprovalStatus"] == "PendingManualApproval"
    time.sleep(1)
    assert live_versions(stack) == [2], "a pending package is not deployed"

    # A plain SDK call in the registry; only the stack's listener is running.
    t0 = time.time()
    sm.update_model_package(ModelPackageArn=describe(sm, version)["ModelPackageArn"], ModelApprovalStatus="Approved")
    wait_live(stack, version)
    print(f"\n[pipeline] registry approval -> v{version} live: {time.time() - t0:.1f} s")
    time.sleep(0.5)
    assert answers_tagged(load, version, t0)

    t0 = time.time()
    sm.update_model_package(ModelPackageArn=describe(sm, version)["ModelPackageArn"], ModelApprovalStatus="Rejected",
                            ApprovalDescription="worse on last week's traffic")
    wait_live(stack, 2)
    print(f"[pipeline] rejection -> rolled back to v2: {time.time() - t0:.1f} s")
    time.sleep(0.5)
    assert answers_tagged(load, 2, time.time() - 0.4)
    check_answers(stack, sm, load)


def test_a_train_that_cannot_train_stops_the_pipeline_and_deploys_nothing(stack, sm, load):
    training = sm.describe_feature_group(FeatureGroupName="my-mlops-feature-group-v2")
    sm.create_feature_group(
        FeatureGroupName="empty-training-fg", RecordIdentifierFeatureName="customer_id",
        EventTimeFeatureName="event_time", FeatureDefinitions=training["FeatureDefinitions"],
        OnlineStoreConfig={"EnableOnlineStore": True},
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "s3://my-mlops-feature-store/empty"}})
    before = sm.list_model_packages(ModelPackageGroupName=GROUP, MaxResults=100)["ModelPackageSummaryList"]
    runner = Runner(stack, "run", "--once", env={"TRAINING_FG_NAME": "empty-training-fg", "TRAIN_WAIT_FOR_ROWS_SECS": "1"})
    assert runner.wait() == 1, runner.output()
    out = runner.output()
    assert "has no rows in its offline store" in out, out
    assert "Pipeline stopped: Train failed; nothing was deployed" in out and "Approval gate" not in out, out
    after = sm.list_model_packages(ModelPackageGroupName=GROUP, MaxResults=100)["ModelPackageSummaryList"]
    assert len(after) == len(before), "nothing was registered"
    assert live_versions(stack) == [2]
    check_answers(stack, sm, load)
