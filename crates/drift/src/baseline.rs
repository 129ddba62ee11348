//! A feature's baseline: the bins of its training values, as the package carries it.
//!
//! Bin edges are the training values' deciles (numpy's default, linear interpolation),
//! rounded to 6 significant digits, duplicates dropped; a value `v` falls in bin "how many
//! edges are < v", so `n` edges make `n + 1` bins. `expected` is the share of the non-missing
//! training values in each bin (counted against the rounded edges), `missing_rate` the share
//! of training rows without a value.
//!
//! In the registry it is one `CustomerMetadataProperties` entry per feature,
//! `baseline.<feature>` = `e=<edges> p=<shares> m=<missing rate>`, numbers separated by
//! spaces: at most 256 characters, only letters, digits, spaces and `_ . : / = + - @`
//! (what the registry accepts in a metadata value). `pipeline/train.py` writes the same
//! format.

/// The metadata key prefix: `baseline.<feature>`.
pub const KEY_PREFIX: &str = "baseline.";
/// Bins a baseline is cut into (fewer when values repeat).
pub const BINS: usize = 10;
/// The registry's limit on one metadata value.
pub const VALUE_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    /// Strictly increasing.
    pub edges: Vec<f64>,
    /// One share per bin (`edges.len() + 1`), summing to 1.
    pub expected: Vec<f64>,
    pub missing_rate: f64,
}

/// `v` rounded to `digits` significant digits.
fn round_sig(v: f64, digits: usize) -> f64 {
    format!("{v:.*e}", digits.saturating_sub(1))
        .parse()
        .unwrap_or(v)
}

/// numpy's default quantile of sorted values: linear interpolation between closest ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

impl Baseline {
    /// The bin `v` falls in.
    pub fn bin(&self, v: f64) -> usize {
        self.edges.partition_point(|e| *e < v)
    }

    pub fn bins(&self) -> usize {
        self.expected.len()
    }

    /// The baseline of one feature's training values (`None`: a missing value). `None` when
    /// no value is present.
    pub fn from_values(values: impl IntoIterator<Item = Option<f64>>, bins: usize) -> Option<Self> {
        let mut present = Vec::new();
        let mut missing = 0usize;
        for v in values {
            match v {
                Some(v) if v.is_finite() => present.push(v),
                _ => missing += 1,
            }
        }
        if present.is_empty() {
            return None;
        }
        present.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..bins)
            .map(|i| round_sig(quantile(&present, i as f64 / bins as f64), 6))
            .collect();
        edges.dedup();
        let mut counts = vec![0usize; edges.len() + 1];
        for v in &present {
            counts[edges.partition_point(|e| e < v)] += 1;
        }
        let n = present.len() as f64;
        Some(Baseline {
            expected: counts.iter().map(|c| *c as f64 / n).collect(),
            edges,
            missing_rate: missing as f64 / (missing + present.len()) as f64,
        })
    }

    /// The metadata value (see the module's documentation).
    pub fn encode(&self) -> String {
        // The shorter of the plain and the exponent notation (`1e21`, not 22 digits).
        let short = |x: &f64| {
            let (plain, exp) = (x.to_string(), format!("{x:e}"));
            if exp.len() < plain.len() { exp } else { plain }
        };
        let join = |xs: &[f64]| xs.iter().map(short).collect::<Vec<_>>().join(" ");
        let shares: Vec<f64> = self.expected.iter().map(|p| round_sig(*p, 4)).collect();
        format!(
            "e={} p={} m={}",
            join(&self.edges),
            join(&shares),
            round_sig(self.missing_rate, 4)
        )
    }

    /// Reads a metadata value; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (mut edges, mut expected, mut missing) = (Vec::new(), Vec::new(), None);
        let mut section = ' ';
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            let value = match token.split_once('=') {
                Some((name @ ("e" | "p" | "m"), rest)) => {
                    section = name.chars().next().unwrap_or(' ');
                    rest
                }
                _ => token,
            };
            if value.is_empty() {
                continue;
            }
            let x: f64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not a number"))?;
            match section {
                'e' => edges.push(x),
                'p' => expected.push(x),
                'm' if missing.is_none() => missing = Some(x),
                _ => return Err(format!("unexpected {token:?}")),
            }
        }
        let missing_rate = missing.ok_or("no m= (missing rate)")?;
        if expected.len() != edges.len() + 1 {
            return Err(format!(
                "{} edges need {} shares, found {}",
                edges.len(),
                edges.len() + 1,
                expected.len()
            ));
        }
        if edges.windows(2).any(|w| w[0] >= w[1]) || edges.iter().any(|e| !e.is_finite()) {
            return Err("edges must be finite and strictly increasing".into());
        }
        let total: f64 = expected.iter().sum();
        if expected.iter().any(|p| !(0.0..=1.0).contains(p)) || (total - 1.0).abs() > 0.01 {
            return Err(format!(
                "shares must be in [0, 1] and sum to 1 (sum {total})"
            ));
        }
        if !(0.0..=1.0).contains(&missing_rate) {
            return Err("the missing rate must be in [0, 1]".into());
        }
        Ok(Baseline {
            edges,
            expected,
            missing_rate,
        })
    }
}

