//! Telemetry for every service: tracing to stdout (JSON lines in production, pretty
//! locally), OpenTelemetry traces by OTLP when an endpoint is set (`traces`), a process-wide
//! Prometheus recorder and its text (what the admin port's `/metrics` serves, crate
//! `bootstrap`); optionally the same metrics as CloudWatch EMF lines on stdout (`emf`).

pub mod emf;
mod prometheus_text;
pub mod traces;

pub use traces::Tracing;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How a process writes its logs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, fields at the top level (production, CloudWatch).
    Json,
    /// For people at a terminal.
    Pretty,
}

/// The logging flag every process takes, flattened into its arguments. An unknown format is
/// refused at start, not taken for JSON.
#[derive(clap::Args, Debug, Clone)]
pub struct Logging {
    /// json (production) or pretty.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// A service's observability, flattened into its arguments the same way everywhere: its log
/// format, its traces' exporter, its CloudWatch EMF metrics.
#[derive(clap::Args, Debug, Clone)]
pub struct Observability {
    #[command(flatten)]
    pub logging: Logging,
    #[command(flatten)]
    pub tracing: Tracing,
    #[command(flatten)]
    pub emf: emf::Flags,
}

impl Observability {
    /// Logs, traces and metrics installed for `process` ([`init`]).
    pub fn init(&self, process: &str) -> Result<(), traces::TracingError> {
        init(process, self.logging.log_format, &self.tracing)
    }

    /// Runs `service` with the EMF emitter beside it (its metrics under `owners`: the process's
    /// name, or [`emf::Owners::parts`]), then exports the last spans.
    pub async fn run<T>(
        &self,
        owners: impl Into<emf::Owners>,
        shutdown: &tokio_util::sync::CancellationToken,
        service: impl std::future::Future<Output = T>,
    ) -> T {
        let finished = emf::alongside(owners, &self.emf, shutdown, service).await;
        traces::shutdown().await;
        finished
    }
}

/// Installs the global tracing subscriber (logs on stdout, and the traces' exporter when
/// `tracing` names an endpoint) and the Prometheus recorder (before anything records a
/// metric). `RUST_LOG` overrides the `info` filter. `process` names the spans' service when
/// `OTEL_SERVICE_NAME` does not. Inside a Tokio runtime.
pub fn init(
    process: &str,
    format: LogFormat,
    tracing: &Tracing,
) -> Result<(), traces::TracingError> {
    prometheus();
    install(format, std::io::stdout, traces::layer(process, tracing)?);
    Ok(())
}

/// The tracing subscriber alone (logs, no traces), writing to `writer`.
pub fn init_logs<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    install::<W, tracing_subscriber::layer::Identity>(format, writer, None);
}

fn install<W, L>(format: LogFormat, writer: W, traces: Option<L>)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync,
{
    use tracing_subscriber::{
        Layer,
        filter::{FilterExt, LevelFilter, filter_fn},
        layer::SubscriberExt,
        util::SubscriberInitExt,
    };
    // RUST_LOG filters the log lines only: the exported spans are the services' own (INFO and
    // above) whatever it says, so `RUST_LOG=warn` in production does not empty the traces.
    // With traces on, the log layer also sees the spans that carry a request's `trace_id` (not
    // their events, nor their children: each span the log layer sees costs a formatting of its
    // fields), so a warning inside a traced request still carries its trace id.
    let env =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let gate = traces.is_some().then(|| UnsampledGate {
        logs: env.max_level_hint().unwrap_or(LevelFilter::TRACE),
    });
    let filter = if traces.is_some() {
        env.or(filter_fn(|m| {
            m.is_span()
                && *m.level() <= tracing::Level::INFO
                && m.fields().field("trace_id").is_some()
        }))
        .boxed()
    } else {
        FilterExt::boxed(env)
    };
    // and nothing in a trace the front door did not sample: it would be built to be dropped
    let traces = traces.map(|t| {
        t.with_filter(
            LevelFilter::INFO.and(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                !traces::in_unsampled_trace()
            })),
        )
    });
    let logs = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_writer(writer);
    let logs = match format {
        LogFormat::Pretty => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(traces)
        .with(logs.with_filter(filter))
        .with(gate)
        .try_init();
}

/// The first word on every span and event when traces are on. In a trace the front door did
/// not sample, the traces' filter refuses everything; a span that both layers' filters refuse
/// would still be made, entered at every poll and closed by the registry (per-layer filters
/// only keep it from their own layer). So here, before the per-layer filters: in an unsampled
/// trace, only what the log lines may want goes on (a level within `RUST_LOG`'s most verbose,
/// or a span carrying `trace_id`); everything else, as before.
struct UnsampledGate {
    logs: tracing_subscriber::filter::LevelFilter,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for UnsampledGate {
    /// Never for what no layer below can want (more verbose than the traces' INFO and than
    /// `RUST_LOG`'s most verbose): anything but `never` here would make a callsite the layers
    /// below refuse a dynamic one, asked at every use. For the rest, the layers below decide.
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if *meta.level() <= self.logs.max(tracing_subscriber::filter::LevelFilter::INFO) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        *meta.level() <= self.logs
            || (meta.is_span() && meta.fields().field("trace_id").is_some())
            || !traces::in_unsampled_trace()
    }
}

