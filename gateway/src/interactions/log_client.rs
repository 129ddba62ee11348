//! The `Log` call to the interaction logger, alone or on behalf of several requests.
//!
//! Calls carry at most `proto::MAX_INTERACTIONS_PER_LOG` interactions and
//! `proto::MAX_LOG_CALL_BYTES` of them. Only a refusal that means "this interaction can never
//! be stored" drops one: a call refused as invalid is sent again one interaction at a time,
//! and a call the logger found too large (`OUT_OF_RANGE`, over its message limit) in halves,
//! so that what is refused in the end is one interaction that is itself invalid or too large.

use std::{collections::VecDeque, time::Duration};

use proto::interaction::v1::{Interaction, LogRequest};
use tonic::Code;

/// The `Log` call itself, within the timeout.
#[derive(Clone)]
pub(super) struct LogClient {
    pub(super) client: hops::Logger,
    pub(super) timeout: Duration,
}

/// A failed `Log`: the status and the interactions it did not take (they may be retried).
pub(super) type LogFailure = (tonic::Status, Vec<Interaction>);

/// Interactions the logger refused as ones that can never be stored, each with its status.
pub(super) type Refused = Vec<(tonic::Status, Interaction)>;

/// Whether the logger refused the call's content itself (rather than being down, slow or
/// full): sending the same again cannot succeed, sending less may.
fn content_refused(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::InvalidArgument | Code::OutOfRange)
}

/// `interactions` in calls within both per-call limits, in order.
fn calls(interactions: Vec<Interaction>) -> VecDeque<Vec<Interaction>> {
    let mut out = VecDeque::new();
    let (mut call, mut bytes) = (Vec::new(), 0);
    for i in interactions {
        let size = prost::Message::encoded_len(&i);
        if !call.is_empty()
            && (call.len() == proto::MAX_INTERACTIONS_PER_LOG
                || bytes + size > proto::MAX_LOG_CALL_BYTES)
        {
            out.push_back(std::mem::take(&mut call));
            bytes = 0;
        }
        bytes += size;
        call.push(i);
    }
    if !call.is_empty() {
        out.push_back(call);
    }
    out
}

impl LogClient {
    /// Logs `interactions` in calls within the limits, in order. Stops at the first failure
    /// that is not the content's and returns it with every interaction not yet taken; the
    /// ones refused for themselves are returned on success.
    pub(super) async fn log(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<Refused, LogFailure> {
        let mut queue = calls(interactions);
        let mut refused = Refused::new();
        while let Some(call) = queue.pop_front() {
            match self.call(call.clone(), request_id).await {
                Ok(()) => {}
                Err(status) if content_refused(&status) && call.len() > 1 => {
                    let parts: Vec<Vec<Interaction>> = if status.code() == Code::OutOfRange {
                        let mut first = call;
                        let second = first.split_off(first.len() / 2);
                        vec![first, second]
                    } else {
                        call.into_iter().map(|i| vec![i]).collect()
                    };
                    for part in parts.into_iter().rev() {
                        queue.push_front(part);
                    }
                }
                Err(status) if content_refused(&status) => {
                    refused.extend(call.into_iter().map(|i| (status.clone(), i)));
                }
                Err(status) => {
                    let mut rest = call;
                    rest.extend(queue.into_iter().flatten());
                    return Err((status, rest));
                }
            }
        }
        Ok(refused)
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
        // in the request's trace (nothing built when it is not sampled), or for the
        // requests whose interactions these are
        let span = telemetry::traces::child(|| {
            let span = tracing::info_span!(
                "Log",
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.service = "mlops.interaction.v1.InteractionLogger",
                rpc.method = "Log",
                interactions = request.get_ref().interactions.len() as i64
            );
            if tracing::Span::current().is_none() {
                // sent for its requests by the coalescer (or a retry): in the one request's
                // trace, or linked to each one's
                let traces = request
                    .get_ref()
                    .interactions
                    .iter()
                    .map(|i| i.traceparent.as_str());
                telemetry::traces::follow(&span, traces);
            }
            span
        });
        telemetry::traces::inject_metadata(&span, request.metadata_mut());
        let asked = std::time::Instant::now();
        let answer = tracing::Instrument::instrument(self.client.log(request), span).await;
        metrics::histogram!("gateway_upstream_seconds", "call" => "log")
            .record(asked.elapsed().as_secs_f64());
        answer.map(|_| ())
    }

    /// The interactions of several requests in one call; each request gets its own outcome.
    /// A call whose content is refused: each request again by itself, so only the bad one
    /// is refused.
    pub(super) async fn log_together(
        &self,
        mut requests: Vec<(Vec<Interaction>, String)>,
    ) -> Vec<Result<Refused, LogFailure>> {
        if requests.len() == 1 {
            let (interactions, request_id) = requests.pop().expect("one");
            return vec![self.log(interactions, &request_id).await];
        }
        let all: Vec<Interaction> = requests
            .iter()
            .flat_map(|(i, _)| i.iter().cloned())
            .collect();
        match self.call(all, "coalesced").await {
            Ok(()) => requests.iter().map(|_| Ok(Refused::new())).collect(),
            Err(status) if content_refused(&status) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_keep_to_both_limits_in_order() {
        let big = |n: usize| Interaction {
            interaction_id: format!("i{n}"),
            features_csv: "9".repeat(proto::MAX_LOG_CALL_BYTES / 4),
            ..Default::default()
        };
        let split: Vec<usize> = calls((0..10).map(big).collect())
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(split, [3, 3, 3, 1], "by bytes");
        let small = (0..2500)
            .map(|n| Interaction {
                interaction_id: format!("i{n}"),
                ..Default::default()
            })
            .collect();
        let split: Vec<usize> = calls(small).iter().map(Vec::len).collect();
        assert_eq!(split, [1000, 1000, 500], "by count");
    }
}
