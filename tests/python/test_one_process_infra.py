"""The one-process shape on ECS (infra/aws/inference.yaml, InferenceShape one-process), checked
on the template: one front-door service instead of the gateway, predictor and logger services;
its task role exactly the union of the three's (every option on or off), its execution role
its own log group and the secrets its parts read, its network the three's security groups, its
task the three's variables, spools, drain and health. cfn-lint and checkov lint it with the
rest (scripts/test)."""
import itertools
import json
import pathlib
import re

import pytest

from cfn import ACCOUNT, INFERENCE, INFERENCE_PARAMS, KMS_KEY, REGION, SM, STACK, Resolver, grants, load, plain

ROOT = pathlib.Path(__file__).resolve().parents[2]
ONE = dict(INFERENCE_PARAMS, InferenceShape="one-process")
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:"
TLS = {f"{svc}TlsSecretArn": f"{SECRET}mlops-tls-{svc.lower()}-AbCdEf" for svc in ("Gateway", "Predictor", "Logger", "Watcher")}
OPTIONS = {"kms": {"FeatureGroupKmsKeyArn": KMS_KEY}, "traces": {"TraceCollectorImageTag": "adot-v0.43.3"},
           "exec": {"AdminExecAccess": "true"}, "tls": TLS,
           "secrets": {"ApiKeysSecretArn": f"{SECRET}keys-AbCdEf", "LoggerAdminTokenSecretArn": f"{SECRET}token-AbCdEf"}}
# Every combination of the options that change a role or a task.
COMBINATIONS = [dict(ONE, **{k: v for name in names for k, v in OPTIONS[name].items()})
                for n in range(len(OPTIONS) + 1) for names in itertools.combinations(OPTIONS, n)]
PARTS = ("Gateway", "Predictor", "Logger")


@pytest.fixture(scope="module")
def template():
    return load(INFERENCE)


def created(template, params):
    """The resources a stack with `params` creates (their Condition holds, or they have none)."""
    resolve = Resolver(template, params)
    return {k for k, v in template["Resources"].items() if "Condition" not in v or resolve.condition(v["Condition"])}


def container(template, params, task="FrontDoorTask"):
    return Resolver(template, params).value(template["Resources"][task]["Properties"]["ContainerDefinitions"])[0]


def env(c):
    return {e["Name"]: e["Value"] for e in c.get("Environment", [])}


def test_the_shape_chooses_three_services_or_one_and_the_watcher_runs_in_both(template):
    services = {shape: {k for k in created(template, params) if template["Resources"][k]["Type"] == "AWS::ECS::Service"}
                for shape, params in (("microservices", INFERENCE_PARAMS), ("one-process", ONE))}
    assert services == {"microservices": {"GatewayService", "PredictorService", "LoggerService", "WatcherService"},
                        "one-process": {"FrontDoorService", "WatcherService"}}, services
    assert template["Parameters"]["InferenceShape"]["Default"] == "microservices"
    one, micro = created(template, ONE), created(template, INFERENCE_PARAMS)
    own = ("AWS::ECS::TaskDefinition", "AWS::IAM::Role", "AWS::Logs::LogGroup", "AWS::ECS::Service",
           "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy")
    kinds = {k: template["Resources"][k]["Type"] for k in template["Resources"]}
    assert not [k for k in one if k.startswith(PARTS) and kinds[k] in own], "no task, role, log group or scaling of the three"
    assert not [k for k in micro if k.startswith("FrontDoor")]
    assert {k for k in one if k.startswith("FrontDoor")} == {k for k in kinds if k.startswith("FrontDoor")}
    # What both shapes share: the groups, the ALB's target groups, the spools, alarms, dashboard.
    for shared in ("GatewaySecurityGroup", "GatewayTargetGroup", "GatewayGrpcTargetGroup", "SpoolFileSystem",
                   "LoggerNotServingAlarm", "OperatorDashboard"):
        assert shared in one and shared in micro, shared


