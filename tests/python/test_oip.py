"""The Open Inference Protocol (v2) over REST at the gateway, on the whole stack, with the stock
`tritonclient.http` unchanged (binary tensors, its default, and JSON): health, server and
model metadata, readiness, and infers whose outputs equal `/v1/predict`'s and Python
xgboost's, every row recorded in the feature store with the version and `source=oip-rest`;
errors are the protocol's `{"error": ...}` and nothing is predicted or recorded for them."""
import json
import pathlib
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import running_stack  # noqa: E402
from stack import metric  # noqa: E402
from test_stack_e2e import EXPECTED, feature_store, http, records, row, wait_for_records  # noqa: E402

import tritonclient.http as triton  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "my-mlops-prod-endpoint"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from running_stack(tmp_path_factory, "oip", poll_ms=200)


@pytest.fixture(scope="module")
def client(stack):
    c = triton.InferenceServerClient(stack.url.removeprefix("http://"))
    yield c
    c.close()


def rows(n):
    """The first `n` demo rows, missing values as NaN (XGBoost's missing)."""
    return np.array([[np.nan if v is None else v for v in row(i)] for i in range(n)], dtype=np.float32)


def test_health_and_metadata_as_the_protocol_gives_them(stack, client):
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"], meta
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    model = client.get_model_metadata(MODEL)
    assert model["name"] == MODEL and model["versions"] == ["1"], model
    assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}], model
    assert model["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]}], model
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready(MODEL, "7")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_answers_what_v1_and_xgboost_answer_and_records_every_row(stack, client, binary):
    x = rows(5)
    inp = triton.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = triton.InferRequestedOutput("probability", binary_data=binary)
    before = metric(stack.url, 'gateway_predict_requests_total{status="200"}')
    result = client.infer(MODEL, [inp], outputs=[out], request_id=f"oip-{binary}")
    got = result.as_numpy("probability")
    assert got.shape == (5,) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.array(EXPECTED[:5], dtype=np.float32), rtol=0, atol=1e-6)
    # /v1/predict on the same rows: the same scores.
    status, _, body = http("POST", stack.url + "/v1/predict",
                           {"instances": [row(i) for i in range(5)]})
    assert status == 200, body
    v1 = [p["probability"] for p in json.loads(body)["predictions"]]
    np.testing.assert_allclose(got, np.array(v1, dtype=np.float32), rtol=0, atol=0)
    response = result.get_response()
    assert response["model_name"] == MODEL and response["model_version"] == "1", response
    assert response["id"] == f"oip-{binary}", response
    ids = response["parameters"]["interaction_ids"].split(",")
    assert len(ids) == 5 and response["parameters"]["variant"], response
    assert metric(stack.url, 'gateway_predict_requests_total{status="200"}') >= before + 2
    found = wait_for_records(feature_store(stack), dict(zip(ids, (float(p) for p in v1))))
    assert {found[i]["source"] for i in ids} == {"oip-rest"}, found
    assert {found[i]["model_package_version"] for i in ids} == {"1"}, found


def test_a_named_live_version_answers_and_a_version_not_live_is_404(stack, client):
    x = rows(1)
    inp = triton.InferInput("features", [1, 8], "FP32")
    inp.set_data_from_numpy(x)
    assert client.infer(MODEL, [inp], model_version="1").get_response()["model_version"] == "1"
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [inp], model_version="7")
    assert "not live" in str(e.value) and "live: 1" in str(e.value), e.value


def bad_requests():
    good = {"name": "features", "shape": [1, 8], "datatype": "FP32", "data": [row(0)]}
    return [
        ("wrong width", MODEL, {"inputs": [dict(good, shape=[1, 7], data=[row(0)[:7]])]}, 400, "8 features"),
        ("wrong datatype", MODEL, {"inputs": [dict(good, datatype="INT64")]}, 400, "FP32 or FP64"),
        ("data short of the shape", MODEL, {"inputs": [dict(good, shape=[2, 8])]}, 400, "values for shape"),
        ("an infinity", MODEL, {"inputs": [dict(good, data=[[1e39] + row(0)[1:]])]}, 400, "32-bit float"),
        ("unknown output", MODEL, {"inputs": [good], "outputs": [{"name": "logits"}]}, 400, "unknown output"),
        ("unknown model", "other-model", {"inputs": [good]}, 404, "unknown model"),
        ("not JSON", MODEL, b"{not json", 400, "not an inference request"),
    ]


@pytest.mark.parametrize("name,model,body,status,says", bad_requests(), ids=[b[0] for b in bad_requests()])
def test_bad_requests_get_the_protocols_error_and_nothing_is_predicted(stack, name, model, body, status, says):
    predictor = "http://" + stack.predictor.addrs["admin"]
    logged = metric("http://" + stack.logger.addrs["admin"], "logger_accepted_total")
    calls = metric(predictor, "predictor_requests_total")
    code, headers, raw = http("POST", f"{stack.url}/v2/models/{model}/infer", body)
    assert code == status, raw
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(raw)
    assert set(error) == {"error"} and says in error["error"], error
    assert metric(predictor, "predictor_requests_total") == calls
    assert metric("http://" + stack.logger.addrs["admin"], "logger_accepted_total") == logged


