//! Who may write a spool. A logger writes only a spool it has *claimed*: it holds an exclusive
//! lock on the spool's `owner.lock` for as long as it writes. The lock is the operating
//! system's (`flock`; on NFS, such as EFS, the client turns it into an NFSv4 lock): it is
//! released when the holding process exits, however it exits, and on a network file system
//! also when the holder's host stops renewing its lease. A process that is only slow or
//! paused keeps it. So "the lock is free" means "its writer is gone", and that is when
//! another logger may adopt the spool.
//!
//! Every claim and release is appended to the spool's `writers.log` (time, event, logger id,
//! pid) and fsynced before the claimant writes anything, so the history of who wrote a spool
//! can be checked afterwards. A spool that is emptied and removed keeps its history under
//! `{root}/retired/`.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

const LOCK: &str = "owner.lock";
pub const WRITERS: &str = "writers.log";
/// Where the writer histories of removed spools go, under the spool root.
pub const RETIRED: &str = "retired";
/// Where unreadable spool files are moved (under the spool root, or the spool folder without
/// one): kept for inspection, never shipped or removed by the logger.
pub const QUARANTINE: &str = "quarantine";
/// Retired histories older than this are pruned.
const RETIRED_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// The right to write one spool, held until released, retired or the process ends.
#[derive(Debug)]
pub struct Claim {
    lock: File,
    pub dir: PathBuf,
    who: String,
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

impl Claim {
    /// Claims this logger's own spool at `dir` (created if missing) unless a running
    /// process holds it.
    pub fn try_own(dir: &Path, who: &str) -> io::Result<Option<Claim>> {
        fs::create_dir_all(dir)?;
        Self::take(dir, who, "open", true)
    }

    /// Claims another logger's spool at `dir` unless a running process holds it, or it is
    /// gone (being removed by whoever emptied it).
    pub fn try_adopt(dir: &Path, who: &str) -> io::Result<Option<Claim>> {
        match Self::take(dir, who, "adopt", false) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // no lock file: a removal that stopped half-way leaves at most an empty folder
                let _ = fs::remove_dir(dir);
                Ok(None)
            }
            other => other,
        }
    }

    fn take(dir: &Path, who: &str, event: &str, create: bool) -> io::Result<Option<Claim>> {
        let lock = OpenOptions::new()
            .create(create)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let claim = Claim {
            lock,
            dir: dir.to_owned(),
            who: who.to_owned(),
        };
        claim.record(event)?;
        Ok(Some(claim))
    }

    fn record(&self, event: &str) -> io::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(WRITERS))?;
        writeln!(
            log,
            "{} {event} id={} pid={}",
            unix_ms(),
            self.who,
            std::process::id()
        )?;
        log.sync_data()
    }

    /// Stops writing the spool; whatever it holds waits for its next claimant.
    pub fn release(self) -> io::Result<()> {
        self.record("close")
        // dropping `lock` releases it
    }

    /// Removes the spool, which must hold nothing any more: its history moves to
    /// `{root}/retired/`, then its files go, the lock file last.
    pub fn retire(self, root: &Path) -> io::Result<()> {
        self.record("retire")?;
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let retired = root.join(RETIRED);
        fs::create_dir_all(&retired)?;
        fs::rename(
            self.dir.join(WRITERS),
            retired.join(format!("{name}.{}.log", unix_ms())),
        )?;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n != LOCK) {
                fs::remove_file(&path)?;
            }
        }
        fs::remove_file(self.dir.join(LOCK))?;
        drop(self.lock);
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }
}

/// The spools under `root` other than `own`: candidates for adoption.
pub fn spools(root: &Path, own: &str) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == own
            || name == RETIRED
            || name == QUARANTINE
            || name.starts_with('.')
            || !entry.file_type()?.is_dir()
        {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Drops retired histories past their keep time.
pub fn prune_retired(root: &Path) {
    let Ok(entries) = fs::read_dir(root.join(RETIRED)) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > RETIRED_KEEP);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_at_a_time_recorded_and_free_again_once_dropped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a");
        assert!(
            Claim::try_adopt(&dir, "b").unwrap().is_none(),
            "nothing to adopt"
        );
        let first = Claim::try_own(&dir, "a").unwrap().unwrap();
        assert!(Claim::try_adopt(&dir, "b").unwrap().is_none(), "held");
        assert!(Claim::try_own(&dir, "a").unwrap().is_none(), "held");
        first.release().unwrap();
        let second = Claim::try_adopt(&dir, "b").unwrap().unwrap();
        let log = fs::read_to_string(dir.join(WRITERS)).unwrap();
        let events: Vec<&str> = log.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
        assert_eq!(events, ["open", "close", "adopt"], "{log}");
        assert!(log.contains("id=a") && log.contains("id=b"));

        assert_eq!(
            spools(root.path(), "z").unwrap(),
            std::slice::from_ref(&dir)
        );
        assert!(spools(root.path(), "a").unwrap().is_empty());
        second.retire(root.path()).unwrap();
        assert!(!dir.exists(), "removed");
        assert!(
            Claim::try_adopt(&dir, "c").unwrap().is_none(),
            "nothing to adopt"
        );
        assert!(!dir.exists(), "not created again by a late adopter");
        let retired: Vec<_> = fs::read_dir(root.path().join(RETIRED))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(retired.len(), 1);
        let history = fs::read_to_string(retired[0].path()).unwrap();
        assert!(
            history
                .trim_end()
                .ends_with(&format!("pid={}", std::process::id()))
        );
        assert!(history.contains(" retire "), "{history}");
        assert!(
            spools(root.path(), "z").unwrap().is_empty(),
            "retired/ is no spool"
        );

        // In this same test, not one beside it: a process forked by a concurrent test holds
        // copies of this one's descriptors (and so its locks) until it execs.
        let dir = root.path().join("held");
        fs::create_dir_all(&dir).unwrap();
        // flock(1) holds the lock in another process for a second.
        let mut holder = std::process::Command::new("flock")
            .arg(dir.join(LOCK))
            .args(["sleep", "1"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        fs::write(dir.join(LOCK), b"").unwrap();
        while Claim::try_adopt(&dir, "me").unwrap().is_some() {
            // flock(1) has not taken it yet; give it back and look again
            assert!(
                std::time::Instant::now() < deadline,
                "flock never took the lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        holder.wait().unwrap();
        assert!(
            Claim::try_adopt(&dir, "me").unwrap().is_some(),
            "free once its holder exited"
        );
    }
}
