use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use pipeline_runner::{
    pipeline::{Finish, Pipeline},
    stage::{Runner, Stage},
};

/// Runs the model pipeline on this machine: Train -> approval gate -> Deploy, and deploys on
/// every approval or rejection in the registry. Exit codes: 0 done, 1 a stage or the
/// registry failed, 3 the candidate was rejected at the gate, 4 the gate timed out.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    target: deploy::Target,
    #[command(flatten)]
    aws: bootstrap::aws::AwsClient,
    /// The source checkout the buildspecs run in (CodeBuild's CODEBUILD_SRC_DIR).
    #[arg(long, env = "PIPELINE_SOURCE_DIR", default_value = ".", global = true)]
    source_dir: PathBuf,
    #[arg(
        long,
        env = "PIPELINE_TRAIN_BUILDSPEC",
        default_value = "pipeline/buildspec-train.yml",
        global = true
    )]
    train_buildspec: PathBuf,
    #[arg(
        long,
        env = "PIPELINE_DEPLOY_BUILDSPEC",
        default_value = "pipeline/buildspec-deploy.yml",
        global = true
    )]
    deploy_buildspec: PathBuf,
    /// How often the gate and the listener read the registry.
    #[arg(long, env = "PIPELINE_POLL_MS", default_value_t = 1000, global = true)]
    poll_ms: u64,
    /// A stage still running after this long is killed and fails (CodeBuild's build timeout).
    #[arg(
        long,
        env = "PIPELINE_STAGE_TIMEOUT_SECS",
        default_value_t = 3600,
        global = true
    )]
    stage_timeout_secs: u64,
    /// Deploys on this machine take this lock, one at a time.
    #[arg(
        long,
        env = "PIPELINE_LOCK_FILE",
        default_value = ".data/pipeline/deploy.lock",
        global = true
    )]
    lock_file: PathBuf,
    /// How the gate tells the approver to run mlops-deploy.
    #[arg(
        long,
        env = "PIPELINE_APPROVE_COMMAND",
        default_value = "mlops-deploy",
        global = true
    )]
    approve_command: String,
    /// Shadow each new candidate on live traffic while it awaits a decision (the Deploy
    /// stage's `mlops-deploy shadow` reads the same variable), and show the comparison at the
    /// gate.
    #[arg(long, env = "SHADOW_CANDIDATES", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    shadow_candidates: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train, wait at the approval gate, Deploy; then keep listening (unless --once).
    Run {
        /// Exit after the Deploy stage (or the gate's rejection) instead of listening.
        #[arg(long)]
        once: bool,
        /// Give up waiting at the gate after this many seconds (0: wait for a decision).
        #[arg(long, env = "PIPELINE_GATE_TIMEOUT_SECS", default_value_t = 0)]
        gate_timeout_secs: u64,
    },
    /// Deploy on every approval or rejection in the group, until SIGTERM/SIGINT.
    Listen,
    /// Run one stage's buildspec by itself.
    Stage {
        #[arg(value_parser = ["train", "deploy"])]
        name: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    deploy::init_cli_logging("warn");
    let args = Args::parse();
    let conf = match args.aws.load_for_tool().await {
        Ok(conf) => conf,
        Err(e) => {
            eprintln!("mlops-pipeline: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = aws_sdk_sagemaker::Client::new(&conf);
    let source_dir = std::path::absolute(&args.source_dir).unwrap_or(args.source_dir);
    let pipeline = Pipeline {
        deployer: deploy::Deployer::new(client.clone(), args.target),
        client,
        stages: Runner {
            source_dir,
            timeout: Duration::from_secs(args.stage_timeout_secs),
        },
        train: Stage {
            name: "Train".into(),
            buildspec: args.train_buildspec,
        },
        deploy: Stage {
            name: "Deploy".into(),
            buildspec: args.deploy_buildspec,
        },
        poll: Duration::from_millis(args.poll_ms.max(50)),
        gate_timeout: None,
        lock_file: args.lock_file,
        approve_command: args.approve_command,
        shadow_candidates: args.shadow_candidates,
    };
    let shutdown = bootstrap::shutdown::on_signal();
    let result = match args.command {
        Command::Run {
            once,
            gate_timeout_secs,
        } => {
            let pipeline = Pipeline {
                gate_timeout: (gate_timeout_secs > 0)
                    .then(|| Duration::from_secs(gate_timeout_secs)),
                ..pipeline
            };
            match pipeline.run(&shutdown).await {
                Ok(finish) if once => Ok(finish),
                Ok(finish) => pipeline.listen(&shutdown).await.map(|()| finish),
                Err(e) => Err(e),
            }
        }
        Command::Listen => pipeline.listen(&shutdown).await.map(|()| Finish::Deployed),
        Command::Stage { name } if name == "train" => {
            pipeline.train_stage().await.map(|_| Finish::Deployed)
        }
        Command::Stage { .. } => pipeline
            .deploy_stage("run by hand", &Default::default())
            .await
            .map(|()| Finish::Deployed),
    };
    match result {
        Ok(Finish::Deployed) => ExitCode::SUCCESS,
        Ok(Finish::Rejected) => ExitCode::from(3),
        Ok(Finish::GateTimedOut) => ExitCode::from(4),
        Err(e) => {
            eprintln!("mlops-pipeline: {e}");
            ExitCode::FAILURE
        }
    }
}
