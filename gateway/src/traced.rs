//! The gateway's side of traces (crate `telemetry`'s `traces`): each HTTP request in its
//! trace, continuing the caller's, and the `traceparent` every answer carries.

use axum::{extract::Request, middleware::Next, response::Response};

/// Runs a request in its trace when traces are on. Sampling is decided first, from the
/// caller's `traceparent` (`traces::decide`): a sampled request runs in its server span (named
/// for its route, `trace_id` on every log line in it); an unsampled one builds no span, only
/// runs in its trace's context, which its calls propagate with the sampled flag off. Either
/// way the answer names the trace (`traceparent`).
pub(crate) async fn request(request: Request, next: Next) -> Response {
    let decision = telemetry::traces::decide(request.headers());
    let span = decision.span(|| server_span(&request));
    let answer = async move {
        let mut response = next.run(request).await;
        telemetry::traces::inject(&tracing::Span::none(), response.headers_mut());
        response
    };
    decision.run(span, answer).await
}

fn server_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(request.uri().path(), |m| m.as_str());
    tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = %route,
        trace_id = tracing::field::Empty,
    )
}

/// tower-http's span for a request: its own (debug level) when traces are off; none when they
/// are on, since [`request`] made the request's.
pub(crate) fn tower_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    if telemetry::traces::enabled() {
        return tracing::Span::none();
    }
    tower_http::trace::MakeSpan::make_span(&mut tower_http::trace::DefaultMakeSpan::new(), request)
}
