//! `sagemaker-local`: a local, wire-compatible SageMaker on one HTTP port. It serves the
//! runtime (`InvokeEndpoint`, with real XGBoost inference), the Feature Store runtime
//! (`PutRecord`, `GetRecord`, `BatchGetRecord`, `DeleteRecord`, with a Parquet offline
//! store) and the control-plane subset for the model registry, models, endpoint configs,
//! endpoints and feature groups. Requests must be SigV4-signed; state lives in redb under
//! the data dir and survives restarts. `docs/aws-protocol.md` holds the wire notes.

pub mod autoscaling;
pub mod control;
pub mod db;
pub mod demo;
pub mod error;
pub mod featurestore;
pub mod runtime;
pub mod sigv4;
pub mod tls;

use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::HeaderValue,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::ListenerExt,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use sigv4::Credentials;

/// Documented defaults (see the README).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";
pub const DEFAULT_ACCESS_KEY_ID: &str = "sagemaker-local";
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "sagemaker-local-secret";
/// How long an endpoint stays Creating/Updating before it switches, by default.
pub const DEFAULT_ENDPOINT_DELAY_MS: u64 = 1000;

#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub region: String,
    pub account_id: String,
    pub credentials: Credentials,
    /// How long endpoints stay `Creating` / `Updating` before the switch.
    pub endpoint_delay: Duration,
    /// How often queued rows are written to the offline store.
    pub offline_flush_interval: Duration,
    /// Operations answered with `AccessDeniedException`, as IAM answers a caller whose
    /// policy lacks them (e.g. `BatchWriteRecord`): how clients' fallbacks are tested.
    pub denied_operations: Vec<String>,
    /// Faults injected into an endpoint's invocations (`name=delay:MS`, `name=error`): how a
    /// slow or failing model is tested.
    pub endpoint_faults: Vec<EndpointFault>,
    /// Folders `file://` model artifacts may be read from (none: only `s3://`, under the
    /// data dir).
    pub file_roots: Vec<PathBuf>,
    /// How large a model artifact may be, and what it may decompress to.
    pub artifact_caps: runtime::artifact::Caps,
}

/// A fault injected into the invocations of one endpoint, or of one of its variants.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointFault {
    pub endpoint: String,
    /// `None`: every variant of the endpoint.
    pub variant: Option<String>,
    /// Every invocation answers this much later.
    pub delay: Option<Duration>,
    /// The share of invocations that fail (ModelError, original status 500): 0 to 1.
    pub error_rate: f64,
}

impl EndpointFault {
    /// Whether this invocation fails.
    pub fn fails_now(&self) -> bool {
        self.error_rate >= 1.0
            || (self.error_rate > 0.0 && rand::Rng::random_bool(&mut rand::rng(), self.error_rate))
    }
}

impl std::str::FromStr for EndpointFault {
    type Err = String;

    /// `ENDPOINT[/VARIANT]=delay:MS`, `=error` (every invocation) or `=error:PERCENT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: expected ENDPOINT[/VARIANT]=delay:MS, ENDPOINT[/VARIANT]=error or ENDPOINT[/VARIANT]=error:PERCENT"
            )
        };
        let (target, fault) = s.split_once('=').ok_or_else(bad)?;
        let (endpoint, variant) = match target.split_once('/') {
            Some((e, v)) => (e, Some(v.to_owned())),
            None => (target, None),
        };
        let (delay, error_rate) = match fault {
            "error" => (None, 1.0),
            f if f.starts_with("error:") => {
                let pct: f64 = f["error:".len()..].parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(bad());
                }
                (None, pct / 100.0)
            }
            f => (
                Some(Duration::from_millis(
                    f.strip_prefix("delay:")
                        .and_then(|ms| ms.parse().ok())
                        .ok_or_else(bad)?,
                )),
                0.0,
            ),
        };
        Ok(EndpointFault {
            endpoint: endpoint.to_owned(),
            variant,
            delay,
            error_rate,
        })
    }
}

impl Settings {
    /// The fault injected into `variant` of `endpoint`: its own, else the endpoint's.
    pub fn fault(&self, endpoint: &str, variant: &str) -> Option<&EndpointFault> {
        let of = |v: Option<&str>| {
            self.endpoint_faults
                .iter()
                .find(|f| f.endpoint == endpoint && f.variant.as_deref() == v)
        };
        of(Some(variant)).or_else(|| of(None))
    }

