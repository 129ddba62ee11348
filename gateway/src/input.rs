//! Request bodies to rows of feature values: `{"features": {name: value}}`,
//! `{"instances": [[...], ...]}` and `text/csv`. `null` (JSON) or an empty field (CSV) is a
//! missing value; every error names the field at fault.

// The error is the response itself (a problem document); it is built once per bad request,
// so its size costs nothing on the path that succeeds.
#![allow(clippy::result_large_err)]

use axum::http::StatusCode;
use serde_json::Value;

use crate::problem::Problem;

pub fn parse(
    content_type: &str,
    body: &[u8],
    features: &[String],
    max_rows: usize,
) -> Result<Vec<Vec<f64>>, Problem> {
    let kind = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let rows = match kind.as_str() {
        "application/json" | "" => parse_json(body, features)?,
        "text/csv" => parse_csv(body, features)?,
        other => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type {other:?} is not supported: send application/json or text/csv"
                ),
            ));
        }
    };
    if rows.is_empty() {
        return Err(Problem::bad_input("body", "at least one row is required"));
    }
    if rows.len() > max_rows {
        return Err(Problem::bad_input(
            "body",
            format!("{} rows is more than the limit of {max_rows}", rows.len()),
        ));
    }
    Ok(rows)
}

/// XGBoost reads features as 32-bit floats: a finite f64 beyond their range is an infinity
/// to the model (and makes a linear model's score one), so it is refused here, by field.
pub(crate) fn in_model_range(x: f64) -> bool {
    x.is_finite() && x.abs() <= f64::from(f32::MAX)
}

const RANGE: &str =
    "must be a finite number within the 32-bit float range the model reads (about ±3.4e38)";

fn number(field: impl Fn() -> String, v: &Value) -> Result<f64, Problem> {
    match v {
        Value::Null => Ok(f64::NAN),
        Value::Number(n) => n
            .as_f64()
            .filter(|x| in_model_range(*x))
            .ok_or_else(|| Problem::bad_input(field(), RANGE)),
        _ => Err(Problem::bad_input(
            field(),
            "must be a number (or null for a missing value)",
        )),
    }
}

fn parse_json(body: &[u8], features: &[String]) -> Result<Vec<Vec<f64>>, Problem> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_input("body", format!("malformed JSON: {e}")))?;
    if doc.get("features").is_some() && doc.get("instances").is_some() {
        // Which one would be predicted (and recorded)? Neither: say so.
        return Err(Problem::bad_input(
            "body",
            r#"give either "features" or "instances", not both"#,
        ));
    }
    if let Some(named) = doc.get("features") {
        let named = named.as_object().ok_or_else(|| {
            Problem::bad_input("features", "must be an object of feature name to value")
        })?;
        let mut row = vec![f64::NAN; features.len()];
        for (name, value) in named {
            let i = features.iter().position(|f| f == name).ok_or_else(|| {
                Problem::bad_input(
                    format!("features.{name}"),
                    format!("unknown feature; the model takes {}", features.join(", ")),
                )
            })?;
            row[i] = number(|| format!("features.{name}"), value)?;
        }
        return Ok(vec![row]);
    }
    if let Some(instances) = doc.get("instances") {
        let instances = instances
            .as_array()
            .ok_or_else(|| Problem::bad_input("instances", "must be an array of rows"))?;
        return instances
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let row = row.as_array().ok_or_else(|| {
                    Problem::bad_input(format!("instances[{i}]"), "must be an array of numbers")
                })?;
                if row.len() != features.len() {
                    return Err(Problem::bad_input(
                        format!("instances[{i}]"),
                        format!(
                            "has {} values; the model takes {} ({})",
                            row.len(),
                            features.len(),
                            features.join(", ")
                        ),
                    ));
                }
                row.iter()
                    .enumerate()
                    .map(|(j, v)| number(|| format!("instances[{i}][{j}]"), v))
                    .collect()
            })
            .collect();
    }
    Err(Problem::bad_input(
        "body",
        r#"expected {"features": {name: value}} or {"instances": [[...], ...]}"#,
    ))
}

