//! An OIP `infer` body to rows, and scores to an `infer` answer: the JSON form, and the binary
//! tensor extension (the JSON's length in `Inference-Header-Content-Length`, then each binary
//! tensor's little-endian bytes in order, sized by its `binary_data_size`). The server keys on
//! that header, never on the content type (`tritonclient.http` sends none that means it).

// The error is the response itself; built once per bad request.
#![allow(clippy::result_large_err)]

use axum::{
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{HEADER_LENGTH, OUTPUT};
use crate::{api::Scored, input::in_model_range, problem::Problem};

#[derive(Deserialize)]
struct Body {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<Input>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
struct Input {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A parsed `infer` request.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    pub rows: Vec<Vec<f64>>,
    /// The caller asked for the output as binary data.
    pub binary_output: bool,
}

fn bad(field: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem::bad_input(field, detail)
}

impl InferRequest {
    pub fn parse(
        headers: &HeaderMap,
        body: &[u8],
        width: usize,
        max_rows: usize,
    ) -> Result<Self, Problem> {
        let (json_part, mut binary) = split(headers, body)?;
        let doc: Body = serde_json::from_slice(json_part)
            .map_err(|e| bad("body", format!("not an inference request: {e}")))?;
        let input = one_input(&doc.inputs, width)?;
        let field = |f: &str| format!("inputs[{}].{f}", input.name);
        let (rows, cols) = shape(&input.name, &input.shape, width, max_rows)?;
        let size = element_size(&input.name, &input.datatype)?;
        let n = rows * cols;
        let values = match input.parameters.get("binary_data_size") {
            Some(declared) => {
                let declared = declared.as_u64().ok_or_else(|| {
                    bad(field("parameters.binary_data_size"), "must be a byte count")
                })? as usize;
                if declared != n * size {
                    return Err(bad(
                        field("parameters.binary_data_size"),
                        format!(
                            "{declared} bytes for {n} {} values ({} bytes)",
                            input.datatype,
                            n * size
                        ),
                    ));
                }
                if binary.len() < declared {
                    return Err(bad(
                        field("parameters.binary_data_size"),
                        format!("{declared} bytes declared, {} in the body", binary.len()),
                    ));
                }
                let (mine, rest) = binary.split_at(declared);
                binary = rest;
                decode(mine, size)
            }
            None => {
                let data = input
                    .data
                    .as_ref()
                    .ok_or_else(|| bad(field("data"), "data (or binary_data_size) is required"))?;
                let mut flat = Vec::with_capacity(n);
                flatten(data, &mut flat).map_err(|d| bad(field("data"), d))?;
                flat
            }
        };
        if !binary.is_empty() {
            return Err(bad(
                "body",
                format!(
                    "{} bytes after the tensors the header declares",
                    binary.len()
                ),
            ));
        }
        let rows = to_rows(&input.name, values, rows, cols)?;
        known_outputs(doc.outputs.iter().map(|o| o.name.as_str()))?;
        let flag =
            |p: &Map<String, Value>, k: &str| p.get(k).and_then(Value::as_bool) == Some(true);
        let binary_output = flag(&doc.parameters, "binary_data_output")
            || doc
                .outputs
                .iter()
                .any(|o| flag(&o.parameters, "binary_data"));
        Ok(InferRequest {
            id: doc.id,
            rows,
            binary_output,
        })
    }
}

/// The one input tensor the model takes.
pub fn one_input<T>(inputs: &[T], width: usize) -> Result<&T, Problem> {
    match inputs {
        [input] => Ok(input),
        _ => Err(bad(
            "inputs",
            format!(
                "one input tensor is expected ({:?}: rows of the model's {width} features), got {}",
                super::INPUT,
                inputs.len()
            ),
        )),
    }
}

/// Requested outputs may name the model's one output only.
pub fn known_outputs<'a>(mut names: impl Iterator<Item = &'a str>) -> Result<(), Problem> {
    match names.find(|n| *n != OUTPUT) {
        Some(other) => Err(bad(
            "outputs",
            format!("unknown output {other:?}: the model has {OUTPUT:?}"),
        )),
        None => Ok(()),
    }
}

/// `[rows, width]` (or `[width]`, one row) within the row limit: (rows, columns).
pub fn shape(
    name: &str,
    shape: &[i64],
    width: usize,
    max_rows: usize,
) -> Result<(usize, usize), Problem> {
    let field = format!("inputs[{name}].shape");
    let (rows, cols) = match shape {
        [r, c] if *r >= 0 && *c >= 0 => (*r as usize, *c as usize),
        [c] if *c >= 0 => (1, *c as usize),
        other => {
            return Err(bad(
                field,
                format!("shape {other:?} is not [rows, {width}] (or [{width}] for one row)"),
            ));
        }
    };
    if cols != width {
        return Err(bad(
            field,
            format!("rows of {cols} values; the model takes {width} features"),
        ));
    }
    if rows == 0 {
        return Err(bad(field, "at least one row is required"));
    }
    if rows > max_rows {
        return Err(bad(
            field,
            format!("{rows} rows is more than the limit of {max_rows}"),
        ));
    }
    Ok((rows, cols))
}

/// Bytes per value of a datatype the model takes.
pub fn element_size(name: &str, datatype: &str) -> Result<usize, Problem> {
    match datatype {
        "FP32" => Ok(4),
        "FP64" => Ok(8),
        other => Err(bad(
            format!("inputs[{name}].datatype"),
            format!("datatype {other:?} is not supported: FP32 or FP64"),
        )),
    }
}

/// Row-major `values` as `rows` rows of `cols`: the count must match the shape; NaN is a
/// missing value (as XGBoost reads it), infinities and values beyond f32 are refused as /v1
/// refuses them.
pub fn to_rows(
    name: &str,
    values: Vec<f64>,
    rows: usize,
    cols: usize,
) -> Result<Vec<Vec<f64>>, Problem> {
    let field = format!("inputs[{name}].data");
    if values.len() != rows * cols {
        return Err(bad(
            field,
            format!(
                "{} values for shape [{rows}, {cols}] ({})",
                values.len(),
                rows * cols
            ),
        ));
    }
    if let Some(i) = values
        .iter()
        .position(|x| !x.is_nan() && !in_model_range(*x))
    {
        return Err(bad(
            format!("{field}[{}][{}]", i / cols, i % cols),
            "must be a finite number within the 32-bit float range the model reads",
        ));
    }
    Ok(values.chunks(cols).map(<[f64]>::to_vec).collect())
}

/// The JSON part and the binary part of a body.
fn split<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), Problem> {
    let Some(length) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let length: usize = length
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad(HEADER_LENGTH, "must be the JSON part's length in bytes"))?;
    if length > body.len() {
        return Err(bad(
            HEADER_LENGTH,
            format!("{length} bytes of JSON, but the body has {}", body.len()),
        ));
    }
    Ok(body.split_at(length))
}

