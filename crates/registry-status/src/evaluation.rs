//! What Train stores with a candidate about the live model: the latest Approved model scored
//! on the candidate's very validation rows (`live.version`, `live.validation_{auc,accuracy,
//! logloss}`, or `live.unavailable` with the reason), next to the candidate's own
//! `validation_*` figures. The gate, `mlops-deploy status` and the approver's page all read it
//! here.

/// One figure for both models.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: &'static str,
    pub candidate: f64,
    pub live: f64,
}

impl Figure {
    pub fn difference(&self) -> f64 {
        self.candidate - self.live
    }
}

/// The candidate against the live model on the same rows.
#[derive(Debug, Clone, PartialEq)]
pub enum AgainstLive {
    Scored {
        live_version: String,
        rows: String,
        figures: Vec<Figure>,
    },
    /// The live model could not score the rows (other features, an unreadable artifact).
    Unavailable { live_version: String, why: String },
}

/// The figures `(label, metadata suffix)`.
const FIGURES: [(&str, &str); 3] = [
    ("AUC", "auc"),
    ("accuracy", "accuracy"),
    ("log loss", "logloss"),
];

/// Reads it from a package's metadata; `None` when Train found no live model.
pub fn against_live<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<AgainstLive> {
    let live_version = get("live.version")?.to_owned();
    if let Some(why) = get("live.unavailable") {
        return Some(AgainstLive::Unavailable {
            live_version,
            why: why.to_owned(),
        });
    }
    let number = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok());
    let figures = FIGURES
        .iter()
        .filter_map(|(name, key)| {
            Some(Figure {
                name,
                candidate: number(&format!("validation_{key}"))?,
                live: number(&format!("live.validation_{key}"))?,
            })
        })
        .collect();
    Some(AgainstLive::Scored {
        live_version,
        rows: get("validation_rows").unwrap_or("-").to_owned(),
        figures,
    })
}

impl std::fmt::Display for AgainstLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgainstLive::Unavailable { live_version, why } => write!(
                f,
                "the live v{live_version} could not score the candidate's validation rows: {why}"
            ),
            AgainstLive::Scored {
                live_version,
                rows,
                figures,
            } => {
                write!(
                    f,
                    "on the same {rows} validation rows, live v{live_version}:"
                )?;
                for (i, x) in figures.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(
                        f,
                        "{sep}{} {:.4} vs {:.4} ({:+.4})",
                        x.name,
                        x.candidate,
                        x.live,
                        x.difference()
                    )?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Option<AgainstLive> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        against_live(|k| m.get(k).map(String::as_str))
    }

    #[test]
    fn both_models_on_the_same_rows_or_why_not() {
        let scored = read(&[
            ("validation_auc", "0.800000"),
            ("validation_accuracy", "0.830000"),
            ("validation_logloss", "0.390000"),
            ("validation_rows", "199"),
            ("live.version", "1"),
            ("live.validation_auc", "0.750000"),
            ("live.validation_accuracy", "0.840000"),
            ("live.validation_logloss", "0.410000"),
        ])
        .unwrap();
        assert_eq!(
            scored.to_string(),
            "on the same 199 validation rows, live v1: AUC 0.8000 vs 0.7500 (+0.0500), accuracy 0.8300 vs 0.8400 (-0.0100), log loss 0.3900 vs 0.4100 (-0.0200)"
        );
        let other = read(&[
            ("live.version", "3"),
            ("live.unavailable", "other features"),
        ])
        .unwrap();
        assert_eq!(
            other.to_string(),
            "the live v3 could not score the candidate's validation rows: other features"
        );
        assert_eq!(read(&[("validation_auc", "0.8")]), None, "no live model");
    }
}
