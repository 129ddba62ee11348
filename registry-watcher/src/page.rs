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
use serde_json::{Value, json};
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

fn side(name: &str, s: &VariantStats) -> Value {
    json!({
        "variant": name, "requests": s.requests, "error_rate": s.error_rate(),
        "latency_p50_ms": s.latency_p50_ms(), "latency_p99_ms": s.latency_p99_ms(),
        "mean_score": s.mean_score(), "scores": s.scores,
    })
}

/// The rollout under way: its step's window and what the evidence says now.
fn rollout_view(page: &Page) -> Value {
    let Some((version, arn, w)) = page.rollouts.snapshot() else {
        return Value::Null;
    };
    let (verdict, why) = match page.thresholds.judge(&w) {
        Verdict::Pass(why) => ("pass", why),
        Verdict::Fail(why) => ("fail", why),
        Verdict::Waiting(why) => ("waiting", why),
    };
    json!({
        "version": version, "arn": arn, "weights": w.weights, "since": w.started,
        "live": side(&w.live_variant, &w.live), "candidate": side(&w.candidate_variant, &w.candidate),
        "verdict": verdict, "why": why,
    })
}

fn view(page: &Page) -> Value {
    let status = page.status.borrow().clone();
    let live: Vec<Value> = status
        .endpoint
        .iter()
        .flat_map(|e| &e.variants)
        .map(|v| json!({ "variant": v.name, "version": v.model_package_version, "weight": v.current_weight }))
        .collect();
    let shadow = status.shadow.as_ref().map(|s| {
        json!({
            "endpoint": s.name,
            "status": s.status,
            "versions": s.variants.iter().map(|v| v.model_package_version).collect::<Vec<_>>(),
        })
    });
    let comparison = page
        .evidence
        .snapshot()
        .map(|(version, arn, c)| json!({ "version": version, "arn": arn, "summary": c.summary() }));
    json!({
        "live": live,
        "latest_approved": status.latest_approved.as_ref().map(|p| p.version),
        "candidate": status.candidate.as_ref().map(|p| json!({ "version": p.version, "arn": p.arn })),
        "shadow": shadow,
        "shadowing": model_registry::status::shadowed(&status).is_some(),
        "comparison": comparison,
        "rollout": rollout_view(page),
        "against_live": page.evidence.against_live().map(|a| a.to_string()),
    })
}

async fn json_view(State(page): State<Page>) -> Json<Value> {
    Json(view(&page))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_owned(), |x| format!("{x:.digits$}"))
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
    let live = v["live"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    format!(
                        "v{} ({})",
                        x["version"],
                        escape(x["variant"].as_str().unwrap_or(""))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut body = format!(
        "<p>Live: {}</p>",
        if live.is_empty() {
            "nothing".into()
        } else {
            live
        }
    );
    if let r @ Value::Object(_) = &v["rollout"] {
        body.push_str(&format!(
            "<h2>Rolling out v{}</h2><p>weights {} · the evidence says <b>{}</b>: {}</p>",
            r["version"],
            escape(r["weights"].as_str().unwrap_or("")),
            escape(r["verdict"].as_str().unwrap_or("")),
            escape(r["why"].as_str().unwrap_or(""))
        ));
        body.push_str(&format!(
            "<table><tr><th></th><th>live ({})</th><th>candidate ({})</th></tr>",
            escape(r["live"]["variant"].as_str().unwrap_or("")),
            escape(r["candidate"]["variant"].as_str().unwrap_or(""))
        ));
        for (k, f, d) in [
            ("requests", "requests", 0),
            ("error rate", "error_rate", 4),
            ("latency p50 (ms)", "latency_p50_ms", 2),
            ("latency p99 (ms)", "latency_p99_ms", 2),
            ("mean score", "mean_score", 4),
        ] {
            body.push_str(&format!(
                "<tr><th>{k}</th><td>{}</td><td>{}</td></tr>",
                num(&r["live"][f], d),
                num(&r["candidate"][f], d)
            ));
        }
        body.push_str("</table>");
        let counts = |k: &str| -> Vec<u64> {
            r[k]["scores"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default()
        };
        body.push_str(&chart(&counts("live"), &counts("candidate")));
    }
    match &v["comparison"] {
        Value::Null => body.push_str(&format!(
            "<p>No candidate is awaiting a decision{}.</p>",
            if v["candidate"].is_null() {
                ""
            } else {
                " with mirrored traffic yet"
            }
        )),
        c => {
            let s = &c["summary"];
            body.push_str(&format!(
                "<h2>Candidate v{} {}</h2><p>{}</p>",
                c["version"],
                if v["shadowing"] == true {
                    "(shadowing live traffic)"
                } else {
                    "(not shadowing now)"
                },
                escape(c["arn"].as_str().unwrap_or(""))
            ));
            let row = |k: &str, a: String, b: String| {
                format!("<tr><th>{k}</th><td>{a}</td><td>{b}</td></tr>")
            };
            let side = |name: &str, f: &str, d| num(&s[name][f], d);
            if let Some(a) = v["against_live"].as_str() {
                body.push_str(&format!("<p>Train: {}</p>", escape(a)));
            }
            body.push_str("<table><tr><th></th><th>live</th><th>candidate</th></tr>");
            body.push_str(&row(
                "error rate",
                side("live", "error_rate", 4),
                side("candidate", "error_rate", 4),
            ));
            body.push_str(&row(
                "latency p50 (ms)",
                side("live", "latency_p50_ms", 2),
                side("candidate", "latency_p50_ms", 2),
            ));
            body.push_str(&row(
                "latency p99 (ms)",
                side("live", "latency_p99_ms", 2),
                side("candidate", "latency_p99_ms", 2),
            ));
            body.push_str("</table><table>");
            for (k, f, d) in [
                ("rows compared", "rows", 0),
                ("requests mirrored", "requests", 0),
                ("mean (candidate - live)", "mean_diff", 5),
                ("mean |candidate - live|", "mean_abs_diff", 5),
                ("p50 |candidate - live|", "abs_diff_p50", 5),
                ("p99 |candidate - live|", "abs_diff_p99", 5),
                ("decision agreement", "agreement", 4),
                ("at threshold", "threshold", 2),
            ] {
                body.push_str(&format!("<tr><th>{k}</th><td>{}</td></tr>", num(&s[f], d)));
            }
            body.push_str("</table><h3>Score distributions (share of rows per 0.05)</h3>");
            let counts = |k: &str| -> Vec<u64> {
                s[k].as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default()
            };
            body.push_str(&chart(&counts("live_scores"), &counts("candidate_scores")));
            body.push_str(r##"<p><span style="color:#4c78a8">&#9632; live</span> <span style="color:#f58518">&#9632; candidate</span></p>"##);
        }
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Candidate vs live</title><meta http-equiv=\"refresh\" content=\"10\"></head><body style=\"font-family:sans-serif;max-width:48rem;margin:1rem auto\"><h1>Candidate vs live</h1>{body}<p><a href=\"/shadow.json\">JSON</a> · refreshes every 10 s</p></body></html>"
    ))
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
