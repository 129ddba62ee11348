//! The CLI's JSON shapes, one per operation.
use super::*;
use serde_json::json;

#[test]
fn actions_and_shapes_are_the_clis() {
    assert_eq!(
        v(&Approval::Approved(PackageRef {
            arn: "a".into(),
            version: 2
        })),
        json!({ "action": "approved", "arn": "a", "version": 2 })
    );
    assert_eq!(
        v(&Deployment::None {
            reason: "r".into(),
            endpoint: "e".into(),
            version: 1,
            arn: "a".into()
        }),
        json!({ "action": "none", "reason": "r", "endpoint": "e", "version": 1, "arn": "a" })
    );
    let steps = vec![
        Step {
            share: 0.1,
            outcome: StepOutcome::Passed("ok".into()),
        },
        Step {
            share: 0.5,
            outcome: StepOutcome::Promoted("by hand".into()),
        },
    ];
    assert_eq!(
        v(&Deployment::RolledBack(RolledBack {
            endpoint: "e".into(),
            version: 3,
            arn: "a".into(),
            reason: "bad".into(),
            live: 2,
            steps: Some(steps),
            seconds: Some(1.5),
        })),
        json!({ "action": "rolled_back", "endpoint": "e", "version": 3, "arn": "a",
                "reason": "bad", "live": 2, "seconds": 1.5,
                "steps": [{ "share": 0.1, "passed": "ok" }, { "share": 0.5, "promoted": "by hand" }] })
    );
    assert_eq!(
        v(&ShadowChange::None {
            reason: "r".into(),
            endpoint: None,
            version: None
        }),
        json!({ "action": "none", "reason": "r" })
    );
    assert_eq!(
        v(&ShadowChange::ShadowRemoved {
            endpoint: "s".into(),
            reason: "x",
            was: vec![3],
            seconds: 0.0
        }),
        json!({ "action": "shadow-removed", "endpoint": "s", "reason": "x", "was": [3], "seconds": 0.0 })
    );
    assert_eq!(
        v(&Steering::Promoting(Steered {
            version: 3,
            arn: "a".into(),
            reason: "r".into()
        })),
        json!({ "action": "promoting", "version": 3, "arn": "a", "reason": "r" })
    );
    assert_eq!(
        v(&Registered {
            arn: "a".into(),
            version: 1,
            status: "PendingManualApproval"
        }),
        json!({ "action": "registered", "arn": "a", "version": 1, "status": "PendingManualApproval" })
    );
    assert_eq!(v(&VerdictView::Fail("f".into())), json!({ "fail": "f" }));
    assert_eq!(
        v(&AgainstLiveView::Scored {
            live_version: "1".into(),
            rows: "10".into(),
            figures: BTreeMap::from([(
                "auc".to_owned(),
                FigureDiff {
                    candidate: 0.8,
                    live: 0.75,
                    difference: 0.05
                }
            )]),
        }),
        json!({ "live_version": "1", "rows": "10", "auc": { "candidate": 0.8, "live": 0.75, "difference": 0.05 } })
    );
}

fn v<T: Serialize>(x: &T) -> serde_json::Value {
    serde_json::from_str(&json_line(x)).unwrap()
}
