//! The spool under faults, with the real logger and sagemaker-local on 127.0.0.1:0: its disk
//! full (a real tmpfs; the tests run as root and fail loudly if they cannot mount one), its
//! file corrupt at start, an entry that does not decode, the dead letters at their limit.
//! One test runs them in turn: the loggers of one test binary share its environment (the AWS
//! endpoint) and its metrics recorder.

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use common::{http, http_as, metric};
use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};

fn interaction(n: usize) -> Interaction {
    Interaction {
        features_csv: format!("{n},40,29.01,0,4,0,2,1"),
        prediction: n as f64 / 1e4,
        event_time: "2026-12-02T00:00:00.000Z".into(),
        endpoint_name: "my-mlops-prod-endpoint".into(),
        variant_name: "AllTraffic".into(),
        ..Default::default()
    }
}

/// A tmpfs of `size` mounted at `at` (unmounted when dropped).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let done = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            done.status.success(),
            "cannot mount a tmpfs for the spool (these tests need root): {}",
            String::from_utf8_lossy(&done.stderr)
        );
        Tmpfs(at.to_owned())
    }

    /// Writes a file until the file system is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).and_then(|()| f.flush()).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

async fn ready(admin: &str) -> u16 {
    http_as(admin, "GET", "/readyz", None).await.0
}

async fn wait_ready(admin: &str, want: u16, what: &str) {
    for _ in 0..1500 {
        if ready(admin).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn a_full_disk_stops_the_logger_serving_until_it_is_freed_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sml, stop_sml) = common::start_sagemaker(dir.path()).await;
    let proxy = common::proxy::Proxy::start(sml.trim_start_matches("http://").to_owned()).await;
    let disk = Tmpfs::mount(&dir.path().join("spool"), "3m");
    let spool = disk.0.clone();
    let logger = common::spawn_logger(
        dir,
        sml.clone(),
        format!("http://{}", proxy.addr),
        stop_sml,
        move |c| {
            c.spool_dir = spool;
            c.max_bytes = 1 << 30;
            c.max_records = 1 << 30;
        },
    )
    .await;
    let mut client = InteractionLoggerClient::connect(format!("http://{}", logger.grpc))
        .await
        .unwrap();
    proxy.down(); // nothing ships: the spool only grows
    let mut acked = BTreeMap::new();
    let mut log = async |n: usize| {
        let sent: Vec<Interaction> = (n..n + 20).map(interaction).collect();
        let answer = client
            .log(LogRequest {
                interactions: sent.clone(),
            })
            .await;
        answer.map(|a| (sent, a.into_inner().interaction_ids))
    };
    for n in (0..200).step_by(20) {
        let (sent, ids) = log(n).await.unwrap();
        for (mut i, id) in sent.into_iter().zip(ids) {
            i.interaction_id = id.clone();
            acked.insert(id, i);
        }
    }
    disk.fill();
    // Writes fail now: the Log call is refused as retryable and the logger stops serving.
    let mut refused = None;
    for n in (200..20_000).step_by(20) {
        match log(n).await {
            Ok((sent, ids)) => {
                for (mut i, id) in sent.into_iter().zip(ids) {
                    i.interaction_id = id.clone();
                    acked.insert(id, i);
                }
            }
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk refuses Log calls");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    wait_ready(&logger.admin, 503, "NOT_SERVING on a full disk").await;
    let metrics = http(&logger.admin, "GET", "/metrics").await;
    assert_eq!(metric(&metrics, "logger_spool_healthy"), 0.0, "{metrics}");
    assert!(metric(&metrics, "logger_spool_faults_total") >= 1.0);
    assert_eq!(
        log(90_000).await.unwrap_err().code(),
        tonic::Code::Unavailable,
        "still refused while the disk is full"
    );

    disk.free();
    wait_ready(&logger.admin, 200, "serving again once the disk is freed").await;
    for n in (100_000..100_100).step_by(20) {
        let (sent, ids) = log(n).await.expect("taken again after the reopen");
        for (mut i, id) in sent.into_iter().zip(ids) {
            i.interaction_id = id.clone();
            acked.insert(id, i);
        }
    }
    proxy.up();
    common::wait_delivered(&logger.store, "my-mlops-user-interactions-v1", &acked).await;
    logger.stop().await;
}

async fn a_corrupt_spool_file_is_moved_aside_and_the_logger_starts_on_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join("spool.redb"), vec![0xa5; 100_000]).unwrap();
    let (sml, stop_sml) = common::start_sagemaker(dir.path()).await;
    let logger = common::spawn_logger(dir, sml.clone(), sml, stop_sml, |_| {}).await;
    wait_ready(&logger.admin, 200, "the logger to serve").await;
    let moved: Vec<_> = std::fs::read_dir(spool.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        moved[0].starts_with("spool.spool.redb.corrupt-"),
        "{moved:?}"
    );
    let metrics = http(&logger.admin, "GET", "/metrics").await;
    assert!(
        metric(&metrics, "logger_spools_quarantined_total") >= 1.0,
        "{metrics}"
    );
    let mut client = InteractionLoggerClient::connect(format!("http://{}", logger.grpc))
        .await
        .unwrap();
    let ids = client
        .log(LogRequest {
            interactions: vec![interaction(1)],
        })
        .await
        .unwrap()
        .into_inner()
        .interaction_ids;
    let mut sent = interaction(1);
    sent.interaction_id = ids[0].clone();
    common::wait_delivered(
        &logger.store,
        "my-mlops-user-interactions-v1",
        &BTreeMap::from([(ids[0].clone(), sent)]),
    )
    .await;
    logger.stop().await;
}

