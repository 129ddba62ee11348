"""What infra/aws/inference.yaml gives operators beyond the services themselves, checked on the
template: traces to X-Ray through an ADOT collector beside each service (off by default, its
one IAM grant and its VPC endpoint only when on), the gateway's gRPC API behind the same ALB,
and a CloudWatch dashboard drawn only from metrics the services' code publishes."""
import functools
import json
import pathlib
import re

import pytest
import yaml

from cfn import ACCOUNT, INFERENCE, INFERENCE_PARAMS as PARAMS, REGION, Resolver, grants, load, plain, roles

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRACES = dict(PARAMS, TraceCollectorImageTag="adot-v0.43.3")
TASKS = {"GatewayTask": ("gateway", "GatewayLogGroup", "traceidratio"),
         "PredictorTask": ("predictor", "PredictorLogGroup", "parentbased_traceidratio"),
         "LoggerTask": ("interaction-logger", "LoggerLogGroup", "parentbased_traceidratio"),
         "WatcherTask": ("registry-watcher", "WatcherLogGroup", "parentbased_traceidratio"),
         # InferenceShape one-process: the gateway's part decides, as the gateway does
         "FrontDoorTask": ("front-door", "FrontDoorLogGroup", "traceidratio")}
SOURCES = {"gateway": "gateway/src", "predictor": "predictor/src", "interaction-logger": "interaction-logger/src",
           "registry-watcher": "registry-watcher/src"}


@pytest.fixture(scope="module")
def template():
    return load(INFERENCE)


def containers(template, params, task):
    return Resolver(template, params).value(template["Resources"][task]["Properties"]["ContainerDefinitions"])


def env(container):
    return {e["Name"]: e["Value"] for e in container.get("Environment", [])}


def test_traces_are_off_by_default_nothing_runs_exports_or_is_granted(template):
    resolve = Resolver(template, PARAMS)
    for task in TASKS:
        service, = containers(template, PARAMS, task)
        assert not [k for k in env(service) if k.startswith("OTEL_")], (task, env(service))
    for role in roles(template):
        assert not [a for a, _ in plain(grants(template, PARAMS, role)) if a.startswith("xray:")], role
    assert resolve.condition(template["Resources"]["XRayEndpoint"]["Condition"]) is False


def test_with_a_collector_image_every_task_sends_its_spans_to_its_own_collector_and_on_to_xray(template):
    image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlops-inference:adot-v0.43.3"
    for task, (name, group, sampler) in TASKS.items():
        service, collector = containers(template, TRACES, task)
        assert service["Name"] == name and collector["Name"] == "trace-collector", task
        # From the service's own repository: the execution role's pull grant covers it.
        assert collector["Image"] == image, collector["Image"]
        assert collector["Essential"] is False, "a collector that stops must not stop the service"
        assert collector["ReadonlyRootFilesystem"] is True and collector["User"] == "10001"
        assert collector["LogConfiguration"]["Options"]["awslogs-group"] == f"<{group}>"
        config = yaml.safe_load(env(collector)["AOT_CONFIG_CONTENT"])
        receiver = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        assert receiver == "127.0.0.1:4318", "the collector listens on the task's loopback only"
        assert config["service"]["pipelines"]["traces"] == {
            "receivers": ["otlp"], "processors": ["batch"], "exporters": ["awsxray"]}
        assert set(config["exporters"]) == {"awsxray"}
        e = env(service)
        assert e["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{receiver}", task
        assert "OTEL_EXPORTER_OTLP_PROTOCOL" not in e, "http/protobuf is the services' default"
        # The internet-facing door decides by trace id (a caller's flag cannot make it trace
        # more); the services behind it follow the gateway's decision.
        assert e["OTEL_TRACES_SAMPLER"] == sampler and str(e["OTEL_TRACES_SAMPLER_ARG"]) == "0.1", task
    # The samplers are ones the services accept (their --help, as docs/configuration.md has it).
    accepted = (ROOT / "docs" / "configuration.md").read_text()
    assert "parentbased_traceidratio" in accepted and re.search(r"[\s,]traceidratio[\s,]", accepted)
    resolve = Resolver(template, TRACES)
    assert resolve.condition(template["Resources"]["XRayEndpoint"]["Condition"]) is True
    assert resolve.value(template["Resources"]["XRayEndpoint"]["Properties"]["ServiceName"]) == \
        f"com.amazonaws.{REGION}.xray"


@pytest.mark.parametrize("role", ["GatewayTaskRole", "PredictorTaskRole", "LoggerTaskRole", "WatcherTaskRole",
                                  "FrontDoorTaskRole"])
def test_tracing_grants_each_task_role_put_trace_segments_and_nothing_else(template, role):
    before, after = plain(grants(template, PARAMS, role)), plain(grants(template, TRACES, role))
    assert after - before == {("xray:PutTraceSegments", "*")}, after - before
    assert before <= after
    for r in roles(template):
        if r.endswith("ExecutionRole") or r == "FlowLogRole":
            assert grants(template, TRACES, r) == grants(template, PARAMS, r), r


def test_grpc_callers_reach_the_gateways_grpc_api_through_the_https_listener(template):
    res = template["Resources"]
    resolve = Resolver(template, PARAMS)
    rule = res["GrpcToGateway"]["Properties"]
    assert rule["ListenerArn"] == {"Ref": "HttpsListener"}
    condition, = rule["Conditions"]
    assert condition == {"Field": "http-header",
                         "HttpHeaderConfig": {"HttpHeaderName": "content-type", "Values": ["application/grpc*"]}}
    assert rule["Actions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": "GatewayGrpcTargetGroup"}}]
    priorities = [v["Properties"]["Priority"] for v in res.values() if v["Type"] == "AWS::ElasticLoadBalancingV2::ListenerRule"]
    assert len(priorities) == len(set(priorities))
    group = res["GatewayGrpcTargetGroup"]["Properties"]
    assert group["ProtocolVersion"] == "GRPC" and group["Matcher"] == {"GrpcCode": "0"}
    assert group["HealthCheckPath"] == "/grpc.health.v1.Health/Check"
    gateway, = containers(template, PARAMS, "GatewayTask")
    port = int(env(gateway)["GATEWAY_GRPC_LISTEN"].rsplit(":", 1)[1])
    assert group["Port"] == port
    assert {"Name": "oip-grpc", "ContainerPort": port, "Protocol": "tcp", "AppProtocol": "grpc"} in gateway["PortMappings"]
    assert {"ContainerName": "gateway", "ContainerPort": port, "TargetGroupArn": "<GatewayGrpcTargetGroup>"} in \
        resolve.value(res["GatewayService"]["Properties"]["LoadBalancers"])
    # The listener's TLS ends at the ALB, which speaks HTTP/2 to the gateway's plain gRPC port.
    assert res["HttpsListener"]["Properties"]["Protocol"] == "HTTPS"


