//! Rows of concurrent Predict calls share InvokeEndpoint calls (`coalesce`): a call that
//! finds one of `PREDICTOR_INVOKE_CONCURRENCY` invocation lanes free is sent at once, by
//! itself, with its own request id as the inference id; calls that arrive while every lane is
//! busy leave together in the next invocation, up to `PREDICTOR_BATCH_MAX_ROWS` rows and
//! SageMaker's payload limit. Each caller gets exactly its own rows' scores. A batch the model
//! refuses (a `ModelError` with a 4xx) is invoked again request by request, so that only the
//! request with the bad row fails; any other failure is every rider's. A batch's inference id
//! is the batch's own id, and one log line says which request ids rode in it.

use std::sync::Arc;

use coalesce::{Coalescer, Limits, Weight};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    error::Error,
    invoke::{Attempts, Invoker},
    rows,
};

/// SageMaker's InvokeEndpoint payload limit (6 MB).
pub const MAX_PAYLOAD_BYTES: usize = 6_291_456;

/// One Predict call's rows, encoded.
#[derive(Clone)]
pub struct Rows {
    /// One CSV line per row, joined by `\n`.
    pub csv: String,
    pub rows: usize,
    pub request_id: String,
    pub deadline: Instant,
    pub target_variant: Option<String>,
    /// `Once` for a rollout's candidate (rows that share an invocation share the variant, and
    /// so this too).
    pub attempts: Attempts,
    /// The Predict call's span when traces are on (its invocation's parent, or a link of a
    /// shared one).
    pub span: tracing::Span,
}

/// The span of one InvokeEndpoint call (when traces are on): the variant that answered is
/// recorded on it by the invoker.
fn invocation_span(
    invoker: &Invoker,
    parent: &tracing::Span,
    inference_id: &str,
    rows: usize,
) -> tracing::Span {
    telemetry::traces::child_of(parent, || {
        tracing::info_span!(
            parent: parent,
            "InvokeEndpoint",
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "SageMaker Runtime",
            rpc.method = "InvokeEndpoint",
            sagemaker.endpoint = invoker.endpoint(),
            sagemaker.variant = tracing::field::Empty,
            sagemaker.inference_id = inference_id,
            rows = rows as i64,
        )
    })
}

/// The endpoint's answer for one call's rows.
pub struct Scored {
    pub scores: Vec<Vec<f64>>,
    pub variant: String,
    /// The InvokeEndpoint call's inference id: the request's own, or its batch's.
    pub inference_id: String,
}

impl Scored {
    /// Each row's first score (NaN for a row without one): what comparisons are made of.
    pub fn first_scores(&self) -> Vec<f64> {
        self.scores
            .iter()
            .map(|s| s.first().copied().unwrap_or(f64::NAN))
            .collect()
    }
}

pub type Outcome = Result<Scored, Error>;

/// How Predict calls reach the endpoint.
pub enum Invocations {
    /// Each call invokes the endpoint by itself (`PREDICTOR_BATCHING=false`).
    Direct(Arc<Invoker>),
    Batched(Coalescer<Rows, Outcome>),
}

impl Invocations {
    /// Batching when `lanes` is given (invocations in flight at once, rows per invocation).
    pub fn new(invoker: Arc<Invoker>, batching: Option<(usize, usize)>) -> Self {
        match batching {
            None => Invocations::Direct(invoker),
            Some((lanes, max_rows)) => {
                let limits = Limits {
                    rows: max_rows.max(1),
                    bytes: MAX_PAYLOAD_BYTES,
                    lanes: lanes.max(1),
                };
                Invocations::Batched(Coalescer::start(
                    limits,
                    "predictor_invocation_requests",
                    move |batch| invoke_batch(Arc::clone(&invoker), batch),
                ))
            }
        }
    }

    pub async fn score(&self, rows: Rows) -> Outcome {
        match self {
            Invocations::Direct(invoker) => {
                metrics::histogram!("predictor_invocation_requests").record(1.0);
                invoke_one(invoker, rows).await
            }
            Invocations::Batched(batcher) => {
                let deadline = rows.deadline;
                // One invocation, one variant and one way of calling it.
                let key = rows.target_variant.as_ref().map(|t| match rows.attempts {
                    Attempts::Live => t.clone(),
                    Attempts::Once => format!("{t}\0once"),
                });
                let weight = Weight {
                    rows: rows.rows,
                    bytes: rows.csv.len() + 1,
                };
                match tokio::time::timeout_at(deadline, batcher.submit(rows, key, weight)).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(coalesce::Stopped)) => {
                        Err(Error::Unavailable("the predictor is stopping".into()))
                    }
                    Err(_) => Err(Error::Deadline),
                }
            }
        }
    }
}

