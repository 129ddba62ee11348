//! Forwards interactions to the logger. An unavailable logger never fails a prediction: the
//! interactions wait in a bounded in-memory buffer and are retried in the background; what
//! does not fit is counted (`gateway_interactions_dropped_total`) and logged.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct Recorder {
    client: InteractionLoggerClient<Channel>,
    buffer: Mutex<VecDeque<Interaction>>,
    capacity: usize,
    timeout: Duration,
    wake: Notify,
}

impl Recorder {
    pub fn new(
        client: InteractionLoggerClient<Channel>,
        capacity: usize,
        timeout: Duration,
    ) -> Self {
        Recorder {
            client,
            buffer: Mutex::new(VecDeque::new()),
            capacity,
            timeout,
            wake: Notify::new(),
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
        self.client.clone().log(request).await.map(|_| ())
    }

    /// Logs now, or buffers for a retry when the logger cannot take them.
    pub async fn record(&self, interactions: Vec<Interaction>, request_id: &str) {
        if let Err(status) = self.log(interactions.clone(), request_id).await {
            tracing::warn!(code = ?status.code(), message = status.message(), count = interactions.len(), "logger unavailable; buffering interactions");
            self.buffer(interactions);
        }
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
        let mut backoff = Duration::from_millis(100);
        loop {
            let batch: Vec<Interaction> = {
                let mut buffer = self.buffer.lock().expect("buffer lock");
                let n = buffer.len().min(500);
                buffer.drain(..n).collect()
            };
            if batch.is_empty() {
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