def test_binary_bodies_key_on_the_header_not_the_content_type(stack):
    """A binary body sent with a JSON content type (or none) is read by its
    Inference-Header-Content-Length, and binary outputs come back the same way."""
    x = rows(2)
    header = json.dumps({"inputs": [{"name": "features", "shape": [2, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    code, headers, raw = http("POST", f"{stack.url}/v2/models/{MODEL}/infer", header + x.tobytes(),
                              headers={"Inference-Header-Content-Length": str(len(header))})
    assert code == 200, raw
    n = int(headers["inference-header-content-length"])
    doc = json.loads(raw[:n])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 8, doc
    np.testing.assert_allclose(np.frombuffer(raw[n:], dtype="<f4"), np.array(EXPECTED[:2], dtype=np.float32),
                               rtol=0, atol=1e-6)
    ids = doc["parameters"]["interaction_ids"].split(",")
    deadline = time.time() + 30
    while len(found := records(feature_store(stack), ids)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert len(found) == 2, found
    np.testing.assert_allclose([float(found[i]["prediction"]) for i in ids], EXPECTED[:2], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def grpc_client(stack):
    import tritonclient.grpc as tgrpc
    c = tgrpc.InferenceServerClient(stack.gateway.addrs["grpc"])
    yield c
    c.close()


def test_grpc_the_same_model_scores_and_records_through_tritonclient_grpc(stack, grpc_client):
    """`inference.GRPCInferenceService` on GATEWAY_GRPC_LISTEN with the stock tritonclient.grpc
    (raw tensor bytes both ways): metadata, readiness, and an infer equal to xgboost's, every
    row recorded with source `oip-grpc`; a bad shape is INVALID_ARGUMENT, a version not live
    NOT_FOUND, and nothing is predicted for either."""
    import tritonclient.grpc as tgrpc
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert "binary_tensor_data" in grpc_client.get_server_metadata(as_json=True)["extensions"]
    assert grpc_client.is_model_ready(MODEL) and not grpc_client.is_model_ready(MODEL, "7")
    meta = grpc_client.get_model_metadata(MODEL, as_json=True)
    assert meta["inputs"][0]["shape"] == ["-1", "8"] and meta["versions"] == ["1"], meta
    x = rows(4)
    inp = tgrpc.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = grpc_client.infer(MODEL, [inp], request_id="grpc-1")
    np.testing.assert_allclose(result.as_numpy("probability"), np.array(EXPECTED[:4], dtype=np.float32),
                               rtol=0, atol=1e-6)
    response = result.get_response(as_json=True)
    assert response["model_version"] == "1" and response["id"] == "grpc-1", response
    ids = response["parameters"]["interaction_ids"]["string_param"].split(",")
    deadline = time.time() + 30
    while len(found := records(feature_store(stack), ids)) < 4 and time.time() < deadline:
        time.sleep(0.2)
    assert {r["source"] for r in found.values()} == {"oip-grpc"} and len(found) == 4, found
    calls = metric("http://" + stack.predictor.addrs["admin"], "predictor_requests_total")
    bad = tgrpc.InferInput("features", [1, 7], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 7), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        grpc_client.infer(MODEL, [bad])
    assert "INVALID_ARGUMENT" in str(e.value.status()) and "8 features" in e.value.message(), e.value
    with pytest.raises(InferenceServerException) as e:
        grpc_client.infer(MODEL, [inp], model_version="7")
    assert "NOT_FOUND" in str(e.value.status()), e.value
    assert metric("http://" + stack.predictor.addrs["admin"], "predictor_requests_total") == calls


def test_grpc_reflection_lists_exactly_the_inference_service(stack):
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    with grpc.insecure_channel(stack.gateway.addrs["grpc"]) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = sorted(s.name for s in answer.list_services_response.service)
    assert names == ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection", "inference.GRPCInferenceService"], names


def test_kserve_rest_and_grpc_clients_unchanged(stack):
    """kserve's own v2 clients (InferenceRESTClient, InferenceGRPCClient), as a KServe user
    has them (in a process of their own: kserve_client.py): health, model readiness and an
    infer whose outputs are xgboost's, every row recorded with the version and the API."""
    import subprocess

    out = subprocess.run([sys.executable, str(pathlib.Path(__file__).parent / "kserve_client.py"), stack.url,
                          stack.gateway.addrs["grpc"], MODEL, json.dumps([row(i) for i in range(3)])],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answers = json.loads(out.stdout)
    for api, source in (("rest", "oip-rest"), ("grpc", "oip-grpc")):
        answer = answers[api]
        assert answer["health"] == [True, True, True], answer
        # (kserve's REST client drops model_version from the answer; the records carry it)
        assert answer["model_name"] == MODEL and answer["id"] == f"kserve-{api}", answer
        np.testing.assert_allclose(np.array(answer["scores"], dtype=np.float32),
                                   np.array(EXPECTED[:3], dtype=np.float32), rtol=0, atol=1e-6)
        ids = answer["interaction_ids"]
        deadline = time.time() + 30
        while len(found := records(feature_store(stack), ids)) < 3 and time.time() < deadline:
            time.sleep(0.2)
        assert {r["source"] for r in found.values()} == {source} and len(found) == 3, found
        assert {r["model_package_version"] for r in found.values()} == {"1"}, found
