//! A real sagemaker-local (demo world) and the real logger, both on 127.0.0.1:0, configured
//! through the standard AWS environment as in production.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod proxy;

use std::{net::SocketAddr, sync::Arc};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub struct Logger {
    pub grpc: SocketAddr,
    pub admin: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    sagemaker_stop: CancellationToken,
    _dir: tempfile::TempDir,
}

/// sagemaker-local (demo world) in this process on 127.0.0.1:0, its data in `dir`: its URL
/// and the token that stops it.
pub async fn start_sagemaker(dir: &std::path::Path) -> (String, CancellationToken) {
    let state =
        sagemaker_local::AppState::open(sagemaker_local::Settings::new(dir.join("sml"))).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let (sml_url, sagemaker_stop) = start_sagemaker(dir.path()).await;

    // SAFETY: each test binary starts one logger, before its other threads read the
    // environment.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &sml_url);
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
    let config = interaction_logger::Config {
        feature_group: feature_group.into(),
        spool_dir: dir.path().join("spool"),
        spool_root: None,
        logger_id: None,
        adopt_interval_ms: 5000,
        max_records: 1000,
        max_bytes: 1 << 20,
        ship_concurrency: 4,
        ship_linger_ms: linger_ms,
        grace: shutdown::Grace {
            shutdown_grace_secs: 5,
        },
        aws: aws_client::AwsClient::default(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(interaction_logger::run(
        grpc,
        admin,
        config,
        shutdown.clone(),
    ));
    Logger {
        grpc: grpc_addr,
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

/// One HTTP/1.1 request without a body; returns the response body.
pub async fn http(addr: &str, method: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The sum of a Prometheus metric's samples (all label sets).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}
