//! Hand-checked cases for the format details; parity with xgboost itself is checked by the
//! demo-model test in `tests/` and the Python parity suite.

use super::*;

/// One stump: `x0 < 0.5` (missing goes `default_left`), leaves -1 / +2.
fn stump(objective: &str, base_score: &str, default_left: u8, extra: &str) -> String {
    format!(
        r#"{{"learner":{{"feature_names":["a","b"],"feature_types":[],
        "gradient_booster":{{"name":"gbtree","model":{{"tree_info":[0],"trees":[{{
          "left_children":[1,-1,-1],"right_children":[2,-1,-1],"split_indices":[0,0,0],
          "split_conditions":[0.5,-1.0,2.0],"default_left":[{default_left},0,0],"split_type":[0,0,0]{extra},
          "base_weights":[0,-1,2],"tree_param":{{"num_nodes":"3","size_leaf_vector":"1"}}}}]}}}},
        "learner_model_param":{{"base_score":"{base_score}","num_class":"0","num_feature":"2","num_target":"1"}},
        "objective":{{"name":"{objective}"}}}}}}"#
    )
}

fn predict1(m: &Model, row: &[f32]) -> f32 {
    let mut out = [0f32];
    m.predict_row(row, &mut out);
    out[0]
}

#[test]
fn regression_adds_leaf_to_base_score() {
    let m = Model::from_json(stump("reg:squarederror", "5E-1", 0, "").as_bytes()).unwrap();
    assert_eq!(predict1(&m, &[0.0, 9.0]), -0.5);
    assert_eq!(predict1(&m, &[0.7, 9.0]), 2.5);
    assert_eq!(m.feature_names(), ["a", "b"]);
    assert_eq!(m.num_features(), 2);
}

#[test]
fn missing_follows_default_direction() {
    let right = Model::from_json(stump("reg:squarederror", "0", 0, "").as_bytes()).unwrap();
    let left = Model::from_json(stump("reg:squarederror", "0", 1, "").as_bytes()).unwrap();
    assert_eq!(predict1(&right, &[f32::NAN, 0.0]), 2.0);
    assert_eq!(predict1(&left, &[f32::NAN, 0.0]), -1.0);
}

#[test]
fn split_compares_in_f32() {
    // 0.49999999999 rounds to 0.5f32, which is not < 0.5: goes right.
    let m = Model::from_json(stump("reg:squarederror", "0", 0, "").as_bytes()).unwrap();
    assert_eq!(predict1(&m, &[0.49999999999f64 as f32, 0.0]), 2.0);
}

#[test]
fn logistic_base_score_is_a_probability_in_both_forms() {
    for base in ["5E-1", "[5E-1]"] {
        let m = Model::from_json(stump("binary:logistic", base, 0, "").as_bytes()).unwrap();
        // margin = logit(0.5) + 2 = 2
        let p = predict1(&m, &[1.0, 0.0]);
        assert!(
            (p - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-7,
            "{base}: {p}"
        );
    }
}

#[test]
fn categorical_models_are_refused() {
    let doc = stump("reg:squarederror", "0", 0, "")
        .replace(r#""split_type":[0,0,0]"#, r#""split_type":[1,0,0]"#);
    assert!(matches!(
        Model::from_json(doc.as_bytes()),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn unknown_objective_and_garbage_are_errors() {
    assert!(matches!(
        Model::from_json(stump("reg:mystery", "0", 0, "").as_bytes()),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        Model::from_json(b"{\"not\":1}"),
        Err(Error::Json(_))
    ));
    assert!(Model::from_json(b"\x00\x01").is_err());
}

#[test]
fn inconsistent_trees_are_invalid() {
    let doc =
        stump("reg:squarederror", "0", 0, "").replace(r#""num_nodes":"3""#, r#""num_nodes":"4""#);
    assert!(matches!(
        Model::from_json(doc.as_bytes()),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn python_style_base_score_lists_per_class() {
    assert_eq!(
        schema::parse_base_score("[1E-1,-2E-1]").unwrap(),
        vec![0.1, -0.2]
    );
    assert_eq!(schema::parse_base_score("5E-1").unwrap(), vec![0.5]);
    assert!(schema::parse_base_score("[x]").is_err());
}
