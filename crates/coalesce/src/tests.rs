use std::{sync::Mutex, time::Duration};

use tokio::sync::Notify;

use super::*;

/// A downstream that records each call's items, doubles them, and (while `gate` is closed)
/// holds every call until the test opens it.
struct Downstream {
    calls: Mutex<Vec<Vec<u32>>>,
    gate: Notify,
    closed: std::sync::atomic::AtomicBool,
}

fn start(limits: Limits) -> (Coalescer<u32, u32>, Arc<Downstream>) {
    let down = Arc::new(Downstream {
        calls: Mutex::new(Vec::new()),
        gate: Notify::new(),
        closed: false.into(),
    });
    let d = Arc::clone(&down);
    let c = Coalescer::start(limits, "test_batch_requests", move |items: Vec<u32>| {
        let d = Arc::clone(&d);
        async move {
            d.calls.lock().unwrap().push(items.clone());
            while d.closed.load(std::sync::atomic::Ordering::SeqCst) {
                d.gate.notified().await;
            }
            items.into_iter().map(|i| i * 2).collect()
        }
    });
    (c, down)
}

const ONE: Weight = Weight { rows: 1, bytes: 10 };
const WIDE: Limits = Limits {
    rows: 100,
    bytes: 1000,
    lanes: 1,
};

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_lone_request_goes_at_once_by_itself() {
    let (c, down) = start(WIDE);
    let answer = tokio::time::timeout(Duration::from_secs(1), c.submit(7, None, ONE))
        .await
        .expect("no timer delays a lone request");
    assert_eq!(answer, Ok(14));
    assert_eq!(*down.calls.lock().unwrap(), vec![vec![7]]);
}

#[tokio::test]
async fn requests_that_arrive_while_the_lanes_are_busy_leave_together_each_with_its_own_answer() {
    let (c, down) = start(WIDE);
    down.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = tokio::spawn({
        let c = c.clone();
        async move { c.submit(1, None, ONE).await }
    });
    settle().await;
    let rest: Vec<_> = (2..=6)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.submit(i, None, ONE).await })
        })
        .collect();
    settle().await;
    assert_eq!(
        *down.calls.lock().unwrap(),
        vec![vec![1]],
        "the lane is busy"
    );
    down.closed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    down.gate.notify_waiters();
    assert_eq!(first.await.unwrap(), Ok(2));
    for (i, r) in (2..=6).zip(rest) {
        assert_eq!(r.await.unwrap(), Ok(i * 2), "each its own answer");
    }
    assert_eq!(
        *down.calls.lock().unwrap(),
        vec![vec![1], vec![2, 3, 4, 5, 6]]
    );
}

#[tokio::test]
async fn batches_respect_the_limits_and_never_mix_keys() {
    let (c, down) = start(Limits {
        rows: 3,
        bytes: 25,
        lanes: 1,
    });
    down.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut waiting = vec![tokio::spawn({
        let c = c.clone();
        async move { c.submit(0, None, ONE).await }
    })];
    settle().await;
    // rows 3 per call, bytes 25 (two of ten each), a key change ends a batch, an oversized
    // request goes alone.
    let plan = [
        (1, None, ONE),
        (2, None, ONE),
        (3, None, ONE),
        (4, Some("b"), ONE),
        (5, Some("b"), ONE),
        (6, None, Weight { rows: 9, bytes: 9 }),
    ];
    for (i, key, w) in plan {
        let c = c.clone();
        waiting.push(tokio::spawn(async move {
            c.submit(i, key.map(str::to_owned), w).await
        }));
        settle().await;
    }
    down.closed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    down.gate.notify_waiters();
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert_eq!(
        *down.calls.lock().unwrap(),
        vec![vec![0], vec![1, 2], vec![3], vec![4, 5], vec![6]]
    );
}

#[tokio::test]
async fn lanes_bound_the_calls_in_flight() {
    let (c, down) = start(Limits { lanes: 2, ..WIDE });
    down.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut waiting = Vec::new();
    for i in 0..5 {
        let c = c.clone();
        waiting.push(tokio::spawn(async move { c.submit(i, None, ONE).await }));
        settle().await;
    }
    assert_eq!(
        *down.calls.lock().unwrap(),
        vec![vec![0], vec![1]],
        "two lanes, two calls; the rest wait"
    );
    down.closed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    down.gate.notify_waiters();
    for w in waiting {
        w.await.unwrap().unwrap();
    }
    assert_eq!(
        *down.calls.lock().unwrap(),
        vec![vec![0], vec![1], vec![2, 3, 4]]
    );
}
