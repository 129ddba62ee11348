//! The admin port every service has: `/metrics` (crate `telemetry`'s render), `/healthz`
//! (alive), `/readyz` (ready to take traffic), and a guard for the admin routes that change
//! state or show recorded data.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, http::StatusCode, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Readiness, flipped by the service: false until it can serve, false again on shutdown.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `/metrics`, `/healthz`, `/readyz`, plus any extra routes a service adds.
pub fn admin_router(readiness: Readiness) -> Router {
    telemetry::prometheus(); // installed now, before the service records anything
    Router::new()
        .route("/metrics", get(|| std::future::ready(telemetry::render())))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

/// Guards admin routes that change state or show recorded data: they need
/// `Authorization: Bearer <token>` (401 without it); with no token configured they are refused
/// (403), never open. Use with `axum::middleware::from_fn_with_state(token, require_admin_token)`.
pub async fn require_admin_token(
    axum::extract::State(token): axum::extract::State<Option<Arc<str>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(token) = token else {
        return (
            StatusCode::FORBIDDEN,
            "this route needs an admin token, and none is configured (the service's *_ADMIN_TOKEN)",
        )
            .into_response();
    };
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    metrics::counter!("admin_unauthorized_total").increment(1);
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        "a valid admin token is required: Authorization: Bearer <token>",
    )
        .into_response()
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve_admin(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
