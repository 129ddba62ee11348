//! `cargo bench -p drift --bench observe`: prints figures, asserts nothing.
//!
//! What drift tracking costs the interaction-logger's Log path: one `Tracker::observe` per
//! logged row (8 features, the demo model's baselines, a 30-slot window), and one `report`
//! (what each /metrics scrape computes). Several runs, their range.

use std::time::{Duration, Instant};

use drift::{Baseline, Column, Tracker};

const CUSTOMERS: &str = include_str!("../../../demo/data/customers.csv");

fn main() {
    let rows: Vec<Vec<&str>> = CUSTOMERS
        .lines()
        .skip(1)
        .map(|l| l.split(',').skip(1).take(8).collect())
        .collect();
    let columns: Vec<Column> = (0..8)
        .map(|i| Column {
            index: i,
            feature: format!("f{i}"),
            baseline: Baseline::from_values(rows.iter().map(|r| r[i].parse().ok()), 10).unwrap(),
        })
        .collect();
    let csv: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
    let n = 2_000_000usize;
    let mut per_row = Vec::new();
    let mut per_report = Vec::new();
    for _ in 0..5 {
        let mut t = Tracker::new(columns.clone(), 8, Duration::from_secs(900), 30, 200);
        let start = Instant::now();
        for i in 0..n {
            // 1 ms of "time" per 1,000 rows: the window turns over as in a long run.
            t.observe((i / 1000) as u64, &csv[i % csv.len()]);
        }
        per_row.push(start.elapsed().as_nanos() as f64 / n as f64);
        let start = Instant::now();
        let reports = 1000;
        for k in 0..reports {
            std::hint::black_box(t.report((n / 1000) as u64 + k));
        }
        per_report.push(start.elapsed().as_micros() as f64 / reports as f64);
    }
    let range = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        format!("{lo:.0}-{hi:.0}")
    };
    println!("drift Tracker, 8 features, 10 bins, 30 slots ({n} rows per run, 5 runs):");
    println!(
        "  observe: {} ns per row (parse 8 fields + 8 binary searches)",
        range(&per_row)
    );
    println!(
        "  report:  {} us per report (what one /metrics scrape computes)",
        range(&per_report)
    );
}
