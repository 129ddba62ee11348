//! The offline store: pending rows become Parquet files in the Glue layout SageMaker uses,
//! `{ResolvedOutputS3Uri}/year=YYYY/month=MM/day=DD/hour=HH/{time}_{16 chars}.parquet`
//! under `{data dir}/s3/`, partitioned by event time, with `write_time`,
//! `api_invocation_time` and `is_deleted` columns added.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Datelike, Timelike, Utc};
use parquet::{
    basic::Compression,
    data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type},
    file::{properties::WriterProperties, writer::SerializedFileWriter},
    schema::parser::parse_message_type,
};
use rand::{Rng, distr::Alphanumeric};
use tokio_util::sync::CancellationToken;

use super::record::{FeatureValue, PendingRow};
use crate::{
    AppState,
    control::{FeatureGroupRecord, FeatureType, feature_groups},
    db::{DbError, OFFLINE_PENDING},
    runtime::artifact,
};

/// Rows read, written as Parquet and removed from the queue at a time: bounds the flusher's
/// memory (rows, their Arrow columns and the encoded file are all held at once).
const BATCH: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}")]
    Path(String),
}

/// Writes pending rows every `interval` until cancelled, then once more.
pub async fn run_flusher(state: Arc<AppState>, interval: Duration, cancel: CancellationToken) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = cancel.cancelled() => true,
        };
        let s = Arc::clone(&state);
        match tokio::task::spawn_blocking(move || flush(&s)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(rows = n, "offline store flushed"),
            Ok(Err(e)) => tracing::error!(error = %e, "offline store flush failed; will retry"),
            Err(e) => tracing::error!(error = %e, "offline store flush panicked"),
        }
        if stop {
            return;
        }
    }
}

/// Writes every pending row; returns how many. The Parquet files are encoded and fsynced
/// outside any write transaction (record writes go on meanwhile); only the removal of the
/// written rows from the queue is one. A crash in between writes those rows again at the
/// next flush: duplicate offline rows, as the offline store's at-least-once delivery allows.
pub fn flush(state: &AppState) -> Result<usize, OfflineError> {
    let _one_at_a_time = state.offline_lock.lock().expect("offline flush lock");
    let mut total = 0;
    loop {
        // Only this flusher removes queued rows, and writers only add new keys: the batch
        // read here is still queued when it is removed below.
        let batch: Vec<(String, PendingRow)> = state.db.read()?.first(OFFLINE_PENDING, BATCH)?;
        // (group, partition hour) -> rows
        let mut files: BTreeMap<(String, i64), Vec<&PendingRow>> = BTreeMap::new();
        for (_, row) in &batch {
            files
                .entry((row.group.clone(), (row.event_time / 3600.0).floor() as i64))
                .or_default()
                .push(row);
        }
        for ((group_name, _), rows) in &files {
            match feature_groups::lookup(state, group_name).ok().flatten() {
                Some(group) if group.resolved_output_uri().is_some() => {
                    write_file(state, &group, rows)?
                }
                _ => {
                    tracing::warn!(group = %group_name, rows = rows.len(), "dropping offline rows of a deleted feature group")
                }
            }
        }
        #[cfg(test)]
        tests::files_written();
        let written = state.db.write(|txn| {
            for (key, _) in &batch {
                txn.remove(OFFLINE_PENDING, key)?;
            }
            Ok::<_, OfflineError>(batch.len())
        })?;
        total += written;
        metrics::counter!("sagemaker_local_offline_rows_written_total").increment(written as u64);
        if written < BATCH {
            return Ok(total);
        }
    }
}

