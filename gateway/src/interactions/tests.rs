//! The recorder against a real tonic logger that can be down, refuse, or take everything.
use super::*;
use proto::interaction::v1::{
    LogRequest, LogResponse,
    interaction_logger_server::{InteractionLogger, InteractionLoggerServer},
};
use std::sync::{Arc, atomic::AtomicUsize};

/// A logger that answers UNAVAILABLE while `down`, and counts every call it gets.
#[derive(Clone, Default)]
struct Logger(Arc<LoggerState>);

#[derive(Default)]
struct LoggerState {
    down: AtomicBool,
    calls: AtomicUsize,
    taken: Mutex<Vec<String>>,
    /// How long each call takes.
    delay_ms: std::sync::atomic::AtomicU64,
    /// Calls larger than this (encoded) are refused OUT_OF_RANGE, as a server refuses a
    /// message over its limit (0: no limit).
    max_call_bytes: AtomicUsize,
}

#[tonic::async_trait]
impl InteractionLogger for Logger {
    async fn log(
        &self,
        request: tonic::Request<LogRequest>,
    ) -> Result<tonic::Response<LogResponse>, tonic::Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.0.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.0.down.load(Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("down for the test"));
        }
        let limit = self.0.max_call_bytes.load(Ordering::SeqCst);
        let size = prost::Message::encoded_len(request.get_ref());
        if limit > 0 && size > limit {
            return Err(tonic::Status::out_of_range(format!(
                "decoded message length too large: {size} > {limit}"
            )));
        }
        let ids: Vec<String> = request
            .into_inner()
            .interactions
            .into_iter()
            .map(|i| i.interaction_id)
            .collect();
        // as the real logger does: too many in one call, or an invalid interaction
        if ids.len() > proto::MAX_INTERACTIONS_PER_LOG {
            return Err(tonic::Status::invalid_argument("too many interactions"));
        }
        if ids.iter().any(|i| i.starts_with("bad")) {
            return Err(tonic::Status::invalid_argument("a non-finite prediction"));
        }
        self.0.taken.lock().unwrap().extend(ids.iter().cloned());
        Ok(tonic::Response::new(LogResponse {
            interaction_ids: ids,
        }))
    }
}

fn interaction(id: usize) -> Vec<Interaction> {
    vec![Interaction {
        interaction_id: format!("i{id}"),
        ..Default::default()
    }]
}

/// A real tonic server running `Logger`, down at first, and a recorder in `mode` calling it.
async fn down_logger(mode: LogMode) -> (Arc<LoggerState>, Arc<Recorder>) {
    logger_with(mode, None, true).await
}

