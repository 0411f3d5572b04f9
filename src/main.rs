//! The `contacts-etl` command line: a thin layer over the library.

mod tune;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use contacts_etl::emulator::{Emulator, EmulatorConfig, FaultSpec};
use contacts_etl::plan::review::Approval;
use contacts_etl::{Error, Result};

/// Extract contacts from Google Domain Shared Contacts, Aurinko and CardDAV address books
/// into Delta Lake tables, query them with SQL, and write cleaned data back.
///
/// Start with `contacts-etl demo`: it runs the whole loop on built-in emulators.
/// A pipeline file (see pipelines/*.toml) names a lake and the sources to sync; secrets
/// come from environment variables it names, never from the command line.
///
/// Exit codes: 0 success, 1 failure (e.g. an account failed), 2 bad usage or configuration,
/// or a change declined at its question (nothing was changed).
#[derive(Parser)]
#[command(name = "contacts-etl", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr: `text`, or `json` for schedulers (Airflow, Kubernetes).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level filter (also RUST_LOG), e.g. `debug` or `contacts_etl=debug`.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole loop on built-in emulators and a local lake: full sync, simulated
    /// changes, incremental sync, a check against the APIs, SQL.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo {
        /// Folder for the pipeline file and the lake.
        #[arg(long, default_value = "contacts-etl-demo")]
        dir: PathBuf,
        /// Google shared contacts to generate (each Aurinko account gets a third).
        #[arg(long, default_value_t = 3000)]
        contacts: usize,
    },
    /// Sync a pipeline's sources into its lake: a full extract the first time (or with
    /// --full-refresh, or when the API says the cursor expired), incremental afterwards.
    /// Then writes a killed apply sent and never recorded are resolved against what the
    /// sync landed (exit 1 if one cannot be told: it is `unknown` in writeback_results).
    #[command(after_help = SYNC_EXAMPLES)]
    Sync {
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
    },
    /// Show, per source and account, the last run's mode, time, rows, cursor age and
    /// failures since.
    #[command(after_help = STATUS_EXAMPLES)]
    Status {
        /// The pipeline file.
        pipeline: PathBuf,
        /// `text` (a table that fits the terminal, 100 columns elsewhere; errors cut, their
        /// cause first) or `json` (every field whole).
        #[arg(long, value_enum, default_value = "text")]
        format: ShowFormat,
    },
    /// See, reset or drop one account's state in the lake (its cursor and run number), as
    /// `meltano state` and `dlt pipeline drop` do. A reset or drop is recorded as a run in
    /// sync_runs and asked for on a terminal first (--yes for scripts).
    #[command(after_help = STATE_EXAMPLES)]
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Run read-only SQL over the lake's tables (contacts, contact_changes, sync_runs,
    /// writeback_results, contact_photos) and views (contact_emails, contact_phones).
    /// SHOW TABLES and DESCRIBE <table> list the tables and a table's columns.
    #[command(after_help = QUERY_EXAMPLES)]
    Query {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The SQL statement.
        sql: String,
        /// Output format [default: from the --output extension (.parquet, .csv, .json,
        /// .txt), else table].
        #[arg(long, value_enum)]
        format: Option<OutFormat>,
        /// Write to this path or URL (s3://bucket/key.parquet) instead of stdout; a local
        /// path's folder is created.
        #[arg(long)]
        output: Option<String>,
        /// Time travel: every table as it was right after this sync run (a run_id from
        /// sync_runs). One table at a Delta version: quote "contacts@v3" in the SQL.
        #[arg(long)]
        as_of_run: Option<String>,
        /// A table with every value whole; without it, a table on a terminal (or within
        /// COLUMNS) fits its width, long values cut with `…`.
        #[arg(long)]
        wide: bool,
    },
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
    #[command(after_help = PLAN_EXAMPLES)]
    #[command(group(clap::ArgGroup::new("what").required(true).args(["desired", "photos"])))]
    Plan {
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
        /// upsert (insert + update), update (update only) or mirror (also delete what is
        /// absent; only from accounts of the desired state or named by --account).
        #[arg(long, default_value = "upsert")]
        mode: String,
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
    },
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
    #[command(after_help = APPLY_EXAMPLES)]
    #[command(group(clap::ArgGroup::new("what").required(true).args(["desired", "photos", "plan"])))]
    Apply {
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
        /// upsert, update or mirror.
        #[arg(long, default_value = "upsert")]
        mode: String,
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
    },
    /// Run the emulators of both APIs until interrupted; prints the base URL first.
    ///
    /// Google feed: {URL}/m8/feeds/contacts/{domain}/full (Bearer <token>).
    ///
    /// Aurinko: {URL}/v1/contacts/sync (Bearer <token>-<account id>, ids 101, 102, …).
    ///
    /// Admin: {URL}/_emulator/truth/google, /_emulator/mutate, /_emulator/stats.
    ///
    /// Each run is a new server: the cursors and etags of an earlier one are expired.
    #[command(after_help = EMULATOR_EXAMPLES)]
    Emulator {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The Google Workspace domain whose shared contacts the emulator serves.
        #[arg(long, default_value = "example.com")]
        google_domain: String,
        /// Shared contacts generated for the Google domain.
        #[arg(long, default_value_t = 1000)]
        google_contacts: usize,
        /// Aurinko accounts generated (ids 101, 102, …).
        #[arg(long, default_value_t = 3)]
        aurinko_accounts: usize,
        /// Contacts generated per Aurinko account.
        #[arg(long, default_value_t = 1000)]
        aurinko_contacts: usize,
        /// Seed of the synthetic people: the same seed gives the same people (a restarted
        /// emulator still issues new etags and cursors, and expires the old ones).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fault rates, e.g. "429=0.05,503=0.05,reset=0.01,truncate=0.01,slow=0.02".
        #[arg(long, default_value = "")]
        faults: String,
        /// The emulator's test token (the one secret allowed on a command line: it is fake).
        #[arg(long, default_value = "emulator-token")]
        token: String,
        /// Records per Aurinko sync page.
        #[arg(long, default_value_t = 200)]
        aurinko_page_size: usize,
        /// PEM public key that verifies service-account JWTs at POST /token.
        #[arg(long)]
        service_account_public_key: Option<PathBuf>,
        /// Also write the `export` lines to this file once the emulator listens (written
        /// whole, by rename), for scripts: `until [ -s F ]; do sleep 0.1; done; . ./F`.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// Print the unified contact schema as JSON (identical to schemas/contacts.v1.json).
    #[command(after_help = SCHEMA_EXAMPLES)]
    Schema,
}

