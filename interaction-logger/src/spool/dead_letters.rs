//! The spool's dead letters: interactions the Feature Store refused as invalid (or entries that
//! do not decode at all), kept with the reason until they are listed, replayed, deleted, or
//! taken by an adopting logger. They have limits of their own (`Limits::dead_max_*`): when
//! they are full a newly refused record stays pending, counted and logged, rather than
//! taking room from live interactions or being thrown away.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prost::Message;
use proto::interaction::v1::Interaction;
use redb::{ReadableDatabase, ReadableTable};

use super::{
    Spool, SpoolError,
    store::{DEAD, DEAD_IDS, DEAD_REASON, PENDING, storage},
};

/// One dead letter: the interaction and why the Feature Store refused it.
#[derive(Debug, serde::Serialize)]
pub struct DeadLetter {
    pub key: u64,
    pub reason: String,
    pub interaction_id: String,
    pub event_time: String,
    pub features_csv: String,
    pub prediction: f64,
}

/// A page of the listing: `next` is the `after` of the following page (none: the last).
#[derive(Debug, serde::Serialize)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetter>,
    pub next: Option<u64>,
}

/// A dead letter taken from another spool: the encoded interaction and the reason.
pub type Letter = (Vec<u8>, String);

impl Spool {
    fn dead_full(&self, more: u64, bytes: u64) -> Option<String> {
        let (n, b) = (
            self.counts.dead.load(Ordering::Relaxed),
            self.counts.dead_bytes.load(Ordering::Relaxed),
        );
        if n + more > self.limits.dead_max_records {
            Some(format!(
                "{n} dead letters, limit {}",
                self.limits.dead_max_records
            ))
        } else if b + bytes > self.limits.dead_max_bytes {
            Some(format!(
                "{b} bytes of dead letters, limit {}",
                self.limits.dead_max_bytes
            ))
        } else {
            None
        }
    }

    /// Refused by the Feature Store (or undecodable): move the pending entry `key` to the
    /// dead letters with the reason. `Full` when the dead letters are at their limit: the entry
    /// then stays pending.
    pub async fn dead_letter(&self, key: u64, reason: String) -> Result<(), SpoolError> {
        if let Some(full) = self.dead_full(1, 0) {
            return Err(SpoolError::Full(full));
        }
        let store = self.store()?;
        let moved = Arc::new(AtomicU64::new(0));
        let size = Arc::clone(&moved);
        let done = store
            .writer
            .run(Box::new(move |txn, _| {
                let mut pending = txn.open_table(PENDING).map_err(storage("dead-letter"))?;
                let Some(value) = pending
                    .remove(key)
                    .map_err(storage("dead-letter"))?
                    .map(|v| v.value().to_vec())
                else {
                    return Ok(());
                };
                size.store(value.len() as u64 + 1, Ordering::Relaxed);
                put_dead(txn, key, &value, &reason)
            }))
            .await;
        self.checked(done)?;
        let size_plus_one = moved.load(Ordering::Relaxed);
        if size_plus_one > 0 {
            let bytes = size_plus_one - 1;
            self.forget(1, bytes);
            self.counts.dead.fetch_add(1, Ordering::Relaxed);
            self.counts.dead_bytes.fetch_add(bytes, Ordering::Relaxed);
            self.publish();
        }
        Ok(())
    }