# -------------------------------------------------------------------- the dashboard

@functools.cache
def published(service):
    """The metric names a service's code registers (histograms also as _p50/_p99/_count, as
    the EMF conversion sends them) and the label names it gives them."""
    names, labels = set(), set()
    for path in (ROOT / SOURCES[service]).rglob("*.rs"):
        text = path.read_text()
        for kind, name in re.findall(r'metrics::(counter|gauge|histogram)!\(\s*"([a-z0-9_]+)"', text):
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_p50", f"{name}_p99", f"{name}_count"}
        # Series recorded through a helper take their name as a literal argument.
        names |= set(re.findall(r'^\s*"((?:gateway|predictor|logger|watcher)_[a-z0-9_]+)",$', text, re.M))
        labels |= set(re.findall(r'"([a-z_]+)" =>', text))
    return names, labels


def dashboard(template, params):
    body = Resolver(template, params).value(template["Resources"]["OperatorDashboard"]["Properties"]["DashboardBody"])
    return json.loads(body)


def series(widget):
    """(namespace, metric, {dimension: value or None for a SEARCH}) of a metric widget."""
    for m in widget["properties"]["metrics"]:
        if isinstance(m[0], dict):
            expr = m[0]["expression"]
            found = re.fullmatch(r"""SEARCH\('\{"([^"]+)",([a-z_,]+)\} MetricName="([a-z0-9_]+)"', '(Sum|Average|Maximum|Minimum)', 60\)""", expr)
            assert found, expr
            namespace, dims, metric, _ = found.groups()
            yield namespace, metric, dict.fromkeys(dims.split(","))
        else:
            *path, _options = m if isinstance(m[-1], dict) else (*m, {})
            namespace, metric, *pairs = path
            yield namespace, metric, dict(zip(pairs[::2], pairs[1::2]))


def test_the_dashboard_shows_what_an_operator_watches(template):
    board = dashboard(template, PARAMS)
    shown = {metric for w in board["widgets"] for _, metric, _ in series(w)}
    for metric in ("gateway_predict_requests_total", "gateway_predict_seconds_p50", "gateway_predict_seconds_p99",
                   "watcher_live_version", "watcher_in_sync", "logger_spool_depth", "logger_dead_letters",
                   "watcher_shadow_agreement", "logger_drift_psi_max", "TargetResponseTime"):
        assert metric in shown, metric
    for w in board["widgets"]:
        assert w["properties"]["region"] == REGION and w["properties"]["title"]
    # Alarm thresholds drawn where they apply, from the same parameters the alarms use.
    lines = {a["label"]: a["value"] for w in board["widgets"]
             for a in w["properties"].get("annotations", {}).get("horizontal", [])}
    assert lines == {"alarm": 900, "DriftPsiThreshold": 0.2}
    assert dashboard(template, dict(PARAMS, DriftPsiThreshold=0.3)) != board


def test_every_dashboard_series_is_one_a_service_publishes_with_the_dimensions_it_has(template):
    board = dashboard(template, dict(PARAMS, MetricsNamespace="team/inference"))
    for w in board["widgets"]:
        for namespace, metric, dims in series(w):
            if namespace == "AWS/ApplicationELB":
                assert set(dims) == {"LoadBalancer", "TargetGroup"}, (metric, dims)
                continue
            assert namespace == "team/inference", (metric, namespace)
            assert "service" in dims, (metric, dims)
            service = dims["service"]
            candidates = [service] if service else [s for s in SOURCES if metric in published(s)[0]]
            assert len(candidates) == 1, (metric, candidates)
            names, labels = published(candidates[0])
            assert metric in names, f"{candidates[0]} publishes no {metric}"
            assert set(dims) - {"service"} <= labels, (metric, dims, candidates[0])
            assert service in (None, *SOURCES), service


def test_the_dashboard_is_in_the_outputs(template):
    out = Resolver(template, PARAMS).value(template["Outputs"]["DashboardUrl"]["Value"])
    assert out.endswith("#dashboards:name=<OperatorDashboard>") and REGION in out
