//! The SageMaker control plane (awsJson1_1): `POST /` with `X-Amz-Target: SageMaker.<Op>`.
//! Each operation takes its typed input and the shared state and returns the output JSON.

mod endpoints;
pub mod feature_groups;
pub mod models;
mod package_groups;
mod registry;
pub mod variants;

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub(crate) use endpoints::finish_transition;
pub use endpoints::{EndpointRecord, resume_transitions};
pub use feature_groups::{FeatureDefinition, FeatureGroupRecord, FeatureType, TtlDuration};
pub use models::{ModelRecord, VariantSpec, model_data_url};
pub use registry::PackageRecord;

use crate::{AppState, error::AwsError};

pub async fn handle(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Application Auto Scaling shares the port (its own service; Deploy registers variants).
    if let Some(op) = target.strip_prefix("AnyScaleFrontendService.") {
        return crate::autoscaling::handle(state, op.to_owned(), body).await;
    }
    let Some(op) = target.strip_prefix("SageMaker.").map(str::to_owned) else {
        return AwsError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("Unknown operation target {target:?}"),
        )
        .into_response();
    };
    let input: Value = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return AwsError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "SerializationException",
                    e.to_string(),
                )
                .into_response();
            }
        }
    };
    let started = std::time::Instant::now();
    // Metric labels come from this list only: a caller cannot mint series with made-up names.
    let op_label = OPERATIONS
        .iter()
        .find(|known| **known == op)
        .copied()
        .unwrap_or("unknown");
    // Operations commit to disk (fsync): keep them off the async workers.
    let result = tokio::task::spawn_blocking(move || dispatch(&state, &op, input))
        .await
        .unwrap_or_else(|e| Err(AwsError::internal(format!("operation panicked: {e}"))));
    let code = result.as_ref().err().map_or("ok", |e| e.code);
    metrics::counter!("sagemaker_local_control_requests_total", "operation" => op_label, "code" => code).increment(1);
    metrics::histogram!("sagemaker_local_control_seconds", "operation" => op_label)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(out) => {
            let mut response = axum::Json(out).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The control-plane operations sagemaker-local answers (what `dispatch` matches).
pub const OPERATIONS: &[&str] = &[
    "CreateModelPackageGroup",
    "DescribeModelPackageGroup",
    "CreateModelPackage",
    "UpdateModelPackage",
    "ListModelPackages",
    "DescribeModelPackage",
    "CreateModel",
    "DescribeModel",
    "DeleteModel",
    "CreateEndpointConfig",
    "DescribeEndpointConfig",
    "DeleteEndpointConfig",
    "CreateEndpoint",
    "UpdateEndpoint",
    "UpdateEndpointWeightsAndCapacities",
    "DescribeEndpoint",
    "DeleteEndpoint",
    "CreateFeatureGroup",
    "DescribeFeatureGroup",
    "DeleteFeatureGroup",
];

pub(crate) fn dispatch(state: &AppState, op: &str, input: Value) -> Result<Value, AwsError> {
    fn call<I: DeserializeOwned>(
        input: Value,
        f: impl FnOnce(I) -> Result<Value, AwsError>,
    ) -> Result<Value, AwsError> {
        let parsed = serde_json::from_value(input).map_err(|e| {
            AwsError::validation_exception(format!("1 validation error detected: {e}"))
        })?;
        f(parsed)
    }
    match op {
        "CreateModelPackageGroup" => call(input, |i| package_groups::create_group(state, i)),
        "DescribeModelPackageGroup" => call(input, |i| package_groups::describe_group(state, i)),
        "CreateModelPackage" => call(input, |i| registry::create_package(state, i)),
        "UpdateModelPackage" => call(input, |i| registry::update_package(state, i)),
        "ListModelPackages" => call(input, |i| registry::list_packages(state, i)),
        "DescribeModelPackage" => call(input, |i| registry::describe_package(state, i)),
        "CreateModel" => call(input, |i| models::create_model(state, i)),
        "DescribeModel" => call(input, |i| models::describe_model(state, i)),
        "DeleteModel" => call(input, |i| models::delete_model(state, i)),
        "CreateEndpointConfig" => call(input, |i| models::create_endpoint_config(state, i)),
        "DescribeEndpointConfig" => call(input, |i| models::describe_endpoint_config(state, i)),
        "DeleteEndpointConfig" => call(input, |i| models::delete_endpoint_config(state, i)),
        "CreateEndpoint" => call(input, |i| endpoints::create(state, i)),
        "UpdateEndpoint" => call(input, |i| endpoints::update(state, i)),
        "UpdateEndpointWeightsAndCapacities" => call(input, |i| variants::update_weights(state, i)),
        "DescribeEndpoint" => call(input, |i| endpoints::describe(state, i)),
        "DeleteEndpoint" => call(input, |i| endpoints::delete(state, i)),
        "CreateFeatureGroup" => call(input, |i| feature_groups::create(state, i)),
        "DescribeFeatureGroup" => call(input, |i| feature_groups::describe(state, i)),
        "DeleteFeatureGroup" => call(input, |i| feature_groups::delete(state, i)),
        other => Err(AwsError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("Operation {other} is not supported by sagemaker-local"),
        )),
    }
}

