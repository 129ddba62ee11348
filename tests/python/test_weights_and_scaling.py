"""boto3, unchanged, against sagemaker-local's variant weights and Application Auto Scaling, as
AWS documents them: UpdateEndpointWeightsAndCapacities (Updating, then InService with the
desired values current; invocations routed by the current weights; an unknown variant or
weights that send nothing anywhere refused), and the scaling calls Deploy makes, including
SageMaker refusing an UpdateEndpoint that would remove a variant registered for scaling."""
import collections
import json
import pathlib
import time

import botocore.exceptions
import pytest

from deploy import XGBOOST_IMAGE, model_tar_gz

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO_MODEL = (ROOT / "demo" / "model" / "xgboost-model.json").read_bytes()
ROW = "63,40,29.01,0,4,0,2,1"


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def settle(sm, name):
    deadline = time.time() + 20
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] not in ("Creating", "Updating"):
            return d
        time.sleep(0.05)
    raise AssertionError(f"{name} never settled")


@pytest.fixture(scope="module")
def split(server, sm):
    """Endpoint `weights` with variants a (weight 1) and b (weight 1), both the demo model."""
    url = server.put_object("weights", "demo/model.tar.gz", model_tar_gz(DEMO_MODEL))
    for v in ("a", "b"):
        sm.create_model(ModelName=f"weights-{v}", PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": url})
    sm.create_endpoint_config(EndpointConfigName="weights-ab", ProductionVariants=[
        {"VariantName": v, "ModelName": f"weights-{v}", "InitialInstanceCount": 2, "InstanceType": "ml.m5.large",
         "InitialVariantWeight": 1.0} for v in ("a", "b")])
    sm.create_endpoint(EndpointName="weights", EndpointConfigName="weights-ab")
    assert settle(sm, "weights")["EndpointStatus"] == "InService"
    return "weights"


def variants(sm, name):
    return {v["VariantName"]: v for v in sm.describe_endpoint(EndpointName=name)["ProductionVariants"]}


def test_weights_and_capacities_change_through_updating_and_route_invocations(sm, runtime, split):
    before = variants(sm, split)
    assert [(v["CurrentWeight"], v["DesiredWeight"], v["CurrentInstanceCount"]) for v in before.values()] == [(1.0, 1.0, 2)] * 2
    sm.update_endpoint_weights_and_capacities(EndpointName=split, DesiredWeightsAndCapacities=[
        {"VariantName": "a", "DesiredWeight": 3.0}, {"VariantName": "b", "DesiredWeight": 1.0, "DesiredInstanceCount": 1}])
    during = sm.describe_endpoint(EndpointName=split)
    assert during["EndpointStatus"] == "Updating"
    assert {v["VariantName"]: (v["CurrentWeight"], v["DesiredWeight"]) for v in during["ProductionVariants"]} == {
        "a": (1.0, 3.0), "b": (1.0, 1.0)}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint_weights_and_capacities(EndpointName=split, DesiredWeightsAndCapacities=[
            {"VariantName": "a", "DesiredWeight": 1.0}])
    assert code(e) == "ValidationException" and "in-progress" in str(e.value)
    assert settle(sm, split)["EndpointStatus"] == "InService"
    after = variants(sm, split)
    assert (after["a"]["CurrentWeight"], after["b"]["CurrentWeight"]) == (3.0, 1.0)
    assert (after["a"]["CurrentInstanceCount"], after["b"]["CurrentInstanceCount"]) == (2, 1)
    seen = collections.Counter(
        runtime.invoke_endpoint(EndpointName=split, ContentType="text/csv", Body=ROW)["InvokedProductionVariant"]
        for _ in range(400))
    assert 0.65 < seen["a"] / 400 < 0.85, seen  # 3:1 by the current weights
    targeted = runtime.invoke_endpoint(EndpointName=split, ContentType="text/csv", Body=ROW, TargetVariant="b")
    assert targeted["InvokedProductionVariant"] == "b"


def test_an_unknown_variant_or_weights_that_send_nothing_anywhere_are_refused(sm, split):
    settle(sm, split)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint_weights_and_capacities(EndpointName=split, DesiredWeightsAndCapacities=[
            {"VariantName": "nope", "DesiredWeight": 1.0}])
    assert code(e) == "ValidationException" and "nope" in str(e.value)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint_weights_and_capacities(EndpointName=split, DesiredWeightsAndCapacities=[
            {"VariantName": "a", "DesiredWeight": 0.0}, {"VariantName": "b", "DesiredWeight": 0.0}])
    assert code(e) == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint_weights_and_capacities(EndpointName="no-such-endpoint", DesiredWeightsAndCapacities=[
            {"VariantName": "a", "DesiredWeight": 1.0}])
    assert code(e) == "ValidationException"
    assert settle(sm, split)["EndpointStatus"] == "InService", "a refused update changes nothing"


def test_scaling_registers_a_variant_and_sagemaker_refuses_to_remove_it_until_deregistered(server, sm, split):
    aas = server.client("application-autoscaling")
    settle(sm, split)
    resource = f"endpoint/{split}/variant/b"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    arn = aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension,
                                       MinCapacity=1, MaxCapacity=4)["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:")
    policy = aas.put_scaling_policy(
        PolicyName="invocations", ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension,
        PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 1000.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300, "ScaleOutCooldown": 60})
    assert policy["PolicyARN"] and len(policy["Alarms"]) == 2
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(resource, 1, 4)]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"]
    assert [p["PolicyName"] for p in policies] == ["invocations"]

    # A config without b: SageMaker refuses the update while b is registered.
    sm.create_endpoint_config(EndpointConfigName="weights-a", ProductionVariants=[
        {"VariantName": "a", "ModelName": "weights-a", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
         "InitialVariantWeight": 1.0}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_endpoint(EndpointName=split, EndpointConfigName="weights-a")
    assert code(e) == "ValidationException" and "Deregister the variant" in str(e.value)
    aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension)
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"] == [], \
        "deregistering deletes the target's policies"
    sm.update_endpoint(EndpointName=split, EndpointConfigName="weights-a")
    assert list(variants(sm, split)) == ["a"] if settle(sm, split)["EndpointStatus"] == "InService" else False

    with pytest.raises(botocore.exceptions.ClientError) as e:
        aas.delete_scaling_policy(PolicyName="invocations", ServiceNamespace="sagemaker", ResourceId=resource,
                                  ScalableDimension=dimension)
    assert code(e) == "ObjectNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=f"endpoint/{split}/variant/gone",
                                     ScalableDimension=dimension, MinCapacity=1, MaxCapacity=2)
    assert code(e) == "ValidationException"


