//! Endpoint loads across restarts, and the statuses' wire names.
mod load_tests {
    use super::super::*;

    /// A load that was under way when the server stopped (a model that crashed it) is not
    /// tried again at the next start: the endpoint is Failed with the reason.
    #[test]
    fn an_unfinished_load_is_not_retried_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::open(crate::Settings::new(dir.path())).unwrap();
        let record = EndpointRecord {
            name: "crashed-it".into(),
            arn: state.arn("endpoint", "crashed-it"),
            config_name: Some("cfg".into()),
            pending_config: None,
            status: EndpointStatus::InService,
            failure_reason: None,
            created: 0.0,
            last_modified: 0.0,
            transition: None,
            transition_started: None,
            loading: Some("cfg".into()),
            variants: Vec::new(),
        };
        state
            .db
            .write(|txn| txn.put(ENDPOINTS, &record.name, &record))
            .unwrap();
        resume_transitions(&state).unwrap();
        let after = state
            .db
            .get::<EndpointRecord>(ENDPOINTS, "crashed-it")
            .unwrap()
            .unwrap();
        assert_eq!(after.status, EndpointStatus::Failed);
        assert!(after.failure_reason.unwrap().contains("did not finish"));
        assert!(state.serving.get("crashed-it").is_none());
    }
}

mod status_tests {
    use super::super::EndpointStatus;

    #[test]
    fn states_travel_and_persist_as_aws_names_and_nothing_else_parses() {
        for (status, name) in [
            (EndpointStatus::Creating, "Creating"),
            (EndpointStatus::Updating, "Updating"),
            (EndpointStatus::InService, "InService"),
            (EndpointStatus::Failed, "Failed"),
        ] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<EndpointStatus>(&json).unwrap(),
                status
            );
            assert_eq!(status.to_string(), name);
        }
        assert!(serde_json::from_str::<EndpointStatus>("\"Inservice\"").is_err());
    }
}