fn write_file(
    state: &AppState,
    group: &FeatureGroupRecord,
    rows: &[&PendingRow],
) -> Result<(), OfflineError> {
    let uri = group.resolved_output_uri().expect("checked by the caller");
    let latest = rows.iter().map(|r| r.event_time).fold(f64::MIN, f64::max);
    let hour = DateTime::<Utc>::from_timestamp((latest / 3600.0).floor() as i64 * 3600, 0)
        .unwrap_or_default();
    let stamp = DateTime::<Utc>::from_timestamp(latest as i64, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ");
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    let partition = format!(
        "{uri}/year={:04}/month={:02}/day={:02}/hour={:02}/{stamp}_{suffix}.parquet",
        hour.year(),
        hour.month(),
        hour.day(),
        hour.hour()
    );
    let path =
        artifact::resolve_s3(&state.settings.data_dir, &partition).map_err(OfflineError::Path)?;
    let dir = path.parent().expect("partition paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| OfflineError::Io(dir.to_owned(), e))?;
    let tmp = path.with_extension("parquet.tmp");
    encode(group, rows, state.now(), &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| OfflineError::Io(path.clone(), e))?;
    Ok(())
}

fn column_type(def: &crate::control::FeatureDefinition) -> &'static str {
    match (def.feature_type, &def.collection_type) {
        (_, Some(_)) | (FeatureType::String, _) => "BYTE_ARRAY",
        (FeatureType::Integral, None) => "INT64",
        (FeatureType::Fractional, None) => "DOUBLE",
    }
}

fn encode(
    group: &FeatureGroupRecord,
    rows: &[&PendingRow],
    write_time: f64,
    path: &Path,
) -> Result<(), OfflineError> {
    let mut schema = String::from("message schema {\n");
    for def in &group.definitions {
        let ty = column_type(def);
        let logical = if ty == "BYTE_ARRAY" { " (UTF8)" } else { "" };
        schema.push_str(&format!("  OPTIONAL {ty} {}{logical};\n", def.feature_name));
    }
    schema.push_str("  REQUIRED INT64 write_time (TIMESTAMP(MILLIS,true));\n");
    schema.push_str("  REQUIRED INT64 api_invocation_time (TIMESTAMP(MILLIS,true));\n");
    schema.push_str("  REQUIRED BOOLEAN is_deleted;\n}\n");
    let schema = Arc::new(parse_message_type(&schema)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(path).map_err(|e| OfflineError::Io(path.to_owned(), e))?;
    let mut writer = SerializedFileWriter::new(file, schema, props)?;
    let mut rg = writer.next_row_group()?;

    let value_of = |row: &PendingRow, name: &str| -> Option<String> {
        row.values
            .iter()
            .find(|v| v.feature_name == name)
            .and_then(
                |v: &FeatureValue| match (&v.value_as_string, &v.value_as_string_list) {
                    (Some(s), _) => Some(s.clone()),
                    (None, Some(list)) => {
                        Some(serde_json::to_string(list).expect("strings serialize"))
                    }
                    _ => None,
                },
            )
    };
    for def in &group.definitions {
        let mut col = rg.next_column()?.expect("one column per feature");
        let raw: Vec<Option<String>> = rows
            .iter()
            .map(|r| value_of(r, &def.feature_name))
            .collect();
        let defs: Vec<i16> = raw.iter().map(|v| i16::from(v.is_some())).collect();
        match column_type(def) {
            "INT64" => {
                let vals: Vec<i64> = raw
                    .iter()
                    .flatten()
                    .map(|v| v.trim().parse().unwrap_or_default())
                    .collect();
                col.typed::<Int64Type>()
                    .write_batch(&vals, Some(&defs), None)?;
            }
            "DOUBLE" => {
                let vals: Vec<f64> = raw
                    .iter()
                    .flatten()
                    .map(|v| v.trim().parse().unwrap_or_default())
                    .collect();
                col.typed::<DoubleType>()
                    .write_batch(&vals, Some(&defs), None)?;
            }
            _ => {
                let vals: Vec<ByteArray> = raw
                    .iter()
                    .flatten()
                    .map(|v| ByteArray::from(v.as_str()))
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&vals, Some(&defs), None)?;
            }
        }
        col.close()?;
    }
    let millis = |t: f64| (t * 1000.0).round() as i64;
    let mut col = rg.next_column()?.expect("write_time column");
    col.typed::<Int64Type>()
        .write_batch(&vec![millis(write_time); rows.len()], None, None)?;
    col.close()?;
    let mut col = rg.next_column()?.expect("api_invocation_time column");
    let times: Vec<i64> = rows.iter().map(|r| millis(r.api_invocation_time)).collect();
    col.typed::<Int64Type>().write_batch(&times, None, None)?;
    col.close()?;
    let mut col = rg.next_column()?.expect("is_deleted column");
    let deleted: Vec<bool> = rows.iter().map(|r| r.is_deleted).collect();
    col.typed::<BoolType>().write_batch(&deleted, None, None)?;
    col.close()?;
    rg.close()?;
    let file = writer.into_inner()?;
    file.sync_all()
        .map_err(|e| OfflineError::Io(path.to_owned(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, mpsc};

    type Hook = Box<dyn Fn() + Send>;
    static FILES_WRITTEN: Mutex<Option<Hook>> = Mutex::new(None);

    /// Called by `flush` once a batch's files are written, before the queue is updated.
    pub(super) fn files_written() {
        if let Some(hook) = FILES_WRITTEN.lock().unwrap().as_ref() {
            hook();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn record_writes_go_on_while_parquet_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::AppState::open(crate::Settings::new(dir.path().join("sml"))).unwrap();
        let boot = Arc::clone(&state);
        // The demo world queues 1,000 offline rows of the training feature group.
        tokio::task::spawn_blocking(move || crate::demo::bootstrap(&boot))
            .await
            .unwrap()
            .unwrap();
        let (done, finished) = mpsc::channel();
        let writer = Arc::clone(&state);
        *FILES_WRITTEN.lock().unwrap() = Some(Box::new(move || {
            // Another write, from another thread, while the flush is at its files. Had the
            // flush held a write transaction here, this would wait for it: forever.
            let (writer, done) = (Arc::clone(&writer), done.clone());
            std::thread::spawn(move || {
                let ok = writer
                    .db
                    .write(|txn| {
                        txn.put(crate::db::CLIENT_TOKENS, "probe", &"x".to_owned())?;
                        Ok::<_, crate::db::DbError>(())
                    })
                    .is_ok();
                let _ = done.send(ok);
            });
            assert_eq!(
                finished.recv_timeout(std::time::Duration::from_secs(10)),
                Ok(true),
                "a write had to wait for the flush"
            );
        }));
        let flushed = tokio::task::spawn_blocking(move || super::flush(&state))
            .await
            .unwrap()
            .unwrap();
        *FILES_WRITTEN.lock().unwrap() = None;
        assert_eq!(flushed, 1000);
    }
}