async fn invoke_one(invoker: &Invoker, rows: Rows) -> Outcome {
    metrics::histogram!("predictor_invocation_rows").record(rows.rows as f64);
    let span = invocation_span(invoker, &rows.span, &rows.request_id, rows.rows);
    let answer = invoker
        .invoke(
            rows.csv,
            &rows.request_id,
            rows.target_variant.as_deref(),
            rows.deadline,
            rows.attempts,
        )
        .instrument(span)
        .await?;
    let scores = parse(&answer.body, rows.rows)?;
    rows::check_finite(&scores)?;
    Ok(Scored {
        scores,
        variant: answer.variant,
        inference_id: rows.request_id,
    })
}

async fn invoke_batch(invoker: Arc<Invoker>, batch: Vec<Rows>) -> Vec<Outcome> {
    // Callers whose deadline passed while they queued have gone: their rows are not sent.
    let now = Instant::now();
    let live: Vec<bool> = batch.iter().map(|r| r.deadline > now).collect();
    let riders = batch.into_iter().filter(|r| r.deadline > now).collect();
    let mut answers = invoke_riders(&invoker, riders).await.into_iter();
    live.into_iter()
        .map(|alive| match alive {
            true => answers.next().expect("one answer per rider"),
            false => Err(Error::Deadline),
        })
        .collect()
}

async fn invoke_riders(invoker: &Arc<Invoker>, mut riders: Vec<Rows>) -> Vec<Outcome> {
    match riders.len() {
        0 => return Vec::new(),
        1 => return vec![invoke_one(invoker, riders.pop().expect("one")).await],
        _ => {}
    }
    let batch_id = uuid::Uuid::now_v7().to_string();
    let total: usize = riders.iter().map(|r| r.rows).sum();
    tracing::info!(
        batch_id = %batch_id,
        request_ids = ?riders.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(),
        rows = total,
        "one InvokeEndpoint for several requests"
    );
    metrics::histogram!("predictor_invocation_rows").record(total as f64);
    let mut csv = String::with_capacity(riders.iter().map(|r| r.csv.len() + 1).sum());
    for r in &riders {
        if !csv.is_empty() {
            csv.push('\n');
        }
        csv.push_str(&r.csv);
    }
    let deadline = riders
        .iter()
        .map(|r| r.deadline)
        .max()
        .expect("riders are not empty");
    let target = riders[0].target_variant.clone();
    // shared by several requests: a trace of its own, linked to each of theirs
    let span = invocation_span(invoker, &tracing::Span::none(), &batch_id, total);
    riders
        .iter()
        .for_each(|r| telemetry::traces::link_span(&span, &r.span));
    let answer = invoker
        .invoke(
            csv,
            &batch_id,
            target.as_deref(),
            deadline,
            riders[0].attempts,
        )
        .instrument(span)
        .await
        .and_then(|a| Ok((parse(&a.body, total)?, a.variant)));
    match answer {
        Ok((scores, variant)) => {
            let mut scores = scores.into_iter();
            riders
                .iter()
                .map(|r| {
                    // a score that is not a number fails only the request of its row
                    let scores: Vec<Vec<f64>> = scores.by_ref().take(r.rows).collect();
                    rows::check_finite(&scores)?;
                    Ok(Scored {
                        scores,
                        variant: variant.clone(),
                        inference_id: batch_id.clone(),
                    })
                })
                .collect()
        }
        Err(Error::ModelRejected(reason)) => {
            // Some row is bad: each request again by itself, so only its own caller fails.
            tracing::info!(batch_id = %batch_id, %reason, "the model refused a batch; invoking its requests one by one");
            metrics::counter!("predictor_batches_split_total").increment(1);
            let apart = riders.into_iter().map(|r| invoke_one(invoker, r));
            futures_util::future::join_all(apart).await
        }
        Err(e) => riders.iter().map(|_| Err(e.clone())).collect(),
    }
}

fn parse(body: &str, rows: usize) -> Result<Vec<Vec<f64>>, Error> {
    rows::parse_scores(body, rows)
        .inspect_err(|e| tracing::error!(error = %e, "unexpected endpoint output"))
}
