//! Secrets: a string whose `Debug` and `Display` never show the value.

use std::fmt;

/// A secret value (token, password, private key). Printing it shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(v: impl Into<String>) -> Self {
        Secret(v.into())
    }
    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads a secret from the environment variable `env` or the file `file` (relative to
/// `base`); `what` names the secret's owner in errors. Surrounding whitespace is trimmed.
pub fn load(
    env: Option<&str>,
    file: Option<&str>,
    base: &std::path::Path,
    what: &str,
) -> crate::Result<Secret> {
    match (env, file) {
        (Some(var), _) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
            _ => Err(crate::Error::config(format!(
                "{what}: the environment variable {var} is not set; export it with the credential"
            ))),
        },
        (None, Some(f)) => {
            let path = base.join(f);
            match std::fs::read_to_string(&path) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
                Ok(_) => Err(crate::Error::config(format!(
                    "{what}: the token file {} is empty",
                    path.display()
                ))),
                Err(e) => Err(crate::Error::config(format!(
                    "{what}: cannot read the token file {}: {e}",
                    path.display()
                ))),
            }
        }
        (None, None) => Err(crate::Error::config(format!(
            "{what}: name the credential with token_env or token_file"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_redacted() {
        let s = super::Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
