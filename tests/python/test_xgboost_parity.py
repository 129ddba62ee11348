"""XGBoost parity: models trained here with Python xgboost, deployed through the SageMaker
API, must answer InvokeEndpoint with xgboost's own `predict` values (within 1e-6)."""
import json

import numpy as np
import pytest
import xgboost as xgb

from deploy import deploy

ROWS = 300


def data(n_features=10, n=1500, missing=0.15, seed=0, classes=None, target="binary"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)) * rng.uniform(0.5, 50, n_features)
    signal = X[:, 0] / np.std(X[:, 0]) - 0.7 * X[:, 1] / np.std(X[:, 1]) + 0.5 * np.sin(X[:, 2])
    if target == "binary":
        y = (signal + rng.normal(0, 0.7, n) > 0).astype(int)
    elif target == "prob":
        y = 1 / (1 + np.exp(-signal))
    elif target == "count":
        y = rng.poisson(np.exp(0.3 * signal))
    elif target == "multi":
        y = np.digitize(signal + rng.normal(0, 0.5, n), np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1]))
    else:
        y = 3 * signal + rng.normal(0, 0.3, n)
    X[rng.random(X.shape) < missing] = np.nan
    return X, y


def to_csv(X):
    return "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in X)


def invoke(runtime, endpoint, X, accept=None):
    kw = {"Accept": accept} if accept else {}
    out = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=to_csv(X), **kw)
    return out["Body"].read().decode(), out


def parse(body):
    lines = [line for line in body.split("\n") if line]
    return np.array([[float(t) for t in line.split(",") if t] for line in lines])


CASES = {
    "binary_logistic_300_trees_missing": (dict(objective="binary:logistic", max_depth=6, eta=0.1), 300, dict()),
    "reg_squarederror_depth_10": (dict(objective="reg:squarederror", max_depth=10, eta=0.05), 200, dict(target="reg")),
    "reg_logistic": (dict(objective="reg:logistic", max_depth=4), 80, dict(target="prob")),
    "multi_softprob_4_classes": (dict(objective="multi:softprob", num_class=4, max_depth=5), 100, dict(target="multi", classes=4)),
    "multi_softmax_3_classes": (dict(objective="multi:softmax", num_class=3, max_depth=3), 40, dict(target="multi", classes=3)),
    "dart": (dict(objective="binary:logistic", booster="dart", rate_drop=0.2, skip_drop=0.1, max_depth=4), 60, dict()),
    "random_forest_parallel_trees": (dict(objective="binary:logistic", num_parallel_tree=6, subsample=0.7, colsample_bynode=0.6, max_depth=5), 20, dict()),
    "explicit_base_score": (dict(objective="binary:logistic", base_score=0.3, max_depth=3), 50, dict()),
    "gblinear": (dict(objective="reg:squarederror", booster="gblinear", eta=0.3), 60, dict(target="reg", missing=0.0)),
    "multi_output_tree": (dict(objective="multi:softprob", num_class=3, multi_strategy="multi_output_tree", tree_method="hist", max_depth=4), 30, dict(target="multi", classes=3)),
    "count_poisson": (dict(objective="count:poisson", max_depth=4), 60, dict(target="count")),
    "exact_tree_method_wide": (dict(objective="binary:logistic", tree_method="exact", max_depth=8, min_child_weight=0.5), 150, dict(n_features=40)),
    "approx_with_lossguide": (dict(objective="binary:logistic", tree_method="approx", grow_policy="lossguide", max_leaves=31, max_depth=0), 100, dict()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invoke_endpoint_matches_xgboost_predict(server, sm, runtime, case):
    params, rounds, shape = CASES[case]
    X, y = data(**shape)
    booster = xgb.train({**params, "seed": 1}, xgb.DMatrix(X, label=y), num_boost_round=rounds)
    endpoint = deploy(server, sm, booster)

    X_test = data(**{**shape, "seed": 99})[0][:ROWS]
    expected = booster.predict(xgb.DMatrix(X_test))
    expected = expected.reshape(len(X_test), -1)
    body, out = invoke(runtime, endpoint, X_test)
    assert out["ContentType"].startswith("text/csv")
    assert out["InvokedProductionVariant"] == "AllTraffic"
    # The 1.2-2+ container: one line per row, each ending in "\n".
    assert body.endswith("\n") and body.count("\n") == len(X_test)
    got = parse(body)
    assert got.shape == expected.shape
    worst = float(np.max(np.abs(got - expected)))
    assert worst <= 1e-6, f"{case}: largest difference from xgboost {worst}"


def test_json_output_and_model_errors(server, sm, runtime):
    X, y = data(target="multi", classes=3)
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, xgb.DMatrix(X, label=y), 10)
    endpoint = deploy(server, sm, booster)
    body, out = invoke(runtime, endpoint, X[:2], accept="application/json")
    assert out["ContentType"] == "application/json"
    scores = [p["score"] for p in json.loads(body)["predictions"]]
    np.testing.assert_allclose(scores, booster.predict(xgb.DMatrix(X[:2])), atol=1e-6)

    with pytest.raises(runtime.exceptions.ModelError) as e:
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body="1,2,3")
    assert e.value.response["OriginalStatusCode"] == 400
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    with pytest.raises(runtime.exceptions.ModelError) as e:
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body="not,a,row")
    assert e.value.response["OriginalStatusCode"] == 415
    with pytest.raises(runtime.exceptions.ModelError) as e:
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="application/json", Body="[1]")
    assert e.value.response["OriginalStatusCode"] == 415
