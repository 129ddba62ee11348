//! Forwards interactions to the logger, in one of two modes (`GATEWAY_LOG_MODE`):
//!
//! - `buffered` (the default): an unavailable logger never fails a prediction: the
//!   interactions wait in a bounded in-memory buffer and are retried in the background; what
//!   does not fit is counted (`gateway_interactions_dropped_total`) and logged. Once a call
//!   has failed, later interactions go straight to the buffer (behind the ones already
//!   waiting) until the background retry gets through again, so predictions do not each wait
//!   out the logger's timeout while it is down. A gateway that dies meanwhile loses them.
//! - `strict`: no answer goes out unrecorded. If the logger does not durably take the
//!   interactions, the caller gets 503 with `Retry-After` and nothing is buffered. While the
//!   logger is down, one call per probe interval tries it; the others fail at once.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// What happens to interactions the logger cannot take.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// Answer anyway; keep them in memory and retry in the background.
    Buffered,
    /// Answer 503 instead: every answer's interactions are durable first.
    Strict,
}

/// While the logger is down, strict mode lets one request try it this often.
const STRICT_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Why strict mode refused to answer.
#[derive(Debug, thiserror::Error)]
#[error("the interaction logger did not take the interactions ({0}); not answering unrecorded")]
pub struct NotRecorded(pub String);

pub struct Recorder {
    client: InteractionLoggerClient<Channel>,
    mode: LogMode,
    /// Strict mode, logger down: when a request last tried it.
    last_probe: Mutex<Option<std::time::Instant>>,
    buffer: Mutex<VecDeque<Interaction>>,
    capacity: usize,
    timeout: Duration,
    wake: Notify,
    /// The last call failed and the retry has not got through since.
    logger_down: AtomicBool,
}

impl Recorder {
    pub fn new(
        client: InteractionLoggerClient<Channel>,
        mode: LogMode,
        capacity: usize,
        timeout: Duration,
    ) -> Self {
        Recorder {
            client,
            mode,
            last_probe: Mutex::new(None),
            buffer: Mutex::new(VecDeque::new()),
            capacity,
            timeout,
            wake: Notify::new(),
            logger_down: AtomicBool::new(false),
        }
    }

