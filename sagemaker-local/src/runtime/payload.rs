//! The built-in XGBoost container's wire formats (1.2-2 and later): `text/csv` rows in, one
//! line per row out (`p0,p1,...` for multi-class), or `{"predictions":[{"score":..}]}`.
//! Values are printed as Python prints a float32 widened to a double.

/// Why a payload was refused, with the status code the container would have returned.
#[derive(Debug, PartialEq)]
pub struct ContainerError {
    pub status: u16,
    pub message: String,
}

/// Parses CSV rows into a row-major f32 matrix. An empty field is a missing value (NaN).
pub fn parse_csv(body: &[u8], num_features: usize) -> Result<(Vec<f32>, usize), ContainerError> {
    let malformed = |detail: String| ContainerError {
        status: 415,
        message: format!(
            "Loading csv data failed with Exception, please ensure data is in csv format: {detail}"
        ),
    };
    let text = std::str::from_utf8(body).map_err(|e| malformed(format!("not UTF-8: {e}")))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err(malformed("empty payload".into()));
    }
    let mut values = Vec::with_capacity(text.len() / 4);
    let mut width = None;
    let mut rows = 0;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let before = values.len();
        for field in line.split(',') {
            let field = field.trim();
            let v = if field.is_empty() {
                f32::NAN
            } else {
                field
                    .parse::<f64>()
                    .map_err(|_| malformed(format!("row {}: {field:?} is not a number", i + 1)))?
                    as f32
            };
            values.push(v);
        }
        let n = values.len() - before;
        match width {
            None => width = Some(n),
            Some(w) if w != n => {
                return Err(malformed(format!(
                    "row {} has {n} fields, row 1 has {w}",
                    i + 1
                )));
            }
            _ => {}
        }
        rows += 1;
    }
    let width = width.unwrap_or(0);
    if width != num_features {
        return Err(ContainerError {
            status: 400,
            message: format!("Feature shape mismatch, expected: {num_features}, got {width}"),
        });
    }
    Ok((values, rows))
}

/// The response formats the container can produce.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Accept {
    Csv,
    Json,
    JsonLines,
}

impl Accept {
    /// From the Accept header: parameters stripped, lowercased; missing or `*/*` is CSV.
    pub fn parse(header: Option<&str>) -> Result<Self, ContainerError> {
        let raw = header
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match raw.as_str() {
            "" | "*/*" | "text/csv" => Ok(Accept::Csv),
            "application/json" => Ok(Accept::Json),
            "application/jsonlines" | "application/x-jsonlines" => Ok(Accept::JsonLines),
            other => Err(ContainerError {
                status: 406,
                message: format!("Accept type {other} is not supported."),
            }),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Accept::Csv => "text/csv; charset=utf-8",
            Accept::Json => "application/json",
            Accept::JsonLines => "application/jsonlines",
        }
    }
}

/// Renders `outputs` values per row.
pub fn render(accept: Accept, predictions: &[f32], outputs: usize) -> String {
    let mut out = String::with_capacity(predictions.len() * 22);
    let rows = predictions.chunks_exact(outputs.max(1));
    let score = |out: &mut String, row: &[f32]| {
        if row.len() == 1 {
            push_py_float(out, row[0] as f64);
        } else {
            out.push('[');
            push_joined(out, row, ", ");
            out.push(']');
        }
    };
    match accept {
        Accept::Csv => {
            for row in rows {
                push_joined(&mut out, row, ",");
                out.push('\n');
            }
        }
        Accept::Json => {
            out.push_str("{\"predictions\": [");
            for (i, row) in rows.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str("{\"score\": ");
                score(&mut out, row);
                out.push('}');
            }
            out.push_str("]}");
        }
        Accept::JsonLines => {
            for row in rows {
                out.push_str("{\"score\": ");
                score(&mut out, row);
                out.push_str("}\n");
            }
        }
    }
    out
}

