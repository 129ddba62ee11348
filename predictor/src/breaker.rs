//! A circuit breaker for the endpoint: after `threshold` consecutive failures it opens and
//! fails calls fast for `cooldown`; then one probe is let through (half-open): its success
//! closes the circuit, its failure opens it again.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

/// Permission to call; report how it went with [`Breaker::record`]. A probe's permit that
/// is dropped unreported (its caller went away: a deadline, a cancelled request) gives the
/// probe back, so the circuit never stays half-open with nobody probing.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut state = self.breaker.state.lock().expect("breaker lock");
            if *state == State::HalfOpen {
                *state = State::Open {
                    until: Instant::now(),
                };
                metrics::gauge!("predictor_circuit_open").set(1.0);
            }
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// A permit, or how long until the circuit lets a probe through.
    pub fn allow(&self) -> Result<Permit<'_>, Duration> {
        let mut state = self.state.lock().expect("breaker lock");
        let now = Instant::now();
        let permit = |probe| Permit {
            breaker: self,
            probe,
            reported: false,
        };
        match *state {
            State::Closed { .. } => Ok(permit(false)),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                metrics::gauge!("predictor_circuit_open").set(0.5);
                Ok(permit(true))
            }
            State::Open { until } => Err(until - now),
            // One probe at a time; everyone else fails fast until it reports.
            State::HalfOpen => Err(self.cooldown),
        }
    }

    /// `ok` = the endpoint answered (even with a model error); `false` = it looked down.
    pub fn record(&self, mut permit: Permit<'_>, ok: bool) {
        permit.reported = true;
        let mut state = self.state.lock().expect("breaker lock");
        let next = match (*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false)
                if failures + 1 < self.threshold && !permit.probe =>
            {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => State::Open {
                until: Instant::now() + self.cooldown,
            },
        };
        if matches!(next, State::Open { .. }) && !matches!(*state, State::Open { .. }) {
            tracing::warn!(cooldown = ?self.cooldown, "circuit to the endpoint opened");
        }
        metrics::gauge!("predictor_circuit_open").set(if matches!(next, State::Open { .. }) {
            1.0
        } else {
            0.0
        });
        *state = next;
    }

    #[cfg(test)]
    fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().expect("breaker lock"),
            State::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_and_closes() {
        let b = Breaker::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            let p = b.allow().unwrap();
            b.record(p, false);
        }
        assert!(!b.is_open(), "two failures stay under the threshold");
        let p = b.allow().unwrap();
        b.record(p, true);
        for _ in 0..3 {
            let p = b.allow().unwrap();
            b.record(p, false);
        }
        assert!(b.is_open());
        assert!(b.allow().is_err(), "open: fail fast");

        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.allow().expect("a probe after the cooldown");
        assert!(b.allow().is_err(), "only one probe at a time");
        b.record(probe, false);
        assert!(b.allow().is_err(), "a failed probe reopens");

        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.allow().unwrap();
        b.record(probe, true);
        assert!(!b.is_open());
        assert!(b.allow().is_ok());
    }

    /// A probe whose caller goes away (its future dropped mid-call) gives the probe back: the
    /// next caller probes, instead of every caller failing fast forever.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_lets_the_next_caller_probe() {
        let b = Breaker::new(1, Duration::from_secs(5));
        let p = b.allow().unwrap();
        b.record(p, false);
        tokio::time::advance(Duration::from_secs(5)).await;
        let call = async {
            let _probe = b.allow().expect("a probe after the cooldown");
            tokio::time::sleep(Duration::from_secs(60)).await; // the endpoint hangs
        };
        // the caller's deadline passes and its future is dropped, permit and all
        assert!(
            tokio::time::timeout(Duration::from_secs(1), call)
                .await
                .is_err()
        );
        let next = b.allow().expect("the next caller probes");
        b.record(next, true);
        assert!(!b.is_open(), "and its success closes the circuit");
    }
}
