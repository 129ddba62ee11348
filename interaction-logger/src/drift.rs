//! Drift of live inputs from the live model's training data. The registry-watcher's status
//! carries, with each live variant, its package's baseline (bins per training feature); every
//! logged interaction's feature row is counted into a rolling window in those bins (`drift`
//! crate), and each scrape of `/metrics` reports per feature the population stability index
//! against the baseline and the missing-value rate. Incremental (nothing is read back from
//! the store), bounded (a fixed ring of time slots), and cheap on the Log path: one lock per
//! call and a binary search per feature and row. A new live model starts a new window.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use proto::{interaction::v1::Interaction, registry::v1::Status};

#[derive(clap::Args, Debug, Clone)]
#[group(id = "drift")]
pub struct Config {
    /// registry-watcher gRPC URL: the live model and its baseline. Unset: no drift tracking.
    #[arg(long, env = "REGISTRY_WATCHER_URL")]
    pub registry_watcher_url: Option<String>,
    /// The rolling window live inputs are compared over.
    #[arg(long, env = "LOGGER_DRIFT_WINDOW_SECS", default_value_t = WINDOW_SECS)]
    pub drift_window_secs: u64,
    /// Time slots the window moves by (window / slots at a time).
    #[arg(long, env = "LOGGER_DRIFT_SLOTS", default_value_t = SLOTS)]
    pub drift_slots: usize,
    /// Values of a feature the window needs before its PSI is reported.
    #[arg(long, env = "LOGGER_DRIFT_MIN_ROWS", default_value_t = MIN_ROWS)]
    pub drift_min_rows: u64,
    /// PSI above which a feature counts as drifted (`logger_feature_drifted`): 0.1 is a
    /// moderate shift by the usual rule of thumb, 0.25 a large one.
    #[arg(long, env = "LOGGER_DRIFT_PSI_THRESHOLD", default_value_t = PSI_THRESHOLD)]
    pub drift_psi_threshold: f64,
}

/// The flags' defaults, declared once for the flags and for [`Config::default`].
pub const WINDOW_SECS: u64 = 900;
pub const SLOTS: usize = 30;
pub const MIN_ROWS: u64 = 200;
pub const PSI_THRESHOLD: f64 = 0.2;

impl Default for Config {
    /// Tracking off (no watcher to follow), the flags' defaults otherwise.
    fn default() -> Self {
        Config {
            registry_watcher_url: None,
            drift_window_secs: WINDOW_SECS,
            drift_slots: SLOTS,
            drift_min_rows: MIN_ROWS,
            drift_psi_threshold: PSI_THRESHOLD,
        }
    }
}

struct Live {
    arn: String,
    version: i64,
    tracker: drift::Tracker,
}

#[derive(Clone)]
pub struct Drift {
    registry: registry_follower::Follower,
    live: Arc<Mutex<Option<Live>>>,
    window: Duration,
    slots: usize,
    min_rows: u64,
    threshold: f64,
    started: Instant,
}

/// The first variant with traffic whose package carries a baseline.
fn live_variant(status: &Status) -> Option<&proto::registry::v1::Variant> {
    status
        .endpoint
        .as_ref()?
        .variants
        .iter()
        .find(|v| v.current_weight > 0.0 && !v.baselines.is_empty() && !v.features.is_empty())
}

