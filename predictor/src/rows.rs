//! Rows in, CSV out, scores back: validation of the request rows, the `text/csv` payload
//! SageMaker's XGBoost container expects (NaN -> empty field), and parsing of both of the
//! container's output formats (`0.1,0.2` and `0.1\n0.2\n`; multi-class `p0,p1\n`).

use crate::error::Error;

/// Checks every row and returns the CSV line for each.
pub fn encode(
    rows: &[proto::predictor::v1::Row],
    max_rows: usize,
    features: Option<usize>,
) -> Result<Vec<String>, Error> {
    if rows.is_empty() {
        return Err(Error::invalid("rows", "at least one row is required"));
    }
    if rows.len() > max_rows {
        return Err(Error::invalid(
            "rows",
            format!("{} rows is more than the limit of {max_rows}", rows.len()),
        ));
    }
    let width = features.unwrap_or(rows[0].values.len());
    let mut lines = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if row.values.len() != width {
            return Err(Error::invalid(
                format!("rows[{i}].values"),
                format!("has {} values, the model takes {width}", row.values.len()),
            ));
        }
        let mut line = String::with_capacity(row.values.len() * 8);
        for (j, v) in row.values.iter().enumerate() {
            if j > 0 {
                line.push(',');
            }
            if v.is_infinite() {
                return Err(Error::invalid(
                    format!("rows[{i}].values[{j}]"),
                    "must be finite (NaN means missing)",
                ));
            }
            // XGBoost compares features as 32-bit floats: a larger value would be infinite
            // to the model (and a linear model's score with it).
            if v.abs() > f64::from(f32::MAX) {
                return Err(Error::invalid(
                    format!("rows[{i}].values[{j}]"),
                    format!(
                        "{v} is outside the range the model reads (32-bit floats, up to {:e})",
                        f32::MAX
                    ),
                ));
            }
            push_number(&mut line, *v);
        }
        lines.push(line);
    }
    Ok(lines)
}

/// Shortest round-tripping text; NaN (missing) is an empty field.
pub fn push_number(out: &mut String, v: f64) {
    use std::fmt::Write;
    if v.is_nan() {
        return;
    }
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-5..1e16).contains(&magnitude) {
        let _ = write!(out, "{v:e}");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The model's scores must be numbers: a NaN or an infinity (a linear model that overflowed,
/// a broken `base_score`) is the model failing on that row, never an answer.
pub fn check_finite(scores: &[Vec<f64>]) -> Result<(), Error> {
    match scores
        .iter()
        .position(|row| row.iter().any(|s| !s.is_finite()))
    {
        None => Ok(()),
        Some(row) => Err(Error::ModelOutput {
            row,
            reason: format!(
                "the model returned a non-finite score ({}) for row {row}",
                scores[row]
                    .iter()
                    .map(f64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }),
    }
}

/// Splits the endpoint's answer into one score vector per row.
pub fn parse_scores(body: &str, rows: usize) -> Result<Vec<Vec<f64>>, Error> {
    let tokens: Vec<&str> = body
        .split(['\n', ','])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if rows == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(rows) {
        return Err(Error::Internal(format!(
            "the endpoint returned {} values for {rows} rows",
            tokens.len()
        )));
    }
    let width = tokens.len() / rows;
    let values: Vec<f64> = tokens
        .iter()
        .map(|t| {
            t.parse::<f64>()
                .map_err(|_| Error::Internal(format!("the endpoint returned a non-number {t:?}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(values.chunks(width).map(<[f64]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proto::predictor::v1::Row;

    fn row(values: &[f64]) -> Row {
        Row {
            values: values.to_vec(),
        }
    }

    #[test]
    fn rows_are_checked_and_named() {
        assert!(encode(&[], 10, None).is_err());
        let e = encode(&[row(&[1.0, 2.0]), row(&[1.0])], 10, None).unwrap_err();
        assert!(e.to_string().contains("rows[1].values"), "{e}");
        let e = encode(&[row(&[1.0, f64::INFINITY])], 10, None).unwrap_err();
        assert!(e.to_string().contains("rows[0].values[1]"), "{e}");
        assert!(encode(&vec![row(&[1.0]); 3], 2, None).is_err());
        assert!(encode(&[row(&[1.0])], 2, Some(2)).is_err());
        assert_eq!(
            encode(&[row(&[1.5, f64::NAN, -2.0])], 2, Some(3)).unwrap(),
            ["1.5,,-2"]
        );
        let e = encode(&[row(&[1.0]), row(&[1e300])], 2, None).unwrap_err();
        assert!(e.to_string().contains("rows[1].values[0]"), "{e}");
        assert!(encode(&[row(&[f64::from(f32::MAX)])], 2, None).is_ok());
    }

    #[test]
    fn a_non_finite_score_names_its_row() {
        assert!(check_finite(&[vec![0.1], vec![0.9]]).is_ok());
        let e = check_finite(&[vec![0.1], vec![f64::NAN], vec![f64::INFINITY]]).unwrap_err();
        assert!(matches!(e, Error::ModelOutput { row: 1, .. }), "{e:?}");
        assert!(e.to_string().contains("row 1"), "{e}");
    }

    #[test]
    fn both_container_formats_parse() {
        assert_eq!(parse_scores("0.1,0.2", 2).unwrap(), [[0.1], [0.2]]);
        assert_eq!(parse_scores("0.1\n0.2\n", 2).unwrap(), [[0.1], [0.2]]);
        assert_eq!(
            parse_scores("0.1,0.9\n0.3,0.7\n", 2).unwrap(),
            [vec![0.1, 0.9], vec![0.3, 0.7]]
        );
        assert!(parse_scores("0.1\n0.2\n0.3\n", 2).is_err());
        assert!(parse_scores("", 1).is_err());
        assert!(parse_scores("oops", 1).is_err());
    }

    proptest! {
        #[test]
        fn encoded_values_parse_back_exactly(values in proptest::collection::vec(any::<f64>().prop_filter("NaN, or within the f32 range the model reads", |v| v.is_nan() || v.abs() <= f64::from(f32::MAX)), 1..12)) {
            let line = &encode(&[row(&values)], 1, None).unwrap()[0];
            let fields: Vec<&str> = line.split(',').collect();
            prop_assert_eq!(fields.len(), values.len());
            for (f, v) in fields.iter().zip(&values) {
                if v.is_nan() { prop_assert!(f.is_empty()) } else { prop_assert_eq!(f.parse::<f64>().unwrap(), *v) }
            }
        }
    }
}
