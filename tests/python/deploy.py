"""Deploys an XGBoost model to sagemaker-local the way a pipeline would: artifact to
"S3", versioned model package, approval, model, endpoint config, endpoint, waiter."""
import io
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
