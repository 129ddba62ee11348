//! The JSON and binary forms to rows, and the refusals by field.
use super::*;

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<InferRequest, Problem> {
    InferRequest::parse(headers, body, 3, 10)
}

#[test]
fn json_rows_flat_or_nested_with_null_as_missing() {
    let body = br#"{"inputs":[{"name":"features","shape":[2,3],"datatype":"FP64","data":[[1,2,null],[4,5,6]]}]}"#;
    let r = parse(&HeaderMap::new(), body).unwrap();
    assert_eq!(r.rows.len(), 2);
    assert!(r.rows[0][2].is_nan());
    assert_eq!(r.rows[1], vec![4.0, 5.0, 6.0]);
    let flat = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2,3]}],"outputs":[{"name":"probability","parameters":{"binary_data":true}}]}"#;
    let r = parse(&HeaderMap::new(), flat).unwrap();
    assert_eq!(r.rows, vec![vec![1.0, 2.0, 3.0]]);
    assert!(r.binary_output);
}

#[test]
fn binary_tensors_follow_the_json_part() {
    let json = br#"{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","parameters":{"binary_data_size":12}}],"parameters":{"binary_data_output":true}}"#;
    let mut body = json.to_vec();
    for x in [1.5f32, -2.0, 3.25] {
        body.extend_from_slice(&x.to_le_bytes());
    }
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_LENGTH, HeaderValue::from(json.len()));
    let r = parse(&headers, &body).unwrap();
    assert_eq!(r.rows, vec![vec![1.5, -2.0, 3.25]]);
    assert!(r.binary_output);
    // A size that does not match the shape, or bytes missing, is the caller's error.
    body.truncate(body.len() - 4);
    assert_eq!(parse(&headers, &body).unwrap_err().status, 400);
}

#[test]
fn wrong_shape_datatype_output_or_values_are_refused_by_field() {
    let cases: [(&[u8], &str); 6] = [
        (br#"{"inputs":[{"name":"f","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#, "inputs[f].shape"),
        (br#"{"inputs":[{"name":"f","shape":[1,3],"datatype":"INT64","data":[1,2,3]}]}"#, "inputs[f].datatype"),
        (br#"{"inputs":[{"name":"f","shape":[2,3],"datatype":"FP32","data":[1,2,3]}]}"#, "inputs[f].data"),
        (br#"{"inputs":[{"name":"f","shape":[1,3],"datatype":"FP64","data":[1,1e300,3]}]}"#, "inputs[f].data[0][1]"),
        (br#"{"inputs":[{"name":"f","shape":[1,3],"datatype":"FP32","data":[1,2,3]}],"outputs":[{"name":"logits"}]}"#, "outputs"),
        (br#"{"inputs":[]}"#, "inputs"),
    ];
    for (body, field) in cases {
        let p = parse(&HeaderMap::new(), body).unwrap_err();
        assert_eq!(
            (p.status, p.field.as_deref()),
            (400, Some(field)),
            "{}",
            p.detail
        );
    }
    let p = parse(
        &HeaderMap::new(),
        br#"{"inputs":[{"name":"f","shape":[11,3],"datatype":"FP32","data":[]}]}"#,
    )
    .unwrap_err();
    assert!(p.detail.contains("limit of 10"), "{}", p.detail);
}
