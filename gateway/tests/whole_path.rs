//! Every service started through its own `run` on 127.0.0.1:0, in this process, against a
//! real sagemaker-local (the demo world): the watcher, the predictor following it, the
//! logger, and the gateway in front. One prediction over real HTTP comes back with the demo
//! model's score for that row and version 1, the watcher says in sync, and on shutdown every
//! `run` returns `Ok` with nothing left behind.

use std::{sync::Arc, time::Duration};

use clap::Parser;
use proto::registry::v1::{GetStatusRequest, registry_watcher_client::RegistryWatcherClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Flags<C: clap::Args> {
    #[command(flatten)]
    config: C,
}

fn config<C: clap::Args>(args: &[&str]) -> C {
    Flags::<C>::try_parse_from(std::iter::once("service").chain(args.iter().copied()))
        .expect("flags")
        .config
}

async fn bind() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// One HTTP/1.1 exchange: the status and the body.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prediction_crosses_every_service_started_through_its_run() {
    let dir = tempfile::tempdir().unwrap();
    // sagemaker-local with the demo world.
    let mut settings = sagemaker_local::Settings::new(dir.path().join("sml"));
    settings.endpoint_delay = Duration::from_millis(100);
    let state = sagemaker_local::AppState::open(settings).unwrap();
    let boot = Arc::clone(&state);
    tokio::task::spawn_blocking(move || sagemaker_local::demo::bootstrap(&boot))
        .await
        .unwrap()
        .unwrap();
    let (sml, sml_addr) = bind().await;
    let sml_stop = CancellationToken::new();
    let stop = sml_stop.clone();
    let sagemaker = tokio::spawn(sagemaker_local::run(sml, state, async move {
        stop.cancelled().await
    }));
    // SAFETY: the one test of this binary sets the environment before anything reads it.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://{sml_addr}"));
        std::env::set_var("AWS_ACCESS_KEY_ID", sagemaker_local::DEFAULT_ACCESS_KEY_ID);
        std::env::set_var(
            "AWS_SECRET_ACCESS_KEY",
            sagemaker_local::DEFAULT_SECRET_ACCESS_KEY,
        );
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    telemetry::prometheus();
    let shutdown = CancellationToken::new();

    let (w_grpc, w_addr) = bind().await;
    let (w_admin, _) = bind().await;
    let watcher = tokio::spawn(registry_watcher::run(
        w_grpc,
        w_admin,
        config(&["--poll-ms", "200"]),
        shutdown.child_token(),
    ));
    let watcher_url = format!("http://{w_addr}");

    let (p_grpc, p_addr) = bind().await;
    let (p_admin, _) = bind().await;
    let predictor = tokio::spawn(predictor::run(
        p_grpc,
        p_admin,
        config(&["--registry-watcher-url", &watcher_url]),
        shutdown.child_token(),
    ));

    let (l_grpc, l_addr) = bind().await;
    let (l_admin, _) = bind().await;
    let spool = dir.path().join("spool");
    let logger = tokio::spawn(interaction_logger::run(
        l_grpc,
        l_admin,
        config(&["--spool-dir", spool.to_str().unwrap()]),
        shutdown.child_token(),
    ));

    let (g_http, g_addr) = bind().await;
    let gateway_shutdown = shutdown.child_token();
    let app = gateway::App::new(
        config(&[
            "--predictor-url",
            &format!("http://{p_addr}"),
            "--logger-url",
            &format!("http://{l_addr}"),
            "--registry-watcher-url",
            &watcher_url,
            "--log-mode",
            "strict",
        ]),
        &gateway_shutdown,
    )
    .unwrap();
    let (g_grpc, _) = bind().await;
    let gateway = tokio::spawn(gateway::run(g_http, Some(g_grpc), app, gateway_shutdown));

    // Ready once the predictor serves; the version once the watcher has polled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let row = [63.0f32, 40.0, 29.01, 0.0, 4.0, 0.0, 2.0, 1.0];
    let body = format!(
        r#"{{"instances": [[{}]]}}"#,
        row.map(|x| x.to_string()).join(", ")
    );
    let answer = loop {
        let (ready, _) = http(&g_addr, "GET", "/readyz", "").await;
        if ready == 200 {
            let (status, text) = http(&g_addr, "POST", "/v1/predict", &body).await;
            assert_eq!(status, 200, "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["model"]["model_package_version"] == 1 {
                break v;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stack did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let model =
        xgboost_json::Model::from_json(include_bytes!("../../demo/model/xgboost-model.json"))
            .unwrap();
    let expected = model.predict(&row)[0];
    let got = answer["predictions"][0]["probability"].as_f64().unwrap();
    assert!(
        (got - f64::from(expected)).abs() < 1e-6,
        "{got} != {expected}"
    );
    assert!(
        answer["predictions"][0]["interaction_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let status = RegistryWatcherClient::connect(watcher_url)
        .await
        .unwrap()
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.in_sync, "{status:?}");

    shutdown.cancel();
    for (name, task) in [
        ("gateway", gateway),
        ("predictor", predictor),
        ("logger", logger),
        ("watcher", watcher),
    ] {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("{name} did not stop"))
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    sml_stop.cancel();
    sagemaker.await.unwrap().unwrap();
}
