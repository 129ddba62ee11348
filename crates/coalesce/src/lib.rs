//! Adaptive batching of concurrent calls to one downstream operation, by the group-commit
//! rule: there is no timer. A request that finds a lane (a call slot) free leaves at once, by
//! itself; requests that arrive while every lane is busy queue, and leave together in one call
//! as soon as a lane frees up, up to the batch limits. So an idle system answers each request
//! as fast as without batching, and a busy one makes fewer, fuller calls.
//!
//! The downstream call is the caller's: given the batched items it returns one result per
//! item, so each caller gets exactly its own answer (or its own error).

use std::{future::Future, sync::Arc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// How much a request adds to a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Weight {
    pub rows: usize,
    pub bytes: usize,
}

/// The most one call may carry. A single request larger than this still goes, alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub rows: usize,
    pub bytes: usize,
    /// Calls in flight at once.
    pub lanes: usize,
}

/// The coalescer has stopped (its runtime is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the batcher has stopped")
    }
}

impl std::error::Error for Stopped {}

struct Job<T, R> {
    item: T,
    /// Requests with different keys never share a call (e.g. a target variant).
    key: Option<String>,
    weight: Weight,
    reply: oneshot::Sender<R>,
}

/// Submits items; a dispatcher task forms the batches. Cheap to clone.
pub struct Coalescer<T, R> {
    jobs: mpsc::UnboundedSender<Job<T, R>>,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Coalescer {
            jobs: self.jobs.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Starts the dispatcher on the current runtime. `call` gets each batch's items, in
    /// arrival order, and must return one result per item, in the same order. Requests per
    /// call are recorded in the histogram `metric`.
    pub fn start<F, Fut>(limits: Limits, metric: &'static str, call: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(queue, limits, metric, Arc::new(call)));
        Coalescer { jobs }
    }

    /// Queues `item` for the next call with a free lane and waits for its own result.
    pub async fn submit(&self, item: T, key: Option<String>, weight: Weight) -> Result<R, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                item,
                key,
                weight,
                reply,
            })
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

async fn dispatch<T, R, F, Fut>(
    mut queue: mpsc::UnboundedReceiver<Job<T, R>>,
    limits: Limits,
    metric: &'static str,
    call: Arc<F>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    let lanes = Arc::new(Semaphore::new(limits.lanes.max(1)));
    let mut held: Option<Job<T, R>> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // Waiting for a lane is what lets a batch form.
        let lane = Arc::clone(&lanes)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut weight = first.weight;
        let key = first.key.clone();
        let mut batch = vec![first];
        while let Ok(next) = queue.try_recv() {
            let fits = next.key == key
                && weight.rows + next.weight.rows <= limits.rows
                && weight.bytes + next.weight.bytes <= limits.bytes;
            if !fits {
                held = Some(next);
                break;
            }
            weight.rows += next.weight.rows;
            weight.bytes += next.weight.bytes;
            batch.push(next);
        }
        metrics::histogram!(metric).record(batch.len() as f64);
        tokio::spawn(run(batch, Arc::clone(&call), lane));
    }
}

async fn run<T, R, F, Fut>(batch: Vec<Job<T, R>>, call: Arc<F>, lane: OwnedSemaphorePermit)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<R>>,
{
    let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
        batch.into_iter().map(|j| (j.item, j.reply)).unzip();
    let results = call(items).await;
    drop(lane);
    debug_assert_eq!(results.len(), replies.len(), "one result per item");
    for (reply, result) in replies.into_iter().zip(results) {
        // A caller that gave up (deadline, disconnect) no longer listens: nothing to do.
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests;
