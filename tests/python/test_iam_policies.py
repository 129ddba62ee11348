"""Least privilege in infra/aws/inference.yaml, checked on the template itself: every IAM
policy is resolved (parameters, pseudo parameters, !Sub, !GetAtt, !If with the template's
conditions) and each role must grant exactly the (action, resource) pairs of flow 3 of the
design, nothing else; a wildcard action anywhere fails. Security groups: the ALB is the only
way in, and each service accepts traffic only from its callers."""
import json
import pathlib
import re

import pytest

from cfn import INFERENCE as TEMPLATE, INFERENCE_PARAMS as PARAMS
from cfn import ACCOUNT, KMS_KEY, REGION, SM, STACK, Resolver, grants, load, plain, roles

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template():
    return load(TEMPLATE)


def test_every_role_has_no_wildcard_action_and_no_managed_policy(template):
    # 4 task + 4 execution (+ front-door's two, InferenceShape one-process) + flow logs
    assert len(roles(template)) == 11, roles(template)
    kinds = {v["Type"] for v in template["Resources"].values()}
    assert not kinds & {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::User", "AWS::IAM::Group"}, kinds
    for role in roles(template):
        props = template["Resources"][role]["Properties"]
        assert "ManagedPolicyArns" not in props, role
        assert "PermissionsBoundary" not in props or props["PermissionsBoundary"], role
        for params in (PARAMS, dict(PARAMS, FeatureGroupKmsKeyArn=KMS_KEY)):
            for action, _, _ in grants(template, params, role):
                assert "*" not in action and "?" not in action, f"{role} grants the wildcard action {action}"


def test_the_gateway_may_call_nothing_in_aws(template):
    assert grants(template, PARAMS, "GatewayTaskRole") == set()


def test_the_predictor_may_only_invoke_the_endpoint_and_its_shadow(template):
    assert plain(grants(template, PARAMS, "PredictorTaskRole")) == {
        ("sagemaker:InvokeEndpoint", f"{SM}:endpoint/churn-prod"),
        ("sagemaker:InvokeEndpoint", f"{SM}:endpoint/churn-prod-shadow")}


def test_the_logger_may_only_put_records_in_the_one_feature_group_and_use_its_spools(template):
    group = f"{SM}:feature-group/churn-interactions-v2"
    put = {("sagemaker:BatchWriteRecord", group), ("sagemaker:PutRecord", group)}
    efs = {("elasticfilesystem:ClientMount", "<SpoolFileSystem.Arn>"), ("elasticfilesystem:ClientWrite", "<SpoolFileSystem.Arn>")}
    granted = grants(template, PARAMS, "LoggerTaskRole")
    assert plain(granted) == put | efs
    through = json.dumps({"StringEquals": {"elasticfilesystem:AccessPointArn": "<SpoolAccessPoint.Arn>"}}, sort_keys=True)
    assert all(cond == through for action, _, cond in granted if action.startswith("elasticfilesystem:")), granted
    with_key = grants(template, dict(PARAMS, FeatureGroupKmsKeyArn=KMS_KEY), "LoggerTaskRole")
    assert plain(with_key) == put | {("kms:GenerateDataKey", KMS_KEY), ("kms:Decrypt", KMS_KEY)} | efs
    via = json.dumps({"StringEquals": {"kms:ViaService": f"sagemaker.{REGION}.amazonaws.com"}}, sort_keys=True)
    assert all(cond == via for action, _, cond in with_key if action.startswith("kms:")), with_key


def test_only_the_logger_reaches_the_spool_file_system_and_only_through_its_access_point(template):
    for role in roles(template):
        if role in ("LoggerTaskRole", "FrontDoorTaskRole"):  # front-door: the logger's part
            continue
        for params in (PARAMS, dict(PARAMS, FeatureGroupKmsKeyArn=KMS_KEY)):
            assert not [a for a, _, _ in grants(template, params, role) if a.startswith("elasticfilesystem:")], role
    res = template["Resources"]
    fs = res["SpoolFileSystem"]["Properties"]
    assert fs["Encrypted"] is True and fs["KmsKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}
    denies = {st["Sid"] for st in fs["FileSystemPolicy"]["Statement"] if st["Effect"] == "Deny"}
    assert denies == {"TlsOnly", "OnlyThroughTheSpoolAccessPoint"}
    volume, = res["LoggerTask"]["Properties"]["Volumes"]
    efs = volume["EFSVolumeConfiguration"]
    assert efs["TransitEncryption"] == "ENABLED"
    assert efs["AuthorizationConfig"] == {"AccessPointId": {"Ref": "SpoolAccessPoint"}, "IAM": "ENABLED"}
    assert res["SpoolAccessPoint"]["Properties"]["PosixUser"] == {"Uid": "10001", "Gid": "10001"}
    for mt in ("SpoolMountTargetA", "SpoolMountTargetB"):
        assert res[mt]["Properties"]["SecurityGroups"] == [{"Ref": "SpoolFsSecurityGroup"}]
    container = res["LoggerTask"]["Properties"]["ContainerDefinitions"][0]
    env = {e["Name"]: e["Value"] for e in Resolver(template, PARAMS).value(container["Environment"])}
    assert env["LOGGER_SPOOL_ROOT"] == container["MountPoints"][0]["ContainerPath"]
    assert container["RestartPolicy"]["Enabled"] is True
    # Every other task definition mounts nothing.
    for k, v in res.items():
        if v["Type"] == "AWS::ECS::TaskDefinition" and k not in ("LoggerTask", "FrontDoorTask"):
            assert "Volumes" not in v["Properties"], k


def test_the_watcher_reads_what_it_polls_and_writes_only_the_groups_packages(template):
    granted = grants(template, PARAMS, "WatcherTaskRole")
    # It may store metadata, never an approval status: a request carrying one is not granted.
    update, = [cond for action, _, cond in granted if action == "sagemaker:UpdateModelPackage"]
    assert json.loads(update) == {"Null": {"sagemaker:ModelApprovalStatus": "true"}}, update
    assert all(cond is None for action, _, cond in granted if action != "sagemaker:UpdateModelPackage")
    assert plain(granted) == {
        ("sagemaker:ListModelPackages", "*"),  # this action has no resource-level permissions
        ("sagemaker:DescribeModelPackage", f"{SM}:model-package/churn-pkg/*"),
        # The shadow comparison, stored with the candidate's package.
        ("sagemaker:UpdateModelPackage", f"{SM}:model-package/churn-pkg/*"),
        ("sagemaker:DescribeEndpoint", f"{SM}:endpoint/churn-prod"),
        ("sagemaker:DescribeEndpoint", f"{SM}:endpoint/churn-prod-shadow"),
        ("sagemaker:DescribeEndpointConfig", f"{SM}:endpoint-config/churn-prod-*"),
        ("sagemaker:DescribeModel", f"{SM}:model/churn-prod-*"),
    }


def test_the_logger_policy_is_exactly_the_feature_store_calls_its_code_makes(template):
    source = (ROOT / "interaction-logger" / "src" / "store.rs").read_text()
    calls = {"sagemaker:" + "".join(w.title() for w in m.split("_")) for m in re.findall(r"\.(put_record|batch_write_record|\w+_record)\(\)", source)}
    assert calls == {"sagemaker:BatchWriteRecord", "sagemaker:PutRecord"}, calls
    granted = {a for a, _ in plain(grants(template, PARAMS, "LoggerTaskRole")) if a.startswith("sagemaker:")}
    assert calls == granted, granted


def test_the_watcher_policy_covers_every_call_its_code_makes(template):
    """The other direction: the SageMaker calls in registry-watcher's source (the poll, and
    the comparison it stores) are all granted, and nothing else is."""
    source = "".join((ROOT / p).read_text() for p in ("crates/model-registry/src/poll.rs", "registry-watcher/src/evidence.rs"))
    calls = {"sagemaker:" + "".join(w.title() for w in m.split("_")) for m in re.findall(r"\.(list_\w+|describe_\w+|update_\w+)\(\)", source)}
    assert "sagemaker:UpdateModelPackage" in calls and len(calls) == 6, calls
    assert ".model_approval_status(" not in (ROOT / "registry-watcher/src/evidence.rs").read_text(), \
        "the watcher stores metadata; it never changes an approval"
    assert calls == {a for a, _ in plain(grants(template, PARAMS, "WatcherTaskRole"))}, calls


@pytest.mark.parametrize("service,group", [("Gateway", "gateway"), ("Predictor", "predictor"),
                                           ("Logger", "interaction-logger"), ("Watcher", "registry-watcher")])
def test_execution_roles_only_pull_the_image_and_write_their_own_log_group(template, service, group):
    repo = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/mlops-inference"
    assert plain(grants(template, PARAMS, f"{service}ExecutionRole")) == {
        ("ecr:GetAuthorizationToken", "*"),  # account-wide by design of ECR's API
        ("ecr:BatchCheckLayerAvailability", repo),
        ("ecr:GetDownloadUrlForLayer", repo),
        ("ecr:BatchGetImage", repo),
        ("logs:CreateLogStream", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/mlops/{STACK}/{group}:*"),
        ("logs:PutLogEvents", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/mlops/{STACK}/{group}:*"),
    }
    task = template["Resources"][f"{service}Task"]["Properties"]
    assert task["ExecutionRoleArn"] == {"Fn::GetAtt": [f"{service}ExecutionRole", "Arn"]}
    assert task["TaskRoleArn"] == {"Fn::GetAtt": [f"{service}TaskRole", "Arn"]}
    container = task["ContainerDefinitions"][0]  # the service (a trace collector may follow)
    assert container["Command"] == [group]
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": f"{service}LogGroup"}


def test_task_roles_are_assumable_only_by_ecs_tasks_of_this_account(template):
    for role in roles(template):
        if role == "FlowLogRole":
            continue
        trust = Resolver(template, PARAMS).value(template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"])
        st, = trust["Statement"]
        assert st["Principal"] == {"Service": "ecs-tasks.amazonaws.com"} and st["Action"] == "sts:AssumeRole", role
        assert st["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}, role


def test_security_groups_let_in_only_the_callers(template):
    res = template["Resources"]

    def ingress(group):
        return {(r["FromPort"], r.get("SourceSecurityGroupId", {}).get("Ref") or r.get("CidrIp", {}).get("Ref", r.get("CidrIp")))
                for r in res[group]["Properties"]["SecurityGroupIngress"]}
    assert ingress("AlbSecurityGroup") == {(443, "AllowedIngressCidr")}
    assert ingress("GatewaySecurityGroup") == {(8080, "AlbSecurityGroup"), (8081, "AlbSecurityGroup")}
    assert ingress("PredictorSecurityGroup") == {(50051, "GatewaySecurityGroup")}
    assert ingress("LoggerSecurityGroup") == {(50052, "GatewaySecurityGroup"), (50052, "PredictorSecurityGroup")}
    # The logger follows the watcher for the live model's drift baseline.
    assert ingress("WatcherSecurityGroup") == {(50053, "GatewaySecurityGroup"), (50053, "PredictorSecurityGroup"),
                                               (50053, "LoggerSecurityGroup")}
    assert ingress("SpoolFsSecurityGroup") == {(2049, "LoggerSecurityGroup")}
    assert not [k for k, v in res.items() if v["Type"] == "AWS::EC2::SecurityGroupIngress"], "no ingress outside the groups"
    # Only the ALB is internet-facing; every service runs in the private subnets, no public IP.
    for k, v in res.items():
        if v["Type"] == "AWS::ECS::Service":
            net = v["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
            assert net["AssignPublicIp"] == "DISABLED", k
            assert net["Subnets"] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}], k
    private_routes = [v for v in res.values() if v["Type"] == "AWS::EC2::Route"
                      and v["Properties"]["RouteTableId"] == {"Ref": "PrivateRouteTable"}]
    assert not private_routes, "the private subnets must have no route out (no NAT path)"


SERVICE_GROUPS = ("GatewaySecurityGroup", "PredictorSecurityGroup", "LoggerSecurityGroup", "WatcherSecurityGroup")


def test_tasks_reach_only_the_endpoints_s3_and_their_peers(template):
    """No task may open a connection anywhere but the VPC interface endpoints (443), S3's
    prefix list (443, image layers) and the services it calls: never 0.0.0.0/0."""
    res = template["Resources"]
    for group in SERVICE_GROUPS:
        inline = res[group]["Properties"]["SecurityGroupEgress"]
        assert inline == [{"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "CidrIp": "127.0.0.1/32",
                           "Description": "no egress but the rules below"}], (group, inline)
    out = {}
    for k, v in res.items():
        if v["Type"] != "AWS::EC2::SecurityGroupEgress":
            continue
        p = v["Properties"]
        assert "CidrIp" not in p and "CidrIpv6" not in p, k
        to = p.get("DestinationSecurityGroupId", {}).get("Ref") or p["DestinationPrefixListId"]["Ref"]
        out.setdefault(p["GroupId"]["Ref"], set()).add((p["FromPort"], to))
    aws = {(443, "EndpointSecurityGroup"), (443, "S3PrefixListId")}
    assert out == {
        "AlbSecurityGroup": {(8080, "GatewaySecurityGroup"), (8081, "GatewaySecurityGroup")},
        "GatewaySecurityGroup": aws | {(50051, "PredictorSecurityGroup"), (50052, "LoggerSecurityGroup"),
                                       (50053, "WatcherSecurityGroup")},
        "PredictorSecurityGroup": aws | {(50053, "WatcherSecurityGroup"), (50052, "LoggerSecurityGroup")},
        "LoggerSecurityGroup": aws | {(50053, "WatcherSecurityGroup"), (2049, "SpoolFsSecurityGroup")},
        "WatcherSecurityGroup": aws,
    }, out
    for k, v in res.items():
        for rule in v.get("Properties", {}).get("SecurityGroupEgress", []) if v["Type"] == "AWS::EC2::SecurityGroup" else []:
            assert rule.get("CidrIp") != "0.0.0.0/0", k


def test_ecs_exec_is_off_by_default_and_grants_only_its_channels_when_on(template):
    """The documented admin path (the logger's dead letters, the watcher's pages on loopback):
    ECS Exec into those two tasks, with its endpoint and exactly its channel grants."""
    channels = {("ssmmessages:CreateControlChannel", "*"), ("ssmmessages:CreateDataChannel", "*"),
                ("ssmmessages:OpenControlChannel", "*"), ("ssmmessages:OpenDataChannel", "*")}
    res = template["Resources"]
    for on, params in ((False, PARAMS), (True, dict(PARAMS, AdminExecAccess="true"))):
        resolve = Resolver(template, params)
        for role in roles(template):
            got = {(a, r) for a, r in plain(grants(template, params, role)) if a.startswith("ssmmessages:")}
            expected = channels if on and role in ("LoggerTaskRole", "WatcherTaskRole", "FrontDoorTaskRole") else set()
            assert got == expected, (role, on, got)
        for service in ("LoggerService", "WatcherService", "FrontDoorService"):
            assert resolve.value(res[service]["Properties"]["EnableExecuteCommand"]) is on
        for service in ("GatewayService", "PredictorService"):
            assert "EnableExecuteCommand" not in res[service]["Properties"], service
        assert resolve.condition(res["SsmMessagesEndpoint"]["Condition"]) is on


def test_every_task_stops_only_after_its_drain(template):
    """ECS waits StopTimeout after SIGTERM, then kills: it must cover each service's drain
    (SHUTDOWN_GRACE_SECS, 20 unless set; the gateway drains its requests, then its retry
    buffer, each within the grace), with room for the last metrics."""
    res = template["Resources"]
    for task, drains in (("GatewayTask", 2), ("PredictorTask", 1), ("LoggerTask", 1), ("WatcherTask", 1),
                         ("FrontDoorTask", 3)):
        container = res[task]["Properties"]["ContainerDefinitions"][0]
        env = {e["Name"]: e["Value"] for e in Resolver(template, PARAMS).value(container.get("Environment", []))}
        grace = int(env.get("SHUTDOWN_GRACE_SECS", 20))
        assert container["StopTimeout"] >= drains * grace + 5, (task, container["StopTimeout"], grace)


def test_alarms_watch_what_the_gateway_drops_and_a_logger_that_cannot_write(template):
    res = template["Resources"]
    alarmed = {(v["Properties"].get("MetricName"), v["Properties"].get("ComparisonOperator"))
               for v in res.values() if v["Type"] == "AWS::CloudWatch::Alarm"}
    for metric, op in (("gateway_interactions_dropped_total", "GreaterThanThreshold"),
                       ("gateway_interactions_rejected_total", "GreaterThanThreshold"),
                       ("gateway_logger_up", "LessThanThreshold"),
                       ("gateway_interactions_buffered", "GreaterThanThreshold"),
                       ("logger_spool_healthy", "LessThanThreshold"),
                       ("logger_dead_letters_overflow_total", "GreaterThanThreshold"),
                       ("logger_dead_lettered_total", "GreaterThanThreshold")):
        assert (metric, op) in alarmed, metric


SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:mlops-api-keys-AbCdEf"
TOKEN_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:mlops-admin-token-AbCdEf"


def test_secrets_reach_only_their_container_through_its_execution_role(template):
    """The API keys and the admin token come from Secrets Manager through the task definitions'
    `Secrets`; only the execution role of the container that uses one may read it."""
    params = dict(PARAMS, ApiKeysSecretArn=SECRET, LoggerAdminTokenSecretArn=TOKEN_SECRET)
    resolve = Resolver(template, params).value
    reads = {service: {(a, r) for a, r in plain(grants(template, params, f"{service}ExecutionRole"))
                       if a.startswith("secretsmanager:")}
             for service in ("Gateway", "Predictor", "Logger", "Watcher")}
    assert reads == {"Gateway": {("secretsmanager:GetSecretValue", SECRET)}, "Predictor": set(),
                     "Logger": {("secretsmanager:GetSecretValue", TOKEN_SECRET)}, "Watcher": set()}, reads

    def secrets(task):
        container, = resolve(template["Resources"][task]["Properties"]["ContainerDefinitions"])
        return {s["Name"]: s["ValueFrom"] for s in container.get("Secrets", [])}
    assert secrets("GatewayTask") == {"GATEWAY_API_KEYS": SECRET}
    assert secrets("LoggerTask") == {"LOGGER_ADMIN_TOKEN": TOKEN_SECRET}
    # Not given: no secret, no grant (the API is open, the dead-letter routes refused).
    assert secrets_without(template) == ({}, {})


def secrets_without(template):
    resolve = Resolver(template, PARAMS).value
    out = []
    for task in ("GatewayTask", "LoggerTask"):
        container, = resolve(template["Resources"][task]["Properties"]["ContainerDefinitions"])
        out.append({s["Name"]: s["ValueFrom"] for s in container.get("Secrets", [])})
    return tuple(out)


def test_the_gateway_believes_only_the_load_balancer_and_admin_ports_stay_on_loopback(template):
    resolve = Resolver(template, PARAMS).value
    env = {}
    for task in ("GatewayTask", "PredictorTask", "LoggerTask", "WatcherTask"):
        container, = resolve(template["Resources"][task]["Properties"]["ContainerDefinitions"])
        env[task] = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["GatewayTask"]["GATEWAY_TRUSTED_PROXIES"] == resolve({"Ref": "VpcCidr"})
    assert int(env["GatewayTask"]["GATEWAY_ANON_RATE_PER_SEC"]) >= 1
    for task, name in (("PredictorTask", "PREDICTOR"), ("LoggerTask", "LOGGER"), ("WatcherTask", "WATCHER")):
        assert env[task][f"{name}_ADMIN_LISTEN"].startswith("127.0.0.1:"), env[task]
    rule = template["Resources"]["MetricsNotPublic"]["Properties"]
    assert rule["Conditions"][0]["PathPatternConfig"]["Values"][0] == "/metrics"
    assert rule["Actions"][0]["Type"] == "fixed-response"


def test_a_waf_with_a_rate_rule_and_the_common_rule_set_guards_the_load_balancer(template):
    res = template["Resources"]
    acl = res["WebAcl"]["Properties"]
    assert acl["Scope"] == "REGIONAL" and acl["DefaultAction"] == {"Allow": {}}
    rules = {r["Name"]: r for r in acl["Rules"]}
    rate = rules["rate-per-address"]
    assert rate["Action"] == {"Block": {}}
    assert rate["Statement"]["RateBasedStatement"] == {"Limit": {"Ref": "WafRateLimitPer5Min"}, "AggregateKeyType": "IP"}
    managed = {r["Statement"]["ManagedRuleGroupStatement"]["Name"] for r in acl["Rules"] if "ManagedRuleGroupStatement" in r["Statement"]}
    assert "AWSManagedRulesCommonRuleSet" in managed, managed
    assert res["WebAclAssociation"]["Properties"] == {"ResourceArn": {"Ref": "LoadBalancer"},
                                                      "WebACLArn": {"Fn::GetAtt": ["WebAcl", "Arn"]}}
    redacted = {f["SingleHeader"]["Name"] for f in res["WafLogging"]["Properties"]["RedactedFields"]}
    assert redacted == {"authorization", "x-api-key"}, "the WAF's logs must not hold API keys"


TLS_SECRETS = {f"{svc}TlsSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:mlops-tls-{svc.lower()}-AbCdEf"
               for svc in ("Gateway", "Predictor", "Logger", "Watcher")}


def test_the_grpc_tls_option_makes_every_hop_mutual_tls_with_each_services_own_certificate(template):
    params = dict(PARAMS, **TLS_SECRETS)
    resolve = Resolver(template, params).value
    for svc, task in (("Gateway", "GatewayTask"), ("Predictor", "PredictorTask"), ("Logger", "LoggerTask"), ("Watcher", "WatcherTask")):
        container, = resolve(template["Resources"][task]["Properties"]["ContainerDefinitions"])
        own = TLS_SECRETS[f"{svc}TlsSecretArn"]
        secrets = {s["Name"]: s["ValueFrom"] for s in container.get("Secrets", [])}
        assert {k: v for k, v in secrets.items() if k.startswith("GRPC_TLS_")} == {
            "GRPC_TLS_CA_PEM": own + ":ca::", "GRPC_TLS_CERT_PEM": own + ":cert::", "GRPC_TLS_KEY_PEM": own + ":key::"}, task
        reads = {r for a, r in plain(grants(template, params, f"{svc}ExecutionRole")) if a == "secretsmanager:GetSecretValue"}
        assert reads == {own}, (svc, reads)  # its own certificate only
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        if svc == "Gateway":
            assert all(env[k].startswith("https://") for k in ("PREDICTOR_URL", "LOGGER_URL", "REGISTRY_WATCHER_URL")), env
        else:
            assert env["GRPC_TLS_REQUIRE_CLIENT_CERT"] == "true", env
            assert "AppProtocol" not in container["PortMappings"][0], "Service Connect must pass TLS through"
    # Off (the default): plaintext URLs, no certificates, the grpc app protocol.
    container, = Resolver(template, PARAMS).value(template["Resources"]["GatewayTask"]["Properties"]["ContainerDefinitions"])
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["PREDICTOR_URL"] == "http://predictor:50051"
    assert not [s for s in container.get("Secrets", []) if s["Name"].startswith("GRPC_TLS_")]
