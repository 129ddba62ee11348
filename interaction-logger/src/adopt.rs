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
    spool::{Spool, blocking, error_chain},
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
    /// did not ship stays in that spool for the next claimant). Listing, claiming, opening and
    /// removing spools are file-system work: they run on the blocking pool.
    pub async fn run(self, stop: CancellationToken, drain: CancellationToken) {
        loop {
            let (root, id) = (self.root.clone(), self.id.clone());
            let found = tokio::task::spawn_blocking(move || {
                ownership::prune_retired(&root);
                ownership::spools(&root, &id)
            })
            .await;
            match found {
                Ok(Ok(spools)) => {
                    for dir in spools {
                        if stop.is_cancelled() {
                            return;
                        }
                        let id = self.id.clone();
                        let claimed = tokio::task::spawn_blocking(move || {
                            let claim = Claim::try_adopt(&dir, &id);
                            (dir, claim)
                        })
                        .await;
                        match claimed {
                            Ok((_, Ok(Some(claim)))) => self.adopt(claim, &drain).await,
                            Ok((_, Ok(None))) => {} // its writer is alive (maybe only slow)
                            Ok((dir, Err(e))) => {
                                tracing::warn!(spool = %dir.display(), error = %e, "cannot claim a spool")
                            }
                            Err(e) => tracing::warn!(error = %e, "the claim task failed"),
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(root = %self.root.display(), error = %e, "cannot list the spool root")
                }
                Err(e) => tracing::warn!(error = %e, "the listing task failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn adopt(&self, claim: Claim, drain: &CancellationToken) {
        // An unreadable orphan is moved into the root's quarantine (loudly) and the folder is
        // then an empty spool, removed below: adopters do not retry it forever.
        let (dir, quarantine) = (claim.dir.clone(), self.root.join(ownership::QUARANTINE));
        let spool = match blocking(move || Spool::open_adopted(&dir, &quarantine)).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(spool = %claim.dir.display(), error = %error_chain(&e), "cannot open an orphaned spool; leaving it");
                release(claim).await;
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
        drop(shipper);
        if spool.depth() > 0 || !*spool.healthy().borrow() {
            tracing::warn!(spool = %claim.dir.display(), left = spool.depth(), "stopped before the adopted spool was empty; it waits for the next claimant");
            drop(spool);
            release(claim).await;
            return;
        }
        // Its dead letters are imported here before the orphan goes: a logger killed between
        // the two leaves them in both, and the next adopter's import skips what is known.
        let reader = Arc::clone(&spool);
        let letters = match blocking(move || reader.read_all_dead_letters()).await {
            Ok(letters) => letters,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot read the adopted dead letters; leaving them in that spool");
                drop(spool);
                release(claim).await;
                return;
            }
        };
        let kept = match self.own.import_dead_letters(letters).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot keep the adopted dead letters; leaving them in that spool");
                drop(spool);
                release(claim).await;
                return;
            }
        };
        // Close the database before its files go.
        drop(spool);
        let (dir, root) = (claim.dir.clone(), self.root.clone());
        match tokio::task::spawn_blocking(move || claim.retire(&root)).await {
            Ok(Ok(())) => {
                tracing::info!(spool = %dir.display(), shipped = pending, dead_letters_kept = kept, "adopted spool shipped and removed")
            }
            Ok(Err(e)) => {
                tracing::warn!(spool = %dir.display(), error = %e, "adopted spool shipped, but not removed")
            }
            Err(e) => tracing::warn!(error = %e, "the removal task failed"),
        }
    }
}

/// Releases an adopted spool for its next claimant (recorded in its history: file I/O).
async fn release(claim: Claim) {
    let _ = tokio::task::spawn_blocking(move || claim.release()).await;
}
