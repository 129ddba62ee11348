//! The approver's page on the watcher's admin port (not the public gateway): `/shadow`, the
//! candidate next to the live model over mirrored traffic, and a progressive rollout under way
//! (each variant's live evidence in the step's window and what it says), with the score
//! distributions drawn server-side as SVG (no script); `/shadow.json`, the same figures.

use axum::{
    Json, Router,
    extract::State,
    response::{Html, IntoResponse},
    routing::get,
};
use proto::registry::v1::Status;
use serde::Serialize;
use shadow_comparison::{Side, Summary};
use tokio::sync::watch;

use rollout_evidence::{Thresholds, VariantStats, Verdict};

use crate::{evidence::Evidence, rollout::Rollouts};

#[derive(Clone)]
struct Page {
    evidence: Evidence,
    rollouts: Rollouts,
    thresholds: Thresholds,
    status: watch::Receiver<Status>,
}

pub fn routes(
    evidence: Evidence,
    rollouts: Rollouts,
    thresholds: Thresholds,
    status: watch::Receiver<Status>,
) -> Router {
    Router::new()
        .route("/shadow", get(html))
        .route("/shadow.json", get(json_view))
        .with_state(Page {
            evidence,
            rollouts,
            thresholds,
            status,
        })
}

/// `/shadow.json`, and what `/shadow` draws.
#[derive(Serialize)]
struct View {
    live: Vec<LiveVariant>,
    latest_approved: Option<i64>,
    candidate: Option<Package>,
    shadow: Option<ShadowEndpoint>,
    shadowing: bool,
    comparison: Option<ComparisonView>,
    rollout: Option<RolloutView>,
    against_live: Option<String>,
}

#[derive(Serialize)]
struct LiveVariant {
    variant: String,
    version: i64,
    weight: f64,
}

#[derive(Serialize)]
struct Package {
    version: i64,
    arn: String,
}

#[derive(Serialize)]
struct ShadowEndpoint {
    endpoint: String,
    status: String,
    versions: Vec<i64>,
}

/// The comparison on mirrored traffic of the candidate being shadowed.
#[derive(Serialize)]
struct ComparisonView {
    version: i64,
    arn: String,
    summary: Summary,
}

/// The rollout under way: its step's window and what the evidence says now.
#[derive(Serialize)]
struct RolloutView {
    version: i64,
    arn: String,
    weights: String,
    since: f64,
    live: SideView,
    candidate: SideView,
    verdict: &'static str,
    why: String,
}

#[derive(Serialize)]
struct SideView {
    variant: String,
    requests: u64,
    error_rate: Option<f64>,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    mean_score: Option<f64>,
    scores: Vec<u64>,
}

impl SideView {
    fn of(variant: &str, s: &VariantStats) -> Self {
        SideView {
            variant: variant.to_owned(),
            requests: s.requests,
            error_rate: s.error_rate(),
            latency_p50_ms: s.latency_p50_ms(),
            latency_p99_ms: s.latency_p99_ms(),
            mean_score: s.mean_score(),
            scores: s.scores.clone(),
        }
    }
}

fn rollout_view(page: &Page) -> Option<RolloutView> {
    let (version, arn, w) = page.rollouts.snapshot()?;
    let (verdict, why) = match page.thresholds.judge(&w) {
        Verdict::Pass(why) => ("pass", why),
        Verdict::Fail(why) => ("fail", why),
        Verdict::Waiting(why) => ("waiting", why),
    };
    Some(RolloutView {
        version,
        arn,
        since: w.started,
        live: SideView::of(&w.live_variant, &w.live),
        candidate: SideView::of(&w.candidate_variant, &w.candidate),
        weights: w.weights,
        verdict,
        why,
    })
}

fn view(page: &Page) -> View {
    let status = page.status.borrow().clone();
    View {
        live: status
            .endpoint
            .iter()
            .flat_map(|e| &e.variants)
            .map(|v| LiveVariant {
                variant: v.name.clone(),
                version: v.model_package_version,
                weight: v.current_weight,
            })
            .collect(),
        latest_approved: status.latest_approved.as_ref().map(|p| p.version),
        candidate: status.candidate.as_ref().map(|p| Package {
            version: p.version,
            arn: p.arn.clone(),
        }),
        shadow: status.shadow.as_ref().map(|s| ShadowEndpoint {
            endpoint: s.name.clone(),
            status: s.status.clone(),
            versions: s.variants.iter().map(|v| v.model_package_version).collect(),
        }),
        shadowing: model_registry::status::shadowed(&status).is_some(),
        comparison: page
            .evidence
            .snapshot()
            .map(|(version, arn, c)| ComparisonView {
                version,
                arn,
                summary: c.summary(),
            }),
        rollout: rollout_view(page),
        against_live: page.evidence.against_live().map(|a| a.to_string()),
    }
}

async fn json_view(State(page): State<Page>) -> Json<View> {
    Json(view(&page))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
}