#[derive(Subcommand)]
enum StateAction {
    /// Per account: the cursor the next sync continues from, the run number (seq) and the
    /// last run with its status.
    Show {
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
    },
    /// Clear one account's cursor: its next sync is a full extract that deletes what the
    /// API no longer has. Its contacts stay.
    Reset {
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
    },
    /// Remove one account from the lake: its contacts leave `contacts` (each logged as a
    /// delete in contact_changes) and its cursor is cleared. For an account removed from
    /// the pipeline; without a terminal to ask on, it needs --yes.
    Drop {
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
    },
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ShowFormat {
    Text,
    Json,
}

// The examples of each command's --help: one command a line (a trailing \ continues it),
// each under 100 columns so that help does not wrap it. A test runs every one of them, as
// written, in a folder laid out like the repository with the emulator's exports set
// (tests/integration/operator.rs `every_help_example_runs_as_written`).
const DEMO_EXAMPLES: &str = "\
Example:
  contacts-etl demo --dir contacts-etl-demo --contacts 300";
const SYNC_EXAMPLES: &str = "\
Examples:
  contacts-etl sync pipelines/emulator.toml
  contacts-etl sync pipelines/emulator.toml --source crm_contacts --account 101 --account 102
  contacts-etl sync pipelines/emulator.toml --source shared_contacts --full-refresh
  contacts-etl sync pipelines/emulator.toml --shard 0/4    # worker 0 of 4 sharing one lake";
const STATUS_EXAMPLES: &str = "\
Examples:
  contacts-etl status pipelines/emulator.toml
  contacts-etl status pipelines/emulator.toml --format json";
const STATE_EXAMPLES: &str = "\
Examples:
  contacts-etl state show pipelines/emulator.toml --source crm_contacts
  contacts-etl state reset pipelines/emulator.toml --source crm_contacts --account 101 --yes
  contacts-etl state drop pipelines/emulator.toml --source crm_contacts --account 102 --yes";
const QUERY_EXAMPLES: &str = "\
Examples:
  contacts-etl query pipelines/emulator.toml \\
    \"SELECT source, account, count(*) AS contacts FROM contacts GROUP BY 1, 2\"
  contacts-etl query pipelines/emulator.toml \"SELECT * FROM contacts\" --output contacts.parquet
  contacts-etl query pipelines/emulator.toml 'SELECT count(*) FROM \"contacts@v1\"'";
const PLAN_EXAMPLES: &str = "\
Examples (\"File As\" becomes \"Family, Given\"; --desired takes a .parquet, .csv or .json
file too; the second saves the plan for `apply --plan`, the third reads it back):
  contacts-etl plan pipelines/emulator.toml --source shared_contacts --mode update \\
    --desired \"SELECT account, id, etag, concat(family_name, ', ', given_name) AS file_as \\
      FROM contacts WHERE source = 'shared_contacts' AND family_name IS NOT NULL\"
  contacts-etl plan pipelines/emulator.toml --source crm_contacts --account 101 \\
    --out plan.parquet --desired \"SELECT account, id, etag, upper(notes) AS notes FROM contacts \\
      WHERE source = 'crm_contacts' AND notes IS NOT NULL\"
  contacts-etl query pipelines/emulator.toml \"SELECT kind, count(*) FROM 'plan.parquet' GROUP BY 1\"";
