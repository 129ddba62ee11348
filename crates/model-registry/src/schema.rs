//! A model's schema travels with its package: the feature names, in model order, are the
//! package's `CustomerMetadataProperties["features"]` (comma-separated), written by the
//! pipeline's Train step (`pipeline/train.py`), `mlops-deploy register --features` and the
//! demo world. The watcher reports them with each live variant; the gateway and the
//! predictor follow them.

use std::collections::HashMap;

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
