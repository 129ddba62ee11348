"""boto3, unchanged, against sagemaker-local: the registry flow, the endpoint lifecycle with
boto3's waiters, the Feature Store runtime, the documented error codes, boto3's paginator,
a wrong secret key, the Parquet offline store, and state across a restart."""
import datetime as dt
import pathlib
import time

import botocore.exceptions
import numpy as np
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from conftest import Server
from deploy import XGBOOST_IMAGE, model_tar_gz

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO_MODEL = (ROOT / "demo" / "model" / "xgboost-model.json").read_bytes()


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def package(sm, group, url, **kw):
    return sm.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={"Containers": [{"Image": XGBOOST_IMAGE, "ModelDataUrl": url}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
        **kw,
    )["ModelPackageArn"]


def test_registry_flow_and_paginator(server, sm):
    sm.create_model_package_group(ModelPackageGroupName="registry-flow")
    url = server.put_object("artifacts", "demo/model.tar.gz", model_tar_gz(DEMO_MODEL))
    arns = [package(sm, "registry-flow", url) for _ in range(5)]
    assert arns[-1].endswith(":model-package/registry-flow/5")
    described = sm.describe_model_package(ModelPackageName=arns[0])
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["ModelPackageStatus"] == "Completed"
    assert isinstance(described["CreationTime"], dt.datetime)

    sm.update_model_package(ModelPackageArn=arns[3], ModelApprovalStatus="Approved")
    sm.update_model_package(ModelPackageArn=arns[4], ModelApprovalStatus="Rejected")
    latest = sm.list_model_packages(ModelPackageGroupName="registry-flow", ModelApprovalStatus="Approved",
                                    SortBy="CreationTime", SortOrder="Descending", MaxResults=1)
    assert [p["ModelPackageVersion"] for p in latest["ModelPackageSummaryList"]] == [4]

    pages = list(sm.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName="registry-flow", PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    assert [p["ModelPackageVersion"] for page in pages for p in page["ModelPackageSummaryList"]] == [1, 2, 3, 4, 5]
    assert "NextToken" not in pages[-1]

    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_model(ModelName="unapproved", PrimaryContainer={"ModelPackageName": arns[0]})
    assert code(e) == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.describe_model_package(ModelPackageName="registry-flow/42")
    assert code(e) == "ValidationException"


def test_customer_metadata_keeps_to_the_registrys_limits(server, sm):
    """What the watcher's stored comparison and the Train step's baselines rely on: values of
    up to 256 characters, 50 entries, updates that add and remove keys."""
    sm.create_model_package_group(ModelPackageGroupName="metadata-limits")
    url = server.put_object("artifacts", "limits/model.tar.gz", model_tar_gz(DEMO_MODEL))
    arn = package(sm, "metadata-limits", url, CustomerMetadataProperties={"a": "x" * 256})
    sm.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties={f"k{i}": "v" for i in range(49)},
                            CustomerMetadataPropertiesToRemove=["k0"])
    m = sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]
    assert len(m) == 49 and "k0" not in m and m["a"] == "x" * 256
    for bad in ({"b": "x" * 257}, {"k0": "v", "k50": "v"}, {"k" * 129: "v"}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sm.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties=bad)
        assert code(e) == "ValidationException", bad
    with pytest.raises(botocore.exceptions.ClientError) as e:
        package(sm, "metadata-limits", url, CustomerMetadataProperties={f"k{i}": "v" for i in range(51)})
    assert code(e) == "ValidationException"
    assert len(sm.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"]) == 49, "refused: unchanged"


def test_endpoint_create_update_invoke_with_waiters(server, sm, runtime):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 8))
    v1 = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, label=(X[:, 0] > 0)), 20)
    v2 = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, label=(X[:, 1] > 0)), 20)
    for name, booster in [("lifecycle-v1", v1), ("lifecycle-v2", v2)]:
        url = server.put_object("artifacts", f"{name}/model.tar.gz", model_tar_gz(bytes(booster.save_raw("json"))))
        sm.create_model(ModelName=name, PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": url})
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="lifecycle", EndpointConfigName="lifecycle-v1")
    assert sm.describe_endpoint(EndpointName="lifecycle")["EndpointStatus"] == "Creating"
    sm.get_waiter("endpoint_in_service").wait(EndpointName="lifecycle", WaiterConfig={"Delay": 1, "MaxAttempts": 20})

    row = ",".join(repr(float(v)) for v in X[0])
    def score():
        return float(runtime.invoke_endpoint(EndpointName="lifecycle", ContentType="text/csv", Body=row)["Body"].read())
    p1, p2 = [float(b.predict(xgb.DMatrix(X[:1]))[0]) for b in (v1, v2)]
    assert abs(score() - p1) < 1e-6

    sm.update_endpoint(EndpointName="lifecycle", EndpointConfigName="lifecycle-v2")
    described = sm.describe_endpoint(EndpointName="lifecycle")
    assert described["EndpointStatus"] == "Updating"
    assert abs(score() - p1) < 1e-6, "the old config serves until the switch"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint(EndpointName="lifecycle", EndpointConfigName="lifecycle-v1")
    assert code(e) == "ValidationException"
    sm.get_waiter("endpoint_in_service").wait(EndpointName="lifecycle", WaiterConfig={"Delay": 1, "MaxAttempts": 20})
    assert abs(score() - p2) < 1e-6
    assert sm.describe_endpoint(EndpointName="lifecycle")["EndpointConfigName"] == "lifecycle-v2"

    sm.delete_endpoint(EndpointName="lifecycle")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="lifecycle", WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    with pytest.raises(runtime.exceptions.ValidationError):
        score()


