//! `contacts-etl status`: per source and account, the last run and the failures since.

use std::path::PathBuf;

use contacts_etl::Result;

use super::ShowFormat;
use super::output::{out, table_width};

/// The examples of `status --help`.
pub const EXAMPLES: &str = "\
Examples:
  contacts-etl status pipelines/emulator.toml
  contacts-etl status pipelines/emulator.toml --format json";

/// `status`'s flags.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The pipeline file.
    pipeline: PathBuf,
    /// `text` (a table that fits the terminal, 100 columns elsewhere; errors cut, their
    /// cause first) or `json` (every field whole).
    #[arg(long, value_enum, default_value = "text")]
    format: ShowFormat,
}

impl StatusArgs {
    /// Prints the status table (or its JSON).
    pub async fn run(self) -> Result<u8> {
        let p = contacts_etl::providers::load_pipeline(&self.pipeline)?;
        let st = contacts_etl::status::status(&p).await?;
        out(&match self.format {
            ShowFormat::Text => st.render_width(table_width()),
            ShowFormat::Json => st.render_json()?,
        })?;
        Ok(0)
    }
}