/// A real tonic server running `Logger` (down at first when `down`), and a recorder in `mode`
/// calling it with `lanes` (None: no coalescing).
async fn logger_with(
    mode: LogMode,
    lanes: Option<usize>,
    down: bool,
) -> (Arc<LoggerState>, Arc<Recorder>) {
    let server_side = Logger::default();
    let logger = Arc::clone(&server_side.0);
    logger.down.store(down, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(InteractionLoggerServer::new(server_side))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect_lazy();
    let recorder = Arc::new(Recorder::new(
        hops::remote_logger(channel),
        mode,
        1000,
        Duration::from_secs(1),
        lanes,
    ));
    (logger, recorder)
}

/// Starts the retry loop and waits until the buffer is delivered and the logger marked up;
/// returns what stops the loop, and the loop.
async fn retry_until_delivered(
    recorder: &Arc<Recorder>,
) -> Result<(CancellationToken, tokio::task::JoinHandle<()>), tokio::time::error::Elapsed> {
    let stop = CancellationToken::new();
    let retry = tokio::spawn({
        let (recorder, stop) = (Arc::clone(recorder), stop.clone());
        async move { recorder.retry_buffered(stop).await }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while recorder.buffered() > 0 || recorder.logger_down.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    Ok((stop, retry))
}

#[tokio::test]
async fn a_down_logger_is_called_once_not_per_prediction_and_gets_everything_back() {
    let (logger, recorder) = down_logger(LogMode::Buffered).await;
    // No retry loop yet: only the direct path talks to the logger.
    for i in 0..50 {
        recorder.record(interaction(i), "test").await.unwrap();
    }
    assert_eq!(
        logger.calls.load(Ordering::SeqCst),
        1,
        "one failed call marks the logger down"
    );
    assert_eq!(recorder.buffered(), 50);

    // The logger comes back: the retry loop delivers the buffer, then the direct path resumes.
    logger.down.store(false, Ordering::SeqCst);
    let (stop, retry) = retry_until_delivered(&recorder)
        .await
        .expect("the buffer was delivered and the logger marked up");
    let calls = logger.calls.load(Ordering::SeqCst);
    recorder.record(interaction(50), "test").await.unwrap();
    assert_eq!(
        logger.calls.load(Ordering::SeqCst),
        calls + 1,
        "direct path again"
    );
    assert_eq!(recorder.buffered(), 0);
    let taken = logger.taken.lock().unwrap().clone();
    let want: Vec<String> = (0..=50).map(|i| format!("i{i}")).collect();
    assert_eq!(taken, want, "every interaction, once, in order");
    stop.cancel();
    retry.await.unwrap();
}

#[tokio::test]
async fn strict_mode_refuses_instead_of_buffering_and_probes_a_down_logger() {
    let (logger, recorder) = down_logger(LogMode::Strict).await;
    for i in 0..20 {
        assert!(recorder.record(interaction(i), "test").await.is_err());
    }
    assert_eq!(
        recorder.buffered(),
        0,
        "strict mode keeps nothing in memory"
    );
    assert_eq!(
        logger.calls.load(Ordering::SeqCst),
        1,
        "within a probe interval, a down logger is not called again"
    );
    tokio::time::sleep(STRICT_PROBE_INTERVAL + Duration::from_millis(50)).await;
    assert!(recorder.record(interaction(20), "test").await.is_err());
    assert_eq!(
        logger.calls.load(Ordering::SeqCst),
        2,
        "one probe per interval"
    );

    logger.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(STRICT_PROBE_INTERVAL + Duration::from_millis(50)).await;
    recorder.record(interaction(21), "test").await.unwrap();
    recorder.record(interaction(22), "test").await.unwrap();
    assert_eq!(
        *logger.taken.lock().unwrap(),
        ["i21", "i22"],
        "only what was answered was taken, and the direct path is back"
    );
}

fn bad() -> Vec<Interaction> {
    vec![Interaction {
        interaction_id: "bad".into(),
        ..Default::default()
    }]
}

#[tokio::test]
async fn a_refused_interaction_is_dropped_not_buffered_and_blocks_nothing() {
    let (logger, recorder) = down_logger(LogMode::Buffered).await;
    logger.down.store(false, Ordering::SeqCst);
    recorder.record(bad(), "test").await.unwrap();
    assert_eq!(recorder.buffered(), 0, "never retried");
    assert!(
        !recorder.logger_down.load(Ordering::SeqCst),
        "a refusal is no outage"
    );
    recorder.record(interaction(1), "test").await.unwrap();
    assert_eq!(*logger.taken.lock().unwrap(), ["i1"]);
}

#[tokio::test]
async fn the_retry_delivers_around_a_refused_interaction_in_order() {
    let (logger, recorder) = down_logger(LogMode::Buffered).await;
    for batch in [interaction(1), bad(), interaction(2)] {
        recorder.record(batch, "test").await.unwrap();
    }
    assert_eq!(recorder.buffered(), 3);
    logger.down.store(false, Ordering::SeqCst);
    let (stop, retry) = retry_until_delivered(&recorder)
        .await
        .expect("the buffer emptied: the bad one did not block the others");
    assert_eq!(*logger.taken.lock().unwrap(), ["i1", "i2"]);
    stop.cancel();
    retry.await.unwrap();
}

#[tokio::test]
async fn calls_to_the_logger_carry_at_most_its_per_call_limit() {
    let (logger, recorder) = down_logger(LogMode::Strict).await;
    logger.down.store(false, Ordering::SeqCst);
    let many: Vec<Interaction> = (0..2500)
        .map(|i| Interaction {
            interaction_id: format!("i{i}"),
            ..Default::default()
        })
        .collect();
    recorder.record(many, "test").await.unwrap();
    assert_eq!(logger.taken.lock().unwrap().len(), 2500);
    assert_eq!(logger.calls.load(Ordering::SeqCst), 3, "1000 + 1000 + 500");
}

#[tokio::test]
async fn strict_mode_answers_a_refusal_as_refused_not_unavailable() {
    let (logger, recorder) = down_logger(LogMode::Strict).await;
    logger.down.store(false, Ordering::SeqCst);
    assert!(matches!(
        recorder.record(bad(), "test").await,
        Err(NotRecorded::Refused(_))
    ));
    assert!(!recorder.logger_down.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_log_calls_and_each_returns_only_once_its_own_are_taken() {
    for mode in [LogMode::Buffered, LogMode::Strict] {
        let (logger, recorder) = logger_with(mode, Some(1), false).await;
        logger.delay_ms.store(30, Ordering::SeqCst);
        let tasks: Vec<_> = (0..40)
            .map(|n| {
                let (recorder, logger) = (Arc::clone(&recorder), Arc::clone(&logger));
                tokio::spawn(async move {
                    recorder.record(interaction(n), "r").await.unwrap();
                    // stored, then returned: its interaction is with the logger already
                    assert!(
                        logger.taken.lock().unwrap().contains(&format!("i{n}")),
                        "request {n} returned before the logger took its interaction"
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let calls = logger.calls.load(Ordering::SeqCst);
        assert_eq!(logger.taken.lock().unwrap().len(), 40, "{mode:?}");
        assert!(calls < 40, "{mode:?}: {calls} Log calls for 40 requests");
        assert_eq!(recorder.buffered(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_interaction_in_a_shared_call_fails_only_its_own_request() {
    let (logger, recorder) = logger_with(LogMode::Strict, Some(1), false).await;
    logger.delay_ms.store(30, Ordering::SeqCst);
    // The first call occupies the lane; the rest queue and share the next call, bad one included.
    let first = {
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move { recorder.record(interaction(100), "r").await })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let recorder = Arc::clone(&recorder);
            tokio::spawn(async move {
                let which = if n == 3 { bad() } else { interaction(n) };
                (n, recorder.record(which, "r").await)
            })
        })
        .collect();
    first.await.unwrap().unwrap();
    for t in tasks {
        let (n, result) = t.await.unwrap();
        match n {
            3 => assert!(matches!(result, Err(NotRecorded::Refused(_))), "{result:?}"),
            _ => assert!(result.is_ok(), "request {n}: {result:?}"),
        }
    }
    let taken = logger.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 10, "{taken:?}");
    assert!(!taken.iter().any(|i| i.starts_with("bad")));
}

fn sized(id: &str, bytes: usize) -> Interaction {
    Interaction {
        interaction_id: id.into(),
        features_csv: "9".repeat(bytes),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_call_over_the_loggers_message_limit_is_split_until_it_fits() {
    let (logger, recorder) = logger_with(LogMode::Strict, None, false).await;
    logger.max_call_bytes.store(2500, Ordering::SeqCst);
    let many: Vec<Interaction> = (0..20).map(|n| sized(&format!("i{n}"), 300)).collect();
    recorder.record(many, "test").await.unwrap();
    let taken = logger.taken.lock().unwrap().clone();
    assert_eq!(
        taken,
        (0..20).map(|n| format!("i{n}")).collect::<Vec<_>>(),
        "all, in order"
    );
    assert!(
        logger.calls.load(Ordering::SeqCst) > 2,
        "split into calls that fit"
    );
    // One interaction too large by itself can never be stored: it alone is refused.
    let with_giant = vec![
        sized("before", 10),
        sized("giant", 5000),
        sized("after", 10),
    ];
    assert!(matches!(
        recorder.record(with_giant, "test").await,
        Err(NotRecorded::Refused(_))
    ));
    let taken = logger.taken.lock().unwrap().clone();
    assert!(
        taken.ends_with(&["before".to_owned(), "after".to_owned()]),
        "{taken:?}"
    );
}

#[tokio::test]
async fn one_bad_interaction_among_a_requests_rows_drops_only_itself() {
    let (logger, recorder) = logger_with(LogMode::Buffered, None, false).await;
    let rows = vec![sized("i1", 1), bad().remove(0), sized("i2", 1)];
    recorder.record(rows, "test").await.unwrap();
    assert_eq!(*logger.taken.lock().unwrap(), ["i1", "i2"]);
    assert_eq!(recorder.buffered(), 0, "nothing retried");
}
