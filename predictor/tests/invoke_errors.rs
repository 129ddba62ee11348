//! The predictor's error classification and retry policy against SageMaker's real error
//! shapes (docs/aws-protocol.md, section 2), served by a small HTTP peer on 127.0.0.1:0 that
//! answers each InvokeEndpoint with the next scripted response — sagemaker-local cannot be
//! made to throttle or fail on demand. The SDK client is the real one, signing and parsing.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, http::StatusCode, response::IntoResponse, routing::post};
use predictor::{
    breaker::Breaker,
    error::Error,
    invoke::{Attempts, Invoker},
};
use tokio::time::Instant;

type Script = Arc<Mutex<(VecDeque<(u16, &'static str, String)>, usize)>>;

/// (status, error type or "" for success, body), one per call; counts the calls.
async fn peer(responses: Vec<(u16, &'static str, String)>) -> (String, Script) {
    let script: Script = Arc::new(Mutex::new((responses.into(), 0)));
    let state = Arc::clone(&script);
    let app = Router::new().route(
        "/endpoints/{name}/invocations",
        post(move || {
            let state = Arc::clone(&state);
            async move {
                let mut s = state.lock().unwrap();
                s.1 += 1;
                let (status, kind, body) = s.0.pop_front().expect("more calls than scripted");
                let mut response =
                    (StatusCode::from_u16(status).unwrap(), body.clone()).into_response();
                let headers = response.headers_mut();
                if kind.is_empty() {
                    headers.insert("content-type", "text/csv".parse().unwrap());
                    headers.insert("x-Amzn-Invoked-Production-Variant", "v1".parse().unwrap());
                } else {
                    headers.insert("content-type", "application/json".parse().unwrap());
                    headers.insert("x-amzn-ErrorType", kind.parse().unwrap());
                }
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, script)
}

fn error_body(kind: &str, message: &str, extra: &str) -> String {
    format!(r#"{{"__type":"{kind}","message":"{message}","Message":"{message}"{extra}}}"#)
}

fn invoker(url: &str) -> Invoker {
    invoker_with(url, Breaker::new(100, Duration::from_secs(1)))
}

fn invoker_with(url: &str, breaker: Breaker) -> Invoker {
    let conf = aws_sdk_sagemakerruntime::Config::builder()
        .endpoint_url(url)
        .region(aws_sdk_sagemakerruntime::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sagemakerruntime::config::Credentials::new(
            "k", "s", None, None, "test",
        ))
        .behavior_version(aws_sdk_sagemakerruntime::config::BehaviorVersion::latest())
        .retry_config(aws_sdk_sagemakerruntime::config::retry::RetryConfig::disabled())
        .build();
    Invoker::new(
        aws_sdk_sagemakerruntime::Client::from_conf(conf),
        "ep".into(),
        breaker,
    )
}

async fn call(url: &str) -> Result<String, Error> {
    call_with(url, Attempts::Live).await
}

async fn call_with(url: &str, attempts: Attempts) -> Result<String, Error> {
    invoker(url)
        .invoke(
            "1,2".into(),
            "req-1",
            None,
            Instant::now() + Duration::from_secs(5),
            attempts,
        )
        .await
        .map(|a| a.body)
}

fn calls(script: &Script) -> usize {
    script.lock().unwrap().1
}

#[tokio::test]
async fn a_model_error_with_a_4xx_from_the_container_is_the_caller_s_and_not_retried() {
    let (url, script) = peer(vec![(
        424,
        "ModelError",
        error_body(
            "ModelError",
            "Received client error (415)",
            r#","OriginalStatusCode":415,"OriginalMessage":"bad csv""#,
        ),
    )])
    .await;
    let e = call(&url).await.unwrap_err();
    assert!(
        matches!(&e, Error::ModelRejected(m) if m == "bad csv"),
        "{e:?}"
    );
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(calls(&script), 1);
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_until_the_endpoint_answers() {
    let (url, script) = peer(vec![
        (
            400,
            "ThrottlingException",
            error_body("ThrottlingException", "Rate exceeded", ""),
        ),
        (
            503,
            "ServiceUnavailable",
            error_body("ServiceUnavailable", "busy", ""),
        ),
        (
            429,
            "ModelNotReadyException",
            error_body("ModelNotReadyException", "loading", ""),
        ),
        (200, "", "0.25\n".into()),
    ])
    .await;
    assert_eq!(call(&url).await.unwrap(), "0.25\n");
    assert_eq!(calls(&script), 4);
}

#[tokio::test]
async fn retries_stop_at_the_attempt_limit_with_the_last_reason() {
    let busy = || {
        (
            503,
            "ServiceUnavailable",
            error_body("ServiceUnavailable", "busy", ""),
        )
    };
    let (url, script) = peer(vec![busy(), busy(), busy(), busy(), busy()]).await;
    let e = call(&url).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert_eq!(calls(&script), 4, "four attempts in all");
}

#[tokio::test]
async fn a_rollout_candidate_gets_one_attempt_and_leaves_the_breaker_alone() {
    let busy = || {
        (
            503,
            "ServiceUnavailable",
            error_body("ServiceUnavailable", "busy", ""),
        )
    };
    let (url, script) = peer(vec![busy(), busy(), (200, "", "0.5\n".into())]).await;
    // A breaker that opens at the first failure: the candidate's failures must not open it.
    let invoker = invoker_with(&url, Breaker::new(1, Duration::from_secs(60)));
    let deadline = || Instant::now() + Duration::from_secs(5);
    for _ in 0..2 {
        let e = invoker
            .invoke(
                "1,2".into(),
                "req-1",
                Some("v2"),
                deadline(),
                Attempts::Once,
            )
            .await
            .err()
            .expect("the candidate failed");
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    }
    assert_eq!(calls(&script), 2, "one attempt each, no retries");
    let live = invoker
        .invoke(
            "1,2".into(),
            "req-1",
            Some("v1"),
            deadline(),
            Attempts::Live,
        )
        .await
        .map_err(|e| format!("{e:?}"))
        .expect("the circuit stayed closed");
    assert_eq!(live.body, "0.5\n");
}

#[tokio::test]
async fn a_missing_endpoint_is_unavailable_at_once() {
    let (url, script) = peer(vec![(
        400,
        "ValidationError",
        error_body("ValidationError", "Endpoint ep of account 1 not found.", ""),
    )])
    .await;
    let e = call(&url).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert_eq!(calls(&script), 1);
}

#[tokio::test]
async fn a_missing_variant_is_told_apart_from_a_missing_endpoint() {
    let (url, script) = peer(vec![(
        400,
        "ValidationError",
        error_body(
            "ValidationError",
            "The variant(s) \\\"[v2]\\\" are not found for endpoint ep.",
            "",
        ),
    )])
    .await;
    let e = call(&url).await.unwrap_err();
    assert!(matches!(e, Error::NoSuchVariant(_)), "{e:?}");
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert_eq!(calls(&script), 1);
}

#[tokio::test]
async fn another_refusal_is_internal_and_opaque_to_the_caller() {
    let (url, _) = peer(vec![(
        400,
        "ValidationError",
        error_body("ValidationError", "Inference id too long", ""),
    )])
    .await;
    let e = call(&url).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    let status = tonic::Status::from(e);
    assert_eq!(
        status.message(),
        "internal error",
        "no internals to the caller"
    );
}
