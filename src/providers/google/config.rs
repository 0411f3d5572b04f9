//! A Google source's own settings in the pipeline file, and their checks:
//!
//! ```toml
//! [[sources]]
//! name = "shared"
//! provider = "google"
//! base_url = "https://www.google.com"
//! domain = "example.com"
//! auth = { kind = "service_account", key_file = "sa.json", subject = "admin@example.com" }
//! projection = "full"     # or thin, property-KEY
//! page_size = 500
//! photos = false
//! photo_concurrency = 8
//! ```

use serde::Deserialize;

use crate::config::{SourceConfig, check_account_id};
use crate::error::Result;

/// How a Google source authenticates.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <token>`, the token read from `token_env` or `token_file`.
    Bearer {
        /// The environment variable holding the token.
        token_env: Option<String>,
        /// A file holding the token (e.g. a mounted Kubernetes secret), relative to the
        /// pipeline file.
        token_file: Option<String>,
    },
    /// A service account key file with domain-wide delegation.
    ServiceAccount {
        /// Path to the JSON key file.
        key_file: String,
        /// The admin to impersonate (`sub`).
        subject: String,
        /// OAuth scope (default `https://www.google.com/m8/feeds`).
        scope: Option<String>,
    },
    /// Legacy ClientLogin: `Authorization: GoogleLogin auth=<token>`.
    ClientLogin {
        /// The environment variable holding the auth token.
        token_env: Option<String>,
        /// A file holding the auth token.
        token_file: Option<String>,
    },
}

/// The keys as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    domain: Option<String>,
    auth: Option<toml::Value>,
    projection: Option<String>,
    page_size: Option<u32>,
    #[serde(default)]
    photos: bool,
    photo_concurrency: Option<usize>,
}

/// A Google source's checked settings.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// The domain whose shared contacts are read: the source's one account.
    pub domain: String,
    /// How to authenticate.
    pub auth: AuthConfig,
    /// `full` (default), `thin` or `property-KEY`.
    pub projection: String,
    /// Entries per page (default [`super::DEFAULT_PAGE_SIZE`]).
    pub page_size: u32,
    /// Whether a sync also lands contact photos.
    pub photos: bool,
    /// Photo downloads at once (default 8).
    pub photo_concurrency: usize,
}

impl GoogleConfig {
    /// Reads and checks the settings of a `provider = "google"` entry. Reads no file and
    /// no credential.
    pub fn read(cfg: &SourceConfig) -> Result<GoogleConfig> {
        let raw: Raw = cfg.settings_as()?;
        let domain = raw
            .domain
            .filter(|d| !d.is_empty())
            .ok_or_else(|| cfg.error("a google source needs domain = \"example.com\""))?;
        // The domain is the source's account: the same rules hold.
        check_account_id(&domain).map_err(|why| cfg.error(format!("domain {domain:?} {why}")))?;
        let auth = match raw.auth {
            None => {
                return Err(cfg.error(
                    "needs auth = { kind = \"bearer\", token_env = \"GOOGLE_TOKEN\" } or a service_account",
                ));
            }
            Some(v) => {
                let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
                if kind == "app" {
                    return Err(cfg.error("auth kind \"app\" is for aurinko sources"));
                }
                v.try_into::<AuthConfig>()
                    .map_err(|e| cfg.error(format!("auth: {}", e.message().trim())))?
            }
        };
        if let AuthConfig::Bearer {
            token_env,
            token_file,
        }
        | AuthConfig::ClientLogin {
            token_env,
            token_file,
        } = &auth
            && token_env.is_none() == token_file.is_none()
        {
            return Err(cfg.error("auth needs exactly one of token_env or token_file"));
        }
        let projection = raw.projection.unwrap_or_else(|| "full".into());
        if !(projection == "full" || projection == "thin" || projection.starts_with("property-")) {
            return Err(cfg.error(format!(
                "projection {projection:?} must be full, thin or property-KEY"
            )));
        }
        if raw.page_size == Some(0) {
            return Err(cfg.error("page_size must be at least 1"));
        }
        if raw.photo_concurrency == Some(0) {
            return Err(cfg.error("photo_concurrency must be at least 1"));
        }
        Ok(GoogleConfig {
            domain,
            auth,
            projection,
            page_size: raw.page_size.unwrap_or(super::DEFAULT_PAGE_SIZE),
            photos: raw.photos,
            photo_concurrency: raw.photo_concurrency.unwrap_or(8),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pipeline;

    fn read(settings: &str) -> Result<GoogleConfig> {
        let t = format!(
            "[lake]\nurl = \"/tmp/lake\"\n[[sources]]\nname = \"g\"\nprovider = \"google\"\nbase_url = \"http://127.0.0.1:1\"\n{settings}\n"
        );
        let p = Pipeline::parse(&t, std::path::Path::new("p.toml"))?;
        GoogleConfig::read(&p.sources[0])
    }

    const GOOD: &str = "domain = \"example.com\"\nauth = { kind = \"bearer\", token_env = \"T\" }";

    #[test]
    fn reads_the_settings_with_their_defaults() {
        let c = read(GOOD).unwrap();
        assert_eq!(c.domain, "example.com");
        assert_eq!(
            (c.projection.as_str(), c.page_size, c.photos),
            ("full", super::super::DEFAULT_PAGE_SIZE, false)
        );
    }

    /// Every refusal names the file, the entry and the key.
    #[test]
    fn refusals_name_the_entry_and_the_key() {
        for (settings, words) in [
            (
                "auth = { kind = \"bearer\", token_env = \"T\" }",
                vec!["needs domain"],
            ),
            ("domain = \"example.com\"", vec!["needs auth"]),
            (&format!("{GOOD}\npagesize = 3"), vec!["pagesize"]),
            (
                &format!("{GOOD}\nprojection = \"fat\""),
                vec!["projection", "fat"],
            ),
            (&format!("{GOOD}\npage_size = 0"), vec!["page_size"]),
            (
                "domain = \"example.com/../x\"\nauth = { kind = \"bearer\", token_env = \"T\" }",
                vec!["domain", "'/'"],
            ),
            (
                "domain = \"example.com\"\nauth = { kind = \"bearer\" }",
                vec!["exactly one of token_env or token_file"],
            ),
            (
                "domain = \"example.com\"\nauth = { kind = \"app\", client_id_env = \"A\", client_secret_env = \"B\" }",
                vec!["aurinko"],
            ),
            (
                "domain = \"example.com\"\nauth = { kind = \"bearer\", token_env = \"T\", scope = \"x\" }",
                vec!["auth", "scope"],
            ),
        ] {
            let e = read(settings).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let e = e.to_string();
            assert!(e.starts_with("p.toml: sources[0] (g): "), "{settings}: {e}");
            for w in words {
                assert!(e.contains(w), "{settings}: {w} not in {e}");
            }
        }
    }
}
