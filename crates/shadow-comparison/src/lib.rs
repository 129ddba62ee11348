//! The evidence an approver reads about a shadowed candidate: over the live rows mirrored to
//! it, how its scores differ from the live model's (mean, p50/p99 of |live - candidate|),
//! how often the decision at the threshold agrees, and the two models' invocation latency and
//! error rate. Built incrementally from outcomes (`add`), merged by adding (`merge`), and
//! stored with the candidate's package (`to_metadata` / `from_metadata`), so the registry
//! watcher that gathers it, `mlops-deploy status` and the pipeline's gate read one record.

pub mod hist;

use std::collections::BTreeMap;

use hist::{DIFF, LATENCY_MS, Layout, SCORE};

/// Metadata keys: `shadow.summary` (one line for people and the console), `shadow.parts`
/// and `shadow.state.<i>` (the whole state, cut to the registry's 256-character values).
pub const SUMMARY_KEY: &str = "shadow.summary";
pub const PARTS_KEY: &str = "shadow.parts";
pub const STATE_KEY_PREFIX: &str = "shadow.state.";
const VALUE_MAX: usize = 256;
/// At most this many `shadow.state.<i>` keys (the registry allows 50 keys in all).
pub const MAX_PARTS: usize = 24;

/// One mirrored request.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The live model's score per row (empty when the live call failed).
    pub live: Vec<f64>,
    /// The candidate's score per row (empty when its call failed).
    pub candidate: Vec<f64>,
    pub live_latency_ms: f64,
    /// `None` when the candidate was not called (the live call failed).
    pub candidate_latency_ms: Option<f64>,
    pub live_failed: bool,
    pub candidate_failed: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The decision threshold agreement is counted at.
    pub threshold: f64,
    /// Mirrored requests, and how many each model failed.
    pub requests: u64,
    pub live_errors: u64,
    pub candidate_errors: u64,
    /// Rows both models scored.
    pub rows: u64,
    /// Sum of (candidate - live), and of its absolute value.
    pub sum_diff: f64,
    pub sum_abs_diff: f64,
    /// Rows on the same side of the threshold.
    pub agree: u64,
    pub abs_diff: Vec<u64>,
    pub live_scores: Vec<u64>,
    pub candidate_scores: Vec<u64>,
    pub live_latency: Vec<u64>,
    pub candidate_latency: Vec<u64>,
}

impl Comparison {
    pub fn new(threshold: f64) -> Self {
        Comparison {
            threshold,
            requests: 0,
            live_errors: 0,
            candidate_errors: 0,
            rows: 0,
            sum_diff: 0.0,
            sum_abs_diff: 0.0,
            agree: 0,
            abs_diff: vec![0; DIFF.len()],
            live_scores: vec![0; SCORE.len()],
            candidate_scores: vec![0; SCORE.len()],
            live_latency: vec![0; LATENCY_MS.len()],
            candidate_latency: vec![0; LATENCY_MS.len()],
        }
    }

    pub fn add(&mut self, o: &Outcome) {
        self.requests += 1;
        if o.live_failed {
            self.live_errors += 1;
            return;
        }
        self.live_latency[LATENCY_MS.bin(o.live_latency_ms)] += 1;
        if let Some(ms) = o.candidate_latency_ms {
            self.candidate_latency[LATENCY_MS.bin(ms)] += 1;
        }
        if o.candidate_failed || o.candidate.len() != o.live.len() {
            self.candidate_errors += 1;
            return;
        }
        for (l, c) in o.live.iter().zip(&o.candidate) {
            let d = c - l;
            self.rows += 1;
            self.sum_diff += d;
            self.sum_abs_diff += d.abs();
            self.abs_diff[DIFF.bin(d.abs())] += 1;
            self.live_scores[SCORE.bin(*l)] += 1;
            self.candidate_scores[SCORE.bin(*c)] += 1;
            if (*l >= self.threshold) == (*c >= self.threshold) {
                self.agree += 1;
            }
        }
    }