async fn an_undecodable_entry_is_dead_lettered_with_the_reason_while_the_rest_ships() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // A spool as a crash or a bad disk block could leave it: a good entry, a garbled one, a
    // good one.
    let mut acked = BTreeMap::new();
    {
        let db = redb::Database::create(spool.join("spool.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("pending");
            let mut pending = txn.open_table(table).unwrap();
            for (key, n) in [(0u64, 1usize), (2, 3)] {
                let mut i = interaction(n);
                i.interaction_id = format!("good-{n}");
                i.event_time = "2026-12-02T00:00:00.000Z".into();
                pending
                    .insert(key, prost::Message::encode_to_vec(&i).as_slice())
                    .unwrap();
                acked.insert(i.interaction_id.clone(), i);
            }
            pending.insert(1, [0xffu8, 0xff, 0xff].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (sml, stop_sml) = common::start_sagemaker(dir.path()).await;
    let logger = common::spawn_logger(dir, sml.clone(), sml, stop_sml, |_| {}).await;
    common::wait_delivered(&logger.store, "my-mlops-user-interactions-v1", &acked).await;
    let mut page = serde_json::Value::Null;
    for _ in 0..100 {
        page = serde_json::from_str(&http(&logger.admin, "GET", "/dead-letters").await).unwrap();
        if page["dead_letters"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letters = page["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{page}");
    assert_eq!(letters[0]["key"], 1);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not decode"),
        "{page}"
    );
    logger.stop().await;
}

async fn dead_letters_have_a_limit_of_their_own_and_are_listed_by_page() {
    // The demo's training group has none of the interaction features: every write is refused.
    let dir = tempfile::tempdir().unwrap();
    let (sml, stop_sml) = common::start_sagemaker(dir.path()).await;
    let logger = common::spawn_logger(dir, sml.clone(), sml, stop_sml, |c| {
        c.feature_group = "my-mlops-feature-group-v2".into();
        c.dead_letter_max_records = 3;
    })
    .await;
    let mut client = InteractionLoggerClient::connect(format!("http://{}", logger.grpc))
        .await
        .unwrap();
    for n in 0..5 {
        client
            .log(LogRequest {
                interactions: vec![interaction(n)],
            })
            .await
            .unwrap();
    }
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = http(&logger.admin, "GET", "/metrics").await;
        if metric(&metrics, "logger_dead_letters_overflow_total") >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&metrics, "logger_dead_letters "), 3.0, "{metrics}");
    assert!(metric(&metrics, "logger_dead_letters_overflow_total") >= 2.0);
    assert_eq!(
        metric(&metrics, "logger_spool_depth"),
        2.0,
        "the two that did not fit stay in the spool"
    );
    // Pages of two: the first says where the next starts, the last says none.
    let first: serde_json::Value =
        serde_json::from_str(&http(&logger.admin, "GET", "/dead-letters?limit=2").await).unwrap();
    assert_eq!(
        first["dead_letters"].as_array().unwrap().len(),
        2,
        "{first}"
    );
    let next = first["next"].as_u64().expect("a next page");
    let second: serde_json::Value = serde_json::from_str(
        &http(
            &logger.admin,
            "GET",
            &format!("/dead-letters?limit=2&after={next}"),
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        second["dead_letters"].as_array().unwrap().len(),
        1,
        "{second}"
    );
    assert!(second["next"].is_null());
    // Deleting what was read makes room: the held records become dead letters in turn.
    let last = second["dead_letters"][0]["key"].as_u64().unwrap();
    let deleted: serde_json::Value = serde_json::from_str(
        &http(
            &logger.admin,
            "DELETE",
            &format!("/dead-letters?through={last}"),
        )
        .await,
    )
    .unwrap();
    assert_eq!(deleted["deleted"], 3);
    for _ in 0..200 {
        metrics = http(&logger.admin, "GET", "/metrics").await;
        if metric(&metrics, "logger_spool_depth") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&metrics, "logger_spool_depth"), 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "logger_dead_letters "), 2.0);
    logger.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_under_faults() {
    a_full_disk_stops_the_logger_serving_until_it_is_freed_and_loses_nothing().await;
    a_corrupt_spool_file_is_moved_aside_and_the_logger_starts_on_a_fresh_one().await;
    an_undecodable_entry_is_dead_lettered_with_the_reason_while_the_rest_ships().await;
    dead_letters_have_a_limit_of_their_own_and_are_listed_by_page().await;
}
