#!/usr/bin/env python3
"""Times Python xgboost's own predict on the demo model and rows; prints one JSON object.
Run by `cargo bench -p sagemaker-local --bench throughput` to compare in the same run."""
import json
import pathlib
import time

import numpy as np
import xgboost as xgb

ROOT = pathlib.Path(__file__).resolve().parents[1]
booster = xgb.Booster()
booster.load_model(ROOT / "demo" / "model" / "xgboost-model.json")
rows = []
for line in (ROOT / "demo" / "data" / "customers.csv").read_text().splitlines()[1:]:
    rows.append([float(v) if v else np.nan for v in line.split(",")[1:9]])
X = np.array(rows, dtype=np.float64)
one = X[:1]
names = booster.feature_names


def per_call(fn, n):
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


print(json.dumps({
    "xgboost_version": xgb.__version__,
    "predict_one_row_us": per_call(lambda: booster.predict(xgb.DMatrix(one, feature_names=names)), 3000),
    "inplace_predict_one_row_us": per_call(lambda: booster.inplace_predict(one, validate_features=False), 3000),
    "predict_1000_rows_us": per_call(lambda: booster.predict(xgb.DMatrix(X, feature_names=names)), 300),
    "inplace_predict_1000_rows_us": per_call(lambda: booster.inplace_predict(X, validate_features=False), 300),
}))
