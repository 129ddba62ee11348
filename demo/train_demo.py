#!/usr/bin/env python3
"""Makes the demo world's data and model: customer churn, 8 named features.

Writes (all checked in, all small):
  demo/data/customers.csv          1000 customers, the features and the `churned` label
  demo/model/xgboost-model.json    an XGBoost binary:logistic model (what model.tar.gz holds)
  demo/model/expected.csv          xgboost's own predict() on every customer, for parity tests

Run it again only to change the demo: `python3 demo/train_demo.py`. Deterministic (fixed seed).
"""
import csv
import pathlib

import numpy as np
import xgboost as xgb

HERE = pathlib.Path(__file__).resolve().parent
FEATURES = [
    "age",
    "tenure_months",
    "monthly_charges",
    "support_calls",
    "num_products",
    "late_payments",
    "satisfaction",
    "has_contract",
]
N = 1000


def make_data(rng):
    age = rng.integers(18, 80, N).astype(float)
    tenure = rng.integers(0, 73, N).astype(float)
    charges = np.round(rng.uniform(20, 120, N), 2)
    calls = rng.poisson(1.5, N).astype(float)
    products = rng.integers(1, 6, N).astype(float)
    late = rng.poisson(0.8, N).astype(float)
    satisfaction = rng.integers(1, 6, N).astype(float)
    contract = (rng.random(N) < 0.45).astype(float)
    sat_term = np.where(np.isnan(satisfaction), 0.0, satisfaction - 3)
    logit = (
        -0.6
        + 0.03 * (charges - 70)
        - 0.045 * tenure
        + 0.4 * calls
        + 0.45 * late
        - 0.55 * sat_term
        - 1.3 * contract
        - 0.15 * (products - 1)
        + 0.01 * (age - 45)
        + rng.normal(0, 0.5, N)
    )
    churned = (rng.random(N) < 1 / (1 + np.exp(-logit))).astype(int)
    satisfaction[rng.random(N) < 0.1] = np.nan  # a survey many customers skip
    X = np.column_stack([age, tenure, charges, calls, products, late, satisfaction, contract])
    return X, churned


def main():
    rng = np.random.default_rng(20241127)
    X, y = make_data(rng)
    (HERE / "data").mkdir(exist_ok=True)
    (HERE / "model").mkdir(exist_ok=True)
    with open(HERE / "data" / "customers.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["customer_id", *FEATURES, "churned"])
        for i, (row, label) in enumerate(zip(X, y)):
            w.writerow([f"C{i:05d}", *["" if np.isnan(v) else f"{v:g}" for v in row], label])

    dtrain = xgb.DMatrix(X, label=y, feature_names=FEATURES)
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.15, "subsample": 0.9, "seed": 7}
    booster = xgb.train(params, dtrain, num_boost_round=40)
    booster.save_model(HERE / "model" / "xgboost-model.json")

    preds = booster.predict(xgb.DMatrix(X, feature_names=FEATURES))
    with open(HERE / "model" / "expected.csv", "w") as f:
        for p in preds:
            f.write(f"{float(p)!r}\n")
    acc = float(((preds > 0.5) == y).mean())
    print(f"trained on {N} customers, churn rate {y.mean():.2f}, train accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
