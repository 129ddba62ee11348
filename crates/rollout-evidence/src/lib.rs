//! The evidence a progressive rollout decides each step by. While an endpoint serves two
//! variants — the live one and the candidate being rolled out — the predictors report the
//! outcome of every live request by the variant that served it (`Outcome`); the registry
//! watcher folds them into one [`Window`] per step (a step is a set of weights: new weights,
//! new window) and stores it with the candidate's package (`to_metadata`), where
//! `mlops-deploy` reads it (`from_metadata`) and [`Thresholds::judge`] says: next step, roll
//! back (with the evidence as the reason), or wait for more traffic.

mod verdict;

use std::collections::BTreeMap;

use shadow_comparison::hist::{self, LATENCY_MS, Layout, SCORE};

pub use verdict::{Thresholds, Verdict, tail_quantile};

/// Metadata keys on the candidate's package: the window (which weights, since when) and each
/// side's counts, scores and latencies.
pub const WINDOW_KEY: &str = "rollout.window";
const LIVE_PREFIX: &str = "rollout.live.";
const CANDIDATE_PREFIX: &str = "rollout.candidate.";
/// The registry's limit on one metadata value.
const VALUE_MAX: usize = 256;

/// One live request, as the predictor saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub variant: String,
    pub rows: u32,
    /// The first score of each row (empty when it failed).
    pub scores: Vec<f64>,
    pub latency_ms: f64,
    pub failed: bool,
}

/// What one variant did over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantStats {
    pub requests: u64,
    pub errors: u64,
    pub rows: u64,
    pub score_sum: f64,
    /// Scores of the rows answered, `SCORE` layout (20 bins over [0, 1]).
    pub scores: Vec<u64>,
    /// Invocation latency of every request, `LATENCY_MS` layout.
    pub latency: Vec<u64>,
}

impl Default for VariantStats {
    fn default() -> Self {
        VariantStats {
            requests: 0,
            errors: 0,
            rows: 0,
            score_sum: 0.0,
            scores: vec![0; SCORE.len()],
            latency: vec![0; LATENCY_MS.len()],
        }
    }
}

impl VariantStats {
    pub fn add(&mut self, o: &Outcome) {
        self.requests += 1;
        self.latency[LATENCY_MS.bin(o.latency_ms)] += 1;
        if o.failed {
            self.errors += 1;
            return;
        }
        for s in o.scores.iter().filter(|s| s.is_finite()) {
            self.rows += 1;
            self.score_sum += s;
            self.scores[SCORE.bin(*s)] += 1;
        }
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    pub fn mean_score(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.score_sum / self.rows as f64)
    }

    /// The variance of the scores, from their histogram (bin midpoints; the 0.05-wide bins
    /// add at most 0.0002): what the mean's sampling noise is judged by.
    pub fn score_variance(&self) -> Option<f64> {
        let mean = self.mean_score()?;
        let n: u64 = self.scores.iter().sum();
        (n > 1).then(|| {
            let bins = self.scores.len() as f64;
            self.scores
                .iter()
                .enumerate()
                .map(|(i, c)| *c as f64 * ((i as f64 + 0.5) / bins - mean).powi(2))
                .sum::<f64>()
                / (n - 1) as f64
        })
    }

    pub fn latency_p99_ms(&self) -> Option<f64> {
        self.latency_ms(0.99)
    }

    /// The `q` quantile of the latencies (`None` before the first).
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        LATENCY_MS.quantile(&self.latency, q)
    }

    /// How many latencies are held.
    pub fn latencies(&self) -> u64 {
        self.latency.iter().sum()
    }

    pub fn latency_p50_ms(&self) -> Option<f64> {
        LATENCY_MS.quantile(&self.latency, 0.5)
    }

    fn to_metadata(&self, prefix: &str, out: &mut BTreeMap<String, String>) {
        out.insert(
            format!("{prefix}counts"),
            format!(
                "requests={} errors={} rows={} score_sum={}",
                self.requests, self.errors, self.rows, self.score_sum
            ),
        );
        out.insert(format!("{prefix}scores"), hist::encode(&self.scores));
        out.insert(
            format!("{prefix}latency"),
            coarse(&self.latency, LATENCY_MS),
        );
    }

    fn from_metadata<'a>(
        prefix: &str,
        get: &impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Self, String> {
        let key = |name: &str| format!("{prefix}{name}");
        let counts = get(&key("counts")).ok_or_else(|| format!("no {}", key("counts")))?;
        let fields = fields(counts)?;
        let count = |name: &str| -> Result<u64, String> {
            fields
                .get(name)
                .ok_or_else(|| format!("{} has no {name}", key("counts")))?
                .parse()
                .map_err(|_| format!("{} {name} is not a count", key("counts")))
        };
        Ok(VariantStats {
            requests: count("requests")?,
            errors: count("errors")?,
            rows: count("rows")?,
            score_sum: fields
                .get("score_sum")
                .ok_or_else(|| format!("{} has no score_sum", key("counts")))?
                .parse()
                .map_err(|_| "score_sum is not a number".to_owned())?,
            scores: hist::decode(get(&key("scores")).unwrap_or_default(), SCORE)?,
            latency: hist::decode(get(&key("latency")).unwrap_or_default(), LATENCY_MS)?,
        })
    }
}

