use super::*;

#[test]
fn grpc_timeouts_parse() {
    let mut m = tonic::metadata::MetadataMap::new();
    m.insert("grpc-timeout", "250m".parse().unwrap());
    assert_eq!(deadline(&m), Some(Duration::from_millis(250)));
    m.insert("grpc-timeout", "3S".parse().unwrap());
    assert_eq!(deadline(&m), Some(Duration::from_secs(3)));
    m.insert("grpc-timeout", "x".parse().unwrap());
    assert_eq!(deadline(&m), None);
    m.insert("grpc-timeout", "99999999H".parse().unwrap());
    assert_eq!(
        deadline(&m),
        Some(Duration::from_secs(99_999_999 * 3600)),
        "the largest valid value"
    );
    // Too many digits (this one overflowed u64 seconds: a panic in debug builds), a sign,
    // no digits: ignored.
    for bad in ["18446744073709551615H", "123456789m", "+5S", "S", "-1m"] {
        m.insert("grpc-timeout", bad.parse().unwrap());
        assert_eq!(deadline(&m), None, "{bad}");
    }
}

/// A logger that takes `delay` per call and answers with what it was given.
struct Slow {
    delay: Duration,
}

#[async_trait]
impl InteractionLogger for Slow {
    async fn log(&self, request: Request<LogRequest>) -> Result<Response<LogResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        let id = request
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let n = request.into_inner().interactions.len();
        match id {
            Some(id) if id == "r-1" && n == 2 => Ok(Response::new(LogResponse::default())),
            other => Err(Status::internal(format!(
                "got {other:?} and {n} interactions"
            ))),
        }
    }
}

fn call(timeout: Option<Duration>) -> Request<LogRequest> {
    let mut request = Request::new(LogRequest {
        interactions: vec![Default::default(), Default::default()],
    });
    request
        .metadata_mut()
        .insert("x-request-id", "r-1".parse().unwrap());
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    request
}

#[tokio::test(start_paused = true)]
async fn in_process_the_deadline_is_the_callers() {
    let logger = local_logger(Arc::new(Slow {
        delay: Duration::from_millis(100),
    }));
    logger
        .log(call(None))
        .await
        .expect("the message and its metadata, as sent");
    logger
        .log(call(Some(Duration::from_millis(200))))
        .await
        .expect("within its deadline");
    let late = logger
        .log(call(Some(Duration::from_millis(50))))
        .await
        .expect_err("past its deadline");
    assert_eq!(
        late.code(),
        tonic::Code::Cancelled,
        "as tonic's server answers"
    );
}

#[tokio::test]
async fn in_process_health_is_every_parts_readiness() {
    let (a, b) = (
        bootstrap::Readiness::default(),
        bootstrap::Readiness::default(),
    );
    let health = Health::Local(vec![a.clone(), b.clone()]);
    let t = Duration::from_millis(10);
    a.set(true);
    assert!(!health.serving(t).await.unwrap(), "one part is not ready");
    b.set(true);
    assert!(health.serving(t).await.unwrap());
    a.set(false);
    assert!(!health.serving(t).await.unwrap());
}
