//! `contacts-etl sync`: a pipeline's sources into its lake, then the writes a killed
//! apply left unrecorded resolved against what landed.

use std::path::PathBuf;

use contacts_etl::Result;

use super::Ctx;
use super::output::{keep_going_if_gone, out};

/// The examples of `sync --help`.
pub const EXAMPLES: &str = "\
Examples:
  contacts-etl sync pipelines/emulator.toml
  contacts-etl sync pipelines/emulator.toml --source crm_contacts --account 101 --account 102
  contacts-etl sync pipelines/emulator.toml --source shared_contacts --full-refresh
  contacts-etl sync pipelines/emulator.toml --shard 0/4    # worker 0 of 4 sharing one lake";

/// `sync`'s flags.
#[derive(clap::Args)]
pub struct SyncArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Only this source (repeatable).
    #[arg(long)]
    source: Vec<String>,
    /// Only this account (repeatable).
    #[arg(long)]
    account: Vec<String>,
    /// Ignore stored cursors: extract everything and delete what is gone.
    #[arg(long)]
    full_refresh: bool,
    /// Only the accounts of shard I of N (0-based), e.g. 0/4.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(u32, u32)>,
}

impl SyncArgs {
    /// Syncs, prints the report, resolves what a killed apply left; exit 1 when an
    /// account failed or a write's outcome cannot be told.
    pub async fn run(self, ctx: Ctx) -> Result<u8> {
        let p = contacts_etl::providers::load_pipeline(&self.pipeline)?;
        let opts = contacts_etl::sync::SyncOptions {
            sources: self.source,
            accounts: self.account,
            full_refresh: self.full_refresh,
            shard: self.shard,
            progress: ctx.progress,
        };
        let report = contacts_etl::sync::run_sync(&p, &opts).await?;
        // JSON logs get the summary as one event beside the run's other events;
        // text gets the table on stdout: a run's report is its output (README, "Where
        // output goes"); its progress, warnings and errors are stderr's.
        if ctx.json {
            eprintln!("{}", report.summary_event());
        } else {
            out(&report.table()).or_else(keep_going_if_gone)?;
            // Why an account failed is a diagnostic: said once, on stderr.
            eprint!("{}", report.problems());
        }
        // Writes a killed apply sent and never recorded are resolved against what
        // this sync landed (sync sits below plan, so the command calls it).
        let resolved = contacts_etl::plan::resolve::resolve_after_sync(&p, &report).await?;
        let unknown: usize = resolved.iter().map(|(_, r)| r.unknown.len()).sum();
        if !ctx.json {
            for (source, r) in &resolved {
                eprint!("{source}: {}", r.summary_line());
            }
        }
        Ok(if report.failed().is_empty() && unknown == 0 {
            0
        } else {
            1
        })
    }
}

/// `--shard I/N`: shard I (0-based) of N.
fn parse_shard(s: &str) -> std::result::Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("use I/N, e.g. 0/4")?;
    let i: u32 = i.parse().map_err(|_| "I must be a number")?;
    let n: u32 = n.parse().map_err(|_| "N must be a number")?;
    if n == 0 || i >= n {
        return Err("I must be below N (0-based), e.g. 0/4 … 3/4".into());
    }
    Ok((i, n))
}
