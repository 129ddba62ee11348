//! A rolling window of live feature values, in the bins of the live model's baselines.
//!
//! The window is a ring of `slots` time slots spanning `window`: a row goes into the slot of
//! its time (a slot left from an earlier turn of the ring is emptied first), and a report sums
//! the slots still inside the window. Memory is `slots x features x bins` counters, whatever
//! the traffic.

use std::time::Duration;

use crate::baseline::{Column, psi};

struct Slot {
    /// Which turn of the ring the counts belong to (`now / slot_ms`).
    index: u64,
    rows: u64,
    /// Per column: live values per bin, then missing values.
    counts: Vec<Vec<u64>>,
    missing: Vec<u64>,
}

pub struct Tracker {
    columns: Vec<Column>,
    /// Features per row the model takes; rows of another width are not counted.
    width: usize,
    slot_ms: u64,
    slots: Vec<Slot>,
    min_rows: u64,
    skipped: u64,
}

/// One feature over the window.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FeatureDrift {
    pub feature: String,
    /// `None` until the window holds `min_rows` rows with a value for the feature.
    pub psi: Option<f64>,
    /// Share of the window's rows without a value (`None`: no rows).
    pub missing_rate: Option<f64>,
    pub baseline_missing_rate: f64,
    /// Live values per bin over the window, and the training shares they are held against.
    pub live: Vec<u64>,
    pub expected: Vec<f64>,
    pub edges: Vec<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub window_secs: f64,
    /// Rows in the window.
    pub rows: u64,
    /// Rows not counted since the tracker started (another width than the model's).
    pub skipped: u64,
    pub features: Vec<FeatureDrift>,
}

impl Tracker {
    pub fn new(
        mut columns: Vec<Column>,
        width: usize,
        window: Duration,
        slots: usize,
        min_rows: u64,
    ) -> Self {
        columns.sort_by_key(|c| c.index);
        let slots = slots.max(1);
        let slot_ms = (window.as_millis() as u64 / slots as u64).max(1);
        let empty = |c: &Column| vec![0; c.baseline.bins()];
        Tracker {
            slots: (0..slots)
                .map(|_| Slot {
                    index: u64::MAX,
                    rows: 0,
                    counts: columns.iter().map(empty).collect(),
                    missing: vec![0; columns.len()],
                })
                .collect(),
            columns,
            width,
            slot_ms,
            min_rows,
            skipped: 0,
        }
    }

    pub fn features(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.feature.as_str())
    }

    /// Counts one row (the model's CSV: an empty field is a missing value) seen at `now_ms`.
    pub fn observe(&mut self, now_ms: u64, csv_row: &str) {
        if csv_row.bytes().filter(|b| *b == b',').count() + 1 != self.width {
            self.skipped += 1;
            return;
        }
        let index = now_ms / self.slot_ms;
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(index % n) as usize];
        if slot.index != index {
            slot.index = index;
            slot.rows = 0;
            slot.counts.iter_mut().for_each(|c| c.fill(0));
            slot.missing.fill(0);
        }
        slot.rows += 1;
        // Columns are in row order: one pass over the fields, no allocation.
        let mut fields = csv_row.split(',').enumerate();
        for (i, column) in self.columns.iter().enumerate() {
            let field = fields
                .find(|(k, _)| *k == column.index)
                .map_or("", |(_, f)| f);
            match field.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => slot.counts[i][column.baseline.bin(v)] += 1,
                _ => slot.missing[i] += 1,
            }
        }
    }

    /// The window ending at `now_ms`.
    pub fn report(&self, now_ms: u64) -> Report {
        let current = now_ms / self.slot_ms;
        let n = self.slots.len() as u64;
        let live: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.index != u64::MAX && s.index <= current && current - s.index < n)
            .collect();
        let rows: u64 = live.iter().map(|s| s.rows).sum();
        let features = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let mut counts = vec![0u64; column.baseline.bins()];
                let mut missing = 0;
                for s in &live {
                    counts
                        .iter_mut()
                        .zip(&s.counts[i])
                        .for_each(|(a, b)| *a += b);
                    missing += s.missing[i];
                }
                let present: u64 = counts.iter().sum();
                FeatureDrift {
                    feature: column.feature.clone(),
                    psi: (present >= self.min_rows.max(1))
                        .then(|| psi(&column.baseline.expected, &counts))
                        .flatten(),
                    missing_rate: (rows > 0).then(|| missing as f64 / rows as f64),
                    baseline_missing_rate: column.baseline.missing_rate,
                    live: counts,
                    expected: column.baseline.expected.clone(),
                    edges: column.baseline.edges.clone(),
                }
            })
            .collect();
        Report {
            window_secs: (self.slot_ms * n) as f64 / 1000.0,
            rows,
            skipped: self.skipped,
            features,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Baseline;

    fn tracker(window_ms: u64) -> Tracker {
        let uniform =
            |n: usize| Baseline::from_values((0..1000).map(|v| Some((v % n) as f64)), 10).unwrap();
        let columns = vec![
            Column {
                index: 0,
                feature: "a".into(),
                baseline: uniform(100),
            },
            Column {
                index: 2,
                feature: "c".into(),
                baseline: uniform(10),
            },
        ];
        Tracker::new(columns, 3, Duration::from_millis(window_ms), 10, 50)
    }

    #[test]
    fn live_rows_like_training_keep_psi_low_a_shifted_feature_raises_only_its_own() {
        let mut t = tracker(10_000);
        for i in 0..2000u64 {
            t.observe(i, &format!("{},{},{}", i % 100, 7, i % 10));
        }
        let r = t.report(2000);
        assert_eq!(r.rows, 2000);
        assert!(r.features.iter().all(|f| f.psi.unwrap() < 0.05), "{r:?}");
        let mut t = tracker(10_000);
        for i in 0..2000u64 {
            t.observe(i, &format!("{},x,{}", i % 100 + 60, i % 10));
        }
        let r = t.report(2000);
        let (a, c) = (&r.features[0], &r.features[1]);
        assert!(a.psi.unwrap() > 1.0 && c.psi.unwrap() < 0.05, "{r:?}");
        assert_eq!(
            a.missing_rate,
            Some(0.0),
            "the column without a baseline is not read"
        );
    }

    #[test]
    fn missing_values_and_other_widths_are_counted_apart() {
        let mut t = tracker(10_000);
        for i in 0..100u64 {
            t.observe(i, if i % 4 == 0 { ",1,3" } else { "5,1,nan" });
        }
        t.observe(100, "1,2");
        let r = t.report(100);
        assert_eq!((r.rows, r.skipped), (100, 1));
        assert_eq!(r.features[0].missing_rate, Some(0.25));
        assert_eq!(r.features[1].missing_rate, Some(0.75));
        assert_eq!(r.features[1].psi, None, "25 values < min_rows 50");
    }

    #[test]
    fn rows_leave_the_window_when_it_moves_on() {
        let mut t = tracker(1000);
        for i in 0..500u64 {
            t.observe(i, "1,1,1");
        }
        assert_eq!(t.report(999).rows, 500);
        assert_eq!(t.report(1250).rows, 200, "the slots of 0..300 ms are out");
        assert_eq!(t.report(5000).rows, 0);
        t.observe(5000, "1,1,1");
        assert_eq!(
            t.report(5000).rows,
            1,
            "an old slot is emptied before reuse"
        );
    }
}
