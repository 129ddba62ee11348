//! The web page and what protects it: the page, its script and style (files, so that the
//! Content-Security-Policy can forbid inline script), the security headers every response
//! carries, and CORS for the configured origins only.

use std::time::Duration;

use axum::{
    extract::Request,
    http::header,
    middleware::Next,
    response::{Html, IntoResponse, Response},
};

pub(crate) async fn page() -> Html<&'static str> {
    Html(include_str!("../static/index.html"))
}

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/app.js"),
    )
        .into_response()
}

pub(crate) async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/app.css"),
    )
        .into_response()
}

/// The page's protections, on every response: scripts, styles and requests only from this
/// origin (no inline script, no other origin), no framing, no MIME sniffing, no referrer.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Behind HTTPS (a trusted proxy says `X-Forwarded-Proto: https`), browsers are told to use
/// nothing else for two years.
const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000; includeSubDomains";

pub(crate) async fn security_headers(
    axum::extract::State(trusted): axum::extract::State<std::sync::Arc<[ipnet::IpNet]>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let behind_https = peer.is_some_and(|p| trusted.iter().any(|n| n.contains(&p)))
        && request
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if behind_https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            header::HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// CORS for the configured origins only (none: browsers on other origins cannot read answers).
pub(crate) fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<header::HeaderValue> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .filter_map(|o| header::HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::HeaderName::from_static("x-api-key"),
                header::HeaderName::from_static("x-request-id"),
                header::HeaderName::from_static("x-client-id"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                header::HeaderName::from_static("ratelimit"),
                header::HeaderName::from_static("ratelimit-policy"),
                header::HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