    pub fn merge(&mut self, other: &Comparison) {
        fn add(a: &mut [u64], b: &[u64]) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        self.requests += other.requests;
        self.live_errors += other.live_errors;
        self.candidate_errors += other.candidate_errors;
        self.rows += other.rows;
        self.sum_diff += other.sum_diff;
        self.sum_abs_diff += other.sum_abs_diff;
        self.agree += other.agree;
        add(&mut self.abs_diff, &other.abs_diff);
        add(&mut self.live_scores, &other.live_scores);
        add(&mut self.candidate_scores, &other.candidate_scores);
        add(&mut self.live_latency, &other.live_latency);
        add(&mut self.candidate_latency, &other.candidate_latency);
    }

    pub fn summary(&self) -> Summary {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let side = |latency: &[u64], errors: u64| Side {
            errors,
            error_rate: ratio(errors, self.requests),
            latency_p50_ms: LATENCY_MS.quantile(latency, 0.5),
            latency_p99_ms: LATENCY_MS.quantile(latency, 0.99),
        };
        Summary {
            requests: self.requests,
            rows: self.rows,
            threshold: self.threshold,
            mean_diff: (self.rows > 0).then(|| self.sum_diff / self.rows as f64),
            mean_abs_diff: (self.rows > 0).then(|| self.sum_abs_diff / self.rows as f64),
            abs_diff_p50: DIFF.quantile(&self.abs_diff, 0.5),
            abs_diff_p99: DIFF.quantile(&self.abs_diff, 0.99),
            agreement: ratio(self.agree, self.rows),
            live: side(&self.live_latency, self.live_errors),
            candidate: side(&self.candidate_latency, self.candidate_errors),
            score_bins: (0..SCORE.len()).map(|i| SCORE.bounds(i).0).collect(),
            live_scores: self.live_scores.clone(),
            candidate_scores: self.candidate_scores.clone(),
        }
    }

    /// The whole state as one string of `name=value` tokens (metadata characters only).
    fn state(&self) -> String {
        format!(
            "threshold={} requests={} live_errors={} candidate_errors={} rows={} sum_diff={} sum_abs_diff={} agree={} abs_diff={} live_scores={} candidate_scores={} live_latency={} candidate_latency={}",
            self.threshold,
            self.requests,
            self.live_errors,
            self.candidate_errors,
            self.rows,
            self.sum_diff,
            self.sum_abs_diff,
            self.agree,
            hist::encode(&self.abs_diff),
            hist::encode(&self.live_scores),
            hist::encode(&self.candidate_scores),
            hist::encode(&self.live_latency),
            hist::encode(&self.candidate_latency),
        )
    }

