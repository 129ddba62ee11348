//! The gateway's side of traces (crate `telemetry`'s `traces`): each HTTP request's server
//! span, continuing the caller's trace, and the `traceparent` every answer carries.

use axum::{middleware, response::Response};

/// A request's span: when traces are on, the server span of its trace (continuing the
/// caller's `traceparent`, named for its route, with `trace_id` on every log line in it);
/// otherwise tower-http's own (debug level).
pub(crate) fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    if !telemetry::traces::enabled() {
        return tower_http::trace::MakeSpan::make_span(
            &mut tower_http::trace::DefaultMakeSpan::new(),
            request,
        );
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(request.uri().path(), |m| m.as_str());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = %route,
        trace_id = tracing::field::Empty,
    );
    telemetry::traces::continue_from(&span, request.headers());
    span
}

/// Every answer names its trace (`traceparent`) when traces are on.
pub(crate) async fn answer_traceparent(
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    telemetry::traces::inject(&tracing::Span::current(), response.headers_mut());
    response
}
