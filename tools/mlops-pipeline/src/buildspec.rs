//! CodeBuild buildspec files (version 0.2), the subset the pipeline's stages use, and the
//! one bash script a stage runs: every phase's commands in one shell (variables a command
//! exports are seen by the next, as in CodeBuild 0.2), with CodeBuild's phase rules — a
//! failed command ends its phase; a failure in `install` or `pre_build` skips the rest, a
//! failure in `build` still runs `post_build` with `CODEBUILD_BUILD_SUCCEEDING=0`; `finally`
//! blocks always run once their phase started.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

/// The phases in the order CodeBuild runs them.
pub const PHASES: [&str; 4] = ["install", "pre_build", "build", "post_build"];

#[derive(Debug, thiserror::Error)]
pub enum BuildspecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid buildspec: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Env {
    #[serde(default)]
    variables: BTreeMap<String, Scalar>,
    #[serde(default, rename = "exported-variables")]
    exported_variables: Vec<String>,
    #[serde(default)]
    shell: Option<String>,
}

/// A YAML scalar: buildspec variables may be written as numbers or booleans.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    S(String),
    I(i64),
    F(f64),
    B(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::S(s) => s.clone(),
            Scalar::I(i) => i.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct Phase {
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub finally: Vec<String>,
    /// `runtime-versions` etc. matter to CodeBuild's image, not to a local shell.
    #[serde(default, rename = "runtime-versions")]
    pub runtime_versions: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
struct Raw {
    version: Scalar,
    #[serde(default)]
    env: Env,
    #[serde(default)]
    phases: BTreeMap<String, Phase>,
    #[serde(default)]
    artifacts: Option<serde_norway::Value>,
}

/// A parsed buildspec.
#[derive(Debug)]
pub struct Buildspec {
    pub path: String,
    /// Defaults: the environment the stage runs in overrides them, as a CodeBuild project's
    /// variables override the buildspec's.
    pub variables: BTreeMap<String, String>,
    pub exported_variables: Vec<String>,
    /// In CodeBuild's order; phases the file leaves out are absent.
    pub phases: Vec<(String, Phase)>,
}

impl Buildspec {
    pub fn load(path: &Path) -> Result<Self, BuildspecError> {
        let text = std::fs::read_to_string(path).map_err(|source| BuildspecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, BuildspecError> {
        let invalid = |reason: String| BuildspecError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let raw: Raw = serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let _ = raw.artifacts; // uploaded by CodeBuild; locally the files stay where they are
        if raw.version.text() != "0.2" {
            return Err(invalid(format!(
                "version {} (only 0.2 is supported)",
                raw.version.text()
            )));
        }
        if let Some(shell) = raw.env.shell.as_deref()
            && shell != "bash"
        {
            return Err(invalid(format!(
                "env.shell {shell} (the stages run in bash)"
            )));
        }
        if let Some(unknown) = raw.phases.keys().find(|p| !PHASES.contains(&p.as_str())) {
            return Err(invalid(format!(
                "unknown phase {unknown} (phases are {})",
                PHASES.join(", ")
            )));
        }
        for name in &raw.env.exported_variables {
            if !is_name(name) {
                return Err(invalid(format!("exported variable {name:?} is not a name")));
            }
        }
        for name in raw.env.variables.keys() {
            if !is_name(name) {
                return Err(invalid(format!("variable {name:?} is not a name")));
            }
        }
        let mut phases = raw.phases;
        Ok(Buildspec {
            path: path.to_owned(),
            variables: raw
                .env
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), v.text()))
                .collect(),
            exported_variables: raw.env.exported_variables,
            phases: PHASES
                .iter()
                .filter_map(|p| phases.remove(*p).map(|phase| (p.to_string(), phase)))
                .collect(),
        })
    }

    /// The bash script that runs every phase. `$1` is a file that receives one line per
    /// failed command (`phase<TAB>index<TAB>exit code`; index -1 for a `finally` command),
    /// `$2` one that receives the exported variables as `NAME=value\0`.
    pub fn script(&self) -> String {
        let mut s = String::from(
            "__mlops_status=\"$1\"; __mlops_exports=\"$2\"\n\
             export CODEBUILD_BUILD_SUCCEEDING=1\n\
             __mlops_failed=\n\
             __mlops_fail() { __mlops_failed=$1; export CODEBUILD_BUILD_SUCCEEDING=0; \
             printf '%s\\t%s\\t%s\\n' \"$1\" \"$2\" \"$3\" >> \"$__mlops_status\"; }\n",
        );
        for (name, phase) in &self.phases {
            // install, pre_build and build run only while nothing failed; post_build also
            // after a failed build.
            let guard = if name == "post_build" {
                "[ -z \"$__mlops_failed\" ] || [ \"$__mlops_failed\" = build ]"
            } else {
                "[ -z \"$__mlops_failed\" ]"
            };
            s.push_str(&format!(
                "if {guard}; then\n  __mlops_phase_ok=1\n  printf '== phase %s\\n' {}\n",
                quote(name)
            ));
            for (i, cmd) in phase.commands.iter().enumerate() {
                s.push_str(&format!(
                    "  if [ -n \"$__mlops_phase_ok\" ]; then\n    printf '$ %s\\n' {}\n    eval {}\n    \
                     __mlops_rc=$?\n    if [ $__mlops_rc -ne 0 ]; then __mlops_phase_ok=; \
                     __mlops_fail {} {i} $__mlops_rc; fi\n  fi\n",
                    quote(first_line(cmd)),
                    quote(cmd),
                    quote(name),
                ));
            }
            for cmd in &phase.finally {
                s.push_str(&format!(
                    "  printf '$ %s\\n' {}\n  eval {}\n  __mlops_rc=$?\n  \
                     if [ $__mlops_rc -ne 0 ]; then __mlops_fail {} -1 $__mlops_rc; fi\n",
                    quote(first_line(cmd)),
                    quote(cmd),
                    quote(name),
                ));
            }
            s.push_str("fi\n");
        }
        for name in &self.exported_variables {
            s.push_str(&format!(
                "printf '%s=%s\\0' {name} \"${{{name}-}}\" >> \"$__mlops_exports\"\n"
            ));
        }
        s.push_str("exit 0\n");
        s
    }

    /// The command at `index` of `phase` (-1: one of its `finally` commands).
    pub fn command(&self, phase: &str, index: i64) -> Option<&str> {
        let (_, p) = self.phases.iter().find(|(n, _)| n == phase)?;
        if index < 0 {
            return Some("(a finally command)");
        }
        p.commands.get(index as usize).map(String::as_str)
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What the log shows of a command: its first line (all of a one-liner).
fn first_line(cmd: &str) -> &str {
    cmd.trim().lines().next().unwrap_or_default()
}

/// Single-quotes `s` for bash.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
version: 0.2
env:
  variables:
    GROUP: my-group
    COUNT: 1
  exported-variables: [OUT]
phases:
  build:
    commands:
      - echo "it's $GROUP"
  install:
    runtime-versions:
      python: 3.11
    commands:
      - true
"#;

    #[test]
    fn parses_variables_phases_in_codebuild_order_and_exports() {
        let b = Buildspec::parse("t.yml", SPEC).unwrap();
        assert_eq!(b.variables["GROUP"], "my-group");
        assert_eq!(b.variables["COUNT"], "1");
        assert_eq!(b.exported_variables, ["OUT"]);
        let names: Vec<_> = b.phases.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["install", "build"]);
        assert_eq!(b.command("build", 0), Some("echo \"it's $GROUP\""));
    }

    #[test]
    fn refuses_what_it_would_not_run_faithfully() {
        for (text, why) in [
            ("version: 0.1\nphases: {}", "only 0.2"),
            (
                "version: 0.2\nphases:\n  deploy:\n    commands: [x]",
                "unknown phase",
            ),
            ("version: 0.2\nenv:\n  shell: sh\n", "bash"),
            (
                "version: 0.2\nenv:\n  exported-variables: ['A B']\n",
                "not a name",
            ),
            ("version: 0.2\nenv:\n  varables: {}\n", "unknown field"),
        ] {
            let e = Buildspec::parse("t.yml", text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    /// Runs the generated script in a real bash and reads back what it reports.
    fn run(spec: &str) -> (String, String, String) {
        let b = Buildspec::parse("t.yml", spec).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (status, exports) = (dir.path().join("status"), dir.path().join("exports"));
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(b.script())
            .arg("bash")
            .arg(&status)
            .arg(&exports)
            .output()
            .unwrap();
        assert!(out.status.success());
        (
            String::from_utf8(out.stdout).unwrap(),
            std::fs::read_to_string(status).unwrap_or_default(),
            std::fs::read_to_string(exports).unwrap_or_default(),
        )
    }

    #[test]
    fn exports_carry_across_phases_and_come_back() {
        let (out, status, exports) = run(r#"
version: 0.2
env:
  exported-variables: [OUT, UNSET]
phases:
  pre_build:
    commands:
      - export OUT="a 'quoted' value"
  build:
    commands:
      - echo "seen $OUT"
"#);
        assert!(out.contains("seen a 'quoted' value"), "{out}");
        assert_eq!(status, "");
        assert_eq!(exports, "OUT=a 'quoted' value\0UNSET=\0");
    }

    #[test]
    fn a_failed_build_skips_its_rest_but_runs_post_build_and_finally() {
        let (out, status, _) = run(r#"
version: 0.2
phases:
  build:
    commands:
      - echo one
      - exit_code() { return 3; }; exit_code
      - echo never
    finally:
      - echo cleanup
  post_build:
    commands:
      - echo "post succeeding=$CODEBUILD_BUILD_SUCCEEDING"
"#);
        assert!(out.contains("one") && !out.contains("never"), "{out}");
        assert!(
            out.contains("cleanup") && out.contains("post succeeding=0"),
            "{out}"
        );
        assert_eq!(status, "build\t1\t3\n");
    }

    #[test]
    fn block_commands_with_quotes_run_as_written() {
        let (out, status, _) = run(r#"
version: 0.2
phases:
  build:
    commands:
      - |
        if true; then
          echo "it's a block"
        fi
      - echo 'single' "double"
"#);
        assert!(
            out.contains("it's a block") && out.contains("single double"),
            "{out}"
        );
        assert_eq!(status, "");
    }

    #[test]
    fn a_failed_install_skips_every_later_phase() {
        let (out, status, _) = run(r#"
version: 0.2
phases:
  install:
    commands: ["false"]
  build:
    commands: ["echo build"]
  post_build:
    commands: ["echo post"]
"#);
        assert!(
            !out.contains("echo build") && !out.contains("post"),
            "{out}"
        );
        assert_eq!(status, "install\t0\t1\n");
    }
}
