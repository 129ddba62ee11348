//! The spool's database on disk: opening it (and counting what it holds), and moving a file
//! that is not a readable database aside under a dated name so that the logger can start on a
//! fresh one instead of refusing to start.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use group_commit::GroupCommit;
use redb::{ReadableTable, TableDefinition};

use super::SpoolError;

pub(super) const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
pub(super) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
pub(super) const DEAD_REASON: TableDefinition<u64, &str> =
    TableDefinition::new("dead_letter_reasons");
/// Interaction id -> dead letter key: an adopted spool's dead letters are imported once, even
/// when an adoption is cut short between the import and the orphan's removal.
pub(super) const DEAD_IDS: TableDefinition<&str, u64> = TableDefinition::new("dead_letter_ids");

/// Where a reopened spool proves it can write again.
const PROBE: TableDefinition<u64, &[u8]> = TableDefinition::new("probe");
/// How much the probe writes: more than a large batch of interactions.
const PROBE_BYTES: usize = 256 << 10;

/// A bounded page cache keeps memory flat however deep the spool gets.
const CACHE_BYTES: usize = 8 << 20;

/// The spool file's name in its folder.
pub const FILE: &str = "spool.redb";

/// The writer's context: the next sequence number for appended interactions.
pub(super) struct Next(pub u64);

/// An open spool database and its one writer.
pub(super) struct Store {
    pub db: Arc<redb::Database>,
    pub writer: GroupCommit<Next, SpoolError>,
}

/// What a spool holds when it is opened.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Contents {
    pub depth: u64,
    pub bytes: u64,
    pub dead: u64,
    pub dead_bytes: u64,
}

pub(super) fn storage<E: Into<redb::Error>>(what: &'static str) -> impl FnOnce(E) -> SpoolError {
    move |e| SpoolError::Storage {
        what,
        source: Arc::new(e.into()),
    }
}

impl Store {
    /// Opens (or creates) the database at `file` with its tables, and counts what it holds.
    pub fn open(file: &Path) -> Result<(Store, Contents), SpoolError> {
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(file)
                .map_err(storage("open"))?,
        );
        let (mut next, mut contents) = (0, Contents::default());
        {
            let txn = db.begin_write().map_err(storage("open"))?;
            {
                let pending = txn.open_table(PENDING).map_err(storage("open"))?;
                let dead = txn.open_table(DEAD).map_err(storage("open"))?;
                txn.open_table(DEAD_REASON).map_err(storage("open"))?;
                txn.open_table(DEAD_IDS).map_err(storage("open"))?;
                for entry in pending.iter().map_err(storage("open"))? {
                    let (k, v) = entry.map_err(storage("open"))?;
                    next = next.max(k.value() + 1);
                    contents.depth += 1;
                    contents.bytes += v.value().len() as u64;
                }
                for entry in dead.iter().map_err(storage("open"))? {
                    let (k, v) = entry.map_err(storage("open"))?;
                    next = next.max(k.value() + 1);
                    contents.dead += 1;
                    contents.dead_bytes += v.value().len() as u64;
                }
            }
            txn.commit().map_err(storage("open"))?;
        }
        let writer = GroupCommit::start(
            "spool-writer",
            Arc::clone(&db),
            Next(next),
            4096,
            || SpoolError::Stopped,
            "logger_spool_batch_size",
        )
        .map_err(|e| SpoolError::Io {
            what: "starting the spool writer",
            source: Arc::new(e),
        })?;
        Ok((Store { db, writer }, contents))
    }

    /// Writes (and then removes) `PROBE_BYTES` in two committed transactions: whether the
    /// storage takes writes again. Blocking: off the async workers.
    pub fn probe(&self) -> Result<(), SpoolError> {
        self.writer.run_blocking(Box::new(|txn, _| {
            txn.open_table(PROBE)
                .map_err(storage("probe"))?
                .insert(0, vec![0x55u8; PROBE_BYTES].as_slice())
                .map_err(storage("probe"))?;
            Ok(())
        }))?;
        self.writer.run_blocking(Box::new(|txn, _| {
            txn.open_table(PROBE)
                .map_err(storage("probe"))?
                .remove(0)
                .map_err(storage("probe"))?;
            Ok(())
        }))
    }

    /// [`Store::open`]; a file that is not a readable spool (corrupt, or of another format) is
    /// moved into `quarantine` under a dated name, loudly, and a fresh spool is made in its
    /// place. Returns where the unreadable one went, if it did.
    pub fn open_or_quarantine(
        file: &Path,
        quarantine: &Path,
    ) -> Result<(Store, Contents, Option<PathBuf>), SpoolError> {
        match Store::open(file) {
            Ok((store, contents)) => Ok((store, contents, None)),
            Err(e) if e.is_corruption() => {
                let aside = quarantine.join(format!(
                    "{}.corrupt-{}",
                    quarantined_name(file),
                    chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
                ));
                std::fs::create_dir_all(quarantine)
                    .and_then(|()| std::fs::rename(file, &aside))
                    .map_err(|io| SpoolError::Io {
                        what: "moving an unreadable spool aside",
                        source: Arc::new(io),
                    })?;
                tracing::error!(spool = %file.display(), moved_to = %aside.display(), error = %e, "the spool file is not readable: moved aside, starting on a fresh spool; what it held is not shipped (inspect the moved file)");
                metrics::counter!("logger_spools_quarantined_total").increment(1);
                let (store, contents) = Store::open(file)?;
                Ok((store, contents, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }
}

/// `{folder}.spool.redb` for a spool folder's file (so files of several spools can share
/// one quarantine folder).
fn quarantined_name(file: &Path) -> String {
    let folder = file
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| FILE.into());
    if folder.is_empty() {
        name
    } else {
        format!("{folder}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_spool_is_moved_aside_and_a_fresh_one_made() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("logger-a");
        std::fs::create_dir_all(&spool).unwrap();
        let file = spool.join(FILE);
        std::fs::write(&file, vec![0x5a; 64 << 10]).unwrap();
        let quarantine = dir.path().join("quarantine");
        let (_store, contents, aside) = Store::open_or_quarantine(&file, &quarantine).unwrap();
        let aside = aside.expect("moved aside");
        assert_eq!(contents.depth, 0);
        assert!(aside.starts_with(&quarantine), "{}", aside.display());
        let name = aside.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("logger-a.spool.redb.corrupt-"), "{name}");
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            vec![0x5a; 64 << 10],
            "kept as it was"
        );
        assert!(file.exists(), "a fresh spool in its place");
    }
}
