//! Shipping by BatchWriteRecord: real sagemaker-local and the real logger on 127.0.0.1:0.
//! Every acknowledged interaction arrives once with its own id and EventTime, in calls of up
//! to 25 entries; an entry the store refuses as invalid is dead-lettered with the reason while
//! its neighbours in the same call arrive; with BatchWriteRecord denied (as a narrower IAM
//! policy denies it) the logger falls back to PutRecord, says so, and still delivers all.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{http, metric, wait_delivered};
use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};

const GROUP: &str = "my-mlops-user-interactions-v1";

/// Logs `n` interactions in calls of 10, concurrently; returns what was acknowledged by id.
async fn log(logger: &common::Logger, n: usize, tag: &str) -> BTreeMap<String, Interaction> {
    let client = InteractionLoggerClient::connect(format!("http://{}", logger.grpc))
        .await
        .unwrap();
    let calls = (0..n).step_by(10).map(|from| {
        let mut client = client.clone();
        let sent: Vec<Interaction> = (from..(from + 10).min(n))
            .map(|k| Interaction {
                interaction_id: format!("{tag}-{k}"),
                event_time: event_time(k),
                features_csv: format!("{k},1,2"),
                prediction: k as f64 / 1000.0,
                ..Default::default()
            })
            .collect();
        async move {
            let answer = client
                .log(LogRequest {
                    interactions: sent.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(answer.interaction_ids.len(), sent.len());
            sent.into_iter()
                .map(|i| (i.interaction_id.clone(), i))
                .collect::<Vec<_>>()
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A distinct event time per interaction: now minus `k` milliseconds.
fn event_time(k: usize) -> String {
    (chrono::Utc::now() - chrono::Duration::milliseconds(k as i64))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The logger's metrics: counters since the previous [`Metrics::since`] (the recorder is
/// one per process, and this binary runs three loggers in turn).
struct Metrics {
    admin: String,
    before: String,
    now: String,
}

impl Metrics {
    async fn since(admin: &str) -> Self {
        let before = http(admin, "GET", "/metrics").await;
        Metrics {
            admin: admin.into(),
            now: before.clone(),
            before,
        }
    }

    fn get(&self, name: &str) -> f64 {
        metric(&self.now, name) - metric(&self.before, name)
    }

    fn gauge(&self, name: &str) -> f64 {
        metric(&self.now, name)
    }

    /// Reads again until `name` has grown by `want` (or ten seconds pass).
    async fn wait(&mut self, name: &str, want: f64) {
        for _ in 0..400 {
            self.now = http(&self.admin, "GET", "/metrics").await;
            if self.get(name) >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// One test (one process-wide recorder and AWS environment): three loggers in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_by_batch_write_with_per_entry_refusals_and_the_put_record_fallback() {
    interactions_ship_in_batch_writes_each_once_with_their_own_event_time().await;
    an_entry_refused_as_invalid_is_dead_lettered_and_its_neighbours_arrive().await;
    a_denied_batch_write_falls_back_to_put_record_and_delivers_everything().await;
}

async fn interactions_ship_in_batch_writes_each_once_with_their_own_event_time() {
    let logger = common::start(GROUP, 20).await;
    let mut m = Metrics::since(&logger.admin).await;
    let acked = log(&logger, 300, "bw").await;
    assert_eq!(acked.len(), 300);
    wait_delivered(&logger.store, GROUP, &acked).await;

    m.wait("logger_shipped_total", 300.0).await;
    assert_eq!(m.get("logger_shipped_total"), 300.0, "{}", m.now);
    assert_eq!(
        m.get("logger_ship_calls_total{operation=\"PutRecord\"}"),
        0.0
    );
    let batches = m.get("logger_ship_calls_total{operation=\"BatchWriteRecord\"}");
    assert_eq!(
        m.get("logger_batch_write_entries_sum"),
        300.0,
        "each interaction sent once: {}",
        m.now
    );
    assert_eq!(m.get("logger_batch_write_entries_count"), batches);
    assert!(
        batches <= 300.0 / 25.0 * 2.0,
        "interactions share calls ({batches} calls for 300)"
    );
    let store = http(
        logger.store.trim_start_matches("http://"),
        "GET",
        "/metrics",
    )
    .await;
    assert_eq!(
        metric(&store, "sagemaker_local_batch_write_entries_sum"),
        300.0,
        "{store}"
    );
    assert_eq!(m.get("logger_dead_lettered_total"), 0.0);
    assert_eq!(m.gauge("logger_spool_depth"), 0.0);
    logger.stop().await;
}

async fn an_entry_refused_as_invalid_is_dead_lettered_and_its_neighbours_arrive() {
    let logger = common::start(GROUP, 200).await;
    let mut m = Metrics::since(&logger.admin).await;
    let mut client = InteractionLoggerClient::connect(format!("http://{}", logger.grpc))
        .await
        .unwrap();
    // A String feature holds at most 358,400 characters: the store refuses this one alone.
    let sent: Vec<Interaction> = (0..10)
        .map(|k| Interaction {
            interaction_id: format!("mix-{k}"),
            event_time: event_time(k),
            features_csv: if k == 4 {
                "1,".repeat(180_000)
            } else {
                format!("{k},2")
            },
            prediction: 0.5,
            ..Default::default()
        })
        .collect();
    client
        .log(LogRequest {
            interactions: sent.clone(),
        })
        .await
        .unwrap();
    let acked: BTreeMap<String, Interaction> = sent
        .into_iter()
        .filter(|i| i.interaction_id != "mix-4")
        .map(|i| (i.interaction_id.clone(), i))
        .collect();
    wait_delivered(&logger.store, GROUP, &acked).await;
    m.wait("logger_dead_lettered_total", 1.0).await;
    assert_eq!(m.get("logger_dead_lettered_total"), 1.0, "{}", m.now);
    assert_eq!(m.get("logger_shipped_total"), 9.0, "{}", m.now);
    assert_eq!(
        m.get("logger_ship_calls_total{operation=\"BatchWriteRecord\"}"),
        1.0,
        "the ten went in one call: {}",
        m.now
    );
    let letters: serde_json::Value = serde_json::from_str::<serde_json::Value>(
        &http(&logger.admin, "GET", "/dead-letters").await,
    )
    .unwrap()["dead_letters"]
        .take();
    assert_eq!(letters.as_array().unwrap().len(), 1, "{letters}");
    assert_eq!(letters[0]["interaction_id"], "mix-4");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("features_csv"),
        "{letters}"
    );
    logger.stop().await;
}

async fn a_denied_batch_write_falls_back_to_put_record_and_delivers_everything() {
    let logger = common::start_with(GROUP, 20, |s| {
        s.denied_operations = vec!["BatchWriteRecord".into()];
    })
    .await;
    let mut m = Metrics::since(&logger.admin).await;
    let acked = log(&logger, 120, "fb").await;
    wait_delivered(&logger.store, GROUP, &acked).await;
    m.wait("logger_shipped_total", 120.0).await;
    assert_eq!(m.get("logger_shipped_total"), 120.0, "{}", m.now);
    assert_eq!(
        m.get("logger_batch_write_fallback_total"),
        1.0,
        "said once: {}",
        m.now
    );
    assert_eq!(m.gauge("logger_batch_write_enabled"), 0.0);
    assert!(m.get("logger_ship_calls_total{operation=\"PutRecord\"}") >= 120.0);
    assert_eq!(m.get("logger_dead_lettered_total"), 0.0);
    logger.stop().await;
}
