//! The commands of `contacts-etl`, one file each: a clap `Args` struct that says what the
//! command takes (and teaches it in `--help`, with its `EXAMPLES`) and a `run` that calls
//! the library. What several commands share lives here: the top-level [`Cli`], the value
//! enums, the ways output reaches stdout and stderr (`output`), the log lines and the
//! panic hook (`logging`), and the stop on a signal (`signals`).

mod apply;
mod debug;
mod demo;
mod emulator;
pub mod logging;
pub mod output;
mod plan;
mod query;
mod schema;
pub mod signals;
mod state;
mod status;
mod sync;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use contacts_etl::Result;

pub use output::{is_broken_pipe, say};

/// Extract contacts from Google Domain Shared Contacts, Aurinko and CardDAV address books
/// into Delta Lake tables, query them with SQL, and write cleaned data back.
///
/// Start with `contacts-etl demo`: it runs the whole loop on built-in emulators.
/// A pipeline file (see pipelines/*.toml) names a lake and the sources to sync; secrets
/// come from environment variables it names, never from the command line.
///
/// Exit codes: 0 success, 1 failure (e.g. an account failed), 2 bad usage or configuration,
/// or a change declined at its question (nothing was changed); 101 a bug (a panic), said
/// in one line with where to report it.
#[derive(Parser)]
#[command(name = "contacts-etl", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr: `text`, or `json` for schedulers (Airflow, Kubernetes).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level filter (also RUST_LOG), e.g. `debug` or `contacts_etl=debug`.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Reads the command line. The top-level help ends with the providers a pipeline's
    /// source may name, from the registry (`providers::PROVIDERS`), so a new provider
    /// shows there without editing this file.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        let names: Vec<&str> = contacts_etl::providers::PROVIDERS
            .iter()
            .map(|r| r.name)
            .collect();
        let matches = Cli::command()
            .after_help(format!(
                "Providers (a source's `provider` in the pipeline file): {}",
                names.join(", ")
            ))
            .try_get_matches()?;
        Cli::from_arg_matches(&matches)
    }
}

/// The format of the log lines on stderr.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum LogFormat {
    /// Lines of text for people.
    Text,
    /// One JSON object a line, for schedulers.
    Json,
}