    /// A page of dead letters with keys after `after`, at most `limit` (blocking: off the
    /// async workers).
    pub fn dead_letters(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<DeadLetterPage, SpoolError> {
        let read = || {
            let store = self.store()?;
            let txn = store.db.begin_read().map_err(storage("list"))?;
            let dead = txn.open_table(DEAD).map_err(storage("list"))?;
            let reasons = txn.open_table(DEAD_REASON).map_err(storage("list"))?;
            let range = match after {
                Some(k) => dead.range(k + 1..),
                None => dead.range(0..),
            }
            .map_err(storage("list"))?;
            let mut out = Vec::new();
            let mut more = false;
            for entry in range {
                if out.len() == limit {
                    more = true;
                    break;
                }
                let (k, v) = entry.map_err(storage("list"))?;
                // an undecodable entry is listed with its reason and empty fields
                let i = Interaction::decode(v.value()).unwrap_or_default();
                let reason = reasons
                    .get(k.value())
                    .map_err(storage("list"))?
                    .map(|r| r.value().to_owned())
                    .unwrap_or_default();
                out.push(DeadLetter {
                    key: k.value(),
                    reason,
                    interaction_id: i.interaction_id,
                    event_time: i.event_time,
                    features_csv: i.features_csv,
                    prediction: i.prediction,
                });
            }
            let next = more.then(|| out.last().map(|d| d.key)).flatten();
            Ok(DeadLetterPage {
                dead_letters: out,
                next,
            })
        };
        self.checked(read())
    }

    /// Moves every dead letter back to the pending queue (new keys, same interaction id and
    /// event time); returns how many.
    pub async fn replay_dead_letters(&self) -> Result<u64, SpoolError> {
        let store = self.store()?;
        let (moved, moved_bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counter, byte_counter) = (Arc::clone(&moved), Arc::clone(&moved_bytes));
        let done = store
            .writer
            .run(Box::new(move |txn, next| {
                let all = take_all(txn, |_| true)?;
                let mut pending = txn.open_table(PENDING).map_err(storage("replay"))?;
                for (_, v, _) in all {
                    pending
                        .insert(next.0, v.as_slice())
                        .map_err(storage("replay"))?;
                    next.0 += 1;
                    counter.fetch_add(1, Ordering::Relaxed);
                    byte_counter.fetch_add(v.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            }))
            .await;
        self.checked(done)?;
        let (n, bytes) = (
            moved.load(Ordering::Relaxed),
            moved_bytes.load(Ordering::Relaxed),
        );
        self.counts.depth.fetch_add(n, Ordering::Relaxed);
        self.counts.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.counts.dead.fetch_sub(n, Ordering::Relaxed);
        self.counts.dead_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.publish();
        Ok(n)
    }

    /// Deletes the dead letters with keys up to `through` (once they have been read and dealt
    /// with); returns how many. Room in the dead letters lets records held pending go to them.
    pub async fn delete_dead_letters(&self, through: u64) -> Result<u64, SpoolError> {
        let store = self.store()?;
        let (gone, gone_bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counter, byte_counter) = (Arc::clone(&gone), Arc::clone(&gone_bytes));
        let done = store
            .writer
            .run(Box::new(move |txn, _| {
                for (_, v, _) in take_all(txn, |k| k <= through)? {
                    counter.fetch_add(1, Ordering::Relaxed);
                    byte_counter.fetch_add(v.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            }))
            .await;
        self.checked(done)?;
        let n = gone.load(Ordering::Relaxed);
        self.counts.dead.fetch_sub(n, Ordering::Relaxed);
        self.counts
            .dead_bytes
            .fetch_sub(gone_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        self.publish();
        // Records held pending while the dead letters were full go to them now.
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(n)
    }

    /// Every dead letter, read but left in place, for an adopting logger to import before the
    /// adopted spool is removed (blocking: off the async workers).
    pub fn read_all_dead_letters(&self) -> Result<Vec<Letter>, SpoolError> {
        let read = || {
            let store = self.store()?;
            let txn = store
                .db
                .begin_read()
                .map_err(storage("read dead letters"))?;
            let dead = txn.open_table(DEAD).map_err(storage("read dead letters"))?;
            let reasons = txn
                .open_table(DEAD_REASON)
                .map_err(storage("read dead letters"))?;
            let mut out = Vec::new();
            for entry in dead.iter().map_err(storage("read dead letters"))? {
                let (k, v) = entry.map_err(storage("read dead letters"))?;
                let reason = reasons
                    .get(k.value())
                    .map_err(storage("read dead letters"))?
                    .map(|r| r.value().to_owned())
                    .unwrap_or_default();
                out.push((v.value().to_vec(), reason));
            }
            Ok(out)
        };
        self.checked(read())
    }

    /// Keeps dead letters read from an adopted spool (new keys, same contents and reasons),
    /// skipping any whose interaction is already a dead letter here: an adoption cut short
    /// after its import imports nothing twice. Returns how many were new. `Full` when they do
    /// not fit the limits (nothing is imported then).
    pub async fn import_dead_letters(&self, letters: Vec<Letter>) -> Result<u64, SpoolError> {
        if letters.is_empty() {
            return Ok(0);
        }
        let bytes: u64 = letters.iter().map(|(v, _)| v.len() as u64).sum();
        if let Some(full) = self.dead_full(letters.len() as u64, bytes) {
            return Err(SpoolError::Full(full));
        }
        let store = self.store()?;
        let (added, added_bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counter, byte_counter) = (Arc::clone(&added), Arc::clone(&added_bytes));
        let done = store
            .writer
            .run(Box::new(move |txn, next| {
                let ids = txn.open_table(DEAD_IDS).map_err(storage("import"))?;
                let mut new = Vec::new();
                for (v, reason) in &letters {
                    let id = id_of(v);
                    let known = match &id {
                        Some(id) => ids.get(id.as_str()).map_err(storage("import"))?.is_some(),
                        None => false,
                    };
                    if !known {
                        new.push((v, reason));
                    }
                }
                drop(ids);
                for (v, reason) in new {
                    put_dead(txn, next.0, v, reason)?;
                    next.0 += 1;
                    counter.fetch_add(1, Ordering::Relaxed);
                    byte_counter.fetch_add(v.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            }))
            .await;
        self.checked(done)?;
        let n = added.load(Ordering::Relaxed);
        self.counts.dead.fetch_add(n, Ordering::Relaxed);
        self.counts
            .dead_bytes
            .fetch_add(added_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        self.publish();
        Ok(n)
    }
}

/// The interaction id of an encoded interaction (none when it does not decode or has none).
fn id_of(value: &[u8]) -> Option<String> {
    Interaction::decode(value)
        .ok()
        .map(|i| i.interaction_id)
        .filter(|id| !id.is_empty())
}

/// Stores one dead letter under `key`, with its reason and its interaction id.
fn put_dead(
    txn: &redb::WriteTransaction,
    key: u64,
    value: &[u8],
    reason: &str,
) -> Result<(), SpoolError> {
    txn.open_table(DEAD)
        .map_err(storage("dead-letter"))?
        .insert(key, value)
        .map_err(storage("dead-letter"))?;
    txn.open_table(DEAD_REASON)
        .map_err(storage("dead-letter"))?
        .insert(key, reason)
        .map_err(storage("dead-letter"))?;
    if let Some(id) = id_of(value) {
        txn.open_table(DEAD_IDS)
            .map_err(storage("dead-letter"))?
            .insert(id.as_str(), key)
            .map_err(storage("dead-letter"))?;
    }
    Ok(())
}

/// Removes the dead letters whose key `matches`, with their reasons and ids; returns them.
fn take_all(
    txn: &redb::WriteTransaction,
    matches: impl Fn(u64) -> bool,
) -> Result<Vec<(u64, Vec<u8>, String)>, SpoolError> {
    let mut dead = txn.open_table(DEAD).map_err(storage("take dead letters"))?;
    let mut reasons = txn
        .open_table(DEAD_REASON)
        .map_err(storage("take dead letters"))?;
    let mut ids = txn
        .open_table(DEAD_IDS)
        .map_err(storage("take dead letters"))?;
    let keys: Vec<u64> = dead
        .iter()
        .map_err(storage("take dead letters"))?
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage("take dead letters"))?
        .into_iter()
        .filter(|k| matches(*k))
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let Some(v) = dead
            .remove(k)
            .map_err(storage("take dead letters"))?
            .map(|v| v.value().to_vec())
        else {
            continue;
        };
        let reason = reasons
            .remove(k)
            .map_err(storage("take dead letters"))?
            .map(|r| r.value().to_owned())
            .unwrap_or_default();
        if let Some(id) = id_of(&v) {
            ids.remove(id.as_str())
                .map_err(storage("take dead letters"))?;
        }
        out.push((k, v, reason));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, Spool};
    use proto::interaction::v1::Interaction;

    fn interaction(id: &str) -> Interaction {
        Interaction {
            interaction_id: id.into(),
            ..Default::default()
        }
    }

    /// An adoption that is cut short after importing (the logger killed before the orphan
    /// went) is done again by the next adopter: what it imports a second time is skipped.
    #[tokio::test]
    async fn an_import_repeated_after_a_cut_short_adoption_imports_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let orphan =
            Spool::open_adopted(&dir.path().join("orphan"), &dir.path().join("q")).unwrap();
        orphan
            .append(vec![interaction("a"), interaction("b")])
            .await
            .unwrap();
        for key in [0, 1] {
            orphan
                .dead_letter(key, format!("refused {key}"))
                .await
                .unwrap();
        }
        let own =
            Spool::open(&dir.path().join("own"), &dir.path().join("q"), Limits::NONE).unwrap();
        let letters = orphan.read_all_dead_letters().unwrap();
        assert_eq!(letters.len(), 2);
        assert_eq!(own.import_dead_letters(letters.clone()).await.unwrap(), 2);
        assert_eq!(
            own.import_dead_letters(letters).await.unwrap(),
            0,
            "already imported"
        );
        assert_eq!(own.dead_letter_count(), 2);
        let page = own.dead_letters(None, 10).unwrap();
        let reasons: Vec<&str> = page
            .dead_letters
            .iter()
            .map(|d| d.reason.as_str())
            .collect();
        assert_eq!(reasons, ["refused 0", "refused 1"]);
    }
}
