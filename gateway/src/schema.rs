//! The model's feature names, in order, as the page, the JSON API's name-to-column mapping and
//! the OpenAPI description use them: the live model's (its package's schema, which the
//! registry-watcher reports), so a deployment with other features needs no configuration;
//! or `MODEL_FEATURES` when set, an explicit override whose disagreement with the live model
//! is reported (`/v1/model`, `gateway_schema_mismatch`, a log line), not hidden. With neither
//! (a package without a schema, no watcher), the demo model's names.

use std::sync::atomic::{AtomicBool, Ordering};

use registry_follower::Follower;

pub const DEFAULT_FEATURES: &str = "age,tenure_months,monthly_charges,support_calls,num_products,late_payments,satisfaction,has_contract";

/// Where the features in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The live model's package.
    Registry,
    /// `MODEL_FEATURES`.
    Override,
    /// Neither: the demo model's names.
    Default,
}

pub struct Schema {
    pub features: Vec<String>,
    pub source: Source,
    /// The live model's features when the override disagrees with them.
    pub mismatch: Option<Vec<String>>,
}

pub struct Schemas {
    override_: Option<Vec<String>>,
    default: Vec<String>,
    reported: AtomicBool,
}

/// Comma-separated names, trimmed, blanks dropped.
pub fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Schemas {
    /// `override_`: `MODEL_FEATURES`, if set (an empty value counts as unset).
    pub fn new(override_: Option<&str>) -> Self {
        metrics::gauge!("gateway_schema_mismatch").set(0.0);
        Schemas {
            override_: override_.map(names).filter(|n| !n.is_empty()),
            default: names(DEFAULT_FEATURES),
            reported: AtomicBool::new(false),
        }
    }

    pub fn current(&self, registry: &Follower) -> Schema {
        self.resolve(registry.live_features())
    }

    fn resolve(&self, live: Option<Vec<String>>) -> Schema {
        let schema = match (&self.override_, live) {
            (Some(o), Some(l)) if *o != l => Schema {
                features: o.clone(),
                source: Source::Override,
                mismatch: Some(l),
            },
            (Some(o), _) => Schema {
                features: o.clone(),
                source: Source::Override,
                mismatch: None,
            },
            (None, Some(l)) => Schema {
                features: l,
                source: Source::Registry,
                mismatch: None,
            },
            (None, None) => Schema {
                features: self.default.clone(),
                source: Source::Default,
                mismatch: None,
            },
        };
        let mismatch = schema.mismatch.is_some();
        // Said once per change, not per request.
        if self.reported.swap(mismatch, Ordering::Relaxed) != mismatch {
            metrics::gauge!("gateway_schema_mismatch").set(if mismatch { 1.0 } else { 0.0 });
            if mismatch {
                tracing::warn!(
                    override_features = ?schema.features,
                    live_features = ?schema.mismatch,
                    "MODEL_FEATURES disagrees with the live model's schema; using the override"
                );
            }
        }
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &str) -> Vec<String> {
        names(list)
    }

    #[test]
    fn the_live_schema_unless_overridden_and_a_disagreement_is_reported() {
        let follow = Schemas::new(None);
        let s = follow.resolve(Some(v("a,b,c")));
        assert_eq!(
            (s.features, s.source, s.mismatch),
            (v("a,b,c"), Source::Registry, None)
        );
        let s = follow.resolve(None);
        assert_eq!(
            (s.features.len(), s.source),
            (8, Source::Default),
            "no schema: today's behaviour"
        );

        let pinned = Schemas::new(Some("a, b"));
        let s = pinned.resolve(Some(v("a,b")));
        assert_eq!((s.source, s.mismatch), (Source::Override, None));
        let s = pinned.resolve(Some(v("a,b,c")));
        assert_eq!(s.features, v("a,b"), "the override is used...");
        assert_eq!(
            s.mismatch,
            Some(v("a,b,c")),
            "...and the disagreement reported"
        );
        assert_eq!(
            Schemas::new(Some(" ")).resolve(None).source,
            Source::Default,
            "empty is unset"
        );
    }
}