/// The sparse encoding of `counts`, folding the smallest bins into their neighbours until it
/// fits one metadata value (a latency spread wider than the registry's 256 characters keeps
/// its quantiles to within a bin or two).
fn coarse(counts: &[u64], layout: Layout) -> String {
    let mut counts = counts.to_vec();
    let mut text = hist::encode(&counts);
    while text.len() > VALUE_MAX {
        let Some((i, _)) = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .min_by_key(|(_, c)| **c)
        else {
            break;
        };
        let to = if i + 1 < layout.len() { i + 1 } else { i - 1 };
        counts[to] += counts[i];
        counts[i] = 0;
        text = hist::encode(&counts);
    }
    text
}

fn fields(s: &str) -> Result<BTreeMap<&str, &str>, String> {
    s.split(' ')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.split_once('=')
                .ok_or_else(|| format!("{t:?} is not name=value"))
        })
        .collect()
}

/// One step's evidence: which weights it is for, since when, and each side's stats.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// The weights it is for, as [`weights_signature`] writes them.
    pub weights: String,
    /// Seconds since the epoch when the window began (the watcher saw the weights).
    pub started: f64,
    pub live_variant: String,
    pub candidate_variant: String,
    pub live: VariantStats,
    pub candidate: VariantStats,
}

/// `v1=0.9,v2=0.1`: the variants and their weights, sorted by name, to 4 decimals.
pub fn weights_signature<'a>(weights: impl IntoIterator<Item = (&'a str, f64)>) -> String {
    let mut w: Vec<(&str, f64)> = weights.into_iter().collect();
    w.sort_by(|a, b| a.0.cmp(b.0));
    w.iter()
        .map(|(n, x)| format!("{n}={x:.4}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Window {
    pub fn new(weights: String, started: f64, live: &str, candidate: &str) -> Self {
        Window {
            weights,
            started,
            live_variant: live.to_owned(),
            candidate_variant: candidate.to_owned(),
            live: VariantStats::default(),
            candidate: VariantStats::default(),
        }
    }

    /// Counts an outcome into its side; one of another variant is ignored (returns false).
    pub fn add(&mut self, o: &Outcome) -> bool {
        if o.variant == self.candidate_variant {
            self.candidate.add(o);
        } else if o.variant == self.live_variant {
            self.live.add(o);
        } else {
            return false;
        }
        true
    }

    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert(
            WINDOW_KEY.to_owned(),
            format!(
                "weights={} started={} live={} candidate={}",
                self.weights, self.started, self.live_variant, self.candidate_variant
            ),
        );
        self.live.to_metadata(LIVE_PREFIX, &mut out);
        self.candidate.to_metadata(CANDIDATE_PREFIX, &mut out);
        out
    }

    /// The window a package's metadata stores (`Ok(None)`: none stored).
    pub fn from_metadata<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Self>, String> {
        let Some(window) = get(WINDOW_KEY) else {
            return Ok(None);
        };
        let f = fields(window)?;
        let field = |name: &str| {
            f.get(name)
                .map(|v| (*v).to_owned())
                .ok_or_else(|| format!("{WINDOW_KEY} has no {name}"))
        };
        Ok(Some(Window {
            weights: field("weights")?,
            started: field("started")?
                .parse()
                .map_err(|_| format!("{WINDOW_KEY} started is not a time"))?,
            live_variant: field("live")?,
            candidate_variant: field("candidate")?,
            live: VariantStats::from_metadata(LIVE_PREFIX, &get)?,
            candidate: VariantStats::from_metadata(CANDIDATE_PREFIX, &get)?,
        }))
    }
}

/// The population stability index between two score histograms, each bin's count smoothed
/// by half a count (so an empty bin does not make it infinite); `None` when either is empty.
pub fn psi(expected: &[u64], actual: &[u64]) -> Option<f64> {
    let (e_total, a_total): (u64, u64) = (expected.iter().sum(), actual.iter().sum());
    if e_total == 0 || a_total == 0 {
        return None;
    }
    let smoothed = expected.len() as f64 * 0.5;
    Some(
        expected
            .iter()
            .zip(actual)
            .map(|(e, a)| {
                let p = (*e as f64 + 0.5) / (e_total as f64 + smoothed);
                let q = (*a as f64 + 0.5) / (a_total as f64 + smoothed);
                (q - p) * (q / p).ln()
            })
            .sum(),
    )
}

/// How far apart the means of two samples from one and the same distribution get by chance
/// alone, at most (but once in a thousand): 3.29 standard errors of their difference.
pub fn mean_noise(a: &VariantStats, b: &VariantStats) -> f64 {
    const Z_999: f64 = 3.29;
    match (a.score_variance(), b.score_variance()) {
        (Some(va), Some(vb)) => Z_999 * (va / a.rows as f64 + vb / b.rows as f64).sqrt(),
        _ => f64::INFINITY,
    }
}

/// How much PSI two samples of `n` and `m` scores from one and the same distribution show
/// by chance alone, at most (but once in a thousand): PSI times nm/(n+m) is about
/// chi-squared with bins - 1 degrees of freedom, whose 99.9th percentile for the 20 score
/// bins is 43.8. A shift counts only beyond this.
pub fn psi_noise(n: u64, m: u64) -> f64 {
    const CHI2_999_19: f64 = 43.82;
    if n == 0 || m == 0 {
        return f64::INFINITY;
    }
    CHI2_999_19 * (1.0 / n as f64 + 1.0 / m as f64)
}

#[cfg(test)]
mod tests;
