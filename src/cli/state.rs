//! `contacts-etl state show|reset|drop`: one account's state in the lake.

use std::path::PathBuf;

use contacts_etl::Result;
use contacts_etl::state::{self, Change};

use super::output::{keep_going_if_gone, out, table_width};
use super::{Ctx, ShowFormat};

/// The examples of `state --help`.
pub const EXAMPLES: &str = "\
Examples:
  contacts-etl state show pipelines/emulator.toml --source crm_contacts
  contacts-etl state reset pipelines/emulator.toml --source crm_contacts --account 101 --yes
  contacts-etl state drop pipelines/emulator.toml --source crm_contacts --account 102 --yes";

/// `state`'s subcommand.
#[derive(clap::Args)]
pub struct StateArgs {
    #[command(subcommand)]
    action: StateAction,
}

/// What `state` does to the account.
#[derive(clap::Subcommand)]
enum StateAction {
    /// Per account: the cursor the next sync continues from, the run number (seq) and the
    /// last run with its status.
    Show(ShowArgs),
    /// Clear one account's cursor: its next sync is a full extract that deletes what the
    /// API no longer has. Its contacts stay.
    Reset(ChangeArgs),
    /// Remove one account from the lake: its contacts leave `contacts` (each logged as a
    /// delete in contact_changes) and its cursor is cleared. For an account removed from
    /// the pipeline; without a terminal to ask on, it needs --yes.
    Drop(ChangeArgs),
}

/// `state show`'s flags.
#[derive(clap::Args)]
struct ShowArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// Only this source.
    #[arg(long)]
    source: Option<String>,
    /// Only this account.
    #[arg(long)]
    account: Option<String>,
    /// `text` (a table that fits the terminal; names and run ids whole, cursors cut) or
    /// `json` (every field whole, times in RFC 3339).
    #[arg(long, value_enum, default_value = "text")]
    format: ShowFormat,
}

/// The flags of `state reset` and `state drop`.
#[derive(clap::Args)]
struct ChangeArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// The source.
    #[arg(long)]
    source: String,
    /// The account.
    #[arg(long)]
    account: String,
    /// Do not ask (for scripts; a terminal asks otherwise).
    #[arg(long, short = 'y')]
    yes: bool,
}

impl StateArgs {
    /// Shows, resets or drops; a declined question is exit 2 with nothing changed.
    pub async fn run(self, ctx: Ctx) -> Result<u8> {
        match self.action {
            StateAction::Show(a) => a.run().await,
            StateAction::Reset(a) => a.run(Change::Reset, ctx).await,
            StateAction::Drop(a) => a.run(Change::Drop, ctx).await,
        }
    }
}

impl ShowArgs {
    /// Prints the accounts' state.
    async fn run(self) -> Result<u8> {
        let p = contacts_etl::providers::load_pipeline(&self.pipeline)?;
        let accounts = state::show(&p, self.source.as_deref(), self.account.as_deref()).await?;
        out(&match self.format {
            ShowFormat::Text => state::render_width(&accounts, table_width()),
            ShowFormat::Json => state::render_json(&accounts)?,
        })?;
        Ok(0)
    }
}

impl ChangeArgs {
    /// Makes `change` to the account, after a yes.
    async fn run(self, change: Change, ctx: Ctx) -> Result<u8> {
        let p = contacts_etl::providers::load_pipeline(&self.pipeline)?;
        let confirm = state::confirm_on_terminal(change, self.yes);
        let (source, account) = (&self.source, &self.account);
        match state::change(&p, change, source, account, confirm).await? {
            Some(done) => {
                // JSON logs have the library's event for it.
                if !ctx.json {
                    out(&format!(
                        "{source}/{account}: {} as run {} (seq {}); {} contact(s) removed\n",
                        change.as_str(),
                        done.run_id,
                        done.seq,
                        done.deleted
                    ))
                    .or_else(keep_going_if_gone)?;
                }
                Ok(0)
            }
            // Declined: nothing was changed, as a declined apply (exit 2, "refused to start").
            None => Ok(2),
        }
    }
}
