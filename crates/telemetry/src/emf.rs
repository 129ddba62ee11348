//! CloudWatch Embedded Metric Format: with `METRICS_EMF_NAMESPACE` set, every
//! `METRICS_EMF_INTERVAL_SECS` (default [`DEFAULT_INTERVAL_SECS`]) the service prints its metrics as EMF JSON lines
//! on stdout, next to its logs. On ECS the awslogs driver ships stdout to CloudWatch Logs,
//! which turns those lines into CloudWatch metrics: no agent, no sidecar, no PutMetricData
//! permission.
//!
//! What is sent, per interval, from the same registry `/metrics` renders:
//! - counters as the increase over the interval (CloudWatch sums them), unit `Count`;
//! - gauges as their current value;
//! - histograms as `<name>_count` (observations in the interval) and `<name>_p50` /
//!   `<name>_p99` (upper bound of the bucket holding that quantile of the interval's
//!   observations), in `Seconds` for `*_seconds` histograms.
//!
//! Dimensions: `service`, plus the metric's own labels. `service` is the process's name, or,
//! in a process that runs several services' parts (front-door), the part whose prefix the
//! metric's name carries ([`Owners::parts`]): the same series, alarms and dashboards in both
//! shapes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::prometheus_text::{Kind, Sample, parse, parse_value};

/// At most this many metrics in one EMF document (CloudWatch's limit).
const MAX_METRICS_PER_DOCUMENT: usize = 100;

/// Turns successive Prometheus renders into EMF documents (it remembers counters and
/// histogram buckets from the previous render to send increases).
/// A metric's label set, name -> value.
type Labels = BTreeMap<String, String>;

pub struct Emf {
    namespace: String,
    owners: Owners,
    previous: HashMap<String, f64>,
}

/// The `service` dimension of each metric a process publishes.
#[derive(Clone, Debug)]
pub struct Owners {
    process: String,
    /// (metric name prefix, service), first match wins; the rest are the process's.
    parts: Vec<(String, String)>,
}

impl Owners {
    /// Every metric is the process's own (a microservice).
    pub fn process(name: impl Into<String>) -> Self {
        Owners {
            process: name.into(),
            parts: Vec::new(),
        }
    }

    /// A process running several services' parts: a metric whose name starts with a part's
    /// prefix is that service's; any other is the process's.
    pub fn parts(process: impl Into<String>, parts: &[(&str, &str)]) -> Self {
        Owners {
            process: process.into(),
            parts: parts
                .iter()
                .map(|(prefix, service)| ((*prefix).to_owned(), (*service).to_owned()))
                .collect(),
        }
    }

    fn of(&self, metric: &str) -> &str {
        self.parts
            .iter()
            .find(|(prefix, _)| metric.starts_with(prefix.as_str()))
            .map_or(&self.process, |(_, service)| service)
    }
}

impl From<&str> for Owners {
    fn from(process: &str) -> Self {
        Owners::process(process)
    }
}

impl Emf {
    pub fn new(namespace: impl Into<String>, owners: impl Into<Owners>) -> Self {
        Emf {
            namespace: namespace.into(),
            owners: owners.into(),
            previous: HashMap::new(),
        }
    }

    /// The EMF documents (one JSON object each) for one render of `/metrics`.
    pub fn documents(&mut self, prometheus_text: &str, timestamp_ms: u64) -> Vec<String> {
        let (kinds, samples) = parse(prometheus_text);
        // (service, label set) -> metric name -> (value, unit)
        let mut groups: BTreeMap<(String, Labels), BTreeMap<String, (f64, &str)>> = BTreeMap::new();
        // (name, label set) -> (bucket bound, cumulative count)
        let mut histograms: BTreeMap<(String, Labels), Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples {
            if let Some(base) = s.name.strip_suffix("_bucket")
                && kinds.get(base) == Some(&Kind::Histogram)
            {
                let mut labels = s.labels.clone();
                let Some(le) = labels.remove("le").and_then(|le| parse_value(&le)) else {
                    continue;
                };
                let delta = self.increase(&s);
                histograms
                    .entry((base.to_owned(), labels))
                    .or_default()
                    .push((le, delta));
                continue;
            }
            let is_histogram_part = ["_sum", "_count"].iter().any(|suffix| {
                s.name
                    .strip_suffix(suffix)
                    .is_some_and(|base| kinds.get(base) == Some(&Kind::Histogram))
            });
            if is_histogram_part {
                continue; // the buckets carry everything sent for a histogram
            }
            let (value, unit) = match kinds.get(&s.name) {
                Some(Kind::Counter) => (self.increase(&s), "Count"),
                _ => (s.value, "None"),
            };
            groups
                .entry((self.owners.of(&s.name).to_owned(), s.labels))
                .or_default()
                .insert(s.name, (value, unit));
        }
        for ((name, labels), mut buckets) in histograms {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let count = buckets.last().map_or(0.0, |b| b.1);
            let unit = if name.ends_with("_seconds") {
                "Seconds"
            } else {
                "None"
            };
            let group = groups
                .entry((self.owners.of(&name).to_owned(), labels))
                .or_default();
            group.insert(format!("{name}_count"), (count, "Count"));
            if count > 0.0 {
                for (q, suffix) in [(0.5, "p50"), (0.99, "p99")] {
                    group.insert(format!("{name}_{suffix}"), (quantile(&buckets, q), unit));
                }
            }
        }
        let mut out = Vec::new();
        for ((service, labels), metrics) in groups {
            let metrics: Vec<_> = metrics.into_iter().collect();
            for chunk in metrics.chunks(MAX_METRICS_PER_DOCUMENT) {
                out.push(self.document(&service, &labels, chunk, timestamp_ms));
            }
        }
        out
    }

