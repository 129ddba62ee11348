//! An interaction as a record of the user-interactions feature group (schema in
//! docs/architecture.md), and the EventTime format the Feature Store accepts.

use aws_sdk_sagemakerfeaturestoreruntime::types::FeatureValue;
use proto::interaction::v1::{Interaction, Source};

/// `yyyy-MM-ddTHH:mm:ss.SSSZ`, the format every retry reuses.
pub fn now_event_time() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Whether `s` is one of the two EventTime string formats the Feature Store accepts.
pub fn valid_event_time(s: &str) -> bool {
    let b = s.as_bytes();
    let shape = match b.len() {
        20 => b[19] == b'Z',
        24 => b[19] == b'.' && b[20..23].iter().all(u8::is_ascii_digit) && b[23] == b'Z',
        _ => false,
    };
    shape && chrono::NaiveDateTime::parse_from_str(&s[..19], "%Y-%m-%dT%H:%M:%S").is_ok()
}

pub fn source_name(source: i32) -> &'static str {
    match Source::try_from(source) {
        Ok(Source::Web) => "web",
        Ok(Source::Api) => "api",
        Ok(Source::Shadow) => "shadow",
        Ok(Source::OipRest) => "oip-rest",
        Ok(Source::OipGrpc) => "oip-grpc",
        _ => "grpc",
    }
}

/// The features of one record; empty optional fields are left out.
pub fn features(i: &Interaction) -> Vec<FeatureValue> {
    let mut out = Vec::with_capacity(15);
    let mut push = |name: &str, value: String| {
        out.push(
            FeatureValue::builder()
                .feature_name(name)
                .value_as_string(value)
                .build(),
        );
    };
    push("interaction_id", i.interaction_id.clone());
    push("event_time", i.event_time.clone());
    push(
        "client_id",
        if i.client_id.is_empty() {
            "anonymous".into()
        } else {
            i.client_id.clone()
        },
    );
    push("source", source_name(i.source).into());
    push("features_csv", i.features_csv.clone());
    push("prediction", i.prediction.to_string());
    if !i.scores_csv.is_empty() {
        push("scores_csv", i.scores_csv.clone());
    }
    if !i.model_package_arn.is_empty() {
        push("model_package_arn", i.model_package_arn.clone());
    }
    if i.model_package_version > 0 {
        push("model_package_version", i.model_package_version.to_string());
    }
    if !i.endpoint_name.is_empty() {
        push("endpoint_name", i.endpoint_name.clone());
    }
    if !i.variant_name.is_empty() {
        push("variant_name", i.variant_name.clone());
    }
    push("latency_ms", i.latency_ms.to_string());
    if !i.shadow_of.is_empty() {
        push("shadow_of", i.shadow_of.clone());
        push("live_prediction", i.live_prediction.to_string());
        if i.live_model_package_version > 0 {
            push(
                "live_model_package_version",
                i.live_model_package_version.to_string(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn event_times_are_checked() {
        assert!(valid_event_time("2026-11-27T10:00:00.123Z"));
        assert!(valid_event_time("2026-11-27T10:00:00Z"));
        assert!(!valid_event_time("2026-11-27T10:00:00.12Z"));
        assert!(!valid_event_time("2026-11-27 10:00:00Z"));
        assert!(!valid_event_time("2026-13-27T10:00:00Z"));
        assert!(valid_event_time(&now_event_time()));
    }

    proptest! {
        #[test]
        fn any_timestamp_formats_to_a_valid_event_time(ms in 0i64..4_102_444_800_000) {
            let t = chrono::DateTime::from_timestamp_millis(ms).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            prop_assert!(valid_event_time(&t));
        }
    }

    fn value(record: &[FeatureValue], name: &str) -> Option<String> {
        record
            .iter()
            .find(|v| v.feature_name() == Some(name))
            .and_then(|v| v.value_as_string())
            .map(str::to_owned)
    }

    #[test]
    fn records_follow_the_schema() {
        let i = Interaction {
            interaction_id: "i".into(),
            event_time: "2026-11-27T10:00:00.000Z".into(),
            source: Source::Web as i32,
            features_csv: "1,2".into(),
            prediction: 0.25,
            model_package_version: 3,
            ..Default::default()
        };
        let record = features(&i);
        let get = |n: &str| value(&record, n);
        assert_eq!(get("client_id").as_deref(), Some("anonymous"));
        assert_eq!(get("source").as_deref(), Some("web"));
        assert_eq!(get("prediction").as_deref(), Some("0.25"));
        assert_eq!(get("model_package_version").as_deref(), Some("3"));
        assert_eq!(get("model_package_arn"), None);
        assert_eq!(get("shadow_of"), None, "a live record has no shadow fields");

        let shadow = Interaction {
            source: Source::Shadow as i32,
            shadow_of: "live-1".into(),
            live_prediction: 0.75,
            live_model_package_version: 1,
            model_package_version: 2,
            ..i
        };
        let record = features(&shadow);
        let get = |n: &str| value(&record, n);
        assert_eq!(get("source").as_deref(), Some("shadow"));
        assert_eq!(get("shadow_of").as_deref(), Some("live-1"));
        assert_eq!(get("live_prediction").as_deref(), Some("0.75"));
        assert_eq!(get("live_model_package_version").as_deref(), Some("1"));
        assert_eq!(get("model_package_version").as_deref(), Some("2"));
    }
}