def test_missing_resources_and_unknown_endpoint_codes(sm, runtime, featurestore):
    for call in (lambda: sm.describe_endpoint(EndpointName="nope"),
                 lambda: sm.describe_model(ModelName="nope"),
                 lambda: sm.describe_endpoint_config(EndpointConfigName="nope")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code(e) == "ValidationException"
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.describe_feature_group(FeatureGroupName="nope")
    with pytest.raises(runtime.exceptions.ValidationError) as e:
        runtime.invoke_endpoint(EndpointName="nope", ContentType="text/csv", Body="1")
    assert "not found" in e.value.response["Error"]["Message"]
    with pytest.raises(featurestore.exceptions.ResourceNotFound):
        featurestore.get_record(FeatureGroupName="nope", RecordIdentifierValueAsString="1")


def test_wrong_secret_key_is_refused(server):
    bad = server.client("sagemaker", secret="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_model_packages()
    assert code(e) == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    bad_rt = server.client("sagemaker-featurestore-runtime", secret="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad_rt.get_record(FeatureGroupName="x", RecordIdentifierValueAsString="1")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def test_feature_store_put_get_batch_delete_and_offline_parquet(server, sm, featurestore):
    sm.create_feature_group(
        FeatureGroupName="py-users", RecordIdentifierFeatureName="user_id", EventTimeFeatureName="event_time",
        FeatureDefinitions=[{"FeatureName": "user_id", "FeatureType": "String"},
                            {"FeatureName": "event_time", "FeatureType": "String"},
                            {"FeatureName": "clicks", "FeatureType": "Integral"},
                            {"FeatureName": "ctr", "FeatureType": "Fractional"}],
        OnlineStoreConfig={"EnableOnlineStore": True},
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "s3://py-offline/store"}},
    )
    with pytest.raises(sm.exceptions.ResourceInUse):
        sm.create_feature_group(FeatureGroupName="py-users", RecordIdentifierFeatureName="user_id",
                                EventTimeFeatureName="event_time",
                                FeatureDefinitions=[{"FeatureName": "user_id", "FeatureType": "String"},
                                                    {"FeatureName": "event_time", "FeatureType": "String"}],
                                OnlineStoreConfig={"EnableOnlineStore": True})
    desc = sm.describe_feature_group(FeatureGroupName="py-users")
    assert desc["FeatureGroupStatus"] == "Created"
    assert desc["OfflineStoreConfig"]["DataCatalogConfig"]["Database"] == "sagemaker_featurestore"

    now = dt.datetime.now(dt.timezone.utc)
    def rec(uid, t, clicks):
        return [{"FeatureName": "user_id", "ValueAsString": uid}, {"FeatureName": "event_time", "ValueAsString": iso(t)},
                {"FeatureName": "clicks", "ValueAsString": str(clicks)}, {"FeatureName": "ctr", "ValueAsString": "0.25"}]
    featurestore.put_record(FeatureGroupName="py-users", Record=rec("u1", now, 10))
    featurestore.put_record(FeatureGroupName="py-users", Record=rec("u1", now - dt.timedelta(days=1), 1))
    featurestore.put_record(FeatureGroupName="py-users", Record=rec("u2", now, 20))
    got = featurestore.get_record(FeatureGroupName="py-users", RecordIdentifierValueAsString="u1")
    assert {f["FeatureName"]: f["ValueAsString"] for f in got["Record"]}["clicks"] == "10"
    assert "Record" not in featurestore.get_record(FeatureGroupName="py-users", RecordIdentifierValueAsString="zz")

    batch = featurestore.batch_get_record(Identifiers=[{"FeatureGroupName": "py-users",
                                                        "RecordIdentifiersValueAsString": ["u1", "u2", "zz"],
                                                        "FeatureNames": ["clicks"]}])
    assert sorted(r["RecordIdentifierValueAsString"] for r in batch["Records"]) == ["u1", "u2"]
    assert all(len(r["Record"]) == 1 for r in batch["Records"])

    with pytest.raises(featurestore.exceptions.ValidationError) as e:
        featurestore.put_record(FeatureGroupName="py-users", Record=rec("u3", now, "many"))
    assert "clicks" in e.value.response["Error"]["Message"]

    featurestore.delete_record(FeatureGroupName="py-users", RecordIdentifierValueAsString="u2",
                               EventTime=iso(now + dt.timedelta(seconds=1)))
    assert "Record" not in featurestore.get_record(FeatureGroupName="py-users", RecordIdentifierValueAsString="u2")
    with pytest.raises(featurestore.exceptions.ValidationError):
        featurestore.delete_record(FeatureGroupName="py-users", RecordIdentifierValueAsString="u1",
                                   EventTime=iso(now - dt.timedelta(days=2)), DeletionMode="HardDelete")

    # The offline store: every write, historic ones and the delete marker included.
    root = server.data_dir / "s3" / "py-offline" / "store"
    deadline = time.time() + 10
    rows = []
    while time.time() < deadline:
        files = sorted(root.rglob("*.parquet"))
        rows = [r for f in files for r in pq.read_table(f).to_pylist()]
        if len(rows) >= 4:
            break
        time.sleep(0.2)
    assert len(rows) == 4, rows
    assert desc["OfflineStoreConfig"]["S3StorageConfig"]["ResolvedOutputS3Uri"].startswith("s3://py-offline/store/000000000000/sagemaker/us-east-1/offline-store/py-users-")
    assert all("/year=" in str(f) and "/hour=" in str(f) for f in files)
    assert sorted(r["clicks"] for r in rows if not r["is_deleted"]) == [1, 10, 20]
    marker = [r for r in rows if r["is_deleted"]]
    assert len(marker) == 1 and marker[0]["user_id"] == "u2" and marker[0]["clicks"] is None
    assert all(r["write_time"] is not None and r["api_invocation_time"] is not None for r in rows)


def test_demo_world_and_state_survive_a_restart(tmp_path):
    srv = Server(tmp_path, extra_args=["--demo"])
    try:
        sm = srv.client("sagemaker")
        rt = srv.client("sagemaker-runtime")
        fs = srv.client("sagemaker-featurestore-runtime")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="my-mlops-prod-endpoint", WaiterConfig={"Delay": 1, "MaxAttempts": 20})
        groups = [sm.describe_feature_group(FeatureGroupName=n) for n in ("my-mlops-feature-group-v2", "my-mlops-user-interactions-v1")]
        assert groups[1]["RecordIdentifierFeatureName"] == "interaction_id"
        fs.put_record(FeatureGroupName="my-mlops-user-interactions-v1", Record=[
            {"FeatureName": "interaction_id", "ValueAsString": "i-1"},
            {"FeatureName": "event_time", "ValueAsString": "2026-11-27T10:00:00.000Z"},
            {"FeatureName": "prediction", "ValueAsString": "0.25"}])
    finally:
        assert srv.stop() == 0
    srv = Server(tmp_path, extra_args=["--demo"])  # --demo again: idempotent
    try:
        sm = srv.client("sagemaker")
        rt = srv.client("sagemaker-runtime")
        fs = srv.client("sagemaker-featurestore-runtime")
        pkgs = sm.list_model_packages(ModelPackageGroupName="my-mlops-prod-pkg")["ModelPackageSummaryList"]
        assert [(p["ModelPackageVersion"], p["ModelApprovalStatus"]) for p in pkgs] == [(1, "Approved")]
        customers = (ROOT / "demo" / "data" / "customers.csv").read_text().splitlines()[1:]
        expected = (ROOT / "demo" / "model" / "expected.csv").read_text().split()
        body = rt.invoke_endpoint(EndpointName="my-mlops-prod-endpoint", ContentType="text/csv",
                                  Body=",".join(customers[0].split(",")[1:9]))["Body"].read().decode()
        assert abs(float(body) - float(expected[0])) < 1e-6
        rec = fs.get_record(FeatureGroupName="my-mlops-user-interactions-v1", RecordIdentifierValueAsString="i-1")
        assert rec["Record"][2]["ValueAsString"] == "0.25"
        train = fs.get_record(FeatureGroupName="my-mlops-feature-group-v2", RecordIdentifierValueAsString="C00999")
        assert {f["FeatureName"] for f in train["Record"]} >= {"customer_id", "age", "churned"}
    finally:
        assert srv.stop() == 0
