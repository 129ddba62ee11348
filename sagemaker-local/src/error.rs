//! The one place AWS errors are shaped for the wire, as both SDKs parse them: the code in
//! `x-amzn-ErrorType` and in the body's `__type`, the message as `message` and `Message`,
//! plus any modeled members (e.g. ModelError's `OriginalStatusCode`).

use axum::{
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct AwsError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl AwsError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Control plane (awsJson1_1): bad input and missing resources.
    pub fn validation_exception(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// Runtime and Feature Store runtime (restJson1): bad input.
    pub fn validation_error(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ResourceNotFound", message)
    }

    pub fn resource_in_use(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ResourceInUse", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            message,
        )
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with(mut self, member: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(member.to_owned(), value.into());
        self
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AwsError {}

impl From<crate::db::DbError> for AwsError {
    fn from(e: crate::db::DbError) -> Self {
        tracing::error!(error = %e, "storage failure");
        AwsError::internal("An internal error occurred while storing state.")
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let mut body = self.extra;
        body.insert("__type".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.insert("Message".into(), json!(self.message));
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", HeaderValue::from_static(self.code));
        response
    }
}
