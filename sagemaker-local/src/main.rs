use std::{path::PathBuf, time::Duration};

use clap::Parser;
use sagemaker_local::{AppState, Credentials, Settings};

allocator::install!();

/// A local, wire-compatible SageMaker (runtime, Feature Store runtime, registry and
/// endpoints) with real XGBoost inference and durable state.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SAGEMAKER_LOCAL_LISTEN", default_value = sagemaker_local::DEFAULT_LISTEN)]
    listen: String,
    /// Where state (redb), model artifacts (s3/) and the offline store live.
    #[arg(
        long,
        env = "SAGEMAKER_LOCAL_DATA_DIR",
        default_value = ".data/sagemaker-local"
    )]
    data_dir: PathBuf,
    /// Region used in ARNs.
    #[arg(long, env = "AWS_REGION", default_value = sagemaker_local::DEFAULT_REGION)]
    region: String,
    /// Account id used in ARNs.
    #[arg(long, env = "SAGEMAKER_LOCAL_ACCOUNT_ID", default_value = sagemaker_local::DEFAULT_ACCOUNT_ID)]
    account_id: String,
    /// The access key id requests must be signed with.
    #[arg(long, env = "SAGEMAKER_LOCAL_ACCESS_KEY_ID", default_value = sagemaker_local::DEFAULT_ACCESS_KEY_ID)]
    access_key_id: String,
    /// The secret access key requests must be signed with.
    #[arg(long, env = "SAGEMAKER_LOCAL_SECRET_ACCESS_KEY", default_value = sagemaker_local::DEFAULT_SECRET_ACCESS_KEY, hide_default_value = true)]
    secret_access_key: secret::Secret,
    /// Milliseconds an endpoint stays Creating/Updating before it switches.
    #[arg(
        long,
        env = "SAGEMAKER_LOCAL_ENDPOINT_DELAY_MS",
        default_value_t = sagemaker_local::DEFAULT_ENDPOINT_DELAY_MS
    )]
    endpoint_delay_ms: u64,
    /// Milliseconds between writes of queued rows to the offline store.
    #[arg(long, env = "SAGEMAKER_LOCAL_OFFLINE_FLUSH_MS", default_value_t = 5000)]
    offline_flush_ms: u64,
    /// Operations to refuse with AccessDeniedException, comma-separated (e.g.
    /// `BatchWriteRecord`), as IAM refuses a narrower policy.
    #[arg(long, env = "SAGEMAKER_LOCAL_DENY_OPERATIONS", value_delimiter = ',')]
    deny_operations: Vec<String>,
    /// Faults injected into endpoints' invocations, comma-separated: `ENDPOINT=delay:MS` (every
    /// invocation answers that much later) or `ENDPOINT=error` (every invocation is a
    /// ModelError): how callers are tested against a slow or failing model.
    #[arg(long, env = "SAGEMAKER_LOCAL_ENDPOINT_FAULTS", value_delimiter = ',')]
    endpoint_faults: Vec<sagemaker_local::EndpointFault>,
    /// Folders `file://` model artifacts may be read from, comma-separated (absolute paths).
    /// None by default: artifacts are `s3://` URLs, read from the data dir's `s3/` folder.
    #[arg(long, env = "SAGEMAKER_LOCAL_FILE_ROOTS", value_delimiter = ',')]
    file_roots: Vec<PathBuf>,
    /// The largest model artifact read, in MiB (as stored).
    #[arg(long, env = "SAGEMAKER_LOCAL_MAX_ARTIFACT_MB", default_value_t = sagemaker_local::runtime::artifact::Caps::DEFAULT.artifact_bytes >> 20)]
    max_artifact_mb: u64,
    /// The most a model artifact may decompress to, in MiB.
    #[arg(long, env = "SAGEMAKER_LOCAL_MAX_MODEL_MB", default_value_t = sagemaker_local::runtime::artifact::Caps::DEFAULT.model_bytes >> 20)]
    max_model_mb: u64,
    /// Create the demo world (registry, endpoint, feature groups) if it is missing.
    #[arg(long, env = "SAGEMAKER_LOCAL_DEMO")]
    demo: bool,
    /// HTTPS: the server's certificate chain (PEM), e.g. `scripts/dev-ca`'s
    /// `sagemaker-local.crt`; with `SAGEMAKER_LOCAL_TLS_KEY`. Unset: plain HTTP.
    #[arg(long, env = "SAGEMAKER_LOCAL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// HTTPS: the certificate's private key (PEM).
    #[arg(long, env = "SAGEMAKER_LOCAL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    logging: telemetry::Logging,
    #[command(flatten)]
    grace: bootstrap::shutdown::Grace,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs on stderr: stdout carries only the `listening on` line scripts read.
    telemetry::init_logs(args.logging.log_format, std::io::stderr);
    telemetry::prometheus(); // before anything records a metric
    let settings = Settings {
        data_dir: args.data_dir,
        region: args.region,
        account_id: args.account_id,
        credentials: Credentials {
            access_key_id: args.access_key_id,
            secret_access_key: args.secret_access_key.expose().to_owned(),
        },
        endpoint_delay: Duration::from_millis(args.endpoint_delay_ms),
        offline_flush_interval: Duration::from_millis(args.offline_flush_ms),
        denied_operations: args.deny_operations,
        endpoint_faults: args.endpoint_faults,
        file_roots: args.file_roots,
        artifact_caps: sagemaker_local::runtime::artifact::Caps {
            artifact_bytes: args.max_artifact_mb << 20,
            model_bytes: args.max_model_mb << 20,
        },
    };
    let state = AppState::open(settings)?;
    if args.demo {
        let s = state.clone();
        tokio::task::spawn_blocking(move || sagemaker_local::demo::bootstrap(&s)).await??;
    }
    let tcp = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = tcp.local_addr()?;
    let (listener, scheme) = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = sagemaker_local::tls::acceptor(cert, key)?;
            let tls = sagemaker_local::tls::TlsListener::new(tcp, acceptor)?;
            (sagemaker_local::Listening::Tls(tls), "https")
        }
        _ => (tcp.into(), "http"),
    };
    tracing::info!(%addr, scheme, data_dir = %state.settings.data_dir.display(), demo = args.demo, "sagemaker-local listening");
    // Tests and scripts read this line to learn the port when listening on :0.
    println!("sagemaker-local listening on {scheme}://{addr}");
    let shutdown = bootstrap::shutdown::on_signal();
    let signal = shutdown.clone();
    let serving = sagemaker_local::run(listener, state, async move { signal.cancelled().await });
    // Drains in-flight requests and writes queued offline rows, within the grace period
    // (rows not written by then stay queued, durably, for the next start).
    match bootstrap::shutdown::within_grace(&shutdown, args.grace.duration(), serving).await {
        Some(served) => served?,
        None => tracing::warn!("grace period over; exiting with work left for the next start"),
    }
    tracing::info!("sagemaker-local stopped");
    Ok(())
}