def references(value):
    """Every resource name a (raw) template value refers to."""
    if isinstance(value, list):
        return set().union(*map(references, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    out = set()
    for k, v in value.items():
        if k == "Ref" and isinstance(v, str):
            out.add(v)
        elif k == "Fn::GetAtt":
            out.add(v[0])
        elif k == "Fn::Sub":
            text = v if isinstance(v, str) else v[0]
            out |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
            out |= references(v) if not isinstance(v, str) else set()
        else:
            out |= references(v)
    return out


def test_nothing_a_shape_creates_refers_to_what_it_does_not(template):
    for params in (INFERENCE_PARAMS, ONE):
        made = created(template, params)
        for name in made:
            r = template["Resources"][name]
            missing = {x for x in references(r.get("Properties", {})) | set(r.get("DependsOn", []))
                       if x in template["Resources"] and x not in made}
            assert not missing, (params.get("InferenceShape"), name, missing)


@pytest.mark.parametrize("params", COMBINATIONS, ids=lambda p: ",".join(k for k, v in OPTIONS.items() if v.items() <= p.items()) or "defaults")
def test_the_front_door_task_role_is_exactly_the_union_of_its_parts(template, params):
    union = set().union(*(grants(template, params, f"{part}TaskRole") for part in PARTS))
    assert grants(template, params, "FrontDoorTaskRole") == union  # actions, resources and conditions


def test_the_union_is_what_the_parts_code_calls_in_aws(template):
    """The SageMaker calls compiled into front-door (the predictor's and the logger's code) are
    the role's SageMaker grants, and the role grants nothing the gateway's part would need."""
    sources = "".join(p.read_text() for d in ("predictor/src", "interaction-logger/src") for p in (ROOT / d).rglob("*.rs"))
    calls = {"sagemaker:" + "".join(w.title() for w in m.split("_"))
             for m in re.findall(r"\.(invoke_endpoint|put_record|batch_write_record)\(\)", sources)}
    granted = plain(grants(template, ONE, "FrontDoorTaskRole"))
    assert calls == {a for a, _ in granted if a.startswith("sagemaker:")} == {
        "sagemaker:InvokeEndpoint", "sagemaker:BatchWriteRecord", "sagemaker:PutRecord"}, calls
    assert {r for a, r in granted if a == "sagemaker:InvokeEndpoint"} == {f"{SM}:endpoint/churn-prod",
                                                                         f"{SM}:endpoint/churn-prod-shadow"}


def test_the_front_door_execution_role_pulls_writes_its_own_log_group_and_reads_its_parts_secrets(template):
    repo = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/mlops-inference"
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/mlops/{STACK}/front-door:*"
    base = {("ecr:GetAuthorizationToken", "*"), ("ecr:BatchCheckLayerAvailability", repo),
            ("ecr:GetDownloadUrlForLayer", repo), ("ecr:BatchGetImage", repo),
            ("logs:CreateLogStream", group), ("logs:PutLogEvents", group)}
    assert plain(grants(template, ONE, "FrontDoorExecutionRole")) == base
    everything = dict(ONE, **OPTIONS["tls"], **OPTIONS["secrets"])
    reads = {r for a, r in plain(grants(template, everything, "FrontDoorExecutionRole")) if a.startswith("secretsmanager:")}
    # The gateway's and the logger's secrets; on the one gRPC hop left (to the watcher) it is
    # the gateway's client, with the gateway's certificate.
    assert reads == {OPTIONS["secrets"]["ApiKeysSecretArn"], OPTIONS["secrets"]["LoggerAdminTokenSecretArn"],
                     TLS["GatewayTlsSecretArn"]}, reads
    c = container(template, everything)
    assert {s["Name"]: s["ValueFrom"] for s in c["Secrets"]} == {
        "GATEWAY_API_KEYS": OPTIONS["secrets"]["ApiKeysSecretArn"],
        "LOGGER_ADMIN_TOKEN": OPTIONS["secrets"]["LoggerAdminTokenSecretArn"],
        **{f"GRPC_TLS_{k.upper()}_PEM": f"{TLS['GatewayTlsSecretArn']}:{k}::" for k in ("ca", "cert", "key")}}
    assert env(c)["REGISTRY_WATCHER_URL"] == "https://registry-watcher:50053"
    task = template["Resources"]["FrontDoorTask"]["Properties"]
    assert task["ExecutionRoleArn"] == {"Fn::GetAtt": ["FrontDoorExecutionRole", "Arn"]}
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["FrontDoorTaskRole", "Arn"]}


def accepted_variables():
    """The variables front-door reads: its own flags and its parts' (each part parses its
    service's), as docs/configuration.md has their --help."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    names = set()
    for section in ("front-door", "gateway", "predictor", "interaction-logger"):
        body = re.search(rf"^## {section}\n(.*?)(?=^## )", text, re.S | re.M).group(1)
        names |= set(re.findall(r"\[env: ([A-Z0-9_]+)=", body))
    return names | {"AWS_REGION", "HEALTHCHECK_URL"}  # the SDK's and mlops-healthcheck's


def test_the_front_door_task_sets_what_its_parts_set_and_only_what_it_reads(template):
    for params in (ONE, dict(ONE, **OPTIONS["traces"], ModelFeatures="a,b", ModelNumFeatures="2")):
        front = env(container(template, params))
        parts = {part: env(container(template, params, f"{part}Task")) for part in PARTS}
        unknown = set(front) - accepted_variables()
        assert not unknown, f"variables front-door does not read: {unknown}"
        # The hops are in process: no URL to a predictor or a logger, no listener of theirs.
        assert not {"PREDICTOR_URL", "LOGGER_URL", "PREDICTOR_LISTEN", "LOGGER_LISTEN", "PREDICTOR_ADMIN_LISTEN"} & set(front)
        own = {"HEALTHCHECK_URL", "SHUTDOWN_GRACE_SECS", "OTEL_TRACES_SAMPLER", "GRPC_TLS_REQUIRE_CLIENT_CERT"}
        for part, variables in parts.items():
            for name, value in variables.items():
                if name in own or name.endswith(("_URL", "_LISTEN")) and name not in front:
                    continue
                assert front.get(name) == value, (part, name, front.get(name), value)
        assert front["LOGGER_ADMIN_LISTEN"].startswith("127.0.0.1:"), "the admin port stays on loopback"
        if "OTEL_TRACES_SAMPLER" in front:  # it is the internet-facing door: it decides
            assert front["OTEL_TRACES_SAMPLER"] == parts["Gateway"]["OTEL_TRACES_SAMPLER"] == "traceidratio"


def test_the_front_door_task_keeps_the_loggers_spools_restart_and_drain(template):
    res = template["Resources"]
    task, logger = res["FrontDoorTask"]["Properties"], res["LoggerTask"]["Properties"]
    assert task["Volumes"] == logger["Volumes"], "the same EFS spools, through the access point, in transit encrypted"
    c, lc = container(template, ONE), container(template, INFERENCE_PARAMS, "LoggerTask")
    assert c["MountPoints"] == lc["MountPoints"] and env(c)["LOGGER_SPOOL_ROOT"] == env(lc)["LOGGER_SPOOL_ROOT"]
    assert c["RestartPolicy"] == lc["RestartPolicy"], "a crash restarts in place: same task, same spool"
    assert c["ReadonlyRootFilesystem"] is True and c["User"] == "10001" and c["Command"] == ["front-door"]
    # Three grace periods in a row: the gateway's requests, its buffer, the logger's spool.
    grace = int(env(c)["SHUTDOWN_GRACE_SECS"])
    assert 3 * grace + 5 <= c["StopTimeout"] <= 120, (grace, c["StopTimeout"])  # Fargate's limit
    assert c["LogConfiguration"]["Options"]["awslogs-group"] == "<FrontDoorLogGroup>"


def test_the_front_door_service_wears_its_parts_groups_behind_the_same_target_groups(template):
    props = Resolver(template, ONE).value(template["Resources"]["FrontDoorService"]["Properties"])
    net = props["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert net["SecurityGroups"] == ["<GatewaySecurityGroup>", "<PredictorSecurityGroup>", "<LoggerSecurityGroup>"]
    assert net["AssignPublicIp"] == "DISABLED" and net["Subnets"] == ["<PrivateSubnetA>", "<PrivateSubnetB>"]
    gateway = Resolver(template, INFERENCE_PARAMS).value(template["Resources"]["GatewayService"]["Properties"])
    assert [{**lb, "ContainerName": "gateway"} for lb in props["LoadBalancers"]] == gateway["LoadBalancers"]
    c, g = container(template, ONE), container(template, INFERENCE_PARAMS, "GatewayTask")
    assert c["PortMappings"] == g["PortMappings"]
    for shape, params in (("off", ONE), ("on", dict(ONE, **OPTIONS["exec"]))):
        on = Resolver(template, params).value(template["Resources"]["FrontDoorService"]["Properties"]["EnableExecuteCommand"])
        assert on is (shape == "on"), "ECS Exec as into the logger: its dead letters and /drift are on loopback"
    scaling = Resolver(template, ONE).value(template["Resources"]["FrontDoorScaling"]["Properties"])
    assert scaling["MinCapacity"] == template["Parameters"]["FrontDoorDesiredCount"]["Default"]
    # The watcher's gRPC API lets the front door in: it wears the groups the watcher admits.
    admitted = {r["SourceSecurityGroupId"]["Ref"] for r in template["Resources"]["WatcherSecurityGroup"]["Properties"]["SecurityGroupIngress"]}
    assert {"GatewaySecurityGroup", "PredictorSecurityGroup", "LoggerSecurityGroup"} <= admitted
    assert json.dumps(props["ServiceConnectConfiguration"]).count("Services") == 0, "a client of the mesh only"