    async fn log(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<(), tonic::Status> {
        let mut request = tonic::Request::new(LogRequest { interactions });
        request.set_timeout(self.timeout);
        if let Ok(v) = request_id.parse() {
            request.metadata_mut().insert("x-request-id", v);
        }
        let asked = std::time::Instant::now();
        let answer = self.client.clone().log(request).await;
        metrics::histogram!("gateway_upstream_seconds", "call" => "log")
            .record(asked.elapsed().as_secs_f64());
        answer.map(|_| ())
    }

    /// Logs now. When the logger cannot take them: buffered mode buffers them for a retry
    /// (at once while the logger is known to be down) and returns Ok; strict mode returns
    /// `NotRecorded` and keeps nothing.
    pub async fn record(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<(), NotRecorded> {
        if self.mode == LogMode::Strict {
            return self.record_strict(interactions, request_id).await;
        }
        if self.logger_down.load(Ordering::Acquire) {
            self.buffer(interactions);
            return Ok(());
        }
        if let Err(status) = self.log(interactions.clone(), request_id).await {
            self.mark_down(&status, "buffering interactions until it answers again");
            self.buffer(interactions);
        }
        Ok(())
    }

    async fn record_strict(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<(), NotRecorded> {
        if self.logger_down.load(Ordering::Acquire) {
            let mut last = self.last_probe.lock().expect("probe lock");
            if last.is_some_and(|t| t.elapsed() < STRICT_PROBE_INTERVAL) {
                metrics::counter!("gateway_interactions_refused_total")
                    .increment(interactions.len() as u64);
                return Err(NotRecorded("the logger is down".into()));
            }
            *last = Some(std::time::Instant::now());
        }
        match self.log(interactions.clone(), request_id).await {
            Ok(()) => {
                if self.logger_down.swap(false, Ordering::AcqRel) {
                    tracing::info!("logger answering again");
                    metrics::gauge!("gateway_logger_up").set(1.0);
                }
                Ok(())
            }
            Err(status) => {
                // the next probe is one interval from this failure
                *self.last_probe.lock().expect("probe lock") = Some(std::time::Instant::now());
                self.mark_down(&status, "strict mode: answering 503 until it answers again");
                metrics::counter!("gateway_interactions_refused_total")
                    .increment(interactions.len() as u64);
                Err(NotRecorded(format!("{:?}", status.code())))
            }
        }
    }

    fn mark_down(&self, status: &tonic::Status, what_now: &str) {
        if !self.logger_down.swap(true, Ordering::AcqRel) {
            tracing::warn!(code = ?status.code(), message = status.message(), "logger unavailable; {what_now}");
        }
        metrics::gauge!("gateway_logger_up").set(0.0);
    }

    fn buffer(&self, interactions: Vec<Interaction>) {
        let mut buffer = self.buffer.lock().expect("buffer lock");
        let room = self.capacity.saturating_sub(buffer.len());
        let dropped = interactions.len().saturating_sub(room);
        buffer.extend(interactions.into_iter().take(room));
        metrics::gauge!("gateway_interactions_buffered").set(buffer.len() as f64);
        if dropped > 0 {
            metrics::counter!("gateway_interactions_dropped_total").increment(dropped as u64);
            tracing::error!(
                dropped,
                capacity = self.capacity,
                "interaction buffer full: interactions dropped"
            );
        }
        drop(buffer);
        self.wake.notify_one();
    }

    pub fn buffered(&self) -> usize {
        self.buffer.lock().expect("buffer lock").len()
    }

    /// Retries buffered interactions until `stop`; then tries once more to empty the buffer.
    pub async fn retry_buffered(&self, stop: CancellationToken) {
        metrics::gauge!("gateway_logger_up").set(1.0);
        let mut backoff = Duration::from_millis(100);
        loop {
            let batch: Vec<Interaction> = {
                let mut buffer = self.buffer.lock().expect("buffer lock");
                let n = buffer.len().min(500);
                buffer.drain(..n).collect()
            };
            if batch.is_empty() {
                // Everything that waited is delivered, and whatever failed since is queued
                // behind it: the direct path may take over again.
                if self.logger_down.swap(false, Ordering::AcqRel) {
                    tracing::info!("logger answering again; buffer delivered");
                    metrics::gauge!("gateway_logger_up").set(1.0);
                }
                if stop.is_cancelled() {
                    return;
                }
                tokio::select! { _ = self.wake.notified() => {}, _ = stop.cancelled() => {} }
                continue;
            }
            let count = batch.len();
            match self.log(batch.clone(), "retry").await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    metrics::counter!("gateway_interactions_retried_total").increment(count as u64);
                    metrics::gauge!("gateway_interactions_buffered").set(self.buffered() as f64);
                }
                Err(status) => {
                    {
                        let mut buffer = self.buffer.lock().expect("buffer lock");
                        for i in batch.into_iter().rev() {
                            buffer.push_front(i);
                        }
                    }
                    if stop.is_cancelled() {
                        tracing::error!(count = self.buffered(), code = ?status.code(), "shutting down with interactions the logger never took");
                        return;
                    }
                    tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = stop.cancelled() => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::interaction::v1::{
        LogResponse,
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
    }

    #[tonic::async_trait]
    impl InteractionLogger for Logger {
        async fn log(
            &self,
            request: tonic::Request<LogRequest>,
        ) -> Result<tonic::Response<LogResponse>, tonic::Status> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            if self.0.down.load(Ordering::SeqCst) {
                return Err(tonic::Status::unavailable("down for the test"));
            }
            let ids: Vec<String> = request
                .into_inner()
                .interactions
                .into_iter()
                .map(|i| i.interaction_id)
                .collect();
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
        let server_side = Logger::default();
        let logger = Arc::clone(&server_side.0);
        logger.down.store(true, Ordering::SeqCst);
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
            InteractionLoggerClient::new(channel),
            mode,
            1000,
            Duration::from_secs(1),
        ));
        (logger, recorder)
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
        let stop = CancellationToken::new();
        let retry = tokio::spawn({
            let (recorder, stop) = (Arc::clone(&recorder), stop.clone());
            async move { recorder.retry_buffered(stop).await }
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while recorder.buffered() > 0 || recorder.logger_down.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
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
}
