//! The logger's admin routes beside `/metrics`, `/healthz` and `/readyz`: `/drift` (open), and
//! the dead letters (they hold recorded interactions, and a replay or delete changes state, so
//! they need `LOGGER_ADMIN_TOKEN`):
//!
//! - `GET /dead-letters?after=KEY&limit=N`: a page (default 100, at most 1,000), oldest first,
//!   `{"dead_letters": [...], "next": KEY or null}`; `next` is the `after` of the next page.
//! - `POST /dead-letters/replay`: every dead letter back to the queue, `{"replayed": n}`.
//! - `DELETE /dead-letters?through=KEY`: drops those up to KEY (once read and dealt with),
//!   `{"deleted": n}`.
//!
//! Spool reads run on the blocking pool, never on the async workers; errors map once, here.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::Notify;

use crate::{
    drift::Drift,
    spool::{DeadLetterPage, Spool, SpoolError, blocking, error_chain},
};

/// Most dead letters one page lists.
pub const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

#[derive(Clone)]
struct AdminState {
    spool: Arc<Spool>,
    wake: Arc<Notify>,
}

/// The admin routes: `readiness` for `/readyz`, `token` guarding the dead letters.
pub fn router(
    readiness: bootstrap::Readiness,
    spool: Arc<Spool>,
    wake: Arc<Notify>,
    drift: Option<Drift>,
    token: Option<Arc<str>>,
) -> Router {
    if token.is_none() {
        tracing::info!("no LOGGER_ADMIN_TOKEN: the dead-letter routes are refused");
    }
    bootstrap::admin::admin_router(readiness)
        .route(
            "/drift",
            get(move || {
                let view = drift
                    .as_ref()
                    .map_or_else(|| serde_json::json!({ "tracking": false }), Drift::json);
                std::future::ready(Json(view))
            }),
        )
        .merge(
            Router::new()
                .route("/dead-letters", get(list).delete(delete))
                .route("/dead-letters/replay", axum::routing::post(replay))
                .with_state(AdminState { spool, wake })
                .route_layer(axum::middleware::from_fn_with_state(
                    token,
                    bootstrap::admin::require_admin_token,
                )),
        )
}

/// The admin routes' one error table.
struct AdminError(SpoolError);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            SpoolError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            SpoolError::Recovering
            | SpoolError::Storage { .. }
            | SpoolError::Io { .. }
            | SpoolError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        tracing::warn!(error = %error_chain(&self.0), "admin request failed");
        (
            status,
            Json(serde_json::json!({ "error": self.0.to_string() })),
        )
            .into_response()
    }
}

#[derive(serde::Deserialize)]
struct Page {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn list(
    State(s): State<AdminState>,
    Query(page): Query<Page>,
) -> Result<Json<DeadLetterPage>, AdminError> {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let spool = Arc::clone(&s.spool);
    blocking(move || spool.dead_letters(page.after, limit))
        .await
        .map(Json)
        .map_err(AdminError)
}

async fn replay(State(s): State<AdminState>) -> Result<Json<serde_json::Value>, AdminError> {
    let n = s.spool.replay_dead_letters().await.map_err(AdminError)?;
    s.wake.notify_one();
    Ok(Json(serde_json::json!({ "replayed": n })))
}

#[derive(serde::Deserialize)]
struct Through {
    through: u64,
}

async fn delete(
    State(s): State<AdminState>,
    Query(Through { through }): Query<Through>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let n = s
        .spool
        .delete_dead_letters(through)
        .await
        .map_err(AdminError)?;
    s.wake.notify_one();
    Ok(Json(serde_json::json!({ "deleted": n })))
}
