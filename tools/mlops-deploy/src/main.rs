use std::time::Duration;

use aws_sdk_sagemaker::types::ModelApprovalStatus;
use clap::{Parser, Subcommand};
use deploy::report::json_line;

/// The deploy step of the model pipeline. Prints one JSON object per command on stdout;
/// exits non-zero when the command did not do what it says.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    target: deploy::Target,
    #[command(flatten)]
    aws: bootstrap::aws::AwsClient,
    #[command(subcommand)]
    command: Command,
}

/// A decision on a package: `approve` and `reject` take the same arguments.
#[derive(clap::Args)]
struct Decision {
    version: String,
    #[arg(long)]
    reason: Option<String>,
    /// Change nothing unless the package is PendingManualApproval (a decision already made in
    /// the registry stands; the same decision again is a no-op).
    #[arg(long)]
    only_if_pending: bool,
}

async fn decide(
    deployer: &deploy::Deployer,
    d: Decision,
    status: ModelApprovalStatus,
) -> Result<String, deploy::DeployError> {
    deployer
        .set_approval(&d.version, status, d.reason, d.only_if_pending)
        .await
        .map(|r| json_line(&r))
}

#[derive(Subcommand)]
enum Command {
    /// Register a model artifact as a new package version, PendingManualApproval.
    Register {
        /// s3:// URL of model.tar.gz (xgboost-model inside).
        #[arg(long)]
        model_data_url: String,
        #[arg(
            long,
            default_value = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
        )]
        image: String,
        #[arg(long)]
        description: Option<String>,
        /// The model's feature names, in order (comma-separated): its schema, which the
        /// gateway and the predictor follow once it is live.
        #[arg(long)]
        features: Option<String>,
    },
    /// Approve a package version (or ARN).
    Approve(Decision),
    /// Reject a package version (or ARN).
    Reject(Decision),
    /// Roll the endpoint to the latest Approved package (nothing when it is live), by the
    /// strategy: all at once, or step by step with each step decided by live evidence.
    Deploy {
        #[command(flatten)]
        rollout: EndpointArgs,
        #[command(flatten)]
        strategy: deploy::Strategy,
        #[command(flatten)]
        scaling: deploy::Scaling,
    },
    /// Steer the rollout under way (the Deploy running it, or the next one, carries it out).
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Shadow the candidate awaiting a decision on its own endpoint (`{endpoint}-shadow`), or
    /// remove the shadow endpoint when there is none (approved, rejected) or shadowing is off.
    Shadow {
        /// Shadow candidates at all (`false`: only remove what is there).
        #[arg(long, env = "SHADOW_CANDIDATES", default_value_t = false, action = clap::ArgAction::Set)]
        enabled: bool,
        #[command(flatten)]
        rollout: EndpointArgs,
    },
    /// What is approved, what is live, and whether they match.
    Status,
}

#[derive(Subcommand)]
enum RolloutAction {
    /// Reject the candidate being rolled out: traffic goes back to the live variant.
    Abort {
        #[arg(long, default_value = "aborted by an operator")]
        reason: String,
    },
    /// Skip the remaining steps: the candidate takes all traffic.
    Promote {
        #[arg(long)]
        reason: String,
    },
}

/// How an endpoint is rolled out (`deploy`, `shadow`).
#[derive(clap::Args)]
struct EndpointArgs {
    /// Role SageMaker assumes for the model (required on AWS).
    #[arg(long, env = "SAGEMAKER_EXECUTION_ROLE_ARN")]
    execution_role_arn: Option<String>,
    /// KMS key for the endpoint config (the instances' storage volumes).
    #[arg(long, env = "DEPLOY_KMS_KEY_ID")]
    kms_key_id: Option<String>,
    #[arg(long, env = "DEPLOY_INSTANCE_TYPE", default_value = "ml.m5.large")]
    instance_type: String,
    #[arg(long, env = "DEPLOY_INSTANCE_COUNT", default_value_t = 1)]
    instance_count: i32,
    /// Milliseconds between DescribeEndpoint calls while waiting.
    #[arg(long, env = "DEPLOY_POLL_MS", default_value_t = 15_000)]
    poll_ms: u64,
    /// Give up waiting for InService after this many seconds.
    #[arg(long, env = "DEPLOY_TIMEOUT_SECS", default_value_t = 3600)]
    timeout_secs: u64,
}

impl EndpointArgs {
    fn apply(self, deployer: &mut deploy::Deployer) {
        deployer.execution_role_arn = self.execution_role_arn;
        deployer.kms_key_id = self.kms_key_id;
        deployer.instance_type = self.instance_type;
        deployer.instance_count = self.instance_count;
        deployer.poll = Duration::from_millis(self.poll_ms.max(10));
        deployer.timeout = Duration::from_secs(self.timeout_secs);
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    deploy::init_cli_logging("info");
    let args = Args::parse();
    let conf = match args.aws.load_for_tool().await {
        Ok(conf) => conf,
        Err(e) => {
            eprintln!("mlops-deploy: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut deployer = deploy::Deployer::new(aws_sdk_sagemaker::Client::new(&conf), args.target);
    let result = match args.command {
        Command::Register {
            model_data_url,
            image,
            description,
            features,
        } => deployer
            .register(&model_data_url, &image, description, features)
            .await
            .map(|r| json_line(&r)),
        Command::Approve(d) => decide(&deployer, d, ModelApprovalStatus::Approved).await,
        Command::Reject(d) => decide(&deployer, d, ModelApprovalStatus::Rejected).await,
        Command::Status => deployer.status().await.map(|r| json_line(&r)),
        Command::Deploy {
            rollout,
            strategy,
            scaling,
        } => {
            rollout.apply(&mut deployer);
            deployer.strategy = strategy;
            // Always managed: a registration an earlier run left would block the update that
            // removes its variant, whether or not scaling is on now.
            deployer.scaler = Some(deploy::Scaler {
                client: aws_sdk_applicationautoscaling::Client::new(&conf),
                config: scaling,
            });
            deployer.deploy().await.map(|r| json_line(&r))
        }
        Command::Rollout { action } => match action {
            RolloutAction::Abort { reason } => deployer.abort(&reason).await.map(|r| json_line(&r)),
            RolloutAction::Promote { reason } => {
                deployer.promote(&reason).await.map(|r| json_line(&r))
            }
        },
        Command::Shadow { enabled, rollout } => {
            rollout.apply(&mut deployer);
            deployer.shadow(enabled).await.map(|r| json_line(&r))
        }
    };
    match result {
        Ok(out) => {
            println!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", serde_json::json!({ "error": e.to_string() }));
            eprintln!("mlops-deploy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
