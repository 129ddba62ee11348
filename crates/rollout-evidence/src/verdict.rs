//! What a step's evidence says: pass (next step), fail (roll back, with the evidence as the
//! reason) or wait (too little traffic to judge yet). The thresholds are the Deploy step's
//! configuration.

use crate::{Window, mean_noise, psi, psi_noise};

/// The limits a candidate's live outcomes are held to, against the live variant's over the
/// same window.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Requests each variant must have served in a step before it is judged.
    #[arg(long, env = "ROLLOUT_MIN_REQUESTS", default_value_t = 50)]
    pub min_requests: u64,
    /// How much higher the candidate's error rate may be than the live variant's (0.01: one
    /// point).
    #[arg(long, env = "ROLLOUT_MAX_ERROR_RATE_INCREASE", default_value_t = 0.01)]
    pub max_error_rate_increase: f64,
    /// How many times the live variant's p99 latency the candidate's may be ...
    #[arg(long, env = "ROLLOUT_MAX_P99_RATIO", default_value_t = 2.0)]
    pub max_p99_ratio: f64,
    /// ... and at least this many milliseconds over it before that counts (fast models'
    /// p99s are a bin or two apart by noise alone).
    #[arg(long, env = "ROLLOUT_P99_SLACK_MS", default_value_t = 20.0)]
    pub p99_slack_ms: f64,
    /// How far the candidate's mean score may be from the live variant's, beyond what
    /// samples of the step's size show by chance (see `mean_noise`).
    #[arg(long, env = "ROLLOUT_MAX_MEAN_SHIFT", default_value_t = 0.1)]
    pub max_mean_shift: f64,
    /// The most the population stability index between the two variants' score
    /// distributions may be, beyond what samples of the step's size show by chance (see
    /// `psi_noise`). 0.25 is the textbook "large shift", which a model retrained on newer
    /// data passes on its own (the demo's v1 and a retrained v2: about 0.8); the default
    /// stops a distribution unlike the live one, and the mean shift a move of the scores.
    #[arg(long, env = "ROLLOUT_MAX_PSI", default_value_t = 1.0)]
    pub max_psi: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_requests: 50,
            max_error_rate_increase: 0.01,
            max_p99_ratio: 2.0,
            p99_slack_ms: 20.0,
            max_mean_shift: 0.1,
            max_psi: 1.0,
        }
    }
}

/// A step's verdict, each with what the evidence says (the reason a rollback records).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    Waiting(String),
}

impl Thresholds {
    pub fn judge(&self, w: &Window) -> Verdict {
        let (l, c) = (&w.live, &w.candidate);
        let (lv, cv) = (&w.live_variant, &w.candidate_variant);
        // Errors first: a candidate that fails shows it within its first requests.
        if c.requests >= self.min_requests {
            let ce = c.error_rate().unwrap_or(0.0);
            let le = l.error_rate().unwrap_or(0.0);
            if ce - le > self.max_error_rate_increase {
                return Verdict::Fail(format!(
                    "error rate {ce:.3} on {cv} vs {le:.3} on {lv} over {} and {} requests (at most {:+.3})",
                    c.requests, l.requests, self.max_error_rate_increase
                ));
            }
        }
        if c.requests < self.min_requests || l.requests < self.min_requests {
            return Verdict::Waiting(format!(
                "{} of {} requests on {cv}, {} on {lv}",
                c.requests, self.min_requests, l.requests
            ));
        }
        let q = tail_quantile(c.latencies().min(l.latencies()));
        if let (Some(cp), Some(lp)) = (c.latency_ms(q), l.latency_ms(q)) {
            let limit = (lp * self.max_p99_ratio).max(lp + self.p99_slack_ms);
            if cp > limit {
                return Verdict::Fail(format!(
                    "p{} latency {cp:.1} ms on {cv} vs {lp:.1} ms on {lv} (at most {limit:.1} ms)",
                    (q * 1000.0).round() / 10.0
                ));
            }
        }
        let (cm, lm) = (c.mean_score(), l.mean_score());
        // Beyond the threshold by more than the samples' own noise.
        let limit = self.max_mean_shift + mean_noise(l, c);
        if let (Some(cm), Some(lm)) = (cm, lm)
            && (cm - lm).abs() > limit
        {
            return Verdict::Fail(format!(
                "mean score {cm:.4} on {cv} vs {lm:.4} on {lv} (at most {limit:.4} apart: {} plus the noise of these samples)",
                self.max_mean_shift
            ));
        }
        let shift = psi(&l.scores, &c.scores);
        // Beyond the threshold by more than the samples' own noise.
        let limit = self.max_psi + psi_noise(l.scores.iter().sum(), c.scores.iter().sum());
        if let Some(p) = shift
            && p > limit
        {
            return Verdict::Fail(format!(
                "score distributions apart: PSI {p:.3} between {cv} and {lv} (at most {limit:.3}: {} plus the noise of these samples)",
                self.max_psi
            ));
        }
        Verdict::Pass(format!(
            "{cv}: {} requests, error rate {:.3}, p99 {} ms, mean score {}; {lv}: {} requests, error rate {:.3}, p99 {} ms, mean score {}; PSI {}",
            c.requests,
            c.error_rate().unwrap_or(0.0),
            fmt(c.latency_p99_ms(), 1),
            fmt(cm, 4),
            l.requests,
            l.error_rate().unwrap_or(0.0),
            fmt(l.latency_p99_ms(), 1),
            fmt(lm, 4),
            fmt(shift, 3),
        ))
    }
}

/// Latencies of each variant that must lie beyond the tail quantile judged: the p99 of 20
/// requests is their slowest one, and one scheduling stall is not a slow model.
const TAIL_SAMPLES: f64 = 5.0;

/// The tail quantile `n` latencies per variant can judge: the 99th from 500 on, below that
/// the one with [`TAIL_SAMPLES`] of them beyond it (p90 of 50, p75 of 20), never below the
/// median.
pub fn tail_quantile(n: u64) -> f64 {
    (1.0 - TAIL_SAMPLES / n.max(1) as f64).clamp(0.5, 0.99)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}
