"""The reference the benchmark compares the gateway with: the design documents' web app as a
Python team would write it. Flask under gunicorn (2 workers x 8 threads), boto3 clients from
the standard AWS environment; per request: InvokeEndpoint, then PutRecord of each row's
interaction into the user-interactions feature group, then the answer. Not part of the
product: it exists so that the benchmark measures both on the same machine, against the same
sagemaker-local, with the same load generator.

    gunicorn --workers 2 --threads 8 --worker-class gthread --chdir bench/flask_reference app:app
"""
import datetime
import os
import uuid

import boto3
from flask import Flask, jsonify, request

ENDPOINT = os.environ.get("SAGEMAKER_ENDPOINT_NAME", "my-mlops-prod-endpoint")
GROUP = os.environ.get("USER_INTERACTION_FG_NAME", "my-mlops-user-interactions-v1")

# AWS_REGION as the Rust services read it (botocore itself only reads AWS_DEFAULT_REGION).
REGION = os.environ.get("AWS_REGION") or None
runtime = boto3.client("sagemaker-runtime", region_name=REGION)
featurestore = boto3.client("sagemaker-featurestore-runtime", region_name=REGION)
app = Flask(__name__)


def csv_line(row):
    return ",".join("" if v is None else repr(float(v)) for v in row)


@app.post("/v1/predict")
def predict():
    rows = (request.get_json(silent=True) or {}).get("instances")
    if not isinstance(rows, list) or not rows:
        return jsonify(error="instances: a non-empty list of rows is required"), 400
    lines = [csv_line(row) for row in rows]
    answer = runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Accept="text/csv",
                                     Body="\n".join(lines))
    body = answer["Body"].read().decode()
    scores = [float(t) for t in body.replace("\n", ",").split(",") if t.strip()]
    variant = answer.get("InvokedProductionVariant", "")
    event_time = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    predictions = []
    for line, score in zip(lines, scores):
        interaction_id = str(uuid.uuid4())
        featurestore.put_record(FeatureGroupName=GROUP, Record=[
            {"FeatureName": "interaction_id", "ValueAsString": interaction_id},
            {"FeatureName": "event_time", "ValueAsString": event_time},
            {"FeatureName": "client_id", "ValueAsString": request.headers.get("X-Client-Id", "anonymous")},
            {"FeatureName": "source", "ValueAsString": "api"},
            {"FeatureName": "features_csv", "ValueAsString": line},
            {"FeatureName": "prediction", "ValueAsString": repr(score)},
            {"FeatureName": "endpoint_name", "ValueAsString": ENDPOINT},
            {"FeatureName": "variant_name", "ValueAsString": variant},
            {"FeatureName": "latency_ms", "ValueAsString": "0"},
        ])
        predictions.append({"score": score, "interaction_id": interaction_id})
    return jsonify(predictions=predictions, model={"endpoint_name": ENDPOINT, "variant_name": variant})
