//! The watcher's status and how a poll changes it: `in_sync` (every variant with traffic
//! serves the latest Approved package), `out_of_sync_since`, `checked_at`, `last_error`.

use proto::registry::v1::{EndpointState, ModelPackage, Status, Variant};

pub fn in_sync(latest: Option<&ModelPackage>, endpoint: &EndpointState) -> bool {
    let Some(latest) = latest else { return false };
    let serving: Vec<_> = endpoint
        .variants
        .iter()
        .filter(|v| v.current_weight > 0.0)
        .collect();
    !serving.is_empty() && serving.iter().all(|v| v.model_package_arn == latest.arn)
}

/// Applies a successful poll; returns whether anything but `checked_at` changed.
pub fn apply_success(
    status: &mut Status,
    latest: Option<ModelPackage>,
    endpoint: EndpointState,
    now: prost_types::Timestamp,
) -> bool {
    let synced = in_sync(latest.as_ref(), &endpoint);
    let mut next = Status {
        in_sync: synced,
        out_of_sync_since: if synced {
            None
        } else {
            status.out_of_sync_since.or(Some(now))
        },
        latest_approved: latest,
        endpoint: Some(endpoint),
        checked_at: Some(now),
        last_error: String::new(),
        candidate: status.candidate.clone(),
        shadow: status.shadow.clone(),
    };
    // First poll ever, or back from an error while still out of sync: keep the earlier time.
    if !synced && status.checked_at.is_none() {
        next.out_of_sync_since = Some(now);
    }
    let changed = differs(status, &next);
    *status = next;
    changed
}

/// Records the candidate being decided on and the endpoint it is shadowed on; returns whether
/// they changed.
pub fn apply_candidate(
    status: &mut Status,
    candidate: Option<ModelPackage>,
    shadow: Option<EndpointState>,
) -> bool {
    let changed = status.candidate != candidate || status.shadow != shadow;
    status.candidate = candidate;
    status.shadow = shadow;
    changed
}

/// The two variants of a progressive rollout: the endpoint serves two package versions, the
/// newer one being rolled out (`candidate`) and the older one it replaces (`live`) — also
/// while a failed candidate is being rolled back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollout<'a> {
    pub live: &'a Variant,
    pub candidate: &'a Variant,
}

/// The rollout the endpoint is in, if it serves two package versions.
pub fn rollout(endpoint: &EndpointState) -> Option<Rollout<'_>> {
    let [a, b] = endpoint.variants.as_slice() else {
        return None;
    };
    if a.model_package_version <= 0
        || b.model_package_version <= 0
        || a.model_package_version == b.model_package_version
    {
        return None;
    }
    let (live, candidate) = if a.model_package_version < b.model_package_version {
        (a, b)
    } else {
        (b, a)
    };
    Some(Rollout { live, candidate })
}

/// Whether the candidate is being shadowed: the shadow endpoint is InService and a variant of
/// it serves the candidate's package. Returns that variant's name.
pub fn shadowed(status: &Status) -> Option<&str> {
    let candidate = status.candidate.as_ref()?;
    let shadow = status.shadow.as_ref()?;
    if shadow.status != "InService" {
        return None;
    }
    shadow
        .variants
        .iter()
        .find(|v| v.model_package_arn == candidate.arn)
        .map(|v| v.name.as_str())
}

/// The default name of the endpoint a candidate is shadowed on: `{endpoint}-shadow`
/// (within SageMaker's 63 characters).
pub fn shadow_endpoint_name(endpoint: &str) -> String {
    let suffix = "-shadow";
    let keep: String = endpoint.chars().take(63 - suffix.len()).collect();
    format!("{}{suffix}", keep.trim_end_matches('-'))
}

/// Keeps the last good status and records the error; returns whether it changed.
pub fn apply_failure(status: &mut Status, error: String) -> bool {
    let changed = status.last_error != error;
    status.last_error = error;
    changed
}

fn differs(a: &Status, b: &Status) -> bool {
    let strip = |s: &Status| Status {
        checked_at: None,
        ..s.clone()
    };
    strip(a) != strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(v: i64) -> ModelPackage {
        ModelPackage {
            arn: format!("arn:aws:sagemaker:us-east-1:0:model-package/g/{v}"),
            version: v,
            ..Default::default()
        }
    }

    fn endpoint(variants: &[(i64, f64)]) -> EndpointState {
        EndpointState {
            status: "InService".into(),
            variants: variants
                .iter()
                .map(|(v, w)| Variant {
                    model_package_arn: pkg(*v).arn,
                    model_package_version: *v,
                    current_weight: *w,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn at(s: i64) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        }
    }

    #[test]
    fn a_rollout_is_two_versions_the_newer_one_the_candidate() {
        let e = endpoint(&[(1, 0.9), (2, 0.1)]);
        let r = rollout(&e).unwrap();
        assert_eq!(
            (
                r.live.model_package_version,
                r.candidate.model_package_version
            ),
            (1, 2)
        );
        let reversed = endpoint(&[(3, 0.5), (2, 0.5)]);
        assert_eq!(
            rollout(&reversed).unwrap().candidate.model_package_version,
            3
        );
        assert!(rollout(&endpoint(&[(2, 1.0)])).is_none());
        assert!(
            rollout(&endpoint(&[(2, 1.0), (0, 0.0)])).is_none(),
            "an unknown package"
        );
    }

    #[test]
    fn in_sync_needs_every_variant_with_traffic_on_the_latest() {
        assert!(in_sync(Some(&pkg(2)), &endpoint(&[(2, 1.0)])));
        assert!(
            in_sync(Some(&pkg(2)), &endpoint(&[(2, 1.0), (1, 0.0)])),
            "a variant without traffic does not count"
        );
        assert!(!in_sync(Some(&pkg(2)), &endpoint(&[(2, 1.0), (1, 1.0)])));
        assert!(!in_sync(None, &endpoint(&[(1, 1.0)])));
        assert!(!in_sync(Some(&pkg(1)), &endpoint(&[])));
    }

    #[test]
    fn out_of_sync_since_is_kept_until_back_in_sync_and_only_changes_are_reported() {
        let mut s = Status::default();
        assert!(apply_success(
            &mut s,
            Some(pkg(1)),
            endpoint(&[(1, 1.0)]),
            at(10)
        ));
        assert!(s.in_sync && s.out_of_sync_since.is_none());
        assert!(
            !apply_success(&mut s, Some(pkg(1)), endpoint(&[(1, 1.0)]), at(20)),
            "only checked_at moved"
        );
        assert_eq!(s.checked_at, Some(at(20)));

        assert!(apply_success(
            &mut s,
            Some(pkg(2)),
            endpoint(&[(1, 1.0)]),
            at(30)
        ));
        assert!(!s.in_sync);
        assert_eq!(s.out_of_sync_since, Some(at(30)));
        apply_success(&mut s, Some(pkg(2)), endpoint(&[(1, 1.0)]), at(40));
        assert_eq!(
            s.out_of_sync_since,
            Some(at(30)),
            "still out of sync since the first time"
        );

        assert!(apply_failure(
            &mut s,
            "DescribeEndpoint: unreachable".into()
        ));
        assert!(!apply_failure(
            &mut s,
            "DescribeEndpoint: unreachable".into()
        ));
        assert_eq!(
            s.latest_approved.as_ref().unwrap().version,
            2,
            "the last good status stays"
        );
        assert!(apply_success(
            &mut s,
            Some(pkg(2)),
            endpoint(&[(2, 1.0)]),
            at(50)
        ));
        assert!(s.in_sync && s.out_of_sync_since.is_none() && s.last_error.is_empty());
    }
}