    /// Defaults for a data dir: the documented key pair, the binary's defaults.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Settings {
            data_dir: data_dir.into(),
            region: DEFAULT_REGION.into(),
            account_id: DEFAULT_ACCOUNT_ID.into(),
            credentials: Credentials {
                access_key_id: DEFAULT_ACCESS_KEY_ID.into(),
                secret_access_key: DEFAULT_SECRET_ACCESS_KEY.into(),
            },
            endpoint_delay: Duration::from_millis(DEFAULT_ENDPOINT_DELAY_MS),
            offline_flush_interval: Duration::from_secs(5),
            denied_operations: Vec::new(),
            endpoint_faults: Vec::new(),
            file_roots: Vec::new(),
            artifact_caps: runtime::artifact::Caps::DEFAULT,
        }
    }

    /// `AccessDeniedException` (403) when `operation` is one of the denied operations.
    pub fn authorize(&self, operation: &str) -> Result<(), error::AwsError> {
        if self.denied_operations.iter().any(|d| d == operation) {
            return Err(error::AwsError::new(
                axum::http::StatusCode::FORBIDDEN,
                "AccessDeniedException",
                format!(
                    "User: arn:aws:iam::{}:user/sagemaker-local is not authorized to perform: sagemaker:{operation} because no identity-based policy allows the sagemaker:{operation} action",
                    self.account_id
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("cannot open the state database: {0}")]
    Db(#[from] db::DbError),
    #[error("start-up failed: {0}")]
    Aws(#[from] error::AwsError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct AppState {
    pub settings: Settings,
    pub db: db::Db,
    pub serving: runtime::Serving,
    pub records: featurestore::writer::Writer,
    pub(crate) offline_lock: Mutex<()>,
    /// For operations that schedule work after they return (endpoint transitions).
    pub(crate) me: Weak<AppState>,
}

impl AppState {
    /// Opens (or creates) the state under `settings.data_dir`.
    pub fn open(settings: Settings) -> Result<Arc<Self>, StartError> {
        std::fs::create_dir_all(&settings.data_dir)
            .map_err(|e| StartError::DataDir(settings.data_dir.clone(), e))?;
        let db = db::Db::open(&settings.data_dir.join("state.redb"))?;
        let records = featurestore::writer::Writer::start(db.clone())?;
        Ok(Arc::new_cyclic(|me| AppState {
            settings,
            db,
            serving: runtime::Serving::default(),
            records,
            offline_lock: Mutex::new(()),
            me: me.clone(),
        }))
    }

    /// `arn:aws:sagemaker:{region}:{account}:{kind}/{name}`, name lowercased as AWS does.
    pub fn arn(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:aws:sagemaker:{}:{}:{kind}/{}",
            self.settings.region,
            self.settings.account_id,
            name.to_lowercase()
        )
    }

    /// Epoch seconds, millisecond precision.
    pub fn now(&self) -> f64 {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (d.as_millis() as f64) / 1000.0
    }

    /// Writes every queued offline row now (also done periodically and at shutdown).
    pub fn flush_offline(&self) -> Result<usize, featurestore::offline::OfflineError> {
        featurestore::offline::flush(self)
    }
}

/// Every route: the three AWS APIs behind SigV4, plus unsigned `/healthz` and `/metrics`.
pub fn router(state: Arc<AppState>) -> Router {
    let creds = Arc::new(state.settings.credentials.clone());
    let aws = Router::new()
        .route("/", post(control::handle))
        .route("/endpoints/{name}/invocations", post(runtime::invoke))
        .route(
            "/FeatureGroup/{name}",
            get(featurestore::get_record)
                .put(featurestore::put_record)
                .delete(featurestore::delete_record),
        )
        .route("/BatchGetRecord", post(featurestore::batch_get_record))
        .route(
            "/BatchWriteRecord",
            post(featurestore::batch_write::batch_write_record),
        )
        .fallback(unknown_operation)
        .layer(middleware::from_fn_with_state(creds, sigv4::verify))
        .with_state(Arc::clone(&state));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| std::future::ready(telemetry::render())))
        .merge(aws)
        .layer(DefaultBodyLimit::max(sigv4::MAX_BODY_BYTES))
        .layer(middleware::from_fn(request_id))
        .layer(TraceLayer::new_for_http())
}

async fn unknown_operation(State(_): State<Arc<AppState>>, request: Request) -> Response {
    error::AwsError::new(
        axum::http::StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!(
            "No operation at {} {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

async fn request_id(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("x-amzn-RequestId", id);
    }
    response
}

/// What the server listens with: plain HTTP, or HTTPS ([`tls`]).
pub enum Listening {
    Plain(TcpListener),
    Tls(tls::TlsListener),
}

impl From<TcpListener> for Listening {
    fn from(listener: TcpListener) -> Self {
        Listening::Plain(listener)
    }
}

/// Serves on `listener` until `shutdown` resolves, then drains requests and writes the
/// offline store's queued rows.
pub async fn run(
    listener: impl Into<Listening>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let resume = Arc::clone(&state);
    tokio::task::spawn_blocking(move || control::resume_transitions(&resume))
        .await
        .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
    let cancel = CancellationToken::new();
    let flusher = tokio::spawn(featurestore::offline::run_flusher(
        Arc::clone(&state),
        state.settings.offline_flush_interval,
        cancel.clone(),
    ));
    let app = router(state);
    match listener.into() {
        Listening::Plain(listener) => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
        Listening::Tls(listener) => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    cancel.cancel();
    let _ = flusher.await;
    Ok(())
}
