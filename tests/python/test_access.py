"""Who may call, on the whole stack (scripts/stack.py, real processes, port 0) with API keys
configured from a file the gateway reads again while running: no key, a wrong key and a revoked
key get 401 and nothing is predicted or logged; a valid key's interaction is recorded under the
key's name whatever X-Client-Id says; a client over its limit gets 429 with Retry-After and the
RateLimit headers while another client at the same time is unaffected."""
import concurrent.futures
import hashlib
import json
import subprocess
import time

import pytest

from conftest import ROOT, running_stack
from test_stack_e2e import feature_store, http, metric, row, wait_for_records

# alpha's key comes from the README's key maker, as an operator's would.
ALPHA, _ALPHA_ENTRY = subprocess.run([str(ROOT / "scripts" / "api-key"), "alpha", "1000"], check=True,
                                     capture_output=True, text=True).stdout.splitlines()
SLOW = "slow-key-" + "b2" * 16


def keys_doc(*entries):
    return json.dumps({"keys": [{"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest(), **limits}
                                for n, k, limits in entries]})


ALL_KEYS = json.dumps({"keys": [json.loads(_ALPHA_ENTRY)] + json.loads(keys_doc(("slow", SLOW, {"per_second": 1, "burst": 3})))["keys"]})


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api-keys.json"
    path.write_text(ALL_KEYS)
    return path


def access_stack(tmp_path_factory, keys_file, shape="microservices"):
    """The stack these tests run on, in either shape (test_one_process_access.py)."""
    yield from running_stack(tmp_path_factory, "access-" + shape, shape=shape, extra_env={
        "GATEWAY_API_KEYS_FILE": str(keys_file), "GATEWAY_API_KEYS_RELOAD_MS": "200",
        "GATEWAY_CORS_ORIGINS": "https://app.example.com"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keys_file):
    yield from access_stack(tmp_path_factory, keys_file)


def predict(stack, key=None, headers=None, via="bearer"):
    h = dict(headers or {})
    if key and via == "bearer":
        h["authorization"] = f"Bearer {key}"
    elif key:
        h["x-api-key"] = key
    status, hdrs, raw = http("POST", stack.url + "/v1/predict", {"instances": [row(0)]}, headers=h)
    return status, {k.lower(): v for k, v in hdrs.items()}, json.loads(raw) if raw else None


def counts(stack):
    """What the predictor and the logger have done so far."""
    return (metric("http://" + stack.predictor.addrs["admin"], "predictor_requests_total"),
            metric("http://" + stack.logger.addrs["admin"], "logger_accepted_total"))


def test_health_says_keys_are_required(stack):
    status, _, body = http("GET", stack.url + "/healthz")
    assert status == 200 and b"API keys required" in body, body


def test_no_key_a_wrong_key_and_a_revoked_key_get_401_and_nothing_is_predicted_or_logged(stack, keys_file):
    assert predict(stack, ALPHA)[0] == 200  # the key works before it is revoked
    time.sleep(0.3)
    before = counts(stack)
    for key, via in ((None, "bearer"), ("not-a-key", "bearer"), ("not-a-key", "x-api-key")):
        status, headers, body = predict(stack, key, via=via)
        assert status == 401, (key, status, body)
        assert headers["content-type"].startswith("application/problem+json")
        assert headers["www-authenticate"] == "Bearer"
    # Revoke alpha by rewriting the file: the gateway reads it again within its reload interval.
    # Until then alpha's calls still succeed; each of those (one row) is predicted and logged.
    keys_file.write_text(keys_doc(("slow", SLOW, {"per_second": 1, "burst": 3})))
    answered, deadline = 0, time.time() + 10
    while (status := predict(stack, ALPHA)[0]) != 401:
        assert status == 200 and time.time() < deadline, "the revoked key still works"
        answered += 1
        time.sleep(0.1)
    status, _, body = predict(stack, ALPHA)
    assert status == 401 and "not valid" in body["detail"], body
    time.sleep(0.5)
    predicted, logged = (after - was for after, was in zip(counts(stack), before))
    assert (predicted, logged) == (answered, answered), \
        f"{answered} answered, but {predicted} predicted and {logged} logged: refused requests went through"
    keys_file.write_text(ALL_KEYS)
    deadline = time.time() + 10
    while predict(stack, ALPHA)[0] != 200:
        assert time.time() < deadline, "the key was not restored"
        time.sleep(0.1)


def test_the_interaction_is_recorded_under_the_keys_name_not_a_chosen_client_id(stack):
    status, headers, body = predict(stack, ALPHA, headers={"x-client-id": "someone-else"}, via="x-api-key")
    assert status == 200, body
    assert headers["ratelimit-policy"] == '"default";q=1000;w=1', headers
    assert headers["ratelimit"].startswith('"default";r='), headers
    interaction_id = body["predictions"][0]["interaction_id"]
    found = wait_for_records(feature_store(stack), {interaction_id: body["predictions"][0]["probability"]})
    assert found[interaction_id]["client_id"] == "alpha", found[interaction_id]


def test_a_client_over_its_limit_gets_429_while_another_is_unaffected(stack):
    time.sleep(3.5)  # slow's bucket (3, refilling 1/s) is full again
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        others = pool.submit(lambda: [predict(stack, ALPHA)[0] for _ in range(20)])
        slow = [predict(stack, SLOW) for _ in range(6)]
        assert others.result() == [200] * 20, "alpha was limited by slow's traffic"
    statuses = [s for s, _, _ in slow]
    assert statuses[:3] == [200, 200, 200], statuses
    assert 429 in statuses[3:], statuses
    status, headers, body = next(r for r in slow if r[0] == 429)
    assert int(headers["retry-after"]) >= 1, headers
    assert headers["ratelimit-policy"] == '"default";q=3;w=3', headers
    assert headers["ratelimit"].startswith('"default";r=0;'), headers
    assert body["status"] == 429 and "slow" in body["detail"], body
    limited = metric(stack.url, 'gateway_client_requests_total{client="slow",outcome="limited"}')
    assert limited >= 1


def test_cors_answers_only_the_configured_origins(stack):
    def preflight(origin):
        _, headers, _ = http("OPTIONS", stack.url + "/v1/predict", headers={
            "origin": origin, "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type"})
        return {k.lower(): v for k, v in headers.items()}
    allowed = preflight("https://app.example.com")
    assert allowed["access-control-allow-origin"] == "https://app.example.com", allowed
    assert "authorization" in allowed["access-control-allow-headers"].lower(), allowed
    assert "access-control-allow-origin" not in preflight("https://elsewhere.example")


def test_the_oip_api_takes_the_same_keys_and_limits_with_the_protocols_errors(stack):
    """`/v2/models/{name}/infer` is behind the same keys and limits as /v1, with the Open
    Inference Protocol's `{"error": ...}`: 401 without a key (nothing predicted or logged),
    200 with one (`tritonclient` with the key in its headers), 429 over the limit."""
    import numpy as np
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException
    url = f"{stack.url}/v2/models/my-mlops-prod-endpoint/infer"
    body = {"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP64", "data": [row(0)]}]}
    before = counts(stack)
    status, headers, raw = http("POST", url, body)
    assert status == 401 and json.loads(raw).keys() == {"error"}, raw
    assert "www-authenticate" in {k.lower() for k in headers}, headers
    assert counts(stack) == before, "nothing predicted or logged without a key"
    client = triton.InferenceServerClient(stack.url.removeprefix("http://"))
    x = np.array([[np.nan if v is None else v for v in row(0)]], dtype=np.float32)
    inp = triton.InferInput("features", [1, 8], "FP32")
    inp.set_data_from_numpy(x)
    answer = client.infer("my-mlops-prod-endpoint", [inp], headers={"authorization": f"Bearer {ALPHA}"})
    assert answer.as_numpy("probability").shape == (1,)
    with pytest.raises(InferenceServerException) as e:
        client.infer("my-mlops-prod-endpoint", [inp])
    assert "key" in str(e.value), e.value
    time.sleep(3.5)  # slow's bucket is full again
    statuses = [http("POST", url, body, headers={"x-api-key": SLOW}) for _ in range(6)]
    limited = [(h, raw) for s, h, raw in statuses if s == 429]
    assert [s for s, _, _ in statuses][:3] == [200, 200, 200] and limited, [s for s, _, _ in statuses]
    headers, raw = limited[0]
    assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) >= 1, headers
    assert "slow" in json.loads(raw)["error"], raw
    client.close()
