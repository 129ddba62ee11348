//! A model's schema travels with its package: the feature names, in model order, are the
//! package's `CustomerMetadataProperties["features"]` (comma-separated), written by the
//! pipeline's Train step (`pipeline/train.py`), `mlops-deploy register --features` and the
//! demo world. The watcher reports them with each live variant; the gateway and the
//! predictor follow them.

use std::collections::HashMap;

use proto::registry::v1::FeatureBaseline;

/// The CustomerMetadataProperties key that holds a package's feature names.
pub const FEATURES_KEY: &str = "features";

/// The feature names a package's metadata names (empty when it names none).
pub fn features_from_metadata(metadata: Option<&HashMap<String, String>>) -> Vec<String> {
    metadata
        .and_then(|m| m.get(FEATURES_KEY))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The baselines of a package's training features (`baseline.<feature>` entries, the format
/// of the `drift` crate), for `features` in model order. An entry that does not parse is left
/// out and logged: drift is then not tracked for that feature.
pub fn baselines_from_metadata(
    features: &[String],
    metadata: Option<&HashMap<String, String>>,
) -> Vec<FeatureBaseline> {
    let Some(m) = metadata else {
        return Vec::new();
    };
    let (columns, problems) =
        drift::baseline::from_metadata(features, |k| m.get(k).map(String::as_str));
    for p in problems {
        tracing::warn!(problem = %p, "a package's baseline does not parse; drift is not tracked for that feature");
    }
    columns
        .into_iter()
        .map(|c| FeatureBaseline {
            feature: c.feature,
            column: c.index as u32,
            edges: c.baseline.edges,
            expected: c.baseline.expected,
            missing_rate: c.baseline.missing_rate,
        })
        .collect()
}

/// The drift columns a live variant's baselines describe.
pub fn drift_columns(baselines: &[FeatureBaseline]) -> Vec<drift::Column> {
    baselines
        .iter()
        .map(|b| drift::Column {
            index: b.column as usize,
            feature: b.feature.clone(),
            baseline: drift::Baseline {
                edges: b.edges.clone(),
                expected: b.expected.clone(),
                missing_rate: b.missing_rate,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_order_blanks_dropped_absent_is_empty() {
        let m = HashMap::from([(FEATURES_KEY.to_owned(), "age, tenure,,x".to_owned())]);
        assert_eq!(features_from_metadata(Some(&m)), ["age", "tenure", "x"]);
        assert!(features_from_metadata(Some(&HashMap::new())).is_empty());
        assert!(features_from_metadata(None).is_empty());
    }
}
