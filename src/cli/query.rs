//! `contacts-etl query`: read-only SQL over the lake, to stdout or a file.

use std::path::PathBuf;

use clap::ValueEnum;
use contacts_etl::{Error, Result};

use super::output::{out, say, write_local};

/// The examples of `query --help`.
pub const EXAMPLES: &str = "\
Examples:
  contacts-etl query pipelines/emulator.toml \\
    \"SELECT source, account, count(*) AS contacts FROM contacts GROUP BY 1, 2\"
  contacts-etl query pipelines/emulator.toml \"SELECT * FROM contacts\" --output contacts.parquet
  contacts-etl query pipelines/emulator.toml 'SELECT count(*) FROM \"contacts@v1\"'";

/// `query`'s flags.
#[derive(clap::Args)]
pub struct QueryArgs {
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
}

/// The format of `query`'s output.
#[derive(Clone, Copy, PartialEq, Debug, ValueEnum)]
enum OutFormat {
    /// A table of text.
    Table,
    /// Comma-separated values with a header.
    Csv,
    /// One JSON object a line.
    Json,
    /// A Parquet file (needs --output).
    Parquet,
}

impl OutFormat {
    /// The format's name, as `sql::render` takes it.
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

impl QueryArgs {
    /// Runs the query and writes its rows where `--output` (or stdout) says.
    pub async fn run(self) -> Result<u8> {
        let format = output_format(self.format, self.output.as_deref())?;
        if format == OutFormat::Parquet && self.output.is_none() {
            return Err(Error::config("--format parquet needs --output PATH_OR_URL"));
        }
        let p = contacts_etl::providers::load_pipeline(&self.pipeline)?;
        let lake = contacts_etl::sync::lake_of(&p)?;
        let as_of = self
            .as_of_run
            .map(contacts_etl::sql::AsOf::Run)
            .unwrap_or_default();
        let batches = contacts_etl::sql::query_as_of(&lake, &self.sql, &as_of).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if let (OutFormat::Parquet, Some(dest)) = (format, &self.output) {
            contacts_etl::sql::write_parquet(&lake, &batches, dest).await?;
            say(
                tracing::Level::INFO,
                &format!("{rows} rows written to {dest}"),
            );
            return Ok(0);
        }
        // A table on stdout fits the terminal unless --wide; in a file it is whole.
        let text = match (format, &self.output) {
            (OutFormat::Table, None) if !self.wide => {
                contacts_etl::sql::render_table(&batches, contacts_etl::human::stdout_width())?
            }
            _ => contacts_etl::sql::render(&batches, format.name())?,
        };
        match self.output {
            Some(path) if path.contains("://") => Err(Error::config(format!(
                "--output {path}: only Parquet goes to a URL; end it in .parquet"
            ))),
            Some(path) => {
                write_local("--output", &path, text.as_bytes())?;
                say(
                    tracing::Level::INFO,
                    &format!("{rows} rows written to {path}"),
                );
                Ok(0)
            }
            None => {
                out(&text)?;
                Ok(0)
            }
        }
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
