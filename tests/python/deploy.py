"""Deploys an XGBoost model to sagemaker-local the way a pipeline would: artifact to
"S3", versioned model package, approval, model, endpoint config, endpoint, waiter."""
import io
import os
import tarfile
import uuid

XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def model_tar_gz(model_json: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(model_json)
        tar.addfile(info, io.BytesIO(model_json))
    return buf.getvalue()


def deploy(server, sm, booster, name=None, group="parity-models"):
    name = name or f"m-{uuid.uuid4().hex[:12]}"
    url = server.put_object("parity-artifacts", f"{name}/model.tar.gz", model_tar_gz(bytes(booster.save_raw("json"))))
    try:
        sm.create_model_package_group(ModelPackageGroupName=group)
    except sm.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "ValidationException"
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": XGBOOST_IMAGE, "ModelDataUrl": url}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
    )["ModelPackageArn"]
    sm.create_model(ModelName=name, PrimaryContainer={"ModelPackageName": arn})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0,
    }])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return name


def local_booster(stack, url):
    """The XGBoost model in the artifact at `url` (s3://...), read from the stack's
    sagemaker-local S3 folder."""
    import xgboost as xgb
    path = os.path.join(stack.data_dir, "sagemaker-local", "s3", url[len("s3://"):])
    with tarfile.open(path) as tar:
        raw = tar.extractfile("xgboost-model").read()
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster


def xgboost_predict(booster, rows):
    """What xgboost itself predicts for `rows` (None for a missing value)."""
    import numpy as np
    import xgboost as xgb
    x = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    return [float(p) for p in booster.predict(xgb.DMatrix(x, feature_names=booster.feature_names))]
