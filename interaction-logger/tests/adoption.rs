//! Spools that outlive their logger: real logger processes on one spool root, sagemaker-local
//! behind a proxy the test cuts. A logger SIGKILLed with unshipped interactions has them
//! shipped by the others (here a "replacement task": a new process with a new identity on a
//! new port); a logger that is only paused (SIGSTOP) keeps its spool. Every acknowledged
//! interaction arrives exactly as acknowledged, and the spools' writer histories show that no
//! two live processes ever wrote the same spool.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{http, metric, proxy::Proxy, wait_delivered};
use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};

const GROUP: &str = "my-mlops-user-interactions-v1";

/// A logger process on `root` with identity `id`, shipping through the proxy.
struct LoggerProcess {
    child: Child,
    grpc: String,
    admin: String,
}

impl LoggerProcess {
    fn start(root: &Path, id: &str, store: &str) -> LoggerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_interaction-logger"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("LOGGER_SPOOL_ROOT", root)
            .env("LOGGER_ID", id)
            .env("LOGGER_ADOPT_INTERVAL_MS", "100")
            .env("LOGGER_SHIP_LINGER_MS", "0")
            .env("SHUTDOWN_GRACE_SECS", "2")
            .env("USER_INTERACTION_FG_NAME", GROUP)
            .env("AWS_ENDPOINT_URL", format!("http://{store}"))
            .env("AWS_ACCESS_KEY_ID", sagemaker_local::DEFAULT_ACCESS_KEY_ID)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                sagemaker_local::DEFAULT_SECRET_ACCESS_KEY,
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start interaction-logger");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "logger {id} exited before it listened"
            );
            if line.contains(" listening on ") {
                break;
            }
        }
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap()
                .to_owned()
        };
        let (grpc, admin) = (field("grpc="), field("admin="));
        // keep reading its stdout so it never blocks on a full pipe
        std::thread::spawn(move || for _ in out.lines() {});
        LoggerProcess { child, grpc, admin }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child this test started.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    async fn log(&self, from: usize, n: usize, who: &str) -> BTreeMap<String, Interaction> {
        let mut client = InteractionLoggerClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap();
        let mut acked = BTreeMap::new();
        for i in from..from + n {
            let interaction = Interaction {
                interaction_id: format!("{who}-{i:05}"),
                event_time: format!(
                    "2026-11-30T00:{:02}:{:02}.{:03}Z",
                    i / 3600 % 60,
                    i / 60 % 60,
                    i % 1000
                ),
                features_csv: format!("{i},1,2,3"),
                prediction: i as f64 / 1000.0,
                ..Default::default()
            };
            let ids = client
                .log(LogRequest {
                    interactions: vec![interaction.clone()],
                })
                .await
                .expect("acknowledged")
                .into_inner()
                .interaction_ids;
            assert_eq!(ids, std::slice::from_ref(&interaction.interaction_id));
            acked.insert(interaction.interaction_id.clone(), interaction);
        }
        acked
    }

    async fn metric(&self, name: &str) -> f64 {
        metric(&http(&self.admin, "GET", "/metrics").await, name)
    }

    /// SIGTERM; it must exit 0.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        assert!(self.child.wait().unwrap().success(), "clean exit");
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Every writer history under `root` (live spools and retired ones): spool -> lines.
fn histories(root: &Path) -> BTreeMap<PathBuf, Vec<(u128, String, i32)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            for f in std::fs::read_dir(&p).unwrap().flatten() {
                if f.file_name() == "writers.log" || p.ends_with("retired") {
                    files.push(f.path());
                }
            }
        }
    }
    files
        .into_iter()
        .map(|f| {
            let lines = std::fs::read_to_string(&f)
                .unwrap()
                .lines()
                .map(|l| {
                    let parts: Vec<&str> = l.split(' ').collect();
                    let pid = parts[3].strip_prefix("pid=").unwrap().parse().unwrap();
                    (parts[0].parse().unwrap(), parts[1].to_owned(), pid)
                })
                .collect();
            (f, lines)
        })
        .collect()
}

