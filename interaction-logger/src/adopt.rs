//! Adoption: with a spool root shared by several loggers (`LOGGER_SPOOL_ROOT`), each logger
//! looks at the root every `LOGGER_ADOPT_INTERVAL_MS` for spools whose writer is gone (their
//! claim is free, see `ownership`), claims each one, ships everything it holds with a shipper
//! of its own, keeps its dead letters in its own spool, and removes it. So what a dead
//! logger acknowledged reaches the Feature Store through any logger that is still running or
//! that starts later, whatever identity it has.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    ownership::{self, Claim},
    shipper::Shipper,
    spool::Spool,
    store::FeatureStore,
};

pub struct Adopter {
    pub root: PathBuf,
    /// This logger's identity: its own spool is `{root}/{id}`.
    pub id: String,
    pub interval: Duration,
    pub own: Arc<Spool>,
    pub store: Arc<FeatureStore>,
    pub concurrency: usize,
}

impl Adopter {
    /// Looks for orphans until `stop`; an adoption under way ends early on `drain` (what it
    /// did not ship stays in that spool for the next claimant).
    pub async fn run(self, stop: CancellationToken, drain: CancellationToken) {
        loop {
            ownership::prune_retired(&self.root);
            match ownership::spools(&self.root, &self.id) {
                Ok(spools) => {
                    for dir in spools {
                        if stop.is_cancelled() {
                            return;
                        }
                        match Claim::try_adopt(&dir, &self.id) {
                            Ok(Some(claim)) => self.adopt(claim, &drain).await,
                            Ok(None) => {} // its writer is alive (maybe only slow)
                            Err(e) => {
                                tracing::warn!(spool = %dir.display(), error = %e, "cannot claim a spool")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(root = %self.root.display(), error = %e, "cannot list the spool root")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn adopt(&self, claim: Claim, drain: &CancellationToken) {
        let spool = match Spool::open_adopted(&claim.dir) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(spool = %claim.dir.display(), error = %e, "cannot open an orphaned spool; leaving it");
                let _ = claim.release();
                return;
            }
        };
        let pending = spool.depth();
        tracing::info!(spool = %claim.dir.display(), pending, "adopting the spool of a logger that is gone");
        metrics::counter!("logger_spools_adopted_total").increment(1);
        let shipper = Arc::new(Shipper {
            spool: Arc::clone(&spool),
            store: Arc::clone(&self.store),
            concurrency: self.concurrency,
            wake: Arc::new(Notify::new()),
            linger: Duration::ZERO,
        });
        // Nothing new arrives in an orphan: ship until it is empty (or the logger stops).
        let done = CancellationToken::new();
        done.cancel();
        Arc::clone(&shipper).run(done, drain.clone()).await;
        if spool.depth() > 0 {
            tracing::warn!(spool = %claim.dir.display(), left = spool.depth(), "stopped before the adopted spool was empty; it waits for the next claimant");
            drop((shipper, spool));
            let _ = claim.release();
            return;
        }
        let moved = match spool.take_dead_letters().await {
            Ok(letters) => {
                let n = letters.len();
                match self.own.import_dead_letters(letters.clone()).await {
                    Ok(()) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot keep the adopted dead letters; leaving them in that spool");
                        // put them back where they were
                        let _ = spool.import_dead_letters(letters).await;
                        drop((shipper, spool));
                        let _ = claim.release();
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the adopted dead letters");
                drop((shipper, spool));
                let _ = claim.release();
                return;
            }
        };
        // Close the database before its files go.
        drop((shipper, spool));
        let dir = claim.dir.clone();
        match claim.retire(&self.root) {
            Ok(()) => {
                tracing::info!(spool = %dir.display(), shipped = pending, dead_letters_kept = moved, "adopted spool shipped and removed")
            }
            Err(e) => {
                tracing::warn!(spool = %dir.display(), error = %e, "adopted spool shipped, but not removed")
            }
        }
    }
}