/// How often the recorder's upkeep runs. The recorder keeps every histogram sample until
/// upkeep folds it into the buckets; a render does the same, but nothing renders when nobody
/// scrapes `/metrics` (and EMF is off), so without this the samples piled up for good: ~47
/// bytes per request in the gateway. The exporter's own default interval.
pub const METRICS_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder (installed on first use, with its upkeep thread).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        spawn_upkeep(handle.clone(), METRICS_UPKEEP_INTERVAL);
        handle
    })
}

/// Runs the recorder's upkeep every `interval` on a thread of its own (not a runtime task:
/// it must run whatever the runtimes do, in every binary, and for as long as the process).
fn spawn_upkeep(handle: PrometheusHandle, interval: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Without it memory grows with every histogram sample until a scrape: say so loudly.
        eprintln!("cannot start the metrics upkeep thread: {e}; histograms grow until scraped");
    }
}

type Section = Box<dyn Fn() + Send + Sync>;
static SECTIONS: std::sync::Mutex<Vec<Section>> = std::sync::Mutex::new(Vec::new());

/// Adds series recorded from the process's own state at every scrape (and every EMF
/// interval): for series that must disappear with what they describe — a variant that is no
/// longer live — which the process's recorder cannot do (it never forgets a series).
/// `section` records them with the `metrics` macros (`gauge!`, `describe_gauge!`) into a
/// recorder of that render alone, so the one exporter formats and escapes every series.
pub fn add_section(section: impl Fn() + Send + Sync + 'static) {
    SECTIONS
        .lock()
        .expect("metric sections")
        .push(Box::new(section));
}

/// What `record` records, rendered as Prometheus text by a recorder of its own.
pub fn render_section(record: impl FnOnce()) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, record);
    recorder.handle().render()
}

/// Every metric of the process: the recorder's series, then the sections.
pub fn render() -> String {
    let mut text = prometheus().render();
    let sections = SECTIONS.lock().expect("metric sections");
    text.push_str(&render_section(|| {
        for section in sections.iter() {
            section();
        }
    }));
    text
}

#[cfg(test)]
mod logging_tests {
    use clap::Parser;

    use super::{LogFormat, Logging};

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        logging: Logging,
    }

    #[test]
    fn an_unknown_log_format_is_refused_not_taken_for_json() {
        let parse = |a: &[&str]| Args::try_parse_from(a).map(|a| a.logging.log_format);
        assert_eq!(parse(&["x"]).unwrap(), LogFormat::Json);
        assert_eq!(
            parse(&["x", "--log-format", "pretty"]).unwrap(),
            LogFormat::Pretty
        );
        let e = parse(&["x", "--log-format", "xml"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid value 'xml'") && e.contains("json, pretty"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod section_tests {
    #[test]
    fn sections_are_rendered_from_current_state_at_every_render() {
        let current = std::sync::Arc::new(std::sync::Mutex::new(1));
        let state = std::sync::Arc::clone(&current);
        super::add_section(move || {
            let v = *state.lock().unwrap();
            metrics::describe_gauge!("test_section_value", "A test's gauge.");
            metrics::gauge!("test_section_value", "label" => format!("a\"{v}")).set(f64::from(v));
        });
        let text = super::render();
        assert!(
            text.contains("test_section_value{label=\"a\\\"1\"} 1\n"),
            "{text}"
        );
        *current.lock().unwrap() = 2;
        let text = super::render();
        assert!(
            text.contains("test_section_value{label=\"a\\\"2\"} 2\n") && !text.contains("a\\\"1"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE test_section_value gauge").count(),
            1,
            "{text}"
        );
    }
}

#[cfg(test)]
mod upkeep_tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn rss_mb() -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kb / 1024.0
    }

    /// Millions of histogram samples with nobody rendering: the upkeep thread folds them into
    /// the buckets, so memory stays flat (without it they are all kept: ~34 MB here).
    #[test]
    fn histogram_samples_do_not_pile_up_when_nobody_renders() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.01, 0.1, 1.0])
            .unwrap()
            .build_recorder();
        super::spawn_upkeep(recorder.handle(), std::time::Duration::from_millis(20));
        let before = rss_mb();
        metrics::with_local_recorder(&recorder, || {
            let h = metrics::histogram!("upkeep_test_seconds");
            for round in 0..40 {
                for i in 0..100_000 {
                    h.record(f64::from(i % 1000) / 1e4 + f64::from(round));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        let grown = rss_mb() - before;
        assert!(
            grown < 8.0,
            "4,000,000 samples grew memory by {grown:.1} MB with the upkeep running"
        );
        // An upkeep may be folding the last samples in right now (a render meanwhile reads
        // a lower count): after a few intervals the samples must be in. Not quite all: a
        // sample recorded while the upkeep drains the same block can be dropped inside
        // metrics-util's AtomicBucket (0 to 5 of these 4,000,000 here, on a hot loop with a
        // drain every 20 ms; in the services, a drain every 5 s).
        std::thread::sleep(std::time::Duration::from_millis(200));
        let text = recorder.handle().render();
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("upkeep_test_seconds_count "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count: {text}"));
        assert!(
            (4_000_000 - 100..=4_000_000).contains(&count),
            "every sample but a rare race's is counted: {count} of 4000000\n{text}"
        );
    }
}
