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

/// How a process writes its logs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, fields at the top level (production, CloudWatch).
    Json,
    /// For people at a terminal.
    Pretty,
}

/// The logging flag every process takes, flattened into its arguments. An unknown format is
/// refused at start, not taken for JSON.
#[derive(clap::Args, Debug, Clone)]
pub struct Logging {
    /// json (production) or pretty.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// Installs the global tracing subscriber (on stdout) and the Prometheus recorder (before
/// anything records a metric). `RUST_LOG` overrides the `info` filter.
pub fn init(format: LogFormat) {
    prometheus();
    init_logs(format, std::io::stdout);
}

/// The tracing subscriber alone, writing to `writer`.
pub fn init_logs<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// How often the recorder's upkeep runs. The recorder keeps every histogram sample until
/// upkeep folds it into the buckets; a render does the same, but nothing renders when nobody
/// scrapes `/metrics` (and EMF is off), so without this the samples piled up for good: ~47
/// bytes per request in the gateway. The exporter's own default interval.
pub const METRICS_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder (installed on first use, with its upkeep thread).
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
        spawn_upkeep(handle.clone(), METRICS_UPKEEP_INTERVAL);
        handle
    })
}

/// Runs the recorder's upkeep every `interval` on a thread of its own (not a runtime task:
/// it must run whatever the runtimes do, in every binary, and for as long as the process).
fn spawn_upkeep(handle: PrometheusHandle, interval: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Without it memory grows with every histogram sample until a scrape: say so loudly.
        eprintln!("cannot start the metrics upkeep thread: {e}; histograms grow until scraped");
    }
}

/// The whole `main` of a gRPC service after its arguments are parsed: logging and metrics,
/// the gRPC and admin listeners, the `{name} listening on grpc=… admin=…` line that scripts
/// and tests read to learn the ports, the SIGTERM/SIGINT token, and the EMF emitter
/// alongside `run`.
pub async fn run_grpc_service<E, F>(
    name: &str,
    log_format: LogFormat,
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

/// Declares a gRPC service's arguments, the same for every one: its gRPC and admin listen
/// addresses (each under the service's own documented variable), the logging block, then
/// the service's own `Config` (which flattens the shutdown-grace and AWS-client blocks); and
/// `main`, which runs it through `run_grpc_service`.
///
/// ```ignore
/// telemetry::grpc_main!(
///     name = "predictor", about = "gRPC predictor in front of a SageMaker real-time endpoint",
///     listen = ("PREDICTOR_LISTEN", "0.0.0.0:50051"), admin = ("PREDICTOR_ADMIN_LISTEN", "127.0.0.1:9101"),
///     config = predictor::Config, run = predictor::run,
/// );
/// ```
#[macro_export]
macro_rules! grpc_main {
    (
        name = $name:literal, about = $about:literal,
        listen = ($listen_env:literal, $listen_default:literal),
        admin = ($admin_env:literal, $admin_default:literal),
        config = $config:ty, run = $run:path $(,)?
    ) => {
        #[derive(clap::Parser, Debug)]
        #[command(version, about = $about)]
        struct Args {
            /// gRPC listen address.
            #[arg(long, env = $listen_env, default_value = $listen_default)]
            listen: String,
            /// Admin HTTP (/metrics, /healthz, /readyz) listen address.
            #[arg(long, env = $admin_env, default_value = $admin_default)]
            admin_listen: String,
            #[command(flatten)]
            logging: $crate::Logging,
            #[command(flatten)]
            config: $config,
        }

        #[tokio::main]
        async fn main() -> anyhow::Result<()> {
            let args = <Args as clap::Parser>::parse();
            $crate::run_grpc_service(
                $name,
                args.logging.log_format,
                &args.listen,
                &args.admin_listen,
                |grpc, admin, shutdown| $run(grpc, admin, args.config, shutdown),
            )
            .await
        }
    };
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

type Section = Box<dyn Fn() -> String + Send + Sync>;
static SECTIONS: std::sync::Mutex<Vec<Section>> = std::sync::Mutex::new(Vec::new());

/// Adds Prometheus text rendered from the process's own state at every scrape (and every EMF
/// interval): for series that must disappear with what they describe — a variant that is no
/// longer live — which the recorder cannot do (it never forgets a series).
pub fn add_section(section: impl Fn() -> String + Send + Sync + 'static) {
    SECTIONS
        .lock()
        .expect("metric sections")
        .push(Box::new(section));
}

/// Every metric of the process: the recorder's series, then the sections.
pub fn render() -> String {
    let mut text = prometheus().render();
    for section in SECTIONS.lock().expect("metric sections").iter() {
        text.push_str(&section());
    }
    text
}

/// `/metrics`, `/healthz`, `/readyz`, plus any extra routes a service adds.
pub fn admin_router(readiness: Readiness) -> Router {
    prometheus(); // installed now, before the service records anything
    Router::new()
        .route("/metrics", get(|| std::future::ready(render())))
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

#[cfg(test)]
mod logging_tests {
    use clap::Parser;

    use super::{LogFormat, Logging};

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        logging: Logging,
    }

    #[test]
    fn an_unknown_log_format_is_refused_not_taken_for_json() {
        let parse = |a: &[&str]| Args::try_parse_from(a).map(|a| a.logging.log_format);
        assert_eq!(parse(&["x"]).unwrap(), LogFormat::Json);
        assert_eq!(
            parse(&["x", "--log-format", "pretty"]).unwrap(),
            LogFormat::Pretty
        );
        let e = parse(&["x", "--log-format", "xml"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid value 'xml'") && e.contains("json, pretty"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod section_tests {
    #[test]
    fn sections_are_rendered_from_current_state_at_every_render() {
        let current = std::sync::Arc::new(std::sync::Mutex::new(1));
        let state = std::sync::Arc::clone(&current);
        super::add_section(move || format!("test_section_value {}\n", state.lock().unwrap()));
        assert!(super::render().contains("test_section_value 1\n"));
        *current.lock().unwrap() = 2;
        let text = super::render();
        assert!(text.contains("test_section_value 2\n") && !text.contains("test_section_value 1"));
    }
}

#[cfg(test)]
mod upkeep_tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn rss_mb() -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kb / 1024.0
    }

    /// Millions of histogram samples with nobody rendering: the upkeep thread folds them into
    /// the buckets, so memory stays flat (without it they are all kept: ~34 MB here).
    #[test]
    fn histogram_samples_do_not_pile_up_when_nobody_renders() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.01, 0.1, 1.0])
            .unwrap()
            .build_recorder();
        super::spawn_upkeep(recorder.handle(), std::time::Duration::from_millis(20));
        let before = rss_mb();
        metrics::with_local_recorder(&recorder, || {
            let h = metrics::histogram!("upkeep_test_seconds");
            for round in 0..40 {
                for i in 0..100_000 {
                    h.record(f64::from(i % 1000) / 1e4 + f64::from(round));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        let grown = rss_mb() - before;
        assert!(
            grown < 8.0,
            "4,000,000 samples grew memory by {grown:.1} MB with the upkeep running"
        );
        let text = recorder.handle().render();
        assert!(
            text.contains("upkeep_test_seconds_count 4000000"),
            "every sample is counted: {text}"
        );
    }
}
