//! Fixed-layout histograms: counts merge by adding, quantiles come from the bins.

/// How a histogram's bins are laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    /// `bins` equal bins over [0, 1] (scores); values outside go to the end bins.
    Unit { bins: usize },
    /// Bin 0 holds [0, lo); then `per_decade` bins per decade from `lo` for `decades`
    /// decades; the last bin holds everything above.
    Log {
        lo: f64,
        per_decade: usize,
        decades: usize,
    },
}

/// |live - candidate|: 1e-7 .. 1, 10 bins per decade (a quantile is within 12%).
pub const DIFF: Layout = Layout::Log {
    lo: 1e-7,
    per_decade: 10,
    decades: 7,
};
/// Scores, 20 bins of 0.05: the chart's two distributions.
pub const SCORE: Layout = Layout::Unit { bins: 20 };
/// Invocation latency in ms: 0.01 ms .. 100 s, 10 bins per decade.
pub const LATENCY_MS: Layout = Layout::Log {
    lo: 0.01,
    per_decade: 10,
    decades: 7,
};

impl Layout {
    pub fn len(self) -> usize {
        match self {
            Layout::Unit { bins } => bins,
            Layout::Log {
                per_decade,
                decades,
                ..
            } => per_decade * decades + 2,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn bin(self, x: f64) -> usize {
        let last = self.len() - 1;
        match self {
            Layout::Unit { bins } => ((x * bins as f64).floor().max(0.0) as usize).min(last),
            Layout::Log { lo, per_decade, .. } => {
                if !(x >= lo) {
                    return 0; // also NaN
                }
                let k = ((x / lo).log10() * per_decade as f64).floor() as usize + 1;
                k.min(last)
            }
        }
    }

    /// The bin's lower and upper bounds.
    pub fn bounds(self, i: usize) -> (f64, f64) {
        match self {
            Layout::Unit { bins } => (i as f64 / bins as f64, (i + 1) as f64 / bins as f64),
            Layout::Log { lo, per_decade, .. } => {
                let edge = |k: usize| lo * 10f64.powf(k as f64 / per_decade as f64);
                match i {
                    0 => (0.0, lo),
                    i => (edge(i - 1), edge(i)),
                }
            }
        }
    }

    /// The value a bin stands for in a quantile: 0 for the first log bin, the geometric
    /// middle of other log bins, the middle of a unit bin.
    fn representative(self, i: usize) -> f64 {
        let (a, b) = self.bounds(i);
        match self {
            Layout::Unit { .. } => (a + b) / 2.0,
            Layout::Log { .. } if i == 0 => 0.0,
            Layout::Log { .. } => (a * b).sqrt(),
        }
    }

    /// The `q` quantile of `counts` laid out this way (`None` when empty).
    pub fn quantile(self, counts: &[u64], q: f64) -> Option<f64> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(self.representative(i));
            }
        }
        None
    }
}

/// `i:c/i:c/...` for the non-empty bins (the registry's metadata characters).
pub fn encode(counts: &[u64]) -> String {
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| format!("{i}:{c}"))
        .collect::<Vec<_>>()
        .join("/")
}

pub fn decode(s: &str, layout: Layout) -> Result<Vec<u64>, String> {
    let mut counts = vec![0; layout.len()];
    for pair in s.split('/').filter(|p| !p.is_empty()) {
        let (i, c) = pair
            .split_once(':')
            .ok_or_else(|| format!("{pair:?} is not bin:count"))?;
        let i: usize = i.parse().map_err(|_| format!("bad bin {i:?}"))?;
        let c: u64 = c.parse().map_err(|_| format!("bad count {c:?}"))?;
        *counts
            .get_mut(i)
            .ok_or_else(|| format!("bin {i} out of range"))? += c;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_and_quantiles() {
        assert_eq!(DIFF.bin(0.0), 0);
        assert_eq!(DIFF.bin(1e-7), 1);
        assert_eq!(DIFF.bin(0.5), 67);
        assert_eq!(DIFF.bin(1.0), DIFF.len() - 1);
        assert_eq!(DIFF.bin(3.0), DIFF.len() - 1);
        assert_eq!(SCORE.bin(1.0), 19);
        assert_eq!(SCORE.bin(-0.1), 0);
        let mut counts = vec![0; DIFF.len()];
        for x in [0.01, 0.02, 0.03, 0.04, 0.5] {
            counts[DIFF.bin(x)] += 1;
        }
        let p50 = DIFF.quantile(&counts, 0.5).unwrap();
        assert!((p50 / 0.03 - 1.0).abs() < 0.13, "{p50}");
        let p99 = DIFF.quantile(&counts, 0.99).unwrap();
        assert!((p99 / 0.5 - 1.0).abs() < 0.13, "{p99}");
        assert_eq!(DIFF.quantile(&vec![0; DIFF.len()], 0.5), None);
    }

    #[test]
    fn sparse_encoding_round_trips_and_refuses_garbage() {
        let mut counts = vec![0; SCORE.len()];
        counts[3] = 7;
        counts[19] = 1;
        let s = encode(&counts);
        assert_eq!(s, "3:7/19:1");
        assert_eq!(decode(&s, SCORE).unwrap(), counts);
        assert!(decode("20:1", SCORE).is_err());
        assert!(decode("x", SCORE).is_err());
    }
}
