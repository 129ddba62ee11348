#!/usr/bin/env python3
"""The loop closed, locally: the seed pipeline's train-and-register stage.

Reads the training feature group's offline store (latest row per customer, deletes dropped —
the query SageMaker documents for offline stores) and the logged interactions, trains a new
XGBoost model, uploads model.tar.gz, and registers it in the model package group as
PendingManualApproval. A person (or `mlops-deploy approve N`) approves it; `mlops-deploy
deploy` rolls it out.

    python3 demo/retrain.py --endpoint-url http://127.0.0.1:9000 --s3-root .data/sagemaker-local/s3

`--s3-root` is where sagemaker-local keeps "S3" (its data dir's s3/ folder): offline-store
Parquet files are read from there and the artifact is written there. Against AWS, read the
offline store with Athena (the Glue table in DescribeFeatureGroup) and upload with S3; that
part is not implemented here. Prints one JSON object: the new package's ARN and version.
"""
import argparse
import io
import json
import pathlib
import tarfile
import time

import boto3
import numpy as np
import pyarrow.parquet as pq
import xgboost as xgb

FEATURES = ["age", "tenure_months", "monthly_charges", "support_calls", "num_products",
            "late_payments", "satisfaction", "has_contract"]
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def offline_rows(sm, s3_root, group):
    uri = sm.describe_feature_group(FeatureGroupName=group)["OfflineStoreConfig"]["S3StorageConfig"]["ResolvedOutputS3Uri"]
    root = pathlib.Path(s3_root) / uri[len("s3://"):]
    rows = [r for f in sorted(root.rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return rows


def latest_per_id(rows, id_name):
    """row_number() over (partition by id order by event_time, api_invocation_time, write_time desc) = 1, not deleted."""
    best = {}
    for r in rows:
        key = (r["event_time"], r["api_invocation_time"], r["write_time"])
        if r[id_name] not in best or key > best[r[id_name]][0]:
            best[r[id_name]] = (key, r)
    return [r for _, r in best.values() if not r["is_deleted"]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint-url", required=True)
    ap.add_argument("--s3-root", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", default="sagemaker-local")
    ap.add_argument("--secret-key", default="sagemaker-local-secret")
    ap.add_argument("--group", default="my-mlops-prod-pkg")
    ap.add_argument("--training-feature-group", default="my-mlops-feature-group-v2")
    ap.add_argument("--interactions-feature-group", default="my-mlops-user-interactions-v1")
    ap.add_argument("--bucket", default="my-mlops-artifacts")
    ap.add_argument("--wait-seconds", type=float, default=30, help="how long to wait for the offline store to have rows")
    args = ap.parse_args()
    sm = boto3.client("sagemaker", endpoint_url=args.endpoint_url, region_name=args.region,
                      aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key)

    deadline = time.time() + args.wait_seconds
    while not (rows := offline_rows(sm, args.s3_root, args.training_feature_group)) and time.time() < deadline:
        time.sleep(0.5)
    training = latest_per_id(rows, "customer_id")
    if not training:
        raise SystemExit("the training feature group's offline store has no rows yet")
    X = np.array([[np.nan if r[f] is None else float(r[f]) for f in FEATURES] for r in training])
    y = np.array([int(r["churned"]) for r in training])
    interactions = latest_per_id(offline_rows(sm, args.s3_root, args.interactions_feature_group), "interaction_id")

    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "seed": 11},
                        xgb.DMatrix(X, label=y, feature_names=FEATURES), num_boost_round=60)
    accuracy = float(((booster.predict(xgb.DMatrix(X, feature_names=FEATURES)) > 0.5) == y).mean())

    model_json = bytes(booster.save_raw("json"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(model_json)
        tar.addfile(info, io.BytesIO(model_json))
    key = f"models/churn-{int(time.time() * 1000)}/model.tar.gz"
    path = pathlib.Path(args.s3_root) / args.bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    url = f"s3://{args.bucket}/{key}"

    arn = sm.create_model_package(
        ModelPackageGroupName=args.group,
        ModelPackageDescription=f"churn retrained on {len(training)} customers",
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": url}],
                                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]},
        CustomerMetadataProperties={"training_rows": str(len(training)), "train_accuracy": f"{accuracy:.4f}",
                                    "interactions_seen": str(len(interactions))},
    )["ModelPackageArn"]
    print(json.dumps({"arn": arn, "version": int(arn.rsplit("/", 1)[1]), "model_data_url": url,
                      "training_rows": len(training), "train_accuracy": accuracy,
                      "interactions_seen": len(interactions)}))


if __name__ == "__main__":
    main()
