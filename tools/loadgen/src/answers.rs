//! What the clients were answered, and whether the feature store holds it: `http --answers`
//! writes one `interaction_id,probability` line per predicted row of every 200 answer, and
//! `verify` reads each one back (BatchGetRecord, 100 ids a call) and compares the prediction.

use std::{
    collections::HashMap,
    io::{BufRead, Write},
    path::Path,
    sync::{Arc, Mutex},
};

use aws_sdk_sagemakerfeaturestoreruntime::types::BatchGetRecordIdentifier;

/// Appends answers to a file (buffered; flushed when the last handle goes).
#[derive(Clone)]
pub struct Writer(Arc<Mutex<std::io::BufWriter<std::fs::File>>>);

#[derive(serde::Deserialize)]
struct Answer {
    predictions: Vec<Row>,
}

#[derive(serde::Deserialize)]
struct Row {
    interaction_id: String,
    probability: f64,
}

impl Writer {
    pub fn create(path: std::path::PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("--answers {}: {e}", path.display()))?;
        Ok(Writer(Arc::new(Mutex::new(std::io::BufWriter::new(file)))))
    }

    /// One 200 answer's body: a line per row. A body that is not a prediction is an error
    /// of the target, said on stderr (the run still counts it as answered).
    pub fn record(&self, body: &[u8]) {
        let answer: Answer = match serde_json::from_slice(body) {
            Ok(a) => a,
            Err(e) => {
                eprintln!(
                    "an answer without predictions ({e}): {}",
                    String::from_utf8_lossy(body)
                );
                return;
            }
        };
        let mut out = self.0.lock().expect("answers file");
        for row in answer.predictions {
            let _ = writeln!(out, "{},{}", row.interaction_id, row.probability);
        }
    }
}

/// Every answer in `path` against the feature group; prints `{answers, found, missing,
/// mismatched, examples}` and fails when anything is missing or differs.
pub async fn verify(path: &Path, feature_group: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("--answers {}: {e}", path.display()))?;
    let mut expected: Vec<(String, f64)> = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let (id, p) = line
            .split_once(',')
            .ok_or_else(|| anyhow::anyhow!("not an answer line: {line:?}"))?;
        expected.push((id.to_owned(), p.parse()?));
    }
    let client = aws_sdk_sagemakerfeaturestoreruntime::Client::new(&crate::aws().await?);
    let chunks: Vec<Vec<(String, f64)>> = expected.chunks(100).map(<[_]>::to_vec).collect();
    let results = Arc::new(Mutex::new((
        0usize,
        Vec::<String>::new(),
        Vec::<String>::new(),
    )));
    let queue = Arc::new(Mutex::new(chunks));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (client, queue, results) = (client.clone(), Arc::clone(&queue), Arc::clone(&results));
        let group = feature_group.to_owned();
        workers.spawn(async move {
            loop {
                let Some(chunk) = queue.lock().expect("queue").pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                let found = fetch(&client, &group, &chunk).await?;
                let mut r = results.lock().expect("results");
                for (id, p) in chunk {
                    match found.get(&id) {
                        Some(stored) if *stored == p => r.0 += 1,
                        Some(stored) => r.2.push(format!("{id}: answered {p}, stored {stored}")),
                        None => r.1.push(id),
                    }
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let (found, missing, mismatched) = std::mem::take(&mut *results.lock().expect("results"));
    println!(
        "{}",
        serde_json::json!({
            "answers": expected.len(),
            "found": found,
            "missing": missing.len(),
            "mismatched": mismatched.len(),
            "examples": missing.iter().take(5).chain(mismatched.iter().take(5)).collect::<Vec<_>>(),
        })
    );
    if !missing.is_empty() || !mismatched.is_empty() {
        anyhow::bail!(
            "{} answered interactions missing from {feature_group}, {} stored with another prediction",
            missing.len(),
            mismatched.len()
        );
    }
    Ok(())
}

/// The stored prediction of each id the store holds (retrying what it leaves unprocessed).
async fn fetch(
    client: &aws_sdk_sagemakerfeaturestoreruntime::Client,
    group: &str,
    chunk: &[(String, f64)],
) -> anyhow::Result<HashMap<String, f64>> {
    let mut out = HashMap::new();
    let mut ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
    for _attempt in 0..10 {
        if ids.is_empty() {
            break;
        }
        let identifier = BatchGetRecordIdentifier::builder()
            .feature_group_name(group)
            .set_record_identifiers_value_as_string(Some(std::mem::take(&mut ids)))
            .feature_names("interaction_id")
            .feature_names("prediction")
            .build();
        let answer = client
            .batch_get_record()
            .identifiers(identifier)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "BatchGetRecord: {}",
                    aws_sdk_sagemakerfeaturestoreruntime::error::DisplayErrorContext(&e)
                )
            })?;
        for record in answer.records() {
            let value = |name: &str| {
                record
                    .record()
                    .iter()
                    .find(|f| f.feature_name() == Some(name))
                    .and_then(|f| f.value_as_string())
            };
            if let (Some(id), Some(p)) = (value("interaction_id"), value("prediction")) {
                out.insert(id.to_owned(), p.parse().unwrap_or(f64::NAN));
            }
        }
        for unprocessed in answer.unprocessed_identifiers() {
            ids.extend(
                unprocessed
                    .record_identifiers_value_as_string()
                    .iter()
                    .cloned(),
            );
        }
    }
    Ok(out)
}