fn parse_csv(body: &[u8], features: &[String]) -> Result<Vec<Vec<f64>>, Problem> {
    let text =
        std::str::from_utf8(body).map_err(|_| Problem::bad_input("body", "CSV must be UTF-8"))?;
    text.lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != features.len() {
                return Err(Problem::bad_input(
                    format!("line {}", n + 1),
                    format!(
                        "has {} fields; the model takes {} ({})",
                        fields.len(),
                        features.len(),
                        features.join(", ")
                    ),
                ));
            }
            fields
                .iter()
                .enumerate()
                .map(|(j, f)| {
                    let f = f.trim();
                    if f.is_empty() {
                        return Ok(f64::NAN);
                    }
                    f.parse::<f64>()
                        .ok()
                        .filter(|v| in_model_range(*v))
                        .ok_or_else(|| {
                            Problem::bad_input(
                                format!("line {}, column {} ({})", n + 1, j + 1, features[j]),
                                format!("{f:?}: {RANGE}"),
                            )
                        })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    fn field(r: Result<Vec<Vec<f64>>, Problem>) -> String {
        r.unwrap_err().field.unwrap_or_default()
    }

    #[test]
    fn json_by_name_fills_missing_with_nan() {
        let rows = parse(
            "application/json",
            br#"{"features":{"c":3,"a":1.5,"b":null}}"#,
            &names(),
            10,
        )
        .unwrap();
        assert_eq!(rows[0][0], 1.5);
        assert!(rows[0][1].is_nan());
        assert_eq!(rows[0][2], 3.0);
    }

    #[test]
    fn both_features_and_instances_is_ambiguous_and_refused() {
        let both = parse(
            "application/json",
            br#"{"features":{"a":1},"instances":[[1,2,3]]}"#,
            &names(),
            10,
        )
        .unwrap_err();
        assert_eq!(both.field.as_deref(), Some("body"));
        assert!(both.detail.contains("not both"), "{}", both.detail);
    }

    #[test]
    fn bad_json_names_the_field() {
        assert_eq!(
            field(parse(
                "application/json",
                br#"{"features":{"zz":1}}"#,
                &names(),
                10
            )),
            "features.zz"
        );
        assert_eq!(
            field(parse(
                "application/json",
                br#"{"features":{"a":"1"}}"#,
                &names(),
                10
            )),
            "features.a"
        );
        assert_eq!(
            field(parse(
                "application/json",
                br#"{"instances":[[1,2,3],[1,2]]}"#,
                &names(),
                10
            )),
            "instances[1]"
        );
        assert_eq!(
            field(parse(
                "application/json",
                br#"{"instances":[[1,"x",3]]}"#,
                &names(),
                10
            )),
            "instances[0][1]"
        );
        assert_eq!(
            field(parse("application/json", br#"{"features":"#, &names(), 10)),
            "body"
        );
        assert_eq!(
            field(parse("application/json", br#"{"other":1}"#, &names(), 10)),
            "body"
        );
        assert_eq!(
            field(parse(
                "application/json",
                br#"{"instances":[]}"#,
                &names(),
                10
            )),
            "body"
        );
        assert_eq!(
            field(parse(
                "application/json",
                br#"{"instances":[[1,2,3],[1,2,3]]}"#,
                &names(),
                1
            )),
            "body"
        );
        assert_eq!(
            parse("application/xml", b"<x/>", &names(), 1)
                .unwrap_err()
                .status,
            415
        );
    }

    #[test]
    fn csv_rows_and_errors() {
        let rows = parse("text/csv; charset=utf-8", b"1,,3\r\n4,5,6\n", &names(), 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0][1].is_nan());
        assert_eq!(field(parse("text/csv", b"1,2", &names(), 10)), "line 1");
        assert_eq!(
            field(parse("text/csv", b"1,2,inf", &names(), 10)),
            "line 1, column 3 (c)"
        );
        assert_eq!(
            field(parse("text/csv", b"1,2,3\nx,2,3", &names(), 10)),
            "line 2, column 1 (a)"
        );
    }

    proptest! {
        #[test]
        fn instances_round_trip(rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(-1e9f64..1e9), 3), 1..20)) {
            let json = serde_json::json!({ "instances": rows });
            let parsed = parse("application/json", json.to_string().as_bytes(), &names(), 100).unwrap();
            for (got, want) in parsed.iter().flatten().zip(rows.iter().flatten()) {
                match want { None => prop_assert!(got.is_nan()), Some(x) => prop_assert_eq!(got, x) }
            }
        }
    }
}