    /// The increase of a cumulative series since the last render (all of it the first time;
    /// the whole value again if it went down, i.e. the process restarted its count).
    fn increase(&mut self, s: &Sample) -> f64 {
        let key = series_key(&s.name, &s.labels);
        let before = self.previous.insert(key, s.value).unwrap_or(0.0);
        if s.value >= before {
            s.value - before
        } else {
            s.value
        }
    }

    fn document(
        &self,
        service: &str,
        labels: &BTreeMap<String, String>,
        metrics: &[(String, (f64, &str))],
        timestamp_ms: u64,
    ) -> String {
        let mut dimensions = vec!["service".to_owned()];
        dimensions.extend(labels.keys().filter(|k| *k != "service").cloned());
        let definitions: Vec<_> = metrics
            .iter()
            .map(|(name, (_, unit))| serde_json::json!({"Name": name, "Unit": unit}))
            .collect();
        let mut doc = serde_json::Map::new();
        doc.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [dimensions],
                    "Metrics": definitions,
                }],
            }),
        );
        doc.insert("service".into(), service.into());
        for (k, v) in labels {
            if k != "service" {
                doc.insert(k.clone(), v.clone().into());
            }
        }
        for (name, (value, _)) in metrics {
            doc.insert(name.clone(), finite(*value).into());
        }
        serde_json::Value::Object(doc).to_string()
    }
}

/// Default of `METRICS_EMF_INTERVAL_SECS`: CloudWatch's standard resolution.
pub const DEFAULT_INTERVAL_SECS: u64 = 60;

/// The EMF flags of every service, flattened into its arguments. A bad value is refused at
/// start, not replaced by the default.
#[derive(clap::Args, Debug, Clone)]
pub struct Flags {
    /// CloudWatch namespace: set, the service prints its metrics on stdout as EMF lines every
    /// `METRICS_EMF_INTERVAL_SECS` (the Fargate tasks set it). Unset: no EMF.
    #[arg(long, env = "METRICS_EMF_NAMESPACE")]
    pub metrics_emf_namespace: Option<String>,
    /// Seconds between EMF emissions (at least 1).
    #[arg(long, env = "METRICS_EMF_INTERVAL_SECS", default_value_t = DEFAULT_INTERVAL_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_emf_interval_secs: u64,
}

/// Starts the emitter if `METRICS_EMF_NAMESPACE` is set: every interval, and once more when
/// `shutdown` is cancelled, the process's metrics go to stdout as EMF lines.
/// Await the handle after shutdown to get that last emission out.
pub fn spawn(
    owners: impl Into<Owners>,
    flags: &Flags,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let namespace = flags.metrics_emf_namespace.clone()?;
    if namespace.is_empty() {
        return None;
    }
    let secs = flags.metrics_emf_interval_secs.max(1);
    tracing::info!(%namespace, interval_secs = secs, "emitting CloudWatch EMF metrics on stdout");
    let mut emf = Emf::new(namespace, owners);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(secs));
        tick.tick().await; // the first tick is immediate: nothing has happened yet
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            emit(&mut emf, &mut std::io::stdout().lock());
            if last {
                return;
            }
        }
    }))
}

/// Runs `service` with the emitter alongside (when `METRICS_EMF_NAMESPACE` is set), then lets
/// the emitter print the final interval once the service has stopped.
pub async fn alongside<T>(
    owners: impl Into<Owners>,
    flags: &Flags,
    shutdown: &CancellationToken,
    service: impl std::future::Future<Output = T>,
) -> T {
    let emitter = spawn(owners, flags, shutdown.clone());
    let out = service.await;
    if let Some(last) = emitter {
        let _ = last.await;
    }
    out
}

/// One interval's documents, one per line.
pub fn emit(emf: &mut Emf, out: &mut impl Write) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for doc in emf.documents(&crate::render(), now) {
        if writeln!(out, "{doc}").is_err() {
            return; // stdout is gone; nothing else to tell
        }
    }
    let _ = out.flush();
}

/// The upper bound of the bucket holding quantile `q`, from cumulative (upper bound, count)
/// pairs sorted by bound; the largest finite bound when it falls in `+Inf`.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    let largest_finite = buckets
        .iter()
        .rev()
        .map(|b| b.0)
        .find(|b| b.is_finite())
        .unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, cumulative)| *cumulative >= rank)
        .map_or(largest_finite, |(le, _)| {
            if le.is_finite() { *le } else { largest_finite }
        })
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

fn series_key(name: &str, labels: &BTreeMap<String, String>) -> String {
    let mut key = name.to_owned();
    for (k, v) in labels {
        key.push_str(&format!("\u{1f}{k}={v}"));
    }
    key
}

#[cfg(test)]
mod tests;