/// Little-endian FP32 (`size` 4) or FP64 values.
pub fn decode(bytes: &[u8], size: usize) -> Vec<f64> {
    if size == 4 {
        bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()
    } else {
        bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    }
}

/// Row-major values of `data`, flat or nested; `null` is a missing value.
fn flatten(data: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match data {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("not a number")?);
            Ok(())
        }
        Value::Null => {
            out.push(f64::NAN);
            Ok(())
        }
        other => Err(format!(
            "must hold numbers (or null for a missing value), not {other}"
        )),
    }
}

/// The first score of each row, as the FP32 output (XGBoost's own precision).
pub fn scores(answer: &proto::predictor::v1::PredictResponse) -> Vec<f32> {
    answer
        .predictions
        .iter()
        .map(|p| p.scores.first().copied().unwrap_or(f64::NAN) as f32)
        .collect()
}

/// The `infer` answer: the model's version that answered, the request's id, the interaction
/// ids (one per row, comma-separated) and the variant in `parameters`, and `probability` as
/// FP32, in JSON or as binary data when asked.
pub fn response(model: &str, id: String, scored: Scored, binary: bool) -> Response {
    let scores = scores(&scored.answer);
    let info = scored.answer.model.unwrap_or_default();
    let mut output = json!({ "name": OUTPUT, "datatype": "FP32", "shape": [scores.len()] });
    let raw: Vec<u8> = if binary {
        output["parameters"] = json!({ "binary_data_size": scores.len() * 4 });
        scores.iter().flat_map(|s| s.to_le_bytes()).collect()
    } else {
        output["data"] = json!(scores);
        Vec::new()
    };
    let mut doc = json!({
        "model_name": model,
        "id": id,
        "parameters": {
            "interaction_ids": scored.interaction_ids.join(","),
            "variant": info.variant_name,
            "latency_ms": scored.latency_ms,
        },
        "outputs": [output],
    });
    if info.model_package_version > 0 {
        doc["model_version"] = json!(info.model_package_version.to_string());
    }
    let header_part = doc.to_string().into_bytes();
    if !binary {
        return ([(header::CONTENT_TYPE, "application/json")], header_part).into_response();
    }
    let length = header_part.len();
    let mut body = header_part;
    body.extend_from_slice(&raw);
    let mut response = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    response
        .headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests;
