//! The durable spool: interactions waiting to be shipped, and the dead letters the Feature
//! Store refused. A redb database, written through group commit: `append` returns only once
//! the interactions are fsynced, and many concurrent appends share one fsync.
//!
//! A storage fault (a full disk, a failed fsync) makes redb refuse every later operation
//! until the database is opened again, so the spool never carries on as if nothing happened:
//! the first failing operation marks it unhealthy (the logger then reports NOT_SERVING and
//! `Log` answers UNAVAILABLE, which callers retry), and [`Spool::recover`] closes and reopens
//! the database with backoff until it works again. What was acknowledged before the fault is
//! on disk and is shipped after the reopen; the shipper starts over from the oldest entry, so
//! entries whose removal failed ship again (a repeat is harmless).

mod dead_letters;
mod store;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prost::Message;
use proto::interaction::v1::Interaction;
use redb::ReadableDatabase;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use dead_letters::{DeadLetter, DeadLetterPage};
pub use store::FILE;
use store::{Contents, PENDING, Store, storage};

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({0})")]
    Full(String),
    /// The storage failed and the spool is being reopened: retry later.
    #[error("the spool is recovering from a storage fault")]
    Recovering,
    #[error("spool storage ({what})")]
    Storage {
        what: &'static str,
        #[source]
        source: Arc<redb::Error>,
    },
    #[error("spool files ({what})")]
    Io {
        what: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("the spool writer stopped")]
    Stopped,
}

impl From<redb::Error> for SpoolError {
    fn from(e: redb::Error) -> Self {
        SpoolError::Storage {
            what: "write",
            source: Arc::new(e),
        }
    }
}

impl SpoolError {
    /// The storage itself failed (as opposed to a full spool, or one already recovering).
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            SpoolError::Storage { .. } | SpoolError::Io { .. } | SpoolError::Stopped
        )
    }

    /// The file is not a spool redb can read: corrupt, or of a format it cannot open.
    fn is_corruption(&self) -> bool {
        match self {
            // redb says "Not a redb database" as an I/O error of kind InvalidData.
            SpoolError::Storage { source, .. } => match &**source {
                redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => true,
                redb::Error::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
                _ => false,
            },
            _ => false,
        }
    }
}

/// How much a spool may hold: unshipped interactions, and dead letters (which have limits of
/// their own: a flood of refused records cannot take the room live ones need).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_records: u64,
    pub max_bytes: u64,
    pub dead_max_records: u64,
    pub dead_max_bytes: u64,
}

impl Limits {
    /// No limits (an adopted spool: nothing new is written to it).
    pub const NONE: Limits = Limits {
        max_records: u64::MAX,
        max_bytes: u64::MAX,
        dead_max_records: u64::MAX,
        dead_max_bytes: u64::MAX,
    };
}

/// The spool's counters, kept in memory (the gauges and the limits read them).
#[derive(Default)]
struct Counts {
    depth: AtomicU64,
    bytes: AtomicU64,
    dead: AtomicU64,
    dead_bytes: AtomicU64,
}

impl Counts {
    fn set(&self, c: Contents) {
        self.depth.store(c.depth, Ordering::Relaxed);
        self.bytes.store(c.bytes, Ordering::Relaxed);
        self.dead.store(c.dead, Ordering::Relaxed);
        self.dead_bytes.store(c.dead_bytes, Ordering::Relaxed);
    }
}

/// One pending entry the spool holds but cannot decode.
#[derive(Debug)]
pub struct Undecodable {
    pub key: u64,
    pub reason: String,
}

/// A read of pending entries: those that decode, and those that do not (to be dead-lettered
/// with the reason instead of stopping everything behind them).
#[derive(Debug, Default)]
pub struct Pending {
    pub entries: Vec<(u64, Interaction)>,
    pub undecodable: Vec<Undecodable>,
}

pub struct Spool {
    file: PathBuf,
    quarantine: PathBuf,
    store: RwLock<Option<Arc<Store>>>,
    counts: Counts,
    limits: Limits,
    /// The logger's own spool publishes the spool gauges; an adopted one does not.
    gauges: bool,
    healthy: watch::Sender<bool>,
    faulted: Notify,
    /// Bumped at every reopen (and dead-letter change): readers start over from the oldest
    /// entry.
    generation: AtomicU64,
}

impl Spool {
    /// Opens (or creates) the logger's own spool in `dir`; an unreadable spool file is moved
    /// into `quarantine`, loudly, and a fresh spool made.
    pub fn open(dir: &Path, quarantine: &Path, limits: Limits) -> Result<Self, SpoolError> {
        Self::open_with(dir, quarantine, limits, true)
    }

