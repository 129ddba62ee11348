//! How `deploy` moves traffic to a new version (`DEPLOY_STRATEGY` and its knobs): the
//! candidate's share at each baked step, and where a resumed rollout picks up.

use rollout_evidence::Thresholds;

use crate::DeployError;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The endpoint switches to the new version in one update.
    AllAtOnce,
    /// `DEPLOY_CANARY_PERCENT` of traffic for one bake, then the rest.
    Canary,
    /// `DEPLOY_LINEAR_STEP_PERCENT` more at each step, each baked.
    Linear,
}

/// What a step with too little traffic to judge does when its bake is over.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    /// Go on: the candidate was validated and approved, and nothing spoke against it.
    Advance,
    /// Roll back: only evidence promotes a candidate.
    Rollback,
}

/// How `deploy` moves traffic to a new version.
#[derive(clap::Args, Debug, Clone)]
pub struct Strategy {
    #[arg(long = "strategy", env = "DEPLOY_STRATEGY", value_enum, default_value_t = Kind::AllAtOnce)]
    pub kind: Kind,
    /// `canary`: the candidate's share of traffic during the bake.
    #[arg(long, env = "DEPLOY_CANARY_PERCENT", default_value_t = 10.0)]
    pub canary_percent: f64,
    /// `linear`: the share added at each step.
    #[arg(long, env = "DEPLOY_LINEAR_STEP_PERCENT", default_value_t = 25.0)]
    pub linear_step_percent: f64,
    /// How long each step bakes before its evidence may pass it.
    #[arg(long, env = "DEPLOY_BAKE_SECS", default_value_t = 600)]
    pub bake_secs: u64,
    #[arg(long, env = "DEPLOY_QUIET_STEP", value_enum, default_value_t = Quiet::Advance)]
    pub quiet: Quiet,
    #[command(flatten)]
    pub thresholds: Thresholds,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            kind: Kind::AllAtOnce,
            canary_percent: 10.0,
            linear_step_percent: 25.0,
            bake_secs: 600,
            quiet: Quiet::Advance,
            thresholds: Thresholds::default(),
        }
    }
}

impl Strategy {
    /// The candidate's share at each baked step, ascending, each in (0, 1); empty for
    /// all-at-once. After the last one the candidate takes all traffic.
    pub fn shares(&self) -> Result<Vec<f64>, DeployError> {
        let pct = |p: f64, what: &str| {
            if p.is_finite() && p > 0.0 && p < 100.0 {
                Ok(p / 100.0)
            } else {
                Err(DeployError::Failed(format!(
                    "{what} must be above 0 and below 100, not {p}"
                )))
            }
        };
        Ok(match self.kind {
            Kind::AllAtOnce => Vec::new(),
            Kind::Canary => vec![pct(self.canary_percent, "DEPLOY_CANARY_PERCENT")?],
            Kind::Linear => {
                let step = pct(self.linear_step_percent, "DEPLOY_LINEAR_STEP_PERCENT")?;
                let n = (1.0 / step).ceil() as usize;
                (1..n)
                    .map(|i| round4(step * i as f64))
                    .filter(|s| *s < 1.0)
                    .collect()
            }
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            Kind::AllAtOnce => "all-at-once",
            Kind::Canary => "canary",
            Kind::Linear => "linear",
        }
    }
}

pub(crate) fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The first step to run when the candidate already has `weight` of the traffic (a resumed
/// rollout): the first whose share is at least that.
pub fn resume_step(shares: &[f64], weight: f64) -> usize {
    shares
        .iter()
        .position(|s| *s + 1e-6 >= weight)
        .unwrap_or(shares.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(kind: Kind) -> Strategy {
        Strategy {
            kind,
            ..Strategy::default()
        }
    }

    #[test]
    fn steps_by_strategy() {
        assert!(strategy(Kind::AllAtOnce).shares().unwrap().is_empty());
        assert_eq!(strategy(Kind::Canary).shares().unwrap(), vec![0.1]);
        assert_eq!(
            strategy(Kind::Linear).shares().unwrap(),
            vec![0.25, 0.5, 0.75]
        );
        let thirds = Strategy {
            linear_step_percent: 33.0,
            ..strategy(Kind::Linear)
        };
        assert_eq!(thirds.shares().unwrap(), vec![0.33, 0.66, 0.99]);
        let big = Strategy {
            linear_step_percent: 60.0,
            ..strategy(Kind::Linear)
        };
        assert_eq!(big.shares().unwrap(), vec![0.6]);
        for bad in [0.0, 100.0, -5.0, f64::NAN] {
            let s = Strategy {
                canary_percent: bad,
                ..strategy(Kind::Canary)
            };
            assert!(s.shares().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_resumed_rollout_continues_at_the_step_its_weight_shows() {
        let shares = [0.25, 0.5, 0.75];
        assert_eq!(resume_step(&shares, 0.25), 0);
        assert_eq!(resume_step(&shares, 0.3), 1);
        assert_eq!(resume_step(&shares, 0.75), 2);
        assert_eq!(resume_step(&shares, 0.9), 3, "past the last step: finish");
        assert_eq!(resume_step(&shares, 0.0), 0);
    }
}