/// A feature's baseline and its column in the model's rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub index: usize,
    pub feature: String,
    pub baseline: Baseline,
}

/// The baselines a package's metadata carries, for `features` (the model's, in order);
/// features without a baseline, or with one that does not parse, are left out, and the
/// reasons returned.
pub fn from_metadata<'a>(
    features: &[String],
    get: impl Fn(&str) -> Option<&'a str>,
) -> (Vec<Column>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (index, f) in features.iter().enumerate() {
        let Some(value) = get(&format!("{KEY_PREFIX}{f}")) else {
            continue;
        };
        match Baseline::parse(value) {
            Ok(baseline) => out.push(Column {
                index,
                feature: f.clone(),
                baseline,
            }),
            Err(e) => problems.push(format!("{KEY_PREFIX}{f}: {e}")),
        }
    }
    (out, problems)
}

/// Population stability index of `counts` (live values per bin) against `expected` shares:
/// sum of (a - e) * ln(a / e), each share floored at 1e-4 so an empty bin counts as rare, not
/// infinite. `None` without any count.
pub fn psi(expected: &[f64], counts: &[u64]) -> Option<f64> {
    const FLOOR: f64 = 1e-4;
    let total: u64 = counts.iter().sum();
    if total == 0 || expected.len() != counts.len() {
        return None;
    }
    Some(
        expected
            .iter()
            .zip(counts)
            .map(|(e, c)| {
                let a = (*c as f64 / total as f64).max(FLOOR);
                let e = e.max(FLOOR);
                (a - e) * (a / e).ln()
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deciles_like_numpy() {
        // numpy: np.quantile(np.arange(1, 101), np.linspace(0, 1, 11)[1:-1])
        // -> 10.9, 20.8, ..., 90.1
        let b = Baseline::from_values((1..=100).map(|v| Some(v as f64)), 10).unwrap();
        assert_eq!(
            b.edges,
            [10.9, 20.8, 30.7, 40.6, 50.5, 60.4, 70.3, 80.2, 90.1]
        );
        assert!(b.expected.iter().all(|p| (p - 0.1).abs() < 1e-9), "{b:?}");
        assert_eq!(b.missing_rate, 0.0);
    }

    #[test]
    fn repeated_values_make_fewer_bins_and_missing_is_counted() {
        let values = [Some(0.0), Some(1.0), Some(1.0), None, Some(0.0), Some(1.0)];
        let b = Baseline::from_values(values, 10).unwrap();
        // numpy's deciles of [0, 0, 1, 1, 1]: 0, 0, 0, 0.2, 0.6, 1, 1, 1, 1 -> 4 edges.
        assert_eq!(b.edges, [0.0, 0.2, 0.6, 1.0], "{b:?}");
        assert_eq!((b.bin(0.0), b.bin(1.0), b.bin(2.0)), (0, 3, 4));
        assert_eq!(b.expected, [0.4, 0.0, 0.0, 0.6, 0.0]);
        assert!((b.missing_rate - 1.0 / 6.0).abs() < 1e-12);
        assert!(Baseline::from_values([None, None], 10).is_none());
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (bad, why) in [
            ("e=1 2 p=0.5 0.5 m=0", "shares"),
            ("e=2 1 p=0.3 0.3 0.4 m=0", "increasing"),
            ("e=1 p=0.5 0.6 m=0", "sum"),
            ("e=1 p=0.5 0.5", "missing"),
            ("e=x p=1 m=0", "number"),
            ("e=1 p=0.5 0.5 m=2", "missing rate"),
        ] {
            let e = Baseline::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            Baseline::parse("e= p=1 m=0.5").unwrap().bins(),
            1,
            "a constant feature: one bin"
        );
    }

    #[test]
    fn psi_is_zero_for_the_same_shares_and_grows_with_a_shift() {
        let e = [0.25, 0.25, 0.25, 0.25];
        assert!(psi(&e, &[100, 100, 100, 100]).unwrap().abs() < 1e-12);
        let small = psi(&e, &[110, 95, 100, 95]).unwrap();
        let big = psi(&e, &[0, 0, 100, 300]).unwrap();
        assert!(small < 0.01 && big > 1.0, "{small} {big}");
        assert_eq!(psi(&e, &[0, 0, 0, 0]), None);
    }

    proptest! {
        #[test]
        fn encoding_round_trips_within_the_registry_limits(
            values in proptest::collection::vec(proptest::option::weighted(0.9, -1e9f64..1e9), 1..400)
        ) {
            if let Some(b) = Baseline::from_values(values, BINS) {
                let s = b.encode();
                prop_assert!(s.len() <= VALUE_MAX, "{} chars: {s}", s.len());
                prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c)), "{s}");
                let back = Baseline::parse(&s).unwrap();
                prop_assert_eq!(&back.edges, &b.edges);
                for (x, y) in back.expected.iter().zip(&b.expected) {
                    prop_assert!((x - y).abs() < 1e-3);
                }
            }
        }
    }
}
