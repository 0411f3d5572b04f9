//! A `google_directory` source's own settings in the pipeline file, and their checks:
//!
//! ```toml
//! [[sources]]
//! name = "directory"
//! provider = "google_directory"
//! domain = "example.com"                      # the account id in the lake
//! base_url = "https://people.googleapis.com"  # the default
//! auth = { kind = "bearer", token_env = "PEOPLE_TOKEN" }   # or a service account
//! directory_sources = ["DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT", "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE"]
//! page_size = 1000
//! ```

use serde::Deserialize;

use crate::config::{SourceConfig, check_account_id};
use crate::error::Result;
use crate::providers::google::config::AuthConfig;

/// The People API's own address.
pub const DEFAULT_BASE_URL: &str = "https://people.googleapis.com";

/// The scope a service account asks for: the directory, read only.
pub const SCOPE: &str = "https://www.googleapis.com/auth/directory.readonly";

/// The directory sources the API lists.
pub const DIRECTORY_SOURCES: [&str; 2] = [
    "DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT",
    "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE",
];

/// The most people the API returns in one page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The keys as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    domain: Option<String>,
    auth: Option<toml::Value>,
    directory_sources: Option<Vec<String>>,
    page_size: Option<u32>,
}

/// A `google_directory` source's checked settings.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// The domain whose directory is read: the source's one account.
    pub domain: String,
    /// How to authenticate (a bearer token or a service account; no ClientLogin).
    pub auth: AuthConfig,
    /// The `sources[]` asked for, in the order given (default both kinds).
    pub directory_sources: Vec<String>,
    /// People per page (default and most [`MAX_PAGE_SIZE`]).
    pub page_size: u32,
}

impl DirectoryConfig {
    /// Reads and checks the settings of a `provider = "google_directory"` entry. Reads no
    /// file and no credential.
    pub fn read(cfg: &SourceConfig) -> Result<DirectoryConfig> {
        let raw: Raw = cfg.settings_as()?;
        let domain = raw
            .domain
            .filter(|d| !d.is_empty())
            .ok_or_else(|| cfg.error("a google_directory source needs domain = \"example.com\""))?;
        check_account_id(&domain).map_err(|why| cfg.error(format!("domain {domain:?} {why}")))?;
        let auth = raw.auth.ok_or_else(|| {
            cfg.error("needs auth = { kind = \"bearer\", token_env = \"PEOPLE_TOKEN\" } or a service_account")
        })?;
        let auth = auth
            .try_into::<AuthConfig>()
            .map_err(|e| cfg.error(format!("auth: {}", e.message().trim())))?;
        match &auth {
            AuthConfig::ClientLogin { .. } => {
                return Err(cfg.error(
                    "auth kind \"client_login\" is the legacy GData sign-in; the People API takes a bearer token or a service account",
                ));
            }
            AuthConfig::Bearer {
                token_env,
                token_file,
            } if token_env.is_none() == token_file.is_none() => {
                return Err(cfg.error("auth needs exactly one of token_env or token_file"));
            }
            _ => {}
        }
        let directory_sources = raw
            .directory_sources
            .unwrap_or_else(|| DIRECTORY_SOURCES.map(String::from).to_vec());
        if directory_sources.is_empty() {
            return Err(cfg.error(format!(
                "directory_sources is empty; name one or both of {}",
                DIRECTORY_SOURCES.join(", ")
            )));
        }
        if let Some(bad) = directory_sources
            .iter()
            .find(|s| !DIRECTORY_SOURCES.contains(&s.as_str()))
        {
            return Err(cfg.error(format!(
                "directory_sources: {bad:?} is not one of {}",
                DIRECTORY_SOURCES.join(", ")
            )));
        }
        let page_size = raw.page_size.unwrap_or(MAX_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(cfg.error(format!(
                "page_size {page_size} must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        Ok(DirectoryConfig {
            domain,
            auth,
            directory_sources,
            page_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pipeline;

    fn read(settings: &str) -> Result<DirectoryConfig> {
        let t = format!(
            "[lake]\nurl = \"/tmp/lake\"\n[[sources]]\nname = \"d\"\nprovider = \"google_directory\"\nbase_url = \"http://127.0.0.1:1\"\n{settings}\n"
        );
        let p = Pipeline::parse(&t, std::path::Path::new("p.toml"))?;
        DirectoryConfig::read(&p.sources[0])
    }

    const GOOD: &str = "domain = \"example.com\"\nauth = { kind = \"bearer\", token_env = \"T\" }";

    #[test]
    fn reads_the_settings_with_their_defaults() {
        let c = read(GOOD).unwrap();
        assert_eq!(c.domain, "example.com");
        assert_eq!(c.directory_sources, DIRECTORY_SOURCES);
        assert_eq!(c.page_size, 1000);
        let c = read(&format!(
            "{GOOD}\ndirectory_sources = [\"DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE\"]\npage_size = 50"
        ))
        .unwrap();
        assert_eq!(
            c.directory_sources,
            ["DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE"]
        );
        assert_eq!(c.page_size, 50);
        let sa = "domain = \"example.com\"\nauth = { kind = \"service_account\", key_file = \"k.json\", subject = \"a@example.com\" }";
        assert!(matches!(
            read(sa).unwrap().auth,
            AuthConfig::ServiceAccount { .. }
        ));
    }

    /// Every refusal is a usage error naming the entry and the key.
    #[test]
    fn refusals_name_the_entry_and_the_key() {
        for (settings, words) in [
            (
                "auth = { kind = \"bearer\", token_env = \"T\" }",
                vec!["needs domain"],
            ),
            ("domain = \"example.com\"", vec!["needs auth"]),
            (&format!("{GOOD}\npage_size = 0"), vec!["page_size", "1000"]),
            (&format!("{GOOD}\npage_size = 1001"), vec!["page_size"]),
            (
                &format!("{GOOD}\ndirectory_sources = []"),
                vec!["directory_sources", "empty"],
            ),
            (
                &format!("{GOOD}\ndirectory_sources = [\"PROFILE\"]"),
                vec!["directory_sources", "PROFILE"],
            ),
            (
                &format!("{GOOD}\nprojection = \"full\""),
                vec!["projection"],
            ),
            (
                "domain = \"example.com\"\nauth = { kind = \"client_login\", token_env = \"T\" }",
                vec!["client_login"],
            ),
            (
                "domain = \"example.com\"\nauth = { kind = \"bearer\" }",
                vec!["exactly one of token_env or token_file"],
            ),
        ] {
            let e = read(settings).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{settings}");
            let text = e.to_string();
            assert!(text.contains("(d)"), "{text}");
            for w in words {
                assert!(text.contains(w), "{settings}: {text}");
            }
        }
    }
}
