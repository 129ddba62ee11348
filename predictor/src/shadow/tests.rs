use proto::registry::v1::{EndpointState, ModelPackage, Variant};

use super::*;

fn status(shadow_status: &str, candidate_features: &[&str]) -> Status {
    let names = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Status {
        candidate: Some(ModelPackage {
            arn: "arn:pkg/2".into(),
            version: 2,
            features: names(candidate_features),
            ..Default::default()
        }),
        shadow: Some(EndpointState {
            name: "ep-shadow".into(),
            status: shadow_status.into(),
            variants: vec![Variant {
                name: "v2".into(),
                model_package_arn: "arn:pkg/2".into(),
                current_weight: 1.0,
                ..Default::default()
            }],
            ..Default::default()
        }),
        endpoint: Some(EndpointState {
            variants: vec![Variant {
                name: "v1".into(),
                current_weight: 1.0,
                features: names(&["a", "b"]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn mirrors_only_to_an_in_service_candidate_with_the_live_schema() {
    assert_eq!(
        target(&status("InService", &["a", "b"])),
        Some(Target {
            endpoint: "ep-shadow".into(),
            candidate_arn: "arn:pkg/2".into(),
            candidate_version: 2,
        })
    );
    assert_eq!(target(&status("Creating", &["a", "b"])), None);
    assert_eq!(
        target(&status("InService", &["a", "c"])),
        None,
        "other features"
    );
    assert!(
        target(&status("InService", &[])).is_some(),
        "no schema said"
    );
    let mut no_candidate = status("InService", &["a", "b"]);
    no_candidate.candidate = None;
    assert_eq!(target(&no_candidate), None);
}
