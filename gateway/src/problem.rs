//! Errors as RFC 9457 problem documents, and the one table from gRPC codes to HTTP
//! statuses (docs/architecture.md's error table).

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;

/// `application/problem+json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The input field at fault, for bad input (e.g. `features.age`, `instances[1][3]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Seconds to wait before retrying (429/503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Further response headers (e.g. `WWW-Authenticate`, `RateLimit`).
    #[serde(skip)]
    #[schema(ignore)]
    pub headers: Vec<(&'static str, String)>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            request_id: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        Problem {
            retry_after: Some(retry_after),
            ..Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }

    pub fn bad_input(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            field: Some(field.into()),
            ..Problem::new(StatusCode::BAD_REQUEST, detail)
        }
    }

    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }

    /// The gRPC -> HTTP table. Internal details stay in the logs.
    pub fn from_status(status: &tonic::Status) -> Self {
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::FailedPrecondition => StatusCode::UNPROCESSABLE_ENTITY,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded | Code::Cancelled => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // Only the services' own verdicts on the request itself reach the caller; what an
        // upstream said about being down, slow or failing (hosts, accounts, role names) stays
        // in the log.
        let detail = match status.code() {
            Code::InvalidArgument
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::Unauthenticated
            | Code::PermissionDenied => status.message().to_owned(),
            code => {
                if http == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(?code, message = status.message(), "upstream failure");
                } else {
                    tracing::warn!(?code, message = status.message(), "upstream unavailable");
                }
                generic(http).to_owned()
            }
        };
        let mut problem = Problem::new(http, detail);
        if let Some(bad) = status.get_details_bad_request() {
            problem.field = bad.field_violations.first().map(|v| v.field.clone());
        }
        if matches!(
            http,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            problem.retry_after = Some(1);
        }
        problem
    }
}

/// What the caller is told for a status whose upstream cause is not theirs to see.
fn generic(status: StatusCode) -> &'static str {
    match status {
        StatusCode::TOO_MANY_REQUESTS => "the model endpoint is throttling; retry shortly",
        StatusCode::SERVICE_UNAVAILABLE => "the prediction service is unavailable; retry shortly",
        StatusCode::GATEWAY_TIMEOUT => "the prediction did not finish in time",
        StatusCode::NOT_FOUND => "not found",
        _ => "internal error",
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let extra = std::mem::take(&mut self.headers);
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        for (name, value) in extra {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

impl Problem {
    /// The same table read the other way, for the gateway's gRPC API: the status a gRPC caller
    /// gets for what an HTTP caller gets as this problem.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self.status {
            400 | 413 | 415 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            408 | 504 => Code::DeadlineExceeded,
            422 => Code::FailedPrecondition,
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            _ => Code::Internal,
        };
        let detail = match &self.field {
            Some(field) => format!("{}: {}", field, self.detail),
            None => self.detail.clone(),
        };
        tonic::Status::new(code, detail)
    }
}

/// Strict mode could not record the interactions: no answer goes out.
impl From<crate::interactions::NotRecorded> for Problem {
    fn from(e: crate::interactions::NotRecorded) -> Self {
        use crate::interactions::NotRecorded;
        match e {
            NotRecorded::Unavailable(_) => Problem::unavailable(e.to_string(), 1),
            // logged with its cause by the recorder; opaque to the caller
            NotRecorded::Refused(_) => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_the_table() {
        for (code, http) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::FailedPrecondition, 422),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Internal, 500),
            (Code::Unknown, 500),
        ] {
            assert_eq!(
                Problem::from_status(&tonic::Status::new(code, "x")).status,
                http,
                "{code:?}"
            );
        }
        let internal = Problem::from_status(&tonic::Status::internal("secret stack trace"));
        assert_eq!(internal.detail, "internal error");
        let throttled = Problem::from_status(&tonic::Status::resource_exhausted("slow down"));
        assert_eq!(throttled.retry_after, Some(1));
        let down = Problem::from_status(&tonic::Status::unavailable(
            "cannot reach the endpoint: arn:aws:sagemaker:us-east-1:123456789012:endpoint/x",
        ));
        assert!(!down.detail.contains("123456789012"), "{}", down.detail);
        let bad = Problem::from_status(&tonic::Status::invalid_argument("rows[0] is short"));
        assert_eq!(
            bad.detail, "rows[0] is short",
            "the caller's own mistake is told"
        );
    }
}
