//! Record writes from all requests share transactions through [`group_commit`]: one fsync
//! acknowledges every write queued meanwhile. The writer's context is the sequence number of
//! the next row queued for the offline store.

use group_commit::GroupCommit;

use crate::{
    db::{Db, DbError, OFFLINE_PENDING, Write},
    error::AwsError,
};

/// A write applied inside the shared transaction. It must validate before it writes:
/// an `Err` after a write would leave that write in the batch.
pub type Job = Box<dyn FnOnce(&mut Write<'_>, &mut u64) -> Result<(), AwsError> + Send>;

pub struct Writer(GroupCommit<u64, AwsError>);

/// Writes in one transaction at most: a BatchWriteRecord job holds up to 25 records, and a
/// transaction's dirty pages stay in memory until it commits.
const MAX_JOBS_PER_COMMIT: usize = 128;

impl From<redb::Error> for AwsError {
    fn from(e: redb::Error) -> Self {
        DbError::Redb(e).into()
    }
}

fn stopped() -> AwsError {
    AwsError::service_unavailable("The record writer has stopped.")
}

impl Writer {
    pub fn start(db: Db) -> Result<Self, DbError> {
        let next = db.write(|txn| {
            Ok::<_, DbError>(
                txn.last_key(OFFLINE_PENDING)?
                    .and_then(|k| k.parse::<u64>().ok())
                    .map_or(0, |n| n + 1),
            )
        })?;
        let commit = GroupCommit::start(
            "record-writer",
            db.database(),
            next,
            MAX_JOBS_PER_COMMIT,
            stopped,
            "sagemaker_local_record_batch_size",
        )
        .map_err(|e| DbError::Redb(redb::Error::Io(e)))?;
        Ok(Writer(commit))
    }

    /// Queues `job` and waits until its transaction is durable.
    pub async fn run(&self, job: Job) -> Result<(), AwsError> {
        self.0
            .run(Box::new(move |txn, seq| job(&mut Write(txn), seq)))
            .await
    }

    /// [`Writer::run`] for blocking code (start-up, bootstrap): never call it on an async worker.
    pub fn run_blocking(&self, job: Job) -> Result<(), AwsError> {
        self.0
            .run_blocking(Box::new(move |txn, seq| job(&mut Write(txn), seq)))
    }
}

/// The key of pending offline row number `seq`: zero-padded so keys sort numerically.
pub fn pending_key(seq: u64) -> String {
    format!("{seq:020}")
}