const APPLY_EXAMPLES: &str = "\
Examples (the plan saved by `plan --out`, exactly; then \"File As\" in capitals):
  contacts-etl apply pipelines/emulator.toml --plan plan.parquet
  contacts-etl apply pipelines/emulator.toml --source shared_contacts --mode update \\
    --desired \"SELECT account, id, etag, upper(file_as) AS file_as FROM contacts \\
      WHERE source = 'shared_contacts' AND file_as IS NOT NULL\"";
const EMULATOR_EXAMPLES: &str = "\
Example (then `. ./emulator.env` sets what pipelines/emulator.toml reads):
  contacts-etl emulator --port 0 --env-file emulator.env";
const SCHEMA_EXAMPLES: &str = "\
Example:
  contacts-etl schema > contacts.v1.json";

#[derive(Clone, Copy, PartialEq, Debug, ValueEnum)]
enum OutFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

impl OutFormat {
    fn name(self) -> &'static str {
        match self {
            OutFormat::Table => "table",
            OutFormat::Csv => "csv",
            OutFormat::Json => "json",
            OutFormat::Parquet => "parquet",
        }
    }

    /// The format an output path's extension names, if it names one.
    fn of_path(path: &str) -> Option<OutFormat> {
        let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "parquet" | "pq" => OutFormat::Parquet,
            "csv" => OutFormat::Csv,
            "json" | "jsonl" | "ndjson" => OutFormat::Json,
            "txt" => OutFormat::Table,
            _ => return None,
        })
    }
}

/// The format of `query`'s output: --format, else the --output extension's, else a table
/// on stdout. A --format the extension contradicts, or an --output whose extension names
/// no format without --format, is a usage error.
fn output_format(format: Option<OutFormat>, output: Option<&str>) -> Result<OutFormat> {
    let Some(path) = output else {
        return Ok(format.unwrap_or(OutFormat::Table));
    };
    match (format, OutFormat::of_path(path)) {
        (Some(f), Some(e)) if f != e => Err(Error::config(format!(
            "--output {path} is a .{} file name but --format is {}: drop --format (the extension decides) or name the file for {}",
            path.rsplit_once('.').map(|x| x.1).unwrap_or_default(),
            f.name(),
            f.name()
        ))),
        (Some(f), _) | (None, Some(f)) => Ok(f),
        (None, None) => Err(Error::config(format!(
            "--output {path}: the extension names no format; end it in .parquet, .csv, .json or .txt, or give --format"
        ))),
    }
}

/// The width the tables of `status` and `state show` fit: the terminal's, or `COLUMNS`,
/// else 100.
fn table_width() -> usize {
    contacts_etl::human::stdout_width().unwrap_or(contacts_etl::status::WIDTH)
}

/// Writes to stdout. A reader that went away (`| head`) is not an error of ours: the
/// broken pipe comes back as an I/O error that `main` ends on quietly.
fn out(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// For output that is not the last word (apply's exit code still tells whether rows
/// failed): a reader that went away is ignored.
fn keep_going_if_gone(e: Error) -> Result<()> {
    if is_broken_pipe(&e) { Ok(()) } else { Err(e) }
}

/// Whether `e` is a write to a closed pipe.
fn is_broken_pipe(e: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Writes a local output file, creating its folder.
fn write_local(path: &str, bytes: &[u8]) -> Result<()> {
    let p = std::path::Path::new(path);
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(format!(
                "--output {path}: cannot create {}: {e}",
                dir.display()
            ))
        })?;
    }
    std::fs::write(p, bytes).map_err(|e| Error::config(format!("--output {path}: {e}")))
}

