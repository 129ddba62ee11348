//! Group commit: record writes from all requests funnel into one thread that applies
//! whatever is queued in a single redb transaction, so one fsync acknowledges many writes.

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::{
    db::{Db, DbError, OFFLINE_PENDING, Write},
    error::AwsError,
};

/// A write applied inside the shared transaction. It must validate before it writes:
/// an `Err` after a write would leave that write in the batch.
pub type Job = Box<dyn FnOnce(&mut Write, &mut u64) -> Result<(), AwsError> + Send>;

const MAX_BATCH: usize = 1024;

type Queue = mpsc::Sender<(Job, oneshot::Sender<Result<(), AwsError>>)>;

pub struct Writer {
    tx: Option<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// Lets queued writes finish and closes the database handle before returning.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    pub fn start(db: Db) -> Result<Self, DbError> {
        let mut seq = next_sequence(&db)?;
        let (tx, rx) = mpsc::channel::<(Job, oneshot::Sender<Result<(), AwsError>>)>();
        let thread = std::thread::Builder::new()
            .name("record-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    metrics::histogram!("sagemaker_local_record_batch_size")
                        .record(batch.len() as f64);
                    let mut replies = Vec::with_capacity(batch.len());
                    let mut results = Vec::with_capacity(batch.len());
                    let committed = db.write(|txn| {
                        for (job, reply) in batch {
                            results.push(job(txn, &mut seq));
                            replies.push(reply);
                        }
                        Ok::<_, DbError>(())
                    });
                    match committed {
                        Ok(()) => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(result);
                            }
                        }
                        Err(e) => {
                            let e = AwsError::from(e);
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            })
            .map_err(|e| DbError::Redb(redb::Error::Io(e)))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `job` and waits until its transaction is durable.
    pub async fn run(&self, job: Job) -> Result<(), AwsError> {
        let (reply, done) = oneshot::channel();
        self.queue()?
            .send((job, reply))
            .map_err(|_| AwsError::service_unavailable("The record writer has stopped."))?;
        done.await
            .unwrap_or_else(|_| Err(AwsError::internal("The record writer dropped a write.")))
    }
}

impl Writer {
    /// [`Writer::run`] for blocking code (start-up, bootstrap): never call it on an async worker.
    pub fn run_blocking(&self, job: Job) -> Result<(), AwsError> {
        let (reply, done) = oneshot::channel();
        self.queue()?
            .send((job, reply))
            .map_err(|_| AwsError::service_unavailable("The record writer has stopped."))?;
        done.blocking_recv()
            .unwrap_or_else(|_| Err(AwsError::internal("The record writer dropped a write.")))
    }
}

impl Writer {
    fn queue(&self) -> Result<&Queue, AwsError> {
        self.tx
            .as_ref()
            .ok_or_else(|| AwsError::service_unavailable("The record writer has stopped."))
    }
}

fn next_sequence(db: &Db) -> Result<u64, DbError> {
    db.write(|txn| {
        Ok::<_, DbError>(
            txn.last_key(OFFLINE_PENDING)?
                .and_then(|k| k.parse::<u64>().ok())
                .map_or(0, |n| n + 1),
        )
    })
}

/// The key of pending offline row number `seq`: zero-padded so keys sort numerically.
pub fn pending_key(seq: u64) -> String {
    format!("{seq:020}")
}