/// The commands; each variant's `Args` documents and runs it.
#[derive(Subcommand)]
pub enum Command {
    /// Run the whole loop on built-in emulators and a local lake: full sync, simulated
    /// changes, incremental sync, a check against the APIs, SQL.
    #[command(after_help = demo::EXAMPLES)]
    Demo(demo::DemoArgs),
    /// Sync a pipeline's sources into its lake: a full extract the first time (or with
    /// --full-refresh, or when the API says the cursor expired), incremental afterwards.
    /// Then writes a killed apply sent and never recorded are resolved against what the
    /// sync landed (exit 1 if one cannot be told: it is `unknown` in writeback_results).
    #[command(after_help = sync::EXAMPLES)]
    Sync(sync::SyncArgs),
    /// Show, per source and account, the last run's mode, time, rows, cursor age and
    /// failures since.
    #[command(after_help = status::EXAMPLES)]
    Status(status::StatusArgs),
    /// See, reset or drop one account's state in the lake (its cursor and run number), as
    /// `meltano state` and `dlt pipeline drop` do. A reset or drop is recorded as a run in
    /// sync_runs and asked for on a terminal first (--yes for scripts).
    #[command(after_help = state::EXAMPLES)]
    State(state::StateArgs),
    /// Run read-only SQL over the lake's tables (contacts, contact_changes, sync_runs,
    /// writeback_results, contact_photos) and views (contact_emails, contact_phones).
    /// SHOW TABLES and DESCRIBE <table> list the tables and a table's columns.
    #[command(after_help = query::EXAMPLES)]
    Query(query::QueryArgs),
    /// Compute the diff between a desired state and the landed contacts: counts per
    /// operation, a sample of each kind (inserts, updates with each changed field's value
    /// before → after, deletes, invalid rows), sorted so it is the same on every run.
    /// Writes nothing anywhere, advances nothing.
    ///
    /// The desired state is a SQL query over the lake or a .parquet/.csv/.json file with
    /// contact columns; rows without `id` are new contacts. Only the columns it has are
    /// compared.
    ///
    /// --out saves the plan as Parquet (one row per operation, queryable with
    /// `query … "SELECT * FROM 'plan.parquet'"`) for `apply --plan`, which applies exactly it.
    ///
    /// Exit codes: 0 success, 1 failure, 2 bad usage or configuration; with
    /// --detailed-exitcode (as `terraform plan`): 0 no changes, 1 error, 2 changes present.
    ///
    /// Photos instead of contact fields (the source needs photos = true): --photos takes a
    /// folder of <contact id>.jpg|.png files, SQL, or a .parquet file with columns id, bytes
    /// (null removes the photo), content_type, etag.
    #[command(after_help = plan::EXAMPLES)]
    Plan(plan::PlanArgs),
    /// Sync the source, compute the plan, and write it back to the API: Google batches of
    /// at most 100 operations, Aurinko POST/PATCH/DELETE, CardDAV PUT/DELETE, each
    /// conditional on the etag.
    /// Records one `writeback_results` row per operation and syncs again. Rerunning
    /// retries only what did not apply.
    ///
    /// The plan is printed before the first write. A plan that deletes contacts (or, with
    /// --photos, photos) needs a yes: at a terminal (stdin and stderr) apply asks;
    /// elsewhere (cron, Airflow, a script) it refuses unless --yes is given. Plans without
    /// deletes never ask.
    ///
    /// --plan FILE applies a plan saved by `plan --out` exactly, without diffing again,
    /// after checking that every contact it touches is still as the plan saw it.
    ///
    /// Exit codes: 0 every operation applied; 1 some rows failed, conflicted or were
    /// invalid (their writeback_results rows say why), or the run failed midway; 2 refused
    /// to start (bad usage or configuration, --max-delete, deletes not confirmed, a saved
    /// plan whose contacts moved): nothing was written.
    ///
    /// With --photos: PUT or DELETE each changed photo, conditional on its landed etag.
    #[command(after_help = apply::EXAMPLES)]
    Apply(apply::ApplyArgs),
    /// Run the built-in emulators (the APIs no real test server serves: Google and
    /// Aurinko) until interrupted; prints the base URL first.
    ///
    /// Google feed: {URL}/m8/feeds/contacts/{domain}/full (Bearer <token>).
    ///
    /// Aurinko: {URL}/v1/contacts/sync (Bearer <token>-<account id>, ids 101, 102, …).
    ///
    /// Admin: {URL}/_emulator/truth/google, /_emulator/mutate, /_emulator/stats.
    ///
    /// Each run is a new server: the cursors and etags of an earlier one are expired.
    #[command(after_help = emulator::EXAMPLES)]
    Emulator(emulator::EmulatorArgs),
    /// Print the unified contact schema as JSON (identical to schemas/contacts.v1.json).
    #[command(after_help = schema::EXAMPLES)]
    Schema,
    /// Panics inside a runtime task on purpose, so that a test can see what a user sees
    /// of a bug: one line and exit 101. Hidden from --help: it is not a command for
    /// users (tests/integration/cli.rs `a_panic_is_one_bug_report_line_and_exit_101`).
    #[command(hide = true, name = "debug-panic")]
    DebugPanic,
}

/// What the whole command line decided that a command may need besides its own flags.
#[derive(Clone, Copy)]
pub struct Ctx {
    /// Bars and spinners on stderr: text logs on a terminal.
    pub progress: bool,
    /// `--log-format json`: summaries are log events, not text.
    pub json: bool,
}

impl Command {
    /// Whether SIGINT or SIGTERM stops this command from outside (see `main`): every
    /// command but the emulator, which waits for the signal itself.
    pub fn stoppable(&self) -> bool {
        !matches!(self, Command::Emulator(_))
    }

    /// Runs the command; returns the process exit code.
    pub async fn run(self, ctx: Ctx) -> Result<u8> {
        match self {
            Command::Demo(a) => a.run().await,
            Command::Sync(a) => a.run(ctx).await,
            Command::Status(a) => a.run().await,
            Command::State(a) => a.run(ctx).await,
            Command::Query(a) => a.run().await,
            Command::Plan(a) => a.run().await,
            Command::Apply(a) => a.run(ctx).await,
            Command::Emulator(a) => a.run().await,
            Command::Schema => schema::run(),
            Command::DebugPanic => debug::panic_in_a_task().await,
        }
    }
}

/// Which operations a plan may contain (`--mode`).
#[derive(Clone, Copy, PartialEq, Debug, ValueEnum)]
pub enum ModeArg {
    /// Insert new contacts and update landed ones.
    Upsert,
    /// Update landed contacts only.
    Update,
    /// Also delete what the desired state lacks (only from accounts of the desired state
    /// or named by --account).
    Mirror,
}

impl From<ModeArg> for contacts_etl::plan::Mode {
    fn from(m: ModeArg) -> Self {
        use contacts_etl::plan::Mode;
        match m {
            ModeArg::Upsert => Mode::Upsert,
            ModeArg::Update => Mode::Update,
            ModeArg::Mirror => Mode::Mirror,
        }
    }
}

/// The format of `status` and `state show`.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum ShowFormat {
    /// A table for people.
    Text,
    /// Every field whole, for programs.
    Json,
}
