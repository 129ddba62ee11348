//! The gateway's HTTP routes, driven through the router itself (`oneshot`, no socket): status
//! codes, problem documents and headers for everything the gateway answers on its own — the
//! upstreams are addresses nothing listens on, so a route that needed them would fail here.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use clap::Parser;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    config: gateway::Config,
}

/// A gateway whose predictor and logger are a closed port, with `extra` flags.
fn app(extra: &[&str]) -> axum::Router {
    let mut args = vec![
        "gateway",
        "--predictor-url",
        "http://127.0.0.1:1",
        "--logger-url",
        "http://127.0.0.1:1",
    ];
    args.extend_from_slice(extra);
    let config = Flags::try_parse_from(args).expect("flags").config;
    let app = gateway::App::new(config, &CancellationToken::new()).expect("app");
    gateway::router(Arc::clone(&app))
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: serde_json::Value,
    text: String,
}

async fn call(router: axum::Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

/// A problem document (RFC 9457) with this status.
fn assert_problem(a: &Answer, status: StatusCode) {
    assert_eq!(a.status, status, "{}", a.text);
    assert_eq!(
        a.headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{}",
        a.text
    );
    assert_eq!(a.body["status"], status.as_u16(), "{}", a.text);
    assert_eq!(a.body["type"], "about:blank");
    assert!(
        a.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{}",
        a.text
    );
}

#[tokio::test]
async fn health_says_open_and_every_answer_carries_the_protections_and_a_request_id() {
    let a = call(app(&[]), get("/healthz")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text, "ok (open: no API keys configured)");
    assert!(
        a.headers.contains_key("content-security-policy"),
        "{:?}",
        a.headers
    );
    assert_eq!(a.headers["x-content-type-options"], "nosniff");
    assert!(!a.headers["x-request-id"].is_empty());
    // A caller's request id is kept.
    let a = call(
        app(&[]),
        Request::get("/healthz")
            .header("x-request-id", "req-42")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.headers["x-request-id"], "req-42");
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    assert_problem(
        &call(app(&[]), get("/v9/nothing")).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn not_ready_while_the_predictor_is_unreachable() {
    let a = call(app(&[]), get("/readyz")).await;
    assert_problem(&a, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body["detail"].as_str().unwrap().contains("predictor"));
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_predicted() {
    // Malformed JSON.
    let a = call(
        app(&[]),
        post("/v1/predict", "application/json", "{\"instances\": [[1, 2"),
    )
    .await;
    assert_problem(&a, StatusCode::BAD_REQUEST);
    // The wrong width, with the field at fault named.
    let a = call(
        app(&[]),
        post(
            "/v1/predict",
            "application/json",
            r#"{"instances": [[1, 2, 3]]}"#,
        ),
    )
    .await;
    assert_problem(&a, StatusCode::BAD_REQUEST);
    assert!(
        a.body["field"]
            .as_str()
            .is_some_and(|f| f.starts_with("instances")),
        "{}",
        a.text
    );
    // A media type the API does not take.
    let a = call(app(&[]), post("/v1/predict", "application/xml", "<x/>")).await;
    assert_problem(&a, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A body over the limit.
    let a = call(
        app(&["--max-body-bytes", "64"]),
        post("/v1/predict", "application/json", vec![b' '; 1000]),
    )
    .await;
    assert_problem(&a, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn with_keys_a_call_without_one_is_401_with_the_challenge() {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(b"a-key-for-the-test")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let keys = format!(r#"{{"keys": [{{"name": "team-a", "sha256": "{hash}"}}]}}"#);
    let router = app(&["--api-keys", &keys]);
    let a = call(router.clone(), get("/healthz")).await;
    assert_eq!(a.text, "ok (API keys required)");
    let a = call(
        router,
        post("/v1/predict", "application/json", r#"{"instances": [[1]]}"#),
    )
    .await;
    assert_problem(&a, StatusCode::UNAUTHORIZED);
    assert!(
        a.headers.contains_key(header::WWW_AUTHENTICATE),
        "{:?}",
        a.headers
    );
}

#[tokio::test]
async fn the_model_route_and_the_openapi_document_name_the_features() {
    let a = call(app(&[]), get("/v1/model")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.body["features"].as_array().map(Vec::len),
        Some(8),
        "{}",
        a.text
    );
    let a = call(app(&[]), get("/openapi.json")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.body["components"]["schemas"]["Features"]["x-feature-order"][0],
        "age"
    );
}

#[tokio::test]
async fn the_open_inference_protocol_routes_answer_with_its_shapes_and_errors() {
    let a = call(app(&[]), get("/v2/health/live")).await;
    assert_eq!(
        (a.status, a.body["live"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let a = call(app(&[]), get("/v2")).await;
    assert_eq!(a.body["extensions"][0], "binary_tensor_data", "{}", a.text);
    let a = call(app(&[]), get("/v2/models/my-mlops-prod-endpoint")).await;
    assert_eq!(a.body["inputs"][0]["shape"][1], 8, "{}", a.text);
    // Errors are {"error": ...}, whichever layer answers: the handler, readiness, the body rules.
    for (request, status) in [
        (get("/v2/models/other"), StatusCode::NOT_FOUND),
        (get("/v2/health/ready"), StatusCode::SERVICE_UNAVAILABLE),
        (
            post(
                "/v2/models/my-mlops-prod-endpoint/infer",
                "application/json",
                "[1",
            ),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let a = call(app(&["--max-body-bytes", "64"]), request).await;
        assert_eq!(a.status, status, "{}", a.text);
        assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
        let keys: Vec<_> = a.body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["error"], "{}", a.text);
    }
    let a = call(
        app(&["--max-body-bytes", "64"]),
        post(
            "/v2/models/my-mlops-prod-endpoint/infer",
            "",
            vec![b' '; 1000],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.body["error"].as_str().is_some(), "{}", a.text);
}