def test_the_weights_survive_a_restart(tmp_path):
    from conftest import Server
    srv = Server(tmp_path)
    try:
        sm, runtime = srv.client("sagemaker"), srv.client("sagemaker-runtime")
        url = srv.put_object("weights", "demo/model.tar.gz", model_tar_gz(DEMO_MODEL))
        for v in ("a", "b"):
            sm.create_model(ModelName=f"m-{v}", PrimaryContainer={"Image": XGBOOST_IMAGE, "ModelDataUrl": url})
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[
            {"VariantName": v, "ModelName": f"m-{v}", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
             "InitialVariantWeight": 1.0} for v in ("a", "b")])
        sm.create_endpoint(EndpointName="e", EndpointConfigName="c")
        settle(sm, "e")
        sm.update_endpoint_weights_and_capacities(EndpointName="e", DesiredWeightsAndCapacities=[
            {"VariantName": "a", "DesiredWeight": 0.0}])
        settle(sm, "e")
    finally:
        assert srv.stop() == 0
    srv = Server(tmp_path)
    try:
        sm, runtime = srv.client("sagemaker"), srv.client("sagemaker-runtime")
        assert variants(sm, "e")["a"]["CurrentWeight"] == 0.0
        seen = {runtime.invoke_endpoint(EndpointName="e", ContentType="text/csv", Body=ROW)["InvokedProductionVariant"]
                for _ in range(50)}
        assert seen == {"b"}, "routing follows the weights kept across the restart"
    finally:
        assert srv.stop() == 0
