//! Parity with xgboost itself: `demo/model/expected.csv` is Python xgboost's `predict` on
//! every row of `demo/data/customers.csv` (written by `demo/train_demo.py`).

/// The demo's files, embedded when the test is built (so a test binary built from one checkout
/// still runs after that checkout is gone, e.g. with a shared target dir).
fn demo(path: &str) -> String {
    match path {
        "model/xgboost-model.json" => include_str!("../../../demo/model/xgboost-model.json"),
        "data/customers.csv" => include_str!("../../../demo/data/customers.csv"),
        "model/expected.csv" => include_str!("../../../demo/model/expected.csv"),
        other => panic!("not embedded: {other}"),
    }
    .to_owned()
}

#[test]
fn demo_model_matches_xgboost_predict() {
    let model =
        xgboost_json::Model::from_json(demo("model/xgboost-model.json").as_bytes()).unwrap();
    assert_eq!(model.num_features(), 8);
    assert_eq!(model.feature_names()[0], "age");

    let data = demo("data/customers.csv");
    let expected: Vec<f64> = demo("model/expected.csv")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut rows = Vec::new();
    for line in data.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        // customer_id, 8 features, churned
        for f in &fields[1..9] {
            rows.push(if f.is_empty() {
                f32::NAN
            } else {
                f.parse::<f64>().unwrap() as f32
            });
        }
    }
    let got = model.predict(&rows);
    assert_eq!(got.len(), expected.len());
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(g, e)| (*g as f64 - e).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-6, "largest difference from xgboost: {worst}");
    // The same through the one-row path.
    let mut one = [0f32];
    model.predict_row(&rows[..8], &mut one);
    assert_eq!(one[0], got[0]);
}
