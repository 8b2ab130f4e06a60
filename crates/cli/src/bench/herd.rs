//! `corral bench herd`: a thundering herd of uploads against a running
//! corral, from [`corral_testkit::herd`].

use std::path::Path;

use anyhow::Context;
use corral_testkit::herd::{self, HerdConfig, Report, Verify};

use super::HerdArgs;

/// The tenant corral stores uploads under while it has no authentication.
const TENANT: &str = "anonymous";

/// Runs the herd, prints its report (and writes it as JSON if asked), and
/// fails if any file corral acknowledged failed a check.
pub(crate) fn run(args: &HerdArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(herd::run(&config))?;
    match args.json.as_deref() {
        Some(path) if path == Path::new("-") => println!("{}", to_json(&report)?),
        Some(path) => {
            std::fs::write(path, to_json(&report)? + "\n")
                .with_context(|| format!("cannot write the report to {}", path.display()))?;
            print!("{report}");
        }
        None => print!("{report}"),
    }
    if report.verification_failed() {
        let s3 = report.s3.as_ref().map_or(0, |s3| s3.failed);
        anyhow::bail!(
            "{} acknowledged file(s) failed the check of the answer, {s3} the read-back from S3",
            report.files_failed_verification
        );
    }
    Ok(())
}

fn to_json(report: &Report) -> anyhow::Result<String> {
    serde_json::to_string_pretty(report).context("cannot write the report as JSON")
}

fn config(args: &HerdArgs) -> anyhow::Result<HerdConfig> {
    let verify = match (&args.verify_s3_endpoint, &args.verify_s3_bucket) {
        (Some(endpoint), Some(bucket)) => {
            let credential = |name: &str| {
                std::env::var(name).with_context(|| {
                    format!("--verify-s3-endpoint needs {name} in the environment")
                })
            };
            Some(Verify {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                prefix: args.verify_s3_prefix.clone(),
                tenant: TENANT.to_owned(),
                region: args.verify_s3_region.clone(),
                access_key_id: credential("AWS_ACCESS_KEY_ID")?,
                secret_access_key: credential("AWS_SECRET_ACCESS_KEY")?,
                sample: args.verify_sample,
            })
        }
        // clap makes the two flags require each other.
        _ => None,
    };
    Ok(HerdConfig {
        url: args.url.clone(),
        users: args.users,
        files: args.files,
        size: args.size.0,
        max_attempts: args.max_attempts,
        max_wait: args.max_wait.0,
        deadline: args.deadline.0,
        seed: args.seed,
        verify,
        metrics_interval: args.metrics_interval.0,
        front: args.front.clone(),
        progress: !args.quiet,
        digests_first: false,
    })
}