impl Drift {
    /// Follows the watcher for the live model's baseline when `REGISTRY_WATCHER_URL` is set
    /// (and reports the window in the metrics); `None` otherwise.
    pub fn follow(
        config: &Config,
        tls: &grpc_tls::Tls,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Option<Drift>> {
        let Some(url) = config.registry_watcher_url.as_deref() else {
            tracing::info!("no REGISTRY_WATCHER_URL: live inputs are not checked for drift");
            return Ok(None);
        };
        let follower =
            registry_follower::Follower::start(tls.endpoint(url)?, shutdown.child_token());
        let drift = Drift::new(config, follower);
        telemetry::add_section({
            let drift = drift.clone();
            move || drift.record_metrics()
        });
        Ok(Some(drift))
    }

    pub fn new(config: &Config, registry: registry_follower::Follower) -> Self {
        Drift {
            registry,
            live: Arc::default(),
            window: Duration::from_secs(config.drift_window_secs.max(1)),
            slots: config.drift_slots.max(1),
            min_rows: config.drift_min_rows,
            threshold: config.drift_psi_threshold,
            started: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Counts the rows of `interactions` (on the Log path).
    pub fn observe(&self, interactions: &[Interaction]) {
        let mut live = self.lock();
        let next = self.registry.with(|s| {
            let v = s.and_then(live_variant);
            match (v, live.as_ref()) {
                (Some(v), Some(l)) if l.arn == v.model_package_arn => None,
                (None, None) => None,
                (None, Some(_)) => Some(None),
                (Some(v), _) => Some(Some(Live {
                    arn: v.model_package_arn.clone(),
                    version: v.model_package_version,
                    tracker: drift::Tracker::new(
                        registry_status::schema::drift_columns(&v.baselines),
                        v.features.len(),
                        self.window,
                        self.slots,
                        self.min_rows,
                    ),
                })),
            }
        });
        if let Some(next) = next {
            match &next {
                Some(l) => {
                    tracing::info!(version = l.version, features = ?l.tracker.features().collect::<Vec<_>>(), "tracking drift against the live model's baseline")
                }
                None => tracing::info!("the live model carries no baseline: drift is not tracked"),
            }
            *live = next;
        }
        if let Some(l) = live.as_mut() {
            let now = self.now_ms();
            // A shadow record repeats a live row the window already counted.
            let shadow = proto::interaction::v1::Source::Shadow as i32;
            for i in interactions.iter().filter(|i| i.source != shadow) {
                l.tracker.observe(now, &i.features_csv);
            }
        }
    }

    /// The window now, and the live model it is held against.
    pub fn report(&self) -> Option<(i64, drift::Report)> {
        let now = self.now_ms();
        self.lock()
            .as_ref()
            .map(|l| (l.version, l.tracker.report(now)))
    }

    /// JSON for the admin port's `/drift`.
    pub fn json(&self) -> serde_json::Value {
        match self.report() {
            None => serde_json::json!({ "tracking": false }),
            Some((version, report)) => serde_json::json!({
                "tracking": true,
                "model_package_version": version,
                "psi_threshold": self.threshold,
                "drifted": report.features.iter().filter(|f| f.psi.is_some_and(|p| p > self.threshold)).map(|f| f.feature.clone()).collect::<Vec<_>>(),
                "window": report,
            }),
        }
    }

    /// The window's series, recorded at each scrape: one per feature of the live model.
    pub fn record_metrics(&self) {
        let Some((version, report)) = self.report() else {
            return;
        };
        metrics::describe_gauge!("logger_drift_window_rows", "Rows in the drift window.");
        metrics::gauge!("logger_drift_window_rows").set(report.rows as f64);
        metrics::describe_gauge!(
            "logger_drift_model_version",
            "The live model whose baseline live inputs are held against."
        );
        metrics::gauge!("logger_drift_model_version").set(version as f64);
        let series = |name: &'static str,
                      help: &'static str,
                      value: &dyn Fn(&drift::FeatureDrift) -> Option<f64>| {
            metrics::describe_gauge!(name, help);
            for f in &report.features {
                if let Some(v) = value(f) {
                    metrics::gauge!(name, "feature" => f.feature.clone()).set(v);
                }
            }
        };
        series(
            "logger_feature_psi",
            "Population stability index of the feature's live values against the live model's training baseline.",
            &|f| f.psi,
        );
        series(
            "logger_feature_missing_rate",
            "Share of rows in the window without a value for the feature.",
            &|f| f.missing_rate,
        );
        series(
            "logger_feature_baseline_missing_rate",
            "Share of training rows without a value for the feature.",
            &|f| Some(f.baseline_missing_rate),
        );
        series(
            "logger_feature_drifted",
            "1 when the feature's PSI is above LOGGER_DRIFT_PSI_THRESHOLD.",
            &|f| f.psi.map(|p| if p > self.threshold { 1.0 } else { 0.0 }),
        );
        let max = report
            .features
            .iter()
            .filter_map(|f| f.psi)
            .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
        if let Some(max) = max {
            metrics::describe_gauge!(
                "logger_drift_psi_max",
                "The largest PSI over the live model's features (what the drift alarm watches)."
            );
            metrics::gauge!("logger_drift_psi_max").set(max);
        }
    }
}
