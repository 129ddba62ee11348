"""Least privilege in infra/aws/pipeline.yaml, checked on the template itself: each role grants
exactly its (action, resource) pairs — Train may register packages but deploy nothing, Deploy
may create models and endpoint configs and update the one endpoint and pass only the
execution role, nothing gets a wildcard action or PassRole on "*" — and the grants of Train
and Deploy are the calls their code makes, read from the source."""
import json
import pathlib
import re

import pytest

from cfn import ACCOUNT, REGION, SM, STACK, Resolver, grants, load, plain, roles

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "aws" / "pipeline.yaml"
CONNECTION = f"arn:aws:codeconnections:{REGION}:{ACCOUNT}:connection/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
PARAMS = {
    "DeployImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlops-inference:abc123",
    "DeployImageRepositoryName": "mlops-inference",
    "ModelPackageGroup": "churn-pkg",
    "SageMakerEndpointName": "churn-prod",
    "TrainingFgName": "churn-training-v3",
    "UserInteractionFgName": "churn-interactions-v2",
}
CONNECTIONS = dict(PARAMS, SourceProvider="CodeConnections", ConnectionArn=CONNECTION, FullRepositoryId="acme/churn")
LOGS = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/mlops/{STACK}"
GLUE = {f"arn:aws:glue:{REGION}:{ACCOUNT}:catalog", f"arn:aws:glue:{REGION}:{ACCOUNT}:database/sagemaker_featurestore",
        f"arn:aws:glue:{REGION}:{ACCOUNT}:table/sagemaker_featurestore/*"}
SERVICES = {"TrainRole": "codebuild", "DeployRole": "codebuild", "PipelineRole": "codepipeline", "EventsRole": "events",
            "SageMakerExecutionRole": "sagemaker", "FeatureStoreRole": "sagemaker"}


def pairs(*groups):
    return {(a, r) for actions, resources in groups for a in actions for r in resources}


def camel(call):
    return "".join(w.title() for w in call.split("_"))


@pytest.fixture(scope="module")
def template():
    return load(TEMPLATE)


