"""The whole stack, each service a real process on port 0: gateway -> predictor ->
sagemaker-local, and every interaction through the interaction-logger into the feature store."""
import concurrent.futures
import json
import os
import pathlib
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from stack import Stack, metric  # noqa: E402
from conftest import binary, running_stack  # noqa: E402
from faults import CuttableProxy  # noqa: E402


FEATURES = ["age", "tenure_months", "monthly_charges", "support_calls", "num_products", "late_payments", "satisfaction", "has_contract"]
CUSTOMERS = [line.split(",") for line in (ROOT / "demo" / "data" / "customers.csv").read_text().splitlines()[1:]]
EXPECTED = [float(v) for v in (ROOT / "demo" / "model" / "expected.csv").read_text().split()]


def row(i):
    return [None if v == "" else float(v) for v in CUSTOMERS[i][1:9]]


def http(method, url, body=None, content_type="application/json", headers=None):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def predict(stack, body, **kw):
    if isinstance(body, bytes) and len(body) > 1 << 20:
        status, headers, raw = post_expecting_continue(stack.url + "/v1/predict", body, kw.get("content_type", ""))
    else:
        status, headers, raw = http("POST", stack.url + "/v1/predict", body, **kw)
    return status, headers, json.loads(raw) if raw else None


def post_expecting_continue(url, body, content_type):
    """What curl does for large bodies: send the headers, and the body only after 100 Continue."""
    import socket
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                      f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").encode())
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
            if response.startswith(b"HTTP/1.1 100"):
                sock.sendall(body)
                response = b""
    head, _, payload = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", payload
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        payload = out
    return int(lines[0].split()[1]), headers, payload


def feature_store(stack):
    return stack.client("sagemaker-featurestore-runtime")


def records(fs, ids):
    found = {}
    for start in range(0, len(ids), 100):
        out = fs.batch_get_record(Identifiers=[{"FeatureGroupName": "my-mlops-user-interactions-v1",
                                                "RecordIdentifiersValueAsString": ids[start:start + 100]}])
        for r in out["Records"]:
            found[r["RecordIdentifierValueAsString"]] = {f["FeatureName"]: f["ValueAsString"] for f in r["Record"]}
    return found


def wait_for_records(fs, expected, timeout=60):
    """Waits until every id in `expected` (id -> prediction) is in the online store."""
    deadline = time.time() + timeout
    found = {}
    while time.time() < deadline:
        found = records(fs, list(expected))
        if len(found) == len(expected):
            break
        time.sleep(0.5)
    missing = set(expected) - set(found)
    assert not missing, f"{len(missing)} of {len(expected)} acknowledged interactions never reached the feature store"
    for i, want in expected.items():
        p, features = want if isinstance(want, tuple) else (want, None)
        assert float(found[i]["prediction"]) == p, (i, found[i], p)
        if features is not None:
            assert found[i]["features_csv"] == features, (i, found[i], features)
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "stack")


