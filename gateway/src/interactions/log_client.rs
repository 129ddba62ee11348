//! The `Log` call to the interaction logger, alone or on behalf of several requests.

use std::time::Duration;

use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};
use tonic::transport::Channel;

use super::refused;

/// The `Log` call itself: at most `MAX_INTERACTIONS_PER_LOG` per call, within the timeout.
#[derive(Clone)]
pub(super) struct LogClient {
    pub(super) client: InteractionLoggerClient<Channel>,
    pub(super) timeout: Duration,
}

/// A failed `Log`: the status and the interactions it did not take.
pub(super) type LogFailure = (tonic::Status, Vec<Interaction>);

impl LogClient {
    /// One `Log` call per `MAX_INTERACTIONS_PER_LOG` interactions, in order; stops at the
    /// first failure and returns it with the interactions not yet taken.
    pub(super) async fn log(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<(), LogFailure> {
        let mut rest = interactions;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(proto::MAX_INTERACTIONS_PER_LOG));
            if let Err(status) = self.call(rest.clone(), request_id).await {
                rest.extend(tail);
                return Err((status, rest));
            }
            rest = tail;
        }
        Ok(())
    }

    async fn call(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<(), tonic::Status> {
        metrics::histogram!("gateway_log_call_interactions").record(interactions.len() as f64);
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

    /// The interactions of several requests in one call; each request gets its own outcome.
    /// Refused as invalid: each request again by itself, so only the bad one is refused.
    pub(super) async fn log_together(
        &self,
        mut requests: Vec<(Vec<Interaction>, String)>,
    ) -> Vec<Result<(), LogFailure>> {
        if requests.len() == 1 {
            let (interactions, request_id) = requests.pop().expect("one");
            return vec![self.log(interactions, &request_id).await];
        }
        let all: Vec<Interaction> = requests
            .iter()
            .flat_map(|(i, _)| i.iter().cloned())
            .collect();
        match self.call(all, "coalesced").await {
            Ok(()) => requests.iter().map(|_| Ok(())).collect(),
            Err(status) if refused(&status) => {
                let apart = requests
                    .iter()
                    .map(|(interactions, id)| self.log(interactions.clone(), id));
                futures_util::future::join_all(apart).await
            }
            Err(status) => requests
                .into_iter()
                .map(|(interactions, _)| Err((status.clone(), interactions)))
                .collect(),
        }
    }
}
