//! Runs one stage: its buildspec's script in bash, in the source folder, with the buildspec's
//! variables as defaults under the runner's environment (and the stage's own overrides on
//! top, as a pipeline action's variables override a CodeBuild project's). Output is streamed
//! line by line with the stage's name in front; the last lines are kept for the report when
//! a command fails. A stage past its timeout is killed with its whole process group.

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::buildspec::{Buildspec, BuildspecError};

/// How many lines of output a failure report shows.
const TAIL_LINES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Buildspec(#[from] BuildspecError),
    #[error("cannot run bash for the stage: {0}")]
    Spawn(std::io::Error),
    #[error("{stage} failed in phase {phase} (exit code {code}): {command}")]
    Failed {
        stage: String,
        phase: String,
        command: String,
        code: i32,
        tail: Vec<String>,
    },
    #[error("{stage} did not finish within {timeout:?}; it was stopped")]
    TimedOut {
        stage: String,
        timeout: Duration,
        tail: Vec<String>,
    },
}

impl StageError {
    /// The last lines the stage printed, for the report.
    pub fn tail(&self) -> &[String] {
        match self {
            StageError::Failed { tail, .. } | StageError::TimedOut { tail, .. } => tail,
            _ => &[],
        }
    }
}

pub struct Stage {
    /// `Train`, `Deploy`: what the output lines are tagged with.
    pub name: String,
    pub buildspec: PathBuf,
}

pub struct Outcome {
    pub exported: BTreeMap<String, String>,
    pub elapsed: Duration,
}

pub struct Runner {
    pub source_dir: PathBuf,
    pub timeout: Duration,
}

impl Runner {
    pub async fn run(
        &self,
        stage: &Stage,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Outcome, StageError> {
        let started = Instant::now();
        let spec = Buildspec::load(&self.source_dir.join(&stage.buildspec))?;
        let work = tempfile::tempdir().map_err(StageError::Spawn)?;
        let (status_file, exports_file) = (work.path().join("status"), work.path().join("exports"));
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("--noprofile")
            .arg("--norc")
            .arg("-c")
            .arg(spec.script())
            .arg("stage")
            .arg(&status_file)
            .arg(&exports_file)
            .current_dir(&self.source_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in &spec.variables {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        cmd.envs(overrides);
        cmd.env("CODEBUILD_SRC_DIR", &self.source_dir);
        if std::env::var_os("CODEBUILD_RESOLVED_SOURCE_VERSION").is_none()
            && let Some(commit) = source_commit(&self.source_dir)
        {
            cmd.env("CODEBUILD_RESOLVED_SOURCE_VERSION", commit);
        }
        let mut child = cmd.spawn().map_err(StageError::Spawn)?;
        let tag = stage.name.to_lowercase();
        let tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let out = tokio::spawn(pump(child.stdout.take(), tag.clone(), tail.clone()));
        let err = tokio::spawn(pump(child.stderr.take(), tag, tail.clone()));
        let finished = tokio::time::timeout(self.timeout, child.wait()).await;
        let last = |tail: &std::sync::Arc<std::sync::Mutex<VecDeque<String>>>| {
            tail.lock()
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default()
        };
        match finished {
            Err(_) => {
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) on the stage's own process group.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                let _ = child.wait().await;
                let _ = tokio::join!(out, err);
                return Err(StageError::TimedOut {
                    stage: stage.name.clone(),
                    timeout: self.timeout,
                    tail: last(&tail),
                });
            }
            Ok(Err(e)) => return Err(StageError::Spawn(e)),
            Ok(Ok(_)) => {}
        }
        let _ = tokio::join!(out, err);
        let status = std::fs::read_to_string(&status_file).unwrap_or_default();
        if let Some(line) = status.lines().next() {
            let mut parts = line.split('\t');
            let phase = parts.next().unwrap_or_default().to_owned();
            let index: i64 = parts.next().and_then(|i| i.parse().ok()).unwrap_or(-1);
            let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
            return Err(StageError::Failed {
                stage: stage.name.clone(),
                command: spec.command(&phase, index).unwrap_or("?").to_owned(),
                phase,
                code,
                tail: last(&tail),
            });
        }
        let exported = std::fs::read(&exports_file)
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect();
        Ok(Outcome {
            exported,
            elapsed: started.elapsed(),
        })
    }
}

/// Prints each line tagged with the stage and keeps the last ones.
async fn pump(
    stream: Option<impl AsyncRead + Unpin>,
    tag: String,
    tail: std::sync::Arc<std::sync::Mutex<VecDeque<String>>>,
) {
    let Some(stream) = stream else { return };
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("[{tag}] {line}");
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

/// What CodeBuild calls the resolved source version: the commit being built.
fn source_commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