    fn from_state(s: &str) -> Result<Self, String> {
        let fields: BTreeMap<&str, &str> = s
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.split_once('=')
                    .ok_or_else(|| format!("{t:?} is not name=value"))
            })
            .collect::<Result<_, _>>()?;
        let get = |name: &str| fields.get(name).copied().ok_or(format!("no {name}"));
        let num = |name: &str| -> Result<f64, String> {
            get(name)?
                .parse()
                .map_err(|_| format!("{name} is not a number"))
        };
        let count = |name: &str| -> Result<u64, String> {
            get(name)?
                .parse()
                .map_err(|_| format!("{name} is not a count"))
        };
        let hist = |name: &str, layout: Layout| hist::decode(get(name)?, layout);
        Ok(Comparison {
            threshold: num("threshold")?,
            requests: count("requests")?,
            live_errors: count("live_errors")?,
            candidate_errors: count("candidate_errors")?,
            rows: count("rows")?,
            sum_diff: num("sum_diff")?,
            sum_abs_diff: num("sum_abs_diff")?,
            agree: count("agree")?,
            abs_diff: hist("abs_diff", DIFF)?,
            live_scores: hist("live_scores", SCORE)?,
            candidate_scores: hist("candidate_scores", SCORE)?,
            live_latency: hist("live_latency", LATENCY_MS)?,
            candidate_latency: hist("candidate_latency", LATENCY_MS)?,
        })
    }

    /// The package metadata that stores this comparison: the summary line, the state in parts.
    /// `Err` when the state would need more than `MAX_PARTS` keys.
    pub fn to_metadata(&self) -> Result<BTreeMap<String, String>, String> {
        let state = self.state();
        let parts: Vec<String> = state
            .as_bytes()
            .chunks(VALUE_MAX)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        if parts.len() > MAX_PARTS {
            return Err(format!(
                "the comparison needs {} metadata values, more than {MAX_PARTS}",
                parts.len()
            ));
        }
        let mut out = BTreeMap::new();
        out.insert(SUMMARY_KEY.to_owned(), self.summary().line());
        out.insert(PARTS_KEY.to_owned(), parts.len().to_string());
        for (i, p) in parts.into_iter().enumerate() {
            out.insert(format!("{STATE_KEY_PREFIX}{i}"), p);
        }
        Ok(out)
    }

    /// The comparison a package's metadata stores (`Ok(None)`: none stored).
    pub fn from_metadata<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<Self>, String> {
        let Some(parts) = get(PARTS_KEY) else {
            return Ok(None);
        };
        let parts: usize = parts
            .parse()
            .map_err(|_| format!("{PARTS_KEY} is not a count"))?;
        let mut state = String::new();
        for i in 0..parts {
            state.push_str(
                get(&format!("{STATE_KEY_PREFIX}{i}"))
                    .ok_or_else(|| format!("{STATE_KEY_PREFIX}{i} is missing"))?,
            );
        }
        Self::from_state(&state).map(Some)
    }

    /// The `shadow.state.<i>` keys beyond `parts` (left from a longer state), to remove.
    pub fn stale_keys(old_parts: usize, parts: usize) -> Vec<String> {
        (parts..old_parts)
            .map(|i| format!("{STATE_KEY_PREFIX}{i}"))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Side {
    pub errors: u64,
    /// Of the mirrored requests.
    pub error_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// What the approver reads (JSON at the watcher, in `mlops-deploy status`, at the gate).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub requests: u64,
    pub rows: u64,
    pub threshold: f64,
    /// candidate - live, averaged over rows.
    pub mean_diff: Option<f64>,
    pub mean_abs_diff: Option<f64>,
    /// From 10-bins-per-decade histograms: within 12% of the exact quantile.
    pub abs_diff_p50: Option<f64>,
    pub abs_diff_p99: Option<f64>,
    /// Share of rows whose decision (score >= threshold) is the same.
    pub agreement: Option<f64>,
    pub live: Side,
    pub candidate: Side,
    /// The lower bound of each score bin (width 0.05), and the rows per bin.
    pub score_bins: Vec<f64>,
    pub live_scores: Vec<u64>,
    pub candidate_scores: Vec<u64>,
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

impl Summary {
    /// One line (under the registry's 256 characters): the figures, no histograms.
    pub fn line(&self) -> String {
        let line = format!(
            "rows={} requests={} mean_diff={} mean_abs_diff={} p50_abs={} p99_abs={} agree={} threshold={} cand_errors={} live_errors={} cand_p50_ms={} live_p50_ms={} cand_p99_ms={} live_p99_ms={}",
            self.rows,
            self.requests,
            fmt(self.mean_diff, 5),
            fmt(self.mean_abs_diff, 5),
            fmt(self.abs_diff_p50, 5),
            fmt(self.abs_diff_p99, 5),
            fmt(self.agreement, 4),
            self.threshold,
            self.candidate.errors,
            self.live.errors,
            fmt(self.candidate.latency_p50_ms, 2),
            fmt(self.live.latency_p50_ms, 2),
            fmt(self.candidate.latency_p99_ms, 2),
            fmt(self.live.latency_p99_ms, 2),
        );
        line.chars().take(VALUE_MAX).collect()
    }
}

#[cfg(test)]
mod tests;
