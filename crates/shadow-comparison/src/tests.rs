use super::*;
use proptest::prelude::*;

fn outcome(live: &[f64], candidate: &[f64]) -> Outcome {
    Outcome {
        live: live.to_vec(),
        candidate: candidate.to_vec(),
        live_latency_ms: 1.0,
        candidate_latency_ms: Some(4.0),
        ..Default::default()
    }
}

#[test]
fn figures_over_rows() {
    let mut c = Comparison::new(0.5);
    c.add(&outcome(&[0.1, 0.6], &[0.2, 0.4]));
    c.add(&outcome(&[0.9], &[0.95]));
    c.add(&Outcome {
        live: vec![0.3],
        live_latency_ms: 1.0,
        candidate_latency_ms: Some(2000.0),
        candidate_failed: true,
        ..Default::default()
    });
    c.add(&Outcome {
        live_failed: true,
        ..Default::default()
    });
    let s = c.summary();
    assert_eq!((s.requests, s.rows), (4, 3));
    assert!((s.mean_diff.unwrap() - (0.1 - 0.2 + 0.05) / 3.0).abs() < 1e-12);
    assert!((s.mean_abs_diff.unwrap() - 0.35 / 3.0).abs() < 1e-12);
    assert_eq!(s.agreement, Some(2.0 / 3.0), "0.6 vs 0.4 disagree at 0.5");
    assert_eq!((s.candidate.errors, s.live.errors), (1, 1));
    assert_eq!(s.candidate.error_rate, Some(0.25));
    let p99 = s.candidate.latency_p99_ms.unwrap();
    assert!((p99 / 2000.0 - 1.0).abs() < 0.13, "{p99}");
    assert_eq!(s.live_scores.iter().sum::<u64>(), 3);
    assert!(s.line().len() <= 256, "{}", s.line());
}

#[test]
fn nothing_compared_says_so() {
    let s = Comparison::new(0.5).summary();
    assert_eq!(
        (s.mean_diff, s.agreement, s.abs_diff_p50),
        (None, None, None)
    );
    assert!(s.line().contains("mean_diff=-"), "{}", s.line());
}

#[test]
fn metadata_round_trips_and_keeps_to_the_registry_limits() {
    let mut c = Comparison::new(0.4);
    for i in 0..5000 {
        let l = (i % 997) as f64 / 997.0;
        c.add(&Outcome {
            live: vec![l],
            candidate: vec![(l * 1.1 + 1e-6 * i as f64).min(1.0)],
            live_latency_ms: 0.5 + (i % 300) as f64,
            candidate_latency_ms: Some(0.2 + (i % 7000) as f64),
            ..Default::default()
        });
    }
    let m = c.to_metadata().unwrap();
    for (k, v) in &m {
        assert!(k.len() <= 128 && v.len() <= 256, "{k}: {}", v.len());
        assert!(
            v.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || " _.:/=+-@".contains(ch)),
            "{k}={v}"
        );
    }
    assert!(m.len() <= MAX_PARTS + 2);
    let back = Comparison::from_metadata(|k| m.get(k).map(String::as_str))
        .unwrap()
        .unwrap();
    assert_eq!(back, c);
    assert_eq!(
        Comparison::from_metadata(|_| None).unwrap(),
        None,
        "nothing stored"
    );
    let mut broken = m.clone();
    broken.remove("shadow.state.0");
    assert!(Comparison::from_metadata(|k| broken.get(k).map(String::as_str)).is_err());
    assert_eq!(
        Comparison::stale_keys(5, 3),
        ["shadow.state.3", "shadow.state.4"]
    );
}

proptest! {
    #[test]
    fn merging_parts_equals_adding_everything(
        rows in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..200),
        split in 0usize..200,
    ) {
        let split = split.min(rows.len());
        let (mut all, mut a, mut b) = (Comparison::new(0.5), Comparison::new(0.5), Comparison::new(0.5));
        for (i, (l, c)) in rows.iter().enumerate() {
            let o = outcome(&[*l], &[*c]);
            all.add(&o);
            if i < split { a.add(&o) } else { b.add(&o) }
        }
        a.merge(&b);
        prop_assert_eq!((a.rows, a.agree, &a.abs_diff), (all.rows, all.agree, &all.abs_diff));
        prop_assert!((a.sum_diff - all.sum_diff).abs() < 1e-9);
    }
}
