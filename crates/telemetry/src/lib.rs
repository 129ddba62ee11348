//! Telemetry for every service: tracing to stdout (JSON lines in production, pretty
//! locally), a process-wide Prometheus recorder, and the small admin HTTP server with
//! `/metrics`, `/healthz` (alive) and `/readyz` (ready to take traffic); optionally the same
//! metrics as CloudWatch EMF lines on stdout (`emf`).

pub mod emf;
mod prometheus_text;

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Installs the global tracing subscriber and the Prometheus recorder (before anything
/// records a metric). `format` is `json` or `pretty`; `RUST_LOG` overrides the `info` filter.
pub fn init(format: &str) {
    prometheus();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if format == "pretty" {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The whole `main` of a gRPC service after its arguments are parsed: logging and metrics,
/// the gRPC and admin listeners, the `{name} listening on grpc=… admin=…` line that scripts
/// and tests read to learn the ports, the SIGTERM/SIGINT token, and the EMF emitter
/// alongside `run`.
pub async fn run_grpc_service<E, F>(
    name: &str,
    log_format: &str,
    listen: &str,
    admin_listen: &str,
    run: impl FnOnce(TcpListener, TcpListener, CancellationToken) -> F,
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: From<std::io::Error>,
{
    init(log_format);
    let grpc = TcpListener::bind(listen).await?;
    let admin = TcpListener::bind(admin_listen).await?;
    println!(
        "{name} listening on grpc={} admin={}",
        grpc.local_addr()?,
        admin.local_addr()?
    );
    let shutdown = shutdown::on_signal();
    let service = run(grpc, admin, shutdown.clone());
    emf::alongside(name, &shutdown, service).await
}

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
    let metrics = prometheus();
    Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
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
