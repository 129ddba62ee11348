"""The predictor's adaptive batching, against the real sagemaker-local and real predictor
processes: concurrent gRPC callers with distinct rows each get exactly their own rows' scores
(checked against Python xgboost on the same rows), whether their rows shared an
InvokeEndpoint call or not; a bad row fails only its own caller; batching off gives the same
answers. One invocation lane makes batches form under concurrency."""
import concurrent.futures
import os

import grpc
import numpy as np
import pytest
import xgboost as xgb

from conftest import ACCESS_KEY, REGION, SECRET_KEY, binary, predictor_stub
from deploy import deploy
from stack import Service, metric

WIDTH = 6
CALLERS = 48


@pytest.fixture(scope="module")
def model(server, sm):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(800, WIDTH))
    y = (X[:, 0] - X[:, 1] + 0.3 * rng.normal(size=800) > 0).astype(int)
    booster = xgb.train(dict(objective="binary:logistic", max_depth=4), xgb.DMatrix(X, label=y), 40)
    return booster, deploy(server, sm, booster, group="batching-models")


def start_predictor(server, endpoint, batching, log):
    env = dict(os.environ, AWS_ENDPOINT_URL=server.url, AWS_ACCESS_KEY_ID=ACCESS_KEY,
               AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
               SAGEMAKER_ENDPOINT_NAME=endpoint, PREDICTOR_BATCHING=str(batching).lower(),
               PREDICTOR_INVOKE_CONCURRENCY="1", LOG_FORMAT="json")
    env.pop("MODEL_NUM_FEATURES", None)  # no width check here: the model itself judges the rows
    return Service("predictor", [str(binary().parent / "predictor"), "--listen", "127.0.0.1:0",
                                 "--admin-listen", "127.0.0.1:0"], env, log)


@pytest.fixture(scope="module")
def predictors(server, model, tmp_path_factory):
    log = open(tmp_path_factory.mktemp("batching") / "predictors.log", "w")
    on = start_predictor(server, model[1], True, log)
    off = start_predictor(server, model[1], False, log)
    yield {"on": on, "off": off}
    codes = [p.stop() for p in (on, off)]
    log.close()
    assert codes == [0, 0], codes


def admin_metric(svc, name):
    return metric(f"http://{svc.addrs['admin']}", name)


def rows_of(caller, round_):
    """Distinct rows per caller: 1 to 4 of them, values seeded by who and when."""
    rng = np.random.default_rng(1000 * round_ + caller)
    return rng.normal(size=(1 + caller % 4, WIDTH))


def call_all(svc, rounds, bad=None):
    """`rounds` rounds of CALLERS concurrent Predict calls; caller `bad` sends a row one value
    short. Returns {(round, caller): scores or the grpc.RpcError}."""
    with grpc.insecure_channel(svc.addrs["grpc"]) as channel:
        request_class, call = predictor_stub(channel)

        def one(round_, caller):
            r = request_class(request_id=f"r{round_}-c{caller}")
            for row in rows_of(caller, round_):
                r.rows.add().values.extend(row[: WIDTH - 1] if caller == bad else row)
            try:
                return [p.scores[0] for p in call(r, timeout=10).predictions]
            except grpc.RpcError as e:
                return e

        out = {}
        with concurrent.futures.ThreadPoolExecutor(CALLERS) as pool:
            for round_ in range(rounds):
                futures = {pool.submit(one, round_, c): (round_, c) for c in range(CALLERS)}
                for f in concurrent.futures.as_completed(futures):
                    out[futures[f]] = f.result()
        return out


def test_concurrent_callers_each_get_their_own_rows_scores(predictors, model):
    booster = model[0]
    on = predictors["on"]
    before = (admin_metric(on, "predictor_invocation_requests_sum"), admin_metric(on, "predictor_invocation_requests_count"))
    answers = call_all(on, rounds=5)
    for (round_, caller), scores in answers.items():
        assert not isinstance(scores, Exception), (round_, caller, scores)
        want = booster.predict(xgb.DMatrix(rows_of(caller, round_)))
        np.testing.assert_allclose(scores, want, atol=1e-6, err_msg=f"round {round_} caller {caller}")
    requests = admin_metric(on, "predictor_invocation_requests_sum") - before[0]
    calls = admin_metric(on, "predictor_invocation_requests_count") - before[1]
    assert requests == 5 * CALLERS, requests
    assert calls < requests, f"{calls} invocations for {requests} requests: nothing was batched"


def test_batching_off_gives_the_same_answers_one_invocation_per_call(predictors):
    on, off = predictors["on"], predictors["off"]
    before = admin_metric(off, "predictor_invocation_requests_count")
    a, b = call_all(on, rounds=2), call_all(off, rounds=2)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=0, err_msg=str(k))
    assert admin_metric(off, "predictor_invocation_requests_count") - before == 2 * CALLERS


def test_a_bad_row_fails_only_its_own_caller(predictors, model):
    booster, on = model[0], predictors["on"]
    split_before = admin_metric(on, "predictor_batches_split_total")
    for attempt in range(10):  # until the bad request rode in a batch (almost always at once)
        answers = call_all(on, rounds=1, bad=5)
        failed = {k: v for k, v in answers.items() if isinstance(v, Exception)}
        assert list(failed) == [(0, 5)], failed
        assert failed[(0, 5)].code() == grpc.StatusCode.FAILED_PRECONDITION, failed
        assert "mismatch" in failed[(0, 5)].details(), failed[(0, 5)].details()
        for (round_, caller), scores in answers.items():
            if caller != 5:
                np.testing.assert_allclose(scores, booster.predict(xgb.DMatrix(rows_of(caller, round_))), atol=1e-6)
        if admin_metric(on, "predictor_batches_split_total") > split_before:
            return
    pytest.fail("the bad row never shared an invocation with others in 10 rounds")