/// No spool was claimed while its previous claimant was alive: each claim follows the
/// previous claimant's close/retire, or that claimant's SIGKILL (`killed`: pid -> when).
fn assert_one_writer_at_a_time(root: &Path, killed: &HashMap<i32, u128>) {
    let all = histories(root);
    assert!(!all.is_empty());
    for (file, events) in &all {
        let mut holder: Option<i32> = None;
        for (at, event, pid) in events {
            match event.as_str() {
                "open" | "adopt" => {
                    if let Some(h) = holder {
                        assert!(
                            killed.get(&h).is_some_and(|k| k <= at),
                            "{}: pid {pid} claimed it at {at} while pid {h} held it: {events:?}",
                            file.display()
                        );
                    }
                    holder = Some(*pid);
                }
                "close" | "retire" => {
                    assert_eq!(holder, Some(*pid), "{}: {events:?}", file.display());
                    holder = None;
                }
                other => panic!("unknown event {other}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_loggers_spool_is_adopted_and_every_acknowledged_interaction_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let (sml_url, sagemaker_stop) = common::start_sagemaker(dir.path()).await;
    let proxy = Proxy::start(sml_url.trim_start_matches("http://").to_owned()).await;
    let root = dir.path().join("spools");

    let a = LoggerProcess::start(&root, "a", &proxy.addr);
    let b = LoggerProcess::start(&root, "b", &proxy.addr);
    proxy.down();
    let mut acked = a.log(0, 150, "a").await;
    acked.extend(b.log(0, 150, "b").await);
    assert_eq!(
        a.metric("logger_shipped_total").await,
        0.0,
        "the store is cut"
    );

    let mut killed = HashMap::new();
    a.signal(libc::SIGKILL);
    killed.insert(a.pid(), now_ms());
    let mut a = a;
    a.child.wait().unwrap();
    // A replacement: new process, new identity, new port, same root.
    let c = LoggerProcess::start(&root, "c", &proxy.addr);
    acked.extend(c.log(0, 50, "c").await);
    proxy.up();

    wait_delivered(&format!("http://{}", proxy.addr), GROUP, &acked).await;
    let adopted = b.metric("logger_spools_adopted_total").await
        + c.metric("logger_spools_adopted_total").await;
    assert_eq!(adopted, 1.0, "a's spool was adopted once");
    assert!(
        !root.join("a").exists(),
        "the adopted spool was emptied and removed"
    );
    b.stop();
    c.stop();
    assert_one_writer_at_a_time(&root, &killed);
    let retired = histories(&root)
        .into_iter()
        .find(|(f, _)| f.to_string_lossy().contains("retired/a."))
        .expect("a's history is kept")
        .1;
    assert_eq!(retired[0].1, "open");
    assert_eq!(retired[1].1, "adopt", "{retired:?}");
    sagemaker_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_logger_keeps_its_spool_and_ships_it_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (sml_url, sagemaker_stop) = common::start_sagemaker(dir.path()).await;
    let proxy = Proxy::start(sml_url.trim_start_matches("http://").to_owned()).await;
    let root = dir.path().join("spools");

    let slow = LoggerProcess::start(&root, "slow", &proxy.addr);
    let other = LoggerProcess::start(&root, "other", &proxy.addr);
    proxy.down();
    let acked = slow.log(0, 100, "slow").await;
    slow.signal(libc::SIGSTOP);
    proxy.up();
    // Ten adoption rounds of the other logger while the slow one is stopped.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        other.metric("logger_spools_adopted_total").await,
        0.0,
        "a paused logger still holds its claim"
    );
    assert_eq!(other.metric("logger_shipped_total").await, 0.0);
    slow.signal(libc::SIGCONT);
    wait_delivered(&format!("http://{}", proxy.addr), GROUP, &acked).await;
    assert_eq!(
        slow.metric("logger_shipped_total").await,
        100.0,
        "the slow logger shipped its own, once each"
    );
    let events: Vec<(String, i32)> = histories(&root)
        .into_iter()
        .filter(|(f, _)| f.to_string_lossy().contains("/slow/"))
        .flat_map(|(_, e)| e.into_iter().map(|(_, ev, pid)| (ev, pid)))
        .collect();
    assert_eq!(events, [("open".to_owned(), slow.pid())]);
    slow.stop();
    other.stop();
    assert_one_writer_at_a_time(&root, &HashMap::new());
    sagemaker_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_orphan_is_moved_to_the_quarantine_and_removed_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (sml_url, sagemaker_stop) = common::start_sagemaker(dir.path()).await;
    let root = dir.path().join("spools");
    let orphan = root.join("logger-gone");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("spool.redb"), vec![0x5a; 50_000]).unwrap();
    std::fs::write(orphan.join("owner.lock"), b"").unwrap();
    std::fs::write(orphan.join("writers.log"), b"").unwrap();
    let logger = LoggerProcess::start(&root, "alive", sml_url.trim_start_matches("http://"));
    let quarantine = root.join("quarantine");
    for _ in 0..100 {
        if !orphan.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !orphan.exists(),
        "the unreadable orphan is removed once its file is moved aside"
    );
    let moved: Vec<String> = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        moved[0].starts_with("logger-gone.spool.redb.corrupt-"),
        "{moved:?}"
    );
    assert_eq!(
        std::fs::read(quarantine.join(&moved[0])).unwrap(),
        vec![0x5a; 50_000],
        "kept as it was, for inspection"
    );
    assert_eq!(logger.metric("logger_spools_quarantined_total").await, 1.0);
    logger.stop();
    sagemaker_stop.cancel();
}