fn parse_shard(s: &str) -> std::result::Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("use I/N, e.g. 0/4")?;
    let i: u32 = i.parse().map_err(|_| "I must be a number")?;
    let n: u32 = n.parse().map_err(|_| "N must be a number")?;
    if n == 0 || i >= n {
        return Err("I must be below N (0-based), e.g. 0/4 … 3/4".into());
    }
    Ok((i, n))
}

fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let lvl = &cli.log_level;
        let mut spec = if lvl.contains('=') {
            lvl.clone()
        } else {
            format!("warn,deltalake_core=off,buoyant_kernel=off,contacts_etl={lvl}")
        };
        // Text logs leave each account's result, a failure included, to the summary
        // table, unless asked: said once, not as a log line and again in the table.
        if cli.log_format == LogFormat::Text && !matches!(lvl.as_str(), "debug" | "trace") {
            spec.push_str(&format!(",{}=off", contacts_etl::sync::ACCOUNT_TARGET));
        }
        tracing_subscriber::EnvFilter::new(spec)
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        // Colour only for a person who wants it: redirected stderr, or NO_COLOR set
        // (https://no-color.org), gets plain text.
        .with_ansi(std::io::stderr().is_terminal() && !contacts_etl::human::no_color());
    match cli.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_target(false).init(),
    }
}

/// Stderr for log lines: each is written with the progress bars cleared, so that it lands
/// above them and no half-drawn bar stays behind it.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        contacts_etl::sync::suspend_progress(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Whether stderr carries JSON lines only (`--log-format json`).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A last word on stderr: a line of text, or a JSON event in JSON logs.
fn say(level: tracing::Level, text: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        if level == tracing::Level::ERROR {
            tracing::error!(error = text, "command failed");
        } else {
            tracing::info!("{text}");
        }
    } else if level == tracing::Level::ERROR {
        eprintln!("error: {text}");
    } else {
        eprintln!("{text}");
    }
}

/// A command line clap could not read (or `--help`/`--version`): printed by clap, except
/// that with `--log-format json` an error is one JSON line like every other line on stderr.
fn usage_error(e: clap::Error) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    if !json || !e.use_stderr() {
        let _ = e.print();
        return ExitCode::from(e.exit_code() as u8);
    }
    let text = e.render().to_string();
    let line = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": "ERROR",
        "fields": { "message": "command line refused", "error": text.trim() },
    });
    eprintln!("{line}");
    ExitCode::from(2)
}

/// Longest wait, after SIGINT or SIGTERM, for the writes in flight to be answered and
/// recorded.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A panic is a bug: one line saying so (where, and what), not a screen of executor
/// backtrace; `RUST_BACKTRACE=1` brings the trace back for a bug report.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        say(
            tracing::Level::ERROR,
            &format!(
                "internal error{at}: {}. This is a bug in contacts-etl: please report it with the command that ran (RUST_BACKTRACE=1 shows the trace)",
                contacts_etl::secret::printable(&what)
            ),
        );
    }));
}

