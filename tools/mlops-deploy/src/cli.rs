//! What every pipeline command-line tool shares: its logging and the group and endpoint it acts on.

/// Human-readable logs on stderr for the pipeline's command-line tools (stdout carries their
/// results), coloured only on a terminal; `RUST_LOG` overrides `default`.
pub fn init_cli_logging(default: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .init();
}

/// Which registry group and which endpoint: the flags every pipeline tool takes
/// (`mlops-deploy`, `mlops-pipeline`), flattened into each one's arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The model package group.
    #[arg(
        long,
        env = "MODEL_PACKAGE_GROUP",
        default_value = names::MODEL_PACKAGE_GROUP,
        global = true
    )]
    pub group: String,
    /// The endpoint to deploy to.
    #[arg(
        long,
        env = "SAGEMAKER_ENDPOINT_NAME",
        default_value = names::ENDPOINT_NAME,
        global = true
    )]
    pub endpoint_name: String,
    /// The endpoint a pending candidate is shadowed on (default `{endpoint}-shadow`).
    #[arg(long, env = "SHADOW_ENDPOINT_NAME", global = true)]
    pub shadow_endpoint_name: Option<String>,
}
