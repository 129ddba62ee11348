//! Records the Feature Store refuses as invalid become dead letters, with the reason, visible in
//! metrics, listed and replayed over the admin port. Real sagemaker-local and the real logger,
//! both on 127.0.0.1:0; the logger writes to the demo's *training* feature group, whose schema
//! has none of the interaction features, so every PutRecord is a ValidationError.

use std::{sync::Arc, time::Duration};

use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn http(addr: &str, method: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_are_dead_lettered_listed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let state =
        sagemaker_local::AppState::open(sagemaker_local::Settings::new(dir.path().join("sml")))
            .unwrap();
    let boot = Arc::clone(&state);
    tokio::task::spawn_blocking(move || sagemaker_local::demo::bootstrap(&boot))
        .await
        .unwrap()
        .unwrap();
    let sml = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sml_url = format!("http://{}", sml.local_addr().unwrap());
    let sml_stop = CancellationToken::new();
    let stop = sml_stop.clone();
    tokio::spawn(sagemaker_local::run(sml, state, async move {
        stop.cancelled().await
    }));

    // The standard AWS environment, as the service reads it in production.
    // SAFETY: set before any other thread of this test binary reads the environment.
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
        feature_group: "my-mlops-feature-group-v2".into(),
        spool_dir: dir.path().join("spool"),
        max_records: 1000,
        max_bytes: 1 << 20,
        ship_concurrency: 4,
        shutdown_grace_secs: 5,
    };
    let shutdown = CancellationToken::new();
    let logger = tokio::spawn(interaction_logger::run(
        grpc,
        admin,
        config,
        shutdown.clone(),
    ));

    let mut client = InteractionLoggerClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap();
    let interaction = Interaction {
        features_csv: "1,2,3".into(),
        prediction: 0.5,
        ..Default::default()
    };
    let ids = client
        .log(LogRequest {
            interactions: vec![interaction],
        })
        .await
        .unwrap()
        .into_inner()
        .interaction_ids;
    assert_eq!(ids.len(), 1);

    let mut listed = String::new();
    for _ in 0..100 {
        listed = http(&admin_addr, "GET", "/dead-letters").await;
        if listed.contains(&ids[0]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letters: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(letters.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(letters[0]["interaction_id"], ids[0]);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not defined"),
        "{listed}"
    );
    let metrics = http(&admin_addr, "GET", "/metrics").await;
    assert_eq!(
        metric(&metrics, "logger_dead_lettered_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "logger_spool_depth"), 0.0);

    // Replay: queued again with the same id; still refused, so dead-lettered a second time.
    let replayed = http(&admin_addr, "POST", "/dead-letters/replay").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&replayed).unwrap()["replayed"],
        1
    );
    for _ in 0..100 {
        if metric(
            &http(&admin_addr, "GET", "/metrics").await,
            "logger_dead_lettered_total",
        ) == 2.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letters: serde_json::Value =
        serde_json::from_str(&http(&admin_addr, "GET", "/dead-letters").await).unwrap();
    assert_eq!(letters.as_array().unwrap().len(), 1);
    assert_eq!(
        letters[0]["interaction_id"], ids[0],
        "the same interaction, not a copy"
    );

    // Bad input is refused at the door.
    let bad = Interaction {
        event_time: "yesterday".into(),
        ..Default::default()
    };
    let err = client
        .log(LogRequest {
            interactions: vec![bad],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        client
            .log(LogRequest {
                interactions: vec![]
            })
            .await
            .is_err()
    );

    shutdown.cancel();
    logger.await.unwrap().unwrap();
    sml_stop.cancel();
}
