//! The durable spool: interactions waiting to be shipped, and the dead letters the Feature
//! Store refused. A redb database, written through group commit: `append` returns only once
//! the interactions are fsynced, and many concurrent appends share one fsync.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use group_commit::GroupCommit;
use prost::Message;
use proto::interaction::v1::Interaction;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const DEAD_REASON: TableDefinition<u64, &str> = TableDefinition::new("dead_letter_reasons");

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({0})")]
    Full(String),
    #[error("spool storage: {0}")]
    Storage(String),
}

impl From<redb::Error> for SpoolError {
    fn from(e: redb::Error) -> Self {
        SpoolError::Storage(e.to_string())
    }
}

fn storage<E: Into<redb::Error>>(e: E) -> SpoolError {
    SpoolError::from(e.into())
}

/// The writer's context: the next sequence number for appended interactions.
struct Next(u64);

pub struct Spool {
    db: Arc<redb::Database>,
    writer: GroupCommit<Next, SpoolError>,
    depth: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    max_records: u64,
    max_bytes: u64,
    /// The logger's own spool publishes the spool gauges; an adopted one does not.
    gauges: bool,
}

pub use dead_letters::DeadLetter;

impl Spool {
    /// Opens (or creates) the logger's own spool in `dir`.
    pub fn open(dir: &Path, max_records: u64, max_bytes: u64) -> Result<Self, SpoolError> {
        Self::open_with(dir, max_records, max_bytes, true)
    }

    /// Opens another logger's spool to ship what it holds (no limits, no gauges).
    pub fn open_adopted(dir: &Path) -> Result<Self, SpoolError> {
        Self::open_with(dir, u64::MAX, u64::MAX, false)
    }

    fn open_with(
        dir: &Path,
        max_records: u64,
        max_bytes: u64,
        gauges: bool,
    ) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SpoolError::Storage(format!("{}: {e}", dir.display())))?;
        // A bounded page cache keeps memory flat however deep the spool gets.
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(8 << 20)
                .create(dir.join("spool.redb"))
                .map_err(storage)?,
        );
        let (mut next, mut depth, mut bytes) = (0, 0, 0);
        {
            let txn = db.begin_write().map_err(storage)?;
            {
                let pending = txn.open_table(PENDING).map_err(storage)?;
                txn.open_table(DEAD).map_err(storage)?;
                txn.open_table(DEAD_REASON).map_err(storage)?;
                for entry in pending.iter().map_err(storage)? {
                    let (k, v) = entry.map_err(storage)?;
                    next = next.max(k.value() + 1);
                    depth += 1;
                    bytes += v.value().len() as u64;
                }
                let dead = txn.open_table(DEAD).map_err(storage)?;
                if let Some((k, _)) = dead.last().map_err(storage)? {
                    next = next.max(k.value() + 1);
                }
            }
            txn.commit().map_err(storage)?;
        }
        let writer = GroupCommit::start(
            "spool-writer",
            Arc::clone(&db),
            Next(next),
            4096,
            || SpoolError::Storage("the spool writer stopped".into()),
            "logger_spool_batch_size",
        )
        .map_err(|e| SpoolError::Storage(e.to_string()))?;
        let spool = Spool {
            db,
            writer,
            depth: Arc::new(AtomicU64::new(depth)),
            bytes: Arc::new(AtomicU64::new(bytes)),
            max_records,
            max_bytes,
            gauges,
        };
        spool.publish();
        Ok(spool)
    }

    fn publish(&self) {
        if !self.gauges {
            return;
        }
        metrics::gauge!("logger_spool_depth").set(self.depth.load(Ordering::Relaxed) as f64);
        metrics::gauge!("logger_spool_bytes").set(self.bytes.load(Ordering::Relaxed) as f64);
    }

    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Appends durably (fsync) or refuses with `Full` before writing anything.
    pub async fn append(&self, interactions: Vec<Interaction>) -> Result<(), SpoolError> {
        let encoded: Vec<Vec<u8>> = interactions.iter().map(Message::encode_to_vec).collect();
        let size: u64 = encoded.iter().map(|e| e.len() as u64).sum();
        let count = encoded.len() as u64;
        if self.depth.load(Ordering::Relaxed) + count > self.max_records {
            return Err(SpoolError::Full(format!(
                "{} records, limit {}",
                self.depth(),
                self.max_records
            )));
        }
        if self.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
            return Err(SpoolError::Full(format!(
                "{} bytes, limit {}",
                self.bytes.load(Ordering::Relaxed),
                self.max_bytes
            )));
        }
        self.writer
            .run(Box::new(move |txn, next| {
                let mut table = txn.open_table(PENDING).map_err(storage)?;
                for e in &encoded {
                    table.insert(next.0, e.as_slice()).map_err(storage)?;
                    next.0 += 1;
                }
                Ok(())
            }))
            .await?;
        // Counted once committed: a failed commit leaves the counters as they were.
        self.depth.fetch_add(count, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.publish();
        Ok(())
    }

    /// Up to `limit` pending interactions with keys after `after` (all, when `None`).
    pub fn pending_after(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Interaction)>, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(PENDING).map_err(storage)?;
        let range = match after {
            Some(k) => table.range(k + 1..).map_err(storage)?,
            None => table.range(0..).map_err(storage)?,
        };
        let mut out = Vec::new();
        for entry in range.take(limit) {
            let (k, v) = entry.map_err(storage)?;
            let interaction = Interaction::decode(v.value()).map_err(|e| {
                SpoolError::Storage(format!("corrupt spool entry {}: {e}", k.value()))
            })?;
            out.push((k.value(), interaction));
        }
        Ok(out)
    }

    /// The oldest pending interaction's event time.
    pub fn oldest_event_time(&self) -> Result<Option<String>, SpoolError> {
        Ok(self
            .pending_after(None, 1)?
            .into_iter()
            .next()
            .map(|(_, i)| i.event_time))
    }

    /// Shipped: forget them, in one commit.
    pub async fn remove_many(&self, keys: Vec<u64>) -> Result<(), SpoolError> {
        let removed = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let counts = Arc::clone(&removed);
        self.writer
            .run(Box::new(move |txn, _| {
                let mut table = txn.open_table(PENDING).map_err(storage)?;
                let (mut n, mut bytes) = (0, 0);
                for key in keys {
                    if let Some(v) = table.remove(key).map_err(storage)? {
                        n += 1;
                        bytes += v.value().len() as u64;
                    }
                }
                counts.0.store(n, Ordering::Relaxed);
                counts.1.store(bytes, Ordering::Relaxed);
                Ok(())
            }))
            .await?;
        self.forget(
            removed.0.load(Ordering::Relaxed),
            removed.1.load(Ordering::Relaxed),
        );
        Ok(())
    }

    /// After a committed removal of `count` records of `bytes` in all.
    fn forget(&self, count: u64, bytes: u64) {
        if count > 0 {
            self.depth.fetch_sub(count, Ordering::Relaxed);
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        self.publish();
    }
}

mod dead_letters;
