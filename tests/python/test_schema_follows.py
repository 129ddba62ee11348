"""A model with another feature list deploys, and everything follows it with no configuration
change: the whole stack (no MODEL_FEATURES, no MODEL_NUM_FEATURES) with its pipeline listener;
the pipeline trains v2 on a training feature group with a ninth feature, `region`; once v2 is
approved and live, the gateway's /v1/model, its OpenAPI `Features`, its JSON-by-name mapping,
its width checks, the predictor's own width check (over gRPC, through reflection) and the web
page in Chromium all take the nine features, and the answers are xgboost's."""
import json
import re
import subprocess
import threading
import time

import numpy as np
import pytest
import xgboost as xgb
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from deploy import local_booster
from conftest import binary, predictor_stub, running_stack
from test_stack_e2e import CUSTOMERS, FEATURES, ROOT, http, predict
from test_web_page import browser  # noqa: F401  (the Chromium fixture)

NINE = FEATURES + ["region"]
GROUP_FG = "churn-with-region-v1"


def row9(i):
    return [None if v == "" else float(v) for v in CUSTOMERS[i][1:9]] + [float(i % 4)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "schema", poll_ms=300, pipeline=True)


def client(stack, service):
    return stack.client(service)


@pytest.fixture(scope="module")
def v2(stack):
    """Trains and deploys a nine-feature model through the pipeline, as a person would."""
    sm, fs = client(stack, "sagemaker"), client(stack, "sagemaker-featurestore-runtime")
    definitions = sm.describe_feature_group(FeatureGroupName="my-mlops-feature-group-v2")["FeatureDefinitions"]
    label = [d for d in definitions if d["FeatureName"] == "churned"]
    sm.create_feature_group(
        FeatureGroupName=GROUP_FG, RecordIdentifierFeatureName="customer_id", EventTimeFeatureName="event_time",
        FeatureDefinitions=[d for d in definitions if d["FeatureName"] != "churned"]
        + [{"FeatureName": "region", "FeatureType": "Integral"}] + label,
        OnlineStoreConfig={"EnableOnlineStore": True},
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "s3://my-mlops-feature-store/with-region"}})
    header = (ROOT / "demo" / "data" / "customers.csv").read_text().splitlines()[0].split(",")
    for i, values in enumerate(CUSTOMERS[:400]):
        record = [{"FeatureName": n, "ValueAsString": v} for n, v in zip(header, values) if v != ""]
        record += [{"FeatureName": "region", "ValueAsString": str(i % 4)},
                   {"FeatureName": "event_time", "ValueAsString": "2026-11-01T00:00:00.000Z"}]
        fs.put_record(FeatureGroupName=GROUP_FG, Record=record)
    time.sleep(2)  # the offline store is written every second
    env = dict(stack.pipeline_env, TRAINING_FG_NAME=GROUP_FG)
    runner = subprocess.Popen([str(binary().parent / "mlops-pipeline"), "--poll-ms", "200", "run", "--once"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(runner.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while not any("Approve: " in l for l in lines) and time.time() < deadline and runner.poll() is None:
        time.sleep(0.1)
    approve = next((l for l in lines if "Approve: " in l), None)
    assert approve, "".join(lines)
    version = int(re.search(r"approve (\d+)", approve).group(1))
    assert version == 2
    stack.mlops_deploy("approve", "2", "--reason", "adds region", env=env, timeout=60)
    assert runner.wait(timeout=120) == 0, "".join(lines)
    reader.join(timeout=5)
    described = sm.describe_model_package(ModelPackageName="my-mlops-prod-pkg/2")
    assert described["CustomerMetadataProperties"]["features"] == ",".join(NINE)
    url = described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    booster = local_booster(stack, url)
    assert booster.feature_names == NINE
    return booster


def xgboost_says(booster, row):
    x = np.array([[np.nan if v is None else v for v in row]])
    return float(booster.predict(xgb.DMatrix(x, feature_names=booster.feature_names))[0])


def model_view(stack):
    return json.loads(http("GET", stack.url + "/v1/model")[2])


def test_before_the_deployment_the_demo_model_s_eight_features_come_from_its_package(stack):
    view = model_view(stack)
    deadline = time.time() + 10
    while view["features_source"] != "registry" and time.time() < deadline:
        time.sleep(0.1)
        view = model_view(stack)
    assert (view["features"], view["features_source"]) == (FEATURES, "registry"), view


def test_the_api_and_its_checks_follow_the_new_schema(stack, v2):
    deadline = time.time() + 5  # a couple of watcher polls after Deploy finished
    while model_view(stack)["features"] != NINE and time.time() < deadline:
        time.sleep(0.05)
    view = model_view(stack)
    assert view["features"] == NINE and view["features_source"] == "registry", view
    assert view["live_features_mismatch"] is None

    row = row9(7)
    status, _, body = predict(stack, {"features": dict(zip(NINE, row))})
    assert status == 200, body
    assert body["model"]["model_package_version"] == 2
    assert abs(body["predictions"][0]["probability"] - xgboost_says(v2, row)) < 1e-6
    status, _, body = predict(stack, {"instances": [row9(3), row9(4)]})
    assert status == 200 and len(body["predictions"]) == 2, body
    assert abs(body["predictions"][1]["probability"] - xgboost_says(v2, row9(4))) < 1e-6

    status, _, problem = predict(stack, {"instances": [row[:8]]})
    assert status == 400 and problem["field"] == "instances[0]" and "9" in problem["detail"], problem
    csv = ",".join("" if v is None else str(v) for v in row[:8]).encode()
    status, _, problem = predict(stack, csv, content_type="text/csv")
    assert status == 400 and problem["field"].startswith("line 1"), problem

    spec = json.loads(http("GET", stack.url + "/openapi.json")[2])
    schema = spec["components"]["schemas"]["Features"]
    assert set(schema["properties"]) == set(NINE) and schema["x-feature-order"] == NINE, schema


def test_the_predictor_checks_the_new_width_itself(stack, v2):
    """Over gRPC, with message classes built from the server's own reflection."""
    import grpc

    with grpc.insecure_channel(stack.predictor.addrs["grpc"]) as channel:
        request_class, call = predictor_stub(channel)
        nan = float("nan")

        def request(values):
            r = request_class(request_id="schema-test")
            r.rows.add().values.extend([nan if v is None else v for v in values])
            return r
        with pytest.raises(grpc.RpcError) as refused:
            call(request(row9(5)[:8]), timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
        answer = call(request(row9(5)), timeout=5)
        assert abs(answer.predictions[0].scores[0] - xgboost_says(v2, row9(5))) < 1e-6


def test_the_page_builds_its_form_from_the_new_schema(stack, v2, browser):  # noqa: F811
    browser.get(stack.url + "/")
    wait = WebDriverWait(browser, 15)
    wait.until(EC.presence_of_element_located((By.ID, "f-region")))
    row = row9(11)
    for name, value in zip(NINE, row):
        field = browser.find_element(By.ID, "f-" + name)
        field.clear()
        if value is not None:
            field.send_keys(str(value))
    browser.find_element(By.ID, "submit").click()
    wait.until(EC.visibility_of_element_located((By.ID, "result")))
    assert browser.find_element(By.ID, "probability").text == f"{xgboost_says(v2, row) * 100:.1f} %"
    assert browser.find_element(By.ID, "model-version").text == "2"
