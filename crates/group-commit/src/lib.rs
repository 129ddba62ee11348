//! Group commit for redb. Every write is a job sent to one writer thread; the thread takes
//! whatever jobs are queued, applies them in a single write transaction and commits it
//! (fsync) once, then answers each job. Under load one fsync acknowledges hundreds of
//! writes; an idle writer commits a lone job immediately.
//!
//! A job must check before it writes: an `Err` returned after a write would leave that write
//! in the shared transaction.

use std::{sync::Arc, sync::mpsc, thread::JoinHandle};

use tokio::sync::oneshot;

/// A write applied inside the shared transaction, with the writer's context `C` (e.g. a
/// sequence counter that only the writer thread advances).
pub type Job<C, E> = Box<dyn FnOnce(&redb::WriteTransaction, &mut C) -> Result<(), E> + Send>;

type Queued<C, E> = (Job<C, E>, oneshot::Sender<Result<(), E>>);

pub struct GroupCommit<C, E> {
    tx: Option<mpsc::Sender<Queued<C, E>>>,
    thread: Option<JoinHandle<()>>,
    stopped: fn() -> E,
}

impl<C: Send + 'static, E: From<redb::Error> + Clone + Send + 'static> GroupCommit<C, E> {
    /// Starts the writer thread. `max_batch` bounds the jobs in one transaction;
    /// `stopped` is the error for jobs sent after the writer stopped; `metric` names the
    /// batch-size histogram.
    pub fn start(
        name: &str,
        db: Arc<redb::Database>,
        mut ctx: C,
        max_batch: usize,
        stopped: fn() -> E,
        metric: &'static str,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Queued<C, E>>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < max_batch {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    metrics::histogram!(metric).record(batch.len() as f64);
                    let (jobs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    // A job that panics aborts the transaction: every job of it is answered
                    // with the error, and the writer goes on with the next batch.
                    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let txn = db.begin_write().map_err(redb::Error::from)?;
                        let results: Vec<_> =
                            jobs.into_iter().map(|job| job(&txn, &mut ctx)).collect();
                        txn.commit().map_err(redb::Error::from)?;
                        Ok::<_, redb::Error>(results)
                    }));
                    match committed {
                        Ok(Ok(results)) => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(result);
                            }
                        }
                        // The transaction could not begin or commit: every job gets the error
                        // (never a dropped reply, which would read as a stopped writer).
                        Ok(Err(e)) => {
                            let e = E::from(e);
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                        Err(_) => {
                            for reply in replies {
                                let _ = reply.send(Err(stopped()));
                            }
                        }
                    }
                }
            })?;
        Ok(GroupCommit {
            tx: Some(tx),
            thread: Some(thread),
            stopped,
        })
    }

    fn send(&self, job: Job<C, E>) -> Result<oneshot::Receiver<Result<(), E>>, E> {
        let (reply, done) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(self.stopped)?
            .send((job, reply))
            .map_err(|_| (self.stopped)())?;
        Ok(done)
    }

    /// Queues `job` and waits until its transaction is durable.
    pub async fn run(&self, job: Job<C, E>) -> Result<(), E> {
        self.send(job)?
            .await
            .unwrap_or_else(|_| Err((self.stopped)()))
    }

    /// [`GroupCommit::run`] for blocking code; never call it on an async worker thread.
    pub fn run_blocking(&self, job: Job<C, E>) -> Result<(), E> {
        self.send(job)?
            .blocking_recv()
            .unwrap_or_else(|_| Err((self.stopped)()))
    }
}

impl<C, E> Drop for GroupCommit<C, E> {
    /// Lets queued jobs finish, and releases the database, before returning.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[derive(Debug, Clone, PartialEq)]
    struct E(String);
    impl From<redb::Error> for E {
        fn from(e: redb::Error) -> Self {
            E(e.to_string())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_all_commit_and_failures_stay_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("db")).unwrap());
        let writer = Arc::new(
            GroupCommit::<u64, E>::start(
                "w",
                Arc::clone(&db),
                0,
                64,
                || E("stopped".into()),
                "test_batch",
            )
            .unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..500u64 {
            let w = Arc::clone(&writer);
            tasks.push(tokio::spawn(async move {
                w.run(Box::new(move |txn, seq| {
                    if i % 100 == 7 {
                        return Err(E(format!("refused {i}")));
                    }
                    txn.open_table(T)
                        .map_err(redb::Error::from)?
                        .insert(*seq, i)
                        .map_err(redb::Error::from)?;
                    *seq += 1;
                    Ok(())
                }))
                .await
            }));
        }
        let mut refused = 0;
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                assert!(e.0.starts_with("refused"));
                refused += 1;
            }
        }
        assert_eq!(refused, 5);
        drop(Arc::try_unwrap(writer).ok().expect("only owner"));
        let read = db.begin_read().unwrap();
        let table = read.open_table(T).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&table).unwrap(), 495);
    }

    /// Storage that works until it is told to fail (a full disk, a failing fsync).
    #[derive(Debug, Default)]
    struct Flaky {
        inner: redb::backends::InMemoryBackend,
        broken: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> std::io::Result<()> {
            if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
                Err(std::io::Error::other("no space left on device"))
            } else {
                Ok(())
            }
        }
    }

    /// The database's handle on the storage the test breaks.
    #[derive(Debug)]
    struct Shared(Arc<Flaky>);
    impl redb::StorageBackend for Shared {
        fn len(&self) -> std::io::Result<u64> {
            self.0.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.0.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.0.check()?;
            self.0.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.0.check()?;
            self.0.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.0.check()?;
            self.0.inner.write(offset, data)
        }
    }

    /// A failed commit, and every transaction after it (redb refuses them until the database
    /// is reopened), answers each job with the storage error: never a dropped reply, which
    /// callers took for a writer that had stopped for good.
    #[tokio::test]
    async fn a_storage_fault_answers_every_job_with_the_error() {
        let flaky = Arc::new(Flaky::default());
        let db = Arc::new(
            redb::Database::builder()
                .create_with_backend(Shared(Arc::clone(&flaky)))
                .unwrap(),
        );
        let writer =
            GroupCommit::<u64, E>::start("w", db, 0, 64, || E("stopped".into()), "test_batch")
                .unwrap();
        let job = || -> Job<u64, E> {
            Box::new(|txn, seq| {
                txn.open_table(T)
                    .map_err(redb::Error::from)?
                    .insert(*seq, 1)
                    .map_err(redb::Error::from)?;
                *seq += 1;
                Ok(())
            })
        };
        writer.run(job()).await.unwrap();
        flaky
            .broken
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let failed = writer.run(job()).await.unwrap_err();
        assert!(failed.0.contains("no space left"), "{failed:?}");
        flaky
            .broken
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            let after = writer.run(job()).await.unwrap_err();
            assert_ne!(after.0, "stopped", "the writer answers, with the error");
        }
    }
}