fn push_joined(out: &mut String, row: &[f32], sep: &str) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        push_py_float(out, *v as f64);
    }
}

/// Python's `repr(float)`: the shortest round-tripping digits, in fixed notation when the
/// exponent is in [-4, 16), else scientific with a signed, two-digit exponent.
pub fn push_py_float(out: &mut String, v: f64) {
    if v.is_nan() {
        return out.push_str("nan");
    }
    if v.is_infinite() {
        return out.push_str(if v > 0.0 { "inf" } else { "-inf" });
    }
    // `{:e}` gives the shortest round-tripping digits: "-4.3861907720565796e-1".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (sign, mantissa) = mantissa
        .strip_prefix('-')
        .map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn py(v: f64) -> String {
        let mut s = String::new();
        push_py_float(&mut s, v);
        s
    }

    #[test]
    fn floats_print_like_python_repr() {
        // Each expected string is what CPython 3.11 prints for repr(x).
        for (v, expect) in [
            (0.43861907720565796, "0.43861907720565796"),
            (0.5, "0.5"),
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e-05, "1e-05"),
            (1.5e-05, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456.0, "123456.0"),
            (1e16, "1e+16"),
            (1.2345e17, "1.2345e+17"),
            (9999999999999998.0, "9999999999999998.0"),
            (-2.5, "-2.5"),
            (0.1f32 as f64, "0.10000000149011612"),
        ] {
            assert_eq!(py(v), expect, "{v:e}");
        }
    }

    proptest! {
        #[test]
        fn printed_floats_parse_back_exactly(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assume!(v.is_finite());
            prop_assert_eq!(py(v).parse::<f64>().unwrap(), v);
        }

        #[test]
        fn csv_rows_round_trip(rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(-1e6f64..1e6), 3), 1..20)) {
            let text: String = rows.iter().map(|r| {
                r.iter().map(|v| v.map(py).unwrap_or_default()).collect::<Vec<_>>().join(",") + "\n"
            }).collect();
            let (values, n) = parse_csv(text.as_bytes(), 3).unwrap();
            prop_assert_eq!(n, rows.len());
            for (got, want) in values.iter().zip(rows.iter().flatten()) {
                match want {
                    None => prop_assert!(got.is_nan()),
                    Some(x) => prop_assert_eq!(*got, *x as f32),
                }
            }
        }
    }

    #[test]
    fn csv_errors_carry_the_container_status() {
        assert_eq!(parse_csv(b"1,2,3\n4,5", 3).unwrap_err().status, 415);
        assert_eq!(parse_csv(b"1,x,3", 3).unwrap_err().status, 415);
        assert_eq!(parse_csv(b"", 3).unwrap_err().status, 415);
        assert_eq!(parse_csv(b"1,2", 3).unwrap_err().status, 400);
        let (v, n) = parse_csv(b"1,,3\r\n4,5,6\n", 3).unwrap();
        assert_eq!(n, 2);
        assert!(v[1].is_nan());
    }

    #[test]
    fn outputs_match_the_container_formats() {
        assert_eq!(render(Accept::Csv, &[0.25, 0.5], 1), "0.25\n0.5\n");
        assert_eq!(render(Accept::Csv, &[0.25, 0.75], 2), "0.25,0.75\n");
        assert_eq!(
            render(Accept::Json, &[0.25, 0.5], 1),
            r#"{"predictions": [{"score": 0.25}, {"score": 0.5}]}"#
        );
        assert_eq!(
            render(Accept::Json, &[0.25, 0.75], 2),
            r#"{"predictions": [{"score": [0.25, 0.75]}]}"#
        );
        assert_eq!(
            Accept::parse(Some("text/CSV; charset=utf-8")).unwrap(),
            Accept::Csv
        );
        assert_eq!(Accept::parse(None).unwrap(), Accept::Csv);
        assert_eq!(Accept::parse(Some("image/png")).unwrap_err().status, 406);
    }
}