    /// Opens another logger's spool to ship what it holds (no limits, no gauges); an unreadable
    /// one is moved into `quarantine` like one's own.
    pub fn open_adopted(dir: &Path, quarantine: &Path) -> Result<Self, SpoolError> {
        Self::open_with(dir, quarantine, Limits::NONE, false)
    }

    fn open_with(
        dir: &Path,
        quarantine: &Path,
        limits: Limits,
        gauges: bool,
    ) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::Io {
            what: "creating the spool folder",
            source: Arc::new(e),
        })?;
        let file = dir.join(FILE);
        let (store, contents, _) = Store::open_or_quarantine(&file, quarantine)?;
        let spool = Spool {
            file,
            quarantine: quarantine.to_owned(),
            store: RwLock::new(Some(Arc::new(store))),
            counts: Counts::default(),
            limits,
            gauges,
            healthy: watch::Sender::new(true),
            faulted: Notify::new(),
            generation: AtomicU64::new(0),
        };
        spool.counts.set(contents);
        spool.publish();
        if gauges {
            metrics::gauge!("logger_spool_healthy").set(1.0);
        }
        Ok(spool)
    }

    fn publish(&self) {
        if !self.gauges {
            return;
        }
        let c = &self.counts;
        metrics::gauge!("logger_spool_depth").set(c.depth.load(Ordering::Relaxed) as f64);
        metrics::gauge!("logger_spool_bytes").set(c.bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!("logger_dead_letters").set(c.dead.load(Ordering::Relaxed) as f64);
        metrics::gauge!("logger_dead_letter_bytes")
            .set(c.dead_bytes.load(Ordering::Relaxed) as f64);
    }

    pub fn depth(&self) -> u64 {
        self.counts.depth.load(Ordering::Relaxed)
    }

    /// Dead letters held (counted at open and at every change).
    pub fn dead_letter_count(&self) -> u64 {
        self.counts.dead.load(Ordering::Relaxed)
    }

    /// Whether the storage works (false from a fault until the reopen that clears it).
    pub fn healthy(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }

    /// Changes whenever readers should start over from the oldest entry.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The open database, or `Recovering` while it is being reopened.
    fn store(&self) -> Result<Arc<Store>, SpoolError> {
        self.store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(SpoolError::Recovering)
    }

    /// Passes `result` on; a storage fault first marks the spool unhealthy and wakes
    /// [`Spool::recover`].
    fn checked<T>(&self, result: Result<T, SpoolError>) -> Result<T, SpoolError> {
        if let Err(e) = &result
            && e.is_fault()
            && self.healthy.send_replace(false)
        {
            tracing::error!(error = %error_chain(e), spool = %self.file.display(), "spool storage failed: not serving until it is reopened");
            metrics::counter!("logger_spool_faults_total").increment(1);
            if self.gauges {
                metrics::gauge!("logger_spool_healthy").set(0.0);
            }
            self.faulted.notify_one();
        }
        result
    }

    /// Appends durably (fsync) or refuses with `Full` before writing anything.
    pub async fn append(&self, interactions: Vec<Interaction>) -> Result<(), SpoolError> {
        let encoded: Vec<Vec<u8>> = interactions.iter().map(Message::encode_to_vec).collect();
        let size: u64 = encoded.iter().map(|e| e.len() as u64).sum();
        let count = encoded.len() as u64;
        let (depth, bytes) = (self.depth(), self.counts.bytes.load(Ordering::Relaxed));
        if depth + count > self.limits.max_records {
            return Err(SpoolError::Full(format!(
                "{depth} records, limit {}",
                self.limits.max_records
            )));
        }
        if bytes + size > self.limits.max_bytes {
            return Err(SpoolError::Full(format!(
                "{bytes} bytes, limit {}",
                self.limits.max_bytes
            )));
        }
        let store = self.store()?;
        let written = store
            .writer
            .run(Box::new(move |txn, next| {
                let mut table = txn.open_table(PENDING).map_err(storage("append"))?;
                for e in &encoded {
                    table
                        .insert(next.0, e.as_slice())
                        .map_err(storage("append"))?;
                    next.0 += 1;
                }
                Ok(())
            }))
            .await;
        self.checked(written)?;
        // Counted once committed: a failed commit leaves the counters as they were.
        self.counts.depth.fetch_add(count, Ordering::Relaxed);
        self.counts.bytes.fetch_add(size, Ordering::Relaxed);
        self.publish();
        Ok(())
    }

    /// Up to `limit` pending entries with keys after `after` (from the oldest, when `None`).
    /// Blocking file I/O: call it off the async workers.
    pub fn pending_after(&self, after: Option<u64>, limit: usize) -> Result<Pending, SpoolError> {
        let read = || {
            let store = self.store()?;
            let txn = store.db.begin_read().map_err(storage("read"))?;
            let table = txn.open_table(PENDING).map_err(storage("read"))?;
            let range = match after {
                Some(k) => table.range(k + 1..),
                None => table.range(0..),
            }
            .map_err(storage("read"))?;
            let mut out = Pending::default();
            for entry in range.take(limit) {
                let (k, v) = entry.map_err(storage("read"))?;
                match Interaction::decode(v.value()) {
                    Ok(i) => out.entries.push((k.value(), i)),
                    Err(e) => out.undecodable.push(Undecodable {
                        key: k.value(),
                        reason: format!("the spool entry does not decode as an interaction: {e}"),
                    }),
                }
            }
            Ok(out)
        };
        self.checked(read())
    }

    /// The oldest pending interaction's event time (blocking: off the async workers).
    pub fn oldest_event_time(&self) -> Result<Option<String>, SpoolError> {
        Ok(self
            .pending_after(None, 1)?
            .entries
            .into_iter()
            .next()
            .map(|(_, i)| i.event_time))
    }

    /// Shipped: forget them, in one commit.
    pub async fn remove_many(&self, keys: Vec<u64>) -> Result<(), SpoolError> {
        let store = self.store()?;
        let removed = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let counts = Arc::clone(&removed);
        let done = store
            .writer
            .run(Box::new(move |txn, _| {
                let mut table = txn.open_table(PENDING).map_err(storage("remove"))?;
                let (mut n, mut bytes) = (0, 0);
                for key in keys {
                    if let Some(v) = table.remove(key).map_err(storage("remove"))? {
                        n += 1;
                        bytes += v.value().len() as u64;
                    }
                }
                counts.0.store(n, Ordering::Relaxed);
                counts.1.store(bytes, Ordering::Relaxed);
                Ok(())
            }))
            .await;
        self.checked(done)?;
        self.forget(
            removed.0.load(Ordering::Relaxed),
            removed.1.load(Ordering::Relaxed),
        );
        Ok(())
    }

    /// After a committed removal of `count` records of `bytes` in all.
    fn forget(&self, count: u64, bytes: u64) {
        if count > 0 {
            self.counts.depth.fetch_sub(count, Ordering::Relaxed);
            self.counts.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        self.publish();
    }

    /// Reopens the database after every storage fault, with backoff (100 ms doubling to 5 s),
    /// until `stop`. A fault that outlasts `give_up` is an error: the logger exits non-zero
    /// and its supervisor restarts it (the spool is shipped after that start, or adopted).
    pub async fn recover(
        self: Arc<Self>,
        stop: CancellationToken,
        give_up: Duration,
    ) -> Result<(), SpoolError> {
        loop {
            tokio::select! {
                _ = self.faulted.notified() => {}
                _ = stop.cancelled() => return Ok(()),
            }
            let since = Instant::now();
            let mut backoff = Duration::from_millis(100);
            loop {
                let me = Arc::clone(&self);
                let reopened = blocking(move || me.reopen()).await;
                match reopened {
                    Ok(()) => {
                        tracing::info!(spool = %self.file.display(), after = ?since.elapsed(), pending = self.depth(), "spool reopened: serving again");
                        break;
                    }
                    Err(e) if since.elapsed() >= give_up => {
                        tracing::error!(error = %error_chain(&e), after = ?since.elapsed(), "the spool cannot be reopened: giving up so that the logger is restarted");
                        return Err(e);
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), retry_in = ?backoff, "the spool cannot be reopened yet");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Closes the database (waiting for the operations that still hold it) and opens it again.
    fn reopen(&self) -> Result<(), SpoolError> {
        let old = self.store.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(old) = old {
            // Operations under way hold it for a moment (they fail, the writer answers them).
            let deadline = Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(old); // stops the writer thread and closes the file
        }
        let (store, contents, _) = Store::open_or_quarantine(&self.file, &self.quarantine)?;
        // Opening reads; serving writes. Serve again only once a write the size of a large
        // batch commits (a disk that is still full fails it, and the spool stays not serving).
        store.probe()?;
        self.counts.set(contents);
        *self.store.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(store));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.publish();
        if self.gauges {
            metrics::gauge!("logger_spool_healthy").set(1.0);
        }
        self.healthy.send_replace(true);
        Ok(())
    }
}

/// Runs spool work that blocks (file reads, opening, fsyncs of other files) on the blocking
/// pool, never on an async worker; a task that panicked is `Stopped`.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or(Err(SpoolError::Stopped))
}

/// An error with its causes, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