def wait_in_sync(stack, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        registry = json.loads(http("GET", stack.url + "/v1/model")[2])["registry"]
        if registry and registry["in_sync"]:
            return registry
        time.sleep(0.1)
    raise AssertionError(f"the gateway never saw the model in sync: {registry}")


def test_predict_matches_xgboost_and_is_recorded(stack):
    registry = wait_in_sync(stack)
    assert registry["latest_approved_version"] == 1 and registry["live"][0]["model_package_version"] == 1
    status, headers, body = predict(stack, {"features": dict(zip(FEATURES, row(0)))}, headers={"x-client-id": "e2e"})
    assert status == 200, body
    assert headers.get("x-request-id") == body["request_id"]
    assert abs(body["predictions"][0]["probability"] - EXPECTED[0]) < 1e-6
    assert body["model"]["endpoint_name"] == "my-mlops-prod-endpoint" and body["model"]["variant_name"] == "AllTraffic"
    assert body["model"]["model_package_version"] == 1
    assert body["model"]["model_package_arn"].endswith(":model-package/my-mlops-prod-pkg/1")

    # Several rows at once, as JSON instances and as CSV.
    rows = [row(i) for i in range(1, 21)]
    status, _, many = predict(stack, {"instances": rows})
    assert status == 200, many
    csv = "\n".join(",".join("" if v is None else repr(v) for v in r) for r in rows).encode()
    status, _, from_csv = predict(stack, csv, content_type="text/csv")
    assert status == 200, from_csv
    for out in (many, from_csv):
        got = [p["probability"] for p in out["predictions"]]
        assert max(abs(g - e) for g, e in zip(got, EXPECTED[1:21])) < 1e-6
        assert len({p["interaction_id"] for p in out["predictions"]}) == 20

    iid = body["predictions"][0]["interaction_id"]
    found = wait_for_records(feature_store(stack), {iid: body["predictions"][0]["probability"]})[iid]
    assert found["client_id"] == "e2e" and found["source"] == "api"
    assert found["endpoint_name"] == "my-mlops-prod-endpoint" and found["variant_name"] == "AllTraffic"
    assert found["model_package_version"] == "1" and found["model_package_arn"] == body["model"]["model_package_arn"]
    assert found["features_csv"] == ",".join(CUSTOMERS[0][1:9])
    assert float(found["latency_ms"]) > 0


BAD = [
    ({"instances": [[1, 2, 3]]}, "application/json", 400, "instances[0]"),
    ({"features": {"age": "old"}}, "application/json", 400, "features.age"),
    ({"features": {"favourite_colour": 3}}, "application/json", 400, "features.favourite_colour"),
    (b'{"instances": [[1e999, 0, 0, 0, 0, 0, 0, 0]]}', "application/json", 400, "body"),
    (b'{"features": {"age": 4', "application/json", 400, "body"),
    ({"features": {"age": 63}, "instances": [[63, 40, 29.01, 0, 4, 0, 2, 1]]}, "application/json", 400, "body"),
    (b"1,2,3\n", "text/csv", 400, "line 1"),
    (b"63,40,inf,0,4,0,2,1", "text/csv", 400, "line 1, column 3 (monthly_charges)"),
    (b"63,40,abc,0,4,0,2,1", "text/csv", 400, "line 1, column 3 (monthly_charges)"),
    (b"<row/>", "application/xml", 415, None),
    (b"0" * (10 * 1024 * 1024), "text/csv", 413, "body"),
]


@pytest.mark.parametrize("body,content_type,status,field", BAD)
def test_bad_input_gets_a_problem_document_and_logs_nothing(stack, body, content_type, status, field):
    logger_admin = "http://" + stack.logger.addrs["admin"]
    before = metric(logger_admin, "logger_accepted_total")
    got, headers, problem = predict(stack, body, content_type=content_type)
    assert got == status, problem
    assert headers["content-type"].startswith("application/problem+json")
    assert problem["status"] == status and problem["detail"]
    if field:
        assert problem["field"] == field, problem
    assert metric(logger_admin, "logger_accepted_total") == before


def test_openapi_health_and_readiness(stack):
    status, _, raw = http("GET", stack.url + "/openapi.json")
    doc = json.loads(raw)
    assert status == 200 and "/v1/predict" in doc["paths"] and "Problem" in doc["components"]["schemas"]
    assert {"401", "429"} <= set(doc["paths"]["/v1/predict"]["post"]["responses"]), "the access answers are documented"
    status, _, health = http("GET", stack.url + "/healthz")
    assert status == 200 and health == b"ok (open: no API keys configured)", health
    assert http("GET", stack.url + "/readyz")[0] == 200
    for svc in (stack.predictor, stack.logger, stack.watcher):
        assert http("GET", "http://" + svc.addrs["admin"] + "/readyz")[0] == 200
    assert metric(stack.url, "gateway_predict_requests_total") > 0
    for call in ("predict", "log"):
        assert metric(stack.url, f'gateway_upstream_seconds_count{{call="{call}"}}') > 0, call


@pytest.mark.parametrize("service,name", [("predictor", "mlops.predictor.v1.Predictor"),
                                          ("logger", "mlops.interaction.v1.InteractionLogger"),
                                          ("watcher", "mlops.registry.v1.RegistryWatcher")])
def test_the_official_python_reflection_client_lists_and_describes_each_service(stack, service, name):
    """grpcio-reflection speaks reflection v1alpha; grpcurl and newer clients v1. Both are served."""
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    from google.protobuf.descriptor_pool import DescriptorPool

    with grpc.insecure_channel(getattr(stack, service).addrs["grpc"]) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {name, "grpc.reflection.v1alpha.ServerReflection"} <= services, services
        method = DescriptorPool(db).FindServiceByName(name).methods[0]
        assert method.input_type.full_name.startswith(name.rsplit(".", 1)[0]), method.input_type.full_name


def load(stack, seconds, results, stop=None, workers=8, failures=None):
    """Sends predictions continuously; records interaction id -> (probability, CSV row) of every 200,
    and (status, body) of every other answer in `failures` when given."""
    deadline = time.time() + seconds

    def worker(w):
        i = w
        while time.time() < deadline and not (stop and stop.is_set()):
            status, _, body = predict(stack, {"instances": [row(i % 1000)]})
            if status == 200:
                p = body["predictions"][0]
                results[p["interaction_id"]] = (p["probability"], ",".join(CUSTOMERS[i % 1000][1:9]))
            elif failures is not None:
                failures.append((status, body))
            i += workers
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))


