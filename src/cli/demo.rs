//! `contacts-etl demo`: the whole loop on the built-in emulators.

use std::path::PathBuf;

use contacts_etl::Result;

/// The examples of `demo --help`. Each is one command a line (a trailing `\` continues
/// it), under 100 columns so that help does not wrap it; a test runs every one as written
/// (tests/integration/operator.rs `every_help_example_runs_as_written`), as for every
/// command's `EXAMPLES`.
pub const EXAMPLES: &str = "\
Example:
  contacts-etl demo --dir contacts-etl-demo --contacts 300";

/// `demo`'s flags.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Folder for the pipeline file and the lake.
    #[arg(long, default_value = "contacts-etl-demo")]
    dir: PathBuf,
    /// Google shared contacts to generate (each Aurinko account gets a third).
    #[arg(long, default_value_t = 3000)]
    contacts: usize,
}

impl DemoArgs {
    /// Runs the demo; its steps print themselves.
    pub async fn run(self) -> Result<u8> {
        contacts_etl::demo::run(&self.dir, self.contacts).await?;
        Ok(0)
    }
}
