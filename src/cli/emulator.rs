//! `contacts-etl emulator`: the built-in emulators until interrupted.

use std::path::PathBuf;

use contacts_etl::Result;
use contacts_etl::emulator::{Emulator, EmulatorConfig, FaultSpec};
use contacts_etl::error::{Context as _, Kind};

use super::output::{out, say};

/// The example of `emulator --help`.
pub const EXAMPLES: &str = "\
Example (then `. ./emulator.env` sets what pipelines/emulator.toml reads):
  contacts-etl emulator --port 0 --env-file emulator.env";

/// `emulator`'s flags: the emulator's own settings ([`EmulatorConfig`]), which name the
/// APIs it serves.
#[derive(clap::Args)]
pub struct EmulatorArgs {
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
    /// Directory profiles the People API lists beside the domain's shared contacts.
    #[arg(long, default_value_t = 0)]
    directory_profiles: usize,
    /// Generate people as dense as real domains: elements in foreign namespaces, XML
    /// blobs in extended properties, long multilingual notes, many e-mails and phones.
    #[arg(long)]
    dense: bool,
    /// PEM public key that verifies service-account JWTs at POST /token.
    #[arg(long)]
    service_account_public_key: Option<PathBuf>,
    /// Also write the `export` lines to this file once the emulator listens (written
    /// whole, by rename), for scripts: `until [ -s F ]; do sleep 0.1; done; . ./F`.
    #[arg(long)]
    env_file: Option<PathBuf>,
}

impl EmulatorArgs {
    /// The emulator's configuration these flags say.
    fn config(&self) -> Result<EmulatorConfig> {
        let key = match &self.service_account_public_key {
            Some(p) => Some(std::fs::read_to_string(p).with_context(Kind::Config, || {
                format!("--service-account-public-key {}", p.display())
            })?),
            None => None,
        };
        Ok(EmulatorConfig {
            google_domain: self.google_domain.clone(),
            google_contacts: self.google_contacts,
            aurinko_accounts: self.aurinko_accounts,
            aurinko_contacts: self.aurinko_contacts,
            seed: self.seed,
            faults: FaultSpec::parse(&self.faults)?,
            token: self.token.clone(),
            aurinko_page_size: self.aurinko_page_size,
            directory_profiles: self.directory_profiles,
            dense: self.dense,
            service_account_public_key: key,
            ..Default::default()
        })
    }

    /// Serves until SIGINT or SIGTERM; prints the URL and the `export` lines first.
    pub async fn run(self) -> Result<u8> {
        let cfg = self.config()?;
        // A file left by an emulator that was killed outright names a dead port:
        // gone before this one starts, so that nobody reads it as this one's.
        if let Some(f) = &self.env_file {
            let _ = std::fs::remove_file(f);
        }
        let emu = Emulator::start_on(cfg, &format!("127.0.0.1:{}", self.port)).await?;
        out(&format!("{}\n", emu.url()))?;
        let exports = exports(&emu);
        out(&exports)?;
        if let Some(f) = &self.env_file {
            let tmp = f.with_extension("tmp");
            std::fs::write(&tmp, &exports)
                .and_then(|()| std::fs::rename(&tmp, f))
                .with_context(Kind::Config, || format!("--env-file {}", f.display()))?;
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
        super::signals::stop_signal().await;
        emu.shutdown().await;
        if let Some(f) = &self.env_file
            && std::fs::read_to_string(f).is_ok_and(|t| t == exports)
        {
            let _ = std::fs::remove_file(f);
        }
        Ok(0)
    }
}

/// Ready-to-paste settings for the example pipeline (pipelines/emulator.toml reads
/// EMULATOR_URL); the tokens are the emulator's own fake ones.
fn exports(emu: &Emulator) -> String {
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
    exports
}
