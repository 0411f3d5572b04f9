//! `contacts-etl plan`: the diff of a desired state (or desired photos) against the
//! lake, written nowhere; `--out` saves it for `apply --plan`.

use std::path::PathBuf;

use contacts_etl::{Error, Result};

use super::ModeArg;
use super::output::{is_broken_pipe, out};

/// The examples of `plan --help`.
pub const EXAMPLES: &str = "\
Examples (\"File As\" becomes \"Family, Given\"; --desired takes a .parquet, .csv or .json
file too; the second saves the plan for `apply --plan`, the third reads it back):
  contacts-etl plan pipelines/emulator.toml --source shared_contacts --mode update \\
    --desired \"SELECT account, id, etag, concat(family_name, ', ', given_name) AS file_as \\
      FROM contacts WHERE source = 'shared_contacts' AND family_name IS NOT NULL\"
  contacts-etl plan pipelines/emulator.toml --source crm_contacts --account 101 \\
    --out plan.parquet --desired \"SELECT account, id, etag, upper(notes) AS notes FROM contacts \\
      WHERE source = 'crm_contacts' AND notes IS NOT NULL\"
  contacts-etl query pipelines/emulator.toml \"SELECT kind, count(*) FROM 'plan.parquet' GROUP BY 1\"";

/// `plan`'s flags.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["desired", "photos"])))]
pub struct PlanArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// The source to write to.
    #[arg(long)]
    source: String,
    /// SQL over the lake, or a .parquet/.csv/.json file (as `query --output` writes them).
    #[arg(long)]
    desired: Option<String>,
    /// Desired photos: a folder of <contact id>.jpg|.png files, SQL, or a .parquet file.
    #[arg(long)]
    photos: Option<String>,
    /// Which operations the plan may contain: upsert (insert + update), update (update
    /// only) or mirror (also delete what is absent; only from accounts of the desired
    /// state or named by --account).
    #[arg(long, value_enum, default_value = "upsert")]
    mode: ModeArg,
    /// Only this account's rows are diffed (repeatable); in mirror mode, an account
    /// named here loses the contacts the desired state lacks even if it has no rows.
    #[arg(long, conflicts_with = "photos")]
    account: Vec<String>,
    /// Operations of each kind (and invalid rows) to print.
    #[arg(long, default_value_t = 10)]
    sample: usize,
    /// Save the plan as Parquet to this file, for `apply --plan FILE`.
    #[arg(long, conflicts_with = "photos")]
    out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
}

impl PlanArgs {
    /// Prints the plan (and saves it with `--out`); the exit code says whether it
    /// changes anything when `--detailed-exitcode` asks.
    pub async fn run(self) -> Result<u8> {
        let detailed = self.detailed_exitcode;
        match (self.planned().await, detailed) {
            (Ok(changes), true) => Ok(if changes { 2 } else { 0 }),
            (Ok(_), false) => Ok(0),
            // As `terraform plan -detailed-exitcode`: 2 means changes, so every error
            // is 1.
            (Err(e), true) if !is_broken_pipe(&e) => {
                eprintln!("error: {e}");
                Ok(1)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Plans, prints, saves; returns whether the plan has operations.
    async fn planned(self) -> Result<bool> {
        let p = contacts_etl::providers::load_pipeline(&self.pipeline)?;
        let mode = self.mode.into();
        if let Some(photos) = &self.photos {
            let plan =
                contacts_etl::plan::photos::plan_photos(&p, &self.source, photos, mode).await?;
            out(&plan.render(self.sample))?;
            return Ok(!plan.ops.is_empty());
        }
        let desired = self.desired.unwrap_or_default();
        let plan =
            contacts_etl::plan::apply::plan_scoped(&p, &self.source, &desired, mode, &self.account)
                .await?;
        if let Some(file) = &self.out {
            contacts_etl::plan::saved::write(&plan, mode, p.lake_url()?.as_str(), file)?;
            eprintln!(
                "plan saved to {} ({} operation(s)); apply it with: contacts-etl apply {} --plan {}",
                file.display(),
                plan.ops.len(),
                self.pipeline.display(),
                file.display()
            );
        }
        out(&plan.render(self.sample))?;
        Ok::<bool, Error>(!plan.ops.is_empty())
    }
}
