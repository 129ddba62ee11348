//! A real sagemaker-local (demo world) and the real logger, both on 127.0.0.1:0, configured
//! through the standard AWS environment as in production.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod proxy;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use aws_sdk_sagemakerfeaturestoreruntime::types::BatchGetRecordIdentifier;
use proto::interaction::v1::Interaction;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub struct Logger {
    pub grpc: SocketAddr,
    /// sagemaker-local's URL.
    pub store: String,
    pub admin: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    sagemaker_stop: CancellationToken,
    _dir: tempfile::TempDir,
}

/// sagemaker-local (demo world) in this process on 127.0.0.1:0, its data in `dir`: its URL
/// and the token that stops it.
pub async fn start_sagemaker(dir: &std::path::Path) -> (String, CancellationToken) {
    start_sagemaker_with(dir, |_| {}).await
}

/// [`start_sagemaker`] with its settings changed by `configure`.
pub async fn start_sagemaker_with(
    dir: &std::path::Path,
    configure: impl FnOnce(&mut sagemaker_local::Settings),
) -> (String, CancellationToken) {
    let mut settings = sagemaker_local::Settings::new(dir.join("sml"));
    configure(&mut settings);
    let state = sagemaker_local::AppState::open(settings).unwrap();
    let boot = Arc::clone(&state);
    tokio::task::spawn_blocking(move || sagemaker_local::demo::bootstrap(&boot))
        .await
        .unwrap()
        .unwrap();
    let sml = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sml_url = format!("http://{}", sml.local_addr().unwrap());
    let sagemaker_stop = CancellationToken::new();
    let stop = sagemaker_stop.clone();
    tokio::spawn(sagemaker_local::run(sml, state, async move {
        stop.cancelled().await
    }));
    (sml_url, sagemaker_stop)
}

/// Starts sagemaker-local and a logger shipping to `feature_group`, lingering `linger_ms`.
pub async fn start(feature_group: &str, linger_ms: u64) -> Logger {
    start_with(feature_group, linger_ms, |_| {}).await
}

/// [`start`], sagemaker-local's settings changed by `configure`.
pub async fn start_with(
    feature_group: &str,
    linger_ms: u64,
    configure: impl FnOnce(&mut sagemaker_local::Settings),
) -> Logger {
    let dir = tempfile::tempdir().unwrap();
    let (sml_url, sagemaker_stop) = start_sagemaker_with(dir.path(), configure).await;
    let spool = dir.path().join("spool");
    spawn_logger(dir, sml_url.clone(), sml_url, sagemaker_stop, |c| {
        c.feature_group = feature_group.into();
        c.ship_linger_ms = linger_ms;
        c.spool_dir = spool;
    })
    .await
}

/// A logger whose AWS calls go to `aws_url` (sagemaker-local, or a proxy in front of it at
/// `store`), its config changed by `configure`; it owns `dir` and stops sagemaker-local with
/// `sagemaker_stop`.
pub async fn spawn_logger(
    dir: tempfile::TempDir,
    store: String,
    aws_url: String,
    sagemaker_stop: CancellationToken,
    configure: impl FnOnce(&mut interaction_logger::Config),
) -> Logger {
    // SAFETY: each test binary runs one logger at a time, and sets the environment before
    // that logger starts reading it.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &aws_url);
        std::env::set_var("AWS_ACCESS_KEY_ID", sagemaker_local::DEFAULT_ACCESS_KEY_ID);
        std::env::set_var(
            "AWS_SECRET_ACCESS_KEY",
            sagemaker_local::DEFAULT_SECRET_ACCESS_KEY,
        );
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, admin_addr) = (
        grpc.local_addr().unwrap(),
        admin.local_addr().unwrap().to_string(),
    );
    let mut config = interaction_logger::Config {
        feature_group: "my-mlops-user-interactions-v1".into(),
        spool_dir: dir.path().join("spool"),
        spool_root: None,
        logger_id: None,
        adopt_interval_ms: 5000,
        max_records: 1000,
        max_bytes: 1 << 20,
        dead_letter_max_records: 1000,
        dead_letter_max_bytes: 1 << 20,
        spool_recover_secs: 300,
        ship_concurrency: 4,
        ship_batch_write: true,
        admin_token: Some(ADMIN_TOKEN.into()),
        drift: Default::default(),
        tls: Default::default(),
        ship_linger_ms: 20,
        grace: bootstrap::shutdown::Grace {
            shutdown_grace_secs: 5,
        },
        aws: bootstrap::aws::AwsClient::default(),
    };
    configure(&mut config);
    // As the binary's main does first: the recorder is there before anything counts.
    telemetry::prometheus();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(interaction_logger::run(
        grpc,
        admin,
        config,
        shutdown.clone(),
    ));
    Logger {
        grpc: grpc_addr,
        store,
        admin: admin_addr,
        shutdown,
        task,
        sagemaker_stop,
        _dir: dir,
    }
}

impl Logger {
    /// Stops the logger (it must exit cleanly), then sagemaker-local.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.sagemaker_stop.cancel();
    }
}

/// The admin token the test loggers are given.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// One HTTP/1.1 request without a body, with the admin token; returns the response body.
pub async fn http(addr: &str, method: &str, path: &str) -> String {
    http_as(addr, method, path, Some(ADMIN_TOKEN)).await.1
}

/// One HTTP/1.1 request without a body, with `token` as the bearer token if any; returns the
/// status code and the body.
pub async fn http_as(addr: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The sum of a Prometheus metric's samples (all label sets).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the Feature Store holds every acknowledged interaction, then checks each one
/// is exactly what was acknowledged (its own id, event time, features and score).
pub async fn wait_delivered(url: &str, group: &str, acked: &BTreeMap<String, Interaction>) {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(
            aws_sdk_sagemakerfeaturestoreruntime::config::Credentials::new(
                sagemaker_local::DEFAULT_ACCESS_KEY_ID,
                sagemaker_local::DEFAULT_SECRET_ACCESS_KEY,
                None,
                None,
                "test",
            ),
        )
        .load()
        .await;
    let fs = aws_sdk_sagemakerfeaturestoreruntime::Client::new(&conf);
    let ids: Vec<String> = acked.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found: HashMap<String, HashMap<String, String>> = HashMap::new();
    while found.len() < ids.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged interactions arrived",
            found.len(),
            ids.len()
        );
        for chunk in ids.chunks(100) {
            let out = fs
                .batch_get_record()
                .identifiers(
                    BatchGetRecordIdentifier::builder()
                        .feature_group_name(group)
                        .set_record_identifiers_value_as_string(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .unwrap();
            for r in out.records() {
                let values = r
                    .record()
                    .iter()
                    .map(|f| {
                        (
                            f.feature_name().unwrap_or_default().to_owned(),
                            f.value_as_string().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                found.insert(
                    r.record_identifier_value_as_string()
                        .unwrap_or_default()
                        .to_owned(),
                    values,
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (id, sent) in acked {
        let got = &found[id];
        assert_eq!(got["event_time"], sent.event_time, "{id}");
        assert_eq!(got["features_csv"], sent.features_csv, "{id}");
        assert_eq!(
            got["prediction"].parse::<f64>().unwrap(),
            sent.prediction,
            "{id}"
        );
    }
}