def test_logger_killed_mid_load_loses_nothing(stack):
    acknowledged = {}
    t = threading.Thread(target=load, args=(stack, 4.0, acknowledged))
    t.start()
    time.sleep(1.0)
    grpc, admin = stack.logger.addrs["grpc"], stack.logger.addrs["admin"]
    stack.logger.kill()  # SIGKILL: no drain, no flush
    time.sleep(1.0)
    stack.restart(stack.logger, ["--listen", grpc, "--admin-listen", admin,
                                 "--spool-dir", os.path.join(stack.data_dir, "interaction-logger")])
    t.join()
    assert len(acknowledged) > 100, "the load generator got too few answers to prove anything"
    wait_for_records(feature_store(stack), acknowledged)


def test_strict_mode_answers_503_instead_of_answering_unrecorded(tmp_path):
    """GATEWAY_LOG_MODE=strict: with the logger down, predictions get 503 + Retry-After and
    nothing is buffered; with it back, answers flow and each one's interaction is stored."""
    log = open(tmp_path / "stack.log", "w")
    stack = Stack(str(binary().parent), str(tmp_path), log=log, extra_env={"GATEWAY_LOG_MODE": "strict"})
    try:
        answered = {}
        status, _, body = predict(stack, {"instances": [row(0)]})
        assert status == 200, body
        answered[body["predictions"][0]["interaction_id"]] = (body["predictions"][0]["probability"], None)
        grpc, admin = stack.logger.addrs["grpc"], stack.logger.addrs["admin"]
        stack.logger.kill()
        for i in range(10):
            status, headers, body = predict(stack, {"instances": [row(i)]})
            assert status == 503 and {k.lower(): v for k, v in headers.items()}.get("retry-after") == "1", (status, headers)
            assert "not answering unrecorded" in body["detail"], body
        assert metric(stack.url, "gateway_interactions_buffered") == 0
        assert metric(stack.url, "gateway_interactions_refused_total") == 10
        stack.restart(stack.logger, ["--listen", grpc, "--admin-listen", admin,
                                     "--spool-dir", os.path.join(stack.data_dir, "interaction-logger")])
        deadline = time.time() + 10
        while time.time() < deadline:
            status, _, body = predict(stack, {"instances": [row(1)]})
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, body
        for i in range(2, 12):
            status, _, body = predict(stack, {"instances": [row(i)]})
            assert status == 200, body
            answered[body["predictions"][0]["interaction_id"]] = (body["predictions"][0]["probability"], None)
        assert metric(stack.url, "gateway_interactions_buffered") == 0
        assert metric(stack.url, "gateway_interactions_retried_total") == 0, "strict mode never retries from memory"
        found = wait_for_records(feature_store(stack), {k: v[0] for k, v in answered.items()})
        assert set(found) >= set(answered)
    finally:
        codes = stack.stop()
        log.close()
    assert all(c == 0 for c in codes.values()), codes


def test_feature_store_outage_delays_but_loses_nothing(tmp_path):
    """The logger reaches the Feature Store through a proxy the test cuts for a while."""
    log = open(tmp_path / "stack.log", "w")
    # Start a stack whose logger talks to the feature store through the proxy.
    stack = Stack(str(binary().parent), str(tmp_path), log=log, extra_env={})
    try:
        host, port = stack.sagemaker.addrs["http"].rsplit(":", 1)
        proxy = CuttableProxy(host, int(port))
        logger_args = ["--listen", stack.logger.addrs["grpc"], "--admin-listen", stack.logger.addrs["admin"],
                       "--spool-dir", str(tmp_path / "interaction-logger")]
        stack.logger.stop()
        stack.logger.env = dict(stack.logger.env, AWS_ENDPOINT_URL_SAGEMAKER_FEATURESTORE_RUNTIME=proxy.url)
        stack.restart(stack.logger, logger_args)

        proxy.down()
        acknowledged = {}
        load(stack, 2.0, acknowledged, workers=4)
        assert acknowledged
        time.sleep(1.0)
        fs = feature_store(stack)
        assert not records(fs, list(acknowledged)[:100]), "nothing can ship while the feature store is unreachable"
        assert metric("http://" + stack.logger.addrs["admin"], "logger_retried_total") > 0
        assert metric("http://" + stack.logger.addrs["admin"], "logger_spool_depth") > 0
        proxy.up()
        wait_for_records(fs, acknowledged)
    finally:
        codes = stack.stop()
        log.close()
    assert all(c == 0 for c in codes.values()), codes
