//! The approval gate: the candidate's evaluation next to the live model's, how to decide, and,
//! while it waits, the candidate's comparison with the live model on shadowed live traffic.

use aws_sdk_sagemaker::types::ModelApprovalStatus;
use tokio_util::sync::CancellationToken;

use crate::{
    pipeline::{Pipeline, PipelineError, banner},
    registry::{self, Evaluation},
};

impl Pipeline {
    /// Shows the candidate next to the live model, prints how to decide, and waits until the
    /// registry holds a decision on it.
    pub async fn gate(
        &self,
        arn: &str,
        shutdown: &CancellationToken,
    ) -> Result<ModelApprovalStatus, PipelineError> {
        let candidate = registry::evaluation(&self.client, arn).await?;
        let live = self.live_evaluations().await;
        banner(&format!(
            "Approval gate: v{} is {}",
            candidate.version,
            candidate.status.as_str()
        ));
        print_side_by_side(&candidate, &live);
        if let Some(against) = candidate.against_live() {
            println!("   candidate v{} {against}", candidate.version);
        }
        let v = candidate.version;
        let cmd = &self.approve_command;
        println!("\n   Approve: {cmd} approve {v} --reason \"...\"");
        println!("   Reject:  {cmd} reject {v} --reason \"...\"");
        println!(
            "   (or UpdateModelPackage from the console or any SDK; checking every {:.1} s)",
            self.poll.as_secs_f64()
        );
        let deadline = self.gate_timeout.map(|t| tokio::time::Instant::now() + t);
        let mut shown = None;
        loop {
            if self.shadow_candidates {
                self.show_comparison(v, &mut shown).await;
            }
            match registry::evaluation(&self.client, arn)
                .await
                .map(|e| e.status)
            {
                Ok(s @ (ModelApprovalStatus::Approved | ModelApprovalStatus::Rejected)) => {
                    println!("   decision: v{v} {}", s.as_str());
                    return Ok(s);
                }
                Ok(_) => {}
                Err(e) => println!("   (the registry did not answer: {e}; trying again)"),
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(ModelApprovalStatus::PendingManualApproval);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.cancelled() => return Err(PipelineError::Interrupted),
            }
        }
    }

    /// Prints the candidate's comparison on live traffic when it moved since `shown`.
    async fn show_comparison(&self, version: i64, shown: &mut Option<u64>) {
        let Ok(Some(view)) = self.deployer.candidate_view().await else {
            return;
        };
        let Some(c) = view.comparison.as_ref().and_then(|c| c.summary()) else {
            return;
        };
        if view.version != version || *shown == Some(c.rows) {
            return;
        }
        *shown = Some(c.rows);
        let f = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |x| format!("{x:.d$}"));
        println!(
            "   shadow v{version} on live traffic: {} rows, mean |candidate - live| {}, p99 {}, decision agreement {} at {}; candidate errors {} (rate {}), p50 {} ms vs live {} ms",
            c.rows,
            f(c.mean_abs_diff, 4),
            f(c.abs_diff_p99, 4),
            f(c.agreement, 4),
            c.threshold,
            c.candidate.errors,
            f(c.candidate.error_rate, 4),
            f(c.candidate.latency_p50_ms, 2),
            f(c.live.latency_p50_ms, 2),
        );
    }

    async fn live_evaluations(&self) -> Vec<Evaluation> {
        let Ok(status) = self.deployer.status().await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for arn in status
            .live
            .iter()
            .map(|v| v.arn.as_str())
            .filter(|a| !a.is_empty())
        {
            if let Ok(e) = registry::evaluation(&self.client, arn).await {
                out.push(e);
            }
        }
        out
    }
}

fn print_side_by_side(candidate: &Evaluation, live: &[Evaluation]) {
    let candidate_rows = candidate.rows();
    let live_rows: Vec<_> = live.iter().map(Evaluation::rows).collect();
    let width = candidate_rows
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(0)
        .max(14)
        + 3;
    let mut header = format!(
        "   {:<28}{:<width$}",
        "",
        format!("candidate v{}", candidate.version)
    );
    for l in live {
        header.push_str(&format!("live v{}  ", l.version));
    }
    if live.is_empty() {
        header.push_str("live: none found");
    }
    println!("{}", header.trim_end());
    for (i, (label, value)) in candidate_rows.into_iter().enumerate() {
        let mut line = format!("   {label:<28}{value:<width$}");
        for rows in &live_rows {
            line.push_str(&format!("{}  ", rows[i].1));
        }
        println!("{}", line.trim_end());
    }
    if !candidate.description.is_empty() {
        println!("   {}", candidate.description);
    }
}