fn main() -> ExitCode {
    tune::tune_process();
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_logging(&cli);
    JSON_LOGS.store(
        cli.log_format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The emulator waits for Ctrl-C itself; every other command stops on SIGINT or
    // SIGTERM (a scheduler's stop) by dropping its work, which removes its temporary
    // files, and exits 128 + the signal's number.
    let stoppable = !matches!(cli.command, Command::Emulator { .. });
    let outcome = rt.block_on(async {
        let work = run(cli);
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => r,
            (name, code) = stop_signal(), if stoppable => {
                // Writes in flight are answered and recorded before the process ends:
                // an apply stops at the end of its group (bounded wait).
                if contacts_etl::plan::apply::request_stop() {
                    say(tracing::Level::ERROR, &format!(
                        "{name}: stopping after the writes in flight are answered and recorded (at most {} s)",
                        STOP_WAIT.as_secs()
                    ));
                    tokio::select! {
                        r = tokio::time::timeout(STOP_WAIT, &mut work) => match r {
                            Ok(Err(e)) => say(tracing::Level::ERROR, &e.to_string()),
                            Ok(Ok(_)) => {}
                            Err(_) => say(tracing::Level::ERROR, &format!(
                                "the writes in flight were not answered within {} s; their results are not recorded", STOP_WAIT.as_secs()
                            )),
                        },
                        (again, _) = stop_signal() => say(tracing::Level::ERROR, &format!(
                            "{again} again: exiting without waiting; the results of the writes in flight are not recorded"
                        )),
                    }
                }
                let removed = contacts_etl::spill::remove_live_spills();
                tracing::debug!(removed, "temporary folders removed");
                say(tracing::Level::ERROR, &format!(
                    "stopped by {name}; temporary files removed. Accounts whose commit had finished are kept, the rest resume at the next run"
                ));
                Ok(code)
            }
        }
    });
    let code: u8 = match outcome {
        Ok(code) => code,
        // The reader of stdout stopped reading (`… | head`): it has what it wanted.
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            say(tracing::Level::ERROR, &e.to_string());
            e.exit_code() as u8
        }
    };
    // Everything the command wrote has been awaited. The process ends here, without
    // winding the runtime down: a table reader's blocking task that an error left
    // behind would panic when its runtime goes ("executor has crashed") after the
    // error was already said.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(i32::from(code));
}

