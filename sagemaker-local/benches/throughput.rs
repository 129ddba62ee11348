//! `cargo bench -p sagemaker-local --bench throughput`: prints figures, asserts nothing.
//!
//! 1. The XGBoost evaluator in process vs Python xgboost's `predict` on the same demo rows.
//! 2. sagemaker-local (release build, its own process, demo world) under load from
//!    aws-sdk-rust clients: single-row and 1,000-row InvokeEndpoint, PutRecord.
//! 3. The server's peak RSS (VmHWM) after all of that.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use aws_credential_types::Credentials;
use aws_sdk_sagemakerruntime::config::{BehaviorVersion, Region};
use aws_smithy_types::Blob;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const SECONDS: u64 = 5;

fn demo_rows() -> Vec<Vec<f64>> {
    let data = std::fs::read_to_string(format!("{ROOT}/demo/data/customers.csv")).unwrap();
    data.lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .skip(1)
                .take(8)
                .map(|v| {
                    if v.is_empty() {
                        f64::NAN
                    } else {
                        v.parse().unwrap()
                    }
                })
                .collect()
        })
        .collect()
}

fn csv(rows: &[Vec<f64>]) -> String {
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|v| {
                    if v.is_nan() {
                        String::new()
                    } else {
                        v.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() / n as f64 * 1e6
}

struct Load {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Load {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// `concurrency` closed-loop workers calling `call` for `SECONDS`.
async fn load<F, Fut>(concurrency: usize, call: F) -> Load
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let call = Arc::clone(&call);
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0, 0);
            while Instant::now() < deadline {
                let t = Instant::now();
                if !call(w * 1_000_000 + i).await {
                    errors += 1;
                }
                lat.push(t.elapsed().as_micros() as u64);
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    Load {
        requests: all.len(),
        errors,
        seconds: started.elapsed().as_secs_f64(),
        latencies_us: all,
    }
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let rows = demo_rows();
    println!(
        "machine: {} cores (load generator and server share them)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. In process.
    let model = xgboost_json::Model::from_json(
        &std::fs::read(format!("{ROOT}/demo/model/xgboost-model.json")).unwrap(),
    )
    .unwrap();
    let flat: Vec<f32> = rows
        .iter()
        .take(1000)
        .flatten()
        .map(|v| *v as f32)
        .collect();
    let mut out = [0f32];
    let one_us = per_call(1_000_000, || {
        model.predict_row(std::hint::black_box(&flat[..8]), &mut out)
    });
    let batch_us = per_call(3000, || {
        std::hint::black_box(model.predict(std::hint::black_box(&flat)));
    });
    let py = Command::new("python3")
        .arg(format!("{ROOT}/bench/xgboost_predict.py"))
        .output()
        .expect("python3");
    let py: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap_or_else(|_| {
        panic!(
            "bench/xgboost_predict.py failed: {}",
            String::from_utf8_lossy(&py.stderr)
        )
    });
    let py_one = py["predict_one_row_us"].as_f64().unwrap();
    let py_batch = py["predict_1000_rows_us"].as_f64().unwrap();
    println!(
        "\n== XGBoost evaluator in process vs Python xgboost {} (demo model, 40 trees)",
        py["xgboost_version"]
    );
    println!(
        "one row     : rust {one_us:>9.3} us | xgboost predict {py_one:>9.1} us (inplace_predict {:.1} us) | rust is {:.0}x faster (target >= 20x)",
        py["inplace_predict_one_row_us"].as_f64().unwrap(),
        py_one / one_us
    );
    println!(
        "1,000 rows  : rust {batch_us:>9.1} us | xgboost predict {py_batch:>9.1} us (inplace_predict {:.1} us) | rust/xgboost = {:.2} (target <= 2)",
        py["inplace_predict_1000_rows_us"].as_f64().unwrap(),
        batch_us / py_batch
    );

    // 2. The server, in its own process.
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_sagemaker-local"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--demo",
            "--endpoint-delay-ms",
            "50",
            "--offline-flush-ms",
            "2000",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sagemaker-local");
    let pid = server.id();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    let creds = Credentials::new(
        sagemaker_local::DEFAULT_ACCESS_KEY_ID,
        sagemaker_local::DEFAULT_SECRET_ACCESS_KEY,
        None,
        None,
        "bench",
    );
    let rt = aws_sdk_sagemakerruntime::Client::from_conf(
        aws_sdk_sagemakerruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&url)
            .credentials_provider(creds.clone())
            .build(),
    );
    let fs = aws_sdk_sagemakerfeaturestoreruntime::Client::from_conf(
        aws_sdk_sagemakerfeaturestoreruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&url)
            .credentials_provider(creds)
            .build(),
    );
    let one_row = csv(&rows[..1]);
    for _ in 0..100 {
        let ok = rt
            .invoke_endpoint()
            .endpoint_name("my-mlops-prod-endpoint")
            .content_type("text/csv")
            .body(Blob::new(one_row.clone()))
            .send()
            .await
            .is_ok();
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_rss = rss_kb(pid, "VmRSS");

    let invoke = |rt: aws_sdk_sagemakerruntime::Client, body: String| {
        move |_| {
            let (rt, body) = (rt.clone(), body.clone());
            async move {
                rt.invoke_endpoint()
                    .endpoint_name("my-mlops-prod-endpoint")
                    .content_type("text/csv")
                    .body(Blob::new(body))
                    .send()
                    .await
                    .is_ok()
            }
        }
    };
    println!(
        "\n== sagemaker-local (release, own process) under aws-sdk-rust load, {SECONDS} s each"
    );
    let single = load(16, invoke(rt.clone(), one_row)).await;
    println!(
        "InvokeEndpoint 1 row      : {:>8.0} req/s = {:>8.0} rows/s | p50 {:.2} ms p99 {:.2} ms | errors {} (16 concurrent)",
        single.requests as f64 / single.seconds,
        single.requests as f64 / single.seconds,
        single.pct(0.5),
        single.pct(0.99),
        single.errors
    );
    let batch = load(4, invoke(rt.clone(), csv(&rows[..1000]))).await;
    println!(
        "InvokeEndpoint 1,000 rows : {:>8.0} req/s = {:>8.0} rows/s | p50 {:.2} ms p99 {:.2} ms | errors {} (4 concurrent)",
        batch.requests as f64 / batch.seconds,
        1000.0 * batch.requests as f64 / batch.seconds,
        batch.pct(0.5),
        batch.pct(0.99),
        batch.errors
    );
    let puts = load(64, move |i| {
        let fs = fs.clone();
        async move {
            let value = |n: &str, v: String| {
                aws_sdk_sagemakerfeaturestoreruntime::types::FeatureValue::builder()
                    .feature_name(n)
                    .value_as_string(v)
                    .build()
            };
            fs.put_record()
                .feature_group_name("my-mlops-user-interactions-v1")
                .record(value("interaction_id", format!("bench-{i}")))
                .record(value("event_time", "2026-11-27T10:00:00.000Z".into()))
                .record(value("prediction", "0.5".into()))
                .record(value("features_csv", "63,40,29.01,0,4,0,2,1".into()))
                .send()
                .await
                .is_ok()
        }
    })
    .await;
    println!(
        "PutRecord                 : {:>8.0} records/s | p50 {:.2} ms p99 {:.2} ms | errors {} (64 concurrent, durable: group-committed fsync)",
        puts.requests as f64 / puts.seconds,
        puts.pct(0.5),
        puts.pct(0.99),
        puts.errors
    );
    println!(
        "\n== server memory: idle with the demo world {:.1} MB, peak (VmHWM) {:.1} MB (target < 50 MB)",
        idle_rss as f64 / 1024.0,
        rss_kb(pid, "VmHWM") as f64 / 1024.0
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = server.wait();
}
