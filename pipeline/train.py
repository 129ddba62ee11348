#!/usr/bin/env python3
"""The pipeline's Train step: training feature group -> XGBoost -> model package, PendingManualApproval.

1. Reads the training feature group's offline store: the latest row per record id, deleted
   records dropped (the query SageMaker documents for offline stores). On AWS through Athena,
   on the Glue table that DescribeFeatureGroup names; locally (LOCAL_S3_ROOT set) from the
   Parquet files sagemaker-local writes in the same layout.
2. Splits train/validation by a hash of the record id (stable across runs), trains XGBoost
   (binary:logistic) and evaluates it on the validation rows: AUC, accuracy at 0.5, log loss;
   and scores the latest Approved (live) model on the very same rows (`live.*` metadata, or
   `live.unavailable` with the reason when it cannot score them).
3. Writes model.tar.gz (xgboost-model, JSON, with the feature names) and evaluation.json to
   the artifact bucket, and registers a package in MODEL_PACKAGE_GROUP as
   PendingManualApproval: ModelMetrics points at evaluation.json, CustomerMetadataProperties
   carry the figures, the feature names in order, the source commit and a baseline of each
   training feature (`baseline.<feature>`: decile bins, what the logger measures drift against).

Every setting comes from the environment (CodeBuild's project and buildspec variables), each
overridable by a flag. Prints one JSON summary on stdout (also written to --output) and
exits 1 with the reason on stderr when it cannot train: no rows, one class only, no
validation rows, a missing feature group or package group.
"""
import argparse
import datetime
import hashlib
import io
import json
import math
import os
import pathlib
import sys
import tarfile
import time

import boto3
import numpy as np
import xgboost as xgb

# The offline store's own columns (SageMaker adds them to every row).
OFFLINE_COLUMNS = ("write_time", "api_invocation_time", "is_deleted")
# SageMaker's limit on one CustomerMetadataProperties value.
METADATA_VALUE_MAX = 256
DEFAULT_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


class TrainError(Exception):
    """Why this run cannot produce a model; the message is for the person reading the log."""


def env(name, default=None):
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--training-feature-group", default=env("TRAINING_FG_NAME", "my-mlops-feature-group-v2"))
    ap.add_argument("--label", default=env("TRAINING_LABEL", "churned"), help="the feature that holds the 0/1 label")
    ap.add_argument("--group", default=env("MODEL_PACKAGE_GROUP", "my-mlops-prod-pkg"))
    ap.add_argument("--bucket", default=env("ARTIFACT_BUCKET", "my-mlops-artifacts"))
    ap.add_argument("--prefix", default=env("ARTIFACT_PREFIX", "models"))
    ap.add_argument("--image", default=env("XGBOOST_IMAGE", DEFAULT_IMAGE),
                    help="the inference image the package names (SageMaker's XGBoost container 1.3+)")
    ap.add_argument("--source-commit", default=env("CODEBUILD_RESOLVED_SOURCE_VERSION", env("SOURCE_COMMIT", "unknown")))
    ap.add_argument("--local-s3-root", default=env("LOCAL_S3_ROOT"),
                    help="sagemaker-local's S3 folder; unset: real S3 and Athena")
    ap.add_argument("--athena-workgroup", default=env("ATHENA_WORKGROUP", "primary"))
    ap.add_argument("--validation-percent", type=int, default=int(env("VALIDATION_PERCENT", "20")))
    ap.add_argument("--rounds", type=int, default=int(env("TRAIN_ROUNDS", "80")))
    ap.add_argument("--max-depth", type=int, default=int(env("TRAIN_MAX_DEPTH", "4")))
    ap.add_argument("--eta", type=float, default=float(env("TRAIN_ETA", "0.1")))
    ap.add_argument("--min-rows", type=int, default=int(env("TRAIN_MIN_ROWS", "20")))
    ap.add_argument("--wait-for-rows-secs", type=float, default=float(env("TRAIN_WAIT_FOR_ROWS_SECS", "0")),
                    help="wait this long for the offline store to have rows (it lags the online store)")
    ap.add_argument("--output", default=env("TRAIN_OUTPUT"), help="also write the JSON summary here")
    return ap.parse_args(argv)