/// `[a-zA-Z0-9]` then runs of `extra` characters only between alphanumerics, at most `max`.
pub(crate) fn valid_name(name: &str, extra: &[char], max: usize) -> bool {
    let chars: Vec<char> = name.chars().collect();
    !chars.is_empty()
        && chars.len() <= max
        && chars[0].is_ascii_alphanumeric()
        && chars[chars.len() - 1].is_ascii_alphanumeric()
        && chars
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

pub(crate) fn require_name(
    field: &str,
    name: &str,
    extra: &[char],
    max: usize,
) -> Result<(), AwsError> {
    if valid_name(name, extra, max) {
        Ok(())
    } else {
        Err(AwsError::validation_exception(format!(
            "1 validation error detected: Value '{name}' at '{field}' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: ^[a-zA-Z0-9]({}*[a-zA-Z0-9]){{0,{}}}",
            if extra.contains(&'_') { "[_-]" } else { "-" },
            max - 1
        )))
    }
}

/// The name at the end of an ARN (`...:kind/name`), or the input when it is not an ARN.
pub(crate) fn name_from_arn<'a>(value: &'a str, kind: &str) -> &'a str {
    value
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(&format!(":{kind}/")))
        .map_or(value, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_sagemaker_pattern() {
        assert!(valid_name("my-mlops-prod-endpoint", &['-'], 63));
        assert!(!valid_name("-lead", &['-'], 63));
        assert!(!valid_name("trail-", &['-'], 63));
        assert!(!valid_name("under_score", &['-'], 63));
        assert!(valid_name("under_score", &['-', '_'], 64));
        assert!(!valid_name(&"a".repeat(64), &['-'], 63));
        assert!(!valid_name("", &['-'], 63));
    }

    #[test]
    fn arns_give_back_their_names() {
        assert_eq!(
            name_from_arn(
                "arn:aws:sagemaker:us-east-1:000000000000:endpoint/ep",
                "endpoint"
            ),
            "ep"
        );
        assert_eq!(name_from_arn("plain", "endpoint"), "plain");
    }

    /// The metric labels' list and the dispatcher agree: every listed operation is answered
    /// (with its own validation error for an empty input), and nothing else is.
    #[test]
    fn the_operation_list_is_what_dispatch_answers() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::open(crate::Settings::new(dir.path())).unwrap();
        for op in OPERATIONS {
            let out = dispatch(&state, op, serde_json::json!({}));
            assert!(
                out.as_ref()
                    .err()
                    .is_none_or(|e| e.code != "UnknownOperationException"),
                "{op} is listed but not dispatched"
            );
        }
        let unknown = dispatch(&state, "MadeUpOperation", serde_json::json!({})).unwrap_err();
        assert_eq!(unknown.code, "UnknownOperationException");
    }
}
