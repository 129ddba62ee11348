//! Outcomes for the registry-watcher leave in batches, off the answer path: per candidate
//! package, at most every second or `MAX_BATCH` at a time, and what is pending when the
//! predictor stops. A batch the receiver does not take is dropped by the sender (counted
//! there): these are statistics, not the users' interactions.

use std::{future::Future, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most outcomes held before a batch leaves early.
pub const MAX_BATCH: usize = 256;

/// How long an outcome waits for its batch at most.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Drains `outcomes` (candidate ARN, outcome) until it closes or `shutdown`, calling `send`
/// with each candidate's batch in the order they came.
pub async fn batches<T, F, Fut>(
    mut outcomes: mpsc::Receiver<(String, T)>,
    shutdown: CancellationToken,
    mut send: F,
) where
    F: FnMut(String, Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pending: Vec<(String, T)> = Vec::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    loop {
        let stop = tokio::select! {
            got = outcomes.recv() => match got {
                Some(o) => { pending.push(o); if pending.len() < MAX_BATCH { continue } false }
                None => true,
            },
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        if stop {
            while let Ok(o) = outcomes.try_recv() {
                pending.push(o);
            }
        }
        while let Some((arn, _)) = pending.first() {
            let arn = arn.clone();
            let (batch, rest): (Vec<_>, Vec<_>) = pending.drain(..).partition(|(a, _)| *a == arn);
            pending = rest;
            send(arn, batch.into_iter().map(|(_, o)| o).collect()).await;
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn outcomes_leave_per_candidate_when_full_and_at_shutdown() {
        let (tx, rx) = mpsc::channel(1024);
        let shutdown = CancellationToken::new();
        let sent = Arc::new(Mutex::new(Vec::<(String, Vec<u32>)>::new()));
        let task = {
            let (sent, shutdown) = (Arc::clone(&sent), shutdown.clone());
            tokio::spawn(batches(rx, shutdown, move |arn, batch| {
                let sent = Arc::clone(&sent);
                async move { sent.lock().unwrap().push((arn, batch)) }
            }))
        };
        for i in 0..MAX_BATCH as u32 {
            let arn = if i % 2 == 0 { "a" } else { "b" };
            tx.send((arn.to_string(), i)).await.unwrap();
        }
        // The task takes them all without the clock moving (no wait for a tick).
        let started = tokio::time::Instant::now();
        let total = || {
            sent.lock()
                .unwrap()
                .iter()
                .map(|(_, b)| b.len())
                .sum::<usize>()
        };
        for _ in 0..100_000 {
            if total() == MAX_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        {
            // All of them left before the first tick: each batch one candidate's, in order.
            let sent = sent.lock().unwrap();
            assert_eq!(sent.iter().map(|(_, b)| b.len()).sum::<usize>(), MAX_BATCH);
            for (arn, batch) in sent.iter() {
                let parity = if arn == "a" { 0 } else { 1 };
                assert!(batch.iter().all(|i| i % 2 == parity), "{arn}: {batch:?}");
                assert!(batch.windows(2).all(|w| w[0] < w[1]), "in order");
            }
        }
        tx.send(("c".into(), 7)).await.unwrap();
        tokio::task::yield_now().await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(
            sent.lock().unwrap().last().unwrap(),
            &("c".to_string(), vec![7])
        );
    }
}
