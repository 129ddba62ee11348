//! The spool's dead letters: interactions the Feature Store refused as invalid, kept with the
//! reason until they are listed, replayed, or taken by an adopting logger.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prost::Message;
use proto::interaction::v1::Interaction;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{DEAD, DEAD_REASON, PENDING, Spool, SpoolError, storage};

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

impl Spool {
    /// Refused by the Feature Store: move it to the dead letters with the reason.
    pub async fn dead_letter(&self, key: u64, reason: String) -> Result<(), SpoolError> {
        let removed = Arc::new(AtomicU64::new(0));
        let size = Arc::clone(&removed);
        self.writer
            .run(Box::new(move |txn, _| {
                let mut pending = txn.open_table(PENDING).map_err(storage)?;
                let Some(value) = pending
                    .remove(key)
                    .map_err(storage)?
                    .map(|v| v.value().to_vec())
                else {
                    return Ok(());
                };
                size.store(value.len() as u64 + 1, Ordering::Relaxed);
                txn.open_table(DEAD)
                    .map_err(storage)?
                    .insert(key, value.as_slice())
                    .map_err(storage)?;
                txn.open_table(DEAD_REASON)
                    .map_err(storage)?
                    .insert(key, reason.as_str())
                    .map_err(storage)?;
                Ok(())
            }))
            .await?;
        let size_plus_one = removed.load(Ordering::Relaxed);
        self.forget(
            u64::from(size_plus_one > 0),
            size_plus_one.saturating_sub(1),
        );
        Ok(())
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let dead = txn.open_table(DEAD).map_err(storage)?;
        let reasons = txn.open_table(DEAD_REASON).map_err(storage)?;
        let mut out = Vec::new();
        for entry in dead.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            let i = Interaction::decode(v.value()).unwrap_or_default();
            let reason = reasons
                .get(k.value())
                .map_err(storage)?
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
        Ok(out)
    }

    pub fn dead_letter_count(&self) -> u64 {
        self.db
            .begin_read()
            .ok()
            .and_then(|t| t.open_table(DEAD).ok())
            .and_then(|t| t.len().ok())
            .unwrap_or(0)
    }

    /// Moves every dead letter back to the pending queue (new keys, same interaction id and
    /// event time); returns how many.
    pub async fn replay_dead_letters(&self) -> Result<u64, SpoolError> {
        let (moved, moved_bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counter, byte_counter) = (Arc::clone(&moved), Arc::clone(&moved_bytes));
        self.writer
            .run(Box::new(move |txn, next| {
                let mut dead = txn.open_table(DEAD).map_err(storage)?;
                let mut reasons = txn.open_table(DEAD_REASON).map_err(storage)?;
                let mut pending = txn.open_table(PENDING).map_err(storage)?;
                let all: Vec<(u64, Vec<u8>)> = dead
                    .iter()
                    .map_err(storage)?
                    .map(|e| e.map(|(k, v)| (k.value(), v.value().to_vec())))
                    .collect::<Result<_, _>>()
                    .map_err(storage)?;
                for (k, v) in all {
                    pending.insert(next.0, v.as_slice()).map_err(storage)?;
                    next.0 += 1;
                    dead.remove(k).map_err(storage)?;
                    reasons.remove(k).map_err(storage)?;
                    counter.fetch_add(1, Ordering::Relaxed);
                    byte_counter.fetch_add(v.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            }))
            .await?;
        let n = moved.load(Ordering::Relaxed);
        self.depth.fetch_add(n, Ordering::Relaxed);
        self.bytes
            .fetch_add(moved_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        self.publish();
        Ok(n)
    }

    /// Removes every dead letter and returns it (the encoded interaction and the reason), for
    /// an adopting logger to keep in its own spool.
    pub async fn take_dead_letters(&self) -> Result<Vec<(Vec<u8>, String)>, SpoolError> {
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = Arc::clone(&taken);
        self.writer
            .run(Box::new(move |txn, _| {
                let mut dead = txn.open_table(DEAD).map_err(storage)?;
                let mut reasons = txn.open_table(DEAD_REASON).map_err(storage)?;
                let mut all = Vec::new();
                for entry in dead.iter().map_err(storage)? {
                    let (k, v) = entry.map_err(storage)?;
                    all.push((k.value(), v.value().to_vec()));
                }
                let mut out = out.lock().expect("dead letters");
                for (k, v) in all {
                    dead.remove(k).map_err(storage)?;
                    let reason = reasons
                        .remove(k)
                        .map_err(storage)?
                        .map(|r| r.value().to_owned())
                        .unwrap_or_default();
                    out.push((v, reason));
                }
                Ok(())
            }))
            .await?;
        Ok(std::mem::take(&mut *taken.lock().expect("dead letters")))
    }

    /// Keeps dead letters taken from an adopted spool (new keys, same contents and reasons).
    pub async fn import_dead_letters(
        &self,
        letters: Vec<(Vec<u8>, String)>,
    ) -> Result<(), SpoolError> {
        if letters.is_empty() {
            return Ok(());
        }
        self.writer
            .run(Box::new(move |txn, next| {
                let mut dead = txn.open_table(DEAD).map_err(storage)?;
                let mut reasons = txn.open_table(DEAD_REASON).map_err(storage)?;
                for (v, reason) in &letters {
                    dead.insert(next.0, v.as_slice()).map_err(storage)?;
                    reasons.insert(next.0, reason.as_str()).map_err(storage)?;
                    next.0 += 1;
                }
                Ok(())
            }))
            .await
    }
}
