//! The deploy step's own decisions.
use super::*;
use crate::endpoint::in_transition;

#[test]
fn deploy_waits_out_exactly_the_changing_states() {
    for changing in ["Creating", "Updating", "SystemUpdating", "RollingBack"] {
        assert!(in_transition(&EndpointStatus::from(changing)), "{changing}");
    }
    for settled in [
        "InService",
        "Failed",
        "OutOfService",
        "UpdateRollbackFailed",
        "Deleting",
        "Bogus",
    ] {
        assert!(!in_transition(&EndpointStatus::from(settled)), "{settled}");
    }
}

#[test]
fn names_fit_sagemaker_limits_without_a_trailing_dash() {
    assert_eq!(truncate("abc-def", 4), "abc");
    assert_eq!(truncate("abcdef", 10), "abcdef");
    let long = format!("{}-v12-1795999159426", "e".repeat(60));
    assert!(truncate(&long, 63).len() <= 63);
}
