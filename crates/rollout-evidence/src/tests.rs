use proptest::prelude::*;

use super::*;

fn outcome(variant: &str, score: f64, latency_ms: f64, failed: bool) -> Outcome {
    Outcome {
        variant: variant.into(),
        rows: 1,
        scores: if failed { vec![] } else { vec![score] },
        latency_ms,
        failed,
    }
}

fn window(
    live: impl Fn(usize) -> Outcome,
    candidate: impl Fn(usize) -> Outcome,
    n: usize,
) -> Window {
    let mut w = Window::new("v1=0.9000,v2=0.1000".into(), 1.0, "v1", "v2");
    for i in 0..n {
        assert!(w.add(&live(i)));
        assert!(w.add(&candidate(i)));
    }
    w
}

fn score(i: usize) -> f64 {
    (i % 97) as f64 / 100.0
}

#[test]
fn a_candidate_like_the_live_model_passes_and_each_kind_of_bad_one_fails_with_its_reason() {
    let t = Thresholds::default();
    let same = window(
        |i| outcome("v1", score(i), 3.0, false),
        |i| outcome("v2", score(i), 3.2, false),
        100,
    );
    assert!(
        matches!(t.judge(&same), Verdict::Pass(_)),
        "{:?}",
        t.judge(&same)
    );
    let failing = window(
        |i| outcome("v1", score(i), 3.0, false),
        |i| outcome("v2", score(i), 3.0, i % 3 == 0),
        100,
    );
    let Verdict::Fail(why) = t.judge(&failing) else {
        panic!("{:?}", t.judge(&failing))
    };
    assert!(why.contains("error rate 0.340 on v2"), "{why}");
    let slow = window(
        |i| outcome("v1", score(i), 3.0, false),
        |i| outcome("v2", score(i), 300.0, false),
        100,
    );
    let Verdict::Fail(why) = t.judge(&slow) else {
        panic!()
    };
    assert!(
        why.contains("p95 latency") && why.contains("ms on v2"),
        "{why}"
    );
    let far = window(
        |i| outcome("v1", score(i) / 2.0, 3.0, false),
        |i| outcome("v2", 0.5 + score(i) / 2.0, 3.0, false),
        100,
    );
    let Verdict::Fail(why) = t.judge(&far) else {
        panic!()
    };
    assert!(why.contains("mean score"), "{why}");
    // Same mean, other shape: only the PSI tells.
    let shaped = window(
        |_| outcome("v1", 0.5, 3.0, false),
        |i| outcome("v2", if i % 2 == 0 { 0.42 } else { 0.58 }, 3.0, false),
        100,
    );
    let Verdict::Fail(why) = t.judge(&shaped) else {
        panic!("{:?}", t.judge(&shaped))
    };
    assert!(why.contains("PSI"), "{why}");
}

#[test]
fn too_little_traffic_waits_but_a_failing_candidate_does_not_wait_for_the_live_side() {
    let t = Thresholds {
        min_requests: 50,
        ..Thresholds::default()
    };
    let few = window(
        |i| outcome("v1", score(i), 3.0, false),
        |i| outcome("v2", score(i), 3.0, false),
        10,
    );
    assert!(matches!(t.judge(&few), Verdict::Waiting(_)));
    let mut w = Window::new("x".into(), 0.0, "v1", "v2");
    for _ in 0..50 {
        w.add(&outcome("v2", 0.0, 1.0, true));
    }
    assert!(matches!(t.judge(&w), Verdict::Fail(_)), "{:?}", t.judge(&w));
    assert!(
        !w.add(&outcome("v9", 0.0, 1.0, false)),
        "another variant's outcome is not counted"
    );
}

#[test]
fn the_tail_judged_is_the_one_the_samples_can_show_so_one_stall_is_not_a_slow_model() {
    let t = Thresholds {
        min_requests: 20,
        ..Thresholds::default()
    };
    assert_eq!(tail_quantile(20), 0.75);
    assert_eq!(tail_quantile(50), 0.9);
    assert_eq!(tail_quantile(5_000), 0.99);
    assert_eq!(tail_quantile(0), 0.5);
    for n in [20, 50, 200] {
        // One request of the candidate's stalled behind the scheduler: not the model.
        let stalled = window(
            |_| outcome("v1", 0.5, 3.0, false),
            |i| outcome("v2", 0.5, if i == 7 { 250.0 } else { 3.0 }, false),
            n,
        );
        assert!(
            matches!(t.judge(&stalled), Verdict::Pass(_)),
            "{n}: {:?}",
            t.judge(&stalled)
        );
        // A third of its requests slow: its tail is.
        let slow_tail = window(
            |_| outcome("v1", 0.5, 3.0, false),
            |i| outcome("v2", 0.5, if i % 3 == 0 { 250.0 } else { 3.0 }, false),
            n,
        );
        let Verdict::Fail(why) = t.judge(&slow_tail) else {
            panic!("{n}: {:?}", t.judge(&slow_tail))
        };
        assert!(
            why.contains(" latency ") && why.contains("ms on v2"),
            "{why}"
        );
    }
}

