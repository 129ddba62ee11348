//! Graceful shutdown: the first SIGTERM or SIGINT cancels the returned token; each part of a
//! service watches a child of it (stop accepting, drain, flush), so one signal stops all.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term => tracing::info!("SIGTERM: shutting down"),
        }
        cancel.cancel();
    });
    token
}

/// How long a process may take to drain after SIGTERM, the same flag in every process.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Grace {
    /// Seconds in-flight work may take after SIGTERM before the process exits anyway.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

impl Grace {
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Runs `work` to completion, or until `grace` has passed since `token` was cancelled,
/// whichever comes first (`None`: the grace period ran out).
pub async fn within_grace<F: std::future::Future>(
    token: &CancellationToken,
    grace: std::time::Duration,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        out = work => Some(out),
        _ = async { token.cancelled().await; tokio::time::sleep(grace).await } => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_gets_its_grace_after_the_signal_and_no_more() {
        let token = CancellationToken::new();
        let quick = within_grace(&token, Duration::from_secs(5), async { 7 }).await;
        assert_eq!(quick, Some(7));
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            cancel.cancel();
        });
        let started = tokio::time::Instant::now();
        let stuck =
            within_grace(&token, Duration::from_secs(5), std::future::pending::<()>()).await;
        assert_eq!(stuck, None);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(105),
            "100 s to the signal, then 5 s"
        );
    }
}