# ---- reading the offline store -------------------------------------------------------------

def latest_per_id(rows, id_name, time_name):
    """row_number() over (partition by id order by event_time, api_invocation_time, write_time desc) = 1,
    then not is_deleted. Event times are ISO strings or epoch seconds; both order correctly as read."""
    best = {}
    for r in rows:
        key = (str(r[time_name]), str(r.get("api_invocation_time")), str(r.get("write_time")))
        rid = r[id_name]
        if rid not in best or key > best[rid][0]:
            best[rid] = (key, r)
    return [r for _, r in best.values() if not r.get("is_deleted")]


def local_offline_rows(root, described):
    import pyarrow.parquet as pq
    uri = described["OfflineStoreConfig"]["S3StorageConfig"]["ResolvedOutputS3Uri"]
    folder = pathlib.Path(root) / uri[len("s3://"):]
    return [r for f in sorted(folder.rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def athena_latest_rows(session, described, workgroup, id_name, time_name):
    """The documented latest-row query, run by Athena on the feature group's Glue table."""
    catalog = described["OfflineStoreConfig"]["DataCatalogConfig"]
    query = (
        f'SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY "{id_name}" '
        f'ORDER BY "{time_name}" DESC, api_invocation_time DESC, write_time DESC) AS rn '
        f'FROM "{catalog["Database"]}"."{catalog["TableName"]}") WHERE rn = 1 AND NOT is_deleted'
    )
    athena = session.client("athena")
    qid = athena.start_query_execution(QueryString=query, WorkGroup=workgroup,
                                       QueryExecutionContext={"Catalog": catalog["Catalog"]})["QueryExecutionId"]
    while True:
        status = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]
        if status["State"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(1)
    if status["State"] != "SUCCEEDED":
        raise TrainError(f"the Athena query on {catalog['Database']}.{catalog['TableName']} {status['State']}: "
                         f"{status.get('StateChangeReason', 'no reason given')}")
    rows, header = [], None
    for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=qid):
        for raw in page["ResultSet"]["Rows"]:
            values = [d.get("VarCharValue") for d in raw["Data"]]
            if header is None:
                header = values  # the first row of the first page names the columns
                continue
            rows.append(dict(zip(header, values)))
    for r in rows:
        r["is_deleted"] = str(r.get("is_deleted")).lower() == "true"
    return rows


def load_training_rows(args, session, sm):
    try:
        described = sm.describe_feature_group(FeatureGroupName=args.training_feature_group)
    except sm.exceptions.ResourceNotFound:
        raise TrainError(f"the training feature group {args.training_feature_group} does not exist")
    id_name, time_name = described["RecordIdentifierFeatureName"], described["EventTimeFeatureName"]
    if "OfflineStoreConfig" not in described:
        raise TrainError(f"the training feature group {args.training_feature_group} has no offline store to train from")
    features = [d["FeatureName"] for d in described["FeatureDefinitions"]
                if d["FeatureName"] not in (id_name, time_name, args.label) and d["FeatureType"] != "String"]
    if args.label not in {d["FeatureName"] for d in described["FeatureDefinitions"]}:
        raise TrainError(f"the training feature group {args.training_feature_group} has no label feature {args.label!r}")
    deadline = time.time() + args.wait_for_rows_secs
    while True:
        if args.local_s3_root:
            rows = latest_per_id(local_offline_rows(args.local_s3_root, described), id_name, time_name)
        else:
            rows = athena_latest_rows(session, described, args.athena_workgroup, id_name, time_name)
        if rows or time.time() >= deadline:
            break
        time.sleep(0.5)
    if not rows:
        raise TrainError(f"the training feature group {args.training_feature_group} has no rows in its offline store "
                         f"(it lags the online store: on AWS by up to 15 minutes)")
    return rows, id_name, features


# ---- training and evaluation ---------------------------------------------------------------

def number(v):
    if v is None or v == "":
        return math.nan
    return float(v)


def is_validation(record_id, percent):
    """A stable split: the same id lands on the same side in every run."""
    return int(hashlib.sha256(str(record_id).encode()).hexdigest()[:8], 16) % 100 < percent


def auc(labels, scores):
    """Area under the ROC curve (the rank statistic, ties averaged)."""
    order = np.argsort(scores, kind="mergesort")
    s = np.asarray(scores)[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    y = np.asarray(labels)[order]
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return math.nan
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def train(args, rows, id_name, features):
    labelled = [r for r in rows if r.get(args.label) not in (None, "")]
    if len(labelled) < args.min_rows:
        raise TrainError(f"only {len(labelled)} labelled rows in {args.training_feature_group} "
                         f"(TRAIN_MIN_ROWS is {args.min_rows})")
    val = [r for r in labelled if is_validation(r[id_name], args.validation_percent)]
    trn = [r for r in labelled if not is_validation(r[id_name], args.validation_percent)]
    if not val or not trn:
        raise TrainError(f"the split left {len(trn)} training and {len(val)} validation rows; both must be non-empty")

    def matrix(part):
        x = np.array([[number(r.get(f)) for f in features] for r in part], dtype=np.float64)
        y = np.array([int(float(r[args.label])) for r in part])
        return x, y
    x_trn, y_trn = matrix(trn)
    x_val, y_val = matrix(val)
    if len(set(y_trn.tolist())) < 2:
        raise TrainError(f"the training rows hold only label {int(y_trn[0])}: nothing to learn")
    if not set(y_trn.tolist()) <= {0, 1}:
        raise TrainError(f"label {args.label!r} must be 0 or 1, found {sorted(set(y_trn.tolist()))}")
    params = {"objective": "binary:logistic", "max_depth": args.max_depth, "eta": args.eta,
              "eval_metric": "logloss", "seed": 7}
    booster = xgb.train(params, xgb.DMatrix(x_trn, label=y_trn, feature_names=features), num_boost_round=args.rounds)
    baselines = {f: baseline(x_trn[:, i]) for i, f in enumerate(features)}
    p_val = booster.predict(xgb.DMatrix(x_val, feature_names=features))
    evaluation = {
        "binary_classification_metrics": {k: {"value": v, "standard_deviation": "NaN"}
                                          for k, v in binary_metrics(y_val, p_val).items()},
        "rows": {"training": len(trn), "validation": len(val), "unlabelled_dropped": len(rows) - len(labelled),
                 "positive_rate_validation": float(y_val.mean())},
        "features": features,
        "label": args.label,
        "params": dict(params, num_boost_round=args.rounds),
        "training_feature_group": args.training_feature_group,
        "source_commit": args.source_commit,
        "trained_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "baseline": {f: b for f, b in baselines.items() if b is not None},
    }
    return booster, evaluation, (val, y_val)


def binary_metrics(y, p):
    """AUC, accuracy at 0.5 and log loss of scores `p` for labels `y`."""
    p_clip = np.clip(p, 1e-15, 1 - 1e-15)
    return {"auc": auc(y, p), "accuracy": float(((p > 0.5) == y).mean()),
            "logloss": float(-(y * np.log(p_clip) + (1 - y) * np.log(1 - p_clip)).mean())}


# ---- the live model on the same rows -------------------------------------------------------

def read_object(args, session, url):
    bucket, _, key = url[len("s3://"):].partition("/")
    if args.local_s3_root:
        return (pathlib.Path(args.local_s3_root) / bucket / key).read_bytes()
    return session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def evaluate_live(args, session, sm, validation):
    """The latest Approved (live) model scored on the candidate's very validation rows, so the
    approver compares like with like: its version and figures, or why it could not score them.
    None when the group has no Approved package."""
    rows, y = validation
    approved = sm.list_model_packages(ModelPackageGroupName=args.group, ModelApprovalStatus="Approved",
                                      SortBy="CreationTime", SortOrder="Descending",
                                      MaxResults=1)["ModelPackageSummaryList"]
    if not approved:
        return None
    arn = approved[0]["ModelPackageArn"]
    live = {"version": int(arn.rsplit("/", 1)[1]), "arn": arn, "rows": len(rows)}
    try:
        described = sm.describe_model_package(ModelPackageName=arn)
        url = described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        with tarfile.open(fileobj=io.BytesIO(read_object(args, session, url))) as tar:
            raw = tar.extractfile("xgboost-model").read()
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
    except Exception as e:  # the gate says why instead of a number
        return dict(live, unavailable=f"its model could not be read: {e}"[:200])
    names = booster.feature_names or [
        f for f in described.get("CustomerMetadataProperties", {}).get("features", "").split(",") if f]
    if not names:
        return dict(live, unavailable="its model names no features")
    missing = [f for f in names if f not in rows[0]]
    if missing:
        return dict(live, unavailable=f"it takes features the validation rows do not have: {','.join(missing)}"[:200])
    x = np.array([[number(r.get(f)) for f in names] for r in rows], dtype=np.float64)
    return dict(live, **binary_metrics(y, booster.predict(xgb.DMatrix(x, feature_names=names))))


# ---- the drift baseline ----------------------------------------------------------------------

BASELINE_BINS = 10


def round_sig(v, digits):
    return float(f"{v:.{digits - 1}e}")


def baseline(values, digits=6):
    """One feature's training baseline in the registry format the logger reads (the `drift`
    crate: crates/drift/src/baseline.rs): decile edges (numpy's default quantiles) rounded to
    `digits` significant digits, duplicates dropped; the share of non-missing values in each
    bin, a value falling in bin "how many edges are < value"; the share of missing values.
    `e=<edges> p=<shares> m=<missing rate>`, space-separated, at most 256 characters. None
    when the feature has no value at all."""
    values = np.asarray(values, dtype=np.float64)
    present = values[np.isfinite(values)]
    if present.size == 0:
        return None
    qs = np.quantile(present, [i / BASELINE_BINS for i in range(1, BASELINE_BINS)])
    edges = np.unique([round_sig(q, digits) for q in qs])
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    shares = [round_sig(c / present.size, 4) for c in counts]
    missing = round_sig(1 - present.size / values.size, 4)
    text = "e={} p={} m={}".format(" ".join(repr(float(e)) for e in edges),
                                   " ".join(repr(p) for p in shares), repr(missing))
    if len(text) > METADATA_VALUE_MAX and digits > 3:
        return baseline(values, digits - 1)
    return text


# ---- artifacts and registration ------------------------------------------------------------

def model_tar_gz(booster):
    raw = bytes(booster.save_raw("json"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def put_object(args, session, key, body, content_type):
    if args.local_s3_root:
        path = pathlib.Path(args.local_s3_root) / args.bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    else:  # the bucket's default encryption (SSE-KMS in the pipeline template) applies
        session.client("s3").put_object(Bucket=args.bucket, Key=key, Body=body, ContentType=content_type)
    return f"s3://{args.bucket}/{key}"


def metadata(evaluation):
    m = evaluation["binary_classification_metrics"]
    props = {
        "features": ",".join(evaluation["features"]),
        "label": evaluation["label"],
        "source_commit": evaluation["source_commit"],
        "training_feature_group": evaluation["training_feature_group"],
        "validation_auc": f"{m['auc']['value']:.6f}",
        "validation_accuracy": f"{m['accuracy']['value']:.6f}",
        "validation_logloss": f"{m['logloss']['value']:.6f}",
        "training_rows": str(evaluation["rows"]["training"]),
        "validation_rows": str(evaluation["rows"]["validation"]),
    }
    props.update({f"baseline.{f}": b for f, b in evaluation.get("baseline", {}).items()})
    live = evaluation.get("live_model")
    if live is not None:  # the live model on the same validation rows
        props["live.version"] = str(live["version"])
        if "unavailable" in live:
            props["live.unavailable"] = live["unavailable"]
        else:
            props.update({f"live.validation_{k}": f"{live[k]:.6f}" for k in ("auc", "accuracy", "logloss")})
    too_long = [k for k, v in props.items() if len(v) > METADATA_VALUE_MAX]
    if too_long:
        raise TrainError(f"CustomerMetadataProperties values longer than {METADATA_VALUE_MAX} characters: {too_long}")
    return props


def register(args, sm, run_id, model_url, evaluation_url, evaluation, digest):
    try:
        sm.describe_model_package_group(ModelPackageGroupName=args.group)
    except sm.exceptions.ClientError as e:
        raise TrainError(f"the model package group {args.group} cannot be read: {e}")
    m = evaluation["binary_classification_metrics"]
    return sm.create_model_package(
        ModelPackageGroupName=args.group,
        ModelPackageDescription=(f"XGBoost on {args.training_feature_group}: validation AUC {m['auc']['value']:.4f}, "
                                 f"accuracy {m['accuracy']['value']:.4f} (commit {args.source_commit[:12]})"),
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": args.image, "ModelDataUrl": model_url}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelMetrics={"ModelQuality": {"Statistics": {
            "ContentType": "application/json", "S3Uri": evaluation_url, "ContentDigest": digest}}},
        CustomerMetadataProperties=metadata(evaluation),
        ClientToken=run_id,  # a retried registration of the same run returns the same package
    )["ModelPackageArn"]


def main(argv=None):
    args = parse_args(argv)
    # The Rust SDK and CodeBuild name the region AWS_REGION; boto3 reads AWS_DEFAULT_REGION.
    session = boto3.session.Session(region_name=env("AWS_REGION", env("AWS_DEFAULT_REGION")))
    sm = session.client("sagemaker")
    started = time.time()
    try:
        rows, id_name, features = load_training_rows(args, session, sm)
        print(f"train: {len(rows)} latest rows from {args.training_feature_group}, features {features}",
              file=sys.stderr, flush=True)
        booster, evaluation, validation = train(args, rows, id_name, features)
        m = evaluation["binary_classification_metrics"]
        print(f"train: validation AUC {m['auc']['value']:.4f}, accuracy {m['accuracy']['value']:.4f} "
              f"on {evaluation['rows']['validation']} rows", file=sys.stderr, flush=True)
        live = evaluate_live(args, session, sm, validation)
        if live is not None:
            evaluation["live_model"] = live
            said = live.get("unavailable") or f"AUC {live['auc']:.4f}, accuracy {live['accuracy']:.4f}"
            print(f"train: the live v{live['version']} on the same rows: {said}", file=sys.stderr, flush=True)
        run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{hashlib.sha256(os.urandom(8)).hexdigest()[:8]}"
        model_url = put_object(args, session, f"{args.prefix}/{run_id}/model.tar.gz", model_tar_gz(booster),
                               "application/gzip")
        report = json.dumps(evaluation, indent=2, sort_keys=True).encode()
        evaluation_url = put_object(args, session, f"{args.prefix}/{run_id}/evaluation.json", report,
                                    "application/json")
        arn = register(args, sm, run_id, model_url, evaluation_url, evaluation, hashlib.sha256(report).hexdigest())
    except TrainError as e:
        print(f"train: FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    summary = {"model_package_arn": arn, "model_package_version": int(arn.rsplit("/", 1)[1]),
               "status": "PendingManualApproval", "model_data_url": model_url, "evaluation_url": evaluation_url,
               "validation_auc": m["auc"]["value"], "validation_accuracy": m["accuracy"]["value"],
               "rows": evaluation["rows"], "features": features, "live_model": evaluation.get("live_model"),
               "seconds": round(time.time() - started, 2)}
    text = json.dumps(summary)
    if args.output:
        pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