#[test]
fn signatures_are_sorted_and_rounded() {
    assert_eq!(
        weights_signature([("v2", 0.1), ("v1", 0.9)]),
        "v1=0.9000,v2=0.1000"
    );
}

proptest! {
    #[test]
    fn windows_round_trip_through_the_registrys_metadata(
        scores in proptest::collection::vec(0.0f64..1.0, 0..400),
        latencies in proptest::collection::vec(0.01f64..100_000.0, 1..400),
        failures in 0u64..50,
    ) {
        let mut w = Window::new("v1=0.7500,v2=0.2500".into(), 1_765_000_000.5, "v1", "v2");
        for (i, ms) in latencies.iter().enumerate() {
            let s = scores.get(i).copied().unwrap_or(0.5);
            w.add(&outcome(if i % 2 == 0 { "v1" } else { "v2" }, s, *ms, (i as u64) < failures));
        }
        let meta = w.to_metadata();
        prop_assert!(meta.values().all(|v| v.len() <= VALUE_MAX), "{meta:?}");
        let back = Window::from_metadata(|k| meta.get(k).map(String::as_str)).unwrap().unwrap();
        prop_assert_eq!(&back.weights, &w.weights);
        prop_assert_eq!(back.live.requests, w.live.requests);
        prop_assert_eq!(back.candidate.errors, w.candidate.errors);
        prop_assert_eq!(&back.candidate.scores, &w.candidate.scores);
        prop_assert_eq!(back.live.latency.iter().sum::<u64>(), w.live.latency.iter().sum::<u64>());
        prop_assert!((back.live.score_sum - w.live.score_sum).abs() < 1e-9);
    }
}

#[test]
fn psi_counts_only_beyond_the_noise_of_small_samples() {
    // Two samples of 50 from one distribution, as unevenly binned as chance makes them.
    let (mut a, mut b) = (vec![0u64; 20], vec![0u64; 20]);
    (a[2], a[3], a[4]) = (20, 20, 10);
    (b[2], b[3], b[4], b[5]) = (10, 25, 10, 5);
    let p = crate::psi(&a, &b).unwrap();
    assert!(
        p > 0.25,
        "the raw PSI of small samples alone would fail it: {p}"
    );
    assert!(p < 0.25 + crate::psi_noise(50, 50));
    // Scores at the other end of the range are apart whatever the sample size.
    let mut far = vec![0u64; 20];
    (far[16], far[17], far[18]) = (20, 20, 10);
    assert!(crate::psi(&a, &far).unwrap() > 0.25 + crate::psi_noise(50, 50));
    assert!(crate::psi_noise(0, 50).is_infinite());
}

#[test]
fn a_mean_shift_counts_only_beyond_the_noise_of_small_samples() {
    let t = Thresholds {
        min_requests: 20,
        ..Thresholds::default()
    };
    // Twenty requests each from one spread-out distribution whose sample means landed 0.115
    // apart (as in a rollout of two identical models): not a shift.
    let spread = |i: usize, lift: f64| ((i % 10) as f64 / 10.0 + lift).min(0.99);
    let noisy = window(
        |i| outcome("v1", spread(i, 0.0), 3.0, false),
        |i| outcome("v2", spread(i, 0.115), 3.0, false),
        20,
    );
    assert!(
        matches!(t.judge(&noisy), Verdict::Pass(_)),
        "{:?}",
        t.judge(&noisy)
    );
    // A lift past the threshold over 5,000 requests each is one.
    let many = window(
        |i| outcome("v1", spread(i, 0.0), 3.0, false),
        |i| outcome("v2", spread(i, 0.15), 3.0, false),
        5000,
    );
    let Verdict::Fail(why) = t.judge(&many) else {
        panic!("{:?}", t.judge(&many))
    };
    assert!(why.contains("mean score"), "{why}");
}