/// Two score distributions as grouped bars (shares of rows per 0.05 bin).
fn chart(live: &[u64], candidate: &[u64]) -> String {
    let (w, h, pad) = (640.0, 220.0, 30.0);
    let shares = |c: &[u64]| {
        let total = c.iter().sum::<u64>().max(1) as f64;
        c.iter().map(|x| *x as f64 / total).collect::<Vec<_>>()
    };
    let (l, c) = (shares(live), shares(candidate));
    let top = l.iter().chain(&c).cloned().fold(0.01, f64::max);
    let bin_w = (w - 2.0 * pad) / l.len().max(1) as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="score distributions"><line x1="{pad}" y1="{y}" x2="{x2}" y2="{y}" stroke="#333"/>"##,
        y = h - pad,
        x2 = w - pad
    );
    for (i, (a, b)) in l.iter().zip(&c).enumerate() {
        let x = pad + i as f64 * bin_w;
        for (j, (share, colour)) in [(a, "#4c78a8"), (b, "#f58518")].iter().enumerate() {
            let bh = **share / top * (h - 2.0 * pad);
            svg.push_str(&format!(
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{colour}"><title>{:.2}-{:.2}: {:.1}%</title></rect>"#,
                x + 1.0 + j as f64 * (bin_w - 2.0) / 2.0,
                h - pad - bh,
                (bin_w - 2.0) / 2.0,
                i as f64 * 0.05,
                (i + 1) as f64 * 0.05,
                *share * 100.0
            ));
        }
    }
    for t in [0.0, 0.5, 1.0] {
        svg.push_str(&format!(
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{t}</text>"#,
            pad + t * (w - 2.0 * pad),
            h - pad + 14.0
        ));
    }
    svg.push_str("</svg>");
    svg
}

async fn html(State(page): State<Page>) -> impl IntoResponse {
    let v = view(&page);
    let live = v
        .live
        .iter()
        .map(|x| format!("v{} ({})", x.version, escape(&x.variant)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut body = format!(
        "<p>Live: {}</p>",
        if live.is_empty() {
            "nothing".into()
        } else {
            live
        }
    );
    if let Some(r) = &v.rollout {
        body.push_str(&rollout_html(r));
    }
    match &v.comparison {
        None => body.push_str(&format!(
            "<p>No candidate is awaiting a decision{}.</p>",
            if v.candidate.is_none() {
                ""
            } else {
                " with mirrored traffic yet"
            }
        )),
        Some(c) => body.push_str(&comparison_html(c, v.shadowing, v.against_live.as_deref())),
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Candidate vs live</title><meta http-equiv=\"refresh\" content=\"10\"></head><body style=\"font-family:sans-serif;max-width:48rem;margin:1rem auto\"><h1>Candidate vs live</h1>{body}<p><a href=\"/shadow.json\">JSON</a> · refreshes every 10 s</p></body></html>"
    ))
}

/// A table row: its label, the figure of one side, its decimals.
type Figure<T> = (&'static str, fn(&T) -> Option<f64>, usize);

fn rollout_html(r: &RolloutView) -> String {
    let mut body = format!(
        "<h2>Rolling out v{}</h2><p>weights {} · the evidence says <b>{}</b>: {}</p>",
        r.version,
        escape(&r.weights),
        escape(r.verdict),
        escape(&r.why)
    );
    body.push_str(&format!(
        "<table><tr><th></th><th>live ({})</th><th>candidate ({})</th></tr>",
        escape(&r.live.variant),
        escape(&r.candidate.variant)
    ));
    let figures: [Figure<SideView>; 5] = [
        ("requests", |s| Some(s.requests as f64), 0),
        ("error rate", |s| s.error_rate, 4),
        ("latency p50 (ms)", |s| s.latency_p50_ms, 2),
        ("latency p99 (ms)", |s| s.latency_p99_ms, 2),
        ("mean score", |s| s.mean_score, 4),
    ];
    for (k, f, d) in figures {
        body.push_str(&format!(
            "<tr><th>{k}</th><td>{}</td><td>{}</td></tr>",
            num(f(&r.live), d),
            num(f(&r.candidate), d)
        ));
    }
    body.push_str("</table>");
    body.push_str(&chart(&r.live.scores, &r.candidate.scores));
    body
}

fn comparison_html(c: &ComparisonView, shadowing: bool, against_live: Option<&str>) -> String {
    let s = &c.summary;
    let mut body = format!(
        "<h2>Candidate v{} {}</h2><p>{}</p>",
        c.version,
        if shadowing {
            "(shadowing live traffic)"
        } else {
            "(not shadowing now)"
        },
        escape(&c.arn)
    );
    if let Some(a) = against_live {
        body.push_str(&format!("<p>Train: {}</p>", escape(a)));
    }
    body.push_str("<table><tr><th></th><th>live</th><th>candidate</th></tr>");
    let sides: [Figure<Side>; 3] = [
        ("error rate", |s| s.error_rate, 4),
        ("latency p50 (ms)", |s| s.latency_p50_ms, 2),
        ("latency p99 (ms)", |s| s.latency_p99_ms, 2),
    ];
    for (k, f, d) in sides {
        body.push_str(&format!(
            "<tr><th>{k}</th><td>{}</td><td>{}</td></tr>",
            num(f(&s.live), d),
            num(f(&s.candidate), d)
        ));
    }
    body.push_str("</table><table>");
    for (k, x, d) in [
        ("rows compared", Some(s.rows as f64), 0),
        ("requests mirrored", Some(s.requests as f64), 0),
        ("mean (candidate - live)", s.mean_diff, 5),
        ("mean |candidate - live|", s.mean_abs_diff, 5),
        ("p50 |candidate - live|", s.abs_diff_p50, 5),
        ("p99 |candidate - live|", s.abs_diff_p99, 5),
        ("decision agreement", s.agreement, 4),
        ("at threshold", Some(s.threshold), 2),
    ] {
        body.push_str(&format!("<tr><th>{k}</th><td>{}</td></tr>", num(x, d)));
    }
    body.push_str("</table><h3>Score distributions (share of rows per 0.05)</h3>");
    body.push_str(&chart(&s.live_scores, &s.candidate_scores));
    body.push_str(r##"<p><span style="color:#4c78a8">&#9632; live</span> <span style="color:#f58518">&#9632; candidate</span></p>"##);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_one_bar_per_bin_and_model() {
        let svg = chart(&[1, 0, 3], &[0, 2, 2]);
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