def test_every_role_is_inline_exact_and_wildcard_free(template):
    assert sorted(roles(template)) == sorted(SERVICES), roles(template)
    kinds = {v["Type"] for v in template["Resources"].values()}
    assert not kinds & {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"}, kinds
    for role in roles(template):
        assert "ManagedPolicyArns" not in template["Resources"][role]["Properties"], role
        for params in (PARAMS, CONNECTIONS):
            for action, resource, _ in grants(template, params, role):
                assert "*" not in action and "?" not in action, f"{role} grants the wildcard action {action}"
                if action == "iam:PassRole":
                    assert resource == "<SageMakerExecutionRole.Arn>", (role, resource)


def test_each_role_is_assumable_only_by_its_service_in_this_account(template):
    r = Resolver(template, PARAMS)
    for role, service in SERVICES.items():
        st, = r.value(template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"])["Statement"]
        assert st["Principal"] == {"Service": f"{service}.amazonaws.com"} and st["Action"] == "sts:AssumeRole", role
        assert st["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}, role


def test_train_may_read_the_training_data_and_register_but_deploy_nothing(template):
    granted = plain(grants(template, PARAMS, "TrainRole"))
    assert granted == pairs(
        (["logs:CreateLogStream", "logs:PutLogEvents"], [f"{LOGS}/train:*"]),
        (["s3:GetObject"], ["<ArtifactBucket.Arn>/pipeline/*"]),
        (["s3:PutObject"], ["<ArtifactBucket.Arn>/pipeline/*", "<ArtifactBucket.Arn>/models/*", "<ArtifactBucket.Arn>/athena/*"]),
        (["s3:GetObject", "s3:GetBucketLocation", "s3:ListBucket"], ["<ArtifactBucket.Arn>", "<ArtifactBucket.Arn>/athena/*",
                                                                     "<FeatureStoreBucket.Arn>", "<FeatureStoreBucket.Arn>/offline-store/*"]),
        (["kms:Decrypt", "kms:GenerateDataKey"], ["<Key.Arn>"]),
        (["athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults"],
         [f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/<AthenaWorkGroup>"]),
        (["glue:GetDatabase", "glue:GetTable", "glue:GetPartitions"], GLUE),
        (["sagemaker:DescribeFeatureGroup"], [f"{SM}:feature-group/churn-training-v3"]),
        (["sagemaker:DescribeModelPackageGroup", "sagemaker:CreateModelPackage"],
         [f"{SM}:model-package-group/churn-pkg", f"{SM}:model-package/churn-pkg/*"]),
        # The live model, scored on the candidate's validation rows: found and read, not changed.
        (["s3:GetObject"], ["<ArtifactBucket.Arn>/models/*"]),
        (["sagemaker:ListModelPackages"], ["*"]),  # no resource-level permissions exist for it
        (["sagemaker:DescribeModelPackage"], [f"{SM}:model-package/churn-pkg/*"]),
    )
    deploying = {"sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
                 "sagemaker:UpdateEndpoint", "sagemaker:UpdateModelPackage", "iam:PassRole"}
    assert not {a for a, _ in granted} & deploying


def test_train_grants_are_the_calls_the_training_step_makes(template):
    source = (ROOT / "pipeline" / "train.py").read_text()
    calls = {"sagemaker:" + camel(c) for c in re.findall(r"\bsm\.(describe_\w+|create_\w+|list_\w+)\(", source)}
    calls |= {"athena:" + camel(c) for c in re.findall(r"athena\.(start_\w+|get_query_execution)\(", source)}
    calls |= {"athena:" + camel(c) for c in re.findall(r'get_paginator\("(\w+)"\)', source)}
    assert len(calls) == 8, f"read too few calls from train.py: {calls}"
    granted = {a for a, _ in plain(grants(template, PARAMS, "TrainRole")) if a.split(":")[0] in ("sagemaker", "athena")}
    assert calls == granted, (calls, granted)


def test_deploy_may_roll_the_one_endpoint_and_pass_only_the_execution_role(template):
    granted = grants(template, PARAMS, "DeployRole")
    repo = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/mlops-inference"
    assert plain(granted) == pairs(
        (["logs:CreateLogStream", "logs:PutLogEvents"], [f"{LOGS}/deploy:*"]),
        (["s3:GetObject"], ["<ArtifactBucket.Arn>/pipeline/*"]),
        (["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"], ["<Key.Arn>"]),
        (["ecr:GetAuthorizationToken"], ["*"]),  # account-wide by design of ECR's API
        (["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"], [repo]),
        (["sagemaker:ListModelPackages"], ["*"]),  # no resource-level permissions exist for it
        (["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"], [f"{SM}:model-package/churn-pkg/*"]),
        (["sagemaker:DescribeEndpoint", "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"],
         [f"{SM}:endpoint/churn-prod", f"{SM}:endpoint/churn-prod-shadow"]),
        (["sagemaker:DeleteEndpoint"], [f"{SM}:endpoint/churn-prod-shadow"]),  # only the shadow goes away
        (["sagemaker:UpdateEndpointWeightsAndCapacities"], [f"{SM}:endpoint/churn-prod"]),  # rollouts: the live one
        # Auto scaling of the serving variant: SageMaker variants only (the conditions below).
        (["application-autoscaling:RegisterScalableTarget", "application-autoscaling:DeregisterScalableTarget",
          "application-autoscaling:PutScalingPolicy", "application-autoscaling:DeleteScalingPolicy"],
         [f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/*"]),
        (["application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies"], ["*"]),
        (["cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"],
         [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:TargetTracking-endpoint/churn-prod/variant/*"]),
        (["iam:CreateServiceLinkedRole"], [f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling."
                                           "amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"]),
        (["sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig"],
         [f"{SM}:endpoint-config/churn-prod-*"]),
        (["sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel"], [f"{SM}:model/churn-prod-*"]),
        (["iam:PassRole"], ["<SageMakerExecutionRole.Arn>"]),
    )
    passed, = [c for a, _, c in granted if a == "iam:PassRole"]
    assert json.loads(passed) == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    for action in ("RegisterScalableTarget", "DeregisterScalableTarget", "PutScalingPolicy", "DeleteScalingPolicy"):
        condition, = [c for a, _, c in granted if a == f"application-autoscaling:{action}"]
        assert json.loads(condition) == {"StringEquals": {"application-autoscaling:service-namespace": "sagemaker",
                                                          "application-autoscaling:scalable-dimension": "sagemaker:variant:DesiredInstanceCount"}}
    linked, = [c for a, _, c in granted if a == "iam:CreateServiceLinkedRole"]
    assert json.loads(linked) == {"StringEquals": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}}


def test_deploy_scaling_grants_are_the_calls_mlops_deploy_makes(template):
    source = (ROOT / "tools/mlops-deploy/src/scaling.rs").read_text()
    calls = {"application-autoscaling:" + camel(c) for c in re.findall(r"\.(register_\w+|deregister_\w+|put_\w+|delete_\w+|describe_\w+)\(\)", source)}
    assert len(calls) == 6, calls
    granted = {a for a, _ in plain(grants(template, PARAMS, "DeployRole")) if a.startswith("application-autoscaling:")}
    assert calls == granted, (calls, granted)


def test_deploy_grants_are_the_calls_mlops_deploy_makes(template):
    """`mlops-deploy deploy/approve/status/shadow` (tools/mlops-deploy) and the registry logic it uses
    (crates/model-registry); `register` is the local shortcut the pipeline does not run.
    scaling.rs calls Application Auto Scaling (the next test)."""
    source = "".join(p.read_text() for p in [*sorted(f for f in (ROOT / "tools/mlops-deploy/src").glob("*.rs") if f.name != "scaling.rs"),
                                             ROOT / "crates/model-registry/src/poll.rs"])
    calls = {"sagemaker:" + camel(c) for c in re.findall(r"\.(list_\w+|describe_\w+|create_\w+|update_\w+|delete_\w+)\(\)", source)}
    calls.discard("sagemaker:CreateModelPackage")
    assert len(calls) >= 12, f"read too few calls from the deploy code: {calls}"
    granted = {a for a, _ in plain(grants(template, PARAMS, "DeployRole")) if a.startswith("sagemaker:")}
    assert calls == granted, (calls, granted)


def test_the_execution_role_reads_models_and_pulls_only_the_xgboost_image(template):
    assert plain(grants(template, PARAMS, "SageMakerExecutionRole")) == pairs(
        (["s3:GetObject"], ["<ArtifactBucket.Arn>/models/*"]),
        (["kms:Decrypt"], ["<Key.Arn>"]),
        (["ecr:GetAuthorizationToken"], ["*"]),
        (["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
         [f"arn:aws:ecr:{REGION}:683313688378:repository/sagemaker-xgboost"]),
        (["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         [f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/churn-prod:*"]),
    )


def test_the_offline_store_role_writes_only_the_offline_stores(template):
    assert plain(grants(template, PARAMS, "FeatureStoreRole")) == pairs(
        (["s3:PutObject", "s3:GetObject"], ["<FeatureStoreBucket.Arn>/offline-store/*"]),
        (["s3:GetBucketAcl"], ["<FeatureStoreBucket.Arn>"]),
        (["kms:GenerateDataKey", "kms:Decrypt"], ["<Key.Arn>"]),
        (["glue:GetDatabase", "glue:CreateDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"], GLUE),
    )


@pytest.mark.parametrize("params,source", [
    (PARAMS, pairs((["codecommit:GetBranch", "codecommit:GetCommit", "codecommit:UploadArchive",
                     "codecommit:GetUploadArchiveStatus", "codecommit:CancelUploadArchive"], ["<Repository.Arn>"]))),
    (CONNECTIONS, pairs((["codeconnections:UseConnection", "codestar-connections:UseConnection"], [CONNECTION]))),
])
def test_the_pipelines_run_their_stages_and_read_only_their_source(template, params, source):
    assert plain(grants(template, params, "PipelineRole")) == source | pairs(
        (["s3:GetObject", "s3:PutObject"], ["<ArtifactBucket.Arn>/pipeline/*"]),
        (["s3:GetBucketVersioning", "s3:GetBucketLocation"], ["<ArtifactBucket.Arn>"]),
        (["kms:Decrypt", "kms:GenerateDataKey"], ["<Key.Arn>"]),
        (["codebuild:StartBuild", "codebuild:BatchGetBuilds"], ["<TrainProject.Arn>", "<DeployProject.Arn>"]),
        (["sns:Publish"], ["<ApprovalTopic>"]),
    )


def test_a_registry_decision_starts_the_deploy_pipeline_and_nothing_else(template):
    pipeline = f"arn:aws:codepipeline:{REGION}:{ACCOUNT}"
    assert plain(grants(template, PARAMS, "EventsRole")) == pairs(
        (["codepipeline:StartPipelineExecution"], [f"{pipeline}:<BuildPipeline>", f"{pipeline}:<DeployPipeline>"]))
    r = Resolver(template, PARAMS)
    rule = r.value(template["Resources"]["ApprovalDecisionRule"]["Properties"])
    assert rule["EventPattern"] == {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
                                    "detail": {"ModelPackageGroupName": ["churn-pkg"],
                                               "ModelApprovalStatus": ["PendingManualApproval", "Approved", "Rejected"]}}
    target, = rule["Targets"]
    assert target["Arn"] == f"{pipeline}:<DeployPipeline>"
    # The deploy pipeline runs Deploy only, one execution after the other.
    deploy = template["Resources"]["DeployPipeline"]["Properties"]
    assert [s["Name"] for s in deploy["Stages"]] == ["Source", "Deploy"] and deploy["ExecutionMode"] == "QUEUED"
    assert template["Resources"]["DeployProject"]["Properties"]["ConcurrentBuildLimit"] == 1


def test_the_build_pipeline_stops_at_a_manual_approval_before_deploy(template):
    stages = template["Resources"]["BuildPipeline"]["Properties"]["Stages"]
    assert [s["Name"] for s in stages] == ["Source", "Train", "Approval", "Deploy"]
    approval, = stages[2]["Actions"]
    assert approval["ActionTypeId"]["Provider"] == "Manual"
    assert approval["Configuration"]["NotificationArn"] == {"Ref": "ApprovalTopic"}
    deploy, = stages[3]["Actions"]
    variables = json.loads(deploy["Configuration"]["EnvironmentVariables"])
    assert variables == [{"name": "MODEL_PACKAGE_ARN", "value": "#{TrainVariables.MODEL_PACKAGE_ARN}", "type": "PLAINTEXT"}]
    projects = template["Resources"]
    assert projects["TrainProject"]["Properties"]["Source"]["BuildSpec"] == "pipeline/buildspec-train.yml"
    assert projects["DeployProject"]["Properties"]["Source"]["BuildSpec"] == "pipeline/buildspec-deploy.yml"
    for spec in ("pipeline/buildspec-train.yml", "pipeline/buildspec-deploy.yml"):
        assert (ROOT / spec).exists(), spec
    # Train's exported variables are the ones the approval and Deploy read.
    import yaml
    exported = yaml.safe_load((ROOT / "pipeline" / "buildspec-train.yml").read_text())["env"]["exported-variables"]
    assert {"MODEL_PACKAGE_ARN", "MODEL_PACKAGE_VERSION", "VALIDATION_AUC", "VALIDATION_ACCURACY"} <= set(exported)


def test_the_endpoint_config_and_stores_encrypt_with_the_key(template):
    res = template["Resources"]
    env = {v["Name"]: v["Value"] for v in res["DeployProject"]["Properties"]["Environment"]["EnvironmentVariables"]}
    assert env["DEPLOY_KMS_KEY_ID"] == {"Fn::GetAtt": ["Key", "Arn"]}
    for fg in ("TrainingFeatureGroup", "InteractionsFeatureGroup"):
        p = res[fg]["Properties"]
        assert p["OfflineStoreConfig"]["S3StorageConfig"]["KmsKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}, fg
        assert p["OnlineStoreConfig"]["SecurityConfig"]["KmsKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}, fg
    for bucket in ("ArtifactBucket", "FeatureStoreBucket"):
        sse, = res[bucket]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert sse["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": ["Key", "Arn"]}}


def test_the_deploy_build_outlasts_the_longest_rollout_the_parameters_allow(template):
    """Nine linear steps (the smallest step allowed) of the longest bake, plus an hour for the
    endpoint updates: a rollout is never cut by CodeBuild's timeout (a cut one is resumed by
    the next Deploy, but should not need to be)."""
    params = template["Parameters"]
    steps = -(-100 // params["DeployLinearStepPercent"]["MinValue"]) - 1
    longest = steps * params["DeployBakeSecs"]["MaxValue"] + 3600
    timeout = template["Resources"]["DeployProject"]["Properties"]["TimeoutInMinutes"] * 60
    assert timeout >= longest, (timeout, longest)
    env = {v["Name"]: v["Value"] for v in template["Resources"]["DeployProject"]["Properties"]["Environment"]["EnvironmentVariables"]}
    assert {k: env[k] for k in ("DEPLOY_STRATEGY", "DEPLOY_BAKE_SECS")} == {
        "DEPLOY_STRATEGY": {"Ref": "DeployStrategy"}, "DEPLOY_BAKE_SECS": {"Ref": "DeployBakeSecs"}}
    assert params["DeployStrategy"]["Default"] == "canary" and params["DeployBakeSecs"]["Default"] == 600