/// `state show|reset|drop`.
async fn run_state(action: StateAction) -> Result<u8> {
    use contacts_etl::state::{self, Change};
    let (pipeline, change, source, account, yes) = match action {
        StateAction::Show {
            pipeline,
            source,
            account,
            format,
        } => {
            let p = contacts_etl::providers::load_pipeline(&pipeline)?;
            let accounts = state::show(&p, source.as_deref(), account.as_deref()).await?;
            out(&match format {
                ShowFormat::Text => state::render_width(&accounts, table_width()),
                ShowFormat::Json => state::render_json(&accounts)?,
            })?;
            return Ok(0);
        }
        StateAction::Reset {
            pipeline,
            source,
            account,
            yes,
        } => (pipeline, Change::Reset, source, account, yes),
        StateAction::Drop {
            pipeline,
            source,
            account,
            yes,
        } => (pipeline, Change::Drop, source, account, yes),
    };
    let p = contacts_etl::providers::load_pipeline(&pipeline)?;
    let confirm = state::confirm_on_terminal(change, yes);
    match state::change(&p, change, &source, &account, confirm).await? {
        Some(done) => {
            // JSON logs have the library's event for it.
            if !JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
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

/// Waits for SIGINT or SIGTERM; returns its name and the exit code that reports it.
async fn stop_signal() -> (&'static str, u8) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => ("SIGINT", 130),
                _ = term.recv() => ("SIGTERM", 143),
            },
            // No handler could be installed: the default action (exit) stays.
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        ("Ctrl-C", 130)
    }
}

async fn run(cli: Cli) -> Result<u8> {
    let progress = cli.log_format == LogFormat::Text && std::io::stderr().is_terminal();
    let log_json = cli.log_format == LogFormat::Json;
    match cli.command {
        Command::Demo { dir, contacts } => {
            contacts_etl::demo::run(&dir, contacts).await?;
            Ok(0)
        }
        Command::Sync {
            pipeline,
            source,
            account,
            full_refresh,
            shard,
        } => {
            let p = contacts_etl::providers::load_pipeline(&pipeline)?;
            let opts = contacts_etl::sync::SyncOptions {
                sources: source,
                accounts: account,
                full_refresh,
                shard,
                progress,
            };
            let report = contacts_etl::sync::run_sync(&p, &opts).await?;
            // JSON logs get the summary as one event beside the run's other events;
            // text gets the table on stdout: a run's report is its output (README, "Where
            // output goes"); its progress, warnings and errors are stderr's.
            if cli.log_format == LogFormat::Json {
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
            if cli.log_format == LogFormat::Text {
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
        Command::Status { pipeline, format } => {
            let p = contacts_etl::providers::load_pipeline(&pipeline)?;
            let st = contacts_etl::status::status(&p).await?;
            out(&match format {
                ShowFormat::Text => st.render_width(table_width()),
                ShowFormat::Json => st.render_json()?,
            })?;
            Ok(0)
        }
        Command::State { action } => run_state(action).await,
        Command::Query {
            pipeline,
            sql,
            format,
            output,
            as_of_run,
            wide,
        } => {
            let format = output_format(format, output.as_deref())?;
            if format == OutFormat::Parquet && output.is_none() {
                return Err(Error::config("--format parquet needs --output PATH_OR_URL"));
            }
            let p = contacts_etl::providers::load_pipeline(&pipeline)?;
            let lake = contacts_etl::sync::lake_of(&p)?;
            let as_of = as_of_run
                .map(contacts_etl::sql::AsOf::Run)
                .unwrap_or_default();
            let batches = contacts_etl::sql::query_as_of(&lake, &sql, &as_of).await?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            match (format, output) {
                (OutFormat::Parquet, Some(dest)) => {
                    contacts_etl::sql::write_parquet(&lake, &batches, &dest).await?;
                    say(
                        tracing::Level::INFO,
                        &format!("{rows} rows written to {dest}"),
                    );
                }
                (f, dest) => {
                    // A table on stdout fits the terminal unless --wide; in a file it is whole.
                    let text = match (f, &dest) {
                        (OutFormat::Table, None) if !wide => contacts_etl::sql::render_table(
                            &batches,
                            contacts_etl::human::stdout_width(),
                        )?,
                        _ => contacts_etl::sql::render(&batches, f.name())?,
                    };
                    match dest {
                        Some(path) if path.contains("://") => {
                            return Err(Error::config(format!(
                                "--output {path}: only Parquet goes to a URL; end it in .parquet"
                            )));
                        }
                        Some(path) => {
                            write_local(&path, text.as_bytes())?;
                            say(
                                tracing::Level::INFO,
                                &format!("{rows} rows written to {path}"),
                            );
                        }
                        None => out(&text)?,
                    }
                }
            }
            Ok(0)
        }
        Command::Plan {
            pipeline,
            source,
            desired,
            photos,
            mode,
            account,
            sample,
            out: save_to,
            detailed_exitcode,
        } => {
            let planned = async {
                let p = contacts_etl::providers::load_pipeline(&pipeline)?;
                if let Some(photos) = photos {
                    let plan = contacts_etl::plan::photos::plan_photos(
                        &p,
                        &source,
                        &photos,
                        mode.parse()?,
                    )
                    .await?;
                    out(&plan.render(sample))?;
                    return Ok(!plan.ops.is_empty());
                }
                let mode = mode.parse()?;
                let desired = desired.unwrap_or_default();
                let plan =
                    contacts_etl::plan::apply::plan_scoped(&p, &source, &desired, mode, &account)
                        .await?;
                if let Some(file) = &save_to {
                    contacts_etl::plan::saved::write(&plan, mode, p.lake_url()?.as_str(), file)?;
                    eprintln!(
                        "plan saved to {} ({} operation(s)); apply it with: contacts-etl apply {} --plan {}",
                        file.display(),
                        plan.ops.len(),
                        pipeline.display(),
                        file.display()
                    );
                }
                out(&plan.render(sample))?;
                Ok::<bool, Error>(!plan.ops.is_empty())
            };
            match (planned.await, detailed_exitcode) {
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
        Command::Apply {
            pipeline,
            source,
            desired,
            photos,
            plan: saved_plan,
            mode,
            account,
            max_delete,
            force,
            yes,
            sample,
        } => {
            let p = contacts_etl::providers::load_pipeline(&pipeline)?;
            let max_delete = max_delete.map(|m| m.parse()).transpose()?;
            // The plan is shown before anything is written, and deletes wait for a yes.
            let approval = if yes {
                Approval::Given
            } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
                Approval::Ask
            } else {
                Approval::NoTerminal
            };
            if let Some(photos) = photos {
                let opts = contacts_etl::plan::photos::PhotoApplyOptions {
                    source: source.unwrap_or_default(),
                    photos,
                    mode: mode.parse()?,
                    max_delete,
                    force,
                    progress,
                };
                let report =
                    contacts_etl::plan::photos::apply_photos_with(&p, &opts, async |plan| {
                        out(&plan.render(sample)).or_else(keep_going_if_gone)?;
                        let deletes = plan.count(contacts_etl::plan::photos::PhotoOpKind::Delete);
                        ask_before_deleting(deletes, "photo(s)", &opts.source, approval).await
                    })
                    .await?;
                out(&report.summary()).or_else(keep_going_if_gone)?;
                return Ok(if report.failures() == 0 { 0 } else { 1 });
            }
            let json = log_json;
            let controls = contacts_etl::plan::apply::ApplyControls {
                accounts: account,
                progress,
                log_sample: if json { 10 } else { 0 },
                summary_event: json,
            };
            let before_writes = async |plan: &contacts_etl::plan::Plan| {
                out(&plan.render(sample)).or_else(keep_going_if_gone)?;
                let deletes = plan.count(contacts_etl::plan::OpKind::Delete);
                ask_before_deleting(deletes, "contact(s)", &plan.source, approval).await
            };
            let report = match saved_plan {
                Some(file) => {
                    let saved = contacts_etl::plan::apply::SavedApply {
                        file,
                        source,
                        max_delete,
                        force,
                    };
                    contacts_etl::plan::apply::apply_saved(&p, &saved, &controls, before_writes)
                        .await?
                }
                None => {
                    let opts = contacts_etl::plan::apply::ApplyOptions {
                        source: source.unwrap_or_default(),
                        desired: desired.unwrap_or_default(),
                        mode: mode.parse()?,
                        max_delete,
                        force,
                    };
                    contacts_etl::plan::apply::apply_controlled(&p, &opts, &controls, before_writes)
                        .await?
                }
            };
            // With --log-format json the summary is the "apply finished" event.
            if !json {
                out(&report.summary()).or_else(keep_going_if_gone)?;
            }
            Ok(if report.failures() == 0 { 0 } else { 1 })
        }
        Command::Emulator {
            port,
            google_domain,
            google_contacts,
            aurinko_accounts,
            aurinko_contacts,
            seed,
            faults,
            token,
            aurinko_page_size,
            service_account_public_key,
            env_file,
        } => {
            let key = match service_account_public_key {
                Some(p) => Some(std::fs::read_to_string(&p).map_err(|e| {
                    Error::config(format!("--service-account-public-key {}: {e}", p.display()))
                })?),
                None => None,
            };
            let cfg = EmulatorConfig {
                google_domain,
                google_contacts,
                aurinko_accounts,
                aurinko_contacts,
                seed,
                faults: FaultSpec::parse(&faults)?,
                token,
                aurinko_page_size,
                service_account_public_key: key,
                ..Default::default()
            };
            // A file left by an emulator that was killed outright names a dead port:
            // gone before this one starts, so that nobody reads it as this one's.
            if let Some(f) = &env_file {
                let _ = std::fs::remove_file(f);
            }
            let emu = Emulator::start_on(cfg, &format!("127.0.0.1:{port}")).await?;
            out(&format!("{}\n", emu.url()))?;
            // Ready-to-paste settings for the example pipeline (pipelines/emulator.toml
            // reads EMULATOR_URL); the tokens are the emulator's own fake ones.
            let mut exports = format!(
                "export EMULATOR_URL={}\nexport EMULATOR_TOKEN={}\n",
                emu.url(),
                emu.config().token
            );
            let mut accounts = emu.aurinko_accounts();
            accounts.sort();
            for a in accounts {
                exports.push_str(&format!(
                    "export AURINKO_TOKEN_{a}={}\n",
                    emu.aurinko_token(&a)
                ));
            }
            out(&exports)?;
            if let Some(f) = &env_file {
                let tmp = f.with_extension("tmp");
                std::fs::write(&tmp, &exports)
                    .and_then(|()| std::fs::rename(&tmp, f))
                    .map_err(|e| Error::config(format!("--env-file {}: {e}", f.display())))?;
            }
            say(
                tracing::Level::INFO,
                &format!(
                    "Google feed: {}/m8/feeds/contacts/{}/full   Aurinko: {}/v1/contacts/sync   (Ctrl-C stops)",
                    emu.url(),
                    emu.config().google_domain,
                    emu.url()
                ),
            );
            // Ctrl-C, or SIGTERM (`kill %1`, a scheduler): the env file goes with the
            // emulator, unless another emulator has written its own there since.
            stop_signal().await;
            emu.shutdown().await;
            if let Some(f) = &env_file
                && std::fs::read_to_string(f).is_ok_and(|t| t == exports)
            {
                let _ = std::fs::remove_file(f);
            }
            Ok(0)
        }
        Command::Schema => {
            out(&contacts_etl::schema::render_schema_json(
                &contacts_etl::schema::contacts_schema(),
            )?)?;
            Ok(0)
        }
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
    .map_err(|e| Error::other(format!("the question before deleting: {e}")))?
}
