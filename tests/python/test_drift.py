"""Drift of live inputs on the whole stack: the live model's package carries the baseline of
its training features (the demo package: computed by sagemaker-local exactly as the pipeline's
Train step computes it), the interaction-logger counts every logged row against it over a
rolling window, and reports per feature the PSI and the missing-value rate. Traffic drawn from
the training distribution keeps every PSI low; one shifted feature raises its own PSI above the
threshold, and only its own."""
import json
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import running_stack
from test_stack_e2e import CUSTOMERS, FEATURES, ROOT, metric, predict, row

sys.path.insert(0, str(ROOT / "pipeline"))
import train  # noqa: E402  (the Train step's own baseline function)

WINDOW_SECS = 6
THRESHOLD = 0.2


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {"LOGGER_DRIFT_WINDOW_SECS": str(WINDOW_SECS), "LOGGER_DRIFT_SLOTS": "6", "LOGGER_DRIFT_MIN_ROWS": "100",
           "LOGGER_DRIFT_PSI_THRESHOLD": str(THRESHOLD)}
    yield from running_stack(tmp_path_factory, "drift", poll_ms=200, extra_env=env)


def parse(value):
    """`e=<edges> p=<shares> m=<missing rate>` (crates/drift/src/baseline.rs)."""
    parts, key = {"e": [], "p": [], "m": []}, None
    for token in value.split():
        if "=" in token:
            key, token = token.split("=", 1)
        if token:
            parts[key].append(float(token))
    return parts


def baselines(stack):
    sm = stack.client("sagemaker")
    m = sm.describe_model_package(ModelPackageName="my-mlops-prod-pkg/1")["CustomerMetadataProperties"]
    return {f: parse(m[f"baseline.{f}"]) for f in FEATURES}


def drift(stack):
    return json.loads(urllib.request.urlopen(f"http://{stack.logger.addrs['admin']}/drift", timeout=5).read())


def psi(base, values):
    """The PSI the logger must report for `values` (None = missing) against `base`."""
    present = np.array([v for v in values if v is not None])
    counts = np.bincount(np.searchsorted(base["e"], present, side="left"), minlength=len(base["e"]) + 1)
    a = np.maximum(counts / counts.sum(), 1e-4)
    e = np.maximum(np.array(base["p"]), 1e-4)
    return float(((a - e) * np.log(a / e)).sum())


def send(stack, rows):
    for i in range(0, len(rows), 50):
        status, _, body = predict(stack, {"instances": rows[i:i + 50]})
        assert status == 200, body


def test_the_demo_package_carries_the_train_steps_baseline(stack):
    for i, f in enumerate(FEATURES):
        values = [np.nan if r[i] is None else r[i] for r in (row(k) for k in range(len(CUSTOMERS)))]
        expected = parse(train.baseline(values))
        got = baselines(stack)[f]
        assert got["e"] == pytest.approx(expected["e"]) and got["p"] == pytest.approx(expected["p"]), f
        assert got["m"] == pytest.approx(expected["m"]), f


def test_in_distribution_traffic_keeps_psi_low_a_shifted_feature_raises_only_its_own(stack):
    rng = np.random.default_rng(7)
    base = baselines(stack)
    # Phase 1: rows drawn from the training data (a bootstrap resample).
    rows = [row(int(k)) for k in rng.integers(0, len(CUSTOMERS), 1200)]
    send(stack, rows)
    d = drift(stack)
    assert d["tracking"] and d["model_package_version"] == 1 and d["window"]["rows"] == len(rows), d
    by = {f["feature"]: f for f in d["window"]["features"]}
    assert set(by) == set(FEATURES)
    for i, f in enumerate(FEATURES):
        assert by[f]["psi"] == pytest.approx(psi(base[f], [r[i] for r in rows]), abs=1e-9), f
        assert by[f]["psi"] < 0.1, (f, by[f]["psi"])
    assert d["drifted"] == []

    # Phase 2, once phase 1 has left the window: monthly_charges shifted by +40, and a quarter
    # of the rows without satisfaction.
    time.sleep(WINDOW_SECS + 0.5)
    shifted = []
    for k in rng.integers(0, len(CUSTOMERS), 1200):
        r = row(int(k))
        r[FEATURES.index("monthly_charges")] += 40
        if rng.random() < 0.25:
            r[FEATURES.index("satisfaction")] = None
        shifted.append(r)
    send(stack, shifted)
    d = drift(stack)
    assert d["window"]["rows"] == len(shifted), "the first phase is out of the window"
    by = {f["feature"]: f for f in d["window"]["features"]}
    assert d["drifted"] == ["monthly_charges"], {f: by[f]["psi"] for f in FEATURES}
    assert by["monthly_charges"]["psi"] > THRESHOLD
    s = FEATURES.index("satisfaction")
    assert by["satisfaction"]["missing_rate"] == pytest.approx(sum(r[s] is None for r in shifted) / len(shifted))
    for i, f in enumerate(FEATURES):
        assert by[f]["psi"] == pytest.approx(psi(base[f], [r[i] for r in shifted]), abs=1e-9), f
    logger = "http://" + stack.logger.addrs["admin"]
    assert metric(logger, 'logger_feature_drifted{feature="monthly_charges"}') == 1
    assert metric(logger, 'logger_feature_drifted{feature="age"}') == 0
    assert metric(logger, "logger_drift_psi_max") == pytest.approx(by["monthly_charges"]["psi"])
