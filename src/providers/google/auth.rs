//! Google authentication: a bearer token from the environment, a service-account key file
//! (RS256 JWT → token endpoint, `sub` for domain-wide delegation, cached and refreshed
//! before expiry), or the legacy `GoogleLogin auth=` header.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::config::AuthConfig;
use crate::error::{Context, Error, Kind, Result};
use crate::http::{HttpClient, Metrics};
use crate::secret::Secret;

/// The scope of the Domain Shared Contacts feed.
pub const SCOPE: &str = "https://www.google.com/m8/feeds";

/// The fields of a service-account key file that are used.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

/// How requests are authorized.
pub enum GoogleAuth {
    /// A fixed bearer token.
    Bearer { token: Secret, env: String },
    /// Legacy ClientLogin.
    ClientLogin { token: Secret, env: String },
    /// A service account with domain-wide delegation.
    ServiceAccount(Box<ServiceAccount>),
}

/// A service account and its cached access token.
pub struct ServiceAccount {
    client_email: String,
    key: jsonwebtoken::EncodingKey,
    token_uri: String,
    subject: String,
    scope: String,
    key_path: String,
    cache: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl GoogleAuth {
    /// Builds the auth a pipeline entry describes (a service account asks for the Domain
    /// Shared Contacts scope unless the entry names one).
    pub fn from_config(cfg: &AuthConfig, source: &str, base: &Path) -> Result<GoogleAuth> {
        Self::from_config_scoped(cfg, source, base, SCOPE)
    }

    /// As [`GoogleAuth::from_config`], a service account asking for `default_scope`
    /// unless the entry names one.
    pub fn from_config_scoped(
        cfg: &AuthConfig,
        source: &str,
        base: &Path,
        default_scope: &str,
    ) -> Result<GoogleAuth> {
        match cfg {
            kind @ (AuthConfig::Bearer {
                token_env,
                token_file,
            }
            | AuthConfig::ClientLogin {
                token_env,
                token_file,
            }) => {
                let token = crate::config::load_secret(
                    token_env.as_deref(),
                    token_file.as_deref(),
                    base,
                    &format!("source {source}"),
                )?;
                // Where the token came from, for error hints (never the token itself).
                let env = token_env
                    .clone()
                    .or_else(|| token_file.clone())
                    .unwrap_or_default();
                Ok(match kind {
                    AuthConfig::ClientLogin { .. } => GoogleAuth::ClientLogin { token, env },
                    _ => GoogleAuth::Bearer { token, env },
                })
            }
            AuthConfig::ServiceAccount {
                key_file,
                subject,
                scope,
            } => {
                let path = base.join(key_file);
                let text = crate::config::read_input_file(
                    &path,
                    crate::config::MAX_INPUT_FILE,
                    &format!("source {source}: the service-account key file"),
                )?;
                let kf: KeyFile = serde_json::from_str(&text).with_context(Kind::Config, || {
                    format!(
                        "source {source}: {} is not a service-account key file (download a JSON key for the service account)",
                        path.display()
                    )
                })?;
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(kf.private_key.as_bytes())
                    .map_err(|_| {
                        Error::config(format!(
                            "source {source}: the private_key in {} is not an RSA PEM key",
                            path.display()
                        ))
                    })?;
                Ok(GoogleAuth::ServiceAccount(Box::new(ServiceAccount {
                    client_email: kf.client_email,
                    key,
                    token_uri: kf.token_uri,
                    subject: subject.clone(),
                    scope: scope.clone().unwrap_or_else(|| default_scope.into()),
                    key_path: path.display().to_string(),
                    cache: tokio::sync::Mutex::new(None),
                })))
            }
        }
    }

    /// Whether a 401 is worth one token refresh.
    pub fn can_refresh(&self) -> bool {
        matches!(self, GoogleAuth::ServiceAccount(_))
    }

    /// What to check when the API refuses the credentials.
    pub fn hint(&self) -> String {
        match self {
            GoogleAuth::Bearer { env, .. } | GoogleAuth::ClientLogin { env, .. } => {
                format!("check the token in {env}")
            }
            GoogleAuth::ServiceAccount(sa) => format!(
                "check that {} has domain-wide delegation for scope {} and that {} is an administrator",
                sa.client_email, sa.scope, sa.subject
            ),
        }
    }

    /// Sends a request built by `build` with the `Authorization` header added, through
    /// `http` (as a write that must not be applied twice when `write`, see
    /// [`HttpClient::send_write`]). A 401 that a token refresh can cure (a service
    /// account's token revoked or expired early) gets one refresh and one more try; the
    /// last response is returned whatever its status, for the caller to read. Every
    /// Google source sends through here, so the refresh rule is written once.
    pub async fn send<F>(
        &self,
        http: &HttpClient,
        write: bool,
        what: &str,
        metrics: &Metrics,
        max_bytes: usize,
        build: F,
    ) -> Result<crate::http::HttpResponse>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let mut refreshed = false;
        loop {
            let header = self.header(http, metrics, refreshed).await?;
            let with_auth = |c: &reqwest::Client| {
                build(c).header(reqwest::header::AUTHORIZATION, header.expose())
            };
            let resp = if write {
                http.send_write(what, metrics, max_bytes, with_auth).await?
            } else {
                http.send(what, metrics, max_bytes, with_auth).await?
            };
            if resp.status == 401 && !refreshed && self.can_refresh() {
                refreshed = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` header value; `refresh` forces a new service-account token.
    pub async fn header(
        &self,
        http: &HttpClient,
        metrics: &Metrics,
        refresh: bool,
    ) -> Result<Secret> {
        match self {
            GoogleAuth::Bearer { token, .. } => {
                Ok(Secret::new(format!("Bearer {}", token.expose())))
            }
            GoogleAuth::ClientLogin { token, .. } => {
                Ok(Secret::new(format!("GoogleLogin auth={}", token.expose())))
            }
            GoogleAuth::ServiceAccount(sa) => {
                let mut cache = sa.cache.lock().await;
                if !refresh
                    && let Some((tok, exp)) = cache.as_ref()
                    && *exp > Instant::now() + Duration::from_secs(60)
                {
                    return Ok(Secret::new(format!("Bearer {}", tok.expose())));
                }
                let (tok, ttl) = sa.fetch(http, metrics).await?;
                let header = Secret::new(format!("Bearer {}", tok.expose()));
                *cache = Some((tok, Instant::now() + ttl));
                Ok(header)
            }
        }
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl ServiceAccount {
    async fn fetch(&self, http: &HttpClient, metrics: &Metrics) -> Result<(Secret, Duration)> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: &self.client_email,
            sub: &self.subject,
            scope: &self.scope,
            aud: &self.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &self.key,
        )
        .with_context(Kind::Auth, || {
            format!("cannot sign the service-account JWT with {}", self.key_path)
        })?;
        let jwt = Secret::new(jwt);
        let what = format!(
            "token request for {} to {}",
            self.client_email, self.token_uri
        );
        let resp = http
            .send(&what, metrics, 1 << 20, |c| {
                c.post(&self.token_uri).form(&[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", jwt.expose()),
                ])
            })
            .await?;
        if !resp.ok() {
            return Err(Error::auth(format!(
                "{what}: HTTP {}: {}; check the key file {} and the delegation for {}",
                resp.status,
                resp.describe(),
                self.key_path,
                self.subject
            )));
        }
        let t: TokenResponse = serde_json::from_slice(&resp.body)
            .with_context(Kind::Auth, || format!("{what}: unreadable answer"))?;
        Ok((
            Secret::new(t.access_token),
            Duration::from_secs(t.expires_in.unwrap_or(3600)),
        ))
    }
}
