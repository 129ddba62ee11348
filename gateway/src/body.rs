//! Request bodies at the API: a declared size over the limit refused before any of it is
//! read, the whole body read within its own timeout and limit before the handler runs, and
//! axum's plain-text rejections turned into problem documents.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::problem::Problem;

/// Refuses a declared body over the limit before reading any of it, so a client that waits
/// for `100 Continue` never uploads it. Bodies without a length are cut off while read.
pub(crate) async fn refuse_oversized(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    match declared {
        Some(n) if n > limit => Problem {
            field: Some("body".into()),
            ..Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is {n} bytes; the limit is {limit}"),
            )
        }
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Reads the whole body within its own timeout (408 when it does not arrive in time) and
/// the size limit (413), before the handler runs: a slow upload cannot hold an in-flight
/// slot for longer than the body timeout.
pub(crate) async fn read_body(
    State((limit, timeout)): State<(usize, Duration)>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => Problem {
            field: Some("body".into()),
            ..Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over the limit of {limit} bytes"),
            )
        }
        .into_response(),
        Err(_) => {
            metrics::counter!("gateway_body_timeouts_total").increment(1);
            Problem {
                field: Some("body".into()),
                ..Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body did not arrive within {timeout:?}"),
                )
            }
            .into_response()
        }
    }
}

/// Turns axum's plain-text body rejections (e.g. 413) into problem documents.
pub(crate) async fn problem_for_rejections(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if response.status().is_client_error() && !is_problem {
        let status = response.status();
        let detail = match axum::body::to_bytes(response.into_body(), 4096).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => String::new(),
        };
        let field = (status == StatusCode::PAYLOAD_TOO_LARGE).then(|| "body".to_owned());
        return Problem {
            field,
            ..Problem::new(status, detail)
        }
        .into_response();
    }
    response
}
