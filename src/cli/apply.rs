//! `contacts-etl apply`: sync, plan, show the plan, ask before deleting, write on record,
//! sync again, through the library's [`Apply`] builder.

use std::io::IsTerminal;
use std::path::PathBuf;

use contacts_etl::error::{Context as _, Kind};
use contacts_etl::plan::apply::{Apply, MaxDelete};
use contacts_etl::plan::review::Approval;
use contacts_etl::{Error, Result};

use super::output::{keep_going_if_gone, out};
use super::{Ctx, ModeArg};

/// The examples of `apply --help`.
pub const EXAMPLES: &str = "\
Examples (the plan saved by `plan --out`, exactly; then \"File As\" in capitals):
  contacts-etl apply pipelines/emulator.toml --plan plan.parquet
  contacts-etl apply pipelines/emulator.toml --source shared_contacts --mode update \\
    --desired \"SELECT account, id, etag, upper(file_as) AS file_as FROM contacts \\
      WHERE source = 'shared_contacts' AND file_as IS NOT NULL\"";

/// `apply`'s flags.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["desired", "photos", "plan"])))]
pub struct ApplyArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// The source to write to (with --plan: the plan's, if given).
    #[arg(long, required_unless_present = "plan")]
    source: Option<String>,
    /// SQL over the lake, or a .parquet/.csv/.json file (as `query --output` writes them).
    #[arg(long)]
    desired: Option<String>,
    /// Desired photos: a folder of <contact id>.jpg|.png files, SQL, or a .parquet file.
    #[arg(long)]
    photos: Option<String>,
    /// A plan saved by `plan --out`, applied exactly.
    #[arg(long, conflicts_with_all = ["mode", "account"])]
    plan: Option<PathBuf>,
    /// Which operations the plan may contain: upsert, update or mirror.
    #[arg(long, value_enum, default_value = "upsert")]
    mode: ModeArg,
    /// Only this account (repeatable): it is synced, diffed and written; the others
    /// are left alone.
    #[arg(long, conflicts_with = "photos")]
    account: Vec<String>,
    /// Refuse to start when the plan deletes more than N contacts or P% of them.
    #[arg(long)]
    max_delete: Option<String>,
    /// Overwrite contacts changed by someone else (412 conflicts).
    #[arg(long)]
    force: bool,
    /// Delete without asking (for schedulers and scripts; a terminal asks otherwise).
    #[arg(long, short = 'y')]
    yes: bool,
    /// Operations of each kind (and invalid rows) to print in the plan shown first,
    /// as `plan --sample`.
    #[arg(long, default_value_t = 10)]
    sample: usize,
}

impl ApplyArgs {
    /// Applies contacts, a saved plan or photos; exit 1 when any row did not apply.
    pub async fn run(self, ctx: Ctx) -> Result<u8> {
        let p = contacts_etl::providers::load_pipeline(&self.pipeline)?;
        let max_delete: Option<MaxDelete> =
            self.max_delete.as_deref().map(str::parse).transpose()?;
        // The plan is shown before anything is written, and deletes wait for a yes.
        let approval = if self.yes {
            Approval::Given
        } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            Approval::Ask
        } else {
            Approval::NoTerminal
        };
        let source = self.source.clone().unwrap_or_default();
        if let Some(photos) = &self.photos {
            let prepared = Apply::photos(&p, &source, photos)
                .with_mode(self.mode.into())
                .with_max_delete(max_delete)
                .with_force(self.force)
                .with_progress(ctx.progress)
                .prepare()
                .await?;
            let plan = prepared.plan();
            out(&plan.render(self.sample)).or_else(keep_going_if_gone)?;
            let deletes = plan.count(contacts_etl::plan::photos::PhotoOpKind::Delete);
            ask_before_deleting(deletes, "photo(s)", &source, approval).await?;
            let report = prepared.await?;
            out(&report.summary()).or_else(keep_going_if_gone)?;
            return Ok(if report.failures() == 0 { 0 } else { 1 });
        }
        let prepared = match &self.plan {
            Some(file) => {
                Apply::saved(&p, file)
                    .with_source(self.source.clone())
                    .with_max_delete(max_delete)
                    .with_force(self.force)
                    .with_progress(ctx.progress)
                    .with_log_sample(if ctx.json { 10 } else { 0 })
                    .with_summary_event(ctx.json)
                    .prepare()
                    .await?
            }
            None => {
                Apply::desired(&p, &source, self.desired.clone().unwrap_or_default())
                    .with_mode(self.mode.into())
                    .with_accounts(self.account.clone())
                    .with_max_delete(max_delete)
                    .with_force(self.force)
                    .with_progress(ctx.progress)
                    .with_log_sample(if ctx.json { 10 } else { 0 })
                    .with_summary_event(ctx.json)
                    .prepare()
                    .await?
            }
        };
        let plan = prepared.plan();
        out(&plan.render(self.sample)).or_else(keep_going_if_gone)?;
        let deletes = plan.count(contacts_etl::plan::OpKind::Delete);
        ask_before_deleting(deletes, "contact(s)", &plan.source, approval).await?;
        let report = prepared.await?;
        // With --log-format json the summary is the "apply finished" event.
        if !ctx.json {
            out(&report.summary()).or_else(keep_going_if_gone)?;
        }
        Ok(if report.failures() == 0 { 0 } else { 1 })
    }
}

/// Lets an apply go ahead with a plan that deletes `deletes` `what` of `source`: asks at
/// a terminal, refuses without one unless `--yes` ([`Approval`]). The answer is awaited
/// on a blocking thread, so Ctrl-C still stops the run.
async fn ask_before_deleting(
    deletes: usize,
    what: &'static str,
    source: &str,
    approval: Approval,
) -> Result<(), Error> {
    let source = source.to_string();
    tokio::task::spawn_blocking(move || {
        contacts_etl::plan::review::approve(
            deletes,
            what,
            &source,
            approval,
            &mut std::io::stdin().lock(),
            &mut std::io::stderr(),
        )
    })
    .await
    .context(Kind::Other, "the question before deleting")?
}
